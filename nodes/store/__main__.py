"""The store node process: `python -m nodes.store --run-dir D --name store.<server>`."""

from __future__ import annotations

from ..runtime import Runtime, boot_id, node_args
from .maildir import Maildirs
from .node import wiring


def main() -> None:
    args = node_args("store")
    server = args.config.nodes[args.name]["server"]
    maildirs = Maildirs(args.run_dir / "stores" / server, args.config.settings.fsync)
    Runtime(args.name, args.config, wiring(server, args.config.settings, boot_id(), maildirs)).run()


if __name__ == "__main__":
    main()
