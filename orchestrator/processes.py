"""The node processes of a cluster on this machine: start one, signal one, see whether it runs.

The orchestrator node uses these to carry out faults (pause, kill, restart) and the launcher
(orchestrator.cluster) to start a cluster; neither needs the other for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from nodes.config import ClusterConfig, open_append
from nodes.logs import log_lost
from nodes.records import absent

from .netns import exec_prefix

MODULES = {"directory": "nodes.directory", "store": "nodes.store", "mta": "nodes.mta", "orchestrator": "orchestrator",
           "ims": "nodes.ims", "imap": "nodes.imap", "internet": "nodes.internet"}


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first, then ppid, ... utime at
    11, stime at 12), or None for a process that is gone. The name may hold ") ", hence rsplit."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


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
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z" and str(run_dir).encode() in cmdline


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


def spawn_node(config: ClusterConfig, name: str, save: bool = True, again: bool = True) -> subprocess.Popen:
    """Start one node's process (in its own session) and record its pid in cluster.json. `again`:
    the node ran in this run-dir before (a restart, a resumed cluster; not a new cluster's first
    start); if its log is gone or empty, the new one says so in its first line
    (nodes.logs.log_lost): a verdict never rests on a log made anew."""
    node = config.nodes[name]
    log = config.run_dir / "logs" / f"{name}.jsonl"
    if again and absent(log):
        log_lost(log, name, "missing or empty when the node was started again")
    console = open_append(config.run_dir / "logs" / f"{name}.console")
    try:
        # on a cluster of namespaces, `ip netns exec` enters the node's host and execs Python: the
        # pid is the node's own
        host = exec_prefix(config.network, name)
        proc = subprocess.Popen(
            [*host, sys.executable, "-m", MODULES[node["kind"]], "--run-dir", str(config.run_dir), "--name", name],
            stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        os.close(console)
    node["pid"] = proc.pid
    if save:
        config.save()
    return proc


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
