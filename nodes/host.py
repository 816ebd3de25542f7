"""The node host: everything a node does besides its core, with no socket, clock or disk of its own.

Both worlds run every node in one of these: the ZeroMQ shell (nodes.runtime) with the wall clock
and the disk, and the simulator (orchestrator.sim) with a virtual clock and memory. The host owns

- the hybrid logical clock (its log's: protocol.hlc) and the ids of the frames it makes;
- `ping`, `status` and the fault control frames (`fault.link`, `fault.feed_cut`, `fault.clear`),
  which the core never sees, and the link-fault plans (nodes.faults) they set;
- replies routed by the requester's opaque `peer` (a ROUTER identity in one world, a name in the
  other) and link faults looked up by the requester's node name;
- group commit: the replies, sends, publications and logs that follow a deferred write wait until
  `flush` has made the batch durable; `commit` then writes the log lines and hands over the
  frames, so a node killed in between has logged what it did but told nobody.

The shell calls `start`, then for each input `request`/`response`/`feed`/`event`, `flush` at the
end of a batch, `due` when `next_wakeup` has come, and `commit` to get what must leave.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from protocol import Frame, as_dict
from protocol.messages import OK

from .core import Feed, Log, Publish, Reply, Request, Response, Send
from .faults import Faults, LinkRule
from .logs import NodeLog

PEER_NAMES = 1024  # requesters whose node names a host keeps, the most recent
_PROMISES = frozenset((Log, Send, Reply, Publish))  # what a turn's unsynced writes hold back


class Core(Protocol):
    """What every node core is (nodes.core for the events and actions it trades in)."""

    @property
    def ready(self) -> bool:
        """True once the node can do its job (an MTA: its directory cache is loaded); `ping` says so."""

    def start(self, now: float) -> list:
        """The actions of a node that starts (or restarts, on the state its storage kept)."""

    def on_event(self, event: Any, now: float) -> list:
        """The actions one event (Request, Response, Feed, DiskSpace) calls for, in order: an
        action that persists state comes before the reply that depends on it."""

    def tick(self, now: float) -> list:
        """The actions of the timers due at `now` (called once `now >= next_wakeup()`)."""

    def next_wakeup(self) -> float | None:
        """When the core next needs `tick`, or None for never (until an event comes)."""

    def status(self, now: float) -> dict[str, Any]:
        """What `xcon status` shows of the node: plain data, the fields tools wait on included."""


@dataclass
class Wiring:
    """A node as both worlds host it: its core, the executors of its storage actions (written
    once, against a storage interface with a disk and a memory implementation), and how it is
    joined to the others."""

    core: Core
    executors: dict[type, Callable[[Any], list]] = field(default_factory=dict)
    sync: Callable[[], None] | None = None  # makes the batch's deferred writes durable
    deferred: tuple[type, ...] = ()  # actions whose writes wait for `sync` (group commit)
    stats: Callable[[], dict[str, Any]] | None = None
    probe: Callable[[], Any] | None = None  # a measurement for the core (DiskSpace), now and then
    subscribe_to: str | None = None  # the node whose feed it reads (an MTA: the directory)
    publish: bool = False  # it publishes a feed (the directory)
    # what its storage found at load that the log must say (damage kept aside: nodes.records),
    # logged at start with the core's own first events
    notes: list = field(default_factory=list)


@dataclass(slots=True)
class Out:
    """A frame that leaves the node: to a node by name (`send`), to a requester (`reply`, `to`
    is its opaque peer), or to the feed's subscribers (`publish`, `to` is "")."""

    kind: str
    to: Any
    frame: Frame


class NodeHost:
    def __init__(
        self,
        name: str,
        core: Core,
        log: NodeLog,
        seed: int,
        executors: dict[type, Callable[[Any], list]] | None = None,
        sync: Callable[[], None] | None = None,
        deferred: tuple[type, ...] = (),
        stats: Callable[[], dict[str, Any]] | None = None,
        write: Callable[..., Any] | None = None,
        facts: Callable[[], dict[str, Any]] | None = None,
        notes: list | None = None,
    ):
        self.name = name
        self.core = core
        self.nodelog = log
        self.log = log.log  # the host's own events (structlog), beside the core's Log actions
        self.executors = executors or {}
        self.sync = sync
        self.deferred = deferred
        self.stats = stats  # the shell's own figures (a disk's), added to the core's status
        self.facts = facts or dict  # what `ping` adds (a process's pid)
        self.notes = list(notes or ())  # logged at start (Wiring.notes)
        # how a write is made: the real shell waits out a full disk there (Runtime._write)
        self.write = write or (lambda fn, *args: fn(*args))
        self.hlc = log.hlc  # one clock for the node's frames and its log lines (protocol.hlc)
        self.now = 0.0  # the time of the input being handled
        self._ids = 0
        self._unsynced = False
        self._after_sync: list = []
        self._outbox: list[Out] = []
        self.faults = Faults(seed)
        self._held: list[tuple[float, int, str, Out]] = []  # frames a link fault holds back
        self._seq = itertools.count()
        # requester -> its node name, to fault replies; bounded: every CLI invocation is a requester
        # of its own, and a cluster's life sees thousands (nodes, re-touched on every frame, stay)
        self._peer_names: OrderedDict[Any, str] = OrderedDict()

    # --- inputs -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.now = now
        self.execute([*self.notes, *self.core.start(now)])
        self.flush()

    def request(self, peer: Any, frame: Frame, now: float) -> None:
        """A frame asking something of this node; `peer` is what a Reply to it goes back to."""
        self.now = now
        self._tick_clock(frame)
        names = self._peer_names
        names[peer] = frame.src
        names.move_to_end(peer)
        if len(names) > PEER_NAMES:
            names.popitem(last=False)  # the requester least recently heard from
        kind = frame.type
        if kind in ("fault.link", "fault.feed_cut", "fault.clock", "fault.clear"):
            self._fault(peer, frame, now)
        elif kind == "ping":
            self._reply(Reply(peer, frame.id, "pong", {"node": self.name, "ready": bool(self.core.ready),
                                                       **self.facts()}))
        elif kind == "status":
            self._reply(Reply(peer, frame.id, "status_reply", {"node": self.name, "status": self.status(now)}))
        else:
            self.execute(self.core.on_event(Request(peer, frame), now))

    def response(self, frame: Frame, now: float) -> None:
        """A frame answering one this node sent."""
        self.now = now
        self._tick_clock(frame)
        self.execute(self.core.on_event(Response(frame), now))

    def feed(self, frame: Frame, now: float) -> None:
        """A frame of the directory's change feed; lost while a fault cuts the feed."""
        self.now = now
        if self.faults.feed_cut(now):
            return
        self._tick_clock(frame)
        self.execute(self.core.on_event(Feed(frame), now))

    def event(self, event: Any, now: float) -> None:
        """Something the shell measured (DiskSpace)."""
        self.now = now
        self.execute(self.core.on_event(event, now))

    def status(self, now: float) -> dict[str, Any]:
        """What `status` answers: the core's status and the shell's own figures."""
        status = self.core.status(now)
        status = {**status, **self.stats()} if self.stats is not None else status
        faults = self.faults.in_force(now, self.hlc.offset)
        return {**status, "faults": faults} if faults else status

    def refuse(self, peer: Any, re: str, reason: str) -> None:
        """Answer a frame the shell could not decode."""
        self._reply(Reply(peer, re, "error", {"reason": reason, "code": None}))

    def next_wakeup(self) -> float | None:
        """When `due` has something to do: the core's next timer or a held frame's time."""
        wake = self.core.next_wakeup()
        if self._held and (wake is None or self._held[0][0] < wake):
            wake = self._held[0][0]
        return wake

    def due(self, now: float) -> None:
        """Let out the held frames whose time has come, and run the core's timers if due."""
        self.now = now
        while self._held and self._held[0][0] <= now:
            self._outbox.append(heapq.heappop(self._held)[3])
        wake = self.core.next_wakeup()
        if wake is not None and wake <= now:
            self.execute(self.core.tick(now))
            self.flush()

    def _fault(self, peer: Any, frame: Frame, now: float) -> None:
        body = frame.body
        if frame.type == "fault.link":
            rule = LinkRule(body.delay_ms, body.jitter_ms, body.drop, body.duplicate, body.reorder,
                            now + body.seconds)
            self.faults.set_link(body.peer, rule)
        elif frame.type == "fault.feed_cut":
            self.faults.feed_cut_until = now + body.seconds
        elif frame.type == "fault.clock":
            # what the node stamps from now on reads this far off (protocol.hlc; bounded by its
            # declaration, protocol.messages); its timers do not
            self.hlc.offset = body.offset_ms / 1000
        else:
            self.faults.clear()
            self.hlc.offset = 0.0
            clear = getattr(self.core, "clear_faults", None)  # a fault a core keeps itself (an MTA's lag)
            if clear is not None:
                clear()
        self.log.warning("fault.applied", type=frame.type, by=frame.src, **as_dict(body))
        self._reply(Reply(peer, frame.id, "ok", OK))

    def _tick_clock(self, frame: Frame) -> None:
        self.hlc.receive(frame.clock, self.now)

    # --- actions ------------------------------------------------------------------------------

    def execute(self, actions: list) -> None:
        """Run actions in order; a node-specific action may return more actions to run."""
        queue = list(actions)
        queue.reverse()  # the next action last: taken with pop(), and what it returns put after it
        executors = self.executors
        while queue:
            action = queue.pop()
            kind = type(action)
            if self._unsynced and kind in _PROMISES:
                self._after_sync.append(action)  # promised only once the batch is on disk
            elif kind in executors:
                more = self.write(executors[kind], action)
                if more:
                    queue += reversed(more)
                if kind in self.deferred:
                    self._unsynced = True
            else:
                self._output(action)

    def flush(self) -> None:
        """End of a batch: make its writes durable in one go, then let out what waited for them."""
        if not self._unsynced:
            return
        self.write(self.sync)
        self._unsynced = False
        held, self._after_sync = self._after_sync, []
        for action in held:
            self._output(action)

    def commit(self) -> list[Out]:
        """End of a turn: write the log lines, then hand over the frames to send, in order. Each
        frame is stamped here, as it leaves, after every line of the turn: a line about what a
        frame answers is stamped after the group commit's fsync, and a reply stamped before it
        carried a clock below that line, so the receiver's line about the reply could sort before
        its cause (a store's clock ahead, its MTA's behind: issue 34, story 12)."""
        self.write(self.nodelog.flush)
        outbox, self._outbox = self._outbox, []
        tick, now = self.hlc.tick, self.now
        for out in outbox:
            out.frame.clock = tick(now)
        return outbox

    def _output(self, action: Any) -> None:
        kind = type(action)
        if kind is Log:
            self.nodelog.emit(action.level, action.event, action.fields)
        elif kind is Send:  # a frame's clock is set as it leaves (commit)
            frame = Frame(action.type, action.id, self.name, 0, action.body, action.trace)
            self._emit(action.to, Out("send", action.to, frame))
        elif kind is Reply:
            self._reply(action)
        elif kind is Publish:
            self._outbox.append(Out("publish", "", Frame(action.type, self._next_id(), self.name, 0, action.body)))
        else:
            raise TypeError(f"{self.name}: no executor for action {action!r}")

    def _reply(self, action: Reply) -> None:
        frame = Frame(action.type, self._next_id(), self.name, 0, action.body, action.trace, action.re)
        self._emit(self._peer_names.get(action.peer, ""), Out("reply", action.peer, frame))

    def _emit(self, peer: str, out: Out) -> None:
        """Out now, later, twice, or never, as the faults on the link to `peer` say."""
        now = self.now
        for at in self.faults.plan(peer, now):
            if at <= now:
                self._outbox.append(out)
            else:
                heapq.heappush(self._held, (at, next(self._seq), peer, out))

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self.name}.r{self._ids}"


def node_seed(seed: int, name: str) -> int:
    """The seed of a node's own draws (its link faults), from the cluster's seed: the same in both worlds."""
    return seed * 7919 + sum(map(ord, name))
