"""Where a (message, recipient) pair goes, and what the store's or a peer's answer does to it.

Routing uses the directory cache (nodes.mta.cache), which learns of a Move User's new home only
after the replication lag; the freshest entry known wins, the cache's or the hint a transfer
carried. When the store answers "not_here" for a mailbox the cache still homes here, the builds
part ways (nodes.mta.core's docstring).

Loops. A transfer counts a hop for deduplication (a peer refuses a pair it has taken at as many
hops), but a loop is a cycle: transfers in a row on directory data no newer than the hop before
had. A transfer that follows a newer entry (the recipient was moved meanwhile) is progress, not
a loop, however many moves it follows.
"""

from __future__ import annotations

from typing import Any

from protocol.messages import MtaTransfer, TransferRcpt

from ..config import Settings
from ..core import Send, log
from ..mail import external
from .queue import Pair, PersistMessage, QueuedMessage

# transfers in a row on directory data no newer than the hop before's: a routing loop (only a
# directory whose USNs went backwards, or a bug, makes one: every MTA routes on the freshest entry
# it knows, and a pair's hint is the entry the hop before routed on)
MAX_CYCLES = 3
DIRECTORY = "directory"


class Routing:
    """Routing and answers, for MtaCore (nodes.mta.core), whose state they share."""

    server: str
    build: str
    settings: Settings
    queue: dict[str, QueuedMessage]
    requests: dict[str, tuple[str, str]]
    cache: Any
    ids: Any
    timeout_s: float
    retry_s: float
    transfer_retry_s: float
    directory_usn: int

    def _entry(self, pair: Pair, now: float) -> tuple[dict[str, Any] | None, str]:
        """The freshest entry known for the pair's recipient: the cache's, or the hint's when newer."""
        cached = self.cache.get(pair.rcpt, now)
        if pair.hint and (cached is None or pair.hint["usn"] > cached["usn"]):
            return pair.hint, "hint"
        return cached, "cache"

    def _route(self, msg: QueuedMessage, pair: Pair, now: float) -> list:
        if msg.report is not None:
            return self._to_own_postmaster(msg, pair, now)
        if external(pair.rcpt):  # outside the organisation: no directory entry, the IMS's (nodes.mta.external)
            return self._relay(msg, pair, now)
        if not self.ready and pair.handed_to is None:
            # a restarted MTA whose directory has not answered yet: an empty cache knows nobody,
            # and routing on it would fail every recipient (and the NDR's originator) as unknown
            return self._defer(msg, pair, now, "directory cache not loaded yet", answered=False)
        if pair.handed_to is not None:
            # an unacknowledged hand-off: the peer may own the pair already, so it goes to that
            # peer again with what it was sent before; only the peer's answer settles it (and the
            # directory is not read: a read refreshes what the read cache trusts)
            entry, via = pair.hint, "unacknowledged transfer"
            pair.resent = True
        else:
            entry, via = self._entry(pair, now)
        if entry is None:
            return self._fail(msg, [pair], "unknown", now)
        home = entry["home_server"]
        if (home == self.server and msg.ndr_for is None and not pair.unconfirmed
                and msg.sender in (entry.get("reject_from") or ())):
            # the recipient's delivery restrictions, as this MTA reads them (its read cache may
            # hold the entry from before a change: Q178534). Not for an unconfirmed pair: an
            # earlier attempt, made under the old restrictions, may have landed (the simulator
            # found an NDR for a delivered message); the store's answer settles it
            return [log("mta.restricted", msg_id=msg.msg_id, rcpt=pair.rcpt, sender=msg.sender,
                        entry_usn=entry["usn"], cache_usn=self.cache.usn),
                    *self._fail(msg, [pair], "restricted", now)]
        pair.attempts += 1
        request = self.ids.next()
        routed = log("mta.routed", msg_id=msg.msg_id, rcpt=pair.rcpt, home_server=home, via=via,
                     entry_usn=entry["usn"], cache_usn=self.cache.usn, attempt=pair.attempts)
        if home == self.server:
            return [routed, self._deliver_here(msg, pair, request, now)]
        if home not in self.settings.servers:
            # an entry naming a server this organisation does not have (a hand-edited directory):
            # no MTA will ever answer for it
            return [routed, *self._fail(msg, [pair], "no_route", now)]
        # a cycle: this hop goes on data no newer than the hop before had (see MAX_CYCLES)
        cycles = pair.cycles + 1 if entry["usn"] <= pair.arrived_usn else 0
        if cycles >= MAX_CYCLES and pair.handed_to is None:
            return [routed, *self._fail(msg, [pair], "loop", now)]
        self._await(msg, pair, "transferring", request, now)
        first_hand_off = pair.handed_to is None
        pair.handed_to, pair.hint = f"mta.{home}", entry
        # the hand-off is on disk before the transfer leaves, so a restart sends it to the same peer
        durable = [PersistMessage(msg.msg_id, msg.to_record())] if first_hand_off else []
        rcpt = TransferRcpt(pair.rcpt, pair.alt_of, entry, pair.hops + 1, pair.unconfirmed,
                            self._alternate_copy(msg, pair), cycles)
        return [routed, *durable, Send(f"mta.{home}", "mta.transfer",
                                       MtaTransfer(msg.msg_id, msg.sender, msg.raw, msg.accepted_at, msg.ndr_for,
                                                   msg.ndr_rcpts, msg.priority, [rcpt]), request, msg.msg_id)]

    def _await(self, msg: QueuedMessage, pair: Pair, state: str, request: str, now: float) -> None:
        pair.state, pair.request, pair.deadline = state, request, now + self.timeout_s
        self.requests[request] = (msg.msg_id, pair.rcpt)
        self._timer(pair.deadline, msg.msg_id)

    def _response(self, frame: Any, now: float) -> list:
        if frame.type == "dir.snapshot_reply":
            return self._snapshot(frame, now)
        located = self._locate(frame.re)
        if located is None:
            return [log("mta.late_answer", level="debug", re=frame.re, type=frame.type)]
        msg, pair = located
        self.requests.pop(frame.re, None)
        pair.request = None
        body = frame.body
        if frame.type == "error":
            if not pair.resent:
                pair.handed_to = None  # the peer refused the only copy it was sent: it does not own the pair
            return self._defer(msg, pair, now, f"{frame.src}: {body.reason}")
        if frame.type == "store.result" and pair.state == "delivering":
            outcome = body.outcome
            if outcome in ("delivered", "duplicate"):
                pair.state = "delivered"
                return [log("mta.delivered", msg_id=msg.msg_id, rcpt=pair.rcpt, duplicate=outcome == "duplicate"),
                        *self._progress(msg)]
            if outcome == "deferred" or msg.report is not None:  # a postmaster copy waits, whatever the answer
                return self._defer(msg, pair, now, body.reason)
            if outcome == "expired":
                # the store has no copy and will take none: every attempt still on its way is
                # refused too (it carries the same time-out), so the NDR cannot meet a delivery
                return self._fail(msg, [pair], "expired", now)
            # not_here, or soft_deleted: a mailbox the recipient was moved away from (KB 2579150)
            return self._not_here(msg, pair, now, "soft_deleted" if outcome == "soft_deleted" else "moved")
        if frame.type == "ok" and pair.state == "relaying":
            return self._relayed(msg, pair, frame)
        if frame.type == "mta.transfer_ack" and pair.state == "transferring":
            pair.state, pair.handed_to, pair.resent = "transferred", None, False
            return [log("mta.transferred", msg_id=msg.msg_id, rcpt=pair.rcpt, to=frame.src), *self._progress(msg)]
        if frame.type == "dir.entry" and pair.state == "resolving":
            return self._resolved(msg, pair, body.recipient, now)
        return self._defer(msg, pair, now, f"unexpected answer '{frame.type}' from {frame.src}")

    def _locate(self, request: str | None) -> tuple[QueuedMessage, Pair] | None:
        msg_id, rcpt = self.requests.get(request or "", ("", ""))
        msg = self.queue.get(msg_id)
        pair = msg.pairs.get(rcpt) if msg else None
        if pair is None or pair.request != request:
            return None
        return msg, pair

    def _not_here(self, msg: QueuedMessage, pair: Pair, now: float, reason: str = "moved") -> list:
        """The store has no such mailbox (or only a soft-deleted one: `reason`). The heart of KB Q248839."""
        entry, via = self._entry(pair, now)
        facts = {"msg_id": msg.msg_id, "rcpt": pair.rcpt, "cache_usn": self.cache.usn,
                 "entry_usn": entry["usn"] if entry else None, "directory_usn": self.directory_usn}
        if entry is not None and entry["home_server"] != self.server:
            # the cache caught up while the store answered: route to the new home
            return [log("mta.rerouted", reason="cache updated", home_server=entry["home_server"], **facts),
                    *self._route(msg, pair, now)]
        if self.build == "reroute" or pair.unconfirmed:
            # reroute always; any build when an earlier delivery here went unanswered, since the
            # message may have arrived and left with the mailbox: find where it went first
            request = self.ids.next()
            self._await(msg, pair, "resolving", request, now)
            return [log("mta.not_homed", action="ask directory", cache_home=self.server, **facts),
                    Send(DIRECTORY, "dir.lookup", {"alias": pair.rcpt}, request, msg.msg_id)]
        if msg.ndr_for is not None:
            # a report is never dropped for a transient cause: the originator exists and was
            # moved, so hold the NDR until this MTA's cache learns the new home
            return [log("mta.not_homed", action="hold report", cache_home=self.server, **facts),
                    *self._defer(msg, pair, now, "originator's mailbox moved; waiting for the directory cache")]
        return [log("mta.not_homed", action="fail", cache_home=self.server, **facts),
                *self._fail(msg, [pair], reason, now)]

    def _resolved(self, msg: QueuedMessage, pair: Pair, entry: dict[str, Any] | None, now: float) -> list:
        if entry is None:
            return self._fail(msg, [pair], "unknown", now)
        pair.hint = entry
        if entry["home_server"] == self.server:
            # the directory homes it here, and the store had no mailbox: a move back here, or one
            # under way, whose mailbox is not open yet. Not a failure (an NDR here was the oracle's
            # first find: simulated trial 710053058, reroute, a lookup answered late after the user
            # moved back): tried again until its time-out, then failed as expired here (the store
            # answers "not here" before it judges a time-out: an unconfirmed pair would ask for ever)
            if now >= self._expires_at(msg):
                return self._fail(msg, [pair], "expired", now)
            return self._defer(msg, pair, now, "the directory homes it here; the store has no mailbox yet")
        return [log("mta.rerouted", msg_id=msg.msg_id, rcpt=pair.rcpt, reason="directory lookup",
                    home_server=entry["home_server"], entry_usn=entry["usn"], cache_usn=self.cache.usn),
                *self._route(msg, pair, now)]

    def _defer(self, msg: QueuedMessage, pair: Pair, now: float, reason: str, answered: bool = True) -> list:
        """Try the pair again later: after the transfer interval when the other side answered and
        deferred it, after the open interval when nothing answered."""
        wait = self.transfer_retry_s if answered else self.retry_s
        pair.state, pair.reason, pair.request = "deferred", reason, None
        pair.next_at = now + wait
        expires = self._expires_at(msg)
        self._timer(pair.next_at if now >= expires else min(pair.next_at, expires), msg.msg_id)
        return [log("mta.deferred", msg_id=msg.msg_id, rcpt=pair.rcpt, reason=reason, retry_in_ms=int(wait * 1000))]
