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
from typing import Callable, Iterator

import pytest

from nodes.config import Settings
from orchestrator import cluster as cl
from orchestrator.cluster import rundir
from orchestrator.inspect import logread
from orchestrator.processes import FORK_SERVER
from protocol import logs

from . import cli_server
from .docblocks import ROOT

# every event a core logs, here and in every node the suite starts, is held to its declaration
os.environ["XCON_STRICT_LOGS"] = "1"
logs.STRICT = True

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


# Every process this run starts (pytest-xdist's workers, their CLI calls, the nodes those start)
# inherits this mark from the run's main process, so the sweep below finds them all by their
# environment, whatever started them and however their starter ended. A run started by a test
# adds its own pid to its starter's: the outer run's sweep finds the inner run's processes too.
OWNER = "XCON_TEST_OWNER"


def environs(skip: int | None = None) -> Iterator[tuple[int, list[bytes]]]:
    """Each live process but `skip`, with its environment's entries (b"NAME=value")."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != skip:
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue  # gone, or a zombie's (which has no environment left)
            yield int(entry), environ.split(b"\0")


def marked_by(pid: int) -> list[int]:
    """Every live process whose environment carries `pid` in its XCON_TEST_OWNER mark."""
    mark = OWNER.encode() + b"="
    return [p for p, environ in environs(skip=pid)
            if any(var.startswith(mark) and str(pid).encode() in var[len(mark):].split(b":") for var in environ)]


def pytest_configure(config):
    """In the run's main process: mark the processes it will start; a SIGTERM (a `timeout`, a CI
    runner) unwinds pytest as Ctrl-C does, so every fixture stops what it started and
    pytest_unconfigure sweeps the rest; and xcon's bytecode is compiled before any worker or node
    starts."""
    if not hasattr(config, "workerinput"):
        os.environ[OWNER] = ":".join(filter(None, (os.environ.get(OWNER), str(os.getpid()))))
        signal.signal(signal.SIGTERM, _interrupted)
        # Ctrl-C interrupts, even where the run was started with SIGINT ignored (a background job
        # of a script), which Python then keeps ignoring
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for package in ("protocol", "nodes", "orchestrator"):
            compileall.compile_dir(ROOT / package, quiet=1)


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config):
    """End every process this run started and that still runs, whatever ended the run: an
    interrupt leaves a test's own teardown undone, and two fresh-clone runs stopped by a timeout
    once left 14 node processes running. It runs after pytest-xdist has ended its workers (a
    worker interrupted in a test is killed, and the CLI calls it had started run on), so nothing
    starts a cluster behind the sweep: first the processes that are not nodes (a CLI call half way
    through `xcon up` or a scenario), then each cluster by `stop` (which also removes a netns
    cluster's namespaces), then whatever is left."""
    if hasattr(config, "workerinput") or os.environ.get(OWNER, "").split(":")[-1] != str(os.getpid()):
        return
    started = set(marked_by(os.getpid()))
    nodes = rundir.node_processes_within(Path("/"))
    for pid in started - nodes.keys():
        _kill(pid)
    for run_dir in sorted({where for pid, (_, where) in nodes.items() if pid in started}):
        try:
            cl.stop(run_dir, grace=1.0, force=True)
        except cl.ClusterError:
            pass
    for pid in marked_by(os.getpid()):
        _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
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


@pytest.fixture
def smtp_cluster(tmp_path):
    """start(*flags, lag_ms=0): a cluster with an IMS per server (`xcon up --smtp` and `flags`,
    a replication lag of `lag_ms`, no jitter); taken down after the test."""
    run = tmp_path / "run"

    def start(*flags: str, lag_ms: int = 0) -> Path:
        xcon("up", "--fresh", "--smtp", *flags, "--replication-lag-ms", str(lag_ms), "--replication-jitter-ms", "0",
             run_dir=run, check=True)
        return run

    yield start
    if (run / "cluster.json").exists():
        xcon("down", run_dir=run)


@pytest.fixture(scope="session", autouse=True)
def nodes_forked() -> Iterator[None]:
    """The suite's nodes start from its fork server (tests/cli_server.py: a node's start is a
    sixth of the CPU it is from scratch; on a host of its own it enters its namespace), unless
    XCON_TEST_CLI=exec asks for everything from scratch, as a user's `xcon` starts it. A test
    that must see a user's start unsets XCON_FORK_SERVER."""
    if os.environ.get("XCON_TEST_CLI") == "exec":
        yield
        return
    os.environ[FORK_SERVER] = cli_server.started()
    yield
    os.environ.pop(FORK_SERVER, None)
    cli_server.stop()


def xcon(*args: str, run_dir: Path | None = None, check: bool = False, timeout: float = 120,
         input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would: `python -m orchestrator.cli ARGS`, a separate process with its
    own streams and exit code. It is forked from a server that has made the imports already
    (tests/cli_server.py: a tenth of the CPU), or started from scratch with XCON_TEST_CLI=exec.
    `env` adds variables (None removes one)."""
    environ = {**os.environ, "COLUMNS": "200"}
    environ.pop("XCON_DEBUG", None)
    if run_dir is not None:
        environ["XCON_RUN_DIR"] = str(run_dir)
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    stdin = input.encode() if isinstance(input, str) else input
    if os.environ.get("XCON_TEST_CLI") == "exec":
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, env=environ,
                              timeout=timeout, input=stdin, stdin=None if input is not None else subprocess.DEVNULL)
    else:
        proc = cli_server.call(list(args), environ, stdin, timeout)
    proc.stdout, proc.stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"xcon {' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc


def xcon_json(*args: str, run_dir: Path) -> object:
    return json.loads(xcon(*args, "--json", run_dir=run_dir, check=True).stdout)


def patience(seconds: float) -> float:
    """A wait's budget on this machine: `seconds` on an idle one, longer in proportion to the load
    (the run-queue per core over the last minute) on a busy one, or XCON_TEST_PATIENCE times it.
    A budget is how long to wait for an event before calling it missing, never a window the test
    needs: a budget too long costs nothing when the event comes."""
    factor = float(os.environ.get("XCON_TEST_PATIENCE", 0)) or max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    return seconds * factor


def wait_for_event(run_dir: Path, timeout: float = 30, **fields) -> dict:
    """Wait until some node has logged an event with these fields (an event, not a sleep)."""
    timeout = patience(timeout)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in logread.merged(run_dir):
            if all(e.get(k) == v for k, v in fields.items()):
                return e
        time.sleep(0.05)
    raise AssertionError(f"no event {fields} within {timeout:.0f}s")
