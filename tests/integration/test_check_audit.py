"""`xcon check` ends with the mailboxes: mail gone behind the logs' back is lost, a stale lock is
found, and `xcon move --abort` clears it."""

from __future__ import annotations

import json

from ..conftest import xcon, xcon_json


def test_a_mailbox_emptied_behind_the_logs_back_and_a_stale_lock_are_reported(cluster_factory):
    cluster = cluster_factory("sp4", replication_lag_ms=0, replication_jitter_ms=0)
    run = cluster.config.run_dir
    cluster.add_user("alice", "ex1")
    cluster.add_user("bob", "ex2")
    kept = cluster.send("alice", ["bob"], "kept")["msg_id"]
    gone = cluster.send("alice", ["bob"], "gone")["msg_id"]
    assert cluster.wait(20)
    assert xcon("check", run_dir=run).returncode == 0
    (victim,) = [p for p in (run / "stores" / "ex2" / "bob" / "new").iterdir() if f".{gone}." in p.name]
    victim.unlink()  # what a rollback's delete did to delivered mail before moves could not lose it

    proc = xcon("check", run_dir=run)
    assert proc.returncode == 1 and f"LOST {gone} -> bob" in proc.stdout and "not in bob's mailbox" in proc.stdout
    report = json.loads(xcon("check", "--json", run_dir=run).stdout)
    assert report["audited"] and [(v["msg_id"], v["outcome"]) for v in report["violations"]] == [(gone, "lost")]
    assert report["counts"]["delivered"] == 1 and kept not in proc.stdout
    assert xcon("check", "--logs-only", run_dir=run).returncode == 0, "the logs alone cannot see it"

    # a lock no move holds (a move whose journal is gone): the verdict names it, --abort ends it
    victim.write_bytes(b"restored")  # back as it was, so the lock is the only finding
    cluster.client.request("store.ex2", "store.lock", {"mailbox": "bob", "owner": "move.gone.1"})
    proc = xcon("check", run_dir=run)
    assert proc.returncode == 1 and "STALE LOCK store.ex2" in proc.stdout and "move.gone.1" in proc.stdout
    # piped, a table keeps its columns whole, whatever its width
    status = xcon("status", run_dir=run, env={"COLUMNS": None}).stdout
    assert any("store.ex2" in line and "locked: bob by move.gone.1" in line for line in status.splitlines()), status
    aborted = xcon_json("move", "bob", "--abort", run_dir=run)
    assert aborted["moves"] == [] and [(c["store"], c["owner"], c["unlocked"]) for c in aborted["cleared"]] == [
        ("store.ex2", "move.gone.1", True)]
    assert xcon("check", run_dir=run).returncode == 0
    nothing = xcon("move", "bob", "--abort", run_dir=run)
    assert nothing.returncode == 0 and "nothing to abort" in nothing.stdout
    abort_lines = [json.loads(line) for line in (run / "logs" / "cli.jsonl").read_text().splitlines()]
    assert [line["event"] for line in abort_lines] == ["move.abort", "move.abort"], "each abort is logged"
