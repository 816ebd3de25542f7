"""Broken trials grouped by cause (issue 33): the rule a trial broke and the decision that broke
it, one row a cause on the campaign's page and in `xcon chaos`, with the smallest trial to read
first and the rest behind a fold."""

from __future__ import annotations

import copy
import re

from orchestrator.lab import spec as campaigns
from orchestrator.lab.findings import by_cause, cause_of
from orchestrator.serve.pages import campaign_page


def test_hundreds_of_broken_trials_of_two_causes_are_two_rows(tmp_path):
    # a legacy campaign whose 21 broken trials break two ways (seed 5: the move's stale cache,
    # and the soft-deleted mailbox), each trial then seen fifteen times over with seeds of its own
    done = campaigns.run(campaigns.CampaignSpec(5, trials=40, build="legacy", sim=True, workers=1), tmp_path)
    broken = [r.to_json() for r in done.results if r.broken]
    assert len(broken) == 21, [r.seed for r in done.results if r.broken]
    # the smallest trial of each cause is kept, for its row's trace (besides the first broken one)
    kept = {t["seed"] for t in broken if t["run_dir"]}
    assert {c["smallest"]["seed"] for c in by_cause(broken)} <= kept and len(kept) <= 3, kept
    many = []
    for copy_no in range(15):
        for t in broken:
            t = copy.deepcopy(t)
            t["seed"] = t["seed"] * 100 + copy_no
            for v in t["violations"]:
                v["msg_id"] = f"{v['msg_id']}-{copy_no}"  # ids differ from trial to trial; causes do not
            many.append(t)
    causes = by_cause(many)
    assert [(c["count"], c["cause"]) for c in causes] == [
        (210, "lost: mta.failed (moved, report none)"), (105, "lost: mta.failed (soft_deleted, report none)")]
    smallest = causes[0]["smallest"]
    moved = [t for t in many if cause_of(t["violations"], t["stale_locks"], t["stuck"]) == causes[0]["cause"]]
    assert len(moved) == 210 and smallest == min(moved, key=lambda t: (t["events"], t["seed"]))
    page = campaign_page({"name": "c", "kind": "chaos", "build": "legacy", "seed": 5, "trials": many,
                          "totals": {"trials": len(many), "broken_trials": len(many)}})
    table = re.search(r'<table id="causes">(.*?)</table>', page, re.S).group(1)
    assert table.count("<tr>") == 3, "a header and one row a cause"
    assert "the other 209" in table and "the other 104" in table and str(smallest["seed"]) in table
