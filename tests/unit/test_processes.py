"""orchestrator/processes.py: a node is known by its console, whoever started it."""

from __future__ import annotations

import subprocess

from orchestrator.processes import node_identity, pid_alive


def _writing_to(path) -> subprocess.Popen:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        return subprocess.Popen(["sleep", "30"], stdout=out, stdin=subprocess.DEVNULL)


def test_a_process_is_the_node_whose_console_is_its_output_and_nothing_else_is(tmp_path):
    run = tmp_path / "run"
    node, daemon, other = (_writing_to(run / "logs" / "mta.ex1.console"),
                           _writing_to(run / "logs" / "dovecot.ex1.console"), _writing_to(tmp_path / "out.txt"))
    try:
        assert node_identity(node.pid) == ("mta.ex1", run)
        assert pid_alive(node.pid, run) and not pid_alive(node.pid, tmp_path / "elsewhere")
        assert node_identity(daemon.pid) is None, "a node's daemon writes a console of its own, and is no node"
        assert node_identity(other.pid) is None
        (run / "logs" / "mta.ex1.console").unlink()  # its run-dir's files removed under it: still that node
        assert node_identity(node.pid) == ("mta.ex1", run)
    finally:
        for proc in (node, daemon, other):
            proc.kill()
            proc.wait()
    assert node_identity(node.pid) is None and not pid_alive(node.pid, run)
