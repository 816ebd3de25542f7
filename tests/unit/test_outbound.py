"""The IMS's queue on disk (nodes/ims/outbound.py), read at a start: damage kept aside and named,
the old log written on under its new name, a torn last line cut, the files of ended items
cleared. The IMS's first mutation run (docs/testing.md) found these reached by the integration
tests alone; here each is read back from files made by hand."""

from __future__ import annotations

import json

import msgpack

from nodes.ims.outbound import LOG, MAGIC, OLD_LOG, Item, Outbound, decode_item, encode_item, id_in, key_of
from nodes.records import encode_line


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
    (folder / OLD_LOG).write_text(json.dumps({"msg_id": "m-1", "rcpt": "x@outside.test"}) + "\n")
    queue = Outbound(folder, fsync=False)
    assert not (folder / OLD_LOG).exists() and queue.relayed == {key_of("m-1", "x@outside.test")}
    assert (folder / LOG).read_bytes() == encode_line({"msg_id": "m-1", "rcpt": "x@outside.test"})
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
