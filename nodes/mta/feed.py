"""An MTA's side of the ZeroMQ guide's Clone pattern: a snapshot of the directory, then its feed
of changes in USN order (applied after the replication lag by nodes.mta.cache), a heartbeat that
shows a missed change, and a USN that goes backwards refused and said so."""

from __future__ import annotations

from typing import Any, Callable

from protocol import messages

from ..core import Send, log
from .cache import DirectoryCache

DIRECTORY = "directory"


class DirectoryFeed:
    """What an MTA knows of the directory beyond its cache's entries: the snapshot it asked for
    (and when it asks again), the USN the directory last announced, and a USN that went back."""

    def __init__(self, cache: DirectoryCache, ids: Any, timeout_s: float, wake_at: Callable[[float], None]):
        self.cache, self.ids, self.timeout_s, self._wake_at = cache, ids, timeout_s, wake_at
        self.directory_usn = 0  # as last heard in a heartbeat
        # a USN the directory announced below what this cache had received: its state went back (a
        # lost file, a restore); the MTA keeps its view and says so, once per such USN
        self.regressed: int | None = None
        self.snapshot_req: str | None = None
        self.snapshot_deadline = 0.0

    def next_wakeup(self) -> float | None:
        return self.snapshot_deadline if self.snapshot_req else None

    def ask_snapshot(self, now: float) -> Send:
        self.snapshot_req = self.ids.next()
        self.snapshot_deadline = now + self.timeout_s
        self._wake_at(self.snapshot_deadline)
        return Send(DIRECTORY, "dir.snapshot", {}, self.snapshot_req)

    def tick(self, now: float) -> list:
        """The cache's changes whose lag has passed, applied; the snapshot asked again if unanswered."""
        actions: list = [log("mta.cache_applied", usn=entry["usn"], alias=entry["alias"],
                             home_server=entry["home_server"], alternate=entry["alternate"])
                         for entry in self.cache.apply_due(now)]
        if self.snapshot_req and now >= self.snapshot_deadline:
            actions.append(self.ask_snapshot(now))
        return actions

    def _went_back(self, usn: int) -> list:
        """The directory announces a USN below what this cache received: a Clone client that sees
        its server's sequence go back has found a fault. Refuse it, keep the view, say so once."""
        if self.regressed == usn:
            return []
        self.regressed = usn
        return [log("mta.directory_regressed", level="error", directory_usn=usn, received_usn=self.cache.received_usn,
                    why="the directory's USN went backwards (its state was lost or replaced); this MTA keeps its "
                        "cache and takes no change at or below the USN it had")]

    def snapshot(self, frame: Any, now: float) -> tuple[list, bool]:
        """The directory's snapshot: the actions, and whether it is the first (the MTA is ready)."""
        if frame.re != self.snapshot_req:
            return [], False
        self.snapshot_req = None
        if self.cache.initialized and frame.body.usn < self.cache.received_usn:
            return self._went_back(frame.body.usn), False
        first = not self.cache.initialized
        scheduled = self.cache.load_snapshot(frame.body.usn, frame.body.recipients, now)
        self.directory_usn = max(self.directory_usn, frame.body.usn)
        self._wake_at(self.cache.next_apply())
        return [log("mta.snapshot", usn=frame.body.usn, first=first, scheduled=len(scheduled))], first

    def feed(self, type_: str, body: messages.Body, now: float) -> list:
        if type_ == "dir.heartbeat":
            if self.cache.initialized and body.usn < self.cache.received_usn:
                return self._went_back(body.usn)
            self.directory_usn = max(self.directory_usn, body.usn)
            if self.cache.initialized and body.usn > self.cache.received_usn and self.snapshot_req is None:
                return [log("mta.feed_gap", received_usn=self.cache.received_usn, directory_usn=body.usn),
                        self.ask_snapshot(now)]
            return []
        if type_ != "dir.change":
            return []
        self.directory_usn = max(self.directory_usn, body.usn)
        outcome = self.cache.receive(body.usn, body.recipient, now)
        if outcome == "gap" and self.snapshot_req is None:
            return [log("mta.feed_gap", received_usn=self.cache.received_usn, directory_usn=body.usn),
                    self.ask_snapshot(now)]
        if outcome == "scheduled":
            self._wake_at(self.cache.next_apply())
            return [log("mta.change_received", usn=body.usn, alias=body.recipient["alias"],
                        apply_in_ms=int((self.cache.last_scheduled() - now) * 1000))]
        return []
