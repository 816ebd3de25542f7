"""The invariant of DESIGN.md, judged from the logs and, where the run's files are there, from
the mailboxes themselves.

Every accepted (message, recipient) pair, the alternate's copy included, ends in exactly one
of: delivered once to that mailbox; an NDR naming that recipient delivered to the originator; or,
where that NDR could not be delivered in its own lifetime, the NDR in a postmaster mailbox (a
double bounce: `postmaster`, never `lost` and never `ndr`). A pair with none is `lost` if an
MTA gave up on it, or if the logs say it was delivered (or reported) but it is not there;
`pending` if nothing final happened to it yet (still in flight); `duplicated` if delivered or
reported twice; `both` if delivered and reported.

The logs say what the nodes decided; the end state (orchestrator.audit) says what is there.
With the end state, the mailboxes decide: a copy counts only if it is in the recipient's mailbox
on the server the directory homes it, an NDR only if it is in the originator's. A message a
rollback or a move's delete removed after it was delivered is `lost`, with the events that
removed it. A lock that no unfinished move holds is reported too: mail for that mailbox would
wait until it expired.

What was accepted is read from the durable records as well as the logs (`durable`: the MTAs'
queue logs and the messages in the mailboxes), so a message made durable by a node killed before
its acceptance line is judged all the same. A pair whose only record a damaged queue log lost
is `damaged`: lost, for the reason the node that kept the damaged file aside logged
(`storage.damaged`). And a verdict never rests on missing evidence: `check_run` gives none
(NoVerdict) when a node's log is missing, emptied, cut at the start or damaged in the middle, or
a file of the end state does not read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from nodes.config import Settings
from nodes.mail import DOMAIN
from protocol import hlc
from protocol.names import POSTMASTER, is_derived

from .audit import EndState
from .justify import FINDINGS, Facts, Judge

# unjustified_ndr, early_postmaster: an NDR or a postmaster copy no rule allows (inspect.justify)
VIOLATIONS = ("lost", "damaged", "pending", "duplicated", "both", *FINDINGS)
# declined: failed, and the sender asked for no report of it (RFC 3461 NOTIFY=NEVER over SMTP)
OUTCOMES = ("delivered", "ndr", "postmaster", "declined", *VIOLATIONS)
TRACE_EVENTS = 4  # how many of a pair's last events a violation report keeps
REMOVALS = ("store.deleted", "store.move_ended")
# the events the first pass reads; it skips every other at once
JUDGED = frozenset({"store.duplicate_suppressed", "store.delivered", "mta.accepted", "storage.damaged", "mta.failed",
                    "mta.ndr_queued", "ims.relayed", "ims.queued_out"})
# an MTA's events that say it holds a pair (not that it handed it on, delivered or failed it)
HOLDING = frozenset({"mta.accepted", "mta.transfer_in", "mta.routed", "mta.deferred", "mta.retry", "mta.not_homed",
                     "mta.rerouted",
                     # an IMS's (nodes.ims): queued to leave, tried, or on its way back to its MTA
                     "ims.queued_out", "ims.relay_deferred", "ims.relay_failed", "ims.hand_back_deferred"})


class NoVerdict(Exception):
    """The evidence a verdict needs is missing or damaged; str(err) says what, in one line."""


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
    evidence: list[dict[str, Any]] = field(default_factory=list)  # for a finding of inspect.justify: what shows it

    def to_json(self) -> dict[str, Any]:
        return self.__dict__

    def headline(self) -> str:
        """The verdict in words, as `xcon check` prints it: `LOST m1 -> bob, from alice: why`."""
        alt = f" (alternate of {self.alt_of})" if self.alt_of else ""
        shown = "LOST" if self.outcome == "damaged" else self.outcome.upper()
        return f"{shown} {self.msg_id} -> {self.rcpt}{alt}, from {self.sender or '?'}" + (f": {self.why}" if self.why else "")

    def decisive(self) -> list[str]:
        """The events that decided it, a line each (`node: event field=value, ...`), then what
        removed it after its delivery."""
        return ([f"{e['node']}: {e['event']} {brief(e)}".rstrip() for e in self.last_events]
                + [f"removed by {e['node']}: {e['event']} {brief(e)}".rstrip() for e in self.removed_by])


def brief(e: dict[str, Any]) -> str:
    """An event's fields beside its header, as `field=value, ...`."""
    return ", ".join(f"{k}={e[k]}" for k in e if k not in ("ts", "node", "event", "hlc", "lamport"))


@dataclass
class Report:
    pairs: int
    counts: dict[str, int]
    violations: list[PairVerdict]
    ok: bool
    audited: bool = False  # the verdict read the mailboxes, not only the logs
    stale_locks: list[dict[str, Any]] = field(default_factory=list)
    unlogged: int = 0  # pairs known from durable records alone: their acceptance lines are missing
    # delivered pairs a user then filed in a folder or expunged over IMAP: {msg_id, rcpt, act}
    by_users: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "counts": self.counts, "ok": self.ok, "audited": self.audited,
                "unlogged": self.unlogged, "stale_locks": self.stale_locks, "by_users": self.by_users,
                "violations": [v.to_json() for v in self.violations]}


def check(events: Iterable[dict[str, Any]], again: Callable[[], Iterable[dict[str, Any]]] | None = None,
          state: EndState | None = None, durable: dict[tuple[str, str], tuple[str | None, str | None]] | None = None,
          every: dict[tuple[str, str], tuple[str, str]] | None = None, settings: Settings | None = None) -> Report:
    """Judge every accepted pair, by the mailboxes of `state` when it is given; `durable` adds the
    pairs the durable records hold ((msg_id, rcpt) -> (sender or None, alt_of)), logged or not. A
    first pass counts; only when something broke does a second pass (over `again()`, or `events`
    again when it is a list) collect the last events of the broken pairs, so memory stays small
    however long the logs are. `every`, when given, receives each pair's (sender, outcome). With the
    run's `settings`, each NDR and postmaster copy is judged too (inspect.justify): one no rule
    allows is a finding; without them (a unit's hand-made events), any is accepted."""
    tally = Tally(audited=state is not None)
    facts = Facts() if settings is not None else None
    noted = Facts.EVENTS if facts is not None else frozenset()
    see = tally.see
    for e in events:
        name = e["event"]
        if name in noted:
            facts.see(e)
        if name in JUDGED:  # most lines (routing, retries, the feed, a node's own life) are not
            see(e, name)
    accepted = tally.accepted
    logged = len(accepted)
    findings = Judge(facts, settings, set(state.homes) if state is not None else None).findings() if facts else {}
    for key, known in (durable or {}).items():
        accepted.setdefault(key, known)
    counts = Counter({k: 0 for k in OUTCOMES})
    broken: dict[tuple[str, str], PairVerdict] = {}
    by_users: list[dict[str, str]] = []
    for key, (sender, alt_of) in accepted.items():
        outcome, why = tally.outcome(key, sender, state, by_users)
        finding = findings.get(key) if outcome in ("ndr", "postmaster", "declined") else None
        if finding is not None:  # it ended, but not as the facts allow
            outcome, why = finding.name, finding.rule
        if outcome in VIOLATIONS and key[0] in tally.lost_to_damage:
            # the damaged log lost the message's only record, or its latest (the MTA took up an
            # earlier state of it and acted on that again): the break is the damage's
            outcome, why = "damaged", _damage_why(*tally.lost_to_damage[key[0]])
        counts[outcome] += 1
        if every is not None:
            every[key] = (sender or "", outcome)
        if outcome in VIOLATIONS:
            broken[key] = PairVerdict(key[0], key[1], sender or "", alt_of, outcome, why=why,
                                      evidence=finding.events if finding is not None else [])
    if broken:
        reports = tally.reports
        report_held, seen = _explain(broken, again() if again else events,
                                     {reports[k]: k for k, v in broken.items() if v.outcome == "lost" and k in reports})
        if tally.damage:
            _blame_damage(broken, counts, tally.damage, report_held, seen)
        if every is not None:
            every.update((k, (v.sender, v.outcome)) for k, v in broken.items())
    stale = state.stale_locks() if state is not None else []
    return Report(len(accepted), dict(counts), list(broken.values()), not broken and not stale,
                  audited=state is not None, stale_locks=stale, unlogged=len(accepted) - logged, by_users=by_users)


@dataclass(slots=True)
class Tally:
    """check's first pass: what the logs say happened to each pair, counted (`see`), and each
    pair's outcome from the counts and, when `audited`, from the end state (`found`, `outcome`)."""

    audited: bool  # an end state will be read: keep the ids of the NDRs and postmaster copies
    accepted: dict[tuple[str, str], tuple[str | None, str | None]] = field(default_factory=dict)
    damage: dict[str, dict[str, Any]] = field(default_factory=dict)  # MTA -> its storage.damaged event
    # msg_id -> the damage event naming it, and how
    lost_to_damage: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    delivered: Counter = field(default_factory=Counter)
    reported: Counter = field(default_factory=Counter)
    postmastered: Counter = field(default_factory=Counter)
    gave_up: set[tuple[str, str]] = field(default_factory=set)
    declined: set[tuple[str, str]] = field(default_factory=set)  # failed, no report asked for (NOTIFY over SMTP)
    reports: dict[tuple[str, str], str] = field(default_factory=dict)  # a pair failed with an NDR -> the NDR's id
    # msg_id -> {ndr id: the rcpts it names}, {postmaster copy id: rcpts}
    ndrs: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(dict))
    copies: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(dict))
    # a store that wrote a message and was killed before its log line answers the retry with
    # "duplicate": the message is in the mailbox, so that counts as its one delivery
    kept: set[tuple[str, str]] = field(default_factory=set)
    client_ids: dict[str, str] = field(default_factory=dict)  # msg_id -> its SMTP client's Message-ID (Dovecot's)
    queued_out: dict[tuple[str, str], str] = field(default_factory=dict)  # a pair an IMS took to relay -> that IMS

    def see(self, e: dict[str, Any], name: str) -> None:
        """Count one of the JUDGED events, `name` its event."""
        if name == "store.duplicate_suppressed":
            self.kept.add((e.get("msg_id"), e.get("mailbox")))
        elif name == "store.delivered":
            if e.get("ndr_for"):
                to_postmaster = e.get("mailbox") == POSTMASTER
                for rcpt in e.get("ndr_rcpts") or ():
                    (self.postmastered if to_postmaster else self.reported)[(e["ndr_for"], rcpt)] += 1
                if self.audited:
                    ids = self.copies if to_postmaster else self.ndrs
                    ids[e["ndr_for"]][e.get("msg_id")] = e.get("ndr_rcpts") or []
            else:
                self.delivered[(e.get("msg_id"), e.get("mailbox"))] += 1
        elif name == "ims.relayed":  # left the organisation (nodes.ims): an outside address's delivery
            if e.get("ndr_for"):  # a DSN to an outside originator
                for rcpt in e.get("ndr_rcpts") or ():
                    self.reported[(e["ndr_for"], rcpt)] += 1
                if self.audited:
                    self.ndrs[e["ndr_for"]][e.get("msg_id")] = e.get("ndr_rcpts") or []
            else:
                self.delivered[(e.get("msg_id"), e.get("rcpt"))] += 1
        elif name == "mta.accepted":
            if e.get("message_id"):  # taken over SMTP: its client's Message-ID, as Dovecot's log names it
                self.client_ids[e.get("msg_id")] = e["message_id"]
            alt_of = e.get("alt_of") or {}
            for rcpt in e.get("rcpts", ()):
                if not e.get("repeated") or (e.get("msg_id"), rcpt) not in self.accepted:
                    self.accepted[(e.get("msg_id"), rcpt)] = (e.get("sender", ""), alt_of.get(rcpt))
        elif name == "storage.damaged" and e.get("node", "").startswith(("mta.", "ims.")):
            self.damage[e["node"]] = e
            for key, how in (("lost", "its only record was in"), ("older_state", "its latest record was in"),
                             ("suspect", "its latest record may have been in")):
                for msg_id in e.get(key) or ():
                    self.lost_to_damage.setdefault(msg_id, (e, how))
                    if is_derived(msg_id):  # a report (or its postmaster copy): the pairs of what it reports on
                        self.lost_to_damage.setdefault(msg_id.split("~ndr~")[0],
                                                       (e, how.replace("its", "its report's", 1)))
        elif name == "mta.failed" and not e.get("ndr_for"):
            self.gave_up.add((e.get("msg_id"), e.get("rcpt")))
            if e.get("notify"):
                self.declined.add((e.get("msg_id"), e.get("rcpt")))
            if e.get("ndr_id"):
                self.reports[(e.get("msg_id"), e.get("rcpt"))] = e["ndr_id"]
        elif name == "mta.failed" and e.get("report") == "postmaster" and self.audited:
            self.copies[e["ndr_for"]][e.get("postmaster_id")] = e.get("ndr_rcpts") or []
        elif name == "mta.ndr_queued" and self.audited:  # the NDR's id even if its delivery's line is gone
            self.ndrs[e.get("ndr_for")][e.get("msg_id")] = e.get("rcpts") or []
        elif name == "ims.queued_out":
            self.queued_out[(e.get("msg_id"), e.get("rcpt"))] = e.get("node", "an IMS")

    def found(self, key: tuple[str, str], sender: str | None, state: EndState, by_users: list[dict[str, str]],
              d: int, n: int, p: int) -> tuple[int, int, int, str]:
        """A pair's copies delivered, NDRs and postmaster copies as the end state's mailboxes hold
        them, and why, where they and the logs (which counted d, n and p) disagree. A delivered
        copy its user filed away or expunged is added to `by_users`."""
        why = ""
        said = "delivered" if d else "reported" if n else "given to the postmaster" if p else ""
        d, act = state.kept(key[1], key[0], _message_ids(key[0], self.client_ids))
        if act:  # not in the mailbox's own folder: its user filed it away or expunged it
            by_users.append({"msg_id": key[0], "rcpt": key[1], "act": act})
        n = sum(state.kept(sender, ndr_id, _message_ids(ndr_id, self.client_ids))[0] if sender
                else state.homed_copies(ndr_id)
                for ndr_id, rcpts in self.ndrs.get(key[0], {}).items() if key[1] in rcpts)
        p = sum(state.postmaster_copies(pm_id)
                for pm_id, rcpts in self.copies.get(key[0], {}).items() if key[1] in rcpts)
        if said and not d and not n and not p:
            owner = key[1] if said == "delivered" else sender
            where = {"delivered": f"{key[1]}'s mailbox on its home server",
                     "reported": f"{sender}'s mailbox on its home server"}.get(said, "any postmaster mailbox")
            why = f"the logs say {said}, but it is not in {where}"
            if said != "given to the postmaster" and owner and owner not in state.homes:
                why += f" (the directory has no entry for {owner}: no mailbox counts as theirs)"
        return d, n, p, why

    def outcome(self, key: tuple[str, str], sender: str | None, state: EndState | None,
                by_users: list[dict[str, str]]) -> tuple[str, str]:
        """A pair's outcome (OUTCOMES) and why, where there is a why: from what the logs counted,
        or with an end state from what its mailboxes hold (`found`)."""
        d, n, p, why = (self.delivered[key] or (1 if key in self.kept else 0), self.reported[key],
                        self.postmastered[key], "")
        if state is not None:
            d, n, p, why = self.found(key, sender, state, by_users, d, n, p)
        if d and (n or p):
            return "both", why
        if d > 1 or n + p > 1:
            return "duplicated", why
        if d == 1:
            return "delivered", why
        if n == 1:
            return "ndr", why
        if p == 1:
            return "postmaster", why
        if key in self.declined and not why:
            return "declined", why
        if key in self.gave_up and not why and state is not None and self.reports.get(key) in state.waiting:
            return "pending", why  # failed, and its report still on its way (in an MTA's or an IMS's queue)
        if key in self.queued_out and key not in self.gave_up and state is not None and key[0] not in state.waiting:
            # an IMS took it to relay, and nothing ended it: not relayed, not handed back, and no
            # queue holds it (its item's file is gone): nothing will ever move it
            ims = self.queued_out[key]
            return "lost", (f"{ims} took it to relay, and it was neither relayed nor handed back, and no queue "
                            f"holds it (ims/{ims.partition('.')[2]}/outbound)")
        return ("lost" if why or key in self.gave_up else "pending"), why


def _message_ids(msg_id: str, client_ids: dict[str, str]) -> list[str]:
    """The Message-IDs a message may carry: xcon's own (nodes.mail.compose), or its SMTP client's."""
    return [f"<{msg_id}@{DOMAIN}>", *([client_ids[msg_id]] if msg_id in client_ids else [])]


def _blame_damage(broken: dict[tuple[str, str], PairVerdict], counts: Counter, damage: dict[str, dict[str, Any]],
                  report_held: dict[tuple[str, str], dict[str, Any]], seen: dict[tuple[str, str], list]) -> None:
    """Breaks the damaged bytes explain, though no id could be read from them (a flipped byte in
    the id itself): a pair still waiting, or whose report never arrived, last held by an MTA that
    found its queue log damaged after holding it (its record may be among those bytes); and a pair
    delivered or reported twice by an MTA acting on it after finding its damage (its latest record
    may be among them, and the MTA acted on an earlier state again). `seen`: each pair's every
    event, not its last few: those may all be another node's (simulated trials 1742714835, sp4,
    a store's four refusals; 665556484, sp4 over SMTP, the next MTA's delivery)."""
    def after_damage(e: dict[str, Any] | None, node: str | None = None) -> bool:
        # one node's clock goes on across its restarts, from its last line's (nodes.logs.last_hlc)
        node = node or (e or {}).get("node")
        return e is not None and node in damage and hlc.of_event(damage[node]) >= hlc.of_event(e)

    for key, verdict in broken.items():
        if verdict.outcome == "pending":
            node, held = _holder(seen[key])
            blamed, how = (node if after_damage(held, node) else None), "its record may have been in"
        elif verdict.outcome == "lost":
            held = report_held.get(key)
            blamed, how = (held["node"] if after_damage(held) else None), "its report's record may have been in"
        elif verdict.outcome in ("both", "duplicated"):
            acted = next((e for e in seen[key] if e["node"] in damage
                          and hlc.of_event(e) >= hlc.of_event(damage[e["node"]])), None)
            blamed, how = (acted["node"] if acted else None), "its latest record may have been in"
        else:
            continue
        if blamed is not None:
            counts[verdict.outcome] -= 1
            counts["damaged"] += 1
            verdict.outcome, verdict.why = "damaged", _damage_why(damage[blamed], how)


def _holder(events: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    """The MTA that last held a pair, and the event that says so: the node of its last holding
    event, or the MTA it was then handed to (simulated trial 518674286, reroute: the pair went
    back to mta.ex2, whose damaged log lost it unnamed, and the blame went to mta.ex1, which had
    handed it over)."""
    for e in reversed(events):
        if e["event"] == "mta.transferred" and e.get("to"):
            return e["to"], e
        if e["event"] in HOLDING:
            return e["node"], e
    return None, None


def _damage_why(event: dict[str, Any], how: str) -> str:
    took = "; it took up an earlier state and acted on it again" if "latest" in how else ""
    return (f"{how} the damaged part of {event.get('file')} (kept aside as {event.get('kept_as')}), "
            f"which {event.get('node')} could not read at its restart{took}")


def _explain(broken: dict[tuple[str, str], PairVerdict], events: Iterable[dict[str, Any]],
             report_of: dict[str, tuple[str, str]]) -> tuple[dict, dict]:
    """The second pass: each broken pair's events (its last few kept in its verdict), and for a
    pair delivered and then gone, the deletes of its mailbox on that store after the delivery.
    Returns, for the pairs whose reports `report_of` names (report id -> pair), the last event of
    an MTA holding the report, and each broken pair's every event."""
    seen: dict[tuple[str, str], list] = {key: [] for key in broken}
    report_held: dict[tuple[str, str], dict[str, Any]] = {}
    gone = {key for key, v in broken.items() if v.why and v.outcome not in FINDINGS}
    delivered_on: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)  # (node, mailbox) -> keys
    for e in events:
        rcpt = e.get("rcpt") or e.get("mailbox")
        key = (e.get("msg_id"), rcpt)
        slot = seen.get(key)
        if slot is not None:
            slot.append(_brief(e))
            if key in gone and e["event"] == "store.delivered":
                delivered_on[(e.get("node", ""), rcpt)].append(key)
        elif e["event"] in HOLDING and e.get("msg_id") in report_of:
            report_held[report_of[e["msg_id"]]] = _brief(e)
        if e["event"] in REMOVALS:
            for k in delivered_on.get((e.get("node", ""), e.get("mailbox")), ()):
                broken[k].removed_by.append(_brief(e))
        elif e["event"] == "move.step" and e.get("step") == "rollback_target":
            for k in delivered_on.get((f"store.{e.get('target')}", e.get("mailbox")), ()):
                broken[k].removed_by.append(_brief(e))
    for key, verdict in broken.items():
        verdict.last_events = seen[key][-TRACE_EVENTS:]
    return report_held, seen


def check_run(run_dir: Path, audit: bool = True, every: dict | None = None) -> Report:
    """Judge a run directory: its logs (read twice only when something broke), then, with
    `audit` and where the run's files are there, its mailboxes, locks and queue logs. NoVerdict
    when the evidence is missing or damaged."""
    from nodes.records import DamagedFile

    from . import audit as auditing
    from . import logread

    try:
        missing = logread.problems(run_dir, auditing.nodes_of(run_dir))
        if missing:
            raise NoVerdict(f"no verdict: {'; '.join(missing)}")
        state = auditing.read(run_dir) if audit and auditing.available(run_dir) else None
        durable = auditing.durable(run_dir, state) if audit else None
    except DamagedFile as exc:
        raise NoVerdict(f"no verdict: {str(exc).replace(f'{run_dir}/', '')}") from None
    bad: list[str] = []
    report = check(logread.merged(run_dir, bad), again=lambda: logread.merged(run_dir), state=state, durable=durable,
                   every=every, settings=auditing.settings_of(run_dir))
    if bad:
        raise NoVerdict(f"no verdict: {len(bad)} log line(s) do not read, first at logs/{bad[0]} (damage in the middle "
                        "of a log: what it said is not known)")
    return report


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    keep = ("ts", "node", "event", "hlc", "reason", "report", "why", "cache_usn", "directory_usn",
            "home_server", "to", "outcome", "step", "move_id", "owner", "deleted", "messages")
    return {k: e[k] for k in keep if k in e}
