"""kill -9 of each node kind in the middle of a move with mail in flight, then a restart: nothing
lost, nothing duplicated, the mailbox on exactly one server with every message once."""

from __future__ import annotations

import json
import os

import pytest

from ..conftest import SEED, wait_for_event, xcon, xcon_json


# every node kind, each in the role where its death hurts most: the source store and the MTA
# holding the deferred mail; the long form adds the other server's (VICTIMS below)
VICTIMS = ["orchestrator", "store.ex1", "mta.ex1", "directory"]
if os.environ.get("XCON_LONG"):
    VICTIMS += ["store.ex2", "mta.ex2"]


@pytest.mark.parametrize("victim", VICTIMS)
def test_kill_mid_move_and_restart(victim, tmp_path):
    run = tmp_path / "run"
    xcon("up", "--mta-build", "reroute", "--replication-lag-ms", "300", "--retry-ms", "300", "--seed", str(SEED),
         run_dir=run, check=True)
    try:
        xcon("user", "add", "alice", "--server", "ex1", "--no-wait", run_dir=run, check=True)
        xcon("user", "add", "carol", "--server", "ex2", "--no-wait", run_dir=run, check=True)
        xcon("user", "add", "bob", "--server", "ex1", run_dir=run, check=True)
        sent = [xcon("send", "--from", "alice", "--to", "bob", "--subject", f"before {i}", run_dir=run,
                     check=True).stdout.strip() for i in range(4)]
        xcon("wait", run_dir=run, check=True)
        move = xcon_json("move", "bob", "--to", "ex2", "--copy-delay-ms", "400", "--no-wait", run_dir=run)
        wait_for_event(run, event="move.step", move_id=move["move_id"], step="copy")
        sent += [xcon("send", "--from", sender, "--to", "bob", "--subject", "during", run_dir=run,
                      check=True).stdout.strip() for sender in ("alice", "carol")]
        xcon("kill", victim, run_dir=run, check=True)
        sent += [xcon("send", "--from", "carol", "--to", "bob", "--subject", "while down", run_dir=run).stdout.strip()
                 if victim != "mta.ex2" else ""]
        xcon("restart", victim, run_dir=run, check=True)
        xcon("wait", "--timeout", "60", run_dir=run, check=True)
        check = xcon("check", "--json", run_dir=run)
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["counts"]["ndr"] == 0, report
        homes = [s for s in ("ex1", "ex2") if (run / "stores" / s / "bob").is_dir()]
        assert len(homes) == 1, f"bob's mailbox on {homes}"
        box = xcon_json("mailbox", "bob", run_dir=run)
        assert box["server"] == homes[0]
        ids = [m["msg_id"] for m in box["messages"]]
        assert sorted(ids) == sorted(m for m in sent if m), "every accepted message once"
    finally:
        xcon("down", run_dir=run)
