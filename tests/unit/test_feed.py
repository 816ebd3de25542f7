"""An MTA's side of the directory's feed (nodes/mta/feed.py) in the MTA core: the snapshot it
asks for and asks again, a snapshot that is not the one asked for, a resync at the USN it has,
a gap's snapshot whose entries wake it when due, and each change applied said whole. The MTA's
whole mutation run (docs/testing.md) changed each of these with no test failing."""

from __future__ import annotations

from nodes.config import Settings
from nodes.core import Feed
from nodes.mta.core import MtaCore
from nodes.node_settings import of

from .helpers import events, frame, recipient, response, sends
from .test_mta_core import DIRECTORY, make_mta


def test_a_starting_mta_knows_no_usn_and_asks_again_for_an_unanswered_snapshot():
    mta = MtaCore("ex1", of(Settings(("ex1", "ex2"), "sp4", request_timeout_ms=2000), "mta.ex1"), "boot")
    (asked,) = sends(mta.start(1.0), "dir.snapshot")
    status = mta.status(1.0)
    assert (status["ready"], status["cache_usn"], status["received_usn"], status["directory_usn"]) == (False, 0, 0, 0)
    assert mta.next_wakeup() == 3.0, "the snapshot's deadline"
    (again,) = sends(mta.tick(3.0), "dir.snapshot")
    assert again.id != asked.id and mta.next_wakeup() == 5.0
    stray = mta.on_event(response(asked, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 3.1)
    assert stray == [] and not mta.ready, "the answer to a request given up on is not the snapshot"
    ready = mta.on_event(response(again, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 3.2)
    assert mta.ready and [e.fields for e in events(ready, "mta.snapshot")] == [{"usn": 4, "first": True, "scheduled": 0}]


def test_a_resync_at_the_usn_held_is_no_regression_and_a_gap_s_entries_wake_the_mta_when_due():
    mta = make_mta("sp4", lag_ms=1000)  # its cache at USN 4
    resync = mta.on_event(response(mta.feed.ask_snapshot(1.0), "dir.snapshot_reply",
                                   {"usn": 4, "recipients": DIRECTORY}), 1.1)
    assert not events(resync, "mta.directory_regressed") and not events(resync, "mta.ready")
    assert [e.fields for e in events(resync, "mta.snapshot")] == [{"usn": 4, "first": False, "scheduled": 0}]
    gap = mta.on_event(Feed(frame("dir.heartbeat", {"usn": 5})), 2.0)
    (asked,) = sends(gap, "dir.snapshot")
    mta.tick(2.5)
    later = [*DIRECTORY, recipient("erin", "ex2", 5, "carol", True)]
    mta.on_event(response(asked, "dir.snapshot_reply", {"usn": 5, "recipients": later}), 2.6)
    assert mta.next_wakeup() == 3.6, "erin's entry applies after the lag"
    applied = mta.tick(3.6)
    assert [e.fields for e in events(applied, "mta.cache_applied")] == [
        {"usn": 5, "alias": "erin", "home_server": "ex2", "alternate": "carol"}]


def test_a_snapshot_from_a_directory_that_went_back_does_not_make_the_mta_ready_again():
    mta = make_mta("sp4")  # its cache at USN 4, ready
    back = mta.on_event(response(mta.feed.ask_snapshot(1.0), "dir.snapshot_reply",
                                 {"usn": 1, "recipients": [recipient("x", "ex1", 1)]}), 1.1)
    assert [e.event for e in events(back)] == ["mta.directory_regressed"]
