"""Faults injected through the CLI on a live cluster; the fixed MTA still keeps the invariant."""

from __future__ import annotations

import json

import pytest

from ..conftest import SEED, wait_for_event, xcon, xcon_json
from .test_cli_errors import one_line_error


@pytest.mark.long
def test_delay_kill_restart_pause_and_inspection(tmp_path):
    run = tmp_path / "run"
    xcon("up", "--mta-build", "sp4", "--replication-lag-ms", "100", "--retry-ms", "300", "--seed", str(SEED),
         run_dir=run, check=True)
    try:
        xcon("user", "add", "ann", "--server", "ex1", run_dir=run, check=True)
        xcon("user", "add", "ben", "--server", "ex2", run_dir=run, check=True)
        xcon("fault", "delay", "mta.ex1", "--peer", "mta.ex2", "--delay-ms", "300", "--seconds", "5",
             run_dir=run, check=True)
        first = xcon("send", "--from", "ann", "--to", "ben", run_dir=run, check=True).stdout.strip()
        xcon("kill", "store.ex2", run_dir=run, check=True)
        assert not xcon_json("status", run_dir=run)["nodes"]["store.ex2"]["alive"]
        second = xcon("send", "--from", "ann", "--to", "ben", run_dir=run, check=True).stdout.strip()
        wait_for_event(run, event="mta.deferred", msg_id=second, rcpt="ben")  # the store is down: retry later
        xcon("restart", "store.ex2", run_dir=run, check=True)
        xcon("fault", "pause", "mta.ex1", "--seconds", "0.5", run_dir=run, check=True)
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        assert {m["msg_id"] for m in xcon_json("mailbox", "ben", run_dir=run)["messages"]} == {first, second}
        assert xcon("check", run_dir=run).returncode == 0
        kinds = [json.loads(line)["kind"] for line in
                 xcon("logs", "--event", "fault.injected", "--json", run_dir=run, check=True).stdout.splitlines()]
        assert kinds == ["delay", "kill", "restart", "pause"]
        # a paused node is waited for, not an error at the first poll; at the time-out it is named
        xcon("fault", "pause", "mta.ex1", "--seconds", "60", run_dir=run, check=True)
        waited = xcon("wait", "--timeout", "3", "--json", run_dir=run)
        said = json.loads(waited.stdout)
        assert waited.returncode == 1 and "mta.ex1 did not answer" in said["no_answer"]
        assert said["seconds"] >= 3, "it waited its time out, not only the first poll"
        xcon("fault", "clear", run_dir=run, check=True)
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        one_line_error(xcon("fault", "pause", "orchestrator", run_dir=run), 2, "cannot pause itself")
        one_line_error(xcon("fault", "delay", "mta.ex1", run_dir=run), 2, "needs --peer")
        one_line_error(xcon("fault", "lag", "store.ex1", "--lag-ms", "5", run_dir=run), 2, "only an MTA")
        one_line_error(xcon("kill", "mta.ex9", run_dir=run), 2, "no node 'mta.ex9'")
        story = xcon("trace", first, "--svg", str(tmp_path / "t.svg"), run_dir=run, check=True).stdout
        assert "mta.ex1 -> store.ex2" not in story and "mta.ex1 -> mta.ex2" in story
        assert (tmp_path / "t.svg").read_text().startswith("<svg")
        xcon("logs", "--export", "perfetto", str(tmp_path / "p.json"), run_dir=run, check=True)
        perf = json.loads((tmp_path / "p.json").read_text())
        assert any(e["name"] == "fault.injected" for e in perf["traceEvents"])
    finally:
        xcon("down", run_dir=run, check=True)
