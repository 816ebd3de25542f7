"""Cluster.wait: quiet only when two polls in a row see every MTA idle and nothing written between;
and it waits through a node that does not answer for a while (`xcon wait` exited 3 at a paused MTA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.config import ClusterConfig, Settings
from orchestrator import cluster as cl
from orchestrator.cluster.client import NoAnswer


class NoSleep(cl.WallClock):
    """The wall clock, with sleeps that return at once: the script answers at each poll anyway."""

    sleep = staticmethod(lambda seconds: None)


class Scripted(cl.Cluster):
    """A cluster whose nodes answer status from a script, one poll (a row of answers) at a time."""

    def __init__(self, polls: list[dict[str, dict]]):
        self.config = ClusterConfig(Path("/nonexistent"), Settings(), {})
        self.polls = polls
        self.asked = 0
        self.clock = NoSleep()

    def status_of(self, node: str) -> dict:
        if node == "orchestrator":
            self.asked += 1
            return {"active": False}
        answer = self.polls[min(self.asked, len(self.polls)) - 1][node]
        if answer is None:  # paused, say: a real client's request times out
            raise NoAnswer(f"{node} did not answer within 2s")
        return answer


def mta(open_pairs: int, records: int) -> dict:
    return {"open_pairs": open_pairs, "spool": {"records": records}}


def test_a_pair_handed_between_two_polls_of_one_round_is_not_missed():
    # poll 1: mta.ex1 asked before the transfer reached it, mta.ex2 after it was acknowledged;
    # poll 2: mta.ex1 took it on meanwhile (one more record), and finished; poll 3: settled
    c = Scripted([{"mta.ex1": mta(0, 10), "mta.ex2": mta(0, 20)},
                  {"mta.ex1": mta(0, 12), "mta.ex2": mta(0, 20)},
                  {"mta.ex1": mta(0, 12), "mta.ex2": mta(0, 20)}])
    assert c.wait(5.0)
    assert c.asked == 3, "one poll's idleness alone was taken for quiet"


def test_busy_mtas_are_not_quiet():
    c = Scripted([{"mta.ex1": mta(1, 10), "mta.ex2": mta(0, 20)}])
    assert not c.wait(0.01)


def test_a_wait_goes_on_through_a_node_that_does_not_answer_for_a_while():
    """It exited 3 at the first poll of an MTA paused for a few seconds (`xcon fault pause`)."""
    silent = {"mta.ex1": mta(0, 10), "mta.ex2": None}
    c = Scripted([silent, silent, {"mta.ex1": mta(0, 10), "mta.ex2": mta(0, 20)}])
    assert c.wait(5.0) is True
    assert c.asked == 4, "two polls without an answer, then two that agree"
    with pytest.raises(NoAnswer, match="^mta.ex2 did not answer within 2s$"):  # at the end, the silent node named
        Scripted([silent]).wait(0.05)
