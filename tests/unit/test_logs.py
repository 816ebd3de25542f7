"""The node log: a core's event (`emit`) and a runtime's event (structlog) write the same lines."""

import json

from nodes import logs


def test_emit_writes_the_line_structlog_writes(tmp_path, capfd):
    node_log = logs.file_log("mta.ex1", tmp_path / "mta.ex1.jsonl", lambda: 42, console="info")
    fields = {"msg_id": "m1", "rcpt": "bob", "attempt": 2}
    node_log.emit("info", "mta.routed", dict(fields))
    node_log.log.info("mta.routed", **fields)
    node_log.emit("warning", "mta.failed", {"msg_id": "m1", "node": "forged", "lamport": -1, "reason": "moved"})
    node_log.flush()
    by_emit, by_structlog, clash = [json.loads(line) for line in (tmp_path / "mta.ex1.jsonl").read_text().splitlines()]
    for line in (by_emit, by_structlog):
        assert list(line) == ["ts", "node", "level", "event", "lamport", "msg_id", "rcpt", "attempt"]
        assert {k: v for k, v in line.items() if k != "ts"} == {
            "node": "mta.ex1", "level": "info", "event": "mta.routed", "lamport": 42, **fields}
    # the header wins over an event's field of the same name
    assert (clash["node"], clash["lamport"], clash["level"], clash["reason"]) == ("mta.ex1", 42, "warning", "moved")
    console = capfd.readouterr().err.splitlines()
    assert len(console) == 3 and "mta.routed" in console[0] and "lamport=42 msg_id=m1 rcpt=bob attempt=2" in console[0]
    assert console[0].split(" ", 1)[1] == console[1].split(" ", 1)[1]  # the same line but for the time


def test_a_warning_console_shows_the_cores_warnings_and_the_runtimes_own_events(tmp_path, capfd):
    node_log = logs.file_log("store.ex1", tmp_path / "store.ex1.jsonl", lambda: 1, console="warning")
    node_log.emit("info", "store.delivered", {"msg_id": "m1"})
    node_log.emit("debug", "store.detail", {"msg_id": "m1"})
    node_log.emit("warning", "request.refused", {"reason": "busy"})
    node_log.log.info("node.started", pid=7)
    node_log.flush()
    events = [json.loads(line)["event"] for line in (tmp_path / "store.ex1.jsonl").read_text().splitlines()]
    assert events == ["store.delivered", "store.detail", "request.refused", "node.started"]  # the file has all
    console = capfd.readouterr().err
    assert "request.refused" in console and "node.started" in console
    assert "store.delivered" not in console and "store.detail" not in console


def test_a_host_remembers_a_bounded_number_of_requesters_the_nodes_among_them():
    """Issue 23: NodeHost._peer_names grew with every CLI invocation for the life of a cluster."""
    from nodes.host import PEER_NAMES, NodeHost
    from nodes.logs import memory_log
    from protocol import Frame

    class Idle:
        ready = True

        def start(self, now): return []
        def on_event(self, event, now): return []
        def tick(self, now): return []
        def next_wakeup(self): return None
        def status(self, now): return {}

    host = NodeHost("store.ex1", Idle(), memory_log("store.ex1", lambda: 0, lambda: 0.0), seed=1)
    for n in range(3 * PEER_NAMES):
        host.request(f"cli-{n}".encode(), Frame("ping", f"p{n}", f"cli.{n}", 1, {}), 1.0)
        if n % 100 == 0:
            host.request(b"mta", Frame("ping", f"m{n}", "mta.ex1", 1, {}), 1.0)
    assert len(host._peer_names) == PEER_NAMES and host._peer_names[b"mta"] == "mta.ex1"
