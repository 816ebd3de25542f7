"""The Reporter (nodes/mta/reports.py) in the MTA core: each kind of final failure's log line
whole, what the sender's RFC 3461 NOTIFY declines, and a report given to the postmaster: its
copy durable whole, made once, the report retired. The MTA's whole mutation run (docs/testing.md)
changed each of these with no test failing."""

from __future__ import annotations

from nodes.mta.queue import Pair, PersistMessage, QueuedMessage, RetireMessage, State
from protocol.names import POSTMASTER

from .helpers import events, replies, request, sends
from .test_mta_core import bob_deferred_then_released, make_mta, refused_from_outside, relay_failed, store_answer


def failure_line(actions: list) -> tuple[str, dict]:
    (failed,) = events(actions, "mta.failed")
    return failed.level, failed.fields


def test_legacy_s_silent_failure_is_a_warning_naming_the_alternate_and_the_cache_s_usn():
    mta, msg_id, retry = bob_deferred_then_released("legacy", release_at=2.05)
    final = store_answer(mta, sends(retry, "store.deliver")[0], "not_here", 2.06)
    assert failure_line(final) == ("warning", {"msg_id": msg_id, "rcpt": "bob", "reason": "moved", "report": "none",
                                               "cache_usn": 4, "why": "legacy: the alternate carol was given a copy"})


def test_sp4_s_report_is_a_warning_naming_the_ndr_and_the_cache_s_usn():
    mta, msg_id, retry = bob_deferred_then_released("sp4", release_at=2.05)
    final = store_answer(mta, sends(retry, "store.deliver")[0], "not_here", 2.06)
    level, fields = failure_line(final)
    ndr_id = fields.get("ndr_id")
    assert (level, fields) == ("warning", {"msg_id": msg_id, "rcpt": "bob", "reason": "moved", "report": "ndr",
                                           "ndr_id": ndr_id, "cache_usn": 4})
    assert ndr_id and ndr_id.startswith(f"{msg_id}~ndr~")
    (queued,) = events(final, "mta.ndr_queued")
    assert queued.fields == {"msg_id": ndr_id, "ndr_for": msg_id, "rcpts": ["bob"], "to": "alice"}


def test_a_declined_report_says_which_notify_declined_it():
    mta = make_mta("sp4")
    answer = refused_from_outside(mta, 1, "carol", "X-Xcon-DSN-Rcpt: carol NOTIFY=SUCCESS,DELAY\r\n")
    assert failure_line(answer) == ("warning", {
        "msg_id": "smtp-1", "rcpt": "carol", "reason": "moved", "report": "none", "notify": ["DELAY", "SUCCESS"],
        "cache_usn": 4, "why": "the sender asked for no report of a failure (RFC 3461 NOTIFY=DELAY,SUCCESS)"})
    assert not events(answer, "mta.ndr_queued") and not sends(answer)


def test_a_notify_for_another_recipient_declines_nothing_for_this_one():
    """The DSN block names bob alone; carol, with no NOTIFY of her own (and no one she stands
    for), gets the report that RFC 3461 makes the default."""
    mta = make_mta("sp4")
    answer = refused_from_outside(mta, 2, "carol", "X-Xcon-DSN-Rcpt: bob NOTIFY=NEVER\r\n")
    assert [f.fields["report"] for f in events(answer, "mta.failed") if f.fields["msg_id"] == "smtp-2"] == ["ndr"]
    assert [e.fields["ndr_for"] for e in events(answer, "mta.ndr_queued")] == ["smtp-2"]


def test_a_postmaster_copy_handed_a_final_failure_waits_instead():
    """The core never fails a postmaster copy (its store's every answer defers it); the Reporter
    holds to that on its own: a copy handed to it is deferred, and nothing is made of it."""
    mta = make_mta("sp4")
    copy = QueuedMessage("m-1~ndr~0123456789abcdef~pm", "postmaster.ex1", b"raw", 1.0, "m-1", ["bob"],
                         {POSTMASTER: Pair(POSTMASTER)}, report="m-1~ndr~0123456789abcdef")
    mta.queue.add(copy)
    pair = copy.pairs[POSTMASTER]
    failure = mta.reporter.fail(copy, pair, "moved", 2.0)
    assert failure.made is None and failure.after == []
    assert [(e.event, e.fields["reason"]) for e in events(failure.actions)] == [
        ("mta.deferred", "not delivered to the postmaster: moved")]
    assert pair.state == State.DEFERRED and pair.next_at > 2.0 and copy.msg_id in mta.queue


def test_a_report_given_to_the_postmaster_is_durable_whole_made_once_and_the_report_retired():
    mta = make_mta("sp4", smtp=True)
    report = "m-9~ndr~0123456789abcdef"
    first = relay_failed(mta, report, "ann@outside.test", "expired", 3.0, sender="postmaster.ex2", ndr_for="m-9",
                         ndr_rcpts=("bob",))
    pm_id = f"{report}~pm"
    assert failure_line(first) == ("warning", {
        "msg_id": report, "rcpt": "ann@outside.test", "reason": "expired", "report": "postmaster",
        "postmaster_id": pm_id, "ndr_for": "m-9", "ndr_rcpts": ["bob"], "cache_usn": mta.cache.usn,
        "why": "a report that cannot be delivered goes to the postmaster"})
    assert mta.cache.usn > 0, "the USN the oracle judges an unknown originator by (inspect.justify)"
    persisted = [a for a in first if isinstance(a, PersistMessage)]
    assert persisted[0].msg_id == pm_id, "the copy is durable before anything else"
    durable = QueuedMessage.from_record(persisted[0].record)
    assert (durable.sender, durable.accepted_at, durable.ndr_for, durable.ndr_rcpts, durable.report) == (
        "postmaster.ex1", 3.0, "m-9", ["bob"], report)
    (copy,) = sends(first, "store.deliver")
    routed = [e.fields for e in events(first, "mta.routed") if e.fields["msg_id"] == pm_id]
    assert routed == [{"msg_id": pm_id, "rcpt": POSTMASTER, "home_server": "ex1", "via": "postmaster",
                       "entry_usn": None, "cache_usn": 4, "attempt": 1}], "its own store, never the directory"
    assert (copy.body.msg_id, copy.body.mailbox, copy.body.raw) == (pm_id, POSTMASTER, durable.raw)
    retired = [a for a in first if isinstance(a, RetireMessage)]
    assert [r.msg_id for r in retired] == [report] and first.index(retired[0]) > first.index(copy), \
        "the report retires in the same turn, after its copy is on its way"
    listed = replies(mta.on_event(request("mta.queue", {"limit": 10}), 4.0))[0].body.items
    assert [(i["msg_id"], i["kind"], i["sender"], i["age_s"]) for i in listed] == [
        (pm_id, "postmaster", "postmaster.ex1", 1.0)]
    again = relay_failed(mta, report, "ann@outside.test", "expired", 5.0, sender="postmaster.ex2", ndr_for="m-9",
                         ndr_rcpts=("bob",))
    assert [r.type for r in replies(again)] == ["ok"] and not sends(again, "store.deliver"), "no second copy"
    assert not [a for a in again if isinstance(a, PersistMessage) and a.msg_id == pm_id]
    assert mta.status(5.0)["postmaster"] == 1
    store_answer(mta, copy, "deferred", 5.1)
    retried = mta.tick(10.1)  # the transfer interval (5 s here) after the store deferred it
    assert [e.fields["attempt"] for e in events(retried, "mta.routed")] == [2]


def test_a_postmaster_copy_names_the_site_of_the_mta_that_made_it():
    mta = make_mta("sp4", smtp=True, sites=("SITE1", "SITE2"))
    back = relay_failed(mta, "m-9~ndr~0123456789abcdef", "ann@outside.test", "expired", 3.0, sender="postmaster.ex2",
                        ndr_for="m-9", ndr_rcpts=("bob",))
    (copy,) = sends(back, "store.deliver")
    assert b"MSEXCH:MSExchangeMTA:SITE1:EX1" in copy.body.raw
