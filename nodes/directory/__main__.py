"""The directory node process: `python -m nodes.directory --run-dir D --name directory`."""

from __future__ import annotations

import json


from ..config import write_atomic
from ..runtime import Runtime, node_args
from .core import DirectoryCore, PersistDirectory


def main() -> None:
    args = node_args("directory")
    path = args.run_dir / "directory" / "directory.json"
    state = json.loads(path.read_text()) if path.exists() else None
    core = DirectoryCore(list(args.config.settings.servers), state)

    def persist(action: PersistDirectory) -> list:
        # JSON, not msgpack: an operator can read the directory with any text tool
        write_atomic(path, json.dumps(action.state, indent=1, sort_keys=True).encode())
        return []

    Runtime(args.name, args.config, core, {PersistDirectory: persist}, publish=True).run()


if __name__ == "__main__":
    main()
