"""The frame: a msgpack map, one per ZeroMQ message, or several in a batch.

    {"v": VERSION, "type": str, "id": str, "src": str, "clock": int,
     "trace": str|nil, "re": str|nil, "body": map}

`clock` is the sender's hybrid logical clock (protocol.hlc), below hlc.LIMIT, `trace` follows one mail message through every hop,
`re` names the frame a reply answers. `decode` validates everything against protocol.messages
and raises ProtocolError with a reason a person can act on; it never raises anything else.

A batch is a msgpack array of frames in one ZeroMQ message: what a node's runtime sends when
several frames leave for the same peer node in one turn of its loop (nodes.runtime), so that a
busy link pays the per-message cost of ZeroMQ, CURVE and the poll loop once per batch, not once
per frame. Each frame in it is validated as if it had come alone; a batch is taken whole or
refused whole (`decode_message`), so one bad message never gets more than one error reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from .hlc import LIMIT as CLOCK_LIMIT
from .messages import MESSAGES, VERSION, Field

MAX_FRAME_BYTES = 16 * 1024 * 1024
# the largest message (headers and body) an MTA accepts: one travels in a single frame (a
# delivery, a transfer, an export page of one), with room to spare for the rest of that frame
MAX_MESSAGE_BYTES = 15 * 1024 * 1024
# one Packer for the process (frames here, the MTA's log records in nodes.mta.spool): msgpack.packb
# makes a new one per call (docs/performance.md). Nodes are single-threaded; a Packer resets
# itself after an error.
pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
MAX_BATCH_FRAMES = 1024

_HEADER = {"v": int, "type": str, "id": str, "src": str, "clock": int, "body": dict}
_OPTIONAL_HEADER = ("trace", "re")
_ALL_HEADER_KEYS = frozenset(_HEADER) | frozenset(_OPTIONAL_HEADER)


class ProtocolError(ValueError):
    """A frame that cannot be accepted; str(err) says why, `frame_id` is set when it could be read."""

    def __init__(self, reason: str, frame_id: str | None = None):
        super().__init__(reason)
        self.frame_id = frame_id


@dataclass(slots=True)  # not frozen, for speed (docs/performance.md); a value all the same
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
    return pack(
        {
            "v": frame.v,
            "type": frame.type,
            "id": frame.id,
            "src": frame.src,
            "clock": frame.clock,
            "trace": frame.trace,
            "re": frame.re,
            "body": frame.body,
        }
    )


def decode(data: bytes) -> Frame:
    """Unpack and validate one frame, or raise ProtocolError naming the problem."""
    return _frame_of(_unpack(data))


def decode_message(data: bytes) -> list[Frame]:
    """The frames of one ZeroMQ message: a frame alone, or every frame of a batch in order.
    Raises ProtocolError for the whole message if any part of it is wrong."""
    obj = _unpack(data)
    if type(obj) is not list:
        return [_frame_of(obj)]
    if not 0 < len(obj) <= MAX_BATCH_FRAMES:
        raise ProtocolError(f"a batch holds 1 to {MAX_BATCH_FRAMES} frames, this one {len(obj)}")
    frames = []
    for i, item in enumerate(obj):
        try:
            frames.append(_frame_of(item))
        except ProtocolError as exc:
            raise ProtocolError(f"batch frame {i}: {exc}", exc.frame_id) from None
    return frames


def batch(frames: list[bytes]) -> bytes:
    """Encoded frames as one batch: a msgpack array header, then the frames as they are."""
    n = len(frames)
    if not 0 < n <= MAX_BATCH_FRAMES:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_FRAMES} frames, not {n}")
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")  # fixarray, array 16
    return head + b"".join(frames)


def _unpack(data: bytes) -> Any:
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes is over the limit of {MAX_FRAME_BYTES}", _peek_id(data))
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"not a msgpack frame ({type(exc).__name__}: {str(exc)[:80]})") from None


PEEK_BYTES = 4096


def _peek_id(data: bytes) -> str | None:
    """The id of a frame too big to unpack, read from its first bytes alone, so that the error
    reply names the frame it answers and its sender need not wait out a timeout. `encode` puts
    v, type and id before the body; a frame made otherwise gets an error without an id."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=PEEK_BYTES)
    unpacker.feed(data[:PEEK_BYTES])
    try:
        for _ in range(min(unpacker.read_map_header(), len(_ALL_HEADER_KEYS))):
            if unpacker.unpack() == "id":
                value = unpacker.unpack()
                return value if isinstance(value, str) else None
            unpacker.skip()
    except Exception:  # not a map, or the id is not within the first bytes
        return None
    return None


def _frame_of(obj: Any) -> Frame:
    if type(obj) is dict and obj.keys() <= _ALL_HEADER_KEYS:
        # the common case, checked in one expression; anything it does not pass is looked at
        # again field by field, which finds the reason (or lets an odd but valid frame through)
        get = obj.get
        v, type_, id_, src, clock, body, trace, re_ = (get("v"), get("type"), get("id"), get("src"), get("clock"),
                                                       get("body"), get("trace"), get("re"))
        if (v == VERSION and type(v) is int and type(type_) is str and type(id_) is str and type(src) is str
                and type(clock) is int and 0 <= clock < CLOCK_LIMIT and type(body) is dict and (trace is None or type(trace) is str)
                and (re_ is None or type(re_) is str)):
            try:
                check_body(type_, body)
            except ProtocolError as exc:
                raise ProtocolError(str(exc), id_) from None
            return Frame(type_, id_, src, clock, body, trace, re_)
    return _decode_checked(obj)


def _decode_checked(obj: Any) -> Frame:
    """Validate an unpacked frame field by field, raising ProtocolError with the first problem."""
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
    extra = set(obj) - _ALL_HEADER_KEYS
    if extra:
        raise ProtocolError(f"frame header has unknown key(s): {', '.join(sorted(map(str, extra)))}", frame_id)
    if not 0 <= obj["clock"] < CLOCK_LIMIT:
        raise ProtocolError(f"frame header 'clock' must be from 0 to 2**62 - 1, got {obj['clock']}", frame_id)
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
    compiled = _COMPILED.get(type_)
    if compiled is not None and type(body) is dict and body.keys() == compiled[0]:
        for name, exact, of in compiled[1]:
            value = body[name]
            if exact is not None and type(value) not in exact:
                break
            if of is not None and not all(type(x) in of for x in value):
                break
        else:
            return
    _check_body_fully(type_, body)


def _check_body_fully(type_: str, body: Any) -> None:
    """check_body's slow path: the declaration read field by field, naming the first misfit."""
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


# The exact Python types msgpack decodes each field kind into. A value of another type may still
# fit (a subclass, a bool where `any` is allowed); the fast check then defers to _check_body_fully.
_EXACT = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "bytes": (bytes,),
          "map": (dict,), "list": (list,)}


def _exact(f: Field) -> frozenset | None:
    if f.kind == "any":
        return None
    return frozenset((*_EXACT[f.kind], *((type(None),) if f.optional else ())))


def _compile(spec: dict[str, Field]) -> tuple[frozenset, list[tuple[str, frozenset | None, frozenset | None]]]:
    checks = []
    for name, f in spec.items():
        # a list's elements are checked here when they are of a plain kind; a list of lists (none
        # declared today) never passes the fast check, so the full one judges it
        of = None if f.kind != "list" or f.of is None else (_exact(f.of) if f.of.kind != "list" else frozenset())
        checks.append((name, _exact(f), of))
    return frozenset(spec), checks


_COMPILED = {type_: _compile(spec) for type_, spec in MESSAGES.items()}


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
