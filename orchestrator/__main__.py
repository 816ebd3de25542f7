"""The orchestrator node process: `python -m orchestrator --run-dir D --name orchestrator`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from nodes.config import ClusterConfig
from nodes.core import Reply, log
from nodes.runtime import Runtime, boot_id, node_args

from .cluster import spawn_node
from .core import OrchestratorCore
from .faults import CrashSelf, FaultCore, RestartNode, SignalNode
from .move import JournalStep, MoveCore
from .rundir import pid_alive


def read_journal(path: Path) -> tuple[list[dict], int]:
    """The journal's records, and where its last whole line ends."""
    data = path.read_bytes() if path.exists() else b""
    good = data.rfind(b"\n") + 1
    records = []
    for line in data[:good].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # not ours to guess at
    return records, good


def main() -> None:
    args = node_args("orchestrator")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # nodes it restarts are reaped by the kernel
    journal_path = args.run_dir / "orchestrator" / "journal.jsonl"
    journal_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    records, good = read_journal(journal_path)
    journal = os.open(journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.ftruncate(journal, good)  # a last line a crash cut short: its step was never acted on
    size = [good]

    def write_journal(action: JournalStep) -> list:
        # written and synced before the step's request goes out; a write the disk refused is cut
        # back, so the runtime's next try appends the whole line once
        data = memoryview((json.dumps(action.record, sort_keys=True) + "\n").encode())
        try:
            while data:
                data = data[os.write(journal, data):]
            os.fsync(journal)
        except OSError:
            os.ftruncate(journal, size[0])
            raise
        size[0] = os.lseek(journal, 0, os.SEEK_END)
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
        deadline = time.time() + 0.5
        while pid_alive(pid, config.run_dir) and time.time() < deadline:
            time.sleep(0.01)
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
        MoveCore(list(args.config.settings.servers), boot, args.config.settings.request_timeout_ms, records),
        FaultCore(list(args.config.nodes), boot))
    executors = {JournalStep: write_journal, SignalNode: signal_node, RestartNode: restart_node,
                 CrashSelf: lambda a: runtime.crash()}
    runtime = Runtime(args.name, args.config, core, executors)
    runtime.run()


if __name__ == "__main__":
    main()
