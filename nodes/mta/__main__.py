"""The MTA node process: `python -m nodes.mta --run-dir D --name mta.<server>`."""

from __future__ import annotations

from ..config import free_bytes
from ..core import DiskSpace
from ..runtime import Runtime, boot_id, node_args
from .core import MtaCore
from .queue import PersistMessage, RetireMessage
from .spool import Spool


def main() -> None:
    args = node_args("mta")
    server = args.config.nodes[args.name]["server"]
    spool = Spool(args.run_dir / "mta" / server, args.config.settings.fsync)
    queued, remembered = spool.load()
    core = MtaCore(server, args.config.settings, boot_id(), queued, remembered)
    spool.state = core.durable_state
    executors = {
        PersistMessage: lambda a: spool.persist(a.msg_id, a.record),
        RetireMessage: lambda a: spool.retire(a.msg_id, a.hops, a.accepted_at),
    }
    Runtime(args.name, args.config, core, executors, subscribe_to="directory",
            sync=spool.sync, deferred=(PersistMessage, RetireMessage),
            stats=lambda: {"spool": spool.stats()}, probe=lambda: DiskSpace(free_bytes(spool.root))).run()


if __name__ == "__main__":
    main()
