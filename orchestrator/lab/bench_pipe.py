"""The baseline of `xcon bench`: a raw pyzmq + msgpack pipeline, no logic, no disk.

A chain of relay processes: each one acknowledges a frame to whoever sent it and passes it on
to the next; the last one reports each frame's id back to the client (a PUSH), so the client
sees when a frame has gone the whole way. It has the process hops of the xcon path it stands
for (client -> MTA -> store, or client -> MTA -> MTA -> store) and carries frames of the same size.

    python -m orchestrator.lab.bench_pipe relay BIND NEXT|- REPORT
"""

from __future__ import annotations

import sys

import msgpack
import zmq


def relay(bind: str, downstream: str | None, report: str) -> None:
    ctx = zmq.Context.instance()
    inbound = ctx.socket(zmq.ROUTER)
    inbound.bind(bind)
    out = None
    if downstream:
        out = ctx.socket(zmq.DEALER)
        out.connect(downstream)
    done = ctx.socket(zmq.PUSH)
    done.connect(report)
    poller = zmq.Poller()
    poller.register(inbound, zmq.POLLIN)
    if out is not None:
        poller.register(out, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            if sock is out:
                out.recv()  # the next relay's acknowledgement
                continue
            peer, data = inbound.recv_multipart()
            frame = msgpack.unpackb(data, raw=False)
            if frame.get("type") == "stop":
                return
            inbound.send_multipart([peer, msgpack.packb({"type": "ack", "re": frame["id"]})])
            if out is not None:
                out.send(data)
            else:
                done.send(msgpack.packb(frame["id"]))


if __name__ == "__main__":
    _, cmd, bind, nxt, report = sys.argv
    if cmd != "relay":
        raise SystemExit(f"unknown command {cmd}")
    relay(bind, None if nxt == "-" else nxt, report)
