"""What a store's core asks its runtime to do (Maildir I/O), and the file names it uses.

The core (nodes.store.core) decides; these values say what to write, delete, rename or read,
and the storages (nodes.store.maildir: on disk, or in memory) carry them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IN_TRANSIT = ".intransit."  # + mailbox: a legacy move's copy, flushed into the mailbox when it opens
SOFT_DELETED = ".softdeleted."  # + mailbox: a moved-away mailbox kept for recovery until purged


@dataclass(frozen=True)
class CreateMailbox:
    mailbox: str


@dataclass(slots=True)
class WriteMessage:
    """Write one message into mailbox/new the Maildir way (tmp, fsync, rename)."""

    mailbox: str
    name: str
    raw: bytes


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


def msg_id_of(name: str) -> str | None:
    """The message id in a message's file name (TIME.MSGID.xcon, and `:2,FLAGS` once a mail
    reader moved it into cur/)."""
    head, _, rest = name.split(":", 1)[0].partition(".")
    if not head.isdigit() or not rest.endswith(".xcon"):
        return None
    return rest[: -len(".xcon")] or None
