"""orchestrator/cluster/spec.py: `xcon up`'s options as an UpSpec, built from the command's own
parse (click's make_context: no process is started) and judged before anything is made."""

from __future__ import annotations

from nodes.config import PROFILES, Settings
from orchestrator.cli.cluster import up, up_spec
from orchestrator.cluster.spec import UpSpec


def spec_of(*argv: str) -> UpSpec:
    """The spec `xcon up ARGV` builds, by the command's own parse and builder."""
    return up_spec(up.make_context("up", list(argv)))


def test_no_options_are_the_lab_profile_on_two_servers_and_name_nothing():
    spec = spec_of()
    assert spec.settings == Settings.from_profile("lab", 1.0, servers=("ex1", "ex2"))
    assert spec.given == frozenset() and spec.users == 0 and spec.problem() is None


def test_a_timing_given_replaces_the_profiles_and_only_it_is_named():
    spec = spec_of("--replication-lag-ms", "300", "--servers", "3", "--no-fsync", "--users", "4")
    assert spec.settings.replication_lag_ms == 300
    assert spec.settings.retry_ms == PROFILES["lab"]["retry_ms"]
    assert spec.settings.servers == ("ex1", "ex2", "ex3") and spec.settings.fsync is False
    assert spec.given == {"replication_lag_ms", "servers", "fsync"}  # --users is no setting
    assert [u["home"] for u in spec.organisation()] == ["ex1", "ex2", "ex3", "ex1"]


def test_a_profile_named_names_every_timing_it_brings():
    spec = spec_of("--profile", "exchange55", "--time-scale", "0.01", "--retry-ms", "50")
    assert spec.given >= set(PROFILES["lab"]) | {"profile", "time_scale"}
    assert spec.settings.retry_ms == 50  # the option, not the shrunk profile's
    assert spec.settings.replication_lag_ms == round(PROFILES["exchange55"]["replication_lag_ms"] * 0.01)


def test_sites_come_from_their_options():
    spec = spec_of("--servers", "3", "--site", "HQ=ex1,ex2", "--site", "BR=ex3")
    assert spec.settings.sites == ("HQ", "HQ", "BR") and spec.wan_hosts() == ["ex3"]


def test_what_cannot_start_is_one_line_before_anything_is_made(tmp_path):
    bad = {
        ("--smarthost", "relay:25"): "--smarthost, --smtp-tls and --smtp-auth need --smtp",
        ("--smtp", "--smarthost", "relay"): "--smarthost: HOST:PORT, got 'relay'",
        ("--wan-delay-ms", "50"): "--wan-delay-ms needs --network netns",
        ("--network", "netns", "--wan-delay-ms", "50"): "--wan-delay-ms needs --network netns",
    }
    for argv, reason in bad.items():
        problem = spec_of("--run-dir", str(tmp_path / "c"), *argv).problem()
        assert problem is not None and problem.startswith(reason), (argv, problem)
        assert "\n" not in problem
    assert spec_of("--smtp", "--smarthost", "relay.example:2525").problem() is None
    assert spec_of("--network", "netns", "--site", "A=ex1", "--site", "B=ex2",
                   "--wan-delay-ms", "50").problem() is None
    assert not (tmp_path / "c").exists()
