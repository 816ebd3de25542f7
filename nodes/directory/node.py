"""The directory as both worlds host it: its core on the file its storage gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Settings, write_atomic
from ..host import Wiring
from .core import DirectoryCore, PersistDirectory


class DirectoryFile:
    """`<run-dir>/directory/directory.json`: JSON, not msgpack, so an operator can read the
    directory with any text tool; replaced whole and atomically at each change."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any] | None:
        return json.loads(self.path.read_text()) if self.path.exists() else None

    def save(self, state: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(state, indent=1, sort_keys=True).encode())


class MemoryDirectoryFile:
    """The directory's file in the simulator: the last state saved, as a reader would get it back."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    def load(self) -> dict[str, Any] | None:
        return json.loads(self.data) if self.data is not None else None

    def crash(self, torn: float) -> None:
        """The process died: the file is the old one or the new one, never part of each (write_atomic)."""

    def save(self, state: dict[str, Any]) -> None:
        self.data = json.dumps(state, sort_keys=True).encode()

    def dump(self, path: Path) -> None:
        if self.data is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_bytes(self.data)


def wiring(settings: Settings, storage: DirectoryFile | MemoryDirectoryFile) -> Wiring:
    core = DirectoryCore(list(settings.servers), storage.load())

    def persist(action: PersistDirectory) -> list:
        storage.save(action.state)
        return []

    return Wiring(core, {PersistDirectory: persist}, publish=True)
