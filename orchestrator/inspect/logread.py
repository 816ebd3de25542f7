"""Reading the nodes' JSON-lines logs back: one merged timeline of every node, and whether the
logs are whole (`problems`): a verdict never rests on a log that is missing, emptied, cut at the
start or damaged in the middle."""

from __future__ import annotations

import fnmatch
import heapq
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from nodes.logs import CREATED
from protocol import hlc


def log_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "logs").glob("*.jsonl"))


def read_file(path: Path, bad: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The events of one log. A line that does not read is put in `bad` as "<file>:<line>", but for
    a last line with no newline: a node killed while writing it (torn, not damaged)."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                event = orjson.loads(line)  # the reader's main cost: orjson (docs/performance.md)
            except orjson.JSONDecodeError:
                if bad is not None and line.endswith(b"\n"):
                    bad.append(f"{path.name}:{n}")
                continue
            if isinstance(event, dict) and "event" in event:
                yield event


def merged(run_dir: Path, bad: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every node's events in one stream, in the order of their hybrid logical clocks
    (protocol.hlc): a receive after its send, and by time between events with no link.

    Each file is already in that order (every line of a node advances its clock), so a k-way
    merge keeps memory flat however long the logs are."""
    return merge([read_file(p, bad) for p in log_files(run_dir)])


def merge(streams: list[Iterable[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Streams of events, each in clock order, as one, in clock order (ties: the stream first given)."""
    return heapq.merge(*streams, key=hlc.of_event)


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


def problems(run_dir: Path, nodes: Iterable[str], begun_anew: bool = True) -> list[str]:
    """What is wrong with the logs of `nodes` (a line each): missing, empty, or not beginning with
    the line every node's log begins with (nodes.logs.CREATED): cut at the start, or replaced; and,
    with `begun_anew`, a log its node began again over a lost one (that loss a start accepted
    once, and no verdict rests on it ever after)."""
    found = []
    for node in nodes:
        path = run_dir / "logs" / f"{node}.jsonl"
        try:
            with open(path, "rb") as f:
                first = f.readline()
        except FileNotFoundError:
            found.append(f"logs/{node}.jsonl is missing")
            continue
        if not first:
            found.append(f"logs/{node}.jsonl is empty")
            continue
        try:
            head = orjson.loads(first)
            event = head.get("event")
        except (orjson.JSONDecodeError, AttributeError):
            head, event = {}, None
        if event != CREATED:
            found.append(f"logs/{node}.jsonl does not begin with its {CREATED} line (cut at the start, or replaced)")
        elif head.get("lost") and begun_anew:  # begun anew over a lost one (nodes.logs.log_lost)
            found.append(f"logs/{node}.jsonl was begun anew: {head['lost']}")
    return found
