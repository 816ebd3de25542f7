"""What an MTA remembers of finished pairs: merged per message, forgotten in time, never early."""

from __future__ import annotations

from nodes.mta.seen import Seen


def test_hops_merge_per_recipient_and_keep_the_highest():
    seen = Seen(100.0)
    seen.add("m1", {"bob": 1, "carol": 2}, 10.5)
    seen.add("m1", {"bob": 3, "carol": 1, "dave.x-y": 0}, 10.5)
    assert seen.hops("m1") == {"bob": 3, "carol": 2, "dave.x-y": 0}
    assert seen.accepted_at("m1") == 10.5
    assert seen.hops("nope") == {} and "nope" not in seen and len(seen) == 1


def test_an_outside_address_with_an_equals_sign_is_remembered_whole():
    """An outside recipient may hold "=" (an SRS address, say): the hop count is after the last."""
    seen = Seen(100.0)
    seen.add("m1", {"SRS0=x=y=ann@outside.test": 2, "bob": 1}, 10.5)
    assert seen.hops("m1") == {"SRS0=x=y=ann@outside.test": 2, "bob": 1}
    assert list(seen.items()) == [("m1", {"SRS0=x=y=ann@outside.test": 2, "bob": 1}, 10.5)]


def test_forgotten_after_remember_s_from_acceptance_and_not_before():
    seen = Seen(100.0)
    seen.add("a", {"bob": 1}, 0.0)
    seen.add("b", {"bob": 1}, 50.0)
    assert seen.prune(100.0) == 0 and "a" in seen
    assert seen.prune(100.1) == 1 and "a" not in seen and "b" in seen
    assert seen.prune(150.1) == 1 and len(seen) == 0


def test_an_entry_behind_a_later_one_is_kept_longer_never_forgotten_early():
    seen = Seen(100.0)
    seen.add("late", {"bob": 1}, 50.0)  # retired first, accepted later
    seen.add("early", {"bob": 1}, 0.0)
    assert seen.prune(120.0) == 0 and "early" in seen
    assert seen.prune(151.0) == 2


def test_a_restart_rebuilds_it_from_the_spool_in_acceptance_order():
    seen = Seen(100.0, [("b", {"bob": 2}, 50.0), ("a", {"carol": 1}, 0.0)])
    assert sorted(seen.items()) == [("a", {"carol": 1}, 0.0), ("b", {"bob": 2}, 50.0)]
    assert seen.prune(101.0) == 1 and "b" in seen
