"""nodes/mta/router.py: where a pair goes, as a decision, from the cache alone (the core carries
decisions out: tests/unit/test_mta_core.py and test_mta_paths.py)."""

from nodes.mta.cache import DirectoryCache
from nodes.mta.queue import Pair, QueuedMessage
from nodes.mta.router import (
    MAX_CYCLES,
    OUTSIDE,
    POSTMASTER_COPY,
    AskDirectory,
    Fail,
    Reroute,
    Route,
    Router,
    Wait,
)

from .helpers import recipient


def router(build: str = "sp4", *entries: dict) -> Router:
    cache = DirectoryCache(0, 0, 0)
    cache.load_snapshot(9, list(entries), now=0.0)
    return Router("ex1", build, ("ex1", "ex2"), cache)


def message(**kw) -> QueuedMessage:
    return QueuedMessage("m1", "alice", b"x", 0.0, **kw)


def test_a_pair_goes_here_to_a_peer_or_nowhere_as_its_entry_says():
    r = router("sp4", recipient("bob", "ex1", 1), recipient("carol", "ex2", 2), recipient("zed", "ex9", 3))
    assert r.decide(message(), Pair("bob"), 1.0, ready=True) == Route("here", r.cache.get("bob"), "cache")
    assert r.decide(message(), Pair("carol"), 1.0, ready=True) == Route("peer", r.cache.get("carol"), "cache", 0)
    assert r.decide(message(), Pair("zed"), 1.0, ready=True).to == "no_route"
    assert r.decide(message(), Pair("nobody"), 1.0, ready=True) == Fail("unknown")
    assert r.decide(message(), Pair("bob"), 1.0, ready=False) == Wait("directory cache not loaded yet", answered=False)
    assert r.decide(message(), Pair("dave@outside.test"), 1.0, ready=True) == OUTSIDE
    assert r.decide(message(report="r1"), Pair("postmaster"), 1.0, ready=True) == POSTMASTER_COPY


def test_a_newer_hint_wins_and_a_transfer_on_data_no_newer_counts_a_cycle():
    r = router("sp4", recipient("carol", "ex1", 2))
    moved = recipient("carol", "ex2", 5)
    assert r.decide(message(), Pair("carol", hint=moved), 1.0, ready=True) == Route("peer", moved, "hint", 0)
    same = recipient("carol", "ex1", 2)
    assert r.decide(message(), Pair("carol", hint=same), 1.0, ready=True).via == "cache", "a hint no newer: the cache"
    looping = Pair("carol", hint=moved, arrived_usn=5, cycles=MAX_CYCLES - 1)
    assert r.decide(message(), looping, 1.0, ready=True).to == "loop"
    looping.handed_to = "mta.ex2"  # an unacknowledged hand-off goes to its peer again, never fails as a loop
    assert r.decide(message(), looping, 1.0, ready=True) == Route("peer", moved, "unacknowledged transfer", MAX_CYCLES)


def test_restrictions_fail_a_pair_unless_an_earlier_attempt_may_have_landed():
    r = router("sp4", {**recipient("bob", "ex1", 1), "reject_from": ["alice"]})
    decided = r.decide(message(), Pair("bob"), 1.0, ready=True)
    assert isinstance(decided, Fail) and decided.reason == "restricted" and decided.why[0].event == "mta.restricted"
    assert r.decide(message(), Pair("bob", unconfirmed=True), 1.0, ready=True).to == "here"


def test_not_here_parts_the_builds_ways():
    """The heart of KB Q248839: the store has no mailbox and the cache still homes it here."""
    here = recipient("bob", "ex1", 1)
    for build in ("sp4", "legacy"):  # both fail it: what legacy then reports is the Reporter's (test_ndr.py)
        failed = router(build, here).not_here(message(), Pair("bob"), 1.0, "soft_deleted", 9)
        assert isinstance(failed, Fail) and failed.reason == "soft_deleted", failed
        assert failed.why[0].event == "mta.not_homed" and failed.why[0].fields["action"] == "fail"
    assert isinstance(router("reroute", here).not_here(message(), Pair("bob"), 1.0, "moved", 9), AskDirectory)
    assert isinstance(router("sp4", here).not_here(message(), Pair("bob", unconfirmed=True), 1.0, "moved", 9),
                      AskDirectory), "a delivery that went unanswered may have left with the mailbox"
    held = router("sp4", here).not_here(message(ndr_for="m0"), Pair("bob"), 1.0, "moved", 9)
    assert (held.reason, held.answered) == ("originator's mailbox moved; waiting for the directory cache", True), \
        "a report is held until the cache learns the new home"
    assert [(w.event, w.fields) for w in held.why] == [("mta.not_homed", {
        "action": "hold report", "cache_home": "ex1", "msg_id": "m1", "rcpt": "bob", "cache_usn": 9, "entry_usn": 1,
        "directory_usn": 9})]
    unknown = router("sp4").not_here(message(), Pair("bob"), 1.0, "moved", 9)
    assert unknown.why[0].fields["entry_usn"] is None, "the facts of a recipient the cache does not hold"
    caught_up = router("sp4", recipient("bob", "ex2", 4)).not_here(message(), Pair("bob"), 1.0, "moved", 9)
    assert isinstance(caught_up, Reroute)


def test_the_directorys_answer_reroutes_waits_or_fails():
    r = router("reroute")
    assert r.resolved(message(), Pair("bob"), None, expired=False) == Fail("unknown")
    rerouted = r.resolved(message(), Pair("bob"), recipient("bob", "ex2", 4), expired=False)
    assert [(w.event, w.fields) for w in rerouted.why] == [("mta.rerouted", {
        "msg_id": "m1", "rcpt": "bob", "reason": "directory lookup", "home_server": "ex2", "entry_usn": 4,
        "cache_usn": 9})]
    assert r.resolved(message(), Pair("bob"), recipient("bob", "ex1", 4), expired=False) == Wait(
        "the directory homes it here; the store has no mailbox yet")
    assert r.resolved(message(), Pair("bob"), recipient("bob", "ex1", 4), expired=True) == Fail("expired")
