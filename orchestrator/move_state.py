"""A move's state, shared by the parts of Move User (orchestrator.move, move_steps, move_rollback,
move_paging): the Move record, the journal's step record, and the step names' rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodes.core import Send
from protocol import MOVE_STATE

from .journal import Record

EXPORT_PAGE = 2000
POLL_S = 0.05
REQUEST_TRIES = 4
# from set_home on the directory may name the target: the move can only go forward
FORWARD_ONLY = ("set_home", "open_target", "release", "restore_alternate")
LEGACY_FORWARD_ONLY = ("copy", "mark_target")  # a legacy move names the target before it copies
ROLLBACK = ("rollback_target", "rollback_source", "rollback_alternate")
OLD_STEPS = {"rollback_unlock": "rollback_source"}  # journals written before open_target existed


@dataclass(frozen=True)
class JournalStep:
    record: Record  # written and synced before the step is acted on


@dataclass
class Move:
    move_id: str
    alias: str
    target: str
    workaround: bool
    copy_delay_ms: int
    legacy: bool = False  # made by a legacy move tool (module docstring)
    source: str = ""
    step: str = "resolve"
    started_at: float = 0.0
    finished_at: float | None = None
    error: str | None = None
    saved: dict[str, Any] | None = None  # the alternate settings the workaround cleared
    wait_usn: int = 0
    wait_until: float = 0.0
    cursor: str = ""
    more: bool = True
    copied: int = 0
    importing: int = 0  # messages in the page being imported
    # read-ahead in the copy step: the export of the next page, asked while this page is imported
    # (the two stores work at once), and the page once it is here. Not journaled: a restart in
    # the copy step rolls back anyway. An export that never answers is asked again as the step's
    # own request when its page is due.
    ahead: Send | None = None
    page: dict[str, Any] | None = None
    rolling_back: bool = False
    undo: list[str] = field(default_factory=list)
    request: str | None = None
    deadline: float = 0.0
    last: tuple[str, str, dict[str, Any]] | None = None  # the request in flight, to send again
    tries: int = 0
    timer: float | None = None
    pending_mtas: list[str] = field(default_factory=list)
    requester: tuple[bytes, str] | None = None
    held: bool = False  # stopped by a hold in its step, until released (MoveCore.release)
    parked: Any = None  # the answer that came while held, read at the release

    def public(self) -> dict[str, Any]:
        """What a status request shows. Not asdict: that deep-copied the request in flight, a
        page of up to 500 messages, on every poll (docs/performance.md)."""
        return {**{k: getattr(self, k) for k in PUBLIC},
                "waiting_for": self.last[0] if self.request and self.last else None,
                "attempts": self.tries if self.request else 0}


# what a status shows of a move: the fields protocol.MOVE_STATE declares, but for the two public() adds
PUBLIC = tuple(k for k in MOVE_STATE if k not in ("waiting_for", "attempts"))


def forward(move: Move) -> bool:
    """The directory may name the target already: the move only goes forward."""
    return move.step in FORWARD_ONLY or (move.legacy and move.step in LEGACY_FORWARD_ONLY)
