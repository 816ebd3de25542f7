"""The MTA node process: `python -m nodes.mta --run-dir D --name mta.<server>`."""

from __future__ import annotations

from ..runtime import Runtime, boot_id, node_args, refusing_damage
from .node import wiring
from .spool import Spool


def main() -> None:
    args = node_args("mta")
    server = args.config.nodes[args.name]["server"]
    spool = Spool(args.run_dir / "mta" / server, args.config.settings.fsync,
                  node_log=args.run_dir / "logs" / f"{args.name}.jsonl")
    with refusing_damage(args.name):
        parts = wiring(server, args.config.node_settings(args.name), boot_id(), spool)
    Runtime(args.name, args.config, parts).run()


if __name__ == "__main__":
    main()
