"""A user's mistakes: one clear line on stderr, a non-zero exit, nothing changed, no traceback."""

from __future__ import annotations

import pytest

from ..conftest import xcon, xcon_json


def one_line_error(proc, code, *needles):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_no_cluster_running(tmp_path):
    for args in (["status"], ["send", "--from", "a", "--to", "b"], ["move", "bob", "--to", "ex2"], ["wait"],
                 ["user", "show", "bob"], ["mailbox", "bob"], ["check"], ["logs"], ["show", "m1"]):
        proc = xcon(*args, run_dir=tmp_path / "nothing")
        one_line_error(proc, 3, "xcon: ")  # 3: could not do it
    down = xcon("down", run_dir=tmp_path / "nothing")  # nothing to do is no error (issue 20)
    assert down.returncode == 0 and down.stdout.startswith("nothing to stop") and down.stderr == ""


@pytest.mark.parametrize("args, needle", [
    (["up", "--mta-build", "sp5"], "sp5"),
    (["up", "--servers", "0"], "--servers"),
    (["move", "bob"], "--to"),
    (["frobnicate"], "frobnicate"),
    (["user", "set", "bob"], "nothing to change"),
    (["scenario", "q248839"], "--all"),
    # requests at fault, once "internal error" with exit 3 (issue 34, story 19)
    (["scenario", "q248839", "--case", "nosuch"], "no case 'nosuch'"),
    (["chaos", "--sim", "--dask", "bogus", "--trials", "2"], "'bogus'"),
    (["chaos", "--sim", "--dask", "local:x", "--trials", "2"], "local:N"),
    (["sim", "explore", "--dask", "tcp://127.0.0.1:99999"], "--dask"),
])
def test_bad_flags(tmp_path, args, needle):
    one_line_error(xcon(*args, run_dir=tmp_path), 2, needle)


def test_errors_against_a_running_cluster(tmp_path):
    run = tmp_path / "run"
    xcon("up", "--replication-lag-ms", "0", "--replication-jitter-ms", "0", run_dir=run, check=True)
    try:
        one_line_error(xcon("up", run_dir=run), 2, "already running")
        xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
        one_line_error(xcon("user", "add", "alice", "--server", "ex1", run_dir=run), 2, "already exists")
        one_line_error(xcon("user", "add", "bob", "--server", "ex7", run_dir=run), 2, "unknown server 'ex7'")
        one_line_error(xcon("user", "add", "Bob!", "--server", "ex1", run_dir=run), 2, "not a valid alias")
        one_line_error(xcon("user", "add", "bob", "--server", "ex1", "--alternate", "zed", run_dir=run), 2, "zed")
        one_line_error(xcon("send", "--from", "alice", "--to", "zed", run_dir=run), 2, "unknown user 'zed'")
        one_line_error(xcon("send", "--from", "zed", "--to", "alice", run_dir=run), 2, "unknown user 'zed'")
        one_line_error(xcon("move", "zed", "--to", "ex2", run_dir=run), 2, "unknown user 'zed'")
        one_line_error(xcon("move", "alice", "--to", "ex1", run_dir=run), 2, "already on ex1")
        one_line_error(xcon("move", "alice", "--to", "ex9", run_dir=run), 2, "unknown server 'ex9'")
        one_line_error(xcon("mailbox", "zed", run_dir=run), 2, "unknown user 'zed'")
        one_line_error(xcon("logs", "--msg", "nope", "--until", "mta.deferred", "--timeout", "0.3", run_dir=run), 1,
                       "no event 'mta.deferred' for message nope within 0.3s")
        assert "directory.added" in xcon("logs", "--until", "directory.added", run_dir=run, check=True).stdout
        one_line_error(xcon("logs", "--node", "mta.ex9", run_dir=run), 2, "no node 'mta.ex9' has a log here (these do: ")
        one_line_error(xcon("logs", "--node", "mta.ex1", "--event", "move.*", run_dir=run), 1,
                       "no event on mta.ex1 matching 'move.*'")  # a node that has a log, and no match: a finding
        one_line_error(xcon("logs", "--node", "mta.*", "--event", "move.*", run_dir=run), 1,
                       "no event on mta.* matching 'move.*'")
        one_line_error(xcon("logs", "--msg", "", run_dir=run), 2, "'' is not a message id")
        one_line_error(xcon("user", "set", "alice", "--reject-from", "zed", run_dir=run), 2,
                       "reject_from: unknown recipient 'zed'")
        # nothing changed: one user, no message, no move
        status = xcon_json("status", run_dir=run)
        assert status["nodes"]["directory"]["status"] == {"usn": 1, "recipients": 1}
        assert status["nodes"]["orchestrator"]["status"] == {"active": [], "finished": 0, "recovered": 0, "paused": [],
                                                             "resume_at": {}, "armed": [], "holds": []}
        assert all(status["nodes"][m]["status"]["messages"] == 0 for m in ("mta.ex1", "mta.ex2"))
    finally:
        xcon("down", run_dir=run, check=True)


@pytest.mark.parametrize("sites, needle", [
    (["--site", "HQ=ex1"], "no site for ex2"),
    (["--site", "HQ=ex1,ex9", "--site", "B=ex2"], "no server 'ex9'"),
    (["--site", "HQ=ex1,ex2", "--site", "B=ex2"], "ex2 is in two sites"),
    (["--site", "=ex1,ex2"], "NAME=SERVER"),
])
def test_bad_sites_are_one_line_and_start_nothing(tmp_path, sites, needle):
    proc = xcon("up", *sites, run_dir=tmp_path)
    one_line_error(proc, 2, needle)
    assert not (tmp_path / "cluster.json").exists()
