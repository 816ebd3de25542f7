"""The docs' steps, run as written, and the outputs they show, compared with a run (issue 23).

tests/unit/test_docs.py checks that every command the docs show parses and that every block of
them names the test that runs it; this file runs README.md's "by-hand" and "check" sample,
docs/chaos.md's "faults-by-hand" and "explore" sample, and docs/EXCHANGE55.md's "exchange55".
"""

from __future__ import annotations

import json
import re

import pytest

from .. import docblocks
from ..conftest import xcon


@pytest.mark.long
def test_the_readme_steps_by_hand_lose_the_message_and_check_prints_what_the_readme_shows(tmp_path):
    lines = docblocks.commands("README.md", "by-hand")
    try:
        ran, proc = docblocks.run(docblocks.without(lines, ". .venv/bin/activate"), tmp_path)
    finally:
        xcon("down", run_dir=tmp_path / ".xcon")
    failed = [(c, rc) for c, _, rc in ran if rc != 0 and c != "xcon check"]
    assert not failed and len(ran) == len(lines) - 1, f"{failed}\n{proc.stdout}\n{proc.stderr}"
    printed = {c: (out, rc) for c, out, rc in ran}
    check, rc = printed["xcon check"]
    m = re.search(r"^LOST (\S+) -> bob", check, re.M)
    assert rc == 1 and m, check
    msg = m.group(1)
    assert msg in printed["xcon mailbox carol"][0], "the alternate has the message"
    assert printed["xcon mailbox bob"][0] == "mailbox bob on ex2: 0 message(s)\n", "bob (now on ex2) does not (and no empty table)"
    assert printed["xcon mailbox alice"][0].startswith("mailbox alice on ex2: 0 message(s)"), "and alice got no NDR"
    want = [line.replace("$M", msg) for line in docblocks.sample("README.md", "check")]
    assert check.rstrip("\n").split("\n") == want
    assert (tmp_path / "lost.svg").read_text().lstrip().startswith("<"), "the trace's picture was written"
    # issue 20: the story in the order it happened. By Lamport clocks alone, the move's later
    # steps sorted above the send they came 2.5 s after; by hybrid logical clocks they follow it
    story = json.loads(xcon("trace", msg, "--json", run_dir=tmp_path / ".xcon", check=True).stdout)
    rows = [(e["node"], e["event"], e.get("step")) for e in story]
    accepted = rows.index(("mta.ex2", "mta.accepted", None))
    later = [i for i, r in enumerate(rows) if r[1] == "move.step" and r[2] in ("set_home", "open_target", "release")]
    assert later and min(later) > accepted, rows
    times = [e["hlc"] for e in story]
    assert times == sorted(times), "rows in clock order"


@pytest.mark.long
def test_the_faults_by_hand_each_do_what_they_say_and_clear_ends_them(tmp_path):
    run = tmp_path / ".xcon"
    xcon("up", "--fresh", run_dir=run, check=True)
    try:
        xcon("user", "add", "carol", "--server", "ex2", run_dir=run, check=True)
        xcon("send", "--from", "carol", "--to", "carol", run_dir=run, check=True)  # mta.ex2's queue log has a record
        xcon("wait", run_dir=run, check=True)
        lines = docblocks.commands("docs/chaos.md", "faults-by-hand")
        ran, proc = docblocks.run(lines, tmp_path)
        failed = [(c, rc, out) for c, out, rc in ran if rc != 0]
        assert not failed and len(ran) == len(lines), f"{failed}\n{proc.stdout}\n{proc.stderr}"
        (one_way,) = [out for c, out, rc in ran if "--one-way" in c]
        assert "drop on mta.ex1 -> mta.ex2 for" in one_way, one_way  # it said <-> of a one-way fault (issue 33)
        faults = [(e.get("kind"), e.get("target") or None) for e in map(json.loads, xcon(
            "logs", "--event", "fault.injected", "--json", run_dir=run, check=True).stdout.splitlines())]
        for kind, target in [("delay", "mta.ex1"), ("drop", "mta.ex1"), ("pause", "store.ex2"),
                             ("feed_cut", "mta.ex2"), ("lag", "mta.ex1"), ("clock", "store.ex1"), ("kill", "mta.ex1"), ("restart", "mta.ex1"),
                             ("kill_at_step", "store.ex2"), ("corrupt", "mta.ex2"),
                             ("hold_at_step", None), ("release", None), ("clear", None)]:
            assert (kind, target) in faults, (kind, target, faults)
        status = json.loads(xcon("status", "--json", run_dir=run, check=True).stdout)
        assert all(n["alive"] for n in status["nodes"].values()), "kill && restart, and corrupt, restart their node"
        assert status["nodes"]["orchestrator"]["status"]["armed"] == [], "clear ended the kill at a step"
        assert all("faults" not in n["status"] for n in status["nodes"].values()), "clear ended every node's faults"
        assert (tmp_path / "trace.json").exists()
    finally:
        xcon("down", run_dir=run)


def test_the_explore_sample_in_docs_chaos_is_what_explore_prints(tmp_path):
    (command,) = [c for c in docblocks.commands("docs/chaos.md", "simulator") if c.startswith("xcon sim explore")]
    proc = xcon(*docblocks.adapted(command), run_dir=tmp_path / ".xcon", timeout=180, env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert max(map(len, proc.stdout.splitlines())) <= 80 and "…" not in proc.stdout, "the map whole at 80 columns"
    kept = tmp_path / ".xcon" / "results" / "latest"  # kept, for xcon serve's heat map
    summary = json.loads((kept / "summary.json").read_text())
    assert summary["kind"] == "explore" and any("X" in r["strip"] for r in summary["rows"])
    assert (kept / "index.html").read_text().count("<rect") >= sum(len(r["strip"]) for r in summary["rows"])
    printed = [line.rstrip() for line in proc.stdout.splitlines()]
    missing = [line for line in docblocks.sample("docs/chaos.md", "explore") if line.rstrip() not in printed]
    assert not missing, "\n".join(missing + ["-- printed --"] + printed)


def test_the_exchange55_profile_steps_match_the_kb_and_start_a_cluster_of_sites(tmp_path):
    lines = docblocks.commands("docs/EXCHANGE55.md", "exchange55")
    try:
        ran, proc = docblocks.run(lines, tmp_path, timeout=280)
    finally:
        xcon("down", run_dir=tmp_path / ".xcon")
    assert [rc for _, _, rc in ran] == [0] * len(lines), proc.stdout + proc.stderr
    scenario, up = ran[0][1], ran[1][1]
    row = next(line for line in scenario.splitlines() if line.startswith("│ legacy"))
    assert [c.strip() for c in row.strip("│").split("│")][2:7] == ["yes", "no", "no", "1 lost", "yes"], scenario
    assert "profile exchange55 x0.01" in scenario, scenario
    assert "sites HQ: ex1 ex2, BRANCH: ex3" in up, up
