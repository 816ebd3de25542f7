"""The directory node process: `python -m nodes.directory --run-dir D --name directory`."""

from __future__ import annotations

from ..runtime import Runtime, node_args
from .node import DirectoryFile, wiring


def main() -> None:
    args = node_args("directory")
    storage = DirectoryFile(args.run_dir / "directory" / "directory.json")
    Runtime(args.name, args.config, wiring(args.config.settings, storage)).run()


if __name__ == "__main__":
    main()
