"""Issue 20: the viewers a mail administrator expects, on real processes: xcon queue (mailq),
xcon show (postcat), xcon fault list (toxiproxy-cli list), xcon --version."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.cluster import Cluster
from protocol import VERSION

from ..conftest import wait_for_event, xcon, xcon_json


def test_queue_show_and_fault_list_on_a_running_and_a_stopped_cluster(tmp_path):
    run = tmp_path / "run"
    xcon("up", "--fresh", "--mta-build", "sp4", run_dir=run, check=True)
    try:
        cluster = Cluster.attach(run)  # the set-up through the API: the viewers are what is tested
        try:
            for alias, server in (("alice", "ex2"), ("bob", "ex1")):
                cluster.add_user(alias, server)
            assert xcon_json("fault", "list", run_dir=run) == []
            cluster.fault("pause", "store.ex2", seconds=600)
            cluster.fault("clock", "store.ex1", offset_ms=-3000)
            cluster.fault("lag", "mta.ex1", lag_ms=4000, jitter_ms=0)
            cluster.fault("delay", "mta.ex1", "mta.ex2", delay_ms=100, jitter_ms=0, seconds=10)
            cluster.fault("hold_at_step", "", step="copy")
        finally:
            cluster.close()
        kinds = {(r["where"], r["kind"]) for r in xcon_json("fault", "list", run_dir=run)}
        assert kinds == {("store.ex2", "pause"), ("store.ex1", "clock"), ("mta.ex1", "lag"),
                         ("mta.ex1 -> mta.ex2", "link"), ("mta.ex2 -> mta.ex1", "link"),
                         ("orchestrator", "hold_at_step")}, kinds
        table = xcon("fault", "list", run_dir=run, env={"COLUMNS": "80"}, check=True).stdout
        assert "6 fault(s) in force" in table and max(map(len, table.splitlines())) <= 80
        status = xcon("status", run_dir=run, env={"COLUMNS": "80"}, check=True).stdout
        assert max(len(line) for line in status.splitlines() if str(run) not in line) <= 80, status
        assert "no answer in 2 s (paused" in " ".join(status.split()), "the paused store, said as such"

        # alice's store is paused: bob's message waits in mta.ex2's queue, for alice
        msg = xcon("send", "--from", "bob", "--to", "alice", "--subject", "held", run_dir=run, check=True).stdout.strip()
        wait_for_event(run, node="mta.ex2", event="mta.transfer_in", msg_id=msg)  # over the delayed link
        queued = xcon_json("queue", run_dir=run)
        (item,) = queued["mta.ex2"]["items"]
        assert (item["msg_id"], item["rcpt"], item["kind"], queued["mta.ex2"]["source"]) == (msg, "alice", "message", "live")
        assert item["state"] in ("queued", "delivering", "deferred")
        # mta.ex1 holds the pair until mta.ex2's ack comes back over the delayed link, then nothing
        assert [(i["msg_id"], i["state"]) for i in queued["mta.ex1"]["items"]] in ([], [(msg, "transferring")])
        assert msg in xcon("queue", "--mta", "mta.ex2", run_dir=run, env={"COLUMNS": "80"}, check=True).stdout
        wide = xcon("queue", "--wide", "--mta", "mta.ex2", run_dir=run, env={"COLUMNS": "80"}, check=True).stdout
        assert f"message id  {msg}" in wide and "priority    normal" in wide, "too wide for 80: a pair at a time"

        xcon("fault", "clear", run_dir=run, check=True)
        assert xcon_json("fault", "list", run_dir=run) == [], "clear ends every fault, the lag and the offset too"
        xcon("wait", run_dir=run, check=True)
        shown = xcon_json("show", msg, run_dir=run)
        assert [(p["where"], p["server"], p["mailbox"]) for p in shown["places"]] == [("mailbox", "ex2", "alice")]
        assert ["Subject", "held"] in shown["message"]["headers"]

        # an NDR, rendered as the report it is
        said = xcon("user", "set", "bob", "--reject-from", "alice", run_dir=run, check=True).stdout
        assert said == "bob: home ex1, alternate -, rejects mail from alice, usn 3\n", "the restriction, said"
        listed = xcon_json("user", "list", run_dir=run)
        assert listed["usn"] == 3 and [(u["alias"], u["home_server"], u.get("reject_from")) for u in listed["users"]] == [
            ("alice", "ex2", None), ("bob", "ex1", ["alice"])]
        table = xcon("user", "list", run_dir=run, env={"COLUMNS": "80"}, check=True).stdout
        rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if line.startswith("│")]
        assert rows == [["alice", "ex2", "-", "-", "1"], ["bob", "ex1", "-", "alice", "3"]], table
        assert table.startswith("2 recipient(s) in the directory, usn 3\n")
        refused = xcon("send", "--from", "alice", "--to", "bob", "--subject", "a subject as long as people write them, "
                       "so that the table must fold it", run_dir=run, check=True).stdout.strip()
        xcon("wait", run_dir=run, check=True)
        text = xcon("show", refused, run_dir=run, env={"COLUMNS": "80"}, check=True).stdout
        box = xcon("mailbox", "alice", run_dir=run, env={"COLUMNS": "80"}, check=True).stdout
        ids = [m["msg_id"] for m in xcon_json("mailbox", "alice", run_dir=run)["messages"]]
        assert len(ids) == 2 and all(i in box for i in ids) and "[NDR]" in box and max(map(len, box.splitlines())) <= 80
        assert f"in mailbox alice on ex2 (its report {refused}~ndr~" in text
        lines = text.splitlines()  # the report's fields a line each, as RFC 3464 writes them (issue 33)
        assert {"  Final-Recipient: rfc822; bob@xcon.test", "  Action: failed", "  Status: 5.7.1"} <= set(lines), text
        assert any(line.startswith("Reporting-MTA: ") for line in lines), text
    finally:
        xcon("down", run_dir=run)
    offline = xcon_json("queue", run_dir=run)
    assert {m: q["source"] for m, q in offline.items()} == {"mta.ex1": "queue log", "mta.ex2": "queue log"}
    assert xcon("show", msg, run_dir=run, check=True).stdout.startswith("in mailbox alice on ex2"), "a stopped cluster"
    missing = xcon("show", "nosuch", run_dir=run)
    assert missing.returncode == 1 and "nosuch is in no mailbox and no queue" in missing.stderr


def test_version_and_the_exit_codes_of_nothing_found(tmp_path):
    proc = xcon("--version", check=True)
    assert proc.stdout.startswith("xcon ") and proc.stdout.split()[1][0].isdigit()
    about = json.loads(xcon("--version", "--json", check=True).stdout)
    assert about["version"] == proc.stdout.split()[1] and about["protocol"] == VERSION
    stray = xcon("--json")
    assert stray.returncode == 2 and "--json goes after a command" in stray.stderr
    stated = " ".join(xcon("--help", check=True).stdout.split())
    assert "Exit codes: 0 done; 1 a finding" in stated and "2 a usage error" in stated and "3 could not do it" in stated
    never = xcon("down", run_dir=tmp_path / "never")
    assert never.returncode == 0 and "nothing to stop" in never.stdout, "down where nothing ever ran is not an error"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "mta.ex1.jsonl").write_text('{"event": "log.created", "node": "mta.ex1", "hlc": [1, 0]}\n')
    nosuch = xcon("logs", "--msg", "nosuch", run_dir=tmp_path)
    assert nosuch.returncode == 1 and "no event of message nosuch" in nosuch.stderr, "as trace and show say"


def test_tables_at_80_columns_cut_no_number_and_no_name(tmp_path):
    """Issue 20: at 80 columns the chaos summary showed `27…` and `bu…`, and `xcon scenario
    list` cut the case names `--case` needs (`legacy+wor…`)."""
    from orchestrator.lab.family import FAMILY

    narrow = {"COLUMNS": "80"}
    listing = xcon("scenario", "list", env=narrow, check=True).stdout
    assert "…" not in listing and max(map(len, listing.splitlines())) <= 80
    words = set(listing.replace(",", " ").split())
    assert all(case in words for a in FAMILY.values() for case in a.cases), "every case name whole"
    campaign = xcon("chaos", "--sim", "--trials", "5", "--seed", "1", run_dir=tmp_path, env=narrow, check=True).stdout
    kept = campaign.split("kept for `xcon serve` in\n", 1)[1].splitlines()[0].strip()
    assert (tmp_path / "results" / "latest").resolve() == Path(kept), "the campaign's folder, whole"
    assert "…" not in campaign and max(len(line) for line in campaign.splitlines() if kept not in line) <= 80, campaign
    assert "│ pairs " in campaign and "│ broken trials " in campaign


def test_the_kb_table_is_whole_at_80_columns(tmp_path):
    """The README's main job draws its table at 80 columns, headers broken between words and no
    word cut, not a lone "?" (issue 33); the simulator runs it, the table is the same code's."""
    proc = xcon("scenario", "q248839", "--all", "--sim", run_dir=tmp_path, env={"COLUMNS": "80"}, check=True)
    lines = proc.stdout.splitlines()
    wide = [line for line in lines if len(line) > 80 and str(tmp_path) not in line]  # a path is whole, to copy
    assert not wide, wide
    header = [line for line in lines if line.startswith("┃")]
    cells = {c.strip() for line in header for c in line.strip("┃").split("┃")}
    assert len(header) <= 3 and "?" not in cells and {"case", "check"} <= cells, header


def test_a_family_scenario_is_whole_at_80_columns(tmp_path):
    """`xcon scenario q172364` at 80 columns broke 'delivere|d?' and 'director|y' in its table and
    ran its bug-and-fix line to 150 columns."""
    proc = xcon("scenario", "q172364", "--all", "--sim", run_dir=tmp_path, env={"COLUMNS": "80"}, check=True)
    lines = [line for line in proc.stdout.splitlines() if str(tmp_path) not in line]
    assert max(map(len, lines)) <= 80, proc.stdout
    assert "delivered?" in proc.stdout and "asks the directory on 'not here'" in proc.stdout, proc.stdout
