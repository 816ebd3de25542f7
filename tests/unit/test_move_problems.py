"""Move User when a node answers a step with an error (orchestrator/move.py `_problem`): refused
while resolving, taken as done where an earlier try got there, retried from set_home on, rolled
back before it; an undo refused, the workaround's wait for every MTA, the operator's abort in
each phase. Mutation testing found these paths reached by no test: planted, a move that answered
a refused lock by releasing the source went on to `done` unnoticed, and a workaround that asked
only the first MTA locked the mailbox while the second still had the alternate."""

from __future__ import annotations

from orchestrator.move import MoveCore
from orchestrator.move_rollback import undo_for
from orchestrator.move_state import POLL_S
from protocol import INVALID, NO_MAILBOX, NOT_LOCKED

from .helpers import events, refusal, replies, request, response, sends
from .test_move_core import answers, drive, journaled, paged_mailbox, start, to_first


def error(code: str | None = None, reason: str = "refused") -> tuple[str, dict]:
    return "error", {"reason": reason, "code": code}


def once(first: tuple, then):
    """An answer that is `first` the first time and `then(send)` after."""
    told: list = []

    def answer(send):
        told.append(send)
        return first if len(told) == 1 else then(send)

    answer.told = told
    return answer


def test_a_lookup_the_directory_refuses_refuses_the_move_with_its_reason():
    core = MoveCore(["ex1", "ex2"], "b")
    lookup = sends(start(core, False))[0]
    refused = core.on_event(response(lookup, *error(reason="busy")), 1.0)
    reason, code, logged = refusal(refused)
    assert reason == "directory: busy" and code is None
    assert logged == [("move.refused", "info", {"move_id": "move.b.1", "alias": "bob", "reason": "directory: busy"})]
    assert not core.moves, "nothing to undo: it never got past resolving"


def test_a_move_of_a_user_the_directory_does_not_know_is_refused_as_invalid_and_logged_in_short():
    core = MoveCore(["ex1", "ex2"], "b")
    lookup = sends(start(core, False))[0]
    reason, code, logged = refusal(core.on_event(response(lookup, "dir.entry", {"recipient": None, "usn": 1}), 1.0))
    assert (reason, code) == ("unknown user 'bob'", INVALID)
    assert logged == [("move.refused", "info", {"move_id": "move.b.1", "alias": "bob", "reason": "unknown user"})]


def test_a_release_an_earlier_try_already_made_goes_on_to_done():
    """The source's copy was deleted by a try whose answer was lost: its NO_MAILBOX is success."""
    table = answers(alternate=None)
    table["store.delete"] = once(error(NO_MAILBOX), table["store.delete"])
    core = MoveCore(["ex1", "ex2"], "b")
    assert drive(core, start(core, False), table)[-2:] == ["release", "done"]
    assert len(table["store.delete"].told) == 1, "not sent again"


def test_a_target_an_earlier_try_already_opened_goes_on_to_release():
    table = answers(alternate=None)
    table["store.unlock"] = once(error(NOT_LOCKED), table["store.unlock"])
    core = MoveCore(["ex1", "ex2"], "b")
    unlock, _ = to_first(core, start(core, False), table, "store.unlock")
    opened = core.on_event(response(unlock, *table["store.unlock"](unlock)), 4.0)
    assert [(r.step, r.at) for r in journaled(opened)] == [("release", 4.0)] and sends(opened, "store.delete")
    assert drive(core, opened, table, now=4.0)[-1:] == ["done"]
    assert len(table["store.unlock"].told) == 1, "not sent again"


def test_a_lock_refused_for_either_of_those_codes_rolls_the_move_back():
    """The same codes before set_home say the step did not happen: no mailbox to lock, or a lock
    held by another. Taken as done, the move released a source it never copied."""
    for code in (NO_MAILBOX, NOT_LOCKED):
        core = MoveCore(["ex1", "ex2"], "b")
        steps = drive(core, start(core, False), {**answers(alternate=None), "store.lock": lambda s, c=code: error(c)})
        assert steps == ["lock", "rollback_source", "failed"], code
        assert core.moves["move.b.1"].error == "store.ex1: refused"


def test_a_step_past_set_home_is_tried_again_a_second_later_and_says_so():
    table = answers(alternate=None)
    table["dir.modify"] = once(error(reason="busy"), table["dir.modify"])
    core = MoveCore(["ex1", "ex2"], "b")
    actions = start(core, False)
    while not sends(actions, "dir.modify"):
        out = sends(actions)
        actions = core.on_event(response(out[0], *table[out[0].type](out[0])), 1.0) if out else core.tick(1.1)
    modify = sends(actions, "dir.modify")[0]
    retried = core.on_event(response(modify, *table["dir.modify"](modify)), 5.0)
    (line,) = events(retried)
    assert (line.event, line.level, line.fields) == ("move.retry_step", "warning", {
        "move_id": "move.b.1", "step": "set_home", "reason": "directory: busy"})
    assert core.next_wakeup() == 6.0 and not sends(core.tick(5.9))
    again = sends(core.tick(6.0), "dir.modify")
    assert again and again[0].body.changes == modify.body.changes
    assert drive(core, again, table, now=6.0) == ["open_target", "release", "done"]


def test_a_legacy_copy_that_fails_past_its_first_page_starts_again_from_the_first():
    """Past set_home a legacy move cannot roll back: its copy starts over, and counts each
    message once."""
    table, imported = paged_mailbox(2)
    import_ = table["store.import"]
    pages: list[str] = []

    def second_page_refused_once(s):
        pages.append(s.body.messages[0].name)
        return error(reason="disk full") if len(pages) == 2 else import_(s)

    table = {**table, "store.import": second_page_refused_once, "store.create": lambda s: ("ok", {})}
    core = MoveCore(["ex1", "ex2"], "b", move_build="legacy")
    steps = drive(core, start(core, False), table)
    assert steps[-4:] == ["mark_target", "open_target", "release", "done"] and steps.count("copy") == 1
    assert pages == ["1.m0.xcon", "3.m2.xcon", "1.m0.xcon", "3.m2.xcon"], "from the first page again"
    assert core.moves["move.b.1"].copied == 4


def test_a_retried_release_is_journaled_once():
    table = answers(alternate=None)
    table["store.delete"] = once(error(reason="busy"), table["store.delete"])
    core = MoveCore(["ex1", "ex2"], "b")
    steps = drive(core, start(core, False), table)
    assert steps[-2:] == ["release", "done"] and steps.count("release") == 1
    assert len(table["store.delete"].told) == 2


def test_a_failed_step_and_a_refused_undo_each_say_so_and_the_rollback_goes_on():
    core = MoveCore(["ex1", "ex2"], "b")
    table = {**answers(), "store.import": lambda s: error(reason="disk full")}
    imp, _ = to_first(core, start(core, True), table, "store.import")
    failed = core.on_event(response(imp, *table["store.import"](imp)), 7.0)
    (problem,) = events(failed, "move.problem")
    assert (problem.level, problem.fields) == ("warning", {"move_id": "move.b.1", "step": "copy",
                                                           "reason": "store.ex2: disk full"})
    (end,) = sends(failed, "store.end_move")
    assert end.to == "store.ex2" and [(r.step, r.at) for r in journaled(failed)] == [("rollback_target", 7.0)]
    refused = core.on_event(response(end, *error(reason="busy")), 8.0)
    (undo,) = events(refused, "move.undo_refused")
    assert (undo.level, undo.fields) == ("warning", {"move_id": "move.b.1", "step": "rollback_target",
                                                     "reason": "store.ex2: busy"})
    assert [s.to for s in sends(refused, "store.end_move")] == ["store.ex1"], "the rest of the rollback"
    steps = drive(core, refused, table, now=9.0)
    assert steps == ["rollback_source", "rollback_alternate", "failed"]
    move = core.moves["move.b.1"]
    assert move.error == "store.ex2: disk full", "the failure's reason, not the refused undo's"
    assert move.finished_at == 9.0 and move.public()["step"] == "failed"


def test_the_failed_step_is_journaled_with_its_reason_and_time_and_logged_as_a_warning():
    core = MoveCore(["ex1", "ex2"], "b")
    lock, _ = to_first(core, start(core, False), answers(alternate=None), "store.lock")
    failed = core.on_event(response(lock, *error(reason="no")), 2.0)
    end = sends(failed, "store.end_move")[0]
    done = core.on_event(response(end, *answers()["store.end_move"](end)), 3.0)
    (record,) = journaled(done)
    assert (record.step, record.at, record.reason) == ("failed", 3.0, "store.ex1: no")
    (line,) = events(done, "move.failed")
    assert (line.level, line.fields) == ("warning", {"move_id": "move.b.1", "alias": "bob", "reason": "store.ex1: no"})


def test_what_each_step_undoes():
    assert undo_for("lock", False) == undo_for("hold_imap", False) == ["rollback_source"]
    assert undo_for("copy", True) == ["rollback_target", "rollback_source", "rollback_alternate"]
    assert undo_for("create_target", False) == ["rollback_target", "rollback_source"]
    assert undo_for("await_replication", False) == [] and undo_for("clear_alternate", True) == ["rollback_alternate"]


def test_the_workaround_waits_for_every_mta_in_turn_and_reads_a_missing_usn_as_none_applied():
    core = MoveCore(["ex1", "ex2"], "b", replication_wait_ms=10_000)
    usns = {"mta.ex1": [4], "mta.ex2": [None, 3, 4]}

    def status(s):
        seen = usns[s.to].pop(0) if len(usns[s.to]) > 1 else usns[s.to][0]
        return "status_reply", {"node": s.to, "status": {} if seen is None else {"cache_usn": seen}}

    table = {**answers(), "status": status}
    first, actions = to_first(core, start(core, True), table, "status")
    assert first.to == "mta.ex1"
    asked = []
    for _ in range(10):
        out = sends(actions)
        if out and out[0].type != "status":
            break
        if out:
            asked.append(out[0].to)
            actions = core.on_event(response(out[0], *status(out[0])), 2.0 + len(asked) * POLL_S)
        else:
            actions = core.tick(core.next_wakeup())
    assert asked == ["mta.ex1", "mta.ex2", "mta.ex2", "mta.ex2"], "the second MTA until it has the change"
    assert events(actions, "move.replicated") and sends(actions, "store.lock")


def test_the_workaround_gives_up_when_an_mta_has_not_applied_the_change_in_its_time():
    core = MoveCore(["ex1", "ex2"], "b", replication_wait_ms=10_000)
    behind = lambda s: ("status_reply", {"node": s.to, "status": {"cache_usn": 3}})  # noqa: E731
    table = {**answers(), "status": behind}
    status, actions = to_first(core, start(core, True), table, "status")
    until = core.moves["move.b.1"].wait_until
    assert core.on_event(response(status, *behind(status)), until - 0.01) == [], "asked again shortly"
    again = sends(core.tick(core.next_wakeup()), "status")[0]
    failed = core.on_event(response(again, *behind(again)), until)
    (problem,) = events(failed, "move.problem")
    assert problem.fields["reason"] == "mta.ex1 did not apply USN 4 in 10s"
    assert drive(core, failed, table, now=until)[-1] == "failed"


def test_the_operator_aborts_a_move_still_resolving_and_both_askers_hear_of_it():
    core = MoveCore(["ex1", "ex2"], "b")
    mover = start(core, False)
    lookup = sends(mover)[0]
    aborted = core.on_event(request("orch.abort", {"alias": "bob"}, src="admin"), 1.5)
    (line,) = events(aborted, "move.aborted")
    assert (line.level, line.fields) == ("warning", {"move_id": "move.b.1", "alias": "bob", "mailbox": "bob",
                                                     "step": "resolve", "src": "admin"})
    told, answered = replies(aborted)
    assert (told.type, told.body.reason, told.body.code) == ("error", "aborted by the operator", None)
    assert (answered.type, answered.body.move["step"]) == ("orch.move_state", "failed")
    assert not core.moves and core.on_event(response(lookup, *answers()["dir.lookup"](lookup)), 2.0) == []


def test_an_abort_with_nothing_to_abort_or_past_set_home_is_refused_as_invalid():
    core = MoveCore(["ex1", "ex2"], "b")
    reason, code, _ = refusal(core.on_event(request("orch.abort", {"alias": "bob"}), 1.0))
    assert (reason, code) == ("no move of 'bob' is running", INVALID)
    table = answers(alternate=None)
    modify, _ = to_first(core, start(core, False), table, "dir.modify")
    reason, code, _ = refusal(core.on_event(request("orch.abort", {"alias": "bob"}), 2.0))
    assert (reason, code) == ("move.b.1 is past set_home (the directory names ex2): it finishes, it cannot be "
                              "rolled back", INVALID)


def test_an_aborted_move_says_why_and_awaits_no_answer():
    core = MoveCore(["ex1", "ex2"], "b")
    lock, _ = to_first(core, start(core, False), answers(alternate=None), "store.lock")
    core.on_event(request("orch.abort", {"alias": "bob"}), 2.0)
    move = core.moves["move.b.1"]
    assert move.error == "aborted by the operator" and move.rolling_back
    assert core.on_event(response(lock, "ok", {}), 2.1) == [], "the lock's late grant is not taken up"


def test_a_held_request_gets_its_whole_time_again_once_the_hold_is_released():
    """No time runs while a move is held: released at 1000 s, its unanswered lock is sent
    again a whole time-out later, not at once."""
    core = MoveCore(["ex1", "ex2"], "b", timeout_ms=2000)
    core.arm_hold("lock")
    lock, _ = to_first(core, start(core, False), answers(alternate=None), "store.lock")
    assert core.moves["move.b.1"].held and core.next_wakeup() is None
    assert events(core.release(1000.0), "move.released")
    assert core.next_wakeup() == 1002.0 and not sends(core.tick(1001.9))
    assert sends(core.tick(1002.0), "store.lock")[0].body == lock.body
