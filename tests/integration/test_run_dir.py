"""The run-dir is never wiped behind the user's back: a stopped cluster is resumed, --fresh
deletes only what xcon made, a directory it did not make is refused, two `xcon up` do not race,
and `xcon down` stops every node even without a readable cluster.json."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodes.config import Settings
from orchestrator import cluster as cl
from orchestrator.cluster import rundir
from orchestrator.cluster.rundir import node_processes
from orchestrator.processes import FORK_SERVER

from ..conftest import xcon, xcon_json
from .test_cli_errors import one_line_error


def kill_every_node(run):
    """A host crash: every node dies at once, nothing is stopped cleanly."""
    for pid in node_processes(run):
        os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while node_processes(run) and time.time() < deadline:
        time.sleep(0.05)


def test_a_cluster_whose_nodes_all_died_is_resumed_with_the_mail_it_had_accepted(tmp_path):
    run = tmp_path / "run"
    xcon("up", "--mta-build", "sp4", "--replication-lag-ms", "0", "--replication-jitter-ms", "0",
         run_dir=run, check=True)
    try:
        xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
        xcon("user", "add", "bob", "--server", "ex2", run_dir=run, check=True)
        xcon("kill", "store.ex2", run_dir=run, check=True)  # bob's mail waits in mta.ex2's queue
        waiting = xcon("send", "--from", "alice", "--to", "bob", "--subject", "accepted", run_dir=run,
                       check=True).stdout.strip()
        kill_every_node(run)
        hint = xcon("restart", "mta.ex1", run_dir=run)
        one_line_error(hint, 3, "`xcon up` resumes it")

        up = xcon("up", run_dir=run, check=True)
        assert "cluster resumed" in up.stdout and "taken up from its queue" in up.stdout, up.stdout
        assert "directory at USN 2, 2 user(s)" in up.stdout
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        assert [m["msg_id"] for m in xcon_json("mailbox", "bob", run_dir=run)["messages"]] == [waiting]
        report = json.loads(xcon("check", "--json", run_dir=run).stdout)
        assert report["ok"] and report["audited"] and report["counts"]["delivered"] == 1, report
        # what holds mail is its owner's alone
        for sub in ("stores", "mta", "orchestrator", "directory", "logs", "keys"):
            for path in [run / sub, *(run / sub).rglob("*")]:
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    finally:
        xcon("down", run_dir=run)


def test_fresh_deletes_only_what_xcon_made_and_a_foreign_directory_is_refused(tmp_path):
    mine = tmp_path / "mine"
    xcon("up", "--insecure", run_dir=mine, check=True)
    try:
        xcon("user", "add", "alice", "--server", "ex1", run_dir=mine, check=True)
        xcon("down", run_dir=mine, check=True)
        (mine / "notes.txt").write_text("the user's own file")
        xcon("up", "--insecure", "--fresh", run_dir=mine, check=True)
        assert xcon_json("status", run_dir=mine)["nodes"]["directory"]["status"]["recipients"] == 0
        assert (mine / "notes.txt").read_text() == "the user's own file", "--fresh deletes only what xcon made"
        one_line_error(xcon("up", run_dir=mine), 2, "already running")
    finally:
        xcon("down", run_dir=mine)

    theirs = tmp_path / "theirs"
    for name in ("logs", "keys", "stores"):  # folders that only happen to have xcon's names
        (theirs / name).mkdir(parents=True)
        (theirs / name / "precious").write_text("keep me")
    for args in (["up"], ["up", "--fresh"]):
        one_line_error(xcon(*args, run_dir=theirs), 2, "xcon did not make")
    assert all((theirs / name / "precious").read_text() == "keep me" for name in ("logs", "keys", "stores"))
    assert sorted(p.name for p in theirs.iterdir()) == ["keys", "logs", "stores"], "nothing added either"
    one_line_error(xcon("scenario", "q248839", "--mta-build", "legacy", "--sim", run_dir=theirs), 2, "xcon did not make")


def test_a_run_dir_a_scenario_wrote_in_takes_a_cluster_afterwards(tmp_path):
    """docs/EXCHANGE55.md runs a scenario, then `xcon up`, in one directory: the scenario's folder
    must not make the run-dir look like someone else's (it once did: "holds files xcon did not make")."""
    run = tmp_path / "run"
    xcon("scenario", "q248839", "--mta-build", "legacy", "--sim", run_dir=run, check=True)
    xcon("up", "--insecure", run_dir=run, check=True)
    try:
        assert (run / "scenario-sim").is_dir() and xcon_json("status", run_dir=run)["nodes"]["directory"]["alive"]
    finally:
        xcon("down", run_dir=run, check=True)


def test_two_ups_at_once_start_one_cluster_and_down_needs_no_cluster_json(tmp_path):
    """A user's `xcon up`s, with nodes started as a user's are, each a new Python (not forked from
    the suite's server): found by their consoles when cluster.json does not read."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != FORK_SERVER}
    ups = [subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "up", "--insecure", "--run-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in ups]
    try:
        assert sorted(code for code, _ in results) == [0, 2], results
        assert "already running" in next(err for code, err in results if code == 2)
        assert len(node_processes(run)) == 6
        assert all(b"--name" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in node_processes(run))
        (run / "cluster.json").write_text("{ this is not json")
        down = xcon("down", run_dir=run, check=True)
        assert "stopped 6 node(s)" in down.stdout and node_processes(run) == {}
        one_line_error(xcon("down", run_dir=run), 3, "unreadable")
    finally:
        for pid in node_processes(run):  # whatever the assertions above left running
            subprocess.run(["kill", "-9", str(pid)])


def test_a_port_taken_between_choosing_it_and_binding_it_is_replaced(tmp_path, monkeypatch):
    """free_ports finds ports free, but another program may take one before a node binds it."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real, calls = rundir.free_ports, []

    def racy(n):
        calls.append(n)
        ports = real(n)
        return [taken, *ports[1:]] if len(calls) == 1 else ports

    monkeypatch.setattr(rundir, "free_ports", racy)
    run = tmp_path / "run"
    try:
        cluster = cl.start(run, Settings(insecure=True))
        cluster.close()
        endpoints = [e for n in cluster.config.nodes.values() for e in n["endpoints"].values()]
        assert len(calls) == 2 and f"tcp://127.0.0.1:{taken}" not in endpoints
        assert "cannot bind" in (run / "logs" / "directory.console").read_text()
        # stopped, the port of one node taken meanwhile: the resume moves that endpoint
        cl.stop(run)
        port = int(cluster.config.nodes["mta.ex1"]["endpoints"]["router"].rsplit(":", 1)[1])
        with socket.socket() as other:
            other.bind(("127.0.0.1", port))
            other.listen()
            resumed = cl.start(run, Settings(insecure=True))
            resumed.close()
        assert resumed.resumed["moved_endpoints"] == 1
        assert resumed.config.nodes["mta.ex1"]["endpoints"]["router"] != f"tcp://127.0.0.1:{port}"
    finally:
        squatter.close()
        if run.exists():
            cl.stop(run)


@pytest.mark.parametrize("which", ["router", "smtp"])
def test_an_ims_whose_port_was_taken_says_so_in_one_line_and_the_start_moves_it(tmp_path, monkeypatch, which):
    """The IMS binds its own sockets (nodes/edge.py, nodes/ims/node.py), not the host runtime's:
    a port taken there, its ZeroMQ one or its SMTP listener's, is the same one line and the same
    second start, not a traceback (or a clean exit) that ends the start."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = f"{'tcp://' if which == 'router' else ''}127.0.0.1:{squatter.getsockname()[1]}"
    real = rundir.fresh_config

    def racy(*args, **kwargs):
        config = real(*args, **kwargs)
        config.nodes["ims.ex1"]["endpoints"][which] = taken
        return config

    monkeypatch.setattr(rundir, "fresh_config", racy)
    run = tmp_path / "run"
    try:
        cluster = cl.start(run, Settings(insecure=True, smtp=True))
        cluster.close()
        assert cluster.config.endpoint("ims.ex1", which) != taken
        assert f"ims.ex1: {'' if which == 'router' else 'RuntimeError: '}cannot bind {taken}: " in \
            (run / "logs" / "ims.ex1.console").read_text()
    finally:
        squatter.close()
        if run.exists():
            cl.stop(run)
