"""The simulated network's settings (Network) and what stops a world that makes no progress."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Network:
    """Latency of a link: `latency_us` plus up to `jitter_us`, drawn per frame from the seed.

    With `torn_kills`, a kill (a fault, not a crash point) lands half the time inside the
    node's next write instead of at once (FoundationDB's "buggify": make the rare case common):
    the batch it was making durable is torn (part of a queue log's record, a prefix of a batch of
    Maildir renames) or lost, and neither the turn's log lines nor its frames leave. A real SIGKILL
    lands there too, but too rarely for a campaign to see it. If the node writes nothing within
    TORN_WAIT_S, it is killed then, idle."""

    latency_us: int = 300
    jitter_us: int = 200
    cpu_us: int = 0  # processing time per event on a node
    torn_kills: bool = False
    # how long a durable write (a batch's fsync) takes: the node's clock, as its log lines read it,
    # moves on by this during the turn that syncs, as a real node's lines after an fsync are
    # stamped after it. 0 (the default) keeps the instant turns every seed was drawn with
    sync_us: int = 0
    # a trial's bound (liveness): at most this many events between two steps of its schedule, and
    # after its last (World.rearm); past it the world is Stuck. `xcon chaos --stuck-after`
    stuck_events: int = 200_000


LIVELOCK_EVENTS = 200_000  # events at one virtual instant that only a livelock makes


class Livelock(RuntimeError):
    """The world makes no progress in time: some node keeps acting at the same instant (what
    would spin a real node's CPU)."""


class Stuck(Livelock):
    """The world ran more events than its bound allows (World.rearm): a trial that would not end
    (a timer re-armed a microsecond on, a message handed back and forth)."""
