"""Issue 31, part 4: a trial's coverage signature, and guided campaigns that keep and mutate the
worlds that reached something new (orchestrator.lab.guided)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from orchestrator.lab import chaos, guided
from orchestrator.lab.worlds import FAULTS, draw_world, named_users
from orchestrator.sim.network import Network

from ..conftest import xcon


def test_a_decision_is_the_same_whatever_ids_numbers_and_servers_it_names():
    def deferred(msg_id, server, seconds):
        return {"event": "mta.deferred", "node": f"mta.{server}", "msg_id": msg_id, "rcpt": "bob",
                "reason": f"mta.{server}: no answer within {seconds}s"}

    one = guided.decisions([deferred("ex1~0~1", "ex1", 2)])
    assert one == guided.decisions([deferred("ex2~9~4", "ex2", 5)]) == {"mta:mta.deferred:exN: no answer within #s|1"}
    again = guided.decisions([deferred("m", "ex1", 2)] * 9 + [{"event": "mta.failed", "node": "mta.ex1",
                                                               "msg_id": "m", "rcpt": "bob", "reason": "moved"}])
    assert "mta:mta.deferred:exN: no answer within #s|8" in again, "made 8 to 15 times: another bucket"
    assert "mta:mta.deferred:exN: no answer within #s > mta:mta.failed:moved|1" in again, "a step in bob's story"


def test_a_mutated_world_names_only_what_its_parent_has_and_a_seed_gives_the_same_mutant():
    parent = draw_world(11, "sp4", FAULTS)
    aliases = {u["alias"] for u in parent.users}
    for i in range(200):
        child = guided.mutate(parent, random.Random(i), FAULTS)
        assert named_users(child) - {None} <= aliases and child.servers == parent.servers
        assert [e["at"] for e in child.events] == sorted(e["at"] for e in child.events)
        assert any(e["do"] == "send" for e in child.events)
        assert child == guided.mutate(parent, random.Random(i), FAULTS)
    assert len({json.dumps(guided.mutate(parent, random.Random(i), FAULTS).events) for i in range(50)}) > 40


def test_a_guided_campaign_is_the_same_for_the_same_seed_and_keeps_mutating(tmp_path):
    def campaign():
        results, worlds = guided.run(tmp_path, 150, "sp4", FAULTS, Network(), 1, seed=4)
        return [r.digest for r in results], worlds

    (digests, worlds), (again, _) = campaign(), campaign()
    assert digests == again, "a seed gives the same campaign"
    fresh = set(chaos.trial_seeds(4, 150))  # a fresh world's seed is one of the campaign's
    assert all(w.seed in fresh for w in worlds[:64]), "its first round is drawn afresh"
    assert sum(w.seed not in fresh for w in worlds[64:]) > 43, "then most of its worlds are mutations of kept ones"


def test_chaos_guided_writes_each_broken_world_for_its_replay(tmp_path):
    run = xcon("chaos", "--sim", "--guided", "--trials", "120", "--seed", "5", "--mta-build", "legacy", "--json",
               run_dir=tmp_path / "run")
    assert run.returncode == 1, run.stderr
    out = json.loads(run.stdout)
    path = re.search(r"--world (\S+)", out["replay"]).group(1)
    assert Path(path).exists() and out["first_broken"]["run_dir"]
    again = xcon("chaos", "--sim", "--world", path, "--json", run_dir=tmp_path / "run")
    assert again.returncode == 1 and json.loads(again.stdout)["totals"]["lost"] == out["first_broken"]["counts"]["lost"]
