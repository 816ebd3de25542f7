"""A test run that is interrupted stops every cluster it started (issue 23: two fresh-clone runs
stopped by a `timeout` left 14 node processes running)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cluster.rundir import node_processes_within

from ..conftest import marked_by, patience, xcon

HERE = Path(__file__).resolve()


@pytest.mark.skipif(os.environ.get("XCON_INNER_RUN") != "1", reason="the inner run of the test below")
def test_holds_a_cluster_until_interrupted(tmp_path):
    xcon("up", "--insecure", run_dir=tmp_path / "run", check=True)
    (Path(os.environ["XCON_INNER_MARK"]) / f"up-{os.getpid()}").write_text(str(tmp_path / "run"))
    time.sleep(600)  # the outer test interrupts the run long before


@pytest.mark.long
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_stops_every_cluster_it_started(tmp_path, sig):
    base, mark = tmp_path / "inner", tmp_path / "marks"
    mark.mkdir()
    env = {**os.environ, "XCON_INNER_RUN": "1", "XCON_INNER_MARK": str(mark)}
    output = tmp_path / "inner.out"
    with open(output, "wb") as out:
        inner = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "--basetemp", str(base),
             f"{HERE}::test_holds_a_cluster_until_interrupted", f"{HERE}::test_holds_a_cluster_until_interrupted"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parents[2])
    said = lambda: output.read_text(errors="replace")[-3000:]  # noqa: E731
    try:
        deadline = time.time() + patience(120)
        while not list(mark.iterdir()):  # the inner test has its cluster up: an event, not a guess
            assert inner.poll() is None and time.time() < deadline, f"the inner run never brought a cluster up:\n{said()}"
            time.sleep(0.05)
        assert node_processes_within(base.resolve()), "the inner run's cluster runs"
        inner.send_signal(sig)
        try:
            inner.wait(timeout=patience(120))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the interrupted run did not end; it said:\n{said()}")
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
    assert node_processes_within(base.resolve()) == {}, "a node of the interrupted run is still running"
    assert marked_by(inner.pid) == [], "a process the interrupted run started is still running"
