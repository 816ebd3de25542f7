"""Issue 19's stories on real processes: a report that outlives an outage, damaged files that are
kept and reported, never cut, and a verdict that never rests on missing evidence.

Most cases damage a copy of one stopped cluster's run-dir (made once for the module): a start
refused over damage starts nothing, so those cases cost no process at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nodes.records import decode_line, encode_line
from orchestrator.cluster.rundir import node_processes

from ..conftest import wait_for_event, xcon, xcon_json
from .test_cli_errors import one_line_error

FAST = ("--replication-lag-ms", "100", "--replication-jitter-ms", "0", "--retry-ms", "200")


def test_a_report_that_outlives_its_originators_outage_goes_to_the_postmaster(tmp_path):
    """Story 1: alice's store was down longer than the NDR's time-out; the NDR expired into nothing."""
    run = tmp_path / "run"
    xcon("up", "--mta-build", "sp4", "--expire-ms", "1000", *FAST, run_dir=run, check=True)
    try:
        xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
        xcon("user", "add", "bob", "--server", "ex2", run_dir=run, check=True)
        xcon("user", "set", "bob", "--reject-from", "alice", run_dir=run, check=True)
        xcon("kill", "store.ex1", run_dir=run, check=True)
        msg = xcon("send", "--from", "alice", "--to", "bob", run_dir=run, check=True).stdout.strip()
        # the report's own time-out (twice the normal one: 2 s) passes while the store is down; its
        # delivery went unanswered, so the MTA asks again until the store says whether it took it
        wait_for_event(run, timeout=30, node="mta.ex1", event="mta.retry",
                       reason="expired: asking whether an earlier attempt landed")
        xcon("restart", "store.ex1", run_dir=run, check=True)
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        gave_up = wait_for_event(run, event="mta.failed", ndr_for=msg, report="postmaster")
        assert gave_up["reason"] == "expired" and gave_up["node"] == "mta.ex1"
        report = json.loads(xcon("check", "--json", run_dir=run).stdout)
        assert report["ok"] and report["counts"]["postmaster"] == 1 and report["counts"]["lost"] == 0, report
        box = xcon_json("mailbox", "postmaster", run_dir=run)
        assert [(m["ndr_for"], m["failed"], m["server"]) for m in box["messages"]] == [(msg, ["bob"], "ex1")]
    finally:
        xcon("down", run_dir=run)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A stopped cluster: carol got m0 (delivered); m1..m5 for bob wait in mta.ex2's queue (his
    store was down)."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    xcon("up", "--mta-build", "sp4", *FAST, run_dir=run, check=True)
    try:
        for alias, server in (("alice", "ex1"), ("bob", "ex2"), ("carol", "ex1")):
            xcon("user", "add", alias, "--server", server, run_dir=run, check=True)
        xcon("send", "--from", "alice", "--to", "carol", "--msg-id", "m0", run_dir=run, check=True)
        xcon("kill", "store.ex2", run_dir=run, check=True)
        for i in range(1, 6):
            xcon("send", "--from", "alice", "--to", "bob", "--msg-id", f"m{i}", run_dir=run, check=True)
        wait_for_event(run, event="mta.transfer_in", msg_id="m5")
        xcon("wait", "--timeout", "0.3", run_dir=run)  # not quiet (bob's store is down): that is the point
        wait_for_event(run, event="store.delivered", msg_id="m0")
    finally:
        xcon("down", run_dir=run, check=True)
    return run


def copy_of(stopped: Path, tmp_path: Path) -> Path:
    """The stopped cluster in a run-dir of its own (cluster.json names its own path)."""
    run = tmp_path / "run"
    shutil.copytree(stopped, run, symlinks=True)
    config = json.loads((run / "cluster.json").read_text())
    config["run_dir"] = str(run)
    for node in config["nodes"].values():
        node["log"] = str(run / "logs" / Path(node["log"]).name)
    (run / "cluster.json").write_text(json.dumps(config))
    return run


def flip(path: Path, at: int) -> bytes:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    path.write_bytes(bytes(data))
    return bytes(data)


def refused_to_start(proc, *needles) -> None:
    one_line_error(proc, 3, *needles)
    assert "nothing was started" in proc.stderr


def test_damage_in_a_queue_log_stops_the_start_and_is_reported_lost_once_accepted(stopped, tmp_path):
    """Story 3: a flipped byte in the middle of a queue log cut every record after it, silently;
    `xcon up` said "0 message(s) taken up" and check called the five messages PENDING."""
    run = copy_of(stopped, tmp_path)
    wal = run / "mta" / "ex2" / "queue.wal"
    damaged = flip(wal, wal.read_bytes().index(b"m3", len(wal.read_bytes()) // 3) + 40)
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "mta/ex2/queue.wal")
    refused_to_start(xcon("up", run_dir=run), "mta/ex2/queue.wal is damaged in the middle", "m3", "--accept-damage")
    assert not node_processes(run) and wal.read_bytes() == damaged, "nothing started, the file untouched"
    try:
        up = xcon("up", "--accept-damage", run_dir=run, check=True)
        assert "damage accepted: mta.ex2 kept mta/ex2/queue.wal aside as queue.wal.damaged-" in up.stdout
        kept = list(wal.parent.glob("queue.wal.damaged-*"))
        assert len(kept) == 1 and kept[0].read_bytes() == damaged
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        proc = xcon("check", "--json", run_dir=run)
        report = json.loads(proc.stdout)
        assert proc.returncode == 1 and report["counts"]["delivered"] == 5, report["counts"]
        (lost,) = report["violations"]
        assert (lost["msg_id"], lost["outcome"]) == ("m3", "damaged") and "queue.wal" in lost["why"]
        assert "LOST m3 -> bob" in xcon("check", run_dir=run).stdout
    finally:
        xcon("down", run_dir=run)


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_queue_log_that_vanished_is_damage_not_an_empty_queue(stopped, tmp_path, how):
    """Issue 34, story 5: with mta/ex2/queue.wal deleted or emptied, `up` said "0 message(s) taken
    up", the five pairs it held were never delivered nor reported, and `xcon wait` exited 0."""
    run = copy_of(stopped, tmp_path)
    wal = run / "mta" / "ex2" / "queue.wal"
    wal.unlink() if how == "deleted" else wal.write_bytes(b"")
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "mta/ex2/queue.wal", "missing or empty")
    refused_to_start(xcon("up", run_dir=run), f"mta/ex2/queue.wal is {'missing' if how == 'deleted' else how}",
                     "5 message(s) it held still open: m1, m2", "--accept-damage")
    assert not node_processes(run)
    try:
        up = xcon("up", "--accept-damage", run_dir=run, check=True)
        assert "damage accepted: mta.ex2" in up.stdout, up.stdout
        damaged = wait_for_event(run, event="storage.damaged", node="mta.ex2")
        assert damaged["lost"] == ["m1", "m2", "m3", "m4", "m5"] and damaged["gone"] == how.replace("deleted", "missing")
        proc = xcon("check", "--json", run_dir=run)
        report = json.loads(proc.stdout)
        assert proc.returncode == 1 and sorted((v["msg_id"], v["outcome"]) for v in report["violations"]) == \
            [(f"m{i}", "damaged") for i in range(1, 6)], report["violations"]
    finally:
        xcon("down", run_dir=run)


def test_a_directory_whose_state_vanished_is_refused_never_replaced_by_an_empty_one(stopped, tmp_path):
    """Story 4: with changes.jsonl deleted the directory restarted at USN 0 with no users, and
    every cache went back without a word; a home server that is no server routed mail nowhere."""
    run = copy_of(stopped, tmp_path)
    (run / "directory" / "changes.jsonl").unlink()
    refused_to_start(xcon("up", run_dir=run), "changes.jsonl: missing while directory.json is there")
    (run / "directory" / "directory.json").unlink()
    refused_to_start(xcon("up", run_dir=run), "its log says it had reached USN 3")
    run = copy_of(stopped, tmp_path / "ex7")
    snapshot = json.loads((run / "directory" / "directory.json").read_text())
    for line in (run / "directory" / "changes.jsonl").read_bytes().splitlines():
        change = decode_line(line)
        snapshot["usn"] = change["usn"]
        snapshot["recipients"][change["recipient"]["alias"]] = change["recipient"]
    snapshot["recipients"]["bob"]["home_server"] = "ex7"  # a hand edit
    (run / "directory" / "directory.json").write_text(json.dumps(snapshot))
    (run / "directory" / "changes.jsonl").write_bytes(b"")
    refused_to_start(xcon("up", run_dir=run), "'bob' names home server 'ex7', which is not a server of this cluster")
    assert not node_processes(run)


def test_no_verdict_rests_on_a_log_that_is_emptied_or_damaged(stopped, tmp_path):
    """Story 5: with a delivered message's file removed and logs/mta.ex1.jsonl emptied, check said
    "0 pairs ... invariant holds"; with its acceptance line corrupted, still "holds"."""
    run = copy_of(stopped, tmp_path)
    for f in (run / "stores" / "ex1" / "carol" / "new").iterdir():
        f.unlink()  # m0, delivered to carol, is gone
    log = run / "logs" / "mta.ex1.jsonl"
    whole = log.read_bytes()
    log.write_bytes(b"")
    one_line_error(xcon("check", run_dir=run), 3, "no verdict: logs/mta.ex1.jsonl is empty")
    log.write_bytes(whole.replace(b'"rcpts"', b'"rc\x00pts"', 1))
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "do not read, first at logs/mta.ex1.jsonl")
    log.write_bytes(b"\n".join(line for line in whole.split(b"\n") if b'"m0"' not in line or b"accepted" not in line))
    proc = xcon("check", "--json", run_dir=run)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["unlogged"] >= 1
    assert [(v["msg_id"], v["outcome"]) for v in report["violations"] if v["msg_id"] == "m0"] == [("m0", "lost")]
    (run / "logs" / "store.ex2.jsonl").unlink()
    one_line_error(xcon("check", run_dir=run), 3, "logs/store.ex2.jsonl is missing")


def test_no_verdict_rests_on_a_damaged_journal_or_a_directory_whose_files_are_gone(stopped, tmp_path):
    """Issue 34, stories 6 to 8: a flipped byte in the move journal gave a verdict (and one in a
    move's `done` record turned a STALE LOCK into "holds"); with directory.json gone check fell
    back to the logs alone and said "holds" over a deleted message; with changes.jsonl gone it
    reported six false LOSTs. Each file is read as the node reads it at start, or no verdict."""
    run = copy_of(stopped, tmp_path)
    records = [{"move_id": "mv1", "step": step, "alias": "bob", "source": "ex2", "target": "ex1"}
               for step in ("lock", "copy", "set_home", "done")]
    (run / "orchestrator" / "journal.jsonl").write_bytes(b"".join(encode_line(r) for r in records))
    (run / "stores" / "ex2" / ".locks.json").write_text(json.dumps({"locks": {"bob": "mv1"}}))
    stale = xcon("check", run_dir=run)
    assert stale.returncode == 1 and "STALE LOCK" in stale.stdout, stale.stdout  # the move is done, its lock is not
    journal = run / "orchestrator" / "journal.jsonl"
    flip(journal, journal.read_bytes().index(b'"done"') + 2)
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "journal.jsonl is damaged in the middle")
    # a journal that vanished, where the orchestrator's log says it journaled steps: damage, not "no moves"
    with open(run / "logs" / "orchestrator.jsonl", "ab") as log:
        log.write(json.dumps({"ts": 1.0, "node": "orchestrator", "level": "info", "event": "move.step",
                              "hlc": [1, 0], "move_id": "mv1", "step": "lock"}).encode() + b"\n")
    journal.unlink()
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "journal.jsonl: missing or empty")
    refused_to_start(xcon("up", run_dir=run), "journal.jsonl is missing", "moves left for you to finish or abort: mv1")
    run = copy_of(stopped, tmp_path / "changes")
    (run / "directory" / "changes.jsonl").unlink()
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "changes.jsonl: missing while directory.json is there")
    run = copy_of(stopped, tmp_path / "snapshot")
    for f in (run / "stores" / "ex1" / "carol" / "new").iterdir():
        f.unlink()  # m0, delivered to carol, is gone: "holds" would hide it
    for name in ("directory.json", "changes.jsonl"):
        (run / "directory" / name).unlink()
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "directory.json: missing, though logs/directory.jsonl")
    logs_only = xcon("check", "--logs-only", run_dir=run)  # the logs alone, when asked for: bob's five wait
    assert logs_only.returncode == 1 and "1 delivered, 0 NDR, 0 lost, 5 pending" in logs_only.stdout, logs_only.stdout


def test_a_node_log_that_vanished_stops_a_resume_and_one_begun_anew_gives_no_verdict(stopped, tmp_path):
    """Issue 34, story 10: with a node's log deleted, `xcon up` made it anew and check said holds."""
    run = copy_of(stopped, tmp_path)
    (run / "logs" / "mta.ex1.jsonl").unlink()
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "logs/mta.ex1.jsonl is missing")
    refused_to_start(xcon("up", run_dir=run), "logs/mta.ex1.jsonl is missing", "--accept-damage")
    assert not node_processes(run)
    try:
        xcon("up", "--accept-damage", run_dir=run, check=True)
        first = json.loads((run / "logs" / "mta.ex1.jsonl").read_bytes().split(b"\n", 1)[0])
        assert first["event"] == "log.created" and "what the node logged before is lost" in first["lost"]
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        one_line_error(xcon("check", run_dir=run), 3, "no verdict", "logs/mta.ex1.jsonl was begun anew")
    finally:
        xcon("down", run_dir=run)


@pytest.mark.parametrize("damage, needle", [
    (lambda run: (run / "stores" / "ex1" / ".locks.json").write_text("{not json"), "stores/ex1/.locks.json: not JSON"),
    (lambda run: (run / "stores" / "ex2" / ".locks.json").write_text(""), "stores/ex2/.locks.json: not JSON"),
    (lambda run: (run / "stores" / "ex2" / ".locks.json").write_text('{"locks": ["bob"]}'), "'locks'"),
    (lambda run: (run / "directory" / "directory.json").write_text("[]"), "not a directory snapshot"),
])
def test_a_damaged_state_file_is_one_line_and_starts_nothing(stopped, tmp_path, damage, needle):
    """Story 7: a bad or empty locks.json or directory.json gave "exited with code 1 while
    starting: ... JSONDecodeError" (a traceback's tail), and check an "internal error"."""
    run = copy_of(stopped, tmp_path)
    damage(run)
    one_line_error(xcon("up", run_dir=run), 3, "cannot start", needle)
    assert not node_processes(run)
    if "directory.json" in needle:
        one_line_error(xcon("check", run_dir=run), 3, "no verdict", needle)


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["settings"].update(mta_build="evil"), "mta_build must be one of legacy, sp4, reroute"),
    (lambda c: c.update(nodes="directory"), "nodes must map each node's name"),
    (lambda c: c["settings"].update(servers="ex1"), "servers must be a list"),
    (lambda c: c["nodes"]["mta.ex1"]["settings"].update(cache_lag_ms="soon"),
     "the settings of node mta.ex1 do not read (Expected `int`, got `str` - at `$.cache_lag_ms`)"),
])
def test_a_damaged_cluster_json_is_one_line(stopped, tmp_path, edit, needle):
    run = copy_of(stopped, tmp_path)
    config = json.loads((run / "cluster.json").read_text())
    edit(config)
    (run / "cluster.json").write_text(json.dumps(config))
    for args in (["up"], ["status"], ["check"]):
        proc = xcon(*args, run_dir=run)
        assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    one_line_error(xcon("up", run_dir=run), 3, needle)
    assert not node_processes(run)


def test_a_hosts_file_that_is_not_text_is_one_line(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_bytes(b"\x00\xff\xfe binary")
    one_line_error(xcon("deploy", "--hosts", str(hosts), "--out", str(tmp_path / "out")), 2, "is not a text file")


def test_the_corrupt_fault_damages_a_queue_log_that_its_mta_keeps_aside_and_the_verdict_names(tmp_path):
    """The campaigns' fault `corrupt`, by hand: kill an MTA, flip a byte mid-queue-log, restart it."""
    run = tmp_path / "run"
    xcon("up", "--mta-build", "sp4", *FAST, run_dir=run, check=True)
    try:
        xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
        xcon("user", "add", "bob", "--server", "ex2", run_dir=run, check=True)
        xcon("fault", "pause", "store.ex2", "--seconds", "60", run_dir=run, check=True)  # bob's mail waits at mta.ex2
        for i in range(5):
            xcon("send", "--from", "alice", "--to", "bob", "--msg-id", f"c{i}", run_dir=run, check=True)
        wait_for_event(run, event="mta.transfer_in", msg_id="c4")
        one_line_error(xcon("fault", "corrupt", "store.ex1", run_dir=run), 2, "corrupt damages an MTA's queue log")
        xcon("fault", "corrupt", "mta.ex2", "--where", "0.5", "--restart-after", "0.2", run_dir=run, check=True)
        damaged = wait_for_event(run, event="storage.damaged", node="mta.ex2")
        assert (run / "mta" / "ex2" / damaged["kept_as"]).exists()
        xcon("fault", "clear", run_dir=run, check=True)
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        proc = xcon("check", "--json", run_dir=run)
        report = json.loads(proc.stdout)
        assert proc.returncode in (0, 1) and {v["outcome"] for v in report["violations"]} <= {"damaged"}, report
        assert report["counts"]["delivered"] + report["counts"]["damaged"] == 5
    finally:
        xcon("down", run_dir=run)
