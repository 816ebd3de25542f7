"""Starting and stopping a cluster on this machine (or on namespaces standing in for hosts).

`start` picks free loopback ports, writes `<run-dir>/cluster.json`, starts every node as its
own OS process (in its own session, so it outlives the CLI) and returns once each answers
`ping` with ready=true; a stopped cluster's run-dir is resumed, after its files are read for
damage. `stop` ends every node of a run-dir, found by cluster.json and by its console.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from nodes.config import ClusterConfig, Settings

from orchestrator import netns, processes
from orchestrator.processes import Forked, pid_alive, spawn_node

from . import rundir
from .client import ClusterError, Refused, TimedOut
from .cluster import Cluster

BIND_TRIES = 3  # starts of a cluster whose loopback ports another program took meanwhile


def start(run_dir: Path, settings: Settings, timeout: float = 30.0, fresh: bool = False,
          given: frozenset[str] = frozenset(), accept_damage: bool = False,
          users: list[dict[str, Any]] = ()) -> "Cluster":
    """Start a cluster in `run_dir` and return once every node is ready.

    A run-dir that holds a stopped cluster's state is resumed: every node restarts on its own
    queue, journal, directory, stores and keys, with the saved settings and those of `settings`
    named in `given` (what the user asked to change; `Cluster.resumed` says what was kept and
    changed). With `fresh`, that state is deleted first (only in a run-dir xcon made, only what it
    made). A directory that holds files xcon did not make is refused either way. Before a resume,
    the files the nodes will read are read (rundir.look_for_damage): one that does not read
    stops the start, and so does a log damaged in the middle unless `accept_damage`. `users`: a
    new cluster's organisation (alias, home, ...: rundir.seed), refused for a resumed one."""
    run_dir = run_dir.resolve()
    with rundir.locked(run_dir):
        rundir.claim(run_dir)
        if rundir.node_processes(run_dir):
            raise Refused(f"a cluster is already running in {run_dir} (stop it with `xcon down`)")
        if fresh:
            _remove_network(run_dir)  # a crashed cluster's namespaces go with its state
            rundir.wipe(run_dir)
        config, resumed = _config(run_dir, settings, given, accept_damage, users)
        for attempt in itertools.count(1):  # ends by returning or raising
            config.save()
            procs = {name: spawn_node(config, name, save=False, again=resumed is not None) for name in config.nodes}
            config.save()
            cluster = Cluster(config)
            cluster.resumed = resumed
            try:
                wait_ready(cluster, procs, timeout)
                return cluster
            except ClusterError as exc:
                cluster.close()
                _stop(run_dir, 5.0)
                # free_ports found the ports free, but another program may take one before a node
                # binds it: move every loopback endpoint and start again
                if "cannot bind" not in str(exc) or attempt == BIND_TRIES or config.network:
                    raise
                rundir.new_ports(config, [e for n in config.nodes.values() for e in n["endpoints"].values()])
            except BaseException:
                _stop(run_dir, 5.0)
                raise


def _config(run_dir: Path, settings: Settings, given: frozenset[str], accept_damage: bool,
            users: list[dict[str, Any]]) -> tuple[ClusterConfig, dict[str, Any] | None]:
    """The config a start runs (start's docstring): a resumed cluster's, with what the resume kept
    and changed, once its files read; or a new one's, its organisation seeded. Its network of
    namespaces is made here; nothing half-made is left if this fails."""
    resumed = None
    try:
        if (run_dir / "cluster.json").exists() or rundir.holds_state(run_dir):
            if users:
                raise Refused(f"{run_dir} holds a cluster already: its users are its own (add --fresh to "
                              "start over with a new organisation)")
            config, resumed = rundir.resumed_config(run_dir, settings, given)
            refused, damaged = rundir.look_for_damage(run_dir, config.settings)
            if refused:
                raise ClusterError(f"cannot start: {'; '.join(refused)}; nothing was started")
            if damaged and not accept_damage:
                raise ClusterError(f"{'; '.join(damaged)}; nothing was started. `xcon up --accept-damage` keeps "
                                   "each damaged file aside untouched and takes up every record it can read")
            resumed["started_at"] = time.time()  # what the nodes log from here on is this start's
            if config.settings.network == "netns":
                config = dataclasses.replace(
                    config, network=netns.ensure(run_dir, config.settings.servers, config.network,
                                             config.settings.smtp))
        else:
            network = (netns.ensure(run_dir, settings.servers, None, settings.smtp) if settings.network == "netns"
                       else None)
            config = rundir.fresh_config(run_dir, settings, network)
            if users:
                rundir.seed(run_dir, settings, list(users))
    except netns.NetworkError as exc:
        raise ClusterError(str(exc)) from None
    except BaseException:
        _remove_network(run_dir)  # nothing half-made is left behind
        raise
    return config, resumed


def stop(run_dir: Path, grace: float = 5.0, force: bool = False) -> tuple[list[str], list[str]]:
    """Stop every node of the run-dir: SIGTERM, then SIGKILL after `grace` seconds. The nodes are
    those cluster.json names and every process whose output is a console of the run-dir, so a
    missing or corrupt cluster.json stops nothing from being stopped; then the cluster's network
    of namespaces, if it has one, is removed. Returns the nodes stopped and the network's parts
    removed. `force`: no error when there is nothing to stop, only what is left to remove."""
    run_dir = run_dir.resolve()
    if not run_dir.is_dir():
        raise ClusterError(f"no cluster in {run_dir}")
    with rundir.locked(run_dir):
        return _stop(run_dir, grace, force)


def _remove_network(run_dir: Path, config: ClusterConfig | None = None) -> list[str]:
    """Remove the namespaces, veths and bridge the cluster made (cluster.json's record, or
    network.json's when cluster.json is gone); the names removed."""
    network = (config.network if config else None) or netns.load(run_dir)
    return netns.destroy(network) if network else []


def _stop(run_dir: Path, grace: float, force: bool = False) -> tuple[list[str], list[str]]:
    try:
        config: ClusterConfig | None = ClusterConfig.load(run_dir)
    except (OSError, ValueError, KeyError, TypeError):
        config = None
    live = {d["pid"]: n for n, d in (config.nodes.items() if config else ()) if pid_alive(d.get("pid"), run_dir)}
    live.update(rundir.node_processes(run_dir))
    if config is None and not live:
        removed = _remove_network(run_dir)
        if removed or force:
            return [], removed
        raise ClusterError(f"no cluster in {run_dir}" if not (run_dir / "cluster.json").exists() else
                           f"{run_dir}/cluster.json is unreadable and no node of {run_dir} runs")
    for pid in live:
        _signal(pid, signal.SIGTERM)
    processes.wait_gone(live, run_dir, grace)
    for pid in live:
        if pid_alive(pid, run_dir):
            _signal(pid, signal.SIGKILL)
    processes.reap()
    if config is not None:
        for node in config.nodes.values():
            node.pop("pid", None)
        config.save()
    return sorted(live.values()), _remove_network(run_dir, config)


def _signal(pid: int, signum: int) -> None:
    """Signal a node found running a moment ago; one that has ended since is stopped already."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def wait_ready(cluster: Cluster, procs: dict[str, subprocess.Popen | Forked], timeout: float) -> None:
    """Until every node started answers `ping` with ready=true; ClusterError naming a node that exited
    (with the end of its console) or the nodes still not ready at `timeout`."""
    waiting = set(procs)

    def all_ready() -> bool:
        for name in sorted(waiting):
            if procs[name].poll() is not None:
                tail = _tail(cluster.config.run_dir / "logs" / f"{name}.console")
                raise ClusterError(f"{name} exited with code {procs[name].returncode} while starting: {tail}")
            try:
                if cluster.client.request(name, "ping", timeout=0.2).body.ready:
                    waiting.discard(name)
            except ClusterError:
                pass
        return not waiting

    try:
        cluster.until(all_ready, timeout, "every node ready")
    except TimedOut:
        raise ClusterError(f"nodes not ready after {timeout:g}s: {', '.join(sorted(waiting))}") from None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no console output)"
