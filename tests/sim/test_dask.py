"""Issue 22: simulated campaigns on a Dask cluster (xcon chaos --sim --dask): the same summary and
the same per-trial digests as on this machine's processes, and a worker killed mid-campaign
costs nothing (its trials run again elsewhere, none counted twice, none missing)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.lab import campaign, chaos
from orchestrator.lab.spec import CampaignSpec, run

from ..conftest import SEED, xcon

distributed = pytest.importorskip("distributed", reason="Dask's distributed is not installed (pip install 'xcon[dask]')")


@pytest.mark.long
def test_a_campaign_on_dask_gives_the_summary_and_digests_it_gives_here(tmp_path):
    runs = []
    for extra in ([], ["--dask", "local:2"]):
        proc = xcon("chaos", "--sim", "--trials", "100", "--seed", str(SEED), *extra, "--json", run_dir=tmp_path,
                    timeout=180)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    here, dask = runs
    assert here["executor"]["kind"] == "local" and here["executor"]["workers"] >= 1, here["executor"]
    assert dask["executor"] == {"kind": "dask", "address": "local:2"}
    kept = json.loads((Path(dask["kept"]) / "summary.json").read_text())
    assert kept["executor"] == dask["executor"], "summary.json says where the trials ran too"
    strip = lambda t: {k: v for k, v in t.items() if k not in ("seconds", "trials_per_minute", "wall_seconds")}  # noqa: E731
    assert strip(here["totals"]) == strip(dask["totals"]) and here["totals"]["trials"] == 100
    assert [(t["seed"], t["digest"]) for t in here["trials"]] == [(t["seed"], t["digest"]) for t in dask["trials"]]
    bad = xcon("chaos", "--sim", "--trials", "5", "--dask", "local:x", run_dir=tmp_path)
    assert bad.returncode == 2 and "local:N takes a number" in bad.stderr


@pytest.mark.long
def test_a_dask_worker_killed_mid_campaign_costs_nothing(tmp_path):
    from distributed import Client, LocalCluster

    spec = CampaignSpec(SEED, trials=200, sim=True, workers=2)  # the campaign `xcon chaos --sim` builds
    here = run(spec, tmp_path / "here").results
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
        there = run(replace(spec, dask=cluster.scheduler_address), tmp_path / "there", on_trial).results
    finally:
        watcher.close()
        cluster.close()
    assert killed, "a worker was killed"
    assert [r.seed for r in there] == spec.seeds(), "none missing, none twice, in order"
    assert [(r.digest, r.counts) for r in there] == [(r.digest, r.counts) for r in here]


# KB Q248839 as a world: bob (alternate carol, deliver to both) moved while alice writes to him;
# the copy holds his mailbox locked for 5 s and the MTAs learn his new home 8 s after the
# directory, so the retry at the move's end finds the old home in every run, on a busy machine too
KB_WORLD = {"seed": 248839, "build": "legacy", "servers": ["ex1", "ex2"],
            "users": [{"alias": "alice", "home": "ex2", "alternate": None, "deliver_to_both": False},
                      {"alias": "bob", "home": "ex1", "alternate": "carol", "deliver_to_both": True},
                      {"alias": "carol", "home": "ex1", "alternate": None, "deliver_to_both": False}],
            "lag_ms": 8000, "jitter_ms": 0, "retry_ms": 1000, "copy_delay_ms": 5000,
            "events": [{"at": 0.0, "do": "move", "alias": "bob", "pick": 0.0},
                       {"at": 1.0, "do": "send", "sender": "alice", "to": ["bob"]}]}


@pytest.mark.long
def test_a_real_process_campaign_on_two_dask_workers_brings_back_its_broken_trials_run_dir(tmp_path):
    """Each trial's cluster runs on its worker's machine, in the worker's scratch folder; the
    trial that broke comes back whole under the campaign's folder, where `xcon check` reads it,
    and the clean one leaves nothing behind. The clean one sends its mail over SMTP (`--via
    smtp`): what its client was told comes back with it, and is judged against what the MTAs took."""
    legacy = campaign.world_from_json(KB_WORLD)
    sp4 = campaign.world_from_json({**KB_WORLD, "build": "sp4", "via": "smtp"})
    root = tmp_path / "campaign"
    results = chaos.campaign(root, [], "", (), None, None, worlds=[legacy, sp4], dask="local:2")
    lost, clean = results
    print(f"legacy: {lost.counts} {lost.error}; sp4 over SMTP: {clean.counts} {clean.error}, told {clean.told}")
    assert lost.broken and lost.lost == 1 and clean.error is None and not clean.broken and clean.counts["ndr"] == 1
    assert lost.told == [] and len(clean.told) == 1 and clean.messages == 1, "the one message, told 250 over SMTP"
    assert lost.run_dir == str(root / "trial-0000-248839") and clean.run_dir == ""
    assert sorted(p.name for p in root.iterdir()) == ["trial-0000-248839"], "only the broken trial comes back"
    check = xcon("check", "--json", run_dir=Path(lost.run_dir))
    assert check.returncode == 1 and json.loads(check.stdout)["counts"]["lost"] == 1, check.stderr


def test_a_trial_whose_worker_died_is_stopped_and_removed_by_the_next_one_on_that_machine(tmp_path, monkeypatch):
    """A killed Dask worker leaves its trial's cluster running in its scratch folder; the next
    trial on the machine (chaos._reap_orphans, first thing in each) stops it and removes the folder.
    A folder whose worker lives is left alone."""
    import subprocess
    import tempfile

    from orchestrator import cluster as cl
    from orchestrator.lab.worlds import world_settings
    from orchestrator.processes import pid_alive

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the dead worker's
    orphan, alive = tmp_path / f"{chaos.SCRATCH}dead", tmp_path / f"{chaos.SCRATCH}alive"
    for folder, owner in ((orphan, gone.pid), (alive, os.getpid())):
        folder.mkdir()
        (folder / "owner.pid").write_text(str(owner))
    run_dir = orphan / "trial-0000-1"
    running = cl.start(run_dir, world_settings(campaign.world_from_json(KB_WORLD)), fresh=True)
    pids = [d["pid"] for d in running.config.nodes.values()]
    running.close()
    # alive and a node of that run-dir (this test started them: a stopped one stays a zombie here)
    assert pids and all(pid_alive(p, run_dir) for p in pids)
    chaos._reap_orphans()
    assert not orphan.exists() and alive.exists()
    assert not any(pid_alive(p, run_dir) for p in pids), "the orphaned cluster's nodes were stopped"


def test_a_local_dask_cluster_that_does_not_start_leaves_no_scratch_folder(tmp_path, monkeypatch):
    """A LocalCluster that failed to start (its nanny could not spawn a worker) left its
    xcon-dask-* folder in the temp dir for good."""
    from orchestrator.lab import executors

    def refuse(*args, **kwargs):
        raise RuntimeError("Nanny failed to start.")

    monkeypatch.setattr(distributed, "LocalCluster", refuse)
    monkeypatch.setattr(executors.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError, match="Nanny"):
        executors.connect("local:1")
    assert list(tmp_path.iterdir()) == []
