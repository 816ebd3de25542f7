"""The node processes of a cluster on this machine: start one, signal one, see whether it runs.

The orchestrator node uses these to carry out faults (pause, kill, restart) and the launcher
(orchestrator.cluster) to start a cluster; neither needs the other for it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from nodes.config import ClusterConfig, open_append
from nodes.logs import log_lost
from nodes.records import absent

from .netns import exec_prefix, namespace

MODULES = {"directory": "nodes.directory", "store": "nodes.store", "mta": "nodes.mta", "orchestrator": "orchestrator",
           "ims": "nodes.ims", "imap": "nodes.imap", "internet": "nodes.internet"}
# the socket of a server that forks a process with its imports made, where a node starts from
# instead of from scratch (the suite's: tests/cli_server.py); unset, every node is a new Python
FORK_SERVER = "XCON_FORK_SERVER"


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first, then ppid, ... utime at
    11, stime at 12), or None for a process that is gone. The name may hold ") ", hence rsplit."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def node_identity(pid: int) -> tuple[str, Path] | None:
    """The node a live process is (its name and run-dir), or None for a process that is no node.
    A node is known by its standard output, <run-dir>/logs/<name>.console, as spawn_node and
    deploy's units start every node (a command line would not do: a node forked from a server
    that made its imports already, see fork_call, has the server's)."""
    try:
        console = Path(os.readlink(f"/proc/{pid}/fd/1").removesuffix(" (deleted)"))
    except OSError:
        return None
    # a daemon a node runs writes to a console of its own (logs/dovecot.ex1.console): no node's
    if console.suffix != ".console" or console.parent.name != "logs" or console.stem.partition(".")[0] not in MODULES:
        return None
    stat = proc_stat(pid)
    return (console.stem, console.parent.parent) if stat is not None and stat[0] != "Z" else None


def pid_alive(pid: int | None, run_dir: Path | None = None) -> bool:
    """True if `pid` runs and (when run_dir is given) is a node of that run directory."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if run_dir is None:
        return True
    found = node_identity(pid)
    return found is not None and found[1] == run_dir


def reap() -> None:
    """Collect exited children of this process (nodes it started): they are gone, not zombies."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def wait_gone(pids: Iterable[int], run_dir: Path, seconds: float) -> bool:
    """Wait up to `seconds` until none of `pids` is a live node of `run_dir`; True if none is."""
    deadline = time.time() + seconds
    while any(pid_alive(p, run_dir) for p in pids):
        if time.time() >= deadline:
            return False
        reap()
        time.sleep(0.01)
    return True


def spawn_node(config: ClusterConfig, name: str, save: bool = True, again: bool = True
               ) -> subprocess.Popen | Forked:
    """Start one node's process (in its own session) and record its pid in cluster.json. `again`:
    the node ran in this run-dir before (a restart, a resumed cluster; not a new cluster's first
    start); if its log is gone or empty, the new one says so in its first line
    (nodes.logs.log_lost): a verdict never rests on a log made anew. With FORK_SERVER set, a
    node is forked from that server (`python -m <module>` run in a process whose imports are
    made: a sixth of the CPU of a start); from scratch when no server answers there."""
    node = config.nodes[name]
    log = config.run_dir / "logs" / f"{name}.jsonl"
    if again and absent(log):
        log_lost(log, name, "missing or empty when the node was started again")
    console = open_append(config.run_dir / "logs" / f"{name}.console")
    module, args = MODULES[node["kind"]], ["--run-dir", str(config.run_dir), "--name", name]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc: subprocess.Popen | Forked | None = None
    try:
        if os.environ.get(FORK_SERVER):
            try:
                with open(os.devnull, "rb") as null:
                    proc = fork_call(os.environ[FORK_SERVER], {"module": module, "argv": args, "env": env,
                                                               "cwd": os.getcwd(), "session": True,
                                                               "netns": namespace(config.network, name)},
                                     (null.fileno(), console, console))
            except (OSError, ValueError):
                proc = None  # no server there (any more): from scratch
        if proc is None:
            # on a cluster of namespaces, `ip netns exec` enters the node's host and execs Python
            # (the pid is the node's own); a fork server's child enters it itself (netns.enter)
            host = exec_prefix(config.network, name)
            proc = subprocess.Popen([*host, sys.executable, "-m", module, *args], stdout=console,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    finally:
        os.close(console)
    node["pid"] = proc.pid
    if save:
        config.save()
    return proc


class Forked:
    """A process a fork server started, as far as Popen's pid, poll, wait and returncode go: the
    server's waiter for it sends its exit status (subprocess's: -N for a signal) when it ends."""

    def __init__(self, conn: socket.socket, replies, pid: int):
        self.pid, self.returncode = pid, None
        self._conn, self._replies = conn, replies

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self.wait()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status; TimeoutError after `timeout` seconds (it then runs on)."""
        if self.returncode is None:
            self._conn.settimeout(timeout)
            line = self._replies.readline()
            # no line: the waiter itself was killed, and with it what the process ended with
            self.returncode = json.loads(line)["status"] if line else -9
            self.close()
        return self.returncode

    def close(self) -> None:
        self._replies.close()
        self._conn.close()


def fork_call(path: str, request: dict, fds: tuple[int, int, int]) -> Forked:
    """Have the fork server at `path` run `python -m <request's module>` with its argv, env and
    cwd (setsid() if it asks for a session, in the network namespace it names as `netns`), `fds`
    as the standard streams. The protocol: the JSON request with the three descriptors beside
    it; the replies, a line each, {"pid"} and then {"status"} when the process ends. OSError or
    ValueError when no server answers."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        socket.send_fds(conn, [json.dumps(request).encode()], list(fds))
        replies = conn.makefile("rb")
        return Forked(conn, replies, json.loads(replies.readline())["pid"])
    except BaseException:
        conn.close()
        raise


MIN_DAMAGE_BYTES = 64  # a log shorter than this has no middle to damage


def flip_byte(path: Path, where: float, run_dir: Path) -> dict | None:
    """Flip one bit of the byte at `where` (a fraction of the file's length), made durable: the
    fault `corrupt`. None when the file is missing or too short."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < MIN_DAMAGE_BYTES:
            return None
        at = int(size * where)
        byte = os.pread(fd, 1, at)
        os.pwrite(fd, bytes([byte[0] ^ 0x20]), at)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"file": str(path.relative_to(run_dir)), "offset": at, "size": size}
