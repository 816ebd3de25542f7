"""The simulated cluster: `orchestrator.cluster.Cluster` on a simulated world.

Scenarios and campaigns drive it exactly as they drive a real cluster: the same requests go to
the same cores (through the world's network, not ZeroMQ), the same waits poll the same status
fields, and the same check judges the same kind of logs and end state. What differs is only
what touches processes, files and the wall clock: time is the world's, a sleep runs the world,
`status_of` reads the node's status without a round trip, and the orchestrator's own kill and
restart are the world's.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

from nodes.config import ClusterConfig, Settings
from nodes.mta import wal
from protocol import hlc

from orchestrator.inspect import audit
from orchestrator import journal
from orchestrator.cluster.client import Client, ClusterError, NoAnswer, Refused
from orchestrator.cluster import Cluster
from .world import Network, World


class SimClock:
    """The world's time; a sleep runs the world that long."""

    def __init__(self, world: World):
        self.world = world

    def now(self) -> float:
        return self.world.now

    def sleep(self, seconds: float) -> None:
        self.world.run_until(self.world.now + seconds)


# requests a client polls in loops or makes before each send and move, which change nothing:
# answered without the network's round trip (a directory lookup was a tenth of a trial's frames)
READ_ONLY = frozenset({"ping", "orch.move_status", "dir.lookup"})


class SimClient(Client):
    """What orchestrator.client.Client does, over the world's network (READ_ONLY requests to a
    node that is up are answered in the instant: World.ask_now). It keeps Client's `request`
    and replaces the transport: no sockets, no keys."""

    def __init__(self, world: World, nodes: list[str], timeout: float = 5.0):  # no Client.__init__: no ZeroMQ
        self.world, self.nodes, self.timeout = world, nodes, timeout
        self._ids = itertools.count(1)
        self._clock = hlc.Clock()  # on the world's clock

    def ask(self, node: str, type_: str, body: dict[str, Any] | None = None, timeout: float | None = None,
            trace: str | None = None) -> Any:
        if node not in self.nodes:
            raise Refused(f"no node '{node}' in this cluster (nodes: {', '.join(sorted(self.nodes))})")
        stamp = self._clock.tick(self.world.now)
        wait = timeout if timeout is not None else self.timeout
        rid = f"cli.sim.{next(self._ids)}"
        reply = None
        if type_ in READ_ONLY:
            reply = self.world.ask_now(node, type_, body or {}, rid, stamp)
        if reply is None:
            reply = self.world.request(node, type_, body or {}, wait, rid, stamp)
        if reply is None:
            raise NoAnswer(f"{node} did not answer within {wait:g}s (is the cluster up? try `xcon status`)")
        self._clock.receive(reply.clock, self.world.now)
        return reply

    def close(self) -> None:
        pass


class SimCluster(Cluster):
    def __init__(self, settings: Settings, network: Network | None = None, run_dir: Path | None = None,
                 users: list[dict[str, Any]] = (), smarthost: Any = None):
        # users: the organisation it starts with; smarthost: the outside world's, with --via smtp (World)
        self.world = World(settings, network, users, smarthost)
        names = list(self.world.nodes)
        self.config = ClusterConfig(run_dir or Path("/nonexistent/sim"), settings,
                                    {n: {"kind": self.world.nodes[n].kind, "endpoints": {}} for n in names})
        self.client = SimClient(self.world, names)
        self.clock = SimClock(self.world)
        self.resumed = None
        self._events: list[dict[str, Any]] | None = None  # the merged timeline, as of _events_at
        self._events_at = -1
        self.world.run_until(self.world.now + 0.01)  # every node has asked for what it starts with

    # --- what touches processes ---------------------------------------------------------------

    def status_of(self, node: str) -> dict[str, Any]:
        """The node's status read in the instant, without a request: campaigns poll it in loops
        (a real request to a node that is down or paused times out; so does this, in virtual time)."""
        n = self.world.nodes.get(node)
        if n is None:
            raise Refused(f"no node '{node}' in this cluster")
        if not n.alive or n.paused or n.host is None:
            self.clock.sleep(2.0)
            raise ClusterError(f"{node} did not answer within 2s (is the cluster up? try `xcon status`)")
        return n.host.status(self.world.now)

    def status(self) -> dict[str, Any]:
        nodes = {}
        for name, n in self.world.nodes.items():
            info: dict[str, Any] = {"alive": n.alive, "pid": n.pid if n.alive else None}
            if n.alive:
                try:
                    info["status"] = self.status_of(name)
                except ClusterError as exc:
                    info["error"] = str(exc)
            nodes[name] = info
        return {"run_dir": "(simulated)", "settings": self.config.settings.to_json(), "nodes": nodes}

    def _orchestrator_process(self, kind: str) -> None:
        node = self.world.nodes["orchestrator"]
        if kind == "kill":
            self.world.kill("orchestrator")
        else:
            if node.alive:
                raise ClusterError("the orchestrator is running; kill it first")
            self.world.boot("orchestrator")
        self.world.client_sink.events.append({"ts": self.world.now, "node": "cli", "level": "warning",
                                              "event": "fault.injected", "hlc": hlc.wall(self.world.now), "kind": kind,
                                              "target": "orchestrator", "pid": node.pid})
        if kind == "restart":
            self.wait_node_ready("orchestrator")

    def alive(self, node: str) -> bool:
        return self.world.nodes[node].alive

    def revive(self) -> list[str]:
        dead = [n for n, node in self.world.nodes.items() if not node.alive]
        for node in sorted(dead, key=lambda n: n != "orchestrator"):
            self.restart(node)
        for name, node in self.world.nodes.items():
            if node.alive and node.paused:
                self.world.resume(name)
        return dead

    def wait_for_event(self, node: str, event: str, timeout: float, **fields: Any) -> None:
        sink = self.world.nodes[node].sink.events
        seen = [0]

        def logged() -> bool:
            for e in sink[seen[0]:]:
                if e["event"] == event and all(e.get(k) == v for k, v in fields.items()):
                    return True
            seen[0] = len(sink)
            return False

        if not self.world.run_until(self.world.now + timeout, logged):
            said = ", ".join(f"{k}={v}" for k, v in fields.items())
            raise ClusterError(f"{node} did not log {event} ({said}) within {timeout:g}s")

    def stop(self) -> None:
        pass  # nothing runs outside this process; the world stays readable

    def close(self) -> None:
        pass

    # --- reading the run ----------------------------------------------------------------------

    def events(self) -> Iterable[dict[str, Any]]:
        if self._events is None or self._events_at != self.world.events_run:
            self._events, self._events_at = self.world.events(), self.world.events_run
        return self._events

    def end_state(self) -> audit.EndState:
        nodes = self.world.nodes
        directory = nodes["directory"].storage.state() or {}
        stores = {n.server: (n.storage.ids(), n.storage.state) for n in nodes.values() if n.kind == "store"}
        state = audit.assemble(directory, stores, nodes["orchestrator"].storage.records)
        for n in nodes.values():
            if n.kind == "ims":  # as audit.end_state reads an IMS's files
                audit.add_ims(state, n.storage.lines, {key: r for (_, key), r in n.storage.files.items()})
        return state

    def durable(self, state: Any) -> audit.Pairs:
        """The pairs the simulated queue logs and mailboxes hold, read as a real run's are."""
        logs = {n.server: wal.recover(n.storage.data)[0] for n in self.world.nodes.values() if n.kind == "mta"}
        return audit.pairs_in(logs, state)

    def dump(self, run_dir: Path, replay: str = "") -> None:
        """Write the run as a real one leaves it (logs, mailboxes, locks, directory, journal), so
        `xcon check`, `xcon logs` and `xcon trace` read it as they read a real run."""
        if run_dir.exists() and any(run_dir.iterdir()):
            if not (run_dir / "sim.json").exists():
                raise ClusterError(f"{run_dir} holds files no simulated run wrote; not writing over them")
            shutil.rmtree(run_dir)  # an earlier simulated run of the same name
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, n in self.world.nodes.items():
            n.sink.dump(run_dir / "logs" / f"{name}.jsonl")
            if n.kind == "store":
                n.storage.dump(run_dir / "stores" / n.server)
            elif n.kind == "mta":
                (run_dir / "mta" / n.server).mkdir(mode=0o700, parents=True, exist_ok=True)
                (run_dir / "mta" / n.server / "queue.wal").write_bytes(bytes(n.storage.data))
            elif n.kind == "directory":
                n.storage.dump(run_dir / "directory" / "directory.json")
            elif n.kind == "ims":
                n.storage.dump(run_dir / "ims" / n.server)
            else:
                n.storage.dump(run_dir / journal.PATH)
        if self.world.client_sink.events:
            self.world.client_sink.dump(run_dir / "logs" / "cli.jsonl")
        (run_dir / "sim.json").write_text(json.dumps({
            "simulated": True, "settings": self.config.settings.to_json(), "replay": replay,
            "network": self.world.network.__dict__, "events_run": self.world.events_run}, indent=1))
