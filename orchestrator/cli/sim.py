"""`xcon sim`: searches that only the simulator can afford."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nodes.config import BUILDS

from .common import (
    DONE, FINDING, dask_option, emit_json, json_option, keep_run, out, prose, results_dir, run_dir_option, show_table,
)


@click.group()
def sim() -> None:
    """Searches in the simulator: the same node cores on virtual time."""


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"a comma-separated list of whole milliseconds, got {text!r}", param_hint=name) from None
    if not values or any(v < 0 or v > 600_000 for v in values):
        raise click.BadParameter("give 1 or more values in 0-600000", param_hint=name)
    return values


@sim.command()
@run_dir_option
@click.argument("name", type=click.Choice(["q248839"]))
@click.option("--mta-build", type=click.Choice(BUILDS), default="legacy", show_default=True,
              help="The MTAs' build the map is drawn for (legacy: where mail is lost; sp4, reroute: that it is not).")
@click.option("--lags", default="0,100,250,500,1000,2000", show_default=True,
              help="Replication lags to try (ms, jitter 0).")
@click.option("--retries", default="250,1000", show_default=True, help="MTA retry intervals to try (ms).")
@click.option("--copies", default="100,1000", show_default=True, help="Move copy times to try (ms).")
@click.option("--workers", type=click.IntRange(1, 64), help="Simulator processes (default: one per core).")
@dask_option
@click.option("--wide", is_flag=True, help="Also when each row loses, the lock and when the cache learns the move.")
@json_option
def explore(run_dir, name: str, mta_build: str, lags: str, retries: str, copies: str, workers: int | None,
            dask: str | None, wide: bool, as_json: bool) -> None:
    """Search the KB world's timing space: where does bob's copy get lost?

    Every point is one simulated run: alice writes to bob (alternate carol, deliver to both)
    at a given time against the start of bob's Move User, with a given replication lag, MTA retry
    interval and copy time. The map has one row per (lag, retry, copy) and one character per send
    time: '.' delivered, 'n' NDR, 'X' lost. Exit 0 when the build behaves as it should: legacy
    loses somewhere, sp4 and reroute nowhere. The map is kept in the run-dir's results/, where
    `xcon serve` draws it as a heat map.
    """
    from orchestrator.lab import explore as ex

    points = ex.grid(_ints(lags, "--lags"), _ints(retries, "--retries"), _ints(copies, "--copies"))
    started = time.time()
    done = _explored(mta_build, points, workers, dask, show=not as_json and sys.stdout.isatty())
    seconds = time.time() - started
    rows = ex.rows(done)
    small = ex.smallest(done)
    lost = sum(r["lost"] for r in rows)
    errors = sum(p.outcome == "error" for p in done)
    ok = ((lost > 0) if mta_build == "legacy" else lost == 0) and errors == 0
    smallest = None if small is None else {
        "lag_ms": small.lag_ms, "retry_ms": small.retry_ms, "copy_ms": small.copy_ms, "send_at_s": small.send_at,
        "steps_s": small.steps, "replay": f"xcon sim explore q248839 --mta-build {mta_build} --lags {small.lag_ms} "
                                        f"--retries {small.retry_ms} --copies {small.copy_ms}"}
    needs = ex.conditions(rows)
    from orchestrator.lab import results as results_store

    kept = results_store.new(results_dir(run_dir, "results"), f"explore-{name}-{mta_build}")
    summary = {"kind": "explore", "name": kept.name, "build": mta_build, "simulated": True, "store": str(kept),
               "when": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(seconds, 2), "lost": lost,
               "step_s": ex.STEP_S, "before_s": ex.BEFORE_S, "rows": rows, "smallest": smallest, "loses_with": needs,
               "command": f"xcon sim explore {name} --mta-build {mta_build} --lags {lags} --retries {retries} "
                          f"--copies {copies}",
               "labels": {"strip": "bob's copy by send time: '.' delivered, 'n' NDR, 'X' lost, one mark per step_s "
                                   "from -before_s s after the move is asked for"}}
    keep_run(kept, summary)
    if as_json:
        emit_json({"build": mta_build, "points": len(done), "lost": lost, "errors": errors, "seconds": round(seconds, 2),
                   "rows": rows, "smallest": smallest, "loses_with": needs, "ok": ok})
    else:
        _render_explore(summary, len(done), errors, small, wide, ok)
    sys.exit(DONE if ok else FINDING)


def _explored(mta_build: str, points: list, workers: int | None, dask: str | None, show: bool) -> list:
    """Every point run in the simulator (lab.explore), with a progress bar on a terminal."""
    from orchestrator.lab import explore as ex
    from orchestrator.lab.campaign import default_workers
    from orchestrator.lab.executors import DaskError

    done = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True, disable=not show) as bar:
        task = bar.add_task(f"exploring {mta_build}", total=len(points))
        try:
            for p in ex.explore(mta_build, points, workers or default_workers(), dask):
                done.append(p)
                bar.update(task, advance=1)
        except DaskError as exc:
            raise click.UsageError(str(exc)) from None
    return done


def _render_explore(summary: dict, points: int, errors: int, small: Any, wide: bool, ok: bool) -> None:
    """The map as a table, then the smallest losing world's story and whether the build behaved."""
    rows, build = summary["rows"], summary["build"]
    prose(f"KB Q248839 timing space, {build}: bob's copy by send time ('.' delivered, 'n' NDR, 'X' lost; "
          f"one column per {summary['step_s']:g} s from {-summary['before_s']:+g} s after the move is asked for)")
    table = Table()
    for col in ("lag ms", "retry ms", "copy ms"):
        table.add_column(col, justify="right")
    # the map is the point: never cut (a terminal too narrow for it wraps the line, not rich)
    table.add_column("send time ->", no_wrap=True, min_width=max((len(r["strip"]) for r in rows), default=1))
    for col in ("lost at (s)", "locked (s)", "cache knows (s)") if wide else ():
        table.add_column(col, justify="right")
    for r in rows:
        window = f"{r['window'][0]:+.1f}..{r['window'][1]:+.1f}" if r["window"] else "-"
        locked = f"{r['lock_s']:.2f}-{r['release_s']:.2f}" if r["lock_s"] is not None and r["release_s"] else "-"
        cache = "-" if r["cache_s"] is None else f"{r['cache_s']:.2f}"
        table.add_row(str(r["lag_ms"]), str(r["retry_ms"]), str(r["copy_ms"]), r["strip"],
                      *((window, locked, cache) if wide else ()))
    show_table(table)
    prose(f"{points} runs in {summary['seconds']:.1f} s; {summary['lost']} lost" + (f", {errors} errors" if errors else "")
          + ("" if wide else "; --wide adds when each row loses, the lock and when the cache learns the move"))
    if small is not None:
        locked = small.send_at < small.steps.get("release", 0)
        story = ("the message is deferred while the mailbox is locked, and retried at the release while the "
                 "MTA's cache still homes bob on ex1" if locked else
                 "the MTA's cache still homes bob on ex1 after the move, and the store says he is not there")
        prose(f"smallest losing world: lag {small.lag_ms} ms, retry {small.retry_ms} ms, copy {small.copy_ms} ms, "
              f"mail sent {small.send_at:+.1f} s after the move was asked for (lock at "
              f"{small.steps.get('lock', 0):.3f} s, release at {small.steps.get('release', 0):.3f} s): {story}; "
              "carol, bob's alternate, was given a copy, so legacy sends no NDR")
        prose("every losing point has: " + "; ".join(summary["loses_with"]))
    else:
        out.print("no point loses bob's copy")
    prose("as it should be" if ok else "[red]NOT as it should be[/red]: legacy must lose somewhere, "
          "sp4 and reroute nowhere")

COMMANDS = [sim]
