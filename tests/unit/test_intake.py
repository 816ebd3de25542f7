"""What an MTA takes on from a peer (nodes/mta/intake.py, Intake.transfer_in): durable under its
own id before the ack, the ack part of the message's trace, a retransmission dropped while the
first copy is still held, a priority it does not know taken as normal, a bad id refused in words.
The MTA's whole mutation run (docs/testing.md) changed each of these with no test failing."""

from __future__ import annotations

from nodes.core import Feed
from nodes.mta.intake import MAX_RECIPIENTS
from nodes.mta.queue import PersistMessage
from protocol.names import MSG_ID_RULE, generated_id

from .helpers import events, frame, recipient, refusal, replies, request, sends
from .test_mta_core import make_mta, store_answer, submit, submit_body, transfer

BOB = {"alias": "bob", "alt_of": None, "hint": recipient("bob", "ex1", 3), "hops": 1}


def test_a_transfer_is_durable_under_its_id_before_the_ack_which_carries_its_trace():
    mta = make_mta("sp4")
    actions = mta.on_event(request("mta.transfer", transfer([BOB], msg_id="m-1"), src="mta.ex2"), 1.0)
    kinds = [type(a).__name__ for a in actions]
    assert kinds[:2] == ["PersistMessage", "Reply"], "durable before the peer may forget it"
    assert isinstance(actions[0], PersistMessage) and actions[0].msg_id == "m-1"
    (ack,) = replies(actions)
    assert (ack.type, ack.body.rcpts, ack.trace) == ("mta.transfer_ack", ["bob"], "m-1")


def test_a_retransmission_while_the_first_copy_is_held_is_acknowledged_and_dropped():
    """The peer's ack was lost and it sent the transfer again; this MTA still holds the pair
    (bob's mailbox is locked): it acknowledges again and takes nothing twice."""
    mta = make_mta("sp4")
    first = mta.on_event(request("mta.transfer", transfer([BOB], msg_id="m-2"), src="mta.ex2"), 1.0)
    (deliver,) = sends(first, "store.deliver")
    store_answer(mta, deliver, "deferred", 1.1)
    again = mta.on_event(request("mta.transfer", transfer([BOB], msg_id="m-2"), src="mta.ex2"), 1.2)
    assert [r.type for r in replies(again)] == ["mta.transfer_ack"]
    assert [e.fields for e in events(again, "mta.transfer_duplicate")] == [
        {"msg_id": "m-2", "rcpts": ["bob"], "src": "mta.ex2"}]
    assert not sends(again) and not [a for a in again if isinstance(a, PersistMessage)]
    assert mta.queue["m-2"].pairs["bob"].state == "deferred", "the held pair is left as it was"


def test_a_transfer_with_a_priority_this_mta_does_not_know_is_taken_as_normal():
    mta = make_mta("sp4")
    mta.on_event(request("mta.transfer", transfer([BOB], msg_id="m-3", priority="bogus"), src="mta.ex2"), 1.0)
    assert mta.queue["m-3"].priority == "normal"


def test_a_transfer_with_a_bad_id_is_refused_quoting_its_first_80_characters():
    mta = make_mta("sp4")
    bad = "bad id " + "x" * 100
    reason, _, _ = refusal(mta.on_event(request("mta.transfer", transfer([BOB], msg_id=bad), src="mta.ex2"), 1.0))
    assert reason == f"'{bad[:80]}' is not a valid message id"


def test_submissions_without_an_id_are_numbered_from_one_and_as_many_recipients_as_the_limit_are_taken():
    mta = make_mta("sp4")
    ids = [replies(mta.on_event(request("mta.submit", submit_body(["carol"])), 1.0))[0].body.msg_id for _ in "ab"]
    assert ids == [generated_id("ex1", "boot", 1), generated_id("ex1", "boot", 2)]
    many = [f"u{i}@outside.test" for i in range(MAX_RECIPIENTS)]
    assert [r.type for r in replies(mta.on_event(request("mta.submit", submit_body(many)), 1.0))] == ["mta.accepted"]
    bad = "bad id " + "x" * 100
    assert refusal(mta.on_event(request("mta.submit", submit_body(["carol"], bad)), 1.0))[0] == \
        f"'{bad[:80]}' is not a valid message id ({MSG_ID_RULE})"


def test_a_submission_is_durable_under_its_id_and_sent_again_is_answered_as_it_was_taken():
    """A retried submission (the client lost the answer) is answered again with what was taken:
    while queued, its pairs with the alternates they stand for and when it was first taken;
    once retired, the recipients remembered."""
    mta = make_mta("sp4")
    first = mta.on_event(request("mta.submit", submit_body(["bob"], "c-1")), 1.0)
    assert isinstance(first[0], PersistMessage) and first[0].msg_id == "c-1"
    (taken,) = replies(first)
    assert (taken.body.msg_id, taken.body.rcpts, taken.trace) == ("c-1", ["bob", "carol"], "c-1")
    again = mta.on_event(request("mta.submit", submit_body(["bob"], "c-1")), 2.0)
    (answer,) = replies(again)
    assert (answer.type, answer.body.msg_id, answer.body.rcpts, answer.trace) == (
        "mta.accepted", "c-1", ["bob", "carol"], "c-1")
    (said,) = events(again, "mta.accepted")
    assert said.fields == {"msg_id": "c-1", "sender": "alice", "rcpts": ["bob", "carol"], "alt_of": {"carol": "bob"},
                           "cache_usn": 4, "repeated": True, "accepted_at": 1.0}
    for deliver in sends(first, "store.deliver"):
        store_answer(mta, deliver, "delivered", 2.5)
    assert "c-1" not in mta.queue
    late = mta.on_event(request("mta.submit", submit_body(["bob"], "c-1")), 3.0)
    assert replies(late)[0].body.rcpts == ["bob", "carol"]
    assert events(late, "mta.accepted")[0].fields == {"msg_id": "c-1", "sender": "alice", "rcpts": ["bob", "carol"],
                                                      "alt_of": {}, "cache_usn": 4, "repeated": True}


def test_a_message_from_outside_sent_again_keeps_its_smtp_facts_on_the_line():
    mta = make_mta("sp4")
    raw = b"Message-ID: <abc@outside.test>\r\nX-Xcon-Msg-Id: smtp-9\r\nSubject: s\r\n\r\nhi\r\n"
    body = {"msg_id": "smtp-9", "sender": "ann@outside.test", "recipients": ["carol"], "raw": raw, "priority": "normal"}
    mta.on_event(request("mta.submit_raw", body), 1.0)
    (said,) = events(mta.on_event(request("mta.submit_raw", body), 1.5), "mta.accepted")
    assert (said.fields["repeated"], said.fields["via"], said.fields["message_id"]) == (True, "smtp", "<abc@outside.test>")


def test_a_submission_reads_through_the_read_cache_and_keeps_each_deliver_to_both_primary():
    """Recipients are checked, and alternates expanded, from what the MTA read (the read cache,
    Q178534), one level: an
    alternate it does not know is no alternate; two recipients with deliver to both keep both."""
    mta = make_mta("sp4", read_cache_ttl_ms=5000)
    changes = [recipient("erin", "ex1", 5, "zed", True), recipient("dave", "ex1", 6, "carol", True),
               recipient("zed", "ex1", 7), recipient("bob", "ex1", 8)]  # bob's alternate cleared
    assert replies(mta.on_event(request("mta.lookup", {"alias": "zed"}), 1.0))[0].body.recipient is None
    assert replies(mta.on_event(request("mta.lookup", {"alias": "bob"}), 1.0))[0].body.recipient["alternate"] == \
        "carol"  # both read at 1.0, and trusted until 6.0
    for entry in changes:
        mta.on_event(Feed(frame("dir.change", {"usn": entry["usn"], "recipient": entry})), 1.0)
    mta.tick(2.5)  # applied at 2.0
    assert refusal(mta.on_event(request("mta.submit", submit_body(["zed"])), 3.0))[0] == \
        "unknown user 'zed' (not in mta.ex1's directory cache)", "as read at 1.0"
    _, actions = submit(mta, ["erin", "bob", "dave"], now=3.0)
    assert replies(actions)[0].body.rcpts == ["erin", "bob", "carol", "dave"] and not events(actions, "mta.failed")
    assert [(s.body.mailbox) for s in sends(actions, "store.deliver")] == ["erin", "bob", "carol", "dave"], \
        "zed was read as no one: erin keeps her copy alone; bob (as read) and dave share carol, one copy"
    _, later = submit(mta, ["erin", "bob"], now=6.5)
    assert [s.body.mailbox for s in sends(later, "store.deliver")] == ["erin", "zed", "bob"], "read again"


def test_a_finished_pair_is_remembered_for_twice_the_longest_time_out_and_a_minute():
    """By then no peer can still be sending it again (nodes.mta.seen); before, a retransmission
    is dropped, and after, the memory is gone."""
    mta = make_mta("sp4", expire_ms=10_000)
    longest = mta.queue.lifetimes.longest()
    first = mta.on_event(request("mta.transfer", transfer([BOB], msg_id="m-4"), src="mta.ex2"), 1.0)
    store_answer(mta, sends(first, "store.deliver")[0], "delivered", 1.1)
    until = 1.0 + 2 * longest + 60  # from its acceptance upstream (1.0)
    mta.tick(until - 1)
    again = mta.on_event(request("mta.transfer", transfer([BOB], msg_id="m-4"), src="mta.ex2"), until - 1)
    assert events(again, "mta.transfer_duplicate") and len(mta.queue.seen) == 1
    mta.tick(until + 10)
    assert len(mta.queue.seen) == 0
