"""How a move acts: each step journaled before it is acted on, each request awaited with a
deadline (sent again on a timeout: orchestrator.move), and the holds an operator armed. The
forward path (orchestrator.move) and the rollback (orchestrator.move_rollback) both act
through it; it decides nothing."""

from __future__ import annotations

from typing import Any

from nodes.core import Ids, Send, log

from .journal import Record
from .move_state import JournalStep, Move


class Steps:
    def __init__(self, ids: Ids, timeout_s: float):
        self.ids, self.timeout_s = ids, timeout_s
        self.holds: list[str] = []  # steps armed to hold the next move that enters them (one each)

    def enter(self, move: Move, step: str, now: float, **facts: Any) -> list:
        move.step = step
        held = []
        if step in self.holds and not move.held:
            self.holds.remove(step)
            move.held = True
            held = [log("move.held", level="warning", move_id=move.move_id, step=step, alias=move.alias,
                        mailbox=move.alias, why="a hold armed for this step (xcon fault release lets it go on)")]
        record = Record(move.move_id, step, move.alias, move.source, move.target, at=now, started_at=move.started_at,
                        saved=move.saved, workaround=move.workaround, copy_delay_ms=move.copy_delay_ms,
                        legacy=move.legacy, error=move.error or None, **facts)
        return [JournalStep(record), log("move.step", move_id=move.move_id, step=step, alias=move.alias,
                                         mailbox=move.alias, source=move.source, target=move.target, **facts),
                *held]

    def request(self, move: Move, to: str, type_: str, body: dict[str, Any], now: float, again: bool = False) -> list:
        request = self.ids.next()
        self.waiting(move, request, (to, type_, body), now, again)
        return [Send(to, type_, body, request, move.move_id)]

    def waiting(self, move: Move, request: str, sent: tuple[str, str, dict[str, Any]], now: float,
                again: bool = False) -> None:
        """The step waits for the answer to `request` (`sent`: to, type, body), sent again on a timeout."""
        move.request, move.deadline, move.last = request, now + self.timeout_s, sent
        move.tries = move.tries + 1 if again else 1

    def modify(self, move: Move, changes: dict[str, Any], now: float) -> list:
        """A directory change named by the move and its step: sent again, it is applied once."""
        return self.request(move, "directory", "dir.modify",
                            {"alias": move.alias, "changes": changes, "op": f"{move.move_id}.{move.step}"}, now)
