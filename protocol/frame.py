"""The frame: one msgpack map per ZeroMQ message.

    {"v": VERSION, "type": str, "id": str, "src": str, "clock": int,
     "trace": str|nil, "re": str|nil, "body": map}

`clock` is the sender's Lamport clock, `trace` follows one mail message through every hop,
`re` names the frame a reply answers. `decode` validates everything against protocol.messages
and raises ProtocolError with a reason a person can act on; it never raises anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from .messages import MESSAGES, VERSION, Field

MAX_FRAME_BYTES = 16 * 1024 * 1024

_HEADER = {"v": int, "type": str, "id": str, "src": str, "clock": int, "body": dict}
_OPTIONAL_HEADER = ("trace", "re")


class ProtocolError(ValueError):
    """A frame that cannot be accepted; str(err) says why, `frame_id` is set when it could be read."""

    def __init__(self, reason: str, frame_id: str | None = None):
        super().__init__(reason)
        self.frame_id = frame_id


@dataclass(frozen=True)
class Frame:
    type: str
    id: str
    src: str
    clock: int
    body: dict[str, Any] = field(default_factory=dict)
    trace: str | None = None
    re: str | None = None
    v: int = VERSION


def encode(frame: Frame) -> bytes:
    """Validate and pack a frame; a node must never put a malformed frame on the wire."""
    check_body(frame.type, frame.body)
    return msgpack.packb(
        {
            "v": frame.v,
            "type": frame.type,
            "id": frame.id,
            "src": frame.src,
            "clock": frame.clock,
            "trace": frame.trace,
            "re": frame.re,
            "body": frame.body,
        },
        use_bin_type=True,
    )


def decode(data: bytes) -> Frame:
    """Unpack and validate one frame, or raise ProtocolError naming the problem."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes is over the limit of {MAX_FRAME_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"not a msgpack frame ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame must be a map, got {_kind(obj)}")
    frame_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    for name, kind in _HEADER.items():
        if name not in obj:
            raise ProtocolError(f"frame header lacks '{name}'", frame_id)
        value = obj[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"frame header '{name}' must be {kind.__name__}, got {_kind(value)}", frame_id)
    for name in _OPTIONAL_HEADER:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise ProtocolError(f"frame header '{name}' must be str or nil, got {_kind(obj[name])}", frame_id)
    extra = set(obj) - set(_HEADER) - set(_OPTIONAL_HEADER)
    if extra:
        raise ProtocolError(f"frame header has unknown key(s): {', '.join(sorted(map(str, extra)))}", frame_id)
    if obj["v"] != VERSION:
        raise ProtocolError(f"protocol version {obj['v']} is not supported (this node speaks {VERSION})", frame_id)
    try:
        check_body(obj["type"], obj["body"])
    except ProtocolError as exc:
        raise ProtocolError(str(exc), frame_id) from None
    return Frame(
        type=obj["type"],
        id=obj["id"],
        src=obj["src"],
        clock=obj["clock"],
        body=obj["body"],
        trace=obj.get("trace"),
        re=obj.get("re"),
    )


def check_body(type_: str, body: Any) -> None:
    """Raise ProtocolError unless `body` has exactly the declared fields of `type_`, well typed."""
    spec = MESSAGES.get(type_)
    if spec is None:
        raise ProtocolError(f"unknown message type '{type_}'")
    if not isinstance(body, dict):
        raise ProtocolError(f"{type_}: body must be a map, got {_kind(body)}")
    for name, ftype in spec.items():
        if name not in body:
            raise ProtocolError(f"{type_}: missing field '{name}'")
        if not _fits(body[name], ftype):
            raise ProtocolError(f"{type_}: field '{name}' must be {ftype.describe()}, got {_kind(body[name])}")
    extra = set(body) - set(spec)
    if extra:
        raise ProtocolError(f"{type_}: unknown field(s): {', '.join(sorted(map(str, extra)))}")


def _fits(value: Any, f: Field) -> bool:
    if value is None:
        return f.optional or f.kind == "any"
    if f.kind == "any":
        return True
    if f.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if f.kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if f.kind == "list":
        return isinstance(value, list) and (f.of is None or all(_fits(v, f.of) for v in value))
    kinds = {"str": str, "bool": bool, "bytes": bytes, "map": dict}
    return isinstance(value, kinds[f.kind])


def _kind(value: Any) -> str:
    return {
        type(None): "nil", bool: "bool", int: "int", float: "float", str: "str",
        bytes: "bytes", list: "list", dict: "map",
    }.get(type(value), type(value).__name__)
