"""xcon commands that inject faults into a running cluster: fault (link, process, kernel), kill,
restart. Each is carried out by the orchestrator, or by the CLI for the orchestrator itself, and
logged as fault.injected."""

from __future__ import annotations

from typing import Any

import click

from orchestrator import cluster as cl
from .common import attached, emit_json, json_option, out, run_dir_option, show_table
from orchestrator.cluster.client import Refused
from orchestrator.faults import MOVE_STEPS


@click.command()
@run_dir_option
@click.argument("kind", type=click.Choice(["list", "delay", "drop", "duplicate", "reorder", "pause", "feed-cut", "lag",
                                          "clock", "kill-at-step", "corrupt", "hold-at-step", "release", "clear", "net",
                                          "partition", "heal", "smtp"]))
@click.argument("node", required=False)
@click.argument("other", required=False)
@click.option("--peer", help="The other end of the link (link faults: delay, drop, duplicate, reorder).")
@click.option("--seconds", type=click.FloatRange(0.001, 3600), default=10.0, show_default=True,
              help="How long the fault lasts (not net and partition: they last until `xcon fault heal`).")
@click.option("--delay-ms", type=click.IntRange(0, 600_000),
              help="delay: fixed part (default 100); net: the link's delay (tc netem); smtp: each reply that late.")
@click.option("--jitter-ms", type=click.IntRange(0, 600_000), default=0, show_default=True,
              help="delay, net: random part; lag: replication jitter.")
@click.option("--loss", type=click.FloatRange(0, 100), default=0.0, help="net: % of packets lost.")
@click.option("--duplicate", "dup_pct", type=click.FloatRange(0, 100), default=0.0, help="net: % of packets sent twice.")
@click.option("--reorder", "reorder_pct", type=click.FloatRange(0, 100), default=0.0,
              help="net: % of packets sent at once, ahead of the delayed ones.")
@click.option("--rate", "rate_kbit", type=click.IntRange(1, 10_000_000), help="net: the link's rate, kbit/s.")
@click.option("--probability", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="drop, duplicate, reorder: chance per frame; smtp: chance a session is cut after its MTA took "
                   "the message, before the 250.")
@click.option("--lag-ms", type=click.IntRange(0, 3_600_000), help="lag: the MTA's new replication lag.")
@click.option("--offset-ms", type=click.IntRange(-86_400_000, 86_400_000),
              help="clock: how far NODE's clock reads off, + ahead, - behind (0: right again).")
@click.option("--one-way", is_flag=True, help="Link faults: only frames from NODE to PEER.")
@click.option("--step", type=click.Choice(MOVE_STEPS),
              help="kill-at-step: the move step that kills NODE; hold-at-step: the step that holds the next move.")
@click.option("--restart-after", type=click.FloatRange(0, 3600), default=0.5, show_default=True,
              help="kill-at-step, corrupt: seconds until NODE starts again (the orchestrator: restart it yourself).")
@click.option("--where", type=click.FloatRange(0.01, 0.99), default=0.5, show_default=True,
              help="corrupt: where in the MTA's queue log the flipped byte goes, as a fraction of its length.")
@json_option
@attached
def fault(cluster: cl.Cluster, kind: str, node: str | None, other: str | None, peer: str | None, seconds: float,
          delay_ms: int | None, jitter_ms: int, loss: float, dup_pct: float, reorder_pct: float, rate_kbit: int | None,
          probability: float, lag_ms: int | None, offset_ms: int | None, one_way: bool, step: str | None, restart_after: float,
          where: float, as_json: bool) -> None:
    """Inject a fault at run time, through the orchestrator; each one is logged as fault.injected.
    `xcon fault list` shows every fault in force, and when each ends.

    \b
    xcon fault delay mta.ex1 --peer store.ex1 --delay-ms 200 --jitter-ms 100 --seconds 30
    xcon fault drop mta.ex1 --peer mta.ex2 --probability 0.3
    xcon fault pause mta.ex1 --seconds 2          (SIGSTOP, SIGCONT after 2 s)
    xcon fault feed-cut mta.ex2 --seconds 5       (the MTA misses directory updates)
    xcon fault lag mta.ex1 --lag-ms 5000          (a new replication lag, live)
    xcon fault clock mta.ex2 --offset-ms -3000    (its clock reads 3 s behind: what it stamps)
    xcon fault kill-at-step store.ex2 --step open_target   (SIGKILL when a move enters the step)
    xcon fault corrupt mta.ex2 --where 0.5        (kill it, flip a byte mid-queue-log, restart it)
    xcon fault hold-at-step --step copy           (the next move waits in that step; no time runs)
    xcon fault release                            (every held move goes on)
    xcon fault smtp ims.ex1 --probability 0.3 --delay-ms 200   (SMTP sessions cut before their 250, slowed)
    xcon fault clear                              (every link rule, feed cut and armed kill, everywhere)

    On a cluster of namespaces (xcon up --network netns), the kernel's faults, on HOSTs (xcon status):
    xcon fault net ex1 --delay-ms 80 --jitter-ms 20 --loss 5   (tc netem on ex1's link)
    xcon fault net ex2 --rate 256                 (256 kbit/s: tbf, no netem needed)
    xcon fault partition ex1 ex2 [--one-way]      (ex1 and ex2 cannot reach each other)
    xcon fault heal                               (every partition and shaping undone)
    """
    kind = kind.replace("-", "_")
    if kind == "list":
        list_faults(cluster, as_json)
        return
    if kind in ("hold_at_step", "release"):
        if kind == "hold_at_step" and step is None:
            raise click.UsageError("hold-at-step needs --step")
        if node:
            raise click.UsageError(f"{kind.replace('_', '-')} takes no NODE: it holds a move, wherever it runs")
        params = {"step": step} if kind == "hold_at_step" else {}
        cluster.fault(kind, "", None, **params)
        if as_json:
            emit_json({"kind": kind, "params": params})
        else:
            out.print(f"the next move to enter step {step} waits there until `xcon fault release`"
                      if step else "every held move goes on")
        return
    if kind not in ("clear", "heal") and not node:
        raise click.UsageError(f"'{kind}' needs a {'HOST' if kind in ('net', 'partition') else 'NODE'}")
    if kind == "partition" and not other:
        raise click.UsageError("partition needs two hosts: xcon fault partition HOST_A HOST_B")
    if other and kind != "partition":
        raise click.UsageError(f"unexpected argument '{other}' (only partition takes two hosts)")
    if kind in ("net", "partition", "heal"):
        params = {"delay_ms": delay_ms or 0, "jitter_ms": jitter_ms, "loss": loss, "duplicate": dup_pct,
                  "reorder": reorder_pct, "rate_kbit": rate_kbit or 0} if kind == "net" else {}
        if one_way:
            params["one_way"] = True
        cluster.fault(kind, node or "", other, **params)
        if as_json:
            emit_json({"injected": kind, "host": node, "other": other, **params})
        else:
            out.print(f"injected {kind}" + (f" on {node}" if node else "") + (f" and {other}" if other else ""))
        return
    delay_ms = (0 if kind == "smtp" else 100) if delay_ms is None else delay_ms
    if kind == "lag" and lag_ms is None:
        raise click.UsageError("lag needs --lag-ms")
    if kind == "kill_at_step" and step is None:
        raise click.UsageError("kill-at-step needs --step")
    if kind == "clock" and offset_ms is None:
        raise click.UsageError("clock needs --offset-ms")
    params: dict[str, Any] = {"seconds": seconds}
    if kind == "delay":
        params.update(delay_ms=delay_ms, jitter_ms=jitter_ms)
    elif kind in ("drop", "duplicate", "reorder"):
        params["probability"] = probability
    elif kind == "lag":
        params.update(lag_ms=lag_ms, jitter_ms=jitter_ms)
    elif kind == "kill_at_step":
        params = {"step": step, "restart_after": restart_after}
    elif kind == "clock":
        params = {"offset_ms": offset_ms}
    elif kind == "corrupt":
        params = {"where": where, "restart_after": restart_after}
    elif kind == "smtp":
        params.update(cut=probability, delay_ms=delay_ms)
    if one_way:
        params["one_way"] = True
    cluster.fault(kind, node or "", peer, **params)
    if as_json:
        emit_json({"kind": kind, "node": node, "peer": peer, "params": params})
    else:
        what = {"clear": "every fault cleared", "pause": f"{node} paused", "feed_cut": f"{node} off the directory feed",
                "lag": f"{node} replication lag now {lag_ms} ms",
                "clock": f"{node}'s clock now reads {offset_ms or 0:+d} ms off",
                "kill_at_step": f"{node} is killed when a move next enters step {step}",
                "smtp": f"{node}'s SMTP sessions cut before their 250 with chance {probability:g}, replies {delay_ms} "
                        "ms late",
                "corrupt": f"{node} killed, a byte of its queue log flipped at {where:g} of its length; it restarts "
                           f"in {restart_after:g}s (see `xcon logs --event storage.damaged`)"}.get(
                    kind, f"{kind} on {node} <-> {peer}")
        out.print(what if kind in ("clear", "lag", "clock", "kill_at_step", "corrupt") else f"{what} for {seconds:g}s")


def list_faults(cluster: cl.Cluster, as_json: bool) -> None:
    """Every fault in force (toxiproxy-cli list's table): link rules, pauses, feed cuts, lags,
    clock offsets, armed kills, holds, and on namespaces the kernel's partitions and shaping."""
    from orchestrator.inspect.admin import faults_in_force

    status = cluster.status()
    if cluster.config.network:
        from orchestrator import netns

        status["kernel_faults"] = netns.in_force(cluster.config.network)
    rows = faults_in_force(status)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print("no fault in force")
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} fault(s) in force", title_justify="left")
    for col in ("where", "kind", "what", "ends"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["where"], r["kind"], r["what"], r["ends"])
    show_table(table)


def known_node(cluster: cl.Cluster, node: str) -> None:
    if node not in cluster.config.nodes:
        raise Refused(f"no node '{node}' (nodes: {', '.join(cluster.config.nodes)})")


@click.command()
@run_dir_option
@click.argument("node")
@attached
def kill(cluster: cl.Cluster, node: str) -> None:
    """Kill NODE with SIGKILL (logged as a fault)."""
    known_node(cluster, node)
    cluster.fault("kill", node)
    out.print(f"killed {node}")


@click.command()
@run_dir_option
@click.argument("node")
@attached
def restart(cluster: cl.Cluster, node: str) -> None:
    """Start NODE again after a kill; returns once it is ready."""
    known_node(cluster, node)
    cluster.fault("restart", node)
    cluster.wait_node_ready(node)
    out.print(f"restarted {node}")


COMMANDS = [fault, kill, restart]
