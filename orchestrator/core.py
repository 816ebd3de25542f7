"""The orchestrator node's core: Move User (move.py) beside fault injection (faults.py)."""

from __future__ import annotations

from typing import Any

from nodes.core import Request, Response, log

from .faults import FaultCore
from .move import JournalStep, MoveCore


class OrchestratorCore:
    def __init__(self, moves: MoveCore, faults: FaultCore):
        self.moves = moves
        self.faults = faults
        self.ready = True

    def start(self, now: float) -> list:
        return self._crash_points(self.moves.start(now), now)

    def next_wakeup(self) -> float | None:
        times = [t for t in (self.moves.next_wakeup(), self.faults.next_wakeup()) if t is not None]
        return min(times) if times else None

    def tick(self, now: float) -> list:
        return self._crash_points(self.moves.tick(now), now) + self.faults.tick(now)

    def status(self, now: float) -> dict[str, Any]:
        return {**self.moves.status(now), **self.faults.status()}

    def on_event(self, event: Any, now: float) -> list:
        if isinstance(event, Request) and event.frame.type == "orch.fault":
            return self.faults.inject(event, now)
        if isinstance(event, Response) and (event.frame.re or "").startswith(self.faults.ids.prefix):
            if event.frame.type == "error":
                return [log("fault.refused", level="warning", target=event.frame.src, reason=event.frame.body["reason"])]
            return []  # a node took its fault
        return self._crash_points(self.moves.on_event(event, now), now)

    def _crash_points(self, actions: list, now: float) -> list:
        """The kills armed for a move step (kill_at_step) follow the step's journal record and
        request: the step is on disk, what it asks is on its way out (or, for the orchestrator's
        own death, not yet)."""
        if not self.faults.armed:
            return actions
        steps = [a.record for a in actions if isinstance(a, JournalStep)]
        return actions + self.faults.on_steps(steps, now) if steps else actions
