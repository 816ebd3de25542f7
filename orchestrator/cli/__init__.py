"""The `xcon` command line.

click for the commands (help text, types and choices checked before anything runs) and rich
for tables. Every command takes --run-dir (or XCON_RUN_DIR; default ./.xcon); every command
that reports has --json. A user's mistake ends as one line on stderr and a non-zero exit.
The commands live by what they do, a module each (MODULES, below): running the cluster
(cluster), faults (faults), users, mail and moves (mail), reading what happened (inspect), an
administrator's viewers (admin), experiments on fresh clusters (runs), the bench (bench),
searches in the simulator (sim), the web pages (web).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import sys
from typing import Any

import click
import click._textwrap as click_textwrap
import click.formatting

from orchestrator.cluster.client import ClusterError, Refused
from .common import DONE, EXIT_CODES, FINDING, NOT_DONE, USAGE, Finding

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _WholeWords(click_textwrap.TextWrapper):
    """click's help wrapper, breaking lines at spaces only: textwrap's default also breaks after a
    hyphen, which cut `--time-` from `scale` and `co-` from `recipient` at 80 columns
    (tests/unit/test_help_width.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("break_on_hyphens", False)
        super().__init__(*args, **kwargs)


click_textwrap.TextWrapper = _WholeWords  # type: ignore[misc]  # click.formatting imports it when it wraps
if hasattr(click.formatting, "TextWrapper"):  # a click that imported it once, at its start
    click.formatting.TextWrapper = _WholeWords  # type: ignore[attr-defined]

# each command's module (orchestrator.cli.<module>, whose COMMANDS it is): a command loads its own
# module only, so `xcon send` does not load the simulator, the bench and the web pages (a third
# of a call's CPU, times the hundreds of calls a test run makes). tests/unit/test_cli_lazy.py
# holds this table to the modules' COMMANDS.
MODULES = {"deploy": "cluster", "up": "cluster", "down": "cluster", "status": "cluster",
           "fault": "faults", "kill": "faults", "restart": "faults",
           "user": "mail", "send": "mail", "mailbox": "mail", "move": "mail", "wait": "mail",
           "logs": "inspect", "trace": "inspect", "check": "inspect",
           "queue": "admin", "show": "admin", "endpoint": "admin",
           "chaos": "runs", "scenario": "runs", "bench": "bench", "sim": "sim", "serve": "web"}


class LazyGroup(click.Group):
    """The xcon group, whose commands are imported when asked for (MODULES)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*MODULES, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in MODULES:
            module = importlib.import_module(f"{__name__}.{MODULES[name]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(name)

    def load_all(self) -> dict[str, click.Command]:
        """Every command, imported (the reference page, the tests)."""
        return {name: self.get_command(click.Context(self), name) for name in self.list_commands(click.Context(self))}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             invoke_without_command=True, epilog=EXIT_CODES)
@click.option("--version", "show_version", is_flag=True, help="Print xcon's version and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --version: the version, protocol and Python as JSON.")
@click.pass_context
def xcon(ctx: click.Context, show_version: bool, as_json: bool) -> None:
    """xcon: an Exchange 5.5 organisation in processes, to reproduce KB Q248839.

    Start a cluster with `xcon up`, add users, send mail, move mailboxes while mail flows,
    then read what happened with `xcon logs` and judge it with `xcon check`.
    `xcon scenario q248839 --all` runs the whole reproduction on fresh clusters.
    """
    if show_version:
        print_version(as_json)
        ctx.exit(DONE)
    if as_json:
        raise click.UsageError("--json goes after a command (`xcon status --json`); before one, only with --version")
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def print_version(as_json: bool) -> None:
    from importlib.metadata import version
    import platform

    from protocol import VERSION

    about = {"name": "xcon", "version": version("xcon"), "protocol": VERSION, "python": platform.python_version()}
    click.echo(json.dumps(about) if as_json else f"xcon {about['version']} (protocol {VERSION}, "
                                                 f"Python {about['python']})")


def one_line(text: str) -> str:
    """An error for stderr: control characters (a newline in a name the user typed) shown escaped."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Stopped(BaseException):
    """A signal (SIGTERM, or SIGHUP: a lost terminal) asked the command to stop. A BaseException,
    as KeyboardInterrupt is, so that no `except Exception` keeps it from unwinding the command."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def main() -> None:
    """Entry point: user errors become one line on stderr, never a traceback."""
    # what the CLI writes in a run-dir (cluster.json, the marker, a new organisation's directory
    # and mailboxes, results) is its owner's alone, as the nodes' own files are (docs/safety.md)
    os.umask(0o077)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # SIGINT is Python's KeyboardInterrupt: "aborted"
        signal.signal(sig, _stop)
    try:
        xcon.main(standalone_mode=False)
    except Stopped as exc:  # unwound: every `finally` ran (clusters stopped, workers ended)
        name = signal.Signals(exc.signum).name
        click.echo(f"xcon: stopped by {name}; what it had started is ended", err=True)
        sys.exit(128 + exc.signum)
    except NO_ARGS_IS_HELP as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "xcon"
        said = exc.format_message().replace(":\n\t", ": ").replace("\n\t", ", ")  # click's list of choices
        click.echo(one_line(f"{cmd}: {said} (see `{cmd} --help`)"), err=True)
        sys.exit(USAGE)
    except click.Abort:
        click.echo("xcon: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(one_line(f"xcon: {exc.format_message()}"), err=True)
        sys.exit(exc.exit_code)
    except Finding as exc:
        click.echo(one_line(f"xcon: {exc}"), err=True)
        sys.exit(FINDING)
    except Refused as exc:  # the request was at fault, as a bad flag is
        click.echo(one_line(f"xcon: {exc}"), err=True)
        sys.exit(USAGE)
    except ClusterError as exc:
        click.echo(one_line(f"xcon: {exc}"), err=True)
        sys.exit(NOT_DONE)
    except UnicodeEncodeError:  # a name or text from the command line that Text did not see
        click.echo("xcon: an argument is not valid UTF-8 text", err=True)
        sys.exit(USAGE)
    except OSError as exc:  # a path the user gave or a run-dir that cannot be written: one line
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(one_line(f"xcon: {exc.strerror or exc}{where}"), err=True)
        sys.exit(NOT_DONE)
    except Exception as exc:  # a bug: still one line, the traceback on demand
        if os.environ.get("XCON_DEBUG"):
            raise
        click.echo(one_line(f"xcon: internal error: {type(exc).__name__}: {exc} (set XCON_DEBUG=1 for the traceback)"),
                   err=True)
        sys.exit(NOT_DONE)


if __name__ == "__main__":
    main()
