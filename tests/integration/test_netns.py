"""A cluster on hosts of its own (xcon up --network netns): network namespaces on a bridge, and
the kernel's faults on their links. Needs root and iproute2 (CI runs as root on these machines)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from orchestrator import netns
from orchestrator.lab import chaos
from orchestrator.cluster.rundir import node_processes

from .. import docblocks
from ..conftest import SEED, wait_for_event, xcon, xcon_json

IP = netns._which("ip") or "ip"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or netns._which("ip") is None,
                                reason="network namespaces need root and iproute2")


@pytest.fixture
def netns_run(tmp_path):
    """A run-dir whose cluster (and network) is taken down, and checked gone, after the test."""
    run = tmp_path / "run"
    yield run
    if (run / "cluster.json").exists() or (run / netns.RECORD).exists():
        record = netns.load(run)
        down = xcon("down", "--force", run_dir=run)
        assert not record or netns.leftovers(record) == [], f"the network outlived xcon down: {down.stdout}{down.stderr}"


def up(run: Path, *args: str) -> dict:
    proc = xcon("up", "--network", "netns", "--seed", str(SEED), *args, "--json", run_dir=run)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def logs(run: Path, *args: str) -> list[dict]:
    """`xcon logs --json`: one event a line."""
    out = xcon("logs", *args, "--json", run_dir=run, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def namespaces() -> set[str]:
    return {line.split()[0] for line in subprocess.run([IP, "netns", "list"], capture_output=True,
                                                      text=True).stdout.splitlines() if line.strip()}


@pytest.mark.long
def test_the_docs_steps_on_hosts_of_their_own_lose_the_message_and_down_leaves_nothing(netns_run):
    """docs/hosts.md's block "netns" with the README's steps by hand in the middle, as the doc says
    ("then the README's steps by hand, unchanged"); its campaign with one trial."""
    hosts = docblocks.commands("docs/hosts.md", "netns")
    by_hand = docblocks.without(docblocks.commands("README.md", "by-hand"), ". .venv/bin/activate", "xcon up",
                                "xcon down")
    campaign = hosts[-1].replace("--trials 20", "--trials 1")
    assert campaign != hosts[-1] and hosts[0].startswith("xcon up --network netns")
    lines = [hosts[0], *by_hand, *hosts[1:-1], campaign]
    ran, proc = docblocks.run(lines, netns_run.parent, run_dir=netns_run, timeout=400)
    assert [c for c, _, _ in ran] == lines, proc.stdout + proc.stderr
    printed = {c: (out, rc) for c, out, rc in ran}
    refused = {c for c, (out, rc) in printed.items() if rc != 0}
    check, _ = printed["xcon check"]
    assert re.search(r"^LOST \S+ -> bob", check, re.M), check
    netem = next(c for c in hosts if "--delay-ms" in c)  # refused, with the reason, on a kernel without netem
    assert refused <= {"xcon check", netem}, {c: printed[c] for c in refused}
    assert netem not in refused or "netem" in printed[netem][0] + proc.stderr
    assert "198.18." in printed["xcon status"][0], "each node's host and address"
    # the cluster's network and every trial's (a network is named from its run-dir) are gone
    # results/<time>-campaign-SEED-sp4-netns: its one trial's run-dir
    (campaign_dir,) = (p for p in netns_run.glob("results/*-campaign-*") if not p.is_symlink())
    seed = chaos.trial_seeds(int(campaign_dir.name.split("-campaign-")[1].split("-")[0]), 1)[0]
    runs = [netns_run, campaign_dir / f"trial-0000-{seed}"]
    assert len(runs) == 2, runs
    for run in runs:
        assert netns.leftovers(netns.plan(run, ("ex1", "ex2"), taken=set())) == [], run
    assert node_processes(netns_run) == {}


@pytest.mark.parametrize("build", ["sp4", "reroute"])
def test_a_partition_between_the_mtas_during_a_move_loses_and_duplicates_nothing_once_healed(netns_run, build):
    up(netns_run, "--mta-build", build, "--replication-lag-ms", "300", "--replication-jitter-ms", "0",
       "--retry-ms", "300")
    for args in (("carol", "--server", "ex1"), ("alice", "--server", "ex2"),
                 ("bob", "--server", "ex1", "--alternate", "carol", "--deliver-to-both")):
        xcon("user", "add", *args, run_dir=netns_run, check=True)
    xcon("fault", "partition", "ex1", "ex2", run_dir=netns_run, check=True)
    xcon("move", "bob", "--to", "ex2", "--copy-delay-ms", "500", "--no-wait", run_dir=netns_run, check=True)
    for sender, to in (("alice", "bob"), ("carol", "alice"), ("alice", "carol,bob"), ("bob", "alice")):
        xcon("send", "--from", sender, "--to", to, run_dir=netns_run, check=True)
    xcon("fault", "heal", run_dir=netns_run, check=True)
    xcon("wait", "--timeout", "90", run_dir=netns_run, check=True)
    report = xcon_json("check", run_dir=netns_run)
    counts = report["counts"]
    assert counts["lost"] == counts["duplicated"] == counts["pending"] == 0, report
    events = [e["kind"] for e in logs(netns_run, "--event", "fault.injected")]
    assert events.count("partition") == 1 and events.count("heal") == 1


def test_a_shaped_link_shows_in_the_traced_latency_and_an_unknown_shaping_is_a_clear_error(netns_run):
    """netem's delay where the kernel has it; a rate limit (tbf) everywhere. A fault this kernel
    cannot make is refused in one line and changes nothing."""
    up(netns_run, "--mta-build", "sp4", "--replication-lag-ms", "100", "--replication-jitter-ms", "0")
    xcon("user", "add", "alice", "--server", "ex2", run_dir=netns_run, check=True)
    xcon("user", "add", "bob", "--server", "ex1", run_dir=netns_run, check=True)
    body = "x" * 24_000

    def latency() -> float:
        msg = xcon("send", "--from", "alice", "--to", "bob", "--body", body, run_dir=netns_run, check=True).stdout.strip()
        # an event, not `xcon wait`: through a link this slow a status answer may take seconds
        wait_for_event(netns_run, timeout=60, event="store.delivered", msg_id=msg)
        events = logs(netns_run, "--msg", msg)
        at = {e["event"]: e["ts"] for e in events if e["event"] in ("mta.accepted", "store.delivered")}
        return at["store.delivered"] - at["mta.accepted"]

    plain = latency()
    record = netns.load(netns_run)
    if netns.netem_available(record):
        xcon("fault", "net", "ex2", "--delay-ms", "400", run_dir=netns_run, check=True)
        slowest = 0.4
    else:
        refused = xcon("fault", "net", "ex2", "--delay-ms", "400", run_dir=netns_run)
        assert refused.returncode == 3 and "no netem" in refused.stderr and len(refused.stderr.splitlines()) == 1
        qdisc = subprocess.run([IP, "netns", "exec", record["hosts"]["ex2"]["ns"], "tc", "qdisc", "show", "dev",
                                "eth0"], capture_output=True, text=True).stdout
        assert "netem" not in qdisc and "tbf" not in qdisc
        # 24 kB through 64 kbit/s takes 3 s, whatever the kernel's qdiscs
        xcon("fault", "net", "ex2", "--rate", "64", run_dir=netns_run, check=True)
        slowest = 1.5
    shaped = latency()
    # bounds a busy machine cannot break: the shaping adds at least `slowest` (load only adds to
    # it), and once healed the link has no qdisc of ours and a delivery is faster than shaped
    assert shaped > slowest and shaped > plain, (plain, shaped)
    xcon("fault", "heal", run_dir=netns_run, check=True)
    qdisc = subprocess.run([IP, "netns", "exec", record["hosts"]["ex2"]["ns"], "tc", "qdisc", "show", "dev", "eth0"],
                           capture_output=True, text=True).stdout
    assert "netem" not in qdisc and "tbf" not in qdisc, qdisc
    healed = latency()
    assert healed < shaped, (plain, shaped, healed)


def test_down_force_after_a_crash_removes_the_network_with_cluster_json_gone(netns_run):
    record = up(netns_run, "--mta-build", "sp4")["network"]
    for pid in node_processes(netns_run):
        os.kill(pid, signal.SIGKILL)
    (netns_run / "cluster.json").unlink()
    assert netns.leftovers(record)  # the crash left the hosts behind
    down = xcon("down", "--force", run_dir=netns_run)
    assert down.returncode == 0 and netns.leftovers(record) == []
    again = xcon("down", "--force", run_dir=netns_run)
    assert again.returncode == 0 and "nothing to stop" in again.stdout


@pytest.mark.long
def test_the_deployed_files_start_every_node_on_its_own_host_and_the_kb_runs_against_them(tmp_path):
    """`xcon deploy` for hosts that are namespaces on this machine: each generated unit's command
    runs in its own namespace (as systemd would, NetworkNamespacePath), and the KB by hand and
    `xcon check` run against that cluster."""
    from orchestrator.cluster import deploy

    (tmp_path / "net").mkdir()
    net = netns.ensure(tmp_path / "net", ("ex1", "ex2"), None)  # the "machines"
    started: list[subprocess.Popen] = []
    try:
        hosts = tmp_path / "hosts"
        hosts.write_text("".join(f"{h['ns']} {h['address']} {role}\n" for role, h in
                                 (("directory", net["hosts"]["directory"]),
                                  ("orchestrator", net["hosts"]["orchestrator"]),
                                  ("ex1", net["hosts"]["ex1"]), ("ex2", net["hosts"]["ex2"]))))
        site = tmp_path / "site"
        made = xcon("deploy", "--hosts", str(hosts), "--out", str(site), "--root", str(site), "--namespaces",
                    "--mta-build", "sp4", "--json", check=True)
        units = json.loads(made.stdout)["units"]
        assert len(units) == 6
        for unit in units:
            command, ns = deploy.unit_command(Path(unit).read_text())
            assert ns in {h["ns"] for h in net["hosts"].values()}
            started.append(subprocess.Popen([IP, "netns", "exec", ns, *command], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True))
        for node in ("directory", "orchestrator", "store.ex1", "store.ex2", "mta.ex1", "mta.ex2"):
            wait_for_event(site, timeout=30, node=node, event="node.started")
        status = xcon_json("status", run_dir=site)
        assert all(n["alive"] for n in status["nodes"].values()), status
        # deploy/README.md's blocks "use" and "gather", on this one machine: XCON_RUN_DIR is the
        # site's folder, and there is nothing to gather
        use = docblocks.without(docblocks.commands("deploy/README.md", "use"), "export XCON_RUN_DIR=")
        gather = docblocks.without(docblocks.commands("deploy/README.md", "gather"), "for h in")
        ran, proc = docblocks.run([*use, *gather], tmp_path, run_dir=site, timeout=120)
        assert [(c, rc) for c, _, rc in ran] == [(c, 0) for c in [*use, *gather]], proc.stdout + proc.stderr
        printed = {c: out for c, out, _ in ran}
        msg = printed[next(c for c in use if c.startswith("xcon send"))].strip()
        report = xcon_json("check", run_dir=site)
        counts = report["counts"]
        # sp4: the message sent in the move window reaches bob, or alice gets the NDR; never lost
        assert counts["lost"] == counts["duplicated"] == counts["pending"] == 0, report
        assert report["pairs"] == counts["delivered"] + counts["ndr"] == 2, report  # carol, and bob either way
        bob = printed["xcon wait && xcon mailbox bob"]
        alice = xcon("mailbox", "alice", run_dir=site, check=True).stdout
        assert msg and (msg in bob or msg in alice)
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
        netns.destroy(net)
    assert netns.leftovers(net) == []


@pytest.mark.skipif(not Path("/usr/sbin/postfix").exists(), reason="Debian's postfix is not installed (.ci/run installs it)")
def test_the_outside_world_is_a_real_postfix_on_its_own_host_and_sp4s_dsn_reaches_it(netns_run):
    """xcon up --network netns --smtp: each IMS on port 25 of its server's address, and a Postfix
    on the `internet` host as the smarthost. The KB from outside, sp4: ann@outside.test's DSN
    crosses the bridge to that Postfix, which files it in the run-dir."""
    import smtplib

    run = netns_run
    imap = Path("/usr/sbin/dovecot").exists()
    up(run, "--smtp", *(["--imap"] if imap else []), "--mta-build", "sp4", "--replication-lag-ms", "1500",
       "--replication-jitter-ms", "0")
    assert xcon("endpoint", "ims.ex2", run_dir=run, check=True).stdout.strip().endswith(":25")
    xcon("user", "add", "carol", "--server", "ex1", run_dir=run, check=True)
    xcon("user", "add", "bob", "--server", "ex1", "--alternate", "carol", "--deliver-to-both", run_dir=run, check=True)
    xcon("fault", "hold-at-step", "--step", "copy", run_dir=run, check=True)
    xcon("move", "bob", "--to", "ex2", "--no-wait", run_dir=run, check=True)
    wait_for_event(run, event="move.step", step="copy")
    host, port = xcon("endpoint", "ims.ex2", run_dir=run, check=True).stdout.strip().split(":")
    with smtplib.SMTP(host, int(port), timeout=30) as client:  # over the bridge, to ex2's host
        client.sendmail("ann@outside.test", ["bob@xcon.test"], b"Subject: from outside\r\n\r\nhi\r\n")
    msg = wait_for_event(run, event="ims.accepted")["msg_id"]
    wait_for_event(run, event="mta.deferred", msg_id=msg, rcpt="bob")
    xcon("fault", "release", run_dir=run, check=True)
    xcon("wait", run_dir=run, check=True)
    received = wait_for_event(run, node="internet", event="internet.received", rcpt="ann@outside.test")
    assert received["report"] is True and "Undeliverable" in received["subject"]
    (dsn,) = (run / "internet" / "ann" / "new").iterdir()
    assert b"Final-Recipient: rfc822; bob@xcon.test" in dsn.read_bytes() and b"Action: failed" in dsn.read_bytes()
    assert json.loads(xcon("check", "--json", run_dir=run).stdout)["counts"]["ndr"] == 1
    if imap:  # carol reads the alternate's copy over IMAP, at port 143 of her server's host
        import imaplib

        host, port = xcon("endpoint", "imap.ex1", run_dir=run, check=True).stdout.strip().split(":")
        assert port == "143"
        with imaplib.IMAP4(host, int(port), timeout=30) as reader:
            reader.login("carol", "carol")
            reader.select("INBOX")
            assert reader.search(None, 'SUBJECT "from outside"')[1] == [b"1"]
