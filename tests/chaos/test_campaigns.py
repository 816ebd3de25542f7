"""Short chaos campaigns on live clusters (marker `chaos`).

CI runs these as they are; the long form is documented in the README:
    XCON_CHAOS_TRIALS=50 pytest -m chaos
Seeds are random per run and printed in every failure message; XCON_CHAOS_SEED fixes them.
"""

from __future__ import annotations

import os
import random

import pytest

from orchestrator import chaos

pytestmark = pytest.mark.chaos

SEED = int(os.environ.get("XCON_CHAOS_SEED", random.SystemRandom().randrange(1, 2**31)))
TRIALS = int(os.environ.get("XCON_CHAOS_TRIALS", "2"))
FAULTS = ("lag", "pause", "delay", "duplicate", "reorder")


def describe(result: chaos.TrialResult, build: str, faults=FAULTS) -> str:
    return (f"trial seed {result.seed} ({result.counts}, error={result.error}); replay: "
            f"xcon chaos --replay {result.seed} --mta-build {build} --faults {','.join(faults) or 'none'}")


def test_legacy_loses_mail_and_the_replay_loses_it_again(tmp_path):
    seeds = chaos.trial_seeds(SEED, max(12, TRIALS))
    for i, seed in enumerate(seeds):
        result = chaos.run_trial(chaos.draw_world(seed, "legacy", ()), tmp_path / f"t{i}")
        if result.lost:
            break
    else:
        pytest.fail(f"campaign seed {SEED}: legacy lost nothing in {len(seeds)} trials")
    assert result.counts["duplicated"] == 0 and result.counts["both"] == 0, describe(result, "legacy", ())
    replay = chaos.run_trial(chaos.draw_world(result.seed, "legacy", ()), tmp_path / "replay")
    assert replay.lost, f"campaign seed {SEED}: the replay of {describe(result, 'legacy', ())} lost nothing"


@pytest.mark.parametrize("build", ["sp4", "reroute"])
def test_fixed_builds_lose_nothing_under_faults(build, tmp_path):
    for i, seed in enumerate(chaos.trial_seeds(SEED + (build == "reroute"), TRIALS)):
        result = chaos.run_trial(chaos.draw_world(seed, build, FAULTS), tmp_path / f"t{i}")
        assert not result.broken and not result.error, f"campaign seed {SEED}: {describe(result, build)}"
        assert result.pairs > 0
