"""The store's side of Move User: a target that takes no mail until the move opens it, and a
move that, once over, can never lock or fill a mailbox again."""

from __future__ import annotations

from nodes.core import DiskSpace
from protocol import NO_MAILBOX, NOT_LOCKED, as_dict
from nodes.store.actions import CreateMailbox, DeleteMailbox, PersistLocks
from nodes.store.core import StoreCore

from .helpers import events, replies, request, sends

PAGE = [{"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"copy of m1"}]


def ask(store: StoreCore, type_: str, now: float = 1.0, **body) -> list:
    return store.on_event(request(type_, body), now)


def delivery(store: StoreCore, msg_id: str = "m1", mailbox: str = "bob", now: float = 1.0, expires_at: float = 1e12,
             raw: bytes = b"mail", ndr_for: str | None = None, ndr_rcpts: tuple[str, ...] = ()) -> list:
    """The store's actions for one store.deliver."""
    return ask(store, "store.deliver", now, msg_id=msg_id, mailbox=mailbox, raw=raw, ndr_for=ndr_for,
               ndr_rcpts=list(ndr_rcpts), expires_at=expires_at)


def deliver(store: StoreCore, msg_id: str, mailbox: str = "bob", now: float = 1.0,
            expires_at: float = 1e12) -> tuple[str, str]:
    body = replies(delivery(store, msg_id, mailbox, now, expires_at))[0].body
    return body.outcome, body.reason


def restarted(store: StoreCore, persisted: PersistLocks) -> StoreCore:
    """The store as a restart rebuilds it: its mailboxes from disk, its move state from locks.json."""
    return StoreCore(store.server, {m: set(ids) for m, ids in store.mailboxes.items()}, persisted.locks, "b2",
                     persisted.incoming, persisted.ended)


def test_a_target_takes_no_mail_until_the_move_opens_it():
    target = StoreCore("ex2", {}, {}, "b")
    actions = ask(target, "store.import", mailbox="bob", owner="move.1", messages=PAGE)
    kinds = [type(a) for a in actions]
    assert kinds.index(PersistLocks) < kinds.index(CreateMailbox), "the lock is on disk before the folder exists"
    assert target.locked == {"bob": "move.1"} and target.incoming == {"bob"}
    # an MTA whose cache still homes bob here (he lived here before) tries to deliver
    assert deliver(target, "m2") == ("deferred", "mailbox being moved here")
    opened = ask(target, "store.unlock", mailbox="bob", owner="move.1")
    assert replies(opened)[0].type == "ok" and events(opened, "store.opened")
    assert sends(opened, "store.released")[0].to == "mta.ex2", "its MTA retries what it deferred, at once"
    assert deliver(target, "m2") == ("delivered", "")


def test_an_ended_move_deletes_its_copy_and_unlocks_the_source():
    source = StoreCore("ex1", {"bob": {"m1", "m2"}}, {}, "b")
    target = StoreCore("ex2", {}, {}, "b")
    ask(source, "store.lock", mailbox="bob", owner="move.1")
    ask(target, "store.import", mailbox="bob", owner="move.1", messages=PAGE)
    ended = ask(target, "store.end_move", mailbox="bob", owner="move.1")
    kinds = [type(a) for a in ended]
    assert kinds.index(DeleteMailbox) < kinds.index(PersistLocks), "no folder outlives the state that locks it"
    assert as_dict(replies(ended)[0].body) == {"mailbox": "bob", "owner": "move.1", "unlocked": False, "deleted": 1}
    assert "bob" not in target.mailboxes and not target.locked
    ended = ask(source, "store.end_move", mailbox="bob", owner="move.1")
    assert replies(ended)[0].body.unlocked and sends(ended, "store.released")
    assert source.mailboxes["bob"] == {"m1", "m2"} and not source.locked, "the source keeps every message"


def test_a_late_lock_or_import_of_an_ended_move_is_refused():
    source = StoreCore("ex1", {"bob": {"m1"}}, {}, "b")
    # the store was down when the move tried to lock: the move gave up and ended it here; its
    # lock requests, queued meanwhile, arrive after that (or a faulty link reorders them)
    ended = ask(source, "store.end_move", mailbox="bob", owner="move.1")
    assert as_dict(replies(ended)[0].body) == {"mailbox": "bob", "owner": "move.1", "unlocked": False, "deleted": 0}
    late = ask(source, "store.lock", mailbox="bob", owner="move.1")
    assert replies(late)[0].type == "error" and "has ended" in replies(late)[0].body.reason
    assert not source.locked and deliver(source, "m2") == ("delivered", "")
    target = StoreCore("ex2", {}, {}, "b")
    ask(target, "store.end_move", mailbox="bob", owner="move.1")
    late = ask(target, "store.import", mailbox="bob", owner="move.1", messages=PAGE)
    assert replies(late)[0].type == "error" and "bob" not in target.mailboxes
    again = ask(source, "store.end_move", mailbox="bob", owner="move.1")
    assert replies(again)[0].type == "store.move_ended" and events(again, "store.repeat")
    assert replies(ask(source, "store.lock", mailbox="bob", owner="move.2"))[0].type == "ok", "a new move locks as usual"


def test_a_move_never_copies_into_a_live_mailbox_or_one_another_move_holds():
    store = StoreCore("ex2", {"bob": {"m9"}}, {}, "b")
    live = ask(store, "store.import", mailbox="bob", owner="move.1", messages=PAGE)
    assert replies(live)[0].type == "error" and "(live)" in replies(live)[0].body.reason
    ask(store, "store.import", mailbox="carol", owner="move.2", messages=PAGE)
    other = ask(store, "store.import", mailbox="carol", owner="move.3", messages=PAGE)
    assert "locked by move.2" in replies(other)[0].body.reason
    assert store.mailboxes == {"bob": {"m9"}, "carol": {"m1"}}
    gone = ask(store, "store.delete", mailbox="carol", owner="move.3")
    assert replies(gone)[0].type == "error" and "carol" in store.mailboxes, "only the holder deletes"


def test_the_move_state_survives_a_restart():
    store = StoreCore("ex2", {}, {}, "b")
    persisted = [a for a in ask(store, "store.import", mailbox="bob", owner="move.1", messages=PAGE)
                 if isinstance(a, PersistLocks)][-1]
    again = restarted(store, persisted)
    assert again.locked == {"bob": "move.1"} and again.incoming == {"bob"}
    assert deliver(again, "m2") == ("deferred", "mailbox being moved here")
    persisted = [a for a in ask(again, "store.end_move", mailbox="bob", owner="move.1")
                 if isinstance(a, PersistLocks)][-1]
    third = restarted(again, persisted)
    assert "move.1" in third.ended
    assert replies(ask(third, "store.import", mailbox="bob", owner="move.1", messages=PAGE))[0].type == "error"


def test_a_low_disk_defers_deliveries_and_refuses_imports_until_there_is_room():
    store = StoreCore("ex1", {"bob": set()}, {}, "b", min_free_bytes=1000)
    assert events(store.on_event(DiskSpace(500), 1.0), "storage.low")
    outcome, reason = deliver(store, "m1")
    assert outcome == "deferred" and "insufficient storage" in reason
    refused = ask(store, "store.import", mailbox="carol", owner="move.1", messages=PAGE)
    assert replies(refused)[0].type == "error" and "carol" not in store.mailboxes
    assert events(store.on_event(DiskSpace(10_000), 2.0), "storage.ok")
    assert deliver(store, "m1") == ("delivered", "")
    assert store.on_event(DiskSpace(9_000), 3.0) == [], "a change above the floor says nothing"


def test_refusals_a_move_acts_on_carry_a_declared_code_not_only_words():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    gone = replies(store.on_event(request("store.delete", {"mailbox": "carol", "owner": "move.1"}), 1.0))[0]
    open_ = replies(store.on_event(request("store.unlock", {"mailbox": "bob", "owner": "move.1"}), 1.0))[0]
    assert (gone.type, gone.body.code) == ("error", NO_MAILBOX)
    assert (open_.type, open_.body.code) == ("error", NOT_LOCKED)


def test_a_move_carries_every_folder_every_flag_and_every_file_a_reader_named(tmp_path):
    """Issue 34, story 4: the copy carried new/ and cur/ of the mailbox alone, into new/, so a
    user's folders were deleted with the source and every flag was lost. Export, then import page
    by page on a Maildir store, as a move does; a name or folder that climbs out is refused."""
    from nodes.store.maildir import Maildirs
    from nodes.store.node import export_page, wiring
    from nodes.store.actions import ExportPage
    from nodes.config import Settings
    from nodes.node_settings import of

    source = Maildirs(tmp_path / "ex1", fsync=False)
    source.create("bob")
    files = {"new/1000.m1.xcon": b"m1", "cur/1001.m2.xcon:2,FS": b"m2", ".Archive/new/1002.m3.xcon": b"m3",
             ".Archive/cur/1000.m1.xcon:2,S": b"m1", ".Archive.2026/cur/1700000000.M1P2.host,S=2:2,": b"appended"}
    for path, raw in files.items():
        (tmp_path / "ex1" / "bob" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ex1" / "bob" / path).write_bytes(raw)
    for folder in (".Archive", ".Archive.2026"):
        for sub in ("tmp", "new", "cur"):
            (tmp_path / "ex1" / "bob" / folder / sub).mkdir(exist_ok=True)
    target_disk = Maildirs(tmp_path / "ex2", fsync=False)
    target = wiring("ex2", of(Settings(("ex1", "ex2"), "sp4"), "store.ex2"), "b", target_disk)
    after, pages = "", 0
    while True:  # two messages a page: the cursor crosses folders
        (page,) = export_page(source, ExportPage(b"peer", "r", "bob", after, 2))
        pages += 1
        actions = target.core.on_event(request("store.import", {"mailbox": "bob", "owner": "move.1",
                                                                "messages": page.body.messages}), 1.0)
        for a in actions:
            if type(a) in target.executors:
                target.executors[type(a)](a)
        if page.body.next is None:
            break
        after = page.body.next
    target_disk.sync()
    assert pages == 3
    carried = {str(p.relative_to(tmp_path / "ex2" / "bob")): p.read_bytes()
               for p in (tmp_path / "ex2" / "bob").rglob("*") if p.is_file() and p.name != "maildirfolder"}
    assert carried == files and (tmp_path / "ex2" / "bob" / ".Archive" / "maildirfolder").exists()
    assert target.core.mailboxes["bob"] == {"m1", "m2", "m3"}, "a delivery of what he filed away is a duplicate"
    store = StoreCore("ex3", {}, {}, "b")
    for bad in ({"name": "../../x", "raw": b"x", "folder": "", "info": None},
                {"name": "1.m9.xcon", "raw": b"x", "folder": "../bob", "info": None},
                {"name": "1.m9.xcon", "raw": b"x", "folder": ".A/../..", "info": None},
                {"name": "1.m9.xcon", "raw": b"x", "folder": "", "info": "2,S/../x"}):
        (answer,) = replies(ask(store, "store.import", mailbox="bob", owner="move.2", messages=[bad]))
        assert answer.type == "error", bad
    assert "bob" not in store.mailboxes, "nothing of a refused page was taken"


def test_a_message_expunged_between_the_listing_and_its_read_is_passed_over_and_the_cursor_goes_on(tmp_path):
    """A reader that expunges a message while its page is read (the user held out only from the
    hold on): the page carries what is there, and the key after it is still the cursor."""
    from nodes.store.actions import ExportPage
    from nodes.store.maildir import Maildirs
    from nodes.store.node import export_page

    store = Maildirs(tmp_path, fsync=False)
    store.create("bob")
    for n in (1, 2, 3):
        (tmp_path / "bob" / "new" / f"100{n}.m{n}.xcon").write_bytes(b"m")
    read = store.read

    def expunged_meanwhile(mailbox, name, folder=""):
        if name == "1002.m2.xcon":
            raise FileNotFoundError(name)
        return read(mailbox, name, folder)

    store.read = expunged_meanwhile
    (page,) = export_page(store, ExportPage(b"p", "r", "bob", "", 2))
    assert [m.name for m in page.body.messages] == ["1001.m1.xcon"] and page.body.next == "1002.m2.xcon"
    (last,) = export_page(store, ExportPage(b"p", "r", "bob", page.body.next, 2))
    assert [m.name for m in last.body.messages] == ["1003.m3.xcon"] and last.body.next is None
