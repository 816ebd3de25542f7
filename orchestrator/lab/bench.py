"""`xcon bench`: each workload beside its physical baseline, measured in the same run.

| workload                          | baseline                                                   |
| submit -> deliver, same server    | raw pyzmq + msgpack chain, 2 hops, same frame size         |
| submit -> deliver, across servers | the same chain with 3 hops                                 |
| durable acceptance, 64 in flight  | append + fdatasync of the MTA's log records: same record   |
| and one at a time                 | size, same batch size, same records per message (and, one  |
|                                   | at a time, a raw round trip plus that disk, in the note)   |
| Move User of N messages           | cp -r of the same Maildir + sync                           |
| xcon check over N log lines       | jq -c 'select(.event)' over the same files (or json.loads) |
| cluster start                     | N x python -c 'import zmq, msgpack, structlog'             |
| memory                            | RSS per node, idle, then every 20,000 messages to 100,000  |
| SMTP in (smtp-source -> IMS)      | Postfix -> Postfix -> Maildir, same load (bench_smtp)      |
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from nodes.config import Settings

from orchestrator import cluster as cl
from orchestrator.inspect import check as checker
from orchestrator.inspect import logread

from . import bench_power, chaos
from .bench_load import (
    cpu_s, delivery_figures, log_append_rate, raw_pipeline, rss_kb, spool_stats, submit_load,
    synthetic_logs, timed,
)
from .worlds import DEFAULT_FAULTS, FAULTS, draw_world


@dataclass
class Row:
    workload: str
    figure: str
    value: float
    baseline: float | None
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        # for times, smaller is better: the ratio is baseline/value so that 1.0 means "as fast"
        return self.baseline / self.value if self.unit in ("s", "ms", "us", "trials") else self.value / self.baseline

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


BENCH_SETTINGS = Settings(mta_build="sp4", replication_lag_ms=0, replication_jitter_ms=0, max_queue=10_000_000,
                          expire_ms=3_600_000)


def memory_rows(root: Path, quick: bool, body: str, py_start: float, say: Callable[[str], None]) -> list[Row]:
    """RSS of every node under steady traffic across servers, idle and every 20,000 messages to
    100,000, then an MTA's restart after it. An MTA remembers each finished message for
    2 x expire + 60 s (nodes.mta.seen) and the stores keep an index of the mail they hold; with a
    10 s expiry the 80 s memory fills by 48,000 messages, so the later samples show whether it stays
    flat. 600 msgs/s is a steady load that no queue builds up under."""
    total, step, pace = (2_000, 1_000, 1_000.0) if quick else (100_000, 20_000, 600.0)
    cluster = cl.start(root / "memory", replace(BENCH_SETTINGS, expire_ms=10_000), fresh=True)
    rows: list[Row] = []
    try:
        for alias, server in (("alice", "ex1"), ("carol", "ex2")):
            cluster.add_user(alias, server, wait=False)
        cluster.wait_replicated(2)
        pids = {name: node["pid"] for name, node in cluster.config.nodes.items()}
        samples = {0: {name: rss_kb(pid) for name, pid in pids.items()}}
        remembered = {}
        for sent in range(step, total + 1, step):
            say(f"memory: {sent - step:,} of {total:,} messages at {pace:.0f}/s")
            submit_load(cluster, "mta.ex1", "alice", "carol", step, 64, body, pace=pace)
            cluster.wait(600)
            samples[sent] = {name: rss_kb(pid) for name, pid in pids.items()}
            remembered[sent] = {m: cluster.status_of(m)["remembered"] for m in cluster.mtas}
        for name in pids:
            series = ", ".join(f"{k // 1000}k: {v[name] / 1024:.1f}" for k, v in samples.items() if k)
            extra = (f"; messages remembered at each step: {', '.join(str(r[name]) for r in remembered.values())}"
                     if name in cluster.mtas else "")
            rows.append(Row("memory", f"{name} RSS after {total:,} msgs", samples[total][name] / 1024, None, "MB",
                            f"idle {samples[0][name] / 1024:.1f} MB; {series}{extra}"))
        say("recovery after kill -9 of an MTA")
        cluster.fault("kill", "mta.ex1")
        t0 = time.perf_counter()
        cluster.fault("restart", "mta.ex1")
        cluster.wait_node_ready("mta.ex1")
        recovery_s = time.perf_counter() - t0
        rows.append(Row("recovery", "MTA kill -9, restart to ready", recovery_s, py_start, "s",
                        f"after {total:,} messages; baseline: one bare interpreter start"))
    finally:
        cluster.close()
        cl.stop(root / "memory")
    return rows


# --- the run --------------------------------------------------------------------------------

def run(root: Path, quick: bool, say: Callable[[str], None] = lambda s: None, only: str | None = None) -> list[Row]:
    # An earlier run's files are deleted only after this run has measured: ext4 makes file
    # creation slow for a minute or more after many deletions (its inode allocator skips
    # recently deleted inodes, reading each one), which would slow the stores' Maildirs here.
    old = root.with_name(f".{root.name}.old.{os.getpid()}")
    if root.exists():
        root.rename(old)
    root.mkdir(parents=True)
    try:
        return bench_power.rows(root, quick, say, Row) if only == "power" else _run(root, quick, say)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _run(root: Path, quick: bool, say: Callable[[str], None]) -> list[Row]:
    n = 500 if quick else 20_000  # --quick is the CI smoke test's: every row, none a figure to quote
    say("cluster start")
    py_start = statistics.median(timed(lambda: subprocess.run(
        [sys.executable, "-c", "import zmq, msgpack, structlog"], check=True)) for _ in range(3))
    rows = _cluster_rows(root, quick, n, py_start, say)
    on = next(r for r in rows if r.workload == "durable acceptance" and "in flight" in r.figure)
    rows.append(_fsync_off_row(root, n, on.value, say))
    rows.extend(memory_rows(root, quick, BODY, py_start, say))
    for lines in ((100_000,) if quick else (100_000, 1_000_000)):
        rows.append(_check_row(root, lines, say))
    say("chaos trial rate")
    trials = 1 if quick else 6
    t0 = time.perf_counter()
    for seed in chaos.trial_seeds(1, trials):
        chaos.run_trial(draw_world(seed, "sp4", ()), root / f"trial-{seed}")
    real_rate = 60 * trials / (time.perf_counter() - t0)
    rows.append(Row("chaos", "trials/minute", real_rate, None, "trials/min", "sp4, no faults, real processes"))
    rows.extend(sim_rows(root, quick, real_rate, say))
    rows.extend(bench_power.rows(root, quick, say, Row))
    from .bench_smtp import smtp_rows

    rows.extend(smtp_rows(root, BENCH_SETTINGS, quick, say, Row))
    return rows


def _cluster_rows(root: Path, quick: bool, n: int, py_start: float, say: Callable[[str], None]) -> list[Row]:
    """The rows of the bench's one cluster: its start, deliveries on one server and across two,
    durable acceptance, and moves."""
    # a long retry: the only deferrals are the held deliveries of the one-at-a-time acceptance load,
    # retried at once when the mailbox is unlocked; a timer would only add retries to what is measured
    settings = replace(BENCH_SETTINGS, retry_ms=600_000)
    t0 = time.perf_counter()
    cluster = cl.start(root / "cluster", settings, fresh=True)
    start_s = time.perf_counter() - t0
    nodes = len(cluster.config.nodes)
    rows = [Row("cluster start", "xcon up to ready", start_s, py_start * nodes, "s",
                f"baseline: {nodes} x bare interpreter start with zmq, msgpack, structlog")]
    try:
        for alias, server in (("alice", "ex1"), ("bob", "ex1"), ("carol", "ex2")):
            cluster.add_user(alias, server, wait=False)
        cluster.wait_replicated(3)
        loads = _Loads(cluster, root, n, say, rows)
        before = spool_stats(cluster, "mta.ex1")
        accept_rate = loads.delivery("same server (MTA -> store)", "bob", 2)
        loads.durable(f"accepted/s, {WINDOW} in flight", before, n, accept_rate,
                      "the same-server load above; the MTA is busy routing and delivering too")
        loads.one_at_a_time(200 if quick else 2000)
        loads.delivery("across servers (MTA -> MTA -> store)", "carol", 3)
        for size in ((100, 1000) if quick else (100, 1000, 10_000)):
            loads.move(size)
    finally:
        cluster.close()
        cl.stop(root / "cluster")
    return rows


WINDOW = 64  # submissions in flight
BODY = "x" * 200


@dataclass
class _Loads:
    """The loads on the bench's one cluster, each adding its rows to `rows`."""

    cluster: cl.Cluster
    root: Path
    n: int
    say: Callable[[str], None]
    rows: list[Row]

    def delivery(self, label: str, rcpt: str, hops: int) -> float:
        """Rows for one path (submit to alice's MTA, delivered to rcpt); returns the acceptance rate."""
        self.say(f"submit -> deliver, {label}")
        pids = {name: node["pid"] for name, node in self.cluster.config.nodes.items()}
        cpu0 = {name: cpu_s(pid) for name, pid in pids.items()}
        sent, accept_rate, frame_size = submit_load(self.cluster, "mta.ex1", "alice", rcpt, self.n, WINDOW, BODY)
        self.cluster.wait(600)
        cpu = {name: (cpu_s(pid) - cpu0[name]) / self.n * 1e6 for name, pid in pids.items()}
        rate, p50, p99 = delivery_figures(self.cluster.config.run_dir, sent, rcpt)
        raw = raw_pipeline(hops, self.n, frame_size, WINDOW)
        busy = ", ".join(f"{name} {us:.0f}" for name, us in sorted(cpu.items(), key=lambda kv: -kv[1]) if us >= 1)
        self.rows.extend([Row(label, "delivered msgs/s", rate, raw[0], "msgs/s",
                              f"raw {hops}-hop pipeline, {frame_size} B frames, window {WINDOW} ({raw[4]})"),
                          Row(label, "p50 latency", p50, raw[1], "ms"),
                          Row(label, "p99 latency", p99, raw[2], "ms"),
                          # /proc counts CPU in clock ticks (10 ms): the raw chain's relays on a
                          # --quick load can use less than one, which is no baseline (not a 0)
                          Row(label, "CPU per message, all nodes", sum(cpu.values()), raw[3] or None, "us",
                              f"{busy}; baseline: the raw chain's relays"
                              + ("" if raw[3] else " (under /proc's 10 ms resolution on this load)"))])
        return accept_rate

    def durable(self, figure: str, before: dict[str, int], count: int, rate: float, how: str) -> Row:
        """A durable-acceptance row: the rate beside the disk's rate for the MTA's log as it
        was written meanwhile (records per message, record size, records per fdatasync)."""
        after = spool_stats(self.cluster, "mta.ex1")
        records, syncs = after["records"] - before["records"], max(1, after["syncs"] - before["syncs"])
        batch, size, per_msg = records / syncs, (after["bytes"] - before["bytes"]) / max(1, records), records / count
        disk = log_append_rate(max(1, round(batch)), round(size), self.root / "fsync") / per_msg
        self.rows.append(Row("durable acceptance", figure, rate, disk, "msgs/s",
                             f"{how}; baseline: the disk's rate for the MTA's log as written: {per_msg:.1f} "
                             f"records of {size:.0f} B per message, {batch:.1f} records per fdatasync"))
        return self.rows[-1]

    def one_at_a_time(self, single: int) -> None:
        """One submission at a time, each waiting for its own fdatasync. bob's mailbox is locked
        meanwhile, as during a move: deliveries are deferred (no disk write), so the MTA's
        acceptance log is the only writer on the disk, as in the baseline; unlocked after."""
        self.say("durable acceptance, one at a time")
        self.cluster.client.request("store.ex1", "store.lock", {"mailbox": "bob", "owner": "bench"})
        before = spool_stats(self.cluster, "mta.ex1")
        _, single_rate, frame_size = submit_load(self.cluster, "mta.ex1", "alice", "bob", single, 1, BODY)
        row = self.durable("accepted/s, one at a time", before, single, single_rate,
                           f"{single} submissions, window 1, deliveries held by a locked mailbox")
        self.cluster.client.request("store.ex1", "store.unlock", {"mailbox": "bob", "owner": "bench"})
        self.cluster.wait(600)
        # the disk alone is not what one-at-a-time acceptance can reach: each also needs a round
        # trip, measured here through one raw relay, one frame at a time
        round_trip = raw_pipeline(1, single, frame_size, 1)[0]
        floor = 1 / (1 / round_trip + 1 / row.baseline)
        row.note += (f"; a raw round trip alone allows {round_trip:,.0f}/s, a round trip plus that disk "
                     f"{floor:,.0f}/s (xcon {single_rate / floor:.2f} of it)")

    def move(self, size: int) -> None:
        """Move User of a mailbox of `size` messages, beside copying it with cp -r."""
        self.say(f"Move User of {size} messages")
        alias = f"m{size}"
        self.cluster.add_user(alias, "ex1", wait=False)
        raw_msg = (b"From: alice@xcon.test\r\nSubject: bench\r\n\r\n" + b"y" * 300)
        t_ms = int(time.time() * 1000)
        self.cluster.fill(alias, [{"name": f"{t_ms + i}.b{size}.{i}.xcon", "msg_id": f"b{size}.{i}", "raw": raw_msg}
                                  for i in range(size)])
        maildir = self.cluster.config.run_dir / "stores" / "ex1" / alias
        # the baseline is the best of three copies (to new directories: deleting one would slow
        # the next, see `run`); on this VM one copy can take twice as long as the next
        cp_s = min(timed(lambda: (subprocess.run(["cp", "-r", str(maildir), str(self.root / f"cp-{size}-{k}")],
                                                 check=True),
                                  subprocess.run(["sync"], check=True))) for k in range(3))
        state = self.cluster.move(alias, "ex2", copy_delay_ms=0, timeout=900)
        move_s = state["finished_at"] - state["started_at"]
        self.rows.append(Row(f"Move User, {size} messages", "seconds", move_s, cp_s, "s",
                             f"{size / move_s:.0f} msgs/s; baseline: best of 3 cp -r + sync"))


def _fsync_off_row(root: Path, n: int, on_rate: float, say: Callable[[str], None]) -> Row:
    """Durability's cost: the in-flight acceptance rate beside the same load on a cluster without fsync."""
    say("durable acceptance with fsync off (same run)")
    nofsync = cl.start(root / "nofsync", replace(BENCH_SETTINGS, fsync=False), fresh=True)
    try:
        for alias in ("alice", "bob"):
            nofsync.add_user(alias, "ex1", wait=False)
        nofsync.wait_replicated(2)
        _, off_rate, _ = submit_load(nofsync, "mta.ex1", "alice", "bob", n, WINDOW, BODY)
        nofsync.wait(600)
    finally:
        nofsync.close()
        cl.stop(root / "nofsync")
    return Row("durable acceptance", "accepted/s with fsync off (durability cost)", on_rate, off_rate, "msgs/s",
               f"ratio = fsync on / off: {off_rate:,.0f}/s without fsync")


def _check_row(root: Path, lines: int, say: Callable[[str], None]) -> Row:
    """xcon check's rate over `lines` synthetic log lines, beside jq's (or json.loads') reading them."""
    say(f"xcon check over {lines} lines")
    logs = root / f"logs-{lines}"
    synthetic_logs(logs, lines)
    check_s = timed(lambda: checker.check_run(logs))
    files = [str(p) for p in logread.log_files(logs)]
    if shutil.which("jq"):
        base_s, how = timed(lambda: subprocess.run(["jq", "-c", "select(.event)", *files], check=True,
                                                   stdout=subprocess.DEVNULL)), "jq -c 'select(.event)'"
    else:
        base_s, how = timed(lambda: [json.loads(line) for f in files for line in open(f)]), "json.loads loop (no jq)"
    return Row(f"xcon check, {lines} lines", "lines/s", lines / check_s, lines / base_s, "lines/s", f"baseline: {how}")


def _kb_case(seed: int) -> bool:
    from .scenario import run_case
    from orchestrator.sim.world import Network

    return run_case("legacy", Path("/nonexistent/kb"), seed=seed, sim=Network(), write=False).matches


def dask_rows(root: Path, spec: Any, local_rate: float, say: Callable[[str], None],
              sizes: tuple[int, ...] = (1, 2)) -> list[Row]:
    """The same default-faults campaign on a local Dask cluster of 1 and of 2 workers (its start
    included; --quick: 2 only), beside the local pool's rate; none without Dask's distributed."""
    from . import spec as spec_mod

    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        say("Dask rows left out: pip install 'xcon[dask]'")
        return []
    rows = []
    for n in sizes:
        say(f"simulated chaos on Dask, local:{n}")
        t0 = time.perf_counter()
        spec_mod.run(replace(spec, dask=f"local:{n}"), root / "sim-dask")
        rows.append(Row("chaos --sim --dask", f"trials/minute, default faults, local:{n}",
                        60 * spec.trials / (time.perf_counter() - t0), local_rate, "trials/min",
                        f"{spec.trials} trials, the cluster's start included; baseline: the local pool's row"))
    return rows


def sim_rows(root: Path, quick: bool, real_rate: float, say: Callable[[str], None]) -> list[Row]:
    """The simulator beside the real campaign: trials a minute (all cores), the KB case, explore,
    and how a trial's cost grows with servers and users."""
    from .scenario import run_case
    from . import campaign, explore, spec as spec_mod
    from .spec import CampaignSpec
    from orchestrator.sim.world import Network

    rows = []
    workers = campaign.default_workers()
    n = 100 if quick else 20_000  # --quick is the CI smoke test's: a rate, not a campaign
    for faults, label in ((DEFAULT_FAULTS, "default faults"), (FAULTS, "every fault kind")):
        say(f"simulated chaos, {n} trials, {label}")
        spec = CampaignSpec(2, trials=n, faults=faults, sim=True, workers=workers)  # as xcon chaos --sim builds it
        t0 = time.perf_counter()
        results = spec_mod.run(spec, root / "sim").results
        rate = 60 * n / (time.perf_counter() - t0)
        broken = sum(r.broken for r in results)
        rows.append(Row("chaos --sim", f"trials/minute, {label}", rate, real_rate, "trials/min",
                        f"sp4, {workers} workers, {n} trials, {broken} broken; baseline: the real campaign's row"))
        if label == "default faults":
            rows.extend(dask_rows(root, spec, rate, say, sizes=(2,) if quick else (1, 2)))
    say("simulated KB case")
    cases = 100 if quick else 4000
    t0 = time.perf_counter()
    for i in range(cases // 4):
        run_case("legacy", root / "kb", seed=i, sim=Network(), write=i == 0)
    one = 60 * (cases // 4) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        found = list(pool.map(_kb_case, range(cases), chunksize=50))
    rows.append(Row("scenario --sim", f"KB cases/minute, {workers} workers", 60 * cases / (time.perf_counter() - t0),
                    None, "cases/min", f"legacy case, judged by check; {sum(found)} of {cases} as the KB says; "
                                       f"one core: {one:,.0f}/min"))
    say("sim explore q248839")
    t0 = time.perf_counter()
    points = list(explore.explore("legacy", explore.grid(), workers))
    rows.append(Row("sim explore q248839", f"seconds, {len(points)} points", time.perf_counter() - t0, None, "s",
                    f"legacy, {workers} workers, {sum(p.outcome == 'lost' for p in points)} points lose"))
    sizes = ((2, 6, 1), (10, 100, 1)) if quick else \
        ((2, 6, 1), (10, 100, 1), (50, 1000, 1), (50, 5000, 1), (100, 20_000, 1), (100, 20_000, 10))
    for servers, users, sites in sizes:
        say(f"simulated world of {servers} servers, {users} users, {sites} site(s)")
        t0 = time.perf_counter()
        world = draw_world(7, "sp4", (), users=users, moves=3, servers=servers, sites=sites)
        result = chaos.run_trial(world, root / "big", sim=Network(), dump=False)
        rows.append(Row("chaos --sim", f"one trial, {servers} servers, {users:,} users"
                        + (f", {sites} sites" if sites > 1 else ""), time.perf_counter() - t0, None,
                        "s", f"sp4, no faults, 3 moves; {result.events:,} events, {result.pairs} pairs, "
                        f"broken: {result.broken}"))
    return rows
