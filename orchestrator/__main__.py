"""The orchestrator node process: `python -m orchestrator --run-dir D --name orchestrator`.

It imports none of xcon's tools (the CLI, the launcher, chaos, check): only its core, its
journal and the process control it needs to carry out faults (orchestrator.processes)."""

from __future__ import annotations

import os
import signal

from nodes.config import ClusterConfig
from nodes.runtime import Runtime, boot_id, node_args, refusing_damage

from .journal import PATH as JOURNAL, Journal
from .node import wiring
from .processes import flip_byte, pid_alive, spawn_node, wait_gone


class RealProcesses:
    """The node processes of this run-dir, by the pids cluster.json records (read afresh: a
    restarted node has a new one)."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def _pid(self, node: str) -> int | None:
        return ClusterConfig.load(self.run_dir).nodes[node].get("pid")

    def running(self, node: str, grace: float = 0.0) -> int | None:
        pid = self._pid(node)
        if grace:
            wait_gone([pid] if pid else [], self.run_dir, grace)
        return pid if pid_alive(pid, self.run_dir) else None

    def signal(self, node: str, signum: int) -> int | None:
        pid = self._pid(node)
        if not pid_alive(pid, self.run_dir):
            return None
        os.kill(pid, signum)
        return pid

    def spawn(self, node: str) -> int:
        return spawn_node(ClusterConfig.load(self.run_dir), node).pid

    def corrupt(self, node: str, where: float) -> dict | None:
        pid = self._pid(node)
        wait_gone([pid] if pid else [], self.run_dir, 2.0)  # killed a moment ago: gone before its log is touched
        return flip_byte(self.run_dir / "mta" / node.partition(".")[2] / "queue.wal", where, self.run_dir)


def main() -> None:
    args = node_args("orchestrator")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # nodes it restarts are reaped by the kernel
    runtime: Runtime | None = None

    def crash() -> None:
        assert runtime is not None
        runtime.crash()

    with refusing_damage(args.name):
        journal = Journal(args.run_dir / JOURNAL, args.run_dir / "logs" / "orchestrator.jsonl")
        parts = wiring(args.config.node_settings(args.name), list(args.config.nodes), boot_id(), journal, RealProcesses(args.run_dir),
                       crash, args.config.network)
    runtime = Runtime(args.name, args.config, parts)
    runtime.run()


if __name__ == "__main__":
    main()
