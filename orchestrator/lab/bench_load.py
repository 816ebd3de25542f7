"""The loads `xcon bench` puts on a cluster and the bare baselines it measures them against: a raw
pyzmq + msgpack relay chain, a stream of submissions with a window in flight, an append + fdatasync
rate of the MTA's own records, synthetic logs for the checker; and the small readings (CPU time,
RSS, percentiles) the rows are made of."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgpack
import zmq

from protocol import Frame, encode

from orchestrator import cluster as cl
from orchestrator.cluster.client import dealer
from orchestrator.cluster.rundir import free_ports
from orchestrator.inspect import logread
from orchestrator.processes import proc_stat


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


# --- the raw pipeline ---------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads: ZeroMQ's I/O and CURVE too)."""
    fields = proc_stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


RAW_RUNS = 3  # the chain's rate on a shared 2-core host varied by 40% between runs (12,700-18,400/s)


def raw_pipeline(hops: int, n: int, frame_size: int, window: int) -> tuple[float, float, float, float, str]:
    """msgs/s, p50/p99 ms, and the relays' CPU microseconds per message, through a chain of
    `hops` relay processes: of the median of RAW_RUNS runs by rate, and the runs' range in words.
    One run was too noisy a baseline: the same code's ratio to it read 0.22 and 0.31 in two
    runs a minute apart (docs/performance.md)."""
    ports = free_ports(hops + 1)
    report = f"tcp://127.0.0.1:{ports[-1]}"
    ctx = zmq.Context.instance()
    done = ctx.socket(zmq.PULL)
    done.bind(report)
    procs = []
    for i in reversed(range(hops)):
        nxt = f"tcp://127.0.0.1:{ports[i + 1]}" if i + 1 < hops else "-"
        procs.append(subprocess.Popen([sys.executable, "-m", "orchestrator.lab.bench_pipe", "relay",
                                       f"tcp://127.0.0.1:{ports[i]}", nxt, report]))
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    client.connect(f"tcp://127.0.0.1:{ports[0]}")
    pad = b"x" * max(0, frame_size - 40)
    try:
        time.sleep(0.3)  # let the relays bind; the bench's own warm-up, not a test wait
        _pipe_run(client, done, 200, pad, window)  # warm-up
        runs = []
        for _ in range(RAW_RUNS):
            cpu0 = sum(cpu_s(p.pid) for p in procs)
            figures = _pipe_run(client, done, n, pad, window)
            runs.append((*figures, (sum(cpu_s(p.pid) for p in procs) - cpu0) / n * 1e6))
        runs.sort(key=lambda r: r[0])
        rates = f"median of {RAW_RUNS} runs, {runs[0][0]:,.0f}-{runs[-1][0]:,.0f} msgs/s"
        return (*runs[len(runs) // 2], rates)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        client.close()
        done.close()


def _pipe_run(client: zmq.Socket, done: zmq.Socket, n: int, pad: bytes, window: int) -> tuple[float, float, float]:
    # the frames are made before the clock starts, as submit_load makes xcon's: the load
    # generator shares the two cores with what it measures, so it should cost as little as it can
    tag = time.perf_counter()  # frame ids unique to this run
    frames = [(f"f{i}.{tag}", msgpack.packb({"type": "x", "id": f"f{i}.{tag}", "pad": pad})) for i in range(n)]
    sent_at: dict[str, float] = {}
    latency = []
    in_flight = finished = i = 0
    poller = zmq.Poller()
    poller.register(client, zmq.POLLIN)
    poller.register(done, zmq.POLLIN)
    t0 = time.perf_counter()
    while finished < n:
        while i < n and in_flight < window:
            fid, data = frames[i]
            sent_at[fid] = time.perf_counter()
            client.send(data)
            in_flight += 1
            i += 1
        acks = len(_arrived(client, window))  # the first relay's acknowledgements
        reports = _arrived(done, window)  # frames that went the whole way
        for data in reports:
            latency.append((time.perf_counter() - sent_at.pop(msgpack.unpackb(data, raw=False))) * 1000)
        in_flight -= acks
        finished += len(reports)
        if not acks and not reports and not poller.poll(5000):
            raise RuntimeError(f"the raw pipeline stopped after {finished} of {n} frames")
    took = time.perf_counter() - t0
    return n / took, percentile(latency, 50), percentile(latency, 99)


def _arrived(sock: zmq.Socket, limit: int) -> list[bytes]:
    """What has arrived on `sock`, up to `limit` messages, without waiting (a poll per message was
    most of the load generator's own cost)."""
    out = []
    while len(out) < limit:
        try:
            out.append(sock.recv(zmq.NOBLOCK))
        except zmq.Again:
            break
    return out


# --- xcon paths -----------------------------------------------------------------------------

def submit_load(cluster: cl.Cluster, mta: str, sender: str, rcpt: str, n: int, window: int,
                body: str, pace: float | None = None) -> tuple[dict[str, float], float, int]:
    """Pipelined submissions, at most `pace` a second if given; returns send times by msg_id, the
    acceptance rate, and a frame's size."""
    sock = dealer(cluster.config, mta)
    tag = f"{random.randrange(16**6):06x}"
    # the frames are made before the clock starts: the load generator shares the two cores with
    # the nodes it measures, and encoding each frame as it went cost it 5 of its ~45 us a message
    frames = []
    for i in range(n):
        msg_id = f"b{tag}.{i}"
        frames.append((msg_id, encode(Frame("mta.submit", msg_id, "bench", 1, {
            "msg_id": msg_id, "sender": sender, "recipients": [rcpt], "subject": "bench", "body": body,
            "priority": None}))))
    size = len(frames[0][1]) if frames else 0
    sent_at: dict[str, float] = {}
    in_flight = accepted = i = 0
    t0 = time.time()
    try:
        while accepted < n:
            while i < n and in_flight < window:
                ahead = i / pace - (time.time() - t0) if pace is not None else 0.0
                if ahead > 0:
                    if in_flight:
                        break  # take an answer meanwhile
                    time.sleep(ahead)  # the load's own pace, not a wait for a result
                msg_id, data = frames[i]
                sent_at[msg_id] = time.time()
                sock.send(data)
                in_flight += 1
                i += 1
            try:
                data = sock.recv(zmq.NOBLOCK)  # a poll only when nothing is there yet
            except zmq.Again:
                if not sock.poll(10_000):
                    raise RuntimeError(f"{mta} stopped answering after {accepted} acceptances") from None
                continue
            reply = msgpack.unpackb(data, raw=False)
            if reply["type"] == "error":
                raise RuntimeError(f"{mta} refused a submission: {reply['body']['reason']}")
            in_flight -= 1
            accepted += 1
        return sent_at, n / (time.time() - t0), size
    finally:
        sock.close()


def delivery_figures(run_dir: Path, sent_at: dict[str, float], mailbox: str) -> tuple[float, float, float]:
    delivered = {}
    for path in logread.log_files(run_dir):
        if path.name.startswith("store."):
            for e in logread.read_file(path):
                if e["event"] == "store.delivered" and e.get("mailbox") == mailbox and e["msg_id"] in sent_at:
                    delivered[e["msg_id"]] = e["ts"]
    if len(delivered) != len(sent_at):
        raise RuntimeError(f"{len(sent_at) - len(delivered)} of {len(sent_at)} messages were not delivered")
    latency = [(delivered[m] - sent_at[m]) * 1000 for m in sent_at]
    rate = len(sent_at) / (max(delivered.values()) - min(sent_at.values()))
    return rate, percentile(latency, 50), percentile(latency, 99)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def log_append_rate(batch: int, record_size: int, root: Path, seconds: float = 2.0) -> float:
    """Records/s of the disk for a write-ahead log written as the MTA writes its own: `batch`
    records of `record_size` bytes in one append, then one fdatasync."""
    root.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(max(1, record_size)) * max(1, batch)
    records = 0
    with open(root / "queue.wal", "ab") as f:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            f.write(chunk)
            f.flush()
            os.fdatasync(f.fileno())
            records += max(1, batch)
        return records / (time.perf_counter() - t0)


def spool_stats(cluster: cl.Cluster, mta: str) -> dict[str, int]:
    return cluster.status_of(mta)["spool"]


def synthetic_logs(root: Path, lines: int) -> None:
    """Log lines shaped like a cluster's: per message, accepted, routed, delivered (store and MTA)."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    files = {n: open(root / "logs" / f"{n}.jsonl", "w") for n in ("mta.ex1", "store.ex1", "directory")}
    ts, lamport, written, m = 1.8e9, 0, 0, 0
    while written < lines:
        m += 1
        msg = f"ex1.bench.{m}"
        for node, event, extra in (
                ("mta.ex1", "mta.accepted", {"sender": "alice", "rcpts": ["bob"], "alt_of": {}, "cache_usn": 3}),
                ("mta.ex1", "mta.routed", {"rcpt": "bob", "home_server": "ex1", "via": "cache", "entry_usn": 3,
                                           "cache_usn": 3, "attempt": 1}),
                ("store.ex1", "store.delivered", {"mailbox": "bob", "file": f"{m}.{msg}.xcon", "size": 300,
                                                  "ndr_for": None, "ndr_rcpts": []}),
                ("mta.ex1", "mta.delivered", {"rcpt": "bob", "duplicate": False})):
            ts += 0.0001
            lamport += 1
            files[node].write(json.dumps({"ts": round(ts, 6), "node": node, "level": "info", "event": event,
                                          "hlc": [int(ts * 1000), lamport], "msg_id": msg, **extra}) + "\n")
            written += 1
        if m % 500 == 0:
            files["directory"].write(json.dumps({"ts": ts, "node": "directory", "level": "info",
                                                 "event": "dir.heartbeat", "hlc": [int(ts * 1000), lamport]})
                                      + "\n")
            written += 1
    for f in files.values():
        f.close()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# Every bench cluster: sp4, no replication lag (nothing here is about the cache), a queue that
# never answers busy and a one-hour expiry (so no load expires); a workload changes what it needs.
