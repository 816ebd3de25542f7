"""Where a campaign's independent runs go: this machine's processes, or a Dask cluster.

`--dask ADDRESS` (or XCON_DASK) sends a simulated campaign's trials, or an exploration's points,
to the scheduler at ADDRESS (`tcp://host:8786`, started with `dask scheduler`, workers with `dask
worker ADDRESS`: deploy/README.md); `--dask local:N` starts a Dask cluster of N worker processes
on this machine for the run. Dask's `distributed` is its own well-kept engine (scheduling, worker
loss, retries): a worker that dies mid-campaign has its tasks run again elsewhere, and each result
comes back once, as a future's. A campaign's runs are pure (a seed gives its run), so the same
seed gives the same summary and digests here or there.

Runs go in batches (a task each), as ProcessPoolExecutor's chunksize does: a simulated trial
costs about 10 ms, less than a task's round trip through a scheduler. Results come back in the
order of the runs.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import tarfile
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterator

from nodes.config import libc


def _chunk_size(items: int, workers: int) -> int:
    """Items a task runs at once: enough for about eight tasks a worker, at most 64."""
    return max(1, min(64, items // (max(1, workers) * 8)))


def batches(items: list, workers: int, size: int | None = None) -> list[list]:
    size = size or _chunk_size(len(items), workers)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run_batch(fn: Callable[[Any], Any], batch: list) -> list:
    keep_freed_memory()  # a Dask worker's process: once, at its first batch
    return [fn(item) for item in batch]


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
PR_SET_PDEATHSIG = 1  # prctl(2)
MMAP_THRESHOLD = 32 << 20  # the most glibc takes on 64 bits: a 15 MiB message's buffers come from the heap
TRIM_THRESHOLD = 256 << 20  # free memory kept at the heap's top before any is given back


@cache  # once per process (a forked worker inherits it done)
def keep_freed_memory() -> None:
    """Make this process's allocator keep the memory a run frees, for the next run to reuse.

    glibc gives a block of 128 KiB or more its own mapping and unmaps it when freed, and gives
    back the heap's free top: the next run's buffers (a message's bytes, a queue log) then come
    from new pages, each a page fault on first touch. A campaign's worker runs thousands of
    runs, each freeing what it made: 311 minor faults a default-faults trial, 0.59 ms of system
    time of its 11.8, and a copy of a 15 MiB message cost 12 ms instead of 2.3
    (docs/performance.md). Nothing where the C library has no mallopt."""
    try:
        mallopt = libc().mallopt
    except (OSError, AttributeError):  # not glibc (macOS, say): its allocator as it is
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


class DaskError(Exception):
    """Dask is not installed, or its scheduler cannot be reached: one line, what to do."""


# a scheduler's address as Dask takes it: [protocol://]host:port (an IPv6 host in brackets)
_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})$")


def check_address(address: str) -> int | None:
    """The number of local workers `address` asks for ("local:N"), None for a scheduler's address;
    DaskError, in one line, for anything else: a command refuses it before it starts any work
    (`--dask bogus` once ended a campaign in "internal error")."""
    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            raise DaskError(f"--dask local:N takes a number of workers, got {address!r}") from None
        if not 1 <= n <= 256:
            raise DaskError("--dask local:N takes 1 to 256 workers")
        return n
    m = _ADDRESS.match(address)
    if m is None or not 0 < int(m.group(1)) < 65536:
        raise DaskError(f"--dask takes a scheduler's address, tcp://HOST:PORT, or local:N; got {address!r}")
    return None


def connect(address: str) -> tuple[Any, Any]:
    """A Dask client for `address` ("local:N": a local cluster of N workers, closed with it)."""
    n = check_address(address)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DaskError("--dask needs Dask's distributed (pip install 'xcon[dask]')") from None
    if n is not None:
        # the workers' scratch folders in one of the run's own, removed with the cluster (Dask's
        # default, /tmp/dask-scratch-space, outlives every run)
        import dask

        scratch = tempfile.mkdtemp(prefix="xcon-dask-")
        try:
            with dask.config.set({"temporary-directory": scratch}):
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR, local_directory=scratch)
        except BaseException:  # a cluster that did not start leaves no folder behind either
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        cluster.xcon_scratch = scratch  # type: ignore[attr-defined]
        return Client(cluster), cluster
    try:
        return Client(address, timeout=10), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise DaskError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def run_map(fn: Callable[[Any], Any], items: list, workers: int, dask: str | None = None,
            chunksize: int | None = None) -> Iterator[Any]:
    """fn over items, results in order: here (`workers` processes; one: in this process) or on
    the Dask cluster `dask` (`chunksize` runs a task; by default what keeps every worker busy)."""
    if dask:
        client, cluster = connect(dask)
        try:
            nworkers = max(1, sum(client.nthreads().values()))
            chunks = batches(items, nworkers, chunksize)
            with warnings.catch_warnings():  # the jobs are the graph's data: a large campaign's are many MB
                warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
                futures = client.map(_run_batch, [fn] * len(chunks), chunks, pure=False)
            for future in futures:
                yield from future.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
                shutil.rmtree(cluster.xcon_scratch, ignore_errors=True)
        return
    if workers <= 1 or len(items) < 8:
        keep_freed_memory()
        yield from map(fn, items)
        return
    pool = ProcessPoolExecutor(workers, initializer=_worker_start)
    try:  # pool.map's batches, but not its cancelling of them on a stop: see end()
        futures = [pool.submit(_run_batch, fn, batch) for batch in batches(items, workers, chunksize)]
        for future in futures:
            yield from future.result()
    except BaseException:  # a signal (Stopped, Ctrl-C), a caller that stopped reading, an error
        end(pool)
        raise
    pool.shutdown()


def _worker_start() -> None:
    """A pool worker's start: it dies with its parent (Linux's PR_SET_PDEATHSIG: a campaign killed
    with SIGKILL leaves none behind either), and leaves Ctrl-C to its parent, which ends it."""
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: end() still ends the workers of a stopped campaign
        return
    if os.getppid() == 1:  # the parent died before the prctl took
        os._exit(1)


def end(pool: ProcessPoolExecutor) -> None:
    """Stop `pool` now: its workers are killed, whatever they run. shutdown() waits for each to
    finish its task, and a worker in a trial that never ends never does: issue 31 found one
    spinning with no parent after its campaign was stopped. (The processes are the pool's
    `_processes`, which CPython has kept since 3.2; a pool without them is shut down only.)
    The pool's own thread sees the killed workers and fails every future still pending; none may
    be cancelled before it is done, or 3.11's thread fails a cancelled future and prints a
    traceback (InvalidStateError) after a campaign that stopped at its first break."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=5)
    manager = getattr(pool, "_executor_manager_thread", None)
    if processes and manager is not None:
        manager.join(timeout=5)
    pool.shutdown(wait=False, cancel_futures=True)


def pack_dir(path: Path) -> bytes:
    """A folder as a gzipped tar in memory: a run-dir made on a worker, brought back to the caller."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=".")
    return buffer.getvalue()


def unpack_dir(data: bytes, dest: Path) -> None:
    """pack_dir's folder, made again at `dest` (tarfile's "data" filter: nothing outside it, no
    devices or links out)."""
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
