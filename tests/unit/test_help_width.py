"""Every `--help` whole in an 80-column terminal (issue 33): no line over 80, and no word broken
(every word of the 80-column text is a word of the same help drawn 1,000 columns wide, so a
choice cut in two, as `clear_alterna` `te`, shows). The viewers at 80 columns are checked on a
running cluster (tests/integration/test_viewers.py)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from orchestrator.cli import xcon
from orchestrator.cli.reference import commands


def every_help() -> list[list[str]]:
    found = [[]]
    for full, _ in commands(xcon):
        words = full.split()[1:]
        found += [words[:i] for i in range(1, len(words)) if words[:i] not in found] + [words]
    return found


def helped(args: list[str], width: int) -> str:
    result = CliRunner().invoke(xcon, [*args, "--help"], terminal_width=width, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("args", every_help(), ids=lambda a: " ".join(["xcon", *a]))
def test_help_is_whole_at_80_columns(args):
    narrow, wide = helped(args, 80), helped(args, 1000)
    long = [line for line in narrow.splitlines() if len(line) > 80]
    assert not long, long
    words = lambda text: set(re.findall(r"[\w.:/<>\[\]=-]+", text))  # noqa: E731
    broken = {w for w in words(narrow) - words(wide) if not w.endswith("...")}  # click's cut summary of a command
    assert not broken, f"words cut in two: {sorted(broken)}"
