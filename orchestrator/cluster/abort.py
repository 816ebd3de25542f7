"""`xcon move --abort`: an operator's way out of a move, through the cluster's own requests."""

from __future__ import annotations

from typing import Any

from protocol import as_dict

from .client import ClusterError, cli_log
from .cluster import Cluster


def abort(cluster: Cluster, alias: str, timeout: float = 30.0) -> dict[str, Any]:
    """Roll back the running move of `alias` (if it is before set_home), then end every lock
    on its mailbox that no running move holds: a lock a failed move left, or one from a
    journal that is gone. Only a move the orchestrator does not run is ended, and move ids
    never repeat, so a move that starts meanwhile keeps its own lock."""
    result: dict[str, Any] = {"alias": alias, "moves": [], "cleared": [], "unreachable": []}
    running = [m for m in cluster.status_of("orchestrator")["active"] if m["alias"] == alias]
    for m in running:
        state = m if m["rolling_back"] else cluster.client.request("orchestrator", "orch.abort",
                                                                   {"alias": alias}).body.move
        if state["step"] != "failed":  # failed already: aborted while it resolved, and forgotten
            try:
                state = cluster.wait_move(state["move_id"], timeout, settled=True)
            except ClusterError:  # a store that does not answer: the rollback goes on without us
                state = cluster.move_state(state["move_id"])
        result["moves"].append(state)
    holders = []
    for server in cluster.servers:
        store = f"store.{server}"
        try:
            owner = cluster.status_of(store)["locked"].get(alias)
        except ClusterError:
            result["unreachable"].append(store)
            continue
        if owner is not None:
            holders.append((store, owner))
    active = {m["move_id"] for m in cluster.status_of("orchestrator")["active"]}  # asked after the stores
    for store, owner in holders:
        if owner in active:
            continue
        ended = cluster.client.request(store, "store.end_move", {"mailbox": alias, "owner": owner}).body
        result["cleared"].append({"store": store, **as_dict(ended)})
    cli_log(cluster.config.run_dir, "move.abort", alias=alias, moves=[m["move_id"] for m in result["moves"]],
            cleared=result["cleared"], unreachable=result["unreachable"])
    return result
