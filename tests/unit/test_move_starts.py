"""Move User's start, its requests over time and a restart's recovery (orchestrator/move.py,
move_rollback.Rollback.recover, move_state.Move.public), where mutation testing left mutants
alive: refusals and their codes, IMAP's hold, two moves ticking at once, a journal of several
moves, and what a status says of a move that waits for nothing."""

from __future__ import annotations

import msgspec
import pytest

from orchestrator.move import MoveCore
from protocol import INVALID

from .helpers import (
    events,
    recipient,
    refusal,
    refusal_log,
    replies,
    request,
    response,
    sends,
)
from .test_move_core import (
    answers,
    drive,
    journal_at,
    journaled,
    move_request,
    start,
    to_first,
)


def test_the_refusals_of_a_move_request_carry_the_invalid_code():
    core = MoveCore(["ex1", "ex2"], "b")
    elsewhere = request("orch.move", {"alias": "bob", "target": "ex9", "workaround": False, "copy_delay_ms": 100})
    assert refusal(core.on_event(elsewhere, 1.0))[:2] == ("unknown server 'ex9' (servers: ex1, ex2)", INVALID)
    assert refusal(core.on_event(move_request(copy_delay_ms=600_001), 1.0))[:2] == (
        "copy delay must be between 0 and 600000 ms", INVALID)
    assert sends(core.on_event(move_request(copy_delay_ms=600_000), 1.0), "dir.lookup"), "the bound itself is taken"
    assert refusal(core.on_event(move_request(), 1.0))[:2] == (
        "'bob' is already being moved (move.b.1, step resolve)", INVALID)
    assert refusal(core.on_event(request("orch.move_status", {"move_id": "move.b.9"}), 1.0))[:2] == (
        "unknown move 'move.b.9'", INVALID)


def test_a_move_refused_while_the_last_is_rolled_back_names_what_that_waits_for():
    core = MoveCore(["ex1", "ex2"], "b")
    lock, _ = to_first(core, start(core, False), answers(alternate=None), "store.lock")
    core.on_event(response(lock, "error", {"reason": "no", "code": None}), 2.0)
    assert refusal(core.on_event(move_request(), 2.0))[:2] == (
        "'bob' is still being rolled back from move.b.1 (step rollback_source: waiting for store.ex1)", INVALID)


def test_a_move_to_where_the_user_is_is_refused_and_logged_in_short():
    core = MoveCore(["ex1", "ex2"], "b")
    lookup = sends(start(core, False))[0]
    there = ("dir.entry", {"recipient": {**answers()["dir.lookup"](lookup)[1]["recipient"], "home_server": "ex2"},
                           "usn": 3})
    reason, code, logged = refusal(core.on_event(response(lookup, *there), 1.0))
    assert (reason, code) == ("'bob' is already on ex2", INVALID) and logged[0][2]["reason"] == "already there"


def test_the_workaround_clears_only_an_alternate_there_is_and_journals_what_it_cleared():
    core = MoveCore(["ex1", "ex2"], "b")
    assert drive(core, start(core, True), answers(alternate=None))[0] == "lock", "nothing to clear"
    core = MoveCore(["ex1", "ex2"], "b")
    lookup = sends(start(core, True))[0]
    cleared = core.on_event(response(lookup, *answers()["dir.lookup"](lookup)), 1.0)
    (record,) = journaled(cleared)
    assert (record.step, record.cleared) == ("clear_alternate", {"alternate": "carol", "deliver_to_both": True})


def test_with_imap_the_source_servers_imap_holds_the_user_before_the_copy():
    core = MoveCore(["ex1", "ex2"], "b", imap=True)
    table = {**answers(alternate=None), "imap.hold": lambda s: ("ok", {})}
    lock, actions = to_first(core, start(core, False), table, "store.lock")
    held = core.on_event(response(lock, "ok", {}), 2.0)
    (hold,) = sends(held, "imap.hold")
    assert (hold.to, hold.body.user, hold.body.owner) == ("imap.ex1", "bob", "move.b.1")
    assert [(r.step, r.at) for r in journaled(held)] == [("hold_imap", 2.0)]
    assert drive(core, held, table, now=2.0)[:3] == ["hold_imap", "copy", "set_home"]


def test_two_moves_tick_at_once_one_held_the_other_resent():
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=1000)
    core.arm_hold("lock")
    for alias in ("bob", "ann"):
        lookup = sends(core.on_event(move_request(alias), 1.0))[0]
        entry = answers()["dir.lookup"](lookup)[1]
        core.on_event(response(lookup, "dir.entry", {**entry, "recipient": {**entry["recipient"], "alias": alias}}), 1.0)
    assert [m.held for m in core.moves.values()] == [True, False]
    resent = sends(core.tick(2.5), "store.lock")
    assert [s.body.mailbox for s in resent] == ["ann"], "the held move's time does not run; the other's does"
    core.release(2.5)
    both = sends(core.tick(3.6), "store.lock")
    assert sorted(s.body.mailbox for s in both) == ["ann", "bob"], "two moves' requests in one tick"


def test_a_restart_takes_up_every_unfinished_move_and_leaves_a_suspect_one_alone():
    finished = msgspec.structs.replace(journal_at("lock")[0], move_id="move.x.0", step="done")
    rolled = [msgspec.structs.replace(r, move_id="move.x.2", error="disk full", started_at=0.25,
                                      saved={"alternate": "carol", "deliver_to_both": True}, workaround=True)
              for r in journal_at("copy")]
    suspect = msgspec.structs.replace(journal_at("lock")[0], move_id="move.x.3")
    core = MoveCore(["ex1", "ex2"], "b", journal=[finished, *journal_at("release"), *rolled, suspect],
                    suspect=["move.x.3"])
    actions = core.start(1.0)
    assert sorted(core.moves) == ["move.x.1", "move.x.2"], "every unfinished move after a finished one"
    assert [e.fields["move_id"] for e in events(actions, "move.recovered")] == ["move.x.1", "move.x.2"]
    (alone,) = events(actions, "move.left_alone")
    assert alone.level == "error" and alone.fields == {
        "move_id": "move.x.3", "alias": "bob", "mailbox": "bob", "step": "lock",
        "why": "a damaged journal line names this move: its last step is not known, so it is neither finished nor "
               "rolled back; see `xcon status` and `xcon move --abort`"}
    back = core.moves["move.x.2"]
    assert (back.workaround, back.error, back.started_at) == (True, "disk full", 0.25)
    assert back.undo == ["rollback_source", "rollback_alternate"], "its saved alternate restored at the end"
    assert [s.to for s in sends(actions, "store.end_move")] == ["store.ex2"]


def test_a_move_that_waits_for_nothing_shows_no_peer_and_no_attempts():
    core = MoveCore(["ex1", "ex2"], "b", journal=journal_at("set_home"))
    core.start(1.0)  # the step's request goes out on the next tick
    shown = core.moves["move.x.1"].public()
    assert (shown["waiting_for"], shown["attempts"]) == (None, 0)
    (modify,) = sends(core.tick(1.0))
    shown = core.moves["move.x.1"].public()
    assert (shown["waiting_for"], shown["attempts"]) == ("directory", 1)
    status = core.on_event(request("orch.move_status", {"move_id": "move.x.1"}), 1.0)
    assert replies(status)[0].body.move["waiting_for"] == "directory"
    drive(core, core.on_event(response(modify, *answers()["dir.modify"](modify)), 1.5), answers(), now=1.5)
    shown = core.moves["move.x.1"].public()
    assert (shown["step"], shown["waiting_for"], shown["attempts"]) == ("done", None, 0)


def test_a_move_across_sites_is_refused_in_exchange_55s_words_and_one_within_a_site_starts():
    core = MoveCore(["ex1", "ex2"], "b", sites={"ex1": "north", "ex2": "south"})
    lookup = sends(start(core, False))[0]
    reason, code, logged = refusal(core.on_event(response(lookup, *answers()["dir.lookup"](lookup)), 1.0))
    assert (reason, code) == ("ex1 is in site north and ex2 in site south: Exchange 5.5 moves a mailbox within its "
                              "site only (across sites, export and import it)", INVALID)
    assert [(event, fields["reason"]) for event, _, fields in logged] == [("move.refused", "across sites")]
    core = MoveCore(["ex1", "ex2"], "b", sites={"ex1": "north", "ex2": "north"})
    requested = start(core, False)
    assert events(requested, "move.requested")[0].fields == {"move_id": "move.b.1", "alias": "bob", "target": "ex2",
                                                             "workaround": False}
    lookup = sends(requested)[0]
    started = core.on_event(response(lookup, *answers()["dir.lookup"](lookup)), 1.0)
    assert replies(started)[0].type == "orch.move_started"
    assert events(started, "move.started")[0].fields == {"move_id": "move.b.1", "alias": "bob", "mailbox": "bob",
                                                         "source": "ex1", "target": "ex2", "workaround": False}


def test_a_request_sent_again_says_so_with_its_attempt():
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=1000)
    start(core, False)
    lines = [line for now in (2.0, 3.0, 4.0) for line in events(core.tick(now), "move.request_again")]
    assert [(e.level, e.fields["attempt"]) for e in lines] == [("warning", 2), ("warning", 3), ("warning", 4)]
    assert lines[0].fields == {"move_id": "move.b.1", "step": "resolve", "to": "directory", "type": "dir.lookup",
                               "attempt": 2}


def ann() -> dict:
    return {**answers(alternate=None), "dir.lookup": lambda s: ("dir.entry", {"recipient": recipient("ann", "ex1", 3),
                                                                               "usn": 3})}


def test_one_moves_request_sent_again_in_the_tick_another_move_gives_up():
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=1000)
    start(core, False)
    start(core, False, "ann")  # ann's lookup is never answered
    (again,) = [s for s in sends(core.tick(2.0)) if s.body.alias == "bob"]
    core.on_event(response(again, *answers()["dir.lookup"](again)), 2.0)  # bob's lock: a try behind ann's lookup
    for now in (3.0, 4.0):
        core.tick(now)
    tick = core.tick(5.0)
    assert [(s.type, s.body.mailbox) for s in sends(tick)] == [("store.lock", "bob")], "bob's lock again"
    assert [r.body.reason for r in replies(tick)] == ["no answer within 1s in step resolve (4 tries)"]
    assert "move.b.2" not in core.moves, "ann's move gave up"


def test_one_moves_request_sent_again_in_the_tick_another_moves_timer_fires():
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=1000)
    start(core, False)  # bob's lookup is never answered
    imp, _ = to_first(core, start(core, False, "ann", copy_delay_ms=1000), ann(), "store.import")
    core.on_event(response(imp, *ann()["store.import"](imp)), 1.0)  # ann's next step waits for the copy rate
    assert core.next_wakeup() == 2.0
    assert [s.type for s in sends(core.tick(2.0))] == ["dir.lookup", "dir.modify"], "bob's lookup, ann's set_home"


def test_a_suspect_move_first_in_the_journal_does_not_stop_the_others_being_taken_up():
    suspect = msgspec.structs.replace(journal_at("lock")[0], move_id="move.x.0", started_at=None)
    core = MoveCore(["ex1", "ex2"], "b", journal=[suspect, *journal_at("copy")], suspect=["move.x.0"])
    core.start(1.0)
    assert list(core.moves) == ["move.x.1"] and core.status(1.0)["recovered"] == 1
    unknown = msgspec.structs.replace(journal_at("lock")[0], started_at=None)
    core = MoveCore(["ex1", "ex2"], "b", journal=[unknown])
    core.start(7.0)
    assert core.moves["move.x.1"].started_at == 7.0, "a start not journaled is taken as the restart's"


def test_a_move_killed_in_its_rollback_undoes_its_alternate_once():
    saved = {"alternate": "carol", "deliver_to_both": True}
    rolling = [*journal_at("copy", saved=saved),
               msgspec.structs.replace(journal_at("copy", saved=saved)[-1], step="rollback_target")]
    core = MoveCore(["ex1", "ex2"], "b", journal=rolling)
    steps = drive(core, core.start(1.0), answers())
    assert steps == ["rollback_target", "rollback_source", "rollback_alternate", "failed"]


def test_a_new_move_core_has_recovered_nothing_and_refuses_what_it_does_not_handle():
    core = MoveCore(["ex1", "ex2"], "b")
    core.start(1.0)
    assert core.status(1.0) == {"active": [], "finished": 0, "recovered": 0, "holds": []}
    reason = "the orchestrator does not handle 'store.lock'"
    assert refusal(core.on_event(request("store.lock", {"mailbox": "bob", "owner": "m"}), 1.0)) == (
        reason, None, [refusal_log("store.lock", reason)])
    with pytest.raises(ValueError, match=r"^unknown move build 'sp9' \(builds: legacy, sp4\)$"):
        MoveCore(["ex1", "ex2"], "b", move_build="sp9")


def test_a_request_is_sent_again_after_three_seconds_by_default():
    core = MoveCore(["ex1", "ex2"], "b")
    start(core, False)
    assert core.next_wakeup() == 4.0
