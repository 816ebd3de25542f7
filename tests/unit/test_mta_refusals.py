"""Every refusal of the MTA word for word (the reason a person reads, the code a client acts on,
the log line it leaves), what `xcon status` shows of an MTA, and the IMS's recipient lookup."""

from __future__ import annotations

import msgpack
import pytest

from nodes.config import Settings
from nodes.node_settings import of
from nodes.core import DiskSpace, Feed
from nodes.mta.core import MAX_RECIPIENTS, MtaCore
from protocol import INVALID, MAX_MESSAGE_BYTES, VERSION, ProtocolError, decode
from protocol.names import MSG_ID_RULE

from .helpers import events, frame, recipient, refusal, refusal_log, replies, request, sends
from .test_mta_core import make_mta, store_answer, submit, transfer

SUBMIT = {"msg_id": None, "sender": "alice", "recipients": ["bob"], "subject": "s", "body": "b", "priority": None}
RAW = {"msg_id": "ims.1", "sender": "x@example.com", "recipients": ["bob"], "raw": b"Subject: s\r\n\r\nb",
       "priority": "normal"}
HINT = {"alias": "bob", "alt_of": None, "hint": None, "hops": 0}
RELAY = {"msg_id": "m1", "sender": "alice", "rcpt": "x@example.com", "raw": b"x", "ndr_for": None, "ndr_rcpts": [],
         "accepted_at": 1.0, "priority": "normal", "reason": "refused", "diagnostic": "550 no"}


def refused(mta: MtaCore, type_: str, body: dict) -> tuple[str, str | None, list]:
    return refusal(mta.on_event(request(type_, body), 2.0))


@pytest.mark.parametrize("type_, body, reason, code", [
    ("store.list", {"mailbox": "bob"}, "the MTA does not handle 'store.list'", None),
    ("mta.submit", {**SUBMIT, "recipients": []}, "a message needs at least one recipient", INVALID),
    ("mta.submit", {**SUBMIT, "recipients": [f"u{i}" for i in range(MAX_RECIPIENTS + 1)]},
     f"at most {MAX_RECIPIENTS} recipients per message", INVALID),
    ("mta.submit", {**SUBMIT, "recipients": ["zed"]}, "unknown user 'zed' (not in mta.ex1's directory cache)", INVALID),
    ("mta.submit", {**SUBMIT, "priority": "high"},
     "priority must be one of urgent, normal, non-urgent (got 'high')", INVALID),
    ("mta.submit", {**SUBMIT, "msg_id": "-no"}, f"'-no' is not a valid message id ({MSG_ID_RULE})", INVALID),
    ("mta.submit", {**SUBMIT, "body": "x" * MAX_MESSAGE_BYTES},
     None, INVALID),  # the reason names the size, which the headers change: checked below
    ("mta.submit_raw", {**RAW, "msg_id": "-no"}, f"'-no' is not a valid message id ({MSG_ID_RULE})", INVALID),
    ("mta.submit_raw", {**RAW, "recipients": []}, "mta.submit_raw: needs a recipient and a priority", INVALID),
    ("mta.submit_raw", {**RAW, "priority": "high"}, "mta.submit_raw: needs a recipient and a priority", INVALID),
    ("mta.submit_raw", {**RAW, "recipients": ["bob", "y@example.com"]},
     "unknown user 'y@example.com' (not in mta.ex1's directory cache)", INVALID),
    ("mta.submit_raw", {**RAW, "recipients": ["zed"]},
     "unknown user 'zed' (not in mta.ex1's directory cache)", INVALID),
    ("mta.transfer", transfer([HINT], msg_id="-no"), "'-no' is not a valid message id", None),
    ("mta.relay_failed", {**RELAY, "rcpt": "bob"},
     "mta.relay_failed: a message id, an outside address and a reason (refused, expired)", INVALID),
    ("mta.relay_failed", {**RELAY, "reason": "lost"},
     "mta.relay_failed: a message id, an outside address and a reason (refused, expired)", INVALID),
])
def test_each_refusal_says_why_in_its_own_words_with_its_code(type_, body, reason, code):
    got, got_code, logs = refused(make_mta("sp4"), type_, body)
    if reason is None:
        assert got.startswith("the message is ") and got.endswith(f"bytes, over the limit of {MAX_MESSAGE_BYTES} bytes")
    else:
        assert got == reason
    assert got_code == code
    assert logs == [refusal_log(type_, got)]


@pytest.mark.parametrize("rcpt, reason", [
    ({**HINT, "hops": "0"}, "field 'rcpts[0].hops' must be int, got str"),
    ({**HINT, "alt_of": 3}, "field 'rcpts[0].alt_of' must be str or nil, got int"),
    ({**HINT, "hint": {"usn": 1}}, "rcpts[0].hint: missing field 'alias'"),
    ({**HINT, "cycles": -1}, "field 'rcpts[0].cycles' must be int >= 0"),
    ({**HINT, "cycles": True}, "field 'rcpts[0].cycles' must be int, got bool"),
])
def test_a_transfer_of_the_wrong_shape_never_reaches_the_core(rcpt, reason):
    """Its recipients' shape is the protocol's (protocol.messages.TransferRcpt): the decoder refuses
    it with the reason the host's error reply carries, and the core never sees it."""
    with pytest.raises(ProtocolError) as err:
        decode(msgpack.packb({"type": "mta.transfer", "id": "t1", "src": "mta.ex2", "clock": 1, "body": transfer([rcpt]),
                              "v": VERSION}, use_bin_type=True))
    assert str(err.value) == f"mta.transfer: {reason}"


def test_a_starting_full_or_busy_mta_refuses_new_mail_but_answers_lookups_and_releases():
    starting = MtaCore("ex1", of(Settings(("ex1", "ex2"), "sp4"), "mta.ex1"), "boot")
    assert refused(starting, "mta.submit", SUBMIT)[:2] == (
        "mta.ex1 is starting: its directory cache is not loaded yet", None)
    mta = make_mta("sp4")
    mta.max_queue = 1
    submit(mta, ["alice"])
    assert refused(mta, "mta.submit", SUBMIT)[:2] == ("busy: mta.ex1 holds 1 messages, retry later", None)
    assert refused(mta, "mta.transfer", transfer([HINT]))[0].startswith("busy: ")
    assert replies(mta.on_event(request("mta.lookup", {"alias": "bob"}), 2.0))[0].type == "mta.entry"
    full = make_mta("sp4")
    full.room.min_free_bytes = 1000
    full.on_event(DiskSpace(10), 2.0)
    assert refused(full, "mta.submit", SUBMIT)[:2] == ("insufficient storage on mta.ex1 (10 bytes free), retry later", None)
    released = full.on_event(request("store.released", {"mailbox": "bob"}, src="store.ex1"), 2.0)
    assert [r.type for r in replies(released)] == ["ok"]


def test_a_message_id_taken_by_another_sender_is_refused():
    mta = make_mta("sp4")
    mta.on_event(request("mta.submit", {**SUBMIT, "msg_id": "m7", "sender": "carol"}), 1.0)
    assert refused(mta, "mta.submit", {**SUBMIT, "msg_id": "m7"})[:2] == (
        "message id 'm7' belongs to another message (from carol); choose another", INVALID)


def test_the_lookup_answers_from_the_cache_as_it_is_at_that_moment():
    mta = make_mta("sp4", lag_ms=1000)
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("bob", "ex2", 5, "carol", True)})), 2.0)

    def entry(now: float) -> dict | None:
        (reply,) = replies(mta.on_event(request("mta.lookup", {"alias": "bob"}), now))
        return reply.body.recipient
    mta.tick(2.5)
    assert entry(2.5)["home_server"] == "ex1", "the change is not applied before its lag"
    mta.tick(3.5)
    assert entry(3.5)["home_server"] == "ex2"
    (unknown,) = replies(mta.on_event(request("mta.lookup", {"alias": "zed"}), 3.5))
    assert unknown.body.recipient is None


def test_the_status_shows_the_queue_the_cache_and_a_lag_fault_in_force():
    mta = make_mta("sp4", lag_ms=1000)
    _, actions = submit(mta, ["bob", "alice"])  # bob: deliver to both (bob and carol), alice: on ex2
    by_box = {s.body.mailbox: s for s in sends(actions, "store.deliver")}
    store_answer(mta, by_box["carol"], "delivered", 1.01)
    store_answer(mta, by_box["bob"], "deferred", 1.01)
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("dave", "ex2", 5)})), 1.5)
    lagged = mta.on_event(request("fault.lag", {"lag_ms": 2500, "jitter_ms": 1000}), 1.6)
    assert [r.type for r in replies(lagged)] == ["ok"]
    assert [(e.level, e.fields) for e in events(lagged, "fault.applied")] == [
        ("warning", {"type": "fault.lag", "by": "test", "lag_ms": 2500, "jitter_ms": 1000})]
    # dave's change came at 1.5 and waits for its lag; carol's copy is in, bob's deferred, alice's
    # transfer to ex2 unanswered
    assert mta.status(1.7) == {
        "server": "ex1", "build": "sp4", "ready": True,
        "cache_usn": 4, "replica_usn": 4, "received_usn": 5, "directory_usn": 5, "pending_changes": 1,
        "directory_regressed": None, "messages": 1, "recovered": 0,
        "open_pairs": 2, "deferred": 1, "in_flight": 1, "remembered": 0, "postmaster": 0,
        "free_bytes": None, "lag_ms": 2500,
        "lag_fault": {"lag_ms": 2500, "jitter_ms": 1000, "configured_ms": 1000},
    }
