"""The mutation score per core from mutmut's results (orchestrator.lab.mutation)."""

import json
import subprocess
import sys

from orchestrator.lab.mutation import score, tally


def test_the_score_counts_timeouts_as_killed_and_leaves_out_the_equivalent_and_the_not_run(tmp_path):
    meta = tmp_path / "nodes" / "mta" / "router.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"a": 1, "b": 0, "c": 36, "d": 33, "e": 0, "f": None}
    meta.write_text(json.dumps({"exit_code_by_key": {f"nodes.mta.router.x\u01c1Router\u01c1decide__mutmut_{k}": v
                                                     for k, v in codes.items()}}))
    (tmp_path / "nodes" / "imap").mkdir()
    (tmp_path / "nodes" / "imap" / "record.py.meta").write_text(json.dumps({"exit_code_by_key": {"x": 0}}))
    counts, survivors = tally(tmp_path, {"nodes.mta.router.x.Router.decide__mutmut_e": "a log's words"})
    mta = counts["mta"]
    assert (mta["mutants"], mta["killed"], mta["survived"], mta["no tests"], mta["equivalent"], mta["not run"]) == \
        (6, 2, 1, 1, 1, 1)
    assert score(mta) == 50.0, "2 killed of the 4 judged: the survivor and the unreached count against it"
    assert survivors["mta"] == ["nodes.mta.router.x.Router.decide__mutmut_b",
                                "nodes.mta.router.x.Router.decide__mutmut_d"]
    assert score(counts["store"]) is None and sum(c["mutants"] for c in counts.values()) == 6, "not a core: left out"


def test_without_a_mutmut_run_it_says_what_to_do(tmp_path):
    run = subprocess.run([sys.executable, "-m", "orchestrator.lab.mutation"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 3 and "run `mutmut run` first" in run.stderr
