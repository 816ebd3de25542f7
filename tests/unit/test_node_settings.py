"""What each node's core reads of the cluster's settings (nodes/node_settings.py): worked out
once per node, written into cluster.json by every save, read back checked, and worked out the
same way for a cluster.json made before there were any."""

from __future__ import annotations

import json

import pytest

from nodes.config import ClusterConfig, Settings
from nodes.node_settings import (
    REPLICATION_WAIT_MS,
    DirectorySettings,
    ImsSettings,
    MtaSettings,
    OrchestratorSettings,
    StoreSettings,
    from_json,
    of,
    quiet_bound_ms,
    to_json,
)


def test_each_kind_of_node_gets_its_own_settings_in_its_own_terms():
    s = Settings(("ex1", "ex2", "ex3"), "sp4", replication_lag_ms=1000, replication_step_ms=100,
                 sites=("HQ", "HQ", "BRANCH"), intersite_lag_ms=5000, expire_ms=70_000, transfer_retry_ms=None,
                 retry_ms=400, smtp=True, smtp_auth=True, soft_delete_ms=9, seed=3)
    mta = of(s, "mta.ex3")
    assert isinstance(mta, MtaSettings) and mta.build == "sp4" and mta.site == "BRANCH"
    assert mta.cache_lag_ms == 1000 + 2 * 100 + 5000, "the lag, this server's step, its site's connector"
    assert mta.transfer_retry_ms == 400 and mta.smtp and mta.cache_seed == 3000 + sum(map(ord, "ex3"))
    assert (mta.lifetimes.of("normal"), mta.lifetimes.of("urgent"), mta.lifetimes.report_s) == (70.0, 20.0, 140.0)
    assert of(s, "mta.ex1").cache_lag_ms == 1000 and of(s, "mta.ex1").site == "HQ"
    assert of(s, "store.ex1") == StoreSettings(s.min_free_bytes, 9, False)
    assert of(s, "directory") == DirectorySettings(("ex1", "ex2", "ex3"))
    orch = of(s, "orchestrator")
    assert isinstance(orch, OrchestratorSettings) and orch.sites == {"ex1": "HQ", "ex2": "HQ", "ex3": "BRANCH"}
    assert orch.replication_wait_ms == REPLICATION_WAIT_MS, "120 s: longer than three of this cluster's slowest lag"
    # a workaround's move waits three times the slowest MTA's lag where that is longer: Exchange 5.5's own
    assert of(Settings.from_profile("exchange55"), "orchestrator").replication_wait_ms == 3 * (300_000 + 30_000)
    far = Settings(("ex1", "ex2"), sites=("HQ", "BRANCH"), intersite_lag_ms=60_000, replication_jitter_ms=500)
    assert of(far, "orchestrator").replication_wait_ms == 3 * (2000 + 60_000 + 500)
    ims = of(s, "ims.ex2")
    assert isinstance(ims, ImsSettings) and ims.smtp_auth and not ims.smtp_tls and ims.retry_ms == 400
    with pytest.raises(KeyError):
        of(s, "imap.ex1")  # Dovecot's config is its own
    for node in ("mta.ex2", "store.ex2", "directory", "orchestrator", "ims.ex1"):
        assert from_json(node, json.loads(json.dumps(to_json(of(s, node))))) == of(s, node)


def test_cluster_json_carries_each_nodes_settings_and_one_made_before_them_still_reads(tmp_path):
    s = Settings(("ex1", "ex2"), "reroute", replication_lag_ms=300)
    nodes = {n: {"kind": n.split(".")[0], "endpoints": {}, "log": "x"} for n in ("directory", "mta.ex1", "imap.ex1")}
    ClusterConfig(tmp_path, s, nodes).save()
    saved = json.loads((tmp_path / "cluster.json").read_text())["nodes"]
    assert saved["mta.ex1"]["settings"]["cache_lag_ms"] == 300 and "settings" not in saved["imap.ex1"]
    assert ClusterConfig.load(tmp_path).node_settings("mta.ex1") == of(s, "mta.ex1")
    # the node reads its own entry, as `up` wrote it
    data = json.loads((tmp_path / "cluster.json").read_text())
    data["nodes"]["mta.ex1"]["settings"]["cache_lag_ms"] = 4321
    (tmp_path / "cluster.json").write_text(json.dumps(data))
    assert ClusterConfig.load(tmp_path).node_settings("mta.ex1").cache_lag_ms == 4321
    # a cluster.json of the release before: none, so they are worked out from the cluster's
    for node in data["nodes"].values():
        node.pop("settings", None)
    (tmp_path / "cluster.json").write_text(json.dumps(data))
    assert ClusterConfig.load(tmp_path).node_settings("mta.ex1") == of(s, "mta.ex1")
    # an orchestrator's of the commit before replication_wait_ms: the 120 s it ran with
    old = {k: v for k, v in to_json(of(s, "orchestrator")).items() if k != "replication_wait_ms"}
    assert from_json("orchestrator", old).replication_wait_ms == REPLICATION_WAIT_MS


def test_a_wait_for_quiet_is_a_minute_or_as_long_as_slower_timings_need():
    assert quiet_bound_ms(Settings()) == 60_000, "the lab's: a minute"
    # Exchange 5.5's: twice three times 330 s of replication, and three of its 600 s retry
    assert quiet_bound_ms(Settings.from_profile("exchange55")) == 2 * 3 * 330_000 + 3 * 600_000
    assert quiet_bound_ms(Settings(retry_ms=1000, transfer_retry_ms=50_000)) == 2 * 3 * 2500 + 3 * 50_000
