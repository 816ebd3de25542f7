"""Short chaos campaigns on live clusters (marker `chaos`).

CI runs these as they are; the long form is documented in docs/testing.md:
    XCON_CHAOS_TRIALS=50 pytest -m chaos
The campaigns are docs/chaos.md's block "campaigns", run as written but for their trials and seed.
Seeds are random per run and printed in every failure message; XCON_CHAOS_SEED fixes them.
"""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.lab import chaos
from orchestrator.lab.worlds import draw_world

from .. import docblocks
from ..conftest import xcon

pytestmark = pytest.mark.chaos

SEED = int(os.environ["XCON_CHAOS_SEED"])  # set, and printed in pytest's header, by tests/conftest.py
TRIALS = int(os.environ.get("XCON_CHAOS_TRIALS", "2"))
def describe(result: chaos.TrialResult, build: str, faults: tuple[str, ...]) -> str:
    return (f"trial seed {result.seed} ({result.counts}, error={result.error}); replay: "
            f"xcon chaos --replay {result.seed} --mta-build {build} --faults {','.join(faults) or 'none'}")


CAMPAIGNS = docblocks.commands("docs/chaos.md", "campaigns")  # the doc's block, run here: fewer trials, a seed


@pytest.mark.long
def test_legacy_loses_mail_and_the_replay_loses_it_again(tmp_path):
    """The doc's first two campaigns, as a user runs them: find a loss, write the report, replay the seed."""
    find, replay_doc = CAMPAIGNS[0], CAMPAIGNS[1]
    report = tmp_path / "report"
    proc = xcon(*docblocks.adapted(find, {"--trials 50": f"--trials {max(12, TRIALS)}", "out/": str(report)},
                                   add=("--seed", str(SEED), "--stop-on-break", "--json")), run_dir=tmp_path, timeout=600)
    assert proc.returncode == 0, f"campaign seed {SEED}: legacy lost nothing: {proc.stderr[-500:]}"
    result = json.loads(proc.stdout)
    first = result["first_broken"]
    assert first and first["counts"]["lost"] >= 1 and result["totals"]["duplicated"] == 0, result["totals"]
    assert result["replay"] == replay_doc.replace("SEED", str(first["seed"])), "the replay it prints is the doc's"
    lost = [v for v in first["violations"] if v["outcome"] == "lost"][0]
    assert (report / "summary.json").exists() and (report / "logs.jsonl").exists() and (report / "index.html").exists()
    kept = next(t for t in json.loads((report / "summary.json").read_text())["trials"] if t["seed"] == first["seed"])
    svg = (report / kept["trace"]).read_text()  # the first finding's picture, beside the summary
    if first["violations"][0]["outcome"] == "lost":
        assert "DROPPED SILENTLY" in svg
    # the silent failure is among the pair's last events, not always the last: the ack of the
    # transfer that brought the message there can be logged after it
    assert any(e["event"] == "mta.failed" and e.get("report") == "none" for e in lost["last_events"]), lost
    replay = xcon(*docblocks.adapted(replay_doc, {"SEED": str(first["seed"])}, add=("--expect-loss", "--json")),
                  run_dir=tmp_path, timeout=300)
    assert replay.returncode == 0, f"campaign seed {SEED}: the replay of trial {first['seed']} lost nothing"


@pytest.mark.long
@pytest.mark.parametrize("command", CAMPAIGNS[2:], ids=lambda c: c.split("--mta-build ")[1].split()[0])
def test_fixed_builds_lose_nothing_under_faults(command, tmp_path):
    """The doc's campaigns of sp4 (link faults, pauses, lag) and reroute (kills, at move steps too,
    a move's source down, the feed cut, drops), with TRIALS trials and no extremes."""
    trials = command.split("--trials ")[1].split()[0]
    proc = xcon(*docblocks.adapted(command, {f"--trials {trials}": f"--trials {TRIALS}"},
                                   add=("--seed", str(SEED), "--no-extremes", "--json")), run_dir=tmp_path, timeout=600)
    result = json.loads(proc.stdout)
    totals = result["totals"]
    assert proc.returncode == 0 and totals["lost"] == totals["duplicated"] == totals["pending"] == 0, \
        f"campaign seed {SEED}: {command}: {totals} {result.get('replay')}"
    assert totals["trials"] == TRIALS and totals["pairs"] > 0


MOVE_FAULTS = ("kill_at_step", "move_source_down")


@pytest.mark.parametrize("build", ["sp4", "reroute"])
def test_fixed_builds_lose_nothing_and_leave_no_lock_when_moves_meet_crashes(build, tmp_path):
    """Kills at move steps (the orchestrator's own included) and moves whose source store is down
    or paused: the campaign's judge reads the mailboxes and the locks too."""
    worlds = (draw_world(seed, build, MOVE_FAULTS, moves=2, extremes=False)
              for seed in chaos.trial_seeds(SEED + 7 + (build == "reroute"), 100))
    aimed = [w for w in worlds if any(e.get("kind") == "kill_at_step" or "source_down" in e for e in w.events)]
    for i, world in enumerate(aimed[:max(1, TRIALS // 2)]):  # worlds that drew at least one of them
        result = chaos.run_trial(world, tmp_path / f"t{i}")
        assert not result.broken and not result.error, f"campaign seed {SEED}: {describe(result, build, MOVE_FAULTS)}"
        assert result.pairs > 0 and result.stale_locks == []


@pytest.mark.long
@pytest.mark.skipif(not (os.path.exists("/usr/sbin/dovecot") and os.geteuid() == 0),
                    reason="IMAP users need Debian's dovecot-imapd and root (.ci/run installs it and runs as root)")
def test_the_outside_world_and_imap_users_cost_sp4_nothing(tmp_path):
    """Issue 34's campaign, one world of it: senders outside the organisation (one with an address
    in UTF-8) through each server's IMS, users writing outside, a smarthost that refuses an address
    for good and is down twice, IMAP users filing and expunging while users are moved 19 times."""
    seed, faults = 5, ("kill", "pause", "lag")
    world = draw_world(seed, "sp4", faults, via="smtp", imap=True)
    sends = [e for e in world.events if e["do"] == "send"]
    assert [e for e in sends if not e["sender"].isascii()] and world.outside["down"], "the world this test is about"
    assert {e["act"] for e in world.events if e["do"] == "imap"} >= {"file", "expunge"}
    proc = xcon("chaos", "--via", "smtp", "--imap", "--replay", str(seed), "--faults", ",".join(faults), "--json",
                run_dir=tmp_path, timeout=300)
    (trial,) = json.loads(proc.stdout)["trials"]
    print(f"seed {seed}: {trial['counts']}, by users {trial['by_users']}, relayed out {trial['relayed_out']}, "
          f"imap {trial['imap_acts']} acts {trial['imap_refused']} refused, error {trial['error']}")
    assert proc.returncode == 0 and not trial["broken"] and not trial["error"], trial["violations"]
    assert trial["counts"]["lost"] == trial["counts"]["pending"] == 0
    # the refused address's NDR came back to its sender; the users filed or expunged what they read
    assert trial["counts"]["ndr"] > 0 and trial["by_users"] > 0, trial
