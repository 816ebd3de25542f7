"""Issue 22: organisation-sized worlds. `xcon up --users N` starts a cluster whose directory and
stores hold N users before its nodes start; `xcon chaos --sim --servers --users --sites` draws
worlds of that size, with moves kept within their site."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from orchestrator.lab import chaos
from orchestrator.lab.worlds import draw_world, move_targets
from orchestrator.sim.world import Network

from .. import docblocks
from ..conftest import SEED, xcon, xcon_json

SIM_BLOCK, UP_BLOCK = docblocks.commands("docs/chaos.md", "organisations")  # run here, smaller


def test_up_with_an_organisation_every_mta_starts_knowing_it_and_mail_and_moves_work(tmp_path):
    run = tmp_path / "run"
    try:
        up = xcon_json(*docblocks.adapted(UP_BLOCK, {"--servers 4": "--servers 3", "--users 20000": "--users 3000"}),
                       run_dir=run)
        assert up["users"] == 3000
        status = xcon_json("status", run_dir=run)["nodes"]
        assert status["directory"]["status"]["recipients"] == 3000
        assert {n: v["status"]["cache_usn"] for n, v in status.items() if n.startswith("mta.")} == \
            {"mta.ex1": 3000, "mta.ex2": 3000, "mta.ex3": 3000}, "each MTA's first snapshot held them all"
        xcon("send", "--from", "user1", "--to", "user3000", "--to", "user2", "--subject", "hello", run_dir=run,
             check=True)
        xcon("move", "user2", "--to", "ex1", run_dir=run, check=True)  # user2 lived on ex2 (homes in turn)
        xcon("wait", run_dir=run, check=True)
        for alias in ("user3000", "user2"):
            box = xcon_json("mailbox", alias, run_dir=run)
            assert [m["subject"] for m in box["messages"]] == ["hello"], (alias, box)
        assert xcon("check", run_dir=run).returncode == 0
        again = xcon("up", "--users", "5", run_dir=run)  # running: refused, nothing changed
        assert again.returncode == 2 and "already running" in again.stderr
        xcon("down", run_dir=run, check=True)
        # every file the run-dir holds is its owner's alone, the ones `up` wrote itself too
        # (directory.json, changes.jsonl and cluster.json were 0644: issue 34, story 18)
        assert not_private(run) == [], "not 0600 files in 0700 folders"
        resumed = xcon("up", "--users", "5", run_dir=run)
        assert resumed.returncode == 2 and "its users are its own" in resumed.stderr, resumed.stderr
        assert xcon("up", "--users", "0", run_dir=run).returncode == 2
    finally:
        xcon("down", run_dir=run)


def test_worlds_of_many_servers_in_sites_move_within_their_site_and_lose_nothing_on_sp4(tmp_path):
    world = draw_world(SEED, "sp4", users=400, servers=12, sites=3, moves=20)
    assert world.sites == tuple(f"site{i // 4 + 1}" for i in range(12)) and world.intersite_lag_ms >= 500
    for server in world.servers:
        targets = move_targets(world, server)
        assert targets and all(world.sites[world.servers.index(t)] == world.sites[world.servers.index(server)]
                                for t in targets) and server not in targets
    result = chaos.run_trial(world, tmp_path / "trial", sim=Network(), dump=False)
    print(f"seed {SEED}: {result.counts} moves {result.moves} failed {result.moves_failed} {result.error}")
    assert result.error is None and not result.broken and result.moves >= 10 and result.moves_failed == 0
    assert result.pairs > 0 and result.counts["delivered"] > 0
    proc = xcon(*docblocks.adapted(SIM_BLOCK, {"--trials 200": "--trials 6", "--servers 100": "--servers 8",
                                               "--sites 10": "--sites 2", "--users 20000": "--users 2000"},
                                   ("--seed", str(SEED), "--json")), run_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["totals"]["trials"] == 6 and data["totals"]["broken_trials"] == 0 and data["totals"]["pairs"] > 0
    too_many = xcon("chaos", "--servers", "30", run_dir=tmp_path)  # real processes: a usage error, nothing ran
    assert too_many.returncode == 2 and "--sim" in too_many.stderr
    sites = xcon("chaos", "--sim", "--servers", "3", "--sites", "4", run_dir=tmp_path)
    assert sites.returncode == 2 and "a site holds a server at least" in sites.stderr


def not_private(root: Path) -> list[str]:
    """What under `root` is not its owner's alone: files not 0600, folders not 0700."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name, want in [*((d, 0o700) for d in dirs), *((f, 0o600) for f in files)]:
            mode = stat.S_IMODE(os.lstat(os.path.join(folder, name)).st_mode)
            if mode != want:
                found.append(f"{oct(mode)} {os.path.relpath(os.path.join(folder, name), root)}")
    return sorted(found)
