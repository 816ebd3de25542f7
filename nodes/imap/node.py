"""IMAP4 for one server's mailboxes, served by Debian's Dovecot (`dovecot-imapd`): `imap.<server>`,
started by `xcon up --imap`. This node writes Dovecot's configuration under the run-dir, runs
Dovecot as its child (which dies with it), keeps Dovecot's users in step with the directory, and
answers ping and status as every node does (nodes.edge).

Nothing of the system's is touched: Dovecot runs from `<run-dir>/dovecot/<server>/dovecot.conf`
and logs to `<run-dir>/logs/dovecot.<server>.log`, listening on its endpoint's address only
(127.0.0.1, or its server's host's address on a cluster of namespaces, port 143). Its sockets,
state, indexes and users file live in a short folder of its own, `/tmp/xcon-<hash>-<server>`
(a Unix socket's path is limited to 108 bytes, and Dovecot's own users must reach them), which
goes when the node stops; the indexes are never in the Maildirs, so the store and `xcon check`
read the Maildirs as before. Dovecot sees the server's mailboxes through a bind mount in a mount
namespace of its own (they are in the run-dir, whose parents may be private): nothing of it
outlives Dovecot, and nothing on the machine changes.

Users: every recipient the directory homes on this server, its password its alias (a lab's, on
loopback; the directory has no passwords). A user moved away is no longer this server's: its old
server answers `NO [AUTHENTICATIONFAILED]` and its new one serves its mailbox, as Exchange 5.5's
IMAP4 did (a client had to be pointed at the new server). The list follows the directory within
a second of a change (this node asks for its snapshot; it is not an MTA, it has no replication lag),
and `xcon wait` asks it to catch up at once (`imap.sync`): a wait ends with Dovecot's users in step.

A mailbox being moved is its user's to read and change no more, as Exchange's move locked the
user out: Move User asks this node to hold the user (`imap.hold`) before it copies a page, and
hears "ok" once the user's sessions are ended (`doveadm kick`) and no login is taken; what the
user did before is what the move carries. The hold ends when the store no longer locks the
mailbox for that move, and a user whose mailbox the store locks (a move's source, or its target
not opened yet) is held too, so a restarted node keeps the user out (issue 34: a message filed
during the copy, after its page left, was deleted with the source).

Dovecot will not open mail as root, so with --imap the stores share their mail with the group
`mail` (mailboxes 2770, messages 660), and Dovecot reads and flags it as the user `mail`.
Without --imap mail stays its owner's alone. Dovecot needs root (and `unshare`, util-linux).
"""

from __future__ import annotations

import asyncio
import grp
import math
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..config import ClusterConfig, write_atomic
from ..edge import EdgeNode, runtime_dir, start_daemon

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
KICK_S = 5.0  # how long a hold waits for the user's sessions to end
UNSHARE = "/usr/bin/unshare"
MAIL_USER = "mail"
SYNC_S = 0.5  # how often the users are compared with the directory


def config_text(run_dir: Path, server: str, address: str, port: int) -> str:
    home = runtime_dir(run_dir, server)
    return f"""# written by xcon for imap.{server}; Dovecot runs from it alone (nothing of the system's)
protocols = imap
listen = {address}
base_dir = {home}/run
state_dir = {home}/state
instance_name = xcon-{server}-{os.getpid()}
log_path = {run_dir}/logs/dovecot.{server}.log
log_timestamp = "%Y-%m-%dT%H:%M:%S.%{{usecs}} "
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# a refused login (a user moved away, or held by a move) answered at once: a lab's clients on
# loopback, not a brute force to slow down (Dovecot's default waits 2 s)
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
mail_uid = {MAIL_USER}
mail_gid = {MAIL_USER}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~:INDEX={home}/index/%n:CONTROL={home}/control/%n:VOLATILEDIR={home}/volatile/%n
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {home}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {home}/users
}}
# the record of what each user did to the mail (nodes.imap.record): `xcon check` judges a message a
# user expunged or filed elsewhere as the user's own act, not as lost
mail_plugins = $mail_plugins notify mail_log
plugin {{
  mail_log_events = delete undelete expunge copy mailbox_delete mailbox_rename
  mail_log_fields = uid box msgid
}}
service imap-login {{
  inet_listener imap {{
    address = {address}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""


class Imap(EdgeNode):
    kind = "imap"

    def __init__(self, name: str, config: ClusterConfig):
        super().__init__(name, config, peer="directory")
        self.conf = config.run_dir / "dovecot" / self.server / "dovecot.conf"
        self.home = runtime_dir(config.run_dir, self.server)
        self.address, _, port = config.endpoint(name, "imap").rpartition(":")
        self.port = int(port)
        self.usn = -1
        self.users: list[str] = []
        self.homed: list[str] = []  # the directory's users homed here, as its last snapshot said
        self.held: dict[str, tuple[str, float]] = {}  # user -> (the move that holds it, since when)
        self.locked: dict[str, str] = {}  # mailbox -> the move whose lock the store said it holds
        self.store_seen = False  # whether the store ever answered: until it does, nobody logs in
        self.published = 0.0  # when Dovecot's users were last written (wall clock)
        self.syncing = asyncio.Lock()  # one comparison with the directory at a time (its loop's, or a wait's)
        self.dovecot: subprocess.Popen | None = None

    async def start(self) -> list:
        missing = [tool for tool in (DOVECOT, UNSHARE) if not Path(tool).exists()]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} missing: xcon up --imap needs Debian's dovecot-imapd and "
                               "util-linux")
        mail = pwd.getpwnam(MAIL_USER)
        shutil.rmtree(self.home, ignore_errors=True)  # a killed Dovecot's sockets and pid file
        self.home.mkdir()
        os.chmod(self.home, 0o711)  # modes set, not asked of mkdir: a node's umask is 077
        for sub in ("run", "state", "mail"):
            (self.home / sub).mkdir()
            os.chmod(self.home / sub, 0o755)
        for sub in ("index", "control", "volatile"):  # Dovecot's own files about the mail, as the user mail
            (self.home / sub).mkdir(mode=0o700)
            os.chown(self.home / sub, mail.pw_uid, mail.pw_gid)
        await self._sync_users()
        write_atomic(self.conf, config_text(self.config.run_dir, self.server, self.address, self.port).encode())
        stores = self.config.run_dir / "stores" / self.server
        stores.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the mailboxes at a path Dovecot's users can reach, in a mount namespace of Dovecot's own
        argv = [UNSHARE, "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$1" "$2" && exec "$3" -F -c "$4"', "sh", str(stores), str(self.home / "mail"),
                DOVECOT, str(self.conf)]
        with open(self.config.run_dir / "logs" / f"dovecot.{self.server}.console", "ab") as console:
            try:
                self.dovecot = await asyncio.to_thread(start_daemon, argv, self.address, self.port, "dovecot", 20,
                                                       console)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc} (see logs/dovecot.{self.server}.log and .console)") from None
        self.log("info", "node.started", pid=os.getpid(), endpoint=self.config.endpoint(self.name),
                 imap=f"{self.address}:{self.port}", dovecot_pid=self.dovecot.pid, users=self.users)
        return [self._follow()]

    async def stop(self) -> None:
        if self.dovecot is not None and self.dovecot.poll() is None:
            self.dovecot.terminate()
            try:
                await asyncio.to_thread(self.dovecot.wait, 10)
            except subprocess.TimeoutExpired:
                self.dovecot.kill()
        shutil.rmtree(self.home, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        return {"imap": f"{self.address}:{self.port}", "users": self.users, "usn": self.usn,
                "held": sorted({*self.held, *(u for u in self.locked if u in self.homed)}),
                "dovecot_pid": self.dovecot.pid if self.dovecot else None,
                "dovecot_alive": self.dovecot is not None and self.dovecot.poll() is None}

    def answer(self, frame: Any) -> Any:
        if frame.type == "imap.hold":
            return self._hold(frame.body.user, frame.body.owner)
        if frame.type == "imap.sync":
            return self._synced()
        return None

    async def _hold(self, user: str, owner: str) -> tuple[str, dict[str, Any]]:
        """Move User's hold: no login for `user` from now on, and its sessions ended; "ok" then."""
        self.held[user] = (owner, time.monotonic())
        await self._publish([u for u in self.users if u != user])
        await self._read_by_dovecot(time.time())  # a login in the second of the rewrite may still be taken: kick after
        ended = await self._kick(user)
        self.log("info", "imap.held", user=user, owner=owner, sessions_ended=ended)
        return "ok", {}

    async def _synced(self) -> tuple[str, dict[str, Any]]:
        """`xcon wait`'s question (imap.sync): the users compared with the directory and the store
        now, answered once Dovecot has read them."""
        try:
            await self._sync_users()
        except TimeoutError:
            return "error", {"reason": f"{self.name} cannot compare its users with the directory now: no answer",
                             "code": None}
        await self._read_by_dovecot(self.published)
        return "imap.synced", {"usn": self.usn, "users": self.users}

    async def _read_by_dovecot(self, written: float) -> None:
        """Until Dovecot has read users written at `written` (wall clock): it reads its passwd-file
        again at most once a second, on its loop's whole-second clock."""
        wait = math.ceil(written) + 0.01 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _kick(self, user: str) -> bool:
        """End `user`'s IMAP sessions and wait until none is left; whether they ended in time."""
        if self.dovecot is None or self.dovecot.poll() is not None:
            return True  # no Dovecot, no session

        def run(*args: str) -> str:
            return subprocess.run([DOVEADM, "-c", str(self.conf), *args], capture_output=True, text=True,
                                  timeout=KICK_S).stdout

        deadline = time.monotonic() + KICK_S
        while time.monotonic() < deadline:
            who = await asyncio.to_thread(run, "who", user)
            if not any(line.split()[:1] == [user] for line in who.splitlines()):
                return True
            await asyncio.to_thread(run, "kick", user)
            await asyncio.sleep(0.05)
        self.log("warning", "imap.kick_late", user=user, why=f"sessions still open after {KICK_S:g}s")
        return False

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            if self.dovecot is not None and self.dovecot.poll() is not None:
                self.log("error", "imap.dovecot_exited", code=self.dovecot.returncode)
                self.stopping.set()
                return
            try:
                await self._sync_users()
            except TimeoutError:
                continue  # the directory is down or paused: the list stays as it was

    async def _sync_users(self) -> None:
        """Dovecot's users: the directory's recipients homed here whose mailbox no move holds
        (passwd-file, rewritten whole; Dovecot reads it again when it changes). A user leaves the
        list when moved away or held, and its sessions end then."""
        async with self.syncing:
            await self._compare()

    async def _compare(self) -> None:
        polled = time.monotonic()
        try:
            store = await self.ask("status", {}, to=f"store.{self.server}")
        except TimeoutError:  # the store is down or paused: its locks as last heard (none heard: nobody in)
            store = None
        if store is not None and store.type == "status_reply":
            self.locked = dict(store.body.status.get("locked") or {})
            self.store_seen = True
        for user, (owner, since) in list(self.held.items()):
            if since < polled and self.locked.get(user) != owner:  # the move's lock is gone: so is its hold
                del self.held[user]
                self.log("info", "imap.released", user=user, owner=owner)
        answer = await self.ask("dir.snapshot", {})
        if answer.type == "dir.snapshot_reply" and answer.body.usn != self.usn:
            self.homed = sorted(r["alias"] for r in answer.body.recipients if r["home_server"] == self.server)
            self.usn = answer.body.usn
        users = [u for u in self.homed if u not in self.held and u not in self.locked] if self.store_seen else []
        if users != self.users or not (self.home / "users").exists():
            gone = sorted(set(self.users) - set(users))
            await self._publish(users)
            for user in gone:
                await self._kick(user)

    async def _publish(self, users: list[str]) -> None:
        lines = [f"{u}:{{PLAIN}}{u}::::{self.home / 'mail' / u}::\n" for u in users]
        write_atomic(self.home / "users", "".join(lines).encode())
        self.published = time.time()
        os.chmod(self.home / "users", 0o640)
        os.chown(self.home / "users", -1, grp.getgrnam("dovecot").gr_gid)
        if users != self.users:
            self.log("info", "imap.users", usn=self.usn, users=users, added=sorted(set(users) - set(self.users)),
                     removed=sorted(set(self.users) - set(users)))
        self.users = users
