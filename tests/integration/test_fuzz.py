"""Generated invalid frames against every node of a live cluster (a CI-sized run; the long run
is `python -m tests.fuzzing --frames 100000`)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from nodes.config import Settings
from orchestrator import cluster as cl
from orchestrator.cluster.client import dealer

from ..fuzzing import ask, frames

NODES = ["directory", "store.ex1", "mta.ex1", "orchestrator"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    run = tmp_path_factory.mktemp("fuzz")
    cluster = cl.start(run, Settings(mta_build="sp4", replication_lag_ms=0, replication_jitter_ms=0))
    cluster.add_user("alice", "ex1")
    socks = {node: dealer(cluster.config, node) for node in NODES}
    yield cluster, socks
    for s in socks.values():
        s.close()
    cluster.close()
    cl.stop(run)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frame=frames)
def test_every_invalid_frame_gets_an_error_and_changes_nothing(live, frame):
    cluster, socks = live
    for node, sock in socks.items():
        reply = ask(sock, frame)
        assert reply.type == "error" and reply.body.reason, (node, frame[:60])


def test_valid_frames_in_invalid_states_are_refused(live):
    cluster, socks = live
    for node, type_, body in [
        ("store.ex1", "store.unlock", {"mailbox": "alice", "owner": "nobody"}),
        ("store.ex1", "store.create", {"mailbox": "alice", "owner": None}),
        ("store.ex1", "store.delete", {"mailbox": "nosuch", "owner": "m"}),
        ("store.ex1", "store.delete", {"mailbox": "alice", "owner": "m"}),
        ("store.ex1", "store.import", {"mailbox": "alice", "owner": "m", "messages": []}),
        ("store.ex1", "store.export", {"mailbox": "alice", "after": "", "limit": 0}),
        ("orchestrator", "orch.move", {"alias": "alice", "target": "ex9", "workaround": False, "copy_delay_ms": 0}),
        ("orchestrator", "orch.move", {"alias": "nosuch", "target": "ex2", "workaround": False, "copy_delay_ms": 0}),
        ("orchestrator", "orch.fault", {"kind": "meteor", "node": "mta.ex1", "peer": None, "params": {}}),
        ("directory", "dir.modify", {"alias": "alice", "changes": {"home_server": "ex9"}, "op": None}),
        ("directory", "dir.add", {"alias": "alice", "display_name": "", "home_server": "ex1", "alternate": None,
                                  "deliver_to_both": False}),
        ("mta.ex1", "mta.submit", {"msg_id": "../x", "sender": "alice", "recipients": ["alice"], "subject": "",
                                   "body": "", "priority": None}),
        ("mta.ex1", "mta.transfer", {"msg_id": "../m", "sender": "a", "raw": b"", "accepted_at": 0.0, "ndr_for": None,
                                     "ndr_rcpts": [], "priority": "normal",
                                     "rcpts": [{"alias": "alice", "alt_of": None, "hint": None, "hops": 1}]}),
    ]:
        assert cluster.client.ask(node, type_, body).type == "error", (node, type_, body)


def test_nothing_changed_and_every_node_lives(live):
    cluster, _ = live
    for node in cluster.config.nodes:
        assert cluster.client.request(node, "ping").body.ready, node
    assert cluster.status_of("directory") == {"usn": 1, "recipients": 1}
    store = cluster.status_of("store.ex1")
    assert (store["mailboxes"], store["locked"], store["incoming"]) == ({"alice": 0, "postmaster": 0}, {}, [])
    assert cluster.status_of("mta.ex1")["messages"] == 0
    assert cluster.status_of("orchestrator")["active"] == []
