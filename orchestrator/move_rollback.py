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

from typing import Any

from nodes.core import Reply, Request, error, log
from protocol import INVALID, MOVE_ENDED, NO_MAILBOX, NOT_LOCKED

from .move_state import ROLLBACK, OLD_STEPS, Move


class Rollback:
    """Failures and rollback, for MoveCore (orchestrator.move), whose state they share."""

    moves: dict[str, Move]
    suspect: set[str]
    recovered: int

    def recover(self, records: list[dict[str, Any]], now: float) -> list:
        """Finish what a killed orchestrator left: forward from set_home on, back before it."""
        last: dict[str, dict[str, Any]] = {}
        for record in records:
            last[record["move_id"]] = record
        actions: list = []
        for move_id, r in last.items():
            step = OLD_STEPS.get(r["step"], r["step"])
            if step in MOVE_ENDED:
                continue
            if move_id in self.suspect:
                actions.append(log("move.left_alone", level="error", move_id=move_id, alias=r["alias"],
                                   mailbox=r["alias"], step=step,
                                   why="a damaged journal line names this move: its last step is not known, so it is "
                                       "neither finished nor rolled back; see `xcon status` and `xcon move --abort`"))
                continue
            move = Move(move_id, r["alias"], r["target"], r.get("workaround", False), r.get("copy_delay_ms", 0),
                        legacy=r.get("legacy", False), source=r["source"], step=step,
                        started_at=r.get("started_at", now), saved=r.get("saved"), error=r.get("error"))
            self.moves[move_id] = move
            self.recovered += 1
            actions.append(log("move.recovered", move_id=move_id, alias=move.alias, mailbox=move.alias, step=step))
            if self._forward(move):
                move.timer = now  # redo the step's request at once
                continue
            move.rolling_back = True
            move.error = move.error or f"the orchestrator restarted during step {step}"
            if step in ROLLBACK:
                move.undo = list(ROLLBACK[ROLLBACK.index(step):])
            else:
                move.undo = self._undo_for(step, saved=False)
            if move.saved is None and "rollback_alternate" in move.undo:
                move.undo.remove("rollback_alternate")
            elif move.saved is not None and "rollback_alternate" not in move.undo:
                move.undo.append("rollback_alternate")
            actions += self._rollback(move, now)
        return actions

    @staticmethod
    def _undo_for(step: str, saved: bool) -> list[str]:
        """What a move that fails in `step` must undo. From the lock step on the source store is
        told the move is over even if no grant was seen (the lock may be granted later, from a
        request queued while the store was down or paused); from the copy step on the target too
        (a page may be on its way there)."""
        undo = {"lock": ["rollback_source"], "hold_imap": ["rollback_source"], "copy": ["rollback_target", "rollback_source"],
                "create_target": ["rollback_target", "rollback_source"]}.get(step, [])
        return undo + (["rollback_alternate"] if saved else [])

    def _problem(self, move: Move, reason: str, now: float, code: str | None = None) -> list:
        if move.step == "resolve":
            return self._refuse(move, reason)
        if move.step == "release" and code == NO_MAILBOX:
            return self._after_release(move, now)  # an earlier try of this step got there
        if move.step == "open_target" and code == NOT_LOCKED:
            return [*self._enter(move, "release", now), *self._release(move, now)]  # opened already
        if self._forward(move):
            # from set_home on the move must finish, not roll back: the directory may already name
            # the target. Retry the step in a second; a legacy copy from its first page (the
            # cursor is past a page whose import failed)
            move.timer = now + 1.0
            if move.step == "copy":
                move.cursor, move.more, move.ahead, move.page, move.copied = "", True, None, None, 0
            return [log("move.retry_step", level="warning", move_id=move.move_id, step=move.step, reason=reason)]
        if move.rolling_back:
            # an undo step refused (not a timeout: those are sent again): say so, go on with the rest
            return [log("move.undo_refused", level="warning", move_id=move.move_id, step=move.step, reason=reason),
                    *self._rollback(move, now)]
        if move.error is None:
            move.error = reason
        return [log("move.problem", level="warning", move_id=move.move_id, step=move.step, reason=reason),
                *self._rollback(move, now)]

    def _refuse(self, move: Move, reason: str, why: str | None = None, code: str | None = None) -> list:
        """A move that never got past resolving: nothing to undo, its requester hears `reason`
        (the log line says `why`, when shorter) and `code` (INVALID: the request was at fault)."""
        peer, re = move.requester or (b"", "")
        del self.moves[move.move_id]
        return [Reply(peer, re, "error", {"reason": reason, "code": code}),
                log("move.refused", move_id=move.move_id, alias=move.alias, reason=why or reason)]

    def _abort(self, req: Request, alias: str, now: float) -> list:
        """The operator's abort: roll back the running move of `alias`, if it is before set_home."""
        move = next((m for m in self.active() if m.alias == alias), None)
        if move is None:
            return error(req, f"no move of '{alias}' is running", INVALID)
        if self._forward(move):
            return error(req, f"{move.move_id} is past set_home (the directory names {move.target}): "
                              "it finishes, it cannot be rolled back", INVALID)
        actions = [log("move.aborted", level="warning", move_id=move.move_id, alias=alias, mailbox=alias,
                       step=move.step, src=req.frame.src)]
        move.held, move.parked = False, None  # a hold stops a move's progress, never its rollback
        if move.step == "resolve":
            actions += self._refuse(move, "aborted by the operator")
            return [*actions, Reply(req.peer, req.frame.id, "orch.move_state", {"move": {**move.public(), "step": "failed"}})]
        if not move.rolling_back:
            move.request = None  # its answer, if it comes, is no longer awaited
            move.error = "aborted by the operator"
            actions += self._rollback(move, now)
        return [*actions, Reply(req.peer, req.frame.id, "orch.move_state", {"move": move.public()})]

    def _rollback(self, move: Move, now: float) -> list:
        """Undo what the move did before set_home, target first; each undo step is journaled."""
        if not move.rolling_back:
            move.rolling_back = True
            move.timer = None
            move.ahead = move.page = None  # a read-ahead page is not imported after all
            move.undo += self._undo_for(move.step, move.saved is not None)
        if not move.undo:
            move.finished_at = now
            return [*self._enter(move, "failed", now, reason=move.error),
                    log("move.failed", level="warning", move_id=move.move_id, alias=move.alias, reason=move.error)]
        step = move.undo.pop(0)
        actions = self._enter(move, step, now)
        if step in ("rollback_target", "rollback_source"):
            server = move.target if step == "rollback_target" else move.source
            return actions + self._request(move, f"store.{server}", "store.end_move",
                                           {"mailbox": move.alias, "owner": move.move_id}, now)
        return actions + self._modify(move, dict(move.saved), now)
