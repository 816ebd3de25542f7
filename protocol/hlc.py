"""Hybrid logical clocks (Kulkarni, Demirbas, Madappa, Avva and Leone, "Logical Physical Clocks",
OPODIS 2014; the clock CockroachDB orders by).

Every frame and every logged event carries one. Like a Lamport clock it sorts a receive after its
send; between events with no chain of frames between them it sorts by physical time, so a trace
reads in the order things happened, not in the order the counters happened to give.

A timestamp is one int: the physical part `l` in milliseconds above a 16-bit logical counter `c`.
Packed so, the paper's update rules are a max() of ints:

    send or local event:  l, c = max(l, pt), (c + 1 if l did not change else 0)
                          == max(h + 1, pt << 16)
    receive of m:         l, c = max(l, l_m, pt), (max(c, c_m) + 1, c + 1, c_m + 1 or 0, as
                          the maximum came from) == max(h + 1, m + 1, pt << 16)

(a counter that reached 65,535 in one millisecond carries into the physical part: it runs a
millisecond ahead, which the paper's bound on l - pt allows for). A log line writes the two parts
apart, `"hlc": [l, c]`, which JSON readers of any language take without loss.

The physical time is the node's own reading: the wall clock in a process, the virtual clock in
the simulator (so a seed still gives the same run), plus the offset a clock fault sets
(`xcon fault clock`, Jepsen's clock nemesis). The offset skews what a node stamps (its HLC and
its log's ts), not its timers: those run on the monotonic time a real server's timers use.
"""

from __future__ import annotations

SHIFT = 16
COUNTER = (1 << SHIFT) - 1
# a frame's clock must stay far below msgpack's 64-bit limit after any number of max()+1: a
# larger one is refused as a bad frame (protocol.frame), never adopted
LIMIT = 1 << 62
MAX_OFFSET_S = 24 * 3600.0  # the largest clock offset a fault may set, either way


class Clock:
    """One node's hybrid logical clock."""

    __slots__ = ("value", "offset")

    def __init__(self, value: int = 0, offset: float = 0.0):
        self.value = value  # the last timestamp given out
        self.offset = offset  # seconds the node's physical clock reads off (a clock fault)

    def read(self, now: float) -> float:
        """The node's physical clock at true time `now`: what it stamps as ts."""
        return now + self.offset

    def tick(self, now: float) -> int:
        """The timestamp of a local event or a send at true time `now` (seconds)."""
        physical = int((now + self.offset) * 1000) << SHIFT
        value = self.value + 1
        self.value = value if value > physical else physical
        return self.value

    def receive(self, remote: int, now: float) -> int:
        """The timestamp of receiving a frame stamped `remote`, at true time `now`."""
        physical = int((now + self.offset) * 1000) << SHIFT
        value = (self.value if self.value > remote else remote) + 1
        self.value = value if value > physical else physical
        return self.value


def pair(value: int) -> list[int]:
    """[physical ms, counter], as a log line writes it."""
    return [value >> SHIFT, value & COUNTER]


def packed(stamp: list[int]) -> int:
    """The int of a logged [physical ms, counter]."""
    return (stamp[0] << SHIFT) + stamp[1]


def wall(now: float) -> list[int]:
    """The [ms, counter] of a line written by what has no clock of its own (the CLI): its time."""
    return [int(now * 1000), 0]


def of_event(event: dict) -> list:
    """An event's sort key: its [ms, counter], or, for a line from before clocks were hybrid (or
    written by the CLI, which is not a node), its time in ms with its Lamport clock."""
    stamp = event.get("hlc")
    if stamp is not None:
        return stamp
    return [int(event.get("ts", 0) * 1000), event.get("lamport", 0)]
