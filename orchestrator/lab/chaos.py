"""`xcon chaos`: timing campaigns on live clusters, judged by the invariant.

Each trial draws a plausible world from its seed (users, alternates, replication lag, copy
speed, moves, mail, faults) and runs it on a fresh cluster, then judges the logs with `check`.
Nothing in a world knows where the KB's window is: moves and messages land where the seed puts
them. A trial's seed alone replays its world (`xcon chaos --replay SEED`); the processes' own
timing is real, so a replay reproduces the world, and almost always its outcome.

The worlds are orchestrator.lab.worlds'. The fault `corrupt` damages an MTA's queue log in the
middle before it restarts: what its damaged record held is lost for a reason the verdict names
(`damaged`), which is that trial's expected cost, not a break.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from orchestrator import cluster as cl
from protocol import hlc
from orchestrator.inspect.check import OUTCOMES
from orchestrator.cluster.client import ClusterError
from orchestrator.processes import pid_alive
from orchestrator.sim.cluster import SimCluster
from orchestrator.sim.world import Livelock, Network, Stuck

from . import executors, guided, outside, smtp_client
from .findings import moving
from .play import Player
from .worlds import Recipe, World, draw_world, drawn, settle_s, world_settings


@dataclass
class TrialResult:
    seed: int
    build: str
    counts: dict[str, int] = field(default_factory=dict)
    pairs: int = 0
    messages: int = 0
    refused: int = 0  # submissions not acknowledged (a paused or killed MTA): not accepted, not owed
    moves: int = 0
    faults: int = 0
    seconds: float = 0.0
    violations: list[dict[str, Any]] = field(default_factory=list)
    stale_locks: list[dict[str, Any]] = field(default_factory=list)  # locks no unfinished move holds
    moves_failed: int = 0  # moves that rolled back (a fault made them fail): allowed, if nothing is lost
    error: str | None = None
    run_dir: str = ""
    digest: str = ""  # a simulated trial's event digest (same seed, same digest)
    torn_writes: int = 0  # simulated kills that landed inside a node's write (Network.torn_kills)
    corrupted: bool = False  # the world damaged a queue log (the fault corrupt): `damaged` pairs are its cost
    # delivery latency (acceptance to the mailbox, on the nodes' clocks): {"n", "p50", "p99", "max"} in ms
    latency_ms: dict[str, int] = field(default_factory=dict)
    deliveries_per_s: list[int] = field(default_factory=list)  # in each second since the trial's first event
    told: list[str] = field(default_factory=list)  # with --via smtp: the message ids a client was told 250 for
    events: int = 0  # the merged log's lines: the trial's size
    # with --imap: the users' IMAP visits that acted, those the server refused (a user moving or
    # just moved), and the delivered pairs the verdict found filed away or expunged by their users
    imap_acts: int = 0
    imap_refused: int = 0
    by_users: int = 0
    relayed_out: int = 0  # with --via smtp: messages the outside world's smarthost received
    # a trial past its bound (liveness): {"bound", "why", "moving": the pairs not yet final}
    stuck: dict[str, Any] | None = None
    decisions: list[str] = field(default_factory=list)  # its coverage signature, when asked (lab.guided)

    @property
    def broken(self) -> bool:
        return bool(self.stuck or self.stale_locks or [v for v in self.violations
                                                       if not (v["outcome"] == "damaged" and self.corrupted)])

    @property
    def lost(self) -> int:
        return self.counts.get("lost", 0)

    def to_json(self) -> dict[str, Any]:  # the decisions by their number: a campaign's summary holds every trial
        return {**asdict(self), "broken": self.broken, "decisions": len(self.decisions)}


def run_trial(world: World, run_dir: Path, keep: bool = False, sim: Network | None = None,
              dump: bool = True, coverage: bool = False) -> TrialResult:
    """Run one world on a fresh cluster (real processes, or with `sim` the simulator on that
    network) and judge it; with `coverage`, record the decisions it reached (guided campaigns and
    the bench ask: the signature is 6% of a simulated trial). A real trial's run-dir is removed
    unless it broke or `keep`; a simulated trial writes one (SimCluster.dump) only then, and only
    with `dump`."""
    result = TrialResult(world.seed, world.build, run_dir=str(run_dir),
                         corrupted=any(e.get("kind") == "corrupt" for e in world.events))
    t0 = time.time()
    settings = world_settings(world)
    smarthost: Any = None
    if world.outside is not None:  # the outside world's server, in this process (or in the world)
        smarthost = (outside.Smarthost if sim is None else outside.SimSmarthost)(world.outside["refuse"])
        smarthost.up()
        settings = replace(settings, smarthost=smarthost.address)
    try:
        # both start with the organisation in place (the directory's state written before the nodes
        # boot): the same USNs, and no replication draws spent on adding it, in either
        cluster = (SimCluster(settings, sim, users=world.users, smarthost=smarthost) if sim is not None
                   else cl.start(run_dir, settings, fresh=True, users=world.users))
        clock = "virtual" if sim is not None else "wall"
        try:
            Player(cluster, world, result, smarthost).play()
            if sim is not None:  # a simulated trial's bound in events, after its last step
                cluster.world.rearm()
            if smarthost is not None:
                smarthost.up()  # whatever the schedule left, the outside world is back for the settling
            bound = settle_s(world)
            if not settle(cluster, bound, clear=True):
                result.stuck = {"bound": f"{bound:g} s of {clock} time after its last send",
                                "why": f"did not settle within {bound:g} s ({clock} time)"}
        except Livelock as exc:  # Stuck too: the world's events past its bound
            result.stuck = {"bound": f"{sim.stuck_events:,} events after a step of its schedule" if isinstance(
                exc, Stuck) and sim is not None else "events at one instant", "why": str(exc)}
        except ClusterError as exc:
            result.error = str(exc)
        finally:
            if result.stuck is not None:
                result.stuck["moving"] = moving(cluster)
            cluster.stop()
    finally:
        if smarthost is not None:
            smarthost.down()
            result.relayed_out = len(smarthost.received)
    if sim is not None:
        cluster.world.event_limit = float("inf")  # the verdict's reads run nothing, but a dump's may
    events = _judged(cluster, result, smarthost, coverage)
    result.seconds = round(time.time() - t0, 4)
    if isinstance(cluster, SimCluster):
        result.digest = digest(events)
        result.torn_writes = cluster.world.torn_writes
        if keep or (dump and (result.broken or result.error)):
            cluster.dump(run_dir, replay=f"xcon chaos --sim --replay {world.seed} --mta-build {world.build}")
        else:
            result.run_dir = ""
    elif not keep and not result.broken and not result.error:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def deliveries(events: list[dict[str, Any]], seconds: int = 600) -> tuple[dict[str, int], list[int]]:
    """How long each message took from its acceptance to a mailbox (the first copy of each pair),
    and how many copies reached a mailbox in each second of the run (its first `seconds`)."""
    accepted: dict[str, int] = {}
    latencies: list[int] = []
    per_s = [0] * seconds
    start = hlc.of_event(events[0])[0] if events else 0
    last = -1
    for e in events:
        name = e["event"]
        if name == "mta.accepted":
            accepted.setdefault(e.get("msg_id"), hlc.of_event(e)[0])
        elif name == "store.delivered" and not e.get("ndr_for"):
            at = hlc.of_event(e)[0]
            if e.get("msg_id") in accepted:
                latencies.append(at - accepted[e["msg_id"]])
            second = (at - start) // 1000
            if 0 <= second < seconds:
                per_s[second] += 1
                last = max(last, second)
    latencies.sort()
    n = len(latencies)
    stats = {"n": n, "p50": latencies[n // 2], "p99": latencies[min(n - 1, n * 99 // 100)], "max": latencies[-1]} \
        if n else {"n": 0}
    return stats, per_s[:last + 1]


def digest(events: Iterable[dict[str, Any]]) -> str:
    """A fingerprint of a run's whole event sequence: two runs of one seed must give the same."""
    data = orjson.dumps(list(events), default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def _judged(cluster: cl.Cluster, result: TrialResult, smarthost: Any, coverage: bool) -> list[dict[str, Any]]:
    """The trial's verdict and figures into `result`: the check's, then what a client was told and
    the smarthost received against the logs; the merged log, which they were read from."""
    report = cluster.verdict()
    result.by_users = len(report.by_users)
    result.counts, result.pairs = report.counts, report.pairs
    result.violations = [v.to_json() for v in report.violations]
    result.stale_locks = report.stale_locks
    events = list(cluster.events())  # merged once for the count and the digest
    result.events = len(events)
    if coverage:
        result.decisions = sorted(guided.decisions(events))
    result.violations += smtp_client.told_but_not_accepted(result.told, events)
    if smarthost is not None:
        result.violations += outside.relayed_not_received(events, smarthost.received)
    result.moves_failed = sum(1 for e in events if e["event"] == "move.failed")
    result.latency_ms, result.deliveries_per_s = deliveries(events)
    return events


def settle(cluster: cl.Cluster, timeout: float, clear: bool = False) -> bool:
    """Wait until the cluster is quiet (Cluster.wait), starting any node found down meanwhile
    (Cluster.revive: a trial ends with the whole cluster up); with `clear`, first clear every
    fault (through an orchestrator that may have to be revived)."""
    clock = cluster.clock
    deadline = clock.now() + timeout
    while clock.now() < deadline:
        cluster.revive()
        try:
            if clear:
                cluster.fault("clear", "")
                clear = False
            if cluster.wait(min(5.0, max(0.1, deadline - clock.now()))):
                return True
        except ClusterError:
            pass  # a node down: the orchestrator, say, killed at a step of a move's recovery
    return False


def trial_seeds(seed: int, trials: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, 2**31) for _ in range(trials)]


def campaign(root: Path, seeds: list[int], build: str, faults: tuple[str, ...], users: int | None,
             moves: int | None, on_trial: Callable[[TrialResult], None] | None = None,
             stop_on_break: bool = False, sim: Network | None = None,
             worlds: list[World | Recipe] | None = None, dask: str | None = None) -> list[TrialResult]:
    """Run a world per seed (drawn, or the `worlds` given) one after the other, or with `dask` on
    that Dask cluster's workers (orchestrator.lab.executors), each trial's cluster on its worker's
    machine: the run-dir of a trial that broke or failed comes back under `root`."""
    worlds = worlds or [draw_world(seed, build, faults, users, moves) for seed in seeds]  # lab timings
    names = [f"trial-{i:04d}-{w.seed}" for i, w in enumerate(worlds)]
    if dask:
        runs = ((result, name, archive) for (result, archive), name in
                zip(executors.run_map(_trial_elsewhere, list(zip(worlds, names)), 1, dask, chunksize=1), names))
    else:
        runs = ((run_trial(drawn(world), root / name, sim=sim), name, None) for world, name in zip(worlds, names))
    results = []
    for result, name, archive in runs:
        if archive is not None:
            executors.unpack_dir(archive, root / name)
            result.run_dir = str(root / name)
        results.append(result)
        if on_trial:
            on_trial(result)
        if stop_on_break and result.broken:
            break
    return results


SCRATCH = "xcon-trial-"


def _reap_orphans() -> None:
    """Stop the clusters, and remove the folders, of trials whose worker died under them (a
    killed Dask worker cannot clean up: the next trial on its machine does)."""
    for folder in Path(tempfile.gettempdir()).glob(SCRATCH + "*"):
        try:
            owner = int((folder / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not one of ours yet (being made) or not ours
        if pid_alive(owner):
            continue
        for run_dir in (d for d in folder.iterdir() if d.is_dir()):
            try:
                cl.stop(run_dir, force=True)
            except ClusterError:
                pass
        shutil.rmtree(folder, ignore_errors=True)


def _trial_elsewhere(job: tuple[World | Recipe, str]) -> tuple[TrialResult, bytes | None]:
    """A real trial on a Dask worker: its cluster in a scratch folder of the worker's machine, the
    run-dir sent back (packed) when the trial broke or failed, the folder removed either way."""
    world, name = job
    world = drawn(world)
    _reap_orphans()
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH))
    (scratch / "owner.pid").write_text(str(os.getpid()))
    try:
        result = run_trial(world, scratch / name)
        kept = Path(result.run_dir) if result.run_dir else None
        archive = executors.pack_dir(kept) if kept is not None and kept.is_dir() else None
        result.run_dir = ""
        return result, archive
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def summarize(results: list[TrialResult]) -> dict[str, Any]:
    totals: dict[str, Any] = {"trials": len(results), "messages": sum(r.messages for r in results),
                              "refused": sum(r.refused for r in results), "pairs": sum(r.pairs for r in results)}
    for key in OUTCOMES:
        totals[key] = sum(r.counts.get(key, 0) for r in results)
    totals["stale_locks"] = sum(len(r.stale_locks) for r in results)
    totals["moves"] = sum(r.moves for r in results)
    for key in ("by_users", "imap_acts", "imap_refused", "relayed_out"):
        if any(getattr(r, key) for r in results):  # campaigns with IMAP users, or the outside world
            totals[key] = sum(getattr(r, key) for r in results)
    totals["moves_failed"] = sum(r.moves_failed for r in results)
    totals["torn_writes"] = sum(r.torn_writes for r in results)
    totals["broken_trials"] = sum(r.broken for r in results)
    totals["stuck_trials"] = sum(bool(r.stuck) for r in results)
    totals["errors"] = sum(bool(r.error) for r in results)
    totals["seconds"] = round(sum(r.seconds for r in results), 1)
    totals["trials_per_minute"] = round(60 * len(results) / totals["seconds"], 2) if totals["seconds"] else 0
    return totals
