"""xcon commands that inject faults into a running cluster: fault (link, process, kernel), kill,
restart. Each is carried out by the orchestrator, or by the CLI for the orchestrator itself, and
logged as fault.injected."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import click

from orchestrator import cluster as cl
from .common import attached, emit_json, json_option, out, run_dir_option, show_table
from orchestrator.cluster.client import Refused
from orchestrator.faults import MOVE_STEPS


@click.group()
def fault() -> None:
    """Inject a fault at run time, through the orchestrator; each one is logged as fault.injected.
    `xcon fault list` shows every fault in force, and when each ends. Each kind is a command of
    its own, with the options it reads (`xcon fault KIND --help`).

    \b
    xcon fault delay mta.ex1 --peer store.ex1 --delay-ms 200 --seconds 30
    xcon fault drop mta.ex1 --peer mta.ex2 --probability 0.3
    xcon fault pause mta.ex1 --seconds 2      (SIGSTOP, then SIGCONT)
    xcon fault feed-cut mta.ex2 --seconds 5   (it misses directory updates)
    xcon fault lag mta.ex1 --lag-ms 5000      (a new replication lag, live)
    xcon fault clock mta.ex2 --offset-ms -3000   (it stamps 3 s behind)
    xcon fault kill-at-step store.ex2 --step open_target
                                      (SIGKILL when a move enters the step)
    xcon fault corrupt mta.ex2 --where 0.5
                      (kill it, flip a byte mid-queue-log, restart it)
    xcon fault hold-at-step --step copy   (the next move waits there)
    xcon fault release                    (every held move goes on)
    xcon fault smtp ims.ex1 --probability 0.3 --delay-ms 200
                      (SMTP sessions cut before their 250, and slowed)
    xcon fault clear   (every link rule, feed cut and armed kill, everywhere)

    On a cluster of namespaces (xcon up --network netns), the kernel's
    faults, on HOSTs (xcon status):

    \b
    xcon fault net ex1 --delay-ms 80 --jitter-ms 20 --loss 5   (tc netem)
    xcon fault net ex2 --rate 256          (256 kbit/s: tbf, no netem)
    xcon fault partition ex1 ex2 [--one-way]   (they cannot reach each other)
    xcon fault heal                        (every partition and shaping undone)
    """


def kind_command(name: str, help_: str, target: str | None = "NODE") -> Callable[[Callable], Callable]:
    """A `xcon fault NAME` command: --run-dir, --json, the cluster attached, and its TARGET argument."""
    def wrap(f: Callable) -> Callable:
        f = attached(json_option(f))
        if target is not None:
            f = click.argument("node", metavar=target)(f)
        return fault.command(name, help=help_)(run_dir_option(f))
    return wrap


SECONDS = click.option("--seconds", type=click.FloatRange(0.001, 3600), default=10.0, show_default=True,
                       help="How long the fault lasts.")
PEER = click.option("--peer", help="The other end of the link.")
ONE_WAY = click.option("--one-way", is_flag=True, help="Only frames from NODE to PEER.")
PROBABILITY = click.option("--probability", type=click.FloatRange(0, 1), default=0.2, show_default=True,
                           help="The chance per frame.")
RESTART_AFTER = click.option("--restart-after", type=click.FloatRange(0, 3600), default=0.5, show_default=True,
                             help="Seconds until NODE starts again (the orchestrator: restart it yourself).")
STEP = click.option("--step", type=click.Choice(MOVE_STEPS), required=True, metavar="STEP",  # the list would run wide
                    help=f"A step of Move User: {', '.join(MOVE_STEPS)}.")


def inject(cluster: cl.Cluster, kind: str, node: str, peer: str | None, params: dict[str, Any], as_json: bool,
           said: str) -> None:
    """Ask the orchestrator for the fault; say what it does (or print it as JSON)."""
    cluster.fault(kind, node, peer, **params)
    if as_json:
        emit_json({"kind": kind, "node": node or None, "peer": peer, "params": params})
    else:
        out.print(said)


def _link(kind: str, node: str, peer: str | None, one_way: bool, seconds: float, **params: Any) -> tuple:
    params = {"seconds": seconds, **params, **({"one_way": True} if one_way else {})}
    return kind, node, peer, params, f"{kind} on {node} {'->' if one_way else '<->'} {peer} for {seconds:g}s"


@kind_command("delay", "Delay the frames on the link NODE <-> PEER.")
@PEER
@click.option("--delay-ms", type=click.IntRange(0, 600_000), default=100, show_default=True, help="Fixed part.")
@click.option("--jitter-ms", type=click.IntRange(0, 600_000), default=0, show_default=True, help="Random part.")
@ONE_WAY
@SECONDS
def delay(cluster: cl.Cluster, node: str, peer: str | None, delay_ms: int, jitter_ms: int, one_way: bool,
          seconds: float, as_json: bool) -> None:
    *fault_, said = _link("delay", node, peer, one_way, seconds, delay_ms=delay_ms, jitter_ms=jitter_ms)
    inject(cluster, *fault_, as_json, said)


def _chance(kind: str, help_: str) -> None:
    @kind_command(kind, help_)
    @PEER
    @PROBABILITY
    @ONE_WAY
    @SECONDS
    def command(cluster: cl.Cluster, node: str, peer: str | None, probability: float, one_way: bool,
                seconds: float, as_json: bool) -> None:
        *fault_, said = _link(kind, node, peer, one_way, seconds, probability=probability)
        inject(cluster, *fault_, as_json, said)


_chance("drop", "Drop frames on the link NODE <-> PEER, each with the given chance.")
_chance("duplicate", "Send frames on the link NODE <-> PEER twice, each with the given chance.")
_chance("reorder", "Send frames on the link NODE <-> PEER out of order, each with the given chance.")


@kind_command("pause", "Stop NODE (SIGSTOP) and let it go on (SIGCONT) after --seconds.")
@SECONDS
def pause(cluster: cl.Cluster, node: str, seconds: float, as_json: bool) -> None:
    inject(cluster, "pause", node, None, {"seconds": seconds}, as_json, f"{node} paused for {seconds:g}s")


@kind_command("feed-cut", "Cut an MTA off the directory's change feed: it misses the updates meanwhile.")
@SECONDS
def feed_cut(cluster: cl.Cluster, node: str, seconds: float, as_json: bool) -> None:
    inject(cluster, "feed_cut", node, None, {"seconds": seconds}, as_json,
           f"{node} off the directory feed for {seconds:g}s")


@kind_command("lag", "Give an MTA a new replication lag, live.")
@click.option("--lag-ms", type=click.IntRange(0, 3_600_000), required=True, help="The MTA's new replication lag.")
@click.option("--jitter-ms", type=click.IntRange(0, 600_000), default=0, show_default=True, help="Replication jitter.")
@SECONDS
def lag(cluster: cl.Cluster, node: str, lag_ms: int, jitter_ms: int, seconds: float, as_json: bool) -> None:
    inject(cluster, "lag", node, None, {"seconds": seconds, "lag_ms": lag_ms, "jitter_ms": jitter_ms}, as_json,
           f"{node} replication lag now {lag_ms} ms")


@kind_command("clock", "Set NODE's clock off: what it stamps from now on (its timers run as before).")
@click.option("--offset-ms", type=click.IntRange(-86_400_000, 86_400_000), required=True,
              help="How far it reads off, + ahead, - behind (0: right again).")
def clock(cluster: cl.Cluster, node: str, offset_ms: int, as_json: bool) -> None:
    inject(cluster, "clock", node, None, {"offset_ms": offset_ms}, as_json,
           f"{node}'s clock now reads {offset_ms:+d} ms off")


@kind_command("kill-at-step", "Kill NODE (SIGKILL) when a move next enters --step.")
@STEP
@RESTART_AFTER
def kill_at_step(cluster: cl.Cluster, node: str, step: str, restart_after: float, as_json: bool) -> None:
    inject(cluster, "kill_at_step", node, None, {"step": step, "restart_after": restart_after}, as_json,
           f"{node} is killed when a move next enters step {step}")


@kind_command("corrupt", "Kill an MTA, flip a byte of its queue log, and start it again.")
@click.option("--where", type=click.FloatRange(0.01, 0.99), default=0.5, show_default=True,
              help="Where the flipped byte goes, as a fraction of the log's length.")
@RESTART_AFTER
def corrupt(cluster: cl.Cluster, node: str, where: float, restart_after: float, as_json: bool) -> None:
    inject(cluster, "corrupt", node, None, {"where": where, "restart_after": restart_after}, as_json,
           f"{node} killed, a byte of its queue log flipped at {where:g} of its length; it restarts in "
           f"{restart_after:g}s (see `xcon logs --event storage.damaged`)")


@kind_command("smtp", "Cut an IMS's SMTP sessions after its MTA took the message, before the 250; slow its replies.")
@click.option("--probability", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="The chance a session is cut.")
@click.option("--delay-ms", type=click.IntRange(0, 600_000), default=0, show_default=True, help="Each reply that late.")
@SECONDS
def smtp(cluster: cl.Cluster, node: str, probability: float, delay_ms: int, seconds: float, as_json: bool) -> None:
    inject(cluster, "smtp", node, None, {"seconds": seconds, "cut": probability, "delay_ms": delay_ms}, as_json,
           f"{node}'s SMTP sessions cut before their 250 with chance {probability:g}, replies {delay_ms} ms late "
           f"for {seconds:g}s")


@kind_command("hold-at-step", "Hold the next move that enters --step there, until `xcon fault release`.", None)
@STEP
def hold_at_step(cluster: cl.Cluster, step: str, as_json: bool) -> None:
    inject(cluster, "hold_at_step", "", None, {"step": step}, as_json,
           f"the next move to enter step {step} waits there until `xcon fault release`")


@kind_command("release", "Let every held move go on.", None)
def release(cluster: cl.Cluster, as_json: bool) -> None:
    inject(cluster, "release", "", None, {}, as_json, "every held move goes on")


@kind_command("clear", "End every link rule, pause, feed cut, lag, clock offset and armed kill, everywhere.", None)
def clear(cluster: cl.Cluster, as_json: bool) -> None:
    inject(cluster, "clear", "", None, {}, as_json, "every fault cleared")


@kind_command("net", "Shape HOST's link in the kernel (tc netem, tbf), until `xcon fault heal`.", "HOST")
@click.option("--delay-ms", type=click.IntRange(0, 600_000), default=0, show_default=True, help="The link's delay.")
@click.option("--jitter-ms", type=click.IntRange(0, 600_000), default=0, show_default=True, help="Its random part.")
@click.option("--loss", type=click.FloatRange(0, 100), default=0.0, help="% of packets lost.")
@click.option("--duplicate", "dup_pct", type=click.FloatRange(0, 100), default=0.0, help="% of packets sent twice.")
@click.option("--reorder", "reorder_pct", type=click.FloatRange(0, 100), default=0.0,
              help="% of packets sent at once, ahead of the delayed ones.")
@click.option("--rate", "rate_kbit", type=click.IntRange(1, 10_000_000), help="The link's rate, kbit/s.")
def net(cluster: cl.Cluster, node: str, delay_ms: int, jitter_ms: int, loss: float, dup_pct: float,
        reorder_pct: float, rate_kbit: int | None, as_json: bool) -> None:
    params = {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss": loss, "duplicate": dup_pct,
              "reorder": reorder_pct, "rate_kbit": rate_kbit or 0}
    inject(cluster, "net", node, None, params, as_json, f"injected net on {node}")


@fault.command("partition", help="Cut HOST_A and HOST_B off each other in the kernel, until `xcon fault heal`.")
@run_dir_option
@click.argument("host_a", metavar="HOST_A")
@click.argument("host_b", metavar="HOST_B")
@click.option("--one-way", is_flag=True, help="Only packets from HOST_A to HOST_B.")
@json_option
@attached
def partition(cluster: cl.Cluster, host_a: str, host_b: str, one_way: bool, as_json: bool) -> None:
    inject(cluster, "partition", host_a, host_b, {"one_way": True} if one_way else {}, as_json,
           f"injected partition on {host_a} and {host_b}")


@kind_command("heal", "Undo every partition and shaping.", None)
def heal(cluster: cl.Cluster, as_json: bool) -> None:
    inject(cluster, "heal", "", None, {}, as_json, "injected heal")


@fault.command("list")
@run_dir_option
@json_option
@attached
def list_command(cluster: cl.Cluster, as_json: bool) -> None:
    """Every fault in force, and when each ends."""
    list_faults(cluster, as_json)


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
    """Start NODE again after a kill; returns once it is ready, saying what damage it found in
    its files, if any (kept aside; `xcon check` says what it cost)."""
    from .cluster import say_damage

    known_node(cluster, node)
    log = cluster.config.run_dir / "logs" / f"{node}.jsonl"
    before = log.stat().st_size if log.exists() else 0
    cluster.fault("restart", node)
    cluster.wait_node_ready(node)
    out.print(f"restarted {node}")
    say_damage(logged_since(log, before, b'"storage.damaged"'))


def logged_since(log: Path, offset: int, needle: bytes) -> list[dict[str, Any]]:
    """The events of `log` past `offset` (its size before a restart) whose lines hold `needle`; a
    line that does not read is passed over. A log cut shorter meanwhile (its torn last line) is
    read from its start."""
    try:
        with open(log, "rb") as f:
            f.seek(offset if offset <= os.fstat(f.fileno()).st_size else 0)
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        if needle in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


COMMANDS = [fault, kill, restart]
