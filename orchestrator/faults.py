"""Fault injection, controlled at run time by the orchestrator (its pure core for faults).

`orch.fault` names a kind and a node (and for link faults a peer). Link faults are set on both
ends' runtimes (frames each way) unless params.one_way; a pause is SIGSTOP now and SIGCONT after
`seconds`; kill is SIGKILL; restart starts the node's process again; kill_at_step arms a kill
of `node` for the moment a move next enters params.step (a crash point: the step is journaled,
its request not yet sent), the orchestrator itself included, and restarts any other node after
params.restart_after seconds; corrupt kills an MTA, flips one byte in the middle of its queue log
(at params.where, a fraction of the file) and restarts it after params.restart_after, which then
finds the damage, keeps the log aside and takes up what reads (nodes.records). Every fault is
logged as `fault.injected`, so the merged timeline shows cause beside effect. clock sets the
node's physical clock params.offset_ms off (what it stamps: protocol.hlc) until a clear or another
clock fault; a restart of the node ends it, as it ends the node's link rules.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from nodes.core import Ids, Reply, Request, Send, error, log
from protocol import INVALID, hlc

from .journal import Record

LINK_KINDS = ("delay", "drop", "duplicate", "reorder")
# the kernel's faults on a cluster of network namespaces (orchestrator.netns): on hosts, not nodes
NET_KINDS = ("net", "partition", "heal")
# a hold stops a move in a step until released: Move User's (orchestrator.move), routed there by
# the orchestrator's core, which a clear releases too
HOLD_KINDS = ("hold_at_step", "release")
KINDS = (*LINK_KINDS, "pause", "kill", "restart", "feed_cut", "lag", "clock", "clear", "kill_at_step", "corrupt", "smtp",
         *HOLD_KINDS,
         *NET_KINDS)
SELF = "orchestrator"
# the steps a kill can be armed for (orchestrator.move)
MOVE_STEPS = ("clear_alternate", "await_replication", "lock", "hold_imap", "create_target", "copy", "set_home",
              "mark_target",
              "open_target", "release",
              "restore_alternate", "rollback_target", "rollback_source", "rollback_alternate", "done", "failed")


@dataclass(frozen=True)
class SignalNode:
    node: str
    signum: int


@dataclass(frozen=True)
class CorruptLog:
    """Flip one byte of a killed MTA's queue log, at `where` (a fraction of its length)."""

    node: str
    where: float


@dataclass(frozen=True)
class CrashSelf:
    """The orchestrator's own death at a crash point: its log lines so far written, nothing of
    this turn sent, then SIGKILL."""


@dataclass(frozen=True)
class NetFault:
    """A kernel network fault on the cluster's hosts (net, partition, heal); the executor, which
    holds the cluster's network, answers the requester and logs it."""

    kind: str
    host: str
    peer: str | None
    params: dict[str, Any]
    reply_to: bytes
    re: str


@dataclass(frozen=True)
class RestartNode:
    """Start the node's process again, if it is not running; the executor answers the requester
    (peer, re), since only it can see whether the node runs."""

    node: str
    peer: bytes = b""
    re: str = ""
    params: dict[str, Any] | None = None


class FaultCore:
    def __init__(self, nodes: list[str], boot: str):
        self.nodes = list(nodes)
        self.ids = Ids("orchestrator.faults", boot)
        self.resume_at: dict[str, float] = {}  # paused node -> when to SIGCONT
        self.restart_at: dict[str, float] = {}  # node killed at a step -> when to start it again
        self.armed: list[dict[str, Any]] = []  # kills waiting for a move step: {"node", "step", "restart_after"}

    def next_wakeup(self) -> float | None:
        times = [*self.resume_at.values(), *self.restart_at.values()]
        return min(times) if times else None

    def tick(self, now: float) -> list:
        actions: list = []
        for node, at in list(self.resume_at.items()):
            if at <= now:
                del self.resume_at[node]
                actions += [SignalNode(node, signal.SIGCONT), log("fault.resumed", target=node)]
        for node, at in list(self.restart_at.items()):
            if at <= now:
                del self.restart_at[node]
                actions.append(RestartNode(node))
        return actions

    def status(self) -> dict[str, Any]:
        return {"paused": sorted(self.resume_at), "resume_at": dict(self.resume_at), "armed": list(self.armed)}

    def on_steps(self, steps: list[Record], now: float) -> list:
        """Fire the kills armed for the move steps just journaled (their records)."""
        actions: list = []
        for record in steps:
            for arm in [a for a in self.armed if a["step"] == record.step]:
                self.armed.remove(arm)
                node = arm["node"]
                actions.append(log("fault.triggered", level="warning", kind="kill_at_step", target=node,
                                   step=record.step, move_id=record.move_id, mailbox=record.alias))
                if node == SELF:
                    return actions + [CrashSelf()]  # nothing after this runs
                self.resume_at.pop(node, None)
                self.restart_at[node] = now + arm["restart_after"]
                actions.append(SignalNode(node, signal.SIGKILL))
        return actions

    def inject(self, req: Request, now: float) -> list:
        body = req.frame.body
        kind, node, peer, params = body.kind, body.node, body.peer, body.params
        if kind not in KINDS:
            return error(req, f"unknown fault '{kind}' (kinds: {', '.join(KINDS)})", INVALID)
        if kind in NET_KINDS:
            return [NetFault(kind, node, peer, dict(params), req.peer, req.frame.id)]
        if kind != "clear" and node not in self.nodes:
            return error(req, f"no node '{node}' (nodes: {', '.join(self.nodes)})", INVALID)
        if kind == "restart":
            self.restart_at.pop(node, None)
            return [RestartNode(node, req.peer, req.frame.id, params)]
        try:
            actions = self._actions(kind, node, peer, params, now)
        except (KeyError, TypeError, ValueError) as exc:
            return error(req, f"bad parameters for fault '{kind}': {exc}", INVALID)
        return [*actions, Reply(req.peer, req.frame.id, "ok", {}),
                log("fault.injected", level="warning", kind=kind, target=node, peer=peer, **params)]

    def _actions(self, kind: str, node: str, peer: str | None, params: dict[str, Any], now: float) -> list:
        """What a fault of `kind` does (ValueError, KeyError or TypeError for bad parameters)."""
        seconds = float(params.get("seconds", 10.0))
        if not 0 < seconds <= 3600:
            raise ValueError("seconds must be in (0, 3600]")
        if kind in LINK_KINDS:
            return self._link(kind, node, peer, params, seconds)
        act = {"pause": self._pause, "kill": self._kill, "kill_at_step": self._kill_at_step, "corrupt": self._corrupt,
               "feed_cut": self._feed_cut, "clock": self._clock, "smtp": self._smtp, "lag": self._lag}.get(kind)
        return act(node, params, now, seconds) if act else self._clear()

    def _link(self, kind: str, node: str, peer: str | None, params: dict[str, Any], seconds: float) -> list:
        if peer not in self.nodes or peer == node:
            raise ValueError(f"a link fault needs --peer, another node (got {peer!r})")
        rule = {"delay_ms": 0, "jitter_ms": 0, "drop": 0.0, "duplicate": 0.0, "reorder": 0.0, "seconds": seconds}
        if kind == "delay":
            rule.update(delay_ms=int(params.get("delay_ms", 100)), jitter_ms=int(params.get("jitter_ms", 0)))
        else:
            p = float(params.get("probability", 0.2))
            if not 0 <= p <= 1:
                raise ValueError("probability must be in [0, 1]")
            rule[kind] = p
            if kind == "reorder":
                rule["jitter_ms"] = int(params.get("jitter_ms", 20))
        ends = [(node, peer)] if params.get("one_way") else [(node, peer), (peer, node)]
        return [Send(a, "fault.link", {**rule, "peer": b}, self.ids.next()) for a, b in ends]

    def _pause(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        if node == SELF:
            raise ValueError("the orchestrator cannot pause itself (it would not wake up)")
        self.resume_at[node] = now + seconds
        return [SignalNode(node, signal.SIGSTOP)]

    def _kill(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        if node == SELF:
            raise ValueError("kill the orchestrator with `xcon kill orchestrator`, not through itself")
        self.resume_at.pop(node, None)
        return [SignalNode(node, signal.SIGKILL)]

    def _kill_at_step(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        step = params.get("step")
        if step not in MOVE_STEPS:
            raise ValueError(f"step must be one of {', '.join(MOVE_STEPS)} (got {step!r})")
        restart_after = float(params.get("restart_after", 0.5))
        if not 0 <= restart_after <= 3600:
            raise ValueError("restart_after must be in [0, 3600]")
        self.armed.append({"node": node, "step": step, "restart_after": restart_after})
        return []

    def _corrupt(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        if not node.startswith("mta."):
            raise ValueError("corrupt damages an MTA's queue log: give mta.<server>")
        where = float(params.get("where", 0.5))
        restart_after = float(params.get("restart_after", 0.5))
        if not 0 < where < 1 or not 0 <= restart_after <= 3600:
            raise ValueError("where must be in (0, 1) and restart_after in [0, 3600]")
        self.resume_at.pop(node, None)
        self.restart_at[node] = now + restart_after
        return [SignalNode(node, signal.SIGKILL), CorruptLog(node, where)]

    def _feed_cut(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        if not node.startswith("mta."):
            raise ValueError("only an MTA subscribes to the directory's feed")
        return [Send(node, "fault.feed_cut", {"seconds": seconds}, self.ids.next())]

    def _clock(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        if node == SELF:
            raise ValueError("the orchestrator's clock cannot be set off through itself")
        offset_ms = int(params["offset_ms"])
        if abs(offset_ms) > hlc.MAX_OFFSET_S * 1000:
            raise ValueError("offset_ms must be within a day either way")
        return [Send(node, "fault.clock", {"offset_ms": offset_ms}, self.ids.next())]

    def _smtp(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        if not node.startswith("ims."):
            raise ValueError("smtp cuts and slows an IMS's sessions: give ims.<server> (xcon up --smtp)")
        cut, delay_ms = float(params.get("cut", 0.0)), int(params.get("delay_ms", 0))
        if not 0 <= cut <= 1 or not 0 <= delay_ms <= 600_000:
            raise ValueError("cut must be in [0, 1] and delay_ms in [0, 600000]")
        return [Send(node, "fault.smtp", {"cut": cut, "delay_ms": delay_ms, "seconds": seconds}, self.ids.next())]

    def _lag(self, node: str, params: dict[str, Any], now: float, seconds: float) -> list:
        if not node.startswith("mta."):
            raise ValueError("only an MTA has a replication lag")
        return [Send(node, "fault.lag", {"lag_ms": int(params["lag_ms"]), "jitter_ms": int(params.get("jitter_ms", 0))},
                     self.ids.next())]

    def _clear(self) -> list:
        """Every link rule and feed cut everywhere, every armed kill, and wake every node: a node
        paused by an orchestrator that died before resuming it is stopped all the same; and heal
        the network, on a cluster of namespaces (no answer: this request has its own)."""
        resumes = [SignalNode(n, signal.SIGCONT) for n in self.nodes if n != SELF]
        self.resume_at.clear()
        self.armed.clear()
        return [*resumes, *(Send(n, "fault.clear", {}, self.ids.next()) for n in self.nodes if n != SELF),
                NetFault("heal", "", None, {}, b"", "")]
