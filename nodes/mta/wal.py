"""The MTA's queue log, its records and how they are read back (the writing is nodes.mta.spool's).

`<run-dir>/mta/<server>/queue.wal` is a sequence of records, each framed as
`length (4 bytes, big-endian) | crc32 (4 bytes) | msgpack`. A record is a msgpack array whose first
item is its tag (msgspec's tagged array Structs, below), each pair an array of its 13 fields:

    ["P", msg_id, sender, raw, accepted_at, ndr_for, ndr_rcpts, priority, report, pairs]
                                        the message and its pairs' states (Whole)
    ["S", msg_id, pairs]                its pairs' newer states, the rest as its "P" record says
                                        (Step: a message's other fields never change)
    ["R", msg_id, {rcpt: hops}, accepted_at]
                                        every pair is final: the message leaves the queue, and
                                        its pairs are remembered so a retransmission is refused
    ["C"]                               the end of a batch: the records before it count together

A log written before this form (lower-case tags, a message as a map of its fields: ["p", msg_id,
{...}], ["s", msg_id, {...}], ["r", ...], ["c"]) is read as it is, record by record, so a queue
left by an older xcon resumes; what it appends after is of today's form.

A message's bytes are written once: its first record is whole, and each later step of its pairs
(a delivery, a deferral, a report) writes only the state. Before, each step wrote the message
again, and one of 15 MiB with three recipients left 125 MB in the log. The cost is that damage to
the whole record loses the message even where later states read (it is named in `lost`, and
`xcon check` puts its pairs down to the damage); a compaction writes every queued message whole.

A crash can only tear the tail, a batch that was never acknowledged; reading cuts it off, whole:
the records of a batch after its last commit record are dropped together, never some of them. (A
batch holds steps that belong together, an NDR and the failure it reports: the simulator's torn
writes found an NDR kept without its failure, and the pair delivered after a restart as well as
reported. A log written before commit records existed has none, and is read record by record.)

Anything else that does not read is damage (nodes.records): what `recover` takes up is every
record it can read on both sides of the damage, and it says what was lost (`Recovered.damage`):
the ids the damaged bytes still show that have no record left. A record of the wrong shape is
damage too: every value read back is checked as strictly as the same value in a frame. A log
this MTA made always holds a record at least (a commit record), so a log that is missing or empty
while the MTA's own log says it held records is damage too (`vanished`), never an empty queue.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import msgspec
from msgspec import Struct

from protocol.frame import pack
from protocol.messages import Recipient

from ..logs import events_in
from ..records import Scan, absent, ids_in, scan_frames
from .queue import QueuedMessage
from .record import Commit, MsgId, PairRecord, Priority, Rcpt, Record, Retired, State, Step, Whole

HEADER = struct.Struct(">II")
_decode = msgspec.msgpack.Decoder(Record).decode


def frame(record: Record | list) -> bytes:
    return b"".join(frame_parts(record))


def frame_parts(record: Record | list) -> tuple[bytes, bytes]:
    """A record's frame as its header and its body, for a caller that joins many at once (a
    message's record is copied once on its way into a batch, not once more per frame)."""
    data = pack(record)
    return HEADER.pack(len(data), zlib.crc32(data)), data


COMMIT = frame(Commit())


def read_record(body: bytes | memoryview) -> Record | None:
    """The record a frame's body holds, checked field by field as it is decoded (a record of the
    wrong shape is damage, not a crash at start), or None. One of the form before reads too."""
    if body[2:3] in _OLD_TAGS:
        return _old_record(body)
    try:
        return _decode(body)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested past the interpreter's depth
        return None


# --- the form before (a message as a map of its fields), read only -----------------------------

_OLD_TAGS = (b"p", b"s", b"r", b"c")


class _OldPair(Struct, forbid_unknown_fields=True):
    """A pair as the form before wrote it: a map, its fields in PairRecord's order."""

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
    cycles: int = 0  # added since: a log from before lacks them
    arrived_usn: int = -1


class _OldState(Struct, forbid_unknown_fields=True, kw_only=True):
    """An "s" record's map: the message without its bytes."""

    msg_id: MsgId
    sender: str
    accepted_at: float
    ndr_for: str | None
    ndr_rcpts: list[str]
    priority: Priority = "normal"
    report: str | None = None
    pairs: list[_OldPair]


class _OldMessage(_OldState, kw_only=True):
    """A "p" record's map: the message whole."""

    raw: bytes


def _old_record(body: bytes | memoryview) -> Record | None:
    """A record of the form before, checked field by field as today's are, as today's type."""
    try:
        old = msgpack.unpackb(body, raw=False)
        if type(old) is not list or not old or old[0] not in ("p", "s", "r", "c"):
            return None
        tag = old[0]
        if tag in ("c", "r"):
            return msgspec.convert([tag.upper(), *old[1:]], Record)
        if len(old) != 3:
            return None
        msg = msgspec.convert(old[2], _OldMessage if tag == "p" else _OldState)
        if msg.msg_id != old[1]:
            return None
        pairs = [PairRecord(*msgspec.structs.astuple(p)) for p in msg.pairs]
        if tag == "s":
            return Step(msg.msg_id, pairs)
        return Whole(msg.msg_id, msg.sender, msg.raw, msg.accepted_at, msg.ndr_for, msg.ndr_rcpts, msg.priority,
                     msg.report, pairs)
    except (ValueError, msgpack.UnpackException):  # msgspec.ValidationError is a ValueError
        return None


def read_records(data: bytes) -> tuple[list[Record], int, Scan]:
    """The records of whole batches in `data` (up to its last commit record, or every whole
    record of a log that has none), the offset where that good part ends, and the scan (its
    damage, if any)."""
    scan = scan_frames(data, read_record)
    commits = [i for i, r in enumerate(scan.records) if type(r) is Commit]
    if commits and scan.damage and scan.damage[-1][0] >= scan.ends[commits[-1]]:
        # damage after the last commit that reads (perhaps in that commit itself): the records
        # between are taken up like every record that reads; they are no torn tail
        records = [r for r in scan.records if type(r) is not Commit]
    elif commits:
        last = commits[-1]
        good = scan.ends[last]
        if good < scan.good:  # a batch with no commit after it: torn, whole
            scan.torn += scan.good - good
            scan.good = good
        records = [r for r in scan.records[:last] if type(r) is not Commit]
    else:
        records = scan.records
    return records, scan.good, scan


@dataclass
class Recovered:
    """What a queue log held at start: the queued messages, each retirement (msg_id, {rcpt: hops},
    accepted_at) in log order, and what damage was found (None: none)."""

    queued: list[QueuedMessage]
    remembered: list[tuple[str, dict[str, int], float]]
    damage: dict[str, Any] | None = None
    # the log holds a commit record: a torn batch after it is cut whole. A log without one (new,
    # or of the form before commit records) is read record by record, and its first batch torn
    # would be taken up in part (an NDR's record lost, the failure it reports kept): the spool
    # begins its next batch with a commit record (spool.Batch._take)
    sealed: bool = True


def recover(data: bytes | bytearray) -> tuple[Recovered, list[Record], int]:
    """The state a log's bytes hold, the records kept and where the good part ends. `data` is
    only read (a simulated log's bytearray is read where it lies)."""
    records, good, scan = read_records(data)
    queued, remembered, orphans = replay(records)
    damage = None
    if scan.damaged or orphans:
        # a state whose message's bytes are gone is lost with them; the log kept drops it
        records = [r for r in records if not (type(r) is Step and r.msg_id in orphans)] if orphans else records
        left = {r.msg_id for r in records}
        lost = [i for i in scan.ids if i not in left]
        damage = {"damaged_bytes": [list(d) for d in scan.damage], "lost": lost + [i for i in orphans if i not in lost],
                  "older_state": [i for i in scan.ids if i in left],
                  "suspect": suspects(data, scan, queued)}
    return Recovered(queued, remembered, damage, any(type(r) is Commit for r in scan.records)), records, good


def suspects(data: bytes, scan: Scan, queued: list[QueuedMessage]) -> list[str]:
    """The queued messages whose newer state may be in damage that does not name them: a run of
    damaged bytes whose record starts do not read (the tag or the id itself was hit) could have
    held a delivery, a report or the retirement of any message whose every readable record lies
    before it. Simulated campaign trial 1627879872: the retirement of a message already reported
    was hit in its first bytes, the message came back queued with nothing named, and was
    delivered as well as reported. A byte flipped inside an id can leave an id still ("mx1" to
    "mX1"): a later state (a step, a retirement) of an id no readable record has names, as well,
    the queued messages a byte from it. (A first record of an unknown id is a message of its own.)"""
    newest = {r.msg_id: end for r, end in zip(scan.records, scan.ends) if type(r) is not Commit}
    named = set(scan.ids)
    found: dict[str, None] = {}
    for start, end in scan.damage:
        run = data[start:end]
        shown = ids_in(run)
        strangers = [i for i in ids_in(run, later=True) if i not in newest]  # in no readable record
        for m in queued:
            if m.msg_id not in named and newest.get(m.msg_id, 0) <= start and (
                    not shown or any(_a_byte_apart(m.msg_id, i) for i in strangers)):
                found[m.msg_id] = None
    return [m.msg_id for m in queued if m.msg_id in found]


def _a_byte_apart(a: str, b: str) -> bool:
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1


def rewrite(records: list[Record]) -> bytes:
    """A log holding `records` whole, as one committed batch (a commit record alone for none: a
    log this MTA made is never empty, so an empty one is damage, not an empty queue)."""
    return b"".join(frame(r) for r in records) + COMMIT


# what an MTA logs only once a record of the message is durable in its queue log
TAKEN = frozenset({"mta.accepted", "mta.transfer_in", "mta.ndr_queued", "mta.relay_failed"})


def history(node_log: Path) -> dict[str, None] | None:
    """What an MTA's own log says its queue log held: None if it never made a record durable
    (nothing was taken, so no log is owed); else the ids of the messages still open at the log's
    end (taken and not retired), in log order. Read only where the queue log is missing or empty."""
    held: dict[str, None] | None = None
    for e in events_in(node_log, b'"mta.'):
        name = e.get("event")
        if name in TAKEN or (name == "mta.failed" and e.get("report") == "postmaster"):
            held = {} if held is None else held
            taken = e.get("postmaster_id") if name == "mta.failed" else e.get("msg_id")
            if isinstance(taken, str):
                held[taken] = None
        elif name == "mta.retired" and held is not None:
            held.pop(e.get("msg_id"), None)
    return held


def vanished(path: Path, node_log: Path) -> dict[str, Any] | None:
    """Damage of a queue log that is missing or empty though its MTA's log says it held records
    (None if it is there, or none was owed): what `recover` says of a damaged log, with `why`."""
    gone = absent(path)
    held = history(node_log) if gone else None
    if held is None:
        return None
    return {"damaged_bytes": [], "lost": list(held), "older_state": [], "suspect": [], "gone": gone,
            "why": f"{path.name} is {gone}, though {node_log.name} says it held records: the queue it held is "
                   "gone, not empty"}


def replay(records: list[Record]) -> tuple[list[QueuedMessage], list[tuple[str, dict[str, int], float]],
                                         dict[str, None]]:
    """What a log's records leave: the queued messages, each retirement in log order, and the ids
    of states ("S") whose message's bytes no record holds (damage took its "P" record), in log
    order: they are logged, and a set's order would change with the process's hash seed."""
    queued: dict[str, Whole] = {}
    remembered: list[tuple[str, dict[str, int], float]] = []
    orphans: dict[str, None] = {}
    for rec in records:
        kind = type(rec)
        if kind is Whole:
            queued[rec.msg_id] = rec
        elif kind is Step:
            whole = queued.get(rec.msg_id)
            if whole is None:
                orphans[rec.msg_id] = None
            else:
                queued[rec.msg_id] = msgspec.structs.replace(whole, pairs=rec.pairs)
        elif kind is Retired:
            queued.pop(rec.msg_id, None)
            remembered.append((rec.msg_id, rec.hops, rec.accepted_at))
    return [QueuedMessage.from_record(r) for r in queued.values()], remembered, orphans
