"""What an MTA does with a final failure: the NDR (or, for legacy in the KB's window, nothing),
and a report's own end (nodes.mta.core's docstring has the builds).

Reports. An NDR travels as a message of its own to the originator, with a time-out of its own,
longer than any message's (Settings.report_expire_s). A report that finally cannot be delivered
(its time-out passed while the originator's store was down, her entry vanished, a routing loop)
is never dropped: a copy of it goes to the postmaster mailbox of this MTA's own store (a double
bounce), and that copy never times out: it waits for the store however long it takes. Every
build does this; legacy's loss in the KB's window is that it makes no report at all.
"""

from __future__ import annotations

from typing import Any

from protocol.messages import StoreDeliver
from protocol.names import POSTMASTER, postmaster_id, report_id

from ..config import Settings
from ..core import Send, log
from ..mail import compose_ndr, compose_postmaster, dsn_of
from .queue import Pair, PersistMessage, QueuedMessage

NEVER = float("inf")  # a postmaster copy's time-out


class Reports:
    """Final failures and reports, for MtaCore (nodes.mta.core), whose state they share."""

    server: str
    build: str
    site: str
    settings: Settings
    queue: dict[str, QueuedMessage]
    seen: Any
    cache: Any
    ids: Any

    def _fail(self, msg: QueuedMessage, pairs: list[Pair], reason: str, now: float) -> list:
        for pair in pairs:
            pair.state, pair.reason, pair.request = "failed", reason, None
        if msg.report is not None:  # a postmaster copy never fails: it waits for its store
            return [a for p in pairs for a in self._defer(msg, p, now, f"not delivered to the postmaster: {reason}")]
        rcpts = [p.rcpt for p in pairs]
        if msg.ndr_for is not None:
            # no report is made about a report: the report itself goes to the postmaster
            return self._give_to_postmaster(msg, pairs, reason, now)
        silent: list = []
        if self.build == "legacy":
            # the flaw of KB Q248839: the alternate's copy (deliver to both) is taken for the
            # primary's report, so the primary's failure is reported to nobody
            copies = {p.rcpt: self._alternate_copy(msg, p) for p in pairs}
            silent = [log("mta.failed", level="warning", msg_id=msg.msg_id, rcpt=rcpt, reason=reason, report="none",
                          cache_usn=self.cache.usn, why=f"legacy: the alternate {alt} was given a copy")
                      for rcpt, alt in copies.items() if alt]
            if len(silent) == len(pairs):
                return silent + self._progress(msg)
            rcpts = [rcpt for rcpt, alt in copies.items() if not alt]
        declined = self._declined(msg, rcpts)
        if declined:
            silent += [log("mta.failed", level="warning", msg_id=msg.msg_id, rcpt=rcpt, reason=reason, report="none",
                           notify=notify, cache_usn=self.cache.usn,
                           why=f"the sender asked for no report of a failure (RFC 3461 NOTIFY={','.join(notify)})")
                       for rcpt, notify in declined.items()]
            rcpts = [r for r in rcpts if r not in declined]
            if not rcpts:
                return silent + self._progress(msg)
        ndr_id = report_id(msg.msg_id, rcpts)
        raw = compose_ndr(ndr_id, self.server, msg.raw, msg.msg_id, msg.sender, [(r, reason) for r in rcpts],
                          msg.accepted_at, now, site=self.site)
        fresh = ndr_id not in self.queue and ndr_id not in self.seen
        actions: list = silent
        if fresh:
            ndr = QueuedMessage(ndr_id, f"postmaster.{self.server}", raw, now, msg.msg_id, rcpts,
                                {msg.sender: Pair(msg.sender)})
            self.queue[ndr_id] = ndr
            actions.append(PersistMessage(ndr_id, ndr.to_record()))  # the report is durable first
        actions += [log("mta.failed", level="warning", msg_id=msg.msg_id, rcpt=r, reason=reason, report="ndr",
                        ndr_id=ndr_id, cache_usn=self.cache.usn) for r in rcpts]
        actions += [log("mta.ndr_queued", msg_id=ndr_id, ndr_for=msg.msg_id, rcpts=rcpts, to=msg.sender)]
        actions += self._progress(msg)
        if fresh:
            actions += self._route(ndr, ndr.pairs[msg.sender], now)
        return actions

    @staticmethod
    def _declined(msg: QueuedMessage, rcpts: list[str]) -> dict[str, list[str]]:
        """The recipients whose failure the sender asked not to hear of (RFC 3461: NOTIFY=NEVER,
        or a NOTIFY without FAILURE), given over SMTP for them or, for an alternate's copy, for
        the recipient it stands for: each with its NOTIFY."""
        dsn = dsn_of(msg.raw)["rcpts"]
        if not dsn:
            return {}
        found = {}
        for rcpt in rcpts:
            pair = msg.pairs.get(rcpt)
            notify = dsn.get(rcpt, dsn.get(pair.alt_of if pair else "", {})).get("notify") or set()
            if notify and "FAILURE" not in notify:
                found[rcpt] = sorted(notify)
        return found

    def _give_to_postmaster(self, report: QueuedMessage, pairs: list[Pair], reason: str, now: float) -> list:
        """A report that cannot reach its addressee: a copy of it for this MTA's own postmaster
        mailbox, durable before the report's failure is (so neither is lost without the other)."""
        actions: list = []
        for pair in pairs:
            pm_id = postmaster_id(report.msg_id)
            fresh = pm_id not in self.queue and pm_id not in self.seen
            if fresh:
                raw = compose_postmaster(pm_id, self.server, report.raw, report.msg_id, report.ndr_for or "",
                                         pair.rcpt, reason, now, site=self.site)
                copy = QueuedMessage(pm_id, f"postmaster.{self.server}", raw, now, report.ndr_for,
                                     list(report.ndr_rcpts), {POSTMASTER: Pair(POSTMASTER)}, report=report.msg_id)
                self.queue[pm_id] = copy
                actions.append(PersistMessage(pm_id, copy.to_record()))
            actions.append(log("mta.failed", level="warning", msg_id=report.msg_id, rcpt=pair.rcpt, reason=reason,
                               report="postmaster", postmaster_id=pm_id, ndr_for=report.ndr_for,
                               ndr_rcpts=report.ndr_rcpts,
                               why="a report that cannot be delivered goes to the postmaster"))
            if fresh:
                actions += self._route(copy, copy.pairs[POSTMASTER], now)
        return actions + self._progress(report)

    def _to_own_postmaster(self, msg: QueuedMessage, pair: Pair, now: float) -> list:
        """A postmaster copy (its one pair is the postmaster's) goes to this server's own store,
        never through the directory; it has no time-out, and no answer fails it: it is tried again
        until the store takes it."""
        pair.attempts += 1
        return [log("mta.routed", msg_id=msg.msg_id, rcpt=pair.rcpt, home_server=self.server, via="postmaster",
                    entry_usn=None, cache_usn=self.cache.usn, attempt=pair.attempts),
                self._deliver_here(msg, pair, self.ids.next(), now)]

    def _deliver_here(self, msg: QueuedMessage, pair: Pair, request: str, now: float) -> Send:
        """Ask this server's store to deliver the pair, with the message's time-out."""
        self._await(msg, pair, "delivering", request, now)
        return Send(f"store.{self.server}", "store.deliver",
                    StoreDeliver(msg.msg_id, pair.rcpt, msg.raw, msg.ndr_for, msg.ndr_rcpts, self._expires_at(msg)),
                    request, msg.msg_id)

    def _expires_at(self, msg: QueuedMessage) -> float:
        """When the message times out: its acceptance plus its priority's time-out; a report's own
        (longer) time-out; never, for a postmaster copy."""
        if msg.report is not None:
            return NEVER
        if msg.ndr_for is not None:
            return msg.accepted_at + self.settings.report_expire_s()
        return msg.accepted_at + self.settings.expire_s(msg.priority)

    @staticmethod
    def _alternate_copy(msg: QueuedMessage, pair: Pair) -> str | None:
        """The alternate of `pair`'s recipient that was given a copy of the message (deliver to
        both): here (its pair exists and has not failed), or upstream, as the transfer said."""
        if pair.alt_copy:
            return pair.alt_copy
        return next((p.rcpt for p in msg.pairs.values() if p.alt_of == pair.rcpt and p.state != "failed"), None)
