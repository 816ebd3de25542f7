"""What a move writes down and says (orchestrator/move.py, move_steps.Steps.enter): each step
journaled at the time it was entered with the facts a restart or a reader needs, `move.done`'s
figures, the orchestrator's status, and the steps past set_home that a timer retries (the
alternate's restore, a legacy move's mark). Mutation testing left each of these unchecked."""

from __future__ import annotations

from orchestrator.move import MoveCore

from .test_move_core import answers, journal_at, run, start
from .test_move_problems import error


def test_each_step_is_journaled_when_it_was_entered_with_its_facts():
    changed = answers()["dir.modify"]

    def modify(s):  # each change its own USN: the clearing 4, the new home 6, the restore 7
        type_, body = changed(s)
        usn = 7 if s.body.changes.get("alternate") == "carol" else 6 if "home_server" in s.body.changes else 4
        return type_, {**body, "usn": usn}

    core = MoveCore(["ex1", "ex2"], "b")
    records, lines = run(core, start(core, True), {**answers(), "dir.modify": modify}, step=0.3717)
    saved = {"alternate": "carol", "deliver_to_both": True}
    by_step = {r.step: r for r in records}
    assert [r.step for r in records] == ["clear_alternate", "await_replication", "lock", "copy", "set_home",
                                         "open_target", "release", "restore_alternate", "done"]
    assert all(b.at > a.at for a, b in zip(records, records[1:])), "each at its own time, in order"
    assert by_step["set_home"].copied == 1 and by_step["done"].copied == 1
    assert by_step["restore_alternate"].restored == saved and by_step["done"].usn == 7
    assert by_step["await_replication"].usn == 4, "the USN of the alternate's clearing, which the MTAs must reach"
    assert by_step["open_target"].usn == 6, "the USN of the new home"
    (done,) = [e for e in lines if e.event == "move.done"]
    move = core.moves["move.b.1"]
    assert move.finished_at == by_step["done"].at
    assert done.fields == {"move_id": "move.b.1", "alias": "bob", "mailbox": "bob", "source": "ex1", "target": "ex2",
                           "copied": 1, "seconds": round(by_step["done"].at - 1.0, 3)}


def test_a_legacy_move_journals_what_it_copied_at_its_mark():
    core = MoveCore(["ex1", "ex2"], "b", move_build="legacy")
    records, _ = run(core, start(core, False), {**answers(), "store.create": lambda s: ("ok", {})}, step=0.5)
    assert [r.copied for r in records if r.step in ("mark_target", "done")] == [1, 1]
    assert [r.usn for r in records if r.step == "copy"] == [4], "legacy copies after set_home: its USN"
    assert all(b.at > a.at for a, b in zip(records, records[1:])), "each at its own time, in order"


def test_the_status_counts_finished_moves_and_names_the_recovered_and_the_holds():
    core = MoveCore(["ex1", "ex2"], "b", journal=journal_at("release"))
    core.start(1.0)
    core.arm_hold("copy")
    assert core.status(1.0) == {"active": [core.moves["move.x.1"].public()], "finished": 0, "recovered": 1,
                                "holds": ["copy"]}
    run(core, [], answers(), step=0.5)
    assert core.status(9.0) == {"active": [], "finished": 1, "recovered": 1, "holds": ["copy"]}


def test_the_alternates_restore_is_tried_again_until_the_directory_takes_it():
    changed = answers()["dir.modify"]
    restore = [0]

    def modify(s):
        if s.body.changes.get("alternate") == "carol":
            restore[0] += 1
            if restore[0] == 1:
                return error(reason="busy")
        return changed(s)

    core = MoveCore(["ex1", "ex2"], "b")
    records, lines = run(core, start(core, True), {**answers(), "dir.modify": modify}, step=0.5)
    assert restore[0] == 2 and records[-1].step == "done"
    assert [e.fields["step"] for e in lines if e.event == "move.retry_step"] == ["restore_alternate"]


def test_a_legacy_moves_mark_is_tried_again_until_the_target_takes_it():
    marks = []

    def lock(s):
        if s.to == "store.ex2":
            marks.append(s.body.owner)
            if len(marks) == 1:
                return error(reason="busy")
        return "ok", {}

    core = MoveCore(["ex1", "ex2"], "b", move_build="legacy")
    records, lines = run(core, start(core, False), {**answers(), "store.create": lambda s: ("ok", {}),
                                                    "store.lock": lock}, step=0.5)
    assert marks == ["move.b.1", "move.b.1"] and records[-1].step == "done"
    assert [e.fields["step"] for e in lines if e.event == "move.retry_step"] == ["mark_target"]
