"""Issue 21: IMAP4 through Debian's Dovecot over the stores' Maildirs (xcon up --imap), and the
README's KB told with standard tools only (swaks sends over SMTP, curl reads over IMAP)."""

from __future__ import annotations

import imaplib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .. import docblocks
from ..conftest import wait_for_event, xcon, xcon_json
from .test_smtp import submit

DOVECOT = Path("/usr/sbin/dovecot").exists()
needs_dovecot = pytest.mark.skipif(not DOVECOT, reason="Debian's dovecot-imapd is not installed (.ci/run installs it)")


def imap_of(run: Path, server: str) -> imaplib.IMAP4:
    host, port = xcon("endpoint", f"imap.{server}", run_dir=run, check=True).stdout.strip().split(":")
    return imaplib.IMAP4(host, int(port), timeout=30)


def subjects(run: Path, server: str, user: str) -> list[str]:
    with imap_of(run, server) as client:
        client.login(user, user)
        client.select("INBOX")
        _, found = client.search(None, "ALL")
        out = []
        for num in found[0].split():
            _, data = client.fetch(num, "(BODY[HEADER.FIELDS (SUBJECT)])")
            out.append(data[0][1].decode().split(":", 1)[1].strip())
        return out


@pytest.mark.long
def test_the_readme_kb_with_standard_tools_loses_bobs_copy_and_tells_nobody(tmp_path):
    missing = [tool for tool in ("swaks", "curl") if shutil.which(tool) is None] + ([] if DOVECOT else ["dovecot"])
    if missing:
        pytest.skip(f"needs Debian's {', '.join(missing)} (.ci/run installs them)")
    lines = docblocks.commands("README.md", "standard-tools")
    try:
        ran, proc = docblocks.run(lines, tmp_path)
    finally:
        xcon("down", run_dir=tmp_path / ".xcon")
    failed = [(c, rc) for c, _, rc in ran if rc != 0 and c != "xcon check"]
    assert not failed and len(ran) == len(lines), f"{failed}\n{proc.stdout}\n{proc.stderr}"
    printed = {c: (out, rc) for c, out, rc in ran}
    carol, bob = (next(out for c, (out, _) in printed.items() if f"{who}:{who}" in c) for who in ("carol", "bob"))
    assert (carol.strip(), bob.strip()) == ("* SEARCH 1", "* SEARCH"), (carol, bob)
    check, rc = printed["xcon check"]
    assert rc == 1 and "LOST smtp-" in check and "-> bob, from ann@outside.test" in check, check


@pytest.mark.long
@needs_dovecot
@pytest.mark.skipif(not shutil.which("mbsync"), reason="Debian's isync (mbsync, the IMAP client that reads the "
                    "moved mailbox back) is not installed (.ci/run installs it)")
def test_imap_follows_the_directory_and_dovecots_flags_confuse_neither_a_move_nor_check(tmp_path):
    run = tmp_path / "run"
    xcon("up", "--fresh", "--smtp", "--imap", "--mta-build", "reroute", "--replication-lag-ms", "1000",
         "--replication-jitter-ms", "0", run_dir=run, check=True)
    try:
        xcon("user", "add", "carol", "--server", "ex1", run_dir=run, check=True)
        xcon("user", "add", "bob", "--server", "ex1", "--alternate", "carol", "--deliver-to-both", run_dir=run,
             check=True)
        wait_for_event(run, node="imap.ex1", event="imap.users", users=["bob", "carol"])
        submit(run, "ex1", "ann@outside.test", ["bob@xcon.test"], "before the move")
        filed, gone = (submit(run, "ex1", "ann@outside.test", ["bob@xcon.test"], s) for s in ("to file", "to expunge"))
        xcon("wait", run_dir=run, check=True)
        # bob keeps his mail as an IMAP user does (issue 34, stories 4 and 11): a folder of his
        # own, a message moved into it, a flag set, a message expunged
        with imap_of(run, "ex1") as client:
            client.login("bob", "bob")
            assert client.create("Archive")[0] == "OK"
            client.select("INBOX")
            number = {subject: num for num, subject in numbered(client)}
            assert client.copy(number["to file"], "Archive")[0] == "OK"
            client.store(number["to file"], "+FLAGS", "\\Deleted")
            client.store(number["to expunge"], "+FLAGS", "\\Deleted")
            client.store(number["before the move"], "+FLAGS", "\\Flagged")
            client.expunge()
        # read over IMAP: Dovecot moves the message from new/ to cur/NAME:2,FLAGS
        assert subjects(run, "ex1", "bob") == ["before the move"]
        assert [p.name.split(":")[1] for p in (run / "stores/ex1/bob/cur").iterdir()] == ["2,FS"]
        xcon("fault", "hold-at-step", "--step", "copy", run_dir=run, check=True)
        session = imap_of(run, "ex1")
        session.login("bob", "bob")
        session.select("INBOX")
        xcon("move", "bob", "--to", "ex2", "--no-wait", run_dir=run, check=True)
        wait_for_event(run, event="move.step", step="copy")
        # the mailbox being moved is no longer its user's to change: his session was ended before
        # the copy began, and no login is taken until the move is over
        assert wait_for_event(run, node="imap.ex1", event="imap.held", user="bob")["sessions_ended"]
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            session.noop()
        with imap_of(run, "ex1") as again, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            again.login("bob", "bob")
        during = submit(run, "ex2", "ann@outside.test", ["bob@xcon.test"], "during the move")
        wait_for_event(run, event="mta.deferred", msg_id=during, rcpt="bob")
        xcon("fault", "release", run_dir=run, check=True)
        xcon("wait", run_dir=run, check=True)
        wait_for_event(run, node="imap.ex2", event="imap.users", users=["bob"])
        # reroute delivered the message during the move; the one read before moved with the mailbox
        assert sorted(subjects(run, "ex2", "bob")) == ["before the move", "during the move"]
        with imap_of(run, "ex1") as old, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            old.login("bob", "bob")  # his old server no longer serves him
        assert sorted(subjects(run, "ex1", "carol")) == ["before the move", "during the move", "to expunge",
                                                          "to file"]
        # the whole mailbox moved: his folder, what he filed in it, his flags, read back by a
        # real IMAP client (a move once deleted .Archive with the old mailbox, and dropped flags)
        pulled = mbsync_pull(run, "ex2", "bob", tmp_path / "bob")
        # (subjects() above read both INBOX messages, which set \Seen; "to file" was never read)
        assert pulled == {"INBOX": [("before the move", "FS"), ("during the move", "S")],
                          "Archive": [("to file", "")]}, pulled
        check = json.loads(xcon("check", "--json", run_dir=run).stdout)
        assert check["ok"], check
        assert sorted((a["msg_id"], a["act"].split(" over")[0].split(" in their")[0]) for a in check["by_users"]) == \
            sorted([(filed, "filed by bob"), (gone, "expunged by bob")]), "his own acts, not losses"
        status = xcon_json("status", run_dir=run)["nodes"]
        assert status["imap.ex2"]["status"]["users"] == ["bob"] and status["imap.ex1"]["status"]["dovecot_alive"]
    finally:
        xcon("down", run_dir=run)
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _dovecot_of(p, run)], "Dovecot ended"


@needs_dovecot
def test_a_wait_ends_with_a_moved_user_let_in_on_the_new_server_however_late_imap_hears_the_directory(tmp_path):
    """An IMAP server follows the directory every half second, and Dovecot reads its users a
    second later at most: `xcon wait` returned before that, and the README's next step, bob's
    login on his new server, was refused (once in a loaded suite). Here its link to the directory
    is slowed, so that without the wait's question (imap.sync) the login is refused every time."""
    run = tmp_path / "run"
    xcon("up", "--fresh", "--smtp", "--imap", run_dir=run, check=True)
    try:
        xcon("user", "add", "bob", "--server", "ex1", run_dir=run, check=True)
        xcon("fault", "delay", "imap.ex2", "--peer", "directory", "--delay-ms", "1500", "--seconds", "120",
             run_dir=run, check=True)
        xcon("move", "bob", "--to", "ex2", run_dir=run, check=True)
        xcon("wait", run_dir=run, check=True)
        with imap_of(run, "ex2") as new:
            assert new.login("bob", "bob")[0] == "OK"
        with imap_of(run, "ex1") as old, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            old.login("bob", "bob")
    finally:
        xcon("down", run_dir=run)


def numbered(client: imaplib.IMAP4) -> list[tuple[bytes, str]]:
    """(number, subject) of each message of the selected folder."""
    _, found = client.search(None, "ALL")
    out = []
    for num in found[0].split():
        _, data = client.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out.append((num, data[0][1].decode().split(":", 1)[1].strip()))
    return out


def mbsync_pull(run: Path, server: str, user: str, into: Path) -> dict[str, list[tuple[str, str]]]:
    """Every folder of `user`'s mailbox on `server`, pulled by isync's mbsync (a real IMAP client)
    into a Maildir of its own: folder -> [(subject, flags)], by subject."""
    host, port = xcon("endpoint", f"imap.{server}", run_dir=run, check=True).stdout.strip().split(":")
    (into / "mail").mkdir(parents=True)
    (into / "rc").write_text(f"""IMAPAccount {user}
Host {host}
Port {port}
User {user}
Pass {user}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account {user}

MaildirStore local
Path {into}/mail/
Inbox {into}/mail/INBOX
SubFolders Verbatim

Channel pull
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
""")
    proc = subprocess.run(["mbsync", "-q", "-c", str(into / "rc"), "-a"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found: dict[str, list[tuple[str, str]]] = {}
    for folder in sorted(p for p in (into / "mail").iterdir() if p.is_dir()):
        for f in sorted(folder.glob("*/*")):
            subject = next(line for line in f.read_text().splitlines() if line.startswith("Subject:"))
            flags = f.name.split(":2,", 1)[1] if ":2," in f.name else ""
            found.setdefault(folder.name, []).append((subject.split(":", 1)[1].strip(), flags))
    return {k: sorted(v) for k, v in found.items()}


def _dovecot_of(proc: Path, run: Path) -> bool:
    try:
        return str(run) in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
