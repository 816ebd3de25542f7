"""The run directory: whose it is, who may start or stop what is in it, which processes are its.

A run-dir holds a cluster's whole state: mail (stores/), queues (mta/), the directory, the move
journal, the keys and the logs. Nothing in it is removed behind the user's back:
- xcon marks a run-dir it made (MARKER) and deletes only there, only what it made (STATE), and
  only when asked (`xcon up --fresh`); it refuses a directory that holds files it did not make;
- `xcon up` and `xcon down` hold a lock on the directory while they work, so a second one waits
  for the first instead of starting or killing nodes beside it;
- a node process is found by its standard output, its console in the run-dir's logs/
  (orchestrator.processes.node_identity), so `xcon down` stops every node of a run-dir even
  when cluster.json is gone or unreadable;
- a cluster's config is new (free loopback ports, new keys) or the stopped cluster's, resumed with
  the settings the user changed and its taken loopback ports moved;
- before a stopped cluster is resumed, every log and state file its nodes will read is read first
  (`look_for_damage`, with the nodes' own readers, writing nothing): a file that is missing or
  does not read stops the start, and so does damage in the middle of a log, unless the user
  accepts it (`xcon up --accept-damage`: the nodes keep each damaged file aside and take up
  every record they can read).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from nodes.config import ClusterConfig, Settings, node_names
from nodes.directory.core import organisation
from nodes.directory.node import DirectoryFile, write_new
from nodes.logs import last_value
from nodes.ims import outbound
from nodes.mta import wal
from nodes.records import DamagedFile, describe_damage
from nodes.security import KEYS, create_keys, create_smtp_certificate
from nodes.store.maildir import Maildirs, mail_group, read_move_state

from orchestrator import netns
from orchestrator.inspect.logread import problems
from .client import ClusterError, Refused, saved_config  # noqa: F401  (saved_config: read here too)
from orchestrator.processes import node_identity

MARKER = ".xcon-run-dir"
STATE = ("logs", "stores", "mta", "directory", "orchestrator", KEYS, "cluster.json", "network.json")


def node_processes(run_dir: Path) -> dict[int, str]:
    """Every live node process of `run_dir` (processes.node_identity): pid -> node name."""
    return {pid: name for pid, (name, where) in node_processes_within(run_dir).items() if where == run_dir}


def node_processes_within(root: Path) -> dict[int, tuple[str, Path]]:
    """Every live node process whose run-dir is `root` or lies below it: pid -> (node name, run-dir)."""
    found = {}
    for entry in os.listdir("/proc"):
        node = node_identity(int(entry)) if entry.isdigit() else None
        if node is not None and (node[1] == root or root in node[1].parents):
            found[int(entry)] = node
    return found


@contextmanager
def locked(run_dir: Path, wait: float = 30.0) -> Iterator[None]:
    """Hold the run-dir's lock (flock on the directory itself: no file of ours in a directory
    that may turn out not to be ours). Another xcon up or down waits up to `wait` seconds."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        deadline = time.time() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise ClusterError(f"another xcon up or down has been working in {run_dir} for {wait:g}s; "
                                       "wait for it, or stop it") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def claim(run_dir: Path) -> None:
    """Make `run_dir` xcon's (mark it), or refuse a directory that holds files xcon did not make.
    A run-dir from before the marker is recognised by its cluster.json naming it."""
    if (run_dir / MARKER).exists():
        return
    entries = list(run_dir.iterdir())
    if entries and not _made_before_marker(run_dir):
        names = ", ".join(sorted(p.name for p in entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise Refused(f"{run_dir} holds files xcon did not make ({names}); give --run-dir an empty "
                           "or new directory")
    (run_dir / MARKER).write_text("made by xcon: `xcon up --fresh` may delete what xcon made here\n")


def _made_before_marker(run_dir: Path) -> bool:
    try:
        data = json.loads((run_dir / "cluster.json").read_text())
        return Path(data["run_dir"]) == run_dir and isinstance(data["nodes"], dict)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def seed(run_dir: Path, settings: Settings, users: list[dict[str, Any]]) -> None:
    """A new cluster's organisation, written before its nodes start: the directory holding `users`
    (nodes.directory.core.organisation) and each one's mailbox on its home store. The nodes then
    start from it as from a stopped cluster's files; each MTA's cache takes it whole from its first
    snapshot."""
    write_new(run_dir / "directory" / "directory.json", organisation(users))
    for server in settings.servers:
        Maildirs(run_dir / "stores" / server, settings.fsync, mail_group(settings)).create_many(
            [u["alias"] for u in users if u["home"] == server])


def holds_state(run_dir: Path) -> bool:
    """Whether a cluster has left state here: mail, queues, a directory, a journal."""
    return any((run_dir / name).exists() for name in ("stores", "mta", "directory", "orchestrator"))


def wipe(run_dir: Path) -> None:
    """Delete a cluster's state: only in a directory xcon marked, only the names xcon made."""
    if not (run_dir / MARKER).exists():
        raise Refused(f"{run_dir} was not made by xcon; it deletes nothing there")
    for name in STATE:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# --- a cluster's config: new, or the stopped one's, with endpoints free to bind --------------

def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# settings a resumed cluster cannot change: they are the shape of its state (its servers' stores
# and queues, its keys)
FIXED = ("servers", "insecure", "network", "smtp", "imap", "smtp_tls")


def new_ports(config: ClusterConfig, endpoints: list[str]) -> None:
    """Give each of these loopback endpoints a port free now (other endpoints are the operator's)."""
    mine = [e for e in endpoints if _loopback(e)]
    ports = iter(free_ports(len(mine)))
    for node in config.nodes.values():
        for which, endpoint in node["endpoints"].items():
            if endpoint in mine:
                node["endpoints"][which] = f"{endpoint.rpartition(':')[0]}:{next(ports)}"


def fresh_config(run_dir: Path, settings: Settings, network: dict[str, Any] | None = None) -> ClusterConfig:
    """A new cluster's config: loopback endpoints on free ports, or each node on its host's
    address when the cluster has a network of namespaces (orchestrator.netns)."""
    (run_dir / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)
    if not settings.insecure:
        create_keys(run_dir)
    if settings.smtp_tls:
        create_smtp_certificate(run_dir)
    names = node_names(settings.servers, settings.smtp, settings.imap)
    nodes: dict[str, dict[str, Any]] = {}
    if network:
        names += ["internet"] if settings.smtp else []  # the outside world's mail server, on its own host
        for name in names:
            host = netns.host_of(name)
            nodes[name] = node_entry(name, run_dir, netns.endpoints(network, name), host=host,
                                     address=network["hosts"][host]["address"])
        return ClusterConfig(run_dir, settings, nodes, network)
    ports = iter(free_ports(2 * len(names)))
    for name in names:
        endpoints = {"router": f"tcp://127.0.0.1:{next(ports)}"}
        if name == "directory":
            endpoints["pub"] = f"tcp://127.0.0.1:{next(ports)}"
        if name.startswith(("ims.", "imap.")):  # the SMTP or IMAP listener (not ZeroMQ: no tcp:// prefix)
            endpoints[name.split(".")[0].replace("ims", "smtp")] = f"127.0.0.1:{next(ports)}"
        nodes[name] = node_entry(name, run_dir, endpoints)
    return ClusterConfig(run_dir, settings, nodes)


def node_entry(name: str, run_dir: Path, endpoints: dict[str, str], **placed: str) -> dict[str, Any]:
    """A node as cluster.json names it: its kind, endpoints, log and server, and (on a host of its
    own) the host and address it runs at."""
    kind, _, server = name.partition(".")
    return {"kind": kind, "endpoints": endpoints, "log": str(run_dir / "logs" / f"{name}.jsonl"),
            **({"server": server} if server else {}), **placed}


def resumed_config(run_dir: Path, settings: Settings, given: frozenset[str]) -> tuple[ClusterConfig, dict[str, Any]]:
    """The stopped cluster's config, with the settings the user changed; loopback endpoints that
    another program took meanwhile move to free ports."""
    try:
        old = ClusterConfig.load(run_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{run_dir} holds a cluster's state but its cluster.json is missing or unreadable "
                           f"({exc}); `xcon up --fresh` starts anew there, deleting that state") from None
    changed = {k: (getattr(old.settings, k), getattr(settings, k)) for k in sorted(given)
               if getattr(old.settings, k) != getattr(settings, k)}
    fixed = [k for k in changed if k in FIXED]
    if fixed:
        was = ", ".join(f"{k} {changed[k][0]!r}" for k in fixed)
        raise Refused(f"the cluster in {run_dir} was made with {was}, which a resume cannot change; "
                           "`xcon up --fresh` starts anew, deleting its state")
    if not old.settings.insecure and not (run_dir / KEYS / "cluster.key_secret").exists():
        raise ClusterError(f"the cluster in {run_dir} has lost its keys ({run_dir / KEYS}); "
                           "`xcon up --fresh` starts anew, deleting its state")
    config = ClusterConfig(run_dir, replace(old.settings, **{k: new for k, (_, new) in changed.items()}), old.nodes,
                           old.network)
    taken = [e for n in config.nodes.values() for e in n["endpoints"].values() if not bindable(e)]
    new_ports(config, taken)
    (run_dir / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)
    return config, {"changed": changed, "moved_endpoints": len(taken)}


def _loopback(endpoint: str) -> bool:
    """A port of ours on this machine: ZeroMQ's tcp://127.0.0.1:PORT, or an SMTP or IMAP
    listener's 127.0.0.1:PORT."""
    return endpoint.removeprefix("tcp://").startswith("127.0.0.1:")


def bindable(endpoint: str) -> bool:
    """Whether a loopback endpoint's port is free to bind (other endpoints are the operator's)."""
    if not _loopback(endpoint):
        return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", int(endpoint.rsplit(":", 1)[1])))
            return True
        except OSError:
            return False


# --- what a resumed cluster's nodes will read -----------------------------------------------------

def look_for_damage(run_dir: Path, settings: Settings) -> tuple[list[str], list[str]]:
    """Read every log and state file the nodes of `run_dir` load at start, as they read them, and
    change nothing. Returns (refused, damaged): one line per file that is missing or does not read
    (a node would refuse to start on it), and one per log damaged in the middle (a node would keep
    it aside and take up what reads)."""
    from orchestrator import journal

    refused: list[str] = []
    damaged: list[str] = []
    directory = DirectoryFile(run_dir / "directory" / "directory.json", list(settings.servers),
                              last_value(run_dir / "logs" / "directory.jsonl", "usn") or 0)
    try:
        found = directory.read()[4]
        if found.damaged:
            damaged.append(describe_damage("directory/changes.jsonl", found.damage,
                                           f"changes lost: USN {', '.join(found.ids)}" if found.ids else ""))
    except DamagedFile as exc:
        refused.append(_relative(str(exc), run_dir))
    for server in settings.servers:
        try:
            read_move_state(run_dir / "stores" / server)
        except DamagedFile as exc:
            refused.append(_relative(str(exc), run_dir))
        log = run_dir / "mta" / server / "queue.wal"
        gone = wal.vanished(log, run_dir / "logs" / f"mta.{server}.jsonl")
        if gone is not None:
            damaged.append(vanished_damage(f"mta/{server}/queue.wal", gone))
        elif log.exists():
            recovered = wal.recover(log.read_bytes())[0]
            if recovered.damage:
                lost = recovered.damage["lost"]
                damaged.append(spool_damage(f"mta/{server}/queue.wal", recovered.damage, lost))
    for folder in sorted(p for p in run_dir.glob("ims/*") if p.is_dir()):
        damaged += outbound.look(folder).damage(run_dir)
    # a node's log is the record of what it did: one that is gone, emptied or cut at the start is
    # damage (the node would begin it anew, and say so: nodes.logs.log_lost)
    damaged += problems(run_dir, node_names(settings.servers, settings.smtp, settings.imap), begun_anew=False)
    path = run_dir / journal.PATH
    gone = journal.vanished(path, run_dir / "logs" / "orchestrator.jsonl")
    if gone is not None:
        moves = f": moves left for you to finish or abort: {', '.join(gone['suspect'])}" if gone["suspect"] else ""
        damaged.append(f"{journal.PATH} is {gone['gone']}, though the orchestrator's log says it journaled "
                       f"steps{moves}")
    found = journal.scan(path.read_bytes()) if path.exists() else None
    if found is not None and found.damaged:
        suspect = journal.damage_note(found, "")["suspect"]
        damaged.append(describe_damage(str(journal.PATH), found.damage,
                                       f"moves left for you to finish or abort: {', '.join(suspect)}" if suspect else ""))
    return refused, damaged


def vanished_damage(name: str, gone: dict[str, Any]) -> str:
    """One line for a queue log that is missing or empty though its MTA's log says it held records."""
    lost = gone["lost"]
    held = (f"{len(lost)} message(s) it held still open: {', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''}"
            if lost else "no message still open, but the pairs it remembered against retransmissions")
    return f"{name} is {gone['gone']}, though its MTA's log says it held records ({held})"


def spool_damage(name: str, damage: dict[str, Any], lost: list[str]) -> str:
    what = (f"{len(lost)} message(s) with no record left: {', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''}"
            if lost else "no message id could be read from the damaged bytes")
    return describe_damage(name, damage["damaged_bytes"], what)


def _relative(text: str, run_dir: Path) -> str:
    return text.replace(f"{run_dir}/", "")
