"""Campaigns in the simulator: the same worlds as `xcon chaos`, thousands a minute.

- `run`: the trials of a campaign over worker processes, in seed order;
- determinism: with `twice`, each seed runs a second time and the two runs' event digests must
  be equal (FoundationDB's unseed check): a difference is a source of nondeterminism in the
  simulator or a core, and a find that could not be replayed;
- `confirm`: a world that broke in simulation runs again on real processes, and the two verdicts
  are compared by what broke (outcome, recipient and sender of each broken pair);
- `shrink`: a broken world cut down (fewer events and users, shorter lag, retry and copy times)
  while it still breaks the same way, to the smallest world found.
"""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from nodes.config import BUILDS, MOVE_BUILDS

from orchestrator.sim.world import Network

from . import chaos, executors
from .worlds import Recipe, World, drawn, named_users


# a shrunk world must stay one a real cluster can run: a retry interval of 0 would be a tight loop
FLOORS = {"retry_ms": 50}


def _trial(args: tuple) -> chaos.TrialResult:
    world, run_dir, network, twice, coverage = args
    with _collected_after():
        world = drawn(world)
        result = chaos.run_trial(world, run_dir, sim=network, dump=False, coverage=coverage)
        if twice:
            again = chaos.run_trial(world, run_dir, sim=network, dump=False)
            if again.digest != result.digest:
                result.error = f"nondeterministic: digest {result.digest} then {again.digest}"
    return result


@contextmanager
def _collected_after() -> Iterator[None]:
    """A trial runs without the cyclic garbage collector, and its garbage (a world is a graph of
    cycles) is collected once at its end. Collections during the trial walked the world over and
    over while all of it was alive: 6-9% of a default-faults trial, measured on one core."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)  # what the trial made is all in the youngest generation: nothing ran since


def run(root: Path, worlds: list[World | Recipe], network: Network, workers: int = 1, twice: bool = False,
        on_trial: Callable[[chaos.TrialResult], None] | None = None,
        stop_on_break: bool = False, dask: str | None = None, dump: bool = True,
        coverage: bool = False) -> list[chaos.TrialResult]:
    """Run the worlds in the simulator, `workers` processes at once (or on the Dask cluster
    `dask`: orchestrator.lab.executors); with `dump`, the first broken trial's run, and the
    smallest of each other cause's, are written under `root` (run again alone, here, so each is
    the same run: the simulator replays); with
    `coverage`, each result holds the decisions its trial reached (orchestrator.lab.guided)."""
    jobs = [(w, trial_dir(root, i, w), network, twice, coverage) for i, w in enumerate(worlds)]
    results: list[chaos.TrialResult] = []
    for result in executors.run_map(_trial, jobs, workers, dask):
        results.append(result)
        if on_trial:
            on_trial(result)
        if stop_on_break and result.broken:
            break
    if dump:
        write_first(root, worlds, results, network)
    return results


def trial_dir(root: Path, i: int, world: World | Recipe) -> Path:
    return root / f"trial-{i:05d}-{world.seed}"


def write_first(root: Path, worlds: list[World | Recipe], results: list[chaos.TrialResult], network: Network) -> None:
    """The run of the first trial that broke or failed, and of the smallest trial (fewest events)
    of each other way trials broke (findings.cause_of: what a campaign page shows a row of, with
    that trial's trace), each written under `root` by one more run of its world: the same
    events, to the byte (the simulator replays); its result names the folder."""
    from .findings import by_cause

    first = next((i for i, r in enumerate(results) if r.broken or r.error), None)
    index = {id(r): i for i, r in enumerate(results)}
    smallest = [index[id(c["smallest"])] for c in by_cause(results)]
    for i in dict.fromkeys([*([first] if first is not None else []), *smallest]):
        again = chaos.run_trial(drawn(worlds[i]), trial_dir(root, i, worlds[i]), sim=network, dump=True)
        results[i].run_dir = again.run_dir


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def signature(result: chaos.TrialResult) -> Counter:
    """What broke, without the ids a run draws for itself: (outcome, recipient, sender) of each
    broken pair, each stale lock's mailbox, and whether it was stuck."""
    found: Counter = Counter((v["outcome"], v["rcpt"], v["sender"]) for v in result.violations)
    found.update(("stale lock", lock["mailbox"], lock["server"]) for lock in result.stale_locks)
    if result.stuck:  # a trial past its bound: it shrinks to a smaller world that is stuck too
        found["stuck", "", ""] += 1
    return found


def confirm(world: World, found: chaos.TrialResult, run_dir: Path) -> tuple[chaos.TrialResult, bool]:
    """Run a world `found` broken in simulation on real processes; whether it broke the same way
    (a break that needed a kill inside a write, Network.torn_kills, rarely happens for real)."""
    real = chaos.run_trial(world, run_dir)
    return real, real.broken and signature(real) == signature(found)


def world_to_json(world: World) -> dict[str, Any]:
    return {**asdict(world), "servers": list(world.servers), "sites": list(world.sites)}


def world_from_json(data: dict[str, Any]) -> World:
    """A world written by `shrink` (or by hand): the shape of World, checked."""
    try:
        world = World(**{**data, "servers": tuple(data["servers"]), "sites": tuple(data.get("sites") or ())})
    except (TypeError, KeyError) as exc:
        raise ValueError(f"not a world: {exc!s} (write one with `xcon chaos --sim --shrink`)") from None
    if world.build not in BUILDS:
        raise ValueError(f"unknown build {world.build!r}")
    if world.move_build not in MOVE_BUILDS:
        raise ValueError(f"unknown move build {world.move_build!r}")
    return world


def load_world(path: Path) -> World:
    return world_from_json(json.loads(path.read_text()))


def shrink(world: World, network: Network | None = None, budget: int = 400) -> tuple[World, int]:
    """The smallest world found that still breaks as `world` does (the same kinds of break),
    greedily: drop each event, then each user no event names, then alternates, then halve the
    lag, jitter, retry and copy times, until a whole pass changes nothing or `budget` runs are
    spent. Returns it and how many runs it took. (Hand-written, not Hypothesis: a world is a list
    of timed events whose meaning depends on each other, which a delta-debugging pass over that
    list cuts down directly; a Hypothesis strategy would have to re-draw it from choices.)"""
    network = network or Network()
    scratch = Path("/nonexistent/shrink")
    runs = 0

    def kinds(r: chaos.TrialResult) -> set:
        return {k[0] for k in signature(r)}

    target = kinds(chaos.run_trial(world, scratch, sim=network, dump=False))
    if not target:
        return world, 1

    def breaks(candidate: World) -> bool:
        nonlocal runs
        runs += 1
        try:
            result = chaos.run_trial(candidate, scratch, sim=network, dump=False)
        except (KeyError, IndexError, ValueError):
            return False  # a cut that left the world inconsistent (a move of a user it removed)
        return not result.error and target <= kinds(result)

    best = world
    changed = True
    while changed and runs < budget:
        changed = False
        i = 0
        while i < len(best.events) and runs < budget:
            candidate = replace(best, events=best.events[:i] + best.events[i + 1:])
            if breaks(candidate):
                best, changed = candidate, True
            else:
                i += 1
        named = named_users(best) | {u["alternate"] for u in best.users if u["alternate"]}
        for user in [u for u in best.users if u["alias"] not in named]:
            if runs >= budget:
                break
            candidate = replace(best, users=[u for u in best.users if u is not user])
            if breaks(candidate):
                best, changed = candidate, True
        for user in [u for u in best.users if u["alternate"]]:
            if runs >= budget:
                break
            users = [dict(u, alternate=None, deliver_to_both=False) if u is user else u for u in best.users]
            candidate = replace(best, users=users)
            if breaks(candidate):
                best, changed = candidate, True
        for field in ("lag_ms", "jitter_ms", "retry_ms", "copy_delay_ms"):
            value = getattr(best, field)
            floor = FLOORS.get(field, 0)
            if value > floor and runs < budget:
                candidate = replace(best, **{field: max(floor, value // 2)})
                if breaks(candidate):
                    best, changed = candidate, True
    return best, runs
