"""`xcon chaos --faults`: 'all', 'none' or a list, read as the kinds a campaign draws from
(orchestrator/cli/runs.py `_fault_kinds`); the command a campaign keeps names the kinds it drew from."""

from __future__ import annotations

import json

from click.testing import CliRunner

from orchestrator.cli import xcon
from orchestrator.cli.runs import _fault_kinds
from orchestrator.lab.worlds import FAULTS, NET_FAULTS


def test_all_is_every_kind_the_network_has_and_none_is_none():
    assert _fault_kinds("all", "loopback") == FAULTS and _fault_kinds(" ALL ", "loopback") == FAULTS
    assert _fault_kinds("all", "netns") == FAULTS + NET_FAULTS
    assert _fault_kinds("none", "loopback") == ()
    assert _fault_kinds("kill-at-step, lag,", "loopback") == ("kill_at_step", "lag")


def test_a_campaign_of_all_faults_keeps_a_command_that_names_each_kind(tmp_path):
    run = CliRunner().invoke(xcon, ["chaos", "--sim", "--trials", "2", "--workers", "1", "--seed", "3", "--faults",
                                    "all", "--mta-build", "sp4", "--json", "--run-dir", str(tmp_path)])
    assert run.exit_code == 0, run.output
    out = json.loads(run.output)
    assert out["totals"]["trials"] == 2 and tuple(out["faults"]) == FAULTS, out["faults"]
    kept = json.loads(next((tmp_path / "results").glob("*/summary.json")).read_text())
    assert f"--faults {','.join(FAULTS)}" in kept["command"], kept["command"]
