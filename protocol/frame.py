"""The frame: a msgpack map, one per ZeroMQ message, or several in a batch.

    {"type": str, "id": str, "src": str, "clock": int, "body": map,
     "trace": str|nil, "re": str|nil, "v": VERSION}

`clock` is the sender's hybrid logical clock (protocol.hlc), below hlc.LIMIT, `trace` follows one
mail message through every hop, `re` names the frame a reply answers. `decode` reads the header,
then the body straight into its message type (protocol.messages), validating both as msgspec reads
them, and raises ProtocolError with a reason a person can act on; it never raises anything else.

A batch is a msgpack array of frames in one ZeroMQ message: what a node's runtime sends when
several frames leave for the same peer node in one turn of its loop (nodes.runtime), so that a
busy link pays the per-message cost of ZeroMQ, CURVE and the poll loop once per batch, not once
per frame. Each frame in it is validated as if it had come alone; a batch is taken whole or
refused whole (`decode_message`), so one bad message never gets more than one error reply.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgpack
import msgspec
from msgspec import Meta, Raw, Struct, ValidationError, convert, field

from .hlc import LIMIT as CLOCK_LIMIT
from .messages import MESSAGES, VERSION, Body

MAX_FRAME_BYTES = 16 * 1024 * 1024
# the largest message (headers and body) an MTA accepts: one travels in a single frame (a
# delivery, a transfer, an export page of one), with room to spare for the rest of that frame
MAX_MESSAGE_BYTES = 15 * 1024 * 1024
MAX_BATCH_FRAMES = 1024
# one encoder for the process (frames here, the MTA's log records in nodes.mta.wal): nodes are
# single-threaded
pack = msgspec.msgpack.Encoder().encode


class ProtocolError(ValueError):
    """A frame that cannot be accepted; str(err) says why, `frame_id` is set when it could be read."""

    def __init__(self, reason: str, frame_id: str | None = None):
        super().__init__(reason)
        self.frame_id = frame_id


class Frame(Struct, gc=False):
    """One frame. `body` is its message type's Struct; a node may hand a dict to `encode`, which
    checks it against the type first. Not tracked by the cyclic collector: a frame holds no cycle."""

    type: str
    id: str
    src: str
    clock: int
    body: Any = field(default_factory=dict)
    trace: str | None = None
    re: str | None = None
    v: int = VERSION


class _Head(Struct, forbid_unknown_fields=True, gc=False):
    """A frame as it is read: the header checked, the body's bytes left for its type's decoder."""

    type: str
    id: str
    src: str
    clock: Annotated[int, Meta(ge=0, lt=CLOCK_LIMIT)]
    body: Raw
    v: int
    trace: str | None = None
    re: str | None = None


_read_head = msgspec.msgpack.Decoder(_Head).decode
# what msgspec raises on bytes that do not read: not msgpack, not of the type (ValidationError is a
# DecodeError), or nested past the interpreter's depth (a list of a list of ... 50,000 deep)
_UNREADABLE = (msgspec.DecodeError, RecursionError)
_read_message = msgspec.msgpack.Decoder(_Head | list[Raw]).decode
_READ_BODY = {type_: msgspec.msgpack.Decoder(cls).decode for type_, cls in MESSAGES.items()}


def encode(frame: Frame) -> bytes:
    """Pack a frame, its body checked against its type: a node must never put a malformed frame on
    the wire. A Struct body is of its type by construction (checked here: the right type); a dict
    is converted to it, which checks every field."""
    if type(frame.body) is not MESSAGES.get(frame.type):
        frame = msgspec.structs.replace(frame, body=body_of(frame.type, frame.body))
    return pack(frame)


def body_of(type_: str, body: Any) -> Body:
    """`body` (a dict, or a body of the type) as the Struct of message `type_`, or ProtocolError
    naming what does not fit."""
    cls = MESSAGES.get(type_)
    if cls is None:
        raise ProtocolError(f"unknown message type '{type_}'")
    if type(body) is cls:
        return body
    if isinstance(body, Body):
        raise ProtocolError(f"{type_}: body must be a {type_}, got a {type(body).__name__}")
    try:
        return convert(body, cls)
    except ValidationError as exc:
        raise ProtocolError(f"{type_}: {_reason(exc)}") from None


def as_dict(body: Body) -> dict[str, Any]:
    """A body's fields as a dict (its nested values as they are): for a log line or a table."""
    return msgspec.structs.asdict(body)


def decode(data: bytes) -> Frame:
    """Unpack and validate one frame, or raise ProtocolError naming the problem."""
    _size(data)
    return _frame_of(data)


def decode_message(data: bytes) -> list[Frame]:
    """The frames of one ZeroMQ message: a frame alone, or every frame of a batch in order.
    Raises ProtocolError for the whole message if any part of it is wrong."""
    _size(data)
    try:
        obj = _read_message(data)
    except _UNREADABLE as exc:
        raise ProtocolError(_header_reason(exc), _peek_id(data)) from None
    if type(obj) is not list:
        return [_checked(obj)]
    if not 0 < len(obj) <= MAX_BATCH_FRAMES:
        raise ProtocolError(f"a batch holds 1 to {MAX_BATCH_FRAMES} frames, this one {len(obj)}")
    frames = []
    for i, raw in enumerate(obj):
        try:
            frames.append(_frame_of(raw))
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


def _size(data: bytes) -> None:
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes is over the limit of {MAX_FRAME_BYTES}", _peek_id(data))


def _frame_of(data: bytes | Raw) -> Frame:
    """The frame `data` holds (a frame alone, or one of a batch), or ProtocolError."""
    try:
        head = _read_head(data)
    except _UNREADABLE as exc:
        raise ProtocolError(_header_reason(exc), _peek_id(bytes(data))) from None
    return _checked(head)


def _checked(head: _Head) -> Frame:
    """The frame of a header that reads: its version, then its body read into its type."""
    if head.v != VERSION:
        raise ProtocolError(f"protocol version {head.v} is not supported (this node speaks {VERSION})", head.id)
    read = _READ_BODY.get(head.type)
    if read is None:
        raise ProtocolError(f"unknown message type '{head.type}'", head.id)
    try:
        body = read(head.body)
    except _UNREADABLE as exc:
        raise ProtocolError(f"{head.type}: {_reason(exc)}", head.id) from None
    return Frame(head.type, head.id, head.src, head.clock, body, head.trace, head.re)


PEEK_BYTES = 4096


def _peek_id(data: bytes) -> str | None:
    """The id of a frame that does not read (too big, or a header that does not fit), read from
    its first bytes alone, so that the error reply names the frame it answers and its sender need
    not wait out a timeout. `encode` puts the id before the body; a frame made otherwise, or one
    that is no map, gets an error without an id."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=PEEK_BYTES)
    unpacker.feed(data[:PEEK_BYTES])
    try:
        for _ in range(min(unpacker.read_map_header(), 8)):
            if unpacker.unpack() == "id":
                value = unpacker.unpack()
                return value if isinstance(value, str) else None
            unpacker.skip()
    except Exception:  # not a map, or the id is not within the first bytes
        return None
    return None


# msgspec's words for what it read, in the protocol's (a person reads "map", not "object")
_KINDS = {"object": "map", "array": "list", "null": "nil", "object | array": "map"}
_AT = re.compile(r" - at `\$\.?(.*)`$")
_EXPECTED = re.compile(r"Expected `([^`]*)`(.*?)(?:, got `([^`]*)`)?$")
_FIELD = re.compile(r"Object (missing required|contains unknown) field `([^`]*)`$")


def _kind(name: str) -> str:
    return _KINDS.get(name) or " or ".join(_KINDS.get(k, k) for k in name.split(" | "))


def _reason(exc: Exception, what: str = "field") -> str:
    """One line from msgspec's error: `field 'alias' must be str, got int`, `missing field 'x'`,
    `unknown field 'x'`, `rcpts[0]: missing field 'hops'`."""
    text = str(exc)
    if isinstance(exc, RecursionError):
        return "not a msgpack frame (nested too deeply)"
    if not isinstance(exc, ValidationError):  # msgspec.DecodeError: the bytes are no msgpack
        return f"not a msgpack frame ({text[:80]})"
    m = _AT.search(text)
    path, text = (m.group(1), text[:m.start()]) if m else ("", text)
    where = f"{path}: " if path and not _EXPECTED.match(text) else ""
    if f := _FIELD.match(text):
        return f"{where}{'missing' if f.group(1) == 'missing required' else 'unknown'} {what} '{f.group(2)}'"
    if e := _EXPECTED.match(text):
        got = f", got {_kind(e.group(3))}" if e.group(3) else ""
        if path:
            return f"{what} '{path}' must be {_kind(e.group(1))}{e.group(2)}{got}"
        return f"{'frame' if what == 'frame header' else 'body'} must be a {_kind(e.group(1))}{got}"
    return where + text


def _header_reason(exc: Exception) -> str:
    return _reason(exc, "frame header")
