"""The Information Store of one server: which mailboxes exist, which are locked, what is in each.

The core decides; Maildir I/O is done by the runtime through the actions below. A delivery to
a locked mailbox answers "deferred"; to a mailbox that is not on this server, "not_here"; a
message already in the mailbox (same message id) answers "duplicate" and is not written again,
which makes redelivery idempotent by (message id, recipient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.names import valid_alias, valid_msg_id

from ..core import Ids, Reply, Request, Send, error, log

MAX_EXPORT = 5000  # messages per export page; the store also stops a page at PAGE_BYTES


# --- actions the store runtime executes (Maildir I/O) ----------------------------------------

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
class PersistLocks:
    locks: dict[str, str]  # mailbox -> owner


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
    head, _, rest = name.partition(".")
    if not head.isdigit() or not rest.endswith(".xcon"):
        return None
    return rest[: -len(".xcon")] or None


class StoreCore:
    def __init__(self, server: str, mailboxes: dict[str, set[str]], locks: dict[str, str], boot: str):
        self.server = server
        self.mta = f"mta.{server}"
        self.mailboxes = mailboxes  # alias -> message ids in it
        self.locked = {m: owner for m, owner in locks.items() if m in mailboxes}  # mailbox -> owner
        self.ids = Ids(f"store.{server}", boot)
        self.ready = True

    def start(self, now: float) -> list:
        return [log("store.loaded", mailboxes=len(self.mailboxes), locked=self.locked)]

    def next_wakeup(self) -> None:
        return None

    def tick(self, now: float) -> list:
        return []

    def status(self, now: float) -> dict[str, Any]:
        return {
            "mailboxes": {m: len(ids) for m, ids in sorted(self.mailboxes.items())},
            "locked": sorted(self.locked),
        }

    def on_event(self, event: Any, now: float) -> list:
        if not isinstance(event, Request):
            return []  # the MTA's "ok" to a released notice needs nothing
        frame = event.frame
        handler = {
            "store.create": self._create,
            "store.deliver": self._deliver,
            "store.list": self._list,
            "store.lock": self._lock,
            "store.unlock": self._unlock,
            "store.export": self._export,
            "store.import": self._import,
            "store.delete": self._delete,
        }.get(frame.type)
        if handler is None:
            return error(event, f"the store does not handle '{frame.type}'")
        mailbox = frame.body.get("mailbox", "")
        if not valid_alias(mailbox):
            return error(event, f"'{mailbox}' is not a valid mailbox name")
        return handler(event, frame.body, now)

    # --- requests ---------------------------------------------------------------------------

    def _create(self, req: Request, body: dict[str, Any], now: float) -> list:
        mailbox = body["mailbox"]
        if mailbox in self.mailboxes:
            return error(req, f"mailbox '{mailbox}' already exists on {self.server}")
        self.mailboxes[mailbox] = set()
        return [CreateMailbox(mailbox), self._ok(req), log("store.created", mailbox=mailbox)]

    def _deliver(self, req: Request, body: dict[str, Any], now: float) -> list:
        msg_id, mailbox = body["msg_id"], body["mailbox"]
        if not valid_msg_id(msg_id):
            return error(req, f"'{msg_id[:80]}' is not a valid message id")
        fields = {"msg_id": msg_id, "mailbox": mailbox}

        def result(outcome: str, reason: str = "") -> Reply:
            return Reply(req.peer, req.frame.id, "store.result", {**fields, "outcome": outcome, "reason": reason},
                         req.frame.trace)

        if mailbox not in self.mailboxes:
            return [result("not_here", f"no mailbox '{mailbox}' on {self.server}"),
                    log("store.not_here", **fields)]
        if mailbox in self.locked:
            return [result("deferred", "mailbox locked"), log("store.deferred", reason="mailbox locked", **fields)]
        if msg_id in self.mailboxes[mailbox]:
            return [result("duplicate"), log("store.duplicate_suppressed", **fields)]
        self.mailboxes[mailbox].add(msg_id)
        name = message_name(now, msg_id)
        return [
            WriteMessage(mailbox, name, body["raw"]),
            result("delivered"),
            log("store.delivered", file=name, size=len(body["raw"]), ndr_for=body["ndr_for"],
                ndr_rcpts=body["ndr_rcpts"], **fields),
        ]

    def _list(self, req: Request, body: dict[str, Any], now: float) -> list:
        if body["mailbox"] not in self.mailboxes:
            return error(req, f"no mailbox '{body['mailbox']}' on {self.server}")
        return [ListMailbox(req.peer, req.frame.id, body["mailbox"])]

    def _lock(self, req: Request, body: dict[str, Any], now: float) -> list:
        mailbox, owner = body["mailbox"], body["owner"]
        if mailbox not in self.mailboxes:
            return error(req, f"no mailbox '{mailbox}' on {self.server}")
        holder = self.locked.get(mailbox)
        if holder == owner:
            return [self._ok(req), log("store.lock_repeated", mailbox=mailbox, owner=owner)]
        if holder is not None:
            return error(req, f"mailbox '{mailbox}' is already locked by {holder}")
        self.locked[mailbox] = owner
        return [PersistLocks(dict(self.locked)), self._ok(req), log("store.locked", mailbox=mailbox, owner=owner)]

    def _unlock(self, req: Request, body: dict[str, Any], now: float) -> list:
        mailbox, owner = body["mailbox"], body["owner"]
        if mailbox not in self.locked:
            return error(req, f"mailbox '{mailbox}' is not locked")
        if self.locked[mailbox] != owner:
            return error(req, f"mailbox '{mailbox}' is locked by {self.locked[mailbox]}, not {owner}")
        del self.locked[mailbox]
        return [PersistLocks(dict(self.locked)), self._ok(req), log("store.unlocked", mailbox=mailbox, owner=owner),
                *self._released(mailbox)]

    def _export(self, req: Request, body: dict[str, Any], now: float) -> list:
        if body["mailbox"] not in self.mailboxes:
            return error(req, f"no mailbox '{body['mailbox']}' on {self.server}")
        limit = body["limit"]
        if not 1 <= limit <= MAX_EXPORT:
            return error(req, f"export limit must be between 1 and {MAX_EXPORT}")
        return [ExportPage(req.peer, req.frame.id, body["mailbox"], body["after"], limit)]

    def _import(self, req: Request, body: dict[str, Any], now: float) -> list:
        mailbox = body["mailbox"]
        actions: list = []
        if mailbox not in self.mailboxes:
            self.mailboxes[mailbox] = set()
            actions.append(CreateMailbox(mailbox))
        held = self.mailboxes[mailbox]
        written = 0
        for m in body["messages"]:
            name, raw = m.get("name"), m.get("raw")
            msg_id = msg_id_of(name) if isinstance(name, str) else None
            if msg_id is None or not valid_msg_id(msg_id) or not isinstance(raw, bytes):
                return error(req, "store.import: each message needs a valid 'name' and bytes 'raw'")
            if msg_id in held:
                continue  # a retried import page: already here
            held.add(msg_id)
            actions.append(WriteMessage(mailbox, name, raw))
            written += 1
        actions += [
            Reply(req.peer, req.frame.id, "store.imported", {"mailbox": mailbox, "count": written}),
            log("store.imported", mailbox=mailbox, count=written),
        ]
        return actions

    def _delete(self, req: Request, body: dict[str, Any], now: float) -> list:
        mailbox = body["mailbox"]
        if mailbox not in self.mailboxes:
            return error(req, f"no mailbox '{mailbox}' on {self.server}")
        count = len(self.mailboxes.pop(mailbox))
        was_locked = self.locked.pop(mailbox, None) is not None
        actions = [DeleteMailbox(mailbox), PersistLocks(dict(self.locked)), self._ok(req),
                   log("store.deleted", mailbox=mailbox, messages=count)]
        if body["release"] and was_locked:
            actions += [log("store.unlocked", mailbox=mailbox), *self._released(mailbox)]
        return actions

    def _released(self, mailbox: str) -> list:
        """Tell our MTA the mailbox is free, so it retries what it deferred for it at once."""
        return [Send(self.mta, "store.released", {"mailbox": mailbox}, self.ids.next()),
                log("store.released", mailbox=mailbox, to=self.mta)]

    def _ok(self, req: Request) -> Reply:
        return Reply(req.peer, req.frame.id, "ok", {}, req.frame.trace)
