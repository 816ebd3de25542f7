"""Helpers to drive node cores directly: frames in, actions out, no processes."""

from __future__ import annotations

from typing import Any

from nodes.core import Log, Reply, Request, Response, Send
from protocol import Frame, check_body

_n = 0


def frame(type_: str, body: dict[str, Any], src: str = "test", re: str | None = None) -> Frame:
    global _n
    _n += 1
    check_body(type_, body)  # tests speak the real protocol too
    return Frame(type_, f"t{_n}", src, _n, body, None, re)


def request(type_: str, body: dict[str, Any], src: str = "test") -> Request:
    return Request(b"peer", frame(type_, body, src))


def response(to: Send, type_: str, body: dict[str, Any], src: str | None = None) -> Response:
    return Response(frame(type_, body, src or to.to, re=to.id))


def sends(actions: list, type_: str | None = None) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and (type_ is None or a.type == type_)]


def replies(actions: list) -> list[Reply]:
    return [a for a in actions if isinstance(a, Reply)]


def events(actions: list, name: str | None = None) -> list[Log]:
    return [a for a in actions if isinstance(a, Log) and (name is None or a.event == name)]


def recipient(alias: str, home: str, usn: int, alternate: str | None = None, both: bool = False) -> dict[str, Any]:
    return {"alias": alias, "display_name": alias, "home_server": home, "alternate": alternate,
            "deliver_to_both": both, "usn": usn}
