"""Starting, reaching and stopping clusters: on loopback, on network namespaces, on deployed hosts.

`from orchestrator import cluster as cl` gives what the tools use most: `cl.start`, `cl.stop`,
`cl.Cluster` and `cl.ClusterError`."""

from .client import ClusterError, NoAnswer, Refused
from .cluster import Cluster, WallClock, cli_log, running_config
from .launch import start, stop

__all__ = ["Cluster", "ClusterError", "NoAnswer", "Refused", "WallClock", "cli_log", "running_config", "start", "stop"]
