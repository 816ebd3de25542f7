"""The world outside a campaign's trial (`xcon chaos --via smtp`, `--imap`): the Internet's
mail server the IMSs relay to (SimSmarthost in a simulated trial), and the organisation's users
at their IMAP clients.

The smarthost is aiosmtpd's server in the campaign's process, on loopback: it refuses the
addresses the world says it refuses, for good (550), and it is down (not listening) in the
windows the world draws, so mail and reports for outside wait, retry, and come back when they
will not leave (nodes.ims.relay). A user's IMAP client logs in to the user's home server, as a
person would, and files a message in a folder of theirs, flags one, or expunges one; a login the
server refuses (the user just moved, or is held by a move) is the client's to try later, and
this one gives up.
"""

from __future__ import annotations

import imaplib
import re
import threading
from typing import Any

from orchestrator.cluster.rundir import free_ports

SENDERS = ("ann@outside.test", "jürgen@outside.test", "zoë@outside.test", "bob.smith@outside.test")
ADDRESSES = ("dave@outside.test", "émile@outside.test", "nobody@outside.test")


class Smarthost:
    """The Internet's mail server, as far as a trial sees it: what reached it, by address."""

    def __init__(self, refuse: list[str]):
        self.refuse = set(refuse)
        self.received: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()
        self.port = free_ports(1)[0]
        self.controller: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        from aiosmtpd.controller import Controller

        if self.controller is None:
            self.controller = Controller(self, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True,
                                         ready_timeout=10)
            self.controller.start()

    def down(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 OK"


class SimSmarthost:
    """The same server in a simulated trial (orchestrator.sim.world): an IMS's attempt is answered
    as Smarthost answers it, in the instant, and not at all while it is down."""

    address = "smarthost.outside.test:25"

    def __init__(self, refuse: list[str]):
        self.refuse = set(refuse)
        self.received: list[tuple[str, list[str], bytes]] = []
        self.listening = True

    def up(self) -> None:
        self.listening = True

    def down(self) -> None:
        self.listening = False

    def take(self, mail_from: str, rcpt: str, raw: bytes) -> tuple[int | None, str]:
        """(code, words) as nodes.ims.relay.attempt gives them for the real one."""
        if not self.listening:
            return None, "ConnectionRefusedError: [Errno 111] Connection refused"
        if rcpt in self.refuse:
            return 550, f"550 5.1.1 <{rcpt}>: no such user here"
        self.received.append((mail_from, [rcpt], raw))
        return 250, "250 2.0.0 OK"


_MSG_ID = re.compile(rb"^X-Xcon-Msg-Id: *(\S+)", re.M)


def relayed_not_received(events: list[dict[str, Any]], received: list[tuple[str, list[str], bytes]]
                         ) -> list[dict[str, Any]]:
    """The pairs an IMS logged as relayed that the smarthost never received: an IMS's word is
    checked against the outside world's own record (a message is known there by its first
    X-Xcon-Msg-Id, the IMS's item's id). An IMS that took a refusal for a relay would leave its
    sender no report and every log clean."""
    got = set()
    for _, rcpts, raw in received:
        found = _MSG_ID.search(raw or b"")
        if found:
            got.update((found.group(1).decode(errors="replace"), r) for r in rcpts)
    return [{"msg_id": e["msg_id"], "rcpt": e["rcpt"], "sender": "", "alt_of": None, "outcome": "lost",
             "why": f"{e['node']} logged it relayed and the smarthost never received it", "last_events": [],
             "removed_by": []} for e in events if e["event"] == "ims.relayed" and (e["msg_id"], e["rcpt"]) not in got]


class ImapRefused(Exception):
    """The IMAP server would not have the user now (moved away, or held by a move)."""


def imap_act(cluster: Any, alias: str, act: str, pick: float, timeout: float = 10.0) -> str | None:
    """One visit of `alias`'s IMAP client to its home server: `act` ("file": MOVE to Archive,
    "flag": \\Flagged, "expunge") on the message at `pick` (0..1) of its INBOX. The subject of the
    message it acted on, or None for an empty INBOX; ImapRefused if the login was refused."""
    entry = cluster.lookup(alias)
    if entry is None:
        raise ImapRefused(f"unknown user '{alias}'")
    host, _, port = cluster.config.endpoint(f"imap.{entry['home_server']}", "imap").rpartition(":")
    try:
        with imaplib.IMAP4(host, int(port), timeout=timeout) as client:
            try:
                client.login(alias, alias)
            except imaplib.IMAP4.error as exc:
                raise ImapRefused(f"imap.{entry['home_server']}: {exc}") from None
            client.select("INBOX")
            _, found = client.search(None, "ALL")
            numbers = found[0].split()
            if not numbers:
                return None
            number = numbers[min(len(numbers) - 1, int(pick * len(numbers)))]
            _, data = client.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subject = data[0][1].decode(errors="replace").partition(":")[2].strip() if data and data[0] else ""
            if act == "file":
                client.create("Archive")  # NO if it exists: either way it is there
                client._simple_command("MOVE", number.decode(), "Archive")
            elif act == "flag":
                client.store(number, "+FLAGS", "\\Flagged")
            else:
                client.store(number, "+FLAGS", "\\Deleted")
                client.expunge()
            client.logout()
            return subject
    except (OSError, imaplib.IMAP4.abort) as exc:  # the session was ended under it: a move took the user
        raise ImapRefused(f"imap.{entry['home_server']}: {type(exc).__name__}: {exc}") from None
