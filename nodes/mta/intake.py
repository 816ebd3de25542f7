"""What an MTA takes on: a submission (mta.submit, or the IMS's mta.submit_raw through
nodes.mta.external) and a peer's transfer, each durable before it is acknowledged, each taken
once by its message id (a retried submission is answered again; a retransmitted transfer is
acknowledged and dropped by its hop count), and each of its pairs handed to `route`."""

from __future__ import annotations

from typing import Any, Callable

from protocol import INVALID, MAX_MESSAGE_BYTES, PRIORITIES, messages
from protocol.names import MSG_ID_RULE, generated_id, valid_msg_id, valid_submitted_id

from ..core import Reply, Request, Room, error, log
from ..mail import compose, external
from .cache import DirectoryCache
from .queue import Pair, PersistMessage, Queue, QueuedMessage

MAX_RECIPIENTS = 500


class Intake:
    def __init__(self, server: str, boot: str, cache: DirectoryCache, queue: Queue, room: Room,
                 route: Callable[[QueuedMessage, Pair, float], list]):
        self.server, self.cache, self.queue, self.room, self._route = server, cache, queue, room, route
        self._boot, self._submitted = boot, 0

    def submit(self, req: Request, body: messages.MtaSubmit, now: float) -> list:
        sender, recipients = body.sender, list(dict.fromkeys(body.recipients))
        if not recipients:
            return error(req, "a message needs at least one recipient", INVALID)
        if len(recipients) > MAX_RECIPIENTS:
            return error(req, f"at most {MAX_RECIPIENTS} recipients per message", INVALID)
        for alias in [sender, *recipients]:  # a recipient outside the organisation leaves by the IMS
            if self.cache.get(alias, now) is None and not (alias != sender and external(alias)):
                return error(req, f"unknown user '{alias}' (not in mta.{self.server}'s directory cache)", INVALID)
        priority = body.priority or "normal"
        if priority not in PRIORITIES:
            return error(req, f"priority must be one of {', '.join(PRIORITIES)} (got {priority!r})", INVALID)
        msg_id = body.msg_id
        if msg_id is None:
            self._submitted += 1
            msg_id = generated_id(self.server, self._boot, self._submitted)
        elif not valid_submitted_id(msg_id):
            return error(req, f"'{msg_id[:80]}' is not a valid message id ({MSG_ID_RULE})", INVALID)
        return self.accept(req, msg_id, sender, recipients, priority, now,
                            lambda: compose(msg_id, sender, recipients, body.subject, body.body, now, priority))

    def accept(self, req: Request, msg_id: str, sender: str, recipients: list[str], priority: str, now: float,
                make_raw: Callable[[], bytes], **facts: Any) -> list:
        """Take a submission whose fields were checked (mta.submit's, or the IMS's mta.submit_raw):
        once by its id, durable before the acknowledgement; `facts` go on its mta.accepted line."""
        known = self.queue.get(msg_id)
        if known is not None and known.sender != sender:
            return error(req, f"message id '{msg_id}' belongs to another message (from {known.sender}); choose another",
                         INVALID)
        if known is not None or msg_id in self.queue.seen:
            # a retried submission: accepted already, say so again (idempotent by message id). It
            # is logged again: a node killed between the message's durable write and its first
            # acceptance line delivered a message no line said was accepted
            rcpts = list(known.pairs) if known else sorted(self.queue.seen.hops(msg_id))
            alt_of = {p.rcpt: p.alt_of for p in known.pairs.values() if p.alt_of} if known else {}
            # when it was first taken, and its priority: its time-out runs from then (inspect.justify)
            first = {"accepted_at": known.accepted_at, **_priority(known.priority)} if known else {}
            return [Reply(req.peer, req.frame.id, "mta.accepted", messages.MtaAccepted(msg_id, rcpts), msg_id),
                    log("mta.accepted", msg_id=msg_id, sender=sender, rcpts=rcpts, alt_of=alt_of,
                        cache_usn=self.cache.usn, repeated=True, **first, **facts)]
        raw = make_raw()  # made only for a message not taken before
        if len(raw) > MAX_MESSAGE_BYTES:
            return error(req, f"the message is {len(raw)} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes", INVALID)
        if not self.room.fits(2 * len(raw)):
            return error(req, self.room.refusal())
        msg = QueuedMessage(msg_id, sender, raw, now, priority=priority)
        for pair in self.expand(recipients, now):
            msg.pairs[pair.rcpt] = pair
        self.queue.add(msg)
        actions: list = [
            PersistMessage(msg.msg_id, msg.to_record()),  # durable before the acknowledgement
            Reply(req.peer, req.frame.id, "mta.accepted", messages.MtaAccepted(msg_id, list(msg.pairs)), msg_id),
            log("mta.accepted", msg_id=msg_id, sender=sender, rcpts=list(msg.pairs),
                alt_of={p.rcpt: p.alt_of for p in msg.pairs.values() if p.alt_of}, cache_usn=self.cache.usn,
                **_priority(priority), **facts),
        ]
        for pair in list(msg.pairs.values()):
            actions += self._route(msg, pair, now)
        return actions

    def expand(self, recipients: list[str], now: float) -> list[Pair]:
        """Alternate-recipient expansion, one level: deliver-to-both keeps the primary and adds
        the alternate; otherwise the alternate replaces the primary."""
        pairs: dict[str, Pair] = {}
        for alias in recipients:
            entry = self.cache.get(alias, now)
            alt = entry["alternate"] if entry else None
            if alt and self.cache.get(alt, now) is not None:
                if entry["deliver_to_both"]:
                    pairs.setdefault(alias, Pair(alias))
                pairs.setdefault(alt, Pair(alt, alt_of=alias))
            else:
                pairs.setdefault(alias, Pair(alias))
        return list(pairs.values())

    def transfer_in(self, req: Request, body: messages.MtaTransfer, now: float) -> list:
        msg_id = body.msg_id
        if not valid_msg_id(msg_id):
            return error(req, f"'{msg_id[:80]}' is not a valid message id")
        incoming = []
        for r in body.rcpts:  # each of its fields checked as the frame was read (protocol.messages)
            # an unconfirmed pair (a delivery that went unanswered, upstream) stays so here: the
            # message may be in the mailbox already, wherever the mailbox has gone since
            hint = r.hint
            incoming.append(Pair(r.alias, alt_of=r.alt_of, hint=hint, hops=r.hops, unconfirmed=r.unconfirmed,
                                 alt_copy=r.alt_copy, cycles=r.cycles, arrived_usn=hint["usn"] if hint else -1))
        msg = self.queue.get(msg_id)
        fresh = [p for p in incoming if p.hops > self.queue.known_hops(msg_id, p.rcpt)]
        ack = Reply(req.peer, req.frame.id, "mta.transfer_ack",
                    messages.MtaTransferAck(msg_id, [p.rcpt for p in incoming]), msg_id)
        if not fresh:
            return [ack, log("mta.transfer_duplicate", msg_id=msg_id, rcpts=[p.rcpt for p in incoming], src=req.frame.src)]
        if msg is None:
            priority = body.priority if body.priority in PRIORITIES else "normal"
            msg = QueuedMessage(msg_id, body.sender, body.raw, body.accepted_at, body.ndr_for,
                                list(body.ndr_rcpts), priority=priority)
            self.queue.add(msg)
        for pair in fresh:
            msg.pairs[pair.rcpt] = pair
        actions: list = [
            PersistMessage(msg.msg_id, msg.to_record()),  # durable before the peer is told it may forget
            ack,
            log("mta.transfer_in", msg_id=msg_id, rcpts=[p.rcpt for p in fresh], src=req.frame.src,
                hops=max(p.hops for p in fresh)),
        ]
        for pair in fresh:
            actions += self._route(msg, pair, now)
        return actions


def _priority(priority: str) -> dict[str, str]:
    """An acceptance line's priority, where it is not normal (the time-out it chooses: Settings.expire_s)."""
    return {} if priority == "normal" else {"priority": priority}
