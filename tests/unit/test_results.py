"""What the results store keeps of a run (orchestrator/lab/results.py), as the pages show it."""

from __future__ import annotations

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
