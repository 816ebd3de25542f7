"""An MTA's directory cache: a snapshot, then the change feed applied late, in USN order.

This is the ZeroMQ guide's Clone pattern on the subscriber side, with one twist that the bug
needs: a change received at time t is applied only at t + lag + jitter (jitter drawn from a
seeded generator), never before a change with a lower USN. Until then the MTA routes on the
old entry. A gap in USNs (a missed update, seen on the feed or in a heartbeat) asks for a new
snapshot, whose newer entries are then scheduled like any change.

On top of that replicated view sits the MTA's read cache (Exchange 5.5's "ds_read cache latency",
60 s by default: Q172364, Q178534): an entry the MTA read is trusted for `read_ttl_ms` before it
reads it again, so a change that has replicated is still not seen until the entry's read runs
out. With a TTL of 0 every read sees the replicated view.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any


class DirectoryCache:
    def __init__(self, lag_ms: int, jitter_ms: int, seed: int, read_ttl_ms: int = 0):
        self.entries: dict[str, dict[str, Any]] = {}  # the replicated view
        self.read_ttl_s = read_ttl_ms / 1000
        self._reads: dict[str, tuple[dict[str, Any] | None, float]] = {}  # alias -> (as read, trusted until)
        self.usn = 0  # highest USN applied
        self.received_usn = 0  # highest USN received (applied or waiting)
        self.initialized = False
        self.lag_s = lag_ms / 1000
        self.jitter_s = jitter_ms / 1000
        self._rng = random.Random(seed)
        self._pending: deque[tuple[float, dict[str, Any]]] = deque()  # (apply_at, entry), USN order
        self._applied: deque[tuple[float, int]] = deque()  # (applied at, USN): what view_usn looks back on

    def get(self, alias: str, now: float | None = None) -> dict[str, Any] | None:
        """The entry as the MTA sees it at `now`: what it read within the read cache's TTL, else
        the replicated view (read again, and trusted for the TTL from now)."""
        if not self.read_ttl_s or now is None or not self.initialized:
            # before the first snapshot the view is empty: a read then is no read to trust (one
            # was kept as "no such user" for the TTL and failed a delivered message as unknown:
            # simulated trial 525040750, reroute)
            return self.entries.get(alias)
        read = self._reads.get(alias)
        if read is not None and now < read[1]:
            return read[0]
        entry = self.entries.get(alias)
        self._reads[alias] = (entry, now + self.read_ttl_s)
        return entry

    def load_snapshot(self, usn: int, recipients: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Take a snapshot: the first one is applied at once (the MTA starts from it); a later
        one (after a gap) only schedules the entries newer than what was received. Returns the
        entries scheduled."""
        if not self.initialized:
            self.entries = {r["alias"]: r for r in recipients}
            self.usn = self.received_usn = usn
            self.initialized = True
            self._applied.append((float("-inf"), usn))  # nothing was read before it
            return []
        newer = sorted((r for r in recipients if r["usn"] > self.received_usn), key=lambda r: r["usn"])
        for entry in newer:
            self._schedule(entry, now)
        self.received_usn = max(self.received_usn, usn)
        return newer

    def receive(self, usn: int, entry: dict[str, Any], now: float) -> str:
        """Take one change from the feed. Returns 'scheduled', 'stale' (already have it) or 'gap'."""
        if not self.initialized or usn <= self.received_usn:
            return "stale"
        if usn != self.received_usn + 1:
            return "gap"
        self._schedule(entry, now)
        self.received_usn = usn
        return "scheduled"

    def _schedule(self, entry: dict[str, Any], now: float) -> None:
        delay = self.lag_s + (self._rng.uniform(0, self.jitter_s) if self.jitter_s > 0 else 0.0)
        at = now + delay
        if self._pending and self._pending[-1][0] > at:
            at = self._pending[-1][0]  # never overtake a lower USN
        self._pending.append((at, entry))

    def next_apply(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    def apply_due(self, now: float) -> list[dict[str, Any]]:
        """Apply every change whose time has come; returns them, in USN order."""
        applied = []
        while self._pending and self._pending[0][0] <= now:
            _, entry = self._pending.popleft()
            self.entries[entry["alias"]] = entry
            self.usn = max(self.usn, entry["usn"])
            applied.append(entry)
            if self.read_ttl_s:
                self._applied.append((now, self.usn))
        return applied

    def view_usn(self, now: float) -> int:
        """The highest USN every read sees at `now`: the replica's, less what a read made before
        it was applied may still hide (within the read cache's TTL)."""
        if not self.read_ttl_s:
            return self.usn
        cutoff = now - self.read_ttl_s
        while len(self._applied) > 1 and self._applied[1][0] <= cutoff:
            self._applied.popleft()
        first = self._applied[0] if self._applied else None
        return first[1] if first is not None and first[0] <= cutoff else 0

    def last_scheduled(self) -> float:
        return self._pending[-1][0] if self._pending else 0.0

    def pending_count(self) -> int:
        return len(self._pending)

    def set_lag(self, lag_ms: int, jitter_ms: int) -> None:
        self.lag_s, self.jitter_s = lag_ms / 1000, jitter_ms / 1000
