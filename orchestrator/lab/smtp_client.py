"""A mail client of the organisation over SMTP, as campaigns use it (`xcon chaos --via smtp`): a
message from an alias to aliases, submitted to the IMS of the sender's server (nodes.ims).

On a simulated cluster the client asks the IMS's core what its SMTP door would ask it (ims.rcpt,
then ims.data: nodes.ims.core): the same decisions, without aiosmtpd's parsing of the session."""

from __future__ import annotations

import hashlib
import smtplib
import uuid
from email.utils import formatdate
from typing import Any

from nodes.mail import DOMAIN
from orchestrator.cluster.client import ClusterError

CLIENT_PEER = "('127.0.0.1', 0)"  # where a simulated client connects from, as aiosmtpd names a peer
X_PRIORITY = {"urgent": "1", "normal": "3", "non-urgent": "5"}


class NotTold(ClusterError):
    """The client was not told 250: the message is the client's (the MTA may have it anyway)."""


def submit(cluster: Any, sender: str, to: list[str], subject: str, priority: str | None = None,
           timeout: float = 10.0, server: str | None = None) -> str:
    """The IMS's message id, once it said 250; NotTold otherwise (a refusal, a lost session). A
    user sends to its own server's IMS; an outside sender (an address, UTF-8 ones with SMTPUTF8)
    to `server`'s, as the MX its DNS named."""
    if server is None:
        entry = cluster.lookup(sender)
        if entry is None:
            raise NotTold(f"unknown user '{sender}'")
        server = entry["home_server"]
    node = f"ims.{server}"
    address = sender if "@" in sender else f"{sender}@{DOMAIN}"
    simulated = hasattr(cluster, "world")
    now = cluster.clock.now()
    # a Message-ID of its own, as a real client's: the IMS knows a resend by it, and two messages
    # of the same text apart (a simulated client's from the virtual time: the same in every replay)
    unique = hashlib.sha256(f"{now!r}\0{address}".encode()).hexdigest()[:32] if simulated else uuid.uuid4().hex
    head = [f"From: {address}", f"To: {', '.join(f'{r}@{DOMAIN}' for r in to)}",
            f"Message-ID: <{unique}@client.{DOMAIN}>", f"Date: {formatdate(now)}",
            f"Subject: {subject}", f"X-Priority: {X_PRIORITY[priority or 'normal']}"]
    raw = ("\r\n".join(head) + "\r\n\r\nchaos\r\n").encode()
    if simulated:
        return _simulated(cluster, node, address, to, raw, timeout)
    host, _, port = cluster.config.endpoint(node, "smtp").rpartition(":")
    try:
        with smtplib.SMTP(host, int(port), timeout=timeout) as client:
            client.ehlo("client.xcon.test")
            client.mail(address, ["SMTPUTF8"] if not address.isascii() else [])
            for rcpt in to:
                code, said = client.rcpt(f"{rcpt}@{DOMAIN}")
                if code != 250:
                    raise NotTold(f"{node}: RCPT {rcpt}: {code} {said.decode(errors='replace')}")
            code, said = client.data(raw)
    except (OSError, smtplib.SMTPException) as exc:
        raise NotTold(f"{node}: {type(exc).__name__}: {exc}") from None
    if code != 250:
        raise NotTold(f"{node}: {code} {said.decode(errors='replace')}")
    return said.decode().rsplit(" ", 1)[1]


def _simulated(cluster: Any, node: str, address: str, to: list[str], raw: bytes, timeout: float) -> str:
    """The session on a simulated cluster: RCPT and DATA asked of the IMS's core, as its door asks."""
    if not cluster.alive(node):
        raise NotTold(f"{node}: ConnectionRefusedError: [Errno 111] Connection refused")

    def said(type_: str, body: dict[str, Any]) -> Any:
        try:
            answer = cluster.client.ask(node, type_, body, timeout=timeout)
        except ClusterError as exc:  # paused, or killed in the session: the client's time-out
            raise NotTold(f"{node}: TimeoutError: {exc}") from None
        if answer.type != "ims.said":
            raise NotTold(f"{node}: {answer.type}: {getattr(answer.body, 'reason', '')}")
        return answer.body

    rcpts = [f"{r}@{DOMAIN}" for r in to]
    for rcpt in rcpts:
        answer = said("ims.rcpt", {"address": rcpt, "peer": CLIENT_PEER})
        if answer.code != 250:
            raise NotTold(f"{node}: RCPT {rcpt}: {answer.code} {answer.text}")
    answer = said("ims.data", {"mail_from": address, "rcpts": rcpts, "raw": raw, "helo": "client.xcon.test",
                               "peer": CLIENT_PEER, "peer_ip": "127.0.0.1", "dsn_mail": [], "dsn_rcpt": {}})
    if answer.code != 250:
        raise NotTold(f"{node}: {answer.code} {answer.text}")
    return answer.msg_id


def told_but_not_accepted(told: list[str], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a client was told 250 for that no MTA logged as accepted: lost, whatever the
    pairs say (a pair exists only once an MTA accepted it)."""
    accepted = {e.get("msg_id") for e in events if e["event"] == "mta.accepted"}
    return [{"msg_id": m, "rcpt": "*", "sender": "", "alt_of": None, "outcome": "lost",
             "why": "the client was told 250 and no MTA logged the message as accepted", "last_events": [],
             "removed_by": []} for m in told if m not in accepted]


__all__ = ["NotTold", "submit", "told_but_not_accepted"]
