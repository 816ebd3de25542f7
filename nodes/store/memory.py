"""The mailboxes of a simulated store, in memory, with Maildirs' methods and promises
(nodes.store.maildir is the disk's)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..records import read_back
from .actions import IN_TRANSIT, entry_key, msg_id_of
from .maildir import LOCKS_FILE


class MemoryMaildirs:
    """The mailboxes of a simulated store, in memory, with Maildirs' methods and promises: a
    message is visible once its batch is synced; a crash loses the batch not yet synced."""

    def __init__(self, free: int = 1 << 40) -> None:
        self.boxes: dict[str, dict[str, bytes]] = {}
        self.state: dict[str, Any] = {"locks": {}, "incoming": [], "ended": [], "made": {}, "soft_deleted": {}}
        self._pending: list[tuple[str, str, bytes, str, str | None]] = []
        # what a move carried in a user's folders or with a reader's flags, by mailbox (a
        # simulated user files nothing, but a move carries what a real one did): (folder, name, info)
        self.filed: dict[str, dict[tuple[str, str, str | None], bytes]] = {}
        self.free = free

    def load(self) -> tuple[dict[str, set[str]], dict[str, Any]]:
        state = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in self.state.items()}
        state["staged"] = {box: {msg_id_of(n) for n in self.boxes[IN_TRANSIT + box]}
                           for box in state.get("made", {}) if IN_TRANSIT + box in self.boxes}
        return {box: set(ids) for box, ids in self.ids().items()}, state

    def create(self, mailbox: str) -> None:
        self.boxes.setdefault(mailbox, {})

    def write(self, mailbox: str, name: str, raw: bytes, folder: str = "", info: str | None = None) -> None:
        self._pending.append((mailbox, name, raw, folder, info))

    def sync(self) -> None:
        for mailbox, name, raw, folder, info in self._pending:
            self._put(mailbox, name, raw, folder, info)
        self._pending = []

    def _put(self, mailbox: str, name: str, raw: bytes, folder: str, info: str | None) -> None:
        if folder or info is not None:
            self.filed.setdefault(mailbox, {})[(folder, name, info)] = raw
            self.boxes.setdefault(mailbox, {})
        else:
            self.boxes.setdefault(mailbox, {})[name] = raw

    def entries(self, mailbox: str) -> list[tuple[str, str, str, str | None]]:
        self.sync()
        found = [(name, "", name, None) for name in self.boxes.get(mailbox, ())]
        found += [(entry_key(folder, name), folder, name, info) for folder, name, info in self.filed.get(mailbox, ())]
        return sorted(found)

    def crash(self, torn: float) -> None:
        """The process died. A batch cut short by it: the `torn` fraction of its messages first
        in line were renamed into new/ (Maildirs.sync renames them in order after writing them
        all), the rest are gone; a single message is never half there."""
        self._pending, pending = [], self._pending
        for mailbox, name, raw, folder, info in pending[:int(len(pending) * torn)]:
            self._put(mailbox, name, raw, folder, info)

    def delete(self, mailbox: str) -> None:
        self.sync()
        self.boxes.pop(mailbox, None)
        self.filed.pop(mailbox, None)

    def rename(self, source: str, mailbox: str) -> None:
        self.sync()
        if source in self.boxes:
            self.boxes[mailbox] = self.boxes.pop(source)
            self.filed[mailbox] = self.filed.pop(source, {})

    def save_state(self, state: dict[str, Any]) -> None:
        self.state = read_back(state)  # a copy, as a file would hold it

    def names(self, mailbox: str) -> list[str]:
        self.sync()
        return sorted(self.boxes.get(mailbox, ()))

    def read(self, mailbox: str, name: str, folder: str = "") -> bytes:
        try:
            if folder or name not in self.boxes.get(mailbox, {}):
                return next(raw for (f, n, _), raw in self.filed.get(mailbox, {}).items() if (f, n) == (folder, name))
            return self.boxes[mailbox][name]
        except (KeyError, StopIteration):
            raise FileNotFoundError(f"{mailbox}/{name}") from None

    def free_bytes(self) -> int:
        return self.free

    def ids(self) -> dict[str, Counter]:
        """What read_mailboxes reads from a store's directory: each mailbox's message ids."""
        return {box: Counter(m for m in map(msg_id_of, names) if m) for box, names in self.boxes.items()
                if not box.startswith(".")}

    def dump(self, root: Path) -> None:
        """Write the mailboxes as a real store would have them, for `xcon check` and `xcon logs`."""
        for box, messages in self.boxes.items():
            for sub in ("tmp", "new", "cur"):
                (root / box / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            for name, raw in messages.items():
                (root / box / "new" / name).write_bytes(raw)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / LOCKS_FILE).write_text(json.dumps(self.state, sort_keys=True))
