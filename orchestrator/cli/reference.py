"""docs/cli.md, written from the commands themselves: every command, its arguments, its options
and their help, as `--help` gives them. `python -m orchestrator.cli.reference > docs/cli.md`
writes it; a test fails when the file and the commands differ, so the reference cannot go stale."""

from __future__ import annotations

import click

from . import xcon
from .common import EXIT_CODES

INTRO = f"""# The xcon command line

Every command takes `--run-dir DIR` (or `XCON_RUN_DIR`, default `./.xcon`) and `--help`; every
command that reports has `--json`, the form for scripts. A mistake ends as one line on stderr,
never a traceback. `xcon --version` prints the version (`--json` adds the protocol and Python).
Tables fit a terminal's width (80 columns included, with `--wide` for every column); piped or
redirected, they keep every column whole.

{EXIT_CODES} A usage error changes nothing; a node's refusal of what was asked (an unknown user, a
name taken) is a usage error too, while its refusal for its own state (busy, disk full, starting)
is 3: asked later, it may succeed.

This page is written from the commands themselves (`python -m orchestrator.cli.reference >
docs/cli.md`); a test fails when the two differ.
"""


def commands(group: click.Group, prefix: str = "xcon") -> list[tuple[str, click.Command]]:
    """Every command under `group`, depth first, in alphabetical order, with its full name."""
    found = []
    every = group.load_all() if hasattr(group, "load_all") else group.commands
    for name in sorted(every):
        command = every[name]
        full = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += commands(command, full)
        else:
            found.append((full, command))
    return found


def _metavar(param: click.Parameter, ctx: click.Context) -> str:
    try:
        return param.make_metavar(ctx)  # click >= 8.2
    except TypeError:
        return param.make_metavar()  # type: ignore[call-arg]


def _option(param: click.Option, ctx: click.Context) -> str:
    names = " / ".join(", ".join(f"`{o}`" for o in opts) for opts in (param.opts, param.secondary_opts) if opts)
    kind = "" if param.is_flag or param.type.name == "boolean" else f" {_metavar(param, ctx)}"
    help_text = " ".join((param.help or "").split())
    default = ""
    if param.show_default and param.default is not None and not param.is_flag:
        shown = param.show_default if isinstance(param.show_default, str) else param.default
        default = f" (default: {shown})"
    env = f" [env: {param.envvar}]" if param.envvar and param.show_envvar else ""
    return f"- {names}{kind.replace('|', '/')}: {help_text}{default}{env}"


def render() -> str:
    parts = [INTRO]
    for name, command in commands(xcon):
        ctx = click.Context(command, info_name=name)
        usage = command.collect_usage_pieces(ctx)
        parts.append(f"\n## {name}\n\n`{name} {' '.join(usage)}`\n")
        doc = " ".join((command.help or "").replace("\b\n", "").split("\n\n")[0].split())
        rest = [" ".join(p.split()) for p in (command.help or "").replace("\b\n", "").split("\n\n")[1:]]
        parts.append(f"\n{doc}\n")
        for paragraph in rest:
            parts.append(f"\n{paragraph}\n")
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        if arguments:
            parts.append("\nArguments: " + ", ".join(f"`{_metavar(a, ctx)}`" + ("" if a.required else " (optional)")
                                                      for a in arguments) + "\n")
        if options:
            parts.append("\n" + "\n".join(_option(p, ctx) for p in options) + "\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
