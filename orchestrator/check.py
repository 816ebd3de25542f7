"""The invariant of DESIGN.md, judged from the logs and, where the run's files are there, from
the mailboxes themselves.

Every accepted (message, recipient) pair, the alternate's copy included, ends in exactly one
of: delivered once to that mailbox, or an NDR naming that recipient delivered to the
originator. A pair with neither is `lost` if an MTA gave up on it, or if the logs say it was
delivered (or reported) but it is not in the mailbox; `pending` if nothing final happened to it
yet (still in flight); `duplicated` if delivered or reported twice; `both` if delivered and
reported.

The logs say what the nodes decided; the end state (orchestrator.audit) says what is there.
With the end state, the mailboxes decide: a copy counts only if it is in the recipient's mailbox
on the server the directory homes it, an NDR only if it is in the originator's. A message a
rollback or a move's delete removed after it was delivered is `lost`, with the events that
removed it. A lock that no unfinished move holds is reported too: mail for that mailbox would
wait until it expired.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .audit import EndState

VIOLATIONS = ("lost", "pending", "duplicated", "both")
TRACE_EVENTS = 4  # how many of a pair's last events a violation report keeps
REMOVALS = ("store.deleted", "store.move_ended")


@dataclass
class PairVerdict:
    msg_id: str
    rcpt: str
    sender: str
    alt_of: str | None
    outcome: str
    last_events: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""  # for a pair the mailboxes contradict the logs on
    removed_by: list[dict[str, Any]] = field(default_factory=list)  # what deleted it after delivery

    def to_json(self) -> dict[str, Any]:
        return self.__dict__


@dataclass
class Report:
    pairs: int
    counts: dict[str, int]
    violations: list[PairVerdict]
    ok: bool
    audited: bool = False  # the verdict read the mailboxes, not only the logs
    stale_locks: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "counts": self.counts, "ok": self.ok, "audited": self.audited,
                "stale_locks": self.stale_locks, "violations": [v.to_json() for v in self.violations]}


def check(events: Iterable[dict[str, Any]], again: Callable[[], Iterable[dict[str, Any]]] | None = None,
          state: EndState | None = None) -> Report:
    """Judge every accepted pair, by the mailboxes of `state` when it is given. A first pass
    counts; only when something broke does a second pass (over `again()`, or `events` again when
    it is a list) collect the last events of the broken pairs, so memory stays small however long
    the logs are."""
    accepted: dict[tuple[str, str], tuple[str, str | None]] = {}
    delivered: Counter = Counter()
    reported: Counter = Counter()
    gave_up: set[tuple[str, str]] = set()
    ndrs: dict[str, dict[str, list[str]]] = defaultdict(dict)  # msg_id -> {ndr id: the rcpts it names}
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
                if state is not None:
                    ndrs[e["ndr_for"]][e.get("msg_id")] = e.get("ndr_rcpts") or []
            else:
                delivered[(e.get("msg_id"), e.get("mailbox"))] += 1
        elif name == "mta.accepted":
            alt_of = e.get("alt_of") or {}
            for rcpt in e.get("rcpts", ()):
                accepted[(e.get("msg_id"), rcpt)] = (e.get("sender", ""), alt_of.get(rcpt))
        elif name == "mta.failed" and not e.get("ndr_for"):
            gave_up.add((e.get("msg_id"), e.get("rcpt")))
        elif name == "mta.ndr_queued" and state is not None:  # the NDR's id even if its delivery's line is gone
            ndrs[e.get("ndr_for")][e.get("msg_id")] = e.get("rcpts") or []
    counts = Counter({k: 0 for k in ("delivered", "ndr", *VIOLATIONS)})
    broken: dict[tuple[str, str], PairVerdict] = {}
    for key, (sender, alt_of) in accepted.items():
        d, n = delivered[key] or (1 if key in kept else 0), reported[key]
        why = ""
        if state is not None:
            said = "delivered" if d else "reported" if n else ""
            d = state.copies(key[1], key[0])
            n = sum(state.copies(sender, ndr_id) for ndr_id, rcpts in ndrs.get(key[0], {}).items() if key[1] in rcpts)
            if said and not d and not n:
                why = (f"the logs say {said}, but it is not in {key[1] if said == 'delivered' else sender}'s mailbox "
                       f"on its home server")
        if d and n:
            outcome = "both"
        elif d > 1 or n > 1:
            outcome = "duplicated"
        elif d == 1:
            outcome = "delivered"
        elif n == 1:
            outcome = "ndr"
        else:
            outcome = "lost" if why or key in gave_up else "pending"
        counts[outcome] += 1
        if outcome in VIOLATIONS:
            broken[key] = PairVerdict(key[0], key[1], sender, alt_of, outcome, why=why)
    if broken:
        _explain(broken, again() if again else events)
    stale = state.stale_locks() if state is not None else []
    return Report(len(accepted), dict(counts), list(broken.values()), not broken and not stale,
                  audited=state is not None, stale_locks=stale)


def _explain(broken: dict[tuple[str, str], PairVerdict], events: Iterable[dict[str, Any]]) -> None:
    """The second pass: each broken pair's last events, and for a pair delivered and then gone,
    the deletes of its mailbox on that store after the delivery."""
    recent: dict[tuple[str, str], deque] = {key: deque(maxlen=TRACE_EVENTS) for key in broken}
    gone = {key for key, v in broken.items() if v.why}
    delivered_on: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)  # (node, mailbox) -> keys
    for e in events:
        rcpt = e.get("rcpt") or e.get("mailbox")
        key = (e.get("msg_id"), rcpt)
        slot = recent.get(key)
        if slot is not None:
            slot.append(_brief(e))
            if key in gone and e["event"] == "store.delivered":
                delivered_on[(e.get("node", ""), rcpt)].append(key)
        if e["event"] in REMOVALS:
            for k in delivered_on.get((e.get("node", ""), e.get("mailbox")), ()):
                broken[k].removed_by.append(_brief(e))
        elif e["event"] == "move.step" and e.get("step") == "rollback_target":
            for k in delivered_on.get((f"store.{e.get('target')}", e.get("mailbox")), ()):
                broken[k].removed_by.append(_brief(e))
    for key, verdict in broken.items():
        verdict.last_events = list(recent[key])


def check_run(run_dir: Path, bad: list[str] | None = None, audit: bool = True) -> Report:
    """Judge a run directory: its logs (read twice only when something broke), then, with
    `audit` and where the run's files are there, its mailboxes and locks."""
    from . import audit as auditing, logread

    state = auditing.read(run_dir) if audit and auditing.available(run_dir) else None
    return check(logread.merged(run_dir, bad), again=lambda: logread.merged(run_dir), state=state)


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    keep = ("ts", "node", "event", "lamport", "reason", "report", "why", "cache_usn", "directory_usn",
            "home_server", "outcome", "step", "move_id", "owner", "deleted", "messages")
    return {k: e[k] for k in keep if k in e}
