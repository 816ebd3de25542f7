"""Mail that crosses the organisation's edge, for MtaCore (nodes.mta.core), whose state it shares.

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

from typing import Any

from protocol import INVALID, MAX_MESSAGE_BYTES, PRIORITIES
from protocol.names import MSG_ID_RULE, valid_submitted_id

from ..config import Settings
from ..core import Reply, Request, Send, error, log
from ..mail import external
from .queue import Pair, PersistMessage, QueuedMessage


class External:
    server: str
    settings: Settings
    queue: dict[str, QueuedMessage]
    seen: Any
    cache: Any
    ids: Any
    room: Any

    def _lookup(self, req: Request, body: dict[str, Any], now: float) -> list:
        return [Reply(req.peer, req.frame.id, "mta.entry", {"recipient": self.cache.get(body["alias"], now)})]

    def _submit_raw(self, req: Request, body: dict[str, Any], now: float) -> list:
        msg_id, sender, raw = body["msg_id"], body["sender"], body["raw"]
        recipients = list(dict.fromkeys(body["recipients"]))
        if not valid_submitted_id(msg_id):
            return error(req, f"'{msg_id[:80]}' is not a valid message id ({MSG_ID_RULE})", INVALID)
        if not recipients or body["priority"] not in PRIORITIES:
            return error(req, "mta.submit_raw: needs a recipient and a priority", INVALID)
        unknown = [r for r in recipients if external(r) or self.cache.get(r, now) is None]
        if unknown:
            return error(req, f"unknown user '{unknown[0]}' (not in mta.{self.server}'s directory cache)", INVALID)
        if len(raw) > MAX_MESSAGE_BYTES:
            return error(req, f"the message is {len(raw)} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes", INVALID)
        known = self.queue.get(msg_id)
        if known is not None or msg_id in self.seen:  # sent again (the client did not hear our 250)
            rcpts = list(known.pairs) if known else sorted(self.seen.hops(msg_id))
            return [Reply(req.peer, req.frame.id, "mta.accepted", {"msg_id": msg_id, "rcpts": rcpts}, msg_id),
                    log("mta.accepted", msg_id=msg_id, sender=sender, rcpts=rcpts, alt_of={},
                        cache_usn=self.cache.usn, repeated=True, via="smtp")]
        if not self.room.fits(2 * len(raw)):
            return error(req, self.room.refusal())
        msg = QueuedMessage(msg_id, sender, raw, now, priority=body["priority"])
        for pair in self._expand(recipients, now):
            msg.pairs[pair.rcpt] = pair
        self.queue[msg_id] = msg
        actions: list = [
            PersistMessage(msg.msg_id, msg.to_record()),  # durable before the IMS says 250
            Reply(req.peer, req.frame.id, "mta.accepted", {"msg_id": msg_id, "rcpts": list(msg.pairs)}, msg_id),
            log("mta.accepted", msg_id=msg_id, sender=sender, rcpts=list(msg.pairs),
                alt_of={p.rcpt: p.alt_of for p in msg.pairs.values() if p.alt_of}, cache_usn=self.cache.usn,
                via="smtp"),
        ]
        for pair in list(msg.pairs.values()):
            actions += self._route(msg, pair, now)
        return actions

    def _relay(self, msg: QueuedMessage, pair: Pair, now: float) -> list:
        """A pair for an address outside the organisation: to this server's IMS."""
        if not self.settings.smtp:
            return self._fail(msg, [pair], "no_route", now)
        request = self.ids.next()
        pair.attempts += 1
        self._await(msg, pair, "relaying", request, now)
        return [log("mta.routed", msg_id=msg.msg_id, rcpt=pair.rcpt, via="ims", to=f"ims.{self.server}",
                    cache_usn=self.cache.usn, attempt=pair.attempts),
                Send(f"ims.{self.server}", "ims.outbound",
                     {"msg_id": msg.msg_id, "sender": msg.sender, "rcpt": pair.rcpt, "raw": msg.raw,
                      "ndr_for": msg.ndr_for, "ndr_rcpts": msg.ndr_rcpts}, request, msg.msg_id)]

    def _relayed(self, msg: QueuedMessage, pair: Pair, frame: Any) -> list:
        pair.state = "relayed"
        return [log("mta.relayed", msg_id=msg.msg_id, rcpt=pair.rcpt, to=frame.src, ndr_for=msg.ndr_for),
                *self._progress(msg)]
