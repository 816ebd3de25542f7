"""The IMS's core: what it accepts over SMTP, and its queue of mail for outside, with no socket,
clock or file of its own (nodes.core's contract). Real processes host it in nodes.ims.node, under
aiosmtpd; the simulator hosts it with a smarthost of its own (orchestrator.sim), so a campaign
`--via smtp` runs in either world on the same rules.

In, a session's transaction asked of the core by the SMTP door (or by a simulated client):
- `ims.rcpt`: a recipient in this organisation's domain that the MTA's directory cache knows is
  250; another domain 550 5.7.1 (no relaying); unknown 550 5.1.1; no answer from the MTA 451;
- `ims.data`: the client's bytes with this server's headers above them (Received, the message id,
  RFC 3461's parameters) go to the MTA (mta.submit_raw); 250 only once the MTA has them durably.
  The id is derived from the sender, the recipients and the client's Message-ID, so a client's
  resend is taken once; without a Message-ID each DATA is a new message.
- `fault.smtp`: each answer `delay_ms` late, and with chance `cut` a session cut after the MTA
  took its message and before its 250, for `seconds` (drawn from the node's seed).

Out, `ims.outbound` from the MTA: the item is written (outbound/) before the MTA hears "ok"; the
core asks the shell to relay it (Relay) and hears how that went (Relayed); a 4xx or no answer is
tried again each `retry_s`; a 5xx, or its lifetime over, moves it to failed/ and hands it back to
the MTA (mta.relay_failed) until the MTA says "ok". Each item ends relayed or returned, once.
"""

from __future__ import annotations

import email.parser
import email.utils
import hashlib
import random
from dataclasses import dataclass
from typing import Any

from protocol import INVALID, MAX_MESSAGE_BYTES, as_dict
from protocol.messages import OK

from ..core import Ids, Log, Reply, Request, Response, Send
from ..host import Wiring
from ..mail import DOMAIN, address, alias_of, external, header
from ..node_settings import ImsSettings
from .outbound import Item, key_of
from .smtp import TOO_BIG

ASK_S = 5.0  # how long the MTA's answer is waited for
RELAY_SESSIONS = 4  # items relayed at once


@dataclass(slots=True)
class Relay:
    """Action: send one item to the smarthost; the answer comes back as Relayed."""

    key: str
    smarthost: str
    mail_from: str
    rcpt: str
    raw: bytes


@dataclass(slots=True)
class Relayed:
    """Event: how the smarthost answered an item: its reply code, or None (not reached), and words."""

    key: str
    code: int | None
    words: str


@dataclass(slots=True)
class WriteItem:
    sub: str  # outbound | failed
    item: Item


@dataclass(slots=True)
class RemoveItem:
    sub: str
    key: str


@dataclass(slots=True)
class AppendLine:
    record: dict[str, Any]


def _log(event: str, level: str = "info", **fields: Any) -> Log:
    return Log(event, fields, level)  # an edge's event: not declared in protocol/logs.py


@dataclass(slots=True)
class _Ask:
    """A request to the MTA in flight: what it is for, and until when it is waited for."""

    kind: str  # rcpt | data | hand_back
    until: float
    req: Request | None = None
    key: str = ""  # hand_back: the item's
    addr: str = ""  # rcpt: the address
    msg_id: str = ""  # data
    size: int = 0
    sender: str = ""
    client_id: str = ""


class ImsCore:
    def __init__(self, name: str, server: str, settings: ImsSettings, boot: str, seed: int, smarthost: str,
                 items: dict[str, Item], relayed: set[str], returned: set[str], damage: dict[str, Any] | None = None):
        self.name, self.server, self.smarthost = name, server, smarthost
        self.mta = f"mta.{server}"
        self.retry_s = settings.retry_ms / 1000
        self.items, self.relayed, self.returned, self.damage = dict(items), set(relayed), set(returned), damage
        self.ids = Ids(name, boot)
        self.rng = random.Random(seed)  # which sessions a fault.smtp cuts; ids of messages without a Message-ID
        self.asks: dict[str, _Ask] = {}
        self.relaying: set[str] = set()  # keys with a Relay out and no Relayed yet
        self.handing_back: set[str] = set()
        self.later: list[tuple[float, Reply]] = []  # answers a fault.smtp holds back
        self.fault: dict[str, Any] | None = None  # fault.smtp: {"cut", "delay_ms", "until"}
        self.accepted = self.refused = 0
        self.ready = True

    # --- the contract (nodes.host.Core) -------------------------------------------------------

    def start(self, now: float) -> list:
        if self.damage is None:
            return []
        return [_log("storage.damaged", "error", **self.damage,
                     why="damage in the IMS's queue: every file and line that reads was taken up; the messages in "
                         "`lost` lost their item or its end here")]

    def on_event(self, event: Any, now: float) -> list:
        if isinstance(event, Request):
            kind = event.frame.type
            if kind == "ims.outbound":
                return self._take(event, now)
            if kind == "ims.rcpt":
                return self._rcpt(event, now)
            if kind == "ims.data":
                return self._data(event, now)
            if kind == "fault.smtp":
                body = event.frame.body
                self.fault = {"cut": body.cut, "delay_ms": body.delay_ms, "until": now + body.seconds}
                return [_log("fault.applied", "warning", type=kind, by=event.frame.src, **as_dict(body)),
                        Reply(event.peer, event.frame.id, "ok", OK)]
            return [Reply(event.peer, event.frame.id, "error",
                          {"reason": f"{self.name} does not handle '{kind}'",
                           "code": INVALID if kind.startswith("fault.") else None})]
        if isinstance(event, Response):
            ask = self.asks.pop(event.frame.re or "", None)
            return [] if ask is None else self._answered(ask, event.frame, now)
        if isinstance(event, Relayed):
            return self._relayed(event, now)
        return []

    def tick(self, now: float) -> list:
        out: list = []
        for rid, ask in list(self.asks.items()):
            if ask.until <= now:
                del self.asks[rid]
                out += self._answered(ask, None, now)
        held = [r for at, r in self.later if at <= now]
        self.later = [(at, r) for at, r in self.later if at > now]
        out += held
        for item in list(self.items.values()):
            if item.failed is None and now >= item.expires_at and item.key not in self.relaying:
                out += self._fail(item, f"expired: {'no smarthost took it' if not self.smarthost else item.reason or '-'}")
            if item.failed is not None:
                if item.next_at <= now and item.key not in self.handing_back:
                    out += self._hand_back(item, now)
            elif (self.smarthost and item.next_at <= now and item.key not in self.relaying
                  and len(self.relaying) < RELAY_SESSIONS):
                out += self._relay(item)
        return out

    def next_wakeup(self) -> float | None:
        due = [a.until for a in self.asks.values()] + [at for at, _ in self.later]
        for item in self.items.values():
            if item.failed is not None:
                if item.key not in self.handing_back:
                    due.append(item.next_at)
            else:
                if item.key not in self.relaying:
                    due.append(item.expires_at)
                    if self.smarthost and len(self.relaying) < RELAY_SESSIONS:
                        due.append(item.next_at)
        return min(due, default=None)

    def clear_faults(self) -> None:
        self.fault = None

    def status(self, now: float) -> dict[str, Any]:
        items = sorted(self.items.values(), key=lambda i: i.queued_at)
        fault = self._fault(now)
        return {**({"faults": {"smtp": fault}} if fault else {}), "smarthost": self.smarthost or None,
                "accepted": self.accepted, "refused": self.refused, "outbound": len(items),
                "relayed": len(self.relayed), "returned": len(self.returned),
                "queue": [{"msg_id": i.msg_id, "rcpt": i.rcpt, "attempts": i.attempts,
                           "state": "returning" if i.failed else "relaying", "reason": i.failed or i.reason,
                           "expires_in_s": round(i.expires_at - now, 3)} for i in items[:20]]}

    # --- SMTP in --------------------------------------------------------------------------------

    def _fault(self, now: float) -> dict[str, Any] | None:
        if self.fault is not None and now >= self.fault["until"]:
            self.fault = None
        return self.fault

    def _say(self, req: Request, now: float, code: int, text: str, **more: Any) -> list:
        """The SMTP answer to a session, `delay_ms` late while a fault.smtp says so."""
        reply = Reply(req.peer, req.frame.id, "ims.said", {"code": code, "text": text, **more}, req.frame.trace)
        fault = self._fault(now)
        if fault and fault["delay_ms"]:
            self.later.append((now + fault["delay_ms"] / 1000, reply))
            return []
        return [reply]

    def _ask(self, type_: str, body: Any, ask: _Ask, trace: str | None = None) -> list:
        rid = self.ids.next()
        self.asks[rid] = ask
        return [Send(self.mta, type_, body, rid, trace)]

    def _rcpt(self, req: Request, now: float) -> list:
        addr = req.frame.body.address
        local, _, domain = addr.rpartition("@")
        if domain.lower() != DOMAIN:
            return self._say(req, now, 550, f"5.7.1 <{addr}>: relaying denied (this server takes mail for {DOMAIN} only)")
        return self._ask("mta.lookup", {"alias": local.lower()}, _Ask("rcpt", now + ASK_S, req, addr=addr))

    def _data(self, req: Request, now: float) -> list:
        body = req.frame.body
        raw = body.raw
        rcpts = [r.rpartition("@")[0].lower() for r in body.rcpts]
        # the null reverse-path (a bounce from outside): no report is ever sent to it; if this
        # message fails, its report goes to the postmaster mailbox (nodes.mta.reports)
        sender = alias_of(body.mail_from)  # "" for it, written "" or "<>"
        if sender and not external(sender):  # one of the organisation's users, submitting: its alias
            sender = sender.lower()
        headers = email.parser.BytesHeaderParser().parsebytes(raw)
        # a message sent again (its client never heard our 250) is known by its Message-ID, which
        # a client keeps for a resend and makes new for a new message; without one, every DATA is
        # a new message (two messages of the same bytes are two messages: a chaos campaign found
        # the same bytes sent twice, by a user before and after her move, taken as one id by two
        # MTAs, one delivering it and the other reporting it)
        client_id = header(headers, "Message-ID", "").strip()
        key = [sender, *body.rcpts, client_id] if client_id else [f"{self.rng.getrandbits(128):032x}"]
        msg_id = f"smtp-{hashlib.sha256(chr(0).join(key).encode()).hexdigest()[:24]}"
        received = (f"Received: from {body.helo or 'unknown'} ({body.peer_ip or '?'}) by {self.name}.{DOMAIN} "
                    f"with ESMTP id {msg_id}; {email.utils.formatdate(now)}")
        added = [received, f"X-Xcon-Msg-Id: {msg_id}"]
        if headers.get("Message-ID") is None:
            added.append(f"Message-ID: <{msg_id}@{DOMAIN}>")
        # RFC 3461's parameters, for the MTA that reports (nodes.mail.dsn_of): the transaction's,
        # then each recipient's that has any
        if body.dsn_mail:
            added.append(f"X-Xcon-DSN: {' '.join(body.dsn_mail)}")
        added += [f"X-Xcon-DSN-Rcpt: {alias} {' '.join(params)}" for alias, params in body.dsn_rcpt.items()
                  if params and alias in rcpts]
        raw = ("\r\n".join(added) + "\r\n").encode() + raw
        if len(raw) > MAX_MESSAGE_BYTES:  # what SIZE promised is measured with the headers added
            return [_log("ims.refused", "warning", msg_id=msg_id, reason="over the size limit", code=552,
                         size=len(raw)), *self._say(req, now, 552, TOO_BIG[4:])]
        ask = _Ask("data", now + ASK_S, req, msg_id=msg_id, size=len(raw), sender=sender, client_id=client_id)
        return self._ask("mta.submit_raw", {"msg_id": msg_id, "sender": sender, "recipients": rcpts, "raw": raw,
                                            "priority": priority(headers)}, ask, trace=msg_id)

    def _answered(self, ask: _Ask, answer: Any, now: float) -> list:
        """The MTA's answer to a request (None: none in time)."""
        if ask.kind == "hand_back":
            return self._handed_back(ask.key, answer, now)
        req = ask.req
        if ask.kind == "rcpt":
            if answer is None:
                return self._say(req, now, 451, f"4.4.1 {self.mta} did not answer; try again later")
            if answer.type == "error":
                return self._say(req, now, 451, f"4.3.0 {answer.body.reason}")
            if answer.body.recipient is None:
                self.refused += 1
                return [_log("ims.rcpt_refused", "warning", rcpt=ask.addr, reason="unknown user",
                             peer=req.frame.body.peer),
                        *self._say(req, now, 550, f"5.1.1 <{ask.addr}>: unknown user (not in {self.mta}'s "
                                                  "directory cache)")]
            return self._say(req, now, 250, "2.1.5 OK")
        if answer is None:
            return [_log("ims.refused", "warning", msg_id=ask.msg_id, reason=f"{self.mta} did not answer", code=451),
                    *self._say(req, now, 451, f"4.4.1 {self.mta} did not answer; send it again later")]
        if answer.type == "error":
            code = 554 if answer.body.code == INVALID else 452
            return [_log("ims.refused", "warning", msg_id=ask.msg_id, reason=answer.body.reason, code=code),
                    *self._say(req, now, code, f"{'5.6.0' if code == 554 else '4.3.1'} {answer.body.reason}")]
        fault = self._fault(now)
        if fault and self.rng.random() < fault["cut"]:
            # the MTA has it; the client will not hear so (the window a resend must not double)
            return [_log("ims.cut", "warning", msg_id=ask.msg_id, peer=req.frame.body.peer, why="fault.smtp"),
                    *self._say(req, now, 421, "4.4.2 cut", cut=True)]
        self.accepted += 1
        return [_log("ims.accepted", msg_id=ask.msg_id, sender=ask.sender, rcpts=answer.body.rcpts,
                     peer=req.frame.body.peer, size=ask.size, message_id=ask.client_id[:998] or None),
                *self._say(req, now, 250, f"2.0.0 Ok: queued as {ask.msg_id}", msg_id=ask.msg_id)]

    # --- mail for outside -----------------------------------------------------------------------

    def _take(self, req: Request, now: float) -> list:
        """A message for outside: durable (outbound/) before the MTA hears "ok". One that ended
        here already (relayed, or handed back) is not taken again."""
        body = req.frame.body
        key = key_of(body.msg_id, body.rcpt)
        ok = Reply(req.peer, req.frame.id, "ok", OK, req.frame.trace)
        if key in self.relayed or key in self.returned or key in self.items:
            return [ok]
        item = Item(key, body.msg_id, body.sender, body.rcpt, body.raw, body.ndr_for, list(body.ndr_rcpts), now,
                    body.expires_at, body.accepted_at, body.priority)
        self.items[key] = item
        return [WriteItem("outbound", item),
                _log("ims.queued_out", msg_id=body.msg_id, rcpt=body.rcpt, ndr_for=body.ndr_for, src=req.frame.src,
                     expires_in_ms=int((body.expires_at - now) * 1000)), ok]

    def _relay(self, item: Item) -> list:
        item.attempts += 1
        self.relaying.add(item.key)
        mail_from = "" if item.ndr_for else address(item.sender)  # a report: the null reverse-path
        return [Relay(item.key, self.smarthost, mail_from, item.rcpt, item.raw)]

    def _relayed(self, event: Relayed, now: float) -> list:
        self.relaying.discard(event.key)
        item = self.items.get(event.key)
        if item is None or item.failed is not None:
            return []
        if event.code is not None and 200 <= event.code < 300:
            self.relayed.add(item.key)
            del self.items[item.key]
            return [AppendLine({"msg_id": item.msg_id, "rcpt": item.rcpt, "ndr_for": item.ndr_for,
                                "ndr_rcpts": item.ndr_rcpts, "smarthost": self.smarthost, "at": round(now, 6)}),
                    RemoveItem("outbound", item.key),
                    _log("ims.relayed", msg_id=item.msg_id, rcpt=item.rcpt, ndr_for=item.ndr_for,
                         ndr_rcpts=item.ndr_rcpts, smarthost=self.smarthost, attempt=item.attempts)]
        if event.code is not None and event.code >= 500:
            return self._fail(item, f"refused: {event.words}"[:500])
        item.reason, item.next_at = event.words[:500], now + self.retry_s
        return [_log("ims.relay_deferred", "warning", msg_id=item.msg_id, rcpt=item.rcpt, smarthost=self.smarthost,
                     reason=item.reason, retry_in_ms=int(self.retry_s * 1000))]

    def _fail(self, item: Item, failed: str) -> list:
        """It will not leave: in failed/ first (never relayed after), then back to the MTA."""
        item.failed, item.next_at = failed, 0.0
        return [WriteItem("failed", item), RemoveItem("outbound", item.key),
                _log("ims.relay_failed", "warning", msg_id=item.msg_id, rcpt=item.rcpt, ndr_for=item.ndr_for,
                     smarthost=self.smarthost or None, reason=failed, attempts=item.attempts,
                     kept=f"ims/{self.server}/failed/{item.key}.msg")]

    def _hand_back(self, item: Item, now: float) -> list:
        """The MTA takes the failure (durably, with its report) before the item leaves the queue."""
        self.handing_back.add(item.key)
        body = {"msg_id": item.msg_id, "sender": item.sender, "rcpt": item.rcpt, "raw": item.raw,
                "ndr_for": item.ndr_for, "ndr_rcpts": item.ndr_rcpts, "accepted_at": item.accepted_at,
                "priority": item.priority, "reason": item.why, "diagnostic": item.failed or ""}
        return self._ask("mta.relay_failed", body, _Ask("hand_back", now + ASK_S, key=item.key),
                         trace=item.ndr_for or item.msg_id)

    def _handed_back(self, key: str, answer: Any, now: float) -> list:
        self.handing_back.discard(key)
        item = self.items.get(key)
        if item is None:
            return []
        if answer is None or answer.type != "ok":
            why = getattr(answer.body, "reason", answer.type) if answer is not None else f"{self.mta} did not answer"
            item.next_at = now + self.retry_s
            return [_log("ims.hand_back_deferred", "warning", msg_id=item.msg_id, rcpt=item.rcpt, reason=why,
                         retry_in_ms=int(self.retry_s * 1000))]
        self.returned.add(key)
        del self.items[key]
        return [AppendLine({"msg_id": item.msg_id, "rcpt": item.rcpt, "ndr_for": item.ndr_for,
                            "ndr_rcpts": item.ndr_rcpts, "returned": item.failed, "to": self.mta, "at": round(now, 6)}),
                _log("ims.returned", msg_id=item.msg_id, rcpt=item.rcpt, ndr_for=item.ndr_for,
                     ndr_rcpts=item.ndr_rcpts, reason=item.failed, to=self.mta)]


def priority(headers: Any) -> str:
    """xcon's priority from X-Priority (1-2 urgent, 4-5 non-urgent) or Importance (high, low)."""
    x = header(headers, "X-Priority", "").strip()[:1]
    importance = header(headers, "Importance", "").strip().lower()
    if x in ("1", "2") or importance == "high":
        return "urgent"
    if x in ("4", "5") or importance == "low":
        return "non-urgent"
    return "normal"


def lifetime(settings: ImsSettings):
    """How long an item from before items carried their own lifetime may wait: a report's
    time-out, or the message's (nodes.mta.queue.Queue.expires_at)."""
    return lambda r: settings.lifetimes.report_s if r["ndr_for"] else settings.lifetimes.of(r.get("priority", "normal"))


def wiring(server: str, settings: ImsSettings, boot: str, seed: int, smarthost: str, queue: Any,
           relay: Any) -> Wiring:
    """The IMS of `server` on `queue` (nodes.ims.outbound: Outbound or MemoryOutbound, loaded),
    whose Relay actions `relay(action)` sends, its answer to come back as a Relayed event."""
    core = ImsCore(f"ims.{server}", server, settings, boot, seed, smarthost, queue.items, queue.relayed,
                   queue.returned, queue.damage)
    executors = {WriteItem: lambda a: queue.write(a.sub, a.item), RemoveItem: lambda a: queue.remove(a.sub, a.key),
                 AppendLine: lambda a: queue.line(a.record), Relay: relay}
    return Wiring(core, executors)
