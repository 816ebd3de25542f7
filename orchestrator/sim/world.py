"""The simulated world: every node of a cluster in one thread, on a virtual clock.

Each node is the same core in the same host (nodes.host) as in a real process, on in-memory
storage (MemorySpool, MemoryMaildirs, MemoryDirectoryFile, MemoryJournal). Between them a
network model stands in for ZeroMQ on loopback:

- every frame is encoded and decoded with the protocol's codec, as on the wire;
- each link has a latency drawn from the world's seed (base + jitter), and keeps FIFO order as a
  TCP connection does: a frame never arrives before one sent earlier on the same link;
- a request to a node that is down waits for it, as a DEALER holds frames for a peer that has
  gone; an answer to a node that restarted since it asked is lost (its DEALER is gone), as is a
  feed update to an MTA that is down; a paused node takes everything in order when it resumes;
- an optional processing time per event (`cpu_us`) makes a busy node a queue.

One event heap orders everything by (time, sequence): the same seed gives the same sequence of
events, the same logs and the same outcome, in any process (FoundationDB's and the 500lines
`cluster` chapter's way). Nothing here reads the wall clock or an unseeded random number.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from nodes import logs, node_settings
from nodes.config import Settings
from nodes.directory.core import PersistDirectory, organisation
from nodes.directory.node import MemoryDirectoryFile, wiring as directory_wiring
from nodes.host import NodeHost, node_seed
from nodes.ims import core as ims_core
from nodes.ims.outbound import MemoryOutbound
from nodes.logs import MemorySink
from nodes.mta.node import wiring as mta_wiring
from nodes.mta.spool import MemorySpool
from nodes.store.memory import MemoryMaildirs
from nodes.store.node import wiring as store_wiring
from protocol import Frame, ProtocolError, body_of, decode, encode, hlc

from orchestrator.journal import MemoryJournal
from orchestrator.node import wiring as orchestrator_wiring

from .network import LIVELOCK_EVENTS, Livelock, Network, Stuck
from .processes import SimProcesses

__all__ = ["EPOCH", "Livelock", "Network", "Stuck", "World"]

EPOCH = 1_780_000_000.0  # the virtual clock's start: a fixed date, so two runs log the same times
CLIENT = "cli.sim"


TORN_WAIT_S = 0.05  # short: a kill that waited longer would outlive the restart a fault schedules after it


class NodeCrashed(Exception):
    """A node died in the middle of its turn: nothing of the turn leaves. `keep_log`: its log
    lines so far were written (a crash point flushes them, Runtime.crash); else they are lost
    with the process, as with a SIGKILL before the turn's end."""

    def __init__(self, keep_log: bool = True):
        super().__init__()
        self.keep_log = keep_log


@dataclass
class SimNode:
    name: str
    kind: str
    server: str | None
    storage: Any
    sink: MemorySink = field(default_factory=MemorySink)
    host: NodeHost | None = None
    alive: bool = False
    paused: bool = False
    incarnation: int = 0
    waiting: list = field(default_factory=list)  # requests that came while it was down
    parked: list = field(default_factory=list)  # everything that came while it was paused
    wakes: set = field(default_factory=set)  # wake-up times already on the heap
    busy_until: float = 0.0
    synced: float = 0.0  # seconds of the turn under way spent in durable writes (Network.sync_us)
    pid: int = 0
    kill_in_write: bool = False  # a kill armed to land inside its next write (Network.torn_kills)


class World:
    def __init__(self, settings: Settings, network: Network | None = None, users: list[dict[str, Any]] = (),
                 smarthost: Any = None):
        """`users`: the organisation as it stands when the world starts (alias, home, alternate,
        deliver_to_both): seeded into the directory's and the stores' storage before any node
        boots, as an organisation that existed before the run. What the run then costs is what
        happens in it, not the making of thousands of mailboxes and the replication of each to
        every MTA (each MTA starts from the directory's snapshot).

        With `settings.smtp`, each server has its IMS (nodes.ims.core), which relays to
        `smarthost` (orchestrator.lab.outside.SimSmarthost: its `take` answers an attempt, as
        the outside world's server would; None: there is none)."""
        self.settings = settings
        self.smarthost = smarthost
        self.network = network or Network()
        self.rng = random.Random(settings.seed * 31 + 7)  # the network's and crashes' draws
        self.torn_writes = 0  # kills that landed inside a write
        self.now = EPOCH
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = itertools.count()
        self._link_last: dict[tuple[str, str], float] = {}
        self.events_run = 0
        self.event_limit = float("inf")  # Stuck past it (rearm)
        self._same_instant = 0
        self.nodes: dict[str, SimNode] = {"directory": SimNode("directory", "directory", None, MemoryDirectoryFile())}
        for s in settings.servers:
            self.nodes[f"store.{s}"] = SimNode(f"store.{s}", "store", s, MemoryMaildirs())
            self.nodes[f"mta.{s}"] = SimNode(f"mta.{s}", "mta", s, MemorySpool())
        for s in settings.servers if settings.smtp else ():
            self.nodes[f"ims.{s}"] = SimNode(f"ims.{s}", "ims", s, MemoryOutbound())
        self.nodes["orchestrator"] = SimNode("orchestrator", "orchestrator", None, MemoryJournal())
        self.client_sink = MemorySink()  # what the CLI itself logs (cli.jsonl in a real run)
        self._client_inc = 0
        self._answers: dict[str, Frame] = {}
        self._pids = itertools.count(1001)
        if users:
            self._seed(users)
        for name in self.nodes:
            self.boot(name)

    def _seed(self, users: list[dict[str, Any]]) -> None:
        for u in users:
            self.nodes[f"store.{u['home']}"].storage.create(u["alias"])
        self.nodes["directory"].storage.save(PersistDirectory(organisation(users)))

    def rearm(self) -> None:
        """Allow the world Network.stuck_events more events from now (a campaign, at each step)."""
        self.event_limit = self.events_run + self.network.stuck_events

    # --- the clock ------------------------------------------------------------------------------

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))

    def run_until(self, when: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run every event up to `when` (or until `stop()` holds); the clock ends at `when` unless stopped."""
        heap = self._heap
        while heap and heap[0][0] <= when:
            at, _, fn, args = heapq.heappop(heap)
            if at > self.now:
                self.now, self._same_instant = at, 0
            else:
                self._same_instant += 1
                if self._same_instant > LIVELOCK_EVENTS:
                    raise Livelock(f"{LIVELOCK_EVENTS:,} events at one instant (t={self.now - EPOCH:.6f} s): "
                                   "a node is re-arming a timer in the past")
            self.events_run += 1
            if self.events_run > self.event_limit:
                raise Stuck(f"{self.network.stuck_events:,} events since the last step of its schedule (t="
                            f"{self.now - EPOCH:.3f} s of virtual time): the world does not settle")
            fn(*args)
            if stop is not None and stop():
                return True
        if when > self.now:
            self.now = when
        return stop() if stop is not None else False

    # --- nodes ------------------------------------------------------------------------------------

    def boot(self, name: str, pid: int | None = None) -> int:
        """Start (or restart) a node from what its storage holds, as a real restart does."""
        node = self.nodes[name]
        if node.alive:
            return node.pid
        node.incarnation += 1
        node.alive, node.paused = True, False
        node.pid = pid or next(self._pids)
        boot = f"{node.incarnation:06x}"
        settings, cluster = node_settings.of(self.settings, name), self.settings
        if node.kind == "mta":
            parts = mta_wiring(node.server, settings, boot, node.storage)
        elif node.kind == "store":
            parts = store_wiring(node.server, settings, boot, node.storage)
        elif node.kind == "directory":
            parts = directory_wiring(settings, node.storage)
        elif node.kind == "ims":
            node.storage.load(ims_core.lifetime(settings))
            parts = ims_core.wiring(node.server, settings, boot, node_seed(cluster.seed, name),
                                    cluster.smarthost, node.storage, lambda action: self._relay(node, action))
        else:
            parts = orchestrator_wiring(settings, list(self.nodes), boot, node.storage, SimProcesses(self),
                                        self._crash_self)
        # a restarted node's clock carries on from its last line, as a real one's (nodes.logs.last_hlc)
        last = node.sink.events[-1].get("hlc") if node.sink.events else None
        clock = (lambda: self.now + node.synced) if self.network.sync_us else (lambda: self.now)
        nodelog = logs.NodeLog(name, clock, logs.Sinks(node.sink, logs.NoConsole()),
                               hlc_start=hlc.packed(last) if last else 0)
        sync = parts.sync
        if sync is not None:
            sync = self._syncing(node, sync)
        host = NodeHost(name, parts.core, nodelog, node_seed(cluster.seed, name), parts.executors, sync,
                        parts.deferred, parts.stats, facts=lambda: {"pid": node.pid}, notes=parts.notes)
        node.host = host
        if not node.sink.events:
            host.log.info(logs.CREATED)  # as a real node's new log begins
        node.wakes = set()
        self._turn(node, host.start, self.now)
        host.log.info("node.started", pid=node.pid, endpoint=f"sim://{name}")
        self._ship(node)
        waiting, node.waiting = node.waiting, []
        for args in waiting:  # what was sent to it while it was down, in order
            self._arrive(*args)
        return node.pid

    def kill(self, name: str, torn: float = 0.0) -> None:
        """SIGKILL: the process is gone with whatever it had not made durable (with `torn`, that
        fraction of the batch it was writing got to storage)."""
        node = self.nodes[name]
        if not node.alive:
            return
        node.alive, node.paused, node.host, node.kill_in_write = False, False, None, False
        node.parked = []
        node.storage.crash(torn)

    def kill_soon(self, name: str) -> None:
        """A kill that lands inside the node's next write, or TORN_WAIT_S from now if it makes none."""
        node = self.nodes[name]
        node.kill_in_write = True
        self.at(self.now + TORN_WAIT_S, self._kill_if_armed, name, node.incarnation)

    def _kill_if_armed(self, name: str, incarnation: int) -> None:
        node = self.nodes[name]
        if node.kill_in_write and node.incarnation == incarnation:
            self.kill(name)

    def _syncing(self, node: SimNode, sync: Callable[[], None]) -> Callable[[], None]:
        def sync_or_die() -> None:
            if node.kill_in_write:
                self.torn_writes += 1
                node.storage.crash(self.rng.random())  # part of the batch got there, the rest did not
                raise NodeCrashed(keep_log=False)
            sync()
            node.synced += self.network.sync_us / 1e6
        return sync_or_die

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive:
            node.paused = True

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if not node.alive or not node.paused:
            return
        node.paused = False
        parked, node.parked = node.parked, []
        for args in parked:
            self.at(self.now, self._arrive, *args)
        self._schedule_wake(node)

    def _crash_self(self) -> None:
        raise NodeCrashed()

    def _turn(self, node: SimNode, work: Callable[..., None], *args: Any) -> None:
        """One turn of a node's loop: the input, then the batch's commit. A crash ends the node
        where it stands: nothing of the turn leaves, and its log lines only if a crash point
        wrote them."""
        logged = len(node.sink.events)
        node.synced = 0.0
        try:
            work(*args)
            node.host.flush()
        except NodeCrashed as crash:
            if not crash.keep_log:
                del node.sink.events[logged:]
            self.kill(node.name)

    def _relay(self, node: SimNode, action: ims_core.Relay) -> None:
        """An IMS's attempt at the smarthost: answered as the smarthost is now, heard a round trip later."""
        code, words = self.smarthost.take(action.mail_from, action.rcpt, action.raw) if self.smarthost else (
            None, "ConnectionRefusedError: no smarthost")
        at = self._arrival(node.name, "smarthost")
        self.at(at + (at - self.now), self._arrive, node.name, "event", None,
                ims_core.Relayed(action.key, code, words), node.incarnation)

    # --- the network ----------------------------------------------------------------------------

    def _arrival(self, src: str, dst: str) -> float:
        net = self.network
        at = self.now + (net.latency_us + (self.rng.random() * net.jitter_us if net.jitter_us else 0)) / 1e6
        last = self._link_last.get((src, dst), 0.0)
        if at < last:
            at = last  # FIFO per link, as TCP keeps it
        self._link_last[(src, dst)] = at
        return at

    def _ship(self, node: SimNode) -> None:
        """The turn's end: log lines first (NodeHost.commit), then the frames, onto their links."""
        if node.host is not None:
            self._send(node, node.host.commit())

    def _send(self, node: SimNode, outs: list) -> None:
        host = node.host
        for out in outs:
            data = encode(out.frame)
            if out.kind == "send":
                if out.to not in self.nodes:
                    host.log.error("send.unknown_node", to=out.to, reason=f"no node '{out.to}' in the cluster")
                    continue
                self.at(self._arrival(node.name, out.to), self._arrive, out.to, "request",
                        (node.name, node.incarnation), data, 0)
            elif out.kind == "reply":
                dst, inc = out.to
                self.at(self._arrival(node.name, dst), self._arrive, dst, "response", None, data, inc)
            else:
                for sub in self.nodes.values():
                    if sub.kind == "mta":
                        self.at(self._arrival(node.name, sub.name), self._arrive, sub.name, "feed", None, data, 0)
        self._schedule_wake(node)

    def _schedule_wake(self, node: SimNode) -> None:
        if node.host is None or node.paused:
            return
        wake = node.host.next_wakeup()
        if wake is not None and wake not in node.wakes:
            node.wakes.add(wake)
            self.at(max(wake, self.now), self._wake, node.name, node.incarnation, wake)

    def _wake(self, name: str, incarnation: int, wake: float) -> None:
        node = self.nodes[name]
        if node.incarnation != incarnation or not node.alive:
            return
        node.wakes.discard(wake)
        if node.paused:
            return
        self._turn(node, node.host.due, self.now)
        self._ship(node)

    def _arrive(self, dst: str, channel: str, peer: Any, data: bytes, incarnation: int) -> None:
        if dst == CLIENT:
            if incarnation == self._client_inc:
                frame = decode(data)
                self._answers[frame.re or ""] = frame
            return
        node = self.nodes[dst]
        if channel in ("response", "event") and incarnation != node.incarnation:
            return  # its asker restarted: the DEALER (or the thread) that would take it is gone
        if not node.alive:
            if channel == "request":
                node.waiting.append((dst, channel, peer, data, incarnation))  # held for its restart
            return
        if node.paused:
            node.parked.append((dst, channel, peer, data, incarnation))
            return
        cpu = self.network.cpu_us / 1e6
        if cpu and node.busy_until > self.now:
            self.at(node.busy_until, self._arrive, dst, channel, peer, data, incarnation)
            return
        node.busy_until = self.now + cpu
        host = node.host
        if channel == "event":  # what the node's shell measured or heard (an IMS's relay)
            self._turn(node, host.event, data, self.now)
            self._ship(node)
            return
        try:
            frame = decode(data)
        except ProtocolError as exc:
            host.log.warning("frame.rejected", reason=str(exc), size=len(data))
            if channel == "request":
                host.refuse(peer, exc.frame_id or "", str(exc))
            self._ship(node)
            return
        if channel == "request":
            self._turn(node, host.request, peer, frame, self.now)
        elif channel == "response":
            self._turn(node, host.response, frame, self.now)
        else:
            self._turn(node, host.feed, frame, self.now)
        self._ship(node)

    # --- the client (what the CLI does over ZeroMQ) ---------------------------------------------

    def request(self, node: str, type_: str, body: dict[str, Any], timeout: float, rid: str,
                clock: int) -> Frame | None:
        """Send a request as a client would and run the world until its answer or `timeout`."""
        frame = Frame(type_, rid, CLIENT, clock, body)
        self.at(self._arrival(CLIENT, node), self._arrive, node, "request", (CLIENT, self._client_inc),
                encode(frame), 0)
        answers = self._answers
        if self.run_until(self.now + timeout, lambda: rid in answers):
            return answers.pop(rid)
        self._client_inc += 1  # the client drops the socket that timed out: a late answer is lost
        return None

    def ask_now(self, node: str, type_: str, body: dict[str, Any], rid: str, clock: int) -> Frame | None:
        """A read-only request (a status, a move's state) answered in the same instant, without
        the network: what a client polls in a loop costs the simulation nothing. None if the node
        is down or paused (then the caller asks over the network and waits, as a real client would)."""
        n = self.nodes[node]
        if not n.alive or n.paused or n.host is None:
            return None
        peer = (CLIENT, -1)  # no incarnation of the client: the answer is taken here, not sent
        host = n.host
        self._turn(n, host.request, peer, Frame(type_, rid, CLIENT, clock, body_of(type_, body)), self.now)
        if n.host is None:
            return None
        answer, others = None, []
        for out in host.commit():
            if out.kind == "reply" and out.to == peer:  # made for this answer alone: nobody else holds it
                answer = out.frame
                answer.body = body_of(answer.type, answer.body)  # as the client would read it
            else:
                others.append(out)
        self._send(n, others)
        return answer

    # --- reading the world ------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Every node's log in one timeline, in logread.merge's order (each log is in clock order:
        a stable sort of the logs end to end gives the same, ties to the log given first, in C)."""
        logs_ = [n.sink.events for n in self.nodes.values()] + [self.client_sink.events]
        return sorted(itertools.chain.from_iterable(logs_), key=hlc.of_event)
