"""The directory as both worlds host it: its core on the storage it is given.

On disk the directory is a snapshot, `directory.json`, and the changes made since, one JSON
line each in `changes.jsonl`: a change is one small append and one fsync, where rewriting the
whole directory per change made adding N users cost O(N^2) (the simulator measured 72% of a
1,000-user world's time in that rewrite). When the log holds as many changes as the directory
has recipients (and at least COMPACT_MIN), the snapshot is rewritten from the core's state and
the log emptied: O(1) amortised per change. JSON, not msgpack, so an operator can read both
with any text tool; `read_directory` gives what they hold together.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import Settings, append_whole, open_append, write_atomic
from ..host import Wiring
from .core import MAX_OPS, DirectoryCore, PersistDirectory

COMPACT_MIN = 1000
CHANGES = "changes.jsonl"  # beside directory.json


def replay(state: dict[str, Any] | None, data: bytes) -> tuple[dict[str, Any], int, int]:
    """The snapshot `state` with the changes logged in `data` applied (those newer than it);
    returns it, how many changes the log holds, and where its last whole line ends (a line a
    crash cut short was never acknowledged)."""
    state = state or {"usn": 0, "recipients": {}, "ops": []}
    good = data.rfind(b"\n") + 1
    lines = data[:good].splitlines()
    ops = dict(state.get("ops", []))
    for line in lines:
        change = json.loads(line)
        if change["usn"] <= state["usn"]:
            continue  # already in the snapshot (a compaction that died before emptying the log)
        state["usn"] = change["usn"]
        state["recipients"][change["recipient"]["alias"]] = change["recipient"]
        if change.get("op") is not None:
            ops[change["op"]] = change["usn"]
            while len(ops) > MAX_OPS:
                del ops[next(iter(ops))]
    state["ops"] = list(ops.items())
    return state, len(lines), good


def read_directory(path: Path) -> dict[str, Any] | None:
    """What a directory's files hold (`path` is its directory.json), for the node and for `xcon check`."""
    if not path.exists():
        return None
    log = path.with_name(CHANGES)
    return replay(json.loads(path.read_text()), log.read_bytes() if log.exists() else b"")[0]


def _snapshot(state: dict[str, Any]) -> bytes:
    return json.dumps(state, indent=1, sort_keys=True).encode()


def _line(change: dict[str, Any]) -> bytes:
    return (json.dumps(change, sort_keys=True) + "\n").encode()


def _compact_due(changes: int, state: dict[str, Any]) -> bool:
    return changes >= max(COMPACT_MIN, len(state["recipients"]))


class DirectoryFile:
    """`<run-dir>/directory/directory.json` and `changes.jsonl` (see the module's docstring)."""

    def __init__(self, path: Path):
        self.path = path
        self.log = path.with_name(CHANGES)
        self._fd: int | None = None
        self._size = 0
        self._changes = 0

    def load(self) -> dict[str, Any]:
        snapshot = json.loads(self.path.read_text()) if self.path.exists() else None
        data = self.log.read_bytes() if self.log.exists() else b""
        state, self._changes, self._size = replay(snapshot, data)
        if snapshot is None:
            write_atomic(self.path, _snapshot(state))  # the file `xcon check` reads exists from the start
        self._fd = open_append(self.log)
        os.ftruncate(self._fd, self._size)  # the line a crash cut short goes, so the next starts whole
        return state

    def save(self, action: PersistDirectory) -> None:
        if action.change is None or _compact_due(self._changes, action.state):
            write_atomic(self.path, _snapshot(action.state))  # durable before the log is emptied
            os.ftruncate(self._fd, 0)
            self._size, self._changes = 0, 0
            return
        self._size = append_whole(self._fd, _line(action.change), self._size, os.fsync)
        self._changes += 1


class MemoryDirectoryFile:
    """The directory's files in the simulator: the snapshot and the change log as bytes, with
    the same rule for compaction, read back through the same replay."""

    def __init__(self) -> None:
        self.snapshot: bytes | None = None
        self.changes = bytearray()
        self._count = 0

    def load(self) -> dict[str, Any]:
        state, self._count, good = replay(json.loads(self.snapshot) if self.snapshot else None, bytes(self.changes))
        del self.changes[good:]
        return state

    def save(self, action: PersistDirectory) -> None:
        if action.change is None or _compact_due(self._count, action.state):
            self.snapshot, self.changes, self._count = _snapshot(action.state), bytearray(), 0
        else:
            self.changes += _line(action.change)
            self._count += 1

    def crash(self, torn: float) -> None:
        """The process died: every change was durable as it was made (a write, then an fsync)."""

    def state(self) -> dict[str, Any] | None:
        """What the files hold together (read_directory's answer)."""
        return replay(json.loads(self.snapshot) if self.snapshot else None, bytes(self.changes))[0] \
            if self.snapshot is not None or self.changes else None

    def dump(self, path: Path) -> None:
        state = self.state()
        if state is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_bytes(_snapshot(state))


def wiring(settings: Settings, storage: DirectoryFile | MemoryDirectoryFile) -> Wiring:
    core = DirectoryCore(list(settings.servers), storage.load())

    def persist(action: PersistDirectory) -> list:
        storage.save(action)
        return []

    return Wiring(core, {PersistDirectory: persist}, publish=True)
