"""The IMS's core (nodes.ims.core) on its queue's files (nodes.ims.outbound): each item ends once,
relayed or handed back, across restarts; and the door's rules: what RCPT and DATA answer."""

from __future__ import annotations

from pathlib import Path

from nodes.config import Settings
from nodes.node_settings import of
from nodes.ims import core
from nodes.ims.outbound import MemoryOutbound, Outbound

from .helpers import events, held, replies, request, response, sends

SMARTHOST = "127.0.0.1:25"


def body(msg_id: str, rcpt: str = "dave@outside.test") -> dict:
    return {"msg_id": msg_id, "sender": "alice", "rcpt": rcpt, "raw": b"Subject: s\r\n\r\nx\r\n", "ndr_for": None,
            "ndr_rcpts": [], "accepted_at": 1.0, "priority": "normal", "expires_at": 61.0}


class Ims:
    """An IMS's core on `queue`, its storage actions done as its host does them."""

    def __init__(self, queue: Outbound | MemoryOutbound, smarthost: str = SMARTHOST):
        self.queue, self.relays = queue, []
        self.wiring = core.wiring("ex1", of(Settings(servers=("ex1",)), "ims.ex1"), "b1", 7, smarthost, queue, self.relays.append)
        self.core = self.wiring.core

    def run(self, actions: list) -> list:
        actions = held(actions)
        for a in actions:
            fn = self.wiring.executors.get(type(a))
            if fn is not None:
                fn(a)
        return actions

    def put(self, msg_id: str, now: float) -> list:
        return self.run(self.core.on_event(request("ims.outbound", body(msg_id), "mta.ex1"), now))

    def tick(self, now: float) -> list:
        return self.run(self.core.tick(now))

    def relayed(self, key: str, code: int | None, now: float) -> list:
        return self.run(self.core.on_event(core.Relayed(key, code, f"{code} words"), now))


def test_an_item_ends_once_relayed_or_handed_back_and_is_not_taken_again_even_after_a_restart(tmp_path):
    ims = Ims(Outbound(tmp_path, fsync=False))
    assert [r.type for r in replies(ims.put("m1", 2.0))] == ["ok"]
    ims.put("m2", 2.0)
    assert ims.put("m2", 2.5) and len(ims.core.items) == 2, "sent again before it ended: the same item"
    ims.tick(2.5)
    first, second = ims.relays
    assert {first.rcpt, second.rcpt} == {"dave@outside.test"} and first.mail_from == "alice@xcon.test"
    one, other = sorted(ims.core.items.values(), key=lambda i: i.msg_id)
    by_key = {r.key: r for r in ims.relays}
    assert events(ims.relayed(by_key[one.key].key, 250, 3.0), "ims.relayed")
    failed = events(ims.relayed(other.key, 550, 3.0), "ims.relay_failed")
    assert failed and failed[0].fields["reason"] == "refused: 550 words"
    assert (tmp_path / "failed" / f"{other.key}.msg").exists() and not (tmp_path / "outbound" / f"{other.key}.msg").exists()
    (back,) = sends(ims.tick(3.0), "mta.relay_failed")
    assert back.body.reason == "refused" and back.body.diagnostic == "refused: 550 words"
    assert events(ims.run(ims.core.on_event(response(back, "ok", {}), 3.1)), "ims.returned")
    again = Ims(Outbound(tmp_path, fsync=False))  # as a restart reads the files
    for q in (ims, again):
        assert q.core.items == {}
        assert [r.type for r in replies(q.put("m1", 5.0))] == ["ok"] and [r.type for r in replies(q.put("m2", 5.0))] == ["ok"]
        assert q.core.items == {} and not q.tick(99.0), "ended items are not taken again"


def test_an_item_moved_to_failed_and_killed_before_it_left_outbound_is_failed_at_restart(tmp_path):
    ims = Ims(Outbound(tmp_path, fsync=False), smarthost="")
    ims.put("m1", 2.0)
    (item,) = ims.core.items.values()
    copy = (tmp_path / "outbound" / f"{item.key}.msg").read_bytes()
    assert events(ims.tick(61.0), "ims.relay_failed")[0].fields["reason"] == "expired: no smarthost took it"
    (tmp_path / "outbound" / f"{item.key}.msg").write_bytes(copy)  # the kill came before the unlink
    again = Outbound(tmp_path, fsync=False)
    assert again.items[item.key].failed == "expired: no smarthost took it", "never relayed after it failed"
    assert not (tmp_path / "outbound" / f"{item.key}.msg").exists()


def test_an_item_relaying_is_not_expired_under_its_relay_and_a_4xx_is_tried_again():
    ims = Ims(MemoryOutbound())
    ims.put("m1", 2.0)
    ims.tick(2.0)
    (relay,) = ims.relays
    assert not ims.tick(70.0), "past its lifetime while the smarthost has it: its answer decides"
    deferred = events(ims.relayed(relay.key, 451, 70.0), "ims.relay_deferred")
    assert deferred and ims.core.next_wakeup() <= 70.0  # its lifetime is over: it fails at once
    assert events(ims.tick(70.0), "ims.relay_failed")[0].fields["reason"] == "expired: 451 words"


def test_the_door_says_what_the_mta_says_and_a_fault_cuts_after_the_mta_took_it():
    ims = Ims(MemoryOutbound())
    c = ims.core
    (said,) = replies(c.on_event(request("ims.rcpt", {"address": "bob@elsewhere.test", "peer": "p"}), 1.0))
    assert said.body.code == 550 and "relaying denied" in said.body.text
    (lookup,) = sends(c.on_event(request("ims.rcpt", {"address": "Bob@xcon.test", "peer": "p"}), 1.0), "mta.lookup")
    assert lookup.body.alias == "bob"
    (said,) = replies(c.on_event(response(lookup, "mta.entry", {"recipient": None}), 1.1))
    assert said.body.code == 550 and "unknown user" in said.body.text
    (lookup,) = sends(c.on_event(request("ims.rcpt", {"address": "bob@xcon.test", "peer": "p"}), 2.0))
    (said,) = replies(c.tick(2.0 + core.ASK_S))
    assert said.body.code == 451, "no answer from the MTA: try again later"
    data = {"mail_from": "ann@outside.test", "rcpts": ["bob@xcon.test"], "raw": b"Message-ID: <a@b>\r\n\r\nx\r\n",
            "helo": "client.test", "peer": "p", "peer_ip": "192.0.2.1", "dsn_mail": [], "dsn_rcpt": {}}
    (submit,) = sends(c.on_event(request("ims.data", data), 3.0), "mta.submit_raw")
    assert submit.body.sender == "ann@outside.test" and submit.body.recipients == ["bob"]
    assert b"Received: from client.test (192.0.2.1)" in submit.body.raw
    again = sends(c.on_event(request("ims.data", data), 3.5), "mta.submit_raw")[0]
    assert again.body.msg_id == submit.body.msg_id, "a resend (the same Message-ID) is the same message"
    (said,) = replies(c.on_event(response(submit, "mta.accepted", {"msg_id": submit.body.msg_id, "rcpts": ["bob"]}), 3.1))
    assert said.body.code == 250 and said.body.msg_id == submit.body.msg_id and not said.body.cut
    (said,) = replies(c.on_event(response(again, "error", {"reason": "disk full", "code": None}), 3.1))
    assert said.body.code == 452
    assert replies(c.on_event(request("fault.smtp", {"cut": 1.0, "delay_ms": 200, "seconds": 10.0}), 4.0))
    (submit,) = sends(c.on_event(request("ims.data", data), 4.0))
    cut = c.on_event(response(submit, "mta.accepted", {"msg_id": submit.body.msg_id, "rcpts": ["bob"]}), 4.1)
    assert events(cut, "ims.cut") and not replies(cut), "the answer waits out the fault's delay"
    (said,) = replies(c.tick(4.3))
    assert said.body.code == 421 and said.body.cut


def test_a_simulated_queue_keeps_what_a_kill_would_leave_and_dumps_the_files_a_real_one_reads(tmp_path: Path):
    queue = MemoryOutbound()
    ims = Ims(queue)
    ims.put("m1", 2.0)
    ims.put("m2", 2.0)
    ims.tick(2.0)
    ims.relayed(ims.relays[0].key, 250, 3.0)
    queue.crash(0.5)
    queue.load(None)
    assert set(queue.items) == {ims.relays[1].key} and queue.relayed == {ims.relays[0].key}
    queue.dump(tmp_path)
    disk = Outbound(tmp_path, fsync=False)
    assert set(disk.items) == set(queue.items) and disk.relayed == queue.relayed
