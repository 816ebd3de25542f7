"""Issue 20: under a clock fault (Jepsen's clock nemesis), the merged timeline stays causal.

A node whose clock reads seconds behind stamps its events seconds early: by their `ts` alone, a
transfer's arrival would sort before the message was accepted. Its hybrid logical clock takes
the sender's time from the frame, so every receive still sorts after its send.
"""

from __future__ import annotations

import json

from ..conftest import xcon


def test_under_a_clock_fault_every_receive_still_sorts_after_its_send(cluster_factory):
    cluster = cluster_factory("sp4")
    run = cluster.config.run_dir
    cluster.add_user("alice", "ex2")
    cluster.add_user("bob", "ex1")
    # the MTA behind, its store ahead (issue 34, story 12): the store's line about the delivery is
    # written after its fsync, and its reply, stamped before, once let mta.delivered sort first
    for node, offset in (("mta.ex1", -5000), ("store.ex1", 7000)):
        said = xcon("fault", "clock", node, "--offset-ms", str(offset), run_dir=run, check=True).stdout
        assert f"{node}'s clock now reads {offset:+d} ms off" in said
    assert cluster.status_of("mta.ex1")["faults"] == {"clock_offset_ms": -5000}, "status shows the fault in force"
    msg = cluster.send("alice", ["bob"], subject="across a skewed clock")["msg_id"]
    assert cluster.wait(), "the message was not delivered"
    story = json.loads(xcon("trace", msg, "--json", run_dir=run, check=True).stdout)
    at = {(e["node"], e["event"]): i for i, e in reversed(list(enumerate(story)))}  # each one's first row
    # two chains of frames: the transfer, the delivery and its answer; the transfer and its ack
    for chain in ([("mta.ex2", "mta.accepted"), ("mta.ex1", "mta.transfer_in"), ("store.ex1", "store.delivered"),
                   ("mta.ex1", "mta.delivered")],
                  [("mta.ex1", "mta.transfer_in"), ("mta.ex2", "mta.transferred")]):
        assert [at[step] for step in chain] == sorted(at[step] for step in chain), \
            [(e["node"], e["event"]) for e in story]
    ts = {(e["node"], e["event"]): e["ts"] for e in story}
    assert ts[("mta.ex1", "mta.transfer_in")] < ts[("mta.ex2", "mta.accepted")], \
        "the skewed node's own clock stamped the arrival before the send: ts order would be wrong"
    xcon("fault", "clear", run_dir=run, check=True)
    assert "faults" not in cluster.status_of("mta.ex1"), "clear ends the clock fault"
