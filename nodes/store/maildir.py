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
        self._pending: list[tuple[Path, Path]] = []
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

    def write(self, mailbox: str, name: str, raw: bytes) -> None:
        """Write into tmp/ now; `sync` makes it durable and visible (group commit, Runtime.flush)."""
        box = self.root / mailbox
        if not (box / "new").is_dir():
            self.create(mailbox)
        tmp = box / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(raw)
        self._pending.append((tmp, box / "new" / name))

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
        for new_dir in {final.parent for _, final in pending} if self.fsync else ():
            fsync_dir(new_dir)

    def delete(self, mailbox: str) -> None:
        self.sync()
        box = self.root / mailbox
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
        box = self.root / mailbox
        names = []
        for sub in ("new", "cur"):
            if (box / sub).is_dir():
                names += [f.name for f in (box / sub).iterdir()]
        return sorted(names)

    def read(self, mailbox: str, name: str) -> bytes:
        box = self.root / mailbox
        for sub in ("new", "cur"):
            path = box / sub / name
            if path.exists():
                return path.read_bytes()
        raise FileNotFoundError(f"{mailbox}/{name}")
