"""`xcon sim explore q248839`: the KB world's timing space, searched point by point.

The world is the KB's: bob (ex1) has carol (ex1) as alternate with deliver-to-both; alice (ex2)
writes to bob while Move User takes bob's mailbox from ex1 to ex2. What varies, on a grid: when
the mail is sent against the move's start (every STEP_S, from before the lock to well after the
end), the replication lag (jitter 0, so a point is one exact timing), the MTA's retry interval
and the move's copy time. Every point is one simulated run judged by the same check; its
outcome for bob's copy is delivered, NDR or lost. The map shows where loss happens, beside the
move's steps; the smallest losing world is the losing point with the least lag, then copy time,
then retry interval.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from nodes.config import Settings

from orchestrator.inspect import check as checker
from orchestrator.cluster.client import ClusterError
from orchestrator.sim.cluster import SimCluster

from . import executors

LAGS_MS = (0, 100, 250, 500, 1000, 2000)
RETRIES_MS = (250, 1000)
COPIES_MS = (100, 1000)
STEP_S = 0.1
BEFORE_S = 0.3  # sends start this long before the move is asked for
MARK = {"delivered": ".", "ndr": "n", "lost": "X", "pending": "?", "duplicated": "D", "both": "B", "error": "!"}


@dataclass
class Point:
    lag_ms: int
    retry_ms: int
    copy_ms: int
    send_at: float  # seconds after the move was asked for (negative: before)
    outcome: str = ""
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds after the move was asked for
    cache_at: float | None = None  # when mta.ex1's cache learned bob's new home


def run_point(build: str, point: Point) -> Point:
    """Run one point; returns a new Point with its outcome (the one given is not changed)."""
    p = replace(point, steps={})
    settings = Settings(("ex1", "ex2"), build, replication_lag_ms=p.lag_ms, replication_jitter_ms=0,
                        retry_ms=p.retry_ms, expire_ms=60_000, seed=1)
    cluster = SimCluster(settings)
    try:
        cluster.add_user("carol", "ex1", wait=False)
        cluster.add_user("alice", "ex2", wait=False)
        bob = cluster.add_user("bob", "ex1", alternate="carol", deliver_to_both=True, wait=False)
        cluster.wait_replicated(bob["usn"])
        if p.send_at < 0:  # the mail first, the move `-send_at` later
            sent = cluster.send("alice", ["bob"], "explore", "")
            cluster.clock.sleep(-p.send_at)
            t0 = cluster.clock.now()
            cluster.move("bob", "ex2", copy_delay_ms=p.copy_ms, wait=False)
        else:
            t0 = cluster.clock.now()
            cluster.move("bob", "ex2", copy_delay_ms=p.copy_ms, wait=False)
            cluster.clock.sleep(max(0.0, t0 + p.send_at - cluster.clock.now()))
            sent = cluster.send("alice", ["bob"], "explore", "")
        if not cluster.wait(120):
            raise ClusterError("did not settle")
    except ClusterError:
        p.outcome = "error"
        return p
    state = cluster.end_state()
    report = checker.check(cluster.events(), state=state)
    broken = {(v.msg_id, v.rcpt): v.outcome for v in report.violations}
    p.outcome = broken.get((sent["msg_id"], "bob"), "")
    if not p.outcome:
        p.outcome = "delivered" if state.copies("bob", sent["msg_id"]) else "ndr"
    for e in cluster.events():
        if e["event"] == "move.step" and e["step"] not in p.steps:
            p.steps[e["step"]] = round(e["ts"] - t0, 3)
        elif (e["event"] == "mta.cache_applied" and e["node"] == "mta.ex1" and e.get("alias") == "bob"
              and e.get("home_server") == "ex2" and p.cache_at is None):
            p.cache_at = round(e["ts"] - t0, 3)
    return p


def _run(args: tuple[str, Point]) -> Point:
    return run_point(*args)


def grid(lags: tuple[int, ...] = LAGS_MS, retries: tuple[int, ...] = RETRIES_MS,
         copies: tuple[int, ...] = COPIES_MS) -> list[Point]:
    points = []
    for lag, retry, copy in itertools.product(lags, retries, copies):
        end = BEFORE_S + copy / 1000 + lag / 1000 + 1.5
        n = int(round(end / STEP_S))
        points += [Point(lag, retry, copy, round(-BEFORE_S + i * STEP_S, 3)) for i in range(n + 1)]
    return points


def explore(build: str, points: list[Point], workers: int = 1, dask: str | None = None) -> Iterator[Point]:
    """Each point's run, here (`workers` processes) or on the Dask cluster `dask`."""
    yield from executors.run_map(_run, [(build, p) for p in points], max(1, workers) if len(points) > 1 else 1,
                                 dask, chunksize=16)


def rows(points: list[Point]) -> list[dict[str, Any]]:
    """One row per (lag, retry, copy): its strip of outcomes over send times, the move's steps,
    and the send-time window that lost."""
    out = []
    for key, group in itertools.groupby(sorted(points, key=lambda p: (p.lag_ms, p.retry_ms, p.copy_ms, p.send_at)),
                                        key=lambda p: (p.lag_ms, p.retry_ms, p.copy_ms)):
        group = list(group)
        lost = [p.send_at for p in group if p.outcome == "lost"]
        steps = next((p.steps for p in group if p.steps), {})
        out.append({"lag_ms": key[0], "retry_ms": key[1], "copy_ms": key[2],
                    "strip": "".join(MARK.get(p.outcome, "?") for p in group),
                    "from_s": group[0].send_at, "lost": len(lost),
                    "window": [min(lost), max(lost)] if lost else None,
                    "lock_s": steps.get("lock"), "release_s": steps.get("release"),
                    "cache_s": next((p.cache_at for p in group if p.cache_at is not None), None),
                    "outcomes": dict(sorted({o: sum(p.outcome == o for p in group) for o in
                                             {p.outcome for p in group}}.items()))})
    return out


def smallest(points: list[Point]) -> Point | None:
    """The losing point with the least lag, then copy time, then retry interval, then the
    earliest send."""
    lost = [p for p in points if p.outcome == "lost"]
    return min(lost, key=lambda p: (p.lag_ms, p.copy_ms, p.retry_ms, p.send_at)) if lost else None


def conditions(rows: list[dict[str, Any]]) -> list[str]:
    """What every losing point has in common, dimension by dimension, read off the map: the
    smallest set of conditions that loses, in words."""
    losing = [r for r in rows if r["lost"]]
    if not losing:
        return []
    said = []
    lags = sorted({r["lag_ms"] for r in rows})
    lost_lags = sorted({r["lag_ms"] for r in losing})
    safe = [lag for lag in lags if lag not in lost_lags]
    said.append(f"replication lag of at least {lost_lags[0]} ms" +
                (f" (none lost at {', '.join(map(str, safe))} ms)" if safe else ""))
    for key, name in (("retry_ms", "retry interval"), ("copy_ms", "copy time")):
        every = sorted({r[key] for r in rows})
        hit = sorted({r[key] for r in losing})
        said.append(f"any {name} tried ({', '.join(map(str, every))} ms)" if hit == every else
                    f"{name} of {', '.join(map(str, hit))} ms")
    def within(end: str) -> bool:
        return all(r["window"][0] >= (r["lock_s"] or 0) - STEP_S and r[end] is not None and r["window"][1] <= r[end]
                   for r in losing)

    if within("release_s"):
        said.append("the mail sent while the mailbox is locked (from the lock to the release)")
    elif within("cache_s"):
        said.append("the mail sent from the lock until the MTA's cache learns bob's new home")
    else:
        said.append("the mail sent at the times the map marks X")
    return said
