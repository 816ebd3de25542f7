"""What a restarted MTA reads back of its queue (nodes/mta/queue.py, QueuedMessage.to_record and
from_record): every persisted field of a message and of each pair, through the queue log's own
record type. The MTA's mutation run (session 13) left the fields it drops alive."""

from __future__ import annotations

import msgspec

from nodes.mta.queue import Pair, QueuedMessage
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
