"""A Postfix of xcon's own: Debian's postfix, run from a config written here, in the foreground as
a child of the calling process (`postfix start-fg`; it dies with that process), never the
system's. Its config, queue, data and Maildirs live in a short folder under /tmp (Postfix's
daemons run as the user postfix and must reach their queue; a run-dir's parents may be private),
removed by `stop`. Used by the `internet` host's node (nodes.internet: the outside world's mail
server) and by `xcon bench`'s SMTP-in row (orchestrator.lab.bench_smtp)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .edge import start_daemon

POSTFIX = "/usr/sbin/postfix"

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
    return Path(POSTFIX).exists()


def main_cf(home: Path, address: str, relay_to: str | None, domains: str) -> str:
    """A relay to `relay_to` ("HOST:PORT") for `domains`, or (without one) delivery by virtual(8),
    as the user mail, into one Maildir for every user of `domains`: home/mail/all."""
    mail = pwd.getpwnam("mail")
    if relay_to:
        host, _, port = relay_to.rpartition(":")
        delivery = (f"relay_domains = {domains}\ntransport_maps = inline:{{ {domains}=smtp:[{host}]:{port} }}\n")
    else:
        # one Maildir (mail/all) for every user of `domains`; virtual(8) adds Delivered-To
        delivery = (f"virtual_mailbox_domains = {domains}\nvirtual_mailbox_base = {home}/mail\n"
                    f"virtual_mailbox_maps = static:all/\nvirtual_uid_maps = static:{mail.pw_uid}\n"
                    f"virtual_gid_maps = static:{mail.pw_gid}\nvirtual_minimum_uid = {mail.pw_uid}\n"
                    "relay_domains =\n")
    return f"""# written by xcon: a Postfix of its own, in the foreground, nothing of the system's
compatibility_level = 3.6
queue_directory = {home}/queue
data_directory = {home}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = {address}
inet_protocols = ipv4
myhostname = {home.name}.xcon.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 0.0.0.0/0
smtpd_recipient_restrictions = permit_mynetworks, reject
maillog_file = {home}/postfix.log
maillog_file_prefixes = {home}
smtputf8_enable = no
default_process_limit = 100
{delivery}"""


class Postfix:
    """One instance listening on `address`:`port`, in the foreground, a child of this process."""

    def __init__(self, home: Path, address: str, port: int, relay_to: str | None = None,
                 domains: str = "peer.test"):
        self.home, self.port = home, port
        shutil.rmtree(home, ignore_errors=True)
        conf = home / "conf"
        for sub in ("conf", "queue", "data", "mail"):
            (home / sub).mkdir(parents=True)
        os.chmod(home, 0o755)
        shutil.chown(home / "data", "postfix")
        shutil.chown(home / "mail", "mail", "mail")
        (conf / "main.cf").write_text(main_cf(home, address, relay_to, domains))
        (conf / "master.cf").write_text(MASTER_CF.format(listen=f"{address}:{port}"))
        subprocess.run([POSTFIX, "-c", str(conf), "set-permissions"], check=True, capture_output=True)
        try:
            self.proc: subprocess.Popen | None = start_daemon(
                [POSTFIX, "-c", str(conf), "start-fg"], address, port, f"postfix on {address}:{port}", 30)
        except RuntimeError:
            self.proc = None
            self.stop()
            raise

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.home / "conf"), "stop"], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)
