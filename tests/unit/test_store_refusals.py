"""Every refusal of the store, word for word: the reason a person reads (in `xcon` and the logs),
the code a move acts on, and the log lines it leaves. The words are part of the interface: a
change to them should be seen here, in review, and not pass unseen."""

from __future__ import annotations

import pytest

from nodes.core import DiskSpace
from nodes.store.core import MAX_EXPORT, StoreCore
from protocol import INVALID, NO_MAILBOX, NOT_LOCKED

from .helpers import refusal, refusal_log, replies, request

PAGE = [{"name": "1000.m1.xcon", "msg_id": "m1", "raw": b"copy of m1"}]


def store_with_a_move() -> StoreCore:
    """ex1 holds bob (locked by move.1) and carol; move.0 has ended here."""
    store = StoreCore("ex1", {"bob": {"m1"}, "carol": set()}, {}, "b")
    assert replies(store.on_event(request("store.lock", {"mailbox": "bob", "owner": "move.1"}), 1.0))[0].type == "ok"
    store.on_event(request("store.end_move", {"mailbox": "dave", "owner": "move.0"}), 1.0)
    return store


def refused(type_: str, body: dict, now: float = 2.0, store: StoreCore | None = None) -> tuple[str, str | None, list]:
    return refusal((store or store_with_a_move()).on_event(request(type_, body), now))


@pytest.mark.parametrize("type_, body, reason, code", [
    ("store.list", {"mailbox": "zed"}, "no mailbox 'zed' on ex1", NO_MAILBOX),
    ("store.export", {"mailbox": "zed", "after": "", "limit": 10}, "no mailbox 'zed' on ex1", NO_MAILBOX),
    ("store.export", {"mailbox": "carol", "after": "", "limit": 0},
     f"export limit must be between 1 and {MAX_EXPORT}", INVALID),
    ("store.export", {"mailbox": "carol", "after": "", "limit": MAX_EXPORT + 1},
     f"export limit must be between 1 and {MAX_EXPORT}", INVALID),
    ("store.lock", {"mailbox": "zed", "owner": "move.2"}, "no mailbox 'zed' on ex1", NO_MAILBOX),
    ("store.lock", {"mailbox": "bob", "owner": "move.2"}, "mailbox 'bob' is already locked by move.1", INVALID),
    ("store.unlock", {"mailbox": "carol", "owner": "move.2"}, "mailbox 'carol' is not locked", NOT_LOCKED),
    ("store.unlock", {"mailbox": "bob", "owner": "move.2"}, "mailbox 'bob' is locked by move.1, not move.2", None),
    ("store.create", {"mailbox": "carol", "owner": None}, "mailbox 'carol' already exists on ex1", INVALID),
    ("store.delete", {"mailbox": "zed", "owner": "move.1"}, "no mailbox 'zed' on ex1", NO_MAILBOX),
    ("store.delete", {"mailbox": "carol", "owner": "move.1"},
     "mailbox 'carol' is not locked by move.1; only the move that holds it deletes it", None),
    ("store.import", {"mailbox": "carol", "owner": "move.2", "messages": PAGE},
     "mailbox 'carol' already exists on ex1 (live)", INVALID),
    ("store.import", {"mailbox": "erin", "owner": "move.2", "messages": [{"name": "../x", "raw": b"x"}]},
     "store.import: each message needs a safe 'name', and a Maildir 'folder' and 'info' where it has them", None),
    ("store.lock", {"mailbox": "b/ob", "owner": "move.2"}, "'b/ob' is not a valid mailbox name", INVALID),
    ("store.deliver", {"msg_id": "not an id", "mailbox": "carol", "raw": b"x", "ndr_for": None, "ndr_rcpts": [],
                       "expires_at": 1e12}, "'not an id' is not a valid message id", INVALID),
])
def test_each_refusal_says_why_in_its_own_words_with_its_code(type_, body, reason, code):
    assert refused(type_, body) == (reason, code, [refusal_log(type_, reason)])


@pytest.mark.parametrize("type_, what, body", [
    ("store.lock", "lock", {}),
    ("store.create", "create", {}),
    ("store.import", "import into", {"messages": PAGE}),
])
def test_a_late_request_of_an_ended_move_says_which_and_leaves_a_warning(type_, what, body):
    reason = f"move.0 has ended on ex1; it cannot {what} 'erin'"
    assert refused(type_, {"mailbox": "erin", "owner": "move.0", **body}) == (reason, None, [
        refusal_log(type_, reason),
        ("store.late_request", "warning", {"type": type_, "mailbox": "erin", "owner": "move.0"})])


def test_an_import_on_a_full_disk_is_refused_with_the_room_left():
    store = StoreCore("ex1", {}, {}, "b", min_free_bytes=1000)
    store.on_event(DiskSpace(500), 1.0)
    reason = "insufficient storage on store.ex1 (500 bytes free), retry later"
    assert refused("store.import", {"mailbox": "erin", "owner": "move.2", "messages": PAGE}, store=store) == (
        reason, None, [refusal_log("store.import", reason)])


@pytest.mark.parametrize("limit", [1, MAX_EXPORT])
def test_the_export_limits_bounds_are_taken(limit):
    (page,) = store_with_a_move().on_event(request("store.export", {"mailbox": "carol", "after": "", "limit": limit}),
                                           2.0)
    assert (type(page).__name__, page.limit, page.mailbox) == ("ExportPage", limit, "carol")
