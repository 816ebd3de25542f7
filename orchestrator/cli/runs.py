"""xcon commands that run whole experiments, each on fresh clusters: chaos, scenario, bench."""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.markup import escape
from rich.table import Table

from nodes.config import BUILDS, MOVE_BUILDS

from orchestrator.lab import results as results_store
from orchestrator.lab.findings import by_cause, describe_break
from orchestrator.lab.worlds import DEFAULT_FAULTS, FAULTS, NET_FAULTS, REAL_SERVERS, REAL_USERS
from orchestrator import netns
from .common import (
    DONE, FINDING, dask_option, emit_json, json_option, keep_run, out, profile_options, prose, results_dir,
    run_dir_option, show_table,
)

@click.command()
@run_dir_option
@click.option("--trials", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="How many worlds to draw and run, each on a fresh cluster.")
@click.option("--seed", type=int, help="Campaign seed (default: random, printed).")
@click.option("--replay", type=int, help="Run the one trial with this trial seed (from a campaign's report).")
@click.option("--mta-build", type=click.Choice(BUILDS), default="sp4", show_default=True,
              help="The MTAs' build in every trial (legacy loses mail in the KB's window; sp4 and reroute must not).")
@click.option("--network", type=click.Choice(["loopback", "netns"]), default="loopback", show_default=True,
              help="netns (root): each trial's cluster on hosts of its own (xcon up --network netns), where the "
                   "faults net and partition can be drawn.")
@click.option("--move-build", type=click.Choice(MOVE_BUILDS), default="sp4", show_default=True,
              help="Move User's build: legacy (5.5 before SP4) has KB Q277911's window, whatever the MTA build.")
@click.option("--faults", default=",".join(DEFAULT_FAULTS), show_default=True,
              help=f"Comma-separated fault kinds to draw from: {', '.join(FAULTS)}; 'all' for every one (with "
                   f"--network netns, {' and '.join(NET_FAULTS)} too); 'none' for none.")
@click.option("--extremes/--no-extremes", default=True, show_default=True,
              help="Now and then a world draws an extreme: a node down longer than a report's time-out, users "
                   "moved many times in a row, the largest subject and id the API takes.")
@click.option("--users", type=click.IntRange(2, 100_000), help="Users per world (default: drawn, 3-6; more than "
              f"{REAL_USERS} with --sim only).")
@click.option("--servers", type=click.IntRange(2, 500), default=2, show_default=True,
              help=f"Servers per world (more than {REAL_SERVERS} with --sim only).")
@click.option("--sites", type=click.IntRange(1, 250), default=1, show_default=True,
              help="Sites per world, each a run of consecutive servers: a change reaches another site's MTAs a "
                   "drawn intersite lag later, and moves stay within their site.")
@click.option("--moves", type=click.IntRange(0, 100), help="Moves per world (default: drawn, 1-3).")
@click.option("--expect-loss", is_flag=True, help="A lost pair is the expected result (legacy): exit 0 if found, 1 if not.")
@click.option("--stop-on-break", is_flag=True, help="End the campaign at the first trial that breaks the invariant.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write summary.json, the first broken trial's merged logs and its trace SVG here.")
@click.option("--via", type=click.Choice(["zmq", "smtp"]), default="zmq", show_default=True,
              help="smtp: every message is sent over SMTP to its sender's server's IMS, whose kill and pause the "
                   "faults kill and pause can draw; a message the client was told 250 for must be accepted. The "
                   "outside world takes part: senders outside the organisation (some with UTF-8 addresses), "
                   "users writing to outside addresses, and a smarthost that refuses some for good and is down "
                   "for a while.")
@click.option("--imap", is_flag=True,
              help="Each server runs IMAP (Dovecot, root needed), and the users' clients file, flag and expunge "
                   "mail over it while it flows and mailboxes move. Real processes only.")
@click.option("--sim", is_flag=True, help="Run the trials in the simulator (same cores, virtual time, exact replay).")
@click.option("--workers", type=click.IntRange(1, 64), help="Simulator processes (default: one per core).")
@dask_option
@click.option("--determinism", is_flag=True, help="With --sim: run every seed twice and compare the event digests.")
@click.option("--confirm", "confirm_n", type=click.IntRange(0, 20), default=0, show_default=True,
              help="With --sim: run the first N broken worlds again on real processes and say whether they broke the same way.")
@click.option("--shrink", is_flag=True, help="With --sim: cut the first broken world down to the smallest that still breaks.")
@click.option("--torn-kills/--no-torn-kills", default=True, show_default=True,
              help="With --sim: half the kills land inside the node's next write (a torn batch), as a real kill rarely does.")
@click.option("--guided", is_flag=True,
              help="With --sim: keep the worlds that reached a decision no trial had, and draw most of the next "
                   "worlds as mutations of them (orchestrator.lab.guided); a broken one is written for --world.")
@click.option("--stuck-after", type=click.IntRange(1000), metavar="EVENTS",
              help="With --sim: a trial whose world runs more events than this between two steps of its schedule, "
                   "or after its last, is stuck (a finding, with its replay; default 200,000, about 4 s). Any "
                   "trial is stuck if it has not settled 90 s after its last step (of virtual time in the "
                   "simulator), at the lab's timings; in proportion for a slower --profile or --time-scale.")
@click.option("--world", "world_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Run this one world (a JSON file --shrink wrote) instead of drawing worlds.")
@profile_options("each world draws its lag, jitter and retry")
@click.option("--wide", is_flag=True, help="The summary as one row, a column per figure (for a wide terminal).")
@json_option
def chaos(run_dir: Path, trials: int, seed: int | None, replay: int | None, mta_build: str, network: str,
          move_build: str, faults: str, extremes: bool,
          users: int | None, servers: int, sites: int, moves: int | None, expect_loss: bool, stop_on_break: bool, report_dir: Path | None,
          via: str, imap: bool, sim: bool, workers: int | None, dask: str | None, determinism: bool, confirm_n: int,
          shrink: bool, torn_kills: bool, guided: bool, stuck_after: int | None,
          world_file: Path | None, profile: str, time_scale: float, wide: bool, as_json: bool) -> None:
    """Chaos campaign: random worlds on live clusters (or, with --sim, in the simulator), each
    judged by `xcon check`.

    Each trial draws users, alternates, replication lag, copy speed, moves (concurrent, back and
    forth, of alternates too), mail in every direction and faults from its seed, runs them on a
    fresh cluster, and checks the invariant. Exit 1 when an invariant broke (unless --expect-loss).
    In the simulator a seed replays exactly: the same events, the same verdict.
    """
    from orchestrator.lab import campaign as sim_campaign
    from orchestrator.lab import spec as campaigns  # the lab loads when a campaign runs, not for every command

    kinds = _fault_kinds(faults, network)
    spec = campaigns.CampaignSpec(
        seed=int.from_bytes(os.urandom(3), "big") if seed is None else seed, trials=trials, build=mta_build,
        faults=kinds, users=users, moves=moves, servers=servers, sites=sites, profile=profile, time_scale=time_scale,
        move_build=move_build, network=network, extremes=extremes, via=via, imap=imap, sim=sim, workers=workers,
        dask=dask, determinism=determinism, guided=guided, torn_kills=torn_kills, stuck_after=stuck_after,
        stop_on_break=stop_on_break, replay=replay, world_file=world_file, shrink=shrink, confirm=confirm_n)
    problem = spec.problem()
    if problem:
        raise click.UsageError(problem)
    if network == "netns":
        try:
            spec = replace(spec, netem=netns.probe_netem())
        except netns.NetworkError as exc:
            raise click.UsageError(str(exc)) from None
        if "net" in kinds and not spec.netem and not as_json:
            out.print("[yellow]this kernel has no netem: the fault net limits a link's rate only (tbf)[/yellow]")
    if world_file is not None:
        try:
            spec = spec.given(sim_campaign.load_world(world_file), world_file)
        except (ValueError, KeyError, OSError) as exc:
            raise click.UsageError(f"{world_file}: {exc}") from None
    # kept in the results store: results/<time>-<name>/, with the broken trials' run-dirs inside
    root = results_store.new(results_dir(run_dir, "results"), spec.name())
    done = _run_shown(spec, root, show=not as_json and sys.stdout.isatty())
    render_campaign(done, report_dir, wide, as_json)
    if done.nondeterministic:
        sys.exit(FINDING)
    if expect_loss:
        sys.exit(DONE if done.totals["lost"] else FINDING)
    if done.first:
        sys.exit(FINDING)


def _fault_kinds(faults: str, network: str) -> tuple[str, ...]:
    """--faults as kinds: 'none', 'all' (every kind, and the kernel's on namespaces), or a list."""
    said = faults.strip().lower()
    if said in ("none", "all"):
        return () if said == "none" else FAULTS + (NET_FAULTS if network == "netns" else ())
    return tuple(k.strip().replace("-", "_") for k in faults.split(",") if k.strip())


def _run_shown(spec: Any, root: Path, show: bool) -> Any:
    """Run the campaign, with a progress bar of its running totals on a terminal."""
    from orchestrator.lab import executors, spec as campaigns

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=out, transient=True, disable=not show) as bar:
        task = bar.add_task(f"{spec.build} seed {spec.seed}", total=len(spec.seeds()))

        so_far = {"broken": 0, "lost": 0}  # the campaign's running totals, not the last trial's

        def advance(r: Any) -> None:
            so_far["broken"] += bool(r.broken)
            so_far["lost"] += r.lost
            bar.update(task, advance=1, description=f"{spec.build}: {so_far['broken']:,} broken trial(s), "
                                                    f"{so_far['lost']:,} lost so far")

        try:
            return campaigns.run(spec, root, advance)
        except executors.DaskError as exc:
            raise click.UsageError(str(exc)) from None


def render_campaign(done: Any, report_dir: Path | None, wide: bool, as_json: bool) -> None:
    """A campaign's summary kept in the results store (and in `report_dir`), then shown: as JSON,
    or as a table of figures and what it found."""
    spec, root, results = done.spec, done.root, done.results
    summary = results_store.campaign_summary(done.meta(), done.totals, results, done.worlds, done.replay,
                                             lambda s: spec.replay_of(s, root))
    keep_run(root, summary)
    if report_dir:
        results_store.write_report(report_dir, summary, done.first)
    if as_json:
        emit_json({"seed": spec.seed, "build": spec.build, "faults": list(spec.faults), "simulated": spec.sim,
                   "totals": done.totals, "first_broken": done.first.to_json() if done.first else None,
                   "replay": done.replay, "nondeterministic": [r.seed for r in done.nondeterministic],
                   "kept": str(root), "executor": done.executor(),
                   "causes": [{"cause": c["cause"], "count": c["count"], "smallest": c["smallest"].seed}
                              for c in by_cause(results)], **done.extra,
                   "trials": [r.to_json() for r in results]})
        return
    _campaign_figures(done, wide)
    out.print(f"kept for `xcon serve` in\n  {root}", markup=False)  # a path whole, on a line of its own
    _campaign_findings(done)
    _shrunk_and_confirmed(done.extra)


def _campaign_figures(done: Any, wide: bool) -> None:
    """Its title, then its figures: a figure a row, which any terminal shows whole; --wide: a
    column each, for a wide one."""
    spec, t = done.spec, done.totals
    figures = [("build", spec.build), ("trials", f"{t['trials']:,}"), ("messages", f"{t['messages']:,}"),
               ("pairs", f"{t['pairs']:,}"), ("delivered", f"{t['delivered']:,}"), ("NDR", f"{t['ndr']:,}"),
               ("postmaster", f"{t['postmaster']:,}"), ("lost", f"{t['lost']:,}"),
               ("duplicated", f"{t['duplicated']:,}"), ("pending", f"{t['pending']:,}"), ("both", f"{t['both']:,}"),
               ("unjustified NDR", f"{t['unjustified_ndr']:,}"), ("early postmaster", f"{t['early_postmaster']:,}"),
               ("stale locks", f"{t['stale_locks']:,}"), ("moves (failed)", f"{t['moves']:,} ({t['moves_failed']:,})"),
               ("broken trials", f"{t['broken_trials']:,}"), ("stuck trials", f"{t['stuck_trials']:,}"),
               ("trials/min", f"{t['trials_per_minute']:,}")]
    where = "simulated" if spec.sim else "live clusters"
    title = (f"xcon chaos ({where}, {done.executor_words()}): campaign seed {spec.seed}, "
             f"faults {', '.join(spec.faults) or 'none'}")
    out.print(textwrap.fill(title, width=out.width), markup=False)  # a title rich would not wrap
    table = Table()
    if wide:
        for name, _ in figures:
            table.add_column(name, justify="right", no_wrap=True)
        table.add_row(*(value for _, value in figures))
    else:
        table.add_column("figure")
        table.add_column("value", justify="right", no_wrap=True)
        for name, value in figures:
            table.add_row(name, value)
    show_table(table)
    if spec.sim and spec.torn_kills and "kill" in " ".join(spec.faults):
        out.print(f"kills that landed inside a node's write (torn batches): {t['torn_writes']}")


def _campaign_findings(done: Any) -> None:
    """What broke, a line a cause, then the first broken trial, the errors and the determinism check."""
    results, first = done.results, done.first
    causes = by_cause(results)
    if len(causes) > 1:  # what broke, a line a cause, before the first trial's details
        out.print(f"broken trials by cause ({len(causes)}):", markup=False)
        for c in causes[:5]:
            prose(escape(f"{c['count']:>5,}  {c['cause']} (smallest: seed {c['smallest'].seed})"), indent="  ")
        if len(causes) > 5:
            out.print(f"  and {len(causes) - 5} more: `xcon serve` groups them all", markup=False)
    if first:
        prose(escape(f"first broken trial: seed {first.seed}: {describe_break(first)} (logs in {first.run_dir})"))
        out.print(f"replay: {done.replay}")
    errors = [r for r in results if r.error]
    if errors:
        prose(f"[yellow]{len(errors)} trial(s) had errors, first: seed {errors[0].seed}: "
              f"{escape(errors[0].error)}[/yellow]")
    if done.spec.determinism:
        differ = [r.seed for r in done.nondeterministic]
        prose(f"determinism: {len(results) - len(differ)} of {len(results)} seeds gave the same "
              "event digest twice" + (f"; [red]differ: {escape(str(differ[:10]))}[/red]" if differ else ""))


def _shrunk_and_confirmed(extra: dict[str, Any]) -> None:
    """The shrunk world (--shrink), and the finds run again on real processes (--confirm)."""
    if "shrunk" in extra:
        s = extra["shrunk"]
        prose(escape(f"shrunk in {s['runs']} runs: {s['events'][0]} -> {s['events'][1]} events, "
                     f"{s['users'][0]} -> {s['users'][1]} users; smallest world in {s['file']}"))
        out.print(f"replay it: {s['replay']}")
    if extra.get("confirmed"):
        confirmed = Table(title="broken in simulation, run again on real processes")
        for col in ("seed", "in simulation", "on real processes", "broke the same way?", "real run"):
            confirmed.add_column(col)
        for c in extra["confirmed"]:
            same = "[green]yes[/green]" if c["same"] else ("no (broke otherwise)" if c["real_broke"] else
                                                         "[yellow]no (did not break)[/yellow]")
            confirmed.add_row(str(c["seed"]), c["sim"], c["real"] if not c["real_error"] else
                              f"error: {c['real_error']}", same, c["run_dir"] or "-")
        show_table(confirmed)


def keep_scenario(run_dir: Path, name: str, sim: bool, cases: list, seed: int) -> None:
    """A scenario run in the results store, as a campaign is (orchestrator.lab.results): the
    builds and seed it used, and the command that runs it again (as it was typed)."""
    root = results_store.new(results_dir(run_dir, "results"), f"{'sim-' if sim else ''}scenario-{name}")
    builds = sorted({b for c in cases if (b := c.to_json().get("build"))})
    summary = results_store.scenario_summary({"kind": "scenario", "name": root.name, "scenario": name,
                                              "build": ", ".join(builds), "seed": seed, "simulated": sim,
                                              "command": shlex.join(["xcon", *sys.argv[1:]]), "store": str(root)}, cases)
    keep_run(root, summary)


# --- scenarios ------------------------------------------------------------------------------

@click.command()
@run_dir_option
@click.argument("name", type=click.Choice(["list", "q248839", "q172364", "q178534", "q277911", "kb2579150"]))
@click.option("--mta-build", type=click.Choice([*BUILDS, "legacy+workaround", "legacy+co-recipient"]),
              help="q248839: run one case.")
@click.option("--case", "case", help="Another scenario: run one of its cases (`xcon scenario list` names them).")
@click.option("--all", "all_cases", is_flag=True, help="Run every case: legacy, sp4, reroute, legacy with the "
              "workaround, legacy with a plain co-recipient.")
@click.option("--alternate-on", type=click.Choice(["same", "other", "third", "all"]),
              help="Where carol (bob's alternate) lives: bob's server, another one (alice's, the move's target) or "
                   "a third (a 3-server cluster). Default: same and other with --all, same with --mta-build.")
@click.option("--sim", is_flag=True, help="Run the cases in the simulator (same cores, virtual time); its runs are "
              "written to the run-dir as real ones, for xcon check, logs and trace.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the cluster's draws (replication jitter, network).")
@profile_options("the scenario's own quick timings")
@click.option("--wide", is_flag=True, help="list: one table with every column (for a wide terminal).")
@json_option
def scenario(run_dir: Path, name: str, mta_build: str | None, case: str | None, all_cases: bool,
             alternate_on: str | None, sim: bool, seed: int, profile: str, time_scale: float, wide: bool,
             as_json: bool) -> None:
    """Reproduce KB Q248839 (or one of its family: `xcon scenario list`) on fresh clusters and
    compare with what the article says; exit 0 only when every case behaves so."""
    from orchestrator.lab import family
    from orchestrator.lab.scenario import CASES, render, run_cases
    from orchestrator.sim.world import Network

    if name == "list":
        if as_json:
            emit_json({n: {**a.__dict__, "cases": list(CASES) if n == "q248839" else list(a.cases)}
                       for n, a in family.FAMILY.items()})
        else:
            family.render_list(out, wide)
        return
    if name != "q248839":
        known = list(family.FAMILY[name].cases)
        if alternate_on or profile != "lab" or time_scale != 1.0:
            raise click.UsageError(f"{name} sets its own timings and users: --profile, --time-scale and --alternate-on "
                                   "are q248839's")
        if all_cases == bool(case) or mta_build:
            raise click.UsageError(f"give one of --all or --case ({', '.join(known)})")
        if case and case not in known:
            raise click.UsageError(f"{name} has no case '{case}' (cases: {', '.join(known)})")
        found = family.run_cases(name, results_dir(run_dir, "scenario-sim" if sim else "scenario"),
                                 known if all_cases else [case], progress=None if as_json else out,
                                 sim=Network() if sim else None, seed=seed)
        keep_scenario(run_dir, name, sim, found, seed)
        if as_json:
            emit_json([r.to_json() for r in found])
        else:
            family.render(name, found, out)
        sys.exit(DONE if all(r.matches for r in found) else FINDING)
    if case and case not in CASES:
        raise click.UsageError(f"q248839 has no case '{case}' (cases: {', '.join(CASES)})")
    if case:
        mta_build = mta_build or case
    if all_cases == bool(mta_build):
        raise click.UsageError("give one of --all or --mta-build")
    cases = list(CASES) if all_cases else [mta_build]
    placements = (("same", "other", "third") if alternate_on == "all" else (alternate_on,) if alternate_on else
                  ("same", "other") if all_cases else ("same",))
    root = results_dir(run_dir, "scenario-sim" if sim else "scenario")
    results = run_cases(root, cases, progress=None if as_json else out, sim=Network() if sim else None, seed=seed,
                        placements=placements, profile=profile, time_scale=time_scale)
    keep_scenario(run_dir, name, sim, results, seed)
    if as_json:
        emit_json([r.to_json() for r in results])
    else:
        render(results, out)
    if not all(r.matches for r in results):
        sys.exit(FINDING)


COMMANDS = [chaos, scenario]
