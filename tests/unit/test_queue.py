"""The MTA's queue (nodes/mta/queue.py): what a restart reads back of it (QueuedMessage.to_record
and from_record: every persisted field of a message and of each pair, through the queue log's own
record type), and what `xcon queue` lists of it. The MTA's mutation runs (sessions 13 and 14) left
the fields a record drops, and the listing's kinds and retry times, alive."""

from __future__ import annotations

import msgspec

from nodes.mta.queue import Pair, QueuedMessage, listing
from nodes.mta.record import State, Whole

from .helpers import recipient


def test_a_restart_reads_back_every_field_of_a_message_and_its_pairs():
    done = Pair("bob", alt_of="dave", state=State.TRANSFERRED, hint=recipient("bob", "ex2", 7), hops=3,
                handed_to="mta.ex2", resent=True, alt_copy="carol", unconfirmed=True, cycles=2, arrived_usn=7,
                attempts=4, reason="handed over")
    flying = Pair("erin", state=State.DELIVERING, hops=1, attempts=2, reason="in flight", cycles=1, arrived_usn=5)
    msg = QueuedMessage("ex1~000001~2", "alice", b"raw", 12.5, ndr_for="ex1~000001~1", ndr_rcpts=["bob"],
                        pairs={"bob": done, "erin": flying}, priority="urgent", report="ex1.b.3.ndr.bob")
    record = msgspec.msgpack.decode(msgspec.msgpack.encode(msg.to_record()), type=Whole)  # as the log holds it
    back = QueuedMessage.from_record(record)
    assert (back.msg_id, back.sender, back.raw, back.accepted_at, back.ndr_for, back.ndr_rcpts, back.priority,
            back.report) == ("ex1~000001~2", "alice", b"raw", 12.5, "ex1~000001~1", ["bob"], "urgent", "ex1.b.3.ndr.bob")
    assert list(back.pairs) == ["bob", "erin"]
    persisted = lambda p: (p.rcpt, p.alt_of, p.state, p.hint, p.hops, p.handed_to, p.resent, p.alt_copy,  # noqa: E731
                           p.unconfirmed, p.cycles, p.arrived_usn, p.attempts, p.reason)
    assert persisted(back.pairs["bob"]) == persisted(done), "a final pair comes back as it was"
    again = back.pairs["erin"]
    assert (again.state, again.unconfirmed) == (State.QUEUED, True), "what was in flight is retried, unconfirmed"
    assert persisted(again)[:2] == ("erin", None) and persisted(again)[4:] == (1, None, False, None, True, 1, 5, 2,
                                                                               "in flight")


def test_the_listing_names_each_kind_skips_final_pairs_and_says_when_each_is_tried_again():
    """`xcon queue`'s rows: a message whose first pair is done still lists the rest; a retry
    overdue (its timer not fired yet) is due now, never a negative time; a pair recovered from
    disk (queued, not routed yet) is due as soon as the MTA is ready."""
    message = QueuedMessage("m1", "alice", b"r", 1.0, pairs={
        "carol": Pair("carol", state=State.DELIVERED),
        "bob": Pair("bob", state=State.DEFERRED, next_at=5.00001, reason="mailbox locked", attempts=1)})
    ndr = QueuedMessage("m1~ndr~1", "postmaster.ex1", b"r", 2.0, ndr_for="m1", ndr_rcpts=["bob"],
                        pairs={"alice": Pair("alice", state=State.DEFERRED, next_at=3.0)})
    copy = QueuedMessage("m0~ndr~2~pm", "postmaster.ex1", b"r", 2.5, ndr_for="m0", ndr_rcpts=["dave"],
                         pairs={"postmaster": Pair("postmaster", next_at=2.5)}, report="m0~ndr~2")
    queue = {m.msg_id: m for m in (copy, ndr, message)}
    items, total = listing(queue, 4.0, 10)
    assert total == 3
    assert [(i["msg_id"], i["kind"], i["rcpt"], i["state"], i["next_retry_s"], i["age_s"]) for i in items] == [
        ("m1", "message", "bob", "deferred", 1.0, 3.0),
        ("m1~ndr~1", "ndr", "alice", "deferred", 0.0, 2.0),
        ("m0~ndr~2~pm", "postmaster", "postmaster", "queued", 0.0, 1.5)]
    assert listing(queue, 4.99961, 1) == ([{**items[0], "next_retry_s": 0.0, "age_s": 4.0}], 3), \
        "to the millisecond: 0.0004 s is 0.0"
