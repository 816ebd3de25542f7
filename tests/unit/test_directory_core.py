"""The directory's core (nodes/directory/core.py) read whole: every refusal with its words and
code, every change with what it persists, publishes, answers and logs, the heartbeat's schedule,
and the named modifications it remembers. Written from the survivors of the core's mutation run
(docs/testing.md): each of them had gone unseen by the tests before."""

from __future__ import annotations

import pytest

from nodes.core import Publish, Request
from nodes.directory import core as dircore
from nodes.directory.core import DirectoryCore, PersistDirectory, organisation
from nodes.directory.records import Change
from protocol import INVALID, Frame, body_of

from .helpers import PEER, events, recipient, refusal, refusal_log, replies, request

SERVERS = ["ex1", "ex2"]


def add(d: DirectoryCore, alias: str, now: float = 1.0, **kw) -> list:
    return d.on_event(request("dir.add", {"alias": alias, "display_name": "", "home_server": "ex1",
                                          "alternate": None, "deliver_to_both": False, **kw}), now)


def modify(d: DirectoryCore, alias: str, changes: dict, op: str | None = None, now: float = 2.0,
           src: str = "test") -> list:
    return d.on_event(request("dir.modify", {"alias": alias, "changes": changes, "op": op}, src), now)


def with_users(*aliases: str) -> DirectoryCore:
    d = DirectoryCore(SERVERS)
    for alias in aliases:
        add(d, alias)
    return d


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def test_an_organisation_is_a_directory_state_with_its_users_in_order():
    state = organisation([{"alias": "carol", "home": "ex2"},
                          {"alias": "bob", "home": "ex1", "alternate": "carol", "deliver_to_both": 1}])
    assert state == {"usn": 2, "ops": [],
                     "recipients": {"carol": recipient("carol", "ex2", 1),
                                    "bob": recipient("bob", "ex1", 2, alternate="carol", both=True)}}
    d = DirectoryCore(SERVERS, state)
    assert d.status(0.0) == {"usn": 2, "recipients": 2} and d.ops == {}
    assert replies(add(d, "dave"))[0].body.usn == 3, "the next USN follows the organisation's"


def test_the_directory_says_what_it_loaded_and_beats_at_once_then_backs_off_to_its_ceiling():
    d = DirectoryCore(SERVERS, organisation([{"alias": "bob", "home": "ex1"}]))
    assert [(e.event, e.fields) for e in events(d.start(10.0))] == [("directory.loaded", {"usn": 1, "recipients": 1})]
    assert d.next_wakeup() == 10.0
    beats, now = [], 10.0
    for _ in range(6):
        (beat,) = d.tick(now)
        assert isinstance(beat, Publish) and beat.type == "dir.heartbeat" and beat.body.usn == 1
        beats.append(d.next_wakeup() - now)
        now = d.next_wakeup()
    assert beats == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert dircore.HEARTBEAT_MAX_S == 4.0


def test_a_change_brings_the_next_beat_near_and_starts_the_back_off_again():
    d = with_users("bob")
    d.start(0.0)
    for now in (0.0, 0.5, 1.5, 3.5):
        d.tick(now)
    assert d.next_wakeup() == 7.5
    add(d, "carol", now=4.0)
    assert d.next_wakeup() == 4.5, "a subscriber that missed the change hears of it within half a second"
    d.tick(4.5)
    assert d.next_wakeup() == 5.0, "the back-off starts again from its first step"
    add(d, "dave", now=4.6)
    assert d.next_wakeup() == 5.0, "a beat already nearer stays"
    d.tick(5.0)
    assert d.next_wakeup() == 5.5
    d.on_event(request("dir.lookup", {"alias": "bob"}), 5.1)
    modify(d, "nobody", {"home_server": "ex2"}, now=5.2)
    d.tick(5.5)
    assert d.next_wakeup() == 6.5, "a lookup or a refusal is no change: the back-off goes on"


def test_anything_but_a_request_is_ignored_and_an_unknown_request_refused():
    d = with_users("bob")
    assert d.on_event(object(), 1.0) == []
    reason = "the directory does not handle 'store.lock'"
    assert refusal(d.on_event(request("store.lock", {"mailbox": "bob", "owner": "m"}), 1.0)) == (
        reason, None, [refusal_log("store.lock", reason)])


@pytest.mark.parametrize("alias, kw, reason", [
    ("Bad Alias", {}, "'Bad Alias' is not a valid alias (lower-case letters, digits, . _ -; at most 64)"),
    ("postmaster", {}, "'postmaster' is reserved: every store keeps the postmaster mailbox"),
    ("bob", {}, "user 'bob' already exists"),
    ("x", {"home_server": "ex9"}, "unknown server 'ex9' (servers: ex1, ex2)"),
    ("x", {"alternate": "x"}, "a user cannot be its own alternate recipient"),
    ("x", {"alternate": "nobody"}, "unknown alternate recipient 'nobody'"),
    ("x", {"deliver_to_both": True}, "deliver-to-both needs an alternate recipient"),
])
def test_an_add_refused_says_why_with_invalid_and_changes_nothing(alias, kw, reason):
    d = with_users("bob")
    before = {k: dict(v) for k, v in d.recipients.items()}
    actions = add(d, alias, **kw)
    assert refusal(actions) == (reason, INVALID, [refusal_log("dir.add", reason)])
    assert d.usn == 1 and d.recipients == before and not of(actions, PersistDirectory) and not of(actions, Publish)


def test_an_add_is_persisted_published_answered_and_logged_in_that_order():
    d = with_users("carol")
    actions = add(d, "bob", display_name="Bob B", alternate="carol", deliver_to_both=True)
    entry = recipient("bob", "ex1", 2, alternate="carol", both=True) | {"display_name": "Bob B"}
    (persist,), (publish,), (reply,) = of(actions, PersistDirectory), of(actions, Publish), replies(actions)
    assert persist.change == Change(2, entry, None)
    assert persist.state == {"usn": 2, "recipients": {"carol": recipient("carol", "ex1", 1), "bob": entry}, "ops": []}
    assert publish.type == "dir.change" and publish.body == {"usn": 2, "recipient": entry}
    assert reply.type == "dir.changed" and (reply.body.usn, reply.body.recipient["alias"]) == (2, "bob")
    assert actions.index(persist) < actions.index(publish) < actions.index(reply), "durable before told"
    assert [(e.event, e.fields) for e in events(actions)] == [("directory.added", {
        "usn": 2, "alias": "bob", "home_server": "ex1", "alternate": "carol", "deliver_to_both": True})]
    assert d.recipients["bob"] == entry
    add(d, "dave")
    assert d.recipients["dave"]["display_name"] == "dave", "no display name given: the alias"


@pytest.mark.parametrize("changes, reason", [
    ({"usn": 9}, "cannot change 'usn' (can change: home_server, alternate, deliver_to_both, display_name, "
                 "reject_from)"),
    ({"home_server": 2}, "'home_server' has the wrong type"),
    ({"alternate": 1}, "'alternate' has the wrong type"),
    ({"deliver_to_both": "yes"}, "'deliver_to_both' has the wrong type"),
    ({"display_name": None}, "'display_name' has the wrong type"),
    ({"reject_from": "eve"}, "'reject_from' has the wrong type"),
    ({"home_server": "ex9"}, "unknown server 'ex9' (servers: ex1, ex2)"),
    ({"alternate": "bob"}, "a user cannot be its own alternate recipient"),
    ({"alternate": None}, "deliver-to-both needs an alternate recipient"),
    ({"reject_from": ["carol", "eve"]}, "reject_from: unknown recipient 'eve'"),
    ({"reject_from": ["eve", "Not An Alias" + "x" * 80]},
     "reject_from: 'Not An Alias" + "x" * 52 + "' is not a valid alias (lower-case letters, digits, . _ -; at most 64)"),
])
def test_a_modification_refused_says_why_with_invalid_and_changes_nothing(changes, reason):
    d = with_users("carol")
    add(d, "bob", alternate="carol", deliver_to_both=True)
    before = {k: dict(v) for k, v in d.recipients.items()}
    actions = modify(d, "bob", {"display_name": "B", **changes}, op="m.1.x")
    assert refusal(actions) == (reason, INVALID, [refusal_log("dir.modify", reason)])
    assert d.usn == 2 and d.recipients == before and d.ops == {}, "nothing applied, the op not remembered"


def test_a_restriction_s_name_the_list_held_before_stays_though_nobody_has_it():
    """A restriction names recipients the directory holds; one an older directory kept (no
    check then) does not stop its user being changed, nor the list being set again with it."""
    d = with_users("carol")
    d.recipients["carol"]["reject_from"] = ["gone"]
    modify(d, "carol", {"display_name": "C"})
    modify(d, "carol", {"reject_from": ["gone", "carol"]})
    assert d.recipients["carol"]["reject_from"] == ["gone", "carol"] and d.usn == 3
    assert refusal(modify(d, "carol", {"reject_from": ["gone", "eve"]}))[0] == "reject_from: unknown recipient 'eve'"


def test_a_modification_of_nobody_is_refused():
    d = with_users("bob")
    reason = "unknown user 'carol'"
    assert refusal(modify(d, "carol", {"home_server": "ex2"})) == (reason, INVALID, [refusal_log("dir.modify", reason)])


def test_a_modification_keeps_what_it_does_not_change_and_logs_its_changes_and_op():
    d = with_users("carol", "eve")
    add(d, "bob", alternate="carol", deliver_to_both=True)
    actions = modify(d, "bob", {"deliver_to_both": False, "alternate": None, "reject_from": ["eve"]}, op="m.1.x")
    entry = recipient("bob", "ex1", 4) | {"reject_from": ["eve"]}
    assert d.recipients["bob"] == entry and d.ops == {"m.1.x": 4}
    (persist,) = of(actions, PersistDirectory)
    assert persist.change == Change(4, entry, "m.1.x") and persist.state["ops"] == [("m.1.x", 4)]
    assert of(actions, Publish)[0].body == {"usn": 4, "recipient": entry}
    assert [(e.event, e.fields) for e in events(actions)] == [("directory.modified", {
        "usn": 4, "alias": "bob", "home_server": "ex1", "alternate": None, "deliver_to_both": False,
        "op": "m.1.x", "changes": {"deliver_to_both": False, "alternate": None, "reject_from": ["eve"]}})]
    plain = modify(d, "bob", {"home_server": "ex2"})
    assert "op" not in events(plain)[0].fields and d.ops == {"m.1.x": 4}, "a change without a name is not remembered"
    assert of(plain, PersistDirectory)[0].change.op is None


def test_a_repeated_op_is_answered_with_its_first_usn_and_the_recipient_as_it_is_now():
    d = with_users("bob")
    modify(d, "bob", {"home_server": "ex2"}, op="m.1.set_home")
    modify(d, "bob", {"display_name": "Bob"})
    actions = modify(d, "bob", {"home_server": "ex2"}, op="m.1.set_home", src="orchestrator")
    (reply,) = replies(actions)
    assert reply.type == "dir.changed" and reply.body.usn == 2 and reply.body.recipient["display_name"] == "Bob"
    assert [(e.event, e.fields) for e in events(actions)] == [("directory.repeat", {
        "op": "m.1.set_home", "usn": 2, "alias": "bob", "src": "orchestrator"})]
    assert d.usn == 3


def test_the_oldest_named_modification_is_forgotten_past_the_limit(monkeypatch):
    monkeypatch.setattr(dircore, "MAX_OPS", 3)
    d = with_users("bob")
    for i in range(4):
        modify(d, "bob", {"display_name": f"b{i}"}, op=f"op{i}")
    assert list(d.ops) == ["op1", "op2", "op3"]
    assert replies(modify(d, "bob", {"display_name": "b3"}, op="op3"))[0].body.usn == 5 and d.usn == 5
    assert replies(modify(d, "bob", {"display_name": "b0"}, op="op0"))[0].body.usn == 6, "forgotten: applied again"


def test_a_lookup_answers_the_entry_or_nothing_with_the_usn_and_the_trace():
    d = with_users("bob")
    found = d.on_event(Request(PEER, Frame("dir.lookup", "t-l1", "mta.ex1", 1, body_of("dir.lookup", {"alias": "bob"}),
                                           "trace-7")), 1.0)
    (reply,) = replies(found)
    assert (reply.type, reply.trace, reply.body.usn, reply.body.recipient) == (
        "dir.entry", "trace-7", 1, recipient("bob", "ex1", 1))
    assert [(e.event, e.fields) for e in events(found)] == [("directory.lookup", {
        "alias": "bob", "found": True, "src": "mta.ex1", "usn": 1})]
    missing = d.on_event(request("dir.lookup", {"alias": "carol"}), 1.0)
    assert replies(missing)[0].body.recipient is None and events(missing)[0].fields["found"] is False


def test_a_snapshot_holds_every_recipient_and_the_usn():
    d = with_users("bob", "carol")
    actions = d.on_event(request("dir.snapshot", {}, "mta.ex2"), 1.0)
    (reply,) = replies(actions)
    assert reply.type == "dir.snapshot_reply" and reply.body.usn == 2
    assert reply.body.recipients == [recipient("bob", "ex1", 1), recipient("carol", "ex1", 2)]
    assert [(e.event, e.fields) for e in events(actions)] == [("directory.snapshot", {"usn": 2, "src": "mta.ex2"})]


def test_a_hosted_directory_answers_ready_and_beats_as_soon_as_it_starts():
    """The cluster's start waits for each node's pong to say ready; the directory is ready once
    its state is loaded, and its first heartbeat goes out at its start."""
    from nodes.host import NodeHost
    from nodes.logs import memory_log

    host = NodeHost("directory", DirectoryCore(SERVERS), memory_log("directory", lambda: 0.0), seed=1)
    host.start(5.0)
    assert host.next_wakeup() == 5.0
    host.request(PEER, Frame("ping", "p1", "cli", 1, {}), 5.0)
    (pong,) = [out.frame for out in host.commit() if out.frame.type == "pong"]
    assert pong.body["ready"] is True
