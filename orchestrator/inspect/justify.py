"""Whether each NDR and each postmaster copy was owed: one table of what each build may do and
when, judged against the durable facts the logs hold (docs/safety.md shows the table).

`check` (orchestrator.inspect.check) accepted any NDR and any postmaster copy as a correct end of
a pair, so a build that gave up on mail it could deliver, or sent a report to the postmaster while
its originator could still be reached, passed every campaign. Here a final failure is judged by
its reason, against what the directory held (its commits, from its log), when the message was
accepted and with which time-out, what the MTA read (the entry's USN it routed on) and what the
store or the IMS answered. A failure no rule allows is a finding:

  unjustified_ndr    a recipient failed (an NDR, or no report where its sender asked for none)
                     for a reason the facts do not bear out;
  early_postmaster   a report given to the postmaster before its own time-out, while its
                     originator could still be reached.

Each finding names its pair, the rule it broke and the events that show it. Times are compared
on the clock of the node that decided (a message's time-out is carried with it from its
acceptance), less SLACK_S for the instant between a node's decision and its log line.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from protocol import RELAY_FAILURES, hlc

from nodes.config import Settings
from nodes.mail import external

FINDINGS = ("unjustified_ndr", "early_postmaster")
SLACK_S = 0.05  # a node's log line is stamped a little after the instant it decided on
EXPIRY_SLACK = 0.01  # and a tolerance of 1% of a time-out, for a real node's clock readings


@dataclass(frozen=True)
class Rule:
    reason: str
    builds: tuple[str, ...]  # the builds that may fail a recipient for it
    when: str  # what must hold, in words (docs/safety.md's table)
    reports: bool = False  # whether a report may go to the postmaster for it


ALL = ("legacy", "sp4", "reroute")
RULES = {r.reason: r for r in (
    Rule("unknown", ALL, "the directory had no entry for the recipient at the USN the MTA read", reports=True),
    Rule("restricted", ALL, "the entry the MTA read (its USN) rejected mail from that sender"),
    Rule("moved", ("legacy", "sp4"), "the directory had already homed the recipient elsewhere, in an entry newer "
                                     "than the one the MTA routed on (its cache was behind)"),
    Rule("soft_deleted", ("legacy", "sp4"), "as moved: the store keeps the moved-away mailbox soft-deleted "
                                            "(KB 2579150)"),
    Rule("expired", ALL, "the message's own time-out (its priority's; a report's own) had passed, on the clock "
                         "of the node that judged it", reports=True),
    Rule("loop", ALL, "the directory's USNs had gone backwards (a restored directory) before the failure"),
    Rule("no_route", ALL, "the entry named a server the organisation does not have, or an outside address with "
                          "no IMS"),
    Rule("refused", ALL, "the outside world refused it for good (the IMS handed it back: mta.relay_failed)",
         reports=True),
    Rule("gone", (), "never: the directory homes the recipient on the server whose store answered (reroute asks "
                     "the directory past its cache, and reroutes)"),
)}


@dataclass
class Finding:
    name: str  # one of FINDINGS
    rule: str  # the rule it broke, in words
    events: list[dict[str, Any]] = field(default_factory=list)  # the events that show it


class Facts:
    """What the judge reads, gathered in check's one pass over the merged logs (`see`)."""

    EVENTS = frozenset({"directory.added", "directory.modified", "directory.loaded", "mta.accepted",
                        "mta.ndr_queued", "mta.not_homed", "mta.restricted", "store.expired_refused",
                        "mta.relay_failed", "ims.relay_failed", "mta.failed"})

    def __init__(self) -> None:
        self.added: dict[str, dict[str, Any]] = {}  # alias -> its directory.added event
        self.changes: dict[str, list[dict[str, Any]]] = defaultdict(list)  # alias -> its commits, in order
        self.top_usn = 0  # the highest USN the directory logged so far
        self.regressions: list[dict[str, Any]] = []  # directory.loaded events below an earlier USN
        self.accepted: dict[str, dict[str, Any]] = {}  # msg_id -> its first mta.accepted event
        self.reports: dict[str, dict[str, Any]] = {}  # report id -> its first mta.ndr_queued event
        self.not_homed: dict[tuple[str, str, str], dict[str, Any]] = {}  # (msg_id, rcpt, node) -> the latest
        self.restricted: dict[tuple[str, str], dict[str, Any]] = {}
        self.store_expired: dict[tuple[str, str], dict[str, Any]] = {}
        self.relay_failed: dict[tuple[str, str], dict[str, Any]] = {}  # the MTA's, and the IMS's ("ims", ...)
        self.failures: list[dict[str, Any]] = []  # mta.failed events that made a report, or declined one

    def see(self, e: dict[str, Any]) -> None:
        name = e["event"]
        if name == "mta.failed":
            if e.get("report") in ("ndr", "postmaster") or e.get("notify"):
                self.failures.append(e)
        elif name == "mta.accepted":
            first = self.accepted.get(e.get("msg_id"))
            if first is None or (first.get("repeated") and not e.get("repeated")):
                self.accepted[e.get("msg_id")] = e
        elif name == "mta.ndr_queued":
            self.reports.setdefault(e.get("msg_id"), e)
        elif name == "mta.not_homed":
            self.not_homed[(e.get("msg_id"), e.get("rcpt"), e.get("node"))] = e
        elif name == "mta.restricted":
            self.restricted[(e.get("msg_id"), e.get("rcpt"))] = e
        elif name == "store.expired_refused":
            self.store_expired.setdefault((e.get("msg_id"), e.get("mailbox")), e)
        elif name in ("mta.relay_failed", "ims.relay_failed"):
            self.relay_failed.setdefault((name[:3], e.get("msg_id"), e.get("rcpt")), e)
        elif name == "directory.loaded":
            if (e.get("usn") or 0) < self.top_usn:
                self.regressions.append(e)
            self.top_usn = max(self.top_usn, e.get("usn") or 0)
        else:  # a commit: directory.added or directory.modified
            if name == "directory.added":
                self.added.setdefault(e.get("alias"), e)
            self.changes[e.get("alias")].append(e)
            self.top_usn = max(self.top_usn, e.get("usn") or 0)


class Judge:
    """The rules of RULES applied to `facts`, for a run of `settings` whose directory, at its end,
    knows `aliases` (the end state's; None when the run's files are not there: then whether an
    alias existed is known only from the directory's log)."""

    def __init__(self, facts: Facts, settings: Settings, aliases: set[str] | None):
        self.facts, self.settings, self.aliases = facts, settings, aliases

    def findings(self) -> dict[tuple[str, str], Finding]:
        """(msg_id, rcpt) -> the finding, for every pair whose failure, or whose report's trip to
        the postmaster, no rule allows."""
        found: dict[tuple[str, str], Finding] = {}
        for e in self.facts.failures:
            if e.get("report") == "postmaster":
                broke = self._postmaster(e)
                if broke:
                    for rcpt in e.get("ndr_rcpts") or ():
                        found.setdefault((e.get("ndr_for"), rcpt), Finding("early_postmaster", *broke))
            else:
                broke = self._failure(e)
                if broke:
                    found.setdefault((e.get("msg_id"), e.get("rcpt")), Finding("unjustified_ndr", *broke))
        return found

    def _failure(self, e: dict[str, Any]) -> tuple[str, list] | None:
        reason = e.get("reason", "")
        rule = RULES.get(reason)
        if rule is None:
            return f"no rule allows a failure for the reason {reason!r}", [_brief(e)]
        if self.settings.mta_build not in rule.builds:
            return f"{self.settings.mta_build} never fails a recipient as {reason!r}: {rule.when}", [_brief(e)]
        return self._holds(rule, e, e.get("msg_id"), e.get("rcpt"), report=False)

    def _postmaster(self, e: dict[str, Any]) -> tuple[str, list] | None:
        reason = e.get("reason", "")
        rule = RULES.get(reason)
        if rule is None or not rule.reports:
            allowed = ", ".join(r.reason for r in RULES.values() if r.reports)
            return (f"a report goes to the postmaster only when its originator cannot be reached for good "
                    f"({allowed}); this one's reason was {reason!r}, and its originator could still be reached",
                    [_brief(e)])
        return self._holds(rule, e, e.get("msg_id"), e.get("rcpt"), report=True)

    def _holds(self, rule: Rule, e: dict[str, Any], msg_id: str, rcpt: str, report: bool) -> tuple[str, list] | None:
        """None if `rule` holds for the failure `e` of (msg_id, rcpt), else why not and the events."""
        facts, at = self.facts, hlc.of_event(e)
        if rule.reason == "unknown":
            added = facts.added.get(rcpt)
            existed = (added is not None and added.get("usn", 0) <= (e.get("cache_usn") or 0)) or (
                added is None and self.aliases is not None and rcpt in self.aliases)
            return (f"{rule.reason}: {rcpt} had a directory entry at USN {e.get('cache_usn')}, the one the MTA read",
                    [_brief(x) for x in (added, e) if x]) if existed else None
        if rule.reason == "restricted":
            seen = facts.restricted.get((msg_id, rcpt))
            usn = seen.get("entry_usn", 0) if seen else 0
            sender = seen.get("sender") if seen else None
            rejects = [c for c in facts.changes.get(rcpt, ()) if "reject_from" in (c.get("changes") or {})
                       and c.get("usn", 0) <= usn]
            if seen and rejects and sender in rejects[-1]["changes"]["reject_from"]:
                return None
            return (f"restricted: the entry at USN {usn} did not reject mail from {sender}",
                    [_brief(x) for x in (*(rejects[-1:]), seen, e) if x])
        if rule.reason in ("moved", "soft_deleted"):
            homed = facts.not_homed.get((msg_id, rcpt, e.get("node")))
            # the entry it routed on; without it, the cache's USN at the failure (never 0: a line
            # that lost the field must not make every later move a justification)
            usn = (homed or {}).get("entry_usn") or e.get("cache_usn") or 0
            server = (e.get("node") or "").partition(".")[2]
            newer = [c for c in facts.changes.get(rcpt, ()) if c.get("usn", 0) > usn
                     and c.get("home_server") != server and hlc.of_event(c) < at]
            return None if newer else (
                f"{rule.reason}: no entry newer than USN {usn} (the one {e.get('node')} routed on) homed {rcpt} "
                f"elsewhere before it failed: the cache was not behind", [_brief(x) for x in (homed, e) if x])
        if rule.reason == "expired":
            return self._expired(e, msg_id, rcpt, report)
        if rule.reason == "loop":
            before = [r for r in facts.regressions if hlc.of_event(r) < at]
            return None if before else ("loop: the directory's USNs never went backwards before it", [_brief(e)])
        if rule.reason == "no_route":
            if external(rcpt):
                return None if not self.settings.smtp else (
                    "no_route: the organisation has an IMS for outside addresses", [_brief(e)])
            strays = [c for c in facts.changes.get(rcpt, ()) if c.get("home_server") not in self.settings.servers]
            return None if strays else (f"no_route: every entry for {rcpt} names a server of the organisation",
                                        [_brief(e)])
        if rule.reason == "refused":
            said = facts.relay_failed.get(("mta", msg_id, rcpt))
            return None if said and said.get("reason") == "refused" else (
                "refused: no IMS handed the pair back as refused", [_brief(e)])
        return f"{rule.reason}: {rule.when}", [_brief(e)]

    def _expired(self, e: dict[str, Any], msg_id: str, rcpt: str, report: bool) -> tuple[str, list] | None:
        """The time-out had passed when the node that judged it did: this MTA, the store that
        refused the message as expired, or the IMS that handed it back as expired."""
        facts = self.facts
        made = facts.reports.get(msg_id) if report or msg_id in facts.reports else facts.accepted.get(msg_id)
        if made is None:
            return None  # when it was made is not in the logs (its line lost with a killed node)
        if msg_id in facts.reports:
            timeout = self.settings.report_expire_s()
        else:
            timeout = self.settings.expire_s(made.get("priority") or "normal")
        start = made.get("accepted_at", made.get("ts", 0))
        deadline = start + timeout - SLACK_S - EXPIRY_SLACK * timeout
        judges = [e, facts.store_expired.get((msg_id, rcpt)), facts.relay_failed.get(("ims", msg_id, rcpt))]
        if any(j is not None and j.get("ts", 0) >= deadline for j in judges):
            return None
        early = deadline + SLACK_S + EXPIRY_SLACK * timeout - e.get("ts", 0)
        return (f"expired: {early:.3f} s before its time-out of {timeout:g} s from {made.get('node')}'s acceptance",
                [_brief(made), _brief(e)])


def table() -> str:
    """RULES as docs/safety.md shows them (a test keeps the two the same)."""
    rows = ["| reason | builds that may fail a recipient for it | when | a report's postmaster copy for it |",
            "|---|---|---|---|"]
    for r in RULES.values():
        rows.append(f"| `{r.reason}` | {', '.join(r.builds) or 'none'} | {r.when} | {'yes' if r.reports else 'no'} |")
    return "\n".join(rows) + "\n"


def _brief(e: dict[str, Any]) -> dict[str, Any]:
    keep = ("ts", "node", "event", "hlc", "msg_id", "rcpt", "alias", "usn", "reason", "report", "cache_usn",
            "entry_usn", "home_server", "sender", "priority", "changes")
    return {k: e[k] for k in keep if k in e}


assert set(RELAY_FAILURES) <= set(RULES), "every reason an IMS hands a pair back for has a rule"
