"""The bug's family: other articles where a change races the directory's replication or an MTA's
read cache, each a scenario with the setting that has the bug and the one that fixes it.

Each case runs on a fresh cluster (real processes, or the simulator) through the same Cluster
interface as q248839, and is judged by what happened to one message and by `check`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from nodes.config import Settings

from orchestrator import cluster as cl
from orchestrator.cluster.client import ClusterError
from orchestrator.inspect.justify import FINDINGS
from . import show
from .scenario import CASES
from orchestrator.sim.cluster import SimCluster
from orchestrator.sim.world import Network


@dataclass(frozen=True)
class Article:
    article: str
    what: str
    bug: str  # the build or setting that has it
    fix: str
    cases: dict[str, tuple[str, tuple[bool, bool]]]  # case -> (setting, expected (delivered?, NDR?))


FAMILY: dict[str, Article] = {
    "q248839": Article("KB Q248839", "during Move User a message for a user whose alternate (deliver to both) got a "
                       "copy is deferred, retried on a stale cache, and dropped with no NDR",
                       "the legacy MTA (5.5 SP3)", "SP4's NDR; the workaround; xcon's reroute", {}),
    "q172364": Article("KB Q172364", "users are moved while mail flows: the MTA reads stale directory data, thinks "
                       "the recipient is still on the old server, and sends an NDR (or strands the message)",
                       "an MTA read cache (ds_read cache latency) above 0",
                       "a read cache of 0 (or moving users while no mail flows); xcon's reroute asks past its cache", {
                           "cache": ("sp4, read cache 5 s: bob's entry as read before his move", (False, True)),
                           "no-cache": ("sp4, read cache 0: bob's new home", (True, False)),
                           "reroute": ("reroute, read cache 5 s: asks the directory on 'not here'", (True, False)),
                       }),
    "q178534": Article("KB Q178534", "a recipient's delivery restrictions change; for up to the MTA's read cache's "
                       "lifetime (60 s) the MTA enforces the old ones",
                       "an MTA read cache (ds_read cache latency) above 0",
                       "a read cache of 0, or an MTA restart (its cache starts empty)", {
                           "cache": ("read cache 5 s: the old restrictions", (True, False)),
                           "no-cache": ("read cache 0: the new restrictions", (False, True)),
                           "restart": ("read cache 5 s, MTA restarted after the change", (False, True)),
                       }),
    "q277911": Article("KB Q277911", "Move User makes the new mailbox live and marks it in transit only later: a "
                       "message delivered in between is dropped when the in-transit folder is flushed to the "
                       "mailbox, with no NDR",
                       "the legacy Move User (5.5 before SP4: --move-build legacy)",
                       "SP4: the new mailbox is made in transit (xcon's sp4 move)", {
                           "legacy-move": ("legacy move: delivered into the new mailbox during the copy", (False, False)),
                           "sp4-move": ("sp4 move: the message waits for the open", (True, False)),
                       }),
    "kb2579150": Article("KB 2579150", "after a move the source mailbox stays soft-deleted; a transport on lagged "
                         "directory data delivers to it, and the sender gets NDR 5.2.0",
                         "a transport that trusts its cache (sp4) while stores soft-delete (--soft-delete-ms)",
                         "Exchange 2010 SP1 UR4: transport looks the mailbox up again (xcon's reroute)", {
                             "soft-delete": ("sp4, soft delete: the source answers 'soft-deleted'", (False, True)),
                             "reroute": ("reroute, soft delete: asks the directory, delivers", (True, False)),
                         }),
}


@dataclass
class FamilyResult:
    scenario: str
    case: str
    setting: str
    expected: tuple[bool, bool]
    delivered: bool | None = None
    ndr: bool | None = None
    check: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    run_dir: str = ""
    error: str | None = None

    @property
    def matches(self) -> bool:
        """The outcome the article says, and `check` agrees: a message neither delivered nor
        reported must be counted lost (the check sees the silent loss), anything else clean."""
        counts = self.check.get("counts", {})
        lost = self.expected == (False, False)
        clean = (counts.get("lost", 0) >= 1) == lost and not any(
            counts.get(k, 0) for k in ("pending", "duplicated", "both", *FINDINGS))
        return self.error is None and (self.delivered, self.ndr) == self.expected and clean

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "matches": self.matches}


def _wait_replica(cluster: cl.Cluster, mta: str, usn: int, timeout: float = 30.0) -> None:
    """Until `mta`'s replica has the change (its read cache may still hide it: that is the point)."""
    cluster.until(lambda: cluster.status_of(mta)["replica_usn"] >= usn, timeout, f"{mta}'s replica at USN {usn}")


def _run(name: str, case: str, run_dir: Path, seed: int, sim: Network | None, settings: Settings,
         play: Callable[[cl.Cluster], str]) -> FamilyResult:
    """Run one case: `play` drives a fresh cluster and returns the id of the message that alice
    wrote to bob; whether bob has it, and whether alice has an NDR naming him, is the outcome."""
    setting, expected = FAMILY[name].cases[case]
    result = FamilyResult(name, case, setting, expected, run_dir=str(run_dir))
    t0 = time.time()
    cluster = SimCluster(settings, sim) if sim is not None else cl.start(run_dir, settings, fresh=True)
    try:
        msg_id = play(cluster)
        result.delivered = cluster.holds("bob", msg_id)
        result.ndr = cluster.reported("alice", msg_id, "bob")
    except ClusterError as exc:
        result.error = str(exc)
    finally:
        cluster.stop()
    result.check = cluster.verdict().to_json()
    if isinstance(cluster, SimCluster):
        cluster.dump(run_dir, replay=f"xcon scenario {name} --sim --case {case} --seed {seed}")
    result.seconds = round(time.time() - t0, 3)
    return result


def _drained(cluster: cl.Cluster, timeout: float, what: str) -> None:
    if not cluster.wait(timeout):
        raise ClusterError(f"{what} in {timeout:g} s")


def _users(cluster: cl.Cluster, alice_on: str, bob_on: str) -> None:
    """alice and bob, on their servers, known to every MTA's replica."""
    cluster.add_user("alice", alice_on, wait=False)
    cluster.wait_replicated(cluster.add_user("bob", bob_on, wait=False)["usn"])


def _ended(state: dict[str, Any]) -> dict[str, Any]:
    """A move's final state, which must be done: a case whose move failed proves nothing."""
    if state["step"] != "done":
        raise ClusterError(f"{state['alias']}'s move failed: {state['error']}")
    return state


def _move(cluster: cl.Cluster, alias: str, target: str) -> dict[str, Any]:
    return _ended(cluster.move(alias, target, timeout=60))


def run_q178534(case: str, run_dir: Path, seed: int = 0, sim: Network | None = None) -> FamilyResult:
    """bob (ex1) takes mail from alice (ex2); alice writes to him, so mta.ex1 reads his entry;
    then bob rejects mail from alice; the change replicates; alice writes again."""
    settings = Settings(("ex1", "ex2"), "sp4", replication_lag_ms=200, replication_jitter_ms=0, retry_ms=500,
                        expire_ms=60_000, read_cache_ttl_ms=0 if case == "no-cache" else 5000, seed=seed)

    def play(cluster: cl.Cluster) -> str:
        _users(cluster, "ex2", "ex1")
        cluster.send("alice", ["bob"], "before the change", "")
        _drained(cluster, 30, "the first message was not delivered")
        changed = cluster.set_user("bob", {"reject_from": ["alice"]}, wait=False)
        _wait_replica(cluster, "mta.ex1", changed["usn"])
        if case == "restart":
            cluster.fault("kill", "mta.ex1")
            cluster.restart("mta.ex1")
        sent = cluster.send("alice", ["bob"], "after the change", "")
        _drained(cluster, 30, "queues did not drain")
        return sent["msg_id"]

    return _run("q178534", case, run_dir, seed, sim, settings, play)


def run_q172364(case: str, run_dir: Path, seed: int = 0, sim: Network | None = None) -> FamilyResult:
    """alice and bob live on ex1; alice writes to bob (mta.ex1 reads his entry); bob is moved to
    ex2, and the move replicates; alice writes to him again, then is moved to ex2 herself."""
    settings = Settings(("ex1", "ex2"), "reroute" if case == "reroute" else "sp4", replication_lag_ms=200,
                        replication_jitter_ms=0, retry_ms=500, expire_ms=60_000,
                        read_cache_ttl_ms=0 if case == "no-cache" else 5000, seed=seed)

    def play(cluster: cl.Cluster) -> str:
        _users(cluster, "ex1", "ex1")
        cluster.send("alice", ["bob"], "before the moves", "")
        _drained(cluster, 30, "the first message was not delivered")
        moved = _move(cluster, "bob", "ex2")
        _wait_replica(cluster, "mta.ex1", moved["wait_usn"] or cluster.lookup("bob")["usn"])
        sent = cluster.send("alice", ["bob"], "between the moves", "")
        _move(cluster, "alice", "ex2")
        _drained(cluster, 60, "queues did not drain")
        return sent["msg_id"]

    return _run("q172364", case, run_dir, seed, sim, settings, play)


def run_q277911(case: str, run_dir: Path, seed: int = 0, sim: Network | None = None) -> FamilyResult:
    """alice and bob live on ex1, bob's mailbox holds five messages; bob is moved to ex2, and held
    in the copy step (the fault hold_at_step: no clock runs); once mta.ex1 reads bob's entry as the
    directory has it then, alice writes to him, and the move goes on. The MTAs are reroute, so
    that the MTA's own window (Q248839) plays no part: what happens to the message is the move's
    doing."""
    settings = Settings(("ex1", "ex2"), "reroute", replication_lag_ms=200, replication_jitter_ms=0, retry_ms=500,
                        expire_ms=60_000, move_build="legacy" if case == "legacy-move" else "sp4", seed=seed)

    def play(cluster: cl.Cluster) -> str:
        _users(cluster, "ex1", "ex1")
        for i in range(5):
            cluster.send("alice", ["bob"], f"before the move {i}", "")
        _drained(cluster, 30, "the first messages were not delivered")
        cluster.fault("hold_at_step", "", step="copy")
        move = cluster.move("bob", "ex2", wait=False)
        cluster.wait_for_event("orchestrator", "move.held", 30, move_id=move["move_id"])
        _wait_replica(cluster, "mta.ex1", cluster.lookup("bob")["usn"])  # ex2 (legacy) or still ex1 (sp4)
        sent = cluster.send("alice", ["bob"], "during the copy", "")
        if case == "legacy-move":  # the move made the target live and named it: delivered into it
            cluster.wait_for_event("store.ex2", "store.delivered", 30, msg_id=sent["msg_id"], mailbox="bob")
        else:  # the target is in transit and the directory still names the source, which is locked
            cluster.wait_for_event("mta.ex1", "mta.deferred", 30, msg_id=sent["msg_id"], rcpt="bob")
        cluster.fault("release", "")
        _ended(cluster.wait_move(move["move_id"], timeout=60))
        _drained(cluster, 60, "queues did not drain")
        return sent["msg_id"]

    return _run("q277911", case, run_dir, seed, sim, settings, play)


def run_kb2579150(case: str, run_dir: Path, seed: int = 0, sim: Network | None = None) -> FamilyResult:
    """alice and bob live on ex1; stores keep a moved-away mailbox soft-deleted; bob is moved to
    ex2 while replication to the MTAs takes 3 s; before mta.ex1 learns of it, alice writes to him."""
    settings = Settings(("ex1", "ex2"), "reroute" if case == "reroute" else "sp4", replication_lag_ms=3000,
                        replication_jitter_ms=0, retry_ms=500, expire_ms=60_000, soft_delete_ms=600_000, seed=seed)

    def play(cluster: cl.Cluster) -> str:
        _users(cluster, "ex1", "ex1")
        _move(cluster, "bob", "ex2")
        sent = cluster.send("alice", ["bob"], "after the move", "")
        if cluster.status_of("mta.ex1")["replica_usn"] >= cluster.lookup("bob")["usn"]:
            raise ClusterError("mta.ex1 learned the move before the message was sent: the case proves nothing")
        _drained(cluster, 30, "queues did not drain")
        return sent["msg_id"]

    return _run("kb2579150", case, run_dir, seed, sim, settings, play)


RUNNERS = {"q172364": run_q172364, "q178534": run_q178534, "q277911": run_q277911, "kb2579150": run_kb2579150}


def run_cases(name: str, root: Path, cases: list[str], progress: Console | None = None, sim: Network | None = None,
              seed: int = 0) -> list[FamilyResult]:
    results = []
    for case in cases:
        if progress:
            progress.print(f"[dim]running {name} case {case}{' (simulated)' if sim else ''} ...[/dim]")
        results.append(RUNNERS[name](case, root / name / case, seed, sim))
    return results


def render(name: str, results: list[FamilyResult], console: Console) -> None:
    article = FAMILY[name]
    yes = lambda v: "-" if v is None else ("yes" if v else "no")  # noqa: E731
    table = Table(title=f"{article.article}: {article.what}")
    for col in ("case", "setting", "delivered?", "NDR?", "the article says", "check", "matches?", "s"):
        table.add_column(col)
    for r in results:
        c = r.check.get("counts", {})
        verdict = ", ".join(f"{c[k]} {k}" for k in ("lost", "pending", "duplicated", "both", *FINDINGS) if c.get(k)) or "clean"
        said = f"delivered {yes(r.expected[0])}, NDR {yes(r.expected[1])}"
        table.add_row(r.case, r.setting, yes(r.delivered), yes(r.ndr), said, verdict,
                      "[green]yes[/green]" if r.matches else "[red]NO[/red]",
                      f"{r.seconds:.3f}" if r.seconds < 1 else f"{r.seconds:.1f}")
    show.table(console, table)
    show.prose(console, f"bug: {article.bug}; fix: {article.fix}")
    for r in results:
        if r.error:
            show.prose(console, f"[red]{r.case}: error: {r.error}[/red]", indent="  ")


def render_list(console: Console, wide: bool = False) -> None:
    """The family, as a table (`wide`) or, to read at any width, a paragraph each: the names a
    user types back (the scenario's, its cases') whole on their own lines, the prose wrapped."""
    if wide:
        table = Table(title="xcon scenario list: the bug and its family")
        for col in ("name", "article", "what happens", "has the bug", "fixed by", "cases"):
            table.add_column(col)
        for name, a in FAMILY.items():
            cases = ", ".join(CASES) if name == "q248839" else ", ".join(a.cases)
            table.add_row(name, a.article, a.what, a.bug, a.fix, cases)
        show.table(console, table)
        return
    import textwrap

    width = max(40, min(console.width, 100))
    for name, a in FAMILY.items():
        cases = list(CASES) if name == "q248839" else list(a.cases)
        console.print(f"[bold]{name}[/bold]  {a.article}")
        console.print("  cases: " + ", ".join(cases) if len(", ".join(cases)) + 9 <= width
                      else "  cases:\n" + "\n".join(f"    {c}" for c in cases), markup=False)
        for label, text in (("", a.what), ("has the bug: ", a.bug), ("fixed by: ", a.fix)):
            console.print(textwrap.fill(label + text, width, initial_indent="  ", subsequent_indent="  "),
                          markup=False)
        console.print("")
