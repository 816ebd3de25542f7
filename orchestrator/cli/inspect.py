"""xcon commands that read what happened: logs, trace, check."""

from __future__ import annotations

import fnmatch
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from orchestrator.inspect import check as checker
from orchestrator.inspect import logread
from protocol import hlc
from .common import (
    FINDING,
    NOT_DONE,
    Finding,
    emit_json,
    json_option,
    msg_id_argument,
    msg_id_option,
    out,
    prose,
    run_dir_option,
)
from orchestrator.cluster.client import ClusterError

HIDDEN = {"ts", "node", "level", "event", "hlc", "lamport"}


def format_event(e: dict[str, Any]) -> str:
    """time (the clock's physical part: the order the lines are in), node, event, fields."""
    at = hlc.of_event(e)[0]
    t = time.strftime("%H:%M:%S", time.localtime(at // 1000)) + f".{at % 1000:03d}"
    fields = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in e.items() if k not in HIDDEN)
    return f"{t} {e.get('node', '?'):<13} {e['event']:<24} {fields}"


@click.command()
@run_dir_option
@click.option("--node", help="Only this node (glob: 'mta.*').")
@click.option("--msg", "msg", callback=msg_id_option, help="Only events of this message id (and NDRs about it).")
@click.option("--event", "pattern", help="Only events matching this glob ('mta.*', '*deferred').")
@click.option("--until", "until", metavar="GLOB",
              help="First wait until an event matching this glob (among those the other options select) is logged, "
                   "e.g. `--msg M --until mta.deferred`; exit 1 if none comes within --timeout.")
@click.option("--timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="With --until: seconds to wait at most.")
@click.option("--export", "export", type=click.Choice(["perfetto"]),
              help="Write the (filtered) events to FILE in this format instead of printing them.")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def logs(run_dir: Path, node: str | None, msg: str | None, pattern: str | None, until: str | None, timeout: float,
         export: str | None, file: Path | None, as_json: bool) -> None:
    """Every node's log merged into one timeline (works on a stopped cluster too).

    `xcon logs --export perfetto FILE` writes Chrome trace-event JSON for the Perfetto UI.
    """
    run_dir = run_dir.resolve()
    if bool(export) != bool(file):
        raise click.UsageError("--export needs a FILE, and a FILE needs --export")
    files = logread.log_files(run_dir)
    if not files:
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    names = [f.stem for f in files]
    if node and not until and not any(fnmatch.fnmatchcase(n, node) for n in names):  # a typo, not a quiet node
        raise click.UsageError(f"no node {node!r} has a log here (these do: {', '.join(names)})")
    if until:
        deadline = time.time() + timeout
        while not any(logread.filtered(logread.merged(run_dir), node=node, msg=msg, pattern=until)):
            if time.time() > deadline:
                raise Finding(f"no event {until!r}" + (f" for message {msg}" if msg else "") +
                                   (f" on {node}" if node else "") + f" within {timeout:g}s")
            time.sleep(0.1)
    events = logread.filtered(logread.merged(run_dir), node=node, msg=msg, pattern=pattern)
    if export:
        from orchestrator.inspect.trace import perfetto
        data = perfetto(events)
        file.write_text(json.dumps(data))
        click.echo(f"wrote {len(data['traceEvents'])} trace events to {file} (open it at ui.perfetto.dev)")
        return
    shown = 0
    for e in events:
        click.echo(json.dumps(e) if as_json else format_event(e))
        shown += 1
    if not shown and (msg or node or pattern):  # no match: a finding, as `xcon trace` and `xcon show` say
        click.echo("xcon: no event" + (f" of message {msg}" if msg else "") + (f" on {node}" if node else "")
                   + (f" matching {pattern!r}" if pattern else ""), err=True)
        sys.exit(FINDING)


@click.command("trace")
@run_dir_option
@msg_id_argument
@click.option("--svg", "svg_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the story as an SVG sequence diagram (one lane per node).")
@json_option
def trace_cmd(run_dir: Path, msg_id: str, svg_file: Path | None, as_json: bool) -> None:
    """One message's story across every node, in causal order: its hops, the directory changes
    and cache updates that decided them, the moves and faults around them."""
    from orchestrator.inspect import trace as trace_mod

    run_dir = run_dir.resolve()
    if not logread.log_files(run_dir):
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    events = trace_mod.story(run_dir, msg_id)
    if not events:
        raise Finding(f"no events for message '{msg_id}' in {run_dir}/logs")
    if svg_file:
        svg_file.write_text(trace_mod.svg(events, msg_id))
    if as_json:
        emit_json(events)
        return
    for line in trace_mod.render_text(events):
        click.echo(line)
    if svg_file:
        click.echo(f"wrote {svg_file}")


@click.command("check")
@run_dir_option
@click.option("--logs-only", is_flag=True,
              help="Judge from the logs alone, without reading the mailboxes and locks (the run's files).")
@json_option
def check_cmd(run_dir: Path, logs_only: bool, as_json: bool) -> None:
    """Judge the invariant: each accepted (message, recipient) delivered once or NDR'd once.

    The logs say what each node decided; then the mailboxes on disk say what is there (run it
    after `xcon wait`): a pair counts as delivered only if its message is in the recipient's
    mailbox on the server the directory homes it, and an NDR only if it is in the originator's.
    A lock that no unfinished move holds is reported too. What was accepted is read from the MTAs'
    queue logs and the mailboxes as well as the logs. Exit 1 on any lost, pending, duplicated or
    both, or a stale lock; exit 3 and no verdict when a log is missing, cut or damaged, or a file
    of the end state does not read.
    """
    run_dir = run_dir.resolve()
    if not logread.log_files(run_dir):
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    try:
        report = checker.check_run(run_dir, audit=not logs_only)
    except checker.NoVerdict as exc:
        if as_json:
            emit_json({"ok": None, "no_verdict": str(exc)})
        else:
            click.echo(f"xcon: {exc}", err=True)
        sys.exit(NOT_DONE)
    if as_json:
        emit_json(report.to_json())
    else:
        c = report.counts
        source = "logs, queue logs and mailboxes" if report.audited else "logs only"
        postmaster = f"{c['postmaster']} to the postmaster, " if c["postmaster"] else ""
        postmaster += f"{c['declined']} failed with no report asked for, " if c.get("declined") else ""
        damaged = f" ({c['damaged']} of them to damage)" if c["damaged"] else ""
        prose(f"{report.pairs} accepted (message, recipient) pairs: {c['delivered']} delivered, {c['ndr']} NDR, "
              f"{postmaster}{c['lost'] + c['damaged']} lost{damaged}, {c['pending']} pending, "
              f"{c['duplicated']} duplicated, {c['both']} both{_unowed(c)} (from the {source})")
        if report.by_users:
            acts = report.by_users
            prose(f"{len(acts)} of the delivered ones their users then filed away or expunged over IMAP (their own "
                  f"act, not a loss): " + "; ".join(f"{a['msg_id']} -> {a['rcpt']}: {a['act']}" for a in acts[:3])
                  + (" ..." if len(acts) > 3 else ""))
        if report.unlogged:
            prose(f"{report.unlogged} of them known from queue logs and mailboxes alone: their acceptance lines "
                  "are missing")
        for v in report.violations:
            shown, rest = v.headline().split(" ", 1)
            prose(f"[red]{shown}[/red] {rest}")
            for line in v.decisive():
                prose(line.replace("removed by ", "[red]removed by[/red] ", 1), indent="    ")
        for lock in report.stale_locks:
            kind = "an incoming copy" if lock["incoming"] else "the mailbox"
            prose(f"[red]STALE LOCK[/red] store.{lock['server']}: {kind} of {lock['mailbox']} is locked by "
                  f"{lock['owner']}, which no unfinished move is (clear it: xcon move {lock['mailbox']} --abort)")
        broken = len(report.violations) + len(report.stale_locks)
        out.print("invariant holds" if report.ok else f"[red]invariant broken: {broken} finding(s)[/red]")
    if not report.ok:
        sys.exit(FINDING)


COMMANDS = [logs, trace_cmd, check_cmd]


def _unowed(counts: dict[str, int]) -> str:
    """The findings of inspect.justify, where there are any: reports the facts did not owe."""
    found = [(counts.get("unjustified_ndr", 0), "unjustified NDR"), (counts.get("early_postmaster", 0),
                                                                      "early to the postmaster")]
    return "".join(f", {n} {what}" for n, what in found if n)
