"""The MTA's queue on disk, Postfix style: one file per message an operator can list.

`<run-dir>/mta/<server>/queue/<msg_id>.msgpack` holds a message and its pairs' states, written
atomically (tmp, fsync, rename, fsync of the directory). `seen.log` lists the (message id,
recipient, hops, accepted at) of pairs this MTA finished, one per line, so a retransmitted transfer is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgpack

from ..config import SYNC_BATCH, fsync_dir, syncfs
from .queue import QueuedMessage


class Spool:
    def __init__(self, root: Path, fsync: bool = True):
        self.fsync = fsync
        self.queue_dir = root / "queue"
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self.seen_path = root / "seen.log"
        self._ops: list[tuple[str, str, dict]] = []

    def load(self) -> tuple[list[QueuedMessage], dict[str, dict[str, int]], dict[str, float]]:
        queued = [
            QueuedMessage.from_record(msgpack.unpackb(p.read_bytes(), raw=False))
            for p in sorted(self.queue_dir.glob("*.msgpack"))
        ]
        seen: dict[str, dict[str, int]] = {}
        seen_at: dict[str, float] = {}
        if self.seen_path.exists():
            for line in self.seen_path.read_text().splitlines():
                parts = line.split(" ")
                if len(parts) == 4 and parts[2].isdigit():
                    held = seen.setdefault(parts[0], {})
                    held[parts[1]] = max(held.get(parts[1], -1), int(parts[2]))
                    seen_at[parts[0]] = float(parts[3])
        return queued, seen, seen_at

    # Group commit (see Runtime.flush): persist and retire only note what to write; `sync` writes
    # the batch, each queue file by tmp + fsync + rename, the seen lines with one fsync, and the
    # queue directory with one fsync. Nothing that depends on them leaves the node before.

    def persist(self, msg_id: str, record: dict) -> None:
        self._ops.append(("persist", msg_id, record))

    def retire(self, msg_id: str, hops: dict[str, int], accepted_at: float) -> None:
        self._ops.append(("retire", msg_id, (hops, accepted_at)))

    def sync(self) -> None:
        ops, self._ops = self._ops, []
        final: dict[str, dict | None] = {}  # msg_id -> the record to keep, or None to remove
        seen_lines = []
        for op, msg_id, data in ops:
            if op == "persist":
                final[msg_id] = data
            else:
                final[msg_id] = None
                hops, accepted_at = data
                seen_lines += [f"{msg_id} {r} {h} {accepted_at}\n" for r, h in hops.items()]
        if seen_lines:
            with open(self.seen_path, "a") as f:
                f.write("".join(seen_lines))
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
        writes = {m: r for m, r in final.items() if r is not None}
        batch = self.fsync and len(writes) >= SYNC_BATCH
        tmps = []
        for msg_id, record in writes.items():
            tmp = self.queue_dir / f".{msg_id}.tmp"
            with open(tmp, "wb") as f:
                f.write(msgpack.packb(record, use_bin_type=True))
                f.flush()
                if self.fsync and not batch:
                    os.fsync(f.fileno())
            tmps.append((tmp, self.queue_dir / f"{msg_id}.msgpack"))
        if batch and not syncfs(self.queue_dir):  # one flush for a large batch's data
            for tmp, _ in tmps:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
        for tmp, path in tmps:
            os.replace(tmp, path)
        for msg_id in (m for m, r in final.items() if r is None):
            path = self.queue_dir / f"{msg_id}.msgpack"
            if path.exists():
                path.unlink()
        if final and self.fsync:
            fsync_dir(self.queue_dir)
