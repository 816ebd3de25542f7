"""The orchestrator node's core: Move User (move.py) beside fault injection (faults.py)."""

from __future__ import annotations

from typing import Any

from nodes.core import Request, Response, log

from .faults import FaultCore
from .move import MoveCore


class OrchestratorCore:
    def __init__(self, moves: MoveCore, faults: FaultCore):
        self.moves = moves
        self.faults = faults
        self.ready = True

    def start(self, now: float) -> list:
        return self.moves.start(now)

    def next_wakeup(self) -> float | None:
        times = [t for t in (self.moves.next_wakeup(), self.faults.next_wakeup()) if t is not None]
        return min(times) if times else None

    def tick(self, now: float) -> list:
        return self.moves.tick(now) + self.faults.tick(now)

    def status(self, now: float) -> dict[str, Any]:
        return {**self.moves.status(now), **self.faults.status()}

    def on_event(self, event: Any, now: float) -> list:
        if isinstance(event, Request) and event.frame.type == "orch.fault":
            return self.faults.inject(event, now)
        if isinstance(event, Response) and (event.frame.re or "").startswith(self.faults.ids.prefix):
            if event.frame.type == "error":
                return [log("fault.refused", level="warning", target=event.frame.src, reason=event.frame.body["reason"])]
            return []  # a node took its fault
        return self.moves.on_event(event, now)
