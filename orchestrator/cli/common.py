"""What every xcon command shares: the console, --run-dir, --json, text that must be UTF-8,
and a Cluster attached to the running cluster."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console

from nodes.config import PROFILES

from orchestrator import cluster as cl



def console_width() -> int | None:
    """In a terminal (or where COLUMNS says), tables fit its width: None, rich's own choice.
    Piped or redirected, they keep every column whole (rich would squeeze them into 80 columns
    and cut the words in them)."""
    return None if sys.stdout.isatty() or "COLUMNS" in os.environ else 10_000


out = Console(highlight=False, soft_wrap=True, width=console_width())


# Exit codes, the same for every command (stated in `xcon --help` and docs/cli.md)
DONE = 0  # done, and nothing found wrong
FINDING = 1  # a finding: lost mail, a broken invariant, no match, a run that did not go as expected
USAGE = 2  # the request is at fault (a bad flag, an unknown name, a name taken): nothing was done
NOT_DONE = 3  # xcon could not do it or could not judge: no cluster, no answer, logs missing, a bug
EXIT_CODES = ("Exit codes: 0 done; 1 a finding (lost mail, a broken invariant, no match, a run that did not go "
              "as expected); 2 a usage error (a bad flag, an unknown name, a name taken: nothing was done); "
              "3 could not do it or could not judge (no cluster, a node that does not answer, a failed move, "
              "logs missing for a verdict, an internal error); 130 interrupted.")


def prose(text: str, indent: str = "") -> None:
    """A line of prose, broken at spaces to the terminal's width (orchestrator.lab.show)."""
    from orchestrator.lab import show

    show.prose(out, text, indent)


def show_table(table: Any) -> None:
    """A table with its title broken to the terminal's width, as prose is."""
    from orchestrator.lab import show

    show.table(out, table)


class Finding(Exception):
    """What a command found rather than did: nothing matched, the awaited event never came. One
    line on stderr and exit FINDING, the code of every finding (lost mail, a broken invariant, ...)."""


def _msg_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from protocol.names import MSG_ID_RULE, valid_msg_id

    if not valid_msg_id(value):
        raise click.BadParameter(f"{value[:80]!r} is not a message id ({MSG_ID_RULE})", ctx, param)
    return value


def msg_id_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option's message id, checked as MSG_ID is (None: not given)."""
    return None if value is None else _msg_id(ctx, param, value)


def msg_id_argument(f: Callable) -> Callable:
    """MSG_ID, one xcon took or made: anything else (an empty one, a Message-ID in angle
    brackets) is a usage error that says what one is, not a search that finds nothing."""
    return click.argument("msg_id", callback=_msg_id)(f)


def _dask_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--dask checked as it is read: a malformed address is a usage error before any work starts."""
    if value:
        from orchestrator.lab.executors import DaskError, check_address

        try:
            check_address(value)
        except DaskError as exc:
            raise click.BadParameter(str(exc).removeprefix("--dask "), ctx, param) from None
    return value


def dask_option(f: Callable) -> Callable:
    return click.option(
        "--dask", metavar="ADDRESS", envvar="XCON_DASK", show_envvar=True, callback=_dask_address,
        help="Run on a Dask cluster: its scheduler's address (tcp://HOST:8786), or local:N for N local "
             "workers started for the run (pip install 'xcon[dask]'; deploy/README.md).")(f)


def run_dir_option(f: Callable) -> Callable:
    return click.option(
        "--run-dir", type=click.Path(file_okay=False, path_type=Path), envvar="XCON_RUN_DIR",
        default=Path(".xcon"), show_default=True, show_envvar=True,
        help="Directory holding the cluster's state, logs and cluster.json.")(f)


def results_dir(run_dir: Path, name: str) -> Path:
    """Where a command that starts its own clusters (chaos, scenario, bench) keeps them: a folder
    of the run-dir, which it claims as xcon's as `xcon up` does, so a later `xcon up` there finds
    a run-dir xcon made, not one holding files it did not (and refuses one that holds others')."""
    from orchestrator.cluster import rundir

    run_dir = run_dir.resolve()
    with rundir.locked(run_dir):
        rundir.claim(run_dir)
    return run_dir / name


def keep_run(folder: Path, summary: dict[str, Any]) -> None:
    """A run in the results store (orchestrator.lab.results): its summary.json and pictures, its
    index.html (the page `xcon serve` shows of it), and results/latest pointing at it."""
    from orchestrator.lab import results as results_store
    from orchestrator.serve.pages import static_campaign

    results_store.write(folder, summary)
    (folder / "index.html").write_text(static_campaign(summary))
    results_store.point_latest(folder)


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


def profile_options(lab: str) -> Callable[[Callable], Callable]:
    """--profile and --time-scale, the same on every command that starts clusters; `lab` says
    what the lab profile means for that command."""
    def wrap(f: Callable) -> Callable:
        f = click.option("--time-scale", type=click.FloatRange(0.0001, 1000), default=1.0, show_default=True,
                         help="Multiply every duration of the profile by this (0.01 turns 60 s into 0.6 s).")(f)
        return click.option("--profile", type=click.Choice(list(PROFILES)), default="lab", show_default=True,
                            help=f"lab: {lab}; exchange55: Exchange 5.5's documented timings (replication 300 s + "
                                 "30 s a server, a 60 s read cache, retries every 600/120 s, time-outs of 2/7/10 "
                                 "days), shrunk by --time-scale.")(f)
    return wrap


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
