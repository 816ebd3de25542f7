"""Issue 34: nothing vanishes at the organisation's edges. The IMS's queue keeps the MTA's
promise (each item relayed, or handed back for its report), whatever an outside address or the
smarthost does; its files are read by the damage rules of every record log."""

from __future__ import annotations

import json
import smtplib

import pytest

from orchestrator.cluster.rundir import node_processes
from orchestrator.lab.outside import Smarthost

from ..conftest import wait_for_event, xcon, xcon_json
from .test_cli_errors import one_line_error
from .test_nothing_vanishes import flip, refused_to_start
from .test_smtp import held_move, smtp_of


@pytest.fixture
def smarthost():
    """start(refuse): the campaigns' smarthost (orchestrator.lab.outside), up; down after the test."""
    made: list[Smarthost] = []

    def start(refuse: tuple[str, ...] = ()) -> tuple[Smarthost, str]:
        sink = Smarthost(list(refuse))
        sink.up()
        made.append(sink)
        return sink, sink.address

    yield start
    for sink in made:
        sink.down()


def send_over_smtp(run, server: str, sender: str, rcpt: str, subject: str) -> str:
    utf8 = not sender.isascii()
    with smtplib.SMTP(*smtp_of(run, server), timeout=30) as client:
        client.ehlo("outside.test")
        assert client.mail(sender, ["SMTPUTF8"] if utf8 else [])[0] == 250
        assert client.rcpt(rcpt)[0] == 250
        code, said = client.data(f"Subject: {subject}\r\n\r\nhello\r\n".encode())
    assert code == 250, said
    return said.decode().rsplit(" ", 1)[1]


def test_what_cannot_leave_goes_back_for_its_report_and_a_utf8_address_stops_nothing(smtp_cluster, smarthost):
    """Stories 1 and 2. sp4 fails bob's copy of two messages sent during his move: the DSN to
    jürgen (an address in UTF-8) leaves with SMTPUTF8, where smtplib once raised and ended the
    IMS's relay for good; the DSN to ann, which the smarthost refuses for good, goes to the
    postmaster, where it once stopped in failed/. alice's mail to an address the smarthost refuses
    comes back to her as an NDR."""
    sink, address = smarthost(refuse=("ann@outside.test", "zed@outside.test"))
    run = held_move(smtp_cluster, "--smarthost", address, "--mta-build", "sp4")
    xcon("user", "add", "alice", "--server", "ex2", run_dir=run, check=True)
    to_bob = [send_over_smtp(run, "ex2", sender, "bob@xcon.test", f"from {sender}")
              for sender in ("jürgen@outside.test", "ann@outside.test")]
    for msg in to_bob:
        wait_for_event(run, event="mta.deferred", msg_id=msg, rcpt="bob")
    out = xcon("send", "--from", "alice", "--to", "zed@outside.test", run_dir=run, check=True).stdout.strip()
    xcon("fault", "release", run_dir=run, check=True)
    assert xcon("wait", "--timeout", "60", run_dir=run).returncode == 0
    ((mail_from, rcpts, raw),) = sink.received
    assert (mail_from, rcpts) == ("<>", ["jürgen@outside.test"]) and f"X-Xcon-Ndr-For: {to_bob[0]}" in raw.decode()
    postmaster = xcon_json("mailbox", "postmaster", run_dir=run)["messages"]
    assert [(m["ndr_for"], m["failed"]) for m in postmaster] == [(to_bob[1], ["bob"])], postmaster
    alice = xcon_json("mailbox", "alice", run_dir=run)["messages"]
    assert [(m["ndr_for"], m["failed"]) for m in alice] == [(out, ["zed@outside.test"])], alice
    report = json.loads(xcon("check", "--json", run_dir=run).stdout)
    assert report["ok"], report
    assert (report["counts"]["ndr"], report["counts"]["postmaster"], report["counts"]["lost"]) == (2, 1, 0)
    handed = [json.loads(line) for line in xcon("logs", "--event", "ims.returned", "--json", run_dir=run,
                                               check=True).stdout.splitlines()]
    assert sorted(e["rcpt"] for e in handed) == ["ann@outside.test", "zed@outside.test"]
    assert all(e["reason"].startswith("refused: 550") for e in handed)


def test_with_no_smarthost_mail_for_outside_waits_pending_in_the_ims(smtp_cluster):
    """Story 2: with no smarthost a message for outside sat in outbound/ past its lifetime; check
    called it LOST and `xcon wait` exited 0. It is pending while it waits. Its lifetime is long
    here, so that no load on the machine closes the window; its coming back as an NDR when the
    lifetime passes is tests/sim/test_simulator.py's, on virtual time, and a hand-back on real
    processes is the test above's."""
    run = smtp_cluster("--mta-build", "sp4", "--expire-ms", "600000")
    xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
    msg = xcon("send", "--from", "alice", "--to", "dave@outside.test", run_dir=run, check=True).stdout.strip()
    wait_for_event(run, event="ims.queued_out", msg_id=msg)
    waiting = json.loads(xcon("check", "--json", run_dir=run).stdout)
    assert (waiting["counts"]["pending"], waiting["counts"]["lost"]) == (1, 0), waiting["counts"]
    assert xcon("wait", "--timeout", "0.5", run_dir=run).returncode == 1, "the IMS still holds it"
    held = xcon_json("queue", run_dir=run)["ims.ex1"]
    assert [(i["msg_id"], i["rcpt"], i["state"]) for i in held["items"]] == [(msg, "dave@outside.test", "relaying")]


def test_a_damaged_ims_file_is_kept_aside_named_and_judged(smtp_cluster, smarthost):
    """Stories 3 and 9: one flipped byte in an IMS outbound file stopped the whole cluster from
    starting with a msgpack traceback, even with --accept-damage, and check did not read it; one in
    its log of relays gave a false LOST, and `up` did not notice."""
    sink, address = smarthost()
    run = smtp_cluster("--mta-build", "sp4", "--smarthost", address)
    xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
    relayed = xcon("send", "--from", "alice", "--to", "dave@outside.test", run_dir=run, check=True).stdout.strip()
    wait_for_event(run, event="ims.relayed", msg_id=relayed)
    sink.down()  # the next waits in the IMS's queue
    waiting = xcon("send", "--from", "alice", "--to", "eve@outside.test", run_dir=run, check=True).stdout.strip()
    wait_for_event(run, event="ims.relay_deferred", msg_id=waiting)
    xcon("down", run_dir=run, check=True)
    ims = run / "ims" / "ex1"
    (item,) = (ims / "outbound").glob("*.msg")
    flip(item, len(item.read_bytes()) - 5)  # in the message's bytes: msgpack still reads it, the checksum not
    log = ims / "log.jsonl"
    flip(log, log.read_bytes().index(b'"smarthost"') + 16)  # its line's id still reads
    one_line_error(xcon("check", run_dir=run), 3, "no verdict", "ims/ex1/outbound/", "ims/ex1/log.jsonl")
    refused_to_start(xcon("up", run_dir=run), "ims/ex1/outbound/", "--accept-damage")
    assert not node_processes(run)
    up = xcon("up", "--accept-damage", run_dir=run, check=True)
    assert "damage accepted: ims.ex1" in up.stdout, up.stdout
    assert list((ims / "outbound").glob("*.msg.damaged-*")) and list(ims.glob("log.jsonl.damaged-*"))
    damaged = wait_for_event(run, event="storage.damaged", node="ims.ex1")
    assert set(damaged["lost"]) == {waiting, relayed}, "named by what their damaged bytes still show"
    proc = xcon("check", "--json", run_dir=run)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and {(v["msg_id"], v["outcome"]) for v in report["violations"]} == \
        {(waiting, "damaged"), (relayed, "damaged")}, report["violations"]
    # the same damage found by a node restarted alone: `xcon restart` says so, as `up` does
    later = xcon("send", "--from", "alice", "--to", "fay@outside.test", run_dir=run, check=True).stdout.strip()
    wait_for_event(run, event="ims.relay_deferred", msg_id=later)
    xcon("kill", "ims.ex1", run_dir=run, check=True)
    (item,) = (ims / "outbound").glob("*.msg")
    flip(item, len(item.read_bytes()) - 5)
    restarted = " ".join(xcon("restart", "ims.ex1", run_dir=run, check=True).stdout.split())  # prose, broken
    assert "damage accepted: ims.ex1" in restarted and f"1 lost or left alone: {later}" in restarted, restarted
    xcon("kill", "ims.ex1", run_dir=run, check=True)
    again = xcon("restart", "ims.ex1", run_dir=run, check=True).stdout
    assert again.strip() == "restarted ims.ex1", "the damage of this restart only, not its log's older lines"
