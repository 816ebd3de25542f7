"""The suite's fork server for CLI calls (tests/cli_server.py) gives what a call from scratch gives:
the exit code, stdout and stderr, with the caller's arguments, environment, directory and stdin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .. import cli_server

CALLS = [
    ("--version", "--json"),
    ("send", "--bogus"),  # a usage error: exit 2, one line on stderr
    ("status",),  # no cluster in the directory given by the environment: exit 3
    ("user", "add", "--help"),  # help wrapped at the caller's COLUMNS
    ("serve", "--port", "x"),
]


def from_scratch(args: tuple[str, ...], env: dict[str, str], cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args", CALLS, ids=" ".join)
def test_a_forked_call_gives_what_a_call_from_scratch_gives(args, tmp_path, monkeypatch):
    env = {**os.environ, "COLUMNS": "60", "XCON_RUN_DIR": str(tmp_path / "nothing here")}
    monkeypatch.chdir(tmp_path)
    forked = cli_server.call(list(args), env, None, 60)
    scratch = from_scratch(args, env, str(tmp_path))
    assert (forked.returncode, forked.stdout, forked.stderr) == (scratch.returncode, scratch.stdout, scratch.stderr)
    assert forked.stdout or forked.stderr


def test_a_forked_call_reads_its_stdin_and_is_killed_at_its_timeout(tmp_path):
    env = {**os.environ, "XCON_RUN_DIR": str(tmp_path)}
    args = ("send", "--from", "alice", "--to", "bob", "--body", "-")  # a body that is not UTF-8: exit 2
    forked = cli_server.call(list(args), env, b"\xff\xfe", 60)
    scratch = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, env=env,
                             input=b"\xff\xfe")
    assert forked.returncode == scratch.returncode == 2, forked.stderr
    assert forked.stderr == scratch.stderr
    with pytest.raises(subprocess.TimeoutExpired):  # a server runs until it is stopped
        cli_server.call(["serve", "--port", "0"], env, None, 1.0)
