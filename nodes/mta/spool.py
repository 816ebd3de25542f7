"""The MTA's queue on disk: a write-ahead log (its records and how they read back: nodes.mta.wal).

A batch is one append and one fsync (group commit: see Runtime.flush), where a queue file per
message cost a create, an fsync, a rename, an unlink and a directory fsync. `load` cuts a torn
tail off; damage it keeps aside as `queue.wal.damaged-<time>`, and writes what reads as the new
log.

The log is compacted when it has grown past both COMPACT_MIN_BYTES and COMPACT_RATIO times what
it held after the last compaction: it is rewritten from the core's state (the queued messages and
the pairs it still remembers), tmp + fsync + rename. That is O(1) amortised per record, and what
the core has forgotten (nodes.mta.core, `remember_s`) leaves the disk too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from ..config import append_whole, free_bytes, fsync_dir, open_append, write_atomic
from ..records import set_aside
from .record import Retired, Step, Whole
from .wal import COMMIT, Recovered, frame, frame_parts, recover, rewrite, vanished

COMPACT_MIN_BYTES = 8 << 20
COMPACT_RATIO = 4

# what a compaction writes: the queued messages' records, and (msg_id, {rcpt: hops}, accepted_at)
# of each remembered message
State = tuple[Iterable[Whole], Iterable[tuple[str, dict[str, int], float]]]


class Batch:
    """The records of the batch a queue log will append at its next sync."""

    def __init__(self) -> None:
        # this batch's records, framed at sync; a message persisted twice in one batch (accepted,
        # then handed to a peer, in the same turn) is written once, in its newer state
        self._pending: list[Whole | Retired | None] = []
        self._pending_at: dict[str, int] = {}  # msg_id -> index of its Whole record in _pending
        self._whole: set[str] = set()  # the queued messages whose bytes the log holds: a new state is a Step
        self.state: Callable[[], State] | None = None  # set by the node: what a compaction writes
        self._sealed = True  # the log holds a commit record; else the next batch begins with one (wal.Recovered)
        self.compactions = 0
        self.syncs = self.records = self.bytes = 0  # since start: what group commit achieves

    def persist(self, msg_id: str, record: Whole) -> None:
        at = self._pending_at.get(msg_id)
        if at is None:
            self._pending_at[msg_id] = len(self._pending)
            self._pending.append(record)
        else:
            self._pending[at] = record  # only the newest state of a message counts at load

    def retire(self, msg_id: str, hops: dict[str, int], accepted_at: float) -> None:
        at = self._pending_at.pop(msg_id, None)
        if at is not None:
            self._pending[at] = None  # the retirement makes it moot
        self._pending.append(Retired(msg_id, hops, accepted_at))

    def _take(self) -> bytes:
        """The batch as it is appended: its records, then the commit record (none if empty). A
        message whose bytes the log holds has its state written without them; one retired earlier
        in the batch and queued again (back after a reroute) is written whole."""
        parts: list[bytes] = []
        retired = set()
        for r in self._pending:
            if r is None:
                continue
            if type(r) is Retired:
                retired.add(r.msg_id)
            elif r.msg_id in self._whole and r.msg_id not in retired:
                r = Step(r.msg_id, r.pairs)
            parts += frame_parts(r)
        if not parts:
            return b""
        return b"".join((COMMIT, *parts, COMMIT) if not self._sealed else (*parts, COMMIT))

    def _taken(self, data: bytes) -> None:
        """The batch is durable: count it and start the next."""
        whole = self._whole
        for r in self._pending:
            if r is not None:
                (whole.add if type(r) is Whole else whole.discard)(r.msg_id)
        self.records += sum(r is not None for r in self._pending)
        self._pending, self._pending_at = [], {}
        if data:
            self.syncs += 1
            self.bytes += len(data)
            self._sealed = True

    def _loaded(self, state: Recovered) -> Recovered:
        """The log as `load` leaves it holds each queued message whole."""
        self._whole = {m.msg_id for m in state.queued}
        self._sealed = state.sealed or state.damage is not None  # a damaged log is written anew, sealed
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
    def __init__(self, root: Path, fsync: bool = True, node_log: Path | None = None):
        """The queue log in `root`; `node_log` is its MTA's own log, which says whether a log that
        is missing or empty at start had held records (then it is damage: `vanished`)."""
        super().__init__()
        self.fsync = fsync
        self.node_log = node_log
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
        gone = vanished(self.path, self.node_log) if self.node_log is not None else None
        existed = self.path.exists()
        data = self.path.read_bytes() if existed else b""
        state, records, good = recover(data)
        if gone is not None:  # kept aside if it is there (emptied), and said: never taken for an empty queue
            state.damage = {**gone, "kept_as": set_aside(self.path).name if existed else None}
            write_atomic(self.path, rewrite([]))
            existed, good = True, len(COMMIT)
        elif state.damage is not None:
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
                    f.write(frame(Retired(msg_id, hops, at)))
                for record in records:
                    f.write(frame(record))
                    whole.add(record.msg_id)
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
