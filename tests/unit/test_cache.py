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


def test_the_read_cache_hides_a_replicated_change_until_the_entry_read_runs_out():
    """Exchange 5.5's MTA trusts what it read from the directory for 60 s (Q172364, Q178534):
    the second layer, on top of replication."""
    cache = DirectoryCache(lag_ms=1000, jitter_ms=0, seed=1, read_ttl_ms=5000)
    cache.load_snapshot(1, [recipient("bob", "ex1", 1)], now=0.0)
    assert cache.get("bob", now=0.5)["home_server"] == "ex1"  # read at 0.5: trusted until 5.5
    cache.receive(2, recipient("bob", "ex2", 2), now=1.0)
    cache.apply_due(2.0)  # replicated at 2.0
    assert cache.usn == 2 and cache.get("bob", now=3.0)["home_server"] == "ex1", "the read is still trusted"
    assert cache.view_usn(3.0) == 1 and cache.view_usn(7.0) == 2  # every read sees it from 2.0 + 5 s
    assert cache.get("bob", now=5.6)["home_server"] == "ex2", "read again once the read ran out"
    plain = DirectoryCache(lag_ms=0, jitter_ms=0, seed=1)  # no read cache: the replica, at once
    plain.load_snapshot(1, [recipient("bob", "ex1", 1)], now=0.0)
    plain.receive(2, recipient("bob", "ex2", 2), now=1.0)
    plain.apply_due(1.0)
    assert plain.get("bob", now=1.0)["home_server"] == "ex2" and plain.view_usn(1.0) == 2


def test_the_exchange55_profile_has_the_documented_numbers_and_scales_them():
    from nodes.config import Settings

    s = Settings.from_profile("exchange55", 0.01, servers=("ex1", "ex2", "ex3"))
    assert (s.replication_lag_ms, s.replication_step_ms, s.read_cache_ttl_ms) == (3000, 300, 600)
    assert (s.retry_ms, s.transfer_retry_ms) == (6000, 1200)
    assert s.timings()["expire_s_by_priority"] == {"urgent": 1728.0, "normal": 6048.0, "non-urgent": 8640.0}
    full = Settings.from_profile("exchange55")
    assert full.replication_lag_ms == 300_000 and full.expire_ms == 7 * 86_400_000
    assert Settings.from_profile("lab") == Settings()  # today's defaults, named


def test_an_mta_outside_the_directorys_site_hears_of_changes_over_the_connector():
    from nodes.config import Settings
    from nodes.mta.core import MtaCore
    from nodes.node_settings import of

    settings = Settings(("ex1", "ex2", "ex3"), "sp4", replication_lag_ms=1000, replication_jitter_ms=0,
                        replication_step_ms=100, sites=("HQ", "HQ", "BRANCH"), intersite_lag_ms=5000)
    lags = {s: MtaCore(s, of(settings, f"mta.{s}"), "b").cache.lag_s for s in settings.servers}
    assert lags == {"ex1": 1.0, "ex2": 1.1, "ex3": 6.2}
    assert settings.site_of("ex3") == "BRANCH" and Settings().site_of("ex1") == "XCON"


def test_a_read_before_the_first_snapshot_is_not_kept_by_the_read_cache():
    """A restarted MTA read the empty view before its snapshot came (for a pair it had handed off,
    whose entry it did not even use); the read cache kept "no such user" for its TTL, and a
    message already delivered was failed as unknown and reported (simulated trial 525040750)."""
    cache = DirectoryCache(lag_ms=0, jitter_ms=0, seed=1, read_ttl_ms=5000)
    assert cache.get("dave", now=0.0) is None
    cache.load_snapshot(1, [recipient("dave", "ex2", 1)], now=0.1)
    assert cache.get("dave", now=0.2)["home_server"] == "ex2", "read again: the snapshot has him"


def test_the_jitter_is_drawn_over_its_whole_range_from_the_lag_on():
    """A change waits its lag plus a jitter drawn from [0, jitter]: over many changes the draws
    reach the range's end, and never pass it (a fault's jitter, set_lag, the same)."""
    for cache in (DirectoryCache(lag_ms=200, jitter_ms=1000, seed=5), DirectoryCache(0, 0, 5)):
        cache.load_snapshot(0, [], 0.0)
        if not cache.jitter_s:
            cache.set_lag(200, 1000)
        delays = []
        for usn in range(1, 5001):
            now = usn * 10.0  # each applied before the next comes: none waits behind another
            cache.receive(usn, recipient("x", "ex1", usn), now)
            delays.append(cache.next_apply() - now)
            cache.apply_due(now + 5.0)
        assert 0.2 <= min(delays) < 0.201 and 1.1995 < max(delays) <= 1.2, (min(delays), max(delays))


def test_what_every_read_sees_is_the_usn_applied_a_read_s_lifetime_ago():
    """view_usn (the status' cache_usn, which a move's workaround waits on): with a read cache, a
    read made before a change was applied may hide it for the read's lifetime."""
    cache = DirectoryCache(lag_ms=1000, jitter_ms=0, seed=1, read_ttl_ms=5000)
    assert cache.view_usn(100.0) == 0, "before the first snapshot: nothing"
    cache.load_snapshot(4, [recipient("bob", "ex1", 4)], now=0.0)
    for usn, at in ((5, 2.0), (6, 4.0)):
        cache.receive(usn, recipient("bob", "ex2", usn), now=at - 1.0)
        cache.apply_due(at)
    assert [cache.view_usn(t) for t in (1.0, 6.99, 7.0, 8.99, 9.0, 100.0)] == [4, 4, 5, 5, 6, 6]
    assert cache.last_scheduled() == 0.0, "nothing waits"


def test_an_entry_read_is_trusted_until_its_lifetime_ends_not_at_its_end():
    cache = DirectoryCache(lag_ms=0, jitter_ms=0, seed=1, read_ttl_ms=5000)
    cache.load_snapshot(1, [recipient("bob", "ex1", 1)], now=0.0)
    assert cache.get("bob", now=2.0)["home_server"] == "ex1"  # trusted until 7.0
    cache.receive(2, recipient("bob", "ex2", 2), now=2.5)
    cache.apply_due(2.5)
    assert cache.get("bob", now=6.998)["home_server"] == "ex1"
    assert cache.get("bob", now=7.0)["home_server"] == "ex2"
    assert cache.get("bob")["home_server"] == "ex2", "asked at no moment: the replica, not a read"
