"""A node at the organisation's edge, which speaks a protocol of the outside world (SMTP: nodes.ims;
IMAP through Dovecot: nodes.imap) and ZeroMQ to the cluster: one asyncio loop, its log with a
hybrid logical clock, a ROUTER that answers ping, status and the clock faults as every node's does,
and a DEALER to one node of the cluster (`peer`) for the requests it makes.

Cores of the other nodes are pure functions run by nodes.runtime; an edge node's work is waiting on
sockets of another protocol, so it is a small asyncio program instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from protocol import INVALID, Frame, ProtocolError, decode_message, encode

from . import logs
from .config import ClusterConfig
from .security import Security

ASK_S = 5.0  # how long a request to the peer is waited for


class EdgeNode:
    kind = "edge"

    def __init__(self, name: str, config: ClusterConfig, peer: str):
        self.name, self.config, self.peer = name, config, peer
        self.server = config.nodes[name].get("server", "")  # the internet host has none
        self.nodelog = logs.file_log(name, config.run_dir / "logs" / f"{name}.jsonl", config.settings.console)
        if self.nodelog.sinks.json_file.created:
            self.log("info", logs.CREATED)
        self.pending: dict[str, asyncio.Future] = {}
        self.stopping = asyncio.Event()
        self.ready = False

    # --- what a kind of edge node adds --------------------------------------------------------

    async def start(self) -> list:
        """Start the node's own work; the coroutines to run beside the sockets'."""
        return []

    async def stop(self) -> None:
        """End the node's own work (the sockets close after)."""

    def status(self) -> dict[str, Any]:
        return {}

    def clear_faults(self) -> None:
        """`xcon fault clear`: the node's own faults end (the clock's offset is ended for it)."""

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
        self.router.bind(self.config.endpoint(self.name))
        self._ctx, self._security = ctx, security
        self.dealers: dict[str, Any] = {}
        tasks = self._tasks = [asyncio.create_task(self._requests())]  # each DEALER's reader joins them
        self.dealer = self._dealer(self.peer)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        reason = "signal"
        try:
            tasks += [asyncio.create_task(c) for c in await self.start()]
            self.ready = True
            await self.stopping.wait()
        except Exception as exc:  # a start that failed: said in the log and the console, then exit
            reason = f"{type(exc).__name__}: {exc}"
            self.log("error", "node.failed", reason=reason)
            print(f"{self.name}: {reason}", flush=True)
        finally:
            await self.stop()
            for task in tasks:
                task.cancel()
            self.log("info", "node.stopped", reason=reason)
            for sock in (self.router, *self.dealers.values()):
                sock.close(0)
            if auth is not None:
                auth.stop()

    def _dealer(self, node: str) -> Any:
        """The DEALER to `node` (made at the first request to it), with its reader."""
        sock = self.dealers.get(node)
        if sock is None:
            sock = self.dealers[node] = self._security.dealer(self._ctx, self.config.endpoint(node))
            self._tasks.append(asyncio.create_task(self._answers(sock)))
        return sock

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

    async def _answers(self, sock: Any) -> None:
        while True:
            data = await sock.recv()
            try:
                frames = decode_message(data)
            except ProtocolError as exc:
                self.log("warning", "frame.rejected", reason=str(exc), via="dealer")
                continue
            for frame in frames:
                self.nodelog.hlc.receive(frame.clock, time.time())
                future = self.pending.get(frame.re or "")
                if future is not None and not future.done():
                    future.set_result(frame)

    async def _requests(self) -> None:
        while True:
            peer, data = await self.router.recv_multipart()
            try:
                frames = decode_message(data)
            except ProtocolError as exc:
                self.log("warning", "frame.rejected", reason=str(exc), size=len(data))
                continue
            for frame in frames:
                self.nodelog.hlc.receive(frame.clock, time.time())
                answered = self._answer(frame)
                if asyncio.iscoroutine(answered):  # a request the node works on: answered when it is done
                    asyncio.create_task(self._answer_later(peer, frame, answered))
                    continue
                kind, answer = answered
                await self.router.send_multipart([peer, encode(self.frame(kind, answer, frame.trace, frame.id))])

    async def _answer_later(self, peer: bytes, frame: Frame, work: Any) -> None:
        try:
            kind, answer = await work
        except Exception as exc:  # the node's own work failed: said, and answered as an error
            self.log("error", "node.request_failed", type=frame.type, reason=f"{type(exc).__name__}: {exc}")
            kind, answer = "error", {"reason": f"{self.name}: {type(exc).__name__}: {exc}", "code": None}
        await self.router.send_multipart([peer, encode(self.frame(kind, answer, frame.trace, frame.id))])

    def _answer(self, frame: Frame) -> Any:
        if frame.type == "ping":
            return "pong", {"node": self.name, "ready": self.ready, "pid": os.getpid()}
        if frame.type == "status":
            return "status_reply", {"node": self.name, "status": self.status()}
        if frame.type == "fault.clock":
            self.nodelog.hlc.offset = frame.body.offset_ms / 1000
            return "ok", {}
        if frame.type == "fault.clear":
            self.nodelog.hlc.offset = 0.0
            self.clear_faults()
            return "ok", {}
        answered = self.answer(frame)
        if answered is not None:
            return answered
        return "error", {"reason": f"{self.name} does not handle '{frame.type}'",
                         "code": INVALID if frame.type.startswith("fault.") else None}


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
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((address, port)) == 0
