"""Move User when a node answers a step with an error (orchestrator/move.py `_problem`): refused
while resolving, taken as done where an earlier try got there, retried from set_home on, rolled
back before it. Mutation testing found these paths reached by no test: planted, a move that
answered a refused lock by releasing the source went on to `done` unnoticed."""

from __future__ import annotations

from orchestrator.move import MoveCore
from protocol import NO_MAILBOX, NOT_LOCKED

from .helpers import events, refusal, response, sends
from .test_move_core import answers, drive, paged_mailbox, start


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
    assert drive(core, start(core, False), table)[-3:] == ["open_target", "release", "done"]
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
