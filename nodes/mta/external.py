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

from typing import Any, Callable

from protocol import INVALID, PRIORITIES
from protocol.names import MSG_ID_RULE, valid_submitted_id

from ..config import Settings
from ..core import Reply, Request, Send, error, log
from ..mail import external
from .queue import Pair, QueuedMessage


class External:
    server: str
    settings: Settings
    cache: Any
    ids: Any
    _accept: Callable[..., list]

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
        # the IMS's id is the same for the same message sent again: taken once (MtaCore._accept)
        return self._accept(req, msg_id, sender, recipients, body["priority"], now, lambda: raw, via="smtp")

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
