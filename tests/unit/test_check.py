"""The invariant judged from log events."""

from collections import Counter

from orchestrator.inspect.audit import EndState
from orchestrator.inspect.check import check


def accepted(msg, rcpts, alt_of=None):
    return {"event": "mta.accepted", "msg_id": msg, "sender": "alice", "rcpts": rcpts, "alt_of": alt_of or {}}


def delivered(msg, mailbox):
    return {"event": "store.delivered", "node": "store.ex1", "msg_id": msg, "mailbox": mailbox, "ndr_for": None}


def ndr(for_msg, rcpts):
    return {"event": "store.delivered", "node": "store.ex2", "msg_id": f"{for_msg}.ndr", "mailbox": "alice",
            "ndr_for": for_msg, "ndr_rcpts": rcpts}


def failed(msg, rcpt):
    return {"event": "mta.failed", "node": "mta.ex1", "msg_id": msg, "rcpt": rcpt, "reason": "moved", "report": "none"}


def to_postmaster(for_msg, rcpts, server="ex1"):
    """A report that could not reach alice, delivered to a store's postmaster mailbox."""
    return {"event": "store.delivered", "node": f"store.{server}", "msg_id": f"{for_msg}~ndr~0~pm",
            "mailbox": "postmaster", "ndr_for": for_msg, "ndr_rcpts": rcpts}


def test_each_outcome():
    report = check([
        accepted("m1", ["bob", "carol"], {"carol": "bob"}), delivered("m1", "carol"), failed("m1", "bob"),
        accepted("m2", ["bob"]), failed("m2", "bob"), ndr("m2", ["bob"]),
        accepted("m3", ["dave"]), delivered("m3", "dave"), delivered("m3", "dave"),
        accepted("m4", ["erin"]), delivered("m4", "erin"), ndr("m4", ["erin"]),
        accepted("m5", ["fred"]),
        accepted("m6", ["gina"]), failed("m6", "gina"), to_postmaster("m6", ["gina"]),
        accepted("m7", ["hal"]), failed("m7", "hal"), ndr("m7", ["hal"]), to_postmaster("m7", ["hal"]),
        accepted("m8", ["ivy"]), damaged("m8"),
    ])
    assert report.counts == {"delivered": 1, "ndr": 1, "postmaster": 1, "declined": 0, "lost": 1, "damaged": 1, "pending": 1,
                             "duplicated": 2, "both": 1, "unjustified_ndr": 0,
                             "early_postmaster": 0}
    outcome = {(v.msg_id, v.rcpt): v.outcome for v in report.violations}
    assert outcome == {("m1", "bob"): "lost", ("m3", "dave"): "duplicated", ("m4", "erin"): "both",
                       ("m5", "fred"): "pending", ("m7", "hal"): "duplicated", ("m8", "ivy"): "damaged"}
    assert "its only record was in the damaged part of mta/ex2/queue.wal" in \
        next(v.why for v in report.violations if v.outcome == "damaged")
    lost = next(v for v in report.violations if v.outcome == "lost")
    assert lost.last_events[-1]["event"] == "mta.failed" and not report.ok


def damaged(*lost):
    return {"event": "storage.damaged", "node": "mta.ex2", "file": "mta/ex2/queue.wal", "kept_as": "queue.wal.d",
            "lost": list(lost), "hlc": [0, 100]}


def test_a_pair_known_only_from_the_durable_records_is_judged_all_the_same():
    """Story 5 of issue 19: with a log emptied or an acceptance line never written, a message that
    was durable and delivered (or lost) went unjudged: "0 pairs ... invariant holds"."""
    durable = {("m1", "bob"): ("alice", None), ("m2", "carol"): (None, None)}
    end = state({"bob": [], "carol": ["m2"], "alice": []})
    report = check([], state=end, durable=durable)
    assert report.pairs == 2 and report.unlogged == 2
    assert report.counts["delivered"] == 1 and [(v.msg_id, v.outcome) for v in report.violations] == [("m1", "pending")]
    logged = check([accepted("m1", ["bob"]), delivered("m1", "bob")], state=state({"bob": ["m1"]}), durable=durable)
    assert logged.unlogged == 1 and logged.counts["pending"] == 1, "carol's m2 is not in her mailbox here"


def test_a_pending_pair_last_held_by_an_mta_that_found_its_queue_log_damaged_is_lost_to_damage():
    routed = {"event": "mta.routed", "node": "mta.ex2", "msg_id": "m1", "rcpt": "bob", "hlc": [0, 50]}
    report = check([accepted("m1", ["bob"]), routed, damaged()])
    assert [(v.outcome, "may have been in" in v.why) for v in report.violations] == [("damaged", True)]


def test_a_pending_pair_is_lost_to_damage_however_many_store_lines_came_after_its_holders_last():
    """Found by a 40,000-trial sp4 campaign with every fault (seed 20261206, trial 1742714835):
    mta.ex2's attempts had waited out store.ex2's outage, and the store refused all four as past
    the message's time-out; mta.ex2's log was damaged where the pair's id no longer read. The
    blame looked for the holder among the pair's last four events only, all the store's, and
    called the pair pending: a broken trial that was the corrupt fault's cost."""
    routed = {"event": "mta.routed", "node": "mta.ex2", "msg_id": "m1", "rcpt": "bob", "hlc": [0, 50]}
    refused = [{"event": "store.expired_refused", "node": "store.ex2", "msg_id": "m1", "mailbox": "bob", "hlc": [0, 60 + i]}
               for i in range(4)]
    report = check([accepted("m1", ["bob"]), routed, *refused, damaged()])
    assert [(v.outcome, "may have been in" in v.why) for v in report.violations] == [("damaged", True)]
    assert [e["event"] for e in report.violations[0].last_events] == ["store.expired_refused"] * 4
    undamaged = check([accepted("m1", ["bob"]), routed, *refused, dict(damaged(), node="mta.ex1")])
    assert [v.outcome for v in undamaged.violations] == ["pending"], "its holder found no damage"


def test_a_pending_pair_handed_to_an_mta_that_then_found_damage_is_lost_to_that_damage():
    """Found by the reroute campaign with every fault kind (seed 2, trial 518674286): the pair's
    last holding event was mta.ex1's routing before it handed the pair to mta.ex2, whose queue log
    was damaged where no id reads; the blame went looking at mta.ex1 and the trial broke."""
    routed = {"event": "mta.routed", "node": "mta.ex1", "msg_id": "m1", "rcpt": "bob", "hlc": [0, 50]}
    handed = {"event": "mta.transferred", "node": "mta.ex1", "msg_id": "m1", "rcpt": "bob", "to": "mta.ex2",
              "hlc": [0, 60]}
    report = check([accepted("m1", ["bob"]), routed, handed, damaged()])
    assert [(v.outcome, "may have been in" in v.why) for v in report.violations] == [("damaged", True)]
    elsewhere = check([accepted("m1", ["bob"]), routed, dict(handed, to="mta.ex3"), damaged()])
    assert [v.outcome for v in elsewhere.violations] == ["pending"], "handed to an MTA that found no damage"


def test_a_break_on_a_message_the_damaged_mta_took_up_in_an_older_state_is_the_damage_s():
    """Found by the campaigns' corrupt fault: the record saying a pair had failed (and its NDR sent)
    was damaged; the MTA took up the message's earlier state and delivered the pair as well."""
    reverted = dict(damaged(), older_state=["m1"])
    events = [accepted("m1", ["bob"]), failed("m1", "bob"), ndr("m1", ["bob"]), delivered("m1", "bob"), reverted,
              accepted("m2", ["carol"]), delivered("m2", "carol"), delivered("m2", "carol")]
    outcome = {v.msg_id: (v.outcome, "earlier state" in v.why) for v in check(events).violations}
    assert outcome == {"m1": ("damaged", True), "m2": ("duplicated", False)}


def test_a_pair_reported_and_delivered_again_by_an_mta_after_its_damage_is_the_damage_s_however_far_back():
    """Found by a 30,000-trial sp4 campaign over SMTP with every fault (seed 20261208, trial
    665556484): mta.ex1 reported the pair failed; a flipped byte in its retirement's id ('s' to
    'S') named a message that never was, and mta.ex1 took the pair up again and handed it to
    mta.ex2, which delivered it. The blame looked for an act of mta.ex1 after its damage among
    the pair's last four events, all mta.ex2's and its store's, and called the pair both."""
    named = dict(damaged("M1"), node="mta.ex1")  # the id as the flipped byte left it
    ex1 = {"node": "mta.ex1", "msg_id": "m1", "rcpt": "bob"}
    ex2 = {"node": "mta.ex2", "msg_id": "m1", "rcpt": "bob"}
    events = [accepted("m1", ["bob"]), failed("m1", "bob"), ndr("m1", ["bob"]), named,
              {**ex1, "event": "mta.routed", "hlc": [0, 110]}, {**ex1, "event": "mta.transferred", "to": "mta.ex2",
                                                                   "hlc": [0, 111]},
              {**ex2, "event": "mta.routed", "hlc": [0, 120]}, {**ex2, "event": "mta.deferred", "hlc": [0, 121]},
              {**ex2, "event": "mta.retry", "hlc": [0, 122]}, {**ex2, "event": "mta.routed", "hlc": [0, 123]},
              dict(delivered("m1", "bob"), hlc=[0, 124])]
    (v,) = check(events).violations
    assert (v.outcome, "earlier state" in v.why) == ("damaged", True), v
    assert all(e["node"] != "mta.ex1" for e in v.last_events), "mta.ex1's act is not among the last four"


def test_a_pair_whose_report_was_lost_to_damage_is_the_damage_s():
    """Found by the campaigns' corrupt fault: the record lost was the NDR's, not the message's."""
    report = check([accepted("m1", ["bob"]), failed("m1", "bob"), damaged("m1~ndr~0123456789abcdef")])
    (v,) = report.violations
    assert v.outcome == "damaged" and "its report's only record" in v.why


def test_a_lost_pair_whose_report_was_last_held_by_an_mta_that_found_damage_after_is_the_damage_s():
    """Found by the simulator's campaign test (sp4, trial 285314495): a flipped byte inside the
    report's own id left no id to read, and the pair its report was for counted as lost."""
    failed_ndr = dict(failed("m1", "bob"), report="ndr", ndr_id="m1~ndr~0123456789abcdef")
    held = {"event": "mta.deferred", "node": "mta.ex2", "msg_id": "m1~ndr~0123456789abcdef", "rcpt": "alice",
            "hlc": [0, 100]}
    report = check([accepted("m1", ["bob"]), failed_ndr, held, damaged()])
    assert [(v.outcome, "its report's record may have been in" in v.why) for v in report.violations] == \
        [("damaged", True)]
    before = check([accepted("m1", ["bob"]), failed_ndr, damaged(), dict(held, hlc=[0, 101])])
    assert [v.outcome for v in before.violations] == ["lost"], "damage found before the MTA held the report"


def test_a_pair_delivered_and_reported_by_an_mta_acting_after_its_damage_is_the_damage_s():
    """Found by a 20,000-trial campaign (sp4, trial 758506528): the damaged record was a retirement
    with a flipped byte in its id; the MTA took up the message's earlier state and delivered a pair
    it had reported."""
    routed_again = {"event": "mta.routed", "node": "mta.ex2", "msg_id": "m1", "rcpt": "bob", "hlc": [0, 100]}
    events = [accepted("m1", ["bob"]), failed("m1", "bob"), ndr("m1", ["bob"]), damaged(), routed_again,
              delivered("m1", "bob")]
    assert [(v.outcome, "earlier state" in v.why) for v in check(events).violations] == [("damaged", True)]
    untouched = [accepted("m1", ["bob"]), failed("m1", "bob"), ndr("m1", ["bob"]), delivered("m1", "bob"), damaged()]
    assert [v.outcome for v in check(untouched).violations] == ["both"], "no MTA acted on it after its damage"


def test_clean_history_is_ok():
    assert check([accepted("m1", ["bob"]), delivered("m1", "bob")]).ok
    assert check([]).ok and check([]).pairs == 0


def test_a_delivery_whose_log_line_died_with_the_store_counts_once():
    dup = {"event": "store.duplicate_suppressed", "node": "store.ex1", "msg_id": "m1", "mailbox": "bob"}
    report = check([accepted("m1", ["bob"]), dup, dup])
    assert report.ok and report.counts["delivered"] == 1


# --- the verdict ends with the end state: what the mailboxes hold ------------------------------

def state(boxes, homes=None, locks=(), unfinished=()):
    """An end state: boxes is {alias: [msg ids]} on each alias's home (ex1 unless `homes` says)."""
    homes = {**{alias: "ex1" for alias in boxes}, **(homes or {})}
    return EndState(homes, {(homes[a], a): Counter(ids) for a, ids in boxes.items()}, list(locks), set(unfinished))


def ndr_queued(for_msg, rcpts):
    return {"event": "mta.ndr_queued", "node": "mta.ex1", "msg_id": f"{for_msg}.ndr", "ndr_for": for_msg,
            "rcpts": rcpts}


def test_a_message_the_logs_call_delivered_but_the_mailbox_lacks_is_lost_with_what_removed_it():
    rollback = {"event": "store.move_ended", "node": "store.ex1", "mailbox": "bob", "owner": "move.b.2", "deleted": 3}
    elsewhere = {"event": "store.move_ended", "node": "store.ex2", "mailbox": "bob", "owner": "move.b.2", "deleted": 0}
    events = [accepted("m1", ["bob"]), delivered("m1", "bob"), elsewhere, rollback]
    assert check(events).ok, "the logs alone see nothing wrong"
    report = check(events, state=state({"bob": []}))
    (lost,) = report.violations
    assert (lost.outcome, lost.rcpt) == ("lost", "bob") and "not in bob's mailbox" in lost.why
    assert [e["node"] for e in lost.removed_by] == ["store.ex1"], "only the delete on the store it was delivered to"
    assert report.audited and not report.ok


def test_the_mailboxes_decide_copies_and_reports():
    events = [accepted("m1", ["bob"]), delivered("m1", "bob"),
              accepted("m2", ["carol"]),  # its store died before the log line: in the mailbox all the same
              accepted("m3", ["dave"]), failed("m3", "dave"), ndr_queued("m3", ["dave"]), ndr("m3", ["dave"]),
              accepted("m4", ["erin"]), failed("m4", "erin"), ndr_queued("m4", ["erin"]), ndr("m4", ["erin"])]
    end = state({"bob": ["m1", "m1"], "carol": ["m2"], "alice": ["m3.ndr"], "dave": [], "erin": []})
    outcome = {(v.msg_id, v.rcpt): v.outcome for v in check(events, state=end).violations}
    # bob holds m1 twice; erin's NDR never reached alice's mailbox; the rest are where they belong
    assert outcome == {("m1", "bob"): "duplicated", ("m4", "erin"): "lost"}


def test_a_report_given_to_the_postmaster_counts_only_where_a_postmaster_mailbox_holds_it():
    events = [accepted("m1", ["bob"]), failed("m1", "bob"), to_postmaster("m1", ["bob"], "ex2"),
              accepted("m2", ["carol"]), failed("m2", "carol"), to_postmaster("m2", ["carol"])]
    end = state({"alice": [], "bob": [], "carol": []})
    end.boxes[("ex2", "postmaster")] = Counter(["m1~ndr~0~pm"])
    end.boxes[("ex1", "postmaster")] = Counter()
    report = check(events, state=end)
    assert report.counts["postmaster"] == 1
    (lost,) = report.violations
    assert (lost.msg_id, lost.outcome) == ("m2", "lost") and "not in any postmaster mailbox" in lost.why


def test_a_copy_counts_only_on_the_server_the_directory_homes_the_recipient():
    events = [accepted("m1", ["bob"]), delivered("m1", "bob")]
    stray = EndState({"bob": "ex2"}, {("ex1", "bob"): Counter(["m1"]), ("ex2", "bob"): Counter()})
    assert check(events, state=stray).violations[0].outcome == "lost"


def test_a_lock_no_unfinished_move_holds_breaks_the_verdict():
    lock = {"server": "ex1", "mailbox": "bob", "owner": "move.b.1", "incoming": False}
    held = check([], state=state({"bob": []}, locks=[lock], unfinished=["move.b.1"]))
    assert held.ok and held.stale_locks == []
    stale = check([], state=state({"bob": []}, locks=[lock]))
    assert not stale.ok and stale.stale_locks == [lock]


def test_a_message_its_user_filed_or_expunged_is_delivered_and_named_as_the_users_act():
    """Issue 34, story 11: by the user's folders, and by Dovecot's record of an expunge, matched by
    the Message-ID xcon gave the message or, for one taken over SMTP, its client's (on the MTA's
    acceptance line: the IMS's own may never be written, a session cut before its 250)."""
    state = EndState({"bob": "ex1"}, boxes={("ex1", "bob"): Counter({"m0": 1})},
                     filed={("ex1", "bob"): {"m1": "Archive"}},
                     expunged={"bob": {"<m2@xcon.test>": "INBOX", "<c3@client.example>": "Archive"}})
    smtp = {**accepted("m3", ["bob"]), "message_id": "<c3@client.example>"}
    report = check([accepted("m0", ["bob"]), delivered("m0", "bob"), accepted("m1", ["bob"]), delivered("m1", "bob"),
                    accepted("m2", ["bob"]), delivered("m2", "bob"), smtp, delivered("m3", "bob"),
                    accepted("m4", ["bob"]), delivered("m4", "bob")], state=state)
    assert report.counts["delivered"] == 4 and report.counts["lost"] == 1, report.counts
    assert [(v.msg_id, v.outcome) for v in report.violations] == [("m4", "lost")], "in no folder, and not expunged"
    assert {a["msg_id"]: a["act"] for a in report.by_users} == {
        "m1": "filed by bob in their folder Archive", "m2": "expunged by bob over IMAP from INBOX (Dovecot's log)",
        "m3": "expunged by bob over IMAP from Archive (Dovecot's log)"}


def test_an_item_an_ims_took_that_nothing_ended_and_no_queue_holds_is_lost_not_pending():
    """Issue 34, story 2: check said PENDING for what an IMS took, whether or not anything would
    ever move it. Pending while a queue holds it; lost once none does and nothing ended it."""
    events = [accepted("m1", ["dave@outside.test"]),
              {"event": "ims.queued_out", "node": "ims.ex1", "msg_id": "m1", "rcpt": "dave@outside.test"}]
    waiting = EndState({}, waiting={"m1"})
    assert check(events, state=waiting).counts["pending"] == 1
    (lost,) = check(events, state=EndState({})).violations
    assert lost.outcome == "lost" and "ims.ex1 took it to relay" in lost.why and "ims/ex1/outbound" in lost.why
    assert check(events).counts["pending"] == 1, "from the logs alone, it may still be on its way"


# --- what mutation testing of the oracle found unheld (session 16) ----------------------------

def relayed(msg, rcpt, ndr_for=None, ndr_rcpts=None):
    """An IMS's relay to the smarthost: an outside address's delivery, or a DSN to an outside originator."""
    return {"event": "ims.relayed", "node": "ims.ex1", "msg_id": msg, "rcpt": rcpt, "ndr_for": ndr_for,
            "ndr_rcpts": ndr_rcpts}


def test_an_outside_delivery_is_the_ims_s_relay_once_and_a_dsn_to_an_outside_sender_its_report():
    carol = "carol@example.org"
    outside_sender = {**accepted("m2", ["bob"]), "sender": carol}
    events = [accepted("m1", [carol]), relayed("m1", carol),
              outside_sender, failed("m2", "bob"), relayed("m2.ndr", carol, ndr_for="m2", ndr_rcpts=["bob"]),
              accepted("m3", [carol]), relayed("m3", carol), relayed("m3", carol),
              {**accepted("m4", ["dave"]), "sender": carol}, failed("m4", "dave"),
              relayed("m4.ndr", carol, ndr_for="m4", ndr_rcpts=["dave"]),
              relayed("m4.ndr", carol, ndr_for="m4", ndr_rcpts=["dave"])]
    report = check(events)
    assert (report.counts["delivered"], report.counts["ndr"], report.counts["duplicated"]) == (1, 1, 2)
    assert {(v.msg_id, v.rcpt): v.outcome for v in report.violations} == {
        ("m3", carol): "duplicated", ("m4", "dave"): "duplicated"}, "relayed twice, reported twice"
    end = EndState({"bob": "ex1", "dave": "ex1"}, relayed=Counter({("m1", carol): 1, ("m2.ndr", carol): 1,
                                                                     ("m3", carol): 1, ("m4.ndr", carol): 1}))
    audited = check(events, state=end)
    assert audited.ok and (audited.counts["delivered"], audited.counts["ndr"]) == (2, 2), \
        "the smarthost's count decides: each left once"


def test_a_report_delivered_twice_is_duplicated_and_the_end_state_counts_reports_by_their_ids():
    events = [accepted("m1", ["bob"]), failed("m1", "bob"), ndr("m1", ["bob"]), ndr("m1", ["bob"])]
    assert [v.outcome for v in check(events).violations] == ["duplicated"]
    end = state({"alice": ["m1.ndr"], "bob": []})
    assert check(events, state=end).ok, "the mailbox holds one: the logs' second line was a repeat"
    pm_end = state({"alice": [], "bob": []})
    pm_end.boxes[("ex1", "postmaster")] = Counter(["m1.ndr"])
    assert not check(events, state=pm_end).ok, "an NDR's id found in a postmaster mailbox is not alice's report"


def test_a_pair_known_only_from_a_repeated_acceptance_is_judged_and_a_repeat_keeps_the_first_sender():
    repeat = {**accepted("m1", ["bob"]), "repeated": True}
    assert check([repeat]).pairs == 1 and [v.outcome for v in check([repeat]).violations] == ["pending"]
    first = accepted("m2", ["carol"], {"carol": "bob"})
    again = {**accepted("m2", ["carol"]), "sender": "mallory", "repeated": True}
    (v,) = check([first, again]).violations
    assert (v.sender, v.alt_of) == ("alice", "bob"), "the repeat's line changes nothing of the pair"
    assert v.headline() == "PENDING m2 -> carol (alternate of bob), from alice"
    nameless = {k: x for k, x in accepted("m3", ["dave"]).items() if k != "sender"}
    assert check([nameless]).violations[0].headline() == "PENDING m3 -> dave, from ?"


def test_a_pair_delivered_twice_by_an_mta_acting_after_its_damage_counts_as_damaged_not_duplicated():
    routed_again = {"event": "mta.routed", "node": "mta.ex2", "msg_id": "m1", "rcpt": "bob", "hlc": [0, 100]}
    events = [accepted("m1", ["bob"]), delivered("m1", "bob"), accepted("m2", ["carol"]), delivered("m2", "carol"),
              delivered("m2", "carol"), accepted("m3", ["dave"]), delivered("m3", "dave"), delivered("m3", "dave"),
              accepted("m4", ["erin"]), damaged("m4"), routed_again, delivered("m1", "bob")]
    report = check(events)
    assert {(v.msg_id, v.outcome) for v in report.violations} == {
        ("m1", "damaged"), ("m2", "duplicated"), ("m3", "duplicated"), ("m4", "damaged")}
    assert (report.counts["damaged"], report.counts["duplicated"]) == (2, 2), report.counts
    (blamed,) = [v for v in report.violations if v.msg_id == "m1"]
    assert "its latest record may have been in" in blamed.why


def test_a_pair_the_mailboxes_lack_says_where_it_was_looked_for_and_whose_entry_is_missing():
    events = [accepted("m1", ["bob"]), delivered("m1", "bob"),
              accepted("m2", ["carol"]), failed("m2", "carol"), ndr_queued("m2", ["carol"]), ndr("m2", ["carol"])]
    whys = {v.msg_id: v.why for v in check(events, state=EndState({"alice": "ex1", "carol": "ex1"})).violations}
    assert whys == {"m1": "the logs say delivered, but it is not in bob's mailbox on its home server (the directory "
                          "has no entry for bob: no mailbox counts as theirs)",
                    "m2": "the logs say reported, but it is not in alice's mailbox on its home server"}
    gone_sender = {v.msg_id: v.why for v in check(events, state=EndState({"bob": "ex1"})).violations}
    assert gone_sender["m2"].endswith("(the directory has no entry for alice: no mailbox counts as theirs)")
    assert gone_sender["m1"] == "the logs say delivered, but it is not in bob's mailbox on its home server"


def test_a_copy_a_rollback_removed_is_lost_with_the_step_and_the_verdict_reads_whole():
    """What `xcon check` prints of a broken pair (headline, decisive lines) and its --json keys."""
    into = {"event": "store.delivered", "node": "store.ex2", "msg_id": "m1", "mailbox": "bob", "ndr_for": None,
            "hlc": [5, 0], "ts": 5.0}
    rollback = {"event": "move.step", "node": "orchestrator", "move_id": "move.b.1", "step": "rollback_target",
                "target": "ex2", "mailbox": "bob", "hlc": [6, 0], "ts": 6.0}
    other = dict(rollback, target="ex1")
    events = [accepted("m1", ["bob"], {"bob": "carol"}), into, other, rollback]
    report = check(events, state=EndState({"bob": "ex2", "alice": "ex1"}, {("ex2", "bob"): Counter()}))
    (lost,) = report.violations
    assert lost.headline() == ("LOST m1 -> bob (alternate of carol), from alice: the logs say delivered, but it is "
                               "not in bob's mailbox on its home server")
    assert lost.decisive() == ["store.ex2: store.delivered",
                               "removed by orchestrator: move.step step=rollback_target, move_id=move.b.1"]
    assert list(report.to_json()) == ["pairs", "counts", "ok", "audited", "unlogged", "stale_locks", "by_users",
                                      "violations"]
    assert (report.to_json()["pairs"], report.to_json()["ok"], report.to_json()["audited"]) == (1, False, True)
    assert report.to_json()["violations"][0]["removed_by"] == [
        {"ts": 6.0, "node": "orchestrator", "event": "move.step", "hlc": [6, 0], "step": "rollback_target",
         "move_id": "move.b.1"}]


def test_the_end_state_counts_a_report_and_a_postmaster_copy_whose_delivery_lines_died_with_their_store():
    """A store killed after writing a report and before its log line: the MTA's lines name the
    report (mta.ndr_queued) and the postmaster copy (mta.failed, report=postmaster) by id."""
    pm_failed = {"event": "mta.failed", "node": "mta.ex1", "msg_id": "m2.ndr", "rcpt": "alice", "reason": "expired",
                 "report": "postmaster", "postmaster_id": "m2.ndr~pm", "ndr_for": "m2", "ndr_rcpts": ["carol"]}
    events = [accepted("m1", ["bob"]), failed("m1", "bob"), ndr_queued("m1", ["bob"]),
              accepted("m2", ["carol"]), failed("m2", "carol"), ndr_queued("m2", ["carol"]), pm_failed]
    end = state({"alice": ["m1.ndr"], "bob": [], "carol": []})
    end.boxes[("ex1", "postmaster")] = Counter(["m2.ndr~pm"])
    report = check(events, state=end)
    assert report.ok and (report.counts["ndr"], report.counts["postmaster"]) == (1, 1), report.violations


def test_a_failed_pair_whose_report_is_still_queued_is_pending_not_lost():
    events = [accepted("m1", ["bob"]), {**failed("m1", "bob"), "ndr_id": "m1.ndr"}, accepted("m2", ["carol"]),
              {**failed("m2", "carol"), "ndr_id": "m2.ndr"}]
    end = state({"alice": [], "bob": [], "carol": []})
    end.waiting = {"m1.ndr"}
    assert {v.msg_id: v.outcome for v in check(events, state=end).violations} == {"m1": "pending", "m2": "lost"}


def test_every_pair_s_outcome_is_handed_back_and_the_second_pass_reads_again():
    events = [accepted("m1", ["bob"]), delivered("m1", "bob"), {**accepted("m2", ["carol"]), "sender": None},
              failed("m2", "carol")]
    every: dict = {}
    report = check(iter(events), again=lambda: iter(events), every=every)
    assert every == {("m1", "bob"): ("alice", "delivered"), ("m2", "carol"): ("", "lost")}
    assert [e["event"] for e in report.violations[0].last_events] == ["mta.failed"], "read again from `again`"


def test_a_broken_pair_keeps_its_events_brief_and_a_damaged_one_says_whose_damage_whole():
    gave_up = {"event": "mta.failed", "node": "mta.ex1", "msg_id": "m1", "rcpt": "bob", "reason": "moved",
               "report": "none", "why": "w", "cache_usn": 3, "directory_usn": 4, "home_server": "ex2", "to": "mta.ex2",
               "outcome": "o", "step": "s", "move_id": "mv", "owner": "ow", "deleted": 1, "messages": 2,
               "ts": 1.0, "hlc": [1, 0], "level": "warning", "extra": "dropped"}
    (lost,) = check([accepted("m1", ["bob"]), gave_up]).violations
    assert lost.last_events == [{k: v for k, v in gave_up.items() if k not in ("msg_id", "rcpt", "level", "extra")}]
    (hit,) = check([accepted("m2", ["carol"]), damaged("m2")]).violations
    assert hit.why == ("its only record was in the damaged part of mta/ex2/queue.wal (kept aside as queue.wal.d), "
                       "which mta.ex2 could not read at its restart")
    routed_again = {"event": "mta.routed", "node": "mta.ex2", "msg_id": "m3", "rcpt": "dave", "hlc": [0, 100]}
    (again,) = check([accepted("m3", ["dave"]), delivered("m3", "dave"), damaged(), routed_again,
                      delivered("m3", "dave")]).violations
    assert again.why == ("its latest record may have been in the damaged part of mta/ex2/queue.wal (kept aside as "
                         "queue.wal.d), which mta.ex2 could not read at its restart; it took up an earlier state and "
                         "acted on it again")


def test_damage_an_ims_found_and_a_suspect_message_are_the_damage_s():
    by_ims = {**damaged("m1"), "node": "ims.ex1", "file": "ims/ex1/outbound.log"}
    suspect = {**damaged(), "suspect": ["m2"]}
    report = check([accepted("m1", ["bob"]), by_ims, accepted("m2", ["carol"]), suspect])
    assert {v.msg_id: (v.outcome, v.why.split(" the damaged part")[0]) for v in report.violations} == {
        "m1": ("damaged", "its only record was in"), "m2": ("damaged", "its latest record may have been in")}
    store = {**damaged("m3"), "node": "store.ex1"}
    assert [v.outcome for v in check([accepted("m3", ["dave"]), store]).violations] == ["pending"], \
        "a store's damage is no MTA's or IMS's queue: it explains no pair"
