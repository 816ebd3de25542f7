"""Issue 31, part 2: a trial that cannot end is a finding (`stuck`), and a campaign stopped by a
signal leaves no process behind.

The livelock (orchestrator.lab.plants' "livelock": a delivery taken for a deferral and retried a
microsecond on, for ever, as the bug issue 31 found did) is planted in the campaign's own
processes by a sitecustomize module on PYTHONPATH. It touches a flag file when it spins, which is
the event the signal tests wait on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import environs, patience

PLANT = '''
import os
from pathlib import Path

from orchestrator.lab.plants import plant

PLANTED = plant("livelock")  # kept: a context manager collected would take the plant out
PLANTED.__enter__()  # for the whole process, and the workers it forks
from nodes.mta.core import MtaCore  # noqa: E402

spinning = MtaCore._response


def _response(self, frame, now):
    actions = spinning(self, frame, now)
    if frame.type == "store.result" and actions == []:  # the plant's retry a microsecond on
        Path(os.environ["XCON_PLANT_FLAG"]).touch()
    return actions


MtaCore._response = _response
'''
XCON = [sys.executable, "-m", "orchestrator.cli"]


def planted(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "plant").mkdir()
    (tmp_path / "plant" / "sitecustomize.py").write_text(PLANT)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "plant"), "XCON_PLANT_FLAG": str(tmp_path / "spinning"),
            "COLUMNS": "100", "XCON_DEBUG": ""}


def test_a_livelock_is_a_stuck_finding_with_the_pairs_it_was_moving_and_its_replay(tmp_path):
    env = planted(tmp_path)
    run = subprocess.run([*XCON, "chaos", "--sim", "--trials", "2", "--workers", "1", "--seed", "7",
                          "--mta-build", "sp4", "--stuck-after", "5000", "--json", "--run-dir", str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    out = json.loads(run.stdout)
    assert out["totals"]["stuck_trials"] == 2 and out["totals"]["broken_trials"] == 2
    stuck = out["first_broken"]["stuck"]
    assert "5,000 events since the last step of its schedule" in stuck["why"], stuck
    assert stuck["moving"] and "tries" in stuck["moving"][0], "the pairs it was still moving, with their tries"
    assert "--stuck-after 5000 --replay" in out["replay"]
    again = subprocess.run([*XCON, *out["replay"].split()[1:], "--json", "--run-dir", str(tmp_path / "run")], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and json.loads(again.stdout)["first_broken"]["stuck"]["why"] == stuck["why"]


def ours(flag: Path) -> list[int]:
    """The processes (a campaign and its workers) whose environment names this test's flag."""
    mark = f"XCON_PLANT_FLAG={flag}".encode()
    return [pid for pid, environ in environs() if mark in environ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_campaign_stopped_by_a_signal_ends_its_workers(tmp_path, sig):
    env = planted(tmp_path)
    flag = Path(env["XCON_PLANT_FLAG"])
    campaign = subprocess.Popen([*XCON, "chaos", "--sim", "--trials", "40", "--workers", "2", "--seed", "7",
                                 "--mta-build", "sp4", "--run-dir", str(tmp_path / "run")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + patience(60)
        while not flag.exists():  # a worker is in the livelock: it reads nothing its parent sends
            assert campaign.poll() is None and time.monotonic() < deadline, "the plant never spun"
            time.sleep(0.05)
        assert len(ours(flag)) == 3, "the campaign and its two workers"
        campaign.send_signal(sig)
        _, err = campaign.communicate(timeout=30)
        assert campaign.returncode == (130 if sig == signal.SIGINT else 128 + sig), err
        deadline = time.monotonic() + patience(10)
        while ours(flag) and time.monotonic() < deadline:  # killed; reaped by init as orphans
            time.sleep(0.05)
        assert ours(flag) == [], f"left behind after {sig.name}"
    finally:
        for pid in ours(flag):
            os.kill(pid, signal.SIGKILL)
        if campaign.poll() is None:
            campaign.kill()
            campaign.wait()


def test_a_world_of_exchange_5_5s_own_timings_settles_in_them_and_is_not_called_stuck(tmp_path):
    """Exchange 5.5's profile at its own speed retries every 600 s: a bound of the lab's 90 s
    called three trials in four of such a campaign stuck. The bound grows with the profile's
    waits and the time scale; the lab's stays 90 s."""
    from orchestrator.lab import chaos
    from orchestrator.lab.worlds import SETTLE_S, draw_world, settle_s
    from orchestrator.sim.world import Network

    assert settle_s(draw_world(1, "sp4")) == SETTLE_S == 90
    assert settle_s(draw_world(1, "sp4", time_scale=10)) == 900
    assert settle_s(draw_world(1, "sp4", profile="exchange55", time_scale=0.01)) == 540  # its retry: 6 s
    world = draw_world(1337671203, "sp4", profile="exchange55")  # a trial the 90 s called stuck
    assert settle_s(world) == 54_000
    result = chaos.run_trial(world, tmp_path / "run", sim=Network(), dump=False)
    assert (result.stuck, result.broken, result.lost) == (None, False, 0), result.stuck
    assert result.counts.get("delivered"), f"its mail got through, in its own time: {result.counts}"
