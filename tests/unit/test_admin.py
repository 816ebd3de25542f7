"""The administrator's viewers read from files (orchestrator/inspect/admin.py): an IMS's queue as
`xcon queue ims.exN` shows it, with nothing running."""

from __future__ import annotations

import time

from nodes.ims.outbound import Item, encode_item, key_of
from nodes.records import encode_line
from orchestrator.inspect import admin


def put(folder, sub: str, msg_id: str, queued_at: float, **more) -> str:
    it = Item(key_of(msg_id, "dave@outside.test"), msg_id, "alice", "dave@outside.test", b"x", None, [], queued_at,
              queued_at + 60, **more)
    (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / sub / f"{it.key}.msg").write_bytes(encode_item(it.record()))
    return it.key


def test_an_ims_queue_lists_what_it_holds_oldest_first_and_not_what_ended(tmp_path):
    folder = tmp_path / "ims" / "ex1"
    now = time.time()
    put(folder, "outbound", "m-relayed", now - 30)  # its line is on the log: killed before its file went
    put(folder, "outbound", "m-waiting", now - 10, priority="urgent")
    put(folder, "failed", "m-refused", now - 20, failed="refused: 550 5.1.1 no such user")
    (folder / "log.jsonl").write_bytes(encode_line({"msg_id": "m-relayed", "rcpt": "dave@outside.test"}))
    shown = admin.queue(tmp_path, None, ["ims.ex1"])["ims.ex1"]
    assert (shown["total"], shown["source"], "damaged" in shown) == (2, "queue files", False)
    assert [(i["msg_id"], i["state"], i["reason"], i["priority"], i["kind"]) for i in shown["items"]] == [
        ("m-refused", "returning", "refused: 550 5.1.1 no such user", "normal", "message"),
        ("m-waiting", "relaying", "", "urgent", "message")]
    assert 19 < shown["items"][0]["age_s"] < 60 and shown["items"][0]["rcpt"] == "dave@outside.test"
    first = admin.ims_queue(tmp_path, "ims.ex1", limit=1)
    assert [i["msg_id"] for i in first["items"]] == ["m-refused"] and first["total"] == 2, "the oldest, of two"
    (folder / "outbound" / "0bad.msg").write_bytes(b"not an item")
    assert admin.ims_queue(tmp_path, "ims.ex1")["damaged"] is True
