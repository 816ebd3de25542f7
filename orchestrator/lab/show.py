"""Printing for people on a rich console made with soft_wrap (orchestrator.cli.common.out): such a
console leaves every line as long as it is, so that piped output keeps a table's columns whole;
prose and a table's title are therefore broken at spaces here, to the console's width, and a
word wider than the screen (a path, a message id) stays whole."""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text


def prose(console: Console, text: str, indent: str = "") -> None:
    """`text`, broken at spaces; its first line indented by `indent`, the next two spaces more."""
    console.print(textwrap.fill(text, width=console.width, break_long_words=False, break_on_hyphens=False,
                                initial_indent=indent, subsequent_indent=indent + "  "), soft_wrap=True)


# a word longer than this (an id, a path) may be folded in its column; a shorter one never is
FOLDED_WORD = 20


def table(console: Console, shown: Table) -> None:
    """`shown` with its title as prose above it (rich would leave the title one long line), and
    never a cell cut short with '…': a word too long for its column (a path, an id) is folded
    onto the next line, whole. A table too wide for the console to keep its words whole (rich
    would break its headers and words a letter a line) is shown a row at a time instead, a
    line a column, each with its header (`records`)."""
    for column in shown.columns:
        if column.overflow == "ellipsis":
            column.overflow = "fold"
    if isinstance(shown.title, str) and shown.title:
        prose(console, shown.title)
        shown.title = None
    drawn = drawing(console, shown) if needed_width(shown) <= console.width else None
    if drawn is not None and width_of(drawn) <= console.width:
        console.print(Segments(drawn))  # drawn once: a queue of 1,000 pairs takes half a second
    else:
        console.print("\n".join(records(shown, console.width)), soft_wrap=True, highlight=False)


def needed_width(shown: Table) -> int:
    """The width `shown` needs to break no word shorter than FOLDED_WORD, nor any cell of a
    column that is not to wrap (a map drawn a character a time step): each column as wide as its
    longest word (header and cells), its padding, and the box's lines."""
    _, right, _, left = shown.padding
    lines = (len(shown.columns) + 1 if shown.show_edge else len(shown.columns) - 1) if shown.box else 0
    words = 0
    for column in shown.columns:
        header, *cells = [_plain(c) for c in (column.header, *column.cells)]
        longest = max((len(w) for c in (header, *cells) for w in c.split()), default=1)
        whole = max(map(len, cells), default=0) if column.no_wrap else 0
        words += max(min(FOLDED_WORD, longest), whole, column.min_width or 0)
    return words + len(shown.columns) * (left + right) + lines


def drawing(console: Console, shown: Table) -> list[Segment]:
    """`shown` drawn as `console.print` draws it: its console's soft wrap measures every cell
    unwrapped, and a column's min_width may then keep rich from narrowing the others, so that
    the table runs past the console (`xcon mailbox` drew 87 columns at 80)."""
    options = console.options.update(no_wrap=True, overflow="ignore") if console.soft_wrap else console.options
    return list(console.render(shown, options))


def width_of(drawn: list[Segment]) -> int:
    """The longest line of a drawing (not Console.render_lines: it crops them to the width)."""
    return max((Segment.get_line_length(line) for line in Segment.split_lines(drawn)), default=0)


def _plain(cell: object) -> str:
    """A cell's text as shown, without its markup."""
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(cell).plain if isinstance(cell, str) else ""


def records(shown: Table, width: int) -> list[str]:
    """`shown`'s rows one after another, a line per column: its header, then the cell (empty
    cells left out; a long one broken at spaces, under itself), a blank line between rows."""
    headers = [_plain(column.header) for column in shown.columns]
    cells = [[c if isinstance(c, str) else _plain(c) for c in column.cells] for column in shown.columns]
    left = max(map(len, headers), default=0) + 2
    lines: list[str] = []
    for row in range(shown.row_count):
        lines += [""] if row else []
        for header, values in zip(headers, cells):
            if values[row]:
                lines += textwrap.wrap(values[row], width=max(width, left + FOLDED_WORD), break_long_words=False,
                                       break_on_hyphens=False, initial_indent=header.ljust(left),
                                       subsequent_indent=" " * left)
    return lines
