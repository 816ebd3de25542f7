"""KB Q248839's mechanism in the MTA core alone: no processes, no sockets, a clock we choose."""

from __future__ import annotations

import pytest

from nodes.config import Settings
from nodes.node_settings import of
from nodes.core import DiskSpace, Feed
from nodes.mail import summarize
from nodes.mta.core import MAX_CYCLES, NEVER, MtaCore
from nodes.mta.queue import Pair, PersistMessage, QueuedMessage, RetireMessage

from .helpers import events, frame, recipient, replies, request, response, sends

DIRECTORY = [
    recipient("carol", "ex1", 1),
    recipient("alice", "ex2", 2),
    recipient("bob", "ex1", 3, alternate="carol", both=True),
    recipient("dave", "ex1", 4, alternate="carol", both=False),
]


def make_mta(build: str, lag_ms: int = 1000, server: str = "ex1", **settings) -> MtaCore:
    """An MTA whose cache holds DIRECTORY; `settings` beside these tests' own (Settings' fields)."""
    cluster = Settings(("ex1", "ex2"), build, replication_lag_ms=lag_ms, replication_jitter_ms=0,
                       **{"retry_ms": 5000, "expire_ms": 10_000, "request_timeout_ms": 2000, **settings})
    mta = MtaCore(server, of(cluster, f"mta.{server}"), "boot")
    snapshot = sends(mta.start(0.0), "dir.snapshot")[0]
    mta.on_event(response(snapshot, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 0.0)
    assert mta.ready
    return mta


def submit_body(to: list[str], msg_id: str | None = None, sender: str = "alice") -> dict:
    """An mta.submit's body: a client's message to `to`."""
    return {"msg_id": msg_id, "sender": sender, "recipients": to, "subject": "s", "body": "b", "priority": None}


def submit(mta: MtaCore, to: list[str], now: float = 1.0, sender: str = "alice") -> tuple[str, list]:
    actions = mta.on_event(request("mta.submit", submit_body(to, sender=sender)), now)
    accepted = [r for r in replies(actions) if r.type == "mta.accepted"]
    assert accepted, actions
    return accepted[0].body.msg_id, actions


def transfer(rcpts: list[dict], msg_id: str = "m1", **body) -> dict:
    """An mta.transfer's body from alice's MTA, for these recipients."""
    return {"msg_id": msg_id, "sender": "alice", "raw": b"Subject: s\r\n\r\nx\r\n", "accepted_at": 1.0,
            "ndr_for": None, "ndr_rcpts": [], "priority": "normal", "rcpts": rcpts, **body}


def refused_from_outside(mta: MtaCore, n: int, rcpt: str, dsn: str = "") -> list:
    """ann@outside.test's message smtp-N (the IMS's mta.submit_raw, its DSN block `dsn`) at 1.0,
    and the store's "not here" for `rcpt` at 1.5: the actions of that answer."""
    raw = f"Received: from x\r\nX-Xcon-Msg-Id: smtp-{n}\r\n{dsn}Subject: s\r\n\r\nhi\r\n".encode()
    actions = mta.on_event(request("mta.submit_raw", {"msg_id": f"smtp-{n}", "sender": "ann@outside.test",
                                                      "recipients": [rcpt], "raw": raw, "priority": "normal"}), 1.0)
    return store_answer(mta, sends(actions, "store.deliver")[0], "not_here", 1.5)


def store_answer(mta: MtaCore, send, outcome: str, now: float) -> list:
    body = {"msg_id": send.body.msg_id, "mailbox": send.body.mailbox, "outcome": outcome,
            "reason": "mailbox locked" if outcome == "deferred" else ""}
    return mta.on_event(response(send, "store.result", body), now)


def bob_deferred_then_released(build: str, release_at: float) -> tuple[MtaCore, str, list]:
    """The KB's conditions: bob (alternate carol, deliver to both) is being moved ex1 -> ex2.
    The directory's change reaches ex1's feed at t=2.0; with a 1 s lag the cache applies it at 3.0.
    The store releases bob's mailbox at `release_at`; returns the actions of the retry's answer."""
    mta = make_mta(build)
    msg_id, actions = submit(mta, ["bob"])
    by_box = {s.body.mailbox: s for s in sends(actions, "store.deliver")}
    assert set(by_box) == {"bob", "carol"}  # deliver to both
    store_answer(mta, by_box["carol"], "delivered", 1.01)
    deferred = store_answer(mta, by_box["bob"], "deferred", 1.01)
    assert events(deferred, "mta.deferred")
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("bob", "ex2", 5, "carol", True)})), 2.0)
    mta.tick(release_at)
    retry = mta.on_event(request("store.released", {"mailbox": "bob"}, src="store.ex1"), release_at)
    return mta, msg_id, retry


def test_legacy_drops_the_primary_silently_when_the_cache_is_stale():
    mta, msg_id, retry = bob_deferred_then_released("legacy", release_at=2.05)
    resend = sends(retry, "store.deliver")
    assert [s.body.mailbox for s in resend] == ["bob"], "the retry still goes to ex1's store: stale cache"
    final = store_answer(mta, resend[0], "not_here", 2.06)
    failed = events(final, "mta.failed")
    assert [f.fields["report"] for f in failed] == ["none"]
    assert failed[0].fields["why"] == "legacy: the alternate carol was given a copy"
    assert not sends(final), "no NDR goes anywhere"
    assert mta.status(2.1)["open_pairs"] == 0, "the MTA believes it is done: the loss is silent"
    assert any(isinstance(a, RetireMessage) for a in final)


@pytest.mark.parametrize("build", ["legacy", "sp4", "reroute"])
def test_no_loss_when_the_cache_caught_up_before_the_retry(build):
    mta, msg_id, retry = bob_deferred_then_released(build, release_at=3.5)
    transfer = sends(retry, "mta.transfer")
    assert [s.to for s in transfer] == ["mta.ex2"], "the cache knows the new home: route there"
    assert transfer[0].body.rcpts[0].alias == "bob"


def test_sp4_sends_an_ndr_naming_the_primary():
    mta, msg_id, retry = bob_deferred_then_released("sp4", release_at=2.05)
    final = store_answer(mta, sends(retry, "store.deliver")[0], "not_here", 2.06)
    assert [f.fields["report"] for f in events(final, "mta.failed")] == ["ndr"]
    persisted = [a for a in final if isinstance(a, PersistMessage)]
    ndr_transfer = sends(final, "mta.transfer")
    assert len(ndr_transfer) == 1 and ndr_transfer[0].to == "mta.ex2", "the NDR travels to alice's server"
    body = ndr_transfer[0].body
    # the NDR is made durable, whole, before it is routed
    first = next(p for p in persisted if p.msg_id == body.msg_id)
    assert final.index(first) < final.index(ndr_transfer[0])
    assert (first.record.raw, first.record.ndr_for, [p.rcpt for p in first.record.pairs]) == (body.raw, msg_id, ["alice"])
    assert body.ndr_for == msg_id and body.rcpts[0].alias == "alice"
    summary = summarize(body.raw)
    assert summary["ndr"] and summary["ndr_for"] == msg_id and summary["failed"] == ["bob"]
    raw = body.raw.decode()
    for field in ("multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; bob@",
                  "Action: failed", "Status: 5.1.6", "Diagnostic-Code:", "text/rfc822-headers",
                  f"X-Xcon-Msg-Id: {msg_id}"):
        assert field in raw, field


def test_reroute_asks_the_directory_and_transfers_to_the_new_home():
    mta, msg_id, retry = bob_deferred_then_released("reroute", release_at=2.05)
    final = store_answer(mta, sends(retry, "store.deliver")[0], "not_here", 2.06)
    lookup = sends(final, "dir.lookup")
    assert lookup and lookup[0].body.alias == "bob" and not events(final, "mta.failed")
    assert lookup[0].trace == msg_id, "the lookup is part of the message's story (xcon trace)"
    answer = mta.on_event(response(lookup[0], "dir.entry",
                                   {"recipient": recipient("bob", "ex2", 5, "carol", True), "usn": 5}), 2.07)
    transfer = sends(answer, "mta.transfer")
    assert transfer[0].to == "mta.ex2"
    assert transfer[0].body.rcpts[0].hint["usn"] == 5, "the fresher entry travels with the transfer"
    done = mta.on_event(response(transfer[0], "mta.transfer_ack", {"msg_id": msg_id, "rcpts": ["bob"]}), 2.08)
    assert events(done, "mta.transferred") and mta.status(2.1)["open_pairs"] == 0


def test_reroute_retries_when_the_directory_says_the_mailbox_is_here_but_it_is_not_until_its_time_out():
    """It used to fail such a pair as "gone", an NDR the facts did not owe: the directory homes bob
    here, so his mailbox is on its way back (simulated trial 710053058: a late lookup's answer,
    after a move back). It waits for it, and only the message's time-out ends it."""
    mta, msg_id, retry = bob_deferred_then_released("reroute", release_at=2.05)
    final = store_answer(mta, sends(retry, "store.deliver")[0], "not_here", 2.06)
    here = {"recipient": recipient("bob", "ex1", 6, "carol", True), "usn": 6}  # moved back to ex1
    answer = mta.on_event(response(sends(final, "dir.lookup")[0], "dir.entry", here), 2.07)
    assert not events(answer, "mta.failed") and events(answer, "mta.deferred")
    again = store_answer(mta, sends(mta.tick(7.1), "store.deliver")[0], "not_here", 7.1)
    assert events(mta.on_event(response(sends(again, "dir.lookup")[0], "dir.entry", here), 7.2), "mta.deferred")
    assert not events(mta.tick(10.9), "mta.failed"), "before its time-out (10 s from its acceptance at 1.0)"
    late = mta.tick(11.0)
    assert [(f.fields["reason"], f.fields["report"]) for f in events(late, "mta.failed")] == [("expired", "ndr")]


def test_legacy_sends_an_ndr_when_nothing_of_the_message_was_delivered():
    """The KB's workaround works because of this: without an alternate, nothing was delivered."""
    mta = make_mta("legacy")
    msg_id, actions = submit(mta, ["carol"])
    final = store_answer(mta, sends(actions, "store.deliver")[0], "not_here", 1.1)
    assert [f.fields["report"] for f in events(final, "mta.failed")] == ["ndr"]


def test_alternate_without_deliver_to_both_replaces_the_primary():
    mta = make_mta("sp4")
    _, actions = submit(mta, ["dave"])
    assert [s.body.mailbox for s in sends(actions, "store.deliver")] == ["carol"]
    accepted = events(actions, "mta.accepted")[0].fields
    assert accepted["rcpts"] == ["carol"] and accepted["alt_of"] == {"carol": "dave"}


def test_submission_is_durable_before_it_is_acknowledged():
    mta = make_mta("sp4")
    _, actions = submit(mta, ["bob"])
    persist = next(i for i, a in enumerate(actions) if isinstance(a, PersistMessage))
    ack = next(i for i, a in enumerate(actions) if a in replies(actions))
    assert persist < ack


def test_unknown_recipient_is_refused_at_submission():
    mta = make_mta("sp4")
    actions = mta.on_event(request("mta.submit", {"msg_id": None, "sender": "alice", "recipients": ["zed"],
                                                  "subject": "", "body": "", "priority": None}), 1.0)
    assert replies(actions)[0].type == "error" and "zed" in replies(actions)[0].body.reason
    assert mta.status(1.0)["messages"] == 0


def test_a_retried_submission_is_accepted_once():
    mta = make_mta("sp4")
    body = {"msg_id": "m-1", "sender": "alice", "recipients": ["carol"], "subject": "", "body": "", "priority": None}
    first = mta.on_event(request("mta.submit", body), 1.0)
    again = mta.on_event(request("mta.submit", body), 1.1)
    assert replies(again)[0].type == "mta.accepted" and not sends(again)
    assert len(sends(first, "store.deliver")) == 1


def test_transfer_retransmission_is_acknowledged_but_not_taken_twice():
    mta = make_mta("sp4")
    body = {"msg_id": "m-2", "sender": "alice", "raw": b"x", "accepted_at": 1.0, "ndr_for": None,
            "ndr_rcpts": [], "priority": "normal", "rcpts": [{"alias": "carol", "alt_of": None, "hint": None, "hops": 1}]}
    first = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    store_answer(mta, sends(first, "store.deliver")[0], "delivered", 1.1)
    again = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.2)
    assert replies(again)[0].type == "mta.transfer_ack" and not sends(again)
    # the same pair coming back after a reroute (one more hop) is a new hand-off, not a duplicate
    back = mta.on_event(request("mta.transfer", {**body, "rcpts": [{**body["rcpts"][0], "hops": 3}]}), 1.3)
    assert sends(back, "store.deliver")


def test_finished_messages_are_forgotten_once_no_peer_can_retry_them():
    mta = make_mta("sp4", expire_ms=10_000)
    msg_id, actions = submit(mta, ["carol"], now=1.0)
    store_answer(mta, sends(actions, "store.deliver")[0], "delivered", 1.1)
    assert msg_id in mta.queue.seen
    mta.tick(50.0)
    assert msg_id in mta.queue.seen, "within 2 x expire + 60 s a retransmission is still refused"
    mta.tick(1.0 + 2 * 10 + 60 + 61)
    assert msg_id not in mta.queue.seen and len(mta.queue.seen) == 0


def test_deferred_pair_expires_into_an_ndr():
    mta = make_mta("sp4", expire_ms=2000, retry_ms=500)
    msg_id, actions = submit(mta, ["carol"], now=1.0)
    store_answer(mta, sends(actions, "store.deliver")[0], "deferred", 1.1)
    while mta.next_wakeup() is not None and mta.next_wakeup() < 3.0:
        now = mta.next_wakeup()
        for s in sends(mta.tick(now), "store.deliver"):
            store_answer(mta, s, "deferred", now)
    expired = mta.tick(3.01)
    assert [(f.fields["reason"], f.fields["report"]) for f in events(expired, "mta.failed")] == [("expired", "ndr")]


def test_a_request_without_answer_is_deferred_and_retried():
    mta = make_mta("sp4", retry_ms=500)
    _, actions = submit(mta, ["carol"], now=1.0)
    assert sends(actions, "store.deliver")
    timed_out = mta.tick(3.5)  # request timeout is 2 s
    assert events(timed_out, "mta.deferred")
    assert sends(mta.tick(4.1), "store.deliver"), "retried after retry_ms"


def test_an_unacknowledged_transfer_goes_to_the_same_peer_again_whatever_the_cache_says():
    """Found by chaos with drop faults: the peer took the pair but its ack was lost; rerouting
    the retry by a newer cache made two MTAs own the pair (delivered here, NDR'd there)."""
    mta = make_mta("sp4", retry_ms=500)
    msg_id, actions = submit(mta, ["alice"], now=1.0)  # alice lives on ex2
    first = sends(actions, "mta.transfer")
    assert [s.to for s in first] == ["mta.ex2"]
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("alice", "ex1", 5)})), 1.1)
    assert events(mta.tick(3.5), "mta.deferred")  # no answer within 2 s; the cache now says ex1
    again = sends(mta.tick(4.1), "mta.transfer")
    assert [(s.to, s.body.rcpts[0].hops) for s in again] == [("mta.ex2", 1)], "same peer, same hops"
    acked = mta.on_event(response(again[0], "mta.transfer_ack", {"msg_id": msg_id, "rcpts": ["alice"]}), 4.2)
    assert events(acked, "mta.transferred") and mta.status(4.3)["open_pairs"] == 0


def test_after_an_unanswered_delivery_not_here_means_find_the_mailbox_not_fail():
    """Found by chaos with drop faults (sp4, trial seed 2034139792): the store delivered, its
    answer was dropped, the mailbox moved away with the message; the retry met "not here" and
    sp4 sent an NDR for a message that was in the mailbox: delivered and reported."""
    mta = make_mta("sp4", retry_ms=500)
    msg_id, actions = submit(mta, ["carol"], now=1.0)
    assert sends(actions, "store.deliver")
    mta.tick(3.5)  # no answer within 2 s
    retry = sends(mta.tick(4.1), "store.deliver")
    answer = store_answer(mta, retry[0], "not_here", 4.2)
    assert not events(answer, "mta.failed")
    lookup = sends(answer, "dir.lookup")
    found = mta.on_event(response(lookup[0], "dir.entry", {"recipient": recipient("carol", "ex2", 9), "usn": 9}), 4.3)
    assert [s.to for s in sends(found, "mta.transfer")] == ["mta.ex2"], "to the mailbox's new home, which dedupes"


def test_a_hand_off_is_durable_before_the_transfer_leaves():
    """Found by chaos (sp4, trial seed 1102199806): the MTA was killed after sending a transfer;
    restarted without knowing of the hand-off, it rerouted the pair while the peer had taken it."""
    mta = make_mta("sp4")
    msg_id, actions = submit(mta, ["alice"], now=1.0)
    transfer = sends(actions, "mta.transfer")[0]
    persisted = [a for a in actions if isinstance(a, PersistMessage) and actions.index(a) < actions.index(transfer)]
    assert persisted[-1].record.pairs[0].handed_to == "mta.ex2"
    restored = QueuedMessage.from_record(persisted[-1].record)
    assert restored.pairs["alice"].handed_to == "mta.ex2"


def test_a_refused_transfer_may_be_rerouted():
    mta = make_mta("sp4", retry_ms=500)
    msg_id, actions = submit(mta, ["alice"], now=1.0)
    mta.on_event(response(sends(actions, "mta.transfer")[0], "error", {"reason": "busy", "code": None}), 1.1)
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("alice", "ex1", 5)})), 1.2)
    retry = mta.tick(2.3)
    assert [s.body.mailbox for s in sends(retry, "store.deliver")] == ["alice"]


def test_a_routing_loop_ends_in_an_ndr():
    """A loop is a cycle: transfers in a row on directory data no newer than the hop before's (here
    the hint this pair came with names another server, and nothing newer is known)."""
    mta = make_mta("sp4")
    body = {"msg_id": "m-3", "sender": "alice", "raw": b"x", "accepted_at": 1.0, "ndr_for": None, "ndr_rcpts": [], "priority": "normal",
            "rcpts": [{"alias": "bob", "alt_of": None, "hint": recipient("bob", "ex2", 9), "hops": 3,
                       "cycles": MAX_CYCLES - 1}]}
    actions = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    assert [f.fields["reason"] for f in events(actions, "mta.failed")] == ["loop"]


def test_a_transfer_on_no_newer_data_counts_a_cycle_and_one_on_newer_data_starts_again():
    mta = make_mta("sp4")
    body = {"msg_id": "m-3", "sender": "alice", "raw": b"x", "accepted_at": 1.0, "ndr_for": None, "ndr_rcpts": [],
            "priority": "normal", "rcpts": [{"alias": "bob", "alt_of": None, "hint": recipient("bob", "ex2", 9),
                                             "hops": 2, "cycles": 0}]}
    stale = sends(mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0), "mta.transfer")
    assert stale[0].body.rcpts[0].cycles == 1
    body = dict(body, msg_id="m-4", rcpts=[dict(body["rcpts"][0], hint=recipient("bob", "ex1", 9), cycles=2)])
    moved = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("bob", "ex2", 10)})), 1.05)
    mta.tick(2.1)  # the cache learns that bob was moved on meanwhile
    answer = store_answer(mta, sends(moved, "store.deliver")[0], "not_here", 2.2)
    onward = sends(answer, "mta.transfer")
    assert not events(answer, "mta.failed")
    assert [(s.to, s.body.rcpts[0].cycles) for s in onward] == [("mta.ex2", 0)]


def test_a_report_that_follows_its_addressee_through_many_moves_is_not_a_loop():
    """Story 2 of issue 19: every move of the originator added a hop to the NDR that followed her,
    and after six hops the NDR was dropped as a loop (sp4 lost 167 and 318 pairs in 2 runs)."""
    mta = make_mta("sp4")
    body = {"msg_id": "m-6~ndr~0123456789abcdef", "sender": "postmaster.ex2", "raw": b"x", "accepted_at": 1.0,
            "ndr_for": "m-6", "ndr_rcpts": ["bob"], "priority": "normal",
            "rcpts": [{"alias": "carol", "alt_of": None, "hint": recipient("carol", "ex1", 40), "hops": 40, "cycles": 0}]}
    arrived = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    answer = store_answer(mta, sends(arrived, "store.deliver")[0], "not_here", 1.1)
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("carol", "ex2", 41)})), 1.2)
    onward = sends(mta.tick(10.0), "mta.transfer")
    assert not events(answer, "mta.failed")
    assert [(s.to, s.body.rcpts[0].hops, s.body.rcpts[0].cycles) for s in onward] == [("mta.ex2", 41, 0)]


def test_an_entry_naming_a_server_the_organisation_does_not_have_fails_with_an_ndr():
    """Story 4 of issue 19: a hand-edited home server (ex7) sent mail to mta.ex7 for ever."""
    mta = make_mta("sp4")
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("alice", "ex7", 5)})), 1.0)
    mta.tick(3.0)
    _, actions = submit(mta, ["alice"], now=3.0, sender="carol")
    failed = events(actions, "mta.failed")
    assert [(f.fields["reason"], f.fields["report"]) for f in failed] == [("no_route", "ndr")]
    assert not [s for s in sends(actions, "mta.transfer") if s.to == "mta.ex7"]


def test_an_ndr_for_a_moved_originator_is_held_until_the_cache_knows_the_new_home():
    """Found by chaos: the originator was itself being moved; dropping the NDR lost the report."""
    mta = make_mta("sp4")
    body = {"msg_id": "m-6.ndr.bob", "sender": "postmaster.ex2", "raw": b"x", "accepted_at": 1.0,
            "ndr_for": "m-6", "ndr_rcpts": ["bob"], "priority": "normal", "rcpts": [{"alias": "carol", "alt_of": None, "hint": None, "hops": 1}]}
    actions = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    held = store_answer(mta, sends(actions, "store.deliver")[0], "not_here", 1.1)
    assert not events(held, "mta.failed") and events(held, "mta.deferred")
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("carol", "ex2", 5)})), 1.2)
    retried = mta.tick(7.0)  # the cache applied carol's new home; the retry timer fired
    assert [s.to for s in sends(retried, "mta.transfer")] == ["mta.ex2"]


def test_a_report_that_expires_goes_to_the_postmaster_and_waits_for_its_store_for_ever():
    """Story 1 of issue 19: the originator's store was down longer than the NDR's time-out, and the
    NDR expired into nothing (`report=none`). No report about a report is made; the report itself
    goes to this MTA's own store's postmaster mailbox, and that copy never times out."""
    mta = make_mta("sp4", expire_ms=10_000)
    body = {"msg_id": "m-4~ndr~0123456789abcdef", "sender": "postmaster.ex2", "raw": b"x", "accepted_at": 1.0,
            "ndr_for": "m-4", "ndr_rcpts": ["bob"], "priority": "normal",
            "rcpts": [{"alias": "carol", "alt_of": None, "hint": None, "hops": 1}]}
    actions = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    failed, final, now = [], [], 1.0
    while not failed:  # every attempt is refused, as by a store that is down (its MTA answers for it)
        for attempt in sends(actions, "store.deliver"):
            mta.on_event(response(attempt, "error", {"reason": "store down", "code": None}), now)
        now = mta.next_wakeup()
        final = actions = mta.tick(now)
        failed = events(final, "mta.failed")
    assert now >= 21.0, "a report lives twice the normal time-out (10 s here)"
    assert [(f.fields["reason"], f.fields["report"]) for f in failed] == [("expired", "postmaster")]
    copy = sends(final, "store.deliver")
    assert [(s.to, s.body.mailbox, s.body.ndr_for, s.body.expires_at) for s in copy] == \
        [("store.ex1", "postmaster", "m-4", NEVER)]
    assert copy[0].body.msg_id == "m-4~ndr~0123456789abcdef~pm" and not sends(final, "mta.transfer")
    persisted = [a for a in final if isinstance(a, PersistMessage)]
    assert persisted[0].msg_id == copy[0].body.msg_id, "the copy is durable before the report's failure"
    summary = summarize(copy[0].body.raw)
    assert summary["report_id"] == "m-4~ndr~0123456789abcdef" and summary["ndr_for"] == "m-4"
    for now in (30.0, 1e6):  # the store stays away: the copy is tried again, and never given up
        store_answer(mta, sends(mta.tick(now), "store.deliver")[-1] if now > 30 else copy[0], "deferred", now)
        assert mta.status(now)["postmaster"] == 1 and not events(mta.tick(now + 0.01), "mta.failed")
    retry = sends(mta.tick(2e6), "store.deliver")
    done = store_answer(mta, retry[0], "delivered", 2e6)
    assert events(done, "mta.delivered") and mta.status(2e6)["open_pairs"] == 0


def test_recovered_queue_is_routed_once_the_cache_is_loaded():
    msg = QueuedMessage("m-5", "alice", b"raw", 0.5)
    msg.pairs["carol"] = Pair("carol", state="delivering")
    restored = QueuedMessage.from_record(msg.to_record())
    assert restored.pairs["carol"].state == "queued" and restored.pairs["carol"].unconfirmed
    settings = Settings(("ex1", "ex2"), "sp4", replication_jitter_ms=0)
    mta = MtaCore("ex1", of(settings, "mta.ex1"), "boot", queued=[restored])
    snapshot = sends(mta.start(0.0), "dir.snapshot")[0]
    actions = mta.on_event(response(snapshot, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 1.0)
    assert [s.body.mailbox for s in sends(actions, "store.deliver")] == ["carol"]


def test_requests_before_the_cache_is_loaded_are_refused():
    mta = MtaCore("ex1", of(Settings(), "mta.ex1"), "boot")
    mta.start(0.0)
    actions = mta.on_event(request("mta.submit", {"msg_id": None, "sender": "alice", "recipients": ["bob"],
                                                  "subject": "", "body": "", "priority": None}), 0.1)
    assert replies(actions)[0].type == "error" and "starting" in replies(actions)[0].body.reason


def test_timers_wake_only_the_messages_that_are_due():
    """Deferred at different times, each message is retried at its own time, and only then."""
    mta = make_mta("sp4", retry_ms=1000)
    for i in range(50):
        _, actions = submit(mta, ["carol"], now=1.0 + i / 100)
        store_answer(mta, sends(actions, "store.deliver")[0], "deferred", 1.0 + i / 100)
    assert mta.next_wakeup() == pytest.approx(2.0)
    retried = []
    for step in range(60):
        now = 2.005 + step / 100  # between two messages' retry times
        if mta.next_wakeup() <= now:
            retried.append((now, len(sends(mta.tick(now), "store.deliver"))))
    assert sum(n for _, n in retried) == 50, "every deferred message retried once"
    assert all(n == 1 for _, n in retried), "one message is due per step: none retried early"
    # what is left are the first deliveries' deadlines (answered: stale) and the retries' (at 4.005
    # on): waking for a stale one does nothing
    assert mta.next_wakeup() == pytest.approx(3.0)
    assert mta.tick(3.5) == []
    assert mta.next_wakeup() == pytest.approx(4.005)


def test_a_restarted_mta_whose_directory_is_down_keeps_the_ndrs_of_what_expires_meanwhile():
    """Found by the simulator (a kill landing in the directory's write left the directory down
    past the messages' expiry): the restarted MTA expired its recovered messages, routed their
    NDRs on a cache that was still empty, and dropped them as "unknown": mail lost, unreported.
    Now nothing is routed on an empty cache; a recovered pair (unconfirmed: its last attempt may
    have landed) asks its store at the time-out, and the NDR follows the store's "expired"."""
    first = make_mta("sp4", retry_ms=500, expire_ms=3000)
    msg_id, actions = submit(first, ["carol"], now=1.0)
    store_answer(first, sends(actions, "store.deliver")[0], "deferred", 1.1)
    queued = [QueuedMessage.from_record(m.to_record()) for m in first.queue.values()]
    settings = Settings(("ex1", "ex2"), "sp4", replication_lag_ms=0, replication_jitter_ms=0, retry_ms=500,
                        expire_ms=3000, request_timeout_ms=2000)
    mta = MtaCore("ex1", of(settings, "mta.ex1"), "boot2", queued)
    mta.start(2.0)  # asks the directory for its snapshot; no answer comes
    assert not mta.ready
    expired = mta.tick(4.01)
    assert not events(expired, "mta.failed") and not sends(expired, "store.deliver")
    assert [e.fields["reason"] for e in events(expired, "mta.deferred")] == ["directory cache not loaded yet"]
    snapshot = sends(expired, "dir.snapshot")[-1]  # asked again: the first went unanswered
    mta.on_event(response(snapshot, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 4.6)
    attempt = sends(mta.tick(4.6), "store.deliver")[0]
    assert attempt.body.expires_at == 4.0  # accepted at 1.0, a 3 s time-out
    refused = mta.on_event(response(attempt, "store.result", {"msg_id": msg_id, "mailbox": "carol", "outcome": "expired",
                                                              "reason": "the message's time-out has passed"}), 4.7)
    assert [(e.fields["reason"], e.fields["report"]) for e in events(refused, "mta.failed")] == [("expired", "ndr")]
    ndr_id = events(refused, "mta.ndr_queued")[0].fields["msg_id"]
    assert [(s.body.msg_id, s.to) for s in sends(refused, "mta.transfer")] == [(ndr_id, "mta.ex2")]  # alice's home


def test_an_attempt_that_waited_past_the_time_out_is_refused_and_the_ndr_is_the_only_outcome():
    """Found by the simulator (sp4, urgent mail, a store down for 30 s): the MTA's attempts to
    the dead store waited in its queue; at the time-out the MTA sent the NDR, and when the store
    came back it took the attempts and delivered: delivered and reported. A delivery now carries
    the message's time-out, the store refuses it after that, and an MTA whose attempt went
    unanswered asks the store before it reports."""
    from nodes.store.core import StoreCore

    store = StoreCore("ex1", {"carol": set()}, {}, "b")
    mta = make_mta("sp4", retry_ms=500, expire_ms=3000)
    msg_id, actions = submit(mta, ["carol"], now=1.0)
    held = sends(actions, "store.deliver")[0]  # the store is down: this waits in the queue
    mta.tick(3.1)  # no answer within 2 s: deferred, unconfirmed
    at_time_out = mta.tick(4.1)
    assert not events(at_time_out, "mta.failed"), "no NDR while an attempt may still land"
    ask = sends(at_time_out, "store.deliver")[0]
    for late in (held, ask):  # the store comes back at 30 s and takes them in order
        answer = replies(store.on_event(request("store.deliver", late.body, src="mta.ex1"), 30.0))[0]
        assert answer.body.outcome == "expired"
    final = mta.on_event(response(ask, "store.result", answer.body, src="store.ex1"), 30.1)
    assert [(e.fields["reason"], e.fields["report"]) for e in events(final, "mta.failed")] == [("expired", "ndr")]
    assert store.mailboxes["carol"] == set(), "never delivered"


def test_an_unconfirmed_pair_stays_unconfirmed_across_a_transfer():
    """Found by the simulator (sp4, torn kills, seed 1196639573): a delivery to alice went
    unanswered (her store was killed, and took the held request when it came back), the pair was
    handed to the MTA of her next home, where a third move had just taken her mailbox away again.
    That MTA did not know a copy might exist, failed the pair and sent an NDR: delivered and reported."""
    ex2 = make_mta("sp4", retry_ms=500, server="ex2")
    msg_id, actions = submit(ex2, ["alice"], now=1.0)
    ex2.tick(3.5)  # the delivery to alice's store: no answer within 2 s
    retry = sends(ex2.tick(4.1), "store.deliver")
    found = store_answer(ex2, retry[0], "not_here", 4.2)  # her mailbox moved (to ex1)
    lookup = sends(found, "dir.lookup")[0]
    moved = ex2.on_event(response(lookup, "dir.entry", {"recipient": recipient("alice", "ex1", 9), "usn": 9}), 4.3)
    transfer = sends(moved, "mta.transfer")[0]
    assert transfer.body.rcpts[0].unconfirmed is True
    ex1 = make_mta("sp4", retry_ms=500)
    taken = ex1.on_event(request("mta.transfer", transfer.body, src="mta.ex2"), 4.4)
    deliver = sends(taken, "store.deliver")[0]
    gone_again = store_answer(ex1, deliver, "not_here", 4.5)  # and moved back to ex2 meanwhile
    assert not events(gone_again, "mta.failed") and sends(gone_again, "dir.lookup")


def test_a_refused_retransmission_does_not_free_an_unacknowledged_hand_off():
    """Found by the simulator (sp4, torn kills, seed 740015505): mta.ex1 took a pair (dave's), but its
    ack was lost with it when it was killed; the retransmission met "mta.ex1 is starting", which
    freed the pair, and mta.ex2 delivered it itself while mta.ex1 had already reported it by NDR."""
    mta = make_mta("sp4", lag_ms=0, retry_ms=500, server="ex2")
    msg_id, actions = submit(mta, ["carol"], now=1.0)  # carol lives on ex1: a hand-off to mta.ex1
    first = sends(actions, "mta.transfer")[0]
    assert first.to == "mta.ex1"
    mta.tick(3.5)  # no ack within 2 s: mta.ex1 may own the pair now
    again = sends(mta.tick(4.1), "mta.transfer")
    assert [s.to for s in again] == ["mta.ex1"]
    mta.on_event(response(again[0], "error", {"reason": "mta.ex1 is starting", "code": None}, src="mta.ex1"), 4.2)
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("carol", "ex2", 5)})), 4.3)  # she moved here
    later = mta.tick(5.0)
    assert not sends(later, "store.deliver"), "not delivered here while mta.ex1 may own it"
    assert [s.to for s in sends(later, "mta.transfer")] == ["mta.ex1"]
    acked = mta.on_event(response(sends(later, "mta.transfer")[0], "mta.transfer_ack",
                                  {"msg_id": msg_id, "rcpts": ["carol"]}, src="mta.ex1"), 5.1)
    assert events(acked, "mta.transferred")


def test_legacy_reports_a_plain_co_recipient_even_when_another_copy_was_delivered():
    """The KB's silent drop belongs to the alternate (deliver to both), not to any other copy:
    a plain recipient in the move window gets an NDR (Q172364), in legacy as in sp4."""
    dtb = recipient("bob", "ex1", 3)  # bob without an alternate this time
    for build in ("legacy", "sp4"):
        mta = make_mta(build)
        mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": {**dtb, "usn": 5}})), 0.5)
        mta.tick(1.6)  # applied (lag 1 s)
        msg_id, actions = submit(mta, ["bob", "carol"], now=2.0)
        by_box = {s.body.mailbox: s for s in sends(actions, "store.deliver")}
        store_answer(mta, by_box["carol"], "delivered", 2.1)  # another copy delivered first
        final = store_answer(mta, by_box["bob"], "not_here", 2.2)
        assert [(f.fields["rcpt"], f.fields["report"]) for f in events(final, "mta.failed")] == [("bob", "ndr")], build


def test_legacy_drops_silently_when_the_alternate_was_given_a_copy_upstream():
    """The alternate on another server: the MTA that accepted the message expanded bob to carol
    and handed bob's pair on; the transfer says carol was given a copy, so the failing MTA keeps
    the KB's silence (legacy) or reports (sp4)."""
    for build, report in (("legacy", "none"), ("sp4", "ndr")):
        mta = make_mta(build)
        body = {"msg_id": "ex2.b.1", "sender": "alice", "raw": b"x", "accepted_at": 1.0, "ndr_for": None,
                "ndr_rcpts": [], "priority": "normal", "rcpts": [{"alias": "bob", "alt_of": None, "hint": recipient("bob", "ex1", 3, "carol", True),
                                            "hops": 1, "alt_copy": "carol"}]}
        taken = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
        final = store_answer(mta, sends(taken, "store.deliver")[0], "not_here", 1.1)
        failed = events(final, "mta.failed")
        assert [(f.fields["rcpt"], f.fields["report"]) for f in failed] == [("bob", report)], build


def test_a_transfer_says_the_alternate_was_given_a_copy():
    mta = make_mta("legacy", server="ex2")  # alice's home; bob (ex1) has carol (ex1) as alternate, deliver to both
    msg_id, actions = submit(mta, ["bob"])
    transfers = {s.body.rcpts[0].alias: s.body.rcpts[0] for s in sends(actions, "mta.transfer")}
    assert transfers["bob"].alt_copy == "carol" and transfers["carol"].alt_copy is None


@pytest.mark.parametrize("priority, expires", [("urgent", 1.0 + 7 * 2 / 7), ("normal", 8.0), ("non-urgent", 11.0)])
def test_a_message_times_out_by_its_priority(priority, expires):
    """Exchange 5.5's time-outs by priority are 2, 7 and 10 days (Q178539): here 2/7, 1 and 10/7
    of --expire-ms (7 s in this test)."""
    mta = make_mta("sp4", expire_ms=7000, retry_ms=500)
    actions = mta.on_event(request("mta.submit", {"msg_id": None, "sender": "alice", "recipients": ["carol"],
                                                  "subject": "s", "body": "b", "priority": priority}), 1.0)
    send = sends(actions, "store.deliver")[0]
    assert f"Priority: {priority}".encode() in send.body.raw
    failed, now = [], 1.0
    store_answer(mta, send, "deferred", 1.0)
    while not failed and now < 20:
        now = mta.next_wakeup()
        ticked = mta.tick(now)
        failed = events(ticked, "mta.failed")
        for s in sends(ticked, "store.deliver"):
            if s.body.mailbox == "carol":
                store_answer(mta, s, "deferred", now)
    assert [f.fields["reason"] for f in failed] == ["expired"] and abs(now - expires) < 0.6, (priority, now)


def test_priority_travels_with_a_transfer_and_a_bad_one_is_refused():
    mta = make_mta("sp4", server="ex2")
    actions = mta.on_event(request("mta.submit", {"msg_id": None, "sender": "alice", "recipients": ["carol"],
                                                  "subject": "s", "body": "b", "priority": "urgent"}), 1.0)
    assert sends(actions, "mta.transfer")[0].body.priority == "urgent"
    bad = mta.on_event(request("mta.submit", {"msg_id": None, "sender": "alice", "recipients": ["carol"],
                                              "subject": "s", "body": "b", "priority": "whenever"}), 1.0)
    assert replies(bad)[0].type == "error" and "priority must be one of" in replies(bad)[0].body.reason


def test_after_the_time_out_an_unconfirmed_pair_asks_at_its_retry_interval_not_in_a_loop():
    """Found by the simulator the moment the rule above was written: a deferral after the
    time-out set its timer to the time-out, in the past, and the MTA retried in a tight loop."""
    mta = make_mta("sp4", retry_ms=500, expire_ms=3000)
    submit(mta, ["carol"], now=1.0)  # the store never answers
    now, attempts = 1.0, 0
    while now < 12.0:
        now = mta.next_wakeup()
        ticked = mta.tick(now)
        attempts += len(sends(ticked, "store.deliver"))
        assert not events(ticked, "mta.failed")
        assert mta.next_wakeup() > now, "no timer left in the past"
    assert 3 <= attempts <= 6  # a 2 s answer time-out and a 0.5 s retry: one attempt every 2.5 s


def test_a_time_out_that_comes_before_the_retry_still_leads_to_the_question():
    """Found by the simulator (sp4, seed 1812343635): the time-out fell between an unanswered
    attempt and its retry; the MTA waited for the retry but armed no timer for it, and the pair
    stayed in the queue for good."""
    mta = make_mta("sp4", retry_ms=1500, expire_ms=3200)  # answer time-out 2 s: retry due at 4.5, time-out at 4.2
    submit(mta, ["carol"], now=1.0)
    mta.tick(3.0)  # no answer: deferred until 4.5
    mta.tick(mta.next_wakeup())
    asked = []
    for _ in range(5):
        now = mta.next_wakeup()
        assert now is not None, "a timer is armed"
        asked += sends(mta.tick(now), "store.deliver")
        if asked:
            break
    assert asked, "the MTA asks the store after the time-out"


def test_an_ndr_names_the_site_and_server_of_the_mta_that_wrote_it():
    settings = Settings(("ex1", "ex2"), "sp4", replication_lag_ms=0, replication_jitter_ms=0, retry_ms=5000,
                        expire_ms=10_000, request_timeout_ms=2000, sites=("HQ", "BRANCH"))
    mta = MtaCore("ex1", of(settings, "mta.ex1"), "boot")
    snapshot = sends(mta.start(0.0), "dir.snapshot")[0]
    mta.on_event(response(snapshot, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 0.0)
    msg_id, actions = submit(mta, ["carol"])
    failed = store_answer(mta, sends(actions, "store.deliver")[0], "not_here", 1.1)
    ndr = [s for s in sends(failed) if s.body.ndr_for == msg_id][0]
    assert b"MSEXCH:MSExchangeMTA:HQ:EX1" in ndr.body.raw


def test_delivery_restrictions_are_enforced_as_the_read_cache_holds_them():
    """Q178534: an MTA enforces the restrictions it read, for as long as it trusts the read."""
    settings = Settings(("ex1", "ex2"), "sp4", replication_lag_ms=0, replication_jitter_ms=0, retry_ms=5000,
                        expire_ms=10_000, request_timeout_ms=2000, read_cache_ttl_ms=5000)
    mta = MtaCore("ex1", of(settings, "mta.ex1"), "boot")
    snapshot = sends(mta.start(0.0), "dir.snapshot")[0]
    mta.on_event(response(snapshot, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 0.0)
    first_id, first = submit(mta, ["carol"], now=1.0)  # mta.ex1 reads carol's entry at 1.0
    store_answer(mta, sends(first, "store.deliver")[0], "delivered", 1.0)
    restricted = {**recipient("carol", "ex1", 5), "reject_from": ["alice"]}
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": restricted})), 1.5)
    mta.tick(1.5)  # replicated (lag 0)
    _, stale = submit(mta, ["carol"], now=2.0)
    assert sends(stale, "store.deliver"), "the read from 1.0 is trusted until 6.0: the old restrictions"
    _, fresh = submit(mta, ["carol"], now=6.5)
    assert [f.fields["reason"] for f in events(fresh, "mta.failed")] == ["restricted"]


def test_a_restriction_added_after_an_unanswered_delivery_does_not_report_a_delivered_message():
    """Found by the simulator (sp4, seed 866791591): a delivery's answer was lost, carol then
    rejected mail from alice, and the retry failed the pair as restricted: an NDR for a message
    that was in carol's mailbox. The retry asks the store, which says it is there."""
    mta = make_mta("sp4", lag_ms=0, retry_ms=500)
    msg_id, actions = submit(mta, ["carol"], now=1.0)
    assert sends(actions, "store.deliver")
    mta.tick(3.5)  # the answer was lost: unconfirmed
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": {**recipient("carol", "ex1", 5),
                                                                     "reject_from": ["alice"]}})), 3.6)
    retry = mta.tick(4.1)
    assert not events(retry, "mta.failed") and sends(retry, "store.deliver")
    answered = store_answer(mta, sends(retry, "store.deliver")[0], "duplicate", 4.2)
    assert events(answered, "mta.delivered")


def test_a_directory_whose_usn_goes_backwards_is_refused_and_said_so_once():
    """Story 4 of issue 19: the directory restarted at USN 0 and the MTAs' caches went back
    without a word. A Clone client that sees its server's sequence go back has found a fault."""
    mta = make_mta("sp4")  # its cache is at USN 4
    said = mta.on_event(Feed(frame("dir.heartbeat", {"usn": 0})), 1.0)
    assert [(e.level, e.fields) for e in events(said, "mta.directory_regressed")] == [("error", {
        "directory_usn": 0, "received_usn": 4,
        "why": "the directory's USN went backwards (its state was lost or replaced); this MTA keeps its cache and "
               "takes no change at or below the USN it had"})], "an operator's alarm, in words"
    assert mta.on_event(Feed(frame("dir.heartbeat", {"usn": 0})), 1.5) == [], "once, not every heartbeat"
    ask = mta.feed.ask_snapshot(2.0)
    kept = mta.on_event(response(ask, "dir.snapshot_reply", {"usn": 1, "recipients": [recipient("x", "ex1", 1)]}), 2.1)
    assert events(kept, "mta.directory_regressed") and mta.cache.get("bob") is not None and mta.cache.usn == 4
    assert mta.status(2.2)["directory_regressed"] == 1


def relay_failed(mta: MtaCore, msg_id: str, rcpt: str, reason: str, now: float, sender: str = "alice",
                 ndr_for: str | None = None, ndr_rcpts: tuple[str, ...] = ()) -> list:
    body = {"msg_id": msg_id, "sender": sender, "rcpt": rcpt, "raw": b"Subject: out\r\n\r\nx\r\n",
            "ndr_for": ndr_for, "ndr_rcpts": list(ndr_rcpts), "accepted_at": 1.0, "priority": "normal",
            "reason": reason, "diagnostic": "550 5.1.1 no such user here"}
    relay_failed.last = request("mta.relay_failed", body, src="ims.ex1")  # type: ignore[attr-defined]
    return mta.on_event(relay_failed.last, now)  # type: ignore[attr-defined]


def test_what_an_ims_hands_back_is_failed_here_once_with_its_report_durable_before_the_ok():
    """Issue 34, story 2: a message for outside that the smarthost refuses comes back to its
    originator as an NDR, after the message left this MTA's queue; a report that cannot leave goes
    to the postmaster; sent again (its "ok" lost), neither is made twice."""
    mta = make_mta("sp4", smtp=True, expire_ms=60_000)
    msg_id, actions = submit(mta, ["zed@outside.test"], sender="carol")
    (out,) = sends(actions, "ims.outbound")
    assert out.body.expires_at == 1.0 + 60.0 and out.body.accepted_at == 1.0
    mta.on_event(response(out, "ok", {}, src="ims.ex1"), 1.1)
    assert msg_id not in mta.queue, "relayed: the IMS owns it"
    back = relay_failed(mta, msg_id, "zed@outside.test", "refused", 2.0, sender="carol")
    (failed,) = events(back, "mta.failed")
    assert (failed.fields["reason"], failed.fields["report"]) == ("refused", "ndr")
    kinds = [type(a).__name__ for a in back]
    assert kinds.index("PersistMessage") < kinds.index("Reply"), "the NDR is durable before the IMS hears ok"
    assert [r.type for r in replies(back)] == ["ok"]
    ndr = [s for s in sends(back, "store.deliver") if s.body.ndr_for == msg_id]
    assert [(s.body.mailbox, s.to) for s in ndr] == [("carol", "store.ex1")]
    assert [r.re for r in replies(back)] == [relay_failed.last.frame.id] and replies(back)[0].trace == msg_id
    said = events(back, "mta.relay_failed")[0].fields
    assert said["ndr_for"] is None and said["diagnostic"].startswith("550") and said["src"] == "ims.ex1"
    again = relay_failed(mta, msg_id, "zed@outside.test", "refused", 2.5, sender="carol")
    assert [r.type for r in replies(again)] == ["ok"] and not sends(again, "store.deliver"), "made once"
    assert not [a for a in again if type(a).__name__ == "PersistMessage" and "~ndr~" in a.msg_id], "no report again"
    report = relay_failed(mta, "m-9~ndr~0123456789abcdef", "ann@outside.test", "expired", 3.0,
                          sender="postmaster.ex2", ndr_for="m-9", ndr_rcpts=("bob",))
    (gave_up,) = events(report, "mta.failed")
    assert (gave_up.fields["report"], gave_up.fields["reason"]) == ("postmaster", "expired")
    assert [s.body.mailbox for s in sends(report, "store.deliver")] == ["postmaster"]
    refused = relay_failed(mta, "m-10", "bob", "refused", 3.0)
    assert [(r.type, r.body.code) for r in replies(refused)] == [("error", "invalid")], "bob is no address"


def test_mail_taken_over_smtp_is_accepted_with_its_clients_message_id():
    """Dovecot's record of what a user expunged names a message by its Message-ID; for mail from
    outside that is the client's, which the MTA's acceptance line carries (the IMS's own line is
    never written for a session cut before its 250: campaign trial 1094192751)."""
    mta = make_mta("sp4")
    raw = b"Received: from x\r\nX-Xcon-Msg-Id: smtp-1\r\nMessage-ID: <c1@client.example>\r\nSubject: s\r\n\r\nhi\r\n"
    actions = mta.on_event(request("mta.submit_raw", {"msg_id": "smtp-1", "sender": "ann@outside.test",
                                                      "recipients": ["carol"], "raw": raw, "priority": "normal"}), 1.0)
    (accepted,) = events(actions, "mta.accepted")
    assert accepted.fields["message_id"] == "<c1@client.example>" and accepted.fields["via"] == "smtp"


def test_the_queue_listing_shows_each_open_pair_with_its_state_tries_and_next_retry():
    """What `xcon queue` shows (nodes.mta.queue.listing): oldest message first, only open pairs."""
    mta = make_mta("sp4")
    first, actions = submit(mta, ["bob"], now=1.0)  # bob: deliver to both, carol too
    by_box = {s.body.mailbox: s for s in sends(actions, "store.deliver")}
    store_answer(mta, by_box["carol"], "delivered", 1.1)
    store_answer(mta, by_box["bob"], "deferred", 1.2)
    second, _ = submit(mta, ["dave"], now=2.0)
    reply = replies(mta.on_event(request("mta.queue", {"limit": 1}), 3.0))[0]
    assert reply.type == "mta.queue_listing" and reply.body.total == 2, "bob's pair and the second message's"
    item, = reply.body.items
    assert item == {"msg_id": first, "kind": "message", "sender": "alice", "rcpt": "bob", "alt_of": None,
                    "state": "deferred", "reason": "mailbox locked", "attempts": 1, "next_retry_s": 3.2,
                    "handed_to": None, "age_s": 2.0, "priority": "normal", "expired": False}
    everything = replies(mta.on_event(request("mta.queue", {"limit": 10}), 3.0))[0].body.items
    assert [(i["msg_id"], i["rcpt"], i["state"], i["next_retry_s"]) for i in everything] == [
        (first, "bob", "deferred", 3.2), (second, "carol", "delivering", None)]


def test_a_failure_whose_sender_asked_for_no_report_is_declined_and_the_others_reported():
    """RFC 3461 over SMTP: NOTIFY=NEVER, or a NOTIFY without FAILURE, for a recipient or for the
    one its alternate stands for, declines the report of its failure; FAILURE asks for it."""
    mta = make_mta("sp4")

    def fails(n: int, rcpt: str, notify: str | None) -> tuple[str, list[str] | None]:
        answer = refused_from_outside(mta, n, rcpt, f"X-Xcon-DSN-Rcpt: {rcpt} NOTIFY={notify}\r\n" if notify else "")
        (failed,) = [f for f in events(answer, "mta.failed") if f.fields["msg_id"] == f"smtp-{n}"]
        return failed.fields["report"], failed.fields.get("notify")

    assert fails(1, "carol", "NEVER") == ("none", ["NEVER"])
    assert fails(2, "carol", "SUCCESS,DELAY") == ("none", ["DELAY", "SUCCESS"])
    assert fails(3, "carol", "FAILURE,DELAY") == ("ndr", None)
    assert fails(4, "carol", None) == ("ndr", None)
    assert fails(5, "dave", "NEVER") == ("none", ["NEVER"]), "carol's copy stands for dave: his NOTIFY holds"


def test_every_message_due_in_one_tick_is_retried():
    """A tick that handled only its last due message would heal through the request time-out, and
    no campaign would see it (a mutant that did so survived the first mutation run)."""
    mta = make_mta("sp4", retry_ms=500)
    sent = [submit(mta, [rcpt], now=1.0)[1] for rcpt in ("carol", "dave")]
    for actions in sent:
        store_answer(mta, sends(actions, "store.deliver")[0], "deferred", 1.1)
    retried = sends(mta.tick(7.0), "store.deliver")
    assert sorted(s.body.msg_id for s in retried) == sorted(sends(a, "store.deliver")[0].body.msg_id
                                                               for a in sent)


def test_a_transferred_recipient_this_mtas_directory_does_not_know_fails_as_unknown_with_an_ndr():
    """No world draws a recipient the directory lacks (the first mutation run's blind spot): a
    peer that knew one hands it over, and this MTA reports it to the sender."""
    mta = make_mta("sp4")
    body = transfer([{"alias": "zoe", "alt_of": None, "hint": None, "hops": 1}], msg_id="m-7")
    actions = mta.on_event(request("mta.transfer", body, src="mta.ex2"), 1.0)
    (failed,) = events(actions, "mta.failed")
    assert (failed.fields["msg_id"], failed.fields["rcpt"], failed.fields["reason"], failed.fields["report"]) == \
        ("m-7", "zoe", "unknown", "ndr")
    assert [(s.to, s.type) for s in sends(actions)] == [("mta.ex2", "mta.transfer")], "the NDR goes to alice on ex2"


def test_the_directory_homing_a_missing_mailbox_here_waits_the_transfer_interval():
    """The directory answered (bob is homed here, his mailbox not open yet): a wait after an
    answer is the transfer interval, not the open interval a silence earns."""
    mta = make_mta("reroute", retry_ms=5000, transfer_retry_ms=1000)
    msg_id, actions = submit(mta, ["carol"])
    asked = store_answer(mta, sends(actions, "store.deliver")[0], "not_here", 1.1)
    here = {"recipient": recipient("carol", "ex1", 6), "usn": 6}
    answer = mta.on_event(response(sends(asked, "dir.lookup")[0], "dir.entry", here), 1.2)
    assert [(e.fields["reason"], e.fields["retry_in_ms"]) for e in events(answer, "mta.deferred")] == [
        ("the directory homes it here; the store has no mailbox yet", 1000)]


def test_an_unconfirmed_pair_past_its_time_out_asks_again_at_its_retry_not_at_once():
    """Past its time-out a delivery that went unanswered is not failed (it may have landed): it
    asks the store again at its retry interval, as any retry; the time-out alone sends nothing."""
    mta = make_mta("sp4", retry_ms=5000, expire_ms=10_000, request_timeout_ms=2000)
    msg_id, actions = submit(mta, ["carol"])  # store.deliver at 1.0: never answered
    assert events(mta.tick(3.0), "mta.deferred"), "no answer by its deadline (3.0): tried again at 8.0"
    assert [s.body.msg_id for s in sends(mta.tick(8.0), "store.deliver")] == [msg_id]
    assert events(mta.tick(10.0), "mta.deferred"), "unanswered again: tried again at 15.0"
    assert mta.next_wakeup() == 11.0, "its time-out"
    assert mta.tick(11.0) == [] and mta.next_wakeup() == 15.0, "the time-out passes without a word"
    asked = mta.tick(15.0)
    assert [e.fields["reason"] for e in events(asked, "mta.retry")] == ["expired: asking whether an earlier attempt landed"]
    assert [s.body.msg_id for s in sends(asked, "store.deliver")] == [msg_id]


def test_a_retry_s_routed_line_names_its_attempt_the_entry_and_the_cache_and_its_delivery_the_trace():
    mta, msg_id, retry = bob_deferred_then_released("sp4", release_at=2.05)
    assert [e.fields for e in events(retry, "mta.routed")] == [
        {"msg_id": msg_id, "rcpt": "bob", "home_server": "ex1", "via": "cache", "entry_usn": 3, "cache_usn": 4,
         "attempt": 2}]
    assert [(s.body.mailbox, s.trace) for s in sends(retry, "store.deliver")] == [("bob", msg_id)]


def test_an_alternate_s_copy_handed_to_a_peer_says_whose_alternate_it_is_and_is_made_durable_once():
    """erin (ex1) has alice (ex2) as her alternate, deliver to both: alice's copy is transferred
    as erin's alternate, durable before the transfer leaves; sent again to the same peer after
    no answer, it is not written again (the hand-off is on disk already)."""
    mta = make_mta("sp4", retry_ms=5000)
    mta.on_event(Feed(frame("dir.change", {"usn": 5, "recipient": recipient("erin", "ex1", 5, "alice", True)})), 1.0)
    mta.tick(2.0)
    msg_id, actions = submit(mta, ["erin"], now=2.0, sender="carol")
    (handed,) = sends(actions, "mta.transfer")
    assert (handed.to, handed.trace, handed.body.rcpts[0].alias, handed.body.rcpts[0].alt_of) == (
        "mta.ex2", msg_id, "alice", "erin")
    durable = [a for a in actions if isinstance(a, PersistMessage)]
    assert len(durable) == 2 and actions.index(durable[-1]) < actions.index(handed), "accepted, then the hand-off"
    assert events(mta.tick(4.0), "mta.deferred"), "no answer within its 2 s"
    again = mta.tick(9.0)
    assert [s.to for s in sends(again, "mta.transfer")] == ["mta.ex2"]
    assert not [a for a in again if isinstance(a, PersistMessage)], "the same peer again: nothing new to write"


def test_a_report_made_before_the_directory_cache_is_loaded_waits_the_open_interval():
    """A restarted MTA whose directory has not answered yet: a recovered message expires, and its
    NDR waits for the cache. Nothing answered it: the open interval, not the transfer one."""
    held = QueuedMessage("m-8", "alice", b"raw", 0.5, pairs={"carol": Pair("carol", state="deferred", next_at=1.0)})
    settings = Settings(("ex1", "ex2"), "sp4", retry_ms=500, transfer_retry_ms=5000, expire_ms=3000)
    mta = MtaCore("ex1", of(settings, "mta.ex1"), "boot", queued=[held])
    mta.start(0.9)
    assert mta.next_wakeup() == 3.5, "its time-out"
    waited = mta.tick(3.5)
    assert [(e.fields["msg_id"].startswith("m-8~ndr~"), e.fields["reason"], e.fields["retry_in_ms"])
            for e in events(waited, "mta.deferred")] == [(True, "directory cache not loaded yet", 500)]


def test_every_pair_of_a_recovered_message_is_routed_once_the_cache_is_loaded():
    """A restart's routing of what it recovered kept only the last pair's actions: the others'
    deliveries were never sent, and waited out a request's time-out (no campaign saw the delay)."""
    held = QueuedMessage("m-6", "alice", b"raw", 0.5, pairs={"carol": Pair("carol"), "dave": Pair("dave")})
    mta = MtaCore("ex1", of(Settings(("ex1", "ex2"), "sp4"), "mta.ex1"), "boot", queued=[held])
    snapshot = sends(mta.start(0.0), "dir.snapshot")[0]
    ready = mta.on_event(response(snapshot, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 1.0)
    assert [e.fields for e in events(ready, "mta.ready")] == [{"cache_usn": 4, "queued": 1}]
    assert [s.body.mailbox for s in sends(ready, "store.deliver")] == ["carol", "dave"], "both pairs, not the last"


def test_an_answer_of_the_wrong_kind_defers_the_pair_and_a_late_one_is_only_noted():
    """A peer that answers a delivery with a transfer's ack (or anything not owed) has not said
    the message is in; nor is an answer for a request given up on."""
    for wrong in ("mta.transfer_ack", "ok", "dir.entry", "store.result"):
        mta = make_mta("sp4")
        msg_id, actions = submit(mta, ["alice"] if wrong == "store.result" else ["carol"])
        (asked,) = sends(actions, "mta.transfer" if wrong == "store.result" else "store.deliver")
        body = {"mta.transfer_ack": {"msg_id": msg_id, "rcpts": ["carol"]}, "ok": {},
                "dir.entry": {"recipient": recipient("carol", "ex1", 1), "usn": 4},
                "store.result": {"msg_id": msg_id, "mailbox": "alice", "outcome": "delivered", "reason": ""}}[wrong]
        answer = mta.on_event(response(asked, wrong, body), 1.1)
        assert [e.fields["reason"] for e in events(answer, "mta.deferred")] == [
            f"unexpected answer '{wrong}' from {asked.to}"], wrong
        assert not events(answer, "mta.delivered") and not events(answer, "mta.transferred"), wrong
        assert mta.status(1.2)["deferred"] == 1, wrong
    late = mta.on_event(response(asked, "ok", {}), 1.3)
    assert [(e.event, e.level, e.fields) for e in events(late)] == [
        ("mta.late_answer", "debug", {"re": asked.id, "type": "ok"})]


def test_a_delivery_says_whether_the_store_had_it_already_and_a_soft_deleted_mailbox_fails_as_such():
    mta = make_mta("sp4")
    for outcome, duplicate in (("delivered", False), ("duplicate", True)):
        _, actions = submit(mta, ["carol"])
        answer = store_answer(mta, sends(actions, "store.deliver")[0], outcome, 1.1)
        assert [e.fields["duplicate"] for e in events(answer, "mta.delivered")] == [duplicate]
    _, gone = submit(mta, ["carol"], now=2.0)
    failed = store_answer(mta, sends(gone, "store.deliver")[0], "soft_deleted", 2.1)
    assert [(f.fields["reason"], f.fields["report"]) for f in events(failed, "mta.failed")] == [("soft_deleted", "ndr")]


def test_an_unanswered_delivery_past_its_time_out_fails_as_expired_when_the_directory_homes_it_here():
    """The store says "not here" to a pair that may have landed (its delivery went unanswered):
    the directory is asked, and homes it here. Before the time-out that is a wait; after it, the
    pair fails as expired (it would otherwise ask for ever)."""
    mta = make_mta("sp4", retry_ms=5000, expire_ms=10_000, request_timeout_ms=2000)
    msg_id, _ = submit(mta, ["carol"])
    mta.tick(3.0)  # unanswered: unconfirmed from now on
    (asked,) = sends(mta.tick(11.0), "store.deliver")  # its time-out: asks whether it landed
    (lookup,) = sends(store_answer(mta, asked, "not_here", 11.0), "dir.lookup")
    # answered in the same instant: at its time-out a message has expired, as everywhere else
    answer = mta.on_event(response(lookup, "dir.entry", {"recipient": recipient("carol", "ex1", 1), "usn": 4}), 11.0)
    assert [(f.fields["reason"], f.fields["report"]) for f in events(answer, "mta.failed")] == [("expired", "ndr")]


def test_a_released_mailbox_s_retry_is_said_with_the_cache_s_usn_and_an_answer_frees_its_request():
    mta = make_mta("sp4")
    msg_id, actions = submit(mta, ["carol"])
    store_answer(mta, sends(actions, "store.deliver")[0], "deferred", 1.1)
    assert mta.queue.requests == {}, "answered: nothing waits on that request any more"
    released = mta.on_event(request("store.released", {"mailbox": "carol"}, src="store.ex1"), 1.2)
    assert [e.fields for e in events(released, "mta.retry")] == [
        {"msg_id": msg_id, "rcpt": "carol", "reason": "mailbox released", "cache_usn": 4}]


def test_a_pair_s_final_state_is_durable_while_its_message_is_open_and_its_retirement_is_a_debug_line():
    """carol's copy is in, bob's still owed: carol's state is written (a restart must not deliver
    her copy again); once bob's is in, the message retires."""
    mta = make_mta("sp4")
    msg_id, actions = submit(mta, ["alice", "carol"])
    transfer_out, deliver = sends(actions, "mta.transfer")[0], sends(actions, "store.deliver")[0]
    done = store_answer(mta, deliver, "delivered", 1.1)
    (written,) = [a for a in done if isinstance(a, PersistMessage)]
    assert written.msg_id == msg_id
    back = QueuedMessage.from_record(written.record)
    assert (back.pairs["carol"].state, back.pairs["alice"].state) == ("delivered", "queued")
    retired = mta.on_event(response(transfer_out, "mta.transfer_ack", {"msg_id": msg_id, "rcpts": ["alice"]}), 1.2)
    assert [(e.level, e.fields) for e in events(retired, "mta.retired")] == [
        ("debug", {"msg_id": msg_id, "outcome": {"alice": "transferred", "carol": "delivered"}})]


def test_what_a_restart_remembers_of_finished_pairs_refuses_their_retransmission():
    remembered = [("m-1", {"bob": 1}, 1.0)]
    mta = MtaCore("ex1", of(Settings(("ex1", "ex2"), "sp4"), "mta.ex1"), "boot", remembered=remembered)
    snapshot = sends(mta.start(0.0), "dir.snapshot")[0]
    mta.on_event(response(snapshot, "dir.snapshot_reply", {"usn": 4, "recipients": DIRECTORY}), 0.5)
    again = mta.on_event(request("mta.transfer", transfer([{"alias": "bob", "alt_of": None, "hint": None, "hops": 1}],
                                                          msg_id="m-1"), src="mta.ex2"), 1.0)
    assert events(again, "mta.transfer_duplicate") and not sends(again)


def test_an_idle_mta_sleeps_and_one_that_remembers_wakes_to_forget():
    mta = make_mta("sp4")
    mta.tick(2.0)  # the snapshot's deadline, answered before it
    assert mta.next_wakeup() is None and "lag_fault" not in mta.status(2.0)
    _, actions = submit(mta, ["carol"])
    store_answer(mta, sends(actions, "store.deliver")[0], "delivered", 1.1)
    mta.tick(3.5)  # the delivery's request deadline (3.0), stale now: the memory's prune is all that is left
    assert len(mta.queue.seen) == 1 and mta.next_wakeup() == mta.queue.next_prune


def test_the_queue_listing_with_no_room_counts_and_lists_nothing():
    mta = make_mta("sp4")
    submit(mta, ["carol"])
    (listing,) = replies(mta.on_event(request("mta.queue", {"limit": 0}), 2.0))
    assert (listing.body.items, listing.body.total) == ([], 1)


def test_an_mta_of_an_unknown_build_is_refused_and_its_disk_floor_comes_from_its_settings():
    with pytest.raises(ValueError, match="unknown MTA build 'sp5'"):
        MtaCore("ex1", of(Settings(("ex1", "ex2"), "sp5"), "mta.ex1"), "boot")
    mta = make_mta("sp4", min_free_mb=1)
    mta.on_event(DiskSpace(10), 2.0)  # under its floor of 1 MiB
    (refused,) = replies(mta.on_event(request("mta.submit", submit_body(["carol"])), 2.0))
    assert refused.body.reason == "insufficient storage on mta.ex1 (10 bytes free), retry later"
