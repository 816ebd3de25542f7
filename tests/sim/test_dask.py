"""Issue 22: simulated campaigns on a Dask cluster (xcon chaos --sim --dask): the same summary and
the same per-trial digests as on this machine's processes, and a worker killed mid-campaign
costs nothing (its trials run again elsewhere, none counted twice, none missing)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from orchestrator.lab import campaign, chaos
from orchestrator.lab.worlds import draw_world
from orchestrator.sim.world import Network

from ..conftest import SEED, xcon

distributed = pytest.importorskip("distributed", reason="Dask's distributed is not installed (pip install 'xcon[dask]')")


@pytest.mark.long
def test_a_campaign_on_dask_gives_the_summary_and_digests_it_gives_here(tmp_path):
    runs = []
    for extra in ([], ["--dask", "local:2"]):
        proc = xcon("chaos", "--sim", "--trials", "200", "--seed", str(SEED), *extra, "--json", run_dir=tmp_path,
                    timeout=180)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    here, dask = runs
    strip = lambda t: {k: v for k, v in t.items() if k not in ("seconds", "trials_per_minute", "wall_seconds")}  # noqa: E731
    assert strip(here["totals"]) == strip(dask["totals"]) and here["totals"]["trials"] == 200
    assert [(t["seed"], t["digest"]) for t in here["trials"]] == [(t["seed"], t["digest"]) for t in dask["trials"]]
    bad = xcon("chaos", "--sim", "--trials", "5", "--dask", "local:x", run_dir=tmp_path)
    assert bad.returncode == 2 and "local:N takes a number" in bad.stderr


@pytest.mark.long
def test_a_dask_worker_killed_mid_campaign_costs_nothing(tmp_path):
    from distributed import Client, LocalCluster

    worlds = [draw_world(s, "sp4") for s in chaos.trial_seeds(SEED, 400)]
    here = campaign.run(tmp_path / "here", worlds, Network(), workers=2)
    import dask

    with dask.config.set({"temporary-directory": str(tmp_path / "dask")}):  # not /tmp/dask-scratch-space
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               local_directory=str(tmp_path / "dask"))
    watcher = Client(cluster)
    killed: list[int] = []
    seen: list[int] = []

    def on_trial(result: chaos.TrialResult) -> None:
        seen.append(result.seed)
        if len(seen) == 20 and not killed:  # batches are out on both workers: one dies under them
            pid = next(iter(watcher.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        there = campaign.run(tmp_path / "there", worlds, Network(), on_trial=on_trial, dask=cluster.scheduler_address)
    finally:
        watcher.close()
        cluster.close()
    assert killed, "a worker was killed"
    assert [r.seed for r in there] == [w.seed for w in worlds], "none missing, none twice, in order"
    assert [(r.digest, r.counts) for r in there] == [(r.digest, r.counts) for r in here]
