"""An MTA's side of the ZeroMQ guide's Clone pattern: a snapshot of the directory, then its feed
of changes in USN order (applied after the replication lag by nodes.mta.cache), a heartbeat that
shows a missed change, and a USN that goes backwards refused and said so."""

from __future__ import annotations

from typing import Any

from protocol import messages

from ..core import Send, log
from .cache import DirectoryCache
from .queue import QueuedMessage

DIRECTORY = "directory"


class DirectoryFeed:
    """The directory's snapshot and feed, for MtaCore (nodes.mta.core), whose state they share."""

    cache: DirectoryCache
    queue: dict[str, QueuedMessage]
    ids: Any
    timeout_s: float
    directory_usn: int
    regressed: int | None
    _snapshot_req: str | None
    _snapshot_deadline: float

    def _ask_snapshot(self, now: float) -> Send:
        self._snapshot_req = self.ids.next()
        self._snapshot_deadline = now + self.timeout_s
        self._wake_at(self._snapshot_deadline)
        return Send(DIRECTORY, "dir.snapshot", {}, self._snapshot_req)

    def _went_back(self, usn: int) -> list:
        """The directory announces a USN below what this cache received: a Clone client that sees
        its server's sequence go back has found a fault. Refuse it, keep the view, say so once."""
        if self.regressed == usn:
            return []
        self.regressed = usn
        return [log("mta.directory_regressed", level="error", directory_usn=usn, received_usn=self.cache.received_usn,
                    why="the directory's USN went backwards (its state was lost or replaced); this MTA keeps its "
                        "cache and takes no change at or below the USN it had")]

    def _snapshot(self, frame: Any, now: float) -> list:
        if frame.re != self._snapshot_req:
            return []
        self._snapshot_req = None
        if self.cache.initialized and frame.body.usn < self.cache.received_usn:
            return self._went_back(frame.body.usn)
        first = not self.cache.initialized
        scheduled = self.cache.load_snapshot(frame.body.usn, frame.body.recipients, now)
        self.directory_usn = max(self.directory_usn, frame.body.usn)
        self._wake_at(self.cache.next_apply())
        actions: list = [log("mta.snapshot", usn=frame.body.usn, first=first, scheduled=len(scheduled))]
        if first:
            actions.append(log("mta.ready", cache_usn=self.cache.usn, queued=len(self.queue)))
            for msg in list(self.queue.values()):  # recovered from disk: route again
                for pair in list(msg.pairs.values()):
                    if pair.state == "queued":
                        actions += self._route(msg, pair, now)
        return actions

    def _feed(self, type_: str, body: messages.Body, now: float) -> list:
        if type_ == "dir.heartbeat":
            if self.cache.initialized and body.usn < self.cache.received_usn:
                return self._went_back(body.usn)
            self.directory_usn = max(self.directory_usn, body.usn)
            if self.cache.initialized and body.usn > self.cache.received_usn and self._snapshot_req is None:
                return [log("mta.feed_gap", received_usn=self.cache.received_usn, directory_usn=body.usn),
                        self._ask_snapshot(now)]
            return []
        if type_ != "dir.change":
            return []
        self.directory_usn = max(self.directory_usn, body.usn)
        outcome = self.cache.receive(body.usn, body.recipient, now)
        if outcome == "gap" and self._snapshot_req is None:
            return [log("mta.feed_gap", received_usn=self.cache.received_usn, directory_usn=body.usn),
                    self._ask_snapshot(now)]
        if outcome == "scheduled":
            self._wake_at(self.cache.next_apply())
            return [log("mta.change_received", usn=body.usn, alias=body.recipient["alias"],
                        apply_in_ms=int((self.cache.last_scheduled() - now) * 1000))]
        return []
