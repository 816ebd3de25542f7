"""Aliases and message ids: the whole string must fit, a trailing newline included."""

from __future__ import annotations

import pytest

from nodes.directory.core import DirectoryCore
from nodes.store.core import StoreCore
from protocol.names import valid_alias, valid_msg_id

from .helpers import replies, request


@pytest.mark.parametrize("name", ["bob\n", "bob\r\n", "\nbob", "bob ", "Bob", "", "-bob", "b" * 65, None, 7])
def test_bad_aliases(name):
    assert not valid_alias(name)


@pytest.mark.parametrize("name", ["bob", "b", "bob.smith_2-x", "9" * 64])
def test_good_aliases(name):
    assert valid_alias(name)


def test_message_ids():
    assert valid_msg_id("ex1.ab12cd.7") and valid_msg_id("ex1.a.1.ndr.bob+carol")
    assert not any(valid_msg_id(m) for m in ("m1\n", "../x", ".m", "m" * 201, ""))


def test_nodes_refuse_a_trailing_newline():
    d = DirectoryCore(["ex1"])
    added = d.on_event(request("dir.add", {"alias": "bob\n", "display_name": "", "home_server": "ex1",
                                           "alternate": None, "deliver_to_both": False}), 1.0)
    assert replies(added)[0].type == "error" and d.recipients == {} and d.usn == 0
    store = StoreCore("ex1", {}, {}, "b")
    created = store.on_event(request("store.create", {"mailbox": "bob\n", "owner": None}), 1.0)
    assert replies(created)[0].type == "error" and store.mailboxes == {}


def test_ids_an_mta_derives_never_equal_an_id_a_client_may_choose():
    """Story 6 of issue 19: ids were cut to 200 characters after `.ndr.<rcpts>` was appended, so a
    report of a 196-200 character id shared its id with the message or another report."""
    from protocol.names import generated_id, postmaster_id, report_id, valid_submitted_id

    for msg_id in ("m", "x" * 196, "y" * 200, "m.ndr.bob"):
        assert valid_submitted_id(msg_id)
        derived = [report_id(msg_id, ["bob"]), report_id(msg_id, ["carol"]), report_id(msg_id, ["bob", "carol"])]
        derived += [postmaster_id(r) for r in list(derived)]
        assert len(set(derived)) == len(derived) and msg_id not in derived
        assert all(valid_msg_id(d) and not valid_submitted_id(d) for d in derived)
    assert report_id("m", ["carol", "bob"]) == report_id("m", ["bob", "carol"]), "the same failure, the same report"
    made = generated_id("ex1", "a1b2c3", 7)
    assert valid_msg_id(made) and not valid_submitted_id(made)
    longest = "m" * 200 + "~ndr~0123456789abcdef~pm"
    assert valid_msg_id(longest) and not valid_msg_id(longest + "~x" * 4), "230 characters at most: a file name's"
