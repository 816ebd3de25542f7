"""xcon commands for users, mail and moves: user, send, mailbox, move, wait."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from protocol import MAX_MESSAGE_BYTES, PRIORITIES
from protocol.names import MSG_ID_RULE, valid_submitted_id
from nodes.node_settings import quiet_bound_ms

from orchestrator import cluster as cl
from .common import FINDING, NOT_DONE, TEXT, attached, emit_json, json_option, out, prose, run_dir_option, show_table
from orchestrator.cluster.client import ClusterError, NoAnswer, Refused
from orchestrator.cluster.abort import abort as abort_move

@click.group()
def user() -> None:
    """Add, change and show recipients in the directory."""


def print_user(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(entry)
        return
    alt = entry["alternate"] or "-"
    both = " (deliver to both)" if entry["deliver_to_both"] else ""
    rejects = f", rejects mail from {', '.join(entry['reject_from'])}" if entry.get("reject_from") else ""
    prose(escape(f"{entry['alias']}: home {entry['home_server']}, alternate {alt}{both}{rejects}, usn {entry['usn']}"))


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
@click.option("--reject-from", help="Delivery restrictions: reject messages from these aliases (comma separated; '' "
                                    "for none). An MTA enforces what its read cache holds (Q178534).")
@click.option("--no-wait", is_flag=True, help="Return without waiting for every MTA's cache to hold the change.")
@json_option
def user_set(run_dir: Path, alias: str, alternate: str | None, no_alternate: bool,
             deliver_to_both: bool | None, reject_from: str | None, no_wait: bool, as_json: bool) -> None:
    """Change ALIAS's alternate recipient, deliver-to-both setting or delivery restrictions."""
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
    if reject_from is not None:
        changes["reject_from"] = [a.strip() for a in reject_from.split(",") if a.strip()]
    if not changes:
        raise click.UsageError("nothing to change: give --alternate, --no-alternate, --[no-]deliver-to-both or "
                               "--reject-from")
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
        raise Refused(f"unknown user '{alias}'")
    print_user(entry, as_json)


@user.command("list")
@run_dir_option
@json_option
@attached
def user_list(cluster: cl.Cluster, as_json: bool) -> None:
    """Every recipient the directory holds, by alias, with the directory's USN."""
    usn, users = cluster.users()
    if as_json:
        emit_json({"usn": usn, "users": users})
        return
    title = f"{len(users)} recipient(s) in the directory, usn {usn}"
    if not users:
        out.print(title)
        return
    table = Table(title=title, title_justify="left")
    for column in ("alias", "home", "alternate", "rejects mail from", "usn"):
        table.add_column(column, no_wrap=column in ("alias", "usn"))
    for u in users:
        alternate = (u["alternate"] or "-") + (" (both)" if u["deliver_to_both"] else "")
        table.add_row(escape(u["alias"]), escape(u["home_server"]), escape(alternate),
                      escape(", ".join(u.get("reject_from") or ()) or "-"), str(u["usn"]))
    show_table(table)


# --- mail -----------------------------------------------------------------------------------

@click.command()
@run_dir_option
@click.option("--from", "sender", required=True, type=TEXT, help="Originator's alias.")
@click.option("--to", "to", required=True, type=TEXT, multiple=True,
              help="Recipients' aliases, comma separated or --to again for each.")
@click.option("--subject", default="", type=TEXT, help="Subject line.")
@click.option("--body", default="", type=TEXT, help="Message text; '-' reads it from standard input.")
@click.option("--body-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the message text from FILE (UTF-8), for a body no command line can hold.")
@click.option("--msg-id", type=TEXT,
              help="The message's id (letters, digits, . _ + -; at most 200). Default: a new random one. An MTA takes "
                   "an id once, so a resend after a time-out with the same id is never delivered twice.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True,
              help="The message's priority; it chooses how long the MTAs try before the NDR (--expire-ms is normal's; "
                   "urgent gets 2/7 of it and non-urgent 10/7, as Exchange 5.5's 2, 7 and 10 days).")
@json_option
def send(run_dir: Path, sender: str, to: tuple[str, ...], subject: str, body: str, body_file: Path | None, msg_id: str | None,
         priority: str, as_json: bool) -> None:
    """Submit a message to the originator's home MTA; prints its message id once accepted."""
    rcpts = [r.strip() for given in to for r in given.split(",") if r.strip()]
    if not rcpts:
        raise click.UsageError("--to needs at least one alias")
    if body_file is not None and body:
        raise click.UsageError("give --body or --body-file, not both")
    if msg_id is not None and not valid_submitted_id(msg_id):
        raise click.BadParameter(f"{msg_id[:80]!r} is not a message id ({MSG_ID_RULE})", param_hint="--msg-id")
    msg_id = msg_id or secrets.token_hex(8)
    if body_file is not None or body == "-":
        source = "standard input" if body_file is None else str(body_file)
        if body_file is None:
            data = sys.stdin.buffer.read(MAX_MESSAGE_BYTES + 1)
        else:
            with open(body_file, "rb") as f:  # at most one byte past the limit: /dev/zero is a file too
                data = f.read(MAX_MESSAGE_BYTES + 1)
        if len(data) > MAX_MESSAGE_BYTES:
            raise click.UsageError(f"{source} holds over {MAX_MESSAGE_BYTES:,} bytes, the most a message can hold")
        try:
            body = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise click.UsageError(f"{source} is not UTF-8 text (byte {exc.start})") from None
    if len(body.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise click.UsageError(f"the body is over {MAX_MESSAGE_BYTES:,} bytes, the most a message can hold")

    def submit(cluster: cl.Cluster) -> None:
        accepted = cluster.send(sender, rcpts, subject, body, msg_id=msg_id, timeout=max(5.0, len(body) / 1_000_000),
                                priority=priority)
        if as_json:
            emit_json(accepted)
        else:
            click.echo(accepted["msg_id"])
    attached(submit)(run_dir)


@click.command()
@run_dir_option
@click.argument("alias")
@click.option("--wide", is_flag=True, help="Every column: NDR, NDR for, failed recipients (for a wide terminal).")
@json_option
@attached
def mailbox(cluster: cl.Cluster, alias: str, wide: bool, as_json: bool) -> None:
    """The messages in ALIAS's mailbox, wherever it lives now.

    An NDR's subject is marked [NDR] (a copy of a report nobody else took, [report]); `xcon show
    MSG_ID` reads one, and --wide adds the message each reports on and whom it failed."""
    box = cluster.mailbox(alias)
    if as_json:
        emit_json(box)
        return
    title = f"mailbox {alias} on {box['server']}: {len(box['messages'])} message(s)"
    if not box["messages"]:  # as `xcon queue` says an empty queue: no empty table under it
        out.print(title)
        return
    table = Table(title=title, title_justify="left")
    servers = any("server" in m for m in box["messages"])  # the postmaster's: a mailbox on every server
    # the message id is what `xcon show` takes: never broken (a row at a time where the screen is too
    # narrow for it: orchestrator.lab.show). Not min_width: rich then drew the table past the screen
    table.add_column("message id", overflow="fold", no_wrap=True)
    for col in ([*(["server"] if servers else []), "from", "subject"]
                + (["NDR", "NDR for", "failed recipients"] if wide else [])):
        table.add_column(col, overflow="fold")
    for m in box["messages"]:
        kind = "yes" if m["ndr"] else "copy" if m.get("report_id") else ""  # copy: a report nobody else took
        mark = "[NDR] " if m["ndr"] and not wide else "[report] " if kind == "copy" and not wide else ""
        table.add_row(m["msg_id"], *([m["server"]] if servers else []), m["from"], escape(mark) + escape(m["subject"]),
                      *([kind, m["ndr_for"] or "", ", ".join(m["failed"])] if wide else []))
    show_table(table)


# --- moves ----------------------------------------------------------------------------------

@click.command()
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
    """Move ALIAS's mailbox to another server (Move User), or --abort one.

    Exit 3 when the move fails (it is rolled back), or an abort leaves a store unanswered."""
    if abort and (target or workaround):
        raise click.UsageError("--abort takes no --to or --workaround")
    if not abort and not target:
        raise click.UsageError("Missing option '--to' (or give --abort).")
    attached(lambda cluster: (print_abort(abort_move(cluster, alias), as_json) if abort else
                              print_move(cluster, alias, target, workaround, copy_delay_ms, no_wait, as_json)))(run_dir)


def print_move(cluster: cl.Cluster, alias: str, target: str, workaround: bool, copy_delay_ms: int, no_wait: bool,
               as_json: bool) -> None:
    state = cluster.move(alias, target, workaround, copy_delay_ms, wait=not no_wait)
    if as_json:
        emit_json(state)
        if state["step"] == "failed" or state["rolling_back"]:
            sys.exit(NOT_DONE)
        return
    if state["step"] == "failed" or state["rolling_back"]:
        raise ClusterError(f"move {state['move_id']} failed: {state['error']}{rollback_note(state)}")
    took = f" in {state['finished_at'] - state['started_at']:.2f}s" if state.get("finished_at") else ""
    prose(escape(f"move {state['move_id']}: {alias} {state['source']} -> {state['target']}: {state['step']}{took}"
                 f", {state['copied']} message(s) copied"))


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
            prose(escape(f"move {m['move_id']} of {alias}: {m['error'] or 'aborted'}{rollback_note(m)}"))
        for c in result["cleared"]:
            what = "deleted its copy" if c["deleted"] or not c["unlocked"] else "unlocked"
            prose(escape(f"{c['store']}: ended {c['owner']}, which held {alias}'s mailbox: {what}"))
        for store in result["unreachable"]:
            prose(f"[yellow]{escape(store)} did not answer: a lock there, if any, is still there[/yellow]")
        if not result["moves"] and not result["cleared"]:
            prose(escape(f"nothing to abort: no move of {alias} runs and no store holds a lock on its mailbox"))
    if result["unreachable"] or any(m["step"] != "failed" for m in result["moves"]):
        sys.exit(NOT_DONE)


@click.command()
@run_dir_option
@click.option("--timeout", type=click.FloatRange(0), default=None,
              help="Seconds to wait at most (default: a minute; with slower timings, as Exchange 5.5's, "
                   "three of the longest retry and twice the replication bound); 0: is it quiet now (two polls, "
                   "50 ms apart).")
@json_option
@attached
def wait(cluster: cl.Cluster, timeout: float, as_json: bool) -> None:
    """Return when no move runs, every MTA queue is empty and every IMAP server's users are the
    directory's (exit 1 on timeout). A node that does not answer for a while (paused, restarting)
    is waited for too."""
    t0 = time.time()
    timeout = quiet_bound_ms(cluster.config.settings) / 1000 if timeout is None else timeout
    try:
        quiet, silent = cluster.wait(timeout), None
    except NoAnswer as exc:  # a node still silent at the time-out (Cluster.wait waits through a pause)
        quiet, silent = False, str(exc)
    if as_json:
        emit_json({"quiet": quiet, "seconds": round(time.time() - t0, 3), **({"no_answer": silent} if silent else {})})
    elif not quiet:
        click.echo(f"xcon: still busy after {timeout:g}s ({silent or 'see `xcon status`'})", err=True)
    if not quiet:
        sys.exit(FINDING)


COMMANDS = [user, send, mailbox, move, wait]
