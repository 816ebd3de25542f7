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

from dataclasses import dataclass, field

from protocol.names import POSTMASTER, postmaster_id, report_id

from ..core import log
from ..mail import compose_ndr, compose_postmaster, dsn_of
from .cache import DirectoryCache
from .queue import Pair, PersistMessage, Queue, QueuedMessage, State, alternate_copy


@dataclass(slots=True)
class Failure:
    """What a pair's final failure makes: the actions that record it, the report or postmaster
    copy it made (its one pair for the core to route, None: none, or one made before), and the
    actions after that routing."""

    actions: list
    made: QueuedMessage | None = None
    after: list = field(default_factory=list)


class Reporter:
    def __init__(self, server: str, build: str, site: str, queue: Queue, cache: DirectoryCache):
        self.server, self.build, self.site, self.queue, self.cache = server, build, site, queue, cache

    def fail(self, msg: QueuedMessage, pair: Pair, reason: str, now: float) -> Failure:
        pair.state, pair.reason, pair.request = State.FAILED, reason, None
        if msg.report is not None:  # a postmaster copy never fails: it waits for its store
            return Failure(self.queue.defer(msg, pair, now, f"not delivered to the postmaster: {reason}"))
        if msg.ndr_for is not None:
            # no report is made about a report: the report itself goes to the postmaster
            return self._give_to_postmaster(msg, pair, reason, now)
        rcpt = pair.rcpt
        if self.build == "legacy":
            # the flaw of KB Q248839: the alternate's copy (deliver to both) is taken for the
            # primary's report, so the primary's failure is reported to nobody
            alt = alternate_copy(msg, pair)
            if alt:
                return Failure([log("mta.failed", level="warning", msg_id=msg.msg_id, rcpt=rcpt, reason=reason,
                                    report="none", cache_usn=self.cache.usn,
                                    why=f"legacy: the alternate {alt} was given a copy"), *self.queue.progress(msg)])
        notify = self._declined(msg, pair)
        if notify:
            return Failure([log("mta.failed", level="warning", msg_id=msg.msg_id, rcpt=rcpt, reason=reason,
                                report="none", notify=notify, cache_usn=self.cache.usn,
                                why=f"the sender asked for no report of a failure (RFC 3461 NOTIFY={','.join(notify)})"),
                            *self.queue.progress(msg)])
        ndr_id = report_id(msg.msg_id, [rcpt])
        raw = compose_ndr(ndr_id, self.server, msg.raw, msg.msg_id, msg.sender, [(rcpt, reason)],
                          msg.accepted_at, now, site=self.site)
        actions: list = []
        ndr = None
        if not self.queue.taken(ndr_id):
            ndr = QueuedMessage(ndr_id, f"postmaster.{self.server}", raw, now, msg.msg_id, [rcpt],
                                {msg.sender: Pair(msg.sender)})
            self.queue.add(ndr)
            actions.append(PersistMessage(ndr_id, ndr.to_record()))  # the report is durable first
        actions += [log("mta.failed", level="warning", msg_id=msg.msg_id, rcpt=rcpt, reason=reason, report="ndr",
                        ndr_id=ndr_id, cache_usn=self.cache.usn),
                    log("mta.ndr_queued", msg_id=ndr_id, ndr_for=msg.msg_id, rcpts=[rcpt], to=msg.sender),
                    *self.queue.progress(msg)]
        return Failure(actions, ndr)

    @staticmethod
    def _declined(msg: QueuedMessage, pair: Pair) -> list[str]:
        """The NOTIFY of a recipient whose failure the sender asked not to hear of (RFC 3461:
        NOTIFY=NEVER, or a NOTIFY without FAILURE), given over SMTP for it or, for an alternate's
        copy, for the recipient it stands for; [] when the sender asked for the report."""
        dsn = dsn_of(msg.raw)["rcpts"]
        if not dsn:
            return []
        notify = dsn.get(pair.rcpt, dsn.get(pair.alt_of or "", {})).get("notify") or set()
        return sorted(notify) if notify and "FAILURE" not in notify else []

    def _give_to_postmaster(self, report: QueuedMessage, pair: Pair, reason: str, now: float) -> Failure:
        """A report that cannot reach its addressee: a copy of it for this MTA's own postmaster
        mailbox, durable before the report's failure is (so neither is lost without the other)."""
        actions: list = []
        pm_id = postmaster_id(report.msg_id)
        copy = None
        if not self.queue.taken(pm_id):
            raw = compose_postmaster(pm_id, self.server, report.raw, report.msg_id, report.ndr_for or "",
                                     pair.rcpt, reason, now, site=self.site)
            copy = QueuedMessage(pm_id, f"postmaster.{self.server}", raw, now, report.ndr_for,
                                 list(report.ndr_rcpts), {POSTMASTER: Pair(POSTMASTER)}, report=report.msg_id)
            self.queue.add(copy)
            actions.append(PersistMessage(pm_id, copy.to_record()))
        actions.append(log("mta.failed", level="warning", msg_id=report.msg_id, rcpt=pair.rcpt, reason=reason,
                           report="postmaster", postmaster_id=pm_id, ndr_for=report.ndr_for,
                           ndr_rcpts=report.ndr_rcpts, cache_usn=self.cache.usn,
                           why="a report that cannot be delivered goes to the postmaster"))
        return Failure(actions, copy, self.queue.progress(report))
