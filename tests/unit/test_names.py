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
