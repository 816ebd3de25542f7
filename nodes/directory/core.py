"""The directory: the authoritative recipients, a USN per change, a change feed.

State is a map alias -> recipient and the highest USN given out. Every accepted change gets
the next USN, is persisted (PersistDirectory) before it is answered, and is published on the
feed (the ZeroMQ guide's Clone pattern: snapshot on request, then ordered updates, plus a
heartbeat carrying the current USN so a subscriber can see that it missed one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import INVALID, messages
from protocol.names import ALIAS_RULE, RESERVED_ALIASES, valid_alias

from ..core import Publish, Reply, Request, error, log
from .records import Change

# the directory beats HEARTBEAT_S after a change, then twice as long after each quiet beat, up to
# HEARTBEAT_MAX_S: a subscriber that missed the last change hears of it within half a second
# while the directory is busy, and an idle directory costs each MTA a beat every few seconds, not
# two a second (a world of 100 servers spent most of its quiet time in heartbeats)
HEARTBEAT_S = 0.5
HEARTBEAT_MAX_S = 4.0
MAX_OPS = 1000  # named modifications remembered, to answer a repeat without applying it again


@dataclass(frozen=True)
class PersistDirectory:
    """Make this change durable before what follows: `change` is the change itself, `state` the
    whole directory after it (recipients, USN, ops), which the storage writes now and then instead
    of the change log (nodes.directory.node)."""

    state: dict[str, Any]
    change: Change | None = None


def organisation(users: list[dict[str, Any]]) -> dict[str, Any]:
    """A directory's state holding `users` (alias, home, and optionally alternate and
    deliver_to_both), USNs in their order: the organisation a cluster starts with, seeded before its
    nodes boot (`xcon up --users`, the simulator's worlds) instead of added a request at a time."""
    recipients = {}
    for usn, u in enumerate(users, 1):
        recipients[u["alias"]] = {"alias": u["alias"], "display_name": u["alias"], "home_server": u["home"],
                                  "alternate": u.get("alternate"), "deliver_to_both": bool(u.get("deliver_to_both")),
                                  "usn": usn}
    return {"usn": len(users), "recipients": recipients, "ops": []}


class DirectoryCore:
    def __init__(self, servers: list[str], state: dict[str, Any] | None = None):
        self.servers = list(servers)
        state = state or {}
        self.usn: int = state.get("usn", 0)
        self.recipients: dict[str, dict[str, Any]] = state.get("recipients", {})
        # op -> the USN it was given: a sender that tries again (the orchestrator after a timeout
        # or a restart) must not make a second change, with a second USN, on the feed
        self.ops: dict[str, int] = dict(state.get("ops", []))
        self.ready = True
        self._next_beat = 0.0
        self._beat_every = HEARTBEAT_S / 2  # doubled at each beat

    # --- the core contract ------------------------------------------------------------------

    def start(self, now: float) -> list:
        self._next_beat = now
        return [log("directory.loaded", usn=self.usn, recipients=len(self.recipients))]

    def next_wakeup(self) -> float:
        return self._next_beat

    def tick(self, now: float) -> list:
        self._beat_every = min(HEARTBEAT_MAX_S, self._beat_every * 2)
        self._next_beat = now + self._beat_every
        return [Publish("dir.heartbeat", messages.DirHeartbeat(self.usn))]

    def status(self, now: float) -> dict[str, Any]:
        return {"usn": self.usn, "recipients": len(self.recipients)}

    def on_event(self, event: Any, now: float) -> list:
        if not isinstance(event, Request):
            return []
        handler = {
            "dir.add": self._add,
            "dir.modify": self._modify,
            "dir.lookup": self._lookup,
            "dir.snapshot": self._snapshot,
        }.get(event.frame.type)
        if handler is None:
            return error(event, f"the directory does not handle '{event.frame.type}'")
        usn = self.usn
        actions = handler(event, event.frame.body)
        if self.usn != usn:  # a change: beat soon again, for whoever missed it
            self._beat_every = HEARTBEAT_S / 2
            self._next_beat = min(self._next_beat, now + HEARTBEAT_S)
        return actions

    # --- requests ---------------------------------------------------------------------------

    def _add(self, req: Request, body: messages.DirAdd) -> list:
        alias = body.alias
        if not valid_alias(alias):
            return error(req, f"'{alias}' is not a valid alias ({ALIAS_RULE})", INVALID)
        if alias in RESERVED_ALIASES:
            return error(req, f"'{alias}' is reserved: every store keeps the {alias} mailbox", INVALID)
        if alias in self.recipients:
            return error(req, f"user '{alias}' already exists", INVALID)
        entry = {
            "alias": alias,
            "display_name": body.display_name or alias,
            "home_server": body.home_server,
            "alternate": body.alternate,
            "deliver_to_both": body.deliver_to_both,
        }
        problem = self._check(entry)
        if problem:
            return error(req, problem, INVALID)
        return self._commit(req, entry, "added")

    def _modify(self, req: Request, body: messages.DirModify) -> list:
        alias, changes, op = body.alias, body.changes, body.op
        current = self.recipients.get(alias)
        if current is None:
            return error(req, f"unknown user '{alias}'", INVALID)
        if op is not None and op in self.ops:
            usn = self.ops[op]
            return [Reply(req.peer, req.frame.id, "dir.changed", {"usn": usn, "recipient": current}),
                    log("directory.repeat", op=op, usn=usn, alias=alias, src=req.frame.src)]
        allowed = {"home_server": str, "alternate": (str, type(None)), "deliver_to_both": bool, "display_name": str,
                   "reject_from": list}
        for key, value in changes.items():
            if key not in allowed:
                return error(req, f"cannot change '{key}' (can change: {', '.join(allowed)})", INVALID)
            if not isinstance(value, allowed[key]):
                return error(req, f"'{key}' has the wrong type", INVALID)
        entry = {k: v for k, v in current.items() if k != "usn"}
        entry.update(changes)
        problem = self._check(entry) or self._unknown_senders(current, changes)
        if problem:
            return error(req, problem, INVALID)
        return self._commit(req, entry, "modified", op=op, changes=changes)

    def _unknown_senders(self, current: dict[str, Any], changes: dict[str, Any]) -> str | None:
        """A restriction names recipients of the directory, as Exchange's picked them from the
        address book: a typo was taken and rejected nobody. A name the list held before stays."""
        held = set(current.get("reject_from") or ())
        unknown = [s for s in changes.get("reject_from") or () if s not in self.recipients and s not in held]
        return f"reject_from: unknown recipient '{unknown[0]}'" if unknown else None

    def _check(self, entry: dict[str, Any]) -> str | None:
        if entry["home_server"] not in self.servers:
            return f"unknown server '{entry['home_server']}' (servers: {', '.join(self.servers)})"
        alt = entry["alternate"]
        if alt is not None:
            if alt == entry["alias"]:
                return "a user cannot be its own alternate recipient"
            if alt not in self.recipients:
                return f"unknown alternate recipient '{alt}'"
        if entry["deliver_to_both"] and alt is None:
            return "deliver-to-both needs an alternate recipient"
        for sender in entry.get("reject_from") or []:
            if not valid_alias(sender):
                return f"reject_from: '{str(sender)[:64]}' is not a valid alias ({ALIAS_RULE})"
        return None

    def _commit(self, req: Request, entry: dict[str, Any], how: str, op: str | None = None, **extra: Any) -> list:
        self.usn += 1
        entry = {**entry, "usn": self.usn}
        self.recipients[entry["alias"]] = entry
        if op is not None:
            self.ops[op] = self.usn
            while len(self.ops) > MAX_OPS:
                del self.ops[next(iter(self.ops))]  # the oldest: dicts keep insertion order
        return [
            PersistDirectory({"usn": self.usn, "recipients": self.recipients, "ops": list(self.ops.items())},
                             Change(self.usn, entry, op)),
            Publish("dir.change", {"usn": self.usn, "recipient": entry}),
            Reply(req.peer, req.frame.id, "dir.changed", {"usn": self.usn, "recipient": entry}),
            log(f"directory.{how}", usn=self.usn, alias=entry["alias"], home_server=entry["home_server"],
                alternate=entry["alternate"], deliver_to_both=entry["deliver_to_both"],
                **({"op": op} if op is not None else {}), **extra),
        ]

    def _lookup(self, req: Request, body: messages.DirLookup) -> list:
        entry = self.recipients.get(body.alias)
        return [
            Reply(req.peer, req.frame.id, "dir.entry", {"recipient": entry, "usn": self.usn}, req.frame.trace),
            log("directory.lookup", alias=body.alias, found=entry is not None, src=req.frame.src, usn=self.usn),
        ]

    def _snapshot(self, req: Request, body: messages.DirSnapshot) -> list:
        return [
            Reply(req.peer, req.frame.id, "dir.snapshot_reply",
                  {"usn": self.usn, "recipients": list(self.recipients.values())}),
            log("directory.snapshot", usn=self.usn, src=req.frame.src),
        ]
