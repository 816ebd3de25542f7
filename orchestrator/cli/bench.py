"""`xcon bench`: each workload beside its physical baseline (orchestrator.lab.bench)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.console import Console
from rich.table import Table

from .common import emit_json, json_option, out, results_dir, run_dir_option


@click.command()
@run_dir_option
@click.option("--quick", is_flag=True, help="Smaller loads (under a minute): for CI and a first look.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the rows as JSON.")
@click.option("--only", type=click.Choice(["power"]), help="power: only the rows on finding bugs, random worlds "
              "beside guided ones (simulated: no cluster).")
@json_option
def bench(run_dir: Path, quick: bool, out_file: Path | None, only: str | None, as_json: bool) -> None:
    """Measure each workload beside its physical baseline, in the same run, as a ratio."""
    import platform

    from orchestrator.lab import bench as bench_mod

    show = not as_json and sys.stdout.isatty()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out,
                  transient=True, disable=not show) as bar:
        task = bar.add_task("bench", total=None)
        rows = bench_mod.run(results_dir(run_dir, "bench"), quick, lambda s: bar.update(task, description=s), only)
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    data = {"machine": machine, "quick": quick, "only": only, "rows": [r.to_json() for r in rows]}
    if out_file:
        out_file.write_text(json.dumps(data, indent=2))
    if as_json:
        emit_json(data)
        return
    render(out, rows, f"xcon bench{' --quick' if quick else ''} on {machine}")


def render(console: Console, rows: list, title: str) -> None:
    """The rows as a table, their notes (what each baseline is, the breakdowns: long) numbered
    under it, so that the figures stay on one line each in a terminal of ordinary width."""
    from orchestrator.lab import show

    table = Table(title=title)
    for col in ("workload", "figure", "ratio", "xcon", "baseline", "unit", "note"):
        table.add_column(col, justify="right" if col in ("ratio", "xcon", "baseline", "note") else "left")
    notes: list[str] = []
    for r in rows:
        fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")  # noqa: E731
        if r.note:
            notes.append(r.note)
        table.add_row(r.workload, r.figure, "-" if r.ratio is None else f"{r.ratio:.2f}", fmt(r.value),
                      fmt(r.baseline), r.unit, f"[{len(notes)}]" if r.note else "")
    show.table(console, table)
    for i, note in enumerate(notes, 1):
        show.prose(console, f"[{i}] {note}")  # broken to the width, as every line of prose


COMMANDS = [bench]
