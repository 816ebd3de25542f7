"""What broke in a trial, in words (`xcon chaos`, `xcon serve`), and what a stuck trial was still
moving."""

from __future__ import annotations

import re
from typing import Any

from nodes.mta.queue import listing as queue_listing

from orchestrator import cluster as cl
from orchestrator.inspect import admin
from orchestrator.sim.cluster import SimCluster


def moving(cluster: cl.Cluster, limit: int = 10) -> list[str]:
    """The pairs the MTAs still hold open (the first `limit`), each with its state and its tries:
    what a stuck trial was still moving. A simulated MTA's queue is read in the instant (a
    request would run the stuck world again); a real one as `xcon queue` reads it (asked, or its
    queue log when it does not answer)."""
    mtas = [n for n in cluster.config.nodes if n.startswith("mta.")]
    if isinstance(cluster, SimCluster):
        nodes = cluster.world.nodes
        held = {m: queue_listing(nodes[m].host.core.queue, cluster.world.now, limit)[0]
                for m in mtas if nodes[m].alive and nodes[m].host is not None}
    else:
        held = {m: q["items"] for m, q in admin.queue(cluster.config.run_dir, cluster, mtas, limit).items()}
    found = [f"{i['msg_id']} -> {i['rcpt']} on {m} ({i['state']}, {i['attempts']:,} tries)"
             for m, items in held.items() for i in items]
    return found[:limit]


def what_broke(violations: list[dict[str, Any]] | None, stale_locks: list[dict[str, Any]] | None,
               stuck: dict[str, Any] | None = None) -> str | None:
    """What broke first in a trial, as `xcon chaos` and `xcon serve` say it; None if nothing did."""
    if stuck:
        moving = stuck.get("moving") or []
        return f"stuck: {stuck['why']}" + (f"; still moving: {', '.join(moving[:3])}" if moving else "")
    if violations:
        v = violations[0]
        return f"{v['outcome']} {v['msg_id']} -> {v['rcpt']}"
    if stale_locks:
        lock = stale_locks[0]
        return f"stale lock on store.{lock['server']}: {lock['mailbox']} held by {lock['owner']}"
    return None


def cause_of(violations: list[dict[str, Any]] | None, stale_locks: list[dict[str, Any]] | None,
             stuck: dict[str, Any] | None = None) -> str | None:
    """The rule a trial broke and the decision that broke it, without what differs from trial to
    trial (ids, counts, times): trials broken the same way share it, as Jepsen groups anomalies.
    None if nothing broke."""
    if stuck:
        return "stuck: " + re.sub(r"\d[\d,.]*", "N", str(stuck.get("why", "")).split(";")[0])
    if violations:
        v = violations[0]
        decisive = next((e for e in reversed(v.get("last_events") or []) if e.get("reason")), None)
        if decisive is None:
            return f"{v['outcome']}: no decision logged for it"
        report = f", report {decisive['report']}" if decisive.get("report") else ""
        return f"{v['outcome']}: {decisive['event']} ({decisive['reason']}{report})"
    if stale_locks:
        return "stale lock: a lock outlived the move that took it"
    return None


def by_cause(trials: list[Any]) -> list[dict[str, Any]]:
    """The broken trials of a campaign grouped by cause_of, the most trials first: each cause with
    its count, its smallest trial (fewest events, then lowest seed: the one to read first) and the
    others' seeds. A trial is a TrialResult or its JSON (a summary's), and comes back as given."""
    field = lambda t, name: t.get(name) if isinstance(t, dict) else getattr(t, name, None)  # noqa: E731
    groups: dict[str, list[Any]] = {}
    for t in trials:
        if field(t, "broken"):
            cause = (cause_of(field(t, "violations"), field(t, "stale_locks"), field(t, "stuck"))
                     or field(t, "error") or "broken")
            groups.setdefault(cause, []).append(t)
    out = []
    for cause, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        members = sorted(members, key=lambda t: (field(t, "events") or 0, field(t, "seed")))
        out.append({"cause": cause, "count": len(members), "smallest": members[0],
                    "others": [field(t, "seed") for t in members[1:]], "trials": members})
    return out


def describe_break(trial: Any) -> str:
    """what_broke of a TrialResult, or "broken"."""
    return what_broke(trial.violations, trial.stale_locks, trial.stuck) or "broken"
