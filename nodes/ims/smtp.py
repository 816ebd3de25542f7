"""The IMS's SMTP session: aiosmtpd's server with the rules of this door.

- RFC 3461's parameters (RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT) are taken for the
  transaction, each checked as the RFC writes it and each at most once: a bad or repeated one is
  `501 5.5.4`, never taken (a NOTIFY=GARBAGE once suppressed the report silently);
- EHLO's and HELO's argument is a domain or an address literal: no CR, LF, space or control
  character reaches the Received header this server writes (`EHLO foo\\rX-Injected: yes` once did);
- AUTH is offered only with `--smtp-auth`, and admits only the directory's users (a lab's
  password: the alias), never `postmaster` (the IMS asks its MTA, whose cache knows the users);
- SIZE says what this server takes with the headers it adds (`HEADROOM`); above it, `552 5.3.4`.
"""

from __future__ import annotations

import re
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult

from protocol import MAX_MESSAGE_BYTES
from protocol.names import POSTMASTER, valid_alias

from ..mail import alias_of

# what the IMS adds above a client's message (Received, its ids, the DSN parameters), at most in
# the common case: SIZE is the message limit less this. A message whose added headers are longer
# still (hundreds of recipients with long ORCPTs) is measured whole and refused 552 5.3.4 too.
HEADROOM = 64 * 1024
MAX_SIZE = MAX_MESSAGE_BYTES - HEADROOM
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"

MAIL_PARAMS = ("RET", "ENVID")
RCPT_PARAMS = ("NOTIFY", "ORCPT")
NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# RFC 3461 4: xtext is "!" to "~" but "+" and "=", and "+" with two upper-case hex digits
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# a domain, or an address literal ([192.0.2.1], [IPv6:...]): what EHLO and HELO may name
_HELO = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9_])?|\[[A-Za-z0-9:.]{1,60}\])")


class BadParameter(ValueError):
    """A parameter RFC 3461 does not allow; str(err) is the 501's text."""


def take_dsn(arg: str | None, names: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """Split a MAIL or RCPT argument into what aiosmtpd parses and RFC 3461's parameters `names`,
    each checked (BadParameter says what is wrong with the first bad or repeated one)."""
    if not arg:
        return arg, []
    kept, taken, seen = [], [], set()
    for word in arg.split():
        name, eq, value = word.partition("=")
        name = name.upper()
        if name not in names:
            kept.append(word)
            continue
        if name in seen:
            raise BadParameter(f"{name} given twice")
        seen.add(name)
        if not eq:
            raise BadParameter(f"{name} needs a value")
        check = {"RET": _ret, "ENVID": _envid, "NOTIFY": _notify, "ORCPT": _orcpt}[name]
        taken.append(f"{name}={check(value)}")
    return " ".join(kept), taken


def _ret(value: str) -> str:
    if value.upper() not in ("FULL", "HDRS"):
        raise BadParameter("RET takes FULL or HDRS")
    return value.upper()


def _envid(value: str) -> str:
    if not _XTEXT.fullmatch(value) or len(value) > 100:
        raise BadParameter("ENVID takes xtext of up to 100 characters (RFC 3461 4.4)")
    return value


def _notify(value: str) -> str:
    words = value.upper().split(",")
    if words == ["NEVER"]:
        return "NEVER"
    if len(set(words)) != len(words) or not set(words) <= NOTIFY_WORDS:
        raise BadParameter("NOTIFY takes NEVER, or SUCCESS, FAILURE and DELAY, each at most once (RFC 3461 4.1)")
    return ",".join(words)


def _orcpt(value: str) -> str:
    kind, semi, address = value.partition(";")
    if not semi or not _ADDR_TYPE.fullmatch(kind) or not _XTEXT.fullmatch(address) or len(value) > 500:
        raise BadParameter("ORCPT takes addr-type;xtext (RFC 3461 4.2)")
    return value


def valid_helo(name: str) -> bool:
    """Whether EHLO's or HELO's argument may go into a header: a domain or an address literal."""
    return bool(_HELO.fullmatch(name))


def login_alias(login: bytes) -> str | None:
    """The organisation's alias a login names (`alice` or `alice@xcon.test`), or None."""
    try:
        text = login.decode()
    except UnicodeDecodeError:
        return None
    alias = alias_of(text).lower()
    return alias if valid_alias(alias) and alias != POSTMASTER else None


class DsnSMTP(SMTP):
    """aiosmtpd's server, which refuses every MAIL and RCPT parameter it does not know: here it
    takes RFC 3461's for the transaction and passes the rest on, and holds the session to this
    door's rules (the module's docstring). `ims` is the node (nodes.ims.node.Ims), asked whether
    a login is one of the directory's users."""

    dsn_mail: list[str]
    dsn_rcpt: dict[str, list[str]]  # an accepted recipient's alias -> its parameters
    dsn_pending: list[str]  # the parameters of the RCPT being answered

    def __init__(self, handler: Any, ims: Any, **kwargs: Any):
        self.ims = ims
        super().__init__(handler, data_size_limit=MAX_SIZE, **kwargs)

    async def push(self, status: str) -> None:
        if status.startswith("552 Error"):  # aiosmtpd's words for a message over SIZE, with RFC 3463's code
            status = TOO_BIG
        await super().push(status)

    async def smtp_HELO(self, hostname: str) -> None:
        if hostname and not valid_helo(hostname):
            await self.push("501 5.5.4 Syntax: HELO hostname (a domain or an address literal)")
            return
        await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if hostname and not valid_helo(hostname):
            await self.push("501 5.5.4 Syntax: EHLO hostname (a domain or an address literal)")
            return
        await super().smtp_EHLO(hostname)

    async def smtp_AUTH(self, arg: str) -> None:
        if not self.ims.config.settings.smtp_auth:
            await self.push("502 5.5.1 AUTH not available (this server takes no logins)")
            return
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        try:
            arg, self.dsn_mail = take_dsn(arg, MAIL_PARAMS)
        except BadParameter as exc:
            await self.push(f"501 5.5.4 {exc}")
            return
        self.dsn_rcpt = {}
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        try:
            arg, self.dsn_pending = take_dsn(arg, RCPT_PARAMS)
        except BadParameter as exc:
            await self.push(f"501 5.5.4 {exc}")
            return
        await super().smtp_RCPT(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._known(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._known(await super().auth_LOGIN(_, args))

    async def _known(self, result: AuthResult) -> AuthResult:
        """A login whose password was right stands only for a user the directory has."""
        if not result.success:
            return result
        alias = result.auth_data
        try:
            answer = await self.ims.ask("mta.lookup", {"alias": alias})
        except TimeoutError:
            self.ims.log("warning", "ims.auth", user=alias, ok=False, why=f"{self.ims.mta} did not answer")
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        known = answer.type == "mta.entry" and answer.body.recipient is not None
        self.ims.log("info" if known else "warning", "ims.auth", user=alias, ok=known,
                     **({} if known else {"why": "not one of the directory's users"}))
        return result if known else AuthResult(success=False, handled=False)
