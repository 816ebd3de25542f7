"""The orchestrator node's core: Move User (move.py) beside fault injection (faults.py)."""

from __future__ import annotations

from typing import Any

from nodes.core import Reply, Request, Response, error, log
from protocol import INVALID

from .faults import HOLD_KINDS, MOVE_STEPS, FaultCore
from .move import MoveCore
from .move_state import JournalStep


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
            kind = event.frame.body.kind
            if kind in HOLD_KINDS:
                return self._hold(event, now)
            if kind == "clear":  # every fault ends, holds too
                return self._crash_points(self.moves.release(now), now) + self.faults.inject(event, now)
            return self.faults.inject(event, now)
        if isinstance(event, Response) and (event.frame.re or "").startswith(self.faults.ids.prefix):
            if event.frame.type == "error":
                return [log("fault.refused", level="warning", target=event.frame.src, reason=event.frame.body.reason)]
            return []  # a node took its fault
        return self._crash_points(self.moves.on_event(event, now), now)

    def _hold(self, req: Request, now: float) -> list:
        """hold_at_step: stop the next move that enters params.step there; release: let every
        held move go on. Both are Move User's (orchestrator.move)."""
        body = req.frame.body
        if body.kind == "hold_at_step":
            step = body.params.get("step")
            if step not in MOVE_STEPS:
                return error(req, f"bad parameters for fault 'hold_at_step': step must be one of "
                                  f"{', '.join(MOVE_STEPS)} (got {step!r})", INVALID)
            self.moves.arm_hold(step)
            actions: list = []
        else:
            actions = self._crash_points(self.moves.release(now), now)
        return [*actions, Reply(req.peer, req.frame.id, "ok", {}),
                log("fault.injected", level="warning", kind=body.kind, target=body.node or None, peer=None,
                    **body.params)]

    def _crash_points(self, actions: list, now: float) -> list:
        """The kills armed for a move step (kill_at_step) follow the step's journal record and
        request: the step is on disk, what it asks is on its way out (or, for the orchestrator's
        own death, not yet)."""
        if not self.faults.armed:
            return actions
        steps = [a.record for a in actions if isinstance(a, JournalStep)]
        return actions + self.faults.on_steps(steps, now) if steps else actions
