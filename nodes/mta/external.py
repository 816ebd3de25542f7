"""Mail that crosses the organisation's edge: the MTA's side of its IMS (Outside).

In: the server's Internet Mail Service (nodes.ims) asks whether a recipient is in this MTA's
directory cache (mta.lookup, its RCPT check) and submits what an SMTP client sent
(mta.submit_raw): the client's bytes, an outside sender, the organisation's recipients.

Out: a pair whose recipient is an address (outside the organisation: an NDR to an outside
originator, or mail to an outside address) goes to this server's IMS (ims.outbound), which
answers once the message is durable in its own queue and relays it to the smarthost. Until it
answers the pair is the MTA's, retried as any other. The builds keep their meaning: legacy, in
the KB's window, makes no report at all, so an outside sender hears nothing (no DSN); sp4 sends
one; reroute delivers.
"""

from __future__ import annotations

from typing import Any, Callable

from protocol import INVALID, PRIORITIES, RELAY_FAILURES, messages
from protocol.names import MSG_ID_RULE, valid_msg_id, valid_submitted_id

from ..core import Reply, Request, Send, error, log
from ..mail import external, message_id_of
from .cache import DirectoryCache
from .queue import Pair, Queue, QueuedMessage, State


class Outside:
    """`accept` takes a checked submission (Intake.accept); `fail` fails a pair as the MTA
    fails any (MtaCore._fail: the report, routed)."""

    def __init__(self, server: str, smtp: bool, cache: DirectoryCache, ids: Any, queue: Queue,
                 accept: Callable[..., list], fail: Callable[[QueuedMessage, Pair, str, float], list]):
        self.server, self.smtp, self.cache, self.ids, self.queue = server, smtp, cache, ids, queue
        self._accept, self._fail = accept, fail

    def lookup(self, req: Request, body: messages.MtaLookup, now: float) -> list:
        return [Reply(req.peer, req.frame.id, "mta.entry", {"recipient": self.cache.get(body.alias, now)})]

    def submit_raw(self, req: Request, body: messages.MtaSubmitRaw, now: float) -> list:
        msg_id, sender, raw = body.msg_id, body.sender, body.raw
        recipients = list(dict.fromkeys(body.recipients))
        if not valid_submitted_id(msg_id):
            return error(req, f"'{msg_id[:80]}' is not a valid message id ({MSG_ID_RULE})", INVALID)
        if not recipients or body.priority not in PRIORITIES:
            return error(req, "mta.submit_raw: needs a recipient and a priority", INVALID)
        unknown = [r for r in recipients if external(r) or self.cache.get(r, now) is None]
        if unknown:
            return error(req, f"unknown user '{unknown[0]}' (not in mta.{self.server}'s directory cache)", INVALID)
        # the IMS's id is the same for the same message sent again: taken once (Intake.accept).
        # Its client's Message-ID goes on the acceptance line: Dovecot's record of what a user
        # expunged names a message by it (nodes.imap.record), and the IMS's own line may never be
        # written (a session cut before its 250)
        return self._accept(req, msg_id, sender, recipients, body.priority, now, lambda: raw, via="smtp",
                            message_id=message_id_of(raw))

    def relay(self, msg: QueuedMessage, pair: Pair, now: float) -> list:
        """A pair for an address outside the organisation: to this server's IMS."""
        if not self.smtp:
            return self._fail(msg, pair, "no_route", now)
        request = self.ids.next()
        pair.attempts += 1
        self.queue.await_answer(msg, pair, State.RELAYING, request, now)
        return [log("mta.routed", msg_id=msg.msg_id, rcpt=pair.rcpt, via="ims", to=f"ims.{self.server}",
                    cache_usn=self.cache.usn, attempt=pair.attempts),
                Send(f"ims.{self.server}", "ims.outbound",
                     {"msg_id": msg.msg_id, "sender": msg.sender, "rcpt": pair.rcpt, "raw": msg.raw,
                      "ndr_for": msg.ndr_for, "ndr_rcpts": msg.ndr_rcpts, "accepted_at": msg.accepted_at,
                      "priority": msg.priority, "expires_at": self.queue.expires_at(msg)}, request, msg.msg_id)]

    def relay_failed(self, req: Request, body: messages.MtaRelayFailed, now: float) -> list:
        """The IMS hands back a pair that will not leave (refused for good, or its time-out over):
        it fails here as any pair this MTA gives up on, an NDR to the originator, or for a report
        the postmaster's copy (nodes.mta.reports), durable before the IMS hears "ok". The message
        may have left the queue since it was handed over: it is taken up again for this. Sent
        again (the "ok" was lost), it is answered, not failed twice."""
        msg_id, rcpt, reason = body.msg_id, body.rcpt, body.reason
        if not valid_msg_id(msg_id) or not external(rcpt) or reason not in RELAY_FAILURES:
            return error(req, "mta.relay_failed: a message id, an outside address and a reason "
                              f"({', '.join(RELAY_FAILURES)})", INVALID)
        ok = Reply(req.peer, req.frame.id, "ok", {}, msg_id)
        msg = self.queue.get(msg_id)
        if msg is None:
            priority = body.priority if body.priority in PRIORITIES else "normal"
            msg = QueuedMessage(msg_id, body.sender, body.raw, body.accepted_at, body.ndr_for,
                                list(body.ndr_rcpts), priority=priority)
        pair = msg.pairs.get(rcpt)
        if pair is not None and pair.state == State.FAILED:
            return [ok, log("mta.relay_failed", msg_id=msg_id, rcpt=rcpt, reason=reason, repeated=True, src=req.frame.src)]
        if pair is None:
            pair = msg.pairs[rcpt] = Pair(rcpt, state=State.RELAYED)
        self.queue.add(msg)
        self.queue.forget(pair)
        return [log("mta.relay_failed", level="warning", msg_id=msg_id, rcpt=rcpt, reason=reason,
                    diagnostic=body.diagnostic[:500], ndr_for=msg.ndr_for, src=req.frame.src),
                *self._fail(msg, pair, reason, now), ok]

    def relayed(self, msg: QueuedMessage, pair: Pair, frame: Any) -> list:
        pair.state = State.RELAYED
        return [log("mta.relayed", msg_id=msg.msg_id, rcpt=pair.rcpt, to=frame.src, ndr_for=msg.ndr_for),
                *self.queue.progress(msg)]
