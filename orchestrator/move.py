"""Move User as a journaled sequence of steps (the orchestrator's pure core).

    resolve            ask the directory where the user lives
    clear_alternate    (workaround) remove the alternate recipient ...
    await_replication  ... and wait until every MTA's cache holds that change
    lock               source store: deliveries now answer "deferred: mailbox locked"
    hold_imap          (with --imap) the source's IMAP server ends the user's sessions and takes
                       no login until the store's lock is gone: what is copied is what the user
                       left, as Exchange's move locked the user out
    copy               export pages from the source, import them on the target, at the copy rate;
                       the next page is exported while this one is imported (read-ahead). The
                       first page creates the target mailbox locked by the move: nothing is
                       delivered into it yet
    set_home           directory: home_server := target (a new USN, published on the feed)
    open_target        target store: unlock; mail is delivered there from now on
    release            source store: delete the mailbox; it tells its MTA, which retries at once
    restore_alternate  (workaround) put the alternate back
    done | failed

A legacy move (move_build "legacy": Exchange 5.5 before SP4's Move Mailbox, KB Q277911) takes
another order after the lock: create_target (a live mailbox on the target), set_home, copy
(into the target's in-transit folder), mark_target (the lock that marks it in transit),
open_target (the store flushes the in-transit folder to the mailbox), release. From set_home on
it only goes forward, as every move does; a copy that fails is started again from the first
page (the store skips what it holds).

Each step is journaled (JournalStep) before it is acted on. A failure before set_home rolls
back, and from set_home on a move only goes forward (orchestrator.move_rollback, which also
takes up what a restarted orchestrator finds unfinished in its journal); the copy goes page by
page (orchestrator.move_paging). A request without an answer is sent again (the Lazy Pirate pattern):
before set_home a few times, then the move rolls back; from set_home on, and while rolling
back, until it is answered, because what those steps release must be released. Every request
is safe to repeat: locks have an owner, imports skip what is there, a move's last word to a
store is answered again, and a directory change carries an op id that the directory applies once.

A hold (`arm_hold`, the fault hold_at_step) stops the next move that enters a step there, as
long as the operator likes: its step's request is on its way, but its answer is kept unread, no
timer runs and nothing times out until `release`. It opens a window (a locked mailbox, say) with
no clock involved: a test that must send mail into the copy step no longer races a 1.5 s copy.
"""

from __future__ import annotations

from typing import Any

from nodes.config import MOVE_BUILDS
from nodes.core import Ids, Reply, Request, Response, Send, error, log
from nodes.node_settings import REPLICATION_WAIT_MS
from protocol import INVALID, MOVE_ENDED, NO_MAILBOX, NOT_LOCKED, messages

from . import move_paging as paging
from .journal import Record
from .move_rollback import Rollback
from .move_state import (
    POLL_S,
    REQUEST_TRIES,
    Move,
    forward,
)
from .move_steps import Steps


class MoveCore:
    def __init__(self, servers: list[str], boot: str, timeout_ms: int = 3000, journal: list[Record] | None = None,
                 sites: dict[str, str] | None = None, move_build: str = "sp4", suspect: list[str] | tuple = (),
                 imap: bool = False, replication_wait_ms: int = REPLICATION_WAIT_MS):
        if move_build not in MOVE_BUILDS:
            raise ValueError(f"unknown move build '{move_build}' (builds: {', '.join(MOVE_BUILDS)})")
        self.legacy = move_build == "legacy"
        self.imap = imap  # each server has an IMAP server (nodes.imap): a move holds its user there
        self.servers = list(servers)
        self.sites = sites or {}  # server -> site; Move Mailbox stays within one (5.5)
        self.ids = Ids("orchestrator", boot)
        self.timeout_s = timeout_ms / 1000
        self.replication_wait_s = replication_wait_ms / 1000  # the workaround's wait (OrchestratorSettings)
        self.moves: dict[str, Move] = {}
        self.journal = journal or []
        self.recovered = 0  # unfinished moves this run found in the journal at start
        # moves a damaged journal line names (orchestrator.journal): left for the operator, since
        # the step that was lost may be past set_home, where a rollback would delete mail
        self.suspect = set(suspect)
        self.steps = Steps(self.ids, self.timeout_s)
        self.rollback = Rollback(self.steps)

    # --- the core contract ------------------------------------------------------------------

    def start(self, now: float) -> list:
        recovered = self.rollback.recover(self.journal, self.moves, self.suspect, now)
        self.recovered = len(self.moves)  # unfinished moves the journal held, taken up
        return [log("orchestrator.ready", servers=self.servers), *recovered]

    def next_wakeup(self) -> float | None:
        times = [t for m in self.active() if not m.held
                 for t in (m.timer, m.deadline if m.request else None) if t is not None]
        return min(times) if times else None

    def active(self) -> list[Move]:
        return [m for m in self.moves.values() if m.step not in MOVE_ENDED]

    def status(self, now: float) -> dict[str, Any]:
        return {"active": [m.public() for m in self.active()],
                "finished": sum(m.step in MOVE_ENDED for m in self.moves.values()),
                "recovered": self.recovered, "holds": list(self.steps.holds)}

    def arm_hold(self, step: str) -> None:
        """Hold the next move that enters `step` there, until `release`."""
        self.steps.holds.append(step)

    def release(self, now: float) -> list:
        """Let every held move go on (reading the answer that came meanwhile), and disarm the holds."""
        self.steps.holds.clear()
        actions: list = []
        for move in [m for m in self.active() if m.held]:
            move.held = False
            actions.append(log("move.released", move_id=move.move_id, step=move.step, alias=move.alias,
                               mailbox=move.alias))
            if move.parked is not None:
                frame, move.parked = move.parked, None
                actions += self._answer(move, frame, now)
            elif move.request:
                move.deadline = now + self.timeout_s  # no time ran while it was held
        return actions

    def on_event(self, event: Any, now: float) -> list:
        if isinstance(event, Request):
            if event.frame.type == "orch.move":
                return self._start_move(event, event.frame.body, now)
            if event.frame.type == "orch.move_status":
                move = self.moves.get(event.frame.body.move_id)
                if move is None:
                    return error(event, f"unknown move '{event.frame.body.move_id}'", INVALID)
                return [Reply(event.peer, event.frame.id, "orch.move_state", {"move": move.public()})]
            if event.frame.type == "orch.abort":
                return self._abort(event, event.frame.body.alias, now)
            return error(event, f"the orchestrator does not handle '{event.frame.type}'")
        if isinstance(event, Response):
            for move in self.active():
                if move.request == event.frame.re:
                    move.request = None
                    if move.held:
                        move.parked = event.frame  # read at the release
                        return []
                    return self._answer(move, event.frame, now)
                if move.ahead is not None and move.ahead.id == event.frame.re:
                    move.ahead = None
                    if move.step == "copy" and event.frame.type == "store.exported":
                        move.page = event.frame.body  # imported when its turn comes
                    return []  # an error: the page is asked again when it is due
        return []

    def tick(self, now: float) -> list:
        actions: list = []
        for move in self.active():
            if move.held:
                continue  # no time runs for a held move
            if move.request and now >= move.deadline:
                move.request = None
                if move.last and (move.tries < REQUEST_TRIES or self._must_finish(move)):
                    to, type_, body = move.last
                    actions.append(log("move.request_again", level="warning", move_id=move.move_id, step=move.step,
                                       to=to, type=type_, attempt=move.tries + 1))
                    actions += self.steps.request(move, to, type_, body, now, again=True)
                else:
                    actions += self._problem(move, f"no answer within {self.timeout_s:g}s in step {move.step} "
                                                   f"({move.tries} tries)", now)
            elif move.timer is not None and now >= move.timer:
                move.timer = None
                actions += self._on_timer(move, now)
        return actions

    @staticmethod
    def _must_finish(move: Move) -> bool:
        """A step whose request is sent until it is answered, however long that takes."""
        return forward(move) or move.rolling_back

    # --- starting -------------------------------------------------------------------------

    def _start_move(self, req: Request, body: messages.OrchMove, now: float) -> list:
        alias, target = body.alias, body.target
        if target not in self.servers:
            return error(req, f"unknown server '{target}' (servers: {', '.join(self.servers)})", INVALID)
        for m in self.active():
            if m.alias == alias:
                if m.rolling_back:
                    waiting = f": waiting for {m.last[0]}" if m.request and m.last else ""
                    return error(req, f"'{alias}' is still being rolled back from {m.move_id} "
                                      f"(step {m.step}{waiting})", INVALID)
                return error(req, f"'{alias}' is already being moved ({m.move_id}, step {m.step})", INVALID)
        if not 0 <= body.copy_delay_ms <= 600_000:
            return error(req, "copy delay must be between 0 and 600000 ms", INVALID)
        move = Move(self.ids.next().replace("orchestrator.", "move."), alias, target, body.workaround,
                    body.copy_delay_ms, legacy=self.legacy, started_at=now, requester=(req.peer, req.frame.id))
        self.moves[move.move_id] = move
        return [log("move.requested", move_id=move.move_id, alias=alias, target=target, workaround=move.workaround),
                *self.steps.request(move, "directory", "dir.lookup", {"alias": alias}, now)]

    # --- failures: the forward path's own, then the rollback's (orchestrator.move_rollback) -----

    def _problem(self, move: Move, reason: str, now: float, code: str | None = None) -> list:
        if move.step == "resolve":
            return self._refuse(move, reason)
        if move.step == "release" and code == NO_MAILBOX:
            return self._after_release(move, now)  # an earlier try of this step got there
        if move.step == "open_target" and code == NOT_LOCKED:
            return [*self.steps.enter(move, "release", now), *self._release(move, now)]  # opened already
        if forward(move):
            # from set_home on the move must finish, not roll back: the directory may already name
            # the target. Retry the step in a second; a legacy copy from its first page (the
            # cursor is past a page whose import failed)
            move.timer = now + 1.0
            if move.step == "copy":
                move.cursor, move.more, move.ahead, move.page, move.copied = "", True, None, None, 0
            return [log("move.retry_step", level="warning", move_id=move.move_id, step=move.step, reason=reason)]
        return self.rollback.failed(move, reason, now)

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
        if forward(move):
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
            actions += self.rollback.run(move, now)
        return [*actions, Reply(req.peer, req.frame.id, "orch.move_state", {"move": move.public()})]

    # --- the copy, page by page (orchestrator.move_paging) ----------------------------------

    def _export(self, move: Move, now: float) -> list:
        return self.steps.request(move, *paging.export_request(move), now)

    def _import(self, move: Move, page: messages.StoreExported, now: float) -> list:
        """Import an exported page on the target and, if there is more, export the next one
        meanwhile: the source store reads while the target store writes."""
        actions = self.steps.request(move, *paging.import_request(move, page), now)
        if move.more:
            move.ahead = Send(*paging.export_request(move), self.ids.next(), move.move_id)
            actions.append(move.ahead)
        return actions

    def _next_page(self, move: Move, now: float) -> list:
        what, value = paging.next_page(move)
        if what == "import":
            return self._import(move, value, now)
        if what == "await":  # asked again as the step's own request if it never comes
            self.steps.waiting(move, value.id, (value.to, value.type, value.body), now)
            return []
        return self._export(move, now)

    def _answer(self, move: Move, frame: Any, now: float) -> list:
        if frame.type == "error":
            return self._problem(move, f"{frame.src}: {frame.body.reason}", now, frame.body.code)
        body = frame.body
        step = move.step
        if step == "resolve":
            return self._resolved(move, body.recipient, now)
        if step == "clear_alternate":
            move.wait_usn = body.usn
            move.wait_until = now + self.replication_wait_s
            return [*self.steps.enter(move, "await_replication", now, usn=move.wait_usn), *self._poll_mtas(move, now)]
        if step == "await_replication":
            return self._replication_answer(move, frame, now)
        if step == "lock" and self.imap:
            return [*self.steps.enter(move, "hold_imap", now), *self.steps.request(
                move, f"imap.{move.source}", "imap.hold", {"user": move.alias, "owner": move.move_id}, now)]
        if step in ("lock", "hold_imap"):
            if move.legacy:
                return [*self.steps.enter(move, "create_target", now), *self.steps.request(
                    move, f"store.{move.target}", "store.create", {"mailbox": move.alias, "owner": move.move_id}, now)]
            return [*self.steps.enter(move, "copy", now), *self._export(move, now)]
        if step == "create_target":
            return self._set_home(move, now)
        if step == "copy":
            if frame.type == "store.exported":
                return self._import(move, body, now)
            # every message of the page is on the target now. The store's count is what this try
            # wrote: after a retry (the first try's answer late or lost) it is what the first did not
            count = move.importing
            move.copied += count
            # the copy rate: each page takes copy_delay per message (at least one), mailbox locked
            move.timer = now + max(1, count) * move.copy_delay_ms / 1000
            return [log("move.copied", move_id=move.move_id, mailbox=move.alias, count=count, written=body.count,
                        total=move.copied)]
        if step == "set_home":
            if move.legacy:
                return [*self.steps.enter(move, "copy", now, usn=body.usn), *self._export(move, now)]
            return [*self.steps.enter(move, "open_target", now, usn=body.usn), *self._open_target(move, now)]
        if step == "mark_target":
            return [*self.steps.enter(move, "open_target", now), *self._open_target(move, now)]
        if step == "open_target":
            return [*self.steps.enter(move, "release", now), *self._release(move, now)]
        if step == "release":
            return self._after_release(move, now)
        if step == "restore_alternate":
            return self._finish(move, now, usn=body.usn)
        if step.startswith("rollback"):
            return self.rollback.run(move, now)
        return []

    def _resolved(self, move: Move, entry: dict[str, Any] | None, now: float) -> list:
        if entry is None:
            return self._refuse(move, f"unknown user '{move.alias}'", why="unknown user", code=INVALID)
        move.source = entry["home_server"]
        if move.source == move.target:
            return self._refuse(move, f"'{move.alias}' is already on {move.target}", why="already there", code=INVALID)
        source_site, target_site = self.sites.get(move.source), self.sites.get(move.target)
        if source_site != target_site:
            return self._refuse(move, f"{move.source} is in site {source_site} and {move.target} in site {target_site}: "
                                      "Exchange 5.5 moves a mailbox within its site only (across sites, export and "
                                      "import it)", why="across sites", code=INVALID)
        peer, re = move.requester or (b"", "")
        actions: list = [Reply(peer, re, "orch.move_started", {"move_id": move.move_id, "source": move.source}),
                         log("move.started", move_id=move.move_id, alias=move.alias, mailbox=move.alias,
                             source=move.source, target=move.target, workaround=move.workaround)]
        if move.workaround and entry["alternate"] is not None:
            move.saved = {"alternate": entry["alternate"], "deliver_to_both": entry["deliver_to_both"]}
            return actions + self.steps.enter(move, "clear_alternate", now, cleared=move.saved) + self.steps.modify(
                move, {"alternate": None, "deliver_to_both": False}, now)
        return actions + self._lock(move, now)

    def _open_target(self, move: Move, now: float) -> list:
        return self.steps.request(move, f"store.{move.target}", "store.unlock", {"mailbox": move.alias, "owner": move.move_id},
                             now)

    def _release(self, move: Move, now: float) -> list:
        return self.steps.request(move, f"store.{move.source}", "store.delete", {"mailbox": move.alias, "owner": move.move_id},
                             now)

    def _lock(self, move: Move, now: float) -> list:
        return self.steps.enter(move, "lock", now) + self.steps.request(
            move, f"store.{move.source}", "store.lock", {"mailbox": move.alias, "owner": move.move_id}, now)

    def _poll_mtas(self, move: Move, now: float) -> list:
        move.pending_mtas = [f"mta.{s}" for s in self.servers]
        return self.steps.request(move, move.pending_mtas[0], "status", {}, now)

    def _replication_answer(self, move: Move, frame: Any, now: float) -> list:
        usn = frame.body.status.get("cache_usn", 0)
        if usn >= move.wait_usn:
            move.pending_mtas.pop(0)
            if not move.pending_mtas:
                return [log("move.replicated", move_id=move.move_id, usn=move.wait_usn), *self._lock(move, now)]
            return self.steps.request(move, move.pending_mtas[0], "status", {}, now)
        if now >= move.wait_until:
            return self._problem(move, f"{frame.src} did not apply USN {move.wait_usn} in {self.replication_wait_s:g}s", now)
        move.timer = now + POLL_S  # not there yet: ask the same MTA again shortly
        return []

    def _on_timer(self, move: Move, now: float) -> list:
        if move.step == "set_home":
            return self.steps.modify(move, {"home_server": move.target}, now)
        if move.step == "open_target":
            return self._open_target(move, now)
        if move.step == "release":
            return self._release(move, now)
        if move.step == "restore_alternate":
            return self.steps.modify(move, dict(move.saved), now)
        if move.step == "await_replication":
            return self.steps.request(move, move.pending_mtas[0], "status", {}, now)
        if move.step == "copy":
            if move.more:
                return self._next_page(move, now)
            if move.legacy:
                return self.steps.enter(move, "mark_target", now, copied=move.copied) + self._mark(move, now)
            return self._set_home(move, now, copied=move.copied)
        if move.step == "mark_target":
            return self._mark(move, now)
        return []

    def _set_home(self, move: Move, now: float, **facts: Any) -> list:
        return self.steps.enter(move, "set_home", now, **facts) + self.steps.modify(move, {"home_server": move.target}, now)

    def _mark(self, move: Move, now: float) -> list:
        """A legacy move marks its target in transit: the lock of its owner."""
        return self.steps.request(move, f"store.{move.target}", "store.lock", {"mailbox": move.alias, "owner": move.move_id},
                             now)

    def _after_release(self, move: Move, now: float) -> list:
        if move.saved is not None:
            return self.steps.enter(move, "restore_alternate", now, restored=move.saved) + self.steps.modify(
                move, dict(move.saved), now)
        return self._finish(move, now)

    def _finish(self, move: Move, now: float, **facts: Any) -> list:
        move.finished_at = now
        return [*self.steps.enter(move, "done", now, copied=move.copied, **facts),
                log("move.done", move_id=move.move_id, alias=move.alias, mailbox=move.alias, source=move.source,
                    target=move.target, copied=move.copied, seconds=round(now - move.started_at, 3))]
