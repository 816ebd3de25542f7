"""Dovecot's record of what each user did to the mail, read back.

An IMAP server's Dovecot logs, with its mail_log plugin (nodes.imap.node's config), a line for
each message a user copied or expunged, naming the folder and the message's Message-ID, stamped
to the microsecond:

    2026-12-05T08:03:40.529716 imap(alice)<12552><kCx8...>: Info: copy from INBOX: box=Archive, uid=4, msgid=<m2@xcon.test>
    2026-12-05T08:03:44.529716 imap(alice)<12552><kCx8...>: Info: expunge: box=INBOX, uid=1, msgid=<m1@xcon.test>

An IMAP MOVE is a copy then an expunge, and a folder the user deletes is expunged message by
message first. So a message the user removed is one the record, read in time order over every
server the user lived on, leaves in no folder: delivered to INBOX, copied to a folder (+), each
folder's copy expunged (-). `xcon check` reads it to tell a message the user removed from one the
mail system lost; a copy the record says is in a folder, but is not, is the system's loss.
"""

from __future__ import annotations

import re
from pathlib import Path

# Dovecot cuts a long Message-ID at 80 characters, ending it "..." (mail_log's MSGID_LOG_LEN)
_LINE = re.compile(r"^(?P<at>\S+) imap\((?P<user>[^)]+)\)<[^>]*><[^>]*>: Info: (?:copy from .+?|(?P<expunge>expunge)): "
                   r"box=(?P<box>.*?), uid=\d+, msgid=(?P<msgid>.*)$")


def read(logs: list[Path]) -> list[tuple[str, str, str, str, bool]]:
    """Every copy and expunge the logs record, in time order: (time, user, Message-ID, folder,
    expunged). Missing logs read as empty."""
    found = []
    for log in logs:
        try:
            text = log.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            m = _LINE.match(line)
            if m and m["msgid"]:
                found.append((m["at"], m["user"], m["msgid"].strip(), m["box"], m["expunge"] is not None))
    return sorted(found, key=lambda r: r[0])


def removed(logs: list[Path]) -> dict[str, dict[str, str]]:
    """What each user removed from their mailbox for good, by Message-ID as Dovecot logged it:
    user -> {msgid: the folder its last copy was expunged from}."""
    where: dict[tuple[str, str], set[str]] = {}
    last: dict[tuple[str, str], str] = {}
    for _, user, msgid, box, expunged in read(logs):
        held = where.setdefault((user, msgid), {"INBOX"})
        if expunged:
            held.discard(box)
            last[(user, msgid)] = box
        else:
            held.add(box)
    gone: dict[str, dict[str, str]] = {}
    for (user, msgid), held in where.items():
        if not held and (user, msgid) in last:
            gone.setdefault(user, {})[msgid] = last[(user, msgid)]
    return gone


def matches(logged: str, message_id: str) -> bool:
    """Whether a Message-ID as Dovecot logged it (cut to 80 characters, "..." added) is this one."""
    if logged.endswith("...") and len(logged) >= 80:
        return message_id.startswith(logged[:-3])
    return logged == message_id
