"""A mail client of the organisation over SMTP, as campaigns use it (`xcon chaos --via smtp`): a
message from an alias to aliases, submitted to the IMS of the sender's server (nodes.ims)."""

from __future__ import annotations

import smtplib
import uuid
from email.utils import formatdate
from typing import Any

from nodes.mail import DOMAIN
from orchestrator.cluster.client import ClusterError

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
    host, _, port = cluster.config.endpoint(node, "smtp").rpartition(":")
    address = sender if "@" in sender else f"{sender}@{DOMAIN}"
    # a Message-ID of its own, as a real client's: the IMS knows a resend by it, and two messages
    # of the same text apart
    head = [f"From: {address}", f"To: {', '.join(f'{r}@{DOMAIN}' for r in to)}",
            f"Message-ID: <{uuid.uuid4().hex}@client.{DOMAIN}>", f"Date: {formatdate()}",
            f"Subject: {subject}", f"X-Priority: {X_PRIORITY[priority or 'normal']}"]
    raw = ("\r\n".join(head) + "\r\n\r\nchaos\r\n").encode()
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


def told_but_not_accepted(told: list[str], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a client was told 250 for that no MTA logged as accepted: lost, whatever the
    pairs say (a pair exists only once an MTA accepted it)."""
    accepted = {e.get("msg_id") for e in events if e["event"] == "mta.accepted"}
    return [{"msg_id": m, "rcpt": "*", "sender": "", "alt_of": None, "outcome": "lost",
             "why": "the client was told 250 and no MTA logged the message as accepted", "last_events": [],
             "removed_by": []} for m in told if m not in accepted]


__all__ = ["NotTold", "submit", "told_but_not_accepted"]
