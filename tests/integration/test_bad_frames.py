"""Malformed frames against real node processes: an error reply naming the problem, a log
line, and the node keeps serving."""

from __future__ import annotations

import sys
import uuid

import msgpack
import pytest
import zmq
from xprocess import ProcessStarter

from nodes.config import ClusterConfig, Settings
from nodes.security import create_keys
from orchestrator.cluster.client import dealer
from orchestrator.cluster.rundir import free_ports
from protocol import VERSION, Frame, batch, decode, decode_message, encode

from ..conftest import wait_for_event

GARBAGE = [
    b"",
    b"\xc1",
    b"not msgpack at all",
    msgpack.packb([1, 2, 3]),
    msgpack.packb({"v": VERSION, "type": "ping"}),
    msgpack.packb({"v": VERSION, "type": "no.such", "id": "g1", "src": "t", "clock": 1, "body": {}}),
    msgpack.packb({"v": VERSION, "type": "dir.lookup", "id": "g2", "src": "t", "clock": 1, "body": {"alias": 7}}),
    msgpack.packb({"v": VERSION + 1, "type": "ping", "id": "g3", "src": "t", "clock": 1, "body": {}}),
    msgpack.packb({"v": VERSION, "type": "mta.submit", "id": "g4", "src": "t", "clock": 1,
                   "body": {"msg_id": None, "sender": "x" * 100_000, "recipients": [[]], "subject": "", "body": "",
                            "priority": None}}),
    b"\x91" * 50_000 + b"\xc0",
]


def ask(sock: zmq.Socket, payload: bytes, timeout_ms: int = 3000) -> Frame:
    sock.send(payload)
    assert sock.poll(timeout_ms), "the node did not answer"
    return decode(sock.recv())


def valid(type_: str, body: dict) -> bytes:
    return encode(Frame(type_, uuid.uuid4().hex, "test", 1, body))


@pytest.fixture
def directory_node(xprocess, tmp_path):
    """One directory node, started by pytest-xprocess from its own cluster.json."""
    router, pub = free_ports(2)
    config = ClusterConfig(tmp_path, Settings(), {"directory": {
        "kind": "directory", "endpoints": {"router": f"tcp://127.0.0.1:{router}", "pub": f"tcp://127.0.0.1:{pub}"},
        "log": str(tmp_path / "logs" / "directory.jsonl")}})
    config.save()
    create_keys(tmp_path)

    class Starter(ProcessStarter):
        pattern = "node.started"
        timeout = 30
        terminate_on_interrupt = True
        args = [sys.executable, "-m", "nodes.directory", "--run-dir", str(tmp_path), "--name", "directory"]

    name = f"directory-{tmp_path.name}"
    xprocess.ensure(name, Starter)
    yield config
    xprocess.getinfo(name).terminate()


def test_directory_refuses_garbage_and_keeps_serving(directory_node):
    sock = dealer(directory_node, "directory")
    try:
        for payload in GARBAGE:
            reply = ask(sock, payload)
            assert reply.type == "error" and reply.body.reason, payload[:40]
        reply = ask(sock, msgpack.packb({"v": VERSION, "type": "dir.lookup", "id": "g2", "src": "t", "clock": 1,
                                         "body": {"alias": 7}}))
        assert reply.re == "g2" and "field 'alias' must be str" in reply.body.reason
        added = ask(sock, valid("dir.add", {"alias": "bob", "display_name": "Bob", "home_server": "ex1",
                                            "alternate": None, "deliver_to_both": False}))
        assert added.type == "dir.changed" and added.body.usn == 1
        assert ask(sock, valid("dir.lookup", {"alias": "bob"})).body.recipient["home_server"] == "ex1"
        wait_for_event(directory_node.run_dir, event="frame.rejected", node="directory")
    finally:
        sock.close()


def test_every_node_kind_survives_garbage(cluster_factory):
    cluster = cluster_factory("sp4", replication_lag_ms=0, replication_jitter_ms=0)
    for node in cluster.config.nodes:
        sock = dealer(cluster.config, node)
        try:
            for payload in GARBAGE:
                assert ask(sock, payload).type == "error", (node, payload[:40])
            # a well-formed frame the node does not serve, and one in an invalid state
            assert ask(sock, valid("orch.move_status", {"move_id": "nope"})).type == "error"
            pong = ask(sock, valid("ping", {}))
            assert pong.type == "pong" and pong.body.ready, node
        finally:
            sock.close()
    assert cluster.client.ask("store.ex1", "store.unlock", {"mailbox": "nobody", "owner": "x"}).type == "error"
    sock = dealer(cluster.config, "store.ex1")  # a nested shape the client's own encode would refuse to send
    try:
        refused = ask(sock, msgpack.packb({"v": VERSION, "type": "store.import", "id": "i1", "src": "t", "clock": 1,
                                           "body": {"mailbox": "bob", "owner": "m", "messages": [{"name": 5}]}}))
        assert (refused.type, refused.body.reason) == (
            "error", "store.import: field 'messages[0].name' must be str, got int")
    finally:
        sock.close()
    # and the cluster still does its job
    cluster.add_user("alice", "ex1")
    sent = cluster.send("alice", ["alice"], "still alive")
    assert cluster.wait(10)
    assert [m["msg_id"] for m in cluster.mailbox("alice")["messages"]] == [sent["msg_id"]]


def test_a_batch_is_served_frame_by_frame_and_answered_in_one_batch(directory_node):
    sock = dealer(directory_node, "directory")
    try:
        add = Frame("dir.add", "b1", "test", 1, {"alias": "dave", "display_name": "Dave", "home_server": "ex1",
                                                 "alternate": None, "deliver_to_both": False})
        sock.send(batch([encode(add), encode(Frame("dir.lookup", "b2", "test", 2, {"alias": "dave"})),
                         encode(Frame("ping", "b3", "test", 3, {}))]))
        assert sock.poll(3000), "the node did not answer"
        replies = decode_message(sock.recv())  # the sender batched, so the answers come as one batch
        assert [(r.re, r.type) for r in replies] == [("b1", "dir.changed"), ("b2", "dir.entry"), ("b3", "pong")]
        assert replies[1].body.recipient["home_server"] == "ex1"
        # one bad frame refuses the whole batch, with one error reply naming it, and nothing of it is done
        bad = msgpack.packb({"v": VERSION, "type": "dir.lookup", "id": "b5", "src": "t", "clock": 1, "body": {"alias": 7}})
        erin = Frame("dir.add", "b4", "test", 4, {"alias": "erin", "display_name": "Erin", "home_server": "ex1",
                                                  "alternate": None, "deliver_to_both": False})
        reply = ask(sock, batch([encode(erin), bad]))
        assert (reply.type, reply.re) == ("error", "b5") and "batch frame 1" in reply.body.reason
        # answers come back in order on the link: a second answer to the refused batch would be
        # read here instead of the lookup's
        lookup = ask(sock, valid("dir.lookup", {"alias": "erin"}))
        assert lookup.type == "dir.entry" and lookup.body.recipient is None
    finally:
        sock.close()
