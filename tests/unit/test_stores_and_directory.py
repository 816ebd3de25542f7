"""The store and directory cores: the states and refusals the move and the MTA rely on."""

from __future__ import annotations

import json

from nodes.core import Publish
from nodes.directory.core import DirectoryCore, PersistDirectory
from nodes.directory.records import Change
from nodes.store.actions import WriteMessage, msg_id_of
from nodes.store.core import StoreCore

from .helpers import events, replies, request, sends
from .test_directory_core import add, modify
from .test_store_moves import delivery


def deliver(store, msg_id="m1", mailbox="bob", now=1.0):
    actions = delivery(store, msg_id, mailbox, now)
    return actions, replies(actions)[0].body.outcome


def test_store_delivery_outcomes():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    actions, outcome = deliver(store)
    assert outcome == "delivered" and any(isinstance(a, WriteMessage) for a in actions)
    actions, outcome = deliver(store)
    assert outcome == "duplicate" and not any(isinstance(a, WriteMessage) for a in actions)
    assert deliver(store, mailbox="zed")[1] == "not_here"
    store.on_event(request("store.lock", {"mailbox": "bob", "owner": "move.1"}), 2.0)
    assert deliver(store, msg_id="m2")[1] == "deferred"


def test_a_lock_belongs_to_its_owner_and_a_repeat_by_the_owner_is_harmless():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    lock = lambda owner: replies(store.on_event(request("store.lock", {"mailbox": "bob", "owner": owner}), 1.0))[0]  # noqa: E731
    unlock = lambda owner: replies(store.on_event(request("store.unlock", {"mailbox": "bob", "owner": owner}), 1.0))[0]  # noqa: E731
    assert lock("move.1").type == "ok" and lock("move.1").type == "ok"
    assert lock("move.2").type == "error" and unlock("move.2").type == "error"
    assert unlock("move.1").type == "ok" and store.locked == {}


def test_store_refuses_invalid_states():
    store = StoreCore("ex1", {"bob": set()}, {}, "b")
    for type_, body in [("store.unlock", {"mailbox": "bob", "owner": "m"}), ("store.lock", {"mailbox": "zed", "owner": "m"}),
                        ("store.create", {"mailbox": "bob", "owner": None}), ("store.delete", {"mailbox": "zed", "owner": "m"}),
                        ("store.delete", {"mailbox": "bob", "owner": "m"}),  # not locked by m: live mail
                        ("store.lock", {"mailbox": "../etc", "owner": "m"})]:
        actions = store.on_event(request(type_, body), 1.0)
        assert replies(actions)[0].type == "error", (type_, body)
    assert store.status(1.0) == {"mailboxes": {"bob": 0}, "locked": {}, "incoming": [], "free_bytes": None}


def test_delete_by_the_lock_owner_tells_the_mta():
    store = StoreCore("ex1", {"bob": {"m1"}}, {"bob": "move.1"}, "b")
    actions = store.on_event(request("store.delete", {"mailbox": "bob", "owner": "move.1"}), 1.0)
    released = sends(actions, "store.released")
    assert released and released[0].to == "mta.ex1" and "bob" not in store.mailboxes
    again = store.on_event(request("store.delete", {"mailbox": "bob", "owner": "move.1"}), 1.1)
    assert replies(again)[0].type == "ok" and events(again, "store.repeat"), "a retried delete is answered again"


def test_import_is_idempotent():
    store = StoreCore("ex2", {}, {}, "b")
    page = {"mailbox": "bob", "owner": "move.1", "messages": [{"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"r"}]}
    first = store.on_event(request("store.import", page), 1.0)
    again = store.on_event(request("store.import", page), 1.1)
    assert replies(first)[0].body.count == 1 and replies(again)[0].body.count == 0
    assert msg_id_of("1000.ex2.ab.3.ndr.bob+carol.xcon") == "ex2.ab.3.ndr.bob+carol"


def test_directory_usn_grows_and_changes_are_validated():
    d = DirectoryCore(["ex1", "ex2"])
    assert replies(add(d, "carol"))[0].body.usn == 1
    actions = add(d, "bob", alternate="carol", deliver_to_both=True)
    assert replies(actions)[0].body.usn == 2
    persist = [a for a in actions if isinstance(a, PersistDirectory)]
    assert persist and actions.index(persist[0]) < actions.index(replies(actions)[0]), "durable before answered"
    for bad in [add(d, "carol"), add(d, "x", home_server="ex9"), add(d, "y", alternate="nobody"),
                add(d, "z", deliver_to_both=True), add(d, "Bad Alias")]:
        assert replies(bad)[0].type == "error"
    moved = modify(d, "bob", {"home_server": "ex2"})
    assert replies(moved)[0].body.recipient["home_server"] == "ex2" and d.usn == 3
    wrong = modify(d, "bob", {"usn": 99})
    assert replies(wrong)[0].type == "error" and d.usn == 3
    assert events(moved, "directory.modified")


def test_a_repeated_op_is_applied_once():
    d = DirectoryCore(["ex1", "ex2"])
    add(d, "bob")
    move = {"alias": "bob", "changes": {"home_server": "ex2"}, "op": "move.b.1.set_home"}
    first = d.on_event(request("dir.modify", move), 2.0)
    again = d.on_event(request("dir.modify", move), 3.0)  # the orchestrator's retry, or its restart's
    assert replies(first)[0].body.usn == replies(again)[0].body.usn == d.usn == 2
    assert [a for a in again if isinstance(a, (PersistDirectory, Publish))] == [], "no second change on the feed"
    assert events(again, "directory.repeat")
    restored = DirectoryCore(["ex1", "ex2"], [a for a in first if isinstance(a, PersistDirectory)][0].state)
    assert replies(restored.on_event(request("dir.modify", move), 4.0))[0].body.usn == 2, "remembered on disk"
    other = d.on_event(request("dir.modify", {**move, "op": "move.b.1.restore_alternate"}), 5.0)
    assert replies(other)[0].body.usn == 3


def test_the_directory_logs_each_change_and_compacts_into_its_snapshot(tmp_path, monkeypatch):
    """Found by the simulator's scaling runs: the directory rewrote its whole file per change,
    O(N^2) to add N users (72% of a 1,000-user world's time). Now a change is one logged line."""
    from nodes.directory import node as dirnode

    monkeypatch.setattr(dirnode, "COMPACT_MIN", 3)
    path = tmp_path / "directory" / "directory.json"
    disk, memory = dirnode.DirectoryFile(path), dirnode.MemoryDirectoryFile()
    cores = [DirectoryCore(["ex1", "ex2"], s.load()) for s in (disk, memory)]
    for core, storage in zip(cores, (disk, memory)):
        for i in range(5):
            actions = add(core, f"u{i}")
            for a in actions:
                if isinstance(a, PersistDirectory):
                    storage.save(a)
        core.on_event(request("dir.modify", {"alias": "u1", "changes": {"home_server": "ex2"}, "op": "m.1.set_home"}), 2.0)
        storage.save(PersistDirectory({"usn": core.usn, "recipients": core.recipients, "ops": list(core.ops.items())},
                                      Change(core.usn, core.recipients["u1"], "m.1.set_home")))
    # 5 changes logged; the 6th finds as many logged as there are recipients, and compacts instead
    assert path.with_name("changes.jsonl").read_text() == "" and json.loads(path.read_text())["usn"] == 6
    for read in (dirnode.read_directory(path), memory.state(), dirnode.DirectoryFile(path).load(), memory.load()):
        assert read["usn"] == 6 and read["recipients"]["u1"]["home_server"] == "ex2"
        assert sorted(read["recipients"]) == [f"u{i}" for i in range(5)] and dict(read["ops"]) == {"m.1.set_home": 6}
    actions = add(cores[0], "u9", now=3.0)
    disk.save(next(a for a in actions if isinstance(a, PersistDirectory)))
    assert len(path.with_name("changes.jsonl").read_text().splitlines()) == 1 and json.loads(path.read_text())["usn"] == 6
    with open(path.with_name("changes.jsonl"), "ab") as f:
        f.write(b'{"usn": 8, "recipient"')  # a line a crash cut short: never acknowledged
    assert dirnode.DirectoryFile(path).load()["usn"] == 7 and dirnode.read_directory(path)["usn"] == 7


def test_the_directory_reads_its_records_by_their_types_and_takes_up_a_line_of_the_form_before():
    """A change line of a foreign home, or with a name that is not an alias, is damage in the
    middle; the lines around it are taken up, one written before `op` was left out when None too."""
    from nodes.directory.node import replay
    from nodes.directory.records import snapshot_problem
    from nodes.records import encode_line

    def bob(usn, **entry):
        return {"alias": "bob", "display_name": "Bob", "home_server": "ex1", "alternate": None,
                "deliver_to_both": False, "usn": usn, **entry}

    lines = [encode_line({"usn": 1, "recipient": bob(1), "op": None}),  # the form before: "op": null
             encode_line({"usn": 2, "recipient": bob(2, home_server="ex7")}),
             encode_line({"usn": 3, "recipient": bob(3, alias="Bob Smith")}),
             encode_line({"usn": 4, "recipient": bob(4, home_server="ex2"), "op": "m.1.set_home"})]
    state, changes, good, found = replay(None, b"".join(lines), ["ex1", "ex2"])
    assert changes == 2 and good == len(b"".join(lines))
    assert found.damage == [(len(lines[0]), len(lines[0]) + len(lines[1]) + len(lines[2]))]
    assert state["recipients"]["bob"] == bob(4, home_server="ex2") and state["ops"] == [("m.1.set_home", 4)]
    assert snapshot_problem({"usn": "7", "recipients": {}}, None).startswith("not a directory snapshot (Expected `int`")
    assert "'ex7', which is not a server" in snapshot_problem({"usn": 2, "recipients": {"bob": bob(2, home_server="ex7")}},
                                                             ["ex1", "ex2"])
