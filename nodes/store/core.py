"""The Information Store of one server: which mailboxes exist, which are locked, what is in each.

The core decides; Maildir I/O is done by the runtime through the actions below. A delivery to
a locked mailbox answers "deferred"; to a mailbox that is not on this server, "not_here"; a
message already in the mailbox (same message id) answers "duplicate" and is not written again,
which makes redelivery idempotent by (message id, recipient).

Moves. A lock has an owner, a move's id. A move's copy creates the target mailbox locked by the
move (`incoming`): nothing is delivered into it until the move opens it (unlock), which it does
only once the directory names this server. So a rollback that deletes an incoming mailbox
deletes copies, never mail (KB Q277911's window: mail delivered to the new mailbox of a move
that is then undone). A move's last word to a store, an unlock, a delete or an end_move, ends
that owner here: from then on its lock and import are refused, however late they arrive (a
request queued while the store was down or paused, or held back by a faulty link), so a move
that is over can never leave a lock behind.

A legacy move (Exchange 5.5 before SP4, KB Q277911) works in another order: it makes the target
mailbox live first (`store.create` with an owner), has the directory name it, copies the source
into the mailbox's in-transit folder, and only then marks the mailbox in transit (a lock by the
move). Opening it flushes the in-transit folder to the mailbox: the folder becomes the mailbox,
as the move holds the mailbox to be empty but for its copy. A delivery between the creation and
the mark went into the live folder, and the flush drops it: lost, and the MTA that delivered it
has no cause to send an NDR.

Soft delete (`soft_delete_ms` > 0; Exchange 2010 SP1, KB 2579150): the end of a move keeps the
source mailbox, soft-deleted, for that long, so a move can be undone from it; then it is purged.
A delivery to it answers "soft_deleted", which an MTA that trusts its cache turns into NDR 5.2.0.
Soft-deleted and in-transit folders have names starting with a dot: no reader takes them for a
mailbox (nodes.store.maildir.read_mailboxes).
"""

from __future__ import annotations

from typing import Any

from protocol import INVALID, MAX_MESSAGE_BYTES, NO_MAILBOX, NOT_LOCKED, messages
from protocol.names import POSTMASTER, valid_alias, valid_msg_id

from ..core import DiskSpace, Ids, Reply, Request, Room, Send, error, log
from .actions import (
    IN_TRANSIT, SOFT_DELETED, CreateMailbox, DeleteMailbox, ExportPage, ListMailbox, PersistLocks, RenameMailbox,
    WriteMessage, carried, message_name, msg_id_of,
)

MAX_EXPORT = 5000  # messages per export page; the store also stops a page at PAGE_BYTES
MAX_ENDED = 10_000  # ended owners remembered; move ids never repeat


class StoreCore:
    def __init__(self, server: str, mailboxes: dict[str, set[str]], locks: dict[str, str], boot: str,
                 incoming: list[str] | None = None, ended: list[str] | None = None, min_free_bytes: int = 0,
                 made: dict[str, str] | None = None, staged: dict[str, set[str]] | None = None,
                 soft_deleted: dict[str, float] | None = None, soft_delete_ms: int = 0):
        self.server = server
        self.mta = f"mta.{server}"
        self.mailboxes = mailboxes  # alias -> message ids in it
        self.locked = {m: owner for m, owner in locks.items() if m in mailboxes}  # mailbox -> owner
        # created by a move's import and not opened yet: locked by that move, never deliverable
        self.incoming = {m for m in incoming or () if m in self.locked}
        self.ended = dict.fromkeys(ended or ())  # owners whose move is over here, oldest first
        # made live by a legacy move and not opened yet (mailbox -> owner), with the message ids
        # of the move's copy in each one's in-transit folder
        self.made = {m: owner for m, owner in (made or {}).items() if m in mailboxes}
        # a made mailbox with no in-transit folder on disk has been flushed already (a restart
        # between the flush and the state that records it): its folder is the move's copy
        self.staged = {m: set(staged[m]) for m in self.made if m in (staged or {})}
        self.soft_deleted = dict(soft_deleted or {})  # mailbox -> when it is purged (s)
        # what each move's import pages wrote this run, by (mailbox, folder, file name): a page sent again
        # is not written twice (after a restart it is, whole: the same files again). A move's own:
        # a move back later copies the same names anew
        self.copied: dict[str, set[tuple[str, str, str]]] = {}
        self.soft_delete_s = soft_delete_ms / 1000
        self.ids = Ids(f"store.{server}", boot)
        self.room = Room(f"store.{server}", min_free_bytes)
        self.ready = True

    def start(self, now: float) -> list:
        actions: list = [log("store.loaded", mailboxes=len(self.mailboxes), locked=self.locked,
                             incoming=sorted(self.incoming))]
        if POSTMASTER not in self.mailboxes:
            # every store keeps the organisation's postmaster mailbox, for the reports its MTA could
            # deliver nowhere else (double bounces); no user may have the name (protocol.names)
            self.mailboxes[POSTMASTER] = set()
            actions.append(CreateMailbox(POSTMASTER))
        return actions

    def next_wakeup(self) -> float | None:
        return min(self.soft_deleted.values(), default=None)

    def tick(self, now: float) -> list:
        due = [m for m, at in self.soft_deleted.items() if at <= now]
        actions: list = []
        for mailbox in due:
            actions += self._purge(mailbox, "retention over")
        return [*actions, self._persist()] if due else []

    def status(self, now: float) -> dict[str, Any]:
        status = {
            "mailboxes": {m: len(ids) for m, ids in sorted(self.mailboxes.items())},
            "locked": dict(sorted(self.locked.items())),
            "incoming": sorted(self.incoming),
            "free_bytes": self.room.free_bytes,
        }
        if self.made:
            status["made"] = dict(sorted(self.made.items()))
        if self.soft_deleted:
            status["soft_deleted"] = sorted(self.soft_deleted)
        return status

    def on_event(self, event: Any, now: float) -> list:
        if isinstance(event, DiskSpace):
            return self.room.measured(event.free_bytes)
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
            "store.end_move": self._end_move,
        }.get(frame.type)
        if handler is None:
            return error(event, f"the store does not handle '{frame.type}'")
        mailbox = frame.body.mailbox
        if not valid_alias(mailbox):
            return error(event, f"'{mailbox}' is not a valid mailbox name", INVALID)
        return handler(event, frame.body, now)

    # --- requests ---------------------------------------------------------------------------

    def _create(self, req: Request, body: messages.StoreCreate, now: float) -> list:
        """A new mailbox, live at once. With an owner, a legacy move's target (KB Q277911): the
        move copies into its in-transit folder, and marks it in transit (a lock) later."""
        mailbox, owner = body.mailbox, body.owner
        if owner is not None and owner in self.ended:
            return self._late(req, mailbox, owner, "create")
        if owner is not None and self.made.get(mailbox) == owner:
            return [self._ok(req), log("store.create_repeated", mailbox=mailbox, owner=owner)]
        if mailbox in self.mailboxes:
            return error(req, f"mailbox '{mailbox}' already exists on {self.server}", INVALID)
        actions = self._purge(mailbox, "a new mailbox of its name")
        self.mailboxes[mailbox] = set()
        if owner is not None:
            self.made[mailbox], self.staged[mailbox] = owner, set()
        # a move's target is named in the state before its folder exists (as an import's lock is),
        # and its in-transit folder exists until the flush: on disk, that says whether it happened
        return [*actions, *([self._persist()] if owner or actions else []), CreateMailbox(mailbox),
                *([CreateMailbox(IN_TRANSIT + mailbox)] if owner else []), self._ok(req),
                log("store.created", mailbox=mailbox, **({"owner": owner} if owner else {}))]

    def _deliver(self, req: Request, body: messages.StoreDeliver, now: float) -> list:
        msg_id, mailbox = body.msg_id, body.mailbox
        if not valid_msg_id(msg_id):
            return error(req, f"'{msg_id[:80]}' is not a valid message id", INVALID)
        if len(body.raw) > MAX_MESSAGE_BYTES:
            return error(req, f"a message of {len(body.raw)} bytes is over the limit of {MAX_MESSAGE_BYTES}", INVALID)
        fields = {"msg_id": msg_id, "mailbox": mailbox}

        def result(outcome: str, reason: str = "") -> Reply:
            return Reply(req.peer, req.frame.id, "store.result", messages.StoreResult(msg_id, mailbox, outcome, reason),
                         req.frame.trace)

        if mailbox not in self.mailboxes:
            if mailbox in self.soft_deleted:
                return [result("soft_deleted", f"the mailbox '{mailbox}' on {self.server} is soft-deleted (moved away)"),
                        log("store.soft_deleted_refused", **fields)]
            return [result("not_here", f"no mailbox '{mailbox}' on {self.server}"),
                    log("store.not_here", **fields)]
        if msg_id in self.mailboxes[mailbox]:
            # before the lock: a copy in a mailbox that is being moved is there all the same (the
            # move carries it), and the MTA learns that an earlier attempt of its landed
            return [result("duplicate"), log("store.duplicate_suppressed", **fields)]
        if now > body.expires_at:
            # an attempt that waited (in a queue, for a store that was down) past the message's
            # time-out: refused, so that the NDR the MTA sends at the time-out is the only outcome
            return [result("expired", "the message's time-out has passed"),
                    log("store.expired_refused", level="warning", **fields)]
        if mailbox in self.locked:
            reason = "mailbox being moved here" if mailbox in self.incoming or mailbox in self.made else "mailbox locked"
            return [result("deferred", reason), log("store.deferred", reason=reason, **fields)]
        if not self.room.fits(len(body.raw)):
            reason = self.room.refusal()
            return [result("deferred", reason), log("store.deferred", reason=reason, **fields)]
        self.mailboxes[mailbox].add(msg_id)
        name = message_name(now, msg_id)
        return [
            WriteMessage(mailbox, name, body.raw),
            result("delivered"),
            log("store.delivered", file=name, size=len(body.raw), ndr_for=body.ndr_for,
                ndr_rcpts=body.ndr_rcpts, **fields),
        ]

    def _list(self, req: Request, body: messages.StoreList, now: float) -> list:
        if body.mailbox not in self.mailboxes:
            return error(req, f"no mailbox '{body.mailbox}' on {self.server}", NO_MAILBOX)
        return [ListMailbox(req.peer, req.frame.id, body.mailbox)]

    def _lock(self, req: Request, body: messages.StoreLock, now: float) -> list:
        mailbox, owner = body.mailbox, body.owner
        if owner in self.ended:
            return self._late(req, mailbox, owner, "lock")
        if mailbox not in self.mailboxes:
            return error(req, f"no mailbox '{mailbox}' on {self.server}", NO_MAILBOX)
        holder = self.locked.get(mailbox)
        if holder == owner:
            return [self._ok(req), log("store.lock_repeated", mailbox=mailbox, owner=owner)]
        if holder is not None:
            return error(req, f"mailbox '{mailbox}' is already locked by {holder}", INVALID)
        self.locked[mailbox] = owner
        return [self._persist(), self._ok(req),
                log("store.marked_in_transit" if mailbox in self.made else "store.locked", mailbox=mailbox, owner=owner)]

    def _unlock(self, req: Request, body: messages.StoreUnlock, now: float) -> list:
        """Unlock, and end the owner here. For a mailbox the owner's import created, this opens
        it: from now on mail is delivered into it."""
        mailbox, owner = body.mailbox, body.owner
        if owner in self.ended:
            return self._repeat(req, self._ok(req), mailbox, owner)
        if mailbox not in self.locked:
            return error(req, f"mailbox '{mailbox}' is not locked", NOT_LOCKED)
        if self.locked[mailbox] != owner:
            return error(req, f"mailbox '{mailbox}' is locked by {self.locked[mailbox]}, not {owner}")
        del self.locked[mailbox]
        opened = mailbox in self.incoming or mailbox in self.made
        self.incoming.discard(mailbox)
        flush = self._flush(mailbox) if self.made.get(mailbox) == owner else []
        self._end(owner)
        return [*flush, self._persist(), self._ok(req),
                log("store.opened" if opened else "store.unlocked", mailbox=mailbox, owner=owner),
                *self._released(mailbox)]

    def _flush(self, mailbox: str) -> list:
        """A legacy move opens its target: the in-transit folder, the move's copy, becomes the
        mailbox. What was delivered into the live folder before the mark is dropped with it
        (KB Q277911); the log says which messages, the MTA that delivered them is never told."""
        del self.made[mailbox]
        copy = self.staged.pop(mailbox, None)
        if copy is None:  # flushed before a restart: the mailbox is the copy already
            return [log("store.in_transit_flushed", mailbox=mailbox, copied=len(self.mailboxes[mailbox]), dropped=[],
                        already=True)]
        dropped = sorted(self.mailboxes[mailbox] - copy)
        self.mailboxes[mailbox] = copy
        return [RenameMailbox(IN_TRANSIT + mailbox, mailbox),
                log("store.in_transit_flushed", level="warning" if dropped else "info", mailbox=mailbox,
                    copied=len(copy), dropped=dropped)]

    def _export(self, req: Request, body: messages.StoreExport, now: float) -> list:
        if body.mailbox not in self.mailboxes:
            return error(req, f"no mailbox '{body.mailbox}' on {self.server}", NO_MAILBOX)
        limit = body.limit
        if not 1 <= limit <= MAX_EXPORT:
            return error(req, f"export limit must be between 1 and {MAX_EXPORT}", INVALID)
        return [ExportPage(req.peer, req.frame.id, body.mailbox, body.after, limit)]

    def _import(self, req: Request, body: messages.StoreImport, now: float) -> list:
        mailbox, owner = body.mailbox, body.owner
        if owner in self.ended:
            return self._late(req, mailbox, owner, "import into")
        pages = []
        for m in body.messages:
            # the whole mailbox travels: every folder a user made, every file a reader named, each
            # message's flags (Maildir's info); a move once carried the mailbox's own new/ and cur/
            # alone, without flags, and deleted the rest with the source (issue 34, story 4)
            name, raw, folder, info = m.name, m.raw, m.folder, m.info
            if not carried(name, folder, info):
                return error(req, "store.import: each message needs a safe 'name', and a Maildir 'folder' and "
                                  "'info' where it has them")
            msg_id = msg_id_of(name)
            pages.append((name, msg_id if msg_id and valid_msg_id(msg_id) else None, raw, folder, info))
        holder = self.locked.get(mailbox)
        if self.made.get(mailbox) == owner:
            return self._stage(req, mailbox, owner, pages)
        if mailbox in self.mailboxes and holder != owner:
            # never copy into a mailbox someone can deliver to, or that another move holds
            why = f"locked by {holder}" if holder else "live"
            return error(req, f"mailbox '{mailbox}' already exists on {self.server} ({why})", INVALID)
        if not self.room.fits(sum(len(p[2]) for p in pages)):
            return error(req, self.room.refusal())
        actions: list = []
        if mailbox not in self.mailboxes:
            # the lock is on disk before the folder exists: a crash in between leaves no folder
            # that a restart would take for a live, deliverable mailbox
            actions += self._purge(mailbox, "a new mailbox of its name")
            self.mailboxes[mailbox] = set()
            self.locked[mailbox] = owner
            self.incoming.add(mailbox)
            actions += [self._persist(), CreateMailbox(mailbox),
                        log("store.incoming", mailbox=mailbox, owner=owner)]
        held, copied = self.mailboxes[mailbox], self.copied.setdefault(owner, set())
        written = 0
        for name, msg_id, raw, folder, info in pages:
            if (mailbox, folder, name) in copied:
                continue  # a retried import page: already here (after a restart it is written again, whole)
            copied.add((mailbox, folder, name))
            if msg_id is not None:
                held.add(msg_id)
            actions.append(WriteMessage(mailbox, name, raw, folder, info))
            written += 1
        actions += [
            Reply(req.peer, req.frame.id, "store.imported", {"mailbox": mailbox, "count": written}),
            log("store.imported", mailbox=mailbox, owner=owner, count=written),
        ]
        return actions

    def _stage(self, req: Request, mailbox: str, owner: str, pages: list[tuple]) -> list:
        """A legacy move's copy page: into the in-transit folder of the mailbox it made live."""
        if not self.room.fits(sum(len(p[2]) for p in pages)):
            return error(req, self.room.refusal())
        staged, copied = self.staged.setdefault(mailbox, set()), self.copied.setdefault(owner, set())
        fresh = [p for p in pages if (mailbox, p[3], p[0]) not in copied]
        copied.update((mailbox, folder, name) for name, _, _, folder, _ in fresh)
        staged.update(msg_id for _, msg_id, _, _, _ in fresh if msg_id is not None)
        return [*(WriteMessage(IN_TRANSIT + mailbox, name, raw, folder, info) for name, _, raw, folder, info in fresh),
                Reply(req.peer, req.frame.id, "store.imported", {"mailbox": mailbox, "count": len(fresh)}),
                log("store.imported", mailbox=mailbox, owner=owner, count=len(fresh), into="in-transit folder")]

    def _delete(self, req: Request, body: messages.StoreDelete, now: float) -> list:
        """The end of a move on its source: delete the mailbox the owner holds locked, and tell
        the MTA so it retries at once what it deferred for it."""
        mailbox, owner = body.mailbox, body.owner
        if owner in self.ended:
            return self._repeat(req, self._ok(req), mailbox, owner)
        if mailbox not in self.mailboxes:
            return error(req, f"no mailbox '{mailbox}' on {self.server}", NO_MAILBOX)
        if self.locked.get(mailbox) != owner:
            return error(req, f"mailbox '{mailbox}' is not locked by {owner}; only the move that holds it deletes it")
        count = len(self.mailboxes.pop(mailbox))
        del self.locked[mailbox]
        self.incoming.discard(mailbox)
        self._end(owner)
        # the folder goes first, then the state that names it: a crash in between leaves a lock
        # on a mailbox that is gone, which a restart drops (never a live folder with no lock)
        if self.soft_delete_s > 0:
            self.soft_deleted[mailbox] = now + self.soft_delete_s
            gone: list = [RenameMailbox(mailbox, SOFT_DELETED + mailbox),
                          log("store.soft_deleted", mailbox=mailbox, owner=owner, messages=count,
                              purge_at=round(self.soft_deleted[mailbox], 3))]
        else:
            gone = [DeleteMailbox(mailbox), log("store.deleted", mailbox=mailbox, owner=owner, messages=count)]
        return [gone[0], self._persist(), self._ok(req), gone[1], *self._released(mailbox)]

    def _end_move(self, req: Request, body: messages.StoreEndMove, now: float) -> list:
        """A move is over here without having finished (rolled back, aborted): release what it
        holds. An incoming mailbox holds only the move's copies, so it is deleted; a source is
        unlocked, its mail untouched."""
        mailbox, owner = body.mailbox, body.owner

        def answer(unlocked: bool, deleted: int) -> Reply:
            return Reply(req.peer, req.frame.id, "store.move_ended",
                         {"mailbox": mailbox, "owner": owner, "unlocked": unlocked, "deleted": deleted})

        if owner in self.ended:
            return self._repeat(req, answer(False, 0), mailbox, owner)
        held = sorted({m for m, o in self.locked.items() if o == owner} | {m for m, o in self.made.items() if o == owner})
        actions: list = []
        unlocked, deleted = False, 0
        for box in held:
            self.locked.pop(box, None)
            if self.made.get(box) == owner:
                # a legacy move's target, made live before set_home: nobody's home yet
                del self.made[box]
                deleted += len(self.mailboxes.pop(box)) + len(self.staged.pop(box, ()))
                actions += [DeleteMailbox(box), DeleteMailbox(IN_TRANSIT + box)]
            elif box in self.incoming:
                self.incoming.discard(box)
                deleted += len(self.mailboxes.pop(box))
                actions.append(DeleteMailbox(box))
            else:
                unlocked = True
                actions += self._released(box)
        self._end(owner)
        return [*[a for a in actions if isinstance(a, DeleteMailbox)], self._persist(), answer(unlocked, deleted),
                log("store.move_ended", level="warning" if held else "info", mailbox=mailbox, owner=owner,
                    held=held, unlocked=unlocked, deleted=deleted, src=req.frame.src),
                *[a for a in actions if not isinstance(a, DeleteMailbox)]]

    def _late(self, req: Request, mailbox: str, owner: str, what: str) -> list:
        """A lock or import of a move that has ended here (queued while the store was down, or
        reordered by a link): refused, so it cannot hold or fill a mailbox again."""
        return [*error(req, f"{owner} has ended on {self.server}; it cannot {what} '{mailbox}'"),
                log("store.late_request", level="warning", type=req.frame.type, mailbox=mailbox, owner=owner)]

    def _repeat(self, req: Request, answer: Reply, mailbox: str, owner: str) -> list:
        """A move's last word to this store, sent again (its answer was lost): answered, not redone."""
        return [answer, log("store.repeat", type=req.frame.type, mailbox=mailbox, owner=owner)]

    def _end(self, owner: str) -> None:
        self.ended[owner] = None
        self.copied.pop(owner, None)
        while len(self.ended) > MAX_ENDED:
            del self.ended[next(iter(self.ended))]

    def _persist(self) -> PersistLocks:
        return PersistLocks(dict(self.locked), sorted(self.incoming), list(self.ended), dict(self.made),
                            dict(self.soft_deleted))

    def _purge(self, mailbox: str, why: str) -> list:
        """Remove the soft-deleted mailbox of this name for good, if there is one (the caller
        persists the state)."""
        if self.soft_deleted.pop(mailbox, None) is None:
            return []
        return [DeleteMailbox(SOFT_DELETED + mailbox), log("store.purged", mailbox=mailbox, why=why)]

    def _released(self, mailbox: str) -> list:
        """Tell our MTA the mailbox is free, so it retries what it deferred for it at once."""
        return [Send(self.mta, "store.released", {"mailbox": mailbox}, self.ids.next()),
                log("store.released", mailbox=mailbox, to=self.mta)]

    def _ok(self, req: Request) -> Reply:
        return Reply(req.peer, req.frame.id, "ok", messages.OK, req.frame.trace)
