"""Dovecot's record of what each user did to the mail, read back.

An IMAP server's Dovecot logs, with its mail_log plugin (nodes.imap.node's config), a line for
each message a user expunged or copied, naming the folder and the message's Message-ID:

    ... imap(alice)<12552><kCx8...>: Info: expunge: box=INBOX, uid=1, msgid=<m1@xcon.test>
    ... imap(alice)<12552><kCx8...>: Info: copy from INBOX: box=Archive, uid=4, msgid=<m2@xcon.test>

(a folder the user deletes is expunged message by message first). `xcon check` reads it to tell
a message the user removed from one lost: the user's own act, not the mail system's.
"""

from __future__ import annotations

import re
from pathlib import Path

# Dovecot cuts a long Message-ID at 80 characters, ending it "..." (mail_log's MSGID_LOG_LEN)
_LINE = re.compile(r"\bimap\((?P<user>[^)]+)\)<[^>]*><[^>]*>: Info: (?P<act>expunge|copy from .+?): "
                   r"box=(?P<box>.*?), uid=\d+, msgid=(?P<msgid>.*)$")


def expunged(log: Path) -> dict[str, dict[str, str]]:
    """What each user expunged, by Message-ID as the log gives it: user -> {msgid: the folder it
    was last expunged from}. {} where the log is missing."""
    found: dict[str, dict[str, str]] = {}
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return found
    for line in text.splitlines():
        m = _LINE.search(line)
        if m and m["act"] == "expunge" and m["msgid"]:
            found.setdefault(m["user"], {})[m["msgid"].strip()] = m["box"]
    return found


def matches(logged: str, message_id: str) -> bool:
    """Whether a Message-ID as Dovecot logged it (cut to 80 characters, "..." added) is this one."""
    if logged.endswith("...") and len(logged) >= 80:
        return message_id.startswith(logged[:-3])
    return logged == message_id
