"""The IMS's queue on disk (nodes/ims/outbound.py), read at a start: damage kept aside and named,
the old log written on under its new name, a torn last line cut, the files of ended items
cleared. The IMS's first mutation run (docs/testing.md) found these reached by the integration
tests alone; here each is read back from files made by hand."""

from __future__ import annotations

import json
import os
import stat

import msgpack

from nodes.ims.outbound import (
    LOG,
    MAGIC,
    OLD_LOG,
    Item,
    MemoryOutbound,
    Outbound,
    decode_item,
    encode_item,
    id_in,
    key_of,
    load_queue,
    look,
)
from nodes.records import describe_damage, encode_line


def item(msg_id: str, rcpt: str = "dave@outside.test", **more) -> Item:
    return Item(key_of(msg_id, rcpt), msg_id, "alice", rcpt, b"Subject: s\r\n\r\nx\r\n", None, [], 1.0, 61.0,
                **more)


def write(folder, sub: str, it: Item) -> None:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / sub / f"{it.key}.msg").write_bytes(encode_item(it.record()))


def test_a_damaged_item_and_a_damaged_log_line_are_kept_aside_and_name_what_they_held(tmp_path):
    folder = tmp_path / "ims" / "ex1"
    good, bad = item("m-good"), item("m-bad")
    write(folder, "outbound", good)
    write(folder, "outbound", bad)
    path = folder / "outbound" / f"{bad.key}.msg"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # the raw's bytes: the checksum no longer holds, the id still shows
    path.write_bytes(bytes(data))
    lines = [encode_line({"msg_id": "m-r1", "rcpt": "x@outside.test", "at": 1.0}),
             b'{"msg_id": "m-lost", "rcpt": "y@outside.test", "crc": "00000000"}\n',
             encode_line({"msg_id": "m-r2", "rcpt": "z@outside.test", "at": 2.0})]
    (folder / LOG).write_bytes(b"".join(lines))
    queue = Outbound(folder, fsync=False)
    assert set(queue.items) == {good.key} and queue.relayed == {key_of("m-r1", "x@outside.test"),
                                                                 key_of("m-r2", "z@outside.test")}
    assert queue.damage["file"] == "ims/ex1" and queue.damage["lost"] == ["m-bad", "m-lost"]
    kept = queue.damage["kept_as"].split(", ")
    assert [k.split(".damaged-")[0] for k in kept] == [f"ims/ex1/outbound/{bad.key}.msg", f"ims/ex1/{LOG}"]
    assert (tmp_path / kept[0]).read_bytes() == bytes(data), "the very bytes, beside"
    assert (folder / LOG).read_bytes() == lines[0] + lines[2], "the lines that read, written anew"


def test_the_old_log_is_written_on_under_its_new_name_and_a_torn_line_is_cut(tmp_path):
    folder = tmp_path / "ex1"
    folder.mkdir()
    old = [{"msg_id": "m-1", "rcpt": "x@outside.test"}, {"msg_id": "m-2", "rcpt": "y@outside.test"}]
    (folder / OLD_LOG).write_text("".join(json.dumps(r) + "\n" for r in old))
    queue = Outbound(folder, fsync=False)
    assert not (folder / OLD_LOG).exists() and queue.relayed == {key_of(r["msg_id"], r["rcpt"]) for r in old}
    assert (folder / LOG).read_bytes() == b"".join(encode_line(r) for r in old)
    assert queue.damage is None
    whole = (folder / LOG).read_bytes()
    (folder / LOG).write_bytes(whole + b'{"msg_id": "m-2", "rc')  # a crash in the middle of a line
    again = Outbound(folder, fsync=False)
    assert (folder / LOG).read_bytes() == whole and again.damage is None, "never acknowledged: cut, no damage"


def test_the_files_of_ended_items_are_cleared_and_a_failed_one_is_kept_failed(tmp_path):
    folder = tmp_path / "ex1"
    relayed, returned, failed, waiting = item("m-rel"), item("m-ret"), item("m-fail"), item("m-wait")
    for it in (relayed, returned, failed, waiting):
        write(folder, "outbound", it)
    write(folder, "failed", Item(**{**failed.__dict__, "failed": "refused: 550 no"}))
    (folder / LOG).write_bytes(encode_line({"msg_id": "m-rel", "rcpt": "dave@outside.test"}) +
                               encode_line({"msg_id": "m-ret", "rcpt": "dave@outside.test", "returned": "refused"}))
    queue = Outbound(folder, fsync=False)
    assert (queue.relayed, queue.returned) == ({relayed.key}, {returned.key})
    assert sorted(p.stem for p in (folder / "outbound").glob("*.msg")) == [waiting.key]
    assert queue.items[failed.key].failed == "refused: 550 no" and (folder / "failed" / f"{failed.key}.msg").exists()
    assert queue.items[waiting.key].failed is None and queue.items[waiting.key].expires_at == 61.0


def test_an_item_file_reads_in_either_format_and_a_damaged_one_shows_its_id_if_it_can():
    record = item("m-1").record()
    assert decode_item(encode_item(record)) == record
    assert decode_item(msgpack.packb(record, use_bin_type=True)) == record, "the first format: msgpack alone"
    assert decode_item(MAGIC + b"\x00\x00") is None and decode_item(encode_item({**record, "msg_id": 5})) is None
    assert id_in(encode_item(record)[:-5]) == "m-1" and id_in(b"nothing") is None
    long_id = "m" * 40
    assert id_in(encode_item({**record, "msg_id": long_id})) == long_id, "an id past 31 bytes (msgpack's str8)"


def test_what_look_finds_damaged_is_said_a_line_a_file_and_changes_nothing(tmp_path):
    folder = tmp_path / "ims" / "ex1"
    named, nameless = item("m-named"), item("m-nameless")
    for it in (named, nameless):
        write(folder, "outbound", it)
    for it, at in ((named, -3), (nameless, None)):
        path = folder / "outbound" / f"{it.key}.msg"
        data = bytearray(path.read_bytes())
        if at is None:
            data[data.index(b"m-nameless")] = 0xFF  # the id itself: it no longer reads as one
        else:
            data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    (folder / LOG).write_bytes(encode_line({"msg_id": "m-r1", "rcpt": "x@outside.test"}) +
                               b'{"msg_id": "m-lost", "rcpt": "y@outside.test", "crc": "00000000"}\n' +
                               encode_line({"msg_id": "m-r2", "rcpt": "z@outside.test"}))
    before = sorted((p.relative_to(folder), p.read_bytes()) for p in folder.rglob("*") if p.is_file())
    found = look(folder)
    assert found.items == {} and found.damaged_files == {folder / "outbound" / f"{named.key}.msg": "m-named",
                                                         folder / "outbound" / f"{nameless.key}.msg": None}
    said = found.damage(tmp_path)
    by_key = sorted([(named.key, " (message m-named)"), (nameless.key, "")])
    assert said[:2] == [f"ims/ex1/outbound/{key}.msg does not read (its checksum or its fields){tail}"
                        for key, tail in by_key]
    assert said[2] == describe_damage(f"ims/ex1/{LOG}", found.log_scan.damage, "ends lost: m-lost")
    assert "ends lost: m-lost" in said[2] and len(said) == 3
    assert sorted((p.relative_to(folder), p.read_bytes()) for p in folder.rglob("*") if p.is_file()) == before


def test_look_reads_the_old_log_only_without_the_new_and_a_file_in_failed_first(tmp_path):
    folder = tmp_path / "ex1"
    folder.mkdir()
    assert look(folder).lines == [] and look(folder).log_path == folder / LOG, "no log yet: the new name"
    (folder / OLD_LOG).write_text(json.dumps({"msg_id": "m-old", "rcpt": "x@outside.test"}) + "\n")
    assert [r["msg_id"] for r in look(folder).lines] == ["m-old"] and look(folder).log_path == folder / OLD_LOG
    (folder / LOG).write_bytes(encode_line({"msg_id": "m-new", "rcpt": "x@outside.test"}))
    assert [r["msg_id"] for r in look(folder).lines] == ["m-new"], "both there (killed before the old went): the new"
    it = item("m-1")
    write(folder, "outbound", it)
    write(folder, "failed", it)  # moved to failed/ by a version that wrote no reason, then killed
    assert look(folder).items[it.key]["failed"] == "refused: kept in failed/ before items went back to the MTA"
    write(folder, "failed", Item(**{**it.__dict__, "failed": "expired: 4.4.1 no answer"}))
    assert look(folder).items[it.key]["failed"] == "expired: 4.4.1 no answer", "its own reason, where it has one"


def test_an_item_of_the_first_format_gets_its_lifetime_acceptance_and_priority_at_load():
    old = {k: v for k, v in item("m-1").record().items() if k not in ("expires_at", "accepted_at", "priority")}
    old["queued_at"] = 10.0
    items, relayed, returned, stale = load_queue({"k1": {**old, "failed": None}}, [], lambda r: 50.0)
    (loaded,) = items.values()
    assert (loaded.key, loaded.expires_at, loaded.accepted_at, loaded.priority) == ("k1", 60.0, 10.0, "normal")
    assert (relayed, returned, stale) == (set(), set(), [])
    forever, *_ = load_queue({"k1": {**old, "failed": None}}, [], None)
    assert forever["k1"].expires_at == float("inf"), "no lifetime known: never expired by the IMS"
    new = {**old, "failed": None, "expires_at": 99.0, "accepted_at": 7.0, "priority": "urgent"}
    (kept,) = load_queue({"k1": new}, [], lambda r: 50.0)[0].values()
    assert (kept.expires_at, kept.accepted_at, kept.priority) == (99.0, 7.0, "urgent"), "its own, where it has them"


def test_a_new_queue_makes_its_folders_private_and_its_writes_durable_by_default(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    folder = tmp_path / "ims" / "ex1"  # neither there yet
    queue = Outbound(folder)
    assert {sub: stat.S_IMODE((folder / sub).stat().st_mode) for sub in ("outbound", "failed")} == {
        "outbound": 0o700, "failed": 0o700}
    it = item("m-1", accepted_at=0.5, priority="urgent")
    queue.write("outbound", it)
    assert decode_item((folder / "outbound" / f"{it.key}.msg").read_bytes()) == it.record()
    synced.clear()
    queue.line({"msg_id": "m-1", "rcpt": it.rcpt})
    assert synced and (folder / LOG).read_bytes() == encode_line({"msg_id": "m-1", "rcpt": it.rcpt})
    queue.remove("outbound", it.key)
    queue.remove("outbound", it.key)  # gone already (a restart between the remove and its end): no error
    assert not (folder / "outbound" / f"{it.key}.msg").exists()
    again = Outbound(folder, lifetime=lambda r: 1 / 0)
    assert again.relayed == {it.key} and again.items == {}


def test_an_item_keeps_its_acceptance_and_priority_across_a_restart_and_an_old_one_gets_its_lifetime(tmp_path):
    folder = tmp_path / "ex1"
    queue = Outbound(folder, fsync=False)
    kept = item("m-1", accepted_at=0.5, priority="urgent")
    queue.write("outbound", kept)
    old = {k: v for k, v in item("m-old").record().items() if k not in ("expires_at", "accepted_at", "priority")}
    report = {**old, "msg_id": "m-0~ndr~0123456789abcdef", "ndr_for": "m-0", "ndr_rcpts": ["bob"]}
    for r in (old, report):
        (folder / "outbound" / f"{key_of(r['msg_id'], r['rcpt'])}.msg").write_bytes(encode_item(r))

    def life(r):
        return 100.0 if r["ndr_for"] else 50.0

    for loaded in (Outbound(folder, fsync=False, lifetime=life).items, memory_of(folder, life).items):
        assert (loaded[kept.key].accepted_at, loaded[kept.key].priority) == (0.5, "urgent")
        old_item = loaded[key_of("m-old", old["rcpt"])]
        assert (old_item.expires_at, old_item.queued_at, old_item.ndr_for, old_item.ndr_rcpts) == (51.0, 1.0, None, [])
        rep = loaded[key_of(report["msg_id"], report["rcpt"])]
        assert (rep.expires_at, rep.ndr_for, rep.ndr_rcpts) == (101.0, "m-0", ["bob"]), "a report's lifetime"


def memory_of(folder, lifetime) -> MemoryOutbound:
    """A simulated queue holding the files in `folder`, loaded."""
    queue = MemoryOutbound()
    for sub in ("outbound", "failed"):
        for path in (folder / sub).glob("*.msg"):
            queue.files[(sub, path.stem)] = decode_item(path.read_bytes())
    queue.load(lifetime)
    return queue


def test_a_simulated_queue_clears_ended_items_files_at_load_and_removes_what_it_is_told(tmp_path):
    queue = MemoryOutbound()
    relayed, waiting = item("m-rel"), item("m-wait")
    queue.write("outbound", relayed)
    queue.write("outbound", waiting)
    queue.line({"msg_id": "m-rel", "rcpt": relayed.rcpt})
    queue.load(None)
    assert sorted(queue.files) == [("outbound", waiting.key)]
    queue.remove("outbound", waiting.key)
    queue.remove("outbound", waiting.key)
    assert queue.files == {}
    queue.write("failed", Item(**{**waiting.__dict__, "failed": "refused: 550 no"}))
    for _ in range(2):  # dumped again over the files of the last dump
        queue.dump(tmp_path / "ex1")
    assert stat.S_IMODE((tmp_path / "ex1" / "failed").stat().st_mode) == 0o700
    assert Outbound(tmp_path / "ex1", fsync=False).items[waiting.key].failed == "refused: 550 no"


def test_damage_names_every_id_it_can_and_nothing_for_what_it_cannot(tmp_path):
    folder = tmp_path / "ims" / "ex1"
    items = [item("m-a"), item("m-b"), item("m-c")]
    for it in items:
        write(folder, "outbound", it)
    for it in items:
        path = folder / "outbound" / f"{it.key}.msg"
        data = bytearray(path.read_bytes())
        at = data.index(b"m-c") if it.msg_id == "m-c" else data.index(b"Subject")
        data[at] = 0xFF  # m-c: in its id; the others: in the message
        path.write_bytes(bytes(data))
    (folder / LOG).write_bytes(encode_line({"msg_id": "m-f", "rcpt": "z@outside.test"}) +
                               b'{"msg_id": "m-d", "rcpt": "x", "crc": "00000000"}\n'
                               b'{"msg_id": "m-\xffe", "rcpt": "y", "crc": "00000000"}\n' +
                               encode_line({"msg_id": "m-g", "rcpt": "z@outside.test"}))
    said = look(folder).damage(tmp_path)
    assert said[-1].endswith("ends lost: m-d, m-e)"), said[-1]
    queue = Outbound(folder, fsync=False)
    assert queue.damage["lost"] == ["m-a", "m-b", "m-d", "m-e"], "a byte that does not decode is passed over"
    (folder / LOG).write_bytes(b"garbage\n" + encode_line({"msg_id": "m-g", "rcpt": "z@outside.test"}))
    (line,) = look(folder).damage(tmp_path)
    assert "ends lost" not in line and line == describe_damage(f"ims/ex1/{LOG}", look(folder).log_scan.damage, "")


def test_a_line_without_its_recipient_is_damage_not_an_end():
    scan_ok = look_lines([encode_line({"msg_id": "m-1", "rcpt": "x@outside.test"})])
    assert scan_ok.damage == [] and len(scan_ok.records) == 1
    for bad in ({"msg_id": "m-1"}, {"rcpt": "x@outside.test"}, {"msg_id": 5, "rcpt": "x"}):
        scan = look_lines([encode_line(bad)])
        assert scan.records == [] and scan.damaged, bad


def look_lines(lines: list[bytes]):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / LOG).write_bytes(b"".join(lines))
        return look(Path(d)).log_scan


def test_an_item_file_reads_only_whole_and_of_the_right_shape():
    record = item("m-1").record()
    good = encode_item(record)
    body_at = good.index(b"Subject")
    flipped = bytearray(good)
    flipped[body_at] ^= 0x20  # "subject": the msgpack still reads; only the checksum says it changed
    assert decode_item(bytes(flipped)) is None
    assert decode_item(encode_item({**record, "ndr_rcpts": ["bob", 5]})) is None
    assert decode_item(encode_item(["m-1"])) is None and decode_item(encode_item("m-1")) is None, "not a map"
    whole = encode_item({**record, "msg_id": "m-long-id"})
    cut = whole[:whole.index(b"m-long-id") + 4]
    assert id_in(cut) is None, "an id cut short is no id"
