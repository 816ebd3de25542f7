"""A chaos campaign as one value (CampaignSpec) and the one call that runs it (`run`).

`xcon chaos` builds a spec from its options, asks it what is wrong with it (`problem`), runs it
and renders what comes back; the bench and the tests build the same spec, so a campaign means
the same wherever it is made: the same worlds from the same seed, the same name in the results
store, the same replay commands.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from orchestrator.sim.world import Network

from . import campaign, chaos, guided
from .findings import describe_break
from .worlds import DEFAULT_FAULTS, FAULTS, NET_FAULTS, REAL_SERVERS, REAL_USERS, Recipe, World, drawn


@dataclass(frozen=True)
class CampaignSpec:
    """Everything a campaign is: its worlds' draw, where they run, and what is done with a find."""

    seed: int
    trials: int = 10
    build: str = "sp4"
    faults: tuple[str, ...] = DEFAULT_FAULTS
    users: int | None = None
    moves: int | None = None
    servers: int = 2
    sites: int = 1
    profile: str = "lab"
    time_scale: float = 1.0
    move_build: str = "sp4"
    network: str = "loopback"  # netns: a host per server (real processes, root)
    netem: bool = False  # the kernel has netem (probed by the caller for netns)
    extremes: bool = True
    via: str = "zmq"
    imap: bool = False
    sim: bool = False
    workers: int | None = None  # the simulator's processes (None: one per core)
    dask: str | None = None
    determinism: bool = False
    guided: bool = False
    torn_kills: bool = True
    stuck_after: int | None = None
    stop_on_break: bool = False
    replay: int | None = None  # the one trial of this seed
    world: World | None = None  # the one world given (`--world FILE`), and its file
    world_file: Path | None = None
    shrink: bool = False
    confirm: int = 0

    def problem(self) -> str | None:
        """What makes this campaign one that cannot run, in a line; None when it can."""
        unknown = [k for k in self.faults if k not in (*FAULTS, *NET_FAULTS)]
        if unknown:
            return f"unknown fault kind(s): {', '.join(unknown)} (kinds: {', '.join((*FAULTS, *NET_FAULTS))})"
        if self.network != "netns" and set(self.faults) & set(NET_FAULTS):
            return "the faults net and partition are the kernel's: they need --network netns"
        if self.network == "netns" and self.sim:
            return "--sim has no kernel network: --network netns runs real processes"
        if self.imap and (self.sim or not Path("/usr/sbin/dovecot").exists()):
            return "--imap runs real processes, with Debian's dovecot-imapd (apt-get install dovecot-imapd)"
        if self.sites > self.servers:
            return f"--sites {self.sites} is more than --servers {self.servers}: a site holds a server at least"
        if not self.sim and (self.servers > REAL_SERVERS or (self.users or 0) > REAL_USERS):
            return (f"a world of more than {REAL_SERVERS} servers or {REAL_USERS} users runs with --sim (on real "
                    "processes, a cluster of that size is `xcon up`'s to make)")
        if not self.sim and (self.determinism or self.confirm or self.shrink or self.workers or self.guided
                             or self.stuck_after):
            return "--determinism, --confirm, --shrink, --workers, --guided and --stuck-after go with --sim"
        if self.guided and (self.dask or self.replay is not None or self.world_file or self.determinism):
            return "--guided draws its worlds as it learns, here: not with --dask, --replay, --world or --determinism"
        return None

    def given(self, world: World, path: Path) -> CampaignSpec:
        """The campaign of one world read from `path`, with its builds."""
        return replace(self, world=world, world_file=path, build=world.build, move_build=world.move_build)

    # --- what it draws ------------------------------------------------------------------------

    def seeds(self) -> list[int]:
        if self.world is not None:
            return [self.world.seed]
        return [self.replay] if self.replay is not None else chaos.trial_seeds(self.seed, self.trials)

    def worlds(self) -> list[World | Recipe]:
        """Drawn where each trial runs (worlds.Recipe): a campaign of large worlds holds none up front."""
        if self.world is not None:
            return [self.world]
        args = dict(build=self.build, faults=self.faults, users=self.users, moves=self.moves, profile=self.profile,
                    time_scale=self.time_scale, move_build=self.move_build, network=self.network, netem=self.netem,
                    extremes=self.extremes, via=self.via, imap=self.imap, servers=self.servers, sites=self.sites)
        return [Recipe(s, args) for s in self.seeds()]

    def sim_network(self) -> Network:
        return Network(torn_kills=self.torn_kills, **({"stuck_events": self.stuck_after} if self.stuck_after else {}))

    # --- its names ----------------------------------------------------------------------------

    def name(self) -> str:
        """Its folder's name in the results store: the build in it, so that campaigns of two builds
        with one seed (a common comparison) keep apart."""
        if self.world_file is not None:
            base = f"world-{self.world_file.stem}"
        elif self.replay is not None:
            base = f"replay-{self.replay}"
        else:
            base = (f"campaign-{self.seed}-{self.build}" + ("-legacy-move" if self.move_build == "legacy" else "") +
                    ("-netns" if self.network == "netns" else "") + ("-smtp" if self.via == "smtp" else "") +
                    ("-imap" if self.imap else ""))
        return ("sim-" if self.sim else "") + base

    def flags(self) -> str:
        """The options that draw its worlds, as `xcon chaos` takes them."""
        return (f"--mta-build {self.build} --faults {','.join(self.faults) or 'none'}" +
                (f" --move-build {self.move_build}" if self.move_build != "sp4" else "") +
                (" --network netns" if self.network == "netns" else "") +
                (f" --profile {self.profile} --time-scale {self.time_scale:g}"
                 if self.profile != "lab" or self.time_scale != 1.0 else "") +
                (f" --users {self.users}" if self.users else "") + (f" --moves {self.moves}" if self.moves else "") +
                (f" --servers {self.servers}" if self.servers != 2 else "") +
                (f" --sites {self.sites}" if self.sites != 1 else "") + ("" if self.extremes else " --no-extremes") +
                (" --via smtp" if self.via == "smtp" else "") + (" --imap" if self.imap else ""))

    def sim_flags(self) -> str:
        if not self.sim:
            return ""
        return "--sim " + ("" if self.torn_kills else "--no-torn-kills ") + (
            f"--stuck-after {self.stuck_after} " if self.stuck_after else "")

    def command(self) -> str:
        """The command that runs this campaign again."""
        return (f"xcon chaos {self.sim_flags()}{'--guided ' if self.guided and self.sim else ''}--seed {self.seed} "
                f"--trials {len(self.seeds())} {self.flags()}")

    def replay_of(self, trial_seed: int, root: Path) -> str:
        """The command that runs one of its trials again (a guided world's from its file: no seed draws it)."""
        world = self.world_file or (root / f"world-{trial_seed}.json" if self.guided else None)
        return (f"xcon chaos {self.sim_flags()}--world {world}" if world else
                f"xcon chaos {self.sim_flags()}--replay {trial_seed} {self.flags()}")


@dataclass
class Campaign:
    """What a campaign gave: each trial's result, the worlds they ran, the totals, the first
    broken trial and its replay, and the shrunk and confirmed finds it was asked for."""

    spec: CampaignSpec
    root: Path
    results: list[chaos.TrialResult]
    worlds: list[World | Recipe]
    totals: dict[str, Any]
    first: chaos.TrialResult | None
    replay: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nondeterministic(self) -> list[chaos.TrialResult]:
        return [r for r in self.results if (r.error or "").startswith("nondeterministic")]

    def meta(self) -> dict[str, Any]:
        """Its card in the results store (orchestrator.lab.results)."""
        s = self.spec
        return {"kind": "chaos", "name": self.root.name, "seed": s.seed, "build": s.build, "move_build": s.move_build,
                "faults": list(s.faults), "simulated": s.sim, "network": s.network, "store": str(self.root),
                "guided": s.guided and s.sim, "command": s.command(), "executor": self.executor()}

    def executor(self) -> dict[str, Any]:
        """Where its trials ran: a Dask cluster (its scheduler, or local:N) or this machine's
        processes (a simulated campaign's pool; a real one runs a cluster at a time)."""
        s = self.spec
        if s.dask:
            return {"kind": "dask", "address": s.dask}
        return {"kind": "local", "workers": (s.workers or campaign.default_workers()) if s.sim else 1}

    def executor_words(self) -> str:
        e = self.executor()
        return f"on Dask at {e['address']}" if e["kind"] == "dask" else f"on {e['workers']} local process(es)"


def run(spec: CampaignSpec, root: Path, on_trial: Callable[[chaos.TrialResult], None] | None = None) -> Campaign:
    """Run the campaign, its trials under `root` (executors.DaskError if its Dask cluster is not there)."""
    worlds = spec.worlds()
    started = time.time()
    if spec.sim and spec.guided and spec.world is None:  # drawn as it goes: the worlds it ran replace the recipes
        results, worlds = guided.from_recipes(root, worlds, spec.sim_network(), spec.workers or
                                              campaign.default_workers(), spec.seed, on_trial, spec.stop_on_break)
    elif spec.sim:
        results = campaign.run(root, worlds, spec.sim_network(), spec.workers or campaign.default_workers(),
                               spec.determinism, on_trial, spec.stop_on_break, spec.dask)
    else:
        results = chaos.campaign(root, spec.seeds(), spec.build, spec.faults, spec.users, spec.moves, on_trial,
                                 spec.stop_on_break, worlds=worlds, dask=spec.dask)
    totals = chaos.summarize(results)
    wall = time.time() - started
    totals["wall_seconds"] = round(wall, 2)
    totals["trials_per_minute"] = round(60 * len(results) / wall, 1) if wall > 0 else 0  # the campaign's, all workers
    first = next((r for r in results if r.broken), None)
    done = Campaign(spec, root, results, worlds, totals, first, spec.replay_of(first.seed, root) if first else None)
    if spec.sim and first and spec.shrink:
        world = drawn(next(w for w in worlds if w.seed == first.seed))
        small, runs = campaign.shrink(world, spec.sim_network())
        path = root / f"shrunk-{first.seed}.json"
        path.write_text(json.dumps(campaign.world_to_json(small), indent=1))
        done.extra["shrunk"] = {"world": campaign.world_to_json(small), "runs": runs, "file": str(path),
                                "replay": f"xcon chaos {spec.sim_flags()}--world {path}",
                                "events": [len(world.events), len(small.events)],
                                "users": [len(world.users), len(small.users)]}
    if spec.sim and spec.confirm:
        done.extra["confirmed"] = [_confirm(r, worlds, root) for r in [r for r in results if r.broken][:spec.confirm]]
    return done


def _confirm(found: chaos.TrialResult, worlds: list[World | Recipe], root: Path) -> dict[str, Any]:
    """A world that broke in simulation, run again on real processes."""
    world = drawn(next(w for w in worlds if w.seed == found.seed))
    real, same = campaign.confirm(world, found, root / f"confirm-{found.seed}")
    return {"seed": found.seed, "sim": describe_break(found), "real_broke": real.broken, "same": same,
            "real": describe_break(real) if real.broken else "clean", "real_error": real.error,
            "run_dir": real.run_dir}
