"""The store node process: `python -m nodes.store --run-dir D --name store.<server>`."""

from __future__ import annotations

from ..runtime import Runtime, boot_id, node_args, refusing_damage
from .maildir import Maildirs
from .node import wiring


def main() -> None:
    args = node_args("store")
    server = args.config.nodes[args.name]["server"]
    group = None
    if args.config.settings.imap:  # Dovecot reads the mail as the group mail (nodes.imap)
        import grp

        group = grp.getgrnam("mail").gr_gid
    maildirs = Maildirs(args.run_dir / "stores" / server, args.config.settings.fsync, group)
    with refusing_damage(args.name):
        parts = wiring(server, args.config.settings, boot_id(), maildirs)
    Runtime(args.name, args.config, parts).run()


if __name__ == "__main__":
    main()
