"""The shapes of the names frames carry: aliases (which are also mailbox names) and message ids.

Checked with fullmatch, never `^...$`: `$` also matches before a trailing newline, so
"bob\\n" would pass as bob and become a second, invisible user and mailbox folder.
"""

from __future__ import annotations

import re

ALIAS = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MSG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
ALIAS_RULE = "lower-case letters, digits, . _ -; at most 64"


def valid_alias(alias: object) -> bool:
    return isinstance(alias, str) and ALIAS.fullmatch(alias) is not None


def valid_msg_id(msg_id: object) -> bool:
    return isinstance(msg_id, str) and MSG_ID.fullmatch(msg_id) is not None
