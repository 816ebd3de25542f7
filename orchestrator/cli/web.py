"""xcon serve: the web view of a run-dir (orchestrator.serve)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import click

from orchestrator.cluster.client import ClusterError
from .common import out, run_dir_option


@click.command()
@run_dir_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (another than loopback shows the run to the network: no login guards it).")
@click.option("--port", type=click.IntRange(0, 65535), default=8055, show_default=True, help="Port (0: any free one).")
@click.option("--every", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between the live cluster page's updates.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer requests for this host name (the server answers only loopback's names, the address "
                   "it listens on and this machine's names: a Host check against DNS rebinding). Repeatable.")
def serve(run_dir: Path, host: str, port: int, every: float, allow_hosts: tuple[str, ...]) -> None:
    """A web view of the run-dir, until Ctrl-C: the cluster live (nodes, caches beside the
    directory's USN, queues, moves, faults in force), every message with its outcome as
    `xcon check` judges it and its story, and the campaigns and scenario runs kept in results/.
    Each page answers JSON too (Accept: application/json, or ?format=json)."""
    from orchestrator.serve.app import LOOPBACK, allowed_hosts, serve as run

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:  # one line for a port in use, before the server's own error
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ClusterError(f"cannot listen on {host}:{port}: {why}") from None
    out.print(f"xcon serve: http://{host}:{port}/ for {run_dir.resolve()} (Ctrl-C stops it)", markup=False)
    if host not in LOOPBACK:
        click.echo(f"xcon serve: warning: listening on {host}, beyond loopback: anyone who can reach this machine "
                   "reads every message of this run, with no login", err=True)
    run(run_dir, host, port, every, allowed_hosts(host, allow_hosts))


COMMANDS = [serve]
