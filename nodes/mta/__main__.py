"""The MTA node process: `python -m nodes.mta --run-dir D --name mta.<server>`."""

from __future__ import annotations

from ..runtime import Runtime, boot_id, node_args
from .node import wiring
from .spool import Spool


def main() -> None:
    args = node_args("mta")
    server = args.config.nodes[args.name]["server"]
    spool = Spool(args.run_dir / "mta" / server, args.config.settings.fsync)
    Runtime(args.name, args.config, wiring(server, args.config.settings, boot_id(), spool)).run()


if __name__ == "__main__":
    main()
