"""Worlds that reach what campaigns have not reached: a coverage signature per trial, and a
guided campaign that keeps and mutates the worlds that reached something new.

A trial's **decisions** are the distinct (node kind, event, reason) its nodes logged: an MTA
deferring for a locked mailbox, failing a pair as moved with an NDR, holding a report, a store
refusing an expired message, a move rolling back at a step. Ids, numbers and server names are
left out, so that the same decision in two worlds is one. A random campaign reaches the common
ones thousands of times and the rare ones seldom.

A **guided** campaign (`xcon chaos --sim --guided`) keeps, as AFL keeps inputs, every world that
reached a decision no earlier trial had, and draws each next world either afresh or as a
mutation of a kept one (an event moved in time, a send put just after a move, an event taken
from a fresh world, a timing halved or doubled, an event dropped). Mallory (Meng et al., CCS
2023) guides a distributed system's fault schedules the same way, by what the system logged. It
runs in rounds, a batch of worlds at a time over the workers, so a seed gives the same campaign.
A mutated world has a seed of its own (the simulator's draws) but no seed draws it: a broken one
is written to a file that `xcon chaos --sim --world` replays.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

from orchestrator.sim.network import Network

from . import campaign, chaos
from .worlds import SCHEDULE_S, Recipe, World, draw_world

# the fields that say why a node decided what it did, the first present of them
WHY = ("reason", "action", "report", "step", "via", "outcome", "kind")
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'[^']*'")  # a user's name in a refusal
_SERVERS = re.compile(r"\bex\d+\b|\b(?:mta|store|ims|imap)\.ex#")
IGNORED = frozenset({"node.started", "node.stopped", "node.ready", "fault.applied", "fault.cleared"})


def decisions(events: Iterable[dict[str, Any]]) -> set[str]:
    """The trial's coverage signature: each distinct decision logged, "kind:event:why[ report]"
    ("report" where it was about an NDR or a postmaster copy), and each step from one decision to
    the next in the story of one (message, recipient) pair, "a > b" (AFL's edges: a report held
    and then failed is another path than one failed at once); each with "|n", the bucket of how
    many times the trial made it (1, 2, 3, 4-7, 8-15, 16+: AFL's hit counts, so that a decision
    made again and again, a pair retried for ever, is new coverage too)."""
    counts: Counter = Counter()
    last: dict[tuple[Any, Any], str] = {}  # a pair's last decision
    for e in events:
        name = e["event"]
        if name in IGNORED:
            continue
        why = next((e[k] for k in WHY if isinstance(e.get(k), str)), "")
        why = _SERVERS.sub("exN", _NUMBERS.sub("#", _QUOTED.sub("'X'", why)))[:60]
        report = " report" if e.get("ndr_for") or "~ndr~" in str(e.get("msg_id", "")) else ""
        key = f"{e.get('node', '').partition('.')[0]}:{name}:{why}{report}"
        counts[key] += 1
        pair = (e.get("msg_id"), e.get("rcpt") or e.get("mailbox"))
        if pair[0] is not None:
            before = last.get(pair)
            if before is not None and before != key:
                counts[f"{before} > {key}"] += 1
            last[pair] = key
    return {f"{key}|{_bucket(n)}" for key, n in counts.items()}


def _bucket(n: int) -> int:
    return n if n <= 3 else 4 if n < 8 else 8 if n < 16 else 16


def distinct(signature: Iterable[str]) -> set[str]:
    """The decisions and steps of a signature, without their hit-count buckets."""
    return {d.rpartition("|")[0] for d in signature}


def mutate(world: World, rng: random.Random, faults: tuple[str, ...]) -> World:
    """A new world near `world`: one to three of the mutations of the module's docstring, with a
    seed of its own. Every event it names (users, servers) exists in `world`."""
    events = deepcopy(world.events)
    fields: dict[str, Any] = {}
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if op == 0 and events:  # an event moved in time
            e = rng.choice(events)
            e["at"] = round(min(SCHEDULE_S, max(0.0, e["at"] + rng.gauss(0, 0.5))), 3)
        elif op == 1:  # a send put just after a move starts (or any event just after another)
            moves = [e for e in events if e["do"] == "move"] or events
            sends = [e for e in events if e["do"] == "send"]
            if moves and sends:
                rng.choice(sends)["at"] = round(rng.choice(moves)["at"] + rng.uniform(0.0, 1.5), 3)
        elif op == 2:  # an event taken from a fresh world of the same users and servers
            donor = draw_world(rng.randrange(1, 2**31), world.build, faults, users=len(world.users),
                               servers=len(world.servers), extremes=False)
            events.append(deepcopy(rng.choice(donor.events)))
        elif op == 3:  # a timing halved or doubled
            name = rng.choice(("lag_ms", "jitter_ms", "retry_ms", "copy_delay_ms"))
            value = fields.get(name, getattr(world, name))
            fields[name] = max(50 if name == "retry_ms" else 0, int(value * rng.choice((0.5, 2.0))))
        elif len(events) > 1:  # an event dropped (a send is kept: a world needs mail)
            i = rng.randrange(len(events))
            if events[i]["do"] != "send" or sum(e["do"] == "send" for e in events) > 1:
                events.pop(i)
    events.sort(key=lambda e: (e["at"], e["do"] != "fault"))
    return replace(world, seed=rng.randrange(1, 2**31), events=events, **fields)


def run(root: Path, trials: int, build: str, faults: tuple[str, ...], net: Network, workers: int, seed: int,
        on_trial: Callable[[chaos.TrialResult], None] | None = None, stop_on_break: bool = False,
        fresh: float = 0.3, **draw: Any) -> tuple[list[chaos.TrialResult], list[World]]:
    """A guided campaign of `trials` worlds, and the worlds it ran, in order. `fresh` of them are
    drawn afresh; the rest are mutated from a kept world, chosen by the rarest decision it reached
    (FairFuzz's rare branches: a world near a rare decision is likelier to reach what is near
    it, where the common ones are reached by any world)."""
    rng = random.Random(seed)
    seeds = iter(chaos.trial_seeds(seed, trials))
    kept: list[tuple[World, set[str]]] = []  # a world that reached something new, and its signature
    hits: Counter = Counter()  # how many trials reached each decision and step
    results: list[chaos.TrialResult] = []
    worlds: list[World] = []
    batch = max(64, 16 * workers)
    while len(results) < trials:
        weights = [1 / min(hits[d] for d in sig) if sig else 1.0 for _, sig in kept]
        round_worlds = []
        for _ in range(min(batch, trials - len(results))):
            if kept and rng.random() >= fresh:
                round_worlds.append(mutate(rng.choices(kept, weights=weights)[0][0], rng, faults))
            else:
                round_worlds.append(draw_world(next(seeds), build, faults, **draw))
        ran = campaign.run(root, round_worlds, net, workers, dump=False, coverage=True, stop_on_break=stop_on_break)
        for world, result in zip(round_worlds, ran):
            signature = set(result.decisions)
            if not result.error and not signature <= hits.keys():
                kept.append((world, signature))
            hits.update(signature)
            results.append(result)
            worlds.append(world)
            if on_trial:
                on_trial(result)
            if stop_on_break and result.broken:
                return results, worlds
    return results, worlds


def reached(results: Iterable[chaos.TrialResult]) -> list[int]:
    """How many distinct decisions (hit counts aside) the campaign had reached after each trial."""
    seen: set[str] = set()
    curve = []
    for r in results:
        seen |= distinct(r.decisions)
        curve.append(len(seen))
    return curve


def from_recipes(root: Path, recipes: list[Recipe], net: Network, workers: int, seed: int,
                 on_trial: Callable[[chaos.TrialResult], None] | None = None,
                 stop_on_break: bool = False) -> tuple[list[chaos.TrialResult], list[World]]:
    """`xcon chaos --sim --guided`: a guided campaign as long as `recipes`, drawn as they are (their
    build, faults and draw_world's other arguments); each broken world is written to
    root/world-SEED.json, which `xcon chaos --sim --world` replays (no seed draws a mutated world),
    and the first broken trial's run under root."""
    args = dict(recipes[0].args)
    build, faults = args.pop("build"), args.pop("faults")
    results, worlds = run(root, len(recipes), build, faults, net, workers, seed, on_trial, stop_on_break, **args)
    for r, w in zip(results, worlds):
        if r.broken:
            (root / f"world-{r.seed}.json").write_text(json.dumps(campaign.world_to_json(w)))
    campaign.write_first(root, worlds, results, net)
    return results, worlds
