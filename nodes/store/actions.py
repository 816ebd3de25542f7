"""What a store's core asks its runtime to do (Maildir I/O), and the file names it uses.

The core (nodes.store.core) decides; these values say what to write, delete, rename or read,
and the storages (nodes.store.maildir: on disk, or in memory) carry them out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

IN_TRANSIT = ".intransit."  # + mailbox: a legacy move's copy, flushed into the mailbox when it opens
SOFT_DELETED = ".softdeleted."  # + mailbox: a moved-away mailbox kept for recovery until purged


@dataclass(frozen=True)
class CreateMailbox:
    mailbox: str


@dataclass(slots=True)
class WriteMessage:
    """Write one message into the mailbox the Maildir way (tmp, fsync, rename): into new/, or with
    `info` (Maildir's `2,FLAGS`: a reader's flags) into cur/ as `NAME:INFO`; into the mailbox's
    own folder, or a user's (`folder`: Maildir++'s `.Name`, made as IMAP made it)."""

    mailbox: str
    name: str
    raw: bytes
    folder: str = ""
    info: str | None = None


@dataclass(frozen=True)
class DeleteMailbox:
    mailbox: str


@dataclass(frozen=True)
class RenameMailbox:
    """Put folder `source` in the place of folder `mailbox`, whose messages are dropped (a legacy
    move's in-transit flush; a soft delete)."""

    source: str
    mailbox: str


@dataclass(frozen=True)
class PersistLocks:
    """The store's move state, written atomically: locks (mailbox -> owner), the incoming
    mailboxes, the owners that have ended here, the mailboxes a legacy move made live (mailbox ->
    owner), and the soft-deleted ones (mailbox -> when it is purged)."""

    locks: dict[str, str]
    incoming: list[str]
    ended: list[str]
    made: dict[str, str]
    soft_deleted: dict[str, float]

    def state(self) -> dict[str, Any]:
        return {"locks": self.locks, "incoming": self.incoming, "ended": self.ended, "made": self.made,
                "soft_deleted": self.soft_deleted}


@dataclass(frozen=True)
class ListMailbox:
    """Answer with a summary of every message in the mailbox (read from disk)."""

    peer: bytes
    re: str
    mailbox: str


@dataclass(frozen=True)
class ExportPage:
    """Answer with up to `limit` messages whose file names sort after `after`."""

    peer: bytes
    re: str
    mailbox: str
    after: str
    limit: int


def message_name(now: float, msg_id: str) -> str:
    """The Maildir file name of a message: time, then message id, so names sort by arrival."""
    return f"{int(now * 1000)}.{msg_id}.xcon"


# a file name a move may carry: one path segment, not hidden, printable (a reader's own names,
# Dovecot's `TIME.M...P....host,S=...`, as well as xcon's)
_SAFE_NAME = re.compile(r"[^./\x00-\x20\x7f][^/\x00-\x1f\x7f]{0,254}")
# Maildir++'s folder of a mailbox (`.Archive`, `.Archive.2026`), as Dovecot names them
_FOLDER = re.compile(r"\.[^./\x00-\x1f\x7f][^/\x00-\x1f\x7f]{0,254}")
_INFO = re.compile(r"2,[A-Za-z]{0,52}")  # Maildir's info: the flags a reader set


def carried(name: Any, folder: Any, info: Any) -> bool:
    """Whether a message's file name, folder and info (a move's copy) are ones a Maildir holds
    safely: nothing that climbs out of the mailbox, or that a reader would take for another file."""
    return (isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name)) and ":" not in name
            and isinstance(folder, str) and (folder == "" or bool(_FOLDER.fullmatch(folder)))
            and (info is None or (isinstance(info, str) and bool(_INFO.fullmatch(info)))))


def entry_key(folder: str, name: str) -> str:
    """A message's key in a move's export (Maildirs.entries): its name in the mailbox's own
    folder, `folder/name` in a user's."""
    return f"{folder}/{name}" if folder else name


def msg_id_of(name: str) -> str | None:
    """The message id in a message's file name (TIME.MSGID.xcon, and `:2,FLAGS` once a mail
    reader moved it into cur/)."""
    head, _, rest = name.split(":", 1)[0].partition(".")
    if not head.isdigit() or not rest.endswith(".xcon"):
        return None
    return rest[: -len(".xcon")] or None
