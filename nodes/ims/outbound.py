"""The IMS's queue of mail leaving the organisation, on disk: a file per (message, recipient)
under `<run-dir>/ims/<server>/outbound/`, written whole (tmp, fsync, rename) before the MTA is
told "ok", removed only after the smarthost said 250 and the relay is in `relayed.jsonl`
(fsynced), which `xcon check` reads as the message's arrival outside. A message the smarthost
refuses for good moves to `failed/`, kept, and is logged as an error: nothing leaves silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from ..config import fsync_dir, open_append, write_atomic


@dataclass
class Item:
    key: str
    msg_id: str
    sender: str
    rcpt: str
    raw: bytes
    ndr_for: str | None
    ndr_rcpts: list[str]
    queued_at: float
    attempts: int = 0
    next_at: float = 0.0
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return {"msg_id": self.msg_id, "sender": self.sender, "rcpt": self.rcpt, "raw": self.raw,
                "ndr_for": self.ndr_for, "ndr_rcpts": self.ndr_rcpts, "queued_at": self.queued_at}


def key_of(msg_id: str, rcpt: str) -> str:
    return hashlib.sha256(f"{msg_id}\0{rcpt}".encode()).hexdigest()[:32]


def read_relayed(path: Path) -> list[dict[str, Any]]:
    """The lines of a relayed.jsonl; a torn last line (a crash while writing it) is skipped."""
    found = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


class Outbound:
    def __init__(self, folder: Path, fsync: bool = True):
        self.folder, self.fsync = folder, fsync
        for sub in ("outbound", "failed"):
            (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.relayed = {key_of(r["msg_id"], r["rcpt"]) for r in read_relayed(folder / "relayed.jsonl")}
        self._log = open_append(folder / "relayed.jsonl")
        self.items: dict[str, Item] = {}
        for path in sorted((folder / "outbound").glob("*.msg")):
            r = msgpack.unpackb(path.read_bytes(), raw=False)
            item = Item(path.stem, r["msg_id"], r["sender"], r["rcpt"], r["raw"], r["ndr_for"], r["ndr_rcpts"],
                        r["queued_at"])
            if item.key in self.relayed:  # relayed, then killed before the file was removed
                path.unlink()
            else:
                self.items[item.key] = item

    def put(self, body: dict[str, Any], now: float) -> tuple[Item | None, bool]:
        """Take a message for outside; (its item, whether it is new). Durable when this returns."""
        key = key_of(body["msg_id"], body["rcpt"])
        if key in self.relayed:
            return None, False
        if key in self.items:
            return self.items[key], False
        item = Item(key, body["msg_id"], body["sender"], body["rcpt"], body["raw"], body["ndr_for"],
                    list(body["ndr_rcpts"]), now)
        data = msgpack.packb(item.record(), use_bin_type=True)
        path = self.folder / "outbound" / f"{key}.msg"
        if self.fsync:
            write_atomic(path, data)
        else:
            path.write_bytes(data)
        self.items[key] = item
        return item, True

    def done(self, item: Item, smarthost: str, now: float) -> None:
        """The smarthost took it: recorded as relayed (durably), then out of the queue."""
        line = json.dumps({"msg_id": item.msg_id, "rcpt": item.rcpt, "ndr_for": item.ndr_for,
                           "ndr_rcpts": item.ndr_rcpts, "smarthost": smarthost, "at": round(now, 6)})
        os.write(self._log, line.encode() + b"\n")
        if self.fsync:
            os.fsync(self._log)
        self.relayed.add(item.key)
        self._forget(item, None)

    def failed(self, item: Item) -> None:
        """Refused for good: kept in failed/, out of the queue."""
        self._forget(item, self.folder / "failed" / f"{item.key}.msg")

    def _forget(self, item: Item, keep: Path | None) -> None:
        path = self.folder / "outbound" / f"{item.key}.msg"
        if keep is not None:
            os.replace(path, keep)
        else:
            path.unlink(missing_ok=True)
        if self.fsync:
            fsync_dir(path.parent)
        self.items.pop(item.key, None)
