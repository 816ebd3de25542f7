"""xcon commands that run whole experiments, each on fresh clusters: chaos, scenario, bench."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from nodes.config import BUILDS

from . import chaos as chaos_mod
from . import logread
from .cli_common import emit_json, json_option, out, run_dir_option

@click.command()
@run_dir_option
@click.option("--trials", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--seed", type=int, help="Campaign seed (default: random, printed).")
@click.option("--replay", type=int, help="Run the one trial with this trial seed (from a campaign's report).")
@click.option("--mta-build", type=click.Choice(BUILDS), default="sp4", show_default=True)
@click.option("--faults", default=",".join(chaos_mod.DEFAULT_FAULTS), show_default=True,
              help=f"Comma-separated fault kinds to draw from: {', '.join(chaos_mod.FAULTS)}; 'none' for none.")
@click.option("--users", type=click.IntRange(2, 200), help="Users per world (default: drawn, 3-6).")
@click.option("--moves", type=click.IntRange(0, 100), help="Moves per world (default: drawn, 1-3).")
@click.option("--expect-loss", is_flag=True, help="A lost pair is the expected result (legacy): exit 0 if found, 1 if not.")
@click.option("--stop-on-break", is_flag=True, help="End the campaign at the first trial that breaks the invariant.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write summary.json, the first broken trial's merged logs and its trace SVG here.")
@json_option
def chaos(run_dir: Path, trials: int, seed: int | None, replay: int | None, mta_build: str, faults: str,
          users: int | None, moves: int | None, expect_loss: bool, stop_on_break: bool, report_dir: Path | None,
          as_json: bool) -> None:
    """Chaos campaign: random worlds on live clusters, each judged by `xcon check`.

    Each trial draws users, alternates, replication lag, copy speed, moves (concurrent, back and
    forth, of alternates too), mail in every direction and faults from its seed, runs them on a
    fresh cluster, and checks the invariant. Exit 1 when an invariant broke (unless --expect-loss).
    """
    kinds = () if faults.strip() == "none" else tuple(k.strip().replace("-", "_") for k in faults.split(",") if k.strip())
    unknown = [k for k in kinds if k not in chaos_mod.FAULTS]
    if unknown:
        raise click.UsageError(f"unknown fault kind(s): {', '.join(unknown)} (kinds: {', '.join(chaos_mod.FAULTS)})")
    if seed is None:
        seed = int.from_bytes(os.urandom(3), "big")
    seeds = [replay] if replay is not None else chaos_mod.trial_seeds(seed, trials)
    root = run_dir.resolve() / "chaos" / (f"replay-{replay}" if replay is not None else f"campaign-{seed}")
    if root.exists():
        shutil.rmtree(root)
    show = not as_json and sys.stdout.isatty()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=out, transient=True, disable=not show) as bar:
        task = bar.add_task(f"{mta_build} seed {seed}", total=len(seeds))

        def advance(r: chaos_mod.TrialResult) -> None:
            bar.update(task, advance=1, description=f"{mta_build}: {r.lost} lost in trial {r.seed}")

        results = chaos_mod.campaign(root, seeds, mta_build, kinds, users, moves, advance, stop_on_break)
    totals = chaos_mod.summarize(results)
    first = next((r for r in results if r.broken), None)
    flags = f"--mta-build {mta_build} --faults {','.join(kinds) or 'none'}" + \
        (f" --users {users}" if users else "") + (f" --moves {moves}" if moves else "")
    replay_cmd = f"xcon chaos --replay {first.seed} {flags}" if first else None
    if report_dir:
        write_chaos_report(report_dir, totals, results, first, replay_cmd)
    if as_json:
        emit_json({"seed": seed, "build": mta_build, "faults": list(kinds), "totals": totals,
                   "first_broken": first.to_json() if first else None, "replay": replay_cmd,
                   "trials": [r.to_json() for r in results]})
    else:
        table = Table(title=f"xcon chaos: campaign seed {seed}, faults {', '.join(kinds) or 'none'}")
        for col in ("build", "trials", "messages", "pairs", "delivered", "NDR", "lost", "duplicated", "pending",
                    "both", "stale locks", "moves (failed)", "broken trials", "trials/min"):
            table.add_column(col, justify="right")
        t = totals
        table.add_row(mta_build, str(t["trials"]), str(t["messages"]), str(t["pairs"]), str(t["delivered"]),
                      str(t["ndr"]), str(t["lost"]), str(t["duplicated"]), str(t["pending"]), str(t["both"]),
                      str(t["stale_locks"]), f"{t['moves']} ({t['moves_failed']})", str(t["broken_trials"]),
                      str(t["trials_per_minute"]))
        out.print(table)
        if first:
            out.print(f"first broken trial: seed {first.seed}: {describe_break(first)} (logs in {first.run_dir})")
            out.print(f"replay: {replay_cmd}")
        errors = [r for r in results if r.error]
        if errors:
            out.print(f"[yellow]{len(errors)} trial(s) had errors, first: seed {errors[0].seed}: {errors[0].error}[/yellow]")
    if expect_loss:
        sys.exit(0 if totals["lost"] else 1)
    if first:
        sys.exit(1)


def describe_break(trial: chaos_mod.TrialResult) -> str:
    if trial.violations:
        v = trial.violations[0]
        return f"{v['outcome']} {v['msg_id']} -> {v['rcpt']}"
    lock = trial.stale_locks[0]
    return f"stale lock on store.{lock['server']}: {lock['mailbox']} held by {lock['owner']}"


def write_chaos_report(report_dir: Path, totals: dict[str, Any], results: list, first: Any, replay_cmd: str | None) -> None:
    from . import trace as trace_mod

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "summary.json").write_text(json.dumps(
        {"totals": totals, "replay": replay_cmd, "trials": [r.to_json() for r in results]}, indent=2))
    if first:
        run = Path(first.run_dir)
        with open(report_dir / "logs.jsonl", "w") as f:
            for e in logread.merged(run):
                f.write(json.dumps(e) + "\n")
        if first.violations:
            msg_id = first.violations[0]["msg_id"]
            (report_dir / f"trace-{msg_id}.svg").write_text(trace_mod.svg(trace_mod.story(run, msg_id), msg_id))


# --- scenarios ------------------------------------------------------------------------------

@click.command()
@run_dir_option
@click.argument("name", type=click.Choice(["q248839"]))
@click.option("--mta-build", type=click.Choice([*BUILDS, "legacy+workaround"]), help="Run one case.")
@click.option("--all", "all_cases", is_flag=True, help="Run every case: legacy, sp4, reroute, legacy with the workaround.")
@json_option
def scenario(run_dir: Path, name: str, mta_build: str | None, all_cases: bool, as_json: bool) -> None:
    """Reproduce KB Q248839 on fresh clusters and compare with what the KB says."""
    from .scenario import CASES, render, run_cases

    if all_cases == bool(mta_build):
        raise click.UsageError("give one of --all or --mta-build")
    cases = list(CASES) if all_cases else [mta_build]
    results = run_cases(run_dir.resolve() / "scenario", cases, progress=None if as_json else out)
    if as_json:
        emit_json([r.to_json() for r in results])
    else:
        render(results, out)
    if not all(r.matches for r in results):
        sys.exit(1)


@click.command()
@run_dir_option
@click.option("--quick", is_flag=True, help="Smaller loads (under a minute): for CI and a first look.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the rows as JSON.")
@json_option
def bench(run_dir: Path, quick: bool, out_file: Path | None, as_json: bool) -> None:
    """Measure each workload beside its physical baseline, in the same run, as a ratio."""
    import platform

    from . import bench as bench_mod

    show = not as_json and sys.stdout.isatty()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out,
                  transient=True, disable=not show) as bar:
        task = bar.add_task("bench", total=None)
        rows = bench_mod.run(run_dir.resolve() / "bench", quick, lambda s: bar.update(task, description=s))
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    data = {"machine": machine, "quick": quick, "rows": [r.to_json() for r in rows]}
    if out_file:
        out_file.write_text(json.dumps(data, indent=2))
    if as_json:
        emit_json(data)
        return
    table = Table(title=f"xcon bench{' --quick' if quick else ''} on {machine}")
    for col in ("workload", "figure", "ratio", "xcon", "baseline", "unit", "note"):
        table.add_column(col, justify="right" if col in ("ratio", "xcon", "baseline", "note") else "left")
    # the notes (what each baseline is, the breakdowns) are long: numbered under the table, so the
    # figures stay on one line each in a terminal of ordinary width
    notes: list[str] = []
    for r in rows:
        fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")  # noqa: E731
        if r.note:
            notes.append(r.note)
        table.add_row(r.workload, r.figure, "-" if r.ratio is None else f"{r.ratio:.2f}", fmt(r.value),
                      fmt(r.baseline), r.unit, f"[{len(notes)}]" if r.note else "")
    out.print(table)
    for i, note in enumerate(notes, 1):
        out.print(f"[{i}] {note}", highlight=False)


COMMANDS = [chaos, scenario, bench]
