"""Where a (message, recipient) pair goes: the router reads the directory cache and returns a
decision, which the core (nodes.mta.core) carries out. It changes no pair and sends nothing.

Routing uses the directory cache (nodes.mta.cache), which learns of a Move User's new home only
after the replication lag; the freshest entry known wins, the cache's or the hint a transfer
carried. When the store answers "not_here" for a mailbox the cache still homes here, the builds
part ways (nodes.mta.core's docstring).

Loops. A transfer counts a hop for deduplication (a peer refuses a pair it has taken at as many
hops), but a loop is a cycle: transfers in a row on directory data no newer than the hop before
had. A transfer that follows a newer entry (the recipient was moved meanwhile) is progress, not
a loop, however many moves it follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core import log
from ..mail import external
from .cache import DirectoryCache
from .queue import Pair, QueuedMessage

# transfers in a row on directory data no newer than the hop before's: a routing loop (only a
# directory whose USNs went backwards, or a bug, makes one: every MTA routes on the freshest entry
# it knows, and a pair's hint is the entry the hop before routed on)
MAX_CYCLES = 3


@dataclass(slots=True)
class Route:
    """Routed on `entry` (found `via` the cache, a hint, an unacknowledged transfer): `to` is
    "here" (this server's store), "peer" (the MTA of the entry's home, `cycles` the transfer's),
    or a failure found on the way: "no_route" (a server the organisation lacks), "loop"."""

    to: str
    entry: dict[str, Any]
    via: str
    cycles: int = 0


@dataclass(slots=True)
class Wait:
    """Try it again later (`answered`: after the transfer interval, else the open interval)."""

    reason: str
    answered: bool = True
    why: list = field(default_factory=list)  # the log lines that say why, before the deferral's


@dataclass(slots=True)
class Fail:
    reason: str
    why: list = field(default_factory=list)


@dataclass(slots=True)
class Reroute:
    """Route it again: its home is elsewhere now (`why` says how this MTA learned it)."""

    why: list


@dataclass(slots=True)
class AskDirectory:
    """Ask the directory itself, past the cache, where the mailbox went."""

    why: list


POSTMASTER_COPY = "postmaster copy"  # to this server's own postmaster mailbox, never through the directory
OUTSIDE = "outside"  # to this server's IMS (nodes.mta.external)
Decision = Route | Wait | Fail | Reroute | AskDirectory | str


class Router:
    def __init__(self, server: str, build: str, servers: tuple[str, ...], cache: DirectoryCache):
        self.server, self.build, self.servers, self.cache = server, build, servers, cache

    def entry(self, pair: Pair, now: float) -> tuple[dict[str, Any] | None, str]:
        """The freshest entry known for the pair's recipient: the cache's, or the hint's when newer."""
        cached = self.cache.get(pair.rcpt, now)
        if pair.hint and (cached is None or pair.hint["usn"] > cached["usn"]):
            return pair.hint, "hint"
        return cached, "cache"

    def decide(self, msg: QueuedMessage, pair: Pair, now: float, ready: bool) -> Decision:
        if msg.report is not None:
            return POSTMASTER_COPY
        if external(pair.rcpt):  # outside the organisation: no directory entry
            return OUTSIDE
        if not ready and pair.handed_to is None:
            # a restarted MTA whose directory has not answered yet: an empty cache knows nobody,
            # and routing on it would fail every recipient (and the NDR's originator) as unknown
            return Wait("directory cache not loaded yet", answered=False)
        if pair.handed_to is not None:
            # an unacknowledged hand-off: the peer may own the pair already, so it goes to that
            # peer again with what it was sent before; only the peer's answer settles it (and the
            # directory is not read: a read refreshes what the read cache trusts)
            entry, via = pair.hint, "unacknowledged transfer"
        else:
            entry, via = self.entry(pair, now)
        if entry is None:
            return Fail("unknown")
        home = entry["home_server"]
        if (home == self.server and msg.ndr_for is None and not pair.unconfirmed
                and msg.sender in (entry.get("reject_from") or ())):
            # the recipient's delivery restrictions, as this MTA reads them (its read cache may
            # hold the entry from before a change: Q178534). Not for an unconfirmed pair: an
            # earlier attempt, made under the old restrictions, may have landed (the simulator
            # found an NDR for a delivered message); the store's answer settles it
            return Fail("restricted", [log("mta.restricted", msg_id=msg.msg_id, rcpt=pair.rcpt, sender=msg.sender,
                                           entry_usn=entry["usn"], cache_usn=self.cache.usn)])
        if home == self.server:
            return Route("here", entry, via)
        if home not in self.servers:
            # an entry naming a server this organisation does not have (a hand-edited directory):
            # no MTA will ever answer for it
            return Route("no_route", entry, via)
        # a cycle: this hop goes on data no newer than the hop before had (see MAX_CYCLES)
        cycles = pair.cycles + 1 if entry["usn"] <= pair.arrived_usn else 0
        if cycles >= MAX_CYCLES and pair.handed_to is None:
            return Route("loop", entry, via)
        return Route("peer", entry, via, cycles)

    def not_here(self, msg: QueuedMessage, pair: Pair, now: float, reason: str, directory_usn: int) -> Decision:
        """The store has no such mailbox (or only a soft-deleted one: `reason`). The heart of KB Q248839."""
        entry, _ = self.entry(pair, now)
        facts = {"msg_id": msg.msg_id, "rcpt": pair.rcpt, "cache_usn": self.cache.usn,
                 "entry_usn": entry["usn"] if entry else None, "directory_usn": directory_usn}
        if entry is not None and entry["home_server"] != self.server:
            # the cache caught up while the store answered: route to the new home
            return Reroute([log("mta.rerouted", reason="cache updated", home_server=entry["home_server"], **facts)])
        if self.build == "reroute" or pair.unconfirmed:
            # reroute always; any build when an earlier delivery here went unanswered, since the
            # message may have arrived and left with the mailbox: find where it went first
            return AskDirectory([log("mta.not_homed", action="ask directory", cache_home=self.server, **facts)])
        if msg.ndr_for is not None:
            # a report is never dropped for a transient cause: the originator exists and was
            # moved, so hold the NDR until this MTA's cache learns the new home
            return Wait("originator's mailbox moved; waiting for the directory cache",
                        why=[log("mta.not_homed", action="hold report", cache_home=self.server, **facts)])
        return Fail(reason, [log("mta.not_homed", action="fail", cache_home=self.server, **facts)])

    def resolved(self, msg: QueuedMessage, pair: Pair, entry: dict[str, Any] | None, expired: bool) -> Decision:
        """The directory's answer to AskDirectory (`expired`: the message's time-out has passed)."""
        if entry is None:
            return Fail("unknown")
        if entry["home_server"] == self.server:
            # the directory homes it here, and the store had no mailbox: a move back here, or one
            # under way, whose mailbox is not open yet. Not a failure (an NDR here was the oracle's
            # first find: simulated trial 710053058, reroute, a lookup answered late after the user
            # moved back): tried again until its time-out, then failed as expired here (the store
            # answers "not here" before it judges a time-out: an unconfirmed pair would ask for ever)
            if expired:
                return Fail("expired")
            return Wait("the directory homes it here; the store has no mailbox yet")
        return Reroute([log("mta.rerouted", msg_id=msg.msg_id, rcpt=pair.rcpt, reason="directory lookup",
                            home_server=entry["home_server"], entry_usn=entry["usn"], cache_usn=self.cache.usn)])
