"""Issue 31, part 1: a bug that makes an NDR or a postmaster copy the facts do not owe is a
finding, by its name, in a simulated trial; the same world without the bug is clean.

Each bug is planted in the MTA's core for one test (orchestrator.lab.plants), in the form issue 31
found campaigns blind to: a report given to the postmaster instead of held for its moved
originator; reroute failing a recipient the directory homes on the server that answered; a
time-out cut short. The seeds are worlds the planted bug breaks (found by a campaign over the
same faults).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.lab import chaos
from orchestrator.lab.plants import PLANTS, plant
from orchestrator.lab.worlds import draw_world
from orchestrator.sim.world import Network

FAULTS = ("lag", "pause", "delay", "duplicate", "reorder", "kill", "feed_cut")


@pytest.mark.parametrize("name, seed, rule", [
    ("early-postmaster", 1716087199, "could still be reached"),
    ("reroute-gone", 1064748860, "reroute never fails"),
    ("short-time-out", 423729284, "before its time-out"),
])
def test_a_planted_unjustified_outcome_is_named(name, seed, rule):
    build, finding, _ = PLANTS[name]
    print(f"seed {seed} ({build}, faults {','.join(FAULTS)})")
    world = draw_world(seed, build, FAULTS)
    with plant(name):
        broken = chaos.run_trial(world, Path("/nonexistent/oracle"), sim=Network(), dump=False)
    found = [v for v in broken.violations if v["outcome"] == finding]
    assert found and broken.broken, [v["outcome"] for v in broken.violations]
    assert rule in found[0]["why"] and found[0]["evidence"], found[0]
    clean = chaos.run_trial(world, Path("/nonexistent/oracle"), sim=Network(), dump=False)
    assert not clean.broken and clean.counts[finding] == 0, clean.violations


def test_xcon_check_of_the_dumped_run_names_the_same_finding(tmp_path):
    """`xcon check` (check_run) judges a run-dir with the run's own settings: a mutant that gave it
    none (every report taken as owed) lived, since the campaigns judge through the simulator's own
    verdict. The planted run dumped as a real one is judged the same."""
    name, seed = "early-postmaster", 1716087199
    build, finding, _ = PLANTS[name]
    world = draw_world(seed, build, FAULTS)
    with plant(name):
        broken = chaos.run_trial(world, tmp_path / "run", sim=Network(), dump=True)
    from orchestrator.inspect.check import check_run

    report = check_run(Path(broken.run_dir))
    assert report.audited and report.counts[finding] == broken.counts[finding] > 0, report.counts
    assert sorted((v.msg_id, v.rcpt, v.outcome) for v in report.violations) == sorted(
        (v["msg_id"], v["rcpt"], v["outcome"]) for v in broken.violations)
