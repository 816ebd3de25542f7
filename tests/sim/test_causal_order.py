"""Issue 34, story 12: whatever each node's clock reads, a cause's line sorts before its effect's.

Every node's clock is set off at random (Jepsen's clock nemesis, `xcon fault clock`), in the
simulator, and mail crosses both servers, locally and by transfer. In the merged timeline (the
order `xcon trace` shows) each answer's line must follow its request's: a store's line about a
delivery before the MTA's line about the store's answer, a peer's transfer_in before the sender's
transferred. A store ahead and its MTA behind once put `mta.delivered` before `store.delivered`:
the store stamped its reply before the line it wrote after the fsync. The simulator's writes take
time here (`Network.sync_us`), as a real fsync does: an instant one hides the bug.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from nodes.config import Settings
from orchestrator.sim.cluster import SimCluster
from orchestrator.sim.world import Network
from protocol import hlc

NODES = ("directory", "store.ex1", "store.ex2", "mta.ex1", "mta.ex2")
OFFSET = st.integers(min_value=-30_000, max_value=30_000)  # ms, either way


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offsets=st.fixed_dictionaries({n: OFFSET for n in NODES}), seed=st.integers(0, 2**16),
       sync_us=st.integers(500, 20_000))
def test_each_answers_line_follows_its_requests_line_whatever_the_clocks(offsets, seed, sync_us):
    cluster = SimCluster(Settings(("ex1", "ex2"), "sp4", seed=seed, replication_lag_ms=50, replication_jitter_ms=20),
                         Network(sync_us=sync_us))
    for alias, home in (("alice", "ex1"), ("bob", "ex2"), ("carol", "ex1")):
        cluster.add_user(alias, home)
    for node, offset in offsets.items():
        cluster.fault("clock", node, offset_ms=offset)
    sent = [cluster.send("alice", ["bob", "carol"], subject=f"m{i}")["msg_id"] for i in range(3)]
    sent.append(cluster.send("bob", ["alice"], subject="back")["msg_id"])
    assert cluster.wait(), "the mail settled"
    order = {}  # each line's clock: a cause's must be below its effect's, never equal (a tie sorts either way)
    for e in cluster.events():
        key = (e["event"], e.get("msg_id"), e.get("rcpt") or e.get("mailbox"), e["node"])
        order.setdefault(key, hlc.of_event(e))
    pairs = 0
    for (event, msg, rcpt, node), at in order.items():
        if msg not in sent:
            continue
        server = node.split(".")[-1]
        cause = {"mta.delivered": ("store.delivered", f"store.{server}"),
                 "mta.transferred": ("mta.transfer_in", None)}.get(event)
        if cause is None:
            continue
        causes = [i for (ev, m, r, n), i in order.items()
                  if ev == cause[0] and m == msg and (r == rcpt or ev == "mta.transfer_in")
                  and (cause[1] is None or n == cause[1])]
        assert causes and min(causes) < at, (f"{event} of {msg} -> {rcpt} on {node} sorts before its cause "
                                             f"{cause[0]} (offsets {offsets})")
        pairs += 1
    assert pairs >= 10, pairs  # each message's deliveries, and the transfers between the servers
