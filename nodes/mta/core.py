"""The MTA of one server: accept, expand alternates, route, defer, retry, report.

The core dispatches; each part owns its state and is handed what it reads:
  Queue          (nodes.mta.queue)     the messages, their timers, open requests, what was finished
  Router         (nodes.mta.router)    where a pair goes: a decision, which the core carries out
  Reporter       (nodes.mta.reports)   a final failure: the NDR, the postmaster's copy, or nothing
  DirectoryFeed  (nodes.mta.feed)      the directory's snapshot and feed, into the cache
  Outside        (nodes.mta.external)  the server's IMS: lookups, SMTP submissions, relays
What is here: accepting, the answers that settle a pair, and carrying out a decision. When the
store answers "not_here" for a mailbox the cache still homes on this server, the three builds
part ways (docs/DESIGN.md):

  legacy   the alternate's copy counts as the report: when a recipient whose alternate (deliver
           to both) was given a copy of the message fails, no NDR is sent, wherever that copy
           went (delivered here, handed to a peer MTA, or expanded upstream by the MTA that
           handed this one the message, as the transfer says). The pair is lost and nobody
           knows (KB Q248839). Any other final failure gets an NDR, as in sp4 (Q172364).
  sp4      reports are per recipient: every final failure sends an RFC 3464 NDR.
  reroute  asks the directory itself, past the cache, and reroutes to the new home; an NDR
           only when the recipient really cannot be reached.
"""

from __future__ import annotations

from typing import Any, Iterator

from protocol import messages
from protocol.messages import MtaTransfer, Outcome, StoreDeliver, TransferRcpt

from ..config import BUILDS
from ..core import (
    DiskSpace,
    Feed,
    Ids,
    Reply,
    Request,
    Response,
    Room,
    Send,
    error,
    log,
)
from ..node_settings import MtaSettings
from .cache import DirectoryCache
from .external import Outside
from .feed import DIRECTORY, DirectoryFeed
from .intake import MAX_RECIPIENTS, Intake
from .queue import (
    NEVER,
    WAITING,
    Pair,
    PersistMessage,
    Queue,
    QueuedMessage,
    State,
    alternate_copy,
)
from .queue import listing as queue_listing
from .reports import Reporter
from .router import (
    MAX_CYCLES,
    OUTSIDE,
    POSTMASTER_COPY,
    AskDirectory,
    Fail,
    Reroute,
    Route,
    Router,
    Wait,
)

__all__ = ["MAX_CYCLES", "MAX_RECIPIENTS", "NEVER", "MtaCore"]


class MtaCore:
    def __init__(
        self,
        server: str,
        settings: MtaSettings,
        boot: str,
        queued: list[QueuedMessage] | None = None,
        remembered: list[tuple[str, dict[str, int], float]] | None = None,
    ):
        if settings.build not in BUILDS:
            raise ValueError(f"unknown MTA build '{settings.build}'")
        self.server = server
        self.build = settings.build
        self.max_queue = settings.max_queue
        self.room = Room(f"mta.{server}", settings.min_free_bytes)
        # its cache's lag is this server's: the replication lag, its rank's step, its site's
        # connector (nodes.node_settings); its jitter is drawn from a seed of its own
        self.cache = DirectoryCache(settings.cache_lag_ms, settings.cache_jitter_ms, settings.cache_seed,
                                    settings.cache_ttl_ms)
        self._lag = (self.cache.lag_s, self.cache.jitter_s)  # as configured: a clear of the faults restores it
        self.ids = Ids(f"mta.{server}", boot)
        self._wake: float | None = None
        self.queue = Queue(settings, queued or [], remembered or [], self._wake_at)
        self.feed = DirectoryFeed(self.cache, self.ids, self.queue.timeout_s, self._wake_at)
        self.router = Router(server, self.build, settings.servers, self.cache)
        self.reporter = Reporter(server, self.build, settings.site, self.queue, self.cache)
        self.intake = Intake(server, boot, self.cache, self.queue, self.room, self._route)
        self.outside = Outside(server, settings.smtp, self.cache, self.ids, self.queue, self.intake.accept, self._fail)

    @property
    def ready(self) -> bool:
        return self.cache.initialized

    # --- the core contract ------------------------------------------------------------------

    def start(self, now: float) -> list:
        return [self.feed.ask_snapshot(now), log("mta.starting", build=self.build, queued=len(self.queue))]

    def next_wakeup(self) -> float | None:
        return self._wake

    def status(self, now: float) -> dict[str, Any]:
        queue = self.queue
        pairs = [p for m in queue.values() for p in m.pairs.values() if not p.final]
        return {
            "server": self.server,
            "build": self.build,
            "ready": self.ready,
            "cache_usn": self.cache.view_usn(now),  # what every read sees now (replication and read cache)
            "replica_usn": self.cache.usn,
            "received_usn": self.cache.received_usn,
            "directory_usn": self.feed.directory_usn,
            "pending_changes": self.cache.pending_count(),
            "directory_regressed": self.feed.regressed,
            "messages": len(queue),
            "recovered": queue.recovered,
            "open_pairs": len(pairs),
            "deferred": sum(p.state == State.DEFERRED for p in pairs),
            "in_flight": sum(p.state in WAITING for p in pairs),
            "remembered": len(queue.seen),  # finished messages kept to refuse a retransmission
            "postmaster": sum(m.report is not None for m in queue.values()),  # double bounces on their way
            "free_bytes": self.room.free_bytes,
            "lag_ms": round(self.cache.lag_s * 1000),
            # a lag fault in force: the lag and jitter it set, beside the configured ones
            **({"lag_fault": {"lag_ms": round(self.cache.lag_s * 1000), "jitter_ms": round(self.cache.jitter_s * 1000),
                              "configured_ms": round(self._lag[0] * 1000)}}
               if (self.cache.lag_s, self.cache.jitter_s) != self._lag else {}),
        }

    def on_event(self, event: Any, now: float) -> list:
        if isinstance(event, Request):
            if event.frame.type == "fault.lag":
                return self._set_lag(event, event.frame.body)
            if event.frame.type == "mta.queue":
                items, total = queue_listing(self.queue.messages, now, max(0, event.frame.body.limit),
                                             self.queue.lifetimes)
                return [Reply(event.peer, event.frame.id, "mta.queue_listing", {"items": items, "total": total})]
            handler = {
                "mta.submit": self.intake.submit,
                "mta.submit_raw": self.outside.submit_raw,
                "mta.lookup": self.outside.lookup,
                "mta.transfer": self.intake.transfer_in,
                "mta.relay_failed": self.outside.relay_failed,
                "store.released": self._released,
            }.get(event.frame.type)
            if handler is None:
                return error(event, f"the MTA does not handle '{event.frame.type}'")
            if not self.ready:
                return error(event, f"mta.{self.server} is starting: its directory cache is not loaded yet")
            if event.frame.type not in ("store.released", "mta.lookup"):
                if len(self.queue.messages) >= self.max_queue:
                    # a bounded queue: the sender keeps the message and tries again later
                    return error(event, f"busy: mta.{self.server} holds {len(self.queue)} messages, retry later")
                if self.room.low:
                    # a full disk: the sender (a client, a peer MTA) keeps the message and tries
                    # again; what this MTA holds already stays and is delivered
                    return error(event, self.room.refusal())
            return handler(event, event.frame.body, now)
        if isinstance(event, Feed):
            return self.feed.feed(event.frame.type, event.frame.body, now)
        if isinstance(event, DiskSpace):
            return self.room.measured(event.free_bytes)
        if isinstance(event, Response):
            return self._response(event.frame, now)
        return []

    def clear_faults(self) -> None:
        """`xcon fault clear`: the configured replication lag again."""
        self.cache.lag_s, self.cache.jitter_s = self._lag

    def _set_lag(self, req: Request, body: messages.FaultLag) -> list:
        """Change the replication lag from now on (a fault a campaign can inject)."""
        self.cache.set_lag(body.lag_ms, body.jitter_ms)
        return [Reply(req.peer, req.frame.id, "ok", {}),
                log("fault.applied", level="warning", type="fault.lag", by=req.frame.src, lag_ms=body.lag_ms,
                    jitter_ms=body.jitter_ms)]

    def tick(self, now: float) -> list:
        queue = self.queue
        queue.prune_seen(now)
        actions = self.feed.tick(now)
        for msg in queue.due(now):
            for pair in list(msg.pairs.values()):
                actions += self._due(msg, pair, now)
            actions += queue.retire_if_done(msg)
        self._recompute_wake()
        return actions

    def _due(self, msg: QueuedMessage, pair: Pair, now: float) -> list:
        """What a pair's timer brings: its deadline passed, its time-out, or its retry."""
        if pair.state in WAITING and now >= pair.deadline:
            self.queue.forget(pair)
            pair.unconfirmed = pair.unconfirmed or pair.state in (State.DELIVERING, State.RELAYING)
            return self.queue.defer(msg, pair, now, f"no answer within {self.queue.timeout_s:g}s", answered=False)
        if pair.state in (State.DEFERRED, State.QUEUED) and now >= self.queue.expires_at(msg):
            if not (pair.unconfirmed or pair.handed_to is not None):
                return self._fail(msg, pair, "expired", now)
            # a delivery that went unanswered may have landed, or may still land (a store that
            # was down takes what waited for it); an unacknowledged hand-off may be the peer's:
            # the time-out is the store's or the peer's to state (it refuses an expired message
            # it does not hold), not this MTA's to assume. It asks at its retry interval, like
            # any retry.
            if pair.state == State.QUEUED or now >= pair.next_at:
                return [log("mta.retry", msg_id=msg.msg_id, rcpt=pair.rcpt,
                            reason="expired: asking whether an earlier attempt landed"), *self._route(msg, pair, now)]
            self.queue.timer(pair.next_at, msg.msg_id)  # the time-out came first: ask then
            return []
        if pair.state == State.DEFERRED and now >= pair.next_at:
            return [log("mta.retry", msg_id=msg.msg_id, rcpt=pair.rcpt, reason="retry timer"),
                    *self._route(msg, pair, now)]
        return []

    def _released(self, req: Request, body: messages.StoreReleased, now: float) -> list:
        mailbox = body.mailbox
        actions: list = [Reply(req.peer, req.frame.id, "ok", messages.OK), log("mta.released", mailbox=mailbox)]
        for msg in list(self.queue.values()):
            pair = msg.pairs.get(mailbox)
            if pair is not None and pair.state == State.DEFERRED:
                actions.append(log("mta.retry", msg_id=msg.msg_id, rcpt=mailbox, reason="mailbox released",
                                   cache_usn=self.cache.usn))
                actions += self._route(msg, pair, now)
        return actions

    # --- routing: a decision, carried out ----------------------------------------------------

    def _route(self, msg: QueuedMessage, pair: Pair, now: float) -> list:
        decision = self.router.decide(msg, pair, now, self.ready)
        if decision is POSTMASTER_COPY:
            return self._to_own_postmaster(msg, pair, now)
        if decision is OUTSIDE:
            return self.outside.relay(msg, pair, now)
        if isinstance(decision, Wait):
            return self.queue.defer(msg, pair, now, decision.reason, decision.answered)
        if pair.handed_to is not None:
            pair.resent = True  # sent to the same peer again (Pair.resent)
        if isinstance(decision, Fail):
            return [*decision.why, *self._fail(msg, pair, decision.reason, now)]
        return self._go(msg, pair, decision, now)

    def _go(self, msg: QueuedMessage, pair: Pair, route: Route, now: float) -> list:
        entry = route.entry
        pair.attempts += 1
        request = self.ids.next()
        routed = log("mta.routed", msg_id=msg.msg_id, rcpt=pair.rcpt, home_server=entry["home_server"],
                     via=route.via, entry_usn=entry["usn"], cache_usn=self.cache.usn, attempt=pair.attempts)
        if route.to == "here":
            return [routed, self._deliver_here(msg, pair, request, now)]
        if route.to != "peer":  # no_route, loop
            return [routed, *self._fail(msg, pair, route.to, now)]
        home = entry["home_server"]
        self.queue.await_answer(msg, pair, State.TRANSFERRING, request, now)
        first_hand_off = pair.handed_to is None
        pair.handed_to, pair.hint = f"mta.{home}", entry
        # the hand-off is on disk before the transfer leaves, so a restart sends it to the same peer
        durable = [PersistMessage(msg.msg_id, msg.to_record())] if first_hand_off else []
        rcpt = TransferRcpt(pair.rcpt, pair.alt_of, entry, pair.hops + 1, pair.unconfirmed,
                            alternate_copy(msg, pair), route.cycles)
        return [routed, *durable, Send(f"mta.{home}", "mta.transfer",
                                       MtaTransfer(msg.msg_id, msg.sender, msg.raw, msg.accepted_at, msg.ndr_for,
                                                   msg.ndr_rcpts, msg.priority, [rcpt]), request, msg.msg_id)]

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
        self.queue.await_answer(msg, pair, State.DELIVERING, request, now)
        return Send(f"store.{self.server}", "store.deliver",
                    StoreDeliver(msg.msg_id, pair.rcpt, msg.raw, msg.ndr_for, msg.ndr_rcpts,
                                 self.queue.expires_at(msg)), request, msg.msg_id)

    def _fail(self, msg: QueuedMessage, pair: Pair, reason: str, now: float) -> list:
        """A final failure (nodes.mta.reports), and the report or postmaster copy it made, routed."""
        failure = self.reporter.fail(msg, pair, reason, now)
        made = failure.made
        routed = self._route(made, next(iter(made.pairs.values())), now) if made is not None else []
        return [*failure.actions, *routed, *failure.after]

    # --- answers --------------------------------------------------------------------------------

    def _response(self, frame: Any, now: float) -> list:
        if frame.type == "dir.snapshot_reply":
            actions, first = self.feed.snapshot(frame, now)
            if first:
                actions.append(log("mta.ready", cache_usn=self.cache.usn, queued=len(self.queue)))
                for msg in list(self.queue.values()):  # recovered from disk: route again
                    for pair in list(msg.pairs.values()):
                        if pair.state == State.QUEUED:
                            actions += self._route(msg, pair, now)
            return actions
        located = self.queue.answered(frame.re)
        if located is None:
            return [log("mta.late_answer", level="debug", re=frame.re, type=frame.type)]
        msg, pair = located
        body = frame.body
        if frame.type == "error":
            if not pair.resent:
                pair.handed_to = None  # the peer refused the only copy it was sent: it does not own the pair
            return self.queue.defer(msg, pair, now, f"{frame.src}: {body.reason}")
        if frame.type == "store.result" and pair.state == State.DELIVERING:
            outcome = body.outcome
            if outcome in (Outcome.DELIVERED, Outcome.DUPLICATE):
                pair.state = State.DELIVERED
                return [log("mta.delivered", msg_id=msg.msg_id, rcpt=pair.rcpt, duplicate=outcome == Outcome.DUPLICATE),
                        *self.queue.progress(msg)]
            if outcome == Outcome.DEFERRED or msg.report is not None:  # a postmaster copy waits, whatever the answer
                return self.queue.defer(msg, pair, now, body.reason)
            if outcome == Outcome.EXPIRED:
                # the store has no copy and will take none: every attempt still on its way is
                # refused too (it carries the same time-out), so the NDR cannot meet a delivery
                return self._fail(msg, pair, "expired", now)
            # not_here, or soft_deleted: a mailbox the recipient was moved away from (KB 2579150)
            return self._not_here(msg, pair, now, "soft_deleted" if outcome == Outcome.SOFT_DELETED else "moved")
        if frame.type == "ok" and pair.state == State.RELAYING:
            return self.outside.relayed(msg, pair, frame)
        if frame.type == "mta.transfer_ack" and pair.state == State.TRANSFERRING:
            pair.state, pair.handed_to, pair.resent = State.TRANSFERRED, None, False
            return [log("mta.transferred", msg_id=msg.msg_id, rcpt=pair.rcpt, to=frame.src), *self.queue.progress(msg)]
        if frame.type == "dir.entry" and pair.state == State.RESOLVING:
            entry = body.recipient
            if entry is not None:
                pair.hint = entry
            return self._decided(msg, pair, self.router.resolved(msg, pair, entry, now >= self.queue.expires_at(msg)),
                                 now)
        return self.queue.defer(msg, pair, now, f"unexpected answer '{frame.type}' from {frame.src}")

    def _not_here(self, msg: QueuedMessage, pair: Pair, now: float, reason: str) -> list:
        return self._decided(msg, pair, self.router.not_here(msg, pair, now, reason, self.feed.directory_usn), now)

    def _decided(self, msg: QueuedMessage, pair: Pair, decision: Any, now: float) -> list:
        """The router's decision after the store had no mailbox, or the directory answered."""
        if isinstance(decision, Reroute):
            return [*decision.why, *self._route(msg, pair, now)]
        if isinstance(decision, AskDirectory):
            request = self.ids.next()
            self.queue.await_answer(msg, pair, State.RESOLVING, request, now)
            return [*decision.why, Send(DIRECTORY, "dir.lookup", {"alias": pair.rcpt}, request, msg.msg_id)]
        if isinstance(decision, Wait):
            return [*decision.why, *self.queue.defer(msg, pair, now, decision.reason, decision.answered)]
        return [*decision.why, *self._fail(msg, pair, decision.reason, now)]

    def durable_state(self) -> tuple[Iterator[dict], Iterator[tuple[str, dict[str, int], float]]]:
        return self.queue.durable_state()

    # --- wake-ups ---------------------------------------------------------------------------

    def _wake_at(self, at: float | None) -> None:
        if at is not None and (self._wake is None or at < self._wake):
            self._wake = at

    def _recompute_wake(self) -> None:
        queue = self.queue
        times = [self.cache.next_apply(), queue.next_prune if len(queue.seen) else None,
                 self.feed.next_wakeup(), queue.next_timer()]
        times = [t for t in times if t is not None]
        self._wake = min(times) if times else None
