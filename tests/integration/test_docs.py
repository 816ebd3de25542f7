"""The README's steps by hand, run as written, and the outputs the docs show, compared with a run.

tests/unit/test_docs.py checks that every command the docs name exists; this file checks that
the ones a reader will paste do what the docs say they do.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT, xcon

BIN = Path(sys.executable).parent


def _block_after(text: str, heading: str) -> str:
    """The first fenced block after a heading."""
    rest = text[text.index(heading):]
    return re.search(r"```sh\n(.*?)```", rest, re.S).group(1)


def _sample(text: str, marker: str) -> list[str]:
    """The lines of the fenced block right after an HTML comment that names it a checked sample."""
    rest = text[text.index(marker):]
    return re.search(r"```\n(.*?)```", rest, re.S).group(1).rstrip("\n").split("\n")


def _as_a_script(block: str) -> str:
    """The block's lines, each one after a marker line and followed by its exit code; the
    `activate` line is left out (the test's PATH already has this venv's `xcon`)."""
    out = ["set -u"]
    for line in block.splitlines():
        if not line.strip() or "activate" in line:
            continue
        command = line.split("  #")[0].strip()
        out += [f"echo {shlex.quote('@@@ ' + command)}", line, 'echo "@@@ rc $?"']
    return "\n".join(out) + "\n"


def _outputs(stdout: str) -> dict[str, tuple[str, int]]:
    """{command as written: (what it printed, its exit code)}."""
    found, last = {}, ""
    for chunk in stdout.split("@@@ ")[1:]:
        head, _, body = chunk.partition("\n")
        if head.startswith("rc "):
            found[last] = (found[last][0], int(head[3:]))
        else:
            last = head
            found[last] = (body, -1)
    return found


def test_the_readme_steps_by_hand_lose_the_message_and_check_prints_what_the_readme_shows(tmp_path):
    readme = (ROOT / "README.md").read_text()
    script = _as_a_script(_block_after(readme, "## Reproducing the bug by hand"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    env.pop("XCON_RUN_DIR", None)
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=180)
    finally:
        xcon("down", run_dir=tmp_path / ".xcon")
    ran = _outputs(proc.stdout)
    failed = {c: rc for c, (_, rc) in ran.items() if rc != 0 and not c.startswith("xcon check")}
    assert not failed, f"{failed}\n{proc.stdout}\n{proc.stderr}"
    carol, bob, alice = (ran[f"xcon mailbox {a}"][0] for a in ("carol", "bob", "alice"))
    check, rc = ran["xcon check"]
    m = re.search(r"^LOST (\S+) -> bob", check, re.M)
    assert rc == 1 and m, check
    msg = m.group(1)
    assert msg in carol, carol
    assert bob.startswith("mailbox bob on ex2: 0 message(s)"), bob
    assert alice.startswith("mailbox alice on ex2: 0 message(s)"), alice
    want = [line.replace("$M", msg) for line in _sample(readme, "checked against the run of these steps")]
    assert check.rstrip("\n").split("\n") == want
    assert (tmp_path / "lost.svg").read_text().lstrip().startswith("<"), "the trace's picture was written"


def test_the_explore_sample_in_docs_chaos_is_what_explore_prints():
    sample = _sample((ROOT / "docs" / "chaos.md").read_text(), "sample: explore")
    proc = xcon("sim", "explore", "q248839", "--mta-build", "legacy", env={"COLUMNS": "200"}, timeout=180)
    assert proc.returncode == 0, proc.stderr
    printed = [line.rstrip() for line in proc.stdout.splitlines()]
    missing = [line for line in sample if line.rstrip() not in printed]
    assert not missing, "\n".join(missing + ["-- printed --"] + printed)
