"""What broke in a trial, in words (`xcon chaos`, `xcon serve`), and what a stuck trial was still
moving."""

from __future__ import annotations

from typing import Any

from nodes.mta.queue import listing as queue_listing

from orchestrator import cluster as cl
from orchestrator.cluster.client import ClusterError
from orchestrator.sim.cluster import SimCluster


def moving(cluster: cl.Cluster, limit: int = 10) -> list[str]:
    """The pairs the MTAs still hold open (the first `limit`), each with its state and its tries:
    what a stuck trial was still moving. A simulated MTA's queue is read in the instant (a
    request would run the stuck world again); a real one is asked, briefly."""
    found: list[str] = []
    for name in [n for n in cluster.config.nodes if n.startswith("mta.")]:
        try:
            if isinstance(cluster, SimCluster):
                node = cluster.world.nodes[name]
                items = queue_listing(node.host.core.queue, cluster.world.now, limit)[0] if node.alive else []
            else:
                items = cluster.client.request(name, "mta.queue", {"limit": limit}, timeout=2.0).body["items"]
        except (ClusterError, AttributeError, KeyError):
            continue  # down, or not answering: what it holds is in its queue log
        found += [f"{i['msg_id']} -> {i['rcpt']} on {name} ({i['state']}, {i['attempts']:,} tries)" for i in items]
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


def describe_break(trial: Any) -> str:
    """what_broke of a TrialResult, or "broken"."""
    return what_broke(trial.violations, trial.stale_locks, trial.stuck) or "broken"
