"""The cluster description every node and the CLI share: `<run-dir>/cluster.json`."""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

BUILDS = ("legacy", "sp4", "reroute")
MOVE_BUILDS = ("legacy", "sp4")  # Move User's: orchestrator.move
DEFAULT_SITE = "XCON"  # the organisation's one site, until servers are given sites of their own
CONSOLE_LEVELS = ("warning", "info")
SERVER = re.compile(r"ex[1-9][0-9]?")
# what each field of Settings may hold in cluster.json (by its annotation)
_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "int | None": (int, type(None)), "float": (int, float),
                                       "str": (str,), "bool": (bool,)}


# Named sets of timing defaults. "lab" is xcon's own (seconds: tests, demos); "exchange55" is
# Exchange 5.5's documented numbers (docs/EXCHANGE55.md), meant to be shrunk by a time scale.
# A profile's durations are multiplied by the time scale; options given on a command line win.
PROFILES: dict[str, dict[str, int | None]] = {
    "lab": {"replication_lag_ms": 2000, "replication_jitter_ms": 500, "replication_step_ms": 0,
            "read_cache_ttl_ms": 0, "retry_ms": 1000, "transfer_retry_ms": None, "expire_ms": 60_000,
            "expire_urgent_ms": None, "expire_non_urgent_ms": None, "report_expire_ms": None,
            "intersite_lag_ms": 2000},
    "exchange55": {
        "replication_lag_ms": 300_000,  # "Pause After Modify" (Q137203)
        "replication_step_ms": 30_000,  # "Pause Between DSAs", for each further server (Q137203)
        "replication_jitter_ms": 0,
        "read_cache_ttl_ms": 60_000,  # the MTA's "ds_read cache latency (secs)" (Q172364, Q178534)
        "retry_ms": 600_000,  # the MTA's open interval (Q157630)
        "transfer_retry_ms": 120_000,  # the MTA's transfer interval (Q157630)
        "expire_urgent_ms": 2 * 86_400_000, "expire_ms": 7 * 86_400_000,  # message time-outs by
        "expire_non_urgent_ms": 10 * 86_400_000,  # priority (Q178539, Q271545)
        "report_expire_ms": None,  # undocumented: the emulation's choice, twice the normal time-out
        "intersite_lag_ms": 900_000,  # a site connector's replication set to "Always": every 15 min (5.5 SP1 docs)
    },
}


@dataclass(frozen=True)
class Settings:
    servers: tuple[str, ...] = ("ex1", "ex2")
    mta_build: str = "legacy"
    replication_lag_ms: int = 2000
    replication_jitter_ms: int = 500
    retry_ms: int = 1000
    expire_ms: int = 60000  # a normal message's time-out
    # an urgent and a non-urgent message's; None keeps Exchange 5.5's proportions to the normal
    # one's (2, 7 and 10 days: Q178539, Q271545)
    expire_urgent_ms: int | None = None
    expire_non_urgent_ms: int | None = None
    # how long an MTA tries to deliver a report (an NDR) before it gives it to the postmaster; None:
    # twice the normal time-out, longer than any message's, so a report outlives what it reports on
    report_expire_ms: int | None = None
    replication_step_ms: int = 0  # more replication lag for each further server (its rank in `servers`)
    read_cache_ttl_ms: int = 0  # how long an MTA trusts an entry it read (0: it reads the replica each time)
    transfer_retry_ms: int | None = None  # the retry after an answer that defers; None: retry_ms
    profile: str = "lab"  # the PROFILES entry these timings came from, and its time scale
    time_scale: float = 1.0
    # the site of each server, in `servers` order; () puts every server in DEFAULT_SITE. The
    # directory lives in the first server's site: an MTA in another site sees a change
    # intersite_lag_ms later (the site connector's replication schedule)
    sites: tuple[str, ...] = ()
    intersite_lag_ms: int = 2000
    request_timeout_ms: int = 3000
    seed: int = 0
    max_queue: int = 10_000  # messages an MTA holds before it answers "busy"
    insecure: bool = False  # True: no CURVE, no ZAP (xcon up --insecure)
    fsync: bool = True  # False only to measure what durability costs (xcon up --no-fsync)
    # what a node's console (<run-dir>/logs/<node>.console) shows of its core's events: "warning"
    # (warnings and errors; the per-message story is in the JSON log, which `xcon logs` reads)
    # or "info" (every event). The runtime's own events (start, stop, faults) always show.
    console: str = "warning"
    # an MTA refuses new mail, and a store defers deliveries, while the disk has less free than
    # this: a full disk stops mail coming in, never mail that was accepted
    min_free_mb: int = 64
    # the Move User tool: "sp4" makes the target in transit at once; "legacy" (5.5 before SP4)
    # makes it live, names it, copies, and only then marks it in transit (KB Q277911)
    move_build: str = "sp4"
    # how long a store keeps a moved-away mailbox soft-deleted before purging it; 0 deletes it at
    # once, as 5.5 did (Exchange 2010 SP1 keeps it: KB 2579150)
    soft_delete_ms: int = 0
    # where the nodes run: "loopback" (one network, 127.0.0.1) or "netns" (a network namespace per
    # host, on a bridge: orchestrator.netns)
    network: str = "loopback"
    # an Internet Mail Service per server (nodes.ims: SMTP in, mail and DSNs out); where mail for
    # outside the organisation goes ("HOST:PORT"; "": it waits in the IMS's queue until one is set)
    smtp: bool = False
    smarthost: str = ""
    # the IMS offers STARTTLS with a certificate made at `xcon up` (keys/ims.crt); it offers AUTH
    # PLAIN (over TLS when there is TLS), and a sender claiming an organisation address must use it
    smtp_tls: bool = False
    smtp_auth: bool = False
    # IMAP4 per server, served by Debian's Dovecot over the store's Maildirs (nodes.imap)
    imap: bool = False

    def site_of(self, server: str) -> str:
        if not self.sites or server not in self.servers:
            return DEFAULT_SITE
        return self.sites[self.servers.index(server)]

    def expire_s(self, priority: str) -> float:
        """A message's time-out, by its priority."""
        if priority == "urgent":
            return (self.expire_urgent_ms if self.expire_urgent_ms is not None else self.expire_ms * 2 / 7) / 1000
        if priority == "non-urgent":
            return (self.expire_non_urgent_ms if self.expire_non_urgent_ms is not None else self.expire_ms * 10 / 7) / 1000
        return self.expire_ms / 1000

    def report_expire_s(self) -> float:
        """A report's time-out: after it, the report goes to the postmaster, never to nobody."""
        return (self.report_expire_ms if self.report_expire_ms is not None else 2 * self.expire_ms) / 1000

    @classmethod
    def from_profile(cls, profile: str, time_scale: float = 1.0, **given: Any) -> "Settings":
        """Settings with `profile`'s timings, every duration times `time_scale`, then `given`."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile '{profile}' (profiles: {', '.join(PROFILES)})")
        if not 0 < time_scale <= 1000:
            raise ValueError("the time scale must be in (0, 1000]")
        timings = {k: None if v is None else max(1, round(v * time_scale)) if v else 0
                   for k, v in PROFILES[profile].items()}
        return cls(**{**timings, "profile": profile, "time_scale": time_scale, **given})

    def timings(self) -> dict[str, Any]:
        """The effective timings, as `xcon status` shows them (describe_timings: as a line)."""
        sites: dict[str, list[str]] = {}
        for server in self.servers if self.sites else ():
            sites.setdefault(self.site_of(server), []).append(server)
        return {"profile": self.profile, "time_scale": self.time_scale,
                **{k: getattr(self, k) for k in PROFILES["lab"]},
                "expire_s_by_priority": {p: round(self.expire_s(p), 3) for p in ("urgent", "normal", "non-urgent")},
                "report_expire_s": round(self.report_expire_s(), 3), "sites": sites}

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mb * 1024 * 1024

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["servers"] = list(self.servers)
        d["sites"] = list(self.sites)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Settings":
        """Settings as cluster.json holds them, each value checked (ValueError says which is wrong)."""
        if not isinstance(d, dict):
            raise ValueError("settings: not a JSON object")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"settings: unknown field '{unknown[0]}'")
        d = dict(d)
        servers, sites = d.get("servers"), d.get("sites", [])
        if not (isinstance(servers, list) and servers and all(isinstance(x, str) and SERVER.fullmatch(x) for x in servers)):
            raise ValueError("settings: servers must be a list of names like ex1")
        if not (isinstance(sites, list) and all(isinstance(x, str) for x in sites) and len(sites) in (0, len(servers))):
            raise ValueError("settings: sites must name a site for each server")
        d["servers"], d["sites"] = tuple(servers), tuple(sites)
        for name, f in cls.__dataclass_fields__.items():
            if name not in d or name in ("servers", "sites"):
                continue
            kinds = _KINDS[str(f.type)]
            if not isinstance(d[name], kinds) or (bool not in kinds and isinstance(d[name], bool)):
                raise ValueError(f"settings: {name} has the wrong type ({type(d[name]).__name__})")
        for name, allowed in (("mta_build", BUILDS), ("move_build", MOVE_BUILDS), ("profile", tuple(PROFILES)),
                              ("console", CONSOLE_LEVELS), ("network", ("loopback", "netns"))):
            if name in d and d[name] not in allowed:
                raise ValueError(f"settings: {name} must be one of {', '.join(allowed)} (got {str(d[name])[:40]!r})")
        return cls(**d)


def describe_timings(t: dict[str, Any]) -> str:
    """Settings.timings() in a line: what `up`, `status` and the scenarios print."""
    step = f" + {t['replication_step_ms']} ms a server" if t["replication_step_ms"] else ""
    ttl = f", read cache {t['read_cache_ttl_ms']} ms" if t["read_cache_ttl_ms"] else ""
    retry = (f"retry {t['retry_ms']} ms (no answer) / {t['transfer_retry_ms']} ms (deferred)"
             if t["transfer_retry_ms"] is not None else f"retry {t['retry_ms']} ms")
    expire = ", ".join(f"{p} {s:g} s" for p, s in t["expire_s_by_priority"].items())
    sites = ""
    if t.get("sites"):
        sites = ("; sites " + ", ".join(f"{site}: {' '.join(members)}" for site, members in t["sites"].items())
                 + f" (another site's MTAs hear {t['intersite_lag_ms']} ms later)")
    return (f"profile {t['profile']} x{t['time_scale']:g}: replication {t['replication_lag_ms']}{step} + "
            f"0..{t['replication_jitter_ms']} ms{ttl}; {retry}; time-outs {expire}, reports {t['report_expire_s']:g} s"
            f"{sites}")


def server_names(n: int) -> tuple[str, ...]:
    """The names of a cluster's `n` servers: ex1 ... exN."""
    return tuple(f"ex{i}" for i in range(1, n + 1))


def node_names(servers: tuple[str, ...], smtp: bool = False, imap: bool = False) -> list[str]:
    """Every node of a cluster of these servers, as cluster.json names them (with `smtp`, an
    Internet Mail Service per server too; with `imap`, an IMAP server per server)."""
    return ["directory", *(f"store.{s}" for s in servers), *(f"mta.{s}" for s in servers), "orchestrator",
            *(f"ims.{s}" for s in servers if smtp), *(f"imap.{s}" for s in servers if imap)]


@dataclass(frozen=True)
class ClusterConfig:
    run_dir: Path
    settings: Settings
    nodes: dict[str, dict[str, Any]]  # name -> {"kind", "server"?, "endpoints", "pid"?, "log", "host"?}
    network: dict[str, Any] | None = None  # with --network netns: its hosts (orchestrator.netns.plan)
    # made by `xcon deploy` for separate machines: no node is this machine's process to watch;
    # a node is up when it answers
    deployed: bool = False

    def endpoint(self, node: str, which: str = "router") -> str:
        try:
            return self.nodes[node]["endpoints"][which]
        except KeyError:
            raise KeyError(f"no node '{node}' with a {which} endpoint in the cluster") from None

    def smarthost(self) -> str:
        """Where the IMSs relay mail for outside the organisation: --smarthost, or on a cluster of
        namespaces the outside world's host (nodes.internet); "" for nowhere (it waits)."""
        return self.settings.smarthost or self.nodes.get("internet", {}).get("endpoints", {}).get("smtp", "")

    def node_settings(self, node: str) -> Any:
        """What `node`'s core reads (nodes.node_settings): its own entry, as `xcon up` wrote it,
        or, in a cluster.json made before there were any, worked out from the cluster's."""
        from . import node_settings  # it builds on Settings, above

        own = self.nodes.get(node, {}).get("settings")
        return node_settings.of(self.settings, node) if own is None else node_settings.from_json(node, own)

    def to_json(self) -> dict[str, Any]:
        """As cluster.json holds it: each node with the settings its core reads, worked out anew
        from the cluster's at every save, so the two never disagree."""
        from . import node_settings

        nodes = {name: {**node, "settings": node_settings.to_json(node_settings.of(self.settings, name))}
                 if node.get("kind") in node_settings.KINDS else node for name, node in self.nodes.items()}
        return {"run_dir": str(self.run_dir), "settings": self.settings.to_json(), "nodes": nodes,
                **({"network": self.network} if self.network else {}), **({"deployed": True} if self.deployed else {})}

    def save(self) -> None:
        write_atomic(self.run_dir / "cluster.json", json.dumps(self.to_json(), indent=2).encode())

    @classmethod
    def load(cls, run_dir: Path) -> "ClusterConfig":
        """cluster.json, each part checked: ValueError (or OSError) says in one line what is wrong."""
        try:
            data = json.loads((run_dir / "cluster.json").read_bytes())
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("run_dir"), str):
            raise ValueError("not a cluster description (needs run_dir, settings, nodes)")
        nodes = data.get("nodes")
        if not isinstance(nodes, dict) or not all(
                isinstance(n, dict) and isinstance(n.get("endpoints"), dict) and isinstance(n.get("kind"), str)
                and all(isinstance(e, str) for e in n["endpoints"].values()) and type(n.get("pid", 0)) in (int, type(None))
                for n in nodes.values()):
            raise ValueError("nodes must map each node's name to its kind, endpoints and pid")
        if data.get("network") is not None and not isinstance(data["network"], dict):
            raise ValueError("network must be an object")
        from . import node_settings  # it builds on Settings, above

        for name, node in nodes.items():  # what a node's core reads, as `up` wrote it (none before there were)
            if node.get("settings") is not None and node["kind"] in node_settings.KINDS:
                try:
                    node_settings.from_json(name, node["settings"])
                except ValueError as exc:  # msgspec.ValidationError
                    raise ValueError(f"the settings of node {name[:40]} do not read ({exc})") from None
        return cls(Path(data["run_dir"]), Settings.from_json(data.get("settings")), nodes, data.get("network"),
                   bool(data.get("deployed")))


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that a crash leaves either the old or the new content: tmp, fsync, rename.
    The file is its owner's alone (0600, in a folder made 0700), whatever the writer's umask: the
    CLI writes cluster.json and, for `xcon up --users`, the directory's files."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # a tmp left by a crash keeps the mode it was made with
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_append(path: Path) -> int:
    """A descriptor that appends to `path` (a log of records), made the owner's alone if new."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def append_whole(fd: int, data: bytes, size: int, sync: Callable[[int], None] | None = None) -> int:
    """Append `data` to a log (open_append) whose whole records end at byte `size`, then
    `sync(fd)`: all or nothing. A write the disk refuses part-way is cut back to `size` and the
    error raised, so the runtime's next try appends the data whole, once. Returns the new size."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync is not None:
            sync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise
    return size + len(data)


def free_bytes(path: Path) -> int:
    """What the filesystem holding `path` has free for an unprivileged writer."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


SYNC_BATCH = 16  # from this many files on, one syncfs beats an fsync each


def syncfs(path: Path) -> bool:
    """Flush the whole filesystem holding `path` in one call (Linux syncfs(2), what `sync` does for
    one filesystem). False where it is not available: the caller then fsyncs file by file."""
    fn = getattr(libc(), "syncfs", None)
    if fn is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return fn(fd) == 0
    finally:
        os.close(fd)


@functools.cache
def libc() -> Any:
    """The C library's functions (errno kept for ctypes.get_errno), loaded on first use:
    ctypes.util.find_library("c") ran `ldconfig -p` in a subprocess, 10-40 ms in every process
    that imported this module (every node, every CLI call). dlopen(NULL) reaches the same libc,
    which Python is linked with."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)
