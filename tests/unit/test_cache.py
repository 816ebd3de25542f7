"""The directory cache: late, in order, and gap-aware (the Clone pattern's subscriber)."""

from nodes.mta.cache import DirectoryCache

from .helpers import recipient


def test_changes_apply_after_the_lag_and_in_usn_order():
    cache = DirectoryCache(lag_ms=1000, jitter_ms=800, seed=7)
    cache.load_snapshot(1, [recipient("bob", "ex1", 1)], now=0.0)
    for usn, home in ((2, "ex2"), (3, "ex1"), (4, "ex2")):
        assert cache.receive(usn, recipient("bob", home, usn), now=0.1 * usn) == "scheduled"
    assert cache.apply_due(1.0) == [] and cache.get("bob")["home_server"] == "ex1"
    applied = cache.apply_due(10.0)
    assert [e["usn"] for e in applied] == [2, 3, 4]
    assert cache.get("bob")["usn"] == 4 and cache.usn == 4


def test_a_gap_and_a_repeat_are_recognised():
    cache = DirectoryCache(0, 0, 0)
    cache.load_snapshot(5, [], now=0.0)
    assert cache.receive(5, recipient("a", "ex1", 5), 0.0) == "stale"
    assert cache.receive(7, recipient("a", "ex1", 7), 0.0) == "gap"
    scheduled = cache.load_snapshot(7, [recipient("a", "ex1", 7), recipient("b", "ex1", 3)], now=1.0)
    assert [e["usn"] for e in scheduled] == [7] and cache.received_usn == 7


def test_jitter_is_reproducible_from_the_seed():
    def times(seed):
        cache = DirectoryCache(100, 500, seed)
        cache.load_snapshot(0, [], 0.0)
        out = []
        for usn in range(1, 6):
            cache.receive(usn, recipient("x", "ex1", usn), 0.0)
            out.append(cache.last_scheduled())
        return out
    assert times(3) == times(3) and times(3) != times(4)
