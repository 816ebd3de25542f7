"""The Internet Mail Service of one server (Exchange 5.5's IMS: its SMTP connector), a node of its
own: `ims.<server>`, started by `xcon up --smtp`.

In: an SMTP server (aiosmtpd) for the organisation's recipients. RCPT asks this server's MTA
whether its directory cache knows the recipient (550 5.1.1 if not); DATA hands the client's bytes
to the MTA (mta.submit_raw) and says 250 only once the MTA has the message durably: a kill
before the 250 leaves the client to send again (the message id is derived from the sender, the
recipients and the client's Message-ID, so the MTA takes a resend once; a message without a
Message-ID gets a new id each time), a kill after it loses nothing. A refusal for the MTA's state
(busy, disk) is 452 4.3.1; a message over SIZE (the limit less the headers this server adds) 552
5.3.4; malformed commands get SMTP's own errors from aiosmtpd, and this door's rules are
nodes.ims.smtp's (EHLO's argument, AUTH, each RFC 3461 parameter checked and taken once).
RFC 3461's parameters (RET and ENVID for the transaction, NOTIFY and ORCPT per recipient) are
carried above the client's message (X-Xcon-DSN, X-Xcon-DSN-Rcpt),
where the MTA that reports reads them (nodes.mail.dsn_of): NOTIFY=NEVER, or a NOTIFY without
FAILURE, means no DSN for that recipient's failure (`xcon check` counts it `declined`); ENVID and
ORCPT come back in the DSN; RET=FULL returns a message of up to 64 KiB whole.

Out: messages the MTA hands over (ims.outbound: an NDR to an outside originator, as an RFC 3464
DSN, or mail to an outside address) are queued on disk (nodes.ims.outbound) before the MTA hears
"ok", then relayed to the smarthost (`--smarthost HOST:PORT`) and retried on the MTA's transfer
interval until it takes them, or handed back to the MTA when they will not leave: refused for good
(5xx), or their lifetime over (nodes.ims.relay). A report leaves with the null reverse-path
(MAIL FROM:<>).

The node answers ping and status on its ROUTER like any node, logs to logs/ims.<server>.jsonl with
a hybrid logical clock, and its frames carry the message id as their trace, so `xcon trace`
follows a message in from SMTP and a DSN out to the smarthost.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.utils
import hashlib
import os
import random
import ssl
import time
import uuid
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from protocol import INVALID, MAX_MESSAGE_BYTES, as_dict

from ..config import ClusterConfig
from ..edge import EdgeNode
from ..host import node_seed
from ..mail import DOMAIN, alias_of, external, header
from .outbound import Outbound
from .relay import Relay
from .smtp import TOO_BIG, DsnSMTP, login_alias


class Ims(EdgeNode):
    kind = "ims"

    def __init__(self, name: str, config: ClusterConfig):
        super().__init__(name, config, peer=f"mta.{config.nodes[name]['server']}")
        self.mta = self.peer
        settings = config.settings
        self.smarthost = config.smarthost()
        self.retry_s = (settings.transfer_retry_ms if settings.transfer_retry_ms is not None
                        else settings.retry_ms) / 1000
        self.outbound = Outbound(config.run_dir / "ims" / self.server, settings.fsync, self._lifetime)
        self.relay = Relay(self, self.outbound, self.smarthost, self.retry_s)
        self.accepted = self.refused = 0
        self.session_fault: dict[str, Any] | None = None  # fault.smtp: {"cut", "delay_ms", "until"}
        self.rng = random.Random(node_seed(config.settings.seed, name))  # which sessions a fault.smtp cuts

    async def start(self) -> list:
        host, _, port = self.config.endpoint(self.name, "smtp").rpartition(":")
        settings = self.config.settings
        tls = None
        if settings.smtp_tls:  # STARTTLS, with the certificate `xcon up --smtp-tls` made
            keys = self.config.run_dir / "keys"
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(keys / "ims.crt", keys / "ims.key")
        options: dict[str, Any] = {"tls_context": tls, "auth_require_tls": tls is not None}
        if settings.smtp_auth:
            options["authenticator"] = self.authenticate
        self.smtp = await asyncio.get_running_loop().create_server(
            lambda: DsnSMTP(Handler(self), self, enable_SMTPUTF8=True, hostname=f"{self.name}.{DOMAIN}",
                            ident="xcon IMS", **options), host, int(port))
        if self.outbound.damage is not None:  # kept aside by the queue's load (nodes.ims.outbound)
            self.log("error", "storage.damaged", **self.outbound.damage,
                     why="damage in the IMS's queue: every file and line that reads was taken up; the messages in "
                         "`lost` lost their item or its end here")
        self.log("info", "node.started", pid=os.getpid(), endpoint=self.config.endpoint(self.name),
                 smtp=f"{host}:{port}", smarthost=self.smarthost or None, outbound=len(self.outbound.items))
        return [self.relay.run()]

    def _lifetime(self, record: dict[str, Any]) -> float:
        """How long an item from before items carried their own lifetime may wait: a report's
        time-out, or the message's (nodes.mta.reports._expires_at)."""
        settings = self.config.settings
        return settings.report_expire_s() if record["ndr_for"] else settings.expire_s(record.get("priority", "normal"))

    async def stop(self) -> None:
        if getattr(self, "smtp", None) is not None:
            self.smtp.close()

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        """AUTH PLAIN or LOGIN: an organisation user's alias (or address), its password its alias
        (a lab's, as IMAP's); whether the directory has that user is asked next (DsnSMTP._known)."""
        user = login_alias(getattr(data, "login", b"") or b"")
        ok = user is not None and (getattr(data, "password", b"") or b"") == user.encode()
        if not ok:
            self.log("warning", "ims.auth", user=(getattr(data, "login", b"") or b"")[:64].decode(errors="replace"),
                     mechanism=mechanism, ok=False, why="wrong login or password")
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def clear_faults(self) -> None:
        self.session_fault = None

    def _fault(self) -> dict[str, Any] | None:
        if self.session_fault is not None and time.time() >= self.session_fault["until"]:
            self.session_fault = None
        return self.session_fault

    async def slow(self) -> None:
        """A reply late by the fault's delay, if a fault.smtp is in force."""
        fault = self._fault()
        if fault and fault["delay_ms"]:
            await asyncio.sleep(fault["delay_ms"] / 1000)

    def cut(self) -> bool:
        fault = self._fault()
        return bool(fault) and self.rng.random() < fault["cut"]

    def answer(self, frame: Any) -> tuple[str, dict[str, Any]] | None:
        if frame.type == "fault.smtp":
            self.session_fault = {"cut": frame.body.cut, "delay_ms": frame.body.delay_ms,
                                  "until": time.time() + frame.body.seconds}
            self.log("warning", "fault.applied", type=frame.type, by=frame.src, **as_dict(frame.body))
            return "ok", {}
        if frame.type != "ims.outbound":
            return None
        item, new = self.outbound.put(frame.body, time.time())
        if new:
            self.log("info", "ims.queued_out", msg_id=frame.body.msg_id, rcpt=frame.body.rcpt,
                     ndr_for=frame.body.ndr_for, src=frame.src,
                     expires_in_ms=int((frame.body.expires_at - time.time()) * 1000))
            self.relay.wake.set()
        return "ok", {}

    def status(self) -> dict[str, Any]:
        items = sorted(self.outbound.items.values(), key=lambda i: i.queued_at)
        fault = self._fault()
        return {**({"faults": {"smtp": fault}} if fault else {}), "smtp": self.config.endpoint(self.name, "smtp"),
                "smarthost": self.smarthost or None, "accepted": self.accepted, "refused": self.refused,
                "outbound": len(items),
                "relayed": len(self.outbound.relayed),
                "returned": len(self.outbound.returned),
                "queue": [{"msg_id": i.msg_id, "rcpt": i.rcpt, "attempts": i.attempts,
                           "state": "returning" if i.failed else "relaying", "reason": i.failed or i.reason,
                           "expires_in_s": round(i.expires_at - time.time(), 3)} for i in items[:20]]}

class Handler:
    """aiosmtpd's hooks: RCPT and DATA, answered with what the MTA says."""

    def __init__(self, ims: Ims):
        self.ims = ims

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not self.ims.config.settings.smtp_auth:  # no logins here: AUTH is not offered
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return [*responses[:-1], "250-DSN", responses[-1]] if responses else responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, addr: str,
                          options: list[str]) -> str:
        # with --smtp-auth, only an authenticated user may claim an organisation address (and only
        # its own), with its domain or without one (`MAIL FROM:<alice>` is alice's, as a local part
        # is myorigin's in Postfix); mail from outside needs no AUTH, as an MX's does not
        sender = alias_of(addr)
        if not external(sender):
            sender = sender.lower()
            if self.ims.config.settings.smtp_auth and session.auth_data != sender:
                self.ims.log("warning", "ims.refused", sender=addr[:200], code=530, peer=str(session.peer),
                             reason="an organisation sender without its AUTH")
                return "530 5.7.0 Authentication required to send as a user of this organisation"
        envelope.mail_from = addr
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, addr: str,
                          options: list[str]) -> str:
        await self.ims.slow()
        local, _, domain = addr.rpartition("@")
        if domain.lower() != DOMAIN:
            return f"550 5.7.1 <{addr}>: relaying denied (this server takes mail for {DOMAIN} only)"
        try:
            answer = await self.ims.ask("mta.lookup", {"alias": local.lower()})
        except TimeoutError:
            return f"451 4.4.1 {self.ims.mta} did not answer; try again later"
        if answer.type == "error":
            return f"451 4.3.0 {answer.body.reason}"
        if answer.body.recipient is None:
            self.ims.refused += 1
            self.ims.log("warning", "ims.rcpt_refused", rcpt=addr, reason="unknown user", peer=str(session.peer))
            return f"550 5.1.1 <{addr}>: unknown user (not in {self.ims.mta}'s directory cache)"
        envelope.rcpt_tos.append(addr)
        server.dsn_rcpt[local.lower()] = server.dsn_pending  # type: ignore[attr-defined]
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        rcpts = [r.rpartition("@")[0].lower() for r in envelope.rcpt_tos]
        # the null reverse-path (a bounce from outside): no report is ever sent to it; if this
        # message fails, its report goes to the postmaster mailbox (nodes.mta.reports)
        sender = "" if envelope.mail_from in (None, "", "<>") else alias_of(envelope.mail_from)
        if sender and not external(sender):  # one of the organisation's users, submitting: its alias
            sender = sender.lower()
        headers = email.parser.BytesHeaderParser().parsebytes(raw)
        # a message sent again (its client never heard our 250) is known by its Message-ID, which
        # a client keeps for a resend and makes new for a new message; without one, every DATA is
        # a new message (two messages of the same bytes are two messages: a chaos campaign found
        # the same bytes sent twice, by a user before and after her move, taken as one id by two
        # MTAs, one delivering it and the other reporting it)
        client_id = header(headers, "Message-ID", "").strip()
        key = [sender, *envelope.rcpt_tos, client_id] if client_id else [uuid.uuid4().hex]
        msg_id = f"smtp-{hashlib.sha256(chr(0).join(key).encode()).hexdigest()[:24]}"
        dsn_mail: list[str] = getattr(server, "dsn_mail", [])
        dsn_rcpt: dict[str, list[str]] = getattr(server, "dsn_rcpt", {})
        added = [f"Received: from {session.host_name or 'unknown'} ({session.peer[0] if session.peer else '?'}) "
                 f"by {self.ims.name}.{DOMAIN} with ESMTP id {msg_id}; {email.utils.formatdate()}",
                 f"X-Xcon-Msg-Id: {msg_id}"]
        if headers.get("Message-ID") is None:
            added.append(f"Message-ID: <{msg_id}@{DOMAIN}>")
        # RFC 3461's parameters, for the MTA that reports (nodes.mail.dsn_of): the transaction's,
        # then each recipient's that has any
        if dsn_mail:
            added.append(f"X-Xcon-DSN: {' '.join(dsn_mail)}")
        added += [f"X-Xcon-DSN-Rcpt: {alias} {' '.join(params)}" for alias, params in dsn_rcpt.items()
                  if params and alias in rcpts]
        raw = ("\r\n".join(added) + "\r\n").encode() + raw
        if len(raw) > MAX_MESSAGE_BYTES:  # what SIZE promised is measured with the headers added
            self.ims.log("warning", "ims.refused", msg_id=msg_id, reason="over the size limit", code=552, size=len(raw))
            return TOO_BIG
        try:
            answer = await self.ims.ask("mta.submit_raw", {"msg_id": msg_id, "sender": sender, "recipients": rcpts,
                                                           "raw": raw, "priority": priority(headers)}, trace=msg_id)
        except TimeoutError:
            self.ims.log("warning", "ims.refused", msg_id=msg_id, reason=f"{self.ims.mta} did not answer", code=451)
            return f"451 4.4.1 {self.ims.mta} did not answer; send it again later"
        await self.ims.slow()
        if answer.type != "error" and self.ims.cut():
            # the MTA has it; the client will not hear so (the window a resend must not double)
            self.ims.log("warning", "ims.cut", msg_id=msg_id, peer=str(session.peer), why="fault.smtp")
            server.transport.abort()
            return "421 4.4.2 cut"
        if answer.type == "error":
            code = "554 5.6.0" if answer.body.code == INVALID else "452 4.3.1"
            self.ims.log("warning", "ims.refused", msg_id=msg_id, reason=answer.body.reason, code=int(code[:3]))
            return f"{code} {answer.body.reason}"
        self.ims.accepted += 1
        self.ims.log("info", "ims.accepted", msg_id=msg_id, sender=sender, rcpts=answer.body.rcpts,
                     peer=str(session.peer), size=len(raw), message_id=client_id[:998] or None)
        return f"250 2.0.0 Ok: queued as {msg_id}"


def priority(headers: Any) -> str:
    """xcon's priority from X-Priority (1-2 urgent, 4-5 non-urgent) or Importance (high, low)."""
    x = header(headers, "X-Priority", "").strip()[:1]
    importance = header(headers, "Importance", "").strip().lower()
    if x in ("1", "2") or importance == "high":
        return "urgent"
    if x in ("4", "5") or importance == "low":
        return "non-urgent"
    return "normal"
