"""Paths of the store the campaigns seldom reach, each with what a person or the next node sees:
a legacy move's target (made live, its copy in the in-transit folder), the edges of a message's
time-out, a source locked by a move, a mailbox deleted for good, and the ids of a new run."""

from __future__ import annotations

from nodes.config import Settings
from nodes.node_settings import of
from nodes.mta.core import MtaCore
from nodes.store.actions import (
    IN_TRANSIT,
    CreateMailbox,
    DeleteMailbox,
    WriteMessage,
    entry_key,
    msg_id_of,
)
from nodes.store.core import StoreCore

from .helpers import events, replies
from .test_store_moves import ask, deliver

PAGE = {"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"copy of m1", "folder": ".Work", "info": "2,S"}


def test_a_legacy_target_is_made_live_and_its_copy_goes_to_the_in_transit_folder():
    store = StoreCore("ex2", {}, {}, "b")
    made = ask(store, "store.create", mailbox="bob", owner="move.1")
    assert [a.mailbox for a in made if isinstance(a, CreateMailbox)] == ["bob", IN_TRANSIT + "bob"]
    assert [(e.event, e.fields) for e in events(made)] == [("store.created", {"mailbox": "bob", "owner": "move.1"})]
    assert store.status(1.0)["made"] == {"bob": "move.1"}
    again = ask(store, "store.create", mailbox="bob", owner="move.1")
    assert [r.type for r in replies(again)] == ["ok"] and [e.event for e in events(again)] == ["store.create_repeated"]
    copied = ask(store, "store.import", mailbox="bob", owner="move.1", messages=[PAGE])
    assert [(w.mailbox, w.name, w.folder, w.info) for w in copied if isinstance(w, WriteMessage)] == [
        (IN_TRANSIT + "bob", "1000.m1.xcon", ".Work", "2,S")]
    assert [e.fields["into"] for e in events(copied, "store.imported")] == ["in-transit folder"]
    assert store.staged["bob"] == {"m1"}
    resent = ask(store, "store.import", mailbox="bob", owner="move.1", messages=[PAGE])
    assert replies(resent)[0].body.count == 0, "a page sent again is not written twice"
    other_folder = ask(store, "store.import", mailbox="bob", owner="move.1", messages=[{**PAGE, "folder": ""}])
    assert replies(other_folder)[0].body.count == 1, "the same name in another folder is another message"
    other_box = ask(store, "store.import", mailbox="erin", owner="move.1", messages=[PAGE])
    assert [(w.mailbox, w.name) for w in other_box if isinstance(w, WriteMessage)] == [("erin", "1000.m1.xcon")], \
        "the same name in another mailbox of the same move is another message"
    marked = ask(store, "store.lock", mailbox="bob", owner="move.1")
    assert [e.event for e in events(marked)] == ["store.marked_in_transit"]


def test_a_message_is_taken_until_its_time_out_and_refused_after():
    store = StoreCore("ex1", {"carol": set()}, {}, "b")
    assert deliver(store, "m9", "carol", now=5.0, expires_at=5.0) == ("delivered", "")
    store.mailboxes["carol"].clear()
    assert deliver(store, "m9", "carol", now=5.001, expires_at=5.0) == ("expired", "the message's time-out has passed")


def test_a_source_locked_by_a_move_defers_saying_locked_and_a_target_saying_moved_here():
    store = StoreCore("ex1", {"carol": set()}, {}, "b")
    ask(store, "store.lock", mailbox="carol", owner="move.1")
    assert deliver(store, "m9", "carol", now=2.0) == ("deferred", "mailbox locked")
    ask(store, "store.import", mailbox="erin", owner="move.2", messages=[])
    assert deliver(store, "m9", "erin", now=2.0) == ("deferred", "mailbox being moved here")


def test_a_page_whose_name_holds_no_valid_id_is_written_but_not_counted_as_a_message_id():
    store = StoreCore("ex2", {}, {}, "b")
    ask(store, "store.import", mailbox="bob", owner="move.1",
        messages=[{"name": "1000.-x.xcon", "raw": b"odd"}, {"name": "1001.m2.xcon", "raw": b"m2"}])
    assert store.mailboxes["bob"] == {"m2"}


def test_a_mailbox_is_deleted_for_good_where_nothing_keeps_it():
    store = StoreCore("ex1", {"bob": {"m1"}}, {}, "b")
    ask(store, "store.lock", mailbox="bob", owner="move.1")
    gone = ask(store, "store.delete", mailbox="bob", owner="move.1")
    assert [type(a) for a in gone if isinstance(a, DeleteMailbox)] == [DeleteMailbox]
    assert [(e.event, e.fields) for e in events(gone) if e.event.startswith("store.")] == [
        ("store.deleted", {"mailbox": "bob", "owner": "move.1", "messages": 1}),
        ("store.released", {"mailbox": "bob", "to": "mta.ex1"})]


def test_an_ended_move_that_held_nothing_is_logged_as_information():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    (ended,) = events(ask(store, "store.end_move", mailbox="bob", owner="move.1"), "store.move_ended")
    assert ended.level == "info"


def test_the_ids_of_a_new_run_are_not_those_of_the_last():
    settings = Settings(("ex1", "ex2"), "sp4")
    for node, a, b in (("store.ex1", StoreCore("ex1", {}, {}, "b1"), StoreCore("ex1", {}, {}, "b2")),
                       ("mta.ex1", MtaCore("ex1", of(settings, "mta.ex1"), "b1"), MtaCore("ex1", of(settings, "mta.ex1"), "b2"))):
        assert (a.ids.next(), b.ids.next()) == (f"{node}.b1.1", f"{node}.b2.1")


def test_a_file_name_says_its_message_id_and_a_folder_its_key():
    assert msg_id_of("1000.m1.xcon") == "m1" and msg_id_of("1000.m1.xcon:2,S") == "m1"
    assert msg_id_of("1000.m1.x:y.xcon") is None and msg_id_of("x1000.m1.xcon") is None
    assert entry_key("", "1000.m1.xcon") == "1000.m1.xcon" and entry_key(".Work", "1000.m1.xcon") == ".Work/1000.m1.xcon"
