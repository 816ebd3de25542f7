"""Talking to nodes from the CLI, tests and scenarios: one request, one answer, a deadline.

The ZeroMQ guide's Lazy Pirate client: a DEALER per node; if no answer comes in time the
socket is thrown away (so a late answer can't be mistaken for the next one) and the caller
gets a ClusterError it can print as one line.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from nodes.config import ClusterConfig, open_append
from nodes.security import Security
from orchestrator.processes import pid_alive
from protocol import INVALID, NO_MAILBOX, Frame, ProtocolError, decode, encode, hlc


class ClusterError(Exception):
    """What xcon could not do (no cluster, a node that does not answer, a start that failed); the
    CLI prints str(err) as one line and exits 3."""


class Refused(ClusterError):
    """What was asked is at fault (an unknown user, a name taken, a value out of range): asked
    again it is refused again, and nothing was done. The CLI exits 2, as on a bad flag."""


class NoAnswer(ClusterError):
    """The node did not answer in time: what was asked may or may not have been done."""


class TimedOut(ClusterError):
    """What a wait waited for did not come in its time (Cluster.until)."""


def dealer(config: ClusterConfig, node: str) -> zmq.Socket:
    """A DEALER connected to `node` with the cluster's keys (for load and fuzz generators)."""
    return Security(config.run_dir, config.settings.insecure).dealer(zmq.Context.instance(), config.endpoint(node))


class Client:
    def __init__(self, config: ClusterConfig, timeout: float = 5.0):
        self.config = config
        self.timeout = timeout
        self.ctx = zmq.Context.instance()
        self._socks: dict[str, zmq.Socket] = {}
        try:
            self.security = Security(config.run_dir, config.settings.insecure)
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot read the cluster's keys: {exc}") from None
        self._src = f"cli.{os.getpid()}"
        self._clock = hlc.Clock()  # a client's frames carry a hybrid logical clock, as a node's

    def request(self, node: str, type_: str, body: dict[str, Any] | None = None, timeout: float | None = None,
                trace: str | None = None) -> Frame:
        """Send one request and return the answer; an `error` answer raises ClusterError(reason)."""
        frame = self.ask(node, type_, body, timeout, trace)
        if frame.type == "error":
            raise (Refused if frame.body.code in (INVALID, NO_MAILBOX) else ClusterError)(frame.body.reason)
        return frame

    def ask(self, node: str, type_: str, body: dict[str, Any] | None = None, timeout: float | None = None,
            trace: str | None = None) -> Frame:
        """Like request, but hands back an `error` answer instead of raising."""
        if node not in self.config.nodes:
            raise Refused(f"no node '{node}' in this cluster (nodes: {', '.join(sorted(self.config.nodes))})")
        sock = self._socket(node)
        rid = uuid.uuid4().hex
        sock.send(encode(Frame(type_, rid, self._src, self._clock.tick(time.time()), body or {}, trace)))
        deadline = (timeout if timeout is not None else self.timeout) * 1000
        while deadline > 0:
            if not sock.poll(min(deadline, 100)):
                deadline -= 100
                continue
            try:
                reply = decode(sock.recv())
            except ProtocolError as exc:
                raise ClusterError(f"{node} sent a malformed answer: {exc}") from None
            self._clock.receive(reply.clock, time.time())
            # one request at a time per socket, and a socket is dropped after a timeout: an error
            # that names no frame (the node could not read ours) is the answer to this one
            if reply.re == rid or (reply.type == "error" and not reply.re):
                return reply
        self._drop(node)
        raise NoAnswer(f"{node} did not answer within {timeout or self.timeout:g}s (is the cluster up? try `xcon status`)")

    def _socket(self, node: str) -> zmq.Socket:
        sock = self._socks.get(node)
        if sock is None:
            sock = self._socks[node] = self.security.dealer(self.ctx, self.config.endpoint(node))
        return sock

    def _drop(self, node: str) -> None:
        sock = self._socks.pop(node, None)
        if sock is not None:
            sock.close(0)

    def close(self) -> None:
        for node in list(self._socks):
            self._drop(node)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def saved_config(run_dir: Path) -> ClusterConfig:
    """The cluster of run_dir as its cluster.json describes it, running or not; ClusterError
    saying what is wrong (none there, or one that does not read)."""
    run_dir = run_dir.resolve()
    if not (run_dir / "cluster.json").exists():
        raise ClusterError(f"no cluster in {run_dir} (start one with `xcon up`)")
    try:
        return ClusterConfig.load(run_dir)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ClusterError(f"{run_dir}/cluster.json is unreadable: {exc}") from None


def running_config(run_dir: Path) -> ClusterConfig:
    """The cluster of run_dir if any of its nodes runs, else ClusterError saying what to do."""
    run_dir = run_dir.resolve()
    config = saved_config(run_dir)
    if config.deployed:
        return config  # its nodes run on other machines (xcon deploy): they answer, or say they do not
    if not any(pid_alive(n.get("pid"), run_dir) for n in config.nodes.values()):
        raise ClusterError(f"no cluster is running in {run_dir} (`xcon up` resumes it: every node restarts on "
                           "its own queue, journal, directory and mail)")
    return config


def cli_log(run_dir: Path, event: str, **fields: Any) -> None:
    """A log line from the CLI itself (node "cli"), for what no node can log: the orchestrator's
    own kill and restart, an operator's abort."""
    now = time.time()
    line = {"ts": round(now, 6), "node": "cli", "level": "warning", "event": event, "hlc": hlc.wall(now), **fields}
    with open(open_append(run_dir / "logs" / "cli.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")
