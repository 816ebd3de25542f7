"""A run-dir made by the xcon before typed messages and records (commit a05777b) resumes under
this one: its directory, mailboxes, queue (a message deferred by a move) and the move itself.

tests/data/rundir-a05777b.tar.gz was made by a05777b:

    xcon up --servers 2 --mta-build sp4; xcon user add alice --server ex1 (bob ex2, carol ex1)
    xcon send --from alice --to carol --subject before
    xcon fault hold-at-step --step copy; xcon move bob --to ex1 --no-wait
    xcon send --from alice --to bob --subject queued     # deferred: bob's mailbox is locked
    xcon down

Its queue log is of the form before (maps, lower-case tags), its journal holds a move stopped in
step copy. The one thing the test changes is the time: the queued message's acceptance is moved to
now, as if the cluster had stopped a moment ago (else its time-out, 60 s, would have passed and the
check would be of its NDR, not of its delivery)."""

from __future__ import annotations

import json
import struct
import tarfile
import time
import zlib
from pathlib import Path

import msgpack

from orchestrator.cluster.rundir import node_processes

from ..conftest import xcon, xcon_json

FIXTURE = Path(__file__).parent.parent / "data" / "rundir-a05777b.tar.gz"
HEADER = struct.Struct(">II")


def accepted_now(log: Path) -> int:
    """Move each queued message's acceptance in a queue log of the form before to now; how many."""
    data, out, at, moved = log.read_bytes(), [], 0, 0
    while at < len(data):
        size, _ = HEADER.unpack_from(data, at)
        record = msgpack.unpackb(data[at + HEADER.size:at + HEADER.size + size], raw=False)
        at += HEADER.size + size
        if record[0] in ("p", "s"):
            record[2]["accepted_at"], moved = time.time(), moved + 1
        body = msgpack.packb(record, use_bin_type=True)
        out.append(HEADER.pack(len(body), zlib.crc32(body)) + body)
    log.write_bytes(b"".join(out))
    return moved


def test_a_run_dir_of_the_release_before_resumes_with_its_mail_queue_and_move(tmp_path):
    run = tmp_path / "run"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(run, filter="data")
    config = json.loads((run / "cluster.json").read_text())
    (run / "cluster.json").write_text(json.dumps({**config, "run_dir": str(run)}))  # made elsewhere
    assert accepted_now(run / "mta" / "ex2" / "queue.wal") == 1
    try:
        up = xcon("up", run_dir=run, check=True)
        assert "mta.ex2: 1 message(s) taken up from its queue" in up.stdout, up.stdout
        assert "orchestrator: 1 unfinished move(s) taken up from its journal" in up.stdout, up.stdout
        assert "directory at USN 3, 3 user(s)" in up.stdout, up.stdout
        xcon("wait", "--timeout", "30", run_dir=run, check=True)
        # the move, stopped in its copy, is rolled back as a restarted orchestrator does; bob stays
        # on ex2, and the message the move had deferred reaches him there
        assert xcon_json("user", "show", "bob", run_dir=run)["home_server"] == "ex2"
        assert [m["subject"] for m in xcon_json("mailbox", "bob", run_dir=run)["messages"]] == ["queued"]
        assert [m["subject"] for m in xcon_json("mailbox", "carol", run_dir=run)["messages"]] == ["before"]
        report = json.loads(xcon("check", "--json", run_dir=run).stdout)
        assert report["ok"] and report["counts"]["delivered"] == 2 and report["counts"]["lost"] == 0, report
        # what the resumed MTA appended is of today's form, after the records of the form before
        wal = (run / "mta" / "ex2" / "queue.wal").read_bytes()
        assert wal.index(b"\x93\xa1p") < wal.index(b"\x94\xa1R")  # its "p" record, then its retirement (R)
    finally:
        xcon("down", run_dir=run)
        assert node_processes(run) == {}
