"""`xcon bench`'s SMTP-in row: Postfix's own load generator, smtp-source, sends the same messages
over the same number of parallel sessions to an IMS (nodes.ims: SMTP -> MTA -> store's Maildir)
and to Postfix -> Postfix -> Maildir (a relay instance that hands every message to a second
instance, which delivers it with virtual(8)), in the same run. Each is timed from the first
connection to the last message in its Maildir.

The two Postfix instances run from configs of their own under a short folder in /tmp (Postfix's
daemons, running as the user postfix, must reach their queue, and a run-dir's parents may be
private), in the foreground as children of this process (`postfix start-fg`), and are stopped and
deleted after: the system's Postfix, if any, is not touched. Needs Debian's postfix (smtp-source
comes with it); without it the row is left out, and the bench says so.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from orchestrator import cluster as cl
from orchestrator.cluster.rundir import free_ports

POSTFIX = "/usr/sbin/postfix"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SESSIONS = 10

MASTER_CF = """{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available() -> bool:
    return Path(POSTFIX).exists() and Path(SMTP_SOURCE).exists()


def _main_cf(home: Path, port: int, relay_to: int | None) -> str:
    mail = pwd.getpwnam("mail")
    delivery = (f"relayhost = [127.0.0.1]:{relay_to}\nrelay_domains = peer.test\n"
                f"transport_maps = inline:{{ peer.test=smtp:[127.0.0.1]:{relay_to} }}\n" if relay_to else
                f"virtual_mailbox_domains = peer.test\nvirtual_mailbox_base = {home}/mail\n"
                f"virtual_mailbox_maps = static:box/\nvirtual_uid_maps = static:{mail.pw_uid}\n"
                f"virtual_gid_maps = static:{mail.pw_gid}\nvirtual_minimum_uid = {mail.pw_uid}\nrelay_domains =\n")
    return f"""# written by xcon bench: a Postfix of its own, in the foreground, nothing of the system's
compatibility_level = 3.6
queue_directory = {home}/queue
data_directory = {home}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {home.name}.xcon.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
maillog_file = {home}/postfix.log
maillog_file_prefixes = {home}
smtputf8_enable = no
default_process_limit = 100
{delivery}"""


class Postfix:
    """One instance, in the foreground, a child of this process (and dies with it)."""

    def __init__(self, home: Path, port: int, relay_to: int | None = None):
        self.home, self.port = home, port
        shutil.rmtree(home, ignore_errors=True)
        conf = home / "conf"
        for sub in ("conf", "queue", "data", "mail"):
            (home / sub).mkdir(parents=True)
        os.chmod(home, 0o755)
        shutil.chown(home / "data", "postfix")
        shutil.chown(home / "mail", "mail", "mail")
        (conf / "main.cf").write_text(_main_cf(home, port, relay_to))
        (conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))
        subprocess.run([POSTFIX, "-c", str(conf), "set-permissions"], check=True, capture_output=True)
        self.proc = subprocess.Popen([POSTFIX, "-c", str(conf), "start-fg"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.time() + 30
        while not _listening(port):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"postfix in {home} did not start (see {home}/postfix.log)")
            time.sleep(0.05)

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.home / "conf"), "stop"], capture_output=True)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _count(folder: Path) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def _blast(port: int, rcpt: str, n: int, size: int, arrived: Path, timeout: float) -> float:
    """smtp-source's n messages over SESSIONS sessions; seconds until the n-th is in `arrived`."""
    t0 = time.perf_counter()
    subprocess.run([SMTP_SOURCE, "-s", str(SESSIONS), "-m", str(n), "-l", str(size), "-f", "ann@outside.test",
                    "-t", rcpt, f"127.0.0.1:{port}"], check=True, capture_output=True, timeout=timeout)
    while _count(arrived) < n:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{_count(arrived)} of {n} messages arrived in {timeout:g} s ({arrived})")
        time.sleep(0.01)
    return time.perf_counter() - t0


def smtp_rows(root: Path, settings: Any, quick: bool, say: Callable[[str], None], row: Callable[..., Any]) -> list:
    if not available():
        say("SMTP in: left out, needs Debian's postfix (smtp-source and the peer)")
        return []
    n, size = (300, 200) if quick else (5000, 200)
    say(f"SMTP in: {n} messages by smtp-source, {SESSIONS} sessions, to an IMS")
    cluster = cl.start(root / "smtp", replace(settings, smtp=True), fresh=True)
    try:
        cluster.add_user("alice", "ex1")
        port = int(cluster.config.endpoint("ims.ex1", "smtp").rpartition(":")[2])
        xcon_s = _blast(port, "alice@xcon.test", n, size, cluster.config.run_dir / "stores/ex1/alice/new", 600)
    finally:
        cluster.close()
        cl.stop(root / "smtp")
    say("SMTP in: the same to Postfix -> Postfix -> Maildir")
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    to_port, relay_port = free_ports(2)
    peer = Postfix(Path("/tmp") / f"xcon-pf-{tag}-b", to_port)
    try:
        relay = Postfix(Path("/tmp") / f"xcon-pf-{tag}-a", relay_port, relay_to=to_port)
        try:
            postfix_s = _blast(relay_port, "box@peer.test", n, size, peer.home / "mail/box/new", 600)
        finally:
            relay.stop()
    finally:
        peer.stop()
    return [row("SMTP in (smtp-source)", f"delivered msgs/s, {SESSIONS} sessions", n / xcon_s, n / postfix_s,
                "msgs/s", f"IMS -> MTA -> store vs Postfix -> Postfix -> Maildir (virtual), {n} messages of "
                          f"{size} B, each session a new connection, same run")]
