"""xcon commands a mail administrator expects: queue (as mailq), show (as postcat), endpoint.
The reading is orchestrator.inspect.admin's; these print it."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from orchestrator import cluster as cl
from orchestrator.cluster.client import ClusterError, Refused
from .common import FINDING, emit_json, json_option, msg_id_argument, out, run_dir_option, show_table

LIMIT = 1000  # orchestrator.inspect.admin.DEFAULT_LIMIT: that module loads when a command runs


@click.command()
@run_dir_option
@click.option("--mta", "mtas", multiple=True, metavar="NODE",
              help="Only this MTA (mta.ex1), or Internet Mail Service (ims.ex1); repeat for more.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=LIMIT, show_default=True,
              help="At most this many pairs per MTA (the total is always given).")
@click.option("--wide", is_flag=True, help="Every column: sender, alternate of, handed to, age, priority; where the terminal is too "
                   "narrow for them, a pair at a time, a line a column.")
@json_option
def queue(run_dir: Path, mtas: tuple[str, ...], limit: int, wide: bool, as_json: bool) -> None:
    """What each MTA holds, as Postfix's mailq: every open (message, recipient) pair with its
    state, the reason of its last deferral, its tries and when it is tried next.

    A running MTA is asked; one that is down, or every one of a stopped cluster, is read from its
    queue log (its durable state, with no retry times: a restart starts those again). With
    `--smtp`, each Internet Mail Service's queue follows, read from its files: what waits to leave
    for outside, and what goes back to its MTA because it will not. An empty queue everywhere is
    `xcon wait`'s end.
    """
    from orchestrator.cluster.client import saved_config
    from orchestrator.inspect import admin
    try:
        cluster: cl.Cluster | None = cl.Cluster.attach(run_dir)
        nodes = list(cluster.config.nodes)
    except ClusterError:
        if not (run_dir / "cluster.json").exists():
            raise
        cluster, nodes = None, list(saved_config(run_dir).nodes)
    every = [n for n in nodes if n.startswith("mta.")] + [n for n in nodes if n.startswith("ims.")]
    try:
        names = list(mtas) or every
        unknown = [m for m in names if m not in every]
        if unknown:
            raise click.UsageError(f"no MTA or IMS {', '.join(unknown)} (these: {', '.join(every)})")
        found = admin.queue(run_dir, cluster, names, limit)
    finally:
        if cluster is not None:
            cluster.close()
    if as_json:
        emit_json(found)
        return
    for mta, q in found.items():
        source = ("" if q["source"] in ("live", "queue files") else
                  f", from its queue log ({mta} is not running)")
        title = f"{mta}: {q['total']} open pair(s){source}" + (", shown: the first " + str(limit)
                                                               if q["total"] > limit else "")
        if not q["items"]:
            out.print(title)
            continue
        table = Table(title=title, title_justify="left")
        columns = ["message id", "rcpt", "state", "tries", "next try", "reason"]
        if wide:
            columns[1:1] = ["kind", "from"]
            columns += ["alt of", "handed to", "age", "priority"]
        for col in columns:
            table.add_column(col, overflow="fold", no_wrap=col in ("message id", "rcpt", "state"))
        for i in q["items"]:
            nxt = "-" if i["next_retry_s"] is None else f"{i['next_retry_s']:.1f}s"
            state = f"{i['state']}, expired" if i.get("expired") else i["state"]  # asking whether it landed
            tries = "-" if i["attempts"] is None else str(i["attempts"])  # an IMS's files do not count them
            row = [i["msg_id"], i["rcpt"], state, tries, nxt, i["reason"] or ""]
            if wide:
                row[1:1] = [i["kind"], i["sender"]]
                row += [i["alt_of"] or "", i["handed_to"] or "", f"{i['age_s']:.1f}s", i["priority"]]
            table.add_row(*row)
        show_table(table)


@click.command()
@run_dir_option
@msg_id_argument
@click.option("--raw", is_flag=True, help="The message's bytes as stored, nothing else.")
@json_option
def show(run_dir: Path, msg_id: str, raw: bool, as_json: bool) -> None:
    """MSG_ID wherever it is, as postcat shows a queue file: each mailbox file and queue log that
    holds it (or its NDRs), then its headers and text; an NDR's report per recipient.

    Reads the run-dir's files, so it works on a stopped cluster too. Exit 1 if the message is
    nowhere (it may have been lost: see `xcon check`).
    """
    from orchestrator.cluster.client import saved_config
    from orchestrator.inspect import admin

    saved_config(run_dir)  # no run-dir to read is ClusterError, 3, as for every other command (not "nowhere": 1)
    places = admin.where(run_dir, msg_id)
    own = [p for p in places if p["msg_id"] == msg_id] or places
    if not places:
        if as_json:
            emit_json({"msg_id": msg_id, "places": []})
        else:
            click.echo(f"xcon: {msg_id} is in no mailbox and no queue of {run_dir} (see `xcon check`, "
                       f"`xcon trace {msg_id}`)", err=True)
        sys.exit(FINDING)
    first = admin.raw_of(run_dir, own[0])
    if raw:
        sys.stdout.buffer.write(first)
        return
    message = admin.reading(first)
    if as_json:
        emit_json({"msg_id": msg_id, "places": [{k: v for k, v in p.items() if k != "raw"} for p in places],
                   "message": message})
        return
    for p in places:
        what = "" if p["msg_id"] == msg_id else f" (its report {p['msg_id']})"
        if p["where"] == "mailbox":
            out.print(f"in mailbox {p['mailbox']} on {p['server']}{what}: {p['path']}", markup=False)
        else:
            out.print(f"in mta.{p['server']}'s queue{what}, open for {', '.join(p['open']) or 'nobody'}: "
                      f"{p['path']}", markup=False)
    out.print("")
    for name, value in message["headers"]:
        out.print(f"{name}: {value}", markup=False)
    out.print("")
    out.print(message["text"].rstrip("\n"), markup=False)
    if message["reporting"]:
        out.print("", markup=False)
        for k, v in message["reporting"].items():  # the delivery-status fields a line each, as RFC 3464 writes them
            out.print(f"{k}: {v}", markup=False)
    for r in message["report"]:
        out.print("", markup=False)
        for k, v in r.items():
            out.print(f"  {k}: {v}", markup=False)


@click.command()
@run_dir_option
@click.argument("node")
@json_option
def endpoint(run_dir: Path, node: str, as_json: bool) -> None:
    """Where NODE listens, as HOST:PORT: its SMTP (ims.exN), its IMAP (imap.exN), or its ZeroMQ
    socket; for a script or a client: `swaks --server $(xcon endpoint ims.ex2) ...`.

    Reads cluster.json, so it works on a stopped cluster too."""
    from orchestrator.cluster.client import saved_config

    config = saved_config(run_dir)
    if node not in config.nodes:
        raise Refused(f"no node '{node}' (nodes: {', '.join(config.nodes)})")
    endpoints = config.nodes[node]["endpoints"]
    if as_json:
        emit_json(endpoints)
        return
    shown = endpoints.get("smtp") or endpoints.get("imap") or endpoints["router"]
    click.echo(shown.removeprefix("tcp://"))


COMMANDS = [queue, show, endpoint]
