"""Where a campaign's runs go (orchestrator.lab.executors): a worker process keeps the memory a
run frees for the next run, instead of faulting fresh pages in for each."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# a run's garbage as a trial leaves it: blocks over pymalloc's size, on the C heap, all freed at
# the end; then the same again, five times, counting the pages faulted in
RUNS = textwrap.dedent("""
    import resource, sys
    from orchestrator.lab import executors
    if sys.argv[1] == "kept":
        executors.keep_freed_memory()
    def run():
        blocks = [bytearray(100_000) for _ in range(200)]
        del blocks
    run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        run()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", RUNS, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="the C library has no mallopt (not glibc)")
def test_a_worker_reuses_what_a_run_freed_instead_of_faulting_in_new_pages():
    plain, kept = _faults("plain"), _faults("kept")
    print(f"minor faults over five runs of 20 MB: {plain} as glibc comes, {kept} kept")
    # glibc as it comes gives the heap's free top back after each run (about 4,900 pages a run)
    assert plain > 5 * 4000
    assert kept < plain / 20
