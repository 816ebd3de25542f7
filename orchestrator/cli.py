"""The `xcon` command line.

click for the commands (help text, types and choices checked before anything runs) and rich
for tables. Every command takes --run-dir (or XCON_RUN_DIR; default ./.xcon); every command
that reports has --json. A user's mistake ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from nodes.config import BUILDS, Settings

from . import check as checker
from . import cluster as cl
from . import logread
from .client import ClusterError

out = Console(highlight=False, soft_wrap=True)
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def run_dir_option(f: Callable) -> Callable:
    return click.option(
        "--run-dir", type=click.Path(file_okay=False, path_type=Path), envvar="XCON_RUN_DIR",
        default=Path(".xcon"), show_default=True, show_envvar=True,
        help="Directory holding the cluster's state, logs and cluster.json.")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")(f)


def attached(f: Callable) -> Callable:
    """Give the command a Cluster attached to the running cluster of --run-dir."""
    @functools.wraps(f)
    def wrapper(run_dir: Path, **kwargs: Any) -> Any:
        cluster = cl.Cluster.attach(run_dir)
        try:
            return f(cluster, **kwargs)
        finally:
            cluster.close()
    return wrapper


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def xcon() -> None:
    """xcon: an Exchange 5.5 organisation in processes, to reproduce KB Q248839.

    Start a cluster with `xcon up`, add users, send mail, move mailboxes while mail flows,
    then read what happened with `xcon logs` and judge it with `xcon check`.
    `xcon scenario q248839 --all` runs the whole reproduction on fresh clusters.
    """


# --- cluster lifecycle ----------------------------------------------------------------------

@xcon.command()
@run_dir_option
@click.option("--servers", type=click.IntRange(1, 26), default=2, show_default=True, help="Number of servers (ex1, ex2, ...).")
@click.option("--mta-build", type=click.Choice(BUILDS), default="legacy", show_default=True,
              help="legacy: 5.5 SP3 (silent loss); sp4: NDR per recipient; reroute: ask the directory and reroute.")
@click.option("--replication-lag-ms", type=click.IntRange(0, 3_600_000), default=Settings.replication_lag_ms, show_default=True,
              help="Delay before a directory change reaches an MTA's cache.")
@click.option("--replication-jitter-ms", type=click.IntRange(0, 3_600_000), default=Settings.replication_jitter_ms,
              show_default=True, help="Extra random delay (0..jitter, seeded) per change.")
@click.option("--retry-ms", type=click.IntRange(10, 3_600_000), default=Settings.retry_ms, show_default=True,
              help="How long an MTA waits before retrying a deferred delivery.")
@click.option("--expire-ms", type=click.IntRange(100, 86_400_000), default=Settings.expire_ms, show_default=True,
              help="How long an MTA keeps trying before it gives up on a recipient.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the replication jitter.")
@json_option
def up(run_dir: Path, servers: int, mta_build: str, replication_lag_ms: int, replication_jitter_ms: int,
       retry_ms: int, expire_ms: int, seed: int, as_json: bool) -> None:
    """Start every node in the background; return when all are ready."""
    settings = Settings(tuple(f"ex{i}" for i in range(1, servers + 1)), mta_build, replication_lag_ms,
                        replication_jitter_ms, retry_ms, expire_ms, seed=seed)
    t0 = time.time()
    cluster = cl.start(run_dir, settings)
    took = time.time() - t0
    cluster.close()
    if as_json:
        emit_json({**cluster.config.to_json(), "start_seconds": round(took, 3)})
        return
    table = Table(title=f"cluster up in {took:.2f}s: {run_dir.resolve()}")
    for col in ("node", "pid", "endpoint", "log"):
        table.add_column(col)
    for name, node in cluster.config.nodes.items():
        table.add_row(name, str(node["pid"]), node["endpoints"]["router"], node["log"])
    out.print(table)
    out.print(f"MTA build: {mta_build}, replication lag {replication_lag_ms}+0..{replication_jitter_ms} ms, seed {seed}")


@xcon.command()
@run_dir_option
@json_option
def down(run_dir: Path, as_json: bool) -> None:
    """Stop every node: gracefully, then by force after 5 s."""
    stopped = cl.stop(run_dir)
    if as_json:
        emit_json({"stopped": stopped})
    else:
        out.print(f"stopped {len(stopped)} node(s)" + (f": {', '.join(stopped)}" if stopped else ""))


@xcon.command()
@run_dir_option
@json_option
@attached
def status(cluster: cl.Cluster, as_json: bool) -> None:
    """Nodes (alive, pid), queue depths, each MTA's cache USN against the directory's, moves."""
    st = cluster.status()
    if as_json:
        emit_json(st)
        return
    nodes = st["nodes"]
    dir_usn = nodes.get("directory", {}).get("status", {}).get("usn")
    table = Table(title=f"xcon cluster in {st['run_dir']} (build {st['settings']['mta_build']})")
    for col in ("node", "alive", "pid", "state"):
        table.add_column(col)
    moves = []
    for name, info in nodes.items():
        s = info.get("status", {})
        if "error" in info:
            detail = info["error"]
        elif name == "directory":
            detail = f"usn {s.get('usn')}, {s.get('recipients')} recipients"
        elif name.startswith("mta."):
            lag = "" if s.get("cache_usn") == dir_usn else "  (cache behind)"
            detail = (f"cache usn {s.get('cache_usn')}/{dir_usn}{lag}; queue: {s.get('open_pairs')} open, "
                      f"{s.get('deferred')} deferred, {s.get('in_flight')} in flight")
        elif name.startswith("store."):
            boxes = s.get("mailboxes", {})
            detail = f"{len(boxes)} mailboxes" + (f", locked: {', '.join(s['locked'])}" if s.get("locked") else "")
        else:
            moves = s.get("active", [])
            detail = f"{len(moves)} move(s) running, {s.get('finished', 0)} finished"
        table.add_row(name, "yes" if info["alive"] else "[red]no[/red]", str(info.get("pid") or "-"), detail)
    out.print(table)
    for m in moves:
        out.print(f"move {m['move_id']}: {m['alias']} {m['source']} -> {m['target']}, step {m['step']}")


# --- users ----------------------------------------------------------------------------------

@xcon.group()
def user() -> None:
    """Add, change and show recipients in the directory."""


def print_user(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(entry)
        return
    alt = entry["alternate"] or "-"
    both = " (deliver to both)" if entry["deliver_to_both"] else ""
    out.print(f"{entry['alias']}: home {entry['home_server']}, alternate {alt}{both}, usn {entry['usn']}")


@user.command("add")
@run_dir_option
@click.argument("alias")
@click.option("--server", required=True, help="Home server (ex1, ex2, ...).")
@click.option("--alternate", help="Alternate recipient (an existing alias).")
@click.option("--deliver-to-both", is_flag=True, help="Deliver to the user and the alternate.")
@click.option("--display-name", default="", help="Display name (defaults to the alias).")
@click.option("--no-wait", is_flag=True, help="Return without waiting for every MTA's cache to hold the entry.")
@json_option
@attached
def user_add(cluster: cl.Cluster, alias: str, server: str, alternate: str | None, deliver_to_both: bool,
             display_name: str, no_wait: bool, as_json: bool) -> None:
    """Create a mailbox on SERVER and a directory entry for ALIAS."""
    print_user(cluster.add_user(alias, server, alternate, deliver_to_both, display_name, wait=not no_wait), as_json)


@user.command("set")
@run_dir_option
@click.argument("alias")
@click.option("--alternate", help="Set the alternate recipient.")
@click.option("--no-alternate", is_flag=True, help="Remove the alternate recipient.")
@click.option("--deliver-to-both/--no-deliver-to-both", default=None, help="Deliver to both the user and the alternate.")
@click.option("--no-wait", is_flag=True, help="Return without waiting for every MTA's cache to hold the change.")
@json_option
def user_set(run_dir: Path, alias: str, alternate: str | None, no_alternate: bool,
             deliver_to_both: bool | None, no_wait: bool, as_json: bool) -> None:
    """Change ALIAS's alternate recipient or deliver-to-both setting."""
    if alternate and no_alternate:
        raise click.UsageError("--alternate and --no-alternate exclude each other")
    changes: dict[str, Any] = {}
    if alternate:
        changes["alternate"] = alternate
    if no_alternate:
        changes["alternate"] = None
        if deliver_to_both is None:
            changes["deliver_to_both"] = False
    if deliver_to_both is not None:
        changes["deliver_to_both"] = deliver_to_both
    if not changes:
        raise click.UsageError("nothing to change: give --alternate, --no-alternate or --[no-]deliver-to-both")
    attached(lambda cluster: print_user(cluster.set_user(alias, changes, wait=not no_wait), as_json))(run_dir)


@user.command("show")
@run_dir_option
@click.argument("alias")
@json_option
@attached
def user_show(cluster: cl.Cluster, alias: str, as_json: bool) -> None:
    """Show ALIAS as the directory holds it."""
    entry = cluster.lookup(alias)
    if entry is None:
        raise ClusterError(f"unknown user '{alias}'")
    print_user(entry, as_json)


# --- mail -----------------------------------------------------------------------------------

@xcon.command()
@run_dir_option
@click.option("--from", "sender", required=True, help="Originator's alias.")
@click.option("--to", "to", required=True, help="Recipients' aliases, comma separated.")
@click.option("--subject", default="", help="Subject line.")
@click.option("--body", default="", help="Message text.")
@json_option
@attached
def send(cluster: cl.Cluster, sender: str, to: str, subject: str, body: str, as_json: bool) -> None:
    """Submit a message to the originator's home MTA; prints its message id once accepted."""
    rcpts = [r.strip() for r in to.split(",") if r.strip()]
    if not rcpts:
        raise click.UsageError("--to needs at least one alias")
    accepted = cluster.send(sender, rcpts, subject, body)
    if as_json:
        emit_json(accepted)
    else:
        click.echo(accepted["msg_id"])


@xcon.command()
@run_dir_option
@click.argument("alias")
@json_option
@attached
def mailbox(cluster: cl.Cluster, alias: str, as_json: bool) -> None:
    """The messages in ALIAS's mailbox, wherever it lives now."""
    box = cluster.mailbox(alias)
    if as_json:
        emit_json(box)
        return
    table = Table(title=f"mailbox {alias} on {box['server']}: {len(box['messages'])} message(s)")
    for col in ("message id", "from", "subject", "NDR", "NDR for", "failed recipients"):
        table.add_column(col)
    for m in box["messages"]:
        table.add_row(m["msg_id"], m["from"], m["subject"], "yes" if m["ndr"] else "",
                      m["ndr_for"] or "", ", ".join(m["failed"]))
    out.print(table)


# --- moves ----------------------------------------------------------------------------------

@xcon.command()
@run_dir_option
@click.argument("alias")
@click.option("--to", "target", required=True, help="Target server.")
@click.option("--workaround", is_flag=True,
              help="KB workaround: clear the alternate, wait for every MTA's cache, move, restore it.")
@click.option("--copy-delay-ms", type=click.IntRange(0, 600_000), default=0, show_default=True,
              help="Copy time per message (at least one message's worth), while the mailbox is locked.")
@click.option("--no-wait", is_flag=True, help="Return once the move has started.")
@json_option
@attached
def move(cluster: cl.Cluster, alias: str, target: str, workaround: bool, copy_delay_ms: int, no_wait: bool,
         as_json: bool) -> None:
    """Move ALIAS's mailbox to another server (Move User)."""
    state = cluster.move(alias, target, workaround, copy_delay_ms, wait=not no_wait)
    if as_json:
        emit_json(state)
        return
    if state["step"] == "failed":
        raise ClusterError(f"move {state['move_id']} failed: {state['error']}")
    took = f" in {state['finished_at'] - state['started_at']:.2f}s" if state.get("finished_at") else ""
    out.print(f"move {state['move_id']}: {alias} {state['source']} -> {state['target']}: {state['step']}{took}"
              f", {state['copied']} message(s) copied")


@xcon.command()
@run_dir_option
@click.option("--timeout", type=click.FloatRange(0), default=60.0, show_default=True, help="Seconds to wait at most.")
@json_option
@attached
def wait(cluster: cl.Cluster, timeout: float, as_json: bool) -> None:
    """Return when no move runs and every MTA queue is empty (exit 1 on timeout)."""
    t0 = time.time()
    quiet = cluster.wait(timeout)
    if as_json:
        emit_json({"quiet": quiet, "seconds": round(time.time() - t0, 3)})
    elif not quiet:
        click.echo(f"xcon: still busy after {timeout:g}s (see `xcon status`)", err=True)
    if not quiet:
        sys.exit(1)


# --- logs -----------------------------------------------------------------------------------

HIDDEN = {"ts", "node", "level", "event", "lamport"}


def format_event(e: dict[str, Any]) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(e.get("ts", 0))) + f".{int(e.get('ts', 0) * 1000) % 1000:03d}"
    fields = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in e.items() if k not in HIDDEN)
    return f"{t} {e.get('node', '?'):<13} L{e.get('lamport', 0):<5} {e['event']:<24} {fields}"


@xcon.command()
@run_dir_option
@click.option("--node", help="Only this node (glob: 'mta.*').")
@click.option("--msg", "msg", help="Only events of this message id (and NDRs about it).")
@click.option("--event", "pattern", help="Only events matching this glob ('mta.*', '*deferred').")
@json_option
def logs(run_dir: Path, node: str | None, msg: str | None, pattern: str | None, as_json: bool) -> None:
    """Every node's log merged into one timeline (works on a stopped cluster too)."""
    run_dir = run_dir.resolve()
    if not logread.log_files(run_dir):
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    for e in logread.filtered(logread.merged(run_dir), node=node, msg=msg, pattern=pattern):
        click.echo(json.dumps(e) if as_json else format_event(e))


@xcon.command("check")
@run_dir_option
@json_option
def check_cmd(run_dir: Path, as_json: bool) -> None:
    """Judge the invariant over the logs: each accepted (message, recipient) delivered once or
    NDR'd once. Exit 1 on any lost, pending, duplicated or both."""
    run_dir = run_dir.resolve()
    if not logread.log_files(run_dir):
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    bad: list[str] = []
    report = checker.check(logread.merged(run_dir, bad))
    if as_json:
        emit_json({**report.to_json(), "unreadable_lines": bad})
    else:
        c = report.counts
        out.print(f"{report.pairs} accepted (message, recipient) pairs: {c['delivered']} delivered, {c['ndr']} NDR, "
                  f"{c['lost']} lost, {c['pending']} pending, {c['duplicated']} duplicated, {c['both']} both")
        if bad:
            out.print(f"[yellow]{len(bad)} unreadable log line(s), first at {bad[0]}[/yellow]")
        for v in report.violations:
            alt = f" (alternate of {v.alt_of})" if v.alt_of else ""
            out.print(f"[red]{v.outcome.upper()}[/red] {v.msg_id} -> {v.rcpt}{alt}, from {v.sender}")
            for e in v.last_events:
                facts = ", ".join(f"{k}={e[k]}" for k in e if k not in ("ts", "node", "event", "lamport"))
                out.print(f"    {e['node']}: {e['event']} {facts}")
        out.print("invariant holds" if report.ok else f"[red]invariant broken: {len(report.violations)} pair(s)[/red]")
    if not report.ok:
        sys.exit(1)


# --- scenarios ------------------------------------------------------------------------------

@xcon.command()
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


def main() -> None:
    """Entry point: user errors become one line on stderr, never a traceback."""
    try:
        xcon.main(standalone_mode=False)
    except NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "xcon"
        click.echo(f"{cmd}: {exc.format_message()} (see `{cmd} --help`)", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("xcon: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"xcon: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ClusterError as exc:
        click.echo(f"xcon: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line, the traceback on demand
        if os.environ.get("XCON_DEBUG"):
            raise
        click.echo(f"xcon: internal error: {type(exc).__name__}: {exc} (set XCON_DEBUG=1 for the traceback)",
                   err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
