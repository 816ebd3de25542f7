"""Kill -9 of the orchestrator, either store, either MTA or the directory at each step of a move, in both
directions, with mail flowing and the other MTAs' caches stale: nothing lost, nothing doubled, no
lock left, the mailbox on one server with every message once. And the issue's three stories of
loss, each by hand.

CI runs one crash per step and per victim (a diagonal of the matrix); XCON_LONG=1 runs every
victim at every step in both directions, for sp4 and reroute.
"""

from __future__ import annotations

import os
import time

import pytest

from orchestrator.lab import chaos
from orchestrator.inspect import logread
from orchestrator.inspect.check import check_run
from orchestrator.cluster.client import ClusterError

from ..conftest import SEED, wait_for_event

STEPS = ("lock", "copy", "set_home", "open_target", "release")
ROLES = ("orchestrator", "source store", "target store", "source mta", "target mta", "directory")
if os.environ.get("XCON_LONG"):
    MATRIX = [(build, role, step) for build in ("reroute", "sp4") for role in ROLES for step in STEPS for _ in (0, 1)]
else:  # each step once, each victim once, the direction changing with every move
    MATRIX = [("reroute", role, step) for role, step in zip(ROLES, (*STEPS, "set_home"))]


def victim(role: str, source: str, target: str) -> str:
    if role in ("orchestrator", "directory"):
        return role
    where, kind = role.split()
    return f"{kind}.{source if where == 'source' else target}"


def move_with_a_crash(cluster, build: str, role: str, step: str, sent: list[str]) -> dict:
    """One move of bob to the other server, `role` killed as the move enters `step`, mail from
    both servers meanwhile. Returns the move's end state."""
    source = cluster.lookup("bob")["home_server"]
    target = "ex2" if source == "ex1" else "ex1"
    node = victim(role, source, target)
    fired = len(triggered(cluster))
    cluster.fault("kill_at_step", node, step=step, restart_after=0.3)
    held = len(cluster.mailbox("bob")["messages"])
    try:  # about 0.6 s of copying, however much mail the earlier moves carried
        cluster.move("bob", target, copy_delay_ms=max(1, 600 // max(1, held)), wait=False)
    except ClusterError:
        assert role == "orchestrator" and step == "lock", "it died before its answer left"
    for i, sender in enumerate(("alice", "carol", "alice", "carol")):
        try:  # a submission an MTA cannot take (it is dead) is not accepted, so not owed
            sent.append(cluster.send(sender, ["bob"], f"{step} {role} {i}", timeout=1.5)["msg_id"])
        except ClusterError:
            pass
        time.sleep(0.15)
    deadline = time.time() + 30
    while len(triggered(cluster)) == fired:
        assert time.time() < deadline, f"{build}: the move never entered {step}"
        time.sleep(0.05)
    move_id = triggered(cluster)[-1]["move_id"]
    if role == "orchestrator":
        cluster.revive()  # it killed itself; the others restart by the orchestrator's hand
    assert chaos.settle(cluster, 60), f"{build}: {role} killed at {step}: the cluster did not settle"
    return cluster.move_state(move_id)


def triggered(cluster) -> list[dict]:
    return [e for e in logread.merged(cluster.config.run_dir) if e["event"] == "fault.triggered"]


@pytest.mark.long
@pytest.mark.parametrize("build", sorted({b for b, _, _ in MATRIX}))
def test_a_crash_at_every_step_of_a_move_loses_nothing(build, cluster_factory):
    cluster = cluster_factory(build, replication_lag_ms=600, replication_jitter_ms=200, retry_ms=300,
                              request_timeout_ms=1000)
    run = cluster.config.run_dir
    cluster.add_user("alice", "ex1", wait=False)
    cluster.add_user("carol", "ex2", wait=False)
    cluster.add_user("bob", "ex1", alternate="carol", deliver_to_both=True)
    sent = [cluster.send("alice", ["bob"], f"before {i}")["msg_id"] for i in range(3)]
    assert cluster.wait(30)
    for b, role, step in MATRIX:
        if b != build:
            continue
        state = move_with_a_crash(cluster, build, role, step, sent)
        where = f"seed {SEED}, {build}: {role} killed as the move entered {step} (move {state['move_id']}: {state['step']})"
        assert state["step"] in ("done", "failed"), where
        report = check_run(run)
        assert report.ok and report.audited, f"{where}: {report.to_json()}"
        homes = [s for s in ("ex1", "ex2") if (run / "stores" / s / "bob").is_dir()]
        assert homes == [cluster.lookup("bob")["home_server"]], f"{where}: bob's mailbox on {homes}"
        box = [m["msg_id"] for m in cluster.mailbox("bob")["messages"]]
        if build == "reroute":  # sp4 may report a copy by an NDR instead (the KB's fix)
            assert sorted(box) == sorted(sent), f"{where}: every message once"
        assert len(box) == len(set(box)), f"{where}: a message twice"


def test_a_rolled_back_move_back_to_a_stale_home_deletes_no_mail(cluster_factory):
    """Story 1: bob moves ex1 -> ex2 and straight back, while mta.ex1's cache (lag 3 s) still
    homes him on ex1; the orchestrator dies during the copy. Mail mta.ex1 routes to the half-made
    target on ex1 is deferred there, not delivered into it, and the rollback deletes copies only."""
    cluster = cluster_factory("reroute", replication_lag_ms=3000, replication_jitter_ms=0, retry_ms=300)
    cluster.add_user("alice", "ex1", wait=False)
    cluster.add_user("carol", "ex2", wait=False)
    cluster.add_user("bob", "ex1")
    sent = [cluster.send("carol", ["bob"], f"before {i}")["msg_id"] for i in range(3)]
    assert cluster.wait(20)
    assert cluster.move("bob", "ex2")["step"] == "done"
    # 10 s a message: the three pages' copy keeps the target "being moved here" for 30 s, which no
    # load closes, and which costs nothing: the kill below ends the copy. (A hold at the copy step
    # would stop it before its first page, with no target mailbox yet.)
    back = cluster.move("bob", "ex1", copy_delay_ms=10_000, wait=False)
    wait_for_event(cluster.config.run_dir, event="store.incoming", node="store.ex1", owner=back["move_id"])
    sent += [cluster.send("alice", ["bob"], f"during {i}")["msg_id"] for i in range(3)]
    wait_for_event(cluster.config.run_dir, event="store.deferred", node="store.ex1", reason="mailbox being moved here")
    cluster.fault("kill", "orchestrator")  # in the copy step: the restart rolls the move back
    cluster.fault("restart", "orchestrator")
    assert cluster.wait_move(back["move_id"], settled=True)["step"] == "failed"
    assert cluster.wait(30)
    report = check_run(cluster.config.run_dir)
    assert report.ok and report.counts["delivered"] == len(sent), report.to_json()
    assert sorted(m["msg_id"] for m in cluster.mailbox("bob")["messages"]) == sorted(sent)


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_a_move_that_fails_for_a_down_source_store_leaves_no_lock(how, cluster_factory):
    """Story 2: the source store is down (or paused) when the move starts; the lock step fails
    after its tries; the lock requests queued meanwhile reach the store when it is back, and
    must not lock bob for a move that is over."""
    cluster = cluster_factory("sp4", replication_lag_ms=0, replication_jitter_ms=0, retry_ms=300,
                              request_timeout_ms=400)
    cluster.add_user("alice", "ex2", wait=False)
    cluster.add_user("bob", "ex1")
    if how == "kill":
        cluster.fault("kill", "store.ex1")
    else:
        cluster.fault("pause", "store.ex1", seconds=4)
    state = cluster.move("bob", "ex2", timeout=30)
    assert state["rolling_back"] and "no answer" in state["error"], state
    sent = cluster.send("alice", ["bob"], "after the failed move")["msg_id"]
    if how == "kill":
        cluster.fault("restart", "store.ex1")
        cluster.wait_node_ready("store.ex1")
    assert cluster.wait_move(state["move_id"], timeout=30, settled=True)["step"] == "failed"
    assert cluster.wait(30)
    assert cluster.status_of("store.ex1")["locked"] == {}, "no lock outlives its move"
    assert [m["msg_id"] for m in cluster.mailbox("bob")["messages"]] == [sent]
    assert cluster.move("bob", "ex2")["step"] == "done", "a new move is not refused"
    assert check_run(cluster.config.run_dir).ok
