"""The MTA's queue entries: a message and the state of each of its (message, recipient) pairs.

Pair states (ten: nodes.mta.record.State is the list the queue log admits):
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

from dataclasses import dataclass, field
from typing import Any

from .record import PairRecord, Whole


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
FINAL = frozenset({"delivered", "transferred", "relayed", "failed"})
WAITING = frozenset({"resolving", "delivering", "transferring", "relaying"})


@dataclass
class Pair:
    rcpt: str
    alt_of: str | None = None  # set when this pair is an alternate recipient's copy
    state: str = "queued"
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
                pair.state, pair.unconfirmed = "queued", True
            pairs[pair.rcpt] = pair
        return cls(record.msg_id, record.sender, record.raw, record.accepted_at, record.ndr_for,
                   list(record.ndr_rcpts), pairs, record.priority, record.report)


def listing(queue: dict[str, QueuedMessage], now: float, limit: int) -> tuple[list[dict[str, Any]], int]:
    """What `xcon queue` shows of an MTA (as mailq shows Postfix's queue): each open pair, oldest
    message first, with its state, the reason of its last deferral or failure, its tries, and
    when it is tried again (seconds from now; None when it waits on an answer, not a timer).
    The first `limit` of them, and how many there are."""
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
                              "priority": msg.priority})
    return items, total
