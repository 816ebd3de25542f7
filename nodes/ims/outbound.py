"""The IMS's queue of mail leaving the organisation, on disk, under `<run-dir>/ims/<server>/`:

    outbound/<key>.msg   a (message, outside address) to relay: written whole (tmp, fsync, rename)
                         before the MTA is told "ok"
    failed/<key>.msg     one that will not leave: refused for good by the smarthost (5xx), or past
                         its lifetime; kept for the administrator, and handed back to the MTA,
                         which makes its report (an NDR to the originator) or, for a report, the
                         postmaster's copy
    log.jsonl            what ended each item, a line each (nodes.records.encode_line, with its
                         crc32): `relayed` (the smarthost said 250; `xcon check` reads it as the
                         message's arrival outside) or `returned` (the MTA took the failure back)

An item's file is `MAGIC | crc32 | msgpack`; a file of the first format (msgpack alone) is read
as it was. The log was `relayed.jsonl`, of relays alone and with no checksums; it is read still,
and written on in its new name. So each item ends in exactly one of: relayed, or returned to its
MTA; a file moves from outbound/ to failed/ before it is handed back, so it is never relayed
after.

Damage is kept, never cut, as in every record log (nodes.records): an item file that does not
read is renamed aside (`<key>.msg.damaged-<time>`) and named, with the message id its bytes still
show; a log line that does not read in the middle sets the log aside and the lines that read
are written anew. `look` reads the same files, changing nothing, for `xcon up` and `xcon check`.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import msgpack

from protocol.names import valid_msg_id

from ..config import fsync_dir, open_append, write_atomic
from ..records import Scan, describe_damage, encode_line, scan_lines, set_aside

MAGIC = b"xcon ims item 1\n"
LOG, OLD_LOG = "log.jsonl", "relayed.jsonl"
_ITEM = {"msg_id": str, "sender": str, "rcpt": str, "raw": bytes, "ndr_for": (str, type(None)), "ndr_rcpts": list,
         "queued_at": (int, float)}
# in a damaged item file, where msgpack wrote the message id: the key, then a str of up to 255 bytes
_MSG_ID = re.compile(rb"\xa6msg_id(?:([\xa0-\xbf])|\xd9(.))", re.S)


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
    expires_at: float  # past this it goes back to the MTA (an item from before: queued_at + its lifetime)
    accepted_at: float = 0.0  # when the organisation accepted the message (its report says so)
    priority: str = "normal"
    failed: str | None = None  # once it will not leave: "refused: <the smarthost's words>" or "expired: ..."
    attempts: int = 0
    next_at: float = 0.0
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return {"msg_id": self.msg_id, "sender": self.sender, "rcpt": self.rcpt, "raw": self.raw,
                "ndr_for": self.ndr_for, "ndr_rcpts": self.ndr_rcpts, "queued_at": self.queued_at,
                "expires_at": self.expires_at, "accepted_at": self.accepted_at, "priority": self.priority,
                "failed": self.failed}

    @property
    def why(self) -> str:
        """The failure's kind, as the MTA takes it: one of protocol.RELAY_FAILURES."""
        return (self.failed or "").split(":", 1)[0]


def key_of(msg_id: str, rcpt: str) -> str:
    import hashlib

    return hashlib.sha256(f"{msg_id}\0{rcpt}".encode()).hexdigest()[:32]


def encode_item(record: dict[str, Any]) -> bytes:
    body = msgpack.packb(record, use_bin_type=True)
    return MAGIC + zlib.crc32(body).to_bytes(4, "big") + body


def decode_item(data: bytes) -> dict[str, Any] | None:
    """An item file's record, or None where it does not read (its checksum, its msgpack, or a
    field of the wrong type)."""
    if data.startswith(MAGIC):
        crc, body = data[len(MAGIC):len(MAGIC) + 4], data[len(MAGIC) + 4:]
        if len(crc) < 4 or zlib.crc32(body) != int.from_bytes(crc, "big"):
            return None
    else:
        body = data  # the first format: msgpack alone
    try:
        record = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), t) for k, t in _ITEM.items()):
        return None
    if not valid_msg_id(record["msg_id"]) or not all(isinstance(r, str) for r in record["ndr_rcpts"]):
        return None
    return record


def id_in(data: bytes) -> str | None:
    """The message id a damaged item file still shows, where its bytes allow."""
    m = _MSG_ID.search(data)
    if m is None:
        return None
    size = (m.group(1)[0] - 0xa0) if m.group(1) is not None else m.group(2)[0]
    text = data[m.end():m.end() + size].decode(errors="ignore")
    return text if len(text) == size and valid_msg_id(text) else None


def _valid_line(r: dict[str, Any]) -> bool:
    return isinstance(r.get("msg_id"), str) and isinstance(r.get("rcpt"), str)


@dataclass
class Found:
    """What an IMS's files hold, read and nothing else: the items by key (failed ones with
    `failed` set), the log's lines, and what does not read (a line each, and the damaged files:
    path -> the message id its bytes show, or None)."""

    items: dict[str, dict[str, Any]]
    lines: list[dict[str, Any]]
    log_scan: Scan
    log_path: Path
    damaged_files: dict[Path, str | None]

    def ended(self) -> set[str]:
        return {key_of(r["msg_id"], r["rcpt"]) for r in self.lines}

    def damage(self, root: Path) -> list[str]:
        """One line per damaged file, relative to `root` (the run-dir)."""
        said = [f"{p.relative_to(root)} does not read (its checksum or its fields){f' (message {i})' if i else ''}"
                for p, i in sorted(self.damaged_files.items())]
        if self.log_scan.damaged:
            ids = _ids_in_lines(self.log_path.read_bytes(), self.log_scan)
            said.append(describe_damage(str(self.log_path.relative_to(root)), self.log_scan.damage,
                                        f"ends lost: {', '.join(ids)}" if ids else ""))
        return said


def look(folder: Path) -> Found:
    """Read an IMS's folder as its node reads it at start, changing nothing."""
    log_path = folder / LOG if (folder / LOG).exists() or not (folder / OLD_LOG).exists() else folder / OLD_LOG
    try:
        data = log_path.read_bytes()
    except FileNotFoundError:
        data = b""
    scan = scan_lines(data, lambda r: r if _valid_line(r) else None)
    items: dict[str, dict[str, Any]] = {}
    damaged: dict[Path, str | None] = {}
    for sub in ("failed", "outbound"):  # failed first: a file in both is failed (moved, then killed)
        for path in sorted((folder / sub).glob("*.msg")):
            data = path.read_bytes()
            record = decode_item(data)
            if record is None:
                damaged[path] = id_in(data)
            elif path.stem not in items:
                items[path.stem] = {**record, "failed": record.get("failed") or
                                    ("refused: kept in failed/ before items went back to the MTA" if sub == "failed"
                                     else None)}
    return Found(items, scan.records, scan, log_path, damaged)


def _ids_in_lines(data: bytes, scan: Scan) -> list[str]:
    ids = []
    for start, end in scan.damage:
        for m in re.finditer(rb'"msg_id": "([^"]{1,255})"', data[start:end]):
            text = m.group(1).decode(errors="ignore")
            if valid_msg_id(text):
                ids.append(text)
    return list(dict.fromkeys(ids))


def load_queue(records: dict[str, dict[str, Any]], lines: list[dict[str, Any]],
               lifetime: Callable[[dict[str, Any]], float] | None) -> tuple[dict[str, Item], set[str], set[str], list[str]]:
    """The queue as the files hold it: (items by key, relayed keys, returned keys, the keys whose
    file in outbound/ is stale: ended, or moved to failed/, then killed before it left)."""
    relayed = {key_of(r["msg_id"], r["rcpt"]) for r in lines if "returned" not in r}
    returned = {key_of(r["msg_id"], r["rcpt"]) for r in lines if "returned" in r}
    items: dict[str, Item] = {}
    stale = []
    for key, r in records.items():
        if key in relayed or key in returned or r["failed"]:
            stale.append(key)  # a failed item's file stays in failed/ for the administrator
        if key in relayed or key in returned:
            continue
        expires = r.get("expires_at") or r["queued_at"] + (lifetime(r) if lifetime else float("inf"))
        items[key] = Item(key, r["msg_id"], r["sender"], r["rcpt"], r["raw"], r["ndr_for"], r["ndr_rcpts"],
                          r["queued_at"], expires, r.get("accepted_at") or r["queued_at"],
                          r.get("priority") or "normal", r["failed"])
    return items, relayed, returned, stale


class Outbound:
    """The queue's files: what they held at load (`items`, `relayed`, `returned`), and the three
    writes the IMS's core asks for (nodes.ims.core: WriteItem, RemoveItem, AppendLine), each
    durable when it returns."""

    def __init__(self, folder: Path, fsync: bool = True, lifetime: Callable[[dict[str, Any]], float] | None = None):
        """The queue in `folder`, as its files hold it; damaged files kept aside and described in
        `damage` (None: none). `lifetime(record)` is the seconds an item from before items had
        their own lifetime may wait from queued_at."""
        self.folder, self.fsync = folder, fsync
        for sub in ("outbound", "failed"):
            (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        found = look(folder)
        self.damage: dict[str, Any] | None = None
        lost, kept = [], []
        for path, msg_id in found.damaged_files.items():
            kept.append(str(set_aside(path).relative_to(folder.parent.parent)))
            lost += [msg_id] if msg_id else []
        lines = found.lines
        if found.log_scan.damaged:
            lost += _ids_in_lines(found.log_path.read_bytes(), found.log_scan)
            kept.append(str(set_aside(found.log_path).relative_to(folder.parent.parent)))
            write_atomic(folder / LOG, b"".join(encode_line(r) for r in lines))
        elif found.log_path.name == OLD_LOG:  # written on under its new name, with checksums
            write_atomic(folder / LOG, b"".join(encode_line(r) for r in lines))
            found.log_path.unlink()
        elif found.log_scan.torn:  # a line a crash cut short: never acknowledged
            os.truncate(folder / LOG, found.log_scan.good)
        if kept:
            self.damage = {"file": f"ims/{folder.name}", "kept_as": ", ".join(kept), "lost": list(dict.fromkeys(lost))}
        self._log = open_append(folder / LOG)
        self.items, self.relayed, self.returned, stale = load_queue(found.items, lines, lifetime)
        for key in stale:
            (folder / "outbound" / f"{key}.msg").unlink(missing_ok=True)

    def write(self, sub: str, item: Item) -> None:
        """The item's file in `sub` (outbound/ or failed/), written whole."""
        path = self.folder / sub / f"{item.key}.msg"
        data = encode_item(item.record())
        if self.fsync:
            write_atomic(path, data)
        else:
            path.write_bytes(data)

    def remove(self, sub: str, key: str) -> None:
        path = self.folder / sub / f"{key}.msg"
        path.unlink(missing_ok=True)
        if self.fsync:
            fsync_dir(path.parent)

    def line(self, record: dict[str, Any]) -> None:
        """What ended an item (relayed, returned), on the log."""
        os.write(self._log, encode_line(record))
        if self.fsync:
            os.fsync(self._log)


class MemoryOutbound:
    """The queue's files in memory, for the simulator (orchestrator.sim): every write is durable
    when it returns, as on disk, so a kill loses nothing of it; `dump` writes the files a real
    IMS leaves, for `xcon check` to read."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], dict[str, Any]] = {}
        self.lines: list[dict[str, Any]] = []
        self.damage: dict[str, Any] | None = None
        self.items: dict[str, Item] = {}
        self.relayed: set[str] = set()
        self.returned: set[str] = set()

    def load(self, lifetime: Callable[[dict[str, Any]], float] | None) -> None:
        records: dict[str, dict[str, Any]] = {}
        for (sub, key), r in sorted(self.files.items()):  # failed/ sorts first: a file in both is failed
            records.setdefault(key, r)
        self.items, self.relayed, self.returned, stale = load_queue(records, self.lines, lifetime)
        for key in stale:
            self.files.pop(("outbound", key), None)

    def write(self, sub: str, item: Item) -> None:
        self.files[(sub, item.key)] = item.record()

    def remove(self, sub: str, key: str) -> None:
        self.files.pop((sub, key), None)

    def line(self, record: dict[str, Any]) -> None:
        self.lines.append(record)

    def crash(self, torn: float = 0.0) -> None:
        """Nothing is lost: each write was whole when it returned."""

    def dump(self, folder: Path) -> None:
        for sub in ("outbound", "failed"):
            (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        for (sub, key), record in self.files.items():
            (folder / sub / f"{key}.msg").write_bytes(encode_item(record))
        (folder / LOG).write_bytes(b"".join(encode_line(r) for r in self.lines))
