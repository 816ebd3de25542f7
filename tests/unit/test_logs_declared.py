"""protocol/logs.py, the declaration of every event a core logs: the check finds each kind of
wrong line, and every `log(...)` in the code names a declared event with declared fields (read
from the source, so that an event no test reaches is held too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nodes.core import log
from orchestrator.inspect.justify import RULES
from protocol import logs

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"msg_id": "m1", "rcpt": "bob", "reason": "mailbox locked", "retry_in_ms": 250}


@pytest.mark.parametrize("event, level, fields, wrong", [
    ("mta.deferred", "info", GOOD, None),
    ("mta.deferal", "info", GOOD, "'mta.deferal' is not declared"),
    ("MTA.DEFERRED", "info", GOOD, "is not declared"),
    ("mta.deferred", "XXinfoXX", GOOD, "level 'XXinfoXX'"),
    ("mta.deferred", "info", {**GOOD, "rcpt": None}, "rcpt=None is not str"),
    ("mta.deferred", "info", {k: v for k, v in GOOD.items() if k != "reason"}, "no reason"),
    ("mta.deferred", "info", {**GOOD, "XXreasonXX": "x"}, "XXreasonXX not declared"),
    ("mta.deferred", "info", {**GOOD, "retry_in_ms": True}, "is not int"),
    ("mta.accepted", "info", {"msg_id": "m", "sender": "a", "rcpts": ["b"], "alt_of": {}, "cache_usn": 3,
                              "priority": "urgent"}, None),
    ("fault.applied", "warning", {"type": "fault.lag", "by": "cli", "lag_ms": 5}, None),  # open: its parameters
    ("mta.retry", "info", {"msg_id": "m1", "rcpt": "bob", "reason": "RETRY TIMER"}, "reason='RETRY TIMER' is not one of"),
])
def test_a_line_is_held_to_its_declaration(event, level, fields, wrong):
    found = logs.problem(event, level, fields)
    assert found == wrong if wrong is None else wrong in found, found


def test_log_raises_in_the_tests_and_checks_nothing_outside_them(monkeypatch):
    assert logs.STRICT, "tests/conftest.py sets it"
    with pytest.raises(logs.Undeclared, match="no reason"):
        log("mta.deferred", msg_id="m1", rcpt="bob", retry_in_ms=1)
    monkeypatch.setattr(logs, "STRICT", False)
    assert log("mta.deferred", msg_id="m1").event == "mta.deferred"


def _calls():
    """Every `log("event", ...)` in nodes/ and orchestrator/: (where, events, keywords, spread)."""
    for path in sorted([*ROOT.glob("nodes/**/*.py"), *ROOT.glob("orchestrator/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "log" and node.args:
                first = node.args[0]
                events = ([first.value] if isinstance(first, ast.Constant) else
                          [first.body.value, first.orelse.value] if isinstance(first, ast.IfExp) else
                          [f"directory.{how}" for how in ("added", "modified")]
                          if ast.unparse(first) == "f'directory.{how}'" else [None])
                named = {k.arg: k.value.value if isinstance(k.value, ast.Constant) else None
                         for k in node.keywords if k.arg not in (None, "level")}
                yield f"{path.relative_to(ROOT)}:{node.lineno}", events, named, any(k.arg is None for k in node.keywords)


def test_every_log_call_in_the_code_names_a_declared_event_with_declared_fields():
    calls = list(_calls())
    assert len(calls) > 100
    wrong = []
    for where, events, named, spread in calls:
        for event in events:
            if event not in logs.EVENTS:
                wrong.append(f"{where}: {event} is not declared")
                continue
            always, may = (set(part.split()) for part in logs.EVENTS[event])
            extra = named.keys() - always - may
            missing = set() if spread else always - named.keys()
            if extra and "..." not in may or missing:
                wrong.append(f"{where}: {event}: extra {sorted(extra)}, missing {sorted(missing)}")
            wrong += [f"{where}: {event}: {f} has no type" for f in named if f not in logs.FIELDS]
            wrong += [f"{where}: {event}: {f}={v!r} is not a declared value" for f, v in named.items()
                      if v is not None and v not in logs.VALUES.get((event, f), {v})]
    assert wrong == []


def test_the_reasons_a_failure_may_give_are_the_oracles_rules():
    assert logs.VALUES[("mta.failed", "reason")] == set(RULES)


def test_every_declared_event_is_logged_somewhere():
    logged = {event for _, events, _, _ in _calls() for event in events}
    assert set(logs.EVENTS) - logged == set()
