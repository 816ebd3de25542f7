"""The thin ZeroMQ shell around a node host (nodes.host).

One loop: poll the sockets until the host's next wake-up, decode what arrived, hand it to the
host with the wall clock's time, then send what the host lets out. The shell owns the sockets,
the wall clock, CURVE, the disk's full-disk waits and (through `executors`) the disk; the host
owns the rest (hybrid logical clock, ids, ping/status/faults, group commit).

Sockets: a ROUTER for requests; one DEALER per peer node it talks to (replies come back on it);
optionally a SUB (the MTA's view of the directory feed) and a PUB (the directory's feed).
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import signal
import struct
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import zmq

from protocol import MAX_BATCH_FRAMES, MAX_FRAME_BYTES, ProtocolError, batch, decode_message, encode

from . import logs
from .config import ClusterConfig
from .host import NodeHost, Wiring, node_seed
from .records import DamagedFile
from .security import REFUSALS, Security

MAX_POLL_MS = 100
BATCH_BYTES = 1 << 20  # a batch is cut here, far below the frame limit
PROBE_S = 1.0  # how often the shell measures what a core decides with (its disk's free space)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_RETRY_S = 0.2


class NodeStopped(Exception):
    """Asked to stop while waiting for the disk: exit without saying anything not yet written."""


def bind(sock: zmq.Socket, name: str, endpoint: str) -> None:
    """Bind a node's server socket, or exit 2 with one line for `xcon up` to show (and to start
    the cluster on other ports: a port another program took between its choice and this bind)."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        print(f"{name}: cannot bind {endpoint}: {exc}", file=sys.stderr)
        sys.exit(2)


class Runtime:
    def __init__(self, name: str, config: ClusterConfig, wiring: Wiring):
        self.name = name
        self.config = config
        self.probe = wiring.probe  # measures something the core decides with, as an event (DiskSpace)
        self._next_probe = 0.0
        self._disk_waiting = False
        self._stopping = False
        log_file = config.run_dir / "logs" / f"{name}.jsonl"
        # group commit, faults, ids, ping/status: the host's (nodes.host); sockets and clock: ours
        self.host = NodeHost(name, wiring.core,
                             logs.file_log(name, log_file, config.settings.console),
                             node_seed(config.settings.seed, name), wiring.executors, wiring.sync, wiring.deferred,
                             wiring.stats, write=self._write, facts=lambda: {"pid": os.getpid()},
                             notes=wiring.notes)
        self.log = self.host.log
        if self.host.nodelog.sinks.json_file.created:
            self.log.info(logs.CREATED)
        self._nodelog = self.host.nodelog
        # ROUTER identities that sent a batch: nodes, which take their replies in batches too. A
        # client that sends one frame at a time (the CLI, a test) gets one frame at a time.
        self._batching_peers: set[bytes] = set()
        self.ctx = zmq.Context.instance()
        self.security = Security(config.run_dir, config.settings.insecure)
        self.auth = self.security.authenticator(self.ctx)
        self.poller = zmq.Poller()
        self.router = self._server(zmq.ROUTER, config.endpoint(name))
        self.monitors = [self.router.get_monitor_socket(REFUSALS)]
        self.dealers: dict[str, zmq.Socket] = {}
        self.pub = None
        if wiring.publish:
            self.pub = self._server(zmq.PUB, config.endpoint(name, "pub"))
            self.monitors.append(self.pub.get_monitor_socket(REFUSALS))
        for mon in self.monitors:
            self.poller.register(mon, zmq.POLLIN)
        self.sub = None
        if wiring.subscribe_to:
            self.sub = self.ctx.socket(zmq.SUB)
            self.sub.linger = 0
            self.sub.maxmsgsize = 2 * MAX_FRAME_BYTES
            self.security.client(self.sub)
            self.sub.setsockopt(zmq.SUBSCRIBE, b"")
            self.sub.connect(config.endpoint(wiring.subscribe_to, "pub"))
            self.poller.register(self.sub, zmq.POLLIN)
        if config.settings.insecure:
            self.log.warning("security.off", reason="cluster started with --insecure: no CURVE, no ZAP, anyone may talk")

    def _server(self, kind: int, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        # frames between the decoder's limit and this one get an error reply; bigger ones are
        # refused by the socket itself before they take memory
        sock.maxmsgsize = 2 * MAX_FRAME_BYTES
        self.security.server(sock)
        bind(sock, self.name, endpoint)
        if kind == zmq.ROUTER:
            self.poller.register(sock, zmq.POLLIN)
        return sock

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        reason = "signal"
        try:
            self._measure(time.time())
            self.host.start(time.time())
            self.log.info("node.started", pid=os.getpid(), endpoint=self.config.endpoint(self.name))
            self._ship()
            self._loop()
        except NodeStopped as exc:
            reason = str(exc)
            self.host.commit()  # replies that wait for a write never made must not leave
        finally:
            try:
                self._nodelog.flush()  # whatever happened, the lines logged so far reach the file
            except OSError:
                pass
        self.log.info("node.stopped", reason=reason)
        try:
            self._ship()
        except (OSError, NodeStopped):
            pass
        for sock in [*self.monitors, self.router, self.pub, self.sub, *self.dealers.values()]:
            if sock is not None:
                sock.close(0)
        if self.auth is not None:
            self.auth.stop()

    def _loop(self) -> None:
        """Poll, handle, commit, send; until a signal asks to stop."""
        host = self.host
        while not self._stopping:
            wake = host.next_wakeup()
            now = time.time()
            timeout = MAX_POLL_MS if wake is None else max(0, min(MAX_POLL_MS, int((wake - now) * 1000) + 1))
            for sock, _ in self.poller.poll(timeout):
                if sock in self.monitors:
                    self._refused(sock)
                else:
                    self._drain(sock)
            host.flush()
            now = time.time()
            self._measure(now)
            host.due(now)
            self._ship()

    def _refused(self, mon: zmq.Socket) -> None:
        """A handshake that failed: no keys, wrong keys, or not CURVE at all."""
        # libzmq's monitor message (zmq_socket_monitor): a 16-bit event and a 32-bit value, then the
        # endpoint. Read here, not with zmq.utils.monitor, whose import (asyncio) cost every node
        # start 30 ms of its 110.
        frames = mon.recv_multipart()
        event, value = struct.unpack("=HI", frames[0][:6])
        names = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "key not admitted",
                 zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake failed (no or wrong keys)",
                 zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed"}
        endpoint = frames[1] if len(frames) > 1 else b""
        self.log.warning("auth.refused", reason=names.get(event, str(event)), code=value,
                         endpoint=endpoint.decode(errors="replace"))

    def _stop(self, signum: int, _frame: Any) -> None:
        self._stopping = True

    def crash(self) -> None:
        """Die here, as a crash would (a crash point a test arms): the log lines so far are
        written, nothing else of this turn is, no frame of it leaves."""
        try:
            self._nodelog.flush()
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    def _measure(self, now: float) -> None:
        """Hand the core what the probe measures, once a PROBE_S."""
        if self.probe is not None and now >= self._next_probe:
            self._next_probe = now + PROBE_S
            try:
                event = self.probe()
            except OSError as exc:
                self.log.warning("probe.failed", reason=str(exc))
                return
            self.host.event(event, now)

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Make one of the node's writes (state, queue, mailboxes, log). While the disk is full
        it waits and tries again: a full disk stalls a node, it does not crash it, and nothing
        that waits for the write (a reply, a frame, an acknowledgement) leaves before it is made."""
        while True:
            try:
                result = fn(*args)
            except OSError as exc:
                if exc.errno not in DISK_FULL:
                    raise
                if not self._disk_waiting:
                    self._disk_waiting = True
                    self.log.warning("disk.full", reason=exc.strerror, waiting="until the disk has room")
                    self._nodelog.sinks.console.flush()
                if self._stopping:
                    raise NodeStopped("stopped while the disk was full") from None
                time.sleep(DISK_RETRY_S)
                continue
            if self._disk_waiting:
                self._disk_waiting = False
                self.log.warning("disk.room", reason="writes succeed again")
            return result

    def _drain(self, sock: zmq.Socket) -> None:
        """Take what waits on `sock`, up to about 1,000 frames, so a busy socket cannot starve the timers."""
        frames = 0
        while frames < 1000:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            frames += self._on_request(parts) if sock is self.router else self._on_other(sock, parts)

    def _on_request(self, parts: list[bytes]) -> int:
        """Handle one message on the ROUTER; returns how many frames it held."""
        if len(parts) != 2:
            self.log.warning("frame.rejected", reason=f"expected 1 frame part, got {len(parts) - 1}")
            if len(parts) >= 2:
                self.host.refuse(parts[0], "", f"expected 1 frame part, got {len(parts) - 1}")
            return 1
        peer, data = parts
        try:
            frames = decode_message(data)
        except ProtocolError as exc:
            self.log.warning("frame.rejected", reason=str(exc), size=len(data))
            self.host.refuse(peer, exc.frame_id or "", str(exc))
            return 1
        if len(frames) > 1:
            self._batching_peers.add(peer)
        for frame in frames:
            self.host.request(peer, frame, time.time())
        return len(frames)

    def _on_other(self, sock: zmq.Socket, parts: list[bytes]) -> int:
        """Handle one message on a DEALER (answers) or the SUB (the feed); returns its frame count."""
        try:
            frames = decode_message(parts[-1])
        except ProtocolError as exc:
            self.log.warning("frame.rejected", reason=str(exc), via="sub" if sock is self.sub else "dealer")
            return 1
        for frame in frames:
            if sock is self.sub:
                self.host.feed(frame, time.time())
            else:
                self.host.response(frame, time.time())
        return len(frames)

    # --- sending ----------------------------------------------------------------------------

    def _dealer(self, to: str) -> zmq.Socket | None:
        sock = self.dealers.get(to)
        if sock is None:
            try:
                endpoint = self.config.endpoint(to)
            except KeyError as exc:
                self.log.error("send.unknown_node", to=to, reason=str(exc))
                return None
            # a peer that is down must not make this node block: queue a bounded amount, then drop
            sock = self.security.dealer(self.ctx, endpoint, sndhwm=10000)
            self.poller.register(sock, zmq.POLLIN)
            self.dealers[to] = sock
        return sock

    def _ship(self) -> None:
        """End of a loop turn: the host writes the log lines, then the frames are sent. A node
        killed in between has logged what it did but told nobody, never the other way round."""
        outbox: list[tuple[zmq.Socket, list[bytes]]] = []
        for out in self.host.commit():
            data = encode(out.frame)
            if out.kind == "send":
                sock = self._dealer(out.to)
                if sock is not None:
                    outbox.append((sock, [data]))
            elif out.kind == "reply":
                outbox.append((self.router, [out.to, data]))
            else:
                outbox.append((self.pub, [data]))
        more = zmq.SNDMORE | zmq.NOBLOCK
        for sock, parts in self._batched(outbox) if len(outbox) > 1 else outbox:
            try:
                # send_multipart's loop, without its checks of each part: 4.1 against 6.7 us a reply
                if len(parts) == 2:  # a reply: the requester's identity, then the frame
                    sock.send(parts[0], more)
                sock.send(parts[-1], zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # a full queue to a dead peer, or an unknown ROUTER identity
                self.log.warning("send.dropped", reason=str(exc))

    def _batched(self, outbox: list[tuple[zmq.Socket, list[bytes]]]) -> list[tuple[zmq.Socket, list[bytes]]]:
        """The turn's frames for one peer node leave together, as batches (protocol.frame), in the
        order they were made; ZeroMQ keeps that order on each link, so the peer sees the same
        sequence it would have seen frame by frame. Frames for anyone else leave as they are."""
        groups: dict[tuple[zmq.Socket, bytes | None], list[bytes]] = {}
        out = []
        for sock, parts in outbox:
            if sock is self.pub or (sock is self.router and parts[0] not in self._batching_peers):
                out.append((sock, parts))
            else:  # a DEALER (its peer is a node), or a node that sent this one a batch
                groups.setdefault((sock, parts[0] if sock is self.router else None), []).append(parts[-1])
        for (sock, peer), payloads in groups.items():
            chunks: list[list[bytes]] = [[]]
            size = 0
            for data in payloads:  # cut at MAX_BATCH_FRAMES frames or BATCH_BYTES
                if chunks[-1] and (len(chunks[-1]) == MAX_BATCH_FRAMES or size + len(data) > BATCH_BYTES):
                    chunks.append([])
                    size = 0
                chunks[-1].append(data)
                size += len(data)
            for chunk in chunks:
                data = chunk[0] if len(chunk) == 1 else batch(chunk)
                out.append((sock, [data] if peer is None else [peer, data]))
        return out


def node_args(kind: str) -> argparse.Namespace:
    """Command line of every node process: `python -m nodes.<kind> --run-dir D --name N`."""
    parser = argparse.ArgumentParser(prog=f"python -m nodes.{kind}", description=f"run one xcon {kind} node")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    os.umask(0o077)  # mail, queues, journal, logs and keys: the owner's alone
    try:
        args.config = ClusterConfig.load(args.run_dir)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{kind}: cannot read {args.run_dir}/cluster.json: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.name not in args.config.nodes:
        print(f"{kind}: no node named '{args.name}' in {args.run_dir}/cluster.json", file=sys.stderr)
        sys.exit(2)
    return args


@contextmanager
def refusing_damage(name: str) -> Iterator[None]:
    """A node that finds a file it needs missing or unreadable (nodes.records.DamagedFile) says so
    in one line and exits 2, starting nothing over it: `xcon up` shows that line."""
    try:
        yield
    except DamagedFile as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)


def boot_id() -> str:
    """A short id for this run of a node, so request ids never repeat across restarts."""
    return secrets.token_hex(3)
