"""A full disk stalls a node, it never tears its files or crashes it: each writer keeps what the
disk refused and writes it whole when tried again; an MTA below its floor refuses new mail."""

from __future__ import annotations

import errno
import json
import os
from types import SimpleNamespace

import pytest

from nodes import logs
from nodes.core import DiskSpace
from nodes.mta import spool as spool_mod
from nodes.mta.queue import QueuedMessage
from nodes.mta.spool import Spool
from nodes.runtime import NodeStopped, Runtime
from nodes.store import maildir as maildir_mod
from nodes.store.maildir import Maildirs
from protocol import MAX_MESSAGE_BYTES

from .helpers import events, replies, request
from .test_mta_core import make_mta


class FullDisk:
    """os.write that takes `room` bytes, then says the disk is full, `times` times over."""

    def __init__(self, room: int, times: int = 1):
        self.room, self.times, self.real = room, times, os.write

    def __call__(self, fd: int, data) -> int:
        if self.times <= 0:
            return self.real(fd, data)
        if self.room > 0:
            n = self.real(fd, bytes(data[:self.room]))
            self.room -= n
            return n
        self.times -= 1
        raise OSError(errno.ENOSPC, "No space left on device")


def test_the_queue_log_cuts_a_half_written_batch_and_writes_it_whole_later(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    spool.load()
    spool.persist("m1", QueuedMessage("m1", "alice", b"first", 1.0).to_record())
    spool.sync()
    size = os.path.getsize(tmp_path / "queue.wal")
    spool.persist("m2", QueuedMessage("m2", "alice", b"second" * 100, 2.0).to_record())
    monkeypatch.setattr(spool_mod.os, "write", FullDisk(room=50))
    with pytest.raises(OSError):
        spool.sync()
    assert os.path.getsize(tmp_path / "queue.wal") == size, "no half record left behind"
    spool.sync()  # room again (FullDisk fails once)
    queued = Spool(tmp_path).load().queued
    assert [m.msg_id for m in queued] == ["m1", "m2"]


def test_a_mailbox_batch_that_met_a_full_disk_leaves_nothing_in_tmp_and_lands_whole_later(tmp_path, monkeypatch):
    boxes = Maildirs(tmp_path, fsync=False)
    boxes.create("bob")
    boxes.write("bob", "1.m1.xcon", b"a" * 1000)
    boxes.write("bob", "2.m2.xcon", b"b" * 1000)
    monkeypatch.setattr(maildir_mod.os, "write", FullDisk(room=1500))
    with pytest.raises(OSError):
        boxes.sync()
    assert os.listdir(tmp_path / "bob" / "tmp") == [] and os.listdir(tmp_path / "bob" / "new") == []
    boxes.sync()
    assert sorted(os.listdir(tmp_path / "bob" / "new")) == ["1.m1.xcon", "2.m2.xcon"]
    assert (tmp_path / "bob" / "new" / "2.m2.xcon").read_bytes() == b"b" * 1000


def test_log_lines_the_disk_refused_are_written_once_and_whole(tmp_path, monkeypatch):
    node_log = logs.file_log("mta.ex1", tmp_path / "mta.ex1.jsonl")
    for i in range(20):
        node_log.emit("info", "mta.routed", {"msg_id": f"m{i}"})
    monkeypatch.setattr(logs.os, "write", FullDisk(room=100))
    with pytest.raises(OSError):
        node_log.flush()
    node_log.emit("info", "mta.routed", {"msg_id": "after"})
    node_log.flush()
    lines = [json.loads(line)["msg_id"] for line in (tmp_path / "mta.ex1.jsonl").read_text().splitlines()]
    assert lines == [f"m{i}" for i in range(20)] + ["after"]


def stub_runtime(stopping: bool = False):
    logged = []
    log = SimpleNamespace(warning=lambda event, **kw: logged.append(event))
    return SimpleNamespace(_disk_waiting=False, _stopping=stopping, log=log,
                           _nodelog=SimpleNamespace(sinks=SimpleNamespace(console=SimpleNamespace(flush=lambda: None)))), logged


def test_the_runtime_waits_for_room_and_says_so_once(monkeypatch):
    monkeypatch.setattr("nodes.runtime.time.sleep", lambda s: None)
    runtime, logged = stub_runtime()
    tries = []

    def write():
        tries.append(1)
        if len(tries) < 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return "written"

    assert Runtime._write(runtime, write) == "written" and len(tries) == 4
    assert logged == ["disk.full", "disk.room"]
    runtime, _ = stub_runtime(stopping=True)
    with pytest.raises(NodeStopped):  # asked to stop meanwhile: nothing that waited leaves
        Runtime._write(runtime, lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(PermissionError):  # other errors are not waited out
        Runtime._write(stub_runtime()[0], lambda: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))


def submit(mta, body: str = "b"):
    return replies(mta.on_event(request("mta.submit", {"msg_id": None, "sender": "alice", "recipients": ["bob"],
                                                       "subject": "s", "body": body, "priority": None}), 1.0))[0]


def test_an_mta_below_its_floor_refuses_new_mail_and_takes_it_again_when_there_is_room():
    mta = make_mta("sp4")
    mta.room.min_free_bytes = 10_000
    assert events(mta.on_event(DiskSpace(5_000), 1.0), "storage.low")
    refused = submit(mta)
    assert refused.type == "error" and "insufficient storage on mta.ex1" in refused.body.reason
    transfer = mta.on_event(request("mta.transfer", {"msg_id": "ex2.x.1", "sender": "alice", "raw": b"r",
                                                     "accepted_at": 1.0, "ndr_for": None, "ndr_rcpts": [], "priority": "normal",
                                                     "rcpts": [{"alias": "bob", "alt_of": None, "hint": None,
                                                                "hops": 1}]}), 1.0)
    assert replies(transfer)[0].type == "error" and not mta.queue, "the peer keeps it and tries again"
    assert events(mta.on_event(DiskSpace(50_000), 2.0), "storage.ok")
    assert submit(mta).type == "mta.accepted"


def test_a_message_over_the_size_limit_is_refused_before_anything_is_kept():
    mta = make_mta("sp4")
    refused = submit(mta, body="x" * MAX_MESSAGE_BYTES)
    assert refused.type == "error" and "over the limit" in refused.body.reason and not mta.queue
