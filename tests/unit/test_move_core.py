"""Move User as journaled steps, driven by hand."""

from __future__ import annotations

import msgspec

from nodes.core import Request
from orchestrator.core import OrchestratorCore
from orchestrator.faults import CrashSelf, FaultCore, RestartNode, SignalNode
from orchestrator.journal import Record
from orchestrator.move import MoveCore
from orchestrator.move_state import JournalStep

from .helpers import events, recipient, replies, request, response, sends


NODES = ["directory", "store.ex1", "store.ex2", "mta.ex1", "mta.ex2", "orchestrator"]


def journaled(actions: list) -> list[Record]:
    """The journal records among a core's actions, in order."""
    return [a.record for a in actions if isinstance(a, JournalStep)]


def run(core: MoveCore, first: list, answers: dict, now: float = 1.0, step: float = 0.0) -> tuple[list[Record], list]:
    """Answer each request the core sends with answers[type](send), each `step` seconds after the
    last, until it stops asking; fire timers as they come. Returns the journal records and the
    log lines, in order."""
    records: list[Record] = []
    lines: list = []
    actions = first
    for _ in range(200):
        records += journaled(actions)
        lines += events(actions)
        out = sends(actions)
        if out:
            now += step
            actions = core.on_event(response(out[0], *answers[out[0].type](out[0])), now)
        elif core.next_wakeup() is not None:
            now = core.next_wakeup()
            actions = core.tick(now)
        else:
            return records, lines
    raise AssertionError("the move never ended")


def drive(core: MoveCore, first: list, answers: dict, now: float = 1.0) -> list[str]:
    """The steps `run` journals, every answer at `now`."""
    return [r.step for r in run(core, first, answers, now)[0]]


def to_first(core: MoveCore, actions: list, table: dict, type_: str, now: float = 1.0) -> tuple:
    """Answer the core's requests from `table` until it sends one of `type_`: (that Send, the actions)."""
    while not sends(actions, type_):
        out = sends(actions)
        actions = core.on_event(response(out[0], *table[out[0].type](out[0])), now) if out else core.tick(
            core.next_wakeup())
    return sends(actions, type_)[0], actions


def answers(alternate="carol", fail_import=False):
    return {
        "dir.lookup": lambda s: ("dir.entry", {"recipient": recipient("bob", "ex1", 3, alternate, bool(alternate)), "usn": 3}),
        "dir.modify": lambda s: ("dir.changed", {"usn": 4, "recipient": recipient("bob", "ex2", 4)}),
        "status": lambda s: ("status_reply", {"node": s.to, "status": {"cache_usn": 4}}),
        "store.lock": lambda s: ("ok", {}),
        "store.unlock": lambda s: ("ok", {}),
        "store.export": lambda s: ("store.exported", {"mailbox": "bob", "next": None, "messages": [
            {"name": "1.m1.xcon", "msg_id": "m1", "raw": b"r"}]}),
        "store.import": (lambda s: ("error", {"reason": "disk full", "code": None})) if fail_import
        else (lambda s: ("store.imported", {"mailbox": "bob", "count": 1})),
        "store.delete": lambda s: ("ok", {}),
        "store.end_move": lambda s: ("store.move_ended", {"mailbox": "bob", "owner": s.body.owner,
                                                          "unlocked": s.to == "store.ex1", "deleted": 0}),
    }


def move_request(alias: str = "bob", copy_delay_ms: int = 100, workaround: bool = False) -> Request:
    return request("orch.move", {"alias": alias, "target": "ex2", "workaround": workaround,
                                 "copy_delay_ms": copy_delay_ms})


def start(core, workaround, alias: str = "bob", copy_delay_ms: int = 100):
    return core.on_event(move_request(alias, copy_delay_ms, workaround), 1.0)


def test_a_move_runs_its_steps_in_order():
    core = MoveCore(["ex1", "ex2"], "b")
    assert drive(core, start(core, False), answers()) == ["lock", "copy", "set_home", "open_target", "release", "done"]


def test_the_workaround_clears_waits_and_restores():
    core = MoveCore(["ex1", "ex2"], "b")
    steps = drive(core, start(core, True), answers())
    assert steps == ["clear_alternate", "await_replication", "lock", "copy", "set_home", "open_target", "release",
                     "restore_alternate", "done"]


def test_a_failed_copy_rolls_back_and_unlocks():
    core = MoveCore(["ex1", "ex2"], "b")
    steps = drive(core, start(core, True), answers(fail_import=True))
    assert steps[-4:] == ["rollback_target", "rollback_source", "rollback_alternate", "failed"]
    (move,) = core.moves.values()
    assert "disk full" in move.error


def test_each_step_is_journaled_before_its_request():
    core = MoveCore(["ex1", "ex2"], "b")
    actions = start(core, False)
    actions = core.on_event(response(sends(actions)[0], *answers()["dir.lookup"](None)), 1.0)
    journal = next(i for i, a in enumerate(actions) if isinstance(a, JournalStep))
    assert journal < actions.index(sends(actions, "store.lock")[0])


def test_bad_moves_are_refused():
    core = MoveCore(["ex1", "ex2"], "b")
    bad = core.on_event(request("orch.move", {"alias": "bob", "target": "ex9", "workaround": False,
                                              "copy_delay_ms": 0}), 1.0)
    assert replies(bad)[0].type == "error" and "ex9" in replies(bad)[0].body.reason
    started = start(core, False)
    again = start(core, False)
    assert "already being moved" in replies(again)[0].body.reason
    unknown = core.on_event(response(sends(started)[0], "dir.entry", {"recipient": None, "usn": 1}), 1.0)
    assert replies(unknown)[0].body.reason == "unknown user 'bob'" and not core.moves


def journal_at(step, saved=None):
    """The journal a move killed in `step` leaves, as the orchestrator reads it back."""
    return [msgspec.convert({"move_id": "move.x.1", "step": s, "alias": "bob", "source": "ex1", "target": "ex2",
                             "saved": saved, "workaround": saved is not None, "copy_delay_ms": 0, "started_at": 0.5},
                            Record)
            for s in ("lock", "copy", "set_home", "release")[: ("lock", "copy", "set_home", "release").index(step) + 1]]


def test_a_restarted_orchestrator_rolls_back_a_move_killed_before_set_home():
    core = MoveCore(["ex1", "ex2"], "b", journal=journal_at("copy", saved={"alternate": "carol", "deliver_to_both": True}))
    steps = drive(core, core.start(1.0), answers())
    assert steps == ["rollback_target", "rollback_source", "rollback_alternate", "failed"]
    assert "restarted during step copy" in core.moves["move.x.1"].error


def test_a_restarted_orchestrator_finishes_a_move_killed_after_set_home():
    core = MoveCore(["ex1", "ex2"], "b", journal=journal_at("release"))
    first = core.start(1.0)
    assert not sends(first)  # the step's request goes out on the next tick
    steps = drive(core, first, answers())
    assert steps == ["done"] and core.moves["move.x.1"].step == "done"


def lock_times_out():
    """A move whose source store never answers its lock: the core, and the end_move it sends."""
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=1000)
    lookup = sends(start(core, False))[0]
    locked = core.on_event(response(lookup, *answers()["dir.lookup"](lookup)), 1.0)
    assert sends(locked, "store.lock")
    resent = [sends(core.tick(1.0 + 1.01 * i), "store.lock") for i in range(1, 4)]
    assert all(len(r) == 1 for r in resent), "sent again three times"
    failed = core.tick(1.0 + 1.01 * 4 + 0.01)
    # no grant was seen, but one may come yet (a lock queued at a store that is down): the
    # source store is told the move is over, and its lock, if it ever arrives, is refused
    assert [r.step for r in journaled(failed)] == ["rollback_source"]
    (end,) = sends(failed, "store.end_move")
    assert (end.to, end.body.owner) == ("store.ex1", end.trace)
    return core, end


def test_a_request_without_answer_is_sent_again_before_the_step_fails():
    lock_times_out()


def test_an_undo_is_sent_until_it_is_answered_then_the_move_fails():
    core, end = lock_times_out()
    now = 6.1
    for _ in range(10):  # the store stays down far longer than a forward step's tries
        now = core.next_wakeup()
        (end,) = sends(core.tick(now), "store.end_move")
    (move,) = core.moves.values()
    assert move.step == "rollback_source" and move.public()["waiting_for"] == "store.ex1"
    assert "still being rolled back" in replies(start(core, False))[0].body.reason
    done = core.on_event(response(end, *answers()["store.end_move"](end)), now)
    assert [r.step for r in journaled(done)] == ["failed"]
    assert "no answer" in move.error


def test_the_operator_aborts_a_move_before_set_home_but_not_after():
    core = MoveCore(["ex1", "ex2"], "b")
    lookup = sends(start(core, False))[0]
    lock = sends(core.on_event(response(lookup, *answers()["dir.lookup"](lookup)), 1.0), "store.lock")[0]
    export = sends(core.on_event(response(lock, "ok", {}), 1.0), "store.export")[0]
    aborted = core.on_event(request("orch.abort", {"alias": "bob"}), 1.1)
    assert replies(aborted)[0].body.move["rolling_back"] and events(aborted, "move.aborted")
    assert [s.to for s in sends(aborted, "store.end_move")] == ["store.ex2"]  # the target first
    assert core.on_event(response(export, *answers()["store.export"](export)), 1.2) == [], "its answer is not awaited"
    assert drive(core, aborted, answers())[-2:] == ["rollback_source", "failed"]
    assert "aborted by the operator" in next(iter(core.moves.values())).error
    late = core.on_event(request("orch.abort", {"alias": "bob"}), 2.0)
    assert "no move of 'bob'" in replies(late)[0].body.reason
    # past set_home the directory may name the target: the move finishes
    core = MoveCore(["ex1", "ex2"], "b", journal=journal_at("set_home"))
    core.start(1.0)
    refused = core.on_event(request("orch.abort", {"alias": "bob"}), 1.0)
    assert "past set_home" in replies(refused)[0].body.reason


def test_a_restarted_orchestrator_redoes_a_directory_change_under_the_same_op():
    core = MoveCore(["ex1", "ex2"], "b", journal=journal_at("set_home"))
    core.start(1.0)
    first = sends(core.tick(1.0), "dir.modify")[0]
    assert first.body.op == "move.x.1.set_home"
    again = sends(core.tick(1.0 + 3.01), "dir.modify")[0]  # no answer: sent again, the same change
    assert again.body == first.body and again.id != first.id


def test_old_journals_roll_back_under_the_new_names():
    records = journal_at("copy") + [msgspec.structs.replace(journal_at("copy")[-1], step="rollback_unlock")]
    core = MoveCore(["ex1", "ex2"], "b", journal=records)
    assert drive(core, core.start(1.0), answers()) == ["rollback_source", "failed"]


# --- the copy step's read-ahead -----------------------------------------------------------------

def paged_mailbox(pages: int, per_page: int = 2) -> tuple[dict, list]:
    """answers() for a source mailbox of `pages` pages, and the list the target's imports fill."""
    names = [f"{i + 1}.m{i}.xcon" for i in range(pages * per_page)]
    imported: list[str] = []

    def export(s):
        rest = [n for n in names if n > s.body.after][:per_page]
        more = rest[-1] if rest and rest[-1] != names[-1] else None
        return "store.exported", {"mailbox": "bob", "next": more, "messages": [
            {"name": n, "msg_id": n.split(".")[1], "raw": b"r"} for n in rest]}

    def import_(s):
        imported.extend(m.name for m in s.body.messages)
        return "store.imported", {"mailbox": "bob", "count": len(s.body.messages)}

    return {**answers(alternate=None), "store.export": export, "store.import": import_}, imported


def to_copy_step(core, table):
    """Drive a move to its first export; returns that export's Send."""
    return to_first(core, start(core, False, copy_delay_ms=0), table, "store.export")[0]


def first_import(pages: int, timeout_ms: int = 3000):
    """A move of a `pages`-page mailbox at its first import: the core, the answers, what the target
    imported, and the two requests that left together: that import and the next page's export."""
    table, imported = paged_mailbox(pages)
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=timeout_ms)
    export = to_copy_step(core, table)
    actions = core.on_event(response(export, *table["store.export"](export)), 1.0)
    (imp,), (ahead,) = sends(actions, "store.import"), sends(actions, "store.export")
    return core, table, imported, imp, ahead


def test_the_next_page_is_exported_while_this_one_is_imported():
    core, table, imported, imp, ahead = first_import(3)
    assert ahead.to == "store.ex1" and ahead.body.after == imp.body.messages[-1].name
    assert ahead.trace == imp.trace == "move.b.1" and ahead.id != imp.id, "the move's trace, an id of its own"
    core.on_event(response(ahead, *table["store.export"](ahead)), 1.0)  # the next page arrives first
    done = core.on_event(response(imp, *table["store.import"](imp)), 1.0)
    assert not sends(done), "the next import waits for the copy-rate timer"
    nxt = core.tick(core.next_wakeup())
    assert [s.type for s in sends(nxt)] == ["store.import", "store.export"]  # page 2, read-ahead of page 3
    assert drive(core, nxt, table)[-4:] == ["set_home", "open_target", "release", "done"]
    assert imported == [f"{i + 1}.m{i}.xcon" for i in range(6)], "every page once, in order"


def test_a_read_ahead_that_never_answers_is_asked_again_when_its_page_is_due():
    core, table, imported, imp, lost = first_import(2, timeout_ms=1000)
    core.on_event(response(imp, *table["store.import"](imp)), 1.0)
    assert not sends(core.tick(core.next_wakeup())), "it waits for the read-ahead's answer first"
    again = core.tick(core.next_wakeup())  # that answer's deadline
    (retry,) = sends(again, "store.export")
    assert retry.body == lost.body and retry.id != lost.id
    assert drive(core, again, table)[-1] == "done"
    assert imported == ["1.m0.xcon", "2.m1.xcon", "3.m2.xcon", "4.m3.xcon"]


def test_a_read_ahead_refused_by_the_source_is_asked_again():
    core, table, imported, imp, ahead = first_import(2)
    assert core.on_event(response(ahead, "error", {"reason": "busy", "code": None}), 1.0) == []
    core.on_event(response(imp, *table["store.import"](imp)), 1.0)
    (retry,) = sends(core.tick(core.next_wakeup()), "store.export")
    assert retry.body == ahead.body


def test_a_failed_import_drops_the_read_ahead_page():
    core, table, imported, imp, ahead = first_import(3)
    rollback = core.on_event(response(imp, "error", {"reason": "disk full", "code": None}), 1.0)
    assert [(s.type, s.to) for s in sends(rollback)] == [("store.end_move", "store.ex2")]  # rollback_target
    assert core.on_event(response(ahead, *table["store.export"](ahead)), 1.0) == []
    steps = drive(core, rollback, table)
    assert steps[-2:] == ["rollback_source", "failed"] and imported == []


def test_a_read_ahead_that_answers_after_its_page_is_due_is_imported_then():
    core, table, imported, imp, ahead = first_import(2)
    core.on_event(response(imp, *table["store.import"](imp)), 1.0)
    assert not sends(core.tick(core.next_wakeup()))  # due, not here yet
    late = core.on_event(response(ahead, *table["store.export"](ahead)), 1.0)
    assert [s.body.messages[0].name for s in sends(late, "store.import")] == ["3.m2.xcon"]
    assert drive(core, late, table)[-1] == "done" and len(imported) == 4


def test_copied_counts_a_page_once_when_its_import_is_answered_by_a_retry():
    table, imported = paged_mailbox(1, per_page=3)
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=1000)
    export = to_copy_step(core, table)
    (first,) = sends(core.on_event(response(export, *table["store.export"](export)), 1.0), "store.import")
    table["store.import"](first)  # the store writes the page, but its answer is lost
    (retry,) = sends(core.tick(core.next_wakeup()), "store.import")
    answered = core.on_event(response(retry, "store.imported", {"mailbox": "bob", "count": 0}), 2.5)
    assert events(answered, "move.copied")[0].fields["written"] == 0
    assert core.moves[export.trace].copied == 3


# --- crash points: a kill armed for a move step --------------------------------------------------

def test_a_kill_armed_for_a_step_follows_that_steps_journal_record():
    core = OrchestratorCore(MoveCore(["ex1", "ex2"], "b"), FaultCore(NODES, "b"))
    arm = lambda node, step: core.on_event(request("orch.fault", {"kind": "kill_at_step", "node": node, "peer": None,  # noqa: E731
                                                                  "params": {"step": step, "restart_after": 0.5}}), 1.0)
    assert replies(arm("store.ex2", "open_target"))[0].type == "ok"
    assert replies(arm("orchestrator", "release"))[0].type == "ok"
    assert "step must be one of" in replies(arm("mta.ex1", "teleport"))[0].body.reason
    assert [a["step"] for a in core.status(1.0)["armed"]] == ["open_target", "release"]
    actions, now = start(core, False), 1.0
    crashed = []
    for _ in range(100):
        if any(isinstance(a, CrashSelf) for a in actions):
            crashed = actions
            break
        kills = [a for a in actions if isinstance(a, SignalNode)]
        if kills:
            journal = [r.step for r in journaled(actions)]
            assert journal == ["open_target"] and kills[0].node == "store.ex2"
            assert actions.index(kills[0]) > actions.index(sends(actions, "store.unlock")[0]), "after the step's request"
        out = sends(actions)
        if out:
            actions = core.on_event(response(out[0], *answers()[out[0].type](out[0])), now)
        else:
            now = core.next_wakeup()
            actions = core.tick(now)
            if any(isinstance(a, RestartNode) for a in actions):
                assert [a.node for a in actions if isinstance(a, RestartNode)] == ["store.ex2"] and now >= 1.5
    assert [r.step for r in journaled(crashed)] == ["release"]
    assert isinstance(crashed[-1], CrashSelf), "the orchestrator dies last, its step journaled"
    assert core.status(now)["armed"] == []


def test_a_moves_public_state_is_the_shape_protocol_declares():
    from protocol import MOVE_STATE

    core = MoveCore(["ex1", "ex2"], "b")
    core.on_event(request("orch.move", {"alias": "bob", "target": "ex2", "workaround": False, "copy_delay_ms": 0}), 1.0)
    (state,) = core.status(1.0)["active"]
    assert set(state) == set(MOVE_STATE)


def test_a_move_across_sites_is_refused_as_in_exchange_55():
    core = MoveCore(["ex1", "ex2", "ex3"], "b", sites={"ex1": "HQ", "ex2": "HQ", "ex3": "BRANCH"})
    actions = core.on_event(request("orch.move", {"alias": "bob", "target": "ex3", "workaround": False,
                                                  "copy_delay_ms": 0}), 1.0)
    lookup = sends(actions, "dir.lookup")[0]
    refused = core.on_event(response(lookup, "dir.entry", {"recipient": recipient("bob", "ex1", 1), "usn": 1}), 1.1)
    (answer,) = replies(refused)
    assert answer.type == "error" and "site HQ" in answer.body.reason and "site BRANCH" in answer.body.reason
    assert core.active() == []
    within = MoveCore(["ex1", "ex2", "ex3"], "b", sites={"ex1": "HQ", "ex2": "HQ", "ex3": "BRANCH"})
    assert drive(within, start(within, False), answers()) == ["lock", "copy", "set_home", "open_target", "release",
                                                               "done"]


def test_a_legacy_move_makes_the_target_live_names_it_copies_then_marks_it():
    """Exchange 5.5 before SP4 (KB Q277911): the order that leaves a window between the target's
    creation and its mark; from set_home on it only goes forward, a failed copy starts again."""
    core = MoveCore(["ex1", "ex2"], "b", move_build="legacy")
    table = {**answers(), "store.create": lambda s: ("ok", {})}
    assert drive(core, start(core, False), table) == [
        "lock", "create_target", "set_home", "copy", "mark_target", "open_target", "release", "done"]
    failing = MoveCore(["ex1", "ex2"], "b", move_build="legacy")
    tries = []

    def import_once_refused(s):
        tries.append(s.body.messages[0].name)
        return ("error", {"reason": "disk full", "code": None}) if len(tries) == 1 else ("store.imported", {
            "mailbox": "bob", "count": 1})

    steps = drive(failing, start(failing, False), {**table, "store.import": import_once_refused})
    assert steps[-4:] == ["mark_target", "open_target", "release", "done"] and "rollback_target" not in steps
    assert tries == ["1.m1.xcon", "1.m1.xcon"]


def test_a_legacy_move_that_fails_creating_its_target_rolls_back():
    core = MoveCore(["ex1", "ex2"], "b", move_build="legacy")
    table = {**answers(), "store.create": lambda s: ("error", {"reason": "exists", "code": None})}
    assert drive(core, start(core, False), table) == ["lock", "create_target", "rollback_target", "rollback_source",
                                                      "failed"]


def test_a_restarted_orchestrator_takes_up_a_legacy_move_by_its_own_order():
    """Journaled as legacy: killed while creating the target it rolls back (nobody's home is
    there yet); killed in the copy, which follows set_home, it goes forward from the first page."""
    legacy = [Record("move.x.1", s, "bob", "ex1", "ex2", started_at=0.5, legacy=True)
              for s in ("lock", "create_target", "set_home", "copy")]
    table = {**answers(), "store.create": lambda s: ("ok", {})}
    core = MoveCore(["ex1", "ex2"], "b", journal=legacy[:2])  # this run's build does not matter: the journal's does
    assert drive(core, core.start(1.0), table) == ["rollback_target", "rollback_source", "failed"]
    core = MoveCore(["ex1", "ex2"], "b", journal=legacy)
    assert drive(core, core.start(1.0), table) == ["mark_target", "open_target", "release", "done"]


def test_a_hold_stops_the_next_move_in_its_step_with_no_clock_running_until_released():
    """Issue 23: a test opened a 1.5 s copy window and then started `xcon send`, which a loaded
    machine took 1.7 s to start. A hold opens the window with no clock involved."""
    core = OrchestratorCore(MoveCore(["ex1", "ex2"], "b"), FaultCore(NODES, "b"))
    fault = lambda kind, **params: core.on_event(  # noqa: E731
        request("orch.fault", {"kind": kind, "node": "", "peer": None, "params": params}), 1.0)
    assert replies(fault("hold_at_step", step="copy"))[0].type == "ok"
    assert replies(fault("hold_at_step", step="nowhere"))[0].type == "error"
    held_steps, actions, now = [], start(core, False), 1.0
    while sends(actions) and not events(actions, "move.held"):
        held_steps += [r.step for r in journaled(actions)]
        send = sends(actions)[0]
        actions = core.on_event(response(send, *answers()[send.type](send)), now)
    assert events(actions, "move.held") and core.status(now)["active"][0]["held"]
    export = sends(actions)[0]  # the step's request is on its way; its answer waits for the release
    assert core.on_event(response(export, *answers()[export.type](export)), 2.0) == []
    assert core.next_wakeup() is None and core.tick(1000.0) == [], "no time runs while it is held"
    released = fault("release")
    assert events(released, "move.released") and sends(released, "store.import"), "the parked answer is read"
    steps = drive(core.moves, released, answers(), now=1000.0)
    assert steps[-1] == "done" and not core.status(1000.0)["active"]


def test_a_clear_releases_a_held_move_and_an_abort_rolls_one_back():
    core = OrchestratorCore(MoveCore(["ex1", "ex2"], "b"), FaultCore(NODES, "b"))

    def held_in_lock() -> list:
        core.on_event(request("orch.fault", {"kind": "hold_at_step", "node": "", "peer": None,
                                             "params": {"step": "lock"}}), 1.0)
        lookup = sends(start(core, False))[0]
        actions = core.on_event(response(lookup, *answers()[lookup.type](lookup)), 1.0)
        assert events(actions, "move.held")
        return actions

    lock = sends(held_in_lock(), "store.lock")[0]
    core.on_event(response(lock, "ok", {}), 1.0)
    cleared = core.on_event(request("orch.fault", {"kind": "clear", "node": "", "peer": None, "params": {}}), 1.1)
    assert events(cleared, "move.released") and drive(core.moves, cleared, answers(), now=1.2)[-1] == "done"
    held_in_lock()
    aborted = core.on_event(request("orch.abort", {"alias": "bob"}), 1.3)
    assert events(aborted, "move.aborted") and not core.status(1.3)["active"][0]["held"]
    assert "failed" in drive(core.moves, aborted, answers(), now=1.4)


def test_the_journal_reads_its_records_by_their_type_and_a_line_of_the_form_before():
    """A journal line written before `started_at` and `legacy` existed reads with their defaults;
    a line whose alias is not one is damage; a step's facts are written only where it has them."""
    from nodes.records import encode_line
    from orchestrator.journal import line, scan

    old = encode_line({"move_id": "move.x.1", "step": "copy", "alias": "bob", "source": "ex1", "target": "ex2",
                       "saved": None})
    bad = encode_line({"move_id": "move.x.2", "step": "lock", "alias": "Bob Smith", "source": "ex1", "target": "ex2"})
    new = line(Record("move.x.3", "await_replication", "bob", "ex1", "ex2", at=2.0, started_at=1.0, usn=5))
    found = scan(old + bad + new)
    assert [r.move_id for r in found.records] == ["move.x.1", "move.x.3"] and found.ids == ["move.x.2"]
    assert found.damage == [(len(old), len(old) + len(bad))]
    assert found.records[0].started_at is None and not found.records[0].legacy and found.records[1].usn == 5
    assert b'"usn": 5' in new and b"copied" not in new and b"reason" not in new
