"""The xcon group loads a command's module only when that command runs (orchestrator.cli.MODULES):
the table names every command of every module, and `xcon send` loads none of the simulator,
the bench, the web pages or the IMS's SMTP server."""

from __future__ import annotations

import importlib
import subprocess
import sys

from orchestrator import cli


def test_the_table_names_each_command_of_each_module_and_nothing_else():
    modules = set(cli.MODULES.values())
    found = {c.name: m for m in modules for c in importlib.import_module(f"orchestrator.cli.{m}").COMMANDS}
    assert found == cli.MODULES
    assert set(cli.xcon.load_all()) == set(cli.MODULES)


def test_a_command_loads_its_own_module_only():
    probe = ("import sys; from orchestrator.cli import xcon; xcon.main(['send', '--help'], standalone_mode=False); "
             "print(sorted(m for m in sys.modules if m.startswith(('orchestrator.sim', 'orchestrator.lab', "
             "'orchestrator.web', 'aiosmtpd', 'orchestrator.cli.'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    loaded = eval(out.stdout.strip().splitlines()[-1])
    assert loaded == ["orchestrator.cli.common", "orchestrator.cli.mail"], loaded
