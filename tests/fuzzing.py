"""Generated frames that no node may accept: shared by the CI fuzz test and the long fuzz run.

    python -m tests.fuzzing --frames 100000        # the long run: every node, RSS before and after
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import msgpack
import zmq
from hypothesis import strategies as st

from protocol import MESSAGES, VERSION, ProtocolError, body_of, decode

values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=30)
    | st.binary(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)


def _invalid_body(type_: str, body: dict) -> bool:
    try:
        body_of(type_, body)
    except ProtocolError:
        return True
    return False


@st.composite
def framed(draw) -> bytes:
    """A frame with a well-formed header and a body that breaks its type's declaration."""
    type_ = draw(st.sampled_from(sorted(MESSAGES)) | st.text(max_size=12))
    fields = MESSAGES[type_].__struct_fields__ if type_ in MESSAGES else ()
    body = draw(st.fixed_dictionaries({k: values for k in fields}) | st.dictionaries(st.text(max_size=10), values, max_size=6))
    if type_ in MESSAGES and not _invalid_body(type_, body):
        body = {**body, "unexpected": 1}
    header = {"v": VERSION, "type": type_, "id": uuid.uuid4().hex, "src": "fuzz", "clock": 1, "trace": None, "re": None,
              "body": body}
    return msgpack.packb(header, use_bin_type=True)


@st.composite
def broken_header(draw) -> bytes:
    header = {"v": VERSION, "type": "ping", "id": "f", "src": "fuzz", "clock": 1, "body": {}}
    key = draw(st.sampled_from(sorted(header)))
    if draw(st.booleans()):
        del header[key]
    else:
        header[key] = draw(values.filter(lambda v: not isinstance(v, type(header[key]))))
    return msgpack.packb(header, use_bin_type=True)


def truncated(data: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, max(0, len(data) - 1)).map(lambda n: data[:n])


frames = st.one_of(
    st.binary(max_size=300),
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    framed(),
    broken_header(),
    framed().flatmap(truncated),
    st.integers(1, 3).map(lambda n: b"\x91" * (20_000 * n) + b"\xc0"),  # deep nesting
    st.integers(1, 4).map(lambda n: msgpack.packb({"v": VERSION, "type": "dir.lookup", "id": "h", "src": "fuzz",
                                                   "clock": 1, "body": {"alias": "x" * (250_000 * n), "z": 1}})),
)


def ask(sock: zmq.Socket, payload: bytes, timeout_ms: int = 5000):
    sock.send(payload)
    if not sock.poll(timeout_ms):
        raise AssertionError("no answer")
    return decode(sock.recv())


def main() -> None:
    from nodes.config import Settings
    from orchestrator import cluster as cl
    from orchestrator.lab.bench_load import rss_kb
    from orchestrator.cluster.client import dealer

    parser = argparse.ArgumentParser(description="Fuzz every node of a fresh cluster with invalid frames.")
    parser.add_argument("--frames", type=int, default=100_000, help="frames in all, spread over the nodes")
    parser.add_argument("--run-dir", type=Path, default=Path(".xcon/fuzz"))
    args = parser.parse_args()
    cluster = cl.start(args.run_dir.resolve(), Settings(mta_build="sp4", replication_lag_ms=0, replication_jitter_ms=0))
    try:
        cluster.add_user("alice", "ex1")
        nodes = list(cluster.config.nodes)
        pids = {n: cluster.config.nodes[n]["pid"] for n in nodes}
        before = {n: rss_kb(p) for n, p in pids.items()}
        socks = {n: dealer(cluster.config, n) for n in nodes}
        t0, sent, errors = time.time(), 0, 0
        per_node = args.frames // len(nodes)
        for n in nodes:
            for _ in range(per_node):
                reply = ask(socks[n], frames.example())
                sent += 1
                errors += reply.type == "error"
            print(f"{n}: {per_node} frames, RSS {before[n]} -> {rss_kb(pids[n])} kB", flush=True)
        alive = {n: cluster.client.request(n, "ping").body.ready for n in nodes}
        after = {n: rss_kb(p) for n, p in pids.items()}
        print(f"{sent} frames in {time.time() - t0:.0f}s, {errors} error replies, all alive: {all(alive.values())}")
        for n in nodes:
            print(f"  {n:<13} RSS {before[n]:>7} kB -> {after[n]:>7} kB ({100 * (after[n] - before[n]) / before[n]:+.1f}%)")
        assert errors == sent and all(alive.values())
        assert cluster.status_of("directory")["usn"] == 1
    finally:
        cluster.close()
        cl.stop(args.run_dir.resolve())
    sys.exit(0)


if __name__ == "__main__":
    main()
