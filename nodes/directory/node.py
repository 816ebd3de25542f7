"""The directory as both worlds host it: its core on the storage it is given.

On disk the directory is a snapshot, `directory.json`, and the changes made since, one JSON
line each in `changes.jsonl`: a change is one small append and one fsync, where rewriting the
whole directory per change made adding N users cost O(N^2) (the simulator measured 72% of a
1,000-user world's time in that rewrite). When the log holds as many changes as the directory
has recipients (and at least COMPACT_MIN), the snapshot is rewritten from the core's state and
the log emptied: O(1) amortised per change. JSON, not msgpack, so an operator can read both
with any text tool; `read_directory` gives what they hold together.

Nothing here is replaced by an empty directory behind the user's back. Each change line ends with
its own checksum (nodes.records): a line a crash cut short at the end is cut, damage in the middle
is kept aside (`changes.jsonl.damaged-<time>`) with every line that reads taken up. A snapshot
that does not read, one of the two files gone while the other is there, or both gone where the
directory's own log says it had reached a USN, is refused (DamagedFile): a directory restarted at
USN 0 with no users made every cache go back without a word. Every value read is checked as
strictly as a frame's (nodes.directory.records, its types): an entry whose home server is not a
server of the cluster is refused.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..config import append_whole, open_append, write_atomic
from ..core import log
from ..host import Wiring
from ..node_settings import DirectorySettings
from ..records import DamagedFile, Scan, encode_line, read_json_file, scan_lines, set_aside
from .core import MAX_OPS, DirectoryCore, PersistDirectory
from .records import Change, line, read_change, snapshot_problem

COMPACT_MIN = 1000
CHANGES = "changes.jsonl"  # beside directory.json


_USN = re.compile(rb'"usn": (\d{1,18})')


def replay(state: dict[str, Any] | None, data: bytes, servers: list[str] | None = None
           ) -> tuple[dict[str, Any], int, int, Scan]:
    """The snapshot `state` with the changes logged in `data` applied (those newer than it);
    returns it, how many changes the log holds, where its last whole line ends (a line a crash cut
    short was never acknowledged), and the scan (its damage: nodes.records)."""
    state = state or {"usn": 0, "recipients": {}, "ops": []}
    found = scan_lines(data, lambda line: read_change(line, servers))
    found.ids = list(dict.fromkeys(m.group(1).decode() for a, b in found.damage for m in _USN.finditer(data[a:b])))
    ops = dict(state.get("ops", []))
    for change in found.records:
        if change.usn <= state["usn"]:
            continue  # already in the snapshot (a compaction that died before emptying the log)
        state["usn"] = change.usn
        state["recipients"][change.recipient["alias"]] = change.recipient
        if change.op is not None:
            ops[change.op] = change.usn
            while len(ops) > MAX_OPS:
                del ops[next(iter(ops))]
    state["ops"] = list(ops.items())
    return state, len(found.records), found.good, found


def read_snapshot(path: Path, servers: list[str] | None = None) -> dict[str, Any]:
    """directory.json, checked; DamagedFile if it does not read."""
    return read_json_file(path, lambda v: snapshot_problem(v, servers))


def read_directory(path: Path, servers: list[str] | None = None) -> dict[str, Any] | None:
    """What a directory's files hold (`path` is its directory.json), for `xcon check`: None if there
    is none; DamagedFile if a file does not read, or its change log is damaged in the middle."""
    if not path.exists():
        return None
    log = path.with_name(CHANGES)
    state, _, _, found = replay(read_snapshot(path, servers), log.read_bytes() if log.exists() else b"", servers)
    if found.damaged:
        raise DamagedFile(log, found.describe(CHANGES))
    return state


def _snapshot(state: dict[str, Any]) -> bytes:
    return json.dumps(state, indent=1, sort_keys=True).encode()


def _line(change: Change) -> bytes:
    return encode_line(line(change))


def _compact_due(changes: int, state: dict[str, Any]) -> bool:
    return changes >= max(COMPACT_MIN, len(state["recipients"]))


def damage_note(found: Scan, kept_as: str) -> dict[str, Any]:
    """What the directory logs of a damaged change log: where, and the USNs the damaged lines show."""
    return {"file": f"directory/{CHANGES}", "kept_as": kept_as, "damaged_bytes": [list(d) for d in found.damage],
            "lost_usns": [int(u) for u in found.ids]}


def write_new(path: Path, state: dict[str, Any]) -> None:
    """A new directory's files holding `state`: the snapshot, and an empty change log beside it
    (the two go together: DirectoryFile.read)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, _snapshot(state))
    write_atomic(path.with_name(CHANGES), b"")


class DirectoryFile:
    """`<run-dir>/directory/directory.json` and `changes.jsonl` (see the module's docstring).
    `servers`: the cluster's, which every home server read must be one of; `reached`: the highest
    USN the directory's own log shows, which a start must not fall short of."""

    def __init__(self, path: Path, servers: list[str] | None = None, reached: int = 0):
        self.path = path
        self.log = path.with_name(CHANGES)
        self.servers, self.reached = servers, reached
        self._fd: int | None = None
        self._size = 0
        self._changes = 0
        self.damage: dict[str, Any] | None = None

    def read(self) -> tuple[dict[str, Any], dict[str, Any] | None, int, int, Scan]:
        """What the files hold, checked, without writing anything (what `load` and `xcon up`'s look
        before a start read): the state, the snapshot, the changes logged, where the log's good part
        ends, and its scan. DamagedFile for a file that is missing, unreadable or behind the log's USN."""
        has_snapshot, has_log = self.path.exists(), self.log.exists()
        if has_snapshot != has_log:
            gone, there = (self.log, self.path) if has_snapshot else (self.path, self.log)
            raise DamagedFile(gone, f"missing while {there.name} is there: the directory's state is not whole "
                                    "(restore it; nothing was started over it)")
        snapshot = read_snapshot(self.path, self.servers) if has_snapshot else None
        data = self.log.read_bytes() if has_log else b""
        state, changes, good, found = replay(snapshot, data, self.servers)
        if state["usn"] < self.reached and not found.damaged:  # damage explains itself (`found`)
            raise DamagedFile(self.path.parent, f"holds the directory at USN {state['usn']}, but its log says it had "
                                                f"reached USN {self.reached}: its files were lost or replaced "
                                                "(restore them; nothing was started over them)")
        return state, snapshot, changes, good, found

    def load(self) -> dict[str, Any]:
        state, snapshot, self._changes, self._size, found = self.read()
        if found.damaged:  # never cut: kept as it was, and what reads is the new log
            aside = set_aside(self.log)
            good = b"".join(_line(c) for c in found.records)
            write_atomic(self.log, good)
            self._size = len(good)
            self.damage = damage_note(found, aside.name)
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
        self.damage: dict[str, Any] | None = None
        self.damaged: list[bytes] = []  # damaged change logs kept aside at load

    def load(self) -> dict[str, Any]:
        state, self._count, good, found = replay(json.loads(self.snapshot) if self.snapshot else None,
                                                 bytes(self.changes))
        self.damage = None
        if found.damaged:
            self.damaged.append(bytes(self.changes))
            self.changes = bytearray(b"".join(_line(c) for c in found.records))
            self.damage = damage_note(found, f"damaged copy {len(self.damaged)}")
        else:
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
        if self.snapshot is None and not self.changes:
            return None
        return replay(json.loads(self.snapshot) if self.snapshot else None, bytes(self.changes))[0]

    def dump(self, path: Path) -> None:
        """Write the files a real directory would leave: its snapshot, and an empty change log
        (the snapshot holds every change: the pair is whole, as DirectoryFile.read wants it)."""
        state = self.state()
        if state is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_bytes(_snapshot(state))
            path.with_name(CHANGES).write_bytes(b"")


def wiring(settings: DirectorySettings, storage: DirectoryFile | MemoryDirectoryFile) -> Wiring:
    core = DirectoryCore(list(settings.servers), storage.load())

    def persist(action: PersistDirectory) -> list:
        storage.save(action)
        return []

    notes = [log("storage.damaged", level="error", **storage.damage,
                 why="damage in the middle of the change log: every change that reads was taken up; the USNs in "
                     "`lost_usns` are gone, and their users keep what an earlier change gave them")] \
        if storage.damage else []
    return Wiring(core, {PersistDirectory: persist}, publish=True, notes=notes)
