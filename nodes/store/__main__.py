"""The store node process: `python -m nodes.store --run-dir D --name store.<server>`."""

from __future__ import annotations

from ..runtime import Runtime, boot_id, node_args, refusing_damage
from .maildir import Maildirs, mail_group
from .node import wiring


def main() -> None:
    args = node_args("store")
    server = args.config.nodes[args.name]["server"]
    maildirs = Maildirs(args.run_dir / "stores" / server, args.config.settings.fsync, mail_group(args.config.settings))
    with refusing_damage(args.name):
        parts = wiring(server, args.config.node_settings(args.name), boot_id(), maildirs)
    Runtime(args.name, args.config, parts).run()


if __name__ == "__main__":
    main()
