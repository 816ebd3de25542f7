"""The results store: every campaign and scenario run kept under
`<run-dir>/results/<time>-<name>/`, newest reachable as `results/latest` (as Jepsen keeps every
test under store/ with a latest link), read back by `xcon serve`.

A run's summary.json says what it is (kind, name, seed, build, when), labels what it lists (a
trial's faults by kind and time, its world; a case's expectations by name), and points only at
what it kept: the run-dirs, logs and traces of broken trials (a trial that held is removed, and
its entry says so rather than naming a deleted folder).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from orchestrator.inspect import logread

from .worlds import drawn, named_users

LATEST = "latest"
MAX_TRACES = 20  # the broken trials whose first finding gets a trace picture


def new(results: Path, name: str) -> Path:
    """A fresh folder for a run named `name` (its time first, so names sort as runs happened)."""
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = results / f"{stamp}-{name}"
    n = 1
    while folder.exists():  # two runs in one second
        n += 1
        folder = results / f"{stamp}-{name}-{n}"
    folder.mkdir()
    return folder


def point_latest(folder: Path) -> None:
    """results/latest -> folder, replaced in one rename (a reader never finds it missing)."""
    link = folder.parent / LATEST
    tmp = folder.parent / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(folder.name)
    os.replace(tmp, link)


def runs(results: Path) -> list[Path]:
    """Every run kept, newest first."""
    if not results.is_dir():
        return []
    kept = [p for p in results.iterdir() if p.is_dir() and not p.is_symlink() and (p / "summary.json").is_file()]
    return sorted(kept, key=lambda p: p.name, reverse=True)


def read(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


WORLD_USERS = 100  # a larger world's summary names the users its events name, not all of them


def world_of(world: Any) -> dict[str, Any]:
    """What a trial's world was, labelled: its users (those its events name, in a world of more
    than WORLD_USERS), moves, sends, lag and each fault by kind, node and time (s from the trial's
    start)."""
    world = drawn(world)
    faults = [{k: v for k, v in e.items() if k != "do"} for e in world.events if e.get("do") == "fault"]
    users = [u["alias"] for u in world.users]
    if len(users) > WORLD_USERS:
        named = named_users(world)
        users = [a for a in users if a in named]
    return {"users": users, "user_count": len(world.users), "servers": list(world.servers),
            "moves": sum(e.get("do") == "move" for e in world.events),
            "sends": sum(e.get("do") == "send" for e in world.events),
            "lag_ms": world.lag_ms, "jitter_ms": world.jitter_ms, "copy_delay_ms": world.copy_delay_ms,
            "faults": faults, "faults_by_kind": dict(Counter(f.get("kind", "?") for f in faults))}


def campaign_summary(meta: dict[str, Any], totals: dict[str, Any], results: list, worlds: list,
                     replay: str | None, replay_of: Callable[[int], str]) -> dict[str, Any]:
    """summary.json of a campaign: `meta` (kind, name, seed, build, faults, simulated, command),
    its totals, and each trial with its world, what was kept of it and, when it broke, the
    command that replays it (`replay_of(seed)`: the one `xcon chaos` prints)."""
    by_seed = {w.seed: w for w in worlds}
    trials = []
    for r in results:
        entry = r.to_json()
        kept = bool(entry["run_dir"]) and Path(entry["run_dir"]).is_dir()
        entry["run_dir"] = entry["run_dir"] if kept else None  # a trial that held is not kept
        entry["faults_injected"] = entry.pop("faults")  # a count: the world says which
        if r.seed in by_seed:
            entry["world"] = world_of(by_seed[r.seed])
        if r.broken:
            entry["replay"] = replay_of(r.seed)
        trials.append(entry)
    return {**meta, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "totals": totals, "replay": replay,
            "labels": {"trials": "one per seed; broken: a finding the invariant names; run_dir: kept only when broken",
                       "faults_by_kind": "how many faults of each kind the world injected"},
            "trials": trials}


def write(folder: Path, summary: dict[str, Any]) -> None:
    """summary.json and each kept broken trial's first finding as a trace picture (the command
    adds index.html, the page `xcon serve` shows of it: orchestrator.serve)."""
    from orchestrator.inspect import trace as trace_mod
    from orchestrator.lab.findings import by_cause

    kept = [t for t in summary.get("trials", []) if t.get("broken") and t.get("run_dir") and t.get("violations")]
    # past MAX_TRACES, the smallest kept trial of each cause before a second of any (issue 33: a
    # cause's row on the page links that trial's trace)
    firsts = [c["smallest"] for c in by_cause(kept)]
    drawn, first = 0, {id(t) for t in firsts}
    for t in firsts + [t for t in kept if id(t) not in first]:
        if drawn < MAX_TRACES:
            msg_id = t["violations"][0]["msg_id"]
            story = trace_mod.story(Path(t["run_dir"]), msg_id)
            if story:
                name = f"trace-{t['seed']}-{msg_id[:40]}.svg".replace("/", "_")
                (folder / name).write_text(trace_mod.svg(story, msg_id))
                t["trace"] = name
                drawn += 1
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


OBSERVED = ("alternate delivered", "primary delivered", "NDR to originator")


def scenario_summary(meta: dict[str, Any], cases: list) -> dict[str, Any]:
    """summary.json of a scenario run: each case as it ran, its expectations and observations
    labelled (q248839's are three yes/no answers), and a row of plain text to show it by."""
    rows = []
    for c in cases:
        entry = c.to_json()
        for key in ("expected", "observed"):
            value = entry.get(key) if key in entry else getattr(c, key, None)
            if isinstance(value, (tuple, list)) and len(value) == len(OBSERVED):
                entry[key] = dict(zip(OBSERVED, value))
        if entry.get("run_dir") and not Path(entry["run_dir"]).is_dir():
            entry["run_dir"] = None
        counts = (entry.get("check") or {}).get("counts") or {}
        entry["row"] = {"case": entry.get("case") or entry.get("build") or entry.get("name", ""),  # legacy+workaround, not legacy
                        "where": entry.get("alternate_on") or "",
                        "expected": ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in (entry.get("expected") or {}).items())
                        if isinstance(entry.get("expected"), dict) else str(entry.get("expected", "")),
                        "check": ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "clean",
                        "matches": "yes" if entry.get("matches") else "no", "message": entry.get("msg_id", "")}
        rows.append(entry)
    return {**meta, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": rows,
            "labels": {"expected": "what the article says happens", "observed": "what this run saw",
                       "matches": "the run behaved as the article says (check agreeing)"}}


def write_report(report_dir: Path, summary: dict[str, Any], first: Any) -> None:
    """--report DIR: the campaign's summary.json, pictures and index.html (the page `xcon serve`
    shows of it, readable from the file system), and the first broken trial's merged logs."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "index.html", *(t["trace"] for t in summary["trials"] if t.get("trace"))):
        (report_dir / name).write_bytes((Path(summary["store"]) / name).read_bytes())
    if first and Path(first.run_dir).is_dir():
        with open(report_dir / "logs.jsonl", "w") as f:
            for e in logread.merged(Path(first.run_dir)):
                f.write(json.dumps(e) + "\n")
