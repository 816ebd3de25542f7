"""Paths of the MTA the campaigns seldom reach, each with what the next node or a person sees:
a submission sent again, a message at the size and disk limits, a hand-over's recipients, the
retirement's memory, the IMS handing back a pair of a message still queued, and the feed's gaps."""

from __future__ import annotations

from nodes.core import DiskSpace, Feed
from nodes.mta.queue import RetireMessage
from protocol import MAX_MESSAGE_BYTES
from protocol.names import MSG_ID_RULE

from .helpers import events, frame, recipient, replies, request, sends
from .test_mta_core import make_mta, relay_failed, store_answer, submit, transfer

RAW = {"msg_id": "ims.1", "sender": "x@example.com", "recipients": ["carol"], "priority": "normal"}


def test_a_submission_sent_again_is_accepted_again_and_says_so_with_when_it_was_first_taken():
    mta = make_mta("sp4")
    body = {"msg_id": "m1", "sender": "alice", "recipients": ["carol"], "subject": "s", "body": "b",
            "priority": "urgent"}
    (first,) = events(mta.on_event(request("mta.submit", body), 1.0), "mta.accepted")
    assert first.fields["priority"] == "urgent" and "repeated" not in first.fields
    (again,) = events(mta.on_event(request("mta.submit", body), 2.0), "mta.accepted")
    assert (again.fields["repeated"], again.fields["accepted_at"], again.fields["priority"]) == (True, 1.0, "urgent")
    (normal,) = events(mta.on_event(request("mta.submit", {**body, "msg_id": "m2", "priority": "normal"}), 2.0),
                       "mta.accepted")
    assert "priority" not in normal.fields, "normal is said by saying nothing"


def test_the_status_and_the_queue_listing_count_what_waits():
    mta = make_mta("sp4")
    submit(mta, ["bob", "alice"], now=1.0)
    status = mta.status(1.0)
    assert (status["open_pairs"], status["deferred"], status["in_flight"]) == (3, 0, 3)
    (listing,) = replies(mta.on_event(request("mta.queue", {"limit": 10}), 2.23456))
    assert listing.type == "mta.queue_listing" and listing.body.total == 3
    assert {item["age_s"] for item in listing.body.items} == {1.235}


def test_a_message_at_the_size_limit_is_taken_and_one_past_the_disk_floor_is_not():
    mta = make_mta("sp4")
    raw = b"Subject: s\r\n\r\n" + b"x" * (MAX_MESSAGE_BYTES - 14)
    assert len(raw) == MAX_MESSAGE_BYTES
    taken = mta.on_event(request("mta.submit_raw", {**RAW, "raw": raw}), 1.0)
    assert [r.type for r in replies(taken)] == ["mta.accepted"]
    small = b"Subject: s\r\n\r\nhello"
    full = make_mta("sp4")
    full.room.min_free_bytes = 1000
    full.on_event(DiskSpace(1000 + 2 * len(small) - 1), 1.0)  # above the floor, not by twice the message
    (refused,) = replies(full.on_event(request("mta.submit_raw", {**RAW, "raw": small}), 1.0))
    assert refused.body.reason == f"insufficient storage on mta.ex1 ({1000 + 2 * len(small) - 1} bytes free), retry later"
    full.on_event(DiskSpace(1000 + 2 * len(small)), 1.0)
    assert [r.type for r in replies(full.on_event(request("mta.submit_raw", {**RAW, "raw": small}), 1.0))] == [
        "mta.accepted"]


def test_a_long_bad_message_id_is_quoted_to_its_first_80_characters():
    mta = make_mta("sp4")
    bad = "-" + "x" * 99
    (refused,) = replies(mta.on_event(request("mta.submit_raw", {**RAW, "msg_id": bad, "raw": b"x"}), 1.0))
    assert refused.body.reason == f"'{bad[:80]}' is not a valid message id ({MSG_ID_RULE})"


def test_a_hand_over_keeps_each_recipients_alternate_and_the_entry_it_came_on():
    mta = make_mta("sp4")
    hint = recipient("carol", "ex1", 1)
    body = transfer([{"alias": "carol", "alt_of": "bob", "hint": hint, "hops": 1},
                     {"alias": "dave", "alt_of": None, "hint": None, "hops": 1}])
    mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    pairs = mta.queue["m1"].pairs
    assert (pairs["carol"].alt_of, pairs["carol"].arrived_usn) == ("bob", 1)
    assert (pairs["dave"].alt_of, pairs["dave"].arrived_usn) == (None, -1)


def test_a_retired_message_is_remembered_from_when_it_was_accepted():
    mta = make_mta("sp4")
    _, actions = submit(mta, ["carol"], now=1.0)
    (deliver,) = sends(actions, "store.deliver")
    done = store_answer(mta, deliver, "delivered", 1.5)
    (retired,) = [a for a in done if isinstance(a, RetireMessage)]
    assert (retired.hops, retired.accepted_at) == ({"carol": 0}, 1.0)


def test_a_pair_handed_back_while_its_message_is_queued_leaves_the_other_pairs_alone():
    mta = make_mta("sp4", smtp=True)
    msg_id, actions = submit(mta, ["carol", "zed@outside.test"], now=1.0)
    (deliver,) = sends(actions, "store.deliver")
    store_answer(mta, deliver, "deferred", 1.1)  # carol's copy waits; zed's "ok" from the IMS is lost
    back = relay_failed(mta, msg_id, "zed@outside.test", "refused", 2.0)
    assert [e.fields["repeated"] for e in events(back, "mta.relay_failed") if "repeated" in e.fields] == []
    assert mta.queue[msg_id].pairs["carol"].state == "deferred", "carol's copy is still owed"
    assert (msg_id, "zed@outside.test") not in mta.queue.requests.values(), "the IMS's unanswered request is forgotten"
    again = relay_failed(mta, msg_id, "zed@outside.test", "refused", 2.5)
    assert [e.fields.get("repeated") for e in events(again, "mta.relay_failed")] == [True]


def test_a_report_handed_back_keeps_the_recipients_it_reports_on():
    mta = make_mta("sp4", smtp=True)
    back = relay_failed(mta, "m-9~ndr~0123456789abcdef", "ann@outside.test", "refused", 3.0,
                        sender="postmaster.ex2", ndr_for="m-9", ndr_rcpts=("bob", "dave"))
    (copy,) = sends(back, "store.deliver")
    assert (copy.body.mailbox, copy.body.ndr_rcpts) == ("postmaster", ["bob", "dave"])
    (failed,) = events(back, "mta.failed")
    assert failed.fields["postmaster_id"] == copy.body.msg_id


def test_the_feed_asks_for_a_snapshot_only_on_a_gap():
    mta = make_mta("sp4", lag_ms=1000)
    in_order = mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("dave", "ex2", 5)})), 1.0)
    assert sends(in_order) == [] and [e.fields["apply_in_ms"] for e in events(in_order, "mta.change_received")] == [1000]
    assert mta.on_event(Feed(frame("dir.heartbeat", {"usn": 5})), 1.1) == []
    gap = mta.on_event(Feed(frame("dir.change", {"usn": 8, "recipient": recipient("dave", "ex1", 8)})), 1.2)
    assert [e.event for e in events(gap)] == ["mta.feed_gap"] and [s.type for s in sends(gap)] == ["dir.snapshot"]
    assert sends(mta.on_event(Feed(frame("dir.change", {"usn": 9, "recipient": recipient("dave", "ex2", 9)})), 1.3)) == []
    behind = make_mta("sp4")
    heard = behind.on_event(Feed(frame("dir.heartbeat", {"usn": 7})), 1.0)
    assert [e.event for e in events(heard)] == ["mta.feed_gap"] and [s.type for s in sends(heard)] == ["dir.snapshot"]
