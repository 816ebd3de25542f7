"""The MTA's write-ahead log: what was synced comes back, a torn tail is cut, compaction keeps state."""

from __future__ import annotations


import msgpack
import msgspec

from nodes.mta import spool as spool_mod
from nodes.mta import wal
from nodes.mta.queue import FINAL, WAITING, Pair, QueuedMessage
from nodes.mta.record import Retired, State, Step, Whole
from nodes.mta.spool import Spool


def load(spool) -> tuple[list, list]:
    """What a log holds that was written whole: its queue and retirements (and no damage)."""
    recovered = spool.load()
    assert recovered.damage is None, recovered.damage
    return recovered.queued, recovered.remembered


def old_form(msg: QueuedMessage) -> list:
    """A message's record as logs before nodes.mta.record wrote it: ["p", msg_id, {field: value}]."""
    return ["p", msg.msg_id, {**{k: v for k, v in msgspec.structs.asdict(msg.to_record()).items() if k != "pairs"},
                              "pairs": [msgspec.structs.asdict(p) for p in msg.to_record().pairs]}]


def message(msg_id: str, *rcpts: str, state: str = "queued") -> QueuedMessage:
    return QueuedMessage(msg_id, "alice", b"raw " + msg_id.encode(), 100.0,
                         pairs={r: Pair(r, state=state, hops=1) for r in rcpts})


def test_synced_batches_come_back_and_retired_messages_are_remembered(tmp_path):
    s = Spool(tmp_path)
    assert load(s) == ([], [])
    s.persist("m1", message("m1", "bob").to_record())
    s.persist("m2", message("m2", "carol", "dave").to_record())
    s.sync()
    s.persist("m1", message("m1", "bob", state="delivered").to_record())
    s.retire("m1", {"bob": 1}, 100.0)
    s.sync()
    queued, remembered = load(Spool(tmp_path))
    assert [m.msg_id for m in queued] == ["m2"]
    assert sorted(queued[0].pairs) == ["carol", "dave"]
    assert queued[0].raw == b"raw m2"
    assert remembered == [("m1", {"bob": 1}, 100.0)]


def test_a_message_back_after_a_reroute_is_queued_again(tmp_path):
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.retire("m1", {"bob": 1}, 100.0)
    s.persist("m1", message("m1", "bob").to_record())  # back with more hops
    s.sync()
    queued, remembered = load(Spool(tmp_path))
    assert [m.msg_id for m in queued] == ["m1"] and remembered == [("m1", {"bob": 1}, 100.0)]


def test_a_message_persisted_twice_in_a_batch_is_written_once_in_its_newer_state(tmp_path):
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.persist("m2", message("m2", "carol").to_record())
    s.persist("m1", message("m1", "bob", state="transferring").to_record())  # handed to a peer, same turn
    s.persist("m3", message("m3", "dave").to_record())
    s.retire("m3", {"dave": 1}, 100.0)  # done within the batch: only the retirement is written
    s.sync()
    assert s.stats()["records"] == 3
    queued, remembered = load(Spool(tmp_path))
    assert [m.msg_id for m in queued] == ["m1", "m2"] and remembered == [("m3", {"dave": 1}, 100.0)]
    records, _, _ = wal.read_records((tmp_path / "queue.wal").read_bytes())
    assert [(type(r), r.msg_id) for r in records] == [(Whole, "m1"), (Whole, "m2"), (Retired, "m3")]
    assert records[0].pairs[0].state == "transferring"


def test_an_unsynced_batch_is_not_on_disk(tmp_path):
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    assert load(Spool(tmp_path)) == ([], [])


def test_a_torn_tail_is_cut_and_later_appends_are_read(tmp_path):
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.sync()
    whole = (tmp_path / "queue.wal").stat().st_size
    torn = wal.frame(message("m2", "carol").to_record())
    for cut in (3, 8, len(torn) - 1):  # in the header, at the body, one byte short
        with open(tmp_path / "queue.wal", "ab") as f:
            f.write(torn[:cut])
        again = Spool(tmp_path)
        queued, _ = load(again)
        assert [m.msg_id for m in queued] == ["m1"], cut
        assert (tmp_path / "queue.wal").stat().st_size == whole
    again.persist("m3", message("m3", "dave").to_record())
    again.sync()
    assert sorted(m.msg_id for m in load(Spool(tmp_path))[0]) == ["m1", "m3"]


def test_a_flipped_byte_in_the_last_commit_is_damage_and_the_batch_before_it_is_taken_up(tmp_path):
    """Once, this cut the last batch silently ("a corrupt record ends the log there"): only an
    incomplete last record may be cut (story 3 of issue 19)."""
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.sync()
    s.persist("m2", message("m2", "carol").to_record())
    s.sync()
    data = bytearray((tmp_path / "queue.wal").read_bytes())
    data[-2] ^= 0xFF  # a flipped bit in the last batch's commit record: its crc no longer matches
    (tmp_path / "queue.wal").write_bytes(bytes(data))
    recovered = Spool(tmp_path).load()
    assert [m.msg_id for m in recovered.queued] == ["m1", "m2"] and recovered.damage["lost"] == []


def test_compaction_keeps_the_state_and_drops_the_history(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_mod, "COMPACT_MIN_BYTES", 4096)
    live = {}
    remembered = {}
    s = Spool(tmp_path)
    s.load()
    s.state = lambda: ([m.to_record() for m in live.values()],
                       [(k, hops, at) for k, (hops, at) in remembered.items()])
    for i in range(200):  # every message goes through three records, and most finish
        msg = message(f"m{i}", "bob")
        live[msg.msg_id] = msg
        s.persist(msg.msg_id, msg.to_record())
        s.sync()
        if i % 10:
            del live[msg.msg_id]
            s.retire(msg.msg_id, {"bob": 1}, float(i))
            if i >= 150:  # the core has forgotten the older ones
                remembered[msg.msg_id] = ({"bob": 1}, float(i))
            s.sync()
    assert s.compactions >= 2
    assert (tmp_path / "queue.wal").stat().st_size < 4 * 4096
    queued, retired = load(Spool(tmp_path))
    seen = {msg_id: hops for msg_id, hops, _ in retired}
    seen_at = {msg_id: at for msg_id, _, at in retired}
    assert sorted(m.msg_id for m in queued) == sorted(live)
    # every pair finished since the last compaction is in the log; those before it only if remembered
    assert set(remembered) <= set(seen)
    assert all(seen_at[k] == at for k, (_, at) in remembered.items())
    assert not {f"m{i}" for i in range(1, 100) if i % 10} & set(seen)


def test_a_batch_torn_after_some_of_its_records_is_dropped_whole(tmp_path):
    """Found by the simulator's torn writes: an NDR's record survived without the record of the
    failure it reports, so after the restart the pair was delivered and reported."""
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.sync()
    torn = wal.frame(message("ndr1", "alice").to_record())  # a whole record ...
    torn += wal.frame(message("m1", "bob", state="failed").to_record())[:9]  # ... and part of one
    with open(tmp_path / "queue.wal", "ab") as f:
        f.write(torn)
    queued, _ = load(Spool(tmp_path))
    assert [m.msg_id for m in queued] == ["m1"]  # the NDR went with the batch it belonged to
    assert load(Spool(tmp_path))[0][0].msg_id == "m1"  # and the tail was cut, so it stays so


def torn_batch(spool, *records) -> bytes:
    """The batch `spool` would append for `records`, cut in the last record's first bytes."""
    for r in records:
        spool.persist(r.msg_id, r)
    data = spool._take()
    return data[:len(data) - len(wal.COMMIT) - len(wal.frame(records[-1])) + 9]


def test_the_first_batch_of_a_new_log_torn_is_dropped_whole(tmp_path):
    """Found by a 40,000-trial reroute campaign with every fault (seed 20261207, trial
    2049418204): a log with no commit record is read record by record (the form before commit
    records), and so was a new log's first batch torn by a kill. A message refused for alice at
    its acceptance came back with alice's pair failed and without the NDR its batch held: the
    report was never sent. A log without a commit record now gets one before its next batch."""
    failed, report = message("m1", "alice", state="failed").to_record(), message("m1~ndr", "carol").to_record()
    disk = Spool(tmp_path)
    disk.load()
    with open(tmp_path / "queue.wal", "ab") as f:
        f.write(torn_batch(disk, failed, report))
    memory = spool_mod.MemorySpool()
    memory.load()
    memory.data += torn_batch(memory, failed, report)
    for again in (Spool(tmp_path), memory):
        assert load(again)[0] == [], "the failure went with the batch that held its report"


def test_a_log_written_before_commit_records_is_read_record_by_record(tmp_path):
    old = wal.frame(old_form(message("m1", "bob"))) + wal.frame(["r", "m2", {"x": 0}, 1.0])
    (tmp_path / "queue.wal").write_bytes(old)
    s = Spool(tmp_path)
    queued, remembered = load(s)
    assert [m.msg_id for m in queued] == ["m1"] and remembered == [("m2", {"x": 0}, 1.0)]
    with open(tmp_path / "queue.wal", "ab") as f:  # and a batch torn after them is dropped whole
        f.write(torn_batch(s, message("m3", "bob").to_record(), message("m4", "bob").to_record()))
    queued, remembered = load(Spool(tmp_path))
    assert [m.msg_id for m in queued] == ["m1"] and remembered == [("m2", {"x": 0}, 1.0)]


def test_a_log_of_the_form_before_resumes_and_goes_on_in_todays(tmp_path):
    """A queue left by the xcon before typed records (a message as a map of its fields) reads
    whole: its messages, their later states, its retirements; what is appended after is of
    today's form, and the two read back together."""
    old = (wal.frame(old_form(message("m1", "bob"))) + wal.frame(old_form(message("m2", "carol"))) + wal.frame(["c"])
           + wal.frame(["s", "m1", {k: v for k, v in old_form(message("m1", "bob", state="deferred"))[2].items()
                                   if k != "raw"}])
           + wal.frame(["r", "m2", {"carol": 1}, 100.0]) + wal.frame(["c"]))
    (tmp_path / "queue.wal").write_bytes(old)
    s = Spool(tmp_path)
    (m1,), remembered = load(s)
    assert m1.raw == b"raw m1" and m1.pairs["bob"].state == "queued"  # deferred: a restart tries it again
    assert remembered == [("m2", {"carol": 1}, 100.0)]
    s.persist("m1", message("m1", "bob", state="delivered").to_record())
    s.sync()
    records, _, _ = wal.read_records((tmp_path / "queue.wal").read_bytes())
    assert [type(r) for r in records] == [Whole, Whole, Step, Retired, Step]
    (m1,), _ = load(Spool(tmp_path))
    assert m1.raw == b"raw m1" and m1.pairs["bob"].state == "delivered"


def test_the_log_admits_every_pair_state_the_queue_has_and_no_other():
    assert set(State) == {"queued", "deferred", *WAITING, *FINAL}


def test_a_record_of_the_form_before_is_checked_as_strictly_as_todays():
    """Each of these was refused by the form before's own checker; read as today's types they
    are refused still (damage, not a record)."""
    good = old_form(message("m1", "bob"))
    assert wal.read_record(msgpack.packb(good, use_bin_type=True)) is not None
    pair = good[2]["pairs"][0]
    for wrong in (["p", "m2", good[2]],  # filed under another id
                  ["p", "m1", {**good[2], "extra": 1}],  # a field no record had
                  ["p", "m1", {**good[2], "accepted_at": True}],  # a bool is no time
                  ["s", "m1", good[2]],  # a state carries no bytes
                  ["p", "m1", {**good[2], "pairs": [{**pair, "state": "lost"}]}],
                  ["p", "m1", {**good[2], "pairs": [{**pair, "hops": True}]}],
                  ["p", "m1", {**good[2], "pairs": [{**pair, "extra": 1}]}],
                  [*good, 1],  # an item no record had
                  ["p", "m1", {**good[2], "priority": "high"}],
                  ["r", "m1", {"bob": 1}],  # a retirement lacks its time
                  ["r", "m1", {"no one!": 1}, 1.0],
                  ["c", 1]):
        assert wal.read_record(msgpack.packb(wrong, use_bin_type=True)) is None, wrong
    # today's form: ["P", ...], each pair an array
    whole = msgspec.to_builtins(message("m1", "bob").to_record(), builtin_types=(bytes,))
    assert wal.read_record(msgspec.msgpack.encode(whole)) is not None
    for wrong in ([*whole, 1], [*whole[:-1], [[*whole[-1][0], 1]]], ["C", 1], ["R", "m1", {"bob": 1}, 1.0, 1]):
        assert wal.read_record(msgspec.msgpack.encode(wrong)) is None, wrong  # an item no record has


def five_batches(tmp_path) -> bytes:
    s = Spool(tmp_path)
    s.load()
    for i in range(1, 6):
        s.persist(f"m{i}", message(f"m{i}", "bob").to_record())
        s.sync()
    return (tmp_path / "queue.wal").read_bytes()


def test_damage_in_the_middle_is_kept_aside_and_every_record_that_reads_is_taken_up(tmp_path):
    """Story 3 of issue 19: one flipped byte in the middle of a queue log cut every record after it,
    silently: `xcon up` said "0 message(s) taken up" and the five messages were gone."""
    data = five_batches(tmp_path)
    at = data.index(b"raw m3") + 2
    (tmp_path / "queue.wal").write_bytes(data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:])
    recovered = Spool(tmp_path).load()
    assert sorted(m.msg_id for m in recovered.queued) == ["m1", "m2", "m4", "m5"]
    assert recovered.damage["lost"] == ["m3"], "the damaged bytes still name m3, which has no record left"
    kept = tmp_path / recovered.damage["kept_as"]
    assert kept.name.startswith("queue.wal.damaged-") and kept.read_bytes()[at] == data[at] ^ 0x20, "untouched"
    again = load(Spool(tmp_path))  # the new log holds what was read: no damage, nothing more lost
    assert sorted(m.msg_id for m in again[0]) == ["m1", "m2", "m4", "m5"]


def test_damage_to_a_record_s_length_is_found_past_and_a_torn_tail_is_still_cut_silently(tmp_path):
    data = five_batches(tmp_path)
    second = data.index(wal.frame(message("m2", "bob").to_record()))
    damaged = data[:second] + b"\xff" + data[second + 1:] + wal.frame(message("m6", "bob").to_record())[:5]
    (tmp_path / "queue.wal").write_bytes(damaged)
    recovered = Spool(tmp_path).load()
    assert sorted(m.msg_id for m in recovered.queued) == ["m1", "m3", "m4", "m5"]
    assert recovered.damage["damaged_bytes"][0][0] == second and recovered.damage["lost"] == ["m2"]


def test_a_record_of_the_wrong_shape_is_damage_not_a_crash(tmp_path):
    """Story 7 of issue 19: WAL records of the wrong shape made the MTA exit with a traceback."""
    data = five_batches(tmp_path)
    bad_state = msgspec.structs.replace(message("m8", "bob").to_record().pairs[0], state="lost")
    for wrong in (wal.frame(["p", "m9", {"msg_id": "m9", "pairs": "not a list"}]),  # of the form before
                  wal.frame(["P", "m9", "alice", b"x", 1.0, None, [], "normal", None, "not a list"]),
                  wal.frame(msgspec.structs.replace(message("m9", "bob").to_record(), pairs=[bad_state]))):
        (tmp_path / "queue.wal").write_bytes(data + wrong + wal.COMMIT + five_batches(tmp_path / "more"))
        recovered = Spool(tmp_path).load()
        assert recovered.damage is not None and recovered.damage["lost"] == ["m9"]
        assert sorted(m.msg_id for m in recovered.queued) == ["m1", "m2", "m3", "m4", "m5"]


def test_a_last_record_whose_bytes_are_all_there_but_do_not_read_is_damage_not_a_torn_tail(tmp_path):
    """Only an incomplete last record is a torn tail; a flipped byte in the last one is damage."""
    data = five_batches(tmp_path)
    (tmp_path / "queue.wal").write_bytes(data[:data.rindex(b"raw m5") + 2] + b"X" + data[data.rindex(b"raw m5") + 3:])
    recovered = Spool(tmp_path).load()
    assert recovered.damage is not None and recovered.damage["lost"] == ["m5"]
    assert sorted(m.msg_id for m in recovered.queued) == ["m1", "m2", "m3", "m4"]


def first_retired(folder, first, second, third):
    """A queue log: `first` (for bob) and `second` (carol) in one batch, `first` retired, then
    `third` (dave); its bytes."""
    s = Spool(folder)
    s.load()
    s.persist(first, message(first, "bob").to_record())
    s.persist(second, message(second, "carol").to_record())
    s.sync()
    s.retire(first, {"bob": 1}, 100.0)
    s.sync()
    s.persist(third, message(third, "dave").to_record())
    s.sync()
    return (folder / "queue.wal").read_bytes()


def test_damage_whose_record_start_does_not_read_names_the_queued_messages_it_may_have_held(tmp_path):
    """Simulated campaign trial 1627879872 (sp4, every fault kind): m1's retirement was hit in its
    first bytes, so the damage named no id; m1 came back queued as its older record left it, was
    delivered as well as reported, and the verdict called that a break, not the damage's cost. Now
    the messages whose every readable record precedes such damage are `suspect`; damage that
    names its record (`lost`, `older_state`) adds no suspects."""
    data = first_retired(tmp_path, "m1", "m2", "m3")
    at = data.index(wal.frame(Retired("m1", {"bob": 1}, 100.0))) + wal.HEADER.size  # the body's first byte
    (tmp_path / "queue.wal").write_bytes(data[:at] + b"\x00" + data[at + 1:])
    recovered = Spool(tmp_path).load()
    assert sorted(m.msg_id for m in recovered.queued) == ["m1", "m2", "m3"], "m1 is queued again: its retirement is gone"
    assert recovered.damage["lost"] == recovered.damage["older_state"] == [], "the damaged bytes name nothing"
    assert recovered.damage["suspect"] == ["m1", "m2"], "m3's record comes after the damage: it is whole"
    data = five_batches(tmp_path / "named")
    at = data.index(b"raw m3") + 2
    (tmp_path / "named" / "queue.wal").write_bytes(data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:])
    named = Spool(tmp_path / "named").load()
    assert named.damage["lost"] == ["m3"] and named.damage["suspect"] == []


def test_damage_that_shows_an_id_a_byte_from_a_queued_one_names_that_one_suspect(tmp_path):
    """The fault `corrupt` flips a byte (XOR 0x20): inside a record's id it turns "mx1" into "mX1",
    an id still, which the damage showed as `lost` while the message whose retirement it hit came
    back queued named nowhere (sessions 12-15 left this). Now a queued message whose id is a byte
    from an id the damage shows, and that no readable record has, is `suspect`; an id the damage
    shows that is a readable record's, or is no byte from a queued one, sets back nothing."""
    data = first_retired(tmp_path, "mx1", "mz2", "mx3")
    retired = wal.frame(Retired("mx1", {"bob": 1}, 100.0))
    at = data.index(retired) + retired.index(b"mx1") + 1
    (tmp_path / "queue.wal").write_bytes(data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:])
    recovered = Spool(tmp_path).load()
    assert sorted(m.msg_id for m in recovered.queued) == ["mx1", "mx3", "mz2"], "mx1's retirement is gone"
    assert recovered.damage["lost"] == ["mX1"], "what the damaged bytes show, as they show it"
    assert recovered.damage["suspect"] == ["mx1"], "mz2 is two bytes from mX1; mx3 comes after the damage"


def test_a_message_s_bytes_are_written_once_and_its_later_states_without_them(tmp_path):
    """A 15 MiB message with three recipients wrote 125 MB: each step of a pair wrote it again.
    Now its first record holds the bytes and each later state ("s") holds the rest."""
    s = Spool(tmp_path)
    s.load()
    big = QueuedMessage("m1", "alice", b"x" * 100_000, 100.0, pairs={"bob": Pair("bob", hops=1)})
    s.persist("m1", big.to_record())
    s.sync()
    for state in ("deferred", "queued", "delivered"):
        big.pairs["bob"].state = state
        s.persist("m1", big.to_record())
        s.sync()
    data = (tmp_path / "queue.wal").read_bytes()
    assert data.count(b"x" * 100_000) == 1 and len(data) < 101_000
    records, _, _ = wal.read_records(data)
    assert [type(r) for r in records] == [Whole, Step, Step, Step]
    (queued,), _ = load(Spool(tmp_path))
    assert queued.raw == b"x" * 100_000 and queued.pairs["bob"].state == "delivered"


def test_a_message_retired_and_queued_again_is_written_whole_even_in_one_batch(tmp_path):
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.sync()
    s.retire("m1", {"bob": 1}, 100.0)
    s.persist("m1", message("m1", "bob").to_record())  # back after a reroute, in the same batch
    s.sync()
    s.persist("m1", message("m1", "bob", state="failed").to_record())
    s.sync()
    records, _, _ = wal.read_records((tmp_path / "queue.wal").read_bytes())
    assert [type(r) for r in records] == [Whole, Retired, Whole, Step]
    (queued,), remembered = load(Spool(tmp_path))
    assert queued.raw == b"raw m1" and queued.pairs["bob"].state == "failed" and len(remembered) == 1


def test_damage_to_the_record_with_a_message_s_bytes_loses_it_and_says_so(tmp_path):
    """The cost of writing the bytes once: later states that read cannot bring back a message
    whose whole record is damaged. It is named in `lost` (so `xcon check` puts its pairs down to
    the damage), its states are not kept, and the new log reads clean."""
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.persist("m2", message("m2", "carol").to_record())
    s.sync()
    s.persist("m1", message("m1", "bob", state="deferred").to_record())
    s.sync()
    data = (tmp_path / "queue.wal").read_bytes()
    at = data.index(b"raw m1") + 1
    (tmp_path / "queue.wal").write_bytes(data[:at] + b"X" + data[at + 1:])
    recovered = Spool(tmp_path).load()
    assert [m.msg_id for m in recovered.queued] == ["m2"]
    assert recovered.damage["lost"] == ["m1"] and recovered.damage["older_state"] == []
    assert load(Spool(tmp_path))[0][0].msg_id == "m2", "the new log holds no state without its message"


def test_after_a_restart_or_a_compaction_a_queued_message_s_states_go_without_its_bytes(tmp_path, monkeypatch):
    s = Spool(tmp_path)
    s.load()
    s.persist("m1", message("m1", "bob").to_record())
    s.sync()
    again = Spool(tmp_path)
    load(again)
    again.persist("m1", message("m1", "bob", state="deferred").to_record())
    again.sync()
    records, _, _ = wal.read_records((tmp_path / "queue.wal").read_bytes())
    assert [type(r) for r in records] == [Whole, Step]
    again.compact(([message("m1", "bob", state="deferred").to_record()], []))
    again.persist("m1", message("m1", "bob", state="failed").to_record())
    again.sync()
    records, _, _ = wal.read_records((tmp_path / "queue.wal").read_bytes())
    assert [type(r) for r in records] == [Whole, Step] and load(Spool(tmp_path))[0][0].pairs["bob"].state == "failed"


def test_messages_lost_with_their_bytes_are_named_in_log_order(tmp_path):
    """The orphaned states were kept in a set, so `lost` came out in the hash seed's order: the
    same damaged log logged a different line in each process, and a simulated trial's digest
    with it."""
    s = Spool(tmp_path)
    s.load()
    ids = [f"m{i}" for i in range(1, 7)]
    for msg_id in ids:
        s.persist(msg_id, message(msg_id, "bob").to_record())
    s.sync()
    for msg_id in ids:
        s.persist(msg_id, message(msg_id, "bob", state="failed").to_record())
    s.sync()
    data = bytearray((tmp_path / "queue.wal").read_bytes())
    for msg_id in ids:  # the first byte of each whole record's body: its start no longer reads, nor its id
        data[data.index(wal.frame(message(msg_id, "bob").to_record())) + wal.HEADER.size] ^= 0xFF
    (tmp_path / "queue.wal").write_bytes(bytes(data))
    recovered = Spool(tmp_path).load()
    assert recovered.queued == [] and recovered.damage["lost"] == ids
