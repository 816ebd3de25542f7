"""The MTA's queue-log records as types (msgspec tagged array Structs): what nodes.mta.queue
writes of a message and nodes.mta.wal reads back, checked field by field as it is decoded. The
log's layout, and the form before this one, are described in nodes/mta/wal.py."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from msgspec import Meta, Struct

from protocol.messages import Recipient
from protocol.names import ADDRESS, ALIAS, MAX_MSG_ID, MSG_ID

# a message id and a recipient, checked as a record is read, as a frame's would be (protocol.names)
MsgId = Annotated[str, Meta(pattern=rf"^(?:{MSG_ID.pattern})\Z", max_length=MAX_MSG_ID)]
Rcpt = Annotated[str, Meta(pattern=rf"^(?:{ALIAS.pattern}|{ADDRESS.pattern})\Z")]


class State(StrEnum):
    """A pair's state (nodes/mta/queue.py says what each means). A StrEnum: it is its name in a
    log line, a record and a status, and the queue log admits no other."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    RESOLVING = "resolving"
    DELIVERING = "delivering"
    TRANSFERRING = "transferring"
    RELAYING = "relaying"
    DELIVERED = "delivered"
    TRANSFERRED = "transferred"
    RELAYED = "relayed"
    FAILED = "failed"


Priority = Literal["urgent", "normal", "non-urgent"]


class PairRecord(Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """A pair as the log keeps it: everything but the in-flight bookkeeping a restart redoes."""

    rcpt: Rcpt
    alt_of: str | None
    state: State
    hint: Recipient | None
    hops: int
    attempts: int
    reason: str
    handed_to: str | None
    resent: bool
    unconfirmed: bool
    alt_copy: str | None
    cycles: int
    arrived_usn: int


class Whole(Struct, array_like=True, forbid_unknown_fields=True, tag="P", gc=False):
    msg_id: MsgId
    sender: str
    raw: bytes
    accepted_at: float
    ndr_for: str | None
    ndr_rcpts: list[str]
    priority: Priority
    report: str | None
    pairs: list[PairRecord]


class Step(Struct, array_like=True, forbid_unknown_fields=True, tag="S", gc=False):
    msg_id: MsgId
    pairs: list[PairRecord]


class Retired(Struct, array_like=True, forbid_unknown_fields=True, tag="R", gc=False):
    msg_id: MsgId
    hops: dict[Rcpt, int]
    accepted_at: float


class Commit(Struct, array_like=True, forbid_unknown_fields=True, tag="C", gc=False):
    pass


Record = Whole | Step | Retired | Commit
