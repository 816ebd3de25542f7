"""An MTA as both worlds host it: its core on the queue log its storage gives (Spool on disk,
MemorySpool in the simulator)."""

from __future__ import annotations

from typing import Any

from ..core import DiskSpace, log
from ..host import Wiring
from ..node_settings import MtaSettings
from .core import MtaCore
from .queue import PersistMessage, RetireMessage


def wiring(server: str, settings: MtaSettings, boot: str, spool: Any) -> Wiring:
    """The MTA of `server`, recovered from what `spool` holds (and what it found damaged)."""
    recovered = spool.load()
    core = MtaCore(server, settings, boot, recovered.queued, recovered.remembered)
    notes = [] if recovered.damage is None else [
        log("storage.damaged", level="error", file=f"mta/{server}/queue.wal",
            **{"why": "damage in the middle of the queue log: every record that reads was taken up; the ids in "
                      "`lost` have no record left and are gone from this MTA; those in `suspect` are queued again as "
                      "their last readable record left them, and may have had a newer state in the damage",
               **recovered.damage})]
    spool.state = core.durable_state
    executors = {
        PersistMessage: lambda a: spool.persist(a.msg_id, a.record),
        RetireMessage: lambda a: spool.retire(a.msg_id, a.hops, a.accepted_at),
    }
    return Wiring(core, executors, sync=spool.sync, deferred=(PersistMessage, RetireMessage),
                  stats=lambda: {"spool": spool.stats()},
                  probe=lambda: DiskSpace(spool.free_bytes()),
                  subscribe_to="directory", notes=notes)
