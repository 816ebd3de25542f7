"""`xcon bench`'s rows on a campaign's power to find bugs: random worlds beside guided ones
(orchestrator.lab.guided), in the same run. How many distinct decisions (and steps between them)
each reaches, and how many trials each needs to find the legacy build's loss and each bug of
orchestrator.lab.plants. Every fault kind, the simulator on every core; a guided campaign's
trials are its worlds in the order it ran them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from orchestrator.sim.network import Network

from . import campaign, chaos, guided
from .plants import PLANTS, plant
from .worlds import FAULTS, Recipe

SEED = 31


def _first(results: list[chaos.TrialResult], finding: str) -> int | None:
    for i, r in enumerate(results, 1):
        if r.lost if finding == "lost" else (bool(r.stuck) if finding == "stuck" else r.counts.get(finding, 0)):
            return i
    return None


def _both(root: Path, trials: int, build: str, network: Network, workers: int,
          stop: bool) -> dict[str, list[chaos.TrialResult]]:
    worlds = [Recipe(s, {"build": build, "faults": FAULTS}) for s in chaos.trial_seeds(SEED, trials)]
    return {"random": campaign.run(root, worlds, network, workers, stop_on_break=stop, dump=False, coverage=True),
            "guided": guided.run(root, trials, build, FAULTS, network, workers, SEED, stop_on_break=stop)[0]}


def rows(root: Path, quick: bool, say: Callable[[str], None], Row: Any) -> list[Any]:
    workers = campaign.default_workers()
    # --quick is the CI smoke test's: every row, from a campaign of two rounds (guided's first is
    # the same fresh draws as random's), and a short search for each bug
    n = 130 if quick else 10_000
    budget = 10 if quick else 3_000  # the trials each campaign may spend looking for one bug
    network = Network(stuck_events=20_000)  # a livelock is stuck in a fraction of a second
    out = []
    say(f"random and guided worlds, {n} trials each, every fault kind")
    both = _both(root / "power", n, "sp4", network, workers, stop=False)
    reached = {mode: guided.reached(results)[-1] for mode, results in both.items()}
    for mode in ("random", "guided"):
        out.append(Row("chaos --sim", f"distinct decisions in {n:,} trials, {mode}", reached[mode],
                       reached["random"] if mode == "guided" else None, "decisions",
                       f"sp4, every fault kind, seed {SEED}; a decision is a node's event and its reason, a "
                       f"step one to the next in a pair's story (orchestrator.lab.guided)"))
    for name, (build, finding, _) in {"legacy loss": ("legacy", "lost", None), **PLANTS}.items():
        say(f"trials to find: {name}")
        if name == "legacy loss":
            found = _both(root / "power", budget, build, network, workers, stop=True)
        else:
            with plant(name):
                found = _both(root / "power", budget, build, network, workers, stop=True)
        first = {mode: _first(results, finding) for mode, results in found.items()}
        for mode in ("random", "guided"):
            value = first[mode] or budget
            out.append(Row("chaos --sim", f"trials to find {name}, {mode}", value,
                           (first["random"] or budget) if mode == "guided" else None, "trials",
                           f"{build}, every fault kind, seed {SEED}; {finding} in the trial"
                           + ("" if first[mode] else f"; not found in {budget:,}")))
    return out
