"""The MTA's outside relay (nodes/mta/external.py): the IMS's lookups and submissions read the
MTA's cache as its own routing does (the read cache included), a relay carries its message's
trace, and what the IMS hands back or takes is logged whole. The MTA's whole mutation run
(docs/testing.md) changed each of these with no test failing."""

from __future__ import annotations

from nodes.core import Feed

from .helpers import events, frame, recipient, refusal, replies, request, response, sends
from .test_mta_core import make_mta, refused_from_outside


def test_the_ims_s_lookup_and_its_submission_read_through_the_mta_s_read_cache():
    """With Exchange's read cache (Q172364) an entry the MTA read is trusted for its TTL: the
    IMS's RCPT check (mta.lookup) and the submission's own check then agree with the routing."""
    mta = make_mta("sp4", lag_ms=1000, read_cache_ttl_ms=5000)

    def lookup(alias: str, now: float) -> dict | None:
        (reply,) = replies(mta.on_event(request("mta.lookup", {"alias": alias}), now))
        return reply.body.recipient

    assert lookup("bob", 2.0)["home_server"] == "ex1" and lookup("zed", 2.0) is None
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("bob", "ex2", 5)})), 2.0)
    mta.on_event(Feed(frame("dir.change", {"usn": 6, "recipient": recipient("zed", "ex1", 6)})), 2.0)
    mta.tick(3.5)  # both changes applied to the replica at 3.0
    assert lookup("bob", 4.0)["home_server"] == "ex1", "read at 2.0, trusted until 7.0"
    raw = b"X-Xcon-Msg-Id: smtp-1\r\nSubject: s\r\n\r\nhi\r\n"
    body = {"msg_id": "smtp-1", "sender": "ann@outside.test", "recipients": ["zed"], "raw": raw, "priority": "normal"}
    assert refusal(mta.on_event(request("mta.submit_raw", body), 4.0))[0] == \
        "unknown user 'zed' (not in mta.ex1's directory cache)", "zed was read as no one at 2.0"
    assert lookup("bob", 7.5)["home_server"] == "ex2" and lookup("zed", 7.5)["home_server"] == "ex1"
    accepted = mta.on_event(request("mta.submit_raw", body), 7.5)
    assert [r.type for r in replies(accepted)] == ["mta.accepted"]


def ndr_to_outside(mta) -> tuple[str, list]:
    """ann@outside.test's message to carol fails on ex1; its NDR leaves through the IMS."""
    failed = refused_from_outside(mta, 2, "carol")
    (queued,) = events(failed, "mta.ndr_queued")
    return queued.fields["msg_id"], failed


def test_a_relay_carries_its_message_s_trace_and_a_report_relayed_says_whose_it_is():
    mta = make_mta("sp4", smtp=True)
    ndr_id, failed = ndr_to_outside(mta)
    (out,) = sends(failed, "ims.outbound")
    assert (out.body.msg_id, out.trace) == (ndr_id, ndr_id)
    relayed = mta.on_event(response(out, "ok", {}, src="ims.ex1"), 1.6)
    assert [e.fields for e in events(relayed, "mta.relayed")] == [
        {"msg_id": ndr_id, "rcpt": "ann@outside.test", "to": "ims.ex1", "ndr_for": "smtp-2"}]


def test_a_report_handed_back_is_logged_whole_as_a_warning_with_the_diagnostic_cut_to_500():
    mta = make_mta("sp4", smtp=True)
    report = "m-9~ndr~0123456789abcdef"
    body = {"msg_id": report, "sender": "postmaster.ex2", "rcpt": "ann@outside.test", "raw": b"Subject: r\r\n\r\nx\r\n",
            "ndr_for": "m-9", "ndr_rcpts": ["bob"], "accepted_at": 1.0, "priority": "normal",
            "reason": "refused", "diagnostic": "550 " + "x" * 600}
    back = mta.on_event(request("mta.relay_failed", body, src="ims.ex1"), 3.0)
    (said,) = events(back, "mta.relay_failed")
    assert (said.level, said.fields) == ("warning", {"msg_id": report, "rcpt": "ann@outside.test", "reason": "refused",
                                                     "diagnostic": "550 " + "x" * 496, "ndr_for": "m-9",
                                                     "src": "ims.ex1"})
