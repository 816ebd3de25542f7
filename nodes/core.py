"""What every node core takes in and gives back (the sans-I/O contract of h11/h2).

A core is fed events with the current time and returns a list of actions. It owns no socket,
clock or file; the runtime (nodes.runtime) executes the actions in order, so an action that
persists state runs before the reply that follows it in the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol import Frame, logs

# Events and actions are values: nothing changes one once made. They are slotted dataclasses,
# not frozen ones: a frozen one's __init__ is slower, and a message makes about forty of them
# (docs/performance.md).

# --- events ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    """A frame that arrived on the node's ROUTER; answer it with Reply(peer=..., re=frame.id)."""

    peer: bytes
    frame: Frame


@dataclass(slots=True)
class Response:
    """A frame that answers one this node sent (frame.re names it)."""

    frame: Frame


@dataclass(slots=True)
class Feed:
    """A frame from a subscription (the directory's change feed)."""

    frame: Frame


@dataclass(slots=True)
class DiskSpace:
    """What the node's disk has free, measured by the shell now and then (Runtime's `probe`):
    a core that refuses work when space is short decides with this, never by asking the disk."""

    free_bytes: int


# --- actions --------------------------------------------------------------------------------


@dataclass(slots=True)
class Send:
    """Send a request to another node by name; `id` lets the core match the answer."""

    to: str
    type: str
    body: dict[str, Any]
    id: str
    trace: str | None = None


@dataclass(slots=True)
class Reply:
    peer: bytes
    re: str
    type: str
    body: dict[str, Any]
    trace: str | None = None


@dataclass(slots=True)
class Publish:
    type: str
    body: dict[str, Any]


@dataclass(slots=True)
class Log:
    event: str
    fields: dict[str, Any] = field(default_factory=dict)
    level: str = "info"


def log(event: str, level: str = "info", **fields: Any) -> Log:
    """A line for the node's log, of an event declared in protocol/logs.py (checked in the tests)."""
    if logs.STRICT:
        logs.check(event, level, fields)
    return Log(event, fields, level)


def error(req: Request, reason: str, code: str | None = None) -> list:
    """The answer to a request a node refuses: an error reply and a log line saying why. `code`
    (protocol.ERROR_CODES) is for a node that acts on the refusal; `reason` is for people."""
    return [
        Reply(req.peer, req.frame.id, "error", {"reason": reason, "code": code}, req.frame.trace),
        log("request.refused", level="warning", type=req.frame.type, src=req.frame.src, reason=reason),
    ]


class Room:
    """A node's free disk space as last measured (DiskSpace), against the floor it keeps: below
    the floor it takes no new mail; what it holds already is written whatever happens."""

    def __init__(self, node: str, min_free_bytes: int):
        self.node, self.min_free_bytes = node, min_free_bytes
        self.free_bytes: int | None = None  # not measured yet: assume room

    def measured(self, free_bytes: int) -> list:
        """Take a measurement; a log line when the disk crosses the floor, either way."""
        was_low, self.free_bytes = self.low, free_bytes
        if self.low and not was_low:
            return [log("storage.low", level="warning", free_bytes=free_bytes, min_free_bytes=self.min_free_bytes)]
        if was_low and not self.low:
            return [log("storage.ok", level="warning", free_bytes=free_bytes)]
        return []

    @property
    def low(self) -> bool:
        return self.free_bytes is not None and self.free_bytes < self.min_free_bytes

    def fits(self, size: int) -> bool:
        return self.free_bytes is None or self.free_bytes - size >= self.min_free_bytes

    def refusal(self) -> str:
        return f"insufficient storage on {self.node} ({self.free_bytes} bytes free), retry later"


class Ids:
    """Request ids unique to one run of one node: `<node>.<boot>.<n>`."""

    def __init__(self, node: str, boot: str):
        self.prefix = f"{node}.{boot}."
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self.prefix}{self._n}"
