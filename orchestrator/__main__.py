"""The orchestrator node process: `python -m orchestrator --run-dir D --name orchestrator`."""

from __future__ import annotations

import os
import signal

from nodes.config import ClusterConfig
from nodes.core import Reply, log
from nodes.runtime import Runtime, boot_id, node_args

from .cluster import spawn_node
from .core import OrchestratorCore
from .faults import CrashSelf, FaultCore, RestartNode, SignalNode
from .journal import PATH as JOURNAL, Journal
from .move import JournalStep, MoveCore
from .rundir import pid_alive, wait_gone


def main() -> None:
    args = node_args("orchestrator")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # nodes it restarts are reaped by the kernel
    journal = Journal(args.run_dir / JOURNAL)

    def write_journal(action: JournalStep) -> list:
        journal.write(action.record)  # on disk before the step's request goes out
        return []

    def signal_node(action: SignalNode) -> list:
        # read the pid afresh: a restarted node has a new one
        pid = ClusterConfig.load(args.run_dir).nodes[action.node].get("pid")
        if not pid_alive(pid, args.config.run_dir):
            return [log("fault.no_process", level="warning", target=action.node, signal=int(action.signum))]
        os.kill(pid, action.signum)
        return [log("fault.signalled", target=action.node, pid=pid, signal=int(action.signum))]

    def restart_node(action: RestartNode) -> list:
        config = ClusterConfig.load(args.run_dir)
        pid = config.nodes[action.node].get("pid")
        # a node killed a moment ago may still be on its way out (SIGKILL takes milliseconds); the
        # wait blocks the orchestrator, so it is short, not seconds per refused restart
        wait_gone([pid], config.run_dir, 0.5)
        answer = [] if action.re == "" else [Reply(action.peer, action.re, "ok", {})]
        if pid_alive(pid, config.run_dir):
            reason = f"{action.node} is running (pid {pid}); kill it first"
            if action.re:
                answer = [Reply(action.peer, action.re, "error", {"reason": reason})]
            return [*answer, log("fault.restart_refused", level="warning", target=action.node, reason=reason)]
        proc = spawn_node(config, action.node)
        return [*answer, log("fault.injected", level="warning", kind="restart", target=action.node, peer=None,
                             **(action.params or {})),
                log("fault.restarted", target=action.node, pid=proc.pid)]

    boot = boot_id()
    core = OrchestratorCore(
        MoveCore(list(args.config.settings.servers), boot, args.config.settings.request_timeout_ms,
                 journal.records),
        FaultCore(list(args.config.nodes), boot))
    executors = {JournalStep: write_journal, SignalNode: signal_node, RestartNode: restart_node,
                 CrashSelf: lambda a: runtime.crash()}
    runtime = Runtime(args.name, args.config, core, executors)
    runtime.run()


if __name__ == "__main__":
    main()
