"""What each node's core reads of the cluster's settings, and nothing else.

`Settings` (nodes.config) is the cluster as a person asks for it: a profile, a time scale, a
replication lag and a step per server, sites. A core needs less, and in its own terms: an MTA its
own cache lag (the lag, its rank's step and its site's connector added up), its time-outs by
priority; a store its disk floor. `of(settings, node)` works that out once, for one node. `xcon up`
writes each node's into cluster.json (`nodes[name]["settings"]`, nodes.config.ClusterConfig.save),
where an operator reads what each node runs with, and the node reads its own; a cluster.json made
before these existed has none, and the node works them out from the cluster's settings the same
way (ClusterConfig.node_settings). The node's runtime (its console, CURVE, fsync, seed) reads the
cluster's settings itself: it is not a core.

msgspec Structs: they go to JSON and back checked, as every record here does."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from .config import Settings


class Lifetimes(Struct, frozen=True, forbid_unknown_fields=True):
    """How long mail may wait before it comes back (seconds): by priority, and a report's, after
    which it goes to the postmaster (Settings.expire_s, report_expire_s)."""

    urgent_s: float
    normal_s: float
    non_urgent_s: float
    report_s: float

    def of(self, priority: str) -> float:
        return self.urgent_s if priority == "urgent" else self.non_urgent_s if priority == "non-urgent" else self.normal_s

    def longest(self) -> float:
        return max(self.urgent_s, self.normal_s, self.non_urgent_s)


REPLICATION_WAIT_MS = 120_000  # at least; replication_bound_ms where that is longer


class MtaSettings(Struct, frozen=True, forbid_unknown_fields=True):
    build: str
    servers: tuple[str, ...]
    site: str
    # the directory cache: how long after a change this MTA hears of it, give or take the jitter
    # (drawn from `cache_seed`), and how long it trusts an entry it read (0: never)
    cache_lag_ms: int
    cache_jitter_ms: int
    cache_seed: int
    cache_ttl_ms: int
    retry_ms: int  # after no answer (5.5's open interval)
    transfer_retry_ms: int  # after an answer that defers (5.5's transfer interval)
    request_timeout_ms: int
    lifetimes: Lifetimes
    max_queue: int
    min_free_bytes: int
    smtp: bool  # an IMS beside it takes mail for outside


class StoreSettings(Struct, frozen=True, forbid_unknown_fields=True):
    min_free_bytes: int
    soft_delete_ms: int
    imap: bool  # Dovecot reads the Maildirs too: a move holds its users first


class DirectorySettings(Struct, frozen=True, forbid_unknown_fields=True):
    servers: tuple[str, ...]


class OrchestratorSettings(Struct, frozen=True, forbid_unknown_fields=True):
    servers: tuple[str, ...]
    sites: dict[str, str]  # each server's
    request_timeout_ms: int
    move_build: str
    imap: bool
    # how long a move with the workaround waits for every MTA to hear that the alternate is gone
    # (replication_wait_ms; the floor for a cluster.json written before it was a setting)
    replication_wait_ms: int = REPLICATION_WAIT_MS


class ImsSettings(Struct, frozen=True, forbid_unknown_fields=True):
    retry_ms: int  # the MTA's transfer interval, for the smarthost
    lifetimes: Lifetimes
    smtp_tls: bool
    smtp_auth: bool


NodeSettings = MtaSettings | StoreSettings | DirectorySettings | OrchestratorSettings | ImsSettings
KINDS: dict[str, type] = {"mta": MtaSettings, "store": StoreSettings, "directory": DirectorySettings,
                          "orchestrator": OrchestratorSettings, "ims": ImsSettings}


def lifetimes(s: Settings) -> Lifetimes:
    return Lifetimes(s.expire_s("urgent"), s.expire_s("normal"), s.expire_s("non-urgent"), s.report_expire_s())


def transfer_retry_ms(s: Settings) -> int:
    """5.5's transfer interval, after an answer that defers: the open interval unless set apart."""
    return s.transfer_retry_ms if s.transfer_retry_ms is not None else s.retry_ms


def cache_lag_ms(s: Settings, server: str) -> int:
    """How long after a change the MTA of `server` hears of it (before its jitter). The directory
    replicates to the servers one after the other: each further server hears of a change
    replication_step_ms later (5.5's "Pause Between DSAs", Q137203); a server in another site than
    the directory's (the first server's) hears of it over the site connector, intersite_lag_ms later."""
    rank = s.servers.index(server) if server in s.servers else 0
    remote = bool(s.servers) and s.site_of(server) != s.site_of(s.servers[0])
    return s.replication_lag_ms + rank * s.replication_step_ms + (s.intersite_lag_ms if remote else 0)


def replication_bound_ms(s: Settings) -> int:
    """Three times the longest a change may take to reach an MTA's cache (the slowest server's lag
    and the jitter): what a wait for every MTA to hear of a change allows, where that is longer
    than its own floor (the workaround's move, Cluster.wait_replicated)."""
    return 3 * (max((cache_lag_ms(s, x) for x in s.servers), default=0) + s.replication_jitter_ms)


def quiet_bound_ms(s: Settings) -> int:
    """How long a wait for a quiet cluster allows by default (Cluster.wait): a minute, or where
    the timings are slower (Exchange 5.5's retry of 600 s), twice the replication bound and three
    of the longest retry, so that a deferred message and a move's replication both fit."""
    retry = max(s.retry_ms, s.transfer_retry_ms or 0)
    return max(60_000, 2 * replication_bound_ms(s) + 3 * retry)


def kind_of(node: str) -> str:
    return node.split(".", 1)[0]


def of(s: Settings, node: str) -> NodeSettings:
    """The settings of `node` ("mta.ex1", "store.ex2", "directory", ...) in a cluster of `s`.
    KeyError for a node of a kind that has none (an IMAP server: Dovecot's config is its own)."""
    kind, server = kind_of(node), node.partition(".")[2]
    if kind == "mta":
        return MtaSettings(
            s.mta_build, tuple(s.servers), s.site_of(server), cache_lag_ms(s, server), s.replication_jitter_ms,
            s.seed * 1000 + sum(map(ord, server)), s.read_cache_ttl_ms, s.retry_ms,
            transfer_retry_ms(s), s.request_timeout_ms,
            lifetimes(s), s.max_queue, s.min_free_bytes, s.smtp)
    if kind == "store":
        return StoreSettings(s.min_free_bytes, s.soft_delete_ms, s.imap)
    if kind == "directory":
        return DirectorySettings(tuple(s.servers))
    if kind == "orchestrator":
        return OrchestratorSettings(tuple(s.servers), {x: s.site_of(x) for x in s.servers}, s.request_timeout_ms,
                                    s.move_build, s.imap, max(REPLICATION_WAIT_MS, replication_bound_ms(s)))
    if kind == "ims":
        return ImsSettings(transfer_retry_ms(s), lifetimes(s),
                           s.smtp_tls, s.smtp_auth)
    raise KeyError(f"a node of kind '{kind}' has no settings of its own")


def to_json(settings: NodeSettings) -> dict[str, Any]:
    return msgspec.to_builtins(settings)


def from_json(node: str, value: Any) -> NodeSettings:
    """`node`'s settings as cluster.json holds them; ValueError (msgspec.ValidationError) says
    which field is wrong."""
    return msgspec.convert(value, KINDS[kind_of(node)])
