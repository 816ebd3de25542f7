"""Move User's failures: a move that fails before set_home rolls back, the operator's abort, and
what a restarted orchestrator finds unfinished in its journal.

A failure before set_home rolls back: both stores are told the move is over (store.end_move:
the target deletes the copy it holds, which no delivery can have reached; the source unlocks,
whether or not the lock's grant was ever seen here; and neither takes that move's lock or import
again, however late they come), then a cleared alternate is restored. From set_home on a move
only goes forward. An orchestrator that restarts reads its journal and does the same for every
move it finds unfinished (`recover`); a move a damaged journal line names is left alone.
"""

from __future__ import annotations

from nodes.core import log
from protocol import MOVE_ENDED

from .journal import Record
from .move_state import OLD_STEPS, ROLLBACK, Move, forward
from .move_steps import Steps


class Rollback:
    def __init__(self, steps: Steps):
        self.steps = steps

    def recover(self, records: list[Record], moves: dict[str, Move], suspect: set[str], now: float) -> list:
        """Finish what a killed orchestrator left: forward from set_home on, back before it. Each
        move taken up goes into `moves`; one a damaged journal line names (`suspect`) is left."""
        last: dict[str, Record] = {}
        for record in records:
            last[record.move_id] = record
        actions: list = []
        for move_id, r in last.items():
            step = OLD_STEPS.get(r.step, r.step)
            if step in MOVE_ENDED:
                continue
            if move_id in suspect:
                actions.append(log("move.left_alone", level="error", move_id=move_id, alias=r.alias,
                                   mailbox=r.alias, step=step,
                                   why="a damaged journal line names this move: its last step is not known, so it is "
                                       "neither finished nor rolled back; see `xcon status` and `xcon move --abort`"))
                continue
            move = Move(move_id, r.alias, r.target, r.workaround, r.copy_delay_ms, legacy=r.legacy, source=r.source,
                        step=step, started_at=now if r.started_at is None else r.started_at, saved=r.saved,
                        error=r.error)
            moves[move_id] = move
            actions.append(log("move.recovered", move_id=move_id, alias=move.alias, mailbox=move.alias, step=step))
            if forward(move):
                move.timer = now  # redo the step's request at once
                continue
            move.rolling_back = True
            move.error = move.error or f"the orchestrator restarted during step {step}"
            if step in ROLLBACK:
                move.undo = list(ROLLBACK[ROLLBACK.index(step):])
            else:
                move.undo = undo_for(step, saved=False)
            if move.saved is None and "rollback_alternate" in move.undo:
                move.undo.remove("rollback_alternate")
            elif move.saved is not None and "rollback_alternate" not in move.undo:
                move.undo.append("rollback_alternate")
            actions += self.run(move, now)
        return actions

    def failed(self, move: Move, reason: str, now: float) -> list:
        """A step before set_home failed (or an undo step was refused): roll back, or go on rolling back."""
        if move.rolling_back:
            # an undo step refused (not a timeout: those are sent again): say so, go on with the rest
            return [log("move.undo_refused", level="warning", move_id=move.move_id, step=move.step, reason=reason),
                    *self.run(move, now)]
        if move.error is None:
            move.error = reason
        return [log("move.problem", level="warning", move_id=move.move_id, step=move.step, reason=reason),
                *self.run(move, now)]

    def run(self, move: Move, now: float) -> list:
        """Undo what the move did before set_home, target first; each undo step is journaled."""
        if not move.rolling_back:
            move.rolling_back = True
            move.timer = None
            move.ahead = move.page = None  # a read-ahead page is not imported after all
            move.undo += undo_for(move.step, move.saved is not None)
        if not move.undo:
            move.finished_at = now
            return [*self.steps.enter(move, "failed", now, reason=move.error),
                    log("move.failed", level="warning", move_id=move.move_id, alias=move.alias, reason=move.error)]
        step = move.undo.pop(0)
        actions = self.steps.enter(move, step, now)
        if step in ("rollback_target", "rollback_source"):
            server = move.target if step == "rollback_target" else move.source
            return actions + self.steps.request(move, f"store.{server}", "store.end_move",
                                                {"mailbox": move.alias, "owner": move.move_id}, now)
        return actions + self.steps.modify(move, dict(move.saved), now)


def undo_for(step: str, saved: bool) -> list[str]:
    """What a move that fails in `step` must undo. From the lock step on the source store is
    told the move is over even if no grant was seen (the lock may be granted later, from a
    request queued while the store was down or paused); from the copy step on the target too
    (a page may be on its way there)."""
    undo = {"lock": ["rollback_source"], "hold_imap": ["rollback_source"], "copy": ["rollback_target", "rollback_source"],
            "create_target": ["rollback_target", "rollback_source"]}.get(step, [])
    return undo + (["rollback_alternate"] if saved else [])
