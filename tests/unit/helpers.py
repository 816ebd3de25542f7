"""Helpers to drive node cores directly: frames in, actions out, no processes."""

from __future__ import annotations

from typing import Any

from nodes.core import Log, Reply, Request, Response, Send
from protocol import Frame, body_of

_n = 0


def frame(type_: str, body: dict[str, Any], src: str = "test", re: str | None = None) -> Frame:
    global _n
    _n += 1
    # tests speak the real protocol too: the body as a node's decoder would hand it to a core
    return Frame(type_, f"t{_n}", src, _n, body_of(type_, body), None, re)


PEER = b"peer"  # the client every request here comes from


def request(type_: str, body: dict[str, Any], src: str = "test") -> Request:
    return Request(PEER, frame(type_, body, src))


def held(actions: list) -> list:
    """The actions, each checked as the real host would need it: a reply goes back to the client
    that asked and answers a frame of ours; every frame body, sent or replied, is as
    protocol/messages.py declares it, and is read as its type (a core may build a body as a dict,
which the host's encode checks and converts; what the receiver reads is the type)."""
    for a in actions:
        if isinstance(a, Reply):
            assert a.peer == PEER and isinstance(a.re, str) and a.re.startswith("t"), a
            a.body = body_of(a.type, a.body)  # checked, and read as its receiver will read it
        elif isinstance(a, Send):
            a.body = body_of(a.type, a.body)
    return actions


def response(to: Send, type_: str, body: dict[str, Any], src: str | None = None) -> Response:
    return Response(frame(type_, body, src or to.to, re=to.id))


def sends(actions: list, type_: str | None = None) -> list[Send]:
    return [a for a in held(actions) if isinstance(a, Send) and (type_ is None or a.type == type_)]


def replies(actions: list) -> list[Reply]:
    return [a for a in held(actions) if isinstance(a, Reply)]


def events(actions: list, name: str | None = None) -> list[Log]:
    return [a for a in held(actions) if isinstance(a, Log) and (name is None or a.event == name)]


def refusal(actions: list) -> tuple[str, str | None, list[tuple[str, str, dict[str, Any]]]]:
    """A core's refusal: its one reply, an error, as (reason, code, the log lines beside it)."""
    (reply,) = replies(actions)
    assert reply.type == "error", reply
    return reply.body.reason, reply.body.code, [(e.event, e.level, e.fields) for e in events(actions)]


def refusal_log(type_: str, reason: str, src: str = "test") -> tuple[str, str, dict[str, Any]]:
    """The log line `nodes.core.error` leaves beside a refusal."""
    return ("request.refused", "warning", {"type": type_, "src": src, "reason": reason})


def recipient(alias: str, home: str, usn: int, alternate: str | None = None, both: bool = False) -> dict[str, Any]:
    return {"alias": alias, "display_name": alias, "home_server": home, "alternate": alternate,
            "deliver_to_both": both, "usn": usn}
