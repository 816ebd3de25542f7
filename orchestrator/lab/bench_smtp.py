"""`xcon bench`'s SMTP-in row: Postfix's own load generator, smtp-source, sends the same messages
over the same number of parallel sessions to an IMS (nodes.ims: SMTP -> MTA -> store's Maildir)
and to Postfix -> Postfix -> Maildir (a relay instance that hands every message to a second
instance, which delivers it with virtual(8)), in the same run. Each is timed from the first
connection to the last message in its Maildir.

The two Postfix instances are xcon's own (nodes.postfix: configs of their own under /tmp, in the
foreground as children of this process), stopped and deleted after: the system's Postfix, if any,
is not touched. Needs Debian's postfix (smtp-source
comes with it); without it the row is left out, and the bench says so.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from nodes import postfix
from nodes.edge import runtime_dir
from orchestrator import cluster as cl
from orchestrator.cluster.rundir import free_ports

SMTP_SOURCE = "/usr/sbin/smtp-source"
SESSIONS = 10


def available() -> bool:
    return postfix.available() and Path(SMTP_SOURCE).exists()


def _count(folder: Path) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def _blast(port: int, rcpt: str, n: int, size: int, arrived: Path, timeout: float) -> float:
    """smtp-source's n messages over SESSIONS sessions; seconds until the n-th is in `arrived`."""
    t0 = time.perf_counter()
    subprocess.run([SMTP_SOURCE, "-s", str(SESSIONS), "-m", str(n), "-l", str(size), "-f", "ann@outside.test",
                    "-t", rcpt, f"127.0.0.1:{port}"], check=True, capture_output=True, timeout=timeout)
    while _count(arrived) < n:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{_count(arrived)} of {n} messages arrived in {timeout:g} s ({arrived})")
        time.sleep(0.01)
    return time.perf_counter() - t0


def smtp_rows(root: Path, settings: Any, quick: bool, say: Callable[[str], None], row: Callable[..., Any]) -> list:
    if not available():
        say("SMTP in: left out, needs Debian's postfix (smtp-source and the peer)")
        return []
    n, size = (100, 200) if quick else (5000, 200)
    say(f"SMTP in: {n} messages by smtp-source, {SESSIONS} sessions, to an IMS")
    cluster = cl.start(root / "smtp", replace(settings, smtp=True), fresh=True)
    try:
        cluster.add_user("alice", "ex1")
        port = int(cluster.config.endpoint("ims.ex1", "smtp").rpartition(":")[2])
        xcon_s = _blast(port, "alice@xcon.test", n, size, cluster.config.run_dir / "stores/ex1/alice/new", 600)
    finally:
        cluster.close()
        cl.stop(root / "smtp")
    say("SMTP in: the same to Postfix -> Postfix -> Maildir")
    to_port, relay_port = free_ports(2)
    peer = postfix.Postfix(runtime_dir(root, "pf-b"), "127.0.0.1", to_port)
    try:
        relay = postfix.Postfix(runtime_dir(root, "pf-a"), "127.0.0.1", relay_port, relay_to=f"127.0.0.1:{to_port}")
        try:
            postfix_s = _blast(relay_port, "box@peer.test", n, size, peer.home / "mail/all/new", 600)
        finally:
            relay.stop()
    finally:
        peer.stop()
    return [row("SMTP in (smtp-source)", f"delivered msgs/s, {SESSIONS} sessions", n / xcon_s, n / postfix_s,
                "msgs/s", f"IMS -> MTA -> store vs Postfix -> Postfix -> Maildir (virtual), {n} messages of "
                          f"{size} B, each session a new connection, same run")]
