"""The suite's fork server for CLI calls (tests/cli_server.py) gives what a call from scratch gives:
the exit code, stdout and stderr, with the caller's arguments, environment, directory and stdin."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.processes import proc_stat

from .. import cli_server
from ..conftest import patience

CALLS = [
    ("--version", "--json"),
    ("send", "--bogus"),  # a usage error: exit 2, one line on stderr
    ("status",),  # no cluster in the default run-dir, .xcon in the caller's directory: exit 3
    ("user", "add", "--help"),  # click's help wrapped at the caller's COLUMNS
    ("scenario", "list"),  # the CLI's own console (common.out) wrapped at the caller's COLUMNS
    ("serve", "--port", "x"),
]


def from_scratch(args: tuple[str, ...], env: dict[str, str], cwd: str | None = None,
                 stdin: bytes | None = None) -> subprocess.CompletedProcess:
    given = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}  # as cli_server.call
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, env=env, cwd=cwd,
                          **given)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the server's: a call's waiter, which ends with its call)."""
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and (proc_stat(int(p.name)) or [None, None])[1] == str(pid)]


@pytest.mark.parametrize("args", CALLS, ids=" ".join)
def test_a_forked_call_gives_what_a_call_from_scratch_gives(args, tmp_path, monkeypatch):
    env = {**{k: v for k, v in os.environ.items() if k != "XCON_RUN_DIR"}, "COLUMNS": "60"}
    monkeypatch.chdir(tmp_path)
    forked = cli_server.call(list(args), env, None, 60)
    scratch = from_scratch(args, env, str(tmp_path))
    assert (forked.returncode, forked.stdout, forked.stderr) == (scratch.returncode, scratch.stdout, scratch.stderr)
    assert forked.stdout or forked.stderr


def test_a_forked_call_reads_its_stdin_and_is_killed_at_its_timeout(tmp_path):
    env = {**os.environ, "XCON_RUN_DIR": str(tmp_path)}
    args = ("send", "--from", "alice", "--to", "bob", "--body", "-")  # a body that is not UTF-8: exit 2
    forked = cli_server.call(list(args), env, b"\xff\xfe", 60)
    scratch = from_scratch(args, env, stdin=b"\xff\xfe")
    assert forked.returncode == scratch.returncode == 2, forked.stderr
    assert forked.stderr == scratch.stderr
    with pytest.raises(subprocess.TimeoutExpired):  # a server runs until it is stopped
        cli_server.call(["serve", "--port", "0"], env, None, 1.0)
    # killed, not left running: its waiter saw it end, and ended too
    server, deadline = cli_server._server.pid, time.time() + patience(10)
    while children(server):
        assert time.time() < deadline, f"the timed-out call still runs under the fork server {server}"
        time.sleep(0.05)
