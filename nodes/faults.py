"""Faults a node's runtime applies to its own outgoing frames, set at run time.

A rule on the link to one peer can delay (fixed + jitter), drop, duplicate or reorder frames
until it expires. `plan` says when each copy of a frame should leave: [] drops it, two times
duplicate it, a late time for one frame lets the next ones overtake it (reorder). Random draws
come from a generator seeded per node, so a campaign's seed replays the same choices for the
same sequence of frames.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

REORDER_HOLD_S = (0.05, 0.3)


@dataclass
class LinkRule:
    delay_ms: int = 0
    jitter_ms: int = 0
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    until: float = float("inf")


class Faults:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.links: dict[str, LinkRule] = {}
        self.feed_cut_until = 0.0

    def set_link(self, peer: str, rule: LinkRule) -> None:
        self.links[peer] = rule

    def clear(self) -> None:
        self.links.clear()
        self.feed_cut_until = 0.0

    def feed_cut(self, now: float) -> bool:
        return now < self.feed_cut_until

    def in_force(self, now: float, offset: float) -> dict:
        """What `status` says of them: the link rules and the feed cut still running (with when
        each ends, on the node's clock) and the clock's offset; {} when none is."""
        links = {peer: {**{k: v for k, v in vars(rule).items() if v and k != "until"}, "until": rule.until}
                 for peer, rule in self.links.items() if rule.until > now}
        found: dict = {"links": links} if links else {}
        if self.feed_cut(now):
            found["feed_cut_until"] = self.feed_cut_until
        if offset:
            found["clock_offset_ms"] = round(offset * 1000)
        return found

    def plan(self, peer: str, now: float) -> list[float]:
        rule = self.links.get(peer)
        if rule is None:
            return [now]
        if now >= rule.until:
            del self.links[peer]
            return [now]
        if rule.drop and self.rng.random() < rule.drop:
            return []

        def when() -> float:
            t = now + (rule.delay_ms + self.rng.uniform(0, rule.jitter_ms)) / 1000
            if rule.reorder and self.rng.random() < rule.reorder:
                t += self.rng.uniform(*REORDER_HOLD_S)
            return t

        times = [when()]
        if rule.duplicate and self.rng.random() < rule.duplicate:
            times.append(when())
        return times
