"""The orchestrator's view of the simulated nodes' processes (orchestrator.node.Processes): the
same faults as on real processes (signals, a restart, a damaged queue log) as events of the world."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from orchestrator.processes import MIN_DAMAGE_BYTES

if TYPE_CHECKING:  # the world makes these; it imports this module
    from .world import World


class SimProcesses:
    """The orchestrator's view of the simulated nodes' processes (orchestrator.node.Processes)."""

    def __init__(self, world: World):
        self.world = world

    def running(self, node: str, grace: float = 0.0) -> int | None:
        n = self.world.nodes[node]
        return n.pid if n.alive else None

    def signal(self, node: str, signum: int) -> int | None:
        n = self.world.nodes[node]
        if not n.alive:
            return None
        if signum == signal.SIGKILL:
            if self.world.network.torn_kills and self.world.rng.random() < 0.5:
                self.world.kill_soon(node)
            else:
                self.world.kill(node)
        elif signum == signal.SIGSTOP:
            self.world.pause(node)
        elif signum == signal.SIGCONT:
            self.world.resume(node)
        return n.pid

    def corrupt(self, node: str, where: float) -> dict[str, Any] | None:
        n = self.world.nodes[node]
        self.world.kill(node)  # dead now, not at its next write: nothing of it writes after the flip
        data = n.storage.data
        if len(data) < MIN_DAMAGE_BYTES:
            return None
        at = int(len(data) * where)
        data[at] ^= 0x20
        return {"file": f"mta/{n.server}/queue.wal", "offset": at, "size": len(data)}

    def spawn(self, node: str) -> int:
        # the new process comes up after this turn, as a spawned one would
        world = self.world
        pid = next(world._pids)
        world.at(world.now + 0.05, world.boot, node, pid)
        return pid
