"""The store's core (nodes/store/core.py, actions.py) where its whole mutation run (session 13)
left mutants alive: the words of refusals and results, the trace an answer carries, which log
line and level a path writes, the soft delete's edges, a legacy target's flush, a move's end over
several mailboxes, and the names a Maildir file takes and gives back."""

from __future__ import annotations

from nodes.core import DiskSpace, Reply, Request
from nodes.store import core as storecore
from nodes.store.actions import (
    IN_TRANSIT,
    SOFT_DELETED,
    DeleteMailbox,
    PersistLocks,
    RenameMailbox,
    WriteMessage,
    carried,
    message_name,
    msg_id_of,
)
from nodes.store.core import StoreCore
from protocol import INVALID, MAX_MESSAGE_BYTES, Frame, body_of

from .helpers import PEER, events, refusal, refusal_log, replies, request
from .test_store_moves import ask, deliver, delivery


def kinds(actions: list) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_a_maildir_name_is_the_time_in_ms_and_the_id_and_gives_the_id_back():
    assert message_name(12.3456, "m1") == "12345.m1.xcon"
    assert msg_id_of("12345.m1.xcon:2,S") == "m1" and msg_id_of("12345.m1.xcon:2,S:odd") == "m1"
    assert not carried("12345.m1.xcon:2,S", "", None), "a copy's name holds no colon: cur/'s info travels apart"
    assert carried("12345.m1.xcon", "", "2,S")


def test_an_unknown_request_is_refused_in_words_and_answers_carry_the_requests_trace():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    reason = "the store does not handle 'dir.lookup'"
    assert refusal(store.on_event(request("dir.lookup", {"alias": "bob"}), 1.0)) == (
        reason, None, [refusal_log("dir.lookup", reason)])
    traced = Request(PEER, Frame("store.lock", "t-x", "orchestrator", 1,
                                 body_of("store.lock", {"mailbox": "bob", "owner": "move.1"}), "move.1"))
    assert [r.trace for r in replies(store.on_event(traced, 1.0))] == ["move.1"]
    traced = Request(PEER, Frame("store.deliver", "t-y", "mta.ex1", 1, body_of("store.deliver", {
        "msg_id": "m1", "mailbox": "bob", "raw": b"r", "ndr_for": None, "ndr_rcpts": [], "expires_at": 1e12}), "m1"))
    assert [r.trace for r in replies(store.on_event(traced, 1.0))] == ["m1"]


def test_a_delivery_refused_or_turned_away_says_why():
    store = StoreCore("ex1", {"bob": set()}, {}, "b", soft_deleted={"ann": 9.0})
    bad = "x y" * 50
    assert refusal(delivery(store, bad))[:2] == (f"'{bad[:80]}' is not a valid message id", INVALID)
    too_big = f"a message of {MAX_MESSAGE_BYTES + 1} bytes is over the limit of {MAX_MESSAGE_BYTES}"
    assert refusal(delivery(store, raw=b"x" * (MAX_MESSAGE_BYTES + 1)))[:2] == (too_big, INVALID)
    assert replies(delivery(store, raw=b"x" * MAX_MESSAGE_BYTES))[0].body.outcome == "delivered", "the limit itself"
    assert deliver(store, "m2", "ann") == ("soft_deleted", "the mailbox 'ann' on ex1 is soft-deleted (moved away)")
    assert deliver(store, "m2", "carol") == ("not_here", "no mailbox 'carol' on ex1")
    late = delivery(store, "m3", now=5.0, expires_at=4.0)
    assert [(e.event, e.level) for e in events(late)] == [("store.expired_refused", "warning")]


def test_a_report_delivered_is_logged_with_what_it_reports():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    done = delivery(store, "ex1.b.9.ndr.bob", ndr_for="m7", ndr_rcpts=("carol",))
    assert [(e.fields["ndr_for"], e.fields["ndr_rcpts"]) for e in events(done, "store.delivered")] == [("m7", ["carol"])]


def test_a_plain_mailbox_is_made_without_a_state_write_or_an_in_transit_folder():
    store = StoreCore("ex1", {}, {}, "b")
    assert kinds(ask(store, "store.create", mailbox="bob", owner=None)) == ["CreateMailbox", "Reply", "Log"]


def test_a_mailbox_made_over_a_soft_deleted_one_of_its_name_purges_it_first():
    store = StoreCore("ex1", {}, {}, "b", soft_deleted={"bob": 99.0, "ann": 99.0})
    made = ask(store, "store.create", mailbox="bob", owner=None)
    assert made[0] == DeleteMailbox(SOFT_DELETED + "bob") and isinstance(made[2], PersistLocks)
    assert [(e.event, e.fields) for e in events(made, "store.purged")] == [
        ("store.purged", {"mailbox": "bob", "why": "a new mailbox of its name"})]
    assert store.status(1.0)["soft_deleted"] == ["ann"]
    imported = ask(store, "store.import", mailbox="ann", owner="move.1", messages=[
        {"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"r"}])
    assert imported[0] == DeleteMailbox(SOFT_DELETED + "ann") and [e.fields["why"] for e in events(
        imported, "store.purged")] == ["a new mailbox of its name"]
    assert "soft_deleted" not in store.status(1.0)


def test_every_soft_deleted_mailbox_due_is_purged_in_one_tick():
    store = StoreCore("ex1", {}, {}, "b", soft_deleted={"ann": 5.0, "bob": 5.0, "carol": 9.0})
    purged = store.tick(5.0)
    assert [a for a in purged if isinstance(a, DeleteMailbox)] == [DeleteMailbox(SOFT_DELETED + "ann"),
                                                                  DeleteMailbox(SOFT_DELETED + "bob")]
    assert [e.fields for e in events(purged)] == [{"mailbox": "ann", "why": "retention over"},
                                                  {"mailbox": "bob", "why": "retention over"}]
    assert store.next_wakeup() == 9.0


def test_a_soft_delete_under_a_second_keeps_the_mailbox_and_says_when_it_goes():
    store = StoreCore("ex1", {"bob": {"m1"}}, {}, "b", soft_delete_ms=500)
    ask(store, "store.lock", mailbox="bob", owner="move.1")
    gone = ask(store, "store.delete", 1.23456, mailbox="bob", owner="move.1")
    assert gone[0] == RenameMailbox("bob", SOFT_DELETED + "bob")
    assert events(gone, "store.soft_deleted")[0].fields == {"mailbox": "bob", "owner": "move.1", "messages": 1,
                                                            "purge_at": 1.735}


def test_a_move_whose_target_was_never_opened_deletes_it_as_no_longer_incoming():
    store = StoreCore("ex2", {}, {}, "b")
    ask(store, "store.import", mailbox="erin", owner="move.2", messages=[])
    ask(store, "store.delete", mailbox="erin", owner="move.2")
    assert store.status(1.0)["incoming"] == []


def test_a_legacy_targets_flush_warns_only_when_it_drops_mail():
    for delivered_first, level in ((False, "info"), (True, "warning")):
        store = StoreCore("ex2", {}, {}, "b")
        ask(store, "store.create", mailbox="bob", owner="move.1")
        if delivered_first:
            delivery(store, "m9")  # between its creation and its mark: lost at the flush
        ask(store, "store.import", mailbox="bob", owner="move.1", messages=[
            {"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"r"}])
        ask(store, "store.lock", mailbox="bob", owner="move.1")
        opened = ask(store, "store.unlock", mailbox="bob", owner="move.1")
        (flushed,) = events(opened, "store.in_transit_flushed")
        assert (flushed.level, flushed.fields["dropped"]) == (level, ["m9"] if delivered_first else [])
        assert [e.event for e in events(opened) if e.event in ("store.opened", "store.unlocked")] == ["store.opened"]


def test_a_source_unlocked_is_logged_as_unlocked_and_a_plain_lock_as_locked():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    assert [e.event for e in events(ask(store, "store.lock", mailbox="bob", owner="move.1"))] == ["store.locked"]
    freed = ask(store, "store.unlock", mailbox="bob", owner="move.1")
    assert [e.event for e in events(freed)][0] == "store.unlocked"


def test_an_import_opened_later_is_no_longer_incoming():
    store = StoreCore("ex2", {}, {}, "b")
    ask(store, "store.import", mailbox="erin", owner="move.2", messages=[])
    ask(store, "store.unlock", mailbox="erin", owner="move.2")
    assert store.status(1.0)["incoming"] == [] and deliver(store, "m1", "erin") == ("delivered", "")


def test_an_import_page_writes_every_new_message_after_one_it_already_has():
    store = StoreCore("ex2", {}, {}, "b")
    first = {"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"r"}
    ask(store, "store.import", mailbox="erin", owner="move.2", messages=[first])
    more = [first, *({"name": f"100{i}.m{i}.xcon", "msg_id": f"m{i}", "raw": b"r"} for i in (2, 3))]
    again = ask(store, "store.import", mailbox="erin", owner="move.2", messages=more)
    assert [w.name for w in again if isinstance(w, WriteMessage)] == ["1002.m2.xcon", "1003.m3.xcon"]
    assert replies(again)[0].body.count == 2


def test_a_legacy_copy_refused_for_room_and_a_later_move_copying_the_same_names():
    store = StoreCore("ex2", {}, {}, "b", min_free_bytes=100)
    store.on_event(DiskSpace(150), 1.0)
    ask(store, "store.create", mailbox="bob", owner="move.1")
    page = [{"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"x" * 60}]
    assert refusal(ask(store, "store.import", mailbox="bob", owner="move.1", messages=page))[:2] == (
        "insufficient storage on store.ex2 (150 bytes free), retry later", None)
    store.on_event(DiskSpace(10_000), 1.0)
    assert replies(ask(store, "store.import", mailbox="bob", owner="move.1", messages=page))[0].body.count == 1
    ask(store, "store.end_move", mailbox="bob", owner="move.1")
    ask(store, "store.create", mailbox="bob", owner="move.3")  # the user moved here again, by another move
    assert replies(ask(store, "store.import", mailbox="bob", owner="move.3", messages=page))[0].body.count == 1


def test_a_move_ended_over_several_mailboxes_deletes_and_counts_them_all():
    store = StoreCore("ex2", {"zoe": {"m1"}}, {}, "b")  # the source last in order: its release after the deletes
    ask(store, "store.lock", mailbox="zoe", owner="move.2")
    for box, n in (("erin", 2), ("fred", 3)):
        ask(store, "store.import", mailbox=box, owner="move.2", messages=[
            {"name": f"100{i}.{box}{i}.xcon", "msg_id": f"{box}{i}", "raw": b"r"} for i in range(n)])
    ask(store, "store.create", mailbox="gail", owner="move.2")
    ask(store, "store.import", mailbox="gail", owner="move.2", messages=[{"name": "1.a.xcon", "msg_id": "a", "raw": b"r"}])
    delivery(store, "live", mailbox="gail")
    ended = ask(store, "store.end_move", mailbox="zoe", owner="move.2")
    assert [a.mailbox for a in ended if isinstance(a, DeleteMailbox)] == ["erin", "fred", "gail", IN_TRANSIT + "gail"]
    (answer,) = replies(ended)
    assert (answer.body.unlocked, answer.body.deleted) == (True, 2 + 3 + 1 + 1)
    assert [e.level for e in events(ended, "store.move_ended")] == ["warning"]
    assert [a.type for a in ended if not isinstance(a, (Reply, DeleteMailbox)) and hasattr(a, "type")] == [
        "store.released"]
    assert store.status(1.0)["incoming"] == [] and sorted(store.mailboxes) == ["zoe"]
    assert "move.2" not in store.copied, "what an ended move copied is not remembered"
    again = ask(store, "store.end_move", mailbox="zoe", owner="move.2")
    assert (replies(again)[0].body.unlocked, replies(again)[0].body.deleted) == (False, 0), "answered, not redone"


def test_the_owners_a_store_remembers_as_ended_are_the_newest_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(storecore, "MAX_ENDED", 2)
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    for n in range(3):
        ask(store, "store.lock", mailbox="bob", owner=f"move.{n}")
        ask(store, "store.unlock", mailbox="bob", owner=f"move.{n}")
    assert list(store.ended) == ["move.1", "move.2"] and store._persist().ended == ["move.1", "move.2"]
    assert [r.type for r in replies(ask(store, "store.lock", mailbox="bob", owner="move.0"))] == ["ok"], "forgotten"


def test_a_store_is_ready_at_once_and_takes_mail_with_no_floor_by_default():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    assert store.ready is True
    store.on_event(DiskSpace(4), 1.0)
    assert deliver(store, "m1") == ("delivered", ""), "a message of 4 bytes on a disk with 4 free: no floor"


def test_a_legacy_target_restarted_without_its_in_transit_record_still_takes_a_copy_page():
    """A made mailbox whose staged ids were not in the state a restart read (nodes.store.core's
    __init__): a page of its move is staged from nothing, not a crash of the store."""
    store = StoreCore("ex2", {"bob": set()}, {}, "b", made={"bob": "move.1"})
    page = [{"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"r"}]
    assert replies(ask(store, "store.import", mailbox="bob", owner="move.1", messages=page))[0].body.count == 1
    assert store.staged == {"bob": {"m1"}}
