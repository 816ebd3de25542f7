"""Logs of checksummed records, read back: a torn tail is cut, damage in the middle is kept.

Three logs are appended record by record and read back at start: the MTA's queue log (binary
frames: length, crc32, msgpack; nodes.mta.spool), the move journal and the directory's change log
(JSON lines, each ending with its own crc32: `encode_line`). A crash can only tear the tail: an
incomplete last record, never acknowledged, which a start cuts off. Anything else that does not
read (a flipped byte, a record of the wrong shape, a line cut short in the middle, a last record
whose bytes are all there but do not read) is damage, and
it is never cut silently: the reader takes up every record it can read on both sides of it,
and says where the damage is (`Scan.damage`), so the node can keep the file aside untouched
(`set_aside`), log what it lost, and `xcon up` can refuse to start over it without
`--accept-damage`.

A state file that is rewritten whole (directory.json, a store's .locks.json, cluster.json) is
read or refused: `DamagedFile` says which file and why, in one line.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from protocol.names import valid_msg_id


class DamagedFile(Exception):
    """A file a node needs that is missing or does not read; str(err) is one line that says which
    and why. A node refuses to start on it (nodes.runtime.refuse_damage), never replaces it."""

    def __init__(self, path: Path | str, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = str(path), why


@dataclass
class Scan:
    """What a log holds: the records read, where the good part ends (a torn tail after it is cut),
    and the byte ranges that did not read in the middle, with what they are known to have held."""

    records: list[Any] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # where each record ends (frames only)
    good: int = 0  # the offset where the last record read ends (what is kept)
    torn: int = 0  # bytes of a torn tail after `good`
    damage: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each damaged run
    ids: list[str] = field(default_factory=list)  # ids read out of the damaged runs, where any could be

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    def describe(self, name: str) -> str:
        """One line: where the damage is."""
        return describe_damage(name, self.damage)


def describe_damage(name: str, damage: list, what: str = "") -> str:
    """`name is damaged in the middle (bytes a-b do not read[; what])`, for a log's damaged spans."""
    spans = ", ".join(f"{a}-{b}" for a, b in damage[:3]) + (" ..." if len(damage) > 3 else "")
    return f"{name} is damaged in the middle (bytes {spans} do not read{'; ' + what if what else ''})"


# --- binary frames: length (4 bytes, big-endian) | crc32 (4 bytes) | msgpack ----------------------

HEADER = struct.Struct(">II")
# in a damaged run, the start of a queue-log record as msgpack writes it, then its id (a str of up
# to 255 bytes): a record of today's form (nodes.mta.wal: ["P", id, ...] of 10, ["S", id, pairs],
# ["R", id, hops, at]) or of the form before it (["p", id, {...}], ["s", id, {...}], ["r", ...])
_RECORD_START = re.compile(rb"(?:\x93\xa1[psS]|\x94\xa1[rR]|\x9a\xa1P)(?:([\xa0-\xbf])|\xd9(.))", re.S)


def scan_frames(data: bytes, read: Callable[[Any], Any]) -> Scan:
    """The records of a log of frames. A record whose frame, checksum or body (`read`: the record
    the body's bytes hold, or None if they do not read as one) is wrong ends the good part if
    nothing readable follows it (a torn tail), else it is damage:
    the reader looks for the next offset where a good record starts and goes on from there."""
    scan = Scan()
    at = 0
    with memoryview(data) as view:  # each record's body read where it lies, not copied out first
        while at < len(data):
            record, end = _frame_at(view, at, read)
            if record is not None:
                scan.records.append(record)
                scan.ends.append(end)
                at = scan.good = end
                continue
            resume = _next_frame(data, at + 1, read)
            if resume is None:
                if _complete(data, at):  # all its bytes are there, and they do not read: damage, not a tear
                    scan.damage.append((at, len(data)))
                    scan.ids += ids_in(data[at:])
                else:  # a torn tail: an incomplete last record, which a crash can leave
                    scan.torn = len(data) - at
                break
            scan.damage.append((at, resume))
            scan.ids += ids_in(data[at:resume])
            at = resume
    return scan


def _frame_at(data: bytes | memoryview, at: int, read: Callable[[Any], Any]) -> tuple[Any, int]:
    if at + HEADER.size > len(data):
        return None, at
    size, crc = HEADER.unpack_from(data, at)
    end = at + HEADER.size + size
    if end > len(data):
        return None, at
    body = data[at + HEADER.size:end]
    if zlib.crc32(body) != crc:
        return None, at
    record = read(body)
    return (record, end) if record is not None else (None, at)


def _complete(data: bytes, at: int) -> bool:
    """Whether the record at `at` has every byte its header promises (a torn one has fewer)."""
    return at + HEADER.size <= len(data) and at + HEADER.size + HEADER.unpack_from(data, at)[0] <= len(data)


# how a queue-log record's body begins (as _RECORD_START, and a commit: ["C"], or ["c"] before): the
# only offsets where a record can start, found by the regex engine, not byte by byte in Python (a
# torn 15 MiB record took 7.5 s to search that way)
_BODY_START = re.compile(rb"\x93\xa1[psS]|\x94\xa1[rR]|\x9a\xa1P|\x91\xa1[cC]")


def _next_frame(data: bytes, start: int, read: Callable[[Any], Any]) -> int | None:
    """The first offset from `start` where a whole, valid record begins."""
    for m in _BODY_START.finditer(data, start + HEADER.size):
        at = m.start() - HEADER.size
        if at + HEADER.size + int.from_bytes(data[at:at + 4], "big") <= len(data) and \
                _frame_at(data, at, read)[0] is not None:
            return at
    return None


# the tags of a message's later states (a step, a retirement), today's and before: not its first record
LATER = frozenset(b"sSrR")


def ids_in(run: bytes, later: bool = False) -> list[str]:
    """The message ids a damaged run of a queue log still shows, where its bytes allow (`later`:
    only those of records of a message's later states)."""
    ids = []
    for m in _RECORD_START.finditer(run):
        if later and run[m.start() + 2] not in LATER:
            continue
        size = (m.group(1)[0] - 0xa0) if m.group(1) is not None else m.group(2)[0]
        raw = run[m.end():m.end() + size]
        if len(raw) == size:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                continue
            if valid_msg_id(text):  # a flipped byte inside the id itself leaves one that is no id
                ids.append(text)
    return list(dict.fromkeys(ids))


# --- JSON lines, each with its own checksum -------------------------------------------------------

_CRC = re.compile(rb', "crc": "([0-9a-f]{8})"\}$')


def encode_line(record: dict[str, Any]) -> bytes:
    """One record as a JSON line that ends with its own crc32, which jq and a person read as a field:
    `{"a": 1, "usn": 2, "crc": "1c291ca3"}`."""
    body = json.dumps(record, sort_keys=True).encode()
    return body[:-1] + b', "crc": "%08x"}\n' % zlib.crc32(body)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of one line (without its newline), or None if it does not read. A line with no
    checksum is taken if it parses: logs written before checksums existed."""
    m = _CRC.search(line)
    body = line[:m.start()] + b"}" if m else line
    if m and zlib.crc32(body) != int(m.group(1), 16):
        return None
    try:
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def scan_lines(data: bytes, read: Callable[[dict[str, Any]], Any] = lambda r: r) -> Scan:
    """The records of a log of JSON lines, each as `read` makes it of the line's dict (a type:
    orchestrator.journal, nodes.directory.node); `read` returning None or raising ValueError (as
    msgspec.ValidationError is) refuses it. The text after the last newline is a torn tail; a
    whole line that does not read, or is refused, is damage."""
    scan = Scan()
    end = data.rfind(b"\n") + 1
    scan.good, scan.torn = end, len(data) - end
    at = 0
    while at < end:
        nl = data.index(b"\n", at)
        record = decode_line(data[at:nl])
        try:
            record = None if record is None else read(record)
        except ValueError:
            record = None
        if record is not None:
            scan.records.append(record)
        elif scan.damage and scan.damage[-1][1] == at:
            scan.damage[-1] = (scan.damage[-1][0], nl + 1)
        else:
            scan.damage.append((at, nl + 1))
        at = nl + 1
    return scan


def absent(path: Path) -> str | None:
    """"missing" or "emptied" for a record log that is not there or holds nothing, None for one
    that holds something: a log a node made always holds a record, so either is damage where the
    node's own log says it wrote one (nodes.mta.wal.vanished, orchestrator.journal.vanished)."""
    try:
        return None if path.stat().st_size > 0 else "emptied"
    except FileNotFoundError:
        return "missing"


# --- keeping a damaged file ------------------------------------------------------------------------

def set_aside(path: Path) -> Path:
    """Keep a damaged file untouched beside the new one: `<name>.damaged-<time>` (renamed, so the
    bytes are the very ones that were found); returns its path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}.{n}")
    os.rename(path, aside)
    return aside


def read_back(value: Any, sort_keys: bool = False) -> Any:
    """What a JSON file of `value` reads back as (a simulated node's file, kept in memory): a
    deep copy with tuples as lists and keys as strings, by orjson, or by json's own round trip for
    what orjson refuses (an int past 64 bits). No state holds a NaN, which json writes and orjson
    writes as null."""
    try:
        return orjson.loads(orjson.dumps(value, option=_READ_BACK[sort_keys]))
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.loads(json.dumps(value, sort_keys=sort_keys))


_READ_BACK = {False: orjson.OPT_NON_STR_KEYS, True: orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS}


def read_json_file(path: Path, valid: Callable[[Any], str | None] | None = None) -> Any:
    """A JSON state file, or DamagedFile saying why it does not read; `valid` returns what is
    wrong with the value, or None."""
    try:
        value = json.loads(path.read_bytes())
    except ValueError as exc:
        raise DamagedFile(path, f"not JSON ({exc})") from None
    except OSError as exc:
        raise DamagedFile(path, exc.strerror or str(exc)) from None
    problem = valid(value) if valid else None
    if problem:
        raise DamagedFile(path, problem)
    return value
