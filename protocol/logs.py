"""The events the cores log, declared: each event's fields, and each field's type.

The log is the project's other interface, beside the frames (protocol/messages.py): `xcon check`
judges a run from these lines, and the timelines, the viewers and the campaigns' coverage read
them. A line that lost a field, or carries it with the wrong type, would be read as another
story, or silently skipped. So every event a core logs (`nodes.core.log`) is declared here, and
the tests hold the cores to it: with `STRICT` set (as in the suite), a core that logs an
undeclared event, leaves out a field the event always has, adds one it does not declare, or
gives a field the wrong type raises `Undeclared`. Nodes do not check (no cost outside the tests).

Each line of EVENTS is `event: (the fields it always has, the fields it may have)`; an event whose
second part ends in `...` may carry more (a fault's own parameters). VALUES names the fields
that choose from a closed set (a failure's reason, a route's `via`) and the set. The host's events
(node.started, frame.rejected, ...) and the edges' (ims.*, imap.*) are not made by `log` and are
not declared here.
"""

from __future__ import annotations

import os
from typing import Any

from .messages import MESSAGES

# `log` checks every event it makes: the suite sets it (tests/conftest.py), for its own process
# and, through XCON_STRICT_LOGS=1, for every node it starts
STRICT = os.environ.get("XCON_STRICT_LOGS") == "1"

LEVELS = frozenset({"debug", "info", "warning", "error"})

_NUMBER = (int, float)
_TYPES: dict[type | tuple, str] = {
    str: "alias action by build cache_home into file home_server kind mailbox move_id msg_id owner postmaster_id "
         "ndr_id op rcpt re reason report sender source src step to type via why",
    int: "apply_in_ms attempt cache_usn count copied deleted directory_usn free_bytes hops messages mailboxes "
         "min_free_bytes pid queued received_usn recipients retry_in_ms scheduled signal size total usn written "
         "lag_ms jitter_ms",
    bool: "already deliver_to_both first found repeated unlocked workaround",
    list: "dropped held incoming ndr_rcpts notify rcpts servers",
    dict: "alt_of changes locked outcome",
    (dict, type(None)): "cleared restored",
    _NUMBER: "accepted_at purge_at seconds",
    (bool, float): "duplicate",  # a copy delivered again (mta.delivered); a fault's share of frames duplicated
    (str, type(None)): "alternate diagnostic message_id ndr_for peer priority target",
    (int, type(None)): "entry_usn",
    (str, int, list, type(None)): "done undone",  # what a network fault did: the qdisc, the rules, how many
}
FIELDS: dict[str, type | tuple] = {name: kind for kind, names in _TYPES.items() for name in names.split()}

_STEP = "move_id step alias mailbox"
EVENTS: dict[str, tuple[str, str]] = {
    # the directory
    "directory.added": ("usn alias home_server alternate deliver_to_both", ""),
    "directory.loaded": ("usn recipients", ""),
    "directory.modified": ("usn alias home_server alternate deliver_to_both changes", "op"),
    "directory.lookup": ("alias found src usn", ""),
    "directory.repeat": ("op usn alias src", ""),
    "directory.snapshot": ("usn src", ""),
    # the MTA
    "mta.accepted": ("msg_id sender rcpts alt_of cache_usn", "repeated accepted_at priority via message_id"),
    "mta.cache_applied": ("usn alias home_server alternate", ""),
    "mta.change_received": ("usn alias apply_in_ms", ""),
    "mta.deferred": ("msg_id rcpt reason retry_in_ms", ""),
    "mta.delivered": ("msg_id rcpt duplicate", ""),
    "mta.directory_regressed": ("received_usn directory_usn why", ""),
    "mta.failed": ("msg_id rcpt reason report cache_usn", "ndr_for ndr_id ndr_rcpts notify postmaster_id why"),
    "mta.feed_gap": ("received_usn directory_usn", ""),
    "mta.late_answer": ("re type", ""),
    "mta.ndr_queued": ("msg_id ndr_for rcpts to", ""),
    "mta.not_homed": ("msg_id rcpt action cache_home cache_usn entry_usn directory_usn", ""),
    "mta.ready": ("cache_usn queued", ""),
    "mta.relay_failed": ("msg_id rcpt reason src", "diagnostic ndr_for repeated"),
    "mta.relayed": ("msg_id rcpt to ndr_for", ""),
    "mta.released": ("mailbox", ""),
    "mta.rerouted": ("msg_id rcpt reason home_server entry_usn cache_usn", "directory_usn"),
    "mta.restricted": ("msg_id rcpt sender entry_usn cache_usn", ""),
    "mta.retired": ("msg_id outcome", ""),
    "mta.retry": ("msg_id rcpt reason", "cache_usn"),
    "mta.routed": ("msg_id rcpt via cache_usn attempt", "home_server entry_usn to"),
    "mta.snapshot": ("usn first scheduled", ""),
    "mta.starting": ("build queued", ""),
    "mta.transfer_duplicate": ("msg_id rcpts src", ""),
    "mta.transfer_in": ("msg_id rcpts src hops", ""),
    "mta.transferred": ("msg_id rcpt to", ""),
    # the store
    "store.create_repeated": ("mailbox owner", ""),
    "store.created": ("mailbox", "owner"),
    "store.deferred": ("msg_id mailbox reason", ""),
    "store.deleted": ("mailbox owner messages", ""),
    "store.delivered": ("msg_id mailbox file size ndr_for ndr_rcpts", ""),
    "store.duplicate_suppressed": ("msg_id mailbox", ""),
    "store.expired_refused": ("msg_id mailbox", ""),
    "store.imported": ("mailbox owner count", "into"),
    "store.in_transit_flushed": ("mailbox copied dropped", "already"),
    "store.incoming": ("mailbox owner", ""),
    "store.late_request": ("mailbox owner type", ""),
    "store.loaded": ("mailboxes locked incoming", ""),
    "store.lock_repeated": ("mailbox owner", ""),
    "store.locked": ("mailbox owner", ""),
    "store.marked_in_transit": ("mailbox owner", ""),
    "store.move_ended": ("mailbox owner src held unlocked deleted", ""),
    "store.not_here": ("msg_id mailbox", ""),
    "store.opened": ("mailbox owner", ""),
    "store.purged": ("mailbox why", ""),
    "store.released": ("mailbox to", ""),
    "store.repeat": ("type mailbox owner", ""),
    "store.soft_deleted": ("mailbox owner messages purge_at", ""),
    "store.soft_deleted_refused": ("msg_id mailbox", ""),
    "store.unlocked": ("mailbox owner", ""),
    # Move User (the orchestrator)
    "orchestrator.ready": ("servers", ""),
    "move.aborted": (f"{_STEP} src", ""),
    "move.copied": ("move_id mailbox count written total", ""),
    "move.done": ("move_id alias mailbox source target copied seconds", ""),
    "move.failed": ("move_id alias reason", ""),
    "move.held": (f"{_STEP} why", ""),
    "move.left_alone": (f"{_STEP} why", ""),
    "move.problem": ("move_id step reason", ""),
    "move.recovered": (_STEP, ""),
    "move.refused": ("move_id alias reason", ""),
    "move.released": (_STEP, ""),
    "move.replicated": ("move_id usn", ""),
    "move.request_again": ("move_id step to type attempt", ""),
    "move.requested": ("move_id alias target workaround", ""),
    "move.retry_step": ("move_id step reason", ""),
    "move.started": ("move_id alias mailbox source target workaround", ""),
    "move.step": (f"{_STEP} source target", "reason copied usn cleared restored"),
    "move.undo_refused": ("move_id step reason", ""),
    # every node
    "request.refused": ("type src reason", ""),
    "storage.low": ("free_bytes min_free_bytes", ""),
    "storage.ok": ("free_bytes", ""),
    "storage.damaged": ("file why", "..."),
    # the orchestrator's faults: a fault's own parameters beside
    "fault.applied": ("type by", "..."),
    "fault.corrupted": ("target", "..."),
    "fault.healed": ("undone", ""),
    "fault.injected": ("kind target peer", "done ..."),
    "fault.no_process": ("target signal", ""),
    "fault.refused": ("target reason", "kind"),
    "fault.restart_refused": ("target reason", ""),
    "fault.restarted": ("target pid", ""),
    "fault.resumed": ("target", ""),
    "fault.signalled": ("target pid signal", ""),
    "fault.skipped": ("kind target reason", ""),
    "fault.triggered": ("kind target step move_id mailbox", ""),
}
# the fields that name a choice from a closed set (check, justify and the coverage signature read
# them as names, not words): each event's, with the names it may give
VALUES: dict[tuple[str, str], frozenset[str]] = {
    ("mta.routed", "via"): frozenset({"cache", "hint", "unacknowledged transfer", "ims", "postmaster"}),
    ("mta.failed", "report"): frozenset({"ndr", "none", "postmaster"}),
    ("mta.failed", "reason"): frozenset({"unknown", "restricted", "moved", "soft_deleted", "expired", "loop",
                                         "no_route", "refused", "gone"}),  # orchestrator/inspect/justify.py's RULES
    ("mta.not_homed", "action"): frozenset({"ask directory", "hold report", "fail"}),
    ("mta.retry", "reason"): frozenset({"retry timer", "mailbox released",
                                        "expired: asking whether an earlier attempt landed"}),
    ("mta.rerouted", "reason"): frozenset({"cache updated", "directory lookup"}),
    ("mta.relay_failed", "reason"): frozenset({"refused", "expired"}),
    ("fault.applied", "type"): frozenset(t for t in MESSAGES if t.startswith("fault.")),  # the fault's frame
    ("mta.accepted", "priority"): frozenset({"urgent", "non-urgent"}),  # normal is said by saying nothing
    ("store.imported", "into"): frozenset({"in-transit folder"}),
    ("store.purged", "why"): frozenset({"retention over", "a new mailbox of its name"}),
}
_SHAPES = {event: (frozenset(always.split()), frozenset(may.split()) - {"..."}, may.endswith("..."))
           for event, (always, may) in EVENTS.items()}


class Undeclared(ValueError):
    """An event that does not match its declaration (or has none)."""


def problem(event: str, level: str, fields: dict[str, Any]) -> str | None:
    """What is wrong with this event against its declaration, in one line; None if nothing."""
    shape = _SHAPES.get(event)
    if shape is None:
        return f"{event!r} is not declared in protocol/logs.py"
    if level not in LEVELS:
        return f"{event}: level {level!r} is not one of {sorted(LEVELS)}"
    always, may, open_ = shape
    missing = always - fields.keys()
    if missing:
        return f"{event}: no {', '.join(sorted(missing))}"
    extra = fields.keys() - always - may
    if extra and not open_:
        return f"{event}: {', '.join(sorted(extra))} not declared"
    for name, value in fields.items():
        kind = FIELDS.get(name)
        if kind is not None and (not isinstance(value, kind) or kind is int and isinstance(value, bool)):
            return f"{event}: {name}={value!r} is not {_named(kind)}"
        if kind is None and name in always | may:
            return f"{event}: field {name!r} has no type in protocol/logs.py FIELDS"
        names = VALUES.get((event, name))
        if names is not None and value not in names:
            return f"{event}: {name}={value!r} is not one of {sorted(names)}"
    return None


def check(event: str, level: str, fields: dict[str, Any]) -> None:
    wrong = problem(event, level, fields)
    if wrong is not None:
        raise Undeclared(wrong)


def _named(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
