"""The orchestrator as both worlds host it: Move User and fault injection on a journal, with the
node processes it signals and restarts behind `Processes` (real ones, or the simulator's)."""

from __future__ import annotations

from typing import Any, Callable, Protocol

from nodes.core import Reply, log
from nodes.host import Wiring
from nodes.node_settings import OrchestratorSettings
from protocol import INVALID

from . import netns
from .core import OrchestratorCore
from .faults import CorruptLog, CrashSelf, FaultCore, NetFault, RestartNode, SignalNode
from .move import MoveCore
from .move_state import JournalStep


class Processes(Protocol):
    """The other nodes' processes, as the orchestrator can act on them."""

    def running(self, node: str, grace: float = 0.0) -> int | None:
        """The pid of `node` if it runs (after waiting up to `grace` seconds for one on its way
        out), else None."""

    def signal(self, node: str, signum: int) -> int | None:
        """Send `signum` to the node's process; its pid, or None if it does not run."""

    def spawn(self, node: str) -> int:
        """Start the node's process again; its pid."""

    def corrupt(self, node: str, where: float) -> dict[str, Any] | None:
        """Flip a byte of the killed node's queue log at `where` (a fraction of its length); what was
        damaged ({"file", "offset", "size"}), or None if the log is too short to damage."""


class Executors:
    """What the orchestrator's core asks of the world outside it: its journal written, nodes
    signalled and restarted, the network's faults made, a queue log damaged, itself crashed."""

    def __init__(self, journal: Any, processes: Processes, crash: Callable[[], None],
                 network: dict[str, Any] | None):
        self.journal, self.processes, self.crash, self.network = journal, processes, crash, network

    def table(self) -> dict[type, Callable[[Any], list]]:
        return {JournalStep: self.write_journal, SignalNode: self.signal_node, RestartNode: self.restart_node,
                CrashSelf: self.crash_self, NetFault: self.net_fault, CorruptLog: self.corrupt_log}

    def write_journal(self, action: JournalStep) -> list:
        self.journal.write(action.record)  # durable before the step's request goes out
        return []

    def signal_node(self, action: SignalNode) -> list:
        pid = self.processes.signal(action.node, action.signum)
        if pid is None:
            return [log("fault.no_process", level="warning", target=action.node, signal=int(action.signum))]
        return [log("fault.signalled", target=action.node, pid=pid, signal=int(action.signum))]

    def restart_node(self, action: RestartNode) -> list:
        # a node killed a moment ago may still be on its way out (SIGKILL takes milliseconds); the
        # wait blocks the orchestrator, so it is short, not seconds per refused restart
        answer = [] if action.re == "" else [Reply(action.peer, action.re, "ok", {})]
        pid = self.processes.running(action.node, grace=0.5)
        if pid is not None:
            reason = f"{action.node} is running (pid {pid}); kill it first"
            if action.re:
                answer = [Reply(action.peer, action.re, "error", {"reason": reason, "code": INVALID})]
            return [*answer, log("fault.restart_refused", level="warning", target=action.node, reason=reason)]
        pid = self.processes.spawn(action.node)
        return [*answer, log("fault.injected", level="warning", kind="restart", target=action.node, peer=None,
                             **(action.params or {})),
                log("fault.restarted", target=action.node, pid=pid)]

    def net_fault(self, a: NetFault) -> list:
        network = self.network
        if not a.re and network is None:
            return []  # the heal that comes with a clear, on a cluster with no network to heal
        try:
            if network is None:
                raise netns.NetworkError("network faults need a cluster of namespaces (xcon up --network netns)")
            p = a.params
            if a.kind == "net":
                done: Any = netns.net(network, a.host, int(p.get("delay_ms", 0)), int(p.get("jitter_ms", 0)),
                                      float(p.get("loss", 0)), float(p.get("duplicate", 0)), float(p.get("reorder", 0)),
                                      int(p.get("rate_kbit", 0)))
            elif a.kind == "partition":
                done = netns.partition(network, a.host, a.peer or "", bool(p.get("one_way")))
            else:
                done = netns.heal(network)
        except (netns.NetworkError, ValueError, TypeError) as exc:
            # asked of a cluster without namespaces, or with bad values, the request is at fault;
            # a kernel that refuses is the machine's
            code = INVALID if network is None or not isinstance(exc, netns.NetworkError) else None
            return [*([Reply(a.reply_to, a.re, "error", {"reason": str(exc), "code": code})] if a.re else []),
                    log("fault.refused", level="warning", kind=a.kind, target=a.host, reason=str(exc))]
        if not a.re:
            return [log("fault.healed", undone=done)] if done else []
        return [Reply(a.reply_to, a.re, "ok", {}),
                log("fault.injected", level="warning", kind=a.kind, target=a.host or None, peer=a.peer, done=done,
                    **a.params)]

    def corrupt_log(self, action: CorruptLog) -> list:
        done = self.processes.corrupt(action.node, action.where)
        if done is None:
            return [log("fault.skipped", level="warning", kind="corrupt", target=action.node,
                        reason="its queue log is too short to damage in the middle")]
        return [log("fault.corrupted", level="warning", target=action.node, **done)]

    def crash_self(self, action: CrashSelf) -> list:
        self.crash()
        return []


def wiring(settings: OrchestratorSettings, nodes: list[str], boot: str, journal: Any, processes: Processes,
           crash: Callable[[], None], network: dict[str, Any] | None = None) -> Wiring:
    """The orchestrator, recovered from `journal` (its records at start, then `write`);
    `network`: the cluster's namespaces, where kernel network faults are made."""
    damage = journal.damage
    core = OrchestratorCore(MoveCore(list(settings.servers), boot, settings.request_timeout_ms, journal.records,
                                     dict(settings.sites), settings.move_build,
                                     suspect=damage["suspect"] if damage else (), imap=settings.imap,
                                     replication_wait_ms=settings.replication_wait_ms),
                            FaultCore(nodes, boot))
    why = (f"the journal is {damage['gone']}, though this orchestrator's log says it journaled steps: it starts on "
           "a new one; the moves in `suspect` were unfinished and are left for the operator (`xcon status`, "
           "`xcon move ALIAS --abort`)" if damage and damage.get("gone") else
           "damage in the middle of the journal: every line that reads was taken up; the moves in `suspect` are "
           "left for the operator")
    notes = [log("storage.damaged", level="error", **damage, why=why)] if damage else []
    return Wiring(core, Executors(journal, processes, crash, network).table(), notes=notes)
