"""The world of a chaos trial: who lives where, who moves when, what mail flies, which faults strike.

A world is drawn from its seed alone (`draw_world`), plausible and blind: nothing in it knows
where the KB's window is. Now and then a world draws an extreme, as swarm testing does (Groce et
al., 2012: each trial turns features on and off and pushes some to their limits), unless
`extremes` is off: a short time-out and a node down longer than a report's (so reports go to the
postmaster), users moved many times in a row while mail and reports are in flight, the largest
subject and message id the API takes. Every draw that came later is drawn after the ones before
it, so a seed's earlier draws never change.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from nodes.config import PROFILES, Settings, server_names
from protocol import MAX_MESSAGE_BYTES

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj"]
# kill_at_step: a node (the orchestrator, a store, an MTA, the directory) killed the moment a move
# enters a step; move_source_down: a move started while its source store is killed or paused,
# for less or for longer than the move's lock step waits (its tries)
FAULTS = ("lag", "pause", "delay", "duplicate", "reorder", "feed_cut", "drop", "kill", "kill_at_step",
          "move_source_down", "corrupt")
DEFAULT_FAULTS = ("lag", "pause", "delay", "duplicate", "reorder")
# the kernel's faults on a cluster of namespaces (--network netns): a shaped link (netem, or a
# rate alone through tbf on a kernel without netem) and a partition between two hosts, each
# healed after its drawn time
NET_FAULTS = ("net", "partition")
CRASH_STEPS = ("lock", "copy", "set_home", "open_target", "release", "rollback_target", "rollback_source")
# the largest world a real-process campaign draws (26: `xcon up --servers`' limit); the simulator
# takes organisation-sized ones
REAL_SERVERS, REAL_USERS = 26, 500
SCHEDULE_S = 4.0  # moves, mail and faults all start within this many seconds of a trial
SETTLE_S = 90.0  # at the lab's timings: a world of slower ones settles in proportion (settle_s)
# the waits a settling world goes through again and again, in the profiles (nodes.config.PROFILES)
SETTLE_WAITS = ("retry_ms", "transfer_retry_ms", "replication_lag_ms", "intersite_lag_ms", "read_cache_ttl_ms")
# the extremes a world draws now and then (draw_world), each with its chance
OUTAGE_P, MOVES_P, LARGEST_P = 0.12, 0.10, 0.10
# the subjects of a "largest" world: a header line's limit, larger ones, and (one world in twenty of
# those: at 200 ms a simulated trial it would be most of a campaign's time) all the API takes
LARGEST_SUBJECTS = (998, 64 * 1024, 1 << 20)
LARGEST_SUBJECT = MAX_MESSAGE_BYTES - 64 * 1024


@dataclass
class World:
    seed: int
    build: str
    servers: tuple[str, ...]
    users: list[dict[str, Any]]  # alias, home, alternate, deliver_to_both
    lag_ms: int
    jitter_ms: int
    retry_ms: int
    copy_delay_ms: int
    events: list[dict[str, Any]]  # {"at": s, "do": "send"|"move"|"fault", ...}, in time order
    # "lab": the drawn lag, jitter and retry; another profile: its timings (nodes.config.PROFILES)
    profile: str = "lab"
    time_scale: float = 1.0
    read_cache_ttl_ms: int = 0  # the MTAs' read cache, with the lab profile
    move_build: str = "sp4"  # "legacy": Move User as before SP4 (KB Q277911's window)
    soft_delete_ms: int = 0  # stores keep a moved-away mailbox soft-deleted this long (KB 2579150)
    network: str = "loopback"  # "netns": a host per server (orchestrator.netns), where net faults live
    via: str = "zmq"  # "smtp": mail is sent over SMTP to each sender's server's IMS (nodes.ims)
    expire_ms: int | None = None  # a normal message's time-out; None: the profile's (60 s in the lab)
    # the site of each server, in `servers` order (() : one site); a change reaches the MTAs of a
    # site other than the directory's intersite_lag_ms later, and a move stays within its site
    sites: tuple[str, ...] = ()
    intersite_lag_ms: int = 0
    # with via smtp: the smarthost's plan (orchestrator.lab.outside), {"refuse": addresses it
    # refuses for good, "down": [(at, seconds), ...]}; None: no mail with the outside world
    outside: dict[str, Any] | None = None
    imap: bool = False  # each server runs IMAP, and the users' clients file, flag and expunge over it


@dataclass(frozen=True)
class Recipe:
    """A world not drawn yet: its seed and draw_world's other arguments. A campaign hands these
    out and each trial draws its world where it runs: 200 worlds of 20,000 users drawn up front
    held 1.1 GB in the CLI before a trial began."""

    seed: int
    args: dict[str, Any]

    def draw(self) -> World:
        return draw_world(self.seed, **self.args)


def drawn(world: World | Recipe) -> World:
    return world.draw() if isinstance(world, Recipe) else world


def named_users(world: World) -> set[str]:
    """The aliases the world's events name: movers, senders, recipients, restricted users."""
    named = {e.get("alias") for e in world.events} | {e.get("sender") for e in world.events}
    return named | {r for e in world.events for r in e.get("to", ())}


def links(servers: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for s in servers:
        out += [(f"mta.{s}", f"store.{s}"), (f"mta.{s}", "directory"), ("orchestrator", f"store.{s}")]
    out += [(f"mta.{a}", f"mta.{b}") for i, a in enumerate(servers) for b in servers[i + 1:]]
    return out + [("orchestrator", "directory")]


def draw_world(seed: int, build: str, faults: tuple[str, ...] = DEFAULT_FAULTS, users: int | None = None,
               moves: int | None = None, servers: int = 2, profile: str = "lab", time_scale: float = 1.0,
               move_build: str = "sp4", network: str = "loopback", netem: bool = False,
               extremes: bool = True, via: str = "zmq", sites: int = 1, imap: bool = False) -> World:
    """A random but plausible world, the same for the same arguments (`netem`: whether the
    kernel can delay and drop, or only limit a link's rate; `extremes`: whether it may draw the
    extremes of the module's docstring; `sites`: the servers in that many sites, each a run of
    consecutive servers, with a replication lag between them drawn last)."""
    rng = random.Random(seed)
    names = server_names(servers)
    n_users = users or rng.randint(3, 6)
    aliases = NAMES[:n_users] if n_users <= len(NAMES) else [f"user{i}" for i in range(n_users)]
    people = draw_people(rng, aliases, names)
    events = draw_mail(rng, aliases, moves)
    nodes = ["directory", *(f"{k}.{s}" for s in names for k in ("store", "mta"))]
    for kind in faults:
        if rng.random() > 0.7:
            continue
        fault = draw_fault(rng, kind, names, nodes, events, netem)
        if fault is not None:
            events.append(fault)
    events.sort(key=lambda e: (e["at"], e["do"] != "fault"))
    world = World(seed, build, names, people, lag_ms=rng.randint(100, 2500), jitter_ms=rng.randint(0, 800),
                  retry_ms=rng.randint(200, 1500), copy_delay_ms=rng.randint(50, 600), events=events,
                  profile=profile, time_scale=time_scale)
    # drawn last, so that the draws above stay what they were for a seed: the MTAs' read cache
    # (Q172364, Q178534: a stale read) and a delivery restriction that changes while mail flows
    world.read_cache_ttl_ms = rng.randint(200, 3000) if rng.random() < 0.4 else 0
    if rng.random() < 0.3:
        alias = rng.choice(aliases)
        events.append({"at": rng.uniform(0, SCHEDULE_S), "do": "restrict", "alias": alias,
                       "reject_from": [other(rng, aliases, aliases.index(alias))]})
        events.sort(key=lambda e: (e["at"], e["do"] != "fault"))
    # stores that keep moved-away mailboxes soft-deleted (KB 2579150: a stale route finds one)
    world.soft_delete_ms = rng.randint(1000, 30_000) if rng.random() < 0.4 else 0
    world.move_build = move_build
    world.network = network
    if extremes:  # last again: a seed draws what it drew before, and then its extremes
        draw_extremes(rng, world, aliases, nodes, outage="kill" in faults)
    if via == "smtp":  # last of all: the same seed draws the same world, then its IMSs' faults
        world.via = "smtp"
        draw_edge_faults(rng, world, names, faults)
        draw_outside(rng, world, aliases, names)
    if imap:
        world.imap = True
        draw_imap(rng, world, aliases)
    if sites > 1:  # after everything a one-site world draws
        per = -(-servers // sites)
        world.sites = tuple(f"site{i // per + 1}" for i in range(servers))
        world.intersite_lag_ms = rng.randint(500, 10_000)
    return world


def draw_people(rng: random.Random, aliases: list[str], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each user's home, and half of them an alternate (most of those with "deliver to both")."""
    people = []
    for k, alias in enumerate(aliases):
        alternate = other(rng, aliases, k) if rng.random() < 0.5 else None
        people.append({"alias": alias, "home": rng.choice(names), "alternate": alternate,
                       "deliver_to_both": bool(alternate) and rng.random() < 0.6})
    return people


def draw_mail(rng: random.Random, aliases: list[str], moves: int | None) -> list[dict[str, Any]]:
    """The moves (in the schedule's first 60%), then the mail."""
    events: list[dict[str, Any]] = []
    for _ in range(moves or rng.randint(1, 3)):
        events.append({"at": rng.uniform(0, SCHEDULE_S * 0.6), "do": "move", "alias": rng.choice(aliases),
                       "pick": rng.random()})  # pick chooses the target among the other servers at that time
    for _ in range(rng.randint(8, 20)):
        send = {"at": rng.uniform(0, SCHEDULE_S), "do": "send", "sender": rng.choice(aliases),
                "to": rng.sample(aliases, rng.randint(1, min(3, len(aliases))))}
        if rng.random() < 0.3:  # most mail is normal; some urgent (a shorter time-out), some not
            send["priority"] = rng.choice(["urgent", "non-urgent"])
        events.append(send)
    return events


def draw_fault(rng: random.Random, kind: str, names: tuple[str, ...], nodes: list[str],
               events: list[dict[str, Any]], netem: bool) -> dict[str, Any] | None:
    """One fault of `kind`, as a schedule's event; move_source_down marks one of the `events`' moves
    instead (and gives None)."""
    at = rng.uniform(0, SCHEDULE_S * 0.8)
    mta = f"mta.{rng.choice(names)}"
    if kind == "move_source_down":
        move = rng.choice([e for e in events if e["do"] == "move"])
        # down for less than the lock step's tries (the move waits it out), or for longer
        # (it fails, and the locks it asked for must not outlive it)
        move["source_down"] = {"how": rng.choice(["kill", "pause"]),
                               "seconds": round(rng.choice([rng.uniform(0.3, 3.0), rng.uniform(12.5, 15.0)]), 3)}
        return None
    if kind == "lag":
        fault = {"kind": "lag", "node": mta, "lag_ms": rng.randint(100, 3000), "jitter_ms": rng.randint(0, 500)}
    elif kind == "pause":
        fault = {"kind": "pause", "node": rng.choice(nodes), "seconds": round(rng.uniform(0.2, 1.5), 3)}
    elif kind == "feed_cut":
        fault = {"kind": "feed_cut", "node": mta, "seconds": round(rng.uniform(0.5, 3.0), 3)}
    elif kind == "kill":
        fault = {"kind": "kill", "node": rng.choice(nodes), "restart_after": round(rng.uniform(0.2, 1.5), 3)}
    elif kind == "net":
        fault = {"kind": "net", "node": rng.choice(names), "seconds": round(rng.uniform(1, 4), 3),
                 "rate_kbit": rng.choice([64, 256, 1024])}
        if netem:
            fault.update(rate_kbit=0, delay_ms=rng.randint(5, 300), jitter_ms=rng.randint(0, 50),
                         loss=round(rng.uniform(0, 20), 1), duplicate=round(rng.uniform(0, 5), 1))
    elif kind == "partition":
        a, b = rng.sample(["directory", "orchestrator", *names], 2)
        fault = {"kind": "partition", "node": a, "peer": b, "seconds": round(rng.uniform(1, 5), 3),
                 **({"one_way": True} if rng.random() < 0.3 else {})}
    elif kind == "corrupt":  # killed, a byte flipped mid-queue-log, restarted: it finds the damage
        fault = {"kind": "corrupt", "node": mta, "where": round(rng.uniform(0.1, 0.8), 3),
                 "restart_after": round(rng.uniform(0.2, 1.5), 3)}
    elif kind == "kill_at_step":
        at = 0.0  # armed before the moves start
        fault = {"kind": "kill_at_step", "node": rng.choice([*nodes, "orchestrator"]),
                 "step": rng.choice(CRASH_STEPS), "restart_after": round(rng.uniform(0.2, 1.5), 3)}
    else:
        a, b = rng.choice(links(names))
        fault = {"kind": kind, "node": a, "peer": b, "seconds": round(rng.uniform(1, 4), 3)}
        if kind == "delay":
            fault.update(delay_ms=rng.randint(20, 300), jitter_ms=rng.randint(0, 200))
        else:
            fault["probability"] = round(rng.uniform(0.1, 0.5), 3)
    return {"at": at, "do": "fault", **fault}


def other(rng: random.Random, aliases: list[str], k: int) -> str:
    """An alias other than aliases[k], drawn as rng.choice over the others would draw it (the same
    number from the generator), without making that list: a world of 20,000 users drew 400
    million comparisons that way."""
    j = rng.randrange(len(aliases) - 1)
    return aliases[j if j < k else j + 1]


def move_targets(world: World, home: str) -> list[str]:
    """Where a user homed on `home` can move: the other servers of its site (Exchange 5.5 moves a
    mailbox within its site only)."""
    if not world.sites:
        return [s for s in world.servers if s != home]
    site = world.sites[world.servers.index(home)]
    return [s for s, at in zip(world.servers, world.sites) if s != home and at == site]


def draw_edge_faults(rng: random.Random, world: World, names: tuple[str, ...], faults: tuple[str, ...]) -> None:
    """A world whose mail comes over SMTP: an IMS killed (and restarted) or paused while sessions
    are open, around a 250 or before it, and (with delay or drop among the kinds) its sessions
    slowed and cut just before their 250 (fault.smtp), where the fault kinds allow."""
    for kind in ("kill", "pause"):
        if kind in faults and rng.random() < 0.7:
            fault: dict[str, Any] = {"at": rng.uniform(0, SCHEDULE_S * 0.8), "do": "fault", "kind": kind,
                                     "node": f"ims.{rng.choice(names)}"}
            if kind == "kill":
                fault["restart_after"] = round(rng.uniform(0.2, 1.5), 3)
            else:
                fault["seconds"] = round(rng.uniform(0.2, 1.5), 3)
            world.events.append(fault)
    if {"delay", "drop"} & set(faults) and rng.random() < 0.7:  # sessions cut before their 250, and slowed
        world.events.append({"at": rng.uniform(0, SCHEDULE_S * 0.8), "do": "fault", "kind": "smtp",
                             "node": f"ims.{rng.choice(names)}", "cut": round(rng.uniform(0.1, 0.5), 3),
                             "delay_ms": rng.randint(0, 300), "seconds": round(rng.uniform(1, 4), 3)})
    world.events.sort(key=lambda e: (e["at"], e["do"] != "fault"))


def draw_outside(rng: random.Random, world: World, aliases: list[str], names: tuple[str, ...]) -> None:
    """Mail with the outside world (orchestrator.lab.outside): senders outside the organisation,
    some with addresses in UTF-8, each through one server's IMS (its MX); users writing to outside
    addresses; a smarthost that refuses some addresses for good (550) and is down for a while."""
    from .outside import ADDRESSES, SENDERS

    refuse = {a for a in (*SENDERS, *ADDRESSES) if rng.random() < 0.25} | {"nobody@outside.test"}
    down = [(round(rng.uniform(0, SCHEDULE_S), 3), round(rng.uniform(0.5, 4.0), 3)) for _ in range(rng.randint(0, 2))]
    world.outside = {"refuse": sorted(refuse), "down": down}
    for _ in range(rng.randint(3, 8)):
        world.events.append({"at": rng.uniform(0, SCHEDULE_S), "do": "send", "sender": rng.choice(SENDERS),
                             "to": rng.sample(aliases, rng.randint(1, min(2, len(aliases)))), "mx": rng.choice(names)})
    for _ in range(rng.randint(1, 4)):
        to = [rng.choice(ADDRESSES), *([rng.choice(aliases)] if rng.random() < 0.4 else [])]
        world.events.append({"at": rng.uniform(0, SCHEDULE_S), "do": "send", "sender": rng.choice(aliases), "to": to})
    world.events += [{"at": at, "do": "outside", "down_s": seconds} for at, seconds in down]
    world.events.sort(key=lambda e: (e["at"], e["do"] != "fault"))


def draw_imap(rng: random.Random, world: World, aliases: list[str]) -> None:
    """The users at their IMAP clients while mail flows and mailboxes move: each visit files a
    message in a folder of the user's, flags one or expunges one (orchestrator.lab.outside)."""
    for _ in range(rng.randint(3, 8)):
        world.events.append({"at": rng.uniform(0.5, SCHEDULE_S + 2), "do": "imap", "alias": rng.choice(aliases),
                             "act": rng.choice(["file", "flag", "expunge"]), "pick": rng.random()})
    world.events.sort(key=lambda e: (e["at"], e["do"] != "fault"))


def draw_extremes(rng: random.Random, world: World, aliases: list[str], nodes: list[str], outage: bool) -> None:
    """Now and then, push the world to a limit (see the module's docstring); `outage`: whether a
    node may be down long (a kill: for worlds that draw kills)."""
    events = world.events
    if rng.random() < OUTAGE_P and outage:  # down longer than a report's time-out (twice a message's)
        world.expire_ms = rng.randint(1500, 4000)
        events.append({"at": round(rng.uniform(0, SCHEDULE_S * 0.5), 3), "do": "fault", "kind": "kill",
                       "node": rng.choice(nodes), "extreme": "outage",
                       "restart_after": round(2 * world.expire_ms / 1000 * rng.uniform(1.1, 2.0), 3)})
    if rng.random() < MOVES_P:  # one or two users moved again and again while mail and reports fly
        movers = rng.sample(aliases, min(2, len(aliases)))
        at = rng.uniform(0, SCHEDULE_S * 0.3)
        for _ in range(rng.randint(8, 20)):
            at += rng.uniform(0.1, 0.3)
            events.append({"at": round(at, 3), "do": "move", "alias": rng.choice(movers), "pick": rng.random(),
                           "extreme": "moves"})
    if rng.random() < LARGEST_P:  # the largest subject and the longest id the API takes
        msg_id = f"x{world.seed}-".ljust(200, "x")
        events.append({"at": round(rng.uniform(0, SCHEDULE_S), 3), "do": "send", "sender": rng.choice(aliases),
                       "to": rng.sample(aliases, rng.randint(1, min(3, len(aliases)))), "msg_id": msg_id,
                       "subject_bytes": LARGEST_SUBJECT if rng.random() < 0.05 else rng.choice(LARGEST_SUBJECTS),
                       "extreme": "largest"})
    events.sort(key=lambda e: (e["at"], e["do"] != "fault"))


def settle_s(world: World) -> float:
    """How long a world may take to settle after its last step before it is stuck: SETTLE_S at
    the lab's timings, and as many times that as its profile's waits (a retry, a replication or
    a site's lag, a read cache), times its time scale, are longer than the lab's. Exchange 5.5's
    retry of 600 s settles in its own time: at 90 s, three trials in four were called stuck."""
    lab, own = PROFILES["lab"], PROFILES[world.profile]
    slower = max((own[k] or 0) / lab[k] for k in SETTLE_WAITS if lab[k])
    return SETTLE_S * max(1.0, slower * world.time_scale)


def world_settings(world: World) -> Settings:
    common = {"servers": world.servers, "mta_build": world.build, "seed": world.seed, "move_build": world.move_build,
              "soft_delete_ms": world.soft_delete_ms, "network": world.network, "smtp": world.via == "smtp",
              "imap": world.imap,
              **({"sites": world.sites, "intersite_lag_ms": world.intersite_lag_ms} if world.sites else {})}
    if world.profile != "lab" or world.time_scale != 1.0:
        expire = {} if world.expire_ms is None else {"expire_ms": world.expire_ms}
        return Settings.from_profile(world.profile, world.time_scale, **common, **expire)
    return Settings(replication_lag_ms=world.lag_ms, replication_jitter_ms=world.jitter_ms, retry_ms=world.retry_ms,
                    expire_ms=world.expire_ms or 60_000, read_cache_ttl_ms=world.read_cache_ttl_ms, **common)
