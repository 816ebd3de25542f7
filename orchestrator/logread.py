"""Reading the nodes' JSON-lines logs back: one merged timeline of every node."""

from __future__ import annotations

import fnmatch
import heapq
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson


def log_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "logs").glob("*.jsonl"))


def read_file(path: Path, bad: list[str] | None = None) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                event = orjson.loads(line)  # the reader's main cost: orjson (docs/performance.md)
            except orjson.JSONDecodeError:
                if bad is not None:
                    bad.append(f"{path.name}:{n}")
                continue
            if isinstance(event, dict) and "event" in event:
                yield event


def merged(run_dir: Path, bad: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every node's events in one stream, ordered by time, then Lamport clock.

    Each file is already in time order (one process appends to it), so a k-way merge keeps
    memory flat however long the logs are."""
    return merge([read_file(p, bad) for p in log_files(run_dir)])


def merge(streams: list[Iterable[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Streams of events, each in time order, as one: ordered by time, then Lamport clock."""
    return heapq.merge(*streams, key=lambda e: (e.get("ts", 0), e.get("lamport", 0)))


def matches(event: dict[str, Any], node: str | None = None, msg: str | None = None,
            pattern: str | None = None) -> bool:
    if node and not fnmatch.fnmatchcase(event.get("node", ""), node):
        return False
    if pattern and not fnmatch.fnmatchcase(event.get("event", ""), pattern):
        return False
    if msg and msg not in (event.get("msg_id"), event.get("ndr_for"), event.get("trace")):
        return False
    return True


def filtered(events: Iterable[dict[str, Any]], **criteria: Any) -> Iterator[dict[str, Any]]:
    return (e for e in events if matches(e, **criteria))
