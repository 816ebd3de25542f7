"""The MTA's queue: its messages, the state of each (message, recipient) pair, and the timers and
requests that wait on them (Queue).

Pair states (ten: nodes.mta.record.State, the list the queue log admits):
  queued       ready to route
  resolving    (reroute build) asking the directory past the cache
  delivering   waiting for the store's answer
  transferring waiting for the peer MTA's acknowledgement
  relaying     waiting for the server's IMS to take a pair for outside the organisation
  deferred     waiting until `next_at` (mailbox locked, a timeout, a peer error)
  delivered    final: in the mailbox
  transferred  final here: the peer MTA made it durable and owns it now
  relayed      final here: the IMS made it durable and relays it (nodes.ims)
  failed       final: undeliverable (with or without an NDR, as the build decides)
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..core import log
from ..node_settings import Lifetimes, MtaSettings
from .record import PairRecord, State, Whole
from .seen import Seen

NEVER = float("inf")  # a postmaster copy's time-out


@dataclass(slots=True)
class PersistMessage:
    """Make the message and its pairs' states durable before the actions that follow."""

    msg_id: str
    record: Whole


@dataclass(slots=True)
class RetireMessage:
    """Every pair is final: drop the queue file, remember (msg_id, rcpt) to refuse duplicates."""

    msg_id: str
    hops: dict[str, int]  # rcpt -> the hop count at which this MTA took the pair on
    accepted_at: float = 0.0  # when the message was first accepted: the memory is kept for a while after


# relaying/relayed: a pair for outside the organisation, handed to the server's IMS (nodes.ims)
FINAL = frozenset({State.DELIVERED, State.TRANSFERRED, State.RELAYED, State.FAILED})
WAITING = frozenset({State.RESOLVING, State.DELIVERING, State.TRANSFERRING, State.RELAYING})


@dataclass
class Pair:
    rcpt: str
    alt_of: str | None = None  # set when this pair is an alternate recipient's copy
    state: State = State.QUEUED
    hint: dict[str, Any] | None = None  # the freshest directory entry known beside the cache
    hops: int = 0
    # a transfer sent but not acknowledged: the peer may own the pair already, so it is sent
    # again to that same peer, never rerouted, until the peer answers (it dedupes by hops)
    handed_to: str | None = None
    # the transfer to handed_to has been sent more than once: a refusal (an error answer: busy,
    # starting, short of disk) answers only the copy it refuses, not an earlier one the peer may
    # have taken, so it no longer frees the pair to be rerouted; only the peer's ack settles it
    resent: bool = False
    # this recipient's alternate was given a copy upstream (deliver to both), by the MTA that
    # handed this one the pair: an X.400 envelope records such a redirection, the transfer says it
    alt_copy: str | None = None
    # a delivery to the store went unanswered: it may be in the mailbox (and moved with it), so
    # a later "not here" is not a failure until the directory says where the mailbox went
    unconfirmed: bool = False
    # routing cycles: how many transfers in a row, up to this MTA, went on directory data no newer
    # than the hop before had (nodes.mta.core: a loop); a transfer that follows a newer entry (the
    # recipient was moved) starts again at 0, so a report that follows a user moved ten times is
    # not a loop. `arrived_usn` is the USN of the entry the pair came here on (-1: submitted here)
    cycles: int = 0
    arrived_usn: int = -1
    attempts: int = 0
    next_at: float = 0.0
    reason: str = ""
    request: str | None = None
    deadline: float = 0.0

    @property
    def final(self) -> bool:
        return self.state in FINAL


@dataclass
class QueuedMessage:
    msg_id: str
    sender: str
    raw: bytes
    accepted_at: float
    ndr_for: str | None = None  # set on an NDR: the message it reports on
    ndr_rcpts: list[str] = field(default_factory=list)
    pairs: dict[str, Pair] = field(default_factory=dict)
    priority: str = "normal"  # protocol.PRIORITIES: it chooses the message's time-out
    # set on a postmaster copy: the id of the report it carries, which could not reach its
    # addressee; it goes to this MTA's own store's postmaster mailbox and never times out
    report: str | None = None

    @property
    def is_report(self) -> bool:
        """An NDR on its way to the originator (not a postmaster copy of one)."""
        return self.ndr_for is not None and self.report is None

    @property
    def done(self) -> bool:
        return all(p.final for p in self.pairs.values())

    def to_record(self) -> Whole:
        """What is persisted: everything but the in-flight bookkeeping, which a restart redoes."""
        return Whole(self.msg_id, self.sender, self.raw, self.accepted_at, self.ndr_for, list(self.ndr_rcpts),
                     self.priority, self.report,
                     [PairRecord(p.rcpt, p.alt_of, p.state, p.hint, p.hops, p.attempts, p.reason, p.handed_to, p.resent,
                                 p.unconfirmed, p.alt_copy, p.cycles, p.arrived_usn) for p in self.pairs.values()])

    @classmethod
    def from_record(cls, record: Whole) -> "QueuedMessage":
        pairs = {}
        for p in record.pairs:
            pair = Pair(p.rcpt, p.alt_of, p.state, p.hint, p.hops, p.handed_to, p.resent, p.alt_copy, p.unconfirmed,
                        p.cycles, p.arrived_usn, p.attempts, reason=p.reason)
            if not pair.final:
                # whatever was in flight is retried; the peer and the store dedupe. A delivery may
                # have happened just before the crash, so the pair is unconfirmed (see Pair)
                pair.state, pair.unconfirmed = State.QUEUED, True
            pairs[pair.rcpt] = pair
        return cls(record.msg_id, record.sender, record.raw, record.accepted_at, record.ndr_for,
                   list(record.ndr_rcpts), pairs, record.priority, record.report)


def expiry(msg: QueuedMessage, lifetimes: Lifetimes) -> float:
    """When the message times out: its acceptance plus its priority's time-out; a report's own
    (longer) time-out; never, for a postmaster copy."""
    if msg.report is not None:
        return NEVER
    if msg.ndr_for is not None:
        return msg.accepted_at + lifetimes.report_s
    return msg.accepted_at + lifetimes.of(msg.priority)


def listing(queue: dict[str, QueuedMessage], now: float, limit: int,
            lifetimes: Lifetimes | None = None) -> tuple[list[dict[str, Any]], int]:
    """What `xcon queue` shows of an MTA (as mailq shows Postfix's queue): each open pair, oldest
    message first, with its state, the reason of its last deferral or failure, its tries, when it
    is tried again (seconds from now; None when it waits on an answer, not a timer), and whether
    its message's time-out has passed (a pair still open then is asking whether an earlier
    attempt landed: its state alone said `delivering`). The first `limit` of them, and how many."""
    items: list[dict[str, Any]] = []
    total = 0
    for msg in sorted(queue.values(), key=lambda m: m.accepted_at):
        kind = "postmaster" if msg.report is not None else "ndr" if msg.ndr_for is not None else "message"
        for p in msg.pairs.values():
            if p.final:
                continue
            total += 1
            if len(items) < limit:
                items.append({"msg_id": msg.msg_id, "kind": kind, "sender": msg.sender, "rcpt": p.rcpt,
                              "alt_of": p.alt_of, "state": p.state, "reason": p.reason, "attempts": p.attempts,
                              "next_retry_s": round(max(0.0, p.next_at - now), 3) if p.state in ("deferred", "queued")
                              else None, "handed_to": p.handed_to, "age_s": round(now - msg.accepted_at, 3),
                              "priority": msg.priority,
                              "expired": lifetimes is not None and now >= expiry(msg, lifetimes)})
    return items, total


def alternate_copy(msg: QueuedMessage, pair: Pair) -> str | None:
    """The alternate of `pair`'s recipient that was given a copy of the message (deliver to
    both): here (its pair exists and has not failed), or upstream, as the transfer said."""
    if pair.alt_copy:
        return pair.alt_copy
    return next((p.rcpt for p in msg.pairs.values() if p.alt_of == pair.rcpt and p.state != State.FAILED), None)


class Queue:
    """The messages an MTA holds, with what waits on them: each open request (id -> its pair),
    the timers (a pair's deadline, retry or time-out), and the finished messages remembered to
    refuse a retransmission (nodes.mta.seen). What it does to a pair is what only it knows:
    when it times out, when it is tried again, when its message is done."""

    def __init__(self, settings: MtaSettings, queued: list[QueuedMessage], remembered: list,
                 wake_at: Callable[[float], None]):
        self.lifetimes = settings.lifetimes
        self.retry_s = settings.retry_ms / 1000  # after no answer (5.5's open interval)
        # after an answer that defers (a locked mailbox, a busy peer: 5.5's transfer interval)
        self.transfer_retry_s = settings.transfer_retry_ms / 1000
        self.timeout_s = settings.request_timeout_ms / 1000
        self.messages: dict[str, QueuedMessage] = {m.msg_id: m for m in queued}
        self.get = self.messages.get  # the dict's own, not a call through this class: the hot path's
        self.values = self.messages.values
        self.recovered = len(self.messages)  # messages this run found in the queue log at start
        self.remember_s = 2 * settings.lifetimes.longest() + 60
        # the pairs this MTA finished: a transfer of a pair with no more hops than remembered is
        # a retransmission, one with more is the pair coming back after a reroute (nodes.mta.seen)
        self.seen = Seen(self.remember_s, remembered)
        self.next_prune = 0.0
        self.requests: dict[str, tuple[str, str]] = {}  # request id -> (msg_id, rcpt)
        # (at, seq, msg_id): a message that has a pair's deadline, retry or expiry due then. An
        # entry may be stale (the pair moved on); the core looks at the message again and finds
        # nothing to do. Without it, every timer meant a scan of the whole queue.
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake_at = wake_at
        for msg in self.messages.values():  # recovered: each expires in its time, routed or not
            self.timer(self.expires_at(msg), msg.msg_id)

    # --- the messages, as a mapping ----------------------------------------------------------

    def __getitem__(self, msg_id: str) -> QueuedMessage:
        return self.messages[msg_id]

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self.messages

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, msg: QueuedMessage) -> None:
        self.messages[msg.msg_id] = msg

    def taken(self, msg_id: str) -> bool:
        """Held now, or finished and remembered: a report or copy with this id is made once."""
        return msg_id in self.messages or msg_id in self.seen

    # --- time ----------------------------------------------------------------------------------

    def expires_at(self, msg: QueuedMessage) -> float:
        """When the message times out (`expiry`)."""
        return expiry(msg, self.lifetimes)

    def timer(self, at: float, msg_id: str) -> None:
        heapq.heappush(self._timers, (at, next(self._seq), msg_id))
        self._wake_at(at)

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def due(self, now: float) -> list[QueuedMessage]:
        """The messages with a timer due by `now`, each once, in the order their timers came."""
        due: dict[str, bool] = {}
        while self._timers and self._timers[0][0] <= now:
            due[heapq.heappop(self._timers)[2]] = True
        return [self.messages[m] for m in due if m in self.messages]

    def prune_seen(self, now: float) -> None:
        if now < self.next_prune:
            return
        self.next_prune = now + 10  # cheap: only what is due is looked at
        self.seen.prune(now)

    # --- a pair's waits ------------------------------------------------------------------------

    def await_answer(self, msg: QueuedMessage, pair: Pair, state: State, request: str, now: float) -> None:
        """The pair waits on the answer to `request`, until its deadline."""
        pair.state, pair.request, pair.deadline = state, request, now + self.timeout_s
        self.requests[request] = (msg.msg_id, pair.rcpt)
        self.timer(pair.deadline, msg.msg_id)

    def answered(self, request: str | None) -> tuple[QueuedMessage, Pair] | None:
        """The pair that waits on `request`, which no longer waits (None: an answer that came late)."""
        msg_id, rcpt = self.requests.get(request or "", ("", ""))
        msg = self.messages.get(msg_id)
        pair = msg.pairs.get(rcpt) if msg else None
        if pair is None or pair.request != request:
            return None
        self.requests.pop(request or "", None)
        pair.request = None
        return msg, pair

    def forget(self, pair: Pair) -> None:
        """The pair's request will have no answer that matters (it timed out, it was handed back)."""
        self.requests.pop(pair.request or "", None)

    def defer(self, msg: QueuedMessage, pair: Pair, now: float, reason: str, answered: bool = True) -> list:
        """Try the pair again later: after the transfer interval when the other side answered and
        deferred it, after the open interval when nothing answered."""
        wait = self.transfer_retry_s if answered else self.retry_s
        pair.state, pair.reason, pair.request = State.DEFERRED, reason, None
        pair.next_at = now + wait
        expires = self.expires_at(msg)
        self.timer(pair.next_at if now >= expires else min(pair.next_at, expires), msg.msg_id)
        return [log("mta.deferred", msg_id=msg.msg_id, rcpt=pair.rcpt, reason=reason, retry_in_ms=int(wait * 1000))]

    # --- a message's end -----------------------------------------------------------------------

    def progress(self, msg: QueuedMessage) -> list:
        """Persist a pair's final state, and retire the message once every pair is final."""
        retired = self.retire_if_done(msg)
        return retired or [PersistMessage(msg.msg_id, msg.to_record())]

    def retire_if_done(self, msg: QueuedMessage) -> list:
        if not msg.done or msg.msg_id not in self.messages:
            return []
        del self.messages[msg.msg_id]
        hops = {p.rcpt: p.hops for p in msg.pairs.values()}
        self.seen.add(msg.msg_id, hops, msg.accepted_at)
        return [RetireMessage(msg.msg_id, hops, msg.accepted_at),
                log("mta.retired", level="debug", msg_id=msg.msg_id,
                    outcome={p.rcpt: p.state for p in msg.pairs.values()})]

    def known_hops(self, msg_id: str, rcpt: str) -> int:
        """The hop count at which this MTA last took the pair on (-1: never)."""
        msg = self.messages.get(msg_id)
        held = msg.pairs.get(rcpt) if msg else None
        return max(held.hops if held else -1, self.seen.hops(msg_id).get(rcpt, -1))

    def durable_state(self) -> tuple[Iterator[dict], Iterator[tuple[str, dict[str, int], float]]]:
        """What a compaction of the spool writes: the queued messages, and the pairs still remembered.
        Read one at a time as the compaction writes them (nothing else runs meanwhile)."""
        return ((m.to_record() for m in self.messages.values()), self.seen.items())
