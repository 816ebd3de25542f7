"""Move User as a journaled sequence of steps (the orchestrator's pure core).

    resolve            ask the directory where the user lives
    clear_alternate    (workaround) remove the alternate recipient ...
    await_replication  ... and wait until every MTA's cache holds that change
    lock               source store: deliveries now answer "deferred: mailbox locked"
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
back: both stores are told the move is over (store.end_move: the target deletes the copy it
holds, which no delivery can have reached; the source unlocks, whether or not the lock's grant
was ever seen here; and neither takes that move's lock or import again, however late they
come), then a cleared alternate is restored. From set_home on a move only goes forward. An
orchestrator that restarts reads its journal and does the same for every move it finds
unfinished (`recover`). A request without an answer is sent again (the Lazy Pirate pattern):
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

from dataclasses import dataclass, field
from typing import Any

from nodes.config import MOVE_BUILDS
from nodes.core import Ids, Reply, Request, Response, Send, error, log
from protocol import MOVE_ENDED, MOVE_STATE, NO_MAILBOX, NOT_LOCKED

EXPORT_PAGE = 2000
POLL_S = 0.05
REPLICATION_WAIT_S = 120.0
REQUEST_TRIES = 4
# from set_home on the directory may name the target: the move can only go forward
FORWARD_ONLY = ("set_home", "open_target", "release", "restore_alternate")
LEGACY_FORWARD_ONLY = ("copy", "mark_target")  # a legacy move names the target before it copies
ROLLBACK = ("rollback_target", "rollback_source", "rollback_alternate")
OLD_STEPS = {"rollback_unlock": "rollback_source"}  # journals written before open_target existed


@dataclass(frozen=True)
class JournalStep:
    record: dict[str, Any]


@dataclass
class Move:
    move_id: str
    alias: str
    target: str
    workaround: bool
    copy_delay_ms: int
    legacy: bool = False  # made by a legacy move tool (module docstring)
    source: str = ""
    step: str = "resolve"
    started_at: float = 0.0
    finished_at: float | None = None
    error: str | None = None
    saved: dict[str, Any] | None = None  # the alternate settings the workaround cleared
    wait_usn: int = 0
    wait_until: float = 0.0
    cursor: str = ""
    more: bool = True
    copied: int = 0
    importing: int = 0  # messages in the page being imported
    # read-ahead in the copy step: the export of the next page, asked while this page is imported
    # (the two stores work at once), and the page once it is here. Not journaled: a restart in
    # the copy step rolls back anyway. An export that never answers is asked again as the step's
    # own request when its page is due.
    ahead: Send | None = None
    page: dict[str, Any] | None = None
    rolling_back: bool = False
    undo: list[str] = field(default_factory=list)
    request: str | None = None
    deadline: float = 0.0
    last: tuple[str, str, dict[str, Any]] | None = None  # the request in flight, to send again
    tries: int = 0
    timer: float | None = None
    pending_mtas: list[str] = field(default_factory=list)
    requester: tuple[bytes, str] | None = None
    held: bool = False  # stopped by a hold in its step, until released (MoveCore.release)
    parked: Any = None  # the answer that came while held, read at the release

    def public(self) -> dict[str, Any]:
        """What a status request shows. Not asdict: that deep-copied the request in flight, a
        page of up to 500 messages, on every poll (docs/performance.md)."""
        return {**{k: getattr(self, k) for k in PUBLIC},
                "waiting_for": self.last[0] if self.request and self.last else None,
                "attempts": self.tries if self.request else 0}


# what a status shows of a move: the fields protocol.MOVE_STATE declares, but for the two public() adds
PUBLIC = tuple(k for k in MOVE_STATE if k not in ("waiting_for", "attempts"))


class MoveCore:
    def __init__(self, servers: list[str], boot: str, timeout_ms: int = 3000, journal: list[dict[str, Any]] | None = None,
                 sites: dict[str, str] | None = None, move_build: str = "sp4", suspect: list[str] | tuple = ()):
        if move_build not in MOVE_BUILDS:
            raise ValueError(f"unknown move build '{move_build}' (builds: {', '.join(MOVE_BUILDS)})")
        self.legacy = move_build == "legacy"
        self.servers = list(servers)
        self.sites = sites or {}  # server -> site; Move Mailbox stays within one (5.5)
        self.ids = Ids("orchestrator", boot)
        self.timeout_s = timeout_ms / 1000
        self.moves: dict[str, Move] = {}
        self.journal = journal or []
        self.recovered = 0  # unfinished moves this run found in the journal at start
        # moves a damaged journal line names (orchestrator.journal): left for the operator, since
        # the step that was lost may be past set_home, where a rollback would delete mail
        self.suspect = set(suspect)
        self.holds: list[str] = []  # steps armed to hold the next move that enters them (one each)
        self.ready = True

    # --- the core contract ------------------------------------------------------------------

    def start(self, now: float) -> list:
        return [log("orchestrator.ready", servers=self.servers), *self.recover(self.journal, now)]

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
        undo = {"lock": ["rollback_source"], "copy": ["rollback_target", "rollback_source"],
                "create_target": ["rollback_target", "rollback_source"]}.get(step, [])
        return undo + (["rollback_alternate"] if saved else [])

    def next_wakeup(self) -> float | None:
        times = [t for m in self.active() if not m.held
                 for t in (m.timer, m.deadline if m.request else None) if t is not None]
        return min(times) if times else None

    def active(self) -> list[Move]:
        return [m for m in self.moves.values() if m.step not in MOVE_ENDED]

    def status(self, now: float) -> dict[str, Any]:
        return {"active": [m.public() for m in self.active()],
                "finished": sum(m.step in MOVE_ENDED for m in self.moves.values()),
                "recovered": self.recovered, "holds": list(self.holds)}

    def arm_hold(self, step: str) -> None:
        """Hold the next move that enters `step` there, until `release`."""
        self.holds.append(step)

    def release(self, now: float) -> list:
        """Let every held move go on (reading the answer that came meanwhile), and disarm the holds."""
        self.holds.clear()
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
                move = self.moves.get(event.frame.body["move_id"])
                if move is None:
                    return error(event, f"unknown move '{event.frame.body['move_id']}'")
                return [Reply(event.peer, event.frame.id, "orch.move_state", {"move": move.public()})]
            if event.frame.type == "orch.abort":
                return self._abort(event, event.frame.body["alias"], now)
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
                    actions += self._request(move, to, type_, body, now, again=True)
                else:
                    actions += self._problem(move, f"no answer within {self.timeout_s:g}s in step {move.step} "
                                                   f"({move.tries} tries)", now)
            elif move.timer is not None and now >= move.timer:
                move.timer = None
                actions += self._on_timer(move, now)
        return actions

    @staticmethod
    def _forward(move: Move) -> bool:
        """The directory may name the target already: the move only goes forward."""
        return move.step in FORWARD_ONLY or (move.legacy and move.step in LEGACY_FORWARD_ONLY)

    def _must_finish(self, move: Move) -> bool:
        """A step whose request is sent until it is answered, however long that takes."""
        return self._forward(move) or move.rolling_back

    # --- starting -------------------------------------------------------------------------

    def _start_move(self, req: Request, body: dict[str, Any], now: float) -> list:
        alias, target = body["alias"], body["target"]
        if target not in self.servers:
            return error(req, f"unknown server '{target}' (servers: {', '.join(self.servers)})")
        for m in self.active():
            if m.alias == alias:
                if m.rolling_back:
                    waiting = f": waiting for {m.last[0]}" if m.request and m.last else ""
                    return error(req, f"'{alias}' is still being rolled back from {m.move_id} "
                                      f"(step {m.step}{waiting})")
                return error(req, f"'{alias}' is already being moved ({m.move_id}, step {m.step})")
        if not 0 <= body["copy_delay_ms"] <= 600_000:
            return error(req, "copy delay must be between 0 and 600000 ms")
        move = Move(self.ids.next().replace("orchestrator.", "move."), alias, target, body["workaround"],
                    body["copy_delay_ms"], legacy=self.legacy, started_at=now, requester=(req.peer, req.frame.id))
        self.moves[move.move_id] = move
        return [log("move.requested", move_id=move.move_id, alias=alias, target=target, workaround=move.workaround),
                *self._request(move, "directory", "dir.lookup", {"alias": alias}, now)]

    # --- steps ----------------------------------------------------------------------------

    def _enter(self, move: Move, step: str, now: float, **facts: Any) -> list:
        move.step = step
        held = []
        if step in self.holds and not move.held:
            self.holds.remove(step)
            move.held = True
            held = [log("move.held", level="warning", move_id=move.move_id, step=step, alias=move.alias,
                        mailbox=move.alias, why="a hold armed for this step (xcon fault release lets it go on)")]
        record = {"move_id": move.move_id, "step": step, "at": now, "alias": move.alias, "source": move.source,
                  "target": move.target, "saved": move.saved, "workaround": move.workaround,
                  "copy_delay_ms": move.copy_delay_ms, "started_at": move.started_at, "legacy": move.legacy,
                  **({"error": move.error} if move.error else {}), **facts}
        return [JournalStep(record), log("move.step", move_id=move.move_id, step=step, alias=move.alias,
                                         mailbox=move.alias, source=move.source, target=move.target, **facts),
                *held]

    def _request(self, move: Move, to: str, type_: str, body: dict[str, Any], now: float, again: bool = False) -> list:
        request = self.ids.next()
        self._waiting(move, request, (to, type_, body), now, again)
        return [Send(to, type_, body, request, move.move_id)]

    def _waiting(self, move: Move, request: str, sent: tuple[str, str, dict[str, Any]], now: float,
                 again: bool = False) -> None:
        """The step waits for the answer to `request` (`sent`: to, type, body), sent again on a timeout."""
        move.request, move.deadline, move.last = request, now + self.timeout_s, sent
        move.tries = move.tries + 1 if again else 1

    def _answer(self, move: Move, frame: Any, now: float) -> list:
        if frame.type == "error":
            return self._problem(move, f"{frame.src}: {frame.body['reason']}", now, frame.body.get("code"))
        body = frame.body
        step = move.step
        if step == "resolve":
            return self._resolved(move, body["recipient"], now)
        if step == "clear_alternate":
            move.wait_usn = body["usn"]
            move.wait_until = now + REPLICATION_WAIT_S
            return [*self._enter(move, "await_replication", now, usn=move.wait_usn), *self._poll_mtas(move, now)]
        if step == "await_replication":
            return self._replication_answer(move, frame, now)
        if step == "lock":
            if move.legacy:
                return [*self._enter(move, "create_target", now), *self._request(
                    move, f"store.{move.target}", "store.create", {"mailbox": move.alias, "owner": move.move_id}, now)]
            return [*self._enter(move, "copy", now), *self._export(move, now)]
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
            return [log("move.copied", move_id=move.move_id, mailbox=move.alias, count=count, written=body["count"],
                        total=move.copied)]
        if step == "set_home":
            if move.legacy:
                return [*self._enter(move, "copy", now, usn=body["usn"]), *self._export(move, now)]
            return [*self._enter(move, "open_target", now, usn=body["usn"]), *self._open_target(move, now)]
        if step == "mark_target":
            return [*self._enter(move, "open_target", now), *self._open_target(move, now)]
        if step == "open_target":
            return [*self._enter(move, "release", now), *self._release(move, now)]
        if step == "release":
            return self._after_release(move, now)
        if step == "restore_alternate":
            return self._finish(move, now, usn=body["usn"])
        if step.startswith("rollback"):
            return self._rollback(move, now)
        return []

    def _resolved(self, move: Move, entry: dict[str, Any] | None, now: float) -> list:
        if entry is None:
            return self._refuse(move, f"unknown user '{move.alias}'", why="unknown user")
        move.source = entry["home_server"]
        if move.source == move.target:
            return self._refuse(move, f"'{move.alias}' is already on {move.target}", why="already there")
        source_site, target_site = self.sites.get(move.source), self.sites.get(move.target)
        if source_site != target_site:
            return self._refuse(move, f"{move.source} is in site {source_site} and {move.target} in site {target_site}: "
                                      "Exchange 5.5 moves a mailbox within its site only (across sites, export and "
                                      "import it)", why="across sites")
        peer, re = move.requester or (b"", "")
        actions: list = [Reply(peer, re, "orch.move_started", {"move_id": move.move_id, "source": move.source}),
                         log("move.started", move_id=move.move_id, alias=move.alias, mailbox=move.alias,
                             source=move.source, target=move.target, workaround=move.workaround)]
        if move.workaround and entry["alternate"] is not None:
            move.saved = {"alternate": entry["alternate"], "deliver_to_both": entry["deliver_to_both"]}
            return actions + self._enter(move, "clear_alternate", now, cleared=move.saved) + self._modify(
                move, {"alternate": None, "deliver_to_both": False}, now)
        return actions + self._lock(move, now)

    def _modify(self, move: Move, changes: dict[str, Any], now: float) -> list:
        """A directory change named by the move and its step: sent again, it is applied once."""
        return self._request(move, "directory", "dir.modify",
                             {"alias": move.alias, "changes": changes, "op": f"{move.move_id}.{move.step}"}, now)

    def _open_target(self, move: Move, now: float) -> list:
        return self._request(move, f"store.{move.target}", "store.unlock", {"mailbox": move.alias, "owner": move.move_id},
                             now)

    def _release(self, move: Move, now: float) -> list:
        return self._request(move, f"store.{move.source}", "store.delete", {"mailbox": move.alias, "owner": move.move_id},
                             now)

    def _lock(self, move: Move, now: float) -> list:
        return self._enter(move, "lock", now) + self._request(
            move, f"store.{move.source}", "store.lock", {"mailbox": move.alias, "owner": move.move_id}, now)

    def _poll_mtas(self, move: Move, now: float) -> list:
        move.pending_mtas = [f"mta.{s}" for s in self.servers]
        return self._request(move, move.pending_mtas[0], "status", {}, now)

    def _replication_answer(self, move: Move, frame: Any, now: float) -> list:
        usn = frame.body["status"].get("cache_usn", 0)
        if usn >= move.wait_usn:
            move.pending_mtas.pop(0)
            if not move.pending_mtas:
                return [log("move.replicated", move_id=move.move_id, usn=move.wait_usn), *self._lock(move, now)]
            return self._request(move, move.pending_mtas[0], "status", {}, now)
        if now >= move.wait_until:
            return self._problem(move, f"{frame.src} did not apply USN {move.wait_usn} in {REPLICATION_WAIT_S:g}s", now)
        move.timer = now + POLL_S  # not there yet: ask the same MTA again shortly
        return []

    def _on_timer(self, move: Move, now: float) -> list:
        if move.step == "set_home":
            return self._modify(move, {"home_server": move.target}, now)
        if move.step == "open_target":
            return self._open_target(move, now)
        if move.step == "release":
            return self._release(move, now)
        if move.step == "restore_alternate":
            return self._modify(move, dict(move.saved), now)
        if move.step == "await_replication":
            return self._request(move, move.pending_mtas[0], "status", {}, now)
        if move.step == "copy":
            if move.more:
                return self._next_page(move, now)
            if move.legacy:
                return self._enter(move, "mark_target", now, copied=move.copied) + self._mark(move, now)
            return self._set_home(move, now, copied=move.copied)
        if move.step == "mark_target":
            return self._mark(move, now)
        return []

    def _set_home(self, move: Move, now: float, **facts: Any) -> list:
        return self._enter(move, "set_home", now, **facts) + self._modify(move, {"home_server": move.target}, now)

    def _mark(self, move: Move, now: float) -> list:
        """A legacy move marks its target in transit: the lock of its owner."""
        return self._request(move, f"store.{move.target}", "store.lock", {"mailbox": move.alias, "owner": move.move_id},
                             now)

    def _export(self, move: Move, now: float) -> list:
        return self._request(move, f"store.{move.source}", "store.export", self._export_body(move), now)

    def _export_body(self, move: Move) -> dict[str, Any]:
        return {"mailbox": move.alias, "after": move.cursor, "limit": EXPORT_PAGE}

    def _import(self, move: Move, page: dict[str, Any], now: float) -> list:
        """Import an exported page on the target and, if there is more, export the next one
        meanwhile: the source store reads while the target store writes."""
        move.cursor = page["messages"][-1]["name"] if page["messages"] else move.cursor
        move.more = page["next"] is not None
        move.importing = len(page["messages"])
        actions = self._request(move, f"store.{move.target}", "store.import",
                                {"mailbox": move.alias, "owner": move.move_id, "messages": page["messages"]}, now)
        if move.more:
            move.ahead = Send(f"store.{move.source}", "store.export", self._export_body(move), self.ids.next(),
                              move.move_id)
            actions.append(move.ahead)
        return actions

    def _next_page(self, move: Move, now: float) -> list:
        """The next page is due: import it if the read-ahead brought it, else wait for the
        read-ahead's answer as the step's own request (asked again if it never comes)."""
        if move.page is not None:
            page, move.page = move.page, None
            return self._import(move, page, now)
        if move.ahead is not None:  # asked already: its answer is now the one the step waits for
            ahead, move.ahead = move.ahead, None
            self._waiting(move, ahead.id, (ahead.to, ahead.type, ahead.body), now)
            return []
        return self._export(move, now)

    def _after_release(self, move: Move, now: float) -> list:
        if move.saved is not None:
            return self._enter(move, "restore_alternate", now, restored=move.saved) + self._modify(
                move, dict(move.saved), now)
        return self._finish(move, now)

    def _finish(self, move: Move, now: float, **facts: Any) -> list:
        move.finished_at = now
        return [*self._enter(move, "done", now, copied=move.copied, **facts),
                log("move.done", move_id=move.move_id, alias=move.alias, mailbox=move.alias, source=move.source,
                    target=move.target, copied=move.copied, seconds=round(now - move.started_at, 3))]

    # --- failures -------------------------------------------------------------------------

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

    def _refuse(self, move: Move, reason: str, why: str | None = None) -> list:
        """A move that never got past resolving: nothing to undo, its requester hears `reason`
        (the log line says `why`, when shorter)."""
        peer, re = move.requester or (b"", "")
        del self.moves[move.move_id]
        return [Reply(peer, re, "error", {"reason": reason, "code": None}),
                log("move.refused", move_id=move.move_id, alias=move.alias, reason=why or reason)]

    def _abort(self, req: Request, alias: str, now: float) -> list:
        """The operator's abort: roll back the running move of `alias`, if it is before set_home."""
        move = next((m for m in self.active() if m.alias == alias), None)
        if move is None:
            return error(req, f"no move of '{alias}' is running")
        if self._forward(move):
            return error(req, f"{move.move_id} is past set_home (the directory names {move.target}): "
                              "it finishes, it cannot be rolled back")
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
