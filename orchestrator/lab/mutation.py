"""The mutation score of each core, from a `mutmut run` (docs/testing.md):

    python -m orchestrator.lab.mutation [--json] [--survivors CORE] [--sample FRACTION --seed N]

mutmut writes, beside each mutated file under mutants/, which of its mutants the tests killed
(`*.py.meta`: an exit code per mutant). Here they are counted per core: killed (the tests failed,
or ran past mutmut's time limit: a mutant that makes a campaign spin is found), survived, reached
by no test, and equivalent (the same behaviour as the original, each with why, in
tests/mutation/equivalent.txt: `mutant name  # why`). The score is killed over the mutants that
are not equivalent; a mutant no test reaches counts against it.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

CORES = {"mta": "nodes/mta/", "store": "nodes/store/", "directory": "nodes/directory/",
         "move": "orchestrator/move", "ims": "nodes/ims/", "oracle": "orchestrator/inspect/"}
KILLED = {1, 3, 36, 24, -24, 152, 255}  # mutmut's "killed" and "timeout" exit codes (mutmut.stats)
EQUIVALENT = Path("tests/mutation/equivalent.txt")


def equivalents(path: Path = EQUIVALENT) -> dict[str, str]:
    """The mutants the list says are equivalent, each with why."""
    found = {}
    for line in path.read_text().splitlines() if path.exists() else ():
        name, _, why = line.partition("#")
        if name.strip():
            found[name.strip()] = why.strip()
    return found


def results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """Per core, each mutant by mutmut's name (as `mutmut run` takes it) and its exit code (None:
    not run yet), from mutmut's `*.py.meta` beside each mutated file."""
    found: dict[str, dict[str, int | None]] = {core: {} for core in CORES}
    for meta in sorted(mutants.rglob("*.py.meta")):
        source = meta.relative_to(mutants).as_posix()
        core = next((c for c, prefix in CORES.items() if source.startswith(prefix)), None)
        if core is not None:
            found[core].update(json.loads(meta.read_text())["exit_code_by_key"])
    return found


def tally(mutants: Path, equivalent: dict[str, str]) -> tuple[dict[str, Counter], dict[str, list[str]]]:
    """Per core: the counts, and the names of the mutants that survived or no test reached."""
    counts: dict[str, Counter] = {core: Counter() for core in CORES}
    survivors: dict[str, list[str]] = {core: [] for core in CORES}
    for core, codes in results(mutants).items():
        for name, code in codes.items():
            name = name.replace("\u01c1", ".")  # mutmut's separator in a method's mutant name
            c = counts[core]
            c["mutants"] += 1
            if name in equivalent:
                c["equivalent"] += 1
            elif code is None:
                c["not run"] += 1
            elif code in KILLED:
                c["killed"] += 1
            else:
                c["no tests" if code in (5, 33) else "survived"] += 1
                survivors[core].append(name)
    return counts, survivors


def sample(mutants: Path, fraction: float, seed: int) -> list[str]:
    """`fraction` of each core's mutants, drawn with `seed` (mutmut's own names, as `mutmut run`
    takes them): a score from a sample, when the whole run would take hours."""
    rng = random.Random(seed)
    picked = []
    for codes in results(mutants).values():
        names = sorted(codes)
        picked += rng.sample(names, round(len(names) * fraction))
    return picked


def score(c: Counter) -> float | None:
    judged = c["mutants"] - c["equivalent"] - c["not run"]
    return round(100 * c["killed"] / judged, 1) if judged else None


def main() -> None:
    parser = argparse.ArgumentParser(description="The mutation score of each core, from mutmut's mutants/.")
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--survivors", choices=list(CORES), help="List this core's survivors, one a line.")
    parser.add_argument("--sample", type=float, metavar="FRACTION",
                        help="Print that fraction of each core's mutants, drawn at random, as names `mutmut run` takes.")
    parser.add_argument("--seed", type=int, default=31, help="The sample's seed.")
    args = parser.parse_args()
    if not args.mutants.is_dir():
        parser.exit(3, f"no {args.mutants}/ here: run `mutmut run` first (docs/testing.md)\n")
    if args.sample is not None:
        print(" ".join(sample(args.mutants, args.sample, args.seed)))
        return
    counts, survivors = tally(args.mutants, equivalents())
    if args.survivors:
        print("\n".join(survivors[args.survivors]))
    elif args.json:
        print(json.dumps({core: {**c, "score": score(c)} for core, c in counts.items()}, indent=1))
    else:
        print(f"{'core':10} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9} {'equivalent':>11} {'score':>6}")
        for core, c in counts.items():
            s = score(c)
            print(f"{core:10} {c['mutants']:8,} {c['killed']:7,} {c['survived']:9,} {c['no tests']:9,} "
                  f"{c['equivalent']:11,} {'-' if s is None else f'{s:.1f}%':>6}")


if __name__ == "__main__":
    main()
