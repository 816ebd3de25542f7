"""Docs that cannot go stale (issue 23): what README.md, docs/ and deploy/README.md show must be
true of the code.

- every block of xcon commands names the test that runs it, and every output sample the test that
  produces it (`<!-- run: NAME, by TEST -->`, `<!-- sample: NAME, by TEST -->`; tests/docblocks.py),
  and that test reads it by name;
- every `xcon ...` command in a fenced shell block, and every one written inline in prose, parses
  against the real command line: a command or an option that no longer exists, a choice that is
  no longer one, fails here;
- every relative link and every repository path in backticks names a file that exists;
- docs/cli.md is what the commands themselves generate (orchestrator.cli.reference), and CI runs
  the README's test command;
- the README stays a front page.
"""

from __future__ import annotations

import re
import shlex
import warnings

import click
import pytest

from .. import docblocks
from ..docblocks import ROOT
from orchestrator.cli import xcon
from orchestrator.cli.reference import render

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# what a doc writes for a value the reader chooses, and a value that parses in its place
PLACEHOLDERS = {"$M": "m1", "SEED": "1", "S": "1", "MSG_ID": "m1", "FILE": "f", "DIR": "d", "ALIAS": "bob",
                "NODE": "mta.ex1", "SERVER": "ex2", "HOST": "ex1", "N": "2", "MS": "100", "F": "0.5"}


def shell_commands(text: str) -> list[list[str]]:
    """The xcon commands of a shell block: one per line (continuations joined), split at && ; |,
    and the one inside $(...)."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"^\w+=\$\((.*)\)", r"\1", line.strip())  # M=$(xcon send ...)
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "|", "||", "&"):
                if command and command[0] == "xcon":
                    found.append(command)
                command = []
            else:
                command.append(word)
    return found


def parse(words: list[str]) -> None:
    """Parse `xcon WORDS` the way click would run it, without running it; UsageError if it does not."""
    args = [PLACEHOLDERS.get(w, w) for w in words[1:]]
    command: click.Command = xcon
    ctx = command.make_context("xcon", args)
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 9.0 will fold it into args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*ctx.protected_args, *ctx.args]
        if not rest:
            return
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)


def named(words: list[str]) -> None:
    """A command named in prose (`xcon trace`, `xcon move --abort`): the command exists, and every
    option written beside it is one of its own."""
    command: click.Command = xcon
    rest = words[1:]
    while isinstance(command, click.Group) and rest and rest[0] in command.list_commands(click.Context(command)):
        command, rest = command.get_command(click.Context(command), rest[0]), rest[1:]
    # `xcon --version` names the group's own options; anything else names a command
    assert command is not xcon or (rest and all(w.startswith("-") for w in rest)), f"no command {rest[:1]}"
    options = {o for p in command.params for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("-")}
    unknown = [w for w in rest if w.startswith("--") and w.split("=")[0] not in options]
    assert not unknown, f"{' '.join(words[:2])} has no option {unknown}"


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """(doc, "run" or "named", words) for every xcon command a doc shows."""
    shown = []
    for doc in DOCS:
        text = doc.read_text()
        for lang, block in FENCE.findall(text):
            if lang in ("sh", "bash", "console"):
                shown += [(doc.name, "run", words) for words in shell_commands(block)]
        prose = FENCE.sub("", text)
        for span in re.findall(r"`(xcon [^`]+)`", prose):
            words = [w for w in re.split(r"\s+", span) if w and not re.fullmatch(r"[A-Z][A-Z_]*|\.\.\.", w)]
            shown.append((doc.name, "named", [w.strip("[]") for w in words if "|" not in w]))
    return shown


def test_the_docs_show_commands_to_check():
    shown = shown_commands()
    assert len(shown) > 60 and {how for _, how, _ in shown} == {"run", "named"}


@pytest.mark.parametrize("doc, how, words", shown_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_command_the_docs_show_parses(doc, how, words):
    if how == "named":
        named(words)
        return
    try:
        parse(words)
    except click.BadParameter as exc:  # a file the reader makes (a shrunk world, a hosts file) need not exist
        if "does not exist" not in str(exc):
            raise AssertionError(f"{doc}: `{' '.join(words)}`: {exc.format_message()}") from None
    except click.UsageError as exc:
        raise AssertionError(f"{doc}: `{' '.join(words)}`: {exc.format_message()}") from None


def test_every_link_and_path_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith(("http://", "https://")) and not (doc.parent / target).exists():
                missing.append(f"{doc.name}: link {target}")
        for path in re.findall(r"`((?:protocol|nodes|orchestrator|tests|deploy|docs)/[\w/.-]*\w)`", text):
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: path {path}")
    assert missing == []


def test_every_block_of_commands_and_every_output_sample_names_the_test_that_runs_it():
    """A block of xcon commands in a doc, and an output sample, are run or produced by the test
    their marker names (tests/docblocks.py): that test reads the doc and the block by name."""
    unclaimed, unread = [], []
    for doc in DOCS:
        text, rel = doc.read_text(), str(doc.relative_to(ROOT))
        for block in re.finditer(r"^```sh\n(.*?)^```", text, re.M | re.S):
            if not re.search(r"(^|&& |\$\()xcon ", block.group(1), re.M):
                continue
            before = text[:block.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = re.fullmatch(r"<!-- run: ([a-z0-9-]+), by (\S+) -->", before)
            if not marker:
                unclaimed.append(f"{rel}: {block.group(1).splitlines()[0]}")
                continue
            name, test = marker.groups()
            source = (ROOT / test).read_text() if (ROOT / test).is_file() else ""
            if rel not in source or f'"{name}"' not in source:
                unread.append(f"{rel}: block {name}: {test}")
        for name, test in re.findall(r"<!-- sample: ([a-z0-9-]+), by (\S+) -->", text):
            source = (ROOT / test).read_text() if (ROOT / test).is_file() else ""
            if rel not in source or f'"{name}"' not in source:
                unread.append(f"{rel}: sample {name}: {test}")
    assert unclaimed == [], "blocks of commands that no test runs (mark them <!-- run: NAME, by TEST -->)"
    assert unread == [], "markers whose test does not read that doc's block or sample by name"
    claimed = sum(len(docblocks.blocks(str(d.relative_to(ROOT)))) for d in DOCS)
    assert claimed >= 10, claimed


def test_ci_runs_the_readmes_test_command():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == docblocks.commands("README.md", "setup")[1]


def test_the_command_reference_is_what_the_commands_say():
    assert (ROOT / "docs" / "cli.md").read_text() == render(), \
        "docs/cli.md is stale: python -m orchestrator.cli.reference > docs/cli.md"


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
