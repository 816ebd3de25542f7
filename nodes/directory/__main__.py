"""The directory node process: `python -m nodes.directory --run-dir D --name directory`."""

from __future__ import annotations

from ..logs import last_value
from ..runtime import Runtime, node_args, refusing_damage
from .node import DirectoryFile, wiring


def main() -> None:
    args = node_args("directory")
    # the USN its own log last showed: files that hold less were lost or replaced, not started over
    reached = last_value(args.run_dir / "logs" / f"{args.name}.jsonl", "usn") or 0
    storage = DirectoryFile(args.run_dir / "directory" / "directory.json", list(args.config.settings.servers), reached)
    with refusing_damage(args.name):
        parts = wiring(args.config.node_settings(args.name), storage)
    Runtime(args.name, args.config, parts).run()


if __name__ == "__main__":
    main()
