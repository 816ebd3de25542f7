"""Maildir I/O for one store: `<run-dir>/stores/<server>/<mailbox>/{tmp,new,cur}`.

Messages are written the Maildir way: into tmp/, fsync, rename into new/, fsync of new/, so a
reader never sees half a message and a crash leaves either nothing or the whole file. Mail is
its owner's alone: folders 0700, files 0600.

The store's own state (locks, moves) is `.locks.json`: a name starting with a dot, which no alias
can have, so no user's mailbox can take its place (`xcon user add locks.json` once made a mailbox
folder of the store's state file, and the store died). A store of an earlier run-dir has
`locks.json`; it is read, and written under the new name from then on.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from protocol.names import valid_alias

from ..config import SYNC_BATCH, free_bytes, fsync_dir, syncfs, write_atomic
from ..records import read_json_file
from .actions import IN_TRANSIT, entry_key, msg_id_of

LOCKS_FILE = ".locks.json"
DELETING = ".deleting."  # + mailbox + time: renamed aside, its files removed by a thread
OLD_LOCKS_FILE = "locks.json"  # before the state left the mailboxes' namespace


def read_store(root: Path) -> tuple[dict[str, Counter], dict[str, dict[str, str]]]:
    """What a store's Maildirs hold, read and nothing else (the store at start, `xcon check`'s
    audit), in one walk: each mailbox's message ids in its own folder, with how many files each has
    in new/ and cur/; and what its user keeps in folders of their own (IMAP's CREATE, COPY, MOVE),
    each id with the first folder it is in. Folders whose names start with a dot (a delete under
    way) are no mailbox."""
    boxes: dict[str, Counter] = {}
    filed: dict[str, dict[str, str]] = {}
    for box in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        boxes[box.name] = _message_ids(box)
        for folder in user_folders(box):
            for msg_id in _message_ids(box / folder):
                filed.setdefault(box.name, {}).setdefault(msg_id, folder[1:])
    return boxes, filed


def read_mailboxes(root: Path) -> dict[str, Counter]:
    """Each mailbox's message ids in its own folder, with their copies (read_store's first half)."""
    return read_store(root)[0]


def read_move_state(root: Path) -> dict[str, Any]:
    """A store's .locks.json: {"locks": {mailbox: owner}, "incoming": [...], "ended": [...],
    "made": {mailbox: owner}, "soft_deleted": {mailbox: purge time}} (nodes.store.actions.PersistLocks);
    {} where there is none yet; DamagedFile where it does not read or holds the wrong shapes."""
    path = root / LOCKS_FILE
    if not path.exists() and (root / OLD_LOCKS_FILE).is_file():
        path = root / OLD_LOCKS_FILE
    if not path.exists():
        return {"locks": {}}
    state = read_json_file(path, _move_state_problem)
    return state if "locks" in state else {"locks": state}  # the first format: {mailbox: owner} alone


def _move_state_problem(state: Any) -> str | None:
    if not isinstance(state, dict):
        return "not a store's move state (a JSON object)"
    if "locks" not in state:  # the first format: {mailbox: owner}
        state = {"locks": state}
    names = {"locks": dict, "incoming": list, "ended": list, "made": dict, "soft_deleted": dict}
    for key, value in state.items():
        if key not in names or not isinstance(value, names[key]):
            return f"'{key}' is not a field of a store's move state, or has the wrong type"
    for key in ("locks", "made"):
        if not all(valid_alias(m) and isinstance(o, str) for m, o in state.get(key, {}).items()):
            return f"'{key}' must map mailboxes to owners"
    if not all(valid_alias(m) for m in state.get("incoming", ())) or \
            not all(isinstance(o, str) for o in state.get("ended", ())):
        return "'incoming' must list mailboxes and 'ended' owners"
    if not all(valid_alias(m) and isinstance(t, (int, float)) for m, t in state.get("soft_deleted", {}).items()):
        return "'soft_deleted' must map mailboxes to times"
    return None


def user_folders(box: Path) -> list[str]:
    """A mailbox's own folders, as an IMAP reader made them (Maildir++'s `.Archive`, `.Archive.2026`)."""
    try:
        names = os.listdir(box)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(".") and os.path.isdir(box / n / "cur"))


def _message_ids(folder: Path) -> Counter:
    ids: Counter = Counter()
    for sub in ("new", "cur"):
        try:
            names = os.listdir(folder / sub)
        except FileNotFoundError:
            continue
        ids.update(m for m in (msg_id_of(n.split(":", 1)[0]) for n in names) if m)
    return ids


def mail_group(settings: Any) -> int | None:
    """The group a store shares its mail with: `mail` under --imap (Dovecot reads it as that
    user: nodes.imap), else none (the owner's alone)."""
    if not settings.imap:
        return None
    import grp

    return grp.getgrnam("mail").gr_gid


class Maildirs:
    def __init__(self, root: Path, fsync: bool = True, group: int | None = None):
        """`group`: share the mail with this group (read and flagged by Dovecot, `xcon up --imap`):
        folders 2770 (a new one takes the group), messages 660. Otherwise the owner's alone."""
        self.root = root
        self.fsync = fsync
        self._pending: list[tuple[str, str, bytes]] = []  # (mailbox, name, raw), written at sync
        self._boxes: set[str] = set()  # mailboxes whose directories are known to exist
        self.dir_mode, self.file_mode = (0o2770, 0o660) if group is not None else (0o700, 0o600)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if group is not None:
            os.chown(root, -1, group)
        os.chmod(root, self.dir_mode)  # a store made before this rule: its mail becomes private too

    def load(self) -> tuple[dict[str, set[str]], dict[str, Any]]:
        """Every mailbox with the message ids in it, and the move state (locks, incoming, ended)
        as on disk; a write or a delete a crash cut short is cleared away first."""
        for doomed in self.root.glob(DELETING + "*"):  # a delete cut short by a crash: finish it
            shutil.rmtree(doomed, ignore_errors=True)  # the delete thread of a store in this process may be at it too
        for box in self.root.iterdir():  # not a folder being deleted: that thread may empty it under the scan
            if box.is_dir() and not box.name.startswith(DELETING):
                for stale in box.glob("tmp/*"):  # a write cut short by a crash: never renamed, never seen
                    stale.unlink(missing_ok=True)
        state = read_move_state(self.root)
        state["staged"] = {box: set(_message_ids(self.root / (IN_TRANSIT + box))) for box in state.get("made", {})
                           if (self.root / (IN_TRANSIT + box)).is_dir()}
        boxes, filed = read_store(self.root)  # a message a user filed away is in the mailbox all the same
        return {box: set(ids) | set(filed.get(box, ())) for box, ids in boxes.items()}, state

    def free_bytes(self) -> int:
        return free_bytes(self.root)

    def create(self, mailbox: str) -> None:
        self.create_many([mailbox])

    def create_many(self, mailboxes: list[str]) -> None:
        """New mailboxes, durable together (one fsync of the store's folder, not one per mailbox:
        an organisation of 20,000 made at `xcon up --users`)."""
        for mailbox in mailboxes:
            for folder in (self.root / mailbox, *(self.root / mailbox / sub for sub in ("tmp", "new", "cur"))):
                folder.mkdir(mode=0o700, exist_ok=True)
                if self.dir_mode != 0o700:
                    os.chmod(folder, self.dir_mode)
            self._boxes.add(mailbox)
        if mailboxes:
            fsync_dir(self.root)

    def write(self, mailbox: str, name: str, raw: bytes, folder: str = "", info: str | None = None) -> None:
        """Take a message for the batch; `sync` writes it and makes it durable and visible
        (group commit, Runtime.flush): into new/, or with `info` into cur/ as NAME:INFO, of the
        mailbox or of its `folder`."""
        self._pending.append((mailbox, name, raw, folder, info))

    def sync(self) -> None:
        """Write every message of the batch into tmp/, fsync them, rename each into new/, fsync
        each new/ once: the Maildir way, one batch at a time. Plain os calls on str paths, for
        speed (docs/performance.md).

        If the disk refuses (full), the batch's files in tmp/ are removed and the error raised
        with the batch kept: the runtime calls sync again once there is room, and what was
        renamed already is simply renamed again, whole."""
        pending = self._pending
        if not pending:
            return
        written: list[tuple[str, str]] = []
        try:
            for mailbox, name, raw, folder, info in pending:
                if mailbox not in self._boxes:
                    self.create(mailbox)
                box = self._box(mailbox, folder)
                if folder and not os.path.isdir(f"{box}/cur"):
                    self._folder(mailbox, folder)
                tmp = f"{box}/tmp/{name}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                if self.file_mode != 0o600:
                    os.fchmod(fd, self.file_mode)
                written.append((tmp, f"{box}/cur/{name}:{info}" if info is not None else f"{box}/new/{name}"))
                try:
                    view = memoryview(raw)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
            # a large batch (a move's import page, a burst of deliveries): one syncfs for the
            # data, renames, one syncfs for the directories; a small one: fsync each file and
            # directory
            batch = self.fsync and len(written) >= SYNC_BATCH and syncfs(self.root)
            for tmp, _ in written if self.fsync and not batch else ():
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError:
            for tmp, _ in written:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise
        for tmp, final in written:
            os.rename(tmp, final)
        self._pending = []
        if batch:
            syncfs(self.root)
            return
        for new_dir in {os.path.dirname(final) for _, final in written} if self.fsync else ():
            fsync_dir(Path(new_dir))

    def _box(self, mailbox: str, folder: str = "") -> str:
        """The path of a mailbox's own folder, or of its user's `folder` in it."""
        return f"{self.root}/{mailbox}/{folder}" if folder else f"{self.root}/{mailbox}"

    def _folder(self, mailbox: str, folder: str) -> None:
        """A user's folder of the mailbox, as Dovecot makes one: Maildir's three folders and the
        `maildirfolder` file that says it is a folder, not a mailbox of its own."""
        path = self.root / mailbox / folder
        for sub in (path, path / "tmp", path / "new", path / "cur"):
            sub.mkdir(mode=0o700, exist_ok=True)
            if self.dir_mode != 0o700:
                os.chmod(sub, self.dir_mode)
        (path / "maildirfolder").touch(mode=self.file_mode)
        fsync_dir(path.parent)

    def entries(self, mailbox: str) -> list[tuple[str, str, str, str | None]]:
        """Every message of the mailbox, its own folder's and its user's folders': (key, folder,
        name, info) by key (the name alone in the mailbox's own folder, `folder/name` in a user's),
        with the info a reader added (`2,S`), None for one in new/. What a move carries."""
        self.sync()
        found = []
        for folder in ["", *user_folders(self.root / mailbox)]:
            base = self._box(mailbox, folder)
            for sub in ("new", "cur"):
                try:
                    names = os.listdir(f"{base}/{sub}")
                except FileNotFoundError:
                    continue
                for n in names:
                    name, _, info = n.partition(":")
                    found.append((entry_key(folder, name), folder, name, info if sub == "cur" else None))
        return sorted(found)

    def delete(self, mailbox: str) -> None:
        self.sync()
        box = self.root / mailbox
        self._boxes.discard(mailbox)
        if box.exists():
            # rename first so a crash mid-delete never leaves a half mailbox that looks whole
            doomed = self.root / f"{DELETING}{mailbox}.{time.time_ns()}"
            os.rename(box, doomed)
            fsync_dir(self.root)
            # the rename is the delete; removing the files can happen after the answer (a start
            # finishes what a crash interrupted)
            threading.Thread(target=shutil.rmtree, args=(doomed, True), daemon=True).start()

    def rename(self, source: str, mailbox: str) -> None:
        """Put folder `source` in the place of `mailbox` (whose files are dropped): the old one is
        renamed aside first, so a crash leaves one or the other whole, never a mix. With no
        `source` there is nothing to do: an earlier rename, cut short before the state that
        records it, happened already."""
        self.sync()
        box, src = self.root / mailbox, self.root / source
        if not src.exists():
            return
        if box.exists():
            doomed = self.root / f"{DELETING}{mailbox}.{time.time_ns()}"
            os.rename(box, doomed)
            threading.Thread(target=shutil.rmtree, args=(doomed, True), daemon=True).start()
        os.rename(src, box)
        self._boxes.discard(source)
        self._boxes.add(mailbox)
        fsync_dir(self.root)

    def save_state(self, state: dict[str, Any]) -> None:
        write_atomic(self.root / LOCKS_FILE, json.dumps(state, sort_keys=True).encode())
        old = self.root / OLD_LOCKS_FILE
        if old.is_file():  # an earlier run-dir's: the new name holds the state from now on
            old.unlink()

    def names(self, mailbox: str) -> list[str]:
        """The messages' names, without the info a mail reader adds when it moves one into cur/
        (`NAME:2,S`, Maildir's flags: Dovecot does, with `xcon up --imap`)."""
        self.sync()  # a reader sees every message written before it asked
        names = set()
        for sub in ("new", "cur"):
            try:
                names.update(n.split(":", 1)[0] for n in os.listdir(f"{self.root}/{mailbox}/{sub}"))
            except FileNotFoundError:
                pass
        return sorted(names)

    def read(self, mailbox: str, name: str, folder: str = "") -> bytes:
        """A message by its name, in new/ or in cur/ with or without a reader's flags, in the
        mailbox's own folder or in its `folder`; a reader that moves it meanwhile (new/ to cur/)
        is followed, not taken for its loss."""
        box = self._box(mailbox, folder)
        for _ in range(3):
            for sub in ("new", "cur"):
                try:
                    with open(f"{box}/{sub}/{name}", "rb", buffering=0) as f:
                        return f.readall()
                except FileNotFoundError:
                    continue
            try:
                flagged = [n for n in os.listdir(f"{box}/cur") if n.split(":", 1)[0] == name]
            except FileNotFoundError:
                flagged = []
            for n in flagged:
                try:
                    with open(f"{box}/cur/{n}", "rb", buffering=0) as f:
                        return f.readall()
                except FileNotFoundError:
                    continue
        raise FileNotFoundError(f"{mailbox}/{folder + '/' if folder else ''}{name}")
