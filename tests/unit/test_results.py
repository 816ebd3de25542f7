"""What the results store keeps of a run (orchestrator/lab/results.py), as the pages show it."""

from __future__ import annotations

import html

from orchestrator.lab.results import scenario_summary


class Case:
    def __init__(self, **fields):
        self.fields = fields

    def to_json(self):
        return dict(self.fields)


def test_a_scenario_run_names_each_case_by_its_name_not_its_build():
    """The workaround and co-recipient cases run the legacy build: the page said `legacy` for
    both (issue 33)."""
    cases = [Case(case=name, build="legacy", alternate_on="same", matches=True, check={"counts": {"lost": 0}})
             for name in ("legacy", "legacy+workaround", "legacy+co-recipient")]
    summary = scenario_summary({"kind": "scenario", "build": "q248839"}, cases)
    assert [c["row"]["case"] for c in summary["cases"]] == ["legacy", "legacy+workaround", "legacy+co-recipient"]


def test_a_campaigns_figures_read_as_words_and_its_axes_have_round_ticks():
    import re

    from orchestrator.serve.pages import campaign_page, round_ticks

    page = campaign_page({"name": "c", "kind": "chaos", "build": "sp4", "seed": 1, "trials": [],
                          "totals": {"trials": 20000, "stale_locks": 0, "broken_trials": 2, "trials_per_minute": 11187}})
    totals = re.search(r'<table id="totals">(.*?)</table>', page, re.S).group(1)
    assert "stale_locks" not in totals and "<th>locks left by no move</th>" in totals and "20,000" in totals
    assert [round_ticks(h) for h in (0, 3, 6.363636364, 140)] == [[0, 1], [0, 1, 2, 3], [0, 2, 4, 6, 8], [0, 50, 100, 150]]


def test_past_the_trace_cap_each_cause_gets_a_trace_before_a_second_of_any(tmp_path, monkeypatch):
    from orchestrator.inspect import trace as trace_mod
    from orchestrator.lab import results

    monkeypatch.setattr(results, "MAX_TRACES", 2)
    monkeypatch.setattr(trace_mod, "story", lambda run_dir, msg_id: [{"event": "x"}])
    monkeypatch.setattr(trace_mod, "svg", lambda story, msg_id: "<svg/>")

    def trial(seed, reason):
        event = {"node": "mta.ex1", "event": "mta.failed", "reason": reason}
        return {"seed": seed, "broken": True, "run_dir": str(tmp_path),
                "violations": [{"outcome": "lost", "msg_id": f"m{seed}", "rcpt": "bob", "last_events": [event]}]}

    summary = {"trials": [trial(1, "moved"), trial(2, "moved"), trial(3, "moved"), trial(4, "soft_deleted")]}
    results.write(tmp_path, summary)
    assert [t["seed"] for t in summary["trials"] if t.get("trace")] == [1, 4]


def test_every_kept_broken_trial_links_a_trace_in_xcon_serve():
    """Past the pictures drawn when the run was kept, a kept trial's trace is drawn on asking; the
    static page beside summary.json, which cannot draw, gives the command that does (issue 33)."""
    from orchestrator.serve.pages import campaign_page

    event = {"node": "mta.ex1", "event": "mta.failed", "reason": "moved"}
    trial = {"seed": 42, "broken": True, "run_dir": "/kept/trial-42", "replay": "xcon chaos --sim --replay 42",
             "pairs": 3, "counts": {"lost": 1},
             "violations": [{"outcome": "lost", "msg_id": "m1", "rcpt": "bob", "last_events": [event]}]}
    summary = {"name": "c", "kind": "chaos", "build": "legacy", "seed": 1, "trials": [trial], "totals": {}}
    assert 'href="/campaigns/c/trace/42"' in campaign_page(summary, trace_base="/campaigns/c/")
    static = campaign_page(summary, static=True)
    assert "trace/42" not in static
    assert "xcon trace m1 --run-dir /kept/trial-42 --svg trace-42.svg" in static
    trial["violations"][0]["msg_id"], trial["run_dir"] = "ex2~1c8c6b~2", "/kept/a b"  # quoted for a shell
    assert "xcon trace 'ex2~1c8c6b~2' --run-dir '/kept/a b' --svg" in html.unescape(campaign_page(summary, static=True))
    trial["trace"] = "trace-42-m1.svg"  # drawn when kept: the file, not the command
    static = campaign_page(summary, static=True)
    assert 'href="trace-42-m1.svg"' in static and "xcon trace m1" not in static
