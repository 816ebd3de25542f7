"""Mail as bytes: RFC 5322 messages, RFC 3464 non-delivery reports, and reading both back.

Pure functions: the time comes in as an argument, nothing is read from a clock or a disk.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import hashlib
import math
import re
from dataclasses import dataclass
from email.utils import formatdate, parseaddr
from functools import lru_cache
from typing import Any

from protocol.names import POSTMASTER

from .config import DEFAULT_SITE

DOMAIN = "xcon.test"
# what a report quotes of the message it reports on, at most: its headers, as real NDRs do, cut
# here, and its subject cut shorter. A report stays far below the frame limit whatever the message
# (a 6 MiB subject, quoted three times, once made an 18.9 MB NDR that no transfer could carry)
QUOTED_HEADER_BYTES = 16 * 1024
QUOTED_SUBJECT_CHARS = 256
MAX_LINE = 998  # RFC 5322's limit for a line


@dataclass(frozen=True)
class Failure:
    """How an NDR states one final failure: the RFC 3463 status, the line Exchange 5.5 printed
    for it, and its X.400 reason and diagnostic codes (Q174175)."""

    status: str
    text: str
    reason: tuple[int, str]
    diagnostic: tuple[int, str]


# The lines are those the 5.5 KB articles show (docs/EXCHANGE55.md); which X.400 codes pair
# with a moved mailbox is not documented, and is the emulation's choice: the MTA's directory
# read failed it (reason 6), the recipient was unavailable where it looked (diagnostic 4).
STATUS = {
    "moved": Failure("5.1.6", "A required directory operation was unsuccessful",
                     (6, "directory-operation-unsuccessful"), (4, "recipient-unavailable")),
    "unknown": Failure("5.1.1", "The recipient name is not recognized",
                       (1, "unable-to-transfer"), (0, "unrecognized-OR-name")),
    "expired": Failure("5.4.7", "The maximum time for delivering the message expired",
                       (1, "unable-to-transfer"), (5, "maximum-time-expired")),
    "loop": Failure("5.4.6", "A routing loop was detected",
                    (1, "unable-to-transfer"), (27, "redirection-loop-detected")),
    "gone": Failure("5.1.1", "The recipient name is not recognized",
                    (1, "unable-to-transfer"), (0, "unrecognized-OR-name")),
    # KB 2579150 (Exchange 2010 SP1): transport, on lagged directory data, delivers to the source
    # mailbox a move left soft-deleted; the store's answer, as that NDR prints it
    "soft_deleted": Failure("5.2.0", "STOREDRV.Deliver.Exception:StoragePermanentException."
                            "MapiExceptionMailboxSoftDeleted; Cannot open mailbox",
                            (1, "unable-to-transfer"), (4, "recipient-unavailable")),
    # the directory names a home server the organisation has no MTA for (a hand-edited entry):
    # nothing can route to it. The codes are the emulation's choice
    "no_route": Failure("5.4.4", "Unable to route: the recipient's home server is not in this organisation",
                        (1, "unable-to-transfer"), (0, "unrecognized-OR-name")),
    # the smarthost refused a message for outside for good (5xx), as the IMS found: the
    # organisation's MTA cannot reach that address. The codes are the emulation's choice
    "refused": Failure("5.4.0", "The remote mail server refused the message for this recipient",
                       (1, "unable-to-transfer"), (0, "unrecognized-OR-name")),
    # delivery restrictions (the recipient rejects messages from the sender): X.400's
    # restricted-delivery; the diagnostic is the emulation's choice, as for a move
    "restricted": Failure("5.7.1", "You do not have permission to send to this recipient",
                          (5, "restricted-delivery"), (4, "recipient-unavailable")),
}


def address(alias: str) -> str:
    """bob's address; an address from outside the organisation (it has an @) as it is."""
    return alias if "@" in alias else f"{alias}@{DOMAIN}"


def external(name: str) -> bool:
    """A sender or recipient outside the organisation: an address, where the organisation's are
    aliases (which cannot hold an @)."""
    return "@" in name


def alias_of(addr: str) -> str:
    """bob from "bob@xcon.test", "<bob@xcon.test>", "rfc822; bob@xcon.test" or "Bob <bob@xcon.test>";
    an address outside the organisation whole."""
    addr = addr.strip()
    if ";" in addr:  # "rfc822; bob@xcon.test"
        addr = addr.split(";", 1)[1].strip()
    addr = parseaddr(addr)[1] or addr.strip("<>")
    local, _, domain = addr.partition("@")
    domain = domain.lower()
    return local if domain in ("", DOMAIN) or domain.endswith("." + DOMAIN) else addr


@lru_cache(maxsize=4)
def _date(second: int) -> str:
    """An RFC 5322 date, made once per second: formatdate was most of a compose (docs/performance.md)."""
    return formatdate(second)


def _date_at(t: float) -> str:
    """formatdate(t), from _date's cache: the second is the one datetime rounds `t` into (to the
    microsecond, half to even, so 9.9999996 is 10). A report writes four or five dates."""
    if t < 0:
        return formatdate(t)
    fraction, whole = math.modf(t)
    return _date(int(whole) + (round(fraction * 1e6) >= 1_000_000))


def compose(msg_id: str, sender: str, recipients: list[str], subject: str, body: str, now: float,
            priority: str = "normal") -> bytes:
    """An RFC 5322 message with xcon's message id in X-Xcon-Msg-Id, and its priority in the
    Priority header (RFC 2156's mapping of X.400's: urgent, normal, non-urgent)."""
    lines = [
        f"From: {address(sender)}",
        f"To: {', '.join(address(r) for r in recipients)}",
        f"Subject: {_one_line(subject)}",
        f"Date: {_date(int(now))}",
        f"Message-ID: <{msg_id}@{DOMAIN}>",
        f"X-Xcon-Msg-Id: {msg_id}",
        f"Priority: {priority}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        body,
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# what an IMS (nodes.ims) puts above a client's message, in this order: a reader of RFC 3461's
# parameters looks in that block alone, so a client's own X-Xcon-DSN lines count for nothing
_IMS_BLOCK = ("received", "x-xcon-msg-id", "message-id", "x-xcon-dsn", "x-xcon-dsn-rcpt")
RET_FULL_MAX = 64 * 1024  # RET=FULL returns a message this small whole, and a larger one's headers


def dsn_of(raw: bytes) -> dict[str, Any]:
    """RFC 3461's parameters the IMS took with a message: {"envid", "ret", "rcpts": {alias:
    {"notify": set of NEVER|SUCCESS|FAILURE|DELAY, "orcpt": str|None}}}; empty ones for mail
    that did not come over SMTP."""
    found: dict[str, Any] = {"envid": None, "ret": None, "rcpts": {}}
    if not raw.startswith(b"Received:"):
        return found
    for line in raw[:raw.find(b"\r\n\r\n") if b"\r\n\r\n" in raw else 65536].split(b"\r\n")[:600]:
        name, _, value = line.decode("utf-8", "replace").partition(":")
        if name.lower() not in _IMS_BLOCK:
            break
        words = value.split()
        if name.lower() == "x-xcon-dsn":
            for w in words:
                key, _, v = w.partition("=")
                found[{"ENVID": "envid", "RET": "ret"}.get(key.upper(), "_")] = v
        elif name.lower() == "x-xcon-dsn-rcpt" and words:
            params = dict(w.partition("=")[::2] for w in words[1:])
            params = {k.upper(): v for k, v in params.items()}
            found["rcpts"][words[0]] = {"notify": set(params.get("NOTIFY", "").upper().split(",")) - {""},
                                        "orcpt": params.get("ORCPT")}
    found.pop("_", None)
    return found


def compose_ndr(ndr_id: str, reporting_server: str, original: bytes, original_msg_id: str, originator: str,
                failures: list[tuple[str, str]], arrival: float, now: float, site: str = DEFAULT_SITE) -> bytes:
    """An RFC 3464 delivery status notification (multipart/report; report-type=delivery-status)
    that reads as Exchange 5.5's MTA wrote its NDRs.

    `failures` is [(recipient alias, reason key of STATUS)]. The human-readable part has the
    5.5 wording, a line per recipient with its reason, and the MSEXCH:MSExchangeMTA:<Site>:<Server>
    trailer; the per-recipient blocks have Final-Recipient, Action: failed, the RFC 3463 Status,
    a Diagnostic-Code with the same line, and the X.400 reason and diagnostic codes. The
    original's headers travel in a text/rfc822-headers part.
    """
    boundary = f"=_xcon_ndr_{_token(ndr_id)}"  # RFC 2046: at most 70 characters, whatever the id
    dsn = dsn_of(original)  # over SMTP: ENVID, each recipient's ORCPT, RET (RFC 3461)
    original_subject = _quoted_subject(original)
    explanation = ["Your message did not reach some or all of the intended recipients.", "",
                   f"      Subject:  {original_subject}", f"      Sent:     {_date_at(arrival)}", "",
                   "The following recipient(s) could not be reached:", ""]
    blocks: list[str] = []
    for rcpt, reason in failures:
        said, block = _failed_rcpt(rcpt, STATUS[reason], dsn["rcpts"].get(rcpt, {}).get("orcpt"), now,
                                   f"MSEXCH:MSExchangeMTA:{site}:{reporting_server.upper()}")
        explanation += said
        blocks += block
    lines = [
        f"From: Mail Delivery System <postmaster@{reporting_server}.{DOMAIN}>",
        f"To: {address(originator)}",
        f"Subject: Undeliverable: {original_subject}",
        f"Date: {_date_at(now)}",
        f"Message-ID: <{ndr_id}@{DOMAIN}>",
        f"X-Xcon-Msg-Id: {ndr_id}",
        f"X-Xcon-Ndr-For: {original_msg_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a delivery status notification (RFC 3464).",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *explanation,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        *([f"Original-Envelope-Id: {_one_line(dsn['envid'])[:100]}"] if dsn["envid"] else []),
        f"Reporting-MTA: dns; {reporting_server}.{DOMAIN}",
        f"X-Xcon-Original-Msg-Id: {original_msg_id}",
        f"Arrival-Date: {_date_at(arrival)}",
        *blocks,
        "",
        f"--{boundary}",
        *_returned(original, dsn["ret"]),
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def _returned(original: bytes, ret: str | None) -> list[str]:
    """The NDR's last part: the whole message where RET=FULL (RFC 3461) asked and it is small,
    its headers otherwise."""
    if (ret or "").upper() == "FULL" and len(original) <= RET_FULL_MAX:
        return ["Content-Type: message/rfc822", "", original.decode("utf-8", "replace").rstrip("\r\n")]
    return ["Content-Type: text/rfc822-headers", "", quoted_headers(original)]


def _failed_rcpt(rcpt: str, failure: Failure, orcpt: str | None, now: float, trailer: str) -> tuple[list[str], list[str]]:
    """A failed recipient's lines in an NDR: in its human-readable part (5.5's wording and its
    MSEXCH trailer), and its per-recipient block of the delivery-status part (RFC 3464 2.3)."""
    said = [f"      {address(rcpt)} on {_date_at(now)}", f"            {failure.text}", f"            {trailer}", ""]
    block = [
        "",
        *([f"Original-Recipient: {_one_line(orcpt)[:500]}"] if orcpt else []),
        f"Final-Recipient: rfc822; {address(rcpt)}",
        "Action: failed",
        f"Status: {failure.status}",
        f"Diagnostic-Code: X-Exchange-MTA; {failure.text}",
        f"X-X400-Reason-Code: {failure.reason[0]} ({failure.reason[1]})",
        f"X-X400-Diagnostic-Code: {failure.diagnostic[0]} ({failure.diagnostic[1]})",
        f"Last-Attempt-Date: {_date_at(now)}",
    ]
    return said, block


def compose_postmaster(pm_id: str, reporting_server: str, report: bytes, report_id: str, original_msg_id: str,
                       addressee: str, reason: str, now: float, site: str = DEFAULT_SITE) -> bytes:
    """The copy of a report that could not reach its addressee, for the postmaster mailbox (a
    double bounce, as Postfix sends one to the postmaster and Exchange copied NDRs to an
    administrator's mailbox): a line saying why, and the report itself attached (bounded, since a
    report is)."""
    boundary = f"=_xcon_pm_{_token(pm_id)}"
    failure = STATUS[reason]
    lines = [
        f"From: Mail Delivery System <postmaster@{reporting_server}.{DOMAIN}>",
        f"To: {address(POSTMASTER)}",
        f"Subject: Undeliverable report for {address(addressee)}: {_quoted_subject(report)}",
        f"Date: {_date_at(now)}",
        f"Message-ID: <{pm_id}@{DOMAIN}>",
        f"X-Xcon-Msg-Id: {pm_id}",
        f"X-Xcon-Report-Id: {report_id}",
        f"X-Xcon-Ndr-For: {original_msg_id}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"A delivery report for {address(addressee)} could not be delivered: {failure.text} ({failure.status}).",
        "It is attached. Nobody else has it: the originator of the message it reports on does not know.",
        "",
        f"      MSEXCH:MSExchangeMTA:{site}:{reporting_server.upper()}",
        "",
        f"--{boundary}",
        "Content-Type: message/rfc822",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8") + report + f"\r\n--{boundary}--\r\n".encode()


def quoted_headers(original: bytes) -> str:
    """The original's headers as a report quotes them: each line cut to RFC 5322's 998 characters,
    and no more than QUOTED_HEADER_BYTES in all, with a line that says what was cut."""
    head = original.split(b"\r\n\r\n", 1)[0]
    if len(head) <= QUOTED_HEADER_BYTES and all(len(line) <= MAX_LINE for line in head.split(b"\r\n")):
        return head.decode("utf-8", "replace")
    kept: list[str] = []
    size = 0
    for line in head.split(b"\r\n"):
        text = line.decode("utf-8", "replace")
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE - 3] + "..."
        if size + len(text) > QUOTED_HEADER_BYTES:
            break
        kept.append(text)
        size += len(text) + 2
    kept.append(f"X-Xcon-Truncated: the headers were {len(head)} bytes; long lines and the rest are cut")
    return "\r\n".join(kept)


def _quoted_subject(original: bytes) -> str:
    subject = _one_line(_header(original[:QUOTED_HEADER_BYTES * 2], "Subject") or "")
    return subject if len(subject) <= QUOTED_SUBJECT_CHARS else subject[:QUOTED_SUBJECT_CHARS] + "..."


def _token(msg_id: str) -> str:
    """A short, stable token for a MIME boundary from an id of up to 230 characters."""
    return hashlib.blake2b(msg_id.encode(), digest_size=8).hexdigest()


def summarize(raw: bytes) -> dict[str, Any]:
    """What `xcon mailbox` shows of a message; an NDR is recognised by its RFC 3464 structure, a
    postmaster copy by the report id it carries (`report_id`), with the recipients its report names."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    summary: dict[str, Any] = {
        "msg_id": header(msg, "X-Xcon-Msg-Id", ""),
        "from": alias_of(header(msg, "From", "")),
        "subject": header(msg, "Subject", ""),
        "ndr": False,
        "ndr_for": None,
        "failed": [],
        "priority": header(msg, "Priority", "normal").strip().lower() or "normal",
    }
    report = msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    if msg.get("X-Xcon-Report-Id"):  # a postmaster copy: a report that could not reach its addressee
        summary["report_id"] = header(msg, "X-Xcon-Report-Id")
    if report or "report_id" in summary:
        summary["ndr"] = report
        summary["ndr_for"] = header(msg, "X-Xcon-Ndr-For")
        for part in msg.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in part.get_payload():  # the parser yields one Message per field group
                if block.get("Final-Recipient") and header(block, "Action", "").strip().lower() == "failed":
                    summary["failed"].append(alias_of(header(block, "Final-Recipient")))
    return summary


def message_id_of(raw: bytes) -> str | None:
    """A message's Message-ID header, as its client gave it (what Dovecot's log names it by)."""
    found = _header(raw[:QUOTED_HEADER_BYTES * 2], "Message-ID")
    return found.strip()[:998] if found else None


def _header(raw: bytes, name: str) -> str | None:
    """The first `name` header of a message's header block, its folded lines joined by CRLF, as
    the email package reads it (compat32). A plain block (ASCII, CRLF line ends, each line a
    header or the fold of one) is read here; anything else by the email package itself, whose
    parse of the block was 3% of a simulated trial (an NDR quotes its original's subject)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.decode("ascii").split("\r\n") if head.isascii() else None
    if lines and all(_PLAIN_LINE.fullmatch(line) for line in lines):
        want, found = name.lower(), None
        for line in lines:
            if line[0] in " \t":
                if found is not None:
                    found.append(line)
            elif found is not None:
                break
            elif line[:line.index(":")].lower() == want:
                found = [line[line.index(":") + 1:].lstrip(" \t")]
        return "\r\n".join(found).rstrip("\r\n") if found is not None else None
    msg = email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.compat32)
    return header(msg, name)


# a header line the fast path of _header reads: a name (the email package's characters, at least
# one) and a colon, or the fold of the line before, and no CR or LF alone (the email package ends
# a line there too); "From " starts an mbox line, not a header
_PLAIN_LINE = re.compile(r"(?:(?!From )[\x21-\x39\x3b-\x7e]+:|[ \t])[^\r\n]*")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def text_of(value: Any) -> Any:
    """A header's value as text. The email package (compat32) gives a header whose bytes are not
    ASCII (UTF-8, as an SMTPUTF8 client sends it) as a Header object, not a str: read as UTF-8
    here, so no reader meets a value it cannot strip or split (a Subject in UTF-8 once made the
    MTA's NDR crash the MTA)."""
    if value is None or isinstance(value, str):
        return value
    return "".join(part.decode("utf-8", "replace") if isinstance(part, bytes) else part
                   for part, _ in email.header.decode_header(value))


def header(msg: Any, name: str, default: Any = None) -> Any:
    """The first `name` header of a parsed message as text (text_of), or `default`."""
    value = msg.get(name)
    return default if value is None else text_of(value)
