"""The invariant of DESIGN.md, judged from the logs alone.

Every accepted (message, recipient) pair, the alternate's copy included, ends in exactly one
of: delivered once to that mailbox, or an NDR naming that recipient delivered to the
originator. A pair with neither is `lost` if an MTA gave up on it and `pending` if none did
yet (still in flight); `duplicated` if delivered or reported twice; `both` if delivered and
reported.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

VIOLATIONS = ("lost", "pending", "duplicated", "both")
TRACE_EVENTS = 4  # how many of a pair's last events a violation report keeps


@dataclass
class PairVerdict:
    msg_id: str
    rcpt: str
    sender: str
    alt_of: str | None
    outcome: str
    last_events: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__


@dataclass
class Report:
    pairs: int
    counts: dict[str, int]
    violations: list[PairVerdict]
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "counts": self.counts, "ok": self.ok,
                "violations": [v.to_json() for v in self.violations]}


def check(events: Iterable[dict[str, Any]], again: Callable[[], Iterable[dict[str, Any]]] | None = None) -> Report:
    """Judge every accepted pair. A first pass counts; only when something broke does a second
    pass (over `again()`, or `events` again when it is a list) collect the last events of the
    broken pairs, so memory stays small however long the logs are."""
    accepted: dict[tuple[str, str], tuple[str, str | None]] = {}
    delivered: Counter = Counter()
    reported: Counter = Counter()
    gave_up: set[tuple[str, str]] = set()
    # a store that wrote a message and was killed before its log line answers the retry with
    # "duplicate": the message is in the mailbox, so that counts as its one delivery
    kept: set[tuple[str, str]] = set()
    for e in events:
        name = e["event"]
        if name == "store.duplicate_suppressed":
            kept.add((e.get("msg_id"), e.get("mailbox")))
        elif name == "store.delivered":
            if e.get("ndr_for"):
                for rcpt in e.get("ndr_rcpts") or ():
                    reported[(e["ndr_for"], rcpt)] += 1
            else:
                delivered[(e.get("msg_id"), e.get("mailbox"))] += 1
        elif name == "mta.accepted":
            alt_of = e.get("alt_of") or {}
            for rcpt in e.get("rcpts", ()):
                accepted[(e.get("msg_id"), rcpt)] = (e.get("sender", ""), alt_of.get(rcpt))
        elif name == "mta.failed" and not e.get("ndr_for"):
            gave_up.add((e.get("msg_id"), e.get("rcpt")))
    counts = Counter({k: 0 for k in ("delivered", "ndr", *VIOLATIONS)})
    broken: dict[tuple[str, str], PairVerdict] = {}
    for key, (sender, alt_of) in accepted.items():
        d, n = delivered[key] or (1 if key in kept else 0), reported[key]
        if d and n:
            outcome = "both"
        elif d > 1 or n > 1:
            outcome = "duplicated"
        elif d == 1:
            outcome = "delivered"
        elif n == 1:
            outcome = "ndr"
        else:
            outcome = "lost" if key in gave_up else "pending"
        counts[outcome] += 1
        if outcome in VIOLATIONS:
            broken[key] = PairVerdict(key[0], key[1], sender, alt_of, outcome)
    if broken:
        recent: dict[tuple[str, str], deque] = {key: deque(maxlen=TRACE_EVENTS) for key in broken}
        for e in (again() if again else events):
            rcpt = e.get("rcpt") or e.get("mailbox")
            slot = recent.get((e.get("msg_id"), rcpt))
            if slot is not None:
                slot.append(_brief(e))
        for key, verdict in broken.items():
            verdict.last_events = list(recent[key])
    return Report(len(accepted), dict(counts), list(broken.values()), not broken)


def check_run(run_dir: Path, bad: list[str] | None = None) -> Report:
    """Judge a run directory's logs (read twice only when something broke)."""
    from . import logread

    return check(logread.merged(run_dir, bad), again=lambda: logread.merged(run_dir))


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    keep = ("ts", "node", "event", "lamport", "reason", "report", "why", "cache_usn", "directory_usn",
            "home_server", "outcome")
    return {k: e[k] for k in keep if k in e}
