"""NDRs as Exchange 5.5's MTA wrote them, inside RFC 3464, read by parsers that are not ours."""

from __future__ import annotations

import email
import email.policy
import mailbox

from flufl.bounce import all_failures, scan_message
from hypothesis import example, given, settings, strategies as st

from nodes import mail
from nodes.mail import STATUS, compose, compose_ndr, summarize

ORIGINAL = compose("ex2.b.7", "alice", ["bob", "carol"], "during the move", "will bob ever see this?", 1000.0)


def ndr(failures: list[tuple[str, str]]) -> bytes:
    return compose_ndr("ex2.b.7.ndr.bob", "ex1", ORIGINAL, "ex2.b.7", "alice", failures, 1000.0, 1060.0, site="SITE1")


def test_the_ndr_reads_as_exchange_55_wrote_it():
    text = next(p for p in email.message_from_bytes(ndr([("bob", "moved")]), policy=email.policy.default).walk()
                if p.get_content_type() == "text/plain").get_content()
    assert "Your message did not reach some or all of the intended recipients." in text
    assert "The following recipient(s) could not be reached:" in text
    assert "A required directory operation was unsuccessful" in text
    assert "MSEXCH:MSExchangeMTA:SITE1:EX1" in text and "Subject:  during the move" in text


def test_each_failed_recipient_carries_its_rfc_3463_status_and_x400_codes():
    msg = email.message_from_bytes(ndr([("bob", "moved"), ("carol", "expired")]), policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    status = next(p for p in msg.walk() if p.get_content_type() == "message/delivery-status")
    blocks = [b for b in status.get_payload() if b.get("Final-Recipient")]
    assert [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks] == [
        ("rfc822; bob@xcon.test", "failed", "5.1.6"), ("rfc822; carol@xcon.test", "failed", "5.4.7")]
    assert [b["X-X400-Reason-Code"] for b in blocks] == ["6 (directory-operation-unsuccessful)", "1 (unable-to-transfer)"]
    assert [b["X-X400-Diagnostic-Code"] for b in blocks] == ["4 (recipient-unavailable)", "5 (maximum-time-expired)"]
    assert blocks[1]["Diagnostic-Code"] == "X-Exchange-MTA; The maximum time for delivering the message expired"


def test_a_bounce_parser_that_is_not_ours_finds_every_failed_recipient():
    for reason in STATUS:
        found = scan_message(email.message_from_bytes(ndr([("bob", reason), ("carol", reason)])))
        assert found == {b"bob@xcon.test", b"carol@xcon.test"}, reason
    temporary, permanent = all_failures(email.message_from_bytes(ndr([("bob", "moved")])))
    assert permanent == {b"bob@xcon.test"} and temporary == set()


def test_python_reads_it_from_a_maildir_and_xcon_summarizes_it(tmp_path):
    box = mailbox.Maildir(tmp_path / "alice")
    key = box.add(ndr([("bob", "moved")]))
    message = box.get_message(key)
    assert message["Subject"] == "Undeliverable: during the move" and message.is_multipart()
    assert summarize(ndr([("bob", "moved")])) == {"msg_id": "ex2.b.7.ndr.bob", "from": "postmaster", "subject":
                                                 "Undeliverable: during the move", "ndr": True, "ndr_for": "ex2.b.7",
                                                 "failed": ["bob"], "priority": "normal"}


def test_a_report_quotes_only_the_headers_and_stays_far_below_the_frame_limit():
    """Story 6 of issue 19: a 6 MiB subject, quoted three times, made an 18.9 MB NDR that no
    transfer could carry; it expired and the pair was lost."""
    from protocol import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

    huge = compose("m.big", "alice", ["bob"], "s" * (MAX_MESSAGE_BYTES - 2000), "", 1000.0)
    report = compose_ndr("m.big~ndr~0123456789abcdef", "ex1", huge, "m.big", "alice",
                         [(f"user{i}", "moved") for i in range(500)], 1000.0, 1060.0)
    assert len(huge) <= MAX_MESSAGE_BYTES and len(report) < MAX_FRAME_BYTES // 16
    msg = email.message_from_bytes(report, policy=email.policy.compat32)
    assert len(msg["Subject"]) < 300 and msg["Subject"].endswith("...")
    quoted = next(p for p in msg.walk() if p.get_content_type() == "text/rfc822-headers").get_payload()
    assert "X-Xcon-Truncated" in quoted and "X-Xcon-Msg-Id: m.big" in quoted
    assert len(summarize(report)["failed"]) == 500


def test_a_boundary_stays_within_rfc_2046_whatever_the_id():
    report = compose_ndr("m" * 200 + "~ndr~0123456789abcdef", "ex1", ORIGINAL, "m" * 200, "alice",
                         [("bob", "moved")], 1000.0, 1060.0)
    boundary = email.message_from_bytes(report, policy=email.policy.compat32).get_boundary()
    assert len(boundary) <= 70


def test_a_postmaster_copy_carries_the_report_and_says_whose_it_was():
    from nodes.mail import compose_postmaster

    report = ndr([("bob", "moved")])
    copy = compose_postmaster("ex2.b.7.ndr.bob~pm", "ex1", report, "ex2.b.7.ndr.bob", "ex2.b.7", "alice", "expired",
                              1200.0)
    summary = summarize(copy)
    assert (summary["report_id"], summary["ndr_for"], summary["failed"], summary["ndr"]) == \
        ("ex2.b.7.ndr.bob", "ex2.b.7", ["bob"], False)
    text = next(p for p in email.message_from_bytes(copy, policy=email.policy.default).walk()
                if p.get_content_type() == "text/plain").get_content()
    assert "A delivery report for alice@xcon.test could not be delivered" in text


def test_rfc_3461_parameters_are_read_from_the_ims_block_alone():
    """What the IMS put above a client's message counts; the client's own X-Xcon-DSN lines do not
    (a sender must not silence another recipient's report by writing a header)."""
    from nodes.mail import dsn_of

    raw = (b"Received: from outside.test by ims.ex1.xcon.test with ESMTP id smtp-1\r\n"
           b"X-Xcon-Msg-Id: smtp-1\r\nX-Xcon-DSN: RET=HDRS ENVID=e1\r\n"
           b"X-Xcon-DSN-Rcpt: bob NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob@example.org\r\n"
           b"Subject: hi\r\nX-Xcon-DSN-Rcpt: carol NOTIFY=NEVER\r\n\r\nbody\r\n")
    assert dsn_of(raw) == {"envid": "e1", "ret": "HDRS",
                           "rcpts": {"bob": {"notify": {"FAILURE", "DELAY"}, "orcpt": "rfc822;bob@example.org"}}}
    assert dsn_of(b"From: alice@xcon.test\r\n\r\nx") == {"envid": None, "ret": None, "rcpts": {}}


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(["Subject", "subject", "To", ":", " ", "\t", "\r\n", "\r\n ", "\r\n\t", "\n", "\r",
                                 "From ", "x", "a b", "\u00e9"]), max_size=16))
@example(["subject", ":", "x", "\r\n", "Subject", ":", "a b"])  # the first of two
@example(["To", ":", "x", "\r\n", "Subject", ":", "a b", "\r\n\t", "x", "\r\n ", "x"])  # folded
@example(["Subject", ":", "a b", "\n", "x"])  # a bare LF ends the line there
@example(["From ", "x", "\r\n", "Subject", ":", "x"])  # an mbox From line
@example([" ", "x", "\r\n", "Subject", ":", "x"])  # a fold with nothing before it
def test_the_subject_a_report_quotes_is_the_one_the_email_package_reads(pieces):
    """nodes.mail reads a plain header block itself and the rest through the email package
    (compat32); both must give the same subject, folds, odd line ends and all."""
    raw = "".join(pieces).encode()
    msg = email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=email.policy.compat32)
    theirs = msg.get("Subject")
    if theirs is not None and not isinstance(theirs, str):
        return  # 8-bit bytes: a Header object, which the fallback gives back the same way
    ours = mail._header(raw, "Subject")
    assert (ours if ours is None else mail._one_line(ours)) == (theirs if theirs is None else mail._one_line(theirs))


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(min_value=0, max_value=4e9, allow_nan=False),
                 st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999995),
                 st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s - 5e-7),
                 st.integers(min_value=0, max_value=4_000_000_000)))
@example(9.9999996)  # datetime rounds it to 10 s
@example(1_764_000_000.9999995)
def test_a_report_s_dates_are_formatdate_s_to_the_second(t):
    from email.utils import formatdate

    assert mail._date_at(t) == formatdate(t)


def test_headers_in_raw_utf8_as_an_smtputf8_client_sends_them_are_read_as_text():
    """A Subject in UTF-8 (not encoded-word) made the email package hand back a Header object, and
    the NDR's composition crashed the MTA that made it (found by tests/integration/test_edges.py)."""
    raw = "From: jürgen@outside.test\r\nSubject: grüße\r\nX-Priority: \xff\r\n\r\nhallo\r\n".encode()
    summary = summarize(raw)
    assert (summary["from"], summary["subject"], summary["priority"]) == ("jürgen@outside.test", "grüße", "normal")
    ndr = compose_ndr("m~ndr~0123456789abcdef", "ex1", raw, "m", "jürgen@outside.test", [("bob", "moved")], 1.0, 2.0)
    assert "Undeliverable: grüße" in ndr.decode() and summarize(ndr)["failed"] == ["bob"]
