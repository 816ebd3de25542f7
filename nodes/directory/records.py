"""The directory's records as types: what `directory.json` and `changes.jsonl` hold (the files
nodes.directory.node writes), checked field by field as they are read, as strictly as a frame
(an alias is an alias, a USN an int). JSON still, so an operator reads them with any text tool;
what a type cannot say (that a home server is one of this cluster's) is checked after."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import msgspec
from msgspec import Struct

from protocol.names import Alias


class Entry(TypedDict):
    """A recipient as the directory's files hold it: protocol.messages.Recipient, stricter. A
    dict, since the directory's core and every MTA's cache keep it as one."""

    alias: Alias
    display_name: str
    home_server: str
    alternate: Alias | None
    deliver_to_both: bool
    usn: int
    reject_from: NotRequired[list[Alias]]


class Change(Struct, frozen=True, omit_defaults=True, gc=False):
    """One line of the change log: the recipient as this change left it, and the name of the
    modification that made it, if it had one (a repeat is answered, not applied again)."""

    usn: int
    recipient: Entry
    op: str | None = None


class Snapshot(Struct, gc=False):
    """directory.json: every recipient by alias, the last USN, and the named modifications
    remembered (oldest first)."""

    usn: int
    recipients: dict[Alias, Entry]
    ops: list[tuple[str, int]] = []


def home_problem(entry: Entry, servers: list[str] | None) -> str | None:
    """What a type cannot check: that `entry`'s home is one of the cluster's `servers` (None:
    any). None if it is."""
    if servers is None or entry["home_server"] in servers:
        return None
    return (f"recipient '{entry['alias']}' names home server '{entry['home_server'][:40]}', which is not a server "
            f"of this cluster ({', '.join(servers)})")


def read_change(line: dict[str, Any], servers: list[str] | None) -> Change | None:
    """A change log's line as a Change, or None if it is not one (msgspec.ValidationError, a
    ValueError, for a field of the wrong shape: nodes.records.scan_lines takes either)."""
    change = msgspec.convert(line, Change)
    return None if home_problem(change.recipient, servers) else change


def snapshot_problem(value: Any, servers: list[str] | None) -> str | None:
    """What is wrong with a directory.json's value, in a line; None if nothing."""
    try:
        snapshot = msgspec.convert(value, Snapshot)
    except msgspec.ValidationError as exc:
        return f"not a directory snapshot ({exc})"
    for alias, entry in snapshot.recipients.items():
        problem = home_problem(entry, servers)
        if problem or entry["alias"] != alias:
            return problem or f"recipient '{alias}' is filed under another name"
    return None


def line(change: Change) -> dict[str, Any]:
    """A change as the log's line holds it (nodes.records.encode_line writes it)."""
    return msgspec.to_builtins(change)
