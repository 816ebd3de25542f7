"""`xcon chaos`: timing campaigns on live clusters, judged by the invariant.

Each trial draws a plausible world from its seed (users, alternates, replication lag, copy
speed, moves, mail, faults) and runs it on a fresh cluster, then judges the logs with `check`.
Nothing in a world knows where the KB's window is: moves and messages land where the seed puts
them. A trial's seed alone replays its world (`xcon chaos --replay SEED`); the processes' own
timing is real, so a replay reproduces the world, and almost always its outcome.

Now and then a world draws an extreme, as swarm testing does (Groce et al., 2012: each trial turns
features on and off and pushes some to their limits), unless `extremes` is off: a short time-out
and a node down longer than a report's (so reports go to the postmaster), users moved many times
in a row while mail and reports are in flight, the largest subject and message id the API takes.
The fault `corrupt` damages an MTA's queue log in the middle before it restarts: what its damaged
record held is lost for a reason the verdict names (`damaged`), which is that trial's expected
cost, not a break.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from nodes.config import Settings
from protocol import MAX_MESSAGE_BYTES

from orchestrator import cluster as cl
from orchestrator.inspect.check import OUTCOMES
from orchestrator.cluster.client import ClusterError
from orchestrator.sim.cluster import SimCluster
from orchestrator.sim.world import Livelock, Network

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj"]
# kill_at_step: a node (the orchestrator, a store, an MTA, the directory) killed the moment a move
# enters a step; move_source_down: a move started while its source store is killed or paused,
# for less or for longer than the move's lock step waits (its tries)
FAULTS = ("lag", "pause", "delay", "duplicate", "reorder", "feed_cut", "drop", "kill", "kill_at_step",
          "move_source_down", "corrupt")
DEFAULT_FAULTS = ("lag", "pause", "delay", "duplicate", "reorder")
# the kernel's faults on a cluster of namespaces (--network netns): a shaped link (netem, or a
# rate alone through tbf on a kernel without netem) and a partition between two hosts, each
# healed after its drawn time
NET_FAULTS = ("net", "partition")
CRASH_STEPS = ("lock", "copy", "set_home", "open_target", "release", "rollback_target", "rollback_source")
SCHEDULE_S = 4.0  # moves, mail and faults all start within this many seconds of a trial
SETTLE_S = 90.0
# the extremes a world draws now and then (draw_world), each with its chance
OUTAGE_P, MOVES_P, LARGEST_P = 0.12, 0.10, 0.10
# the subjects of a "largest" world: a header line's limit, larger ones, and (one world in twenty of
# those: at 200 ms a simulated trial it would be most of a campaign's time) all the API takes
LARGEST_SUBJECTS = (998, 64 * 1024, 1 << 20)
LARGEST_SUBJECT = MAX_MESSAGE_BYTES - 64 * 1024


@dataclass
class World:
    seed: int
    build: str
    servers: tuple[str, ...]
    users: list[dict[str, Any]]  # alias, home, alternate, deliver_to_both
    lag_ms: int
    jitter_ms: int
    retry_ms: int
    copy_delay_ms: int
    events: list[dict[str, Any]]  # {"at": s, "do": "send"|"move"|"fault", ...}, in time order
    # "lab": the drawn lag, jitter and retry; another profile: its timings (nodes.config.PROFILES)
    profile: str = "lab"
    time_scale: float = 1.0
    read_cache_ttl_ms: int = 0  # the MTAs' read cache, with the lab profile
    move_build: str = "sp4"  # "legacy": Move User as before SP4 (KB Q277911's window)
    soft_delete_ms: int = 0  # stores keep a moved-away mailbox soft-deleted this long (KB 2579150)
    network: str = "loopback"  # "netns": a host per server (orchestrator.netns), where net faults live
    expire_ms: int | None = None  # a normal message's time-out; None: the profile's (60 s in the lab)


def links(servers: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for s in servers:
        out += [(f"mta.{s}", f"store.{s}"), (f"mta.{s}", "directory"), ("orchestrator", f"store.{s}")]
    out += [(f"mta.{a}", f"mta.{b}") for i, a in enumerate(servers) for b in servers[i + 1:]]
    return out + [("orchestrator", "directory")]


def draw_world(seed: int, build: str, faults: tuple[str, ...] = DEFAULT_FAULTS, users: int | None = None,
               moves: int | None = None, servers: int = 2, profile: str = "lab", time_scale: float = 1.0,
               move_build: str = "sp4", network: str = "loopback", netem: bool = False,
               extremes: bool = True) -> World:
    """A random but plausible world, the same for the same arguments (`netem`: whether the
    kernel can delay and drop, or only limit a link's rate; `extremes`: whether it may draw the
    extremes of the module's docstring)."""
    rng = random.Random(seed)
    names = tuple(f"ex{i}" for i in range(1, servers + 1))
    n_users = users or rng.randint(3, 6)
    aliases = NAMES[:n_users] if n_users <= len(NAMES) else [f"user{i}" for i in range(n_users)]
    people = []
    for alias in aliases:
        alternate = rng.choice([a for a in aliases if a != alias]) if rng.random() < 0.5 else None
        people.append({"alias": alias, "home": rng.choice(names), "alternate": alternate,
                       "deliver_to_both": bool(alternate) and rng.random() < 0.6})
    events: list[dict[str, Any]] = []
    for _ in range(moves or rng.randint(1, 3)):
        events.append({"at": rng.uniform(0, SCHEDULE_S * 0.6), "do": "move", "alias": rng.choice(aliases),
                       "pick": rng.random()})  # pick chooses the target among the other servers at that time
    for _ in range(rng.randint(8, 20)):
        send = {"at": rng.uniform(0, SCHEDULE_S), "do": "send", "sender": rng.choice(aliases),
                "to": rng.sample(aliases, rng.randint(1, min(3, len(aliases))))}
        if rng.random() < 0.3:  # most mail is normal; some urgent (a shorter time-out), some not
            send["priority"] = rng.choice(["urgent", "non-urgent"])
        events.append(send)
    nodes = ["directory", *(f"{k}.{s}" for s in names for k in ("store", "mta"))]
    for kind in faults:
        if rng.random() > 0.7:
            continue
        at = rng.uniform(0, SCHEDULE_S * 0.8)
        mta = f"mta.{rng.choice(names)}"
        if kind == "move_source_down":
            move = rng.choice([e for e in events if e["do"] == "move"])
            # down for less than the lock step's tries (the move waits it out), or for longer
            # (it fails, and the locks it asked for must not outlive it)
            move["source_down"] = {"how": rng.choice(["kill", "pause"]),
                                   "seconds": round(rng.choice([rng.uniform(0.3, 3.0), rng.uniform(12.5, 15.0)]), 3)}
            continue
        if kind == "lag":
            fault = {"kind": "lag", "node": mta, "lag_ms": rng.randint(100, 3000), "jitter_ms": rng.randint(0, 500)}
        elif kind == "pause":
            fault = {"kind": "pause", "node": rng.choice(nodes), "seconds": round(rng.uniform(0.2, 1.5), 3)}
        elif kind == "feed_cut":
            fault = {"kind": "feed_cut", "node": mta, "seconds": round(rng.uniform(0.5, 3.0), 3)}
        elif kind == "kill":
            fault = {"kind": "kill", "node": rng.choice(nodes), "restart_after": round(rng.uniform(0.2, 1.5), 3)}
        elif kind == "net":
            fault = {"kind": "net", "node": rng.choice(names), "seconds": round(rng.uniform(1, 4), 3),
                     "rate_kbit": rng.choice([64, 256, 1024])}
            if netem:
                fault.update(rate_kbit=0, delay_ms=rng.randint(5, 300), jitter_ms=rng.randint(0, 50),
                             loss=round(rng.uniform(0, 20), 1), duplicate=round(rng.uniform(0, 5), 1))
        elif kind == "partition":
            a, b = rng.sample(["directory", "orchestrator", *names], 2)
            fault = {"kind": "partition", "node": a, "peer": b, "seconds": round(rng.uniform(1, 5), 3),
                     **({"one_way": True} if rng.random() < 0.3 else {})}
        elif kind == "corrupt":  # killed, a byte flipped mid-queue-log, restarted: it finds the damage
            fault = {"kind": "corrupt", "node": mta, "where": round(rng.uniform(0.1, 0.8), 3),
                     "restart_after": round(rng.uniform(0.2, 1.5), 3)}
        elif kind == "kill_at_step":
            at = 0.0  # armed before the moves start
            fault = {"kind": "kill_at_step", "node": rng.choice([*nodes, "orchestrator"]),
                     "step": rng.choice(CRASH_STEPS), "restart_after": round(rng.uniform(0.2, 1.5), 3)}
        else:
            a, b = rng.choice(links(names))
            fault = {"kind": kind, "node": a, "peer": b, "seconds": round(rng.uniform(1, 4), 3)}
            if kind == "delay":
                fault.update(delay_ms=rng.randint(20, 300), jitter_ms=rng.randint(0, 200))
            else:
                fault["probability"] = round(rng.uniform(0.1, 0.5), 3)
        events.append({"at": at, "do": "fault", **fault})
    events.sort(key=lambda e: (e["at"], e["do"] != "fault"))
    world = World(seed, build, names, people, lag_ms=rng.randint(100, 2500), jitter_ms=rng.randint(0, 800),
                  retry_ms=rng.randint(200, 1500), copy_delay_ms=rng.randint(50, 600), events=events,
                  profile=profile, time_scale=time_scale)
    # drawn last, so that the draws above stay what they were for a seed: the MTAs' read cache
    # (Q172364, Q178534: a stale read) and a delivery restriction that changes while mail flows
    world.read_cache_ttl_ms = rng.randint(200, 3000) if rng.random() < 0.4 else 0
    if rng.random() < 0.3:
        alias = rng.choice(aliases)
        events.append({"at": rng.uniform(0, SCHEDULE_S), "do": "restrict", "alias": alias,
                       "reject_from": [rng.choice([a for a in aliases if a != alias])]})
        events.sort(key=lambda e: (e["at"], e["do"] != "fault"))
    # stores that keep moved-away mailboxes soft-deleted (KB 2579150: a stale route finds one)
    world.soft_delete_ms = rng.randint(1000, 30_000) if rng.random() < 0.4 else 0
    world.move_build = move_build
    world.network = network
    if extremes:  # last again: a seed draws what it drew before, and then its extremes
        draw_extremes(rng, world, aliases, nodes, outage="kill" in faults)
    return world


def draw_extremes(rng: random.Random, world: World, aliases: list[str], nodes: list[str], outage: bool) -> None:
    """Now and then, push the world to a limit (see the module's docstring); `outage`: whether a
    node may be down long (a kill: for worlds that draw kills)."""
    events = world.events
    if rng.random() < OUTAGE_P and outage:  # down longer than a report's time-out (twice a message's)
        world.expire_ms = rng.randint(1500, 4000)
        events.append({"at": round(rng.uniform(0, SCHEDULE_S * 0.5), 3), "do": "fault", "kind": "kill",
                       "node": rng.choice(nodes), "extreme": "outage",
                       "restart_after": round(2 * world.expire_ms / 1000 * rng.uniform(1.1, 2.0), 3)})
    if rng.random() < MOVES_P:  # one or two users moved again and again while mail and reports fly
        movers = rng.sample(aliases, min(2, len(aliases)))
        at = rng.uniform(0, SCHEDULE_S * 0.3)
        for _ in range(rng.randint(8, 20)):
            at += rng.uniform(0.1, 0.3)
            events.append({"at": round(at, 3), "do": "move", "alias": rng.choice(movers), "pick": rng.random(),
                           "extreme": "moves"})
    if rng.random() < LARGEST_P:  # the largest subject and the longest id the API takes
        msg_id = f"x{world.seed}-".ljust(200, "x")
        events.append({"at": round(rng.uniform(0, SCHEDULE_S), 3), "do": "send", "sender": rng.choice(aliases),
                       "to": rng.sample(aliases, rng.randint(1, min(3, len(aliases)))), "msg_id": msg_id,
                       "subject_bytes": LARGEST_SUBJECT if rng.random() < 0.05 else rng.choice(LARGEST_SUBJECTS),
                       "extreme": "largest"})
    events.sort(key=lambda e: (e["at"], e["do"] != "fault"))


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

    @property
    def broken(self) -> bool:
        return bool(self.stale_locks or [v for v in self.violations
                                         if not (v["outcome"] == "damaged" and self.corrupted)])

    @property
    def lost(self) -> int:
        return self.counts.get("lost", 0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "broken": self.broken}


def world_settings(world: World) -> Settings:
    expire = {} if world.expire_ms is None else {"expire_ms": world.expire_ms}
    if world.profile != "lab" or world.time_scale != 1.0:
        return Settings.from_profile(world.profile, world.time_scale, servers=world.servers, mta_build=world.build,
                                     seed=world.seed, move_build=world.move_build, soft_delete_ms=world.soft_delete_ms,
                                     network=world.network, **expire)
    return Settings(world.servers, world.build, world.lag_ms, world.jitter_ms, world.retry_ms,
                    expire_ms=world.expire_ms or 60_000, seed=world.seed, read_cache_ttl_ms=world.read_cache_ttl_ms,
                    move_build=world.move_build, soft_delete_ms=world.soft_delete_ms, network=world.network)


def run_trial(world: World, run_dir: Path, keep: bool = False, sim: Network | None = None,
              dump: bool = True) -> TrialResult:
    """Run one world on a fresh cluster (real processes, or with `sim` the simulator on that
    network) and judge it. A real trial's run-dir is removed unless it broke or `keep`; a
    simulated trial writes one (SimCluster.dump) only then, and only with `dump`."""
    result = TrialResult(world.seed, world.build, run_dir=str(run_dir),
                         corrupted=any(e.get("kind") == "corrupt" for e in world.events))
    t0 = time.time()
    settings = world_settings(world)
    cluster = SimCluster(settings, sim) if sim is not None else cl.start(run_dir, settings, fresh=True)
    try:
        _populate(cluster, world)
        _play(cluster, world, result)
        if not settle(cluster, SETTLE_S, clear=True):
            result.error = f"did not settle within {SETTLE_S:g}s"
    except (ClusterError, Livelock) as exc:
        result.error = str(exc)
    finally:
        cluster.stop()
    report = cluster.verdict()
    result.counts, result.pairs = report.counts, report.pairs
    result.violations = [v.to_json() for v in report.violations]
    result.stale_locks = report.stale_locks
    events = list(cluster.events())  # merged once for the count and the digest
    result.moves_failed = sum(1 for e in events if e["event"] == "move.failed")
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


def digest(events: Iterable[dict[str, Any]]) -> str:
    """A fingerprint of a run's whole event sequence: two runs of one seed must give the same."""
    data = orjson.dumps(list(events), default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def _populate(cluster: cl.Cluster, world: World) -> None:
    for u in world.users:
        cluster.add_user(u["alias"], u["home"], wait=False)
    usn = 0
    for u in world.users:
        if u["alternate"]:
            usn = cluster.set_user(u["alias"], {"alternate": u["alternate"], "deliver_to_both": u["deliver_to_both"]},
                                   wait=False)["usn"]
    cluster.wait_replicated(usn or len(world.users))


def _play(cluster: cl.Cluster, world: World, result: TrialResult) -> None:
    """Run the world's schedule: each event at its time (the campaign's clock, not a test's wait)."""
    t0 = cluster.clock.now()
    restarts: list[tuple[float, str]] = []  # (when, node): a killed node starts again
    heals: list[float] = []  # when the network faults end (a heal ends all of them)

    def until(at: float) -> None:
        delay = t0 + at - cluster.clock.now()
        if delay > 0:
            cluster.clock.sleep(delay)

    def heal() -> None:
        try:
            cluster.fault("heal", "")
        except ClusterError:
            pass  # the orchestrator is down: settle's clear heals the network too

    for event in world.events:
        while restarts and restarts[0][0] <= event["at"]:
            at, node = restarts.pop(0)
            until(at)  # a killed node stays down for its drawn time, no less
            cluster.restart(node)
        while heals and heals[0] <= event["at"]:
            until(heals.pop(0))
            heal()
        until(event["at"])
        if not cluster.alive("orchestrator"):
            cluster.restart("orchestrator")  # it killed itself at a step (kill_at_step)
        try:
            if event["do"] == "send":
                result.messages += 1
                # a short wait: a paused MTA must not hold up the rest of the schedule
                subject = "s" * event["subject_bytes"] if "subject_bytes" in event else f"chaos {world.seed}"
                cluster.send(event["sender"], event["to"], subject, "", timeout=2.0 + len(subject) / 2e6,
                             priority=event.get("priority"), msg_id=event.get("msg_id"))
            elif event["do"] == "restrict":  # the recipient's delivery restrictions change (Q178534)
                cluster.set_user(event["alias"], {"reject_from": event["reject_from"]}, wait=False)
            elif event["do"] == "move":
                entry = cluster.lookup(event["alias"])
                others = [s for s in world.servers if s != entry["home_server"]]
                target = others[int(event["pick"] * len(others))]
                down = event.get("source_down")
                if down:  # the source store is down or paused as the move starts
                    store = f"store.{entry['home_server']}"
                    if down["how"] == "pause":
                        cluster.fault("pause", store, seconds=down["seconds"])
                    else:
                        cluster.fault("kill", store)
                        restarts.append((event["at"] + down["seconds"], store))
                        restarts.sort()
                    result.faults += 1
                cluster.move(event["alias"], target, copy_delay_ms=world.copy_delay_ms, wait=False)
                result.moves += 1
            else:
                skip = ("at", "do", "kind", "node", "peer") + (("restart_after",) if event["kind"] == "kill" else ())
                params = {k: v for k, v in event.items() if k not in skip}
                cluster.fault(event["kind"], event["node"], event.get("peer"), **params)
                result.faults += 1
                if event["kind"] == "kill":
                    restarts.append((event["at"] + event["restart_after"], event["node"]))
                    restarts.sort()
                if event["kind"] in NET_FAULTS:  # lasts its drawn time from when it was made
                    heals.append(cluster.clock.now() - t0 + event["seconds"])
                    heals.sort()
        except ClusterError:
            if event["do"] == "send":
                result.refused += 1  # e.g. the MTA is paused: the client gave up, the MTA may still accept
    for at, node in restarts:
        until(at)
        cluster.restart(node)
    if heals:
        until(heals[-1])
        heal()


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
             worlds: list[World] | None = None) -> list[TrialResult]:
    """Run a world per seed (drawn, or the `worlds` given) one after the other."""
    results = []
    for i, seed in enumerate(seeds):
        world = worlds[i] if worlds else draw_world(seed, build, faults, users, moves)  # lab timings
        result = run_trial(world, root / f"trial-{i:04d}-{seed}", sim=sim)
        results.append(result)
        if on_trial:
            on_trial(result)
        if stop_on_break and result.broken:
            break
    return results


def summarize(results: list[TrialResult]) -> dict[str, Any]:
    totals: dict[str, Any] = {"trials": len(results), "messages": sum(r.messages for r in results),
                              "refused": sum(r.refused for r in results), "pairs": sum(r.pairs for r in results)}
    for key in OUTCOMES:
        totals[key] = sum(r.counts.get(key, 0) for r in results)
    totals["stale_locks"] = sum(len(r.stale_locks) for r in results)
    totals["moves"] = sum(r.moves for r in results)
    totals["moves_failed"] = sum(r.moves_failed for r in results)
    totals["torn_writes"] = sum(r.torn_writes for r in results)
    totals["broken_trials"] = sum(r.broken for r in results)
    totals["errors"] = sum(bool(r.error) for r in results)
    totals["seconds"] = round(sum(r.seconds for r in results), 1)
    totals["trials_per_minute"] = round(60 * len(results) / totals["seconds"], 2) if totals["seconds"] else 0
    return totals
