"""The shapes of the names frames carry: aliases (which are also mailbox names) and message ids.

Checked with fullmatch, never `^...$`: `$` also matches before a trailing newline, so
"bob\\n" would pass as bob and become a second, invisible user and mailbox folder.

Message ids come in two kinds. A client may choose one (`valid_submitted_id`: no `~`, at most
200 characters); every id an MTA makes itself carries `~` marks a client cannot send: one it gives
a submission that came without an id (`generated_id`), a report's (`report_id`) and a postmaster
copy's (`postmaster_id`). So a derived id never equals an id a client chose, nor another derived
one, whatever the client sends; before this, a report's id was the message's with `.ndr.<rcpts>`
appended and cut to 200 characters, and two reports (or a report and a message) could share one.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from msgspec import Meta

ALIAS = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# an alias as the field of a record msgspec reads, checked as it is decoded (nodes.directory.records,
# orchestrator.journal)
Alias = Annotated[str, Meta(pattern=rf"^(?:{ALIAS.pattern})\Z")]
SUBMITTED_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
MSG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}(?:~[a-z0-9]{1,16}){0,6}")
# a Maildir file is `<ms>.<msg id>.xcon`: 13 + 1 + 230 + 5 bytes stays under a file name's 255
MAX_MSG_ID = 230
ALIAS_RULE = "lower-case letters, digits, . _ -; at most 64"
MSG_ID_RULE = "letters, digits, . _ + -; at most 200, starting with a letter or digit"
# the organisation's postmaster: a mailbox every store keeps, for the reports nobody else could
# take (double bounces); no user may have its name
POSTMASTER = "postmaster"
RESERVED_ALIASES = frozenset({POSTMASTER})


def valid_alias(alias: object) -> bool:
    return isinstance(alias, str) and ALIAS.fullmatch(alias) is not None


ADDRESS = re.compile(r"[^\s@<>]{1,64}@[A-Za-z0-9.-]{1,189}")


def valid_recipient(name: object) -> bool:
    """A pair's recipient: an alias of the organisation, or an address outside it (nodes.ims)."""
    return valid_alias(name) or (isinstance(name, str) and ADDRESS.fullmatch(name) is not None)


def valid_msg_id(msg_id: object) -> bool:
    """Any id a frame may carry: a client's, or one an MTA derived."""
    return isinstance(msg_id, str) and len(msg_id) <= MAX_MSG_ID and MSG_ID.fullmatch(msg_id) is not None


def valid_submitted_id(msg_id: object) -> bool:
    """An id a client may choose for its submission."""
    return isinstance(msg_id, str) and SUBMITTED_ID.fullmatch(msg_id) is not None


def generated_id(server: str, boot: str, n: int) -> str:
    """The id an MTA gives a submission that came without one."""
    return f"{server}~{boot}~{n}"


def report_id(msg_id: str, rcpts: list[str]) -> str:
    """The id of the NDR that reports `rcpts` of `msg_id`: the same for the same failure (so a
    report made twice is one report), different for every other."""
    digest = hashlib.blake2b(f"{msg_id}\0{'+'.join(sorted(rcpts))}".encode(), digest_size=8).hexdigest()
    return f"{msg_id}~ndr~{digest}"


def postmaster_id(report: str) -> str:
    """The id of the copy of report `report` that goes to the postmaster (a double bounce)."""
    return f"{report}~pm"


def is_derived(msg_id: str) -> bool:
    """Whether the id is a report's or a postmaster copy's (not a message a client sent)."""
    return "~ndr~" in msg_id


def reports_of(msg_id: str, candidate: str) -> bool:
    """Whether `candidate` is a report (or a postmaster copy of one) about `msg_id`."""
    return candidate.startswith(msg_id + "~ndr~")
