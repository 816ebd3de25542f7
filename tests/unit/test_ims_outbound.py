"""The IMS's queue on disk (nodes.ims.outbound): each item ends once, relayed or handed back."""

from __future__ import annotations

from nodes.ims.outbound import Outbound
from protocol import body_of
from protocol.messages import ImsOutbound


def body(msg_id: str, rcpt: str = "dave@outside.test") -> ImsOutbound:
    return body_of("ims.outbound", {"msg_id": msg_id, "sender": "alice", "rcpt": rcpt, "raw": b"Subject: s\r\n\r\nx\r\n", "ndr_for": None,
            "ndr_rcpts": [], "accepted_at": 1.0, "priority": "normal", "expires_at": 61.0})


def test_an_item_ends_once_relayed_or_handed_back_and_is_not_taken_again_even_after_a_restart(tmp_path):
    queue = Outbound(tmp_path, fsync=False)
    relayed, _ = queue.put(body("m1"), 2.0)
    back, new = queue.put(body("m2"), 2.0)
    assert new and queue.put(body("m2"), 2.5) == (back, False), "sent again before it ended: the same item"
    queue.done(relayed, "127.0.0.1:25", 3.0)
    queue.fail(back, "refused: 550 no such user")
    assert (tmp_path / "failed" / f"{back.key}.msg").exists() and not (tmp_path / "outbound" / f"{back.key}.msg").exists()
    queue.returned_to_mta(back, "mta.ex1", 4.0)
    for q in (queue, Outbound(tmp_path, fsync=False)):  # and as a restart reads the files
        assert q.put(body("m1"), 5.0) == (None, False) and q.put(body("m2"), 5.0) == (None, False)
        assert q.items == {}


def test_an_item_moved_to_failed_and_killed_before_it_left_outbound_is_failed_at_restart(tmp_path):
    queue = Outbound(tmp_path, fsync=False)
    item, _ = queue.put(body("m1"), 2.0)
    copy = (tmp_path / "outbound" / f"{item.key}.msg").read_bytes()
    queue.fail(item, "expired: no smarthost took it")
    (tmp_path / "outbound" / f"{item.key}.msg").write_bytes(copy)  # the kill came before the unlink
    again = Outbound(tmp_path, fsync=False)
    assert again.items[item.key].failed == "expired: no smarthost took it", "never relayed after it failed"
    assert not (tmp_path / "outbound" / f"{item.key}.msg").exists()
