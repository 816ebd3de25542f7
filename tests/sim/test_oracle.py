"""Issue 31, part 1: a bug that makes an NDR or a postmaster copy the facts do not owe is a
finding, by its name, in a simulated trial; the same world without the bug is clean.

Each bug is planted in the MTA's core for one test (monkeypatch), in the form issue 31 found
campaigns blind to: a report given to the postmaster instead of held for its moved originator;
reroute failing a recipient the directory homes on the server that answered; a time-out cut short.
The seeds are worlds the planted bug breaks (found by a campaign over the same faults).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.mta import reports, routing
from orchestrator.lab import chaos
from orchestrator.lab.worlds import draw_world
from orchestrator.sim.world import Network

FAULTS = ("lag", "pause", "delay", "duplicate", "reorder", "kill", "feed_cut")


def postmaster_for_a_moved_originator(monkeypatch):
    held = routing.Routing._not_here

    def not_here(self, msg, pair, now, reason="moved"):
        if msg.ndr_for is not None:  # the bug: a report for a moved originator fails at once
            return self._fail(msg, [pair], reason, now)
        return held(self, msg, pair, now, reason)

    monkeypatch.setattr(routing.Routing, "_not_here", not_here)


def gone_where_the_directory_homes_it(monkeypatch):
    resolved = routing.Routing._resolved

    def gone(self, msg, pair, entry, now):
        if entry is not None and entry["home_server"] == self.server:  # the bug: an NDR, not a retry
            return self._fail(msg, [pair], "gone", now)
        return resolved(self, msg, pair, entry, now)

    monkeypatch.setattr(routing.Routing, "_resolved", gone)


def time_out_cut_short(monkeypatch):
    expires = reports.Reports._expires_at

    def half(self, msg):
        if msg.report is None and msg.ndr_for is None:  # the bug: half the priority's time-out
            return msg.accepted_at + self.settings.expire_s(msg.priority) / 2
        return expires(self, msg)

    monkeypatch.setattr(reports.Reports, "_expires_at", half)


@pytest.mark.parametrize("plant, build, seed, finding, rule", [
    (postmaster_for_a_moved_originator, "sp4", 1716087199, "early_postmaster", "could still be reached"),
    (gone_where_the_directory_homes_it, "reroute", 1064748860, "unjustified_ndr", "reroute never fails"),
    (time_out_cut_short, "sp4", 423729284, "unjustified_ndr", "before its time-out"),
], ids=["early-postmaster", "reroute-gone", "early-expiry"])
def test_a_planted_unjustified_outcome_is_named(monkeypatch, plant, build, seed, finding, rule):
    print(f"seed {seed} ({build}, faults {','.join(FAULTS)})")
    world = draw_world(seed, build, FAULTS)
    plant(monkeypatch)
    broken = chaos.run_trial(world, Path("/nonexistent/oracle"), sim=Network(), dump=False)
    found = [v for v in broken.violations if v["outcome"] == finding]
    assert found and broken.broken, [v["outcome"] for v in broken.violations]
    assert rule in found[0]["why"] and found[0]["evidence"], found[0]
    monkeypatch.undo()
    clean = chaos.run_trial(world, Path("/nonexistent/oracle"), sim=Network(), dump=False)
    assert not clean.broken and clean.counts[finding] == 0, clean.violations
