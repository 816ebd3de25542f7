"""Bugs planted in the MTA's core, to measure what campaigns find: each a plausible mistake of the
kind issue 31 found campaigns blind to, applied for the length of a `with` block in this process
(and the pool workers it forks). `xcon bench` counts the trials random and guided campaigns take
to find each (orchestrator.lab.bench_power); tests/sim/test_oracle.py and test_liveness.py show
that `check` names what each breaks. Nothing outside a `with plant(...)` block sees them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from nodes.mta.core import MtaCore
from nodes.mta.queue import Queue, State
from nodes.mta.router import Fail, Router


def _early_postmaster() -> tuple[Any, str, Callable]:
    held = Router.not_here

    def not_here(self, msg, pair, now, reason, directory_usn):
        if msg.ndr_for is not None:  # a report for a moved originator fails at once
            return Fail(reason)
        return held(self, msg, pair, now, reason, directory_usn)

    return Router, "not_here", not_here


def _reroute_gone() -> tuple[Any, str, Callable]:
    resolved = Router.resolved

    def gone(self, msg, pair, entry, expired):
        if entry is not None and entry["home_server"] == self.server:  # an NDR, not a retry
            return Fail("gone")
        return resolved(self, msg, pair, entry, expired)

    return Router, "resolved", gone


def _short_time_out() -> tuple[Any, str, Callable]:
    expires = Queue.expires_at

    def half(self, msg):
        if msg.report is None and msg.ndr_for is None:  # half the priority's time-out
            return msg.accepted_at + self.lifetimes.of(msg.priority) / 2
        return expires(self, msg)

    return Queue, "expires_at", half


def _livelock() -> tuple[Any, str, Callable]:
    answered = MtaCore._response

    def response(self, frame, now):
        if frame.type == "store.result" and frame.body.outcome in ("delivered", "duplicate"):
            located = self.queue.answered(frame.re)
            if located:
                msg, pair = located  # a delivery taken for a deferral, retried a microsecond on
                pair.state, pair.next_at = State.DEFERRED, now + 1e-6
                self.queue.timer(pair.next_at, msg.msg_id)
                return []
        return answered(self, frame, now)

    return MtaCore, "_response", response


# name -> (the build it is measured on, what `check` says, how it is made)
PLANTS: dict[str, tuple[str, str, Callable[[], tuple[Any, str, Callable]]]] = {
    "early-postmaster": ("sp4", "early_postmaster", _early_postmaster),
    "reroute-gone": ("reroute", "unjustified_ndr", _reroute_gone),
    "short-time-out": ("sp4", "unjustified_ndr", _short_time_out),
    "livelock": ("sp4", "stuck", _livelock),
}


@contextmanager
def plant(name: str) -> Iterator[None]:
    """The bug `name` of PLANTS, in this process, for the block's length."""
    owner, attr, bug = PLANTS[name][2]()
    before = owner.__dict__[attr]
    setattr(owner, attr, bug)
    try:
        yield
    finally:
        setattr(owner, attr, before)
