"""A mailbox of several export pages moved over links that reorder and duplicate frames: the
copy step's read-ahead (the next page exported while this one is imported) still puts every
message on the target exactly once, and nothing stays on the source."""

from __future__ import annotations

import os

from orchestrator.move_state import EXPORT_PAGE

MESSAGES = 2 * EXPORT_PAGE + 500  # three pages: two read-aheads


def test_a_paged_move_over_faulty_links_copies_every_message_once(cluster_factory):
    cluster = cluster_factory("sp4", replication_lag_ms=0, replication_jitter_ms=0)
    cluster.add_user("bob", "ex1")
    raw = b"From: alice@xcon.test\r\nSubject: paged\r\n\r\n" + b"y" * 100
    names = [f"{1_000_000 + i}.p{i}.xcon" for i in range(MESSAGES)]
    cluster.fill("bob", [{"name": n, "msg_id": n.split(".")[1], "raw": raw} for n in names])
    # answers from the source come late and out of order; requests to and answers from the target twice
    cluster.fault("reorder", "orchestrator", peer="store.ex1", probability=0.5, jitter_ms=150, seconds=120)
    cluster.fault("duplicate", "orchestrator", peer="store.ex2", probability=0.5, seconds=120)
    state = cluster.move("bob", "ex2", timeout=120)
    assert state["step"] == "done", state
    assert state["copied"] == MESSAGES
    listing = cluster.mailbox("bob")
    assert listing["server"] == "ex2"
    assert sorted(m["name"] for m in listing["messages"]) == sorted(names)
    assert not os.path.exists(cluster.config.run_dir / "stores" / "ex1" / "bob")
