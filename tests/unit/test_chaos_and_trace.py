"""Worlds, link faults, traces and exports, without processes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from nodes.faults import Faults, LinkRule
from orchestrator.lab.worlds import DEFAULT_FAULTS, FAULTS, draw_world
from orchestrator.inspect import trace


def test_a_world_is_a_function_of_its_seed():
    a = draw_world(42, "sp4", DEFAULT_FAULTS)
    assert a == draw_world(42, "sp4", DEFAULT_FAULTS)
    assert a != draw_world(43, "sp4", DEFAULT_FAULTS)
    assert [e["at"] for e in a.events] == sorted(e["at"] for e in a.events)
    assert {e["do"] for e in a.events} >= {"send", "move"}
    assert not [e for e in draw_world(42, "sp4", ()).events if e["do"] == "fault"]


def test_worlds_draw_every_extreme_now_and_then_and_no_fault_they_are_not_given():
    worlds = [draw_world(s, "sp4", FAULTS) for s in range(300)]
    drawn = [e for w in worlds for e in w.events if "extreme" in e]
    assert {e["extreme"] for e in drawn} == {"outage", "moves", "largest"}
    outages = [(w, e) for w in worlds for e in w.events if e.get("extreme") == "outage"]
    assert all(e["restart_after"] * 1000 > 2 * w.expire_ms for w, e in outages), "down past a report's time-out"
    assert all(len(e["msg_id"]) == 200 for e in drawn if e["extreme"] == "largest")
    quiet = [draw_world(s, "sp4", ()) for s in range(300)]
    assert not [e for w in quiet for e in w.events if e["do"] == "fault"]
    plain = [draw_world(s, "sp4", FAULTS, extremes=False) for s in range(30)]
    assert not [e for w in plain for e in w.events if "extreme" in e]


def test_worlds_draw_every_fault_kind_they_are_given():
    worlds = [draw_world(s, "sp4", FAULTS) for s in range(30)]
    kinds = {e["kind"] for w in worlds for e in w.events if e["do"] == "fault"}
    # a source store down is drawn onto a move, not as an event of its own
    kinds |= {"move_source_down" for w in worlds for e in w.events if "source_down" in e}
    assert kinds == set(FAULTS)
    downs = [e["source_down"] for w in worlds for e in w.events if "source_down" in e]
    assert {d["how"] for d in downs} == {"kill", "pause"}
    assert min(d["seconds"] for d in downs) < 3 < 12.5 < max(d["seconds"] for d in downs), \
        "shorter and longer than the lock step's tries"


def test_link_faults_plan_drop_duplicate_delay_reorder():
    f = Faults(1)
    assert f.plan("x", 10.0) == [10.0]
    f.set_link("x", LinkRule(drop=1.0))
    assert f.plan("x", 10.0) == []
    f.set_link("x", LinkRule(duplicate=1.0))
    assert len(f.plan("x", 10.0)) == 2
    f.set_link("x", LinkRule(delay_ms=200, jitter_ms=100))
    assert all(10.2 <= t <= 10.3 for t in f.plan("x", 10.0))
    f.set_link("x", LinkRule(reorder=1.0))
    assert f.plan("x", 10.0)[0] >= 10.05
    f.set_link("x", LinkRule(drop=1.0, until=11.0))
    assert f.plan("x", 11.5) == [11.5] and "x" not in f.links


EVENTS = [
    {"ts": 1.0, "node": "mta.ex2", "event": "mta.accepted", "hlc": [1000, 0], "msg_id": "m1", "rcpts": ["bob", "carol"],
     "alt_of": {"carol": "bob"}, "sender": "alice"},
    {"ts": 1.1, "node": "mta.ex1", "event": "mta.transfer_in", "hlc": [1100, 0], "msg_id": "m1", "rcpts": ["bob"],
     "src": "mta.ex2"},
    {"ts": 1.2, "node": "store.ex1", "event": "store.deferred", "hlc": [1200, 0], "msg_id": "m1", "mailbox": "bob",
     "reason": "mailbox locked"},
    {"ts": 1.3, "node": "orchestrator", "event": "fault.injected", "hlc": [1300, 0], "kind": "pause", "target": "mta.ex1"},
    {"ts": 1.4, "node": "directory", "event": "directory.modified", "hlc": [1400, 0], "alias": "bob", "usn": 4,
     "home_server": "ex2"},
    {"ts": 1.5, "node": "mta.ex1", "event": "mta.failed", "hlc": [1500, 0], "msg_id": "m1", "rcpt": "bob", "report": "none",
     "reason": "moved", "why": "legacy per-message report"},
    {"ts": 1.6, "node": "directory", "event": "directory.modified", "hlc": [1600, 0], "alias": "zed", "usn": 5},
]


def test_story_svg_and_perfetto(tmp_path):
    (tmp_path / "logs").mkdir()
    by_node: dict[str, list] = {}
    for e in EVENTS:
        by_node.setdefault(e["node"], []).append(e)
    for node, events in by_node.items():
        (tmp_path / "logs" / f"{node}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    story = trace.story(tmp_path, "m1")
    assert [e["event"] for e in story] == ["mta.accepted", "mta.transfer_in", "store.deferred", "fault.injected",
                                           "directory.modified", "mta.failed"], "zed's change is not part of it"
    lines = list(trace.render_text(story))
    assert "mta.ex2 -> mta.ex1" in lines[1] and "mta.ex1 -> store.ex1" in lines[2]
    assert lines[0].split()[0] == "+0" and lines[-1].split()[0] == "+500", "ms since the message's first event"
    svg = trace.svg(story, "m1")
    root = ET.fromstring(svg)  # well-formed XML
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "DROPPED SILENTLY: bob" in texts and "store.ex1" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}line"))) >= 2 + len(trace.lanes_of(story))
    perf = trace.perfetto(EVENTS)
    names = [e for e in perf["traceEvents"] if e["ph"] == "M"]
    assert len(names) == 5 and sum(e["ph"] == "i" for e in perf["traceEvents"]) == len(EVENTS)
    assert all(isinstance(e["ts"], int) for e in perf["traceEvents"] if e["ph"] == "i")


def test_a_large_campaign_s_plots_show_runs_of_trials_and_keep_the_worst_of_each():
    """20,000 bars took pygal 7 s to draw at the end of each 20,000-trial campaign (and on each
    view of its page in `xcon serve`); past 500 trials a point is a run of them, the worst kept."""
    from orchestrator.serve import pages

    trials = [{"counts": {"lost": 0}, "latency_ms": {"p50": 10, "p99": 20, "max": 30}} for _ in range(1200)]
    trials[700] = {"counts": {"lost": 3}, "latency_ms": {"p50": 10, "p99": 20, "max": 999}}
    (_, bars), (_, lines), *_ = pages.plots({"kind": "chaos", "trials": trials})
    assert "trials, 3 a point (the worst of them)" in bars
    assert bars.count('class="rect reactive tooltip-trigger"') == 2 * 400, "lost and duplicated, 400 points each"
    assert ">3<" in bars and ">999<" in lines, "the one bad trial shows"
