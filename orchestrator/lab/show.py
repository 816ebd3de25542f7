"""Printing for people on a rich console made with soft_wrap (orchestrator.cli.common.out): such a
console leaves every line as long as it is, so that piped output keeps a table's columns whole;
prose and a table's title are therefore broken at spaces here, to the console's width, and a
word wider than the screen (a path, a message id) stays whole."""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.table import Table


def prose(console: Console, text: str, indent: str = "") -> None:
    """`text`, broken at spaces; its first line indented by `indent`, the next two spaces more."""
    console.print(textwrap.fill(text, width=console.width, break_long_words=False, break_on_hyphens=False,
                                initial_indent=indent, subsequent_indent=indent + "  "), soft_wrap=True)


def table(console: Console, shown: Table) -> None:
    """`shown` with its title as prose above it (rich would leave the title one long line), and
    never a cell cut short with '…': a word too long for its column (a path, an id) is folded
    onto the next line, whole."""
    for column in shown.columns:
        if column.overflow == "ellipsis":
            column.overflow = "fold"
    if isinstance(shown.title, str) and shown.title:
        prose(console, shown.title)
        shown.title = None
    console.print(shown)
