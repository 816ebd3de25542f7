"""The move journal on disk, `<run-dir>/orchestrator/journal.jsonl`: one JSON line per step of a
move, written and synced before the step is acted on. The orchestrator reads it back at start
(orchestrator.move.MoveCore.recover); `xcon check` reads which moves it leaves unfinished."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nodes.config import append_whole, open_append
from protocol import MOVE_ENDED

PATH = Path("orchestrator") / "journal.jsonl"  # under the run-dir


def read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The journal's records, and where its last whole line ends: a last line a crash cut short
    was never acted on, and is not a record."""
    data = path.read_bytes() if path.exists() else b""
    good = data.rfind(b"\n") + 1
    records = []
    for line in data[:good].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # not ours to guess at
    return records, good


def unfinished(records: list[dict[str, Any]]) -> set[str]:
    """The moves whose last record is neither done nor failed."""
    last = {r["move_id"]: r["step"] for r in records}
    return {move_id for move_id, step in last.items() if step not in MOVE_ENDED}


class Journal:
    """The journal of one orchestrator: its records at start, then appended step by step."""

    def __init__(self, path: Path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.records, self._size = read(path)
        self._fd = open_append(path)
        os.ftruncate(self._fd, self._size)  # the cut-short line goes, so the next one starts whole

    def write(self, record: dict[str, Any]) -> None:
        """Append and fsync one record, all or nothing (a full disk: the runtime tries again)."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        self._size = append_whole(self._fd, line, self._size, os.fsync)


class MemoryJournal:
    """The journal of a simulated orchestrator: records in memory, each one durable as written."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def crash(self, torn: float) -> None:
        """The process died: every record was durable as it was written; nothing is lost."""

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(json.loads(json.dumps(record, sort_keys=True)))  # what a reader gets back

    def dump(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
