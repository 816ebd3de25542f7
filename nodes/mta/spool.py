"""The MTA's queue on disk, Postfix style: one file per message an operator can list.

`<run-dir>/mta/<server>/queue/<msg_id>.msgpack` holds a message and its pairs' states, written
atomically (tmp, fsync, rename, fsync of the directory). `seen.log` lists the (message id,
recipient, hops) of pairs this MTA finished, one per line, so a retransmitted transfer is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgpack

from ..config import fsync_dir, write_atomic
from .queue import QueuedMessage


class Spool:
    def __init__(self, root: Path):
        self.queue_dir = root / "queue"
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self.seen_path = root / "seen.log"

    def load(self) -> tuple[list[QueuedMessage], dict[str, dict[str, int]]]:
        queued = [
            QueuedMessage.from_record(msgpack.unpackb(p.read_bytes(), raw=False))
            for p in sorted(self.queue_dir.glob("*.msgpack"))
        ]
        seen: dict[str, dict[str, int]] = {}
        if self.seen_path.exists():
            for line in self.seen_path.read_text().splitlines():
                parts = line.split(" ")
                if len(parts) == 3 and parts[2].isdigit():
                    held = seen.setdefault(parts[0], {})
                    held[parts[1]] = max(held.get(parts[1], -1), int(parts[2]))
        return queued, seen

    def persist(self, msg_id: str, record: dict) -> None:
        write_atomic(self.queue_dir / f"{msg_id}.msgpack", msgpack.packb(record, use_bin_type=True))

    def retire(self, msg_id: str, hops: dict[str, int]) -> None:
        with open(self.seen_path, "a") as f:
            f.write("".join(f"{msg_id} {r} {h}\n" for r, h in hops.items()))
            f.flush()
            os.fsync(f.fileno())
        path = self.queue_dir / f"{msg_id}.msgpack"
        if path.exists():
            path.unlink()
            fsync_dir(self.queue_dir)
