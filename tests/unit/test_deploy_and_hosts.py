"""The files `xcon deploy` writes from a hosts list, and the network plan of a netns cluster:
pure functions, no root needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.config import ClusterConfig, Settings
from orchestrator.cluster import deploy
from orchestrator import netns


HOSTS = """
# host  address     roles
dc1     10.0.0.10   directory,orchestrator
mail1   10.0.0.11   ex1   # a comment
mail2   10.0.0.12   ex2
"""


def test_a_hosts_list_becomes_cluster_json_keys_and_a_unit_per_node(tmp_path):
    hosts = deploy.parse_hosts(HOSTS)
    made = deploy.generate(hosts, tmp_path / "site", tmp_path / "root", Settings(mta_build="sp4"), "/opt/py",
                           namespaces=True)
    config = ClusterConfig.load(tmp_path / "site")
    assert config.deployed and config.settings.servers == ("ex1", "ex2") and config.run_dir == tmp_path / "root"
    assert config.endpoint("mta.ex1") == "tcp://10.0.0.11:7010" and config.endpoint("store.ex1") == "tcp://10.0.0.11:7020"
    assert config.endpoint("directory", "pub") == "tcp://10.0.0.10:7001"
    assert (tmp_path / "site" / "keys" / "cluster.key_secret").exists() and len(made["units"]) == 6
    command, ns = deploy.unit_command((tmp_path / "site" / "units" / "xcon-mta.ex2.service").read_text())
    assert command == ["/opt/py", "-m", "nodes.mta", "--run-dir", str(tmp_path / "root"), "--name", "mta.ex2"]
    assert ns == "mail2"
    with pytest.raises(deploy.DeployError, match="not empty"):
        deploy.generate(hosts, tmp_path / "site", tmp_path / "root", Settings(), "/opt/py")


def test_the_deploy_readme_generates_what_it_says_from_hosts_example(tmp_path, monkeypatch):
    """deploy/README.md's block "generate", run as written (in the CLI, in-process) where
    hosts.txt is deploy/hosts.example, the list the README shows."""
    from click.testing import CliRunner

    from orchestrator.cli import xcon

    from .. import docblocks

    (command,) = docblocks.commands("deploy/README.md", "generate")
    (tmp_path / "hosts.txt").write_text((docblocks.ROOT / "deploy" / "hosts.example").read_text())
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(xcon, docblocks.adapted(command))
    assert result.exit_code == 0, result.output
    config = ClusterConfig.load(tmp_path / "xcon-site")
    assert config.deployed and config.run_dir == Path("/var/lib/xcon") and config.settings.mta_build == "sp4"
    assert config.endpoint("mta.ex1") == "tcp://10.0.0.11:7010"
    unit = (tmp_path / "xcon-site" / "units" / "xcon-mta.ex1.service").read_text()
    assert deploy.unit_command(unit)[0] == ["/opt/xcon/venv/bin/python", "-m", "nodes.mta", "--run-dir", "/var/lib/xcon",
                                            "--name", "mta.ex1"]
    assert {p.name for p in (tmp_path / "xcon-site").iterdir()} >= {"cluster.json", "keys", "units", "logs"}


@pytest.mark.parametrize("text, error", [
    ("dc1 10.0.0.1 directory\n", "orchestrator"),
    ("dc1 10.0.0.1 directory,orchestrator\n", "no host has a server"),
    ("dc1 10.0.0.1 directory,orchestrator\nm 10.0.0.2 ex2\n", "ex1..exN"),
    ("dc1 10.0.0.300 directory,orchestrator,ex1\n", "line 1: '10.0.0.300' is not an IP address"),
    ("dc1 10.0.0.1 directory,orchestrator,ex1\nm 10.0.0.2 ex1\n", "line 2: ex1 is on dc1 already"),
    ("dc1 10.0.0.1 directory,orchestrator,mailbox\n", "unknown role 'mailbox'"),
    ("dc1 10.0.0.1\n", "want HOST ADDRESS ROLE"),
    ("dc1 10.0.0.1 directory,orchestrator,ex1\ndc1 10.0.0.2 ex2\n", "named twice"),
])
def test_a_hosts_list_that_cannot_make_a_cluster_is_refused_naming_why(text, error):
    with pytest.raises(deploy.DeployError, match=error):
        deploy.parse_hosts(text)


def test_a_netns_plan_puts_an_mta_and_its_store_on_one_host_at_their_own_ports(tmp_path):
    plan = netns.plan(tmp_path, ("ex1", "ex2"), taken={"198.18.0"})
    assert plan["subnet"] == "198.18.1.0/24" and plan["bridge_address"] == "198.18.1.254"
    assert list(plan["hosts"]) == ["directory", "orchestrator", "ex1", "ex2"]
    assert all(len(h["veth"]) <= 15 for h in plan["hosts"].values()) and len(plan["bridge"]) <= 15
    mta, store = netns.endpoints(plan, "mta.ex1"), netns.endpoints(plan, "store.ex1")
    assert mta["router"].rsplit(":", 1)[0] == store["router"].rsplit(":", 1)[0] and mta != store
    assert netns.exec_prefix(plan, "store.ex2")[-1] == plan["hosts"]["ex2"]["ns"]
    json.dumps(plan)  # a plain record, kept in cluster.json


def test_netns_refuses_clearly_without_root(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(netns.NetworkError, match="needs root"):
        netns.check_tools()
