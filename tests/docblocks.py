"""The docs' runnable blocks, as the tests run them (issue 23: every command the docs show is run
by a test).

A block of commands in README.md, docs/ or deploy/README.md is introduced by a marker naming it
and the test that runs it:

    <!-- run: faults-by-hand, by tests/integration/test_docs.py -->
    ```sh
    xcon fault ...
    ```

tests/unit/test_docs.py fails a block of xcon commands without a marker, or whose test does not
read it (does not name the doc and the block). A test takes the block's commands with `commands`,
changes only what it declares with `adapted` and `without` (fewer trials, a seed, --json, a line
left out; each change must find its text, so a doc that changes fails the test), and runs them,
as the CLI's arguments or, with `run`, as a reader pastes them into a shell.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARKER = re.compile(r"^<!-- run: ([a-z0-9-]+), by (\S+) -->\n```sh\n(.*?)^```", re.M | re.S)


def blocks(doc: str) -> dict[str, tuple[str, str]]:
    """{block name: (the test that runs it, the block's text)} of one doc (a path from the root)."""
    return {name: (test, body) for name, test, body in MARKER.findall((ROOT / doc).read_text())}


def commands(doc: str, name: str) -> list[str]:
    """The command lines of a named block, comments cut, a continued line joined."""
    body = blocks(doc)[name][1].replace("\\\n", " ")
    lines = [re.sub(r"(^|\s+)#.*$", "", line).strip() for line in body.splitlines()]
    return [line for line in lines if line]


def adapted(command: str, replace: dict[str, str] | None = None, add: tuple[str, ...] = ()) -> list[str]:
    """A documented command's words for the CLI, less the leading `xcon`, with declared changes:
    each `replace` key must be in the command (else the doc changed under the test)."""
    for old, new in (replace or {}).items():
        assert old in command, f"{old!r} is no longer in the documented command {command!r}"
        command = command.replace(old, new)
    words = shlex.split(command)
    assert words[0] == "xcon", command
    return [*words[1:], *add]


def as_script(lines: list[str]) -> str:
    """Lines for bash, each after a marker line and followed by its exit code (see `outputs`)."""
    out = ["set -u"]
    for line in lines:
        out += [f"echo {shlex.quote('@@@ ' + line)}", line, 'echo "@@@ rc $?"']
    return "\n".join(out) + "\n"


def outputs(stdout: str) -> list[tuple[str, str, int]]:
    """[(command as written, what it printed, its exit code)] of an `as_script` run, in order."""
    found: list[tuple[str, str, int]] = []
    for chunk in stdout.split("@@@ ")[1:]:
        head, _, body = chunk.partition("\n")
        if head.startswith("rc ") and found:
            found[-1] = (found[-1][0], found[-1][1], int(head[3:]))
        else:
            found.append((head, body, -1))
    return found


def run(lines: list[str], cwd: Path, run_dir: Path | None = None, timeout: float = 180
        ) -> tuple[list[tuple[str, str, int]], subprocess.CompletedProcess]:
    """The lines in one bash, as a reader pastes them, with this venv's `xcon` on the PATH (and
    XCON_RUN_DIR set to `run_dir`, or unset: then `./.xcon` in `cwd`)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    env.pop("XCON_RUN_DIR", None)
    if run_dir is not None:
        env["XCON_RUN_DIR"] = str(run_dir)
    proc = subprocess.run(["bash", "-c", as_script(lines)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return outputs(proc.stdout), proc


def without(lines: list[str], *prefixes: str) -> list[str]:
    """The lines less those that start with one of `prefixes` (each must match one)."""
    for prefix in prefixes:
        assert any(line.startswith(prefix) for line in lines), f"no documented line starts with {prefix!r}"
    return [line for line in lines if not line.startswith(prefixes)]


def after_sample(doc: str, name: str) -> str:
    """The doc's text from its marker `<!-- sample: NAME, by TEST -->` on (an output it shows)."""
    text = (ROOT / doc).read_text()
    return text[text.index(f"<!-- sample: {name},"):]


def sample(doc: str, name: str) -> list[str]:
    """The lines of the fenced output sample after `<!-- sample: NAME, by TEST -->`."""
    return re.search(r"```\n(.*?)```", after_sample(doc, name), re.S).group(1).rstrip("\n").split("\n")
