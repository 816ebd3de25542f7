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
(5xx), or their lifetime over. A report leaves with the null reverse-path (MAIL FROM:<>).

What is decided, in and out, is the core's (nodes.ims.core), which the simulator runs too; this
module is its shell: aiosmtpd's server, whose hooks ask the core (EdgeNode.ask_core), and the
relay's SMTP client, in a thread per item (nodes.ims.relay). The node answers ping, status and
the faults as every node does (nodes.edge), logs to logs/ims.<server>.jsonl with a hybrid logical
clock, and its frames carry the message id as their trace, so `xcon trace` follows a message in
from SMTP and a DSN out to the smarthost.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import uuid
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from protocol.messages import ImsSaid

from ..config import ClusterConfig
from ..edge import EdgeNode
from ..host import Wiring, node_seed
from ..mail import DOMAIN, alias_of, external
from . import core
from .outbound import Outbound
from .relay import attempt
from .smtp import DsnSMTP, login_alias


class Ims(EdgeNode):
    kind = "ims"

    def __init__(self, name: str, config: ClusterConfig):
        super().__init__(name, config, peer=f"mta.{config.nodes[name]['server']}")
        self.mta = self.peer
        self.smarthost = config.smarthost()
        self.settings = config.node_settings(name)  # read once: its core's, TLS and AUTH

    def wiring(self) -> Wiring:
        cluster, settings = self.config.settings, self.settings
        queue = Outbound(self.config.run_dir / "ims" / self.server, cluster.fsync, core.lifetime(settings))
        wiring = core.wiring(self.server, settings, uuid.uuid4().hex[:6], node_seed(cluster.seed, self.name),
                             self.smarthost, queue, self._relay)
        wiring.core.ready = False  # until the SMTP server listens
        wiring.stats = lambda: {"smtp": self.config.endpoint(self.name, "smtp")}
        return wiring

    async def start(self) -> list:
        host, _, port = self.config.endpoint(self.name, "smtp").rpartition(":")
        settings = self.settings
        tls = None
        if settings.smtp_tls:  # STARTTLS, with the certificate `xcon up --smtp-tls` made
            keys = self.config.run_dir / "keys"
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(keys / "ims.crt", keys / "ims.key")
        options: dict[str, Any] = {"tls_context": tls, "auth_require_tls": tls is not None}
        if settings.smtp_auth:
            options["authenticator"] = self.authenticate
        try:
            self.smtp = await asyncio.get_running_loop().create_server(
                lambda: DsnSMTP(Handler(self), self, enable_SMTPUTF8=True, hostname=f"{self.name}.{DOMAIN}",
                                ident="xcon IMS", **options), host, int(port))
        except OSError as exc:  # a port another program took: in the words `xcon up` moves the ports on
            raise RuntimeError(f"cannot bind {host}:{port}: {exc.strerror}") from None
        self.host.core.ready = True
        self.log("info", "node.started", pid=os.getpid(), endpoint=self.config.endpoint(self.name),
                 smtp=f"{host}:{port}", smarthost=self.smarthost or None, outbound=len(self.host.core.items))
        return []

    def _relay(self, action: core.Relay) -> None:
        """The core's Relay: tried in a thread; its answer goes back to the core as Relayed."""
        async def relay() -> None:
            code, words = await asyncio.to_thread(attempt, action.smarthost, self.name, action.mail_from,
                                                  action.rcpt, action.raw)
            self.host.event(core.Relayed(action.key, code, words), time.time())
            await self.ship()

        self.spawn(relay())

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


class Handler:
    """aiosmtpd's hooks: RCPT and DATA, answered with what the MTA says."""

    def __init__(self, ims: Ims):
        self.ims = ims

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not self.ims.settings.smtp_auth:  # no logins here: AUTH is not offered
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
            if self.ims.settings.smtp_auth and session.auth_data != sender:
                self.ims.log("warning", "ims.refused", sender=addr[:200], code=530, peer=str(session.peer),
                             reason="an organisation sender without its AUTH")
                return "530 5.7.0 Authentication required to send as a user of this organisation"
        envelope.mail_from = addr
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, addr: str,
                          options: list[str]) -> str:
        said = await self._ask("ims.rcpt", {"address": addr, "peer": str(session.peer)})
        if said.code == 250:
            envelope.rcpt_tos.append(addr)
            server.dsn_rcpt[addr.rpartition("@")[0].lower()] = server.dsn_pending  # type: ignore[attr-defined]
        return f"{said.code} {said.text}"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        said = await self._ask("ims.data", {
            "mail_from": envelope.mail_from or "", "rcpts": list(envelope.rcpt_tos),
            "raw": envelope.original_content or b"", "helo": session.host_name or "", "peer": str(session.peer),
            "peer_ip": str(session.peer[0]) if session.peer else "", "dsn_mail": getattr(server, "dsn_mail", []),
            "dsn_rcpt": getattr(server, "dsn_rcpt", {})})
        if said.cut:  # the MTA has it; the client will not hear so (fault.smtp)
            server.transport.abort()
        return f"{said.code} {said.text}"

    async def _ask(self, type_: str, body: dict[str, Any]) -> Any:
        try:
            return (await self.ims.ask_core(type_, body)).body
        except TimeoutError:  # the core always answers first; this is a bug's answer, not a hang's
            return ImsSaid(451, "4.3.0 the IMS did not decide in time; try again later")
