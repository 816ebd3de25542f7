"""A full disk on real processes: the MTA refuses new mail, keeps what it accepted, and carries on
when space returns; a disk filled to the last byte stalls the nodes without a crash or a loss.
The run-dir is a small tmpfs of its own (root only: skipped elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from nodes.config import ClusterConfig
from orchestrator.cluster.client import Client, ClusterError

from ..conftest import wait_for_event, xcon, xcon_json
from .test_cli_errors import one_line_error

MB = 1024 * 1024


def fill(path, leave: int) -> None:
    """Write a filler file until the filesystem has `leave` bytes free (or none)."""
    st = os.statvfs(path.parent)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with open(path, "ab") as f:
        try:
            while size > 0:
                size -= f.write(b"\0" * min(size, MB))
            f.flush()
        except OSError:
            pass  # full


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mount
    (mount / "filler").unlink(missing_ok=True)
    xcon("down", run_dir=mount / "run")
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.long
def test_a_full_disk_refuses_new_mail_and_loses_none(small_disk):
    run, filler = small_disk / "run", small_disk / "filler"
    xcon("up", "--mta-build", "sp4", "--replication-lag-ms", "0", "--replication-jitter-ms", "0", "--retry-ms", "300",
         "--min-free-mb", "16", run_dir=run, check=True)
    xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
    xcon("user", "add", "bob", "--server", "ex2", run_dir=run, check=True)
    xcon("kill", "store.ex2", run_dir=run, check=True)
    held = xcon("send", "--from", "alice", "--to", "bob", "--subject", "held", run_dir=run, check=True).stdout.strip()

    fill(filler, leave=8 * MB)  # below the floor, with room left for the logs
    wait_for_event(run, event="storage.low", node="mta.ex1")
    one_line_error(xcon("send", "--from", "alice", "--to", "bob", run_dir=run), 3, "insufficient storage on mta.ex1")
    xcon("restart", "store.ex2", run_dir=run, check=True)
    wait_for_event(run, event="store.deferred", msg_id=held, mailbox="bob")  # the store keeps its floor too
    assert xcon_json("status", run_dir=run)["nodes"]["mta.ex2"]["status"]["open_pairs"] == 1, "still held"

    filler.unlink()
    xcon("wait", "--timeout", "30", run_dir=run, check=True)
    assert [m["msg_id"] for m in xcon_json("mailbox", "bob", run_dir=run)["messages"]] == [held]

    # to the last byte: a node stalls at its next write (a log line at least), and crashes not
    fill(filler, leave=0)
    xcon("send", "--from", "alice", "--to", "bob", "--subject", "into a full disk", run_dir=run)
    with Client(ClusterConfig.load(run)) as client:
        for lookups in range(1, 1000):  # each is a log line; the log file's last page fills, then the disk is full
            try:
                client.request("directory", "dir.lookup", {"alias": "alice"}, timeout=1.0)
            except ClusterError:
                break  # the directory waits for room before it answers
        assert lookups < 1000, "the directory never stalled"
    filler.unlink()
    xcon("wait", "--timeout", "30", run_dir=run, check=True)
    status = xcon_json("status", run_dir=run)
    assert all(n["alive"] for n in status["nodes"].values()), status
    report = json.loads(xcon("check", "--json", run_dir=run).stdout)
    assert report["ok"] and report["counts"]["lost"] == 0, report
    consoles = "".join(p.read_text(errors="replace") for p in (run / "logs").glob("*.console"))
    assert "Traceback" not in consoles
    assert any(json.loads(line)["event"] == "disk.full"
               for p in (run / "logs").glob("*.jsonl") for line in p.read_text().splitlines()), "the stall was logged"
