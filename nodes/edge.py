"""A node at the organisation's edge, which speaks a protocol of the outside world (SMTP: nodes.ims;
IMAP through Dovecot: nodes.imap; the Internet's Postfix: nodes.internet) and ZeroMQ to the
cluster: one asyncio loop around a node host (nodes.host), as nodes.runtime is a poll loop around
one. The host answers ping, status and the faults as every node's does (one copy of that code, so
an edge node cannot drift from the others: a clock offset was once bounded in one and not here).

The IMS has a core of its own (nodes.ims.core), which its SMTP door asks (`local`) as a client
would. An edge node without one (IMAP, the Internet) is hosted with AnswerCore: its requests are
answered by the node's `answer`, in a task of its own when the answer has to wait. Either may ask
a node of the cluster for something itself (`ask`) on a DEALER to that node.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from protocol import INVALID, Frame, ProtocolError, body_of, decode_message, encode

from . import logs
from .config import ClusterConfig, libc
from .core import Reply, Request
from .host import NodeHost, Wiring, node_seed
from .runtime import bind
from .security import Security

ASK_S = 5.0  # how long a request to the peer is waited for
LOCAL = "local"  # a request the node's own door made (EdgeNode.local): its answer is not sent
IDLE_S = 5.0  # the longest the timer task sleeps with nothing due


class AnswerCore:
    """The core of an edge node without one of its own: each request is answered by the node's
    `answer` (EdgeNode.answer); what it must wait for is answered when done (EdgeNode._answer_later)."""

    def __init__(self, node: EdgeNode):
        self.node = node

    @property
    def ready(self) -> bool:
        return self.node.ready

    def start(self, now: float) -> list:
        return []

    def on_event(self, event: Any, now: float) -> list:
        if not isinstance(event, Request):
            return []
        frame = event.frame
        answered = self.node.answer(frame)
        if answered is None:
            return [Reply(event.peer, frame.id, "error", {"reason": f"{self.node.name} does not handle '{frame.type}'",
                                                          "code": INVALID if frame.type.startswith("fault.") else None})]
        if asyncio.iscoroutine(answered):  # answered when it is done
            self.node.spawn(self.node._answer_later(event, answered))
            return []
        kind, body = answered
        return [Reply(event.peer, frame.id, kind, body, frame.trace)]

    def tick(self, now: float) -> list:
        return []

    def next_wakeup(self) -> float | None:
        return None

    def status(self, now: float) -> dict[str, Any]:
        return self.node.status()

    def clear_faults(self) -> None:
        self.node.clear_faults()


class EdgeNode:
    kind = "edge"

    def __init__(self, name: str, config: ClusterConfig, peer: str):
        self.name, self.config, self.peer = name, config, peer
        self.server = config.nodes[name].get("server", "")  # the internet host has none
        self.nodelog = logs.file_log(name, config.run_dir / "logs" / f"{name}.jsonl", config.settings.console)
        if self.nodelog.sinks.json_file.created:
            self.log("info", logs.CREATED)
        self.pending: dict[str, asyncio.Future] = {}  # the node's own requests (ask), by frame id
        self.local: dict[str, asyncio.Future] = {}  # its door's requests to its core (ask_core)
        self.stopping = asyncio.Event()
        self.ready = False
        self._work: set[asyncio.Task] = set()

    # --- what a kind of edge node adds --------------------------------------------------------

    def wiring(self) -> Wiring:
        """The core this node hosts, with its executors (made as the node starts)."""
        return Wiring(AnswerCore(self))

    async def start(self) -> list:
        """Start the node's own work; the coroutines to run beside the sockets'."""
        return []

    async def stop(self) -> None:
        """End the node's own work (the sockets close after)."""

    def status(self) -> dict[str, Any]:
        return {}

    def clear_faults(self) -> None:
        """`xcon fault clear`: the node's own faults end (the host ends the clock's offset)."""

    def answer(self, frame: Frame) -> Any:
        """A request of the node's own kind (not ping, status or a fault): (type, body) of the
        answer, or a coroutine that gives it (the answer waits for it); None: not handled."""
        return None

    # --- the log and the clock ----------------------------------------------------------------

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.nodelog.emit(level, event, fields)
        self.nodelog.flush()

    def frame(self, type_: str, body: dict[str, Any], trace: str | None = None, re: str | None = None) -> Frame:
        return Frame(type_, uuid.uuid4().hex, self.name, self.nodelog.hlc.tick(time.time()), body, trace, re)

    # --- the node's life ----------------------------------------------------------------------

    async def run(self) -> None:
        security = Security(self.config.run_dir, self.config.settings.insecure)
        sync_ctx = zmq.Context()
        auth = security.authenticator(sync_ctx)  # ZAP on the shared libzmq context
        ctx = zmq.asyncio.Context.shadow(sync_ctx)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        security.server(self.router)
        bind(self.router, self.name, self.config.endpoint(self.name))
        self._ctx, self._security = ctx, security
        self.dealers: dict[str, Any] = {}
        self._wake = asyncio.Event()
        wiring = self.wiring()
        self.host = NodeHost(self.name, wiring.core, self.nodelog, node_seed(self.config.settings.seed, self.name),
                             wiring.executors, wiring.sync, wiring.deferred, wiring.stats,
                             facts=lambda: {"pid": os.getpid()}, notes=wiring.notes)
        tasks = self._tasks = [asyncio.create_task(self._requests()), asyncio.create_task(self._timers())]
        self.dealer = self._dealer(self.peer)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        reason, failed = "signal", False
        try:
            self.host.start(time.time())
            await self.ship()
            tasks += [asyncio.create_task(c) for c in await self.start()]
            self.ready = True
            await self.stopping.wait()
        except Exception as exc:  # a start that failed: said in the log and the console, then exit
            reason = f"{type(exc).__name__}: {exc}"
            self.log("error", "node.failed", reason=reason)
            print(f"{self.name}: {reason}", flush=True)
            failed = True
        finally:
            await self.stop()
            for task in [*tasks, *self._work]:
                task.cancel()
            self.log("info", "node.stopped", reason=reason)
            for sock in (self.router, *self.dealers.values()):
                sock.close(0)
            if auth is not None:
                auth.stop()
        if failed:
            sys.exit(1)  # a start that failed is no clean exit: `xcon up` and a restart see it

    def spawn(self, work: Any) -> None:
        """Run `work` beside the loop, held until it ends (a task nobody holds may be collected)."""
        task = asyncio.get_running_loop().create_task(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    def _dealer(self, node: str) -> Any:
        """The DEALER to `node` (made at the first request to it), with its reader."""
        sock = self.dealers.get(node)
        if sock is None:
            sock = self.dealers[node] = self._security.dealer(self._ctx, self.config.endpoint(node))
            self._tasks.append(asyncio.create_task(self._answers(sock)))
        return sock

    async def ship(self) -> None:
        """What the host lets out: frames to nodes and requesters, and the door's answers."""
        host = self.host
        host.flush()
        for out in host.commit():
            if out.kind == "reply" and isinstance(out.to, tuple) and out.to[0] == LOCAL:
                future = self.local.pop(out.frame.re or "", None)
                if future is not None and not future.done():
                    out.frame.body = body_of(out.frame.type, out.frame.body)  # as a client would read it
                    future.set_result(out.frame)
            elif out.kind == "send":
                await self._dealer(out.to).send(encode(out.frame))
            elif out.kind == "reply":
                await self.router.send_multipart([out.to, encode(out.frame)])
        self._wake.set()  # the host's next wake-up may have changed

    async def ask(self, type_: str, body: dict[str, Any], trace: str | None = None, wait: float = ASK_S,
                  to: str | None = None) -> Frame:
        """One request to the peer (or to node `to`); TimeoutError if it does not answer in `wait` s."""
        frame = self.frame(type_, body, trace)
        future = asyncio.get_running_loop().create_future()
        self.pending[frame.id] = future
        try:
            await self._dealer(to or self.peer).send(encode(frame))
            return await asyncio.wait_for(future, wait)
        finally:
            self.pending.pop(frame.id, None)

    async def ask_core(self, type_: str, body: dict[str, Any], trace: str | None = None, wait: float = 3 * ASK_S
                       ) -> Frame:
        """A request of the node's own door to its core, as a client's; TimeoutError past `wait` s
        (the core answers before that by itself, waiting for a node of the cluster included)."""
        now = time.time()
        frame = Frame(type_, uuid.uuid4().hex, self.name, self.nodelog.hlc.tick(now), body_of(type_, body), trace)
        future = asyncio.get_running_loop().create_future()
        self.local[frame.id] = future
        try:
            self.host.request((LOCAL, frame.id), frame, now)
            await self.ship()
            return await asyncio.wait_for(future, wait)
        finally:
            self.local.pop(frame.id, None)

    async def _answers(self, sock: Any) -> None:
        while True:
            data = await sock.recv()
            try:
                frames = decode_message(data)
            except ProtocolError as exc:
                self.log("warning", "frame.rejected", reason=str(exc), via="dealer")
                continue
            for frame in frames:
                future = self.pending.get(frame.re or "")
                if future is not None:
                    self.nodelog.hlc.receive(frame.clock, time.time())
                    if not future.done():
                        future.set_result(frame)
                else:  # the core's
                    self.host.response(frame, time.time())
            await self.ship()

    async def _requests(self) -> None:
        while True:
            peer, data = await self.router.recv_multipart()
            try:
                frames = decode_message(data)
            except ProtocolError as exc:
                self.log("warning", "frame.rejected", reason=str(exc), size=len(data))
                self.host.refuse(peer, exc.frame_id or "", str(exc))
                await self.ship()
                continue
            for frame in frames:
                self.host.request(peer, frame, time.time())
            await self.ship()

    async def _timers(self) -> None:
        """The core's timers and the frames a link fault holds back, when due."""
        while True:
            self._wake.clear()
            wake = self.host.next_wakeup()
            wait = IDLE_S if wake is None else min(IDLE_S, max(0.0, wake - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            self.host.due(time.time())
            await self.ship()

    async def _answer_later(self, req: Request, work: Any) -> None:
        try:
            kind, answer = await work
        except Exception as exc:  # the node's own work failed: said, and answered as an error
            self.log("error", "node.request_failed", type=req.frame.type, reason=f"{type(exc).__name__}: {exc}")
            kind, answer = "error", {"reason": f"{self.name}: {type(exc).__name__}: {exc}", "code": None}
        self.host.execute([Reply(req.peer, req.frame.id, kind, answer, req.frame.trace)])
        await self.ship()


# --- the daemons an edge node runs (Dovecot, Postfix) ------------------------------------------

def runtime_dir(run_dir: Path, name: str) -> Path:
    """A daemon's short folder of its own for this run-dir, /tmp/xcon-<hash>-<name>: a Unix
    socket's path is limited to 108 bytes, and the daemon's own users must reach the folder, which
    a run-dir's parents may not let them (pytest's are private)."""
    return Path("/tmp") / f"xcon-{hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]}-{name}"


def start_daemon(argv: list[str], address: str, port: int, what: str, timeout: float, console: Any = None
                 ) -> subprocess.Popen:
    """`argv` as a child of this process, which gets SIGTERM when this process dies, however it
    dies; returned once it listens on address:port. RuntimeError if it exits first or does not
    listen within `timeout` seconds (it is then killed)."""
    proc = subprocess.Popen(argv, stdout=console or subprocess.DEVNULL, stderr=subprocess.STDOUT if console else
                            subprocess.DEVNULL, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    deadline = time.time() + timeout
    while not listening(address, port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        if time.time() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{what} did not listen on {address}:{port} in {timeout:g} s")
        time.sleep(0.05)
    return proc


def _die_with_parent() -> None:
    """Before exec: SIGTERM when the parent dies (PR_SET_PDEATHSIG), however it dies."""
    libc().prctl(1, signal.SIGTERM)


def listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((address, port)) == 0
