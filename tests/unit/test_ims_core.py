"""The IMS's core (nodes.ims.core) on its queue's files (nodes.ims.outbound): each item ends once,
relayed or handed back, across restarts; and the door's rules: what RCPT and DATA answer."""

from __future__ import annotations

import email.parser
import email.utils
import re
from pathlib import Path

import pytest

from nodes.config import Settings
from nodes.node_settings import of
from nodes.ims import core
from nodes.ims.outbound import MemoryOutbound, Outbound, key_of
from protocol import MAX_MESSAGE_BYTES

from .helpers import events, held, recipient, replies, request, response, sends

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

    def relayed(self, key: str, code: int | None, now: float, words: str | None = None) -> list:
        """The smarthost's answer to the relay of `key` (its words: "<code> words" unless given)."""
        return self.run(self.core.on_event(core.Relayed(key, code, f"{code} words" if words is None else words), now))


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


def relayed_as(code: int | None, now: float = 3.0, words: str = "words") -> tuple[Ims, list]:
    """An item relayed once, and the smarthost's answer `code` to it."""
    ims = Ims(MemoryOutbound())
    ims.put("m1", 2.0)
    ims.tick(2.0)
    (relay,) = ims.relays
    return ims, ims.relayed(relay.key, code, now, words)


def test_the_smarthost_s_answer_is_judged_by_its_class():
    """2xx: relayed; 5xx: refused for good (handed back); anything else, or no answer: later."""
    for code, outcome in ((200, "ims.relayed"), (299, "ims.relayed"), (300, "ims.relay_deferred"),
                          (499, "ims.relay_deferred"), (500, "ims.relay_failed"), (599, "ims.relay_failed"),
                          (None, "ims.relay_deferred")):
        _, actions = relayed_as(code)
        assert [e.event for e in events(actions)] == [outcome], code


def test_a_relayed_item_leaves_its_file_and_a_line_that_says_it_all(tmp_path):
    ims = Ims(Outbound(tmp_path, fsync=False))
    ims.put("m1", 2.0)
    ims.tick(2.0)
    (relay,) = ims.relays
    assert (tmp_path / "outbound" / f"{relay.key}.msg").exists()
    done = ims.relayed(relay.key, 250, 3.1234567, "2.0.0 ok")
    assert not (tmp_path / "outbound" / f"{relay.key}.msg").exists(), "its file is gone once relayed"
    assert [a.record for a in done if isinstance(a, core.AppendLine)] == [
        {"msg_id": "m1", "rcpt": "dave@outside.test", "ndr_for": None, "ndr_rcpts": [], "smarthost": SMARTHOST,
         "at": 3.123457}]
    assert [e.fields for e in events(done, "ims.relayed")] == [
        {"msg_id": "m1", "rcpt": "dave@outside.test", "ndr_for": None, "ndr_rcpts": [], "smarthost": SMARTHOST,
         "attempt": 1}]


def test_a_deferral_waits_the_retry_and_says_why_in_500_characters():
    ims, actions = relayed_as(451, words="451 " + "w" * 600)
    (deferred,) = events(actions, "ims.relay_deferred")
    retry_s = ims.core.retry_s
    assert (deferred.level, deferred.fields) == ("warning", {
        "msg_id": "m1", "rcpt": "dave@outside.test", "smarthost": SMARTHOST, "reason": ("451 " + "w" * 600)[:500],
        "retry_in_ms": int(retry_s * 1000)})
    assert ims.core.next_wakeup() == 3.0 + retry_s
    assert not ims.tick(3.0 + retry_s - 0.001) and len(ims.tick(3.0 + retry_s)) == 1, "the retry, then"
    ims, refused = relayed_as(554, words="554 " + "r" * 600)
    assert events(refused, "ims.relay_failed")[0].fields["reason"] == ("refused: 554 " + "r" * 600)[:500]


def test_an_answer_for_an_item_that_failed_meanwhile_changes_nothing():
    ims, actions = relayed_as(550)
    (item,) = ims.core.items.values()
    assert item.failed and ims.relayed(item.key, 250, 3.5, "ok") == []
    assert item.key not in ims.core.relayed


@pytest.mark.parametrize("headers, expected", [
    ("X-Priority: 1 (Highest)", "urgent"), ("X-Priority: 2", "urgent"), ("X-Priority: 3 (Normal)", "normal"),
    ("X-Priority: 4", "non-urgent"), ("X-Priority: 5 (Lowest)", "non-urgent"), ("Importance: High", "urgent"),
    ("Importance: low", "non-urgent"), ("Importance: normal", "normal"), ("Subject: s", "normal"),
    ("X-Priority: 3\r\nImportance: high", "urgent"), ("X-Priority: 3\r\nImportance: Low", "non-urgent"),
])
def test_a_message_s_priority_is_read_from_x_priority_or_importance(headers, expected):
    """What a mail client sets (Outlook's X-Priority 1-5, or Importance) chooses the message's
    time-out, as Exchange 5.5's priorities do."""
    assert core.priority(email.parser.BytesHeaderParser().parsebytes(f"{headers}\r\n\r\nx".encode())) == expected


def data(mail_from: str = "ann@outside.test", raw: bytes = b"Message-ID: <a@b>\r\n\r\nx\r\n", **more) -> dict:
    return {"mail_from": mail_from, "rcpts": ["bob@xcon.test"], "raw": raw, "helo": "client.test", "peer": "p",
            "peer_ip": "192.0.2.1", "dsn_mail": [], "dsn_rcpt": {}, **more}


def test_data_is_given_this_server_s_headers_and_its_id_and_the_mta_s_ok_becomes_a_250():
    c = Ims(MemoryOutbound()).core
    (submit,) = sends(c.on_event(request("ims.data", data(
        raw=b"Subject: s\r\n\r\nx\r\n", helo="", peer_ip="", dsn_mail=["RET=HDRS", "ENVID=e1"],
        dsn_rcpt={"bob": ["NOTIFY=NEVER", "ORCPT=rfc822;bob@xcon.test"], "carol": ["NOTIFY=NEVER"], "dave": []},
        rcpts=["bob@xcon.test", "dave@xcon.test"])), 1000.0), "mta.submit_raw")
    msg_id = submit.body.msg_id
    assert re.fullmatch(r"smtp-[0-9a-f]{24}", msg_id) and submit.trace == msg_id
    assert submit.body.raw == (
        f"Received: from unknown (?) by ims.ex1.xcon.test with ESMTP id {msg_id}; {email.utils.formatdate(1000.0)}\r\n"
        f"X-Xcon-Msg-Id: {msg_id}\r\nMessage-ID: <{msg_id}@xcon.test>\r\nX-Xcon-DSN: RET=HDRS ENVID=e1\r\n"
        "X-Xcon-DSN-Rcpt: bob NOTIFY=NEVER ORCPT=rfc822;bob@xcon.test\r\nSubject: s\r\n\r\nx\r\n").encode(), \
        "a DSN line for each recipient of this message that has parameters; its own Message-ID where it had none"
    taken = c.on_event(response(submit, "mta.accepted", {"msg_id": msg_id, "rcpts": ["bob", "dave"]}), 1000.1)
    assert [e.fields for e in events(taken, "ims.accepted")] == [
        {"msg_id": msg_id, "sender": "ann@outside.test", "rcpts": ["bob", "dave"], "peer": "p",
         "size": len(submit.body.raw), "message_id": None}]


def test_each_data_without_a_message_id_is_a_message_of_its_own_and_a_resend_with_one_is_the_same():
    c = Ims(MemoryOutbound()).core
    ids = [sends(c.on_event(request("ims.data", data(raw=b"Subject: same\r\n\r\nx\r\n")), 1.0))[0].body.msg_id
           for _ in range(2)]
    assert ids[0] != ids[1], "the same bytes sent twice, by two sessions, are two messages"
    ids = [sends(c.on_event(request("ims.data", data()), 1.0))[0].body.msg_id for _ in range(2)]
    assert ids[0] == ids[1], "the same Message-ID, sender and recipients: a resend"


def test_the_null_reverse_path_has_no_sender_and_a_user_s_address_is_its_alias():
    c = Ims(MemoryOutbound()).core
    for mail_from, sender in (("", ""), ("<>", ""), ("Alice@xcon.test", "alice"), ("Ann@Outside.test", "Ann@Outside.test")):
        (submit,) = sends(c.on_event(request("ims.data", data(mail_from)), 1.0))
        assert submit.body.sender == sender, mail_from


def test_data_over_the_size_limit_with_this_server_s_headers_is_refused_with_552():
    c = Ims(MemoryOutbound()).core
    headers = len(sends(c.on_event(request("ims.data", data(raw=b"")), 1.0))[0].body.raw)
    fits = data(raw=b"x" * (MAX_MESSAGE_BYTES - headers))
    assert sends(c.on_event(request("ims.data", fits), 1.0), "mta.submit_raw"), "at the limit: taken"
    over = c.on_event(request("ims.data", data(raw=b"x" * (MAX_MESSAGE_BYTES - headers + 1))), 1.0)
    (refused,) = events(over, "ims.refused")
    assert (refused.level, refused.fields["reason"], refused.fields["code"], refused.fields["size"]) == (
        "warning", "over the size limit", 552, MAX_MESSAGE_BYTES + 1)
    assert answers(over) == [(552, "5.3.4 Message size exceeds fixed maximum message size")]


def answers(actions: list) -> list[tuple[int, str]]:
    """The SMTP answers (code, text) the door gives in `actions`."""
    return [(r.body.code, r.body.text) for r in replies(actions)]


def test_the_door_s_every_answer_and_line_in_words_and_its_counts():
    ims = Ims(MemoryOutbound())
    c = ims.core

    def rcpt(answer_type: str, body: dict, now: float) -> list:
        (lookup,) = sends(c.on_event(request("ims.rcpt", {"address": "Zed@xcon.test", "peer": "p"}), now))
        return c.on_event(response(lookup, answer_type, body), now)

    unknown = rcpt("mta.entry", {"recipient": None}, 1.0)
    assert [(e.level, e.fields) for e in events(unknown)] == [
        ("warning", {"rcpt": "Zed@xcon.test", "reason": "unknown user", "peer": "p"})]
    assert answers(unknown) == [(550, "5.1.1 <Zed@xcon.test>: unknown user (not in mta.ex1's directory cache)")]
    assert answers(rcpt("error", {"reason": "busy", "code": None}, 1.0)) == [(451, "4.3.0 busy")]
    assert answers(rcpt("mta.entry", {"recipient": recipient("zed", "ex1", 1)}, 1.0)) == [(250, "2.1.5 OK")]

    def submitted(now: float):
        (submit,) = sends(c.on_event(request("ims.data", data()), now))
        return submit

    submitted(2.0)
    silent = c.tick(2.0 + core.ASK_S)
    assert [(e.level, e.fields["reason"], e.fields["code"]) for e in events(silent, "ims.refused")] == [
        ("warning", "mta.ex1 did not answer", 451)]
    assert answers(silent) == [(451, "4.4.1 mta.ex1 did not answer; send it again later")]
    for code, answer in ((554, "5.6.0 bad id"), (452, "4.3.1 bad id")):
        refused = c.on_event(response(submitted(10.0), "error", {"reason": "bad id",
                                                                 "code": "invalid" if code == 554 else None}), 10.0)
        assert [(e.level, e.fields["reason"], e.fields["code"]) for e in events(refused, "ims.refused")] == [
            ("warning", "bad id", code)]
        assert answers(refused) == [(code, answer)]
    c.on_event(request("fault.smtp", {"cut": 1.0, "delay_ms": 0, "seconds": 10.0}), 20.0)
    submit = submitted(20.0)
    cut = c.on_event(response(submit, "mta.accepted", {"msg_id": submit.body.msg_id, "rcpts": ["bob"]}), 20.0)
    assert [(e.level, e.fields) for e in events(cut, "ims.cut")] == [
        ("warning", {"msg_id": submit.body.msg_id, "peer": "p", "why": "fault.smtp"})]
    assert answers(cut) == [(421, "4.4.2 cut")]
    status = c.status(40.0)
    assert (status["accepted"], status["refused"]) == (0, 1), "the cut one is not counted as accepted"



def test_a_hand_back_the_mta_does_not_take_is_tried_again_and_one_it_takes_is_written_whole():
    ims, _ = relayed_as(550)
    c = ims.core
    (back,) = sends(ims.tick(3.0), "mta.relay_failed")
    assert back.trace == "m1"
    later = ims.run(c.on_event(response(back, "error", {"reason": "busy", "code": None}), 3.1))
    assert [(e.level, e.fields) for e in events(later, "ims.hand_back_deferred")] == [
        ("warning", {"msg_id": "m1", "rcpt": "dave@outside.test", "reason": "busy",
                     "retry_in_ms": int(c.retry_s * 1000)})]
    assert c.next_wakeup() == 3.1 + c.retry_s
    silent = ims.tick(3.1 + c.retry_s)
    (again,) = sends(silent, "mta.relay_failed")
    quiet = ims.tick(3.1 + c.retry_s + core.ASK_S)
    assert [e.fields["reason"] for e in events(quiet, "ims.hand_back_deferred")] == ["mta.ex1 did not answer"]
    (third,) = sends(ims.tick(c.next_wakeup()), "mta.relay_failed")
    done = ims.run(c.on_event(response(third, "ok", {}), 20.1234567))
    assert [a.record for a in done if isinstance(a, core.AppendLine)] == [
        {"msg_id": "m1", "rcpt": "dave@outside.test", "ndr_for": None, "ndr_rcpts": [], "returned": "refused: words",
         "to": "mta.ex1", "at": 20.123457}]
    assert [e.fields for e in events(done, "ims.returned")] == [
        {"msg_id": "m1", "rcpt": "dave@outside.test", "ndr_for": None, "ndr_rcpts": [], "reason": "refused: words",
         "to": "mta.ex1"}]
    assert c.items == {} and c.status(21.0)["returned"] == 1


def test_the_status_shows_the_queue_oldest_first_and_a_fault_while_it_lasts():
    ims = Ims(MemoryOutbound())
    c = ims.core
    ims.put("m1", 2.0)
    ims.put("m2", 2.5)
    ims.tick(2.5)
    first = next(r for r in ims.relays if r.key == next(i.key for i in c.items.values() if i.msg_id == "m1"))
    ims.relayed(first.key, 550, 3.0, "550 no")
    c.on_event(request("fault.smtp", {"cut": 0.5, "delay_ms": 100, "seconds": 10.0}), 3.0)
    assert c.status(4.0) == {
        "faults": {"smtp": {"cut": 0.5, "delay_ms": 100, "until": 13.0}}, "smarthost": SMARTHOST,
        "accepted": 0, "refused": 0, "outbound": 2, "relayed": 0, "returned": 0,
        "queue": [{"msg_id": "m1", "rcpt": "dave@outside.test", "attempts": 1, "state": "returning",
                   "reason": "refused: 550 no", "expires_in_s": 57.0},
                  {"msg_id": "m2", "rcpt": "dave@outside.test", "attempts": 1, "state": "relaying", "reason": "",
                   "expires_in_s": 57.0}]}
    assert "faults" not in c.status(13.0), "over at its end"


def test_what_falls_due_in_one_tick_is_all_done():
    """Two sessions' asks unanswered, two items past their lifetime, in the same tick: each
    session hears its 451 and each item goes to failed/, none only the last."""
    ims = Ims(MemoryOutbound(), smarthost="")
    c = ims.core
    for n in (1, 2):
        c.on_event(request("ims.rcpt", {"address": f"u{n}@xcon.test", "peer": "p"}), 1.0)
    ims.put("m1", 2.0)
    ims.put("m2", 2.0)
    due = ims.tick(61.0)
    assert [code for code, _ in answers(due)] == [451, 451]
    assert sorted(a.item.msg_id for a in due if isinstance(a, core.WriteItem) and a.sub == "failed") == ["m1", "m2"]
    handing = sends(due, "mta.relay_failed")
    assert len(handing) == 2 and not sends(ims.tick(62.0), "mta.relay_failed"), "not handed back twice at once"


def test_a_report_leaves_with_the_null_reverse_path_and_each_relay_is_counted():
    ims = Ims(MemoryOutbound())
    report = {**body("m9~ndr~0123456789abcdef"), "sender": "postmaster.ex1", "ndr_for": "m9", "ndr_rcpts": ["bob"],
              "priority": "urgent"}
    ims.run(ims.core.on_event(request("ims.outbound", report, "mta.ex1"), 2.0))
    ims.tick(2.0)
    (relay,) = ims.relays
    assert (relay.smarthost, relay.mail_from, relay.rcpt) == (SMARTHOST, "", "dave@outside.test")
    ims.relayed(relay.key, 451, 2.5, "451 later")
    ims.tick(2.5 + 1.0)  # the retry (1 s: the settings' retry_ms)
    assert len(ims.relays) == 2 and ims.core.status(4.0)["queue"][0]["attempts"] == 2
    ims.relayed(relay.key, 550, 4.0, "550 no")
    (back,) = sends(ims.tick(4.0), "mta.relay_failed")
    assert (back.body.priority, back.body.ndr_for, back.body.ndr_rcpts, back.trace) == ("urgent", "m9", ["bob"], "m9")


def test_the_ims_is_ready_at_once_names_its_requests_and_draws_ids_from_its_seed():
    ims, other = Ims(MemoryOutbound()), Ims(MemoryOutbound())
    assert ims.core.ready is True
    raw = data(raw=b"Subject: no id\r\n\r\nx\r\n")
    (a,) = sends(ims.core.on_event(request("ims.data", raw), 1.0))
    (b,) = sends(other.core.on_event(request("ims.data", raw), 1.0))
    assert a.id.startswith("ims.ex1.b1.") and a.body.msg_id == b.body.msg_id, "the same seed: the same run again"
    (wrong,) = replies(ims.core.on_event(request("store.list", {"mailbox": "bob"}), 1.0))
    assert (wrong.type, wrong.body.reason, wrong.body.code) == ("error", "ims.ex1 does not handle 'store.list'", None)


def test_a_delayed_answer_waits_its_whole_delay_and_the_status_lists_twenty():
    ims = Ims(MemoryOutbound())
    c = ims.core
    c.on_event(request("fault.smtp", {"cut": 0.0, "delay_ms": 300, "seconds": 10.0}), 1.0)
    assert c.on_event(request("ims.rcpt", {"address": "x@elsewhere.test", "peer": "p"}), 1.0) == []
    assert c.tick(1.299) == [] and answers(c.tick(1.3))[0][0] == 550
    for n in range(21):
        ims.put(f"m{n}", 2.0)
    assert len(c.status(3.0)["queue"]) == 20 and c.status(3.0)["outbound"] == 21


def test_taking_failing_and_a_fault_are_each_said_whole():
    ims = Ims(MemoryOutbound(), smarthost="")
    c = ims.core
    traced = request("ims.outbound", body("m1"), "mta.ex1")
    traced.frame.trace = "m1"
    taken = ims.run(c.on_event(traced, 2.0))
    assert [r.trace for r in replies(taken)] == ["m1"]
    assert [e.fields for e in events(taken, "ims.queued_out")] == [
        {"msg_id": "m1", "rcpt": "dave@outside.test", "ndr_for": None, "src": "mta.ex1", "expires_in_ms": 59000}]
    (key,) = c.items
    failed = ims.tick(61.0)
    assert [(e.level, e.fields) for e in events(failed, "ims.relay_failed")] == [("warning", {
        "msg_id": "m1", "rcpt": "dave@outside.test", "ndr_for": None, "smarthost": None,
        "reason": "expired: no smarthost took it", "attempts": 0, "kept": f"ims/ex1/failed/{key}.msg"})]
    fault = c.on_event(request("fault.smtp", {"cut": 0.25, "delay_ms": 10, "seconds": 5.0}), 62.0)
    assert [(e.level, e.fields) for e in events(fault, "fault.applied")] == [
        ("warning", {"type": "fault.smtp", "by": "test", "cut": 0.25, "delay_ms": 10, "seconds": 5.0})]


def test_an_item_from_before_items_carried_their_lifetime_gets_its_report_s_or_its_priority_s():
    settings = of(Settings(servers=("ex1",)), "ims.ex1")
    life = core.lifetime(settings)
    lifetimes = settings.lifetimes
    assert life({"ndr_for": "m0", "priority": "urgent"}) == lifetimes.report_s
    assert life({"ndr_for": None, "priority": "urgent"}) == lifetimes.urgent_s
    assert life({"ndr_for": None}) == lifetimes.normal_s


def test_damage_found_at_a_start_is_said_once_whole_as_an_error():
    queue = MemoryOutbound()
    queue.damage = {"file": "ims/ex1", "kept_as": "ims/ex1/log.jsonl.damaged-1", "lost": ["m-gone"]}
    said = Ims(queue).core.start(1.0)
    assert [(e.event, e.level, e.fields) for e in events(said)] == [("storage.damaged", "error", {
        **queue.damage, "why": "damage in the IMS's queue: every file and line that reads was taken up; the messages "
                               "in `lost` lost their item or its end here"})]
    assert Ims(MemoryOutbound()).core.start(1.0) == [], "nothing to say of a queue that read whole"


def traced(type_: str, body: dict, trace: str):
    req = request(type_, body)
    req.frame.trace = trace
    return req


def test_a_fault_s_delay_holds_every_refusal_and_each_answer_keeps_its_session_s_trace():
    c = Ims(MemoryOutbound()).core
    c.on_event(request("fault.smtp", {"cut": 0.0, "delay_ms": 1000, "seconds": 10.0}), 1.0)
    big = c.on_event(traced("ims.data", data(raw=b"x" * MAX_MESSAGE_BYTES), "t-big"), 1.0)
    (refused,) = events(big, "ims.refused")
    assert re.fullmatch(r"smtp-[0-9a-f]{24}", refused.fields["msg_id"]) and not replies(big), "held for its delay"
    (lookup,) = sends(c.on_event(traced("ims.rcpt", {"address": "zed@xcon.test", "peer": "p"}, "t-rcpt"), 1.0))
    assert not replies(c.on_event(response(lookup, "mta.entry", {"recipient": None}), 1.0))
    (submit,) = sends(c.on_event(traced("ims.data", data(), "t-error"), 1.0))
    error = c.on_event(response(submit, "error", {"reason": "bad id", "code": "invalid"}), 1.0)
    assert [e.fields["msg_id"] for e in events(error, "ims.refused")] == [submit.body.msg_id]
    (unanswered,) = sends(c.on_event(traced("ims.data", data(raw=b"Message-ID: <c@d>\r\n\r\nx\r\n"), "t-silent"), 1.0))
    assert c.tick(1.9995) == [], "a second's delay is a whole second"
    assert [(r.trace, r.body.code) for r in replies(c.tick(2.0))] == [("t-big", 552), ("t-rcpt", 550), ("t-error", 554)]
    silent = c.tick(1.0 + core.ASK_S)
    assert [e.fields["msg_id"] for e in events(silent, "ims.refused")] == [unanswered.body.msg_id]
    assert not replies(silent) and c.tick(2.0 + core.ASK_S - 0.0005) == []
    assert [(r.trace, r.body.code) for r in replies(c.tick(2.0 + core.ASK_S))] == [("t-silent", 451)]


def test_the_door_counts_each_refusal_and_acceptance_and_names_its_lines():
    c = Ims(MemoryOutbound()).core
    for n in range(2):
        (lookup,) = sends(c.on_event(request("ims.rcpt", {"address": f"u{n}@xcon.test", "peer": "p"}), 1.0))
        refused = c.on_event(response(lookup, "mta.entry", {"recipient": None}), 1.0)
        assert [(e.event, e.level) for e in events(refused)] == [("ims.rcpt_refused", "warning")]
    long_id = "<" + "i" * 1200 + "@client.test>"
    for raw in (b"Message-ID: <a@b>\r\n\r\nx\r\n", f"Message-ID: {long_id}\r\n\r\nx\r\n".encode()):
        (submit,) = sends(c.on_event(request("ims.data", data(raw=raw)), 2.0))
        taken = c.on_event(response(submit, "mta.accepted", {"msg_id": submit.body.msg_id, "rcpts": ["bob"]}), 2.0)
        assert [(e.event, e.level) for e in events(taken)] == [("ims.accepted", "info")]
    assert events(taken)[0].fields["message_id"] == long_id[:998], "as long as a header line may be"
    assert (c.status(3.0)["accepted"], c.status(3.0)["refused"]) == (2, 2)


def test_a_message_s_id_is_derived_as_the_release_before_derived_it():
    """A client that never heard the 250 sends the message again, perhaps to an IMS upgraded
    meanwhile: it is the same message only if the id is derived as it was. The same for an item's
    key, which names its file in the queue a restart reads."""
    c = Ims(MemoryOutbound()).core
    (submit,) = sends(c.on_event(request("ims.data", data()), 1.0))
    assert submit.body.msg_id == "smtp-952eedc71a0b0c498ad574c4"
    assert submit.body.raw.count(b"Message-ID:") == 1, "the client's own Message-ID, and no second"
    assert key_of("m1", "dave@outside.test") == "c9ab706d50d355d58c71c0e9c892ca33"


def test_no_more_than_four_items_are_relayed_at_once():
    ims = Ims(MemoryOutbound())
    assert ims.core.retry_s == of(Settings(servers=("ex1",)), "ims.ex1").retry_ms / 1000
    for n in range(6):
        ims.put(f"m{n}", 2.0)
    ims.tick(2.0)
    assert len(ims.relays) == core.RELAY_SESSIONS == 4
    ims.relayed(ims.relays[0].key, 250, 2.5)
    ims.tick(2.5)
    assert len(ims.relays) == 5 and len(ims.core.relaying) == 4


def test_an_item_no_answer_came_for_expires_saying_so_and_a_report_s_lines_name_what_it_reports():
    ims = Ims(MemoryOutbound())
    ims.put("m1", 2.0)
    (failed,) = events(ims.tick(61.0), "ims.relay_failed")
    assert (failed.fields["reason"], failed.fields["smarthost"]) == ("expired: -", SMARTHOST)
    report = {**body("m9~ndr~0123456789abcdef"), "ndr_for": "m9", "ndr_rcpts": ["bob"]}
    for code in (250, 550):
        ims = Ims(MemoryOutbound())
        queued = ims.run(ims.core.on_event(request("ims.outbound", report, "mta.ex1"), 2.0))
        assert [(e.level, e.fields["ndr_for"]) for e in events(queued, "ims.queued_out")] == [("info", "m9")]
        ims.tick(2.0)
        ended = ims.relayed(ims.relays[0].key, code, 3.0)
        if code == 550:
            (back,) = sends(ims.tick(3.0), "mta.relay_failed")
            ended += ims.run(ims.core.on_event(response(back, "ok", {}), 3.1))
        assert {e.event: e.fields["ndr_for"] for e in events(ended)} == (
            {"ims.relayed": "m9"} if code == 250 else {"ims.relay_failed": "m9", "ims.returned": "m9"})


def test_the_status_rounds_an_item_s_time_left_to_the_millisecond():
    ims = Ims(MemoryOutbound())
    ims.put("m1", 2.0)
    assert ims.core.status(4.1234)["queue"][0]["expires_in_s"] == 56.877


def test_an_unknown_fault_is_invalid_and_a_hand_back_answered_otherwise_is_tried_again_naming_the_answer():
    c = Ims(MemoryOutbound()).core
    (wrong,) = replies(c.on_event(request("fault.feed_cut", {"seconds": 1.0}), 1.0))
    assert (wrong.type, wrong.body.reason, wrong.body.code) == ("error", "ims.ex1 does not handle 'fault.feed_cut'",
                                                                 "invalid")
    ims, _ = relayed_as(550)
    (back,) = sends(ims.tick(3.0), "mta.relay_failed")
    odd = ims.run(ims.core.on_event(response(back, "mta.entry", {"recipient": None}), 3.1))
    assert [e.fields["reason"] for e in events(odd, "ims.hand_back_deferred")] == ["mta.entry"]


def test_the_domain_is_what_follows_the_last_at_sign():
    """RFC 5321 lets a quoted local part hold an '@': the domain is after the last one."""
    c = Ims(MemoryOutbound()).core
    (lookup,) = sends(c.on_event(request("ims.rcpt", {"address": '"a@b"@xcon.test', "peer": "p"}), 1.0))
    assert lookup.body.alias == '"a@b"'
    (submit,) = sends(c.on_event(request("ims.data", data(rcpts=['"a@b"@xcon.test'])), 1.0))
    assert submit.body.recipients == ['"a@b"']


def test_an_item_failed_in_a_tick_is_handed_back_in_the_same_tick_at_any_time():
    ims = Ims(MemoryOutbound(), smarthost="")
    ims.run(ims.core.on_event(request("ims.outbound", {**body("m1"), "expires_at": 0.5}, "mta.ex1"), 0.0))
    assert [s.body.msg_id for s in sends(ims.tick(0.5), "mta.relay_failed")] == ["m1"]
