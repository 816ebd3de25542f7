"""The short deterministic campaign mutation testing runs against (docs/testing.md): simulated
worlds with every fault kind, judged by `check` and its oracle. It is in the suite too.

sp4 and reroute must end every pair as the facts allow (no finding, no stuck trial, no error);
legacy may lose only where the KB says it does (a pair `lost`, or `damaged` where a queue log was
corrupted), and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.lab import campaign, chaos
from orchestrator.lab.worlds import FAULTS, draw_world
from orchestrator.sim.world import Network

SEED = 3131
TRIALS = 60


@pytest.mark.parametrize("build", ["sp4", "reroute"])
def test_a_fixed_build_ends_every_pair_as_the_facts_allow(build):
    worlds = [draw_world(s, build, FAULTS) for s in chaos.trial_seeds(SEED, TRIALS)]
    results = campaign.run(Path("/nonexistent/mutation"), worlds, Network(torn_kills=True), workers=1, dump=False)
    print(f"{build}, campaign seed {SEED}: {chaos.summarize(results)}")
    broken = [(r.seed, [v["outcome"] for v in r.violations][:3], r.stale_locks[:1], r.stuck, r.error)
              for r in results if r.broken or r.error]
    assert broken == [], broken
    assert sum(r.pairs for r in results) > 1500 and sum(r.counts.get("ndr", 0) for r in results) > 0


def test_legacy_loses_only_where_the_kb_says():
    worlds = [draw_world(s, "legacy", FAULTS) for s in chaos.trial_seeds(SEED, TRIALS // 2)]
    results = campaign.run(Path("/nonexistent/mutation"), worlds, Network(torn_kills=True), workers=1, dump=False)
    print(f"legacy, campaign seed {SEED}: {chaos.summarize(results)}")
    other = [(r.seed, v["outcome"], v["why"][:80]) for r in results for v in r.violations
             if v["outcome"] not in ("lost", "damaged") or (v["outcome"] == "damaged" and not r.corrupted)]
    assert other == [] and not any(r.stuck or r.error or r.stale_locks for r in results), other
    assert sum(r.lost for r in results) > 0, "the KB's window is reached"
