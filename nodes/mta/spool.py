"""The MTA's queue on disk: a write-ahead log.

`<run-dir>/mta/<server>/queue.wal` is a sequence of records, each framed as
`length (4 bytes, big-endian) | crc32 (4 bytes) | msgpack`:

    ["p", msg_id, record]               the message and its pairs' states; the newest one wins
    ["s", msg_id, state]                a newer state of a message whose "p" record is in the log:
                                        the same record without the message's bytes (`raw`)
    ["r", msg_id, {rcpt: hops}, accepted_at]
                                        every pair is final: the message leaves the queue, and
                                        its pairs are remembered so a retransmission is refused
    ["c"]                               the end of a batch: the records before it count together

A message's bytes are written once: its first record is whole, and each later step of its pairs
(a delivery, a deferral, a report) writes only the state. Before, each step wrote the message
again, and one of 15 MiB with three recipients left 125 MB in the log. The cost is that damage to
the whole record loses the message even where later states read (it is named in `lost`, and
`xcon check` puts its pairs down to the damage); a compaction writes every queued message whole.

A batch is one append and one fsync (group commit: see Runtime.flush), where a queue file per
message cost a create, an fsync, a rename, an unlink and a directory fsync. A crash can only
tear the tail, a batch that was never acknowledged; `load` cuts it off, whole: the records of a
batch after its last commit record are dropped together, never some of them. (A batch holds
steps that belong together, an NDR and the failure it reports: the simulator's torn writes found
an NDR kept without its failure, and the pair delivered after a restart as well as reported. A
log written before commit records existed has none, and is read record by record as then.)

Anything else that does not read is damage (nodes.records): `load` keeps the file aside as
`queue.wal.damaged-<time>`, takes up every record it can read on both sides of the damage,
writes them as the new log, and says what was lost (`Recovered.damage`): the ids the damaged
bytes still show that have no record left. A record of the wrong shape is damage too: every
value read back is checked as strictly as the same value in a frame.

The log is compacted when it has grown past both COMPACT_MIN_BYTES and COMPACT_RATIO times what
it held after the last compaction: it is rewritten from the core's state (the queued messages and
the pairs it still remembers), tmp + fsync + rename. That is O(1) amortised per record, and what
the core has forgotten (nodes.mta.core, `remember_s`) leaves the disk too.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


from protocol import PRIORITIES
from protocol.frame import pack
from protocol.names import valid_msg_id, valid_recipient

from ..config import append_whole, free_bytes, fsync_dir, open_append, write_atomic
from ..records import Scan, ids_in, scan_frames, set_aside
from .queue import FINAL, WAITING, QueuedMessage

HEADER = struct.Struct(">II")
COMPACT_MIN_BYTES = 8 << 20
COMPACT_RATIO = 4

# what a compaction writes: the queued messages' records, and (msg_id, {rcpt: hops}, accepted_at)
# of each remembered message
State = tuple[Iterable[dict], Iterable[tuple[str, dict[str, int], float]]]


def frame(record: list) -> bytes:
    return b"".join(frame_parts(record))


def frame_parts(record: list) -> tuple[bytes, bytes]:
    """A record's frame as its header and its body, for a caller that joins many at once (a
    message's record is copied once on its way into a batch, not once more per frame)."""
    data = pack(record)
    return HEADER.pack(len(data), zlib.crc32(data)), data


COMMIT = frame(["c"])


STATES = frozenset({"queued", "deferred", *WAITING, *FINAL})
_NONE = type(None)
# each field's exact types (type(), not isinstance: a bool is no int here), checked in one pass
_PAIR = {"rcpt": {str}, "alt_of": {str, _NONE}, "state": {str}, "hint": {dict, _NONE}, "hops": {int},
         "attempts": {int}, "reason": {str}, "handed_to": {str, _NONE}, "resent": {bool}, "unconfirmed": {bool},
         "alt_copy": {str, _NONE}, "cycles": {int}, "arrived_usn": {int}}
_PAIR_REQUIRED = frozenset(_PAIR) - {"cycles", "arrived_usn"}  # fields added since: a log from before lacks them
_MESSAGE = {"msg_id": {str}, "sender": {str}, "raw": {bytes}, "accepted_at": {int, float}, "ndr_for": {str, _NONE},
            "ndr_rcpts": {list}, "priority": {str}, "report": {str, _NONE}, "pairs": {list}}
_MESSAGE_REQUIRED = frozenset(_MESSAGE) - {"priority", "report"}
_STATE = {k: v for k, v in _MESSAGE.items() if k != "raw"}  # an "s" record: the message without its bytes
_STATE_REQUIRED = _MESSAGE_REQUIRED - {"raw"}


def _fields_ok(d: Any, types: dict[str, set[type]], required: frozenset[str]) -> bool:
    if type(d) is not dict:
        return False
    # a record's shape (its keys and the types of their values, in order) is judged once: a log
    # holds a handful of shapes, and this check ran per field of every pair of every record
    shape = (id(types), *d, *map(type, d.values()))
    if shape in _GOOD_SHAPES:
        return True
    ok = required <= d.keys() <= types.keys() and all(type(v) in types[k] for k, v in d.items())
    if ok and len(_GOOD_SHAPES) < 4096:
        _GOOD_SHAPES.add(shape)
    return ok


_GOOD_SHAPES: set[tuple] = set()


def valid_record(record: Any) -> bool:
    """A record as this log writes it, field by field: anything else is damage, not a crash at start."""
    if not isinstance(record, list) or not record:
        return False
    tag = record[0]
    if tag == "c":
        return len(record) == 1
    if tag == "r":
        return (len(record) == 4 and valid_msg_id(record[1]) and isinstance(record[2], dict)
                and all(valid_recipient(r) and type(h) is int for r, h in record[2].items())
                and isinstance(record[3], (int, float)) and not isinstance(record[3], bool))
    if tag not in ("p", "s") or len(record) != 3:
        return False
    msg = record[2]
    fields, required = (_MESSAGE, _MESSAGE_REQUIRED) if tag == "p" else (_STATE, _STATE_REQUIRED)
    return (_fields_ok(msg, fields, required) and msg["msg_id"] == record[1] and valid_msg_id(record[1])
            and msg.get("priority", "normal") in PRIORITIES and all(isinstance(r, str) for r in msg["ndr_rcpts"])
            and all(_fields_ok(p, _PAIR, _PAIR_REQUIRED) and p["state"] in STATES and valid_recipient(p["rcpt"])
                    for p in msg["pairs"]))


def read_records(data: bytes) -> tuple[list[list], int, Scan]:
    """The records of whole batches in `data` (up to its last commit record, or every whole
    record of a log that has none), the offset where that good part ends, and the scan (its
    damage, if any)."""
    scan = scan_frames(data, valid_record)
    commits = [i for i, r in enumerate(scan.records) if r == ["c"]]
    if commits and scan.damage and scan.damage[-1][0] >= scan.ends[commits[-1]]:
        # damage after the last commit that reads (perhaps in that commit itself): the records
        # between are taken up like every record that reads; they are no torn tail
        records = [r for r in scan.records if r != ["c"]]
    elif commits:
        last = commits[-1]
        good = scan.ends[last]
        if good < scan.good:  # a batch with no commit after it: torn, whole
            scan.torn += scan.good - good
            scan.good = good
        records = [r for r in scan.records[:last] if r != ["c"]]
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


def recover(data: bytes | bytearray) -> tuple[Recovered, list[list], int]:
    """The state a log's bytes hold, the records kept and where the good part ends. `data` is
    only read (a simulated log's bytearray is read where it lies)."""
    records, good, scan = read_records(data)
    queued, remembered, orphans = replay(records)
    damage = None
    if scan.damaged or orphans:
        # a state whose message's bytes are gone is lost with them; the log kept drops it
        records = [r for r in records if not (r[0] == "s" and r[1] in orphans)] if orphans else records
        left = {r[1] for r in records}
        lost = [i for i in scan.ids if i not in left]
        damage = {"damaged_bytes": [list(d) for d in scan.damage], "lost": lost + [i for i in orphans if i not in lost],
                  "older_state": [i for i in scan.ids if i in left],
                  "suspect": suspects(data, scan, queued)}
    return Recovered(queued, remembered, damage), records, good


def suspects(data: bytes, scan: Scan, queued: list[QueuedMessage]) -> list[str]:
    """The queued messages whose newer state may be in damage that names no id: a run of damaged
    bytes whose record starts do not read (the tag or the id itself was hit) could have held a
    delivery, a report or the retirement of any message whose every readable record lies before
    it. Simulated campaign trial 1627879872: the retirement of a message already reported was hit
    in its first bytes, the message came back queued with nothing named, and was delivered as well
    as reported."""
    unnamed = [start for start, end in scan.damage if not ids_in(data[start:end])]
    if not unnamed:
        return []  # each damaged run names what it held: `lost` and `older_state` say it all
    newest = {r[1]: end for r, end in zip(scan.records, scan.ends) if r[0] != "c"}
    named = set(scan.ids)
    return [m.msg_id for m in queued if m.msg_id not in named and newest.get(m.msg_id, 0) <= max(unnamed)]


def rewrite(records: list[list]) -> bytes:
    """A log holding `records` whole, as one committed batch."""
    return b"".join(frame(r) for r in records) + COMMIT if records else b""


def replay(records: list[list]) -> tuple[list[QueuedMessage], list[tuple[str, dict[str, int], float]], dict[str, None]]:
    """What a log's records leave: the queued messages, each retirement in log order, and the ids
    of states ("s") whose message's bytes no record holds (damage took its "p" record), in log
    order: they are logged, and a set's order would change with the process's hash seed."""
    queued: dict[str, dict] = {}
    remembered: list[tuple[str, dict[str, int], float]] = []
    orphans: dict[str, None] = {}
    for rec in records:
        tag = rec[0]
        if tag == "p":
            queued[rec[1]] = rec[2]
        elif tag == "s":
            whole = queued.get(rec[1])
            if whole is None:
                orphans[rec[1]] = None
            else:
                queued[rec[1]] = {**rec[2], "raw": whole["raw"]}
        elif tag == "r":
            _, msg_id, hops, accepted_at = rec
            queued.pop(msg_id, None)
            remembered.append((msg_id, hops, accepted_at))
    return [QueuedMessage.from_record(r) for r in queued.values()], remembered, orphans


class Batch:
    """The records of the batch a queue log will append at its next sync."""

    def __init__(self) -> None:
        # this batch's records, framed at sync; a message persisted twice in one batch (accepted,
        # then handed to a peer, in the same turn) is written once, in its newer state
        self._pending: list[list | None] = []
        self._pending_at: dict[str, int] = {}  # msg_id -> index of its "p" record in _pending
        self._whole: set[str] = set()  # the queued messages whose bytes the log holds: a new state is "s"
        self.state: Callable[[], State] | None = None  # set by the node: what a compaction writes
        self.compactions = 0
        self.syncs = self.records = self.bytes = 0  # since start: what group commit achieves

    def persist(self, msg_id: str, record: dict) -> None:
        at = self._pending_at.get(msg_id)
        if at is None:
            self._pending_at[msg_id] = len(self._pending)
            self._pending.append(["p", msg_id, record])
        else:
            self._pending[at] = ["p", msg_id, record]  # only the newest state of a message counts at load

    def retire(self, msg_id: str, hops: dict[str, int], accepted_at: float) -> None:
        at = self._pending_at.pop(msg_id, None)
        if at is not None:
            self._pending[at] = None  # the retirement makes it moot
        self._pending.append(["r", msg_id, hops, accepted_at])

    def _take(self) -> bytes:
        """The batch as it is appended: its records, then the commit record (none if empty). A
        message whose bytes the log holds has its state written without them; one retired earlier
        in the batch and queued again (back after a reroute) is written whole."""
        parts: list[bytes] = []
        retired = set()
        for r in self._pending:
            if r is None:
                continue
            if r[0] == "r":
                retired.add(r[1])
            elif r[1] in self._whole and r[1] not in retired:
                r = ["s", r[1], {k: v for k, v in r[2].items() if k != "raw"}]
            parts += frame_parts(r)
        return b"".join((*parts, COMMIT)) if parts else b""

    def _taken(self, data: bytes) -> None:
        """The batch is durable: count it and start the next."""
        whole = self._whole
        for r in self._pending:
            if r is not None:
                (whole.add if r[0] == "p" else whole.discard)(r[1])
        self.records += sum(r is not None for r in self._pending)
        self._pending, self._pending_at = [], {}
        if data:
            self.syncs += 1
            self.bytes += len(data)

    def _loaded(self, state: Recovered) -> Recovered:
        """The log as `load` leaves it holds each queued message whole."""
        self._whole = {m.msg_id for m in state.queued}
        return state


class MemorySpool(Batch):
    """The queue log of a simulated MTA: the same records in memory. A crash loses the batch not
    yet synced, and may leave part of it torn at the tail, which `load` cuts off as Spool's does."""

    def __init__(self, free: int = 1 << 40) -> None:
        super().__init__()
        self.data = bytearray()
        self.free = free
        self.damaged: list[bytes] = []  # damaged logs kept aside at load

    def load(self) -> Recovered:
        state, records, good = recover(self.data)
        if state.damage is not None:
            self.damaged.append(bytes(self.data))  # kept aside, as a real log is
            self.data[:] = rewrite(records)
            state.damage["kept_as"] = f"damaged copy {len(self.damaged)}"
        else:
            del self.data[good:]
        return self._loaded(state)

    def sync(self) -> None:
        data = self._take()
        self.data += data
        self._taken(data)

    def crash(self, torn: float) -> None:
        """The process died in the middle of appending the batch: a `torn` fraction of its bytes
        got there (whole records and part of one, never its commit record)."""
        data = self._take()
        self.data += data[:min(int(len(data) * torn), len(data) - len(COMMIT))]
        self._pending, self._pending_at = [], {}

    def free_bytes(self) -> int:
        return self.free

    def stats(self) -> dict[str, int]:
        return {"syncs": self.syncs, "records": self.records, "bytes": self.bytes, "compactions": 0,
                "log_bytes": len(self.data)}


class Spool(Batch):
    def __init__(self, root: Path, fsync: bool = True):
        super().__init__()
        self.fsync = fsync
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self.path = root / "queue.wal"
        self._fd: int | None = None
        self._size = 0  # what the log holds, durably: a failed append is cut back to it
        self._compacted_size = 0

    def free_bytes(self) -> int:
        return free_bytes(self.root)

    def load(self) -> Recovered:
        """The queued messages, each retirement in log order, and the damage found (kept aside)."""
        existed = self.path.exists()
        data = self.path.read_bytes() if existed else b""
        state, records, good = recover(data)
        if state.damage is not None:
            # never cut: the damaged log is kept as it was, and what could be read is the new log
            state.damage["kept_as"] = set_aside(self.path).name
            data = rewrite(records)
            write_atomic(self.path, data)
            good = len(data)
        self._fd = open_append(self.path)
        if not existed and self.fsync:
            fsync_dir(self.root)  # the log's name is durable before the first batch counts on it
        if good < os.fstat(self._fd).st_size:  # a torn tail: a batch that was never acknowledged
            os.ftruncate(self._fd, good)
        self._size = self._compacted_size = good
        return self._loaded(state)


    def sync(self) -> None:
        """Write the batch with one append and one fsync; compact if the log has grown enough.

        If the disk refuses (full), the part of the batch that was written is cut off again and
        the error raised with the batch kept, so the runtime can call sync again once there is
        room: the log never holds half a batch followed by the same batch whole."""
        data = self._take()
        if not data:
            self._taken(b"")
            return
        if self._fd is None:
            self._fd = open_append(self.path)
        self._size = append_whole(self._fd, data, self._size, os.fdatasync if self.fsync else None)
        self._taken(data)
        if self.state is not None and self._size >= max(COMPACT_MIN_BYTES, COMPACT_RATIO * self._compacted_size):
            self.compact(self.state())

    def stats(self) -> dict[str, int]:
        return {"syncs": self.syncs, "records": self.records, "bytes": self.bytes, "compactions": self.compactions,
                "log_bytes": self._size}

    def compact(self, state: State) -> bool:
        """Rewrite the log as the given state alone: tmp, fsync, rename, fsync of the directory.
        On a full disk the log stays as it was (compaction is only a saving) and False is returned."""
        records, remembered = state
        whole = set()
        tmp = self.root / ".queue.wal.tmp"
        # record by record into a buffered file, not the whole log in memory first: that held an
        # object or two per remembered message at once and grew the MTA's RSS (docs/performance.md)
        try:
            with open(tmp, "wb", buffering=1 << 20) as f:
                for msg_id, hops, at in remembered:
                    f.write(frame(["r", msg_id, hops, at]))
                for record in records:
                    f.write(frame(["p", record["msg_id"], record]))
                    whole.add(record["msg_id"])
                f.write(COMMIT)
                size = f.tell()
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, self.path)
        if self.fsync:
            fsync_dir(self.root)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = open_append(self.path)
        self._size = self._compacted_size = size
        self._whole = whole
        self.compactions += 1
        return True
