"""A running cluster and what a person or a campaign does with it: the one interface scenarios
and campaigns are written against (the simulator's cluster is the same class on a simulated
world). Starting and stopping one is orchestrator.cluster.launch's.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from nodes.config import ClusterConfig
from nodes.node_settings import quiet_bound_ms, replication_bound_ms
from orchestrator import processes
from orchestrator.inspect import logread
from orchestrator.processes import pid_alive, spawn_node
from protocol import MOVE_ENDED, as_dict
from protocol.names import ALIAS_RULE, POSTMASTER, RESERVED_ALIASES, valid_alias

from .client import Client, ClusterError, NoAnswer, Refused, TimedOut, cli_log, running_config

if TYPE_CHECKING:
    from orchestrator.inspect import audit
    from orchestrator.inspect import check as checker

T = TypeVar("T")
# how long an IMAP server may take to catch up with the directory (its two questions, a kick of a
# user moved away, a second for Dovecot to read its users)
IMAP_SYNC_S = 20.0


class WallClock:
    """The real cluster's time: the wall clock, and sleeping in it."""

    now = staticmethod(time.time)
    sleep = staticmethod(time.sleep)


class Cluster:
    """A running cluster and what a person or a campaign does with it: the one interface that
    scenarios and campaigns are written against. The simulator's cluster (orchestrator.sim)
    is the same class on a simulated world: it answers through the same requests, waits on the
    same conditions and is judged by the same check; it replaces only what touches processes,
    files and the wall clock (`clock`, `client`, `status_of`, `alive`, `revive`, `events`,
    `end_state`, `stop`, `wait_for_event` and the orchestrator's own kill and restart)."""

    def __init__(self, config: ClusterConfig, timeout: float = 5.0):
        self.config = config
        self.client = Client(config, timeout)
        self.clock: Any = WallClock()
        self.resumed: dict[str, Any] | None = None  # set by `start` when it resumed a stopped cluster

    @classmethod
    def attach(cls, run_dir: Path) -> "Cluster":
        return cls(running_config(run_dir))

    @property
    def servers(self) -> tuple[str, ...]:
        return self.config.settings.servers

    @property
    def mtas(self) -> list[str]:
        return [f"mta.{s}" for s in self.servers]

    def close(self) -> None:
        self.client.close()

    # --- users --------------------------------------------------------------------------

    def add_user(self, alias: str, server: str, alternate: str | None = None, deliver_to_both: bool = False,
                 display_name: str = "", wait: bool = True) -> dict[str, Any]:
        """Create the mailbox on its home store, then the directory entry. With `wait`, return
        once every MTA's cache holds the new entry."""
        if not valid_alias(alias):
            raise Refused(f"'{alias.strip()}' is not a valid alias ({ALIAS_RULE})")
        if alias in RESERVED_ALIASES:
            raise Refused(f"'{alias}' is reserved: every store keeps the {alias} mailbox (`xcon mailbox {alias}`)")
        if server not in self.servers:
            raise Refused(f"unknown server '{server}' (servers: {', '.join(self.servers)})")
        if self.lookup(alias) is not None:
            raise Refused(f"user '{alias}' already exists")
        if alternate is not None and self.lookup(alternate) is None:
            raise Refused(f"unknown alternate recipient '{alternate}'")
        if deliver_to_both and alternate is None:
            raise Refused("--deliver-to-both needs --alternate")
        self.client.request(f"store.{server}", "store.create", {"mailbox": alias, "owner": None})
        reply = self.client.request("directory", "dir.add", {
            "alias": alias, "display_name": display_name or alias, "home_server": server,
            "alternate": alternate, "deliver_to_both": deliver_to_both})
        if wait:
            self.wait_replicated(reply.body.usn)
        return reply.body.recipient

    def set_user(self, alias: str, changes: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        if self.lookup(alias) is None:
            raise Refused(f"unknown user '{alias}'")
        reply = self.client.request("directory", "dir.modify", {"alias": alias, "changes": changes, "op": None})
        if wait:
            self.wait_replicated(reply.body.usn)
        return reply.body.recipient

    def lookup(self, alias: str) -> dict[str, Any] | None:
        return self.client.request("directory", "dir.lookup", {"alias": alias}).body.recipient

    def users(self) -> tuple[int, list[dict[str, Any]]]:
        """The directory's USN and every recipient it holds, by alias."""
        body = self.client.request("directory", "dir.snapshot", {}).body
        return body.usn, sorted(body.recipients, key=lambda r: r["alias"])

    def until(self, condition: Callable[[], T], timeout: float, what: str, every: float = 0.02) -> T:
        """Ask `condition` on this cluster's clock (the wall clock, or the simulator's) until it
        gives something true, and return that; TimedOut naming `what` after `timeout` seconds."""
        deadline = self.clock.now() + timeout
        while True:
            result = condition()
            if result:
                return result
            if self.clock.now() > deadline:
                raise TimedOut(f"{what}: not within {timeout:g}s")
            self.clock.sleep(every)

    def replication_s(self) -> float:
        """How long every MTA may take to hear of a change (node_settings.replication_bound_ms)."""
        return replication_bound_ms(self.config.settings) / 1000

    def wait_replicated(self, usn: int, timeout: float | None = None) -> None:
        """Return once every MTA's directory cache has applied `usn` (by default, within a
        minute, or replication_s where that is longer)."""
        self.until(lambda: all(self.status_of(m)["cache_usn"] >= usn for m in self.mtas),
                   max(60.0, self.replication_s()) if timeout is None else timeout, f"every MTA's cache at USN {usn}")

    # --- mail ---------------------------------------------------------------------------

    def send(self, sender: str, to: list[str], subject: str = "", body: str = "",
             msg_id: str | None = None, timeout: float | None = None, priority: str | None = None) -> dict[str, Any]:
        """Submit to the originator's home MTA; returns {"msg_id", "rcpts"} once accepted.
        `priority` (protocol.PRIORITIES; None is normal) chooses the message's time-out."""
        entry = self.lookup(sender)
        if entry is None:
            raise Refused(f"unknown user '{sender}'")
        try:
            reply = self.client.request(f"mta.{entry['home_server']}", "mta.submit", {
                "msg_id": msg_id, "sender": sender, "recipients": to, "subject": subject, "body": body,
                "priority": priority}, timeout=timeout)
        except NoAnswer as exc:
            # the MTA may have made it durable and lost only its answer: a resend with another id
            # would be a second message; one with the same id is taken once
            again = (f"send it again with the same message id ({msg_id}), which an MTA takes once" if msg_id else
                     "a resend may deliver it twice (give a message id to make a resend safe)")
            raise NoAnswer(f"{exc}; the message may have been accepted all the same: {again}") from None
        return {**as_dict(reply.body), "mta": f"mta.{entry['home_server']}"}

    def mailbox(self, alias: str) -> dict[str, Any]:
        if alias == POSTMASTER:  # a mailbox on every server: all of them, each message with its server
            messages = [{**m, "server": server} for server in self.servers
                        for m in self.client.request(f"store.{server}", "store.list", {"mailbox": alias}).body.messages]
            return {"alias": alias, "server": ", ".join(self.servers), "messages": messages}
        entry = self.lookup(alias)
        if entry is None:
            raise Refused(f"unknown user '{alias}'")
        server = entry["home_server"]
        listing = self.client.request(f"store.{server}", "store.list", {"mailbox": alias})
        return {"alias": alias, "server": server, "messages": listing.body.messages}

    def holds(self, alias: str, msg_id: str) -> bool:
        """Whether `msg_id` is in `alias`'s mailbox, wherever it lives now."""
        return any(m["msg_id"] == msg_id for m in self.mailbox(alias)["messages"])

    def reported(self, originator: str, msg_id: str, rcpt: str) -> bool:
        """Whether `originator`'s mailbox holds an NDR for `msg_id` that names `rcpt`."""
        return any(m["ndr"] and m["ndr_for"] == msg_id and rcpt in m["failed"]
                   for m in self.mailbox(originator)["messages"])

    def fill(self, alias: str, messages: list[dict[str, Any]], page: int = 500) -> None:
        """Put ready-made messages ({"name", "msg_id", "raw"}) into alias's mailbox where it lives,
        the way a move copies them: locked by an owner of its own, imported page by page, opened.
        For benchmarks and tests that need a big mailbox fast."""
        store = f"store.{self.lookup(alias)['home_server']}"
        owner = f"fill.{uuid.uuid4().hex[:8]}"
        self.client.request(store, "store.lock", {"mailbox": alias, "owner": owner})
        for start in range(0, len(messages), page):
            self.client.request(store, "store.import", {"mailbox": alias, "owner": owner,
                                                        "messages": messages[start:start + page]}, timeout=60)
        self.client.request(store, "store.unlock", {"mailbox": alias, "owner": owner})

    # --- moves --------------------------------------------------------------------------

    def move(self, alias: str, target: str, workaround: bool = False, copy_delay_ms: int = 0,
             wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        started = self.client.request("orchestrator", "orch.move", {
            "alias": alias, "target": target, "workaround": workaround, "copy_delay_ms": copy_delay_ms})
        move_id = started.body.move_id
        if not wait:
            return self.move_state(move_id)
        return self.wait_move(move_id, timeout)

    def move_state(self, move_id: str) -> dict[str, Any]:
        return self.client.request("orchestrator", "orch.move_status", {"move_id": move_id}).body.move

    def wait_move(self, move_id: str, timeout: float | None = None, step: str | None = None,
                  settled: bool = False) -> dict[str, Any]:
        """Wait until the move ends (or reaches `step`; by default within ten minutes and
        replication_s, a workaround's wait). A move that failed is rolling back, which takes as
        long as the stores it must release take to answer: it counts as ended at once, unless
        `settled` asks for the end of its rollback too."""
        timeout = 600.0 + self.replication_s() if timeout is None else timeout

        def ended() -> dict[str, Any] | None:
            try:
                state = self.move_state(move_id)
            except NoAnswer:  # paused or busy: waited through, as `xcon wait` waits; down: said at once
                if not self.alive("orchestrator"):
                    raise ClusterError(f"the orchestrator is down: move {move_id} goes on from its journal "
                                       "once it is started again (`xcon restart orchestrator`)") from None
                return None
            done = state["step"] in MOVE_ENDED or state["step"] == step or (state["rolling_back"] and not settled)
            return state if done else None

        return self.until(ended, timeout, f"move {move_id} {'in step ' + step if step else 'ended'}")

    # --- faults ---------------------------------------------------------------------------

    def fault(self, kind: str, node: str, peer: str | None = None, **params: Any) -> None:
        """Inject a fault through the orchestrator (see orchestrator/faults.py)."""
        if node == "orchestrator" and kind in ("kill", "restart"):
            return self._orchestrator_process(kind)
        self.client.request("orchestrator", "orch.fault", {"kind": kind, "node": node, "peer": peer, "params": params})

    def _orchestrator_process(self, kind: str) -> None:
        """The orchestrator cannot kill or start itself: the CLI does it, and logs it."""
        config = ClusterConfig.load(self.config.run_dir)
        pid = config.nodes["orchestrator"].get("pid")
        if kind == "kill":
            if pid_alive(pid, config.run_dir):
                os.kill(pid, signal.SIGKILL)
                processes.wait_gone([pid], config.run_dir, 2.0)  # so a restart right after finds it gone
        else:
            if pid_alive(pid, config.run_dir):
                raise ClusterError("the orchestrator is running; kill it first")
            pid = spawn_node(config, "orchestrator").pid
        self.config = config
        self.client.close()
        self.client = Client(config, self.client.timeout)
        cli_log(config.run_dir, "fault.injected", kind=kind, target="orchestrator", pid=pid)
        if kind == "restart":
            self.wait_node_ready("orchestrator")

    def wait_node_ready(self, node: str, timeout: float = 20.0) -> None:
        def ready() -> bool:
            try:  # up but not ready (an MTA waiting for the directory), or not answering yet
                return bool(self.client.ask(node, "ping", timeout=0.5).body.ready)
            except ClusterError:
                return False
        self.until(ready, timeout, f"{node} ready after its restart")

    # --- watching -----------------------------------------------------------------------

    def status_of(self, node: str) -> dict[str, Any]:
        return self.client.request(node, "status", timeout=2.0).body.status

    def status(self) -> dict[str, Any]:
        nodes = {}
        for name, node in self.config.nodes.items():
            alive = self.alive(name) if self.config.deployed else pid_alive(node.get("pid"), self.config.run_dir)
            info: dict[str, Any] = {"alive": alive, "pid": node.get("pid"),
                                    **({"host": node["host"], "address": node["address"]} if "host" in node else {})}
            if alive:
                try:
                    info["status"] = self.status_of(name)
                except ClusterError as exc:
                    info["error"] = "no answer in 2 s (paused, busy or stopping)" if isinstance(exc, NoAnswer) else str(exc)
            nodes[name] = info
        return {"run_dir": str(self.config.run_dir), "settings": self.config.settings.to_json(),
                "timings": self.config.settings.timings(), "nodes": nodes,
                **({"network": self.config.network} if self.config.network else {})}

    def quiet(self) -> tuple | None:
        """None while a move runs, an MTA holds an unfinished pair, an IMS mail to relay or hand
        back, or an IMAP server cannot bring its users in step; else what each wrote, and whom
        each IMAP server lets in."""
        if self.status_of("orchestrator")["active"]:
            return None
        seen = []
        # an IMS holds mail until it relays it or hands it back (its lifetime over, with no
        # smarthost or one that is down): that mail is on its way too
        for node in [*self.mtas, *(f"ims.{s}" for s in self.servers if f"ims.{s}" in self.config.nodes)]:
            status = self.status_of(node)
            if status.get("open_pairs") or status.get("outbound"):
                return None
            seen.append(status.get("spool", {}).get("records", (status.get("relayed"), status.get("returned"))))
        # an IMAP server follows the directory and its store's locks every half second: asked,
        # it catches up now (a user just moved logs in on the new server once the wait is over)
        for node in (f"imap.{s}" for s in self.servers if f"imap.{s}" in self.config.nodes):
            synced = self.client.ask(node, "imap.sync", {}, timeout=IMAP_SYNC_S)
            if synced.type != "imap.synced":
                return None
            seen.append((synced.body.usn, tuple(synced.body.users)))
        return tuple(seen)

    def wait(self, timeout: float | None = None) -> bool:
        """Until two polls in a row find every MTA idle, nothing written in between (by default within
        quiet_bound_ms), through nodes silent for a while (paused, restarting): NoAnswer if one still is
        at the end. One poll is not enough: it asks the MTAs in turn, so a transfer can reach mta.ex1 after
        it was asked and leave mta.ex2 before it is (chaos trial 1374652453, reroute: check saw it pending)."""
        polls: list = [None, None]  # what the last poll saw, and the silence it met (NoAnswer) if any

        def settled() -> bool:
            try:
                now, polls[1] = self.quiet(), None
            except NoAnswer as silent:  # not quiet yet: `xcon wait` gave up at a paused MTA's first poll
                now, polls[1] = None, silent
            same, polls[0] = now is not None and now == polls[0], now
            return same

        every = 0.05
        bound = quiet_bound_ms(self.config.settings) / 1000 if timeout is None else max(timeout, every)
        try:  # at least two polls: a time-out of 0 asks "quiet now?" (it was always "no")
            return self.until(settled, bound, "every queue empty, no move running", every=every)
        except TimedOut:
            if polls[1] is not None:
                raise polls[1] from None
            return False

    # --- what a campaign needs beside the CLI's operations ---------------------------------------

    def alive(self, node: str) -> bool:
        """Whether the node's process runs (on a deployed cluster, on another machine: whether
        it answers a ping)."""
        if self.config.deployed:
            try:
                self.client.request(node, "ping", {}, timeout=1.0)
                return True
            except ClusterError:
                return False
        return pid_alive(ClusterConfig.load(self.config.run_dir).nodes[node].get("pid"), self.config.run_dir)

    def revive(self) -> list[str]:
        """Start every node that is down (killed at a step and not restarted yet, or the
        orchestrator, which cannot restart itself) and wake every node that is stopped (paused by
        an orchestrator that died before it could resume it): the whole cluster up. Returns the
        nodes it started."""
        config = ClusterConfig.load(self.config.run_dir)
        dead = [n for n, d in config.nodes.items() if not pid_alive(d.get("pid"), config.run_dir)]
        for node in sorted(dead, key=lambda n: n != "orchestrator"):  # the orchestrator restarts the others
            self.restart(node)
        for node, d in config.nodes.items():
            stat = processes.proc_stat(d["pid"]) if node not in dead and d.get("pid") else None
            if stat and stat[0] == "T":
                os.kill(d["pid"], signal.SIGCONT)
        return dead

    def restart(self, node: str) -> None:
        """Start a node that is down and wait until it is ready; quietly nothing if it cannot."""
        try:
            self.fault("restart", node)
            self.wait_node_ready(node)
        except ClusterError:
            pass

    def wait_for_event(self, node: str, event: str, timeout: float, **fields: Any) -> None:
        """Wait until `node` has logged `event` with these fields: a scenario's proof of a state."""
        path = self.config.run_dir / "logs" / f"{node}.jsonl"
        said = ", ".join(f"{k}={v}" for k, v in fields.items())
        self.until(lambda: any(e["event"] == event and all(e.get(k) == v for k, v in fields.items())
                               for e in logread.read_file(path)), timeout, f"{node} logging {event} ({said})")

    def stop(self) -> None:
        """Close the connection and stop every node (the run's files stay)."""
        from .launch import stop  # the launcher starts Clusters: it imports this module
        self.close()
        stop(self.config.run_dir)

    def events(self) -> Iterable[dict[str, Any]]:
        """Every node's log, merged in time order (after `stop`)."""
        return logread.merged(self.config.run_dir)

    def end_state(self) -> Any:
        """What the mailboxes, locks, directory and journal hold (orchestrator.audit), or None."""
        from orchestrator.inspect import audit  # the verdict's modules load when a verdict is asked for
        return audit.read(self.config.run_dir) if audit.available(self.config.run_dir) else None

    def durable(self, state: Any) -> audit.Pairs:
        """The pairs the run's durable records hold (orchestrator.audit.durable)."""
        from orchestrator.inspect import audit
        return audit.durable(self.config.run_dir, state)

    def verdict(self) -> checker.Report:
        """The invariant over this run (after `stop`): its logs, then its end state and durable records."""
        from orchestrator.inspect import check as checker
        state = self.end_state()
        return checker.check(self.events(), again=self.events, state=state, durable=self.durable(state),
                             settings=self.config.settings)

