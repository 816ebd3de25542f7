"""`xcon bench`'s text (orchestrator/cli/bench.py): whole at 80 columns, its notes too."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.cli.bench import render
from orchestrator.lab.bench import Row


def test_the_table_and_its_notes_are_whole_at_80_columns():
    rows = [Row("across servers (MTA -> MTA -> store)", "delivered msgs/s", 9456.0, 38914.0, "msgs/s",
                "raw 3-hop pipeline, 346 B frames, window 64 (median of 3 runs, 37,839-39,248 msgs/s)"),
            Row("memory", "RSS, idle -> 20k", 36.1, None, "MB", "")]
    console = Console(file=io.StringIO(), width=80, soft_wrap=True, color_system=None)
    render(console, rows, "xcon bench --quick on vm: 2 cores")
    lines = console.file.getvalue().splitlines()
    assert max(map(len, lines)) <= 80, lines
    assert lines[-2:] == ["[1] raw 3-hop pipeline, 346 B frames, window 64 (median of 3 runs, 37,839-39,248",
                          "  msgs/s)"], "a note broken at spaces, the next line indented; none for a row without"
