"""Fixtures that start real processes. Every process started here is stopped here."""

from __future__ import annotations

import compileall
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from nodes.config import Settings
from orchestrator import cluster as cl
from orchestrator.cluster import rundir
from orchestrator.inspect import logread

from .docblocks import ROOT


# Every CLI call and node the suite starts (some 900 processes) imports xcon's modules. Where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines) each compiled them from source
# again: a third of a CLI call's CPU (0.31 -> 0.21 s user). The suite's processes write and read
# bytecode (__pycache__/, ignored by git); pytest_configure compiles it once, up front.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# The seeds of a run: random unless the environment fixes them. They are put in the environment
# here, in the process that prints the header, so pytest-xdist's workers (started after this
# file is loaded) use the same ones and the header's replay line holds for every test.
os.environ.setdefault("XCON_TEST_SEED", str(int.from_bytes(os.urandom(2), "big")))  # replication jitter
os.environ.setdefault("XCON_CHAOS_SEED", str(int.from_bytes(os.urandom(4), "big") % (2**31 - 1) + 1))  # campaigns
SEED = int(os.environ["XCON_TEST_SEED"])


def pytest_configure(config):
    """In the run's main process: a SIGTERM (a `timeout`, a CI runner) unwinds pytest as Ctrl-C does,
    so every fixture stops what it started and pytest_sessionfinish sweeps the rest; and xcon's
    bytecode is compiled before any worker or node starts."""
    if not hasattr(config, "workerinput"):
        signal.signal(signal.SIGTERM, _interrupted)
        for package in ("protocol", "nodes", "orchestrator"):
            compileall.compile_dir(ROOT / package, quiet=1)


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionfinish(session, exitstatus):
    """Stop every cluster whose run-dir is under this run's temporary root, whatever ended the run:
    an interrupt leaves a test's own teardown undone, and two fresh-clone runs stopped by a
    timeout once left 14 node processes running. The workers' directories are below the main
    process's root, so it sweeps for all of them."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    root = factory.getbasetemp().resolve()
    for run_dir in sorted({where for _, where in rundir.node_processes_within(root).values()}):
        try:
            cl.stop(run_dir, grace=1.0, force=True)
        except cl.ClusterError:
            pass


def pytest_collection_modifyitems(config, items):
    """The long tests first: pytest-xdist hands tests out in this order, and a long test handed
    out last keeps the run going on one worker while the others idle."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_report_header(config):
    chaos = os.environ["XCON_CHAOS_SEED"]
    return (f"xcon: replication jitter seed {SEED}, chaos campaign seed {chaos} "
            f"(replay with XCON_TEST_SEED={SEED} XCON_CHAOS_SEED={chaos})")


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Callable[..., cl.Cluster]:
    """Start clusters on fresh run directories; all are stopped at the end of the test."""
    started: list[tuple[cl.Cluster, Path]] = []

    def make(build: str = "legacy", **settings) -> cl.Cluster:
        settings.setdefault("seed", SEED)
        run_dir = tmp_path / f"run{len(started)}"
        cluster = cl.start(run_dir, Settings(("ex1", "ex2"), build, **settings))
        started.append((cluster, run_dir))
        return cluster

    yield make
    for cluster, run_dir in started:
        cluster.close()
        cl.stop(run_dir)


def xcon(*args: str, run_dir: Path | None = None, check: bool = False, timeout: float = 120,
         input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (a separate process). `env` adds variables (None removes one)."""
    environ = {**os.environ, "COLUMNS": "200"}
    environ.pop("XCON_DEBUG", None)
    if run_dir is not None:
        environ["XCON_RUN_DIR"] = str(run_dir)
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, env=environ,
                          timeout=timeout, input=input.encode() if isinstance(input, str) else input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    proc.stdout, proc.stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"xcon {' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc


def xcon_json(*args: str, run_dir: Path) -> object:
    return json.loads(xcon(*args, "--json", run_dir=run_dir, check=True).stdout)


def wait_for_event(run_dir: Path, timeout: float = 30, **fields) -> dict:
    """Wait until some node has logged an event with these fields (an event, not a sleep)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in logread.merged(run_dir):
            if all(e.get(k) == v for k, v in fields.items()):
                return e
        time.sleep(0.05)
    raise AssertionError(f"no event {fields} within {timeout}s")
