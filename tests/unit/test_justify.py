"""Issue 31, part 1: each NDR and postmaster copy judged against the facts (inspect.justify), from
hand-made events: the rule each reason has, held and broken."""

from collections import Counter

from nodes.config import Settings
from orchestrator.inspect.audit import EndState
from orchestrator.inspect.check import check

T0 = 1_780_000_000.0
SP4 = Settings(("ex1", "ex2"), "sp4", expire_ms=10_000, report_expire_ms=20_000)


def at(seconds, node, event, **fields):
    return {"ts": T0 + seconds, "hlc": [int((T0 + seconds) * 1000), 0], "node": node, "event": event, **fields}


def accepted(seconds=0.0, **extra):
    return at(seconds, "mta.ex1", "mta.accepted", msg_id="m1", sender="alice", rcpts=["bob"], alt_of={}, **extra)


def failed(seconds, reason, **extra):
    """bob fails on mta.ex1, and his NDR reaches alice."""
    return [at(seconds, "mta.ex1", "mta.failed", msg_id="m1", rcpt="bob", reason=reason, report="ndr",
               ndr_id="m1~ndr~1", cache_usn=3, **extra),
            at(seconds, "mta.ex1", "mta.ndr_queued", msg_id="m1~ndr~1", ndr_for="m1", rcpts=["bob"], to="alice"),
            at(seconds + 0.1, "store.ex1", "store.delivered", msg_id="m1~ndr~1", mailbox="alice", ndr_for="m1",
               ndr_rcpts=["bob"])]


def moved(seconds, usn, home="ex2"):
    return at(seconds, "directory", "directory.modified", alias="bob", usn=usn, home_server=home,
              changes={"home_server": home})


def not_homed(seconds, entry_usn):
    return at(seconds, "mta.ex1", "mta.not_homed", msg_id="m1", rcpt="bob", action="fail", cache_usn=entry_usn,
              entry_usn=entry_usn)


def verdict(events, settings=SP4, homes=None):
    state = None
    if homes is not None:  # alice's mailbox holds bob's NDR
        state = EndState(homes, boxes={("ex1", "alice"): Counter({"m1~ndr~1": 1})})
    report = check(events, state=state, settings=settings)
    return [(v.outcome, v.why) for v in report.violations], report


def test_an_ndr_for_a_moved_recipient_is_owed_only_while_the_mtas_cache_was_behind():
    behind = [accepted(), moved(0.5, 4), not_homed(1.0, 3), *failed(1.0, "moved")]
    assert verdict(behind)[0] == [], "sp4's documented NDR: the directory had moved bob past the entry it routed on"
    current = [accepted(), moved(0.5, 3), not_homed(1.0, 3), *failed(1.0, "moved")]
    (outcome, why), = verdict(current)[0]
    assert outcome == "unjustified_ndr" and "the cache was not behind" in why
    later = [accepted(), not_homed(1.0, 3), *failed(1.0, "moved"), moved(2.0, 4)]
    assert verdict(later)[0][0][0] == "unjustified_ndr", "a move after the failure does not justify it"
    unnamed = [accepted(), moved(0.5, 3), dict(not_homed(1.0, 3), entry_usn=None), *failed(1.0, "moved")]
    assert verdict(unnamed)[0][0][0] == "unjustified_ndr", "without the entry's USN, the cache's (3) is the bar"
    rerouted = verdict(behind, Settings(("ex1", "ex2"), "reroute"))[0]
    assert rerouted[0][0] == "unjustified_ndr" and "reroute never fails" in rerouted[0][1]


def test_an_expired_ndr_is_owed_only_after_the_messages_own_time_out():
    assert verdict([accepted(), *failed(10.0, "expired")])[0] == []
    (outcome, why), = verdict([accepted(), *failed(6.0, "expired")])[0]
    assert outcome == "unjustified_ndr" and "before its time-out of 10 s" in why
    urgent = [accepted(priority="urgent"), *failed(3.0, "expired")]
    assert verdict(urgent)[0] == [], "urgent mail's time-out is shorter (2/7 of normal's)"
    refused = [accepted(), at(10.2, "store.ex1", "store.expired_refused", msg_id="m1", mailbox="bob"),
               *failed(9.0, "expired")]
    assert verdict(refused)[0] == [], "the store judged it on its own clock, ahead of the MTA's"


def test_an_unknown_recipient_must_be_unknown_to_the_directory_at_the_usn_read():
    assert verdict([accepted(), *failed(1.0, "unknown")], homes={"alice": "ex1"})[0] == []
    (outcome, why), = verdict([accepted(), *failed(1.0, "unknown")], homes={"alice": "ex1", "bob": "ex1"})[0]
    assert outcome == "unjustified_ndr" and "bob had a directory entry at USN 3" in why
    added_later = at(0.5, "directory", "directory.added", alias="bob", usn=5, home_server="ex1")
    assert verdict([accepted(), added_later, *failed(1.0, "unknown")], homes={"alice": "ex1", "bob": "ex1"})[0] == []


def test_a_restriction_must_be_in_the_entry_the_mta_read():
    restrict = at(0.2, "directory", "directory.modified", alias="bob", usn=4, home_server="ex1",
                  changes={"reject_from": ["alice"]})
    read = at(1.0, "mta.ex1", "mta.restricted", msg_id="m1", rcpt="bob", sender="alice", entry_usn=4, cache_usn=4)
    assert verdict([accepted(), restrict, read, *failed(1.0, "restricted")])[0] == []
    stale = dict(read, entry_usn=3)
    (outcome, why), = verdict([accepted(), restrict, stale, *failed(1.0, "restricted")])[0]
    assert outcome == "unjustified_ndr" and "did not reject mail from alice" in why


def test_a_loop_needs_a_directory_that_went_backwards():
    (outcome, _), = verdict([accepted(), *failed(1.0, "loop")])[0]
    assert outcome == "unjustified_ndr"
    regressed = [at(0.1, "directory", "directory.loaded", usn=9), at(0.5, "directory", "directory.loaded", usn=4)]
    assert verdict([accepted(), *regressed, *failed(1.0, "loop")])[0] == []


def test_a_postmaster_copy_is_owed_only_after_the_reports_time_out_or_for_an_unknown_originator():
    def report_failed(seconds, reason):
        return [at(10.0, "mta.ex1", "mta.failed", msg_id="m1", rcpt="bob", reason="expired", report="ndr",
                   ndr_id="m1~ndr~1", cache_usn=3),
                at(10.0, "mta.ex1", "mta.ndr_queued", msg_id="m1~ndr~1", ndr_for="m1", rcpts=["bob"], to="alice"),
                at(seconds, "mta.ex1", "mta.failed", msg_id="m1~ndr~1", rcpt="alice", reason=reason,
                   report="postmaster", postmaster_id="m1~ndr~1~pm", ndr_for="m1", ndr_rcpts=["bob"], cache_usn=3),
                at(seconds + 0.1, "store.ex1", "store.delivered", msg_id="m1~ndr~1~pm", mailbox="postmaster",
                   ndr_for="m1", ndr_rcpts=["bob"])]

    early = [accepted(), *report_failed(22.0, "expired")]
    (outcome, why), = verdict(early)[0]
    assert outcome == "early_postmaster" and "time-out of 20 s" in why
    assert verdict([accepted(), *report_failed(30.0, "expired")])[0] == []
    [(outcome, why)], report = verdict([accepted(), *report_failed(12.0, "moved")])
    assert outcome == "early_postmaster" and "could still be reached" in why
    assert report.violations[0].evidence[0]["event"] == "mta.failed", "the events that show it"
    assert report.counts["early_postmaster"] == 1 and not report.ok


def test_without_the_runs_settings_every_report_is_taken_as_owed():
    """Hand-made events with no run behind them (check's other unit tests) judge ends only."""
    assert check([accepted(), *failed(6.0, "expired")]).ok


def test_docs_safety_shows_the_table_the_judge_uses():
    from pathlib import Path

    from orchestrator.inspect.justify import table

    assert table() in (Path(__file__).parents[2] / "docs" / "safety.md").read_text(), \
        "docs/safety.md's table is stale: python -c 'from orchestrator.inspect.justify import table; print(table())'"
