"""Starting, reaching and stopping clusters: on loopback, on network namespaces, on deployed hosts.

`from orchestrator import cluster as cl` gives what the tools use most: `cl.start`, `cl.stop`,
`cl.Cluster` and `cl.ClusterError`."""

from typing import Any

from .client import ClusterError, NoAnswer, Refused, cli_log, running_config
from .cluster import Cluster, WallClock


def __getattr__(name: str) -> Any:
    """`start` and `stop`, imported at first use: with them come the run-dir's readers of every
    node's files (orchestrator.cluster.rundir), which `xcon send` and its like never need (a fifth
    of such a call's CPU, and the tests make hundreds of them)."""
    if name in ("start", "stop"):
        from . import launch

        return getattr(launch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Cluster", "ClusterError", "NoAnswer", "Refused", "WallClock", "cli_log", "running_config", "start", "stop"]
