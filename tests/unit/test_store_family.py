"""The store's mechanisms behind two of the bug's relatives: a legacy move's in-transit folder
(KB Q277911) and soft-deleted mailboxes (KB 2579150), on the core and on both storages."""

from __future__ import annotations

import os

from nodes.store.actions import IN_TRANSIT, SOFT_DELETED, RenameMailbox
from nodes.store.core import StoreCore
from nodes.store.maildir import Maildirs, read_mailboxes
from nodes.store.memory import MemoryMaildirs
from nodes.store.node import wiring
from nodes.config import Settings
from nodes.node_settings import of

from .helpers import PEER, events, replies, request


def deliver(store: StoreCore, msg_id: str, now: float = 2.0, mailbox: str = "bob") -> str:
    actions = store.on_event(request("store.deliver", {"msg_id": msg_id, "mailbox": mailbox, "raw": b"x",
                                                      "ndr_for": None, "ndr_rcpts": [], "expires_at": 1e12}), now)
    return replies(actions)[0].body.outcome


def ask(store: StoreCore, type_: str, now: float = 2.0, **body) -> tuple[str, list]:
    actions = store.on_event(request(type_, {"mailbox": "bob", **body}), now)
    return replies(actions)[0].type, actions


def page(*ids: str) -> list[dict]:
    return [{"name": f"1.{i}.xcon", "msg_id": i, "raw": b"copy"} for i in ids]


def test_a_legacy_move_drops_what_was_delivered_between_creation_and_the_mark():
    store = StoreCore("ex2", {}, {}, "b")
    assert ask(store, "store.create", owner="move.1")[0] == "ok"
    assert ask(store, "store.create", owner="move.1")[0] == "ok"  # a retried create is harmless
    assert deliver(store, "early") == "delivered"  # the window: live, not in transit yet
    kind, actions = ask(store, "store.import", owner="move.1", messages=page("m1", "m2"))
    assert kind == "store.imported" and all(a.mailbox == IN_TRANSIT + "bob" for a in actions if hasattr(a, "raw"))
    assert ask(store, "store.lock", owner="move.1")[0] == "ok"  # the mark
    assert deliver(store, "late") == "deferred"  # in transit: it waits for the open
    kind, actions = ask(store, "store.unlock", owner="move.1")
    assert kind == "ok" and RenameMailbox(IN_TRANSIT + "bob", "bob") in actions
    assert events(actions, "store.in_transit_flushed")[0].fields["dropped"] == ["early"]
    assert store.mailboxes["bob"] == {"m1", "m2"} and store.made == {}
    assert deliver(store, "late") == "delivered"


def test_an_sp4_move_has_no_window_its_target_is_in_transit_from_its_first_page():
    store = StoreCore("ex2", {}, {}, "b")
    assert ask(store, "store.import", owner="move.1", messages=page("m1"))[0] == "store.imported"
    assert deliver(store, "early") == "deferred"
    kind, actions = ask(store, "store.unlock", owner="move.1")
    assert kind == "ok" and not [a for a in actions if isinstance(a, RenameMailbox)]
    assert deliver(store, "early") == "delivered" and store.mailboxes["bob"] == {"m1", "early"}


def test_a_legacy_target_rolled_back_is_deleted_with_its_in_transit_folder():
    store = StoreCore("ex2", {}, {}, "b")
    ask(store, "store.create", owner="move.1")
    ask(store, "store.import", owner="move.1", messages=page("m1"))
    kind, actions = ask(store, "store.end_move", owner="move.1")
    assert kind == "store.move_ended" and "bob" not in store.mailboxes and store.made == {}
    assert {a.mailbox for a in actions if type(a).__name__ == "DeleteMailbox"} == {"bob", IN_TRANSIT + "bob"}
    assert ask(store, "store.create", owner="move.1")[0] == "error"  # the move is over here


def test_soft_delete_keeps_the_source_and_answers_soft_deleted_until_purged():
    store = StoreCore("ex1", {"bob": {"m1"}}, {"bob": "move.1"}, "b", soft_delete_ms=5000)
    kind, actions = ask(store, "store.delete", now=10.0, owner="move.1")
    assert kind == "ok" and RenameMailbox("bob", SOFT_DELETED + "bob") in actions
    assert deliver(store, "m2", now=11.0) == "soft_deleted"
    assert store.next_wakeup() == 15.0 and store.tick(14.9) == []
    purged = store.tick(15.0)
    assert events(purged, "store.purged") and store.soft_deleted == {}
    assert deliver(store, "m2", now=16.0) == "not_here"


def test_a_new_mailbox_of_the_name_purges_the_soft_deleted_one():
    store = StoreCore("ex1", {}, {}, "b", soft_deleted={"bob": 100.0})
    kind, actions = ask(store, "store.import", owner="move.2", messages=page("m1"))
    assert kind == "store.imported" and events(actions, "store.purged") and store.soft_deleted == {}


def test_both_storages_keep_the_in_transit_folder_and_soft_deleted_out_of_the_mailboxes(tmp_path):
    """Through the store's wiring, on disk and in memory: a restart reloads the legacy target's
    state and copy; no reader counts the dot folders as mailboxes."""
    for maildirs in (Maildirs(tmp_path / "ex2", fsync=False), MemoryMaildirs()):
        settings = of(Settings(("ex1", "ex2"), soft_delete_ms=60_000), "store.ex2")
        w = wiring("ex2", settings, "b", maildirs)

        def run(type_, **body):
            actions = w.core.on_event(request(type_, {"mailbox": "bob", **body}), 2.0)
            for a in actions:
                if type(a) in w.executors:
                    w.executors[type(a)](a)
            maildirs.sync()
            return replies(actions)[0]

        run("store.create", owner="move.1")
        run("store.import", owner="move.1", messages=page("m1"))
        w = wiring("ex2", settings, "b", maildirs)  # a restart between the copy and the mark
        assert w.core.made == {"bob": "move.1"} and w.core.staged == {"bob": {"m1"}}
        run("store.lock", owner="move.1")
        run("store.unlock", owner="move.1")
        boxes = read_mailboxes(tmp_path / "ex2") if isinstance(maildirs, Maildirs) else maildirs.ids()
        assert {k: set(v) for k, v in boxes.items()} == {"bob": {"m1"}}
        run("store.lock", owner="move.2")
        assert run("store.delete", owner="move.2").type == "ok"
        boxes = read_mailboxes(tmp_path / "ex2") if isinstance(maildirs, Maildirs) else maildirs.ids()
        assert boxes == {}
        w = wiring("ex2", settings, "b", maildirs)
        assert list(w.core.soft_deleted) == ["bob"]


def test_a_restart_between_the_flush_and_its_record_flushes_nothing_twice(tmp_path):
    """The store dies after putting the in-transit folder in place, before the state says so:
    the restarted store finds no in-transit folder, and the move's repeated open keeps the copy."""
    for maildirs in (Maildirs(tmp_path / "ex2", fsync=False), MemoryMaildirs()):
        settings = of(Settings(("ex1", "ex2")), "store.ex2")
        w = wiring("ex2", settings, "b", maildirs)

        def run(type_, skip=(), **body):
            actions = w.core.on_event(request(type_, {"mailbox": "bob", **body}), 2.0)
            for a in actions:
                if type(a) in w.executors and type(a).__name__ not in skip:
                    w.executors[type(a)](a)
            maildirs.sync()
            return actions

        run("store.create", owner="move.1")
        run("store.import", owner="move.1", messages=page("m1", "m2"))
        run("store.lock", owner="move.1")
        run("store.unlock", skip=("PersistLocks",), owner="move.1")  # the crash: the flush, not its record
        w = wiring("ex2", settings, "b", maildirs)
        assert w.core.made == {"bob": "move.1"} and "bob" not in w.core.staged
        again = run("store.unlock", owner="move.1")
        assert events(again, "store.in_transit_flushed")[0].fields["already"] is True
        boxes = read_mailboxes(tmp_path / "ex2") if isinstance(maildirs, Maildirs) else maildirs.ids()
        assert {k: set(v) for k, v in boxes.items()} == {"bob": {"m1", "m2"}} and w.core.mailboxes["bob"] == {"m1", "m2"}


def test_a_start_leaves_a_folder_being_deleted_to_the_thread_deleting_it(tmp_path, monkeypatch):
    """A restart in the same process (as above) may find a folder renamed aside whose files a
    delete thread is still removing: the start clears the half-written files of the mailboxes,
    and does not walk that folder while it vanishes (CI once saw its tmp/ go under the scan)."""
    maildirs = Maildirs(tmp_path, fsync=False)
    maildirs.create("bob")
    (tmp_path / "bob" / "tmp" / "cut.short").write_bytes(b"half")
    doomed = tmp_path / ".deleting.bob.1" / "tmp"
    doomed.mkdir(parents=True)
    (doomed / "theirs").write_bytes(b"the thread's to remove")
    monkeypatch.setattr("nodes.store.maildir.shutil.rmtree", lambda *a, **k: None)  # the thread has it
    maildirs.load()
    assert os.listdir(tmp_path / "bob" / "tmp") == [] and os.listdir(doomed) == ["theirs"]


def test_a_message_a_mail_reader_moved_into_cur_with_flags_is_still_listed_read_exported_and_counted(tmp_path):
    """Dovecot (xcon up --imap) moves a message it has shown from new/ to cur/NAME:2,S: the store
    must go on seeing it as the same message, or a move would leave it behind."""
    from nodes.store.actions import ExportPage, ListMailbox, message_name
    from nodes.store.node import export_page, listing

    boxes = Maildirs(tmp_path / "ex1", fsync=False)
    boxes.create("bob")
    name = message_name(1.0, "m1")
    boxes.write("bob", name, b"Subject: read over IMAP\r\n\r\nhi\r\n")
    boxes.sync()
    os.rename(tmp_path / "ex1" / "bob" / "new" / name, tmp_path / "ex1" / "bob" / "cur" / f"{name}:2,S")
    assert boxes.names("bob") == [name] and boxes.read("bob", name).startswith(b"Subject: read over IMAP")
    assert {k: dict(v) for k, v in read_mailboxes(tmp_path / "ex1").items()} == {"bob": {"m1": 1}}
    (listed,) = replies(listing(boxes, ListMailbox(PEER, "t0", "bob")))[0].body.messages
    assert listed["subject"] == "read over IMAP"
    (exported,) = replies(export_page(boxes, ExportPage(PEER, "t0", "bob", "", 10)))[0].body.messages
    assert exported.msg_id == "m1" and exported.raw.endswith(b"hi\r\n")
