"""The invariant of DESIGN.md, judged from the logs alone.

Every accepted (message, recipient) pair, the alternate's copy included, ends in exactly one
of: delivered once to that mailbox, or an NDR naming that recipient delivered to the
originator. A pair with neither is `lost` if an MTA gave up on it and `pending` if none did
yet (still in flight); `duplicated` if delivered or reported twice; `both` if delivered and
reported.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

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


def check(events: Iterable[dict[str, Any]]) -> Report:
    accepted: dict[tuple[str, str], dict[str, Any]] = {}
    delivered: Counter = Counter()
    reported: Counter = Counter()
    gave_up: set[tuple[str, str]] = set()
    recent: dict[tuple[str, str], deque] = defaultdict(lambda: deque(maxlen=TRACE_EVENTS))
    for e in events:
        name = e["event"]
        msg_id = e.get("msg_id")
        if name == "mta.accepted":
            alt_of = e.get("alt_of") or {}
            for rcpt in e.get("rcpts", []):
                accepted[(msg_id, rcpt)] = {"sender": e.get("sender", ""), "alt_of": alt_of.get(rcpt)}
        elif name == "store.delivered":
            if e.get("ndr_for"):
                for rcpt in e.get("ndr_rcpts") or []:
                    reported[(e["ndr_for"], rcpt)] += 1
            else:
                delivered[(msg_id, e.get("mailbox"))] += 1
        elif name == "mta.failed" and not e.get("ndr_for"):
            gave_up.add((msg_id, e.get("rcpt")))
        rcpt = e.get("rcpt") or e.get("mailbox")
        if msg_id and rcpt:
            recent[(msg_id, rcpt)].append(_brief(e))
    counts = Counter({k: 0 for k in ("delivered", "ndr", *VIOLATIONS)})
    violations = []
    for key, info in accepted.items():
        d, n = delivered[key], reported[key]
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
            violations.append(PairVerdict(key[0], key[1], info["sender"], info["alt_of"], outcome,
                                          list(recent.get(key, ()))))
    return Report(len(accepted), dict(counts), violations, not violations)


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    keep = ("ts", "node", "event", "lamport", "reason", "report", "why", "cache_usn", "directory_usn",
            "home_server", "outcome")
    return {k: e[k] for k in keep if k in e}
