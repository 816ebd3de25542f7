"""An MTA's directory cache: a snapshot, then the change feed applied late, in USN order.

This is the ZeroMQ guide's Clone pattern on the subscriber side, with one twist that the bug
needs: a change received at time t is applied only at t + lag + jitter (jitter drawn from a
seeded generator), never before a change with a lower USN. Until then the MTA routes on the
old entry. A gap in USNs (a missed update, seen on the feed or in a heartbeat) asks for a new
snapshot, whose newer entries are then scheduled like any change.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any


class DirectoryCache:
    def __init__(self, lag_ms: int, jitter_ms: int, seed: int):
        self.entries: dict[str, dict[str, Any]] = {}
        self.usn = 0  # highest USN applied
        self.received_usn = 0  # highest USN received (applied or waiting)
        self.initialized = False
        self.lag_s = lag_ms / 1000
        self.jitter_s = jitter_ms / 1000
        self._rng = random.Random(seed)
        self._pending: deque[tuple[float, dict[str, Any]]] = deque()  # (apply_at, entry), USN order

    def get(self, alias: str) -> dict[str, Any] | None:
        return self.entries.get(alias)

    def load_snapshot(self, usn: int, recipients: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Take a snapshot: the first one is applied at once (the MTA starts from it); a later
        one (after a gap) only schedules the entries newer than what was received. Returns the
        entries scheduled."""
        if not self.initialized:
            self.entries = {r["alias"]: r for r in recipients}
            self.usn = self.received_usn = usn
            self.initialized = True
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
        return applied

    def last_scheduled(self) -> float:
        return self._pending[-1][0] if self._pending else 0.0

    def pending_count(self) -> int:
        return len(self._pending)

    def set_lag(self, lag_ms: int, jitter_ms: int) -> None:
        self.lag_s, self.jitter_s = lag_ms / 1000, jitter_ms / 1000
