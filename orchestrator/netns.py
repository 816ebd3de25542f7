"""A cluster's hosts as Linux network namespaces on one bridge (`xcon up --network netns`).

Each server's MTA and store share a host, and the directory and the orchestrator have one each.
A host is a network namespace with one veth into a bridge in the root namespace; the root side
has the bridge's address, so xcon's own commands reach every node. Addresses come from the
benchmarking range 198.18.0.0/15, a /24 per cluster; no host has a default route and nothing is
NATed, so no packet leaves the machine.

What a cluster's network is made of is a plain record (`plan`), kept in cluster.json and in
`<run-dir>/network.json`, so that `xcon down` (or `xcon down --force` after a crash) removes
exactly what was made, and a resumed cluster gets the same hosts and addresses back.

Kernel faults act on a host's link (its veth, egress): `net` (tc netem: delay, jitter, loss,
duplicate, reorder, rate; a rate alone goes through tbf, which needs no netem), `partition`
(blackhole routes between two hosts, one or both ways) and `heal` (all of it undone).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

from nodes.config import libc

# every host has its own address, so the ports are fixed; an MTA and its store share a host
PORTS = {"directory": {"router": 7000, "pub": 7001}, "orchestrator": {"router": 7002}, "mta": {"router": 7010},
         "store": {"router": 7020}, "ims": {"router": 7030, "smtp": 25}, "imap": {"router": 7031, "imap": 143},
         "internet": {"router": 7040, "smtp": 25}}
OUTSIDE = ("smtp", "imap")  # endpoints of the outside world's protocols: HOST:PORT, not ZeroMQ's tcp://
BRIDGE_HOST = 254  # the root namespace's address on the bridge: where xcon's commands come from
LOCK = Path("/run/xcon-netns.lock")  # two `xcon up` choosing a /24 at once must not choose the same
RECORD = "network.json"


class NetworkError(Exception):
    """A network could not be made or changed; the message says why and what to do."""


def host_of(node: str) -> str:
    """The host a node runs on: its server's for an MTA or a store, its own for the others."""
    kind, _, server = node.partition(".")
    return server or kind


def hosts_for(servers: tuple[str, ...], smtp: bool = False) -> list[str]:
    """The hosts of a cluster; with `smtp`, the outside world's too (`internet`: nodes.internet)."""
    return ["directory", "orchestrator", *servers, *(["internet"] if smtp else [])]


def check_tools() -> None:
    """A clear error, before anything is made, when this machine cannot make namespaces."""
    if os.geteuid() != 0:
        raise NetworkError("--network netns needs root (it makes network namespaces, veths and a bridge); "
                           "run xcon as root, or use --network loopback")
    missing = [t for t in ("ip", "tc") if _which(t) is None]
    if missing:
        raise NetworkError(f"--network netns needs {' and '.join(missing)} from iproute2 "
                           "(apt-get install iproute2)")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [_which(args[0]) or args[0], *args[1:]]
    # the orchestrator ignores SIGCHLD (the kernel reaps the nodes it restarts); then no exit
    # status can be read, and subprocess reports 0 for a command that failed. Read it here.
    ignored = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        if ignored:
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    if check and done.returncode != 0:
        raise NetworkError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _subnets_in_use() -> set[str]:
    """The 198.18.0.0/15 /24s that the root namespace has an address in (other clusters')."""
    out = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    return {m.group(1) for m in re.finditer(r"inet (198\.1[89]\.\d+)\.\d+/", out)}


def _blocks() -> Iterator[str]:
    for k in range(512):
        yield f"198.{18 + k // 256}.{k % 256}"


def plan(run_dir: Path, servers: tuple[str, ...], taken: set[str] | None = None, smtp: bool = False) -> dict[str, Any]:
    """What a cluster's network will be: names, a free /24, an address per host."""
    ident = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:6]
    in_use = _subnets_in_use() if taken is None else taken
    subnet = next((b for b in _blocks() if b not in in_use), None)
    if subnet is None:
        raise NetworkError("every /24 of 198.18.0.0/15 is in use by other clusters; stop one (`xcon down`)")
    hosts = {}
    for i, host in enumerate(hosts_for(servers, smtp)):
        hosts[host] = {"ns": f"xcon-{ident}-{host}", "address": f"{subnet}.{i + 1}", "veth": f"xv{ident}{i}"}
    return {"kind": "netns", "id": ident, "bridge": f"xb{ident}", "subnet": f"{subnet}.0/24",
            "bridge_address": f"{subnet}.{BRIDGE_HOST}", "hosts": hosts}


def endpoints(network: dict[str, Any], node: str) -> dict[str, str]:
    """A node's endpoints on its host in the record."""
    return endpoints_at(network["hosts"][host_of(node)]["address"], node)


def endpoints_at(address: str, node: str) -> dict[str, str]:
    """A node's endpoints on a host of its own at `address` (a namespace, or a machine: xcon deploy)."""
    host = f"[{address}]" if ":" in address else address  # an IPv6 address, as ZeroMQ writes it
    return {which: f"{host}:{port}" if which in OUTSIDE else f"tcp://{host}:{port}"
            for which, port in PORTS[node.partition(".")[0]].items()}


class _Locked:
    """The machine-wide lock under which a cluster picks and makes its /24."""

    def __enter__(self) -> "_Locked":
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def ensure(run_dir: Path, servers: tuple[str, ...], network: dict[str, Any] | None,
           smtp: bool = False) -> dict[str, Any]:
    """Make the cluster's network: the given record's (a resume), or a new plan's. All of it or
    none: a failure part-way removes what was made. Returns the record, also saved in run_dir."""
    check_tools()
    with _Locked():
        if network is None:
            network = plan(run_dir, servers, smtp=smtp)
            if _exists("link", network["bridge"]):
                raise NetworkError(f"a bridge {network['bridge']} exists already: a network this run-dir's cluster "
                                   "left (`xcon down --force` removes it) or another cluster's")
        elif network["subnet"].rsplit(".", 1)[0] in _subnets_in_use() and not _exists("link", network["bridge"]):
            raise NetworkError(f"{network['subnet']} is taken by another cluster now; `xcon up --fresh` makes this "
                               "one anew")
        save(run_dir, network)
        try:
            _make(network)
        except BaseException:
            destroy(network)
            raise
    return network


def save(run_dir: Path, network: dict[str, Any]) -> None:
    (run_dir / RECORD).write_text(json.dumps(network, indent=2))


def load(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return Path(f"/run/netns/{name}").exists()
    return _run("ip", "link", "show", name, check=False).returncode == 0


def _make(n: dict[str, Any]) -> None:
    bridge = n["bridge"]
    if not _exists("link", bridge):
        _run("ip", "link", "add", bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{n['bridge_address']}/24", "dev", bridge)
    _run("ip", "link", "set", bridge, "up")
    for host in n["hosts"].values():
        ns, veth = host["ns"], host["veth"]
        if not _exists("netns", ns):
            _run("ip", "netns", "add", ns)
        if not _exists("link", veth):
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "-n", ns, "addr", "add", f"{host['address']}/24", "dev", "eth0")
        _run("ip", "link", "set", veth, "master", bridge, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")


def destroy(n: dict[str, Any]) -> list[str]:
    """Remove every namespace, veth and the bridge of the record (what exists of them); the
    names removed. Deleting a namespace deletes its end of the veth, and with it the pair."""
    removed = []
    for host in n["hosts"].values():
        if _exists("netns", host["ns"]):
            _run("ip", "netns", "del", host["ns"], check=False)
            removed.append(host["ns"])
        if _exists("link", host["veth"]):
            _run("ip", "link", "del", host["veth"], check=False)
            removed.append(host["veth"])
    if _exists("link", n["bridge"]):
        _run("ip", "link", "del", n["bridge"], check=False)
        removed.append(n["bridge"])
    return removed


def leftovers(n: dict[str, Any]) -> list[str]:
    """What of the record still exists (nothing, after `destroy`)."""
    names = [h["ns"] for h in n["hosts"].values() if _exists("netns", h["ns"])]
    names += [h["veth"] for h in n["hosts"].values() if _exists("link", h["veth"])]
    return names + ([n["bridge"]] if _exists("link", n["bridge"]) else [])


def namespace(n: dict[str, Any] | None, node: str) -> str | None:
    """The network namespace of a node's host; None on a cluster without hosts of their own."""
    return n["hosts"][host_of(node)]["ns"] if n else None


CLONE_NEWNET = 0x40000000  # setns(2)


def enter(ns: str) -> None:
    """Move this process into the network namespace `ip netns add NS` made, as `ip netns exec`
    does before it execs (a process forked with its imports made enters it so itself)."""
    import ctypes

    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc().setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def exec_prefix(n: dict[str, Any] | None, node: str) -> list[str]:
    """The command words that run a node's process on its host."""
    ns = namespace(n, node)
    return [_which("ip") or "ip", "netns", "exec", ns] if ns else []


# --- kernel faults ------------------------------------------------------------------------------

def _host(n: dict[str, Any], host: str) -> dict[str, Any]:
    if host not in n["hosts"]:
        raise NetworkError(f"no host '{host}' (hosts: {', '.join(n['hosts'])})")
    return n["hosts"][host]


def net(n: dict[str, Any], host: str, delay_ms: int = 0, jitter_ms: int = 0, loss: float = 0.0,
        duplicate: float = 0.0, reorder: float = 0.0, rate_kbit: int = 0) -> str:
    """Shape the host's link (what leaves it); replaces what was there. Returns the qdisc set."""
    ns = _host(n, host)["ns"]
    if jitter_ms and not delay_ms:
        raise NetworkError("--jitter-ms needs --delay-ms")
    if reorder and not delay_ms:
        raise NetworkError("--reorder needs --delay-ms (netem reorders by sending some packets without the delay)")
    netem = []
    if delay_ms:
        netem += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
    for word, p in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
        if not 0 <= p <= 100:
            raise NetworkError(f"--{word} is a percentage, 0 to 100")
        if p:
            netem += [word, f"{p:g}%"]
    if netem:
        qdisc = ["netem", *netem] + (["rate", f"{rate_kbit}kbit"] if rate_kbit else [])
    elif rate_kbit:
        # a rate alone: tbf, which every kernel with traffic control has (netem may not be built)
        qdisc = ["tbf", "rate", f"{rate_kbit}kbit", "burst", "32kbit", "latency", "2000ms"]
    else:
        raise NetworkError("give at least one of --delay-ms, --loss, --duplicate, --reorder, --rate")
    done = _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", *qdisc, check=False)
    if done.returncode != 0:
        if "qdisc kind is unknown" in done.stderr and qdisc[0] == "netem":
            raise NetworkError("this kernel has no netem (sch_netem is neither built in nor loadable): --delay-ms, "
                               "--jitter-ms, --loss, --duplicate and --reorder need it; --rate alone (tbf) "
                               "and partitions work without it")
        raise NetworkError(f"tc on {host}: {done.stderr.strip()}")
    return " ".join(qdisc)


def _netem_in(ns: str) -> bool:
    """Whether this kernel has netem, tried on the loopback of namespace `ns` (no traffic there)."""
    done = _run("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "0ms",
                check=False)
    _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root", check=False)
    return done.returncode == 0


def netem_available(n: dict[str, Any]) -> bool:
    """Whether this kernel has netem, tried on one of the record's hosts."""
    return _netem_in(next(iter(n["hosts"].values()))["ns"])


def probe_netem() -> bool:
    """Whether this kernel has netem, tried in a namespace of its own made for the purpose."""
    check_tools()
    ns = f"xcon-probe-{os.getpid()}"
    _run("ip", "netns", "add", ns)
    try:
        return _netem_in(ns)
    finally:
        _run("ip", "netns", "del", ns, check=False)


def partition(n: dict[str, Any], a: str, b: str, one_way: bool = False) -> list[str]:
    """Drop what host `a` sends to host `b` (and, unless one_way, what b sends to a): a blackhole
    route in the sender's namespace, so the packets vanish without an answer, as on a cut link."""
    if a == b:
        raise NetworkError("a partition is between two different hosts")
    ha, hb = _host(n, a), _host(n, b)
    cut = [(ha, hb)] if one_way else [(ha, hb), (hb, ha)]
    for src, dst in cut:
        _run("ip", "-n", src["ns"], "route", "replace", "blackhole", f"{dst['address']}/32")
    return [f"{x['ns']}->{y['address']}" for x, y in cut]


def heal(n: dict[str, Any]) -> int:
    """Undo every partition and every shaping of the record's hosts; how many were undone."""
    undone = 0
    for host in n["hosts"].values():
        ns = host["ns"]
        for line in _run("ip", "-n", ns, "route", "show", "type", "blackhole", check=False).stdout.splitlines():
            if line.strip():
                _run("ip", "-n", ns, "route", "del", *line.split(), check=False)
                undone += 1
        if _run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False).returncode == 0:
            undone += 1
    return undone


def in_force(n: dict[str, Any]) -> list[dict[str, Any]]:
    """The kernel's faults on the record's hosts, as the kernel has them: each partition (a
    blackhole route) and each shaping (a qdisc on a host's link) that `heal` would undo."""
    addresses = {h["address"]: name for name, h in n["hosts"].items()}
    found = []
    for name, host in n["hosts"].items():
        ns = host["ns"]
        for line in _run("ip", "-n", ns, "route", "show", "type", "blackhole", check=False).stdout.splitlines():
            words = line.split()
            if len(words) >= 2:
                to = words[1].split("/")[0]
                found.append({"where": f"{name} -> {addresses.get(to, to)}", "kind": "partition",
                              "what": "what it sends there is dropped"})
        shown = _run("ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", "eth0", "root", check=False).stdout
        for line in shown.splitlines():
            words = line.split()
            if len(words) > 2 and words[1] in ("netem", "tbf"):
                # "qdisc netem 8001: root refcnt 2 limit 1000 delay 80ms 20ms loss 5%": the kind, the rules
                rules = words[words.index("limit") + 2:] if "limit" in words else words[3:]
                found.append({"where": name, "kind": "net", "what": " ".join([words[1], *rules])})
    return found
