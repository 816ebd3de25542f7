"""The invariant judged from log events."""

from collections import Counter

from orchestrator.audit import EndState
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


# --- the verdict ends with the end state: what the mailboxes hold ------------------------------

def state(boxes, homes=None, locks=(), unfinished=()):
    """An end state: boxes is {alias: [msg ids]} on each alias's home (ex1 unless `homes` says)."""
    homes = {**{alias: "ex1" for alias in boxes}, **(homes or {})}
    return EndState(homes, {(homes[a], a): Counter(ids) for a, ids in boxes.items()}, list(locks), set(unfinished))


def ndr_queued(for_msg, rcpts):
    return {"event": "mta.ndr_queued", "node": "mta.ex1", "msg_id": f"{for_msg}.ndr", "ndr_for": for_msg,
            "rcpts": rcpts}


def test_a_message_the_logs_call_delivered_but_the_mailbox_lacks_is_lost_with_what_removed_it():
    rollback = {"event": "store.move_ended", "node": "store.ex1", "mailbox": "bob", "owner": "move.b.2", "deleted": 3}
    elsewhere = {"event": "store.move_ended", "node": "store.ex2", "mailbox": "bob", "owner": "move.b.2", "deleted": 0}
    events = [accepted("m1", ["bob"]), delivered("m1", "bob"), elsewhere, rollback]
    assert check(events).ok, "the logs alone see nothing wrong"
    report = check(events, state=state({"bob": []}))
    (lost,) = report.violations
    assert (lost.outcome, lost.rcpt) == ("lost", "bob") and "not in bob's mailbox" in lost.why
    assert [e["node"] for e in lost.removed_by] == ["store.ex1"], "only the delete on the store it was delivered to"
    assert report.audited and not report.ok


def test_the_mailboxes_decide_copies_and_reports():
    events = [accepted("m1", ["bob"]), delivered("m1", "bob"),
              accepted("m2", ["carol"]),  # its store died before the log line: in the mailbox all the same
              accepted("m3", ["dave"]), failed("m3", "dave"), ndr_queued("m3", ["dave"]), ndr("m3", ["dave"]),
              accepted("m4", ["erin"]), failed("m4", "erin"), ndr_queued("m4", ["erin"]), ndr("m4", ["erin"])]
    end = state({"bob": ["m1", "m1"], "carol": ["m2"], "alice": ["m3.ndr"], "dave": [], "erin": []})
    outcome = {(v.msg_id, v.rcpt): v.outcome for v in check(events, state=end).violations}
    # bob holds m1 twice; erin's NDR never reached alice's mailbox; the rest are where they belong
    assert outcome == {("m1", "bob"): "duplicated", ("m4", "erin"): "lost"}


def test_a_copy_counts_only_on_the_server_the_directory_homes_the_recipient():
    events = [accepted("m1", ["bob"]), delivered("m1", "bob")]
    stray = EndState({"bob": "ex2"}, {("ex1", "bob"): Counter(["m1"]), ("ex2", "bob"): Counter()})
    assert check(events, state=stray).violations[0].outcome == "lost"


def test_a_lock_no_unfinished_move_holds_breaks_the_verdict():
    lock = {"server": "ex1", "mailbox": "bob", "owner": "move.b.1", "incoming": False}
    held = check([], state=state({"bob": []}, locks=[lock], unfinished=["move.b.1"]))
    assert held.ok and held.stale_locks == []
    stale = check([], state=state({"bob": []}, locks=[lock]))
    assert not stale.ok and stale.stale_locks == [lock]
