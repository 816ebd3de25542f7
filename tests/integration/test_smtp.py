"""Issue 21: mail from outside the organisation, through each server's Internet Mail Service
(SMTP, nodes.ims), during Move User; and the DSN back out to a smarthost, an SMTP server of the
outside world (aiosmtpd's, in this process). The KB's story told through real protocols:
legacy loses the outside sender's message for bob and tells nobody (no DSN reaches the
smarthost); sp4 sends the DSN; reroute delivers."""

from __future__ import annotations

import email
import json
import smtplib
import threading
import uuid
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from orchestrator.cluster.rundir import free_ports

from ..conftest import wait_for_event, xcon, xcon_json


class Outside:
    """The outside world's mail server: what reached it, and an event per message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        self.arrived.set()
        return "250 2.0.0 OK"


@pytest.fixture
def outside():
    sink = Outside()
    controller = Controller(sink, hostname="127.0.0.1", port=free_ports(1)[0])
    controller.start()
    try:
        yield sink, f"127.0.0.1:{controller.port}"
    finally:
        controller.stop()


def with_alice(start, *flags: str) -> Path:
    """A cluster of `start` (the smtp_cluster fixture) with alice on ex1."""
    run = start(*flags)
    xcon("user", "add", "alice", "--server", "ex1", run_dir=run, check=True)
    return run


def held_move(start, *flags: str) -> Path:
    """The KB's set-up, for mail from outside: carol, and bob (carol his alternate, deliver to
    both) on ex1, a 1.5 s replication lag, and bob's move to ex2 held in its copy step, his
    mailbox locked."""
    run = start(*flags, lag_ms=1500)
    xcon("user", "add", "carol", "--server", "ex1", run_dir=run, check=True)
    xcon("user", "add", "bob", "--server", "ex1", "--alternate", "carol", "--deliver-to-both", run_dir=run, check=True)
    xcon("fault", "hold-at-step", "--step", "copy", run_dir=run, check=True)  # bob's mailbox stays locked
    xcon("move", "bob", "--to", "ex2", "--no-wait", run_dir=run, check=True)
    wait_for_event(run, event="move.step", step="copy")
    return run


def smtp_of(run: Path, server: str) -> tuple[str, int]:
    host, port = json.loads((run / "cluster.json").read_text())["nodes"][f"ims.{server}"]["endpoints"]["smtp"].split(":")
    return host, int(port)


def submit(run: Path, server: str, sender: str, rcpts: list[str], subject: str) -> str:
    """One message over SMTP, as any client sends it; the IMS's id from its 250."""
    raw = (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nMessage-ID: <{uuid.uuid4().hex}@outside.test>\r\n"
           f"Subject: {subject}\r\n\r\nfrom outside\r\n")
    with smtplib.SMTP(*smtp_of(run, server), timeout=30) as client:
        client.ehlo("outside.test")
        client.mail(sender)
        for rcpt in rcpts:
            code, said = client.rcpt(rcpt)
            assert code == 250, (rcpt, code, said)
        code, said = client.data(raw.encode())
    assert code == 250, said
    return said.decode().rsplit(" ", 1)[1]


@pytest.mark.parametrize("build", ["legacy", "sp4", "reroute"])
def test_the_kb_through_smtp_an_outside_sender_hears_as_the_build_says(smtp_cluster, outside, build):
    sink, smarthost = outside
    run = held_move(smtp_cluster, "--smarthost", smarthost, "--mta-build", build)
    msg = submit(run, "ex2", "ann@outside.test", ["bob@xcon.test"], "during the move")
    wait_for_event(run, event="mta.deferred", msg_id=msg, rcpt="bob")  # locked: tried again later
    xcon("fault", "release", run_dir=run, check=True)
    xcon("wait", run_dir=run, check=True)
    carol = {m["msg_id"] for m in xcon_json("mailbox", "carol", run_dir=run)["messages"]}
    bob = {m["msg_id"] for m in xcon_json("mailbox", "bob", run_dir=run)["messages"]}
    check = xcon("check", "--json", run_dir=run)
    verdict = json.loads(check.stdout)
    assert msg in carol, "the alternate has it in every build"
    if build == "legacy":  # the KB: lost, and the outside sender hears nothing
        assert msg not in bob and sink.messages == []
        assert check.returncode == 1 and verdict["counts"]["lost"] == 1
    elif build == "sp4":  # the fix: an RFC 3464 DSN to the outside sender, from the null sender
        sink.arrived.wait(30)
        ((mail_from, rcpts, raw),) = sink.messages
        report = email.message_from_bytes(raw)
        assert (mail_from, rcpts) == ("<>", ["ann@outside.test"])  # the null reverse-path
        assert report.get_content_type() == "multipart/report" and report.get_param("report-type") == "delivery-status"
        status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
        assert "Action: failed" in status.as_string() and "bob@xcon.test" in status.as_string()
        assert check.returncode == 0 and verdict["counts"]["ndr"] == 1, verdict
    else:  # reroute: bob has it on ex2
        assert msg in bob and sink.messages == []
        assert check.returncode == 0 and verdict["counts"]["delivered"] == 2, verdict


def test_smtp_answers_unknown_users_outside_domains_and_bad_commands_and_mail_leaves_for_outside(smtp_cluster, outside):
    sink, smarthost = outside
    run = with_alice(smtp_cluster, "--smarthost", smarthost)
    with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=30) as client:
        code, features = client.ehlo("outside.test")
        assert code == 250 and b"DSN" in features
        client.mail("ann@outside.test", ["RET=HDRS", "ENVID=abc"])
        assert client.rcpt("nobody@xcon.test")[0] == 550, "unknown user: 550 5.1.1"
        assert client.rcpt("someone@elsewhere.test")[0] == 550, "no relaying for other domains"
        assert client.rcpt("alice@xcon.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;alice@xcon.test"])[0] == 250
        assert client.docmd("FROBNICATE")[0] == 500
        code, said = client.data(b"Subject: hi\r\nX-Priority: 5\r\n\r\nhello\r\n")
        assert code == 250
        the_door_is_closed(client, features)
    msg = said.decode().rsplit(" ", 1)[1]
    xcon("wait", run_dir=run, check=True)
    shown = xcon_json("show", msg, run_dir=run)
    headers = dict((k, v) for k, v in shown["message"]["headers"])
    assert headers["X-Xcon-DSN"] == "RET=HDRS ENVID=abc"
    assert headers["X-Xcon-DSN-Rcpt"] == "alice NOTIFY=FAILURE ORCPT=rfc822;alice@xcon.test"
    assert "X-Injected" not in headers and all("\r" not in v for v in headers.values())
    accepted = [json.loads(line) for line in xcon("logs", "--msg", msg, "--event", "mta.accepted", "--json",
                                                    run_dir=run, check=True).stdout.splitlines()]
    assert accepted and accepted[0]["sender"] == "ann@outside.test"
    # mail from inside to an outside address leaves through the IMS to the smarthost
    out = xcon("send", "--from", "alice", "--to", "dave@outside.test", "--subject", "out", run_dir=run,
               check=True).stdout.strip()
    xcon("wait", run_dir=run, check=True)
    ((mail_from, rcpts, raw),) = sink.messages
    assert (mail_from, rcpts) == ("alice@xcon.test", ["dave@outside.test"]) and f"X-Xcon-Msg-Id: {out}" in raw.decode()
    assert xcon("check", run_dir=run).returncode == 0
    status = xcon_json("status", run_dir=run)["nodes"]["ims.ex1"]["status"]
    assert (status["accepted"], status["relayed"], status["outbound"]) == (2, 1, 0)  # hi, and the SIZE test's


def the_door_is_closed(client: smtplib.SMTP, features: bytes) -> None:
    """Issue 34, stories 13 to 16, on a server without --smtp-auth: no AUTH offered or taken; an
    EHLO argument that would break a header refused; RFC 3461's parameters checked, each once;
    SIZE what the server takes with its own headers, 552 5.3.4 above it."""
    assert b"AUTH" not in features, "no AUTH without --smtp-auth"
    assert client.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNl")[0] == 502
    client.send(b"EHLO foo\rX-Injected: yes\r\n")  # as a client that does not check its words sends it
    assert client.getreply()[0] == 501, "a bare CR never reaches the Received header"
    assert client.docmd("HELO", "foo\x07bar")[0] == 501
    client.ehlo("outside.test")
    for params in (b"ENVID=caf\xc3\xa9", b"ENVID=\xff\xfe", b"ENVID=a ENVID=b", b"RET=FULL RET=HDRS", b"RET=SOME"):
        client.send(b"MAIL FROM:<ann@outside.test> " + params + b"\r\n")  # not xtext, or given twice
        assert client.getreply()[0] == 501, params
        client.rset()
    client.mail("ann@outside.test")
    for params in (["NOTIFY=GARBAGE"], ["NOTIFY=NEVER,FAILURE"], ["NOTIFY=FAILURE", "NOTIFY=DELAY"],
                   ["ORCPT=alice@xcon.test"], ["NOTIFY=FAILURE,FAILURE"]):
        assert client.docmd("RCPT", f"TO:<alice@xcon.test> {' '.join(params)}")[0] == 501, params
    assert client.rcpt("alice@xcon.test", ["NOTIFY=DELAY,FAILURE"])[0] == 250
    size = int(client.esmtp_features["size"])
    body = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    just_under = body * (size // len(body)) + b"y" * (size % len(body) - 2) + b"\r\n"
    assert len(just_under) == size
    code, said = client.data(just_under)
    assert code == 250, f"a message of SIZE bytes is taken with the headers added: {code} {said}"
    client.mail("ann@outside.test")
    client.rcpt("alice@xcon.test")
    code, said = client.data(just_under + b"z\r\n")
    assert (code, said[:5]) == (552, b"5.3.4"), said


def test_what_a_client_was_told_was_accepted_is_never_lost_and_a_resend_arrives_once(smtp_cluster):
    run = with_alice(smtp_cluster)
    # told 250, then the MTA is killed: alice's store is paused, so the message is only in the
    # MTA's queue log when it dies; the restarted MTA delivers it
    xcon("fault", "pause", "store.ex1", "--seconds", "600", run_dir=run, check=True)
    first = submit(run, "ex1", "ann@outside.test", ["alice@xcon.test"], "told 250")
    xcon("kill", "mta.ex1", run_dir=run, check=True)
    xcon("restart", "mta.ex1", run_dir=run, check=True)
    xcon("fault", "clear", run_dir=run, check=True)
    # the MTA does not answer in time (paused): 451, so the client keeps the message and sends
    # it again; the MTA took the first try after all, and takes the resend once
    raw = b"From: ann@outside.test\r\nMessage-ID: <twice@outside.test>\r\nSubject: sent twice\r\n\r\nhello\r\n"
    with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=60) as client:
        client.ehlo("outside.test")
        client.mail("ann@outside.test")
        assert client.rcpt("alice@xcon.test")[0] == 250
        xcon("fault", "pause", "mta.ex1", "--seconds", "600", run_dir=run, check=True)
        code, said = client.data(raw)
    assert code == 451, said
    xcon("fault", "clear", run_dir=run, check=True)
    with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=60) as client:
        client.ehlo("outside.test")
        client.mail("ann@outside.test")
        client.rcpt("alice@xcon.test")
        code, said = client.data(raw)
    assert code == 250, said
    second = said.decode().rsplit(" ", 1)[1]
    accepted = [json.loads(line).get("repeated", False) for line in xcon(
        "logs", "--msg", second, "--event", "mta.accepted", "--json", run_dir=run, check=True).stdout.splitlines()]
    assert accepted == [False, True], "the try that got 451 was taken when the MTA woke; the resend was known"
    xcon("wait", run_dir=run, check=True)
    box = [m["msg_id"] for m in xcon_json("mailbox", "alice", run_dir=run)["messages"]]
    assert sorted(box) == sorted([first, second]), box
    assert xcon("check", run_dir=run).returncode == 0


@pytest.mark.long
def test_a_campaign_over_smtp_with_an_ims_killed_mid_session_loses_nothing_a_client_was_told(tmp_path):
    """xcon chaos --via smtp: every message goes over SMTP to its sender's IMS. Trial seed
    2035525363 (with --faults kill,pause) kills ims.ex1 0.71 s in, while mail is sent to it."""
    from orchestrator.lab.worlds import draw_world

    seed = 2035525363
    world = draw_world(seed, "sp4", ("kill", "pause"), via="smtp")
    assert "ims.ex1" in [e["node"] for e in world.events if e.get("kind") == "kill"], "the world this test is about"
    proc = xcon("chaos", "--via", "smtp", "--replay", str(seed), "--faults", "kill,pause", "--json", run_dir=tmp_path,
                timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (trial,) = json.loads(proc.stdout)["trials"]
    assert trial["told"] and not trial["broken"] and not trial["error"], trial
    # each SMTP send was told 250 or not; mail for outside goes to the MTA (the IMS relays for no one)
    to_outside = sum(1 for e in world.events if e["do"] == "send" and any("@" in r for r in e["to"]))
    assert trial["messages"] == len(trial["told"]) + trial["refused"] + to_outside, "each send was told 250 or not"


def test_a_message_told_250_that_no_mta_accepted_is_lost():
    from orchestrator.lab.smtp_client import told_but_not_accepted

    events = [{"event": "mta.accepted", "msg_id": "smtp-a"}, {"event": "store.delivered", "msg_id": "smtp-b"}]
    (lost,) = told_but_not_accepted(["smtp-a", "smtp-b"], events)
    assert (lost["msg_id"], lost["outcome"]) == ("smtp-b", "lost")


def test_starttls_with_the_certificate_made_at_up_and_auth_plain_for_the_organisations_senders(smtp_cluster):
    import ssl

    run = with_alice(smtp_cluster, "--smtp-tls", "--smtp-auth")
    trusted = ssl.create_default_context(cafile=str(run / "keys" / "ims.crt"))
    with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=30) as client:
        assert b"STARTTLS" in client.ehlo()[1] and b"AUTH" not in client.ehlo()[1], "AUTH only over TLS"
        assert client.mail("alice@xcon.test")[0] == 530, "no one sends as alice without her password"
        client.rset()
        assert client.mail("alice")[0] == 530, "nor as alice without a domain (issue 34, story 13)"
        client.rset()
        client.starttls(context=trusted)  # the certificate verifies against the file up made
        client.ehlo()
        for login in ("nosuchuser", "postmaster", "alice"):  # only the directory's users, by their own password
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login(login, login if login != "alice" else "not alice")
            client.ehlo()
        client.login("alice", "alice")
        assert client.mail("bob@xcon.test")[0] == 530, "alice sends as alice only"
        client.rset()
        assert client.mail("alice")[0] == 250
        client.rset()
        client.mail("alice@xcon.test")
        client.rcpt("alice@xcon.test")
        code, said = client.data(b"Subject: over TLS\r\n\r\nhi\r\n")
    assert code == 250
    with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=30) as client:  # mail from outside needs no AUTH
        client.ehlo("outside.test")
        assert client.mail("ann@outside.test")[0] == 250 and client.rcpt("alice@xcon.test")[0] == 250
    xcon("wait", run_dir=run, check=True)
    subjects = [m["subject"] for m in xcon_json("mailbox", "alice", run_dir=run)["messages"]]
    assert subjects == ["over TLS"]


def test_rfc_3461_a_sender_who_asked_for_no_report_gets_none_and_one_who_gave_envid_and_orcpt_gets_them_back(
        smtp_cluster, outside):
    """sp4 fails bob's copy of two messages sent during his move: ann asked NOTIFY=NEVER for the
    first (no DSN; check counts it declined, not lost), and ENVID, ORCPT and RET=FULL for the
    second (its DSN carries Original-Envelope-Id, Original-Recipient and the whole message)."""
    sink, smarthost = outside
    run = held_move(smtp_cluster, "--smarthost", smarthost, "--mta-build", "sp4")
    ids = []
    for subject, mail_options, rcpt_options in (
            ("never", [], ["NOTIFY=NEVER"]),
            ("tell me", ["RET=FULL", "ENVID=env-42"], ["NOTIFY=FAILURE", "ORCPT=rfc822;bob@example.org"])):
        with smtplib.SMTP(*smtp_of(run, "ex2"), timeout=30) as client:
            client.ehlo("outside.test")
            client.mail("ann@outside.test", mail_options)
            assert client.rcpt("bob@xcon.test", rcpt_options)[0] == 250
            code, said = client.data(f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode())
        ids.append(said.decode().rsplit(" ", 1)[1])
    for msg in ids:
        wait_for_event(run, event="mta.deferred", msg_id=msg, rcpt="bob")
    xcon("fault", "release", run_dir=run, check=True)
    xcon("wait", run_dir=run, check=True)
    assert sink.arrived.wait(30)
    ((mail_from, rcpts, raw),) = sink.messages  # one DSN: the one asked for
    text = raw.decode()
    assert f"X-Xcon-Ndr-For: {ids[1]}" in text and "Original-Envelope-Id: env-42" in text
    assert "Original-Recipient: rfc822;bob@example.org" in text and "body of tell me" in text, "RET=FULL"
    declined = json.loads(xcon("logs", "--msg", ids[0], "--event", "mta.failed", "--json", run_dir=run,
                               check=True).stdout.splitlines()[0])
    assert (declined["report"], declined["notify"]) == ("none", ["NEVER"])
    check = xcon("check", "--json", run_dir=run)
    counts = json.loads(check.stdout)["counts"]
    assert check.returncode == 0 and (counts["declined"], counts["ndr"], counts["lost"]) == (1, 1, 0), counts


def test_a_session_cut_before_its_250_leaves_the_client_to_send_again_and_the_message_arrives_once(smtp_cluster):
    """xcon fault smtp: the IMS drops the connection after its MTA took the message, before the
    250: the client does not know it was accepted, sends it again, and alice has it once."""
    run = with_alice(smtp_cluster)
    xcon("fault", "smtp", "ims.ex1", "--probability", "1", "--delay-ms", "50", "--seconds", "600", run_dir=run,
         check=True)
    (row,) = xcon_json("fault", "list", run_dir=run)
    assert (row["where"], row["kind"]) == ("ims.ex1", "smtp") and "chance 1" in row["what"]
    raw = b"From: ann@outside.test\r\nMessage-ID: <cut@outside.test>\r\nSubject: cut\r\n\r\nhello\r\n"
    with pytest.raises(smtplib.SMTPServerDisconnected):
        with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=30) as client:
            client.sendmail("ann@outside.test", ["alice@xcon.test"], raw)
    cut = wait_for_event(run, node="ims.ex1", event="ims.cut")
    xcon("fault", "clear", run_dir=run, check=True)
    assert xcon_json("fault", "list", run_dir=run) == []
    with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=30) as client:
        client.sendmail("ann@outside.test", ["alice@xcon.test"], raw)
    xcon("wait", run_dir=run, check=True)
    box = [m["msg_id"] for m in xcon_json("mailbox", "alice", run_dir=run)["messages"]]
    assert box == [cut["msg_id"]], "taken at the first try, once"
    assert xcon("check", run_dir=run).returncode == 0


def test_two_messages_of_the_same_bytes_without_a_message_id_are_two_messages(smtp_cluster):
    run = with_alice(smtp_cluster)
    for _ in range(2):
        with smtplib.SMTP(*smtp_of(run, "ex1"), timeout=30) as client:
            client.sendmail("ann@outside.test", ["alice@xcon.test"], b"Subject: same\r\n\r\nsame\r\n")
    xcon("wait", run_dir=run, check=True)
    assert len({m["msg_id"] for m in xcon_json("mailbox", "alice", run_dir=run)["messages"]}) == 2
