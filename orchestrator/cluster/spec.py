"""A cluster to start, as `xcon up` is asked for it: spec, call, render.

`UpSpec.of_options` builds the spec from the command's options (by their parameter names),
`problem` says in one line what is wrong with it before anything is made, and `start` starts
(or resumes) the cluster and returns what a page or a table shows (`Started`). The CLI only
renders; a test or a script builds the same spec without click.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from nodes.config import PROFILES, Settings, server_names
from orchestrator.inspect import logread

from .client import ClusterError
from .cluster import Cluster

# the command's options that are Settings fields under another name (as their negation)
_FIELD_OF = {"no_fsync": "fsync"}
_SETTINGS_FIELDS = frozenset(f.name for f in fields(Settings))
_TIMINGS = frozenset(PROFILES["lab"])


@dataclass(frozen=True)
class Started:
    """What `UpSpec.start` made: the cluster's config as cluster.json holds it, how long the start
    took, and for a resumed cluster what it took up again (resume_summary)."""

    config: Any
    seconds: float
    resumed: dict[str, Any] | None


@dataclass(frozen=True)
class UpSpec:
    """A cluster in `run_dir` with `settings`; `given`: the settings named on the command line
    (they replace a stopped cluster's saved ones on resume); `users`: a new cluster's organisation
    of user1 ... userN; `wan_delay_ms`: netem delay on every link of a server outside the first
    server's site."""

    run_dir: Path
    settings: Settings
    given: frozenset[str] = frozenset()
    users: int = 0
    fresh: bool = False
    accept_damage: bool = False
    wan_delay_ms: int | None = None

    @classmethod
    def of_options(cls, run_dir: Path, options: Mapping[str, Any], named: frozenset[str] = frozenset(),
                   sites: tuple[str, ...] = ()) -> "UpSpec":
        """The spec of `xcon up`'s `options` (by parameter name); `named`: the options given on
        the command line; `sites`: each server's site, parsed from --site. A timing left out
        (None) is the profile's. Raises ValueError for a profile or time scale that does not exist."""
        values = {**options, "fsync": not options.get("no_fsync", False)}
        chosen = {k: v for k, v in values.items() if k in _SETTINGS_FIELDS and not (k in _TIMINGS and v is None)
                  and k not in ("servers", "sites", "profile", "time_scale")}
        settings = Settings.from_profile(options.get("profile", "lab"), options.get("time_scale", 1.0),
                                         servers=server_names(options["servers"]), sites=sites, **chosen)
        named_fields = frozenset(_FIELD_OF.get(k, k) for k in named if _FIELD_OF.get(k, k) in _SETTINGS_FIELDS)
        if named_fields & {"profile", "time_scale"}:  # a profile given on resume brings all its timings
            named_fields |= _TIMINGS
        return cls(run_dir, settings, named_fields, options.get("n_users") or 0, options.get("fresh", False),
                   options.get("accept_damage", False), options.get("wan_delay_ms"))

    def wan_hosts(self) -> list[str]:
        """The servers outside the first server's site (the directory's): those --wan-delay-ms delays."""
        st = self.settings
        return [s for s in st.servers if st.site_of(s) != st.site_of(st.servers[0])]

    def problem(self) -> str | None:
        """What makes this spec one that cannot start, in one line, or None; checked before
        anything is made (netem's probe aside: `start` asks the kernel)."""
        st = self.settings
        if (st.smarthost or st.smtp_tls or st.smtp_auth) and not st.smtp:
            return "--smarthost, --smtp-tls and --smtp-auth need --smtp"
        if st.smarthost and not re.fullmatch(r"[\w.-]+:\d{1,5}", st.smarthost):
            return f"--smarthost: HOST:PORT, got {st.smarthost!r}"
        if st.imap and not Path("/usr/sbin/dovecot").exists():
            return "--imap needs Debian's dovecot-imapd (apt-get install dovecot-imapd)"
        if self.wan_delay_ms and (st.network != "netns" or not self.wan_hosts()):
            return "--wan-delay-ms needs --network netns and a server outside the first server's site (--site)"
        return None

    def organisation(self) -> list[dict[str, Any]]:
        """user1 ... userN, homed on the servers in turn."""
        names = self.settings.servers
        return [{"alias": f"user{i}", "home": names[(i - 1) % len(names)]} for i in range(1, self.users + 1)]

    def start(self) -> Started:
        """Start (or resume) the cluster and return once every node is ready; ClusterError, with
        nothing left running, when it cannot."""
        from orchestrator import netns  # (only a cluster on namespaces needs it)

        from .launch import start, stop

        if self.wan_delay_ms:  # before anything is made: a kernel without netem cannot delay a link
            try:
                if not netns.probe_netem():
                    raise ClusterError("--wan-delay-ms needs tc netem, and this kernel has no netem (sch_netem); "
                                       "nothing was started")
            except netns.NetworkError as exc:
                raise ClusterError(str(exc)) from None
        t0 = time.time()
        cluster = start(self.run_dir, self.settings, fresh=self.fresh, given=self.given,
                        accept_damage=self.accept_damage, users=self.organisation())
        took = time.time() - t0
        try:
            for host in self.wan_hosts() if self.wan_delay_ms else ():
                netns.net(cluster.config.network, host, delay_ms=self.wan_delay_ms)
        except netns.NetworkError as exc:
            cluster.close()
            stop(self.run_dir)
            raise ClusterError(f"--wan-delay-ms: {exc}") from None
        try:
            return Started(cluster.config, took, resume_summary(cluster) if cluster.resumed is not None else None)
        finally:
            cluster.close()


def resume_summary(cluster: Cluster) -> dict[str, Any]:
    """What a resumed cluster took up again, as its nodes report it."""
    kept = []
    d = cluster.status_of("directory")
    kept.append(f"directory at USN {d['usn']}, {d['recipients']} user(s)")
    for server in cluster.servers:
        box = cluster.status_of(f"store.{server}")
        held = sum(box["mailboxes"].values())
        kept.append(f"store.{server}: {len(box['mailboxes'])} mailbox(es), {held} message(s)"
                    + (f", locked: {', '.join(box['locked'])}" if box["locked"] else ""))
    for mta in cluster.mtas:
        m = cluster.status_of(mta)
        kept.append(f"{mta}: {m['recovered']} message(s) taken up from its queue, {m['messages']} queued now")
    orch = cluster.status_of("orchestrator")
    kept.append(f"orchestrator: {orch['recovered']} unfinished move(s) taken up from its journal"
                + "".join(f", {m['move_id']} of {m['alias']} ({'rolling back' if m['rolling_back'] else 'finishing'})"
                          for m in orch["active"]))
    damage = [e for e in logread.merged(cluster.config.run_dir)
              if e["event"] == "storage.damaged" and e.get("ts", 0) >= cluster.resumed["started_at"]]
    return {"kept": kept, "changed": {k: list(v) for k, v in cluster.resumed["changed"].items()},
            "moved_endpoints": cluster.resumed["moved_endpoints"], "damage": damage}
