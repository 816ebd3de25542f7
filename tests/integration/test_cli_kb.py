"""The KB's conditions by hand through the CLI, for each MTA build, on real processes."""

from __future__ import annotations

import json

import pytest

from nodes.config import ClusterConfig
from orchestrator.processes import pid_alive

from .. import docblocks
from ..conftest import SEED, wait_for_event, xcon, xcon_json



@pytest.mark.parametrize("build", ["legacy", "sp4", "reroute"])
def test_move_while_mail_flows(build, tmp_path):
    run = tmp_path / "run"
    xcon("up", "--mta-build", build, "--replication-lag-ms", "1500", "--replication-jitter-ms", "200",
         "--retry-ms", "5000", "--seed", str(SEED), run_dir=run, check=True)
    try:
        xcon("user", "add", "carol", "--server", "ex1", "--no-wait", run_dir=run, check=True)
        xcon("user", "add", "alice", "--server", "ex2", "--no-wait", run_dir=run, check=True)
        xcon("user", "add", "bob", "--server", "ex1", "--alternate", "carol", "--deliver-to-both",
             run_dir=run, check=True)
        # the move waits in its copy step, bob's mailbox locked, until released: a window of the
        # project's own, not a race between a 1.5 s copy and a process start (issue 23)
        xcon("fault", "hold-at-step", "--step", "copy", run_dir=run, check=True)
        move = xcon_json("move", "bob", "--to", "ex2", "--no-wait", run_dir=run)
        wait_for_event(run, event="move.held", move_id=move["move_id"], step="copy")
        msg_id = xcon("send", "--from", "alice", "--to", "bob", "--subject", "during", run_dir=run,
                      check=True).stdout.strip()
        wait_for_event(run, event="mta.deferred", msg_id=msg_id, rcpt="bob")
        xcon("fault", "release", run_dir=run, check=True)
        wait_for_event(run, event="move.done", move_id=move["move_id"])
        xcon("wait", "--timeout", "30", run_dir=run, check=True)

        def ids(alias):
            box = xcon_json("mailbox", alias, run_dir=run)
            return box, [m["msg_id"] for m in box["messages"]]

        bob, bob_ids = ids("bob")
        _, carol_ids = ids("carol")
        alice, _ = ids("alice")
        ndrs = [m for m in alice["messages"] if m["ndr"] and m["ndr_for"] == msg_id]
        assert bob["server"] == "ex2" and msg_id in carol_ids, "the alternate always gets its copy"
        check = xcon("check", run_dir=run)
        report = json.loads(xcon("check", "--json", run_dir=run).stdout)
        if build == "legacy":
            assert msg_id not in bob_ids and not ndrs, "silent loss"
            assert check.returncode == 1 and f"LOST {msg_id} -> bob" in check.stdout
            assert [(v["msg_id"], v["rcpt"]) for v in report["violations"]] == [(msg_id, "bob")]
        elif build == "sp4":
            assert msg_id not in bob_ids and [n["failed"] for n in ndrs] == [["bob"]], "an NDR names bob"
            assert check.returncode == 0 and report["counts"]["ndr"] == 1
        else:
            assert msg_id in bob_ids and not ndrs, "rerouted to bob's new home"
            assert check.returncode == 0 and report["counts"]["ndr"] == 0
        trail = xcon("logs", "--msg", msg_id, "--event", "mta.*", run_dir=run, check=True).stdout
        assert "mta.deferred" in trail and "mta.accepted" in trail and "store.delivered" not in trail
    finally:
        xcon("down", run_dir=run)
    config = ClusterConfig.load(run)
    assert not any(pid_alive(n.get("pid")) for n in config.nodes.values())


@pytest.mark.long
def test_scenario_all_matches_the_kb_and_prints_the_readmes_table(tmp_path):
    """The main job as the README's block "setup" runs it (after its install): its table, row by
    row, is the README's sample "kb-table" (less the seconds)."""
    main_job = docblocks.commands("README.md", "setup")[0].split(" && ")[-1]
    assert main_job == "xcon scenario q248839 --all"
    proc = xcon(*docblocks.adapted(main_job), run_dir=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = [[c.strip() for c in line.strip("│").split("│")][:-1] for line in proc.stdout.splitlines()
               if line.startswith("│")]
    table = docblocks.after_sample("README.md", "kb-table")
    documented = [[c.strip() for c in line.strip().strip("|").split("|")]
                  for line in table.split("\n\n")[0].splitlines()[3:]]
    cases = ["legacy", "sp4", "reroute", "legacy+workaround", "legacy+co-recipient"]
    assert [(r[0], r[1]) for r in printed] == [(c, s) for s in ("ex1", "ex2") for c in cases]
    expected = {"legacy": ["yes", "no", "no", "1 lost"], "sp4": ["yes", "no", "yes", "clean"],
                "reroute": ["yes", "yes", "no", "clean"], "legacy+workaround": ["no", "no", "yes", "clean"],
                "legacy+co-recipient": ["yes", "no", "yes", "clean"]}
    for row in printed:
        assert row[2:] == expected[row[0]] + ["yes"], row
    assert printed == documented
    # kept for xcon serve: the case by its name, the builds and seed it ran, and the command again (issue 33)
    (kept,) = [p for p in (tmp_path / "results").iterdir() if "scenario-q248839" in p.name]
    summary = json.loads((kept / "summary.json").read_text())
    assert (summary["scenario"], summary["build"], summary["seed"]) == ("q248839", "legacy, reroute, sp4", 0)
    assert summary["command"].startswith("xcon scenario q248839 --all")
    assert [c["row"]["case"] for c in summary["cases"]][:5] == cases


def test_legacy_loses_with_the_alternate_on_a_third_server(tmp_path):
    proc = xcon("scenario", "q248839", "--mta-build", "legacy", "--alternate-on", "third", "--json", run_dir=tmp_path,
                timeout=120)
    (r,) = json.loads(proc.stdout)
    assert r["alternate_on"] == "ex3" and (r["alternate_delivered"], r["primary_delivered"], r["ndr_to_originator"]) == \
        (True, False, False), r
    assert r["check"]["counts"]["lost"] == 1 and proc.returncode == 0


def test_sites_show_in_status_and_a_move_across_sites_is_refused(tmp_path):
    run = tmp_path / "run"
    xcon("up", "--servers", "3", "--site", "HQ=ex1,ex2", "--site", "BRANCH=ex3", "--replication-lag-ms", "0",
         "--replication-jitter-ms", "0", "--intersite-lag-ms", "300", run_dir=run, check=True)
    try:
        xcon("user", "add", "bob", "--server", "ex1", run_dir=run, check=True)
        status = " ".join(xcon("status", run_dir=run, check=True).stdout.split())  # prose is wrapped to the width
        assert "sites HQ: ex1 ex2, BRANCH: ex3" in status and "300 ms later" in status
        refused = xcon("move", "bob", "--to", "ex3", run_dir=run)
        assert refused.returncode == 2 and "within its site only" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        moved = xcon("move", "bob", "--to", "ex2", "--json", run_dir=run, check=True)
        assert json.loads(moved.stdout)["step"] == "done"
    finally:
        xcon("down", run_dir=run)


def test_q277911_on_real_processes_the_legacy_move_loses_silently_and_check_sees_it(tmp_path):
    proc = xcon("scenario", "q277911", "--all", "--json", run_dir=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {r["case"]: r for r in json.loads(proc.stdout)}
    legacy = results["legacy-move"]
    assert (legacy["delivered"], legacy["ndr"], legacy["check"]["counts"]["lost"]) == (False, False, 1)
    assert results["sp4-move"]["delivered"] and results["sp4-move"]["check"]["counts"]["lost"] == 0
