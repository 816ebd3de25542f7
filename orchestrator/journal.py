"""The move journal on disk, `<run-dir>/orchestrator/journal.jsonl`: one JSON line per step of a
move (each line ending with its own checksum: nodes.records), written and synced before the step is
acted on. The orchestrator reads it back at start (orchestrator.move.MoveCore.recover); `xcon check`
reads which moves it leaves unfinished.

A last line a crash cut short was never acted on, and is cut. A line in the middle that does not
read is damage: the journal is kept aside as `journal.jsonl.damaged-<time>`, every line that reads
is taken up, and a move a damaged line names is left alone (`Damage.suspect`): its last step may be
the one that was lost, and rolling back a move that had passed set_home would delete mail, so the
operator decides (`xcon move ALIAS --abort`, `xcon status`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from nodes.config import append_whole, fsync_dir, open_append, write_atomic
from nodes.logs import events_in
from nodes.records import Scan, absent, encode_line, scan_lines, set_aside
from protocol import MOVE_ENDED
from protocol.names import Alias

PATH = Path("orchestrator") / "journal.jsonl"  # under the run-dir
_MOVE_ID = re.compile(rb'"move_id": "([^"]{1,100})"')


class Record(Struct, frozen=True, omit_defaults=True, gc=False):
    """One step of a move, as orchestrator.move_steps.Steps.enter journals it: the move, the step
    entered and when, and what a restarted orchestrator needs to take the move up again. The
    facts of a step (`usn`, `copied`, ...) are there only where that step has them. A JSON object
    per line, checked field by field as it is read; a field it does not know is passed over, and
    one a journal of an older xcon lacks takes its default (`legacy`: moves before the legacy tool)."""

    move_id: str
    step: str
    alias: Alias
    source: str
    target: str
    at: float = 0.0
    started_at: float | None = None  # None: an older journal's, which did not say (now, at a restart)
    saved: dict[str, Any] | None = None  # the alternate settings the workaround cleared
    workaround: bool = False
    copy_delay_ms: int = 0
    legacy: bool = False
    error: str | None = None
    reason: str | None = None  # failed: why
    usn: int | None = None  # await_replication, copy, open_target, done: the directory's USN
    copied: int | None = None  # mark_target, set_home, done: messages copied
    cleared: dict[str, Any] | None = None  # clear_alternate: the settings it cleared
    restored: dict[str, Any] | None = None  # restore_alternate: the settings it put back


def line(record: Record) -> bytes:
    """A record as its journal line (nodes.records.encode_line: sorted keys, its own checksum)."""
    return encode_line(msgspec.to_builtins(record))


def scan(data: bytes) -> Scan:
    """The journal's records and its damage (nodes.records.scan_lines); the move ids the damaged
    lines still show are in `ids`."""
    found = scan_lines(data, lambda r: msgspec.convert(r, Record))
    found.ids = list(dict.fromkeys(m.group(1).decode(errors="replace") for a, b in found.damage
                                   for m in _MOVE_ID.finditer(data[a:b])))
    return found


def read(path: Path) -> tuple[list[Record], int]:
    """The journal's records, and where its last whole line ends (for a reader: `xcon check`)."""
    found = scan(path.read_bytes() if path.exists() else b"")
    return found.records, found.good


def unfinished(records: list[Record]) -> set[str]:
    """The moves whose last record is neither done nor failed."""
    last = {r.move_id: r.step for r in records}
    return {move_id for move_id, step in last.items() if step not in MOVE_ENDED}


def damage_note(found: Scan, kept_as: str) -> dict[str, Any]:
    """What the orchestrator logs of a damaged journal: where, and which moves it leaves alone
    (every unfinished one when a damaged line names none)."""
    suspect = found.ids or sorted(unfinished(found.records))
    return {"file": str(PATH), "kept_as": kept_as, "damaged_bytes": [list(d) for d in found.damage],
            "suspect": suspect}


def vanished(path: Path, node_log: Path) -> dict[str, Any] | None:
    """A journal missing or empty though the orchestrator's own log says it wrote steps (a journal
    is never compacted: once written, never empty), and no loss of it was accepted since (a
    `storage.damaged` line about it after the last step): {"gone", "suspect": the moves the log
    leaves unfinished}; None if it is there, or none was owed."""
    gone = absent(path)
    if gone is None:
        return None
    last: dict[str, str] = {}
    owed = False
    for e in events_in(node_log, b'"move.step"', b'"storage.damaged"'):
        if e.get("event") == "move.step":
            last[e.get("move_id")] = e.get("step")
            owed = True
        elif e.get("event") == "storage.damaged" and e.get("file") == str(PATH):
            owed = False  # the loss was taken up (`xcon up --accept-damage`): what follows is the new journal's
            last = {}
    if not owed:
        return None
    return {"gone": gone, "suspect": sorted(m for m, step in last.items() if step not in MOVE_ENDED)}


class Journal:
    """The journal of one orchestrator: its records at start, then appended step by step."""

    def __init__(self, path: Path, node_log: Path | None = None):
        """`node_log`: the orchestrator's own log, which says whether a journal missing or empty at
        start had held steps (then it is damage: `vanished`)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        gone = vanished(path, node_log) if node_log is not None else None
        found = scan(path.read_bytes() if path.exists() else b"")
        self.records, self._size = found.records, found.good
        self.damage: dict[str, Any] | None = None
        if gone is not None:  # never taken for a journal with no moves in it
            kept = set_aside(path).name if path.exists() else None
            self.damage = {"file": str(PATH), "kept_as": kept, "damaged_bytes": [], **gone}
        elif found.damaged:  # never cut: kept as it was, and what reads is the new journal
            aside = set_aside(path)
            data = b"".join(line(r) for r in found.records)
            write_atomic(path, data)
            self._size = len(data)
            self.damage = damage_note(found, aside.name)
        self._fd = open_append(path)
        os.ftruncate(self._fd, self._size)  # the cut-short line goes, so the next one starts whole
        fsync_dir(path.parent)

    def write(self, record: Record) -> None:
        """Append and fsync one record, all or nothing (a full disk: the runtime tries again)."""
        self._size = append_whole(self._fd, line(record), self._size, os.fsync)


class MemoryJournal:
    """The journal of a simulated orchestrator: records in memory, each one durable as written."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.damage: dict[str, Any] | None = None

    def crash(self, torn: float) -> None:
        """The process died: every record was durable as it was written; nothing is lost."""

    def write(self, record: Record) -> None:
        self.records.append(record)  # frozen: what a reader would get back

    def dump(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_bytes(b"".join(line(r) for r in self.records))
