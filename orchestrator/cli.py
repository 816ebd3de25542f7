"""The `xcon` command line.

click for the commands (help text, types and choices checked before anything runs) and rich
for tables. Every command takes --run-dir (or XCON_RUN_DIR; default ./.xcon); every command
that reports has --json. A user's mistake ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from nodes.config import BUILDS, CONSOLE_LEVELS, Settings
from protocol import MAX_MESSAGE_BYTES

from . import chaos as chaos_mod
from .faults import MOVE_STEPS
from . import check as checker
from . import cluster as cl
from . import logread
from .client import ClusterError

# in a terminal, tables fit its width; piped or redirected, they keep every column whole (rich
# would squeeze them into 80 columns and cut the words in them)
out = Console(highlight=False, soft_wrap=True,
              width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 10_000)
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def run_dir_option(f: Callable) -> Callable:
    return click.option(
        "--run-dir", type=click.Path(file_okay=False, path_type=Path), envvar="XCON_RUN_DIR",
        default=Path(".xcon"), show_default=True, show_envvar=True,
        help="Directory holding the cluster's state, logs and cluster.json.")(f)


class Text(click.ParamType):
    """Text that is valid UTF-8: a command line can carry any bytes, mail text and names cannot."""

    name = "text"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                self.fail(f"{value.encode('utf-8', 'backslashreplace').decode()!r} is not valid UTF-8 text", param, ctx)
        return value


TEXT = Text()


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
@click.option("--max-queue", type=click.IntRange(1, 10_000_000), default=Settings.max_queue, show_default=True,
              help="Messages an MTA holds before it answers 'busy, retry'.")
@click.option("--insecure", is_flag=True, help="No CURVE, no ZAP: any local process may talk to the nodes.")
@click.option("--no-fsync", is_flag=True,
              help="Benchmarks only: acknowledge before the disk has it (a crash then loses accepted mail).")
@click.option("--console", type=click.Choice(CONSOLE_LEVELS), default=Settings.console, show_default=True,
              help="What each node's RUN_DIR/logs/NODE.console shows of mail events: warnings, or every event "
                   "(the JSON log always has every event; `xcon logs` shows it).")
@click.option("--min-free-mb", type=click.IntRange(0, 1_000_000), default=Settings.min_free_mb, show_default=True,
              help="Below this much free disk an MTA refuses new mail and a store defers deliveries, "
                   "until there is room again.")
@click.option("--fresh", is_flag=True,
              help="Start anew: delete the state a stopped cluster left in RUN_DIR (mail, queues, directory, "
                   "journal, keys, logs) instead of resuming it.")
@json_option
@click.pass_context
def up(ctx: click.Context, run_dir: Path, servers: int, mta_build: str, replication_lag_ms: int,
       replication_jitter_ms: int, retry_ms: int, expire_ms: int, seed: int, max_queue: int, insecure: bool,
       no_fsync: bool, console: str, min_free_mb: int, fresh: bool, as_json: bool) -> None:
    """Start every node in the background; return when all are ready.

    A RUN_DIR that holds a stopped cluster (after `xcon down`, or after every node died) is
    resumed: each node restarts on its own queue, journal, directory, mailboxes and keys, and
    the mail it had accepted is delivered. Settings given on the command line replace the saved
    ones (an MTA build, say); --servers and --insecure cannot change. `--fresh` deletes that
    state first. xcon marks the directories it makes and deletes nothing elsewhere: a RUN_DIR
    holding files it did not make is refused.

    Every socket uses CURVE with keys created in RUN_DIR/keys (owner-only); only the cluster's
    key is admitted. Endpoints bind to 127.0.0.1 (cluster.json holds them).
    """
    if insecure:
        click.echo("xcon: WARNING: --insecure: no encryption, no authentication; any process that can reach "
                   "the ports can submit, move and read mail", err=True)
    settings = Settings(tuple(f"ex{i}" for i in range(1, servers + 1)), mta_build, replication_lag_ms,
                        replication_jitter_ms, retry_ms, expire_ms, seed=seed, max_queue=max_queue,
                        insecure=insecure, fsync=not no_fsync, console=console, min_free_mb=min_free_mb)
    field_of = {"no_fsync": "fsync"}
    given = frozenset(field_of.get(name, name) for name in ctx.params
                      if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
                      and field_of.get(name, name) in Settings.__dataclass_fields__)
    t0 = time.time()
    cluster = cl.start(run_dir, settings, fresh=fresh, given=given)
    took = time.time() - t0
    try:
        resumed = resume_summary(cluster) if cluster.resumed is not None else None
    finally:
        cluster.close()
    if as_json:
        emit_json({**cluster.config.to_json(), "start_seconds": round(took, 3), "resumed": resumed})
        return
    verb = "resumed" if resumed else "up"
    table = Table(title=f"cluster {verb} in {took:.2f}s: {run_dir.resolve()}")
    for col in ("node", "pid", "endpoint", "log"):
        table.add_column(col)
    for name, node in cluster.config.nodes.items():
        table.add_row(name, str(node["pid"]), node["endpoints"]["router"], node["log"])
    out.print(table)
    st = cluster.config.settings
    out.print(f"MTA build: {st.mta_build}, replication lag {st.replication_lag_ms}+0..{st.replication_jitter_ms} ms, "
              f"seed {st.seed}")
    if resumed:
        out.print(f"resumed the stopped cluster's state: {'; '.join(resumed['kept'])}")
        for key, (was, now) in resumed["changed"].items():
            out.print(f"setting changed on resume: {key} {was} -> {now}")


def resume_summary(cluster: cl.Cluster) -> dict[str, Any]:
    """What a resumed cluster took up again, as its nodes report it."""
    kept = []
    d = cluster.status_of("directory")
    kept.append(f"directory at USN {d['usn']}, {d['recipients']} user(s)")
    for server in cluster.servers:
        box = cluster.status_of(f"store.{server}")
        held = sum(box["mailboxes"].values())
        kept.append(f"store.{server}: {len(box['mailboxes'])} mailbox(es), {held} message(s)"
                    + (f", locked: {', '.join(box['locked'])}" if box["locked"] else ""))
    for mta in cluster.mtas:
        m = cluster.status_of(mta)
        kept.append(f"{mta}: {m['recovered']} message(s) taken up from its queue, {m['messages']} queued now")
    orch = cluster.status_of("orchestrator")
    kept.append(f"orchestrator: {orch['recovered']} unfinished move(s) taken up from its journal"
                + "".join(f", {m['move_id']} of {m['alias']} ({'rolling back' if m['rolling_back'] else 'finishing'})"
                          for m in orch["active"]))
    return {"kept": kept, "changed": {k: list(v) for k, v in cluster.resumed["changed"].items()},
            "moved_endpoints": cluster.resumed["moved_endpoints"]}


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
        if not info["alive"]:
            detail = "-"
        elif "error" in info:
            detail = info["error"]
        elif name == "directory":
            detail = f"usn {s.get('usn')}, {s.get('recipients')} recipients"
        elif name.startswith("mta."):
            lag = "" if s.get("cache_usn") == dir_usn else "  (cache behind)"
            detail = (f"cache usn {s.get('cache_usn')}/{dir_usn}{lag}; queue: {s.get('open_pairs')} open, "
                      f"{s.get('deferred')} deferred, {s.get('in_flight')} in flight")
        elif name.startswith("store."):
            boxes = s.get("mailboxes", {})
            locks = [f"{m} by {o}" + (" (incoming)" if m in s.get("incoming", ()) else "")
                     for m, o in s.get("locked", {}).items()]
            detail = f"{len(boxes)} mailboxes" + (f", locked: {', '.join(locks)}" if locks else "")
        else:
            moves = s.get("active", [])
            detail = f"{len(moves)} move(s) running, {s.get('finished', 0)} finished"
        table.add_row(name, "yes" if info["alive"] else "[red]no[/red]", str(info.get("pid") or "-"), detail)
    out.print(table)
    for m in moves:
        waiting = f", waiting for {m['waiting_for']} (try {m['attempts']})" if m.get("waiting_for") else ""
        how = f"rolling back ({m['error']}), " if m["rolling_back"] else ""
        out.print(f"move {m['move_id']}: {m['alias']} {m['source']} -> {m['target']}, {how}step {m['step']}{waiting}")


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
@click.option("--from", "sender", required=True, type=TEXT, help="Originator's alias.")
@click.option("--to", "to", required=True, type=TEXT, help="Recipients' aliases, comma separated.")
@click.option("--subject", default="", type=TEXT, help="Subject line.")
@click.option("--body", default="", type=TEXT, help="Message text; '-' reads it from standard input.")
@click.option("--body-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the message text from FILE (UTF-8), for a body no command line can hold.")
@json_option
def send(run_dir: Path, sender: str, to: str, subject: str, body: str, body_file: Path | None,
         as_json: bool) -> None:
    """Submit a message to the originator's home MTA; prints its message id once accepted."""
    rcpts = [r.strip() for r in to.split(",") if r.strip()]
    if not rcpts:
        raise click.UsageError("--to needs at least one alias")
    if body_file is not None and body:
        raise click.UsageError("give --body or --body-file, not both")
    if body_file is not None or body == "-":
        source = "standard input" if body_file is None else str(body_file)
        data = sys.stdin.buffer.read(MAX_MESSAGE_BYTES + 1) if body_file is None else body_file.read_bytes()
        try:
            body = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise click.UsageError(f"{source} is not UTF-8 text (byte {exc.start})") from None
    if len(body.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise click.UsageError(f"the body is over {MAX_MESSAGE_BYTES:,} bytes, the most a message can hold")

    def submit(cluster: cl.Cluster) -> None:
        accepted = cluster.send(sender, rcpts, subject, body, timeout=max(5.0, len(body) / 1_000_000))
        if as_json:
            emit_json(accepted)
        else:
            click.echo(accepted["msg_id"])
    attached(submit)(run_dir)


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
@click.option("--to", "target", help="Target server.")
@click.option("--workaround", is_flag=True,
              help="KB workaround: clear the alternate, wait for every MTA's cache, move, restore it.")
@click.option("--copy-delay-ms", type=click.IntRange(0, 600_000), default=0, show_default=True,
              help="Copy time per message (at least one message's worth), while the mailbox is locked.")
@click.option("--no-wait", is_flag=True, help="Return once the move has started.")
@click.option("--abort", is_flag=True,
              help="Instead of moving: roll back ALIAS's running move (before set_home), and clear any lock on "
                   "its mailbox that no running move holds.")
@json_option
def move(run_dir: Path, alias: str, target: str | None, workaround: bool, copy_delay_ms: int, no_wait: bool,
         abort: bool, as_json: bool) -> None:
    """Move ALIAS's mailbox to another server (Move User), or --abort one."""
    if abort and (target or workaround):
        raise click.UsageError("--abort takes no --to or --workaround")
    if not abort and not target:
        raise click.UsageError("Missing option '--to' (or give --abort).")
    attached(lambda cluster: (print_abort(cluster.abort(alias), as_json) if abort else
                              print_move(cluster, alias, target, workaround, copy_delay_ms, no_wait, as_json)))(run_dir)


def print_move(cluster: cl.Cluster, alias: str, target: str, workaround: bool, copy_delay_ms: int, no_wait: bool,
               as_json: bool) -> None:
    state = cluster.move(alias, target, workaround, copy_delay_ms, wait=not no_wait)
    if as_json:
        emit_json(state)
        if state["step"] == "failed" or state["rolling_back"]:
            sys.exit(1)
        return
    if state["step"] == "failed" or state["rolling_back"]:
        raise ClusterError(f"move {state['move_id']} failed: {state['error']}{rollback_note(state)}")
    took = f" in {state['finished_at'] - state['started_at']:.2f}s" if state.get("finished_at") else ""
    out.print(f"move {state['move_id']}: {alias} {state['source']} -> {state['target']}: {state['step']}{took}"
              f", {state['copied']} message(s) copied")


def rollback_note(state: dict[str, Any]) -> str:
    if state["step"] == "failed":
        return "; rolled back"
    waiting = f", waiting for {state['waiting_for']}" if state.get("waiting_for") else ""
    return (f"; rolling back (step {state['step']}{waiting}: what the move holds there is released when it "
            "answers; see `xcon status`)")


def print_abort(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        alias = result["alias"]
        for m in result["moves"]:
            out.print(f"move {m['move_id']} of {alias}: {m['error'] or 'aborted'}{rollback_note(m)}")
        for c in result["cleared"]:
            what = "deleted its copy" if c["deleted"] or not c["unlocked"] else "unlocked"
            out.print(f"{c['store']}: ended {c['owner']}, which held {alias}'s mailbox: {what}")
        for store in result["unreachable"]:
            out.print(f"[yellow]{store} did not answer: a lock there, if any, is still there[/yellow]")
        if not result["moves"] and not result["cleared"]:
            out.print(f"nothing to abort: no move of {alias} runs and no store holds a lock on its mailbox")
    if result["unreachable"] or any(m["step"] != "failed" for m in result["moves"]):
        sys.exit(1)


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


# --- faults ---------------------------------------------------------------------------------

@xcon.command()
@run_dir_option
@click.argument("kind", type=click.Choice(["delay", "drop", "duplicate", "reorder", "pause", "feed-cut", "lag",
                                          "kill-at-step", "clear"]))
@click.argument("node", required=False)
@click.option("--peer", help="The other end of the link (link faults: delay, drop, duplicate, reorder).")
@click.option("--seconds", type=click.FloatRange(0.001, 3600), default=10.0, show_default=True,
              help="How long the fault lasts.")
@click.option("--delay-ms", type=click.IntRange(0, 600_000), default=100, show_default=True, help="delay: fixed part.")
@click.option("--jitter-ms", type=click.IntRange(0, 600_000), default=0, show_default=True,
              help="delay: random part; lag: replication jitter.")
@click.option("--probability", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="drop, duplicate, reorder: chance per frame.")
@click.option("--lag-ms", type=click.IntRange(0, 3_600_000), help="lag: the MTA's new replication lag.")
@click.option("--one-way", is_flag=True, help="Link faults: only frames from NODE to PEER.")
@click.option("--step", type=click.Choice(MOVE_STEPS), help="kill-at-step: the move step that kills NODE.")
@click.option("--restart-after", type=click.FloatRange(0, 3600), default=0.5, show_default=True,
              help="kill-at-step: seconds until NODE starts again (the orchestrator: restart it yourself).")
@json_option
@attached
def fault(cluster: cl.Cluster, kind: str, node: str | None, peer: str | None, seconds: float, delay_ms: int,
          jitter_ms: int, probability: float, lag_ms: int | None, one_way: bool, step: str | None,
          restart_after: float, as_json: bool) -> None:
    """Inject a fault at run time, through the orchestrator; each one is logged as fault.injected.

    \b
    xcon fault delay mta.ex1 --peer store.ex1 --delay-ms 200 --jitter-ms 100 --seconds 30
    xcon fault drop mta.ex1 --peer mta.ex2 --probability 0.3
    xcon fault pause mta.ex1 --seconds 2          (SIGSTOP, SIGCONT after 2 s)
    xcon fault feed-cut mta.ex2 --seconds 5       (the MTA misses directory updates)
    xcon fault lag mta.ex1 --lag-ms 5000          (a new replication lag, live)
    xcon fault kill-at-step store.ex2 --step open_target   (SIGKILL when a move enters the step)
    xcon fault clear                              (every link rule, feed cut and armed kill, everywhere)
    """
    kind = kind.replace("-", "_")
    if kind != "clear" and not node:
        raise click.UsageError(f"'{kind}' needs a NODE")
    if kind == "lag" and lag_ms is None:
        raise click.UsageError("lag needs --lag-ms")
    if kind == "kill_at_step" and step is None:
        raise click.UsageError("kill-at-step needs --step")
    params: dict[str, Any] = {"seconds": seconds}
    if kind == "delay":
        params.update(delay_ms=delay_ms, jitter_ms=jitter_ms)
    elif kind in ("drop", "duplicate", "reorder"):
        params["probability"] = probability
    elif kind == "lag":
        params.update(lag_ms=lag_ms, jitter_ms=jitter_ms)
    elif kind == "kill_at_step":
        params = {"step": step, "restart_after": restart_after}
    if one_way:
        params["one_way"] = True
    cluster.fault(kind, node or "", peer, **params)
    if as_json:
        emit_json({"kind": kind, "node": node, "peer": peer, "params": params})
    else:
        what = {"clear": "every fault cleared", "pause": f"{node} paused", "feed_cut": f"{node} off the directory feed",
                "lag": f"{node} replication lag now {lag_ms} ms",
                "kill_at_step": f"{node} is killed when a move next enters step {step}"}.get(
                    kind, f"{kind} on {node} <-> {peer}")
        out.print(what if kind in ("clear", "lag", "kill_at_step") else f"{what} for {seconds:g}s")


def known_node(cluster: cl.Cluster, node: str) -> None:
    if node not in cluster.config.nodes:
        raise ClusterError(f"no node '{node}' (nodes: {', '.join(cluster.config.nodes)})")


@xcon.command()
@run_dir_option
@click.argument("node")
@attached
def kill(cluster: cl.Cluster, node: str) -> None:
    """Kill NODE with SIGKILL (logged as a fault)."""
    known_node(cluster, node)
    cluster.fault("kill", node)
    out.print(f"killed {node}")


@xcon.command()
@run_dir_option
@click.argument("node")
@attached
def restart(cluster: cl.Cluster, node: str) -> None:
    """Start NODE again after a kill; returns once it is ready."""
    known_node(cluster, node)
    cluster.fault("restart", node)
    cluster.wait_node_ready(node)
    out.print(f"restarted {node}")


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
@click.option("--export", "export", type=click.Choice(["perfetto"]),
              help="Write the (filtered) events to FILE in this format instead of printing them.")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def logs(run_dir: Path, node: str | None, msg: str | None, pattern: str | None, export: str | None,
         file: Path | None, as_json: bool) -> None:
    """Every node's log merged into one timeline (works on a stopped cluster too).

    `xcon logs --export perfetto FILE` writes Chrome trace-event JSON for the Perfetto UI.
    """
    run_dir = run_dir.resolve()
    if bool(export) != bool(file):
        raise click.UsageError("--export needs a FILE, and a FILE needs --export")
    if not logread.log_files(run_dir):
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    events = logread.filtered(logread.merged(run_dir), node=node, msg=msg, pattern=pattern)
    if export:
        from .trace import perfetto
        data = perfetto(events)
        file.write_text(json.dumps(data))
        click.echo(f"wrote {len(data['traceEvents'])} trace events to {file} (open it at ui.perfetto.dev)")
        return
    for e in events:
        click.echo(json.dumps(e) if as_json else format_event(e))


@xcon.command("trace")
@run_dir_option
@click.argument("msg_id")
@click.option("--svg", "svg_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the story as an SVG sequence diagram (one lane per node).")
@json_option
def trace_cmd(run_dir: Path, msg_id: str, svg_file: Path | None, as_json: bool) -> None:
    """One message's story across every node, in causal order: its hops, the directory changes
    and cache updates that decided them, the moves and faults around them."""
    from . import trace as trace_mod

    run_dir = run_dir.resolve()
    if not logread.log_files(run_dir):
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    events = trace_mod.story(run_dir, msg_id)
    if not events:
        raise ClusterError(f"no events for message '{msg_id}' in {run_dir}/logs")
    if svg_file:
        svg_file.write_text(trace_mod.svg(events, msg_id))
    if as_json:
        emit_json(events)
        return
    for line in trace_mod.render_text(events):
        click.echo(line)
    if svg_file:
        click.echo(f"wrote {svg_file}")


@xcon.command("check")
@run_dir_option
@click.option("--logs-only", is_flag=True,
              help="Judge from the logs alone, without reading the mailboxes and locks (the run's files).")
@json_option
def check_cmd(run_dir: Path, logs_only: bool, as_json: bool) -> None:
    """Judge the invariant: each accepted (message, recipient) delivered once or NDR'd once.

    The logs say what each node decided; then the mailboxes on disk say what is there (run it
    after `xcon wait`): a pair counts as delivered only if its message is in the recipient's
    mailbox on the server the directory homes it, and an NDR only if it is in the originator's.
    A lock that no unfinished move holds is reported too. Exit 1 on any lost, pending,
    duplicated or both, or a stale lock.
    """
    run_dir = run_dir.resolve()
    if not logread.log_files(run_dir):
        raise ClusterError(f"no logs in {run_dir}/logs (start a cluster with `xcon up`)")
    bad: list[str] = []
    report = checker.check_run(run_dir, bad, audit=not logs_only)
    if as_json:
        emit_json({**report.to_json(), "unreadable_lines": bad})
    else:
        c = report.counts
        source = "logs and mailboxes" if report.audited else "logs only"
        out.print(f"{report.pairs} accepted (message, recipient) pairs: {c['delivered']} delivered, {c['ndr']} NDR, "
                  f"{c['lost']} lost, {c['pending']} pending, {c['duplicated']} duplicated, {c['both']} both "
                  f"(from the {source})")
        if bad:
            out.print(f"[yellow]{len(bad)} unreadable log line(s), first at {bad[0]}[/yellow]")
        for v in report.violations:
            alt = f" (alternate of {v.alt_of})" if v.alt_of else ""
            out.print(f"[red]{v.outcome.upper()}[/red] {v.msg_id} -> {v.rcpt}{alt}, from {v.sender}"
                      + (f": {v.why}" if v.why else ""))
            for e in v.last_events:
                out.print(f"    {e['node']}: {e['event']} {brief(e)}")
            for e in v.removed_by:
                out.print(f"    [red]removed by[/red] {e['node']}: {e['event']} {brief(e)}")
        for lock in report.stale_locks:
            kind = "an incoming copy" if lock["incoming"] else "the mailbox"
            out.print(f"[red]STALE LOCK[/red] store.{lock['server']}: {kind} of {lock['mailbox']} is locked by "
                      f"{lock['owner']}, which no unfinished move is (clear it: xcon move {lock['mailbox']} --abort)")
        broken = len(report.violations) + len(report.stale_locks)
        out.print("invariant holds" if report.ok else f"[red]invariant broken: {broken} finding(s)[/red]")
    if not report.ok:
        sys.exit(1)


def brief(e: dict[str, Any]) -> str:
    return ", ".join(f"{k}={e[k]}" for k in e if k not in ("ts", "node", "event", "lamport"))


# --- chaos ----------------------------------------------------------------------------------

@xcon.command()
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


@xcon.command()
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


def one_line(text: str) -> str:
    """An error for stderr: control characters (a newline in a name the user typed) shown escaped."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def main() -> None:
    """Entry point: user errors become one line on stderr, never a traceback."""
    try:
        xcon.main(standalone_mode=False)
    except NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "xcon"
        click.echo(one_line(f"{cmd}: {exc.format_message()} (see `{cmd} --help`)"), err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("xcon: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(one_line(f"xcon: {exc.format_message()}"), err=True)
        sys.exit(exc.exit_code)
    except ClusterError as exc:
        click.echo(one_line(f"xcon: {exc}"), err=True)
        sys.exit(1)
    except UnicodeEncodeError:  # a name or text from the command line that Text did not see
        click.echo("xcon: an argument is not valid UTF-8 text", err=True)
        sys.exit(2)
    except OSError as exc:  # a path the user gave or a run-dir that cannot be written: one line
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(one_line(f"xcon: {exc.strerror or exc}{where}"), err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line, the traceback on demand
        if os.environ.get("XCON_DEBUG"):
            raise
        click.echo(one_line(f"xcon: internal error: {type(exc).__name__}: {exc} (set XCON_DEBUG=1 for the traceback)"),
                   err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
