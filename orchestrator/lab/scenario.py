"""`xcon scenario q248839`: the KB's conditions on a fresh cluster per case, and the verdict.

The conditions: bob (on ex1) has carol as alternate recipient with deliver-to-both. alice (on
ex2) writes to bob while Move User takes bob's mailbox from ex1 to ex2. The message reaches
ex1's MTA, goes to carol, and is deferred for bob because his mailbox is locked. The move ends;
ex1's store tells its MTA the mailbox was released; the MTA retries at once, while its cache
(replication lag) still says bob lives on ex1.

Nothing here steers the outcome: the scenario holds the move in its copy step (the fault
hold_at_step: the mailbox stays locked, no clock runs) until the message has been deferred, then
lets it go on, and otherwise only waits on events (the deferral, the end of the move, empty
queues) and reads mailboxes and logs afterwards. The hold stands for a copy that takes long
enough; it makes the case the same on a loaded machine as on an idle one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nodes.config import Settings, describe_timings

from orchestrator import cluster as cl
from . import show
from .chaos import digest as chaos_digest
from orchestrator.cluster.client import ClusterError
from orchestrator.inspect.justify import FINDINGS
from orchestrator.sim.cluster import SimCluster
from orchestrator.sim.world import Network

# case -> (build, workaround, expected (carol delivered, bob delivered, NDR to alice), KB says). In
# every case but the last carol is bob's alternate (deliver to both); in the last she is a plain
# co-recipient and bob has no alternate
CASES: dict[str, tuple[str, bool, tuple[bool, bool, bool], str]] = {
    "legacy": ("legacy", False, (True, False, False),
               "SP3: alternate gets it, primary's copy silently dropped, no NDR"),
    "sp4": ("sp4", False, (True, False, True), "SP4 fix: the failure for the primary is reported by an NDR"),
    "reroute": ("reroute", False, (True, True, False), "beyond the KB: the MTA asks the directory and reroutes"),
    "legacy+workaround": ("legacy", True, (False, False, True),
                         "KB workaround: no alternate during the move, so the failure is reported"),
    "legacy+co-recipient": ("legacy", False, (True, False, True),
                            "Q172364: a plain co-recipient's copy does not silence the failure; only the "
                            "alternate's does"),
}
CO_RECIPIENT = "legacy+co-recipient"
# where carol (the alternate, or the co-recipient) lives: bob moves from ex1 to ex2, alice is on ex2
PLACEMENTS = {"same": "ex1", "other": "ex2", "third": "ex3"}

LAG_MS = 1000


@dataclass
class CaseResult:
    case: str
    build: str
    workaround: bool
    alternate_on: str = "ex1"  # carol's server
    alternate_delivered: bool | None = None
    primary_delivered: bool | None = None
    ndr_to_originator: bool | None = None
    expected: tuple[bool, bool, bool] = (False, False, False)
    kb: str = ""
    check: dict[str, Any] = field(default_factory=dict)
    msg_id: str = ""
    seconds: float = 0.0
    run_dir: str = ""
    error: str | None = None
    digest: str = ""  # a simulated case's event digest
    simulated: bool = False
    timings: dict[str, Any] = field(default_factory=dict)  # the effective timings (Settings.timings)

    @property
    def observed(self) -> tuple:
        return (self.alternate_delivered, self.primary_delivered, self.ndr_to_originator)

    @property
    def matches(self) -> bool:
        if self.error or self.observed != self.expected:
            return False
        # the invariant must break exactly where the KB says mail is lost, and nowhere else
        lost = self.check.get("counts", {}).get("lost", 0)
        others = sum(self.check.get("counts", {}).get(k, 0) for k in ("pending", "duplicated", "both", *FINDINGS))
        silent_loss = self.expected == (True, False, False)
        return others == 0 and lost == (1 if silent_loss else 0)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "matches": self.matches}


def case_settings(build: str, servers: tuple[str, ...], seed: int, profile: str = "lab",
                  time_scale: float = 1.0) -> Settings:
    """The lab profile's case has the scenario's own quick timings; another profile's, the
    profile's (shrunk by the time scale)."""
    if profile == "lab" and time_scale == 1.0:
        return Settings(servers, build, replication_lag_ms=LAG_MS, replication_jitter_ms=200, retry_ms=500,
                        expire_ms=60_000, seed=seed)
    return Settings.from_profile(profile, time_scale, servers=servers, mta_build=build, seed=seed)


def run_case(case: str, run_dir: Path, seed: int = 0, sim: Network | None = None, write: bool = True,
             placement: str = "same", profile: str = "lab", time_scale: float = 1.0) -> CaseResult:
    """One case on a fresh cluster: real processes, or with `sim` the simulator on that network
    (its run is written to `run_dir` as a real one would leave it). `placement` says where carol
    lives (PLACEMENTS): on bob's server, on another (alice's, the move's target), or on a third."""
    build, workaround, expected, kb = CASES[case]
    home = PLACEMENTS[placement]
    result = CaseResult(case, build, workaround, home, expected=expected, kb=kb, run_dir=str(run_dir),
                        simulated=sim is not None)
    t0 = time.time()
    servers = ("ex1", "ex2", "ex3") if home == "ex3" else ("ex1", "ex2")
    settings = case_settings(build, servers, seed, profile, time_scale)
    result.timings = settings.timings()
    # the waits grow with the slowest path a change takes to an MTA's view (replication, read cache)
    slack = 30 + 3 * (settings.replication_lag_ms + len(servers) * settings.replication_step_ms
                      + settings.read_cache_ttl_ms + settings.replication_jitter_ms + settings.retry_ms) / 1000
    cluster = SimCluster(settings, sim) if sim is not None else cl.start(run_dir, settings, fresh=True)
    co_recipient = case == CO_RECIPIENT
    to = ["bob", "carol"] if co_recipient else ["bob"]
    try:
        cluster.add_user("carol", home, wait=False)
        cluster.add_user("alice", "ex2", wait=False)
        bob = cluster.add_user("bob", "ex1", alternate=None if co_recipient else "carol",
                               deliver_to_both=not co_recipient, wait=False)
        cluster.wait_replicated(bob["usn"], timeout=slack)
        cluster.send("alice", ["bob"], "before the move", "bob's mailbox has mail to move")
        if not cluster.wait(slack):
            raise ClusterError(f"the first message was not delivered in {slack:g} s")
        cluster.fault("hold_at_step", "", step="copy")
        started = cluster.move("bob", "ex2", workaround=workaround, wait=False)
        cluster.wait_for_event("orchestrator", "move.held", slack, move_id=started["move_id"])  # bob's mailbox is locked
        sent = cluster.send("alice", to, "during the move", "will bob ever see this?")
        result.msg_id = sent["msg_id"]
        cluster.wait_for_event("mta.ex1", "mta.deferred", slack, msg_id=sent["msg_id"], rcpt="bob")
        cluster.fault("release", "")
        moved = cluster.wait_move(started["move_id"], timeout=4 * slack)
        if moved["step"] != "done":
            raise ClusterError(f"the move failed: {moved['error']}")
        if not cluster.wait(2 * slack):
            raise ClusterError(f"queues did not drain in {2 * slack:g} s")
        result.alternate_delivered = cluster.holds("carol", sent["msg_id"])
        result.primary_delivered = cluster.holds("bob", sent["msg_id"])
        result.ndr_to_originator = cluster.reported("alice", sent["msg_id"], "bob")
    except ClusterError as exc:
        result.error = str(exc)
    finally:
        cluster.stop()
    result.check = cluster.verdict().to_json()
    if isinstance(cluster, SimCluster) and write:
        cluster.dump(run_dir, replay=f"xcon scenario q248839 --sim --mta-build {case} --alternate-on {placement} "
                                     f"--seed {seed}")
        result.digest = chaos_digest(cluster.events())
    result.seconds = round(time.time() - t0, 3)
    return result


def run_cases(root: Path, cases: list[str], progress: Console | None = None, sim: Network | None = None,
              seed: int = 0, placements: tuple[str, ...] = ("same",), profile: str = "lab",
              time_scale: float = 1.0) -> list[CaseResult]:
    results = []
    for placement in placements:
        for case in cases:
            if progress:
                progress.print(f"[dim]running case {case}, carol on {PLACEMENTS[placement]}"
                               f"{' (simulated)' if sim else ''} ...[/dim]")
            results.append(run_case(case, root / f"{placement}-{case.replace('+', '-')}", seed, sim,
                                    placement=placement, profile=profile, time_scale=time_scale))
    return results


def render(results: list[CaseResult], console: Console) -> None:
    yes = lambda v: "-" if v is None else ("yes" if v else "no")  # noqa: E731
    where = " (simulated)" if any(r.simulated for r in results) else ""
    t = results[0].timings if results else {}
    if t.get("profile", "lab") != "lab" or t.get("time_scale", 1.0) != 1.0:
        where += f", profile {t['profile']} x{t['time_scale']:g}"
    table = Table(title=f"KB Q248839{where}: alice (ex2) writes to bob (ex1 -> ex2; alternate carol, deliver to "
                        "both) during Move User")
    table.add_column("case", no_wrap=True)
    # short headers, so that 80 columns break them between words, none a lone "?" (issue 33):
    # carol is the alternate, bob the primary, alice the originator
    for col in ("carol on", "carol got it", "bob got it", "NDR to alice", "check", "as KB says", "s"):
        table.add_column(col)
    for r in results:
        c = r.check.get("counts", {})
        verdict = f"{c.get('lost', 0)} lost" if c.get("lost") else "clean"
        match = "[green]yes[/green]" if r.matches else "[red]NO[/red]"
        table.add_row(r.case, r.alternate_on, yes(r.alternate_delivered), yes(r.primary_delivered),
                      yes(r.ndr_to_originator), verdict, match,
                      f"{r.seconds:.3f}" if r.seconds < 1 else f"{r.seconds:.1f}")
    show.table(console, table)
    if t:
        show.prose(console, f"timings: {describe_timings(t)}")
    for case in dict.fromkeys(r.case for r in results):
        show.prose(console, f"{case}: {CASES[case][3]}" + (" (carol is a plain co-recipient: bob has no alternate)"
                                                            if case == CO_RECIPIENT else ""))
    for r in results:
        if r.error:
            show.prose(console, f"[red]{r.case}, carol on {r.alternate_on}: error: {r.error}[/red]")
        for v in r.check.get("violations", []):
            # the command on a line of its own, whole, to be copied
            console.print(f"{r.case}, carol on {r.alternate_on}: {v['outcome']} pair {v['msg_id']} -> {v['rcpt']}:\n"
                          f"  xcon logs --run-dir {r.run_dir} --msg {v['msg_id']}", soft_wrap=True)
