"""Tables for people (orchestrator/lab/show.py): whole at the console's width, or, where their
words cannot all stay whole, a row at a time with each column's header."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from orchestrator.lab import show

WIDE = ["message id", "kind", "from", "rcpt", "state", "tries", "next try", "reason", "alt of", "handed to",
        "age", "priority"]


def printed(width: int, columns: list[str], *rows: list[str], title: str = "") -> str:
    console = Console(file=io.StringIO(), width=width, soft_wrap=True, color_system=None)
    table = Table(title=title or None)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    show.table(console, table)
    return console.file.getvalue()


def test_a_table_too_wide_for_its_words_is_shown_a_row_at_a_time():
    """`xcon queue --wide` at 80 columns: rich broke every header and word a letter a line."""
    row = ["bf718bcb4c917bc4", "message", "alice", "bob", "deferred", "7", "0.3s", "no answer within 3s", "", "",
           "27.8s", "normal"]
    text = printed(80, WIDE, row, ["m2", *row[1:]], title="mta.ex2: 2 open pair(s)")
    lines = text.splitlines()
    assert lines[:3] == ["mta.ex2: 2 open pair(s)", "message id  bf718bcb4c917bc4", "kind        message"]
    assert "reason      no answer within 3s" in lines and not any(line.startswith("alt of") for line in lines)
    assert lines[11:13] == ["", "message id  m2"], "a blank line between rows, empty cells left out"
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines)
    assert printed(200, WIDE, row).splitlines()[1].startswith("┃ message id"), "wide enough: the table"


def test_a_table_whose_words_fit_stays_a_table_and_a_long_id_folds_in_its_column():
    long_id = "m" * 60
    text = printed(80, ["message id", "rcpt", "state"], [long_id, "bob", "deferred"])
    assert text.splitlines()[1].startswith("┃ message id") and long_id not in text.replace("│", "")
    assert all(len(line) <= 80 for line in text.splitlines())
    assert show.needed_width(Table("a", "[red]no[/red]")) == show.needed_width(Table("a", "no")), "markup is not text"


def test_a_long_cell_of_a_record_is_broken_at_spaces_under_itself():
    words = " ".join(["word"] * 40)
    lines = printed(60, WIDE, ["m1", *["x"] * 6, words, *["y"] * 4]).splitlines()
    reason = lines.index(next(line for line in lines if line.startswith("reason")))
    assert lines[reason + 1].startswith(" " * 12 + "word") and all(len(line) <= 60 for line in lines)


def test_a_column_not_to_wrap_counts_whole_and_so_does_a_column_s_least_width():
    """`xcon sim explore --wide` at 80 columns: its map (a character per time step) is not to
    wrap, and rich broke the columns beside it a letter a line."""
    narrow = Table("lag", "retry")
    narrow.add_column("send time ->", no_wrap=True)
    narrow.add_row("0", "250", "." * 60)
    assert show.needed_width(narrow) == 3 + 5 + 60 + 3 * 2 + 4
    least = Table("a")
    least.add_column("b", min_width=50)
    assert show.needed_width(least) == 1 + 50 + 2 * 2 + 3


def test_a_table_rich_would_draw_past_the_console_is_shown_a_row_at_a_time():
    """`xcon mailbox` at 80 columns drew 87: its id column's min_width kept rich from narrowing
    the subject, though every word would have fitted."""
    console = Console(file=io.StringIO(), width=80, soft_wrap=True, color_system=None)
    table = Table()
    table.add_column("message id", overflow="fold", min_width=37)
    table.add_column("from", overflow="fold")
    table.add_column("subject", overflow="fold")
    table.add_row("bc7260c10f54baf8~ndr~5737826d04088de4", "postmaster", "a subject " * 8)
    assert show.needed_width(table) <= 80 < show.width_of(show.drawing(console, table)) == 87
    show.table(console, table)
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "message id  bc7260c10f54baf8~ndr~5737826d04088de4" and max(map(len, lines)) <= 80
