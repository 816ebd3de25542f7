"""Bugs planted in the MTA's core, to measure what campaigns find: each a plausible mistake of the
kind issue 31 found campaigns blind to, applied for the length of a `with` block in this process
(and the pool workers it forks). `xcon bench` counts the trials random and guided campaigns take
to find each (orchestrator.lab.bench_power); tests/sim/test_oracle.py and test_liveness.py show
that `check` names what each breaks. Nothing outside a `with plant(...)` block sees them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from nodes.mta import reports, routing


def _early_postmaster() -> tuple[Any, str, Callable]:
    held = routing.Routing._not_here

    def not_here(self, msg, pair, now, reason="moved"):
        if msg.ndr_for is not None:  # a report for a moved originator fails at once
            return self._fail(msg, [pair], reason, now)
        return held(self, msg, pair, now, reason)

    return routing.Routing, "_not_here", not_here


def _reroute_gone() -> tuple[Any, str, Callable]:
    resolved = routing.Routing._resolved

    def gone(self, msg, pair, entry, now):
        if entry is not None and entry["home_server"] == self.server:  # an NDR, not a retry
            return self._fail(msg, [pair], "gone", now)
        return resolved(self, msg, pair, entry, now)

    return routing.Routing, "_resolved", gone


def _short_time_out() -> tuple[Any, str, Callable]:
    expires = reports.Reports._expires_at

    def half(self, msg):
        if msg.report is None and msg.ndr_for is None:  # half the priority's time-out
            return msg.accepted_at + self.settings.expire_s(msg.priority) / 2
        return expires(self, msg)

    return reports.Reports, "_expires_at", half


def _livelock() -> tuple[Any, str, Callable]:
    answered = routing.Routing._response

    def response(self, frame, now):
        located = self._locate(frame.re) if frame.type == "store.result" else None
        if located and frame.body.outcome in ("delivered", "duplicate"):
            msg, pair = located  # a delivery taken for a deferral, retried a microsecond on
            self.requests.pop(frame.re, None)
            pair.state, pair.request, pair.next_at = "deferred", None, now + 1e-6
            self._timer(pair.next_at, msg.msg_id)
            return []
        return answered(self, frame, now)

    return routing.Routing, "_response", response


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
