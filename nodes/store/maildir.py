"""Maildir I/O for one store: `<run-dir>/stores/<server>/<mailbox>/{tmp,new,cur}`.

Messages are written the Maildir way: into tmp/, fsync, rename into new/, fsync of new/, so a
reader never sees half a message and a crash leaves either nothing or the whole file.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

from ..config import SYNC_BATCH, fsync_dir, syncfs, write_atomic
from .core import msg_id_of

LOCKS_FILE = "locks.json"


class Maildirs:
    def __init__(self, root: Path, fsync: bool = True):
        self.root = root
        self.fsync = fsync
        self._pending: list[tuple[str, str]] = []
        self._boxes: set[str] = set()  # mailboxes whose directories are known to exist
        root.mkdir(parents=True, exist_ok=True)

    def load(self) -> tuple[dict[str, set[str]], dict[str, str]]:
        """Every mailbox with the message ids in it, and the locked set, as on disk."""
        mailboxes: dict[str, set[str]] = {}
        for box in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            ids = set()
            for sub in ("new", "cur"):
                for f in (box / sub).iterdir() if (box / sub).is_dir() else []:
                    msg_id = msg_id_of(f.name.split(":", 1)[0])
                    if msg_id:
                        ids.add(msg_id)
            mailboxes[box.name] = ids
        locks_path = self.root / LOCKS_FILE
        locks = json.loads(locks_path.read_text()) if locks_path.exists() else {}
        for stale in self.root.glob("*/tmp/*"):  # a write cut short by a crash: never renamed, never seen
            stale.unlink()
        for doomed in self.root.glob(".deleting.*"):  # a delete cut short by a crash: finish it
            shutil.rmtree(doomed)
        return mailboxes, locks

    def create(self, mailbox: str) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.root / mailbox / sub).mkdir(parents=True, exist_ok=True)
        fsync_dir(self.root)
        self._boxes.add(mailbox)

    def write(self, mailbox: str, name: str, raw: bytes) -> None:
        """Write into tmp/ now; `sync` makes it durable and visible (group commit, Runtime.flush).
        Plain os calls on str paths: pathlib and open()'s buffering were a fifth of a busy store."""
        if mailbox not in self._boxes:
            self.create(mailbox)
        box = f"{self.root}/{mailbox}"
        tmp = f"{box}/tmp/{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self._pending.append((tmp, f"{box}/new/{name}"))

    def sync(self) -> None:
        """fsync every message written since the last sync, rename each into new/, fsync each
        new/ once: the Maildir way, one batch at a time."""
        pending, self._pending = self._pending, []
        # a large batch (a move's import page, a burst of deliveries): one syncfs for the data,
        # renames, one syncfs for the directories; a small one: fsync each file and directory
        batch = self.fsync and len(pending) >= SYNC_BATCH and syncfs(self.root)
        for tmp, _ in pending if self.fsync and not batch else ():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, final in pending:
            os.rename(tmp, final)
        if batch:
            syncfs(self.root)
            return
        for new_dir in {os.path.dirname(final) for _, final in pending} if self.fsync else ():
            fsync_dir(Path(new_dir))

    def delete(self, mailbox: str) -> None:
        self.sync()
        box = self.root / mailbox
        self._boxes.discard(mailbox)
        if box.exists():
            # rename first so a crash mid-delete never leaves a half mailbox that looks whole
            doomed = self.root / f".deleting.{mailbox}.{time.time_ns()}"
            os.rename(box, doomed)
            fsync_dir(self.root)
            # the rename is the delete; removing the files can happen after the answer (a start
            # finishes what a crash interrupted)
            threading.Thread(target=shutil.rmtree, args=(doomed, True), daemon=True).start()

    def save_locks(self, locks: dict[str, str]) -> None:
        write_atomic(self.root / LOCKS_FILE, json.dumps(locks, sort_keys=True).encode())

    def names(self, mailbox: str) -> list[str]:
        self.sync()  # a reader sees every message written before it asked
        names = []
        for sub in ("new", "cur"):
            try:
                names += os.listdir(f"{self.root}/{mailbox}/{sub}")
            except FileNotFoundError:
                pass
        return sorted(names)

    def read(self, mailbox: str, name: str) -> bytes:
        for sub in ("new", "cur"):
            try:
                with open(f"{self.root}/{mailbox}/{sub}/{name}", "rb", buffering=0) as f:
                    return f.readall()
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"{mailbox}/{name}")
