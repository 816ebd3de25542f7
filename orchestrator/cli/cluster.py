"""xcon commands that run the cluster: up, down, status, and deploy for separate machines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.markup import escape
from rich.table import Table

from nodes.config import BUILDS, CONSOLE_LEVELS, MOVE_BUILDS, Settings, describe_timings, server_names

from orchestrator import cluster as cl
from orchestrator.cluster.spec import Started, UpSpec
from .common import attached, emit_json, json_option, out, profile_options, prose, run_dir_option, show_table

@click.command()
@run_dir_option
@click.option("--servers", type=click.IntRange(1, 26), default=2, show_default=True, help="Number of servers (ex1, ex2, ...).")
@click.option("--mta-build", type=click.Choice(BUILDS), default="legacy", show_default=True,
              help="legacy: 5.5 SP3 (silent loss); sp4: NDR per recipient; reroute: ask the directory and reroute.")
@click.option("--move-build", type=click.Choice(MOVE_BUILDS), default=Settings.move_build, show_default=True,
              help="Move User: sp4 makes the target mailbox in transit at once; legacy (5.5 before SP4) makes it live "
                   "and marks it later, dropping mail delivered in between (KB Q277911).")
@click.option("--soft-delete-ms", type=click.IntRange(0, 2_000_000_000), default=Settings.soft_delete_ms,
              show_default=True,
              help="Keep a moved-away mailbox soft-deleted this long (Exchange 2010 SP1); 0 deletes it at once, as "
                   "5.5 did. A delivery to it fails 'soft-deleted': NDR 5.2.0 unless the MTA looks again (KB 2579150).")
@click.option("--network", type=click.Choice(["loopback", "netns"]), default="loopback", show_default=True,
              help="loopback: every node on 127.0.0.1. netns (root): each server's MTA and store on a host of their "
                   "own, the directory and the orchestrator on theirs: network namespaces on a bridge, addresses "
                   "from 198.18.0.0/15, nothing routed off the machine.")
@click.option("--wan-delay-ms", type=click.IntRange(1, 60_000),
              help="With --network netns and sites: delay every link of a server outside the directory's site by "
                   "this much for the cluster's life (tc netem), as sites joined over a WAN.")
@click.option("--site", "site_specs", multiple=True, metavar="NAME=SERVER,...",
              help="Put servers in a site (repeat for each site, e.g. --site HQ=ex1,ex2 --site BRANCH=ex3); every "
                   "server in exactly one. Default: all in one site. Move Mailbox stays within a site; the directory "
                   "reaches another site's MTAs --intersite-lag-ms later.")
@click.option("--intersite-lag-ms", type=click.IntRange(0, 86_400_000),
              help="More replication delay for an MTA outside the directory's site (lab: 2000; exchange55: 15 min).")
@profile_options("xcon's own timings, in seconds (the options below override a profile's)")
@click.option("--replication-lag-ms", type=click.IntRange(0, 86_400_000),
              help="Delay before a directory change reaches an MTA's cache (lab: 2000).")
@click.option("--replication-step-ms", type=click.IntRange(0, 86_400_000),
              help="More replication delay for each further server (lab: 0).")
@click.option("--replication-jitter-ms", type=click.IntRange(0, 86_400_000),
              help="Extra random delay (0..jitter, seeded) per change (lab: 500).")
@click.option("--read-cache-ttl-ms", type=click.IntRange(0, 86_400_000),
              help="How long an MTA trusts a directory entry it read, on top of replication (lab: 0).")
@click.option("--retry-ms", type=click.IntRange(10, 86_400_000),
              help="How long an MTA waits before retrying after no answer (lab: 1000).")
@click.option("--transfer-retry-ms", type=click.IntRange(10, 86_400_000),
              help="How long an MTA waits before retrying after an answer that defers (lab: as --retry-ms).")
@click.option("--expire-ms", type=click.IntRange(100, 2_000_000_000),
              help="How long an MTA keeps trying a normal-priority message before the NDR (lab: 60000; urgent gets "
                   "2/7 of it, non-urgent 10/7).")
@click.option("--report-expire-ms", type=click.IntRange(100, 2_000_000_000),
              help="How long an MTA tries to deliver an NDR before it gives it to the postmaster mailbox (default: "
                   "twice the normal time-out, so a report outlives the mail it reports on).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the replication jitter.")
@click.option("--max-queue", type=click.IntRange(1, 10_000_000), default=Settings.max_queue, show_default=True,
              help="Messages an MTA holds before it answers 'busy, retry'.")
@click.option("--insecure", is_flag=True, help="No CURVE, no ZAP: any local process may talk to the nodes.")
@click.option("--no-fsync", is_flag=True,
              help="Benchmarks only: acknowledge before the disk has it (a crash then loses accepted mail).")
@click.option("--console", type=click.Choice(CONSOLE_LEVELS), default=Settings.console, show_default=True,
              help="What each node's RUN_DIR/logs/NODE.console shows of mail events: warnings, or every event "
                   "(the JSON log always has every event; `xcon logs` shows it).")
@click.option("--min-free-mb", type=click.IntRange(0, 1_000_000), default=Settings.min_free_mb, show_default=True,
              help="Below this much free disk an MTA refuses new mail and a store defers deliveries, "
                   "until there is room again.")
@click.option("--accept-damage", is_flag=True,
              help="Resume even where a log is damaged in the middle: each damaged file is kept aside untouched "
                   "(NAME.damaged-TIME) and every record that reads is taken up; what was lost is logged, and "
                   "`xcon check` calls it LOST. Without it, `xcon up` says what is damaged and starts nothing.")
@click.option("--smtp", is_flag=True,
              help="An Internet Mail Service per server (ims.exN): SMTP in for the organisation's recipients, on a "
                   "loopback port `xcon status` shows; mail and DSNs for outside addresses leave by --smarthost.")
@click.option("--smarthost", metavar="HOST:PORT", default="",
              help="Where the IMSs relay mail for outside the organisation (an NDR to an outside sender goes as an "
                   "RFC 3464 DSN); without one it waits in their queues.")
@click.option("--smtp-tls", is_flag=True,
              help="The IMSs offer STARTTLS, with a self-signed certificate made now (RUN_DIR/keys/ims.crt).")
@click.option("--smtp-auth", is_flag=True,
              help="The IMSs offer AUTH PLAIN and LOGIN (over TLS with --smtp-tls) to the directory's users (a "
                   "user's password is its alias), and a sender claiming an organisation address, with its domain "
                   "or without, must have authenticated as that user. Without it no AUTH is offered.")
@click.option("--imap", is_flag=True,
              help="IMAP4 per server (imap.exN): Debian's Dovecot over that server's mailboxes, configured under "
                   "RUN_DIR, on a loopback port `xcon status` shows; a user's password is its alias (a lab's).")
@click.option("--users", "n_users", type=click.IntRange(1, 100_000),
              help="A new cluster's organisation: N users, user1 ... userN, homed on the servers in turn, in the "
                   "directory and with their mailboxes before the nodes start (each MTA's cache takes them whole "
                   "from its first snapshot).")
@click.option("--fresh", is_flag=True,
              help="Start anew: delete the state a stopped cluster left in RUN_DIR (mail, queues, directory, "
                   "journal, keys, logs) instead of resuming it.")
@json_option
@click.pass_context
def up(ctx: click.Context, insecure: bool, as_json: bool, **_: Any) -> None:  # every option is in ctx.params
    """Start every node in the background; return when all are ready.

    A RUN_DIR that holds a stopped cluster (after `xcon down`, or after every node died) is
    resumed: each node restarts on its own queue, journal, directory, mailboxes and keys, and
    the mail it had accepted is delivered. Settings given on the command line replace the saved
    ones (an MTA build, say); --servers and --insecure cannot change. `--fresh` deletes that
    state first. xcon marks the directories it makes and deletes nothing elsewhere: a RUN_DIR
    holding files it did not make is refused.

    Every socket uses CURVE with keys created in RUN_DIR/keys (owner-only); only the cluster's
    key is admitted. Endpoints bind to 127.0.0.1 (cluster.json holds them).
    """
    if insecure:
        click.echo("xcon: WARNING: --insecure: no encryption, no authentication; any process that can reach "
                   "the ports can submit, move and read mail", err=True)
    spec = up_spec(ctx)
    problem = spec.problem()
    if problem:
        raise click.UsageError(problem)
    render_up(spec, spec.start(), as_json)


def up_spec(ctx: click.Context) -> UpSpec:
    """The spec of the `xcon up` parsed into `ctx`: the options given on the command line or in
    the environment are the settings a resume changes."""
    options = dict(ctx.params)
    run_dir, site_specs = options.pop("run_dir"), options.pop("site_specs")
    del options["as_json"]
    named = frozenset(name for name in ctx.params
                      if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT))
    return UpSpec.of_options(run_dir, options, named, parse_sites(site_specs, server_names(options["servers"])))


def render_up(spec: UpSpec, started: Started, as_json: bool) -> None:
    """A started cluster: its config as JSON, or a table of its nodes and a line of its settings."""
    config, resumed, run_dir = started.config, started.resumed, spec.run_dir
    if as_json:
        emit_json({**config.to_json(), "start_seconds": round(started.seconds, 3), "resumed": resumed,
                   "users": spec.users})
        return
    verb = "resumed" if resumed else "up"
    table = Table(title=f"cluster {verb} in {started.seconds:.2f}s: {run_dir.resolve()}")
    hosts = config.network is not None
    for col in ("node", "pid", *(["host"] if hosts else []), "endpoint", "log (in the run-dir)"):
        table.add_column(col)
    for name, node in config.nodes.items():
        log = Path(node["log"])
        extra = [f"{k.upper()} {v}" for k, v in node["endpoints"].items() if k in ("smtp", "imap")]
        endpoint = node["endpoints"]["router"] + (f" ({extra[0]})" if extra else "")
        table.add_row(name, str(node["pid"]), *([node.get("host", "-")] if hosts else []), endpoint,
                      str(log.relative_to(run_dir.resolve())) if log.is_relative_to(run_dir.resolve()) else str(log))
    show_table(table)
    st = config.settings
    prose(f"MTA build: {st.mta_build}, move build: {st.move_build}, soft delete: "
          f"{f'{st.soft_delete_ms} ms' if st.soft_delete_ms else 'off'}, seed {st.seed}; {describe_timings(st.timings())}")
    if spec.users:
        prose(f"organisation: {spec.users:,} users, user1 ... user{spec.users}, homed on "
              f"{', '.join(st.servers)} in turn")
    if resumed:
        prose(f"resumed the stopped cluster's state: {'; '.join(resumed['kept'])}")
        for key, (was, now) in resumed["changed"].items():
            out.print(f"setting changed on resume: {key} {was} -> {now}")
        say_damage(resumed["damage"])


def say_damage(found: list[dict[str, Any]]) -> None:
    """A line for each storage.damaged a node logged as it started: what it kept aside, and what
    was lost with it."""
    for e in found:
        lost = e.get("lost") or e.get("lost_usns") or e.get("suspect") or []
        prose("[yellow]" + escape(f"damage accepted: {e['node']} kept {e['file']} aside as {e['kept_as']} and took "
                                  f"up every record that reads; {len(lost)} lost or left alone: "
                                  f"{', '.join(map(str, lost[:5]))}{' ...' if len(lost) > 5 else ''} (see `xcon check`)")
              + "[/yellow]")


def parse_sites(specs: tuple[str, ...], servers: tuple[str, ...]) -> tuple[str, ...]:
    """The site of each server from --site NAME=ex1,ex2 options; () for none given."""
    if not specs:
        return ()
    site_of: dict[str, str] = {}
    for spec in specs:
        name, _, members = spec.partition("=")
        name = name.strip()
        if not name or not members.strip() or not name.replace("-", "").replace("_", "").isalnum():
            raise click.BadParameter(f"{spec!r}: write NAME=SERVER,SERVER (a site name of letters, digits, - and _)",
                                     param_hint="--site")
        for server in (m.strip() for m in members.split(",") if m.strip()):
            if server not in servers:
                raise click.BadParameter(f"no server '{server}' (servers: {', '.join(servers)})", param_hint="--site")
            if server in site_of:
                raise click.BadParameter(f"{server} is in two sites ({site_of[server]} and {name})", param_hint="--site")
            site_of[server] = name
    missing = [s for s in servers if s not in site_of]
    if missing:
        raise click.BadParameter(f"no site for {', '.join(missing)}: give every server a site", param_hint="--site")
    return tuple(site_of[s] for s in servers)


@click.command()
@run_dir_option
@click.option("--force", is_flag=True, help="After a crash: remove whatever is left (processes, namespaces, veths, "
              "bridge) even when cluster.json is gone or nothing runs; no error when nothing is left.")
@json_option
def down(run_dir: Path, force: bool, as_json: bool) -> None:
    """Stop every node: gracefully, then by force after 5 s; then remove the cluster's network
    namespaces, veths and bridge if it has them (`xcon up --network netns`)."""
    if not run_dir.is_dir():  # nothing ever ran here: nothing to do, which is not an error
        stopped, removed = [], []
    else:
        stopped, removed = cl.stop(run_dir, force=force)
    if as_json:
        emit_json({"stopped": stopped, "removed": removed})
        return
    out.print(f"stopped {len(stopped)} node(s): {', '.join(stopped)}" if stopped
              else f"nothing to stop: no node of {run_dir.resolve()} is running")
    if removed:
        out.print(f"removed the cluster's network: {', '.join(removed)}")


@click.command()
@run_dir_option
@json_option
@attached
def status(cluster: cl.Cluster, as_json: bool) -> None:
    """Nodes (alive, pid), queue depths, each MTA's cache USN against the directory's, moves."""
    st = cluster.status()
    if as_json:
        emit_json(st)
        return
    nodes = st["nodes"]
    dir_usn = nodes.get("directory", {}).get("status", {}).get("usn")
    settings = st["settings"]
    table = Table(title=f"xcon cluster in {st['run_dir']} (MTA build {settings['mta_build']}, move build "
                        f"{settings.get('move_build', 'sp4')})")
    network = st.get("network")
    for col in ("node", "alive", "pid", *(["host", "address"] if network else []), "state"):
        table.add_column(col)
    moves = []
    for name, info in nodes.items():
        s = info.get("status", {})
        if not info["alive"]:
            detail = "-"
        elif "error" in info:
            detail = info["error"]
        else:
            detail = _node_state(name, s, dir_usn)
            if name == "orchestrator":
                moves = s.get("active", [])
        table.add_row(name, "yes" if info["alive"] else "[red]no[/red]", str(info.get("pid") or "-"),
                      *([info.get("host", "-"), info.get("address", "-")] if network else []), detail)
    show_table(table)
    if network:
        prose(f"network: namespaces on bridge {network['bridge']} ({network['subnet']}; xcon reaches the nodes "
              f"from {network['bridge_address']})")
    prose(describe_timings(Settings.from_json(st["settings"]).timings()))
    for m in moves:
        waiting = f", waiting for {m['waiting_for']} (try {m['attempts']})" if m.get("waiting_for") else ""
        how = f"rolling back ({m['error']}), " if m["rolling_back"] else ""
        prose(f"move {m['move_id']}: {m['alias']} {m['source']} -> {m['target']}, {how}step {m['step']}{waiting}")


def _node_state(name: str, s: dict[str, Any], dir_usn: Any) -> str:
    """A node's state column in `xcon status`, from the status it answered."""
    if name == "directory":
        return f"usn {s.get('usn')}, {s.get('recipients')} recipients"
    if name.startswith("mta."):
        lag = "" if s.get("cache_usn") == dir_usn else "  (cache behind)"
        return (f"cache usn {s.get('cache_usn')}/{dir_usn}{lag}; queue: {s.get('open_pairs')} open, "
                f"{s.get('deferred')} deferred, {s.get('in_flight')} in flight")
    if name.startswith("ims."):
        return (f"SMTP {s.get('smtp')}; {s.get('accepted')} accepted, {s.get('outbound')} waiting to leave, "
                f"{s.get('relayed')} relayed to {s.get('smarthost') or 'no smarthost'}")
    if name == "internet":
        return f"the outside world: SMTP {s.get('smtp')} for {s.get('domain')}; {s.get('received')} received"
    if name.startswith("imap."):
        return (f"IMAP {s.get('imap')} (Dovecot pid {s.get('dovecot_pid')}); users: "
                f"{', '.join(s.get('users') or []) or 'none'}")
    if name.startswith("store."):
        locks = [f"{m} by {o}" + (" (incoming)" if m in s.get("incoming", ()) else "")
                 for m, o in s.get("locked", {}).items()]
        return (f"{len(s.get('mailboxes', {}))} mailboxes" + (f", locked: {', '.join(locks)}" if locks else "") +
                (f", made live by a legacy move: {', '.join(s['made'])}" if s.get("made") else "") +
                (f", soft-deleted: {', '.join(s['soft_deleted'])}" if s.get("soft_deleted") else ""))
    armed = [f"kill {a['node']} at {a['step']}" for a in s.get("armed", [])]  # the orchestrator
    paused = s.get("paused", [])
    return (f"{len(s.get('active', []))} move(s) running, {s.get('finished', 0)} finished" +
            (f"; armed: {', '.join(armed)}" if armed else "") + (f"; paused: {', '.join(paused)}" if paused else ""))


# --- separate machines ----------------------------------------------------------------------

@click.command()
@click.option("--hosts", "hosts_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A line per host: HOST ADDRESS ROLE[,ROLE...]; roles: directory, orchestrator, ex1, ex2, ... "
                   "(a server: its MTA and its store). deploy/hosts.example shows one.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new folder to write into: cluster.json, keys/, units/, logs/.")
@click.option("--root", type=click.Path(path_type=Path), default=Path("/var/lib/xcon"), show_default=True,
              help="Where the folder is copied on every host (the nodes' --run-dir).")
@click.option("--python", "python_path", default=sys.executable, show_default="the Python running xcon",
              help="The Python, with xcon installed, on the hosts.")
@click.option("--mta-build", type=click.Choice(BUILDS), default="sp4", show_default=True,
              help="The MTAs' build in the written cluster.json (as xcon up --mta-build).")
@click.option("--move-build", type=click.Choice(MOVE_BUILDS), default="sp4", show_default=True,
              help="Move User's build in the written cluster.json (as xcon up --move-build).")
@profile_options("xcon's own timings")
@click.option("--namespaces", is_flag=True,
              help="Each unit runs in the network namespace named as its host (NetworkNamespacePath): to try a "
                   "deployment on one machine, with namespaces standing in for the hosts.")
@json_option
def deploy(hosts_file: Path, out_dir: Path, root: Path, python_path: str, mta_build: str, move_build: str,
           profile: str, time_scale: float, namespaces: bool, as_json: bool) -> None:
    """Write what runs the nodes on separate machines: cluster.json (each node on its host's
    address), the CURVE keys and a systemd unit per node. Copy the folder to --root on every
    host, start the units there, and run xcon with --run-dir --root from any of them
    (deploy/README.md walks through it)."""
    from orchestrator.cluster import deploy as deploy_mod

    try:
        text = hosts_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{hosts_file} is not a text file of hosts (byte {exc.start} is not UTF-8)") from None
    try:
        hosts = deploy_mod.parse_hosts(text)
        settings = Settings.from_profile(profile, time_scale, mta_build=mta_build, move_build=move_build)
        made = deploy_mod.generate(hosts, out_dir.resolve(), root, settings, python_path, namespaces)
    except deploy_mod.DeployError as exc:
        raise click.UsageError(f"{hosts_file}: {exc}" if "line" in str(exc) or "host" in str(exc) else str(exc))
    if as_json:
        emit_json(made)
        return
    table = Table(title=f"xcon deploy: {len(made['nodes'])} nodes on {len(hosts)} hosts, written to {out_dir}")
    for col in ("node", "host", "endpoint"):
        table.add_column(col)
    for name, node in made["nodes"].items():
        table.add_row(name, node["host"], node["endpoint"])
    show_table(table)
    prose(escape(f"next: copy {out_dir} to {root} on every host; on each, for each of its nodes, "
                 f"`systemctl link {root}/units/xcon-NODE.service && systemctl enable --now xcon-NODE` "
                 "(deploy/README.md)"))


COMMANDS = [deploy, up, down, status]
