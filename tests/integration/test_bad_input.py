"""Bad input and bad luck end in one clear line and a non-zero exit: never a traceback, an
'internal error', a long wait, or a changed cluster."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from nodes.config import ClusterConfig
from orchestrator.cluster.client import Client
from protocol import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

from ..conftest import xcon, xcon_json
from .test_cli_errors import one_line_error

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes on a UTF-8 command line


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad") / "run"
    xcon("up", "--mta-build", "sp4", "--replication-lag-ms", "0", "--replication-jitter-ms", "0", run_dir=run,
         check=True)
    xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
    xcon("user", "add", "bob", "--server", "ex2", run_dir=run, check=True)
    yield run
    xcon("down", run_dir=run)


def test_text_that_is_not_utf8(run, tmp_path):
    for args in (["--subject", NOT_UTF8], ["--body", NOT_UTF8], ["--to", NOT_UTF8]):
        one_line_error(xcon("send", "--from", "alice", "--to", "bob", *args, run_dir=run), 2, "not valid UTF-8")
    one_line_error(xcon("user", "show", NOT_UTF8, run_dir=run), 2, "not valid UTF-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9\n")
    one_line_error(xcon("send", "--from", "alice", "--to", "bob", "--body-file", str(latin1), run_dir=run), 2,
                   "not UTF-8 text")
    one_line_error(xcon("send", "--from", "alice", "--to", "bob", "--body", "-", input=b"\xff\xfe", run_dir=run), 2,
                   "standard input is not UTF-8")
    assert xcon_json("status", run_dir=run)["nodes"]["mta.ex1"]["status"]["messages"] == 0


def test_bodies_from_a_file_and_from_standard_input(run, tmp_path):
    text = "line one\n" + "ü" * 200_000 + "\nthe end\n"  # longer than a command line may be
    body = tmp_path / "body.txt"
    body.write_text(text, encoding="utf-8")
    from_file = xcon("send", "--from", "alice", "--to", "bob", "--body-file", str(body), run_dir=run,
                     check=True).stdout.strip()
    from_stdin = xcon("send", "--from", "alice", "--to", "bob", "--body", "-", input="piped body\n", run_dir=run,
                      check=True).stdout.strip()
    xcon("wait", run_dir=run, check=True)
    raw = {p.name.split(".", 1)[1].rsplit(".", 1)[0]: p.read_bytes() for p in (run / "stores/ex2/bob/new").iterdir()}
    assert text.encode() in raw[from_file]
    assert b"piped body" in raw[from_stdin]
    one_line_error(xcon("send", "--from", "alice", "--to", "bob", "--body", "x", "--body-file", str(body),
                        run_dir=run), 2, "not both")


def test_a_message_too_big_for_any_store_is_refused_at_once(run, tmp_path):
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"x" * (MAX_MESSAGE_BYTES + 1))
    t0 = time.time()
    one_line_error(xcon("send", "--from", "alice", "--to", "bob", "--body-file", str(huge), run_dir=run), 2,
                   "the most a message can hold")
    # a body the command line lets through, which the headers push over the limit: the MTA says no
    huge.write_bytes(b"x" * (MAX_MESSAGE_BYTES - 10))
    one_line_error(xcon("send", "--from", "alice", "--to", "bob", "--body-file", str(huge), run_dir=run), 2,
                   "over the limit")
    # a frame over the frame limit, from a client that does not check: its error reply names it
    with Client(ClusterConfig.load(run), timeout=30) as client:
        sent = time.time()
        reply = client.ask("mta.ex1", "mta.submit", {"msg_id": None, "sender": "alice", "recipients": ["bob"],
                                                     "subject": "", "body": "y" * MAX_FRAME_BYTES, "priority": None})
        assert reply.type == "error" and "over the limit" in reply.body.reason
        assert time.time() - sent < 5, "answered, not left to time out"
    assert time.time() - t0 < 30
    assert xcon_json("status", run_dir=run)["nodes"]["mta.ex1"]["status"]["messages"] == 0


def test_names_with_a_trailing_newline_and_restarting_a_running_node(run):
    one_line_error(xcon("user", "add", "carol\n", "--server", "ex1", run_dir=run), 2, "not a valid alias")
    one_line_error(xcon("user", "show", "bob\n", run_dir=run), 2, "unknown user")
    for viewer, bad in (("show", ""), ("trace", "<m1@client.test>"), ("show", "m1\n")):
        one_line_error(xcon(viewer, bad, run_dir=run), 2, "is not a message id")  # not "found nowhere"
    assert xcon_json("status", run_dir=run)["nodes"]["directory"]["status"]["recipients"] == 2
    pid = xcon_json("status", run_dir=run)["nodes"]["mta.ex1"]["pid"]
    one_line_error(xcon("restart", "mta.ex1", run_dir=run), 2, "mta.ex1 is running", str(pid))
    assert xcon_json("status", run_dir=run)["nodes"]["mta.ex1"]["pid"] == pid


def test_paths_that_cannot_be_written(run, tmp_path):
    one_line_error(xcon("logs", "--export", "perfetto", "/nonexistent/dir/p.json", run_dir=run), 3,
                   "No such file or directory", "/nonexistent/dir/p.json")
    msg = xcon("send", "--from", "alice", "--to", "bob", run_dir=run, check=True).stdout.strip()
    one_line_error(xcon("trace", msg, "--svg", "/nonexistent/t.svg", run_dir=run), 3, "No such file or directory")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (not root?)")
    try:
        one_line_error(xcon("up", run_dir=ro / "run"), 3, "Read-only file system")
        one_line_error(xcon("chaos", "--trials", "1", "--report", str(ro / "report"), run_dir=ro), 3,
                       "Read-only file system")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_an_alias_that_names_a_file_of_the_store_is_a_mailbox_like_any_other(run):
    """Story 6 of issue 19: `xcon user add locks.json` made the store's own state file a mailbox
    folder, and the store died (NotADirectoryError)."""
    xcon("user", "add", "locks.json", "--server", "ex1", run_dir=run, check=True)
    msg = xcon("send", "--from", "alice", "--to", "locks.json", run_dir=run, check=True).stdout.strip()
    xcon("wait", run_dir=run, check=True)
    assert [m["msg_id"] for m in xcon_json("mailbox", "locks.json", run_dir=run)["messages"]] == [msg]
    assert xcon_json("status", run_dir=run)["nodes"]["store.ex1"]["alive"]
    one_line_error(xcon("user", "add", "postmaster", "--server", "ex1", run_dir=run), 2, "reserved")


def test_a_body_file_without_an_end_is_read_to_the_limit_and_no_further(run):
    """Story 6: `xcon send --body-file /dev/zero` read without limit (3.2 GB in 6 s)."""
    t0 = time.time()
    proc = xcon("send", "--from", "alice", "--to", "bob", "--body-file", "/dev/zero", run_dir=run)
    one_line_error(proc, 2, f"over {MAX_MESSAGE_BYTES:,} bytes")
    assert time.time() - t0 < 30


def test_a_send_that_times_out_says_the_message_may_be_accepted_and_a_resend_with_its_id_is_safe(run):
    """Story 7: a timed-out `xcon send` did not say that the message may have been accepted, and so
    invited a resend that delivered it twice. The MTA is paused (a timing window of xcon's own)."""
    from orchestrator.cluster import Cluster
    from orchestrator.cluster.client import NoAnswer

    from ..conftest import wait_for_event

    xcon("fault", "pause", "mta.ex1", "--seconds", "4", run_dir=run, check=True)
    cluster = Cluster.attach(run)
    try:
        with pytest.raises(NoAnswer, match=r"may have been accepted .*same message id \(resend-1\)"):
            cluster.send("alice", ["bob"], msg_id="resend-1", timeout=0.3)
        wait_for_event(run, event="fault.resumed", target="mta.ex1")
        assert cluster.send("alice", ["bob"], msg_id="resend-1")["msg_id"] == "resend-1"
    finally:
        cluster.close()
    xcon("wait", run_dir=run, check=True)
    held = [m["msg_id"] for m in xcon_json("mailbox", "bob", run_dir=run)["messages"]]
    assert held.count("resend-1") == 1
    one_line_error(xcon("send", "--from", "alice", "--to", "bob", "--msg-id", "a~b", run_dir=run), 2, "--msg-id")
