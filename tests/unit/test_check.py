"""The invariant judged from log events."""

from orchestrator.check import check


def accepted(msg, rcpts, alt_of=None):
    return {"event": "mta.accepted", "msg_id": msg, "sender": "alice", "rcpts": rcpts, "alt_of": alt_of or {}}


def delivered(msg, mailbox):
    return {"event": "store.delivered", "node": "store.ex1", "msg_id": msg, "mailbox": mailbox, "ndr_for": None}


def ndr(for_msg, rcpts):
    return {"event": "store.delivered", "node": "store.ex2", "msg_id": f"{for_msg}.ndr", "mailbox": "alice",
            "ndr_for": for_msg, "ndr_rcpts": rcpts}


def failed(msg, rcpt):
    return {"event": "mta.failed", "node": "mta.ex1", "msg_id": msg, "rcpt": rcpt, "reason": "moved", "report": "none"}


def test_each_outcome():
    report = check([
        accepted("m1", ["bob", "carol"], {"carol": "bob"}), delivered("m1", "carol"), failed("m1", "bob"),
        accepted("m2", ["bob"]), failed("m2", "bob"), ndr("m2", ["bob"]),
        accepted("m3", ["dave"]), delivered("m3", "dave"), delivered("m3", "dave"),
        accepted("m4", ["erin"]), delivered("m4", "erin"), ndr("m4", ["erin"]),
        accepted("m5", ["fred"]),
    ])
    assert report.counts == {"delivered": 1, "ndr": 1, "lost": 1, "pending": 1, "duplicated": 1, "both": 1}
    outcome = {(v.msg_id, v.rcpt): v.outcome for v in report.violations}
    assert outcome == {("m1", "bob"): "lost", ("m3", "dave"): "duplicated", ("m4", "erin"): "both",
                       ("m5", "fred"): "pending"}
    lost = next(v for v in report.violations if v.outcome == "lost")
    assert lost.last_events[-1]["event"] == "mta.failed" and not report.ok


def test_clean_history_is_ok():
    assert check([accepted("m1", ["bob"]), delivered("m1", "bob")]).ok
    assert check([]).ok and check([]).pairs == 0


def test_a_delivery_whose_log_line_died_with_the_store_counts_once():
    dup = {"event": "store.duplicate_suppressed", "node": "store.ex1", "msg_id": "m1", "mailbox": "bob"}
    report = check([accepted("m1", ["bob"]), dup, dup])
    assert report.ok and report.counts["delivered"] == 1
