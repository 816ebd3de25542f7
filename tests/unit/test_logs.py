"""The node log: a core's event (`emit`) and a runtime's event (structlog) write the same lines."""

import json

from nodes import logs


def test_emit_writes_the_line_structlog_writes(tmp_path, capfd):
    node_log = logs.file_log("mta.ex1", tmp_path / "mta.ex1.jsonl", console="info")
    node_log.clock = lambda: 1_800_000_000.5  # one instant: the clock's counter tells the lines apart
    fields = {"msg_id": "m1", "rcpt": "bob", "attempt": 2}
    node_log.emit("info", "mta.routed", dict(fields))
    node_log.log.info("mta.routed", **fields)
    node_log.emit("warning", "mta.failed", {"msg_id": "m1", "node": "forged", "hlc": [0, 0], "reason": "moved"})
    node_log.flush()
    by_emit, by_structlog, clash = [json.loads(line) for line in (tmp_path / "mta.ex1.jsonl").read_text().splitlines()]
    for n, line in enumerate((by_emit, by_structlog)):
        assert list(line) == ["ts", "node", "level", "event", "hlc", "msg_id", "rcpt", "attempt"]
        assert line == {"ts": 1_800_000_000.5, "node": "mta.ex1", "level": "info", "event": "mta.routed",
                        "hlc": [1_800_000_000_500, n], **fields}
    # the header wins over an event's field of the same name
    assert (clash["node"], clash["hlc"], clash["level"], clash["reason"]) == \
        ("mta.ex1", [1_800_000_000_500, 2], "warning", "moved")
    console = capfd.readouterr().err.splitlines()
    assert len(console) == 3 and "mta.routed" in console[0] and console[0].endswith("msg_id=m1 rcpt=bob attempt=2")
    assert console[0] == console[1]


def test_a_restarted_nodes_lines_follow_its_old_ones_though_its_clock_went_back(tmp_path):
    path = tmp_path / "mta.ex1.jsonl"
    first = logs.file_log("mta.ex1", path)
    first.clock = lambda: 1_800_000_100.0
    first.emit("info", "a", {})
    first.flush()
    again = logs.file_log("mta.ex1", path)
    again.clock = lambda: 1_800_000_000.0  # the wall clock stepped back 100 s meanwhile
    again.emit("info", "b", {})
    again.flush()
    a, b = [json.loads(line)["hlc"] for line in path.read_text().splitlines()]
    assert a == [1_800_000_100_000, 0] and b == [1_800_000_100_000, 1]


def test_a_warning_console_shows_the_cores_warnings_and_the_runtimes_own_events(tmp_path, capfd):
    node_log = logs.file_log("store.ex1", tmp_path / "store.ex1.jsonl", console="warning")
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

    host = NodeHost("store.ex1", Idle(), memory_log("store.ex1", lambda: 0.0), seed=1)
    for n in range(3 * PEER_NAMES):
        host.request(f"cli-{n}".encode(), Frame("ping", f"p{n}", f"cli.{n}", 1, {}), 1.0)
        if n % 100 == 0:
            host.request(b"mta", Frame("ping", f"m{n}", "mta.ex1", 1, {}), 1.0)
    assert len(host._peer_names) == PEER_NAMES and host._peer_names[b"mta"] == "mta.ex1"


def test_dovecots_record_says_what_a_user_removed_and_a_move_to_a_folder_is_not_a_removal(tmp_path):
    """Issue 34, story 11: an IMAP MOVE is a copy then an expunge; only a message the record
    leaves in no folder, over every server the user lived on, in time order, is the user's removal."""
    from nodes.imap.record import matches, removed

    def line(at: str, act: str, box: str, msgid: str, user: str = "bob") -> str:
        return f"2026-12-05T08:00:{at} imap({user})<1><s>: Info: {act}: box={box}, uid=1, msgid={msgid}\n"

    (tmp_path / "dovecot.ex1.log").write_text(
        line("01.000001", "copy from INBOX", "Archive", "<moved@xcon.test>")
        + line("01.000002", "expunge", "INBOX", "<moved@xcon.test>")  # MOVE: in Archive now
        + line("02.000000", "expunge", "INBOX", "<gone@xcon.test>")
        + line("03.000000", "copy from INBOX", "Old", "<filed@xcon.test>")
        + line("03.500000", "expunge", "INBOX", "<filed@xcon.test>")
        + "2026-12-05T08:00:04.000000 imap(bob)<1><s>: Info: Disconnected: Logged out in=1 out=2\n")
    (tmp_path / "dovecot.ex2.log").write_text(  # after his move to ex2: Old's copy goes too
        line("05.000000", "expunge", "Old", "<filed@xcon.test>")
        + line("00.500000", "expunge", "INBOX", "<m@xcon.test>", user="carol"))
    gone = removed([tmp_path / "dovecot.ex1.log", tmp_path / "dovecot.ex2.log", tmp_path / "nosuch.log"])
    assert gone == {"bob": {"<gone@xcon.test>": "INBOX", "<filed@xcon.test>": "Old"}, "carol": {"<m@xcon.test>": "INBOX"}}
    long = "<" + "x" * 100 + "@xcon.test>"
    assert matches(long[:77] + "...", long) and not matches("<x@xcon.test>", long)


def test_a_vanished_journal_is_known_from_the_orchestrators_log_even_past_a_line_that_does_not_read(tmp_path):
    from orchestrator import journal

    log = tmp_path / "orchestrator.jsonl"
    log.write_bytes(b'{"event": "move.step", "move_id": "mv1", "step": "lock"}\n'
                    b'{"event": "move.step", "move_id": "mv2", "st\x00ep": \n'  # damage: passed over, not a crash
                    b'{"event": "move.step", "move_id": "mv2", "step": "done"}\n')
    gone = journal.vanished(tmp_path / "journal.jsonl", log)
    assert gone == {"gone": "missing", "suspect": ["mv1"]}
    (tmp_path / "journal.jsonl").write_bytes(b"")
    assert journal.vanished(tmp_path / "journal.jsonl", log)["gone"] == "emptied"
    with open(log, "ab") as f:  # the loss was taken up: the journal after it owes nothing yet
        f.write(b'{"event": "storage.damaged", "file": "orchestrator/journal.jsonl", "gone": "emptied"}\n')
    assert journal.vanished(tmp_path / "journal.jsonl", log) is None
    assert journal.vanished(tmp_path / "journal.jsonl", tmp_path / "nosuch.jsonl") is None
