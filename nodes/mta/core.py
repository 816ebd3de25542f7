"""The MTA of one server: accept, expand alternates, route, defer, retry, report.

It is made of three parts besides what is here (accepting, the timers, the queue): routing and
the answers that settle a pair (nodes.mta.routing), final failures and reports
(nodes.mta.reports), and the directory's snapshot and feed (nodes.mta.feed). When the store
answers "not_here" for a mailbox the cache still homes on this server, the three builds part
ways (docs/DESIGN.md):

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

import heapq
import itertools
from typing import Any, Callable, Iterator

from protocol import INVALID, MAX_MESSAGE_BYTES, PRIORITIES, messages
from protocol.names import MSG_ID_RULE, generated_id, valid_msg_id, valid_submitted_id

from ..config import BUILDS, Settings
from ..core import DiskSpace, Feed, Ids, Reply, Request, Response, Room, error, log
from ..mail import compose, external
from .cache import DirectoryCache
from .external import External
from .feed import DirectoryFeed
from .queue import WAITING, Pair, PersistMessage, QueuedMessage, RetireMessage
from .queue import listing as queue_listing
from .reports import NEVER, Reports
from .routing import MAX_CYCLES, Routing
from .seen import Seen

MAX_RECIPIENTS = 500
__all__ = ["MAX_CYCLES", "MAX_RECIPIENTS", "NEVER", "MtaCore"]


class MtaCore(Routing, Reports, DirectoryFeed, External):
    def __init__(
        self,
        server: str,
        settings: Settings,
        boot: str,
        queued: list[QueuedMessage] | None = None,
        remembered: list[tuple[str, dict[str, int], float]] | None = None,
    ):
        if settings.mta_build not in BUILDS:
            raise ValueError(f"unknown MTA build '{settings.mta_build}'")
        self.server = server
        self.build = settings.mta_build
        self.retry_s = settings.retry_ms / 1000  # after no answer (5.5's open interval)
        # after an answer that defers (a locked mailbox, a busy peer: 5.5's transfer interval)
        self.transfer_retry_s = (settings.transfer_retry_ms if settings.transfer_retry_ms is not None
                                 else settings.retry_ms) / 1000
        self.settings = settings
        self.expire_s = max(settings.expire_s(p) for p in PRIORITIES)  # the longest time-out
        self.timeout_s = settings.request_timeout_ms / 1000
        self.max_queue = settings.max_queue
        self.room = Room(f"mta.{server}", settings.min_free_bytes)
        # each MTA draws its own jitter from the cluster seed
        # the directory replicates to the servers one after the other: each further server hears
        # of a change replication_step_ms later (5.5's "Pause Between DSAs", Q137203)
        rank = settings.servers.index(server) if server in settings.servers else 0
        # and a server in another site than the directory's (the first server's) hears of it over
        # the site connector, intersite_lag_ms later
        self.site = settings.site_of(server)
        remote = settings.servers and self.site != settings.site_of(settings.servers[0])
        self.cache = DirectoryCache(settings.replication_lag_ms + rank * settings.replication_step_ms
                                    + (settings.intersite_lag_ms if remote else 0),
                                    settings.replication_jitter_ms, settings.seed * 1000 + sum(map(ord, server)),
                                    settings.read_cache_ttl_ms)
        self._lag = (self.cache.lag_s, self.cache.jitter_s)  # as configured: a clear of the faults restores it
        self.ids = Ids(f"mta.{server}", boot)
        self._boot, self._submitted = boot, 0
        self.queue: dict[str, QueuedMessage] = {m.msg_id: m for m in queued or []}
        self.recovered = len(self.queue)  # messages this run found in the queue log at start
        self.remember_s = 2 * self.expire_s + 60
        # the pairs this MTA finished: a transfer of a pair with no more hops than remembered is
        # a retransmission, one with more is the pair coming back after a reroute (nodes.mta.seen)
        self.seen = Seen(self.remember_s, remembered or ())
        self._next_prune = 0.0
        self.requests: dict[str, tuple[str, str]] = {}  # request id -> (msg_id, rcpt)
        self._snapshot_req: str | None = None
        self._snapshot_deadline = 0.0
        self._wake: float | None = None
        # (at, seq, msg_id): a message that has a pair's deadline, retry or expiry due then. An
        # entry may be stale (the pair moved on); tick looks at the message again and finds
        # nothing to do. Without it, every timer meant a scan of the whole queue.
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq = itertools.count()
        for msg in self.queue.values():  # recovered: each expires in its time, routed or not
            self._timer(self._expires_at(msg), msg.msg_id)
        self.directory_usn = 0  # as last heard in a heartbeat
        # a USN the directory announced below what this cache had received: its state went back (a
        # lost file, a restore); the MTA keeps its view and says so, once per such USN
        self.regressed: int | None = None

    @property
    def ready(self) -> bool:
        return self.cache.initialized

    # --- the core contract ------------------------------------------------------------------

    def start(self, now: float) -> list:
        return [self._ask_snapshot(now), log("mta.starting", build=self.build, queued=len(self.queue))]

    def next_wakeup(self) -> float | None:
        return self._wake

    def status(self, now: float) -> dict[str, Any]:
        pairs = [p for m in self.queue.values() for p in m.pairs.values() if not p.final]
        return {
            "server": self.server,
            "build": self.build,
            "ready": self.ready,
            "cache_usn": self.cache.view_usn(now),  # what every read sees now (replication and read cache)
            "replica_usn": self.cache.usn,
            "received_usn": self.cache.received_usn,
            "directory_usn": self.directory_usn,
            "pending_changes": self.cache.pending_count(),
            "directory_regressed": self.regressed,
            "messages": len(self.queue),
            "recovered": self.recovered,
            "open_pairs": len(pairs),
            "deferred": sum(p.state == "deferred" for p in pairs),
            "in_flight": sum(p.state in WAITING for p in pairs),
            "remembered": len(self.seen),  # finished messages kept to refuse a retransmission
            "postmaster": sum(m.report is not None for m in self.queue.values()),  # double bounces on their way
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
                items, total = queue_listing(self.queue, now, max(0, event.frame.body.limit))
                return [Reply(event.peer, event.frame.id, "mta.queue_listing", {"items": items, "total": total})]
            handler = {
                "mta.submit": self._submit,
                "mta.submit_raw": self._submit_raw,
                "mta.lookup": self._lookup,
                "mta.transfer": self._transfer_in,
                "mta.relay_failed": self._relay_failed,
                "store.released": self._released,
            }.get(event.frame.type)
            if handler is None:
                return error(event, f"the MTA does not handle '{event.frame.type}'")
            if not self.ready:
                return error(event, f"mta.{self.server} is starting: its directory cache is not loaded yet")
            if event.frame.type not in ("store.released", "mta.lookup"):
                if len(self.queue) >= self.max_queue:
                    # a bounded queue: the sender keeps the message and tries again later
                    return error(event, f"busy: mta.{self.server} holds {len(self.queue)} messages, retry later")
                if self.room.low:
                    # a full disk: the sender (a client, a peer MTA) keeps the message and tries
                    # again; what this MTA holds already stays and is delivered
                    return error(event, self.room.refusal())
            return handler(event, event.frame.body, now)
        if isinstance(event, Feed):
            return self._feed(event.frame.type, event.frame.body, now)
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

    def _prune_seen(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._next_prune = now + 10  # cheap: only what is due is looked at
        self.seen.prune(now)

    def tick(self, now: float) -> list:
        self._prune_seen(now)
        actions: list = []
        for entry in self.cache.apply_due(now):
            actions.append(log("mta.cache_applied", usn=entry["usn"], alias=entry["alias"],
                               home_server=entry["home_server"], alternate=entry["alternate"]))
        if self._snapshot_req and now >= self._snapshot_deadline:
            actions.append(self._ask_snapshot(now))
        due = {}
        while self._timers and self._timers[0][0] <= now:
            due[heapq.heappop(self._timers)[2]] = True
        for msg in [self.queue[m] for m in due if m in self.queue]:
            for pair in list(msg.pairs.values()):
                if pair.state in WAITING and now >= pair.deadline:
                    self.requests.pop(pair.request or "", None)
                    pair.unconfirmed = pair.unconfirmed or pair.state in ("delivering", "relaying")
                    actions += self._defer(msg, pair, now, f"no answer within {self.timeout_s:g}s", answered=False)
                elif pair.state in ("deferred", "queued") and now >= self._expires_at(msg):
                    if pair.unconfirmed or pair.handed_to is not None:
                        # a delivery that went unanswered may have landed, or may still land (a
                        # store that was down takes what waited for it); an unacknowledged hand-off
                        # may be the peer's: the time-out is the store's or the peer's to state
                        # (it refuses an expired message it does not hold), not this MTA's to
                        # assume. It asks at its retry interval, like any retry.
                        if pair.state == "queued" or now >= pair.next_at:
                            actions.append(log("mta.retry", msg_id=msg.msg_id, rcpt=pair.rcpt,
                                               reason="expired: asking whether an earlier attempt landed"))
                            actions += self._route(msg, pair, now)
                        else:
                            self._timer(pair.next_at, msg.msg_id)  # the time-out came first: ask then
                    else:
                        actions += self._fail(msg, [pair], "expired", now)
                elif pair.state == "deferred" and now >= pair.next_at:
                    actions.append(log("mta.retry", msg_id=msg.msg_id, rcpt=pair.rcpt, reason="retry timer"))
                    actions += self._route(msg, pair, now)
            actions += self._retire_if_done(msg)
        self._recompute_wake()
        return actions

    # --- accepting --------------------------------------------------------------------------

    def _submit(self, req: Request, body: messages.MtaSubmit, now: float) -> list:
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
        return self._accept(req, msg_id, sender, recipients, priority, now,
                            lambda: compose(msg_id, sender, recipients, body.subject, body.body, now, priority))

    def _accept(self, req: Request, msg_id: str, sender: str, recipients: list[str], priority: str, now: float,
                make_raw: Callable[[], bytes], **facts: Any) -> list:
        """Take a submission whose fields were checked (mta.submit's, or the IMS's mta.submit_raw):
        once by its id, durable before the acknowledgement; `facts` go on its mta.accepted line."""
        known = self.queue.get(msg_id)
        if known is not None and known.sender != sender:
            return error(req, f"message id '{msg_id}' belongs to another message (from {known.sender}); choose another",
                         INVALID)
        if known is not None or msg_id in self.seen:
            # a retried submission: accepted already, say so again (idempotent by message id). It
            # is logged again: a node killed between the message's durable write and its first
            # acceptance line delivered a message no line said was accepted
            rcpts = list(known.pairs) if known else sorted(self.seen.hops(msg_id))
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
        for pair in self._expand(recipients, now):
            msg.pairs[pair.rcpt] = pair
        self.queue[msg_id] = msg
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

    def _expand(self, recipients: list[str], now: float) -> list[Pair]:
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

    def _transfer_in(self, req: Request, body: messages.MtaTransfer, now: float) -> list:
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
        fresh = [p for p in incoming if p.hops > self._known_hops(msg_id, msg, p.rcpt)]
        ack = Reply(req.peer, req.frame.id, "mta.transfer_ack",
                    messages.MtaTransferAck(msg_id, [p.rcpt for p in incoming]), msg_id)
        if not fresh:
            return [ack, log("mta.transfer_duplicate", msg_id=msg_id, rcpts=[p.rcpt for p in incoming], src=req.frame.src)]
        if msg is None:
            priority = body.priority if body.priority in PRIORITIES else "normal"
            msg = QueuedMessage(msg_id, body.sender, body.raw, body.accepted_at, body.ndr_for,
                                list(body.ndr_rcpts), priority=priority)
            self.queue[msg_id] = msg
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

    def _known_hops(self, msg_id: str, msg: QueuedMessage | None, rcpt: str) -> int:
        """The hop count at which this MTA last took the pair on (-1: never)."""
        held = msg.pairs.get(rcpt) if msg else None
        return max(held.hops if held else -1, self.seen.hops(msg_id).get(rcpt, -1))

    def _released(self, req: Request, body: messages.StoreReleased, now: float) -> list:
        mailbox = body.mailbox
        actions: list = [Reply(req.peer, req.frame.id, "ok", messages.OK), log("mta.released", mailbox=mailbox)]
        for msg in list(self.queue.values()):
            pair = msg.pairs.get(mailbox)
            if pair is not None and pair.state == "deferred":
                actions.append(log("mta.retry", msg_id=msg.msg_id, rcpt=mailbox, reason="mailbox released",
                                   cache_usn=self.cache.usn))
                actions += self._route(msg, pair, now)
        return actions

    def _progress(self, msg: QueuedMessage) -> list:
        """Persist a pair's final state, and retire the message once every pair is final."""
        retired = self._retire_if_done(msg)
        return retired or [PersistMessage(msg.msg_id, msg.to_record())]

    def _retire_if_done(self, msg: QueuedMessage) -> list:
        if not msg.done or msg.msg_id not in self.queue:
            return []
        del self.queue[msg.msg_id]
        hops = {p.rcpt: p.hops for p in msg.pairs.values()}
        self.seen.add(msg.msg_id, hops, msg.accepted_at)
        return [RetireMessage(msg.msg_id, hops, msg.accepted_at),
                log("mta.retired", level="debug", msg_id=msg.msg_id,
                    outcome={p.rcpt: p.state for p in msg.pairs.values()})]

    def durable_state(self) -> tuple[Iterator[dict], Iterator[tuple[str, dict[str, int], float]]]:
        """What a compaction of the spool writes: the queued messages, and the pairs still remembered.
        Read one at a time as the compaction writes them (nothing else runs meanwhile)."""
        return ((m.to_record() for m in self.queue.values()), self.seen.items())

    # --- wake-ups ---------------------------------------------------------------------------

    def _wake_at(self, at: float | None) -> None:
        if at is not None and (self._wake is None or at < self._wake):
            self._wake = at

    def _timer(self, at: float, msg_id: str) -> None:
        heapq.heappush(self._timers, (at, next(self._timer_seq), msg_id))
        self._wake_at(at)

    def _recompute_wake(self) -> None:
        times = [self.cache.next_apply(), self._next_prune if len(self.seen) else None,
                 self._snapshot_deadline if self._snapshot_req else None,
                 self._timers[0][0] if self._timers else None]
        times = [t for t in times if t is not None]
        self._wake = min(times) if times else None


def _priority(priority: str) -> dict[str, str]:
    """An acceptance line's priority, where it is not normal (the time-out it chooses: Settings.expire_s)."""
    return {} if priority == "normal" else {"priority": priority}
