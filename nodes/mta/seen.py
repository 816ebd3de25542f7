"""What an MTA remembers of the pairs it finished, so that a retransmitted transfer is refused.

A message is remembered from its retirement until `remember_s` after it was first accepted, by
when no peer can still be retrying it. One short string per message, `"<accepted_at> rcpt=hops
..."`: a dict per message and a second map for the times took about 450 bytes a message, which
at a few thousand messages a second was most of a busy MTA's memory. Forgetting goes in the order
things were remembered; an entry behind one that is not due yet waits for it (it is kept a little
longer, never forgotten early).
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator


class Seen:
    def __init__(self, remember_s: float, remembered: Iterable[tuple[str, dict[str, int], float]] = ()):
        """`remembered`: (msg_id, {rcpt: hops}, accepted_at) as the spool read them back; a
        restart remembers them oldest first."""
        self.remember_s = remember_s
        self._by_msg: dict[str, str] = {}
        self._order: deque[str] = deque()
        for msg_id, hops, accepted_at in sorted(remembered, key=lambda r: r[2]):
            self.add(msg_id, hops, accepted_at)

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._by_msg

    def __len__(self) -> int:
        return len(self._by_msg)

    def hops(self, msg_id: str) -> dict[str, int]:
        """rcpt -> the hop count at which this MTA took the pair on; {} for a message not seen."""
        entry = self._by_msg.get(msg_id)
        return {} if entry is None else _read(entry)[1]

    def accepted_at(self, msg_id: str) -> float:
        return float(self._by_msg[msg_id].split(" ", 1)[0])

    def add(self, msg_id: str, hops: dict[str, int], accepted_at: float) -> None:
        known = self.hops(msg_id)
        for rcpt, h in hops.items():
            known[rcpt] = max(known.get(rcpt, -1), h)
        if msg_id not in self._by_msg:
            self._order.append(msg_id)
        self._by_msg[msg_id] = " ".join([repr(accepted_at), *[f"{r}={h}" for r, h in known.items()]])

    def prune(self, now: float) -> int:
        """Forget what is past its time; returns how many messages were forgotten."""
        forgotten = 0
        while self._order:
            msg_id = self._order[0]
            if msg_id in self._by_msg and self.accepted_at(msg_id) + self.remember_s >= now:
                break
            self._order.popleft()
            if self._by_msg.pop(msg_id, None) is not None:
                forgotten += 1
        return forgotten

    def items(self) -> Iterator[tuple[str, dict[str, int], float]]:
        for msg_id, entry in self._by_msg.items():  # one read per entry: a compaction reads them all
            at, hops = _read(entry)
            yield msg_id, hops, at


def _read(entry: str) -> tuple[float, dict[str, int]]:
    """An entry, `"<accepted_at> rcpt=hops ..."`, as (accepted_at, {rcpt: hops})."""
    at, *pairs = entry.split(" ")
    return float(at), {rcpt: int(h) for rcpt, _, h in (p.rpartition("=") for p in pairs)}
