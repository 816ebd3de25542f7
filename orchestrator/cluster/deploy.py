"""The same nodes on separate machines: from a list of hosts, what an operator copies to each.

A hosts file names each host, its address and what runs there, a line each:

    # host    address      roles
    dc1       10.0.0.10    directory,orchestrator
    mail1     10.0.0.11    ex1
    mail2     10.0.0.12    ex2

A role is `directory`, `orchestrator` or a server (`ex1`, `ex2`, ...: its MTA and its store).
`generate` writes, into one folder that is then copied to the same path (`root`) on every host:
cluster.json (every node's endpoint on its host's address), the CURVE keys, and a systemd unit
per node. xcon's commands then run from any host that holds the folder and reaches the others.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.config import ClusterConfig, Settings, node_names, server_names
from nodes.security import create_keys

from orchestrator import netns
from orchestrator.processes import MODULES
from .rundir import node_entry

SERVER = re.compile(r"ex[1-9][0-9]?")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class DeployError(Exception):
    """A hosts file or an option that cannot make a cluster; the message says where."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    roles: tuple[str, ...]


def parse_hosts(text: str) -> list[Host]:
    """The hosts file's lines; a clear error naming the line for anything wrong."""
    hosts: list[Host] = []
    seen_roles: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) != 3:
            raise DeployError(f"line {number}: want HOST ADDRESS ROLE[,ROLE...], got {raw.strip()!r}")
        name, address, roles = words
        if not HOST_NAME.fullmatch(name):
            raise DeployError(f"line {number}: {name!r} is not a host name")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise DeployError(f"line {number}: {address!r} is not an IP address") from None
        if any(h.name == name for h in hosts):
            raise DeployError(f"line {number}: host {name} is named twice")
        parts = tuple(r for r in roles.split(",") if r)
        for role in parts:
            if role not in ("directory", "orchestrator") and not SERVER.fullmatch(role):
                raise DeployError(f"line {number}: unknown role {role!r} (directory, orchestrator, ex1, ex2, ...)")
            if role in seen_roles:
                raise DeployError(f"line {number}: {role} is on {seen_roles[role]} already")
            seen_roles[role] = name
        hosts.append(Host(name, address, parts))
    for role in ("directory", "orchestrator"):
        if role not in seen_roles:
            raise DeployError(f"no host has the role {role}")
    servers = list(_servers(seen_roles))
    if not servers:
        raise DeployError("no host has a server (ex1, ex2, ...)")
    if tuple(servers) != server_names(len(servers)):
        raise DeployError(f"servers must be ex1..exN with none missing (got {', '.join(servers)})")
    return hosts


def _servers(roles: Any) -> tuple[str, ...]:
    """The server roles among `roles`, in order: ex1, ex2, ..., ex10."""
    return tuple(sorted((r for r in roles if SERVER.fullmatch(r)), key=lambda r: int(r[2:])))


def generate(hosts: list[Host], out: Path, root: Path, settings: Settings, python: str,
             namespaces: bool = False) -> dict[str, Any]:
    """Write cluster.json, keys/ and units/ into `out`, for copying to `root` on every host.
    With `namespaces`, each unit runs in the network namespace named as its host (for trying a
    deployment on one machine, the namespaces standing in for the hosts)."""
    if out.exists() and any(out.iterdir()):
        raise DeployError(f"{out} is not empty; give a new folder")
    host_of = {role: h for h in hosts for role in h.roles}
    servers = _servers(host_of)
    settings = dataclasses.replace(settings, servers=servers, sites=())
    out.mkdir(parents=True, exist_ok=True)
    nodes: dict[str, dict[str, Any]] = {}
    for name in node_names(servers):
        host = host_of[netns.host_of(name)]
        nodes[name] = node_entry(name, root, netns.endpoints_at(host.address, name), host=host.name,
                                 address=host.address)
    config = ClusterConfig(root, settings, nodes, deployed=True)
    (out / "cluster.json").write_text(json.dumps(config.to_json(), indent=2))
    (out / "logs").mkdir(mode=0o700)
    if not settings.insecure:
        create_keys(out)
    units = out / "units"
    units.mkdir()
    for name, node in nodes.items():
        unit = units / f"xcon-{name}.service"
        unit.write_text(_unit(name, node, root, python, node["host"] if namespaces else None))
    return {"nodes": {n: {"host": d["host"], "endpoint": d["endpoints"]["router"]} for n, d in nodes.items()},
            "units": sorted(str(p) for p in units.iterdir()), "root": str(root)}


def _unit(name: str, node: dict[str, Any], root: Path, python: str, namespace: str | None) -> str:
    command = shlex.join([python, "-m", MODULES[node["kind"]], "--run-dir", str(root), "--name", name])
    lines = [
        "[Unit]",
        f"Description=xcon {name} on {node['host']} ({node['address']})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        f"ExecStart={command}",
        "Environment=PYTHONUNBUFFERED=1",
        f"StandardOutput=append:{root}/logs/{name}.console",
        "StandardError=inherit",
        # a node stops cleanly on SIGTERM; it restarts after a crash as `xcon restart` would start it
        "Restart=on-failure",
        "RestartSec=1",
    ]
    if namespace:
        lines.append(f"NetworkNamespacePath=/run/netns/{namespace}")
    return "\n".join([*lines, "", "[Install]", "WantedBy=multi-user.target", ""])


def unit_command(text: str) -> tuple[list[str], str | None]:
    """A unit's ExecStart as words, and its NetworkNamespacePath's namespace (None if it has none):
    what systemd would run, for starting the units by hand where there is no systemd."""
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    path = fields.get("NetworkNamespacePath")
    return shlex.split(fields["ExecStart"]), (path.rsplit("/", 1)[1] if path else None)
