"""The MTA's clocks: which interval a retry waits (5.5's open interval after no answer, its
transfer interval after an answer that defers), and what an unanswered delivery or hand-off
does at the message's time-out (it asks again rather than fail: it may have landed)."""

from __future__ import annotations

from nodes.mta.core import MtaCore

from .helpers import events, request, response, sends
from .test_mta_core import make_mta, submit

RETRY_MS, TRANSFER_RETRY_MS, TIMEOUT_MS, EXPIRE_MS = 7000, 3000, 2000, 20_000


def make(smtp: bool = False) -> MtaCore:
    return make_mta("sp4", retry_ms=RETRY_MS, transfer_retry_ms=TRANSFER_RETRY_MS, request_timeout_ms=TIMEOUT_MS,
                    expire_ms=EXPIRE_MS, smtp=smtp)


def deferred(actions: list) -> list[tuple[str, str, int]]:
    return [(e.fields["rcpt"], e.fields["reason"], e.fields["retry_in_ms"]) for e in events(actions, "mta.deferred")]


def test_no_answer_waits_the_open_interval_and_a_deferral_the_transfer_interval():
    mta = make()
    _, actions = submit(mta, ["carol"], now=1.0)
    (first,) = sends(actions, "store.deliver")
    assert deferred(mta.tick(1.0 + TIMEOUT_MS / 1000 - 0.01)) == []
    assert deferred(mta.tick(1.0 + TIMEOUT_MS / 1000)) == [("carol", "no answer within 2s", RETRY_MS)]
    assert mta.queue.requests == {}, "an unanswered request is forgotten: a late answer is only logged"
    late = mta.on_event(response(first, "store.result", {"msg_id": first.body.msg_id, "mailbox": "carol",
                                                         "outcome": "delivered", "reason": ""}), 3.5)
    assert [e.event for e in events(late)] == ["mta.late_answer"]
    retry_at = 1.0 + TIMEOUT_MS / 1000 + RETRY_MS / 1000
    assert sends(mta.tick(retry_at - 0.01)) == []
    again = mta.tick(retry_at)
    assert [(e.fields["rcpt"], e.fields["reason"]) for e in events(again, "mta.retry")] == [("carol", "retry timer")]
    (second,) = sends(again, "store.deliver")
    answer = mta.on_event(response(second, "store.result", {"msg_id": second.body.msg_id, "mailbox": "carol",
                                                            "outcome": "deferred", "reason": "mailbox locked"}), retry_at)
    assert deferred(answer) == [("carol", "mailbox locked", TRANSFER_RETRY_MS)]


def test_an_unanswered_delivery_asks_again_at_the_time_out_instead_of_failing():
    mta = make()
    submit(mta, ["carol"], now=1.0)
    mta.tick(1.0 + TIMEOUT_MS / 1000)  # no answer: it may have landed
    expired = mta.tick(1.0 + EXPIRE_MS / 1000)
    assert events(expired, "mta.failed") == []
    assert [e.fields["reason"] for e in events(expired, "mta.retry")] == [
        "expired: asking whether an earlier attempt landed"]
    assert [s.body.mailbox for s in sends(expired, "store.deliver")] == ["carol"]
    # `xcon queue` says so: its state alone said "delivering" while the trace said it expired
    listed = mta.on_event(request("mta.queue", {"limit": 10}), 1.0 + EXPIRE_MS / 1000)
    assert [(i["rcpt"], i["state"], i["expired"]) for i in listed[0].body["items"]] == [("carol", "delivering", True)]
    early = mta.on_event(request("mta.queue", {"limit": 10}), 1.0 + EXPIRE_MS / 1000 - 1)
    assert [i["expired"] for i in early[0].body["items"]] == [False]


def test_an_unanswered_relay_asks_the_ims_again_at_the_time_out_and_counts_its_tries():
    mta = make(smtp=True)
    _, actions = submit(mta, ["zed@outside.test"], now=1.0)
    (routed,) = events(actions, "mta.routed")
    assert (routed.fields["via"], routed.fields["to"], routed.fields["attempt"]) == ("ims", "ims.ex1", 1)
    mta.tick(1.0 + TIMEOUT_MS / 1000)
    expired = mta.tick(1.0 + EXPIRE_MS / 1000)
    assert events(expired, "mta.failed") == [], "the IMS may hold it: the time-out is its to state"
    (again,) = events(expired, "mta.routed")
    assert (again.fields["via"], again.fields["attempt"]) == ("ims", 2)
    assert sends(expired, "ims.outbound")


def test_a_delivery_answered_in_time_fails_at_the_time_out_with_an_ndr():
    mta = make()
    _, actions = submit(mta, ["carol"], now=1.0, sender="alice")
    (first,) = sends(actions, "store.deliver")
    mta.on_event(response(first, "store.result", {"msg_id": first.body.msg_id, "mailbox": "carol",
                                                  "outcome": "deferred", "reason": "mailbox locked"}), 1.1)
    t, failed = 1.1, []
    while not failed and t < 1.0 + EXPIRE_MS / 1000 + 1:
        t += 0.5
        for s in sends(actions := mta.tick(t), "store.deliver"):
            mta.on_event(response(s, "store.result", {"msg_id": s.body.msg_id, "mailbox": "carol",
                                                      "outcome": "deferred", "reason": "mailbox locked"}), t)
        failed = events(actions, "mta.failed")
    assert [(f.fields["reason"], f.fields["report"]) for f in failed] == [("expired", "ndr")]
    assert t >= 1.0 + EXPIRE_MS / 1000
