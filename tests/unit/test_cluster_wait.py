"""Cluster.wait: quiet only when two polls in a row see every MTA idle and nothing written between;
and it waits through a node that does not answer for a while (`xcon wait` exited 3 at a paused MTA).
Cluster.wait_move (`xcon move`): through an orchestrator paused for a while, not for a dead one."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.config import ClusterConfig, Settings
from orchestrator import cluster as cl
from orchestrator.cluster.client import ClusterError, NoAnswer
from orchestrator.sim.cluster import SimCluster
from orchestrator.sim.world import Network


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


def test_a_time_out_of_0_still_polls_twice():
    """`xcon wait --timeout 0` asks "quiet now?": it gave up after the first poll, and said busy."""
    idle = {"mta.ex1": mta(0, 10), "mta.ex2": mta(0, 20)}
    c = Scripted([idle, idle])
    assert c.wait(0) and c.asked == 2


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


def moving(copy_delay_ms: int) -> tuple[SimCluster, str]:
    """A simulated cluster (the orchestrator's silence on the virtual clock, as a real one's on
    the wall clock) with bob's move to ex2 started."""
    cluster = SimCluster(Settings(("ex1", "ex2"), "sp4", seed=7), Network())
    cluster.add_user("bob", "ex1")
    return cluster, cluster.move("bob", "ex2", copy_delay_ms=copy_delay_ms, wait=False)["move_id"]


def test_a_move_is_waited_for_through_an_orchestrator_paused_for_a_while():
    """`xcon move` gave up with "orchestrator did not answer" at the first poll that met a pause
    longer than the client's time-out (5 s), though the move went on to its end."""
    cluster, move_id = moving(3000)
    world = cluster.world
    world.pause("orchestrator")
    world.at(world.now + 8.0, world.resume, "orchestrator")
    start = world.now
    assert cluster.wait_move(move_id)["step"] == "done"
    assert world.now - start >= 8.0, "it waited the pause out"


def test_a_move_waited_for_while_the_orchestrator_is_down_is_said_at_once():
    cluster, move_id = moving(3000)
    cluster.world.kill("orchestrator")
    start = cluster.world.now
    with pytest.raises(ClusterError, match=f"the orchestrator is down: move {move_id} goes on from its journal"):
        cluster.wait_move(move_id)
    assert cluster.world.now - start < 10, "one unanswered poll, not the move's whole time-out"
