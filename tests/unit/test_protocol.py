"""The frame codec: what is declared round-trips; anything else is refused with a reason."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import msgspec

from protocol import (
    MAX_BATCH_FRAMES, MAX_FRAME_BYTES, MESSAGES, VERSION, Frame, ProtocolError, batch, body_of, decode, decode_message,
    encode,
)
from protocol.messages import Ping


def good(type_="dir.lookup", body=None, **header):
    raw = {"v": VERSION, "type": type_, "id": "x1", "src": "t", "clock": 3, "trace": None, "re": None,
           "body": {"alias": "bob"} if body is None else body}
    raw.update(header)
    return raw


def test_round_trip():
    body = {"msg_id": "m1", "mailbox": "bob", "raw": b"\x00bytes", "ndr_for": None, "ndr_rcpts": [], "expires_at": 1e12}
    f = Frame("store.deliver", "i1", "mta.ex1", 9, body, "m1")
    got = decode(encode(f))  # a dict body is checked and sent as its type; it reads back as that type
    assert got == Frame("store.deliver", "i1", "mta.ex1", 9, body_of("store.deliver", body), "m1")
    assert msgspec.to_builtins(got.body, enc_hook=None) == {**body, "raw": msgspec.to_builtins(b"\x00bytes")}
    assert decode(encode(got)) == got


@pytest.mark.parametrize("data, reason", [
    (b"\xc1", "not a msgpack frame"),
    (msgpack.packb([1, 2]), "frame must be a map"),
    (msgpack.packb({k: v for k, v in good().items() if k != "src"}), "missing frame header 'src'"),
    (msgpack.packb(good(clock="3")), "frame header 'clock' must be int, got str"),
    (msgpack.packb(good(clock=True)), "frame header 'clock' must be int, got bool"),
    (msgpack.packb(good(clock=-1)), "frame header 'clock' must be int >= 0"),
    (msgpack.packb(good(clock=2**62)), "frame header 'clock' must be int <= 4611686018427387903"),
    (msgpack.packb(good(v=VERSION + 1)), f"version {VERSION + 1}"),
    (msgpack.packb(good(type_="no.such")), "unknown message type 'no.such'"),
    (msgpack.packb(good(body={})), "missing field 'alias'"),
    (msgpack.packb(good(body={"alias": 5})), "dir.lookup: field 'alias' must be str, got int"),
    (msgpack.packb(good(body={"alias": "a", "x": 1})), "dir.lookup: unknown field 'x'"),
    (msgpack.packb(good(extra=1)), "unknown frame header 'extra'"),
    (msgpack.packb(good(type_="mta.submit", body={"msg_id": None, "sender": "a", "recipients": ["b", 3],
                                                  "subject": "", "body": "", "priority": None})),
     "mta.submit: field 'recipients[1]' must be str, got int"),
    (msgpack.packb(good(type_="mta.transfer", body={
        "msg_id": "m", "sender": "a", "raw": b"", "accepted_at": 1, "ndr_for": None, "ndr_rcpts": [], "priority": "normal",
        "rcpts": [{"alias": "b", "alt_of": None, "hint": None, "hops": 0, "cycles": -1}]}), use_bin_type=True),
     "mta.transfer: field 'rcpts[0].cycles' must be int >= 0"),
    (msgpack.packb(good(type_="mta.transfer", body={
        "msg_id": "m", "sender": "a", "raw": b"", "accepted_at": 1, "ndr_for": None, "ndr_rcpts": [], "priority": "normal",
        "rcpts": [{"alias": "b", "alt_of": None, "hint": None, "hops": -1}]}), use_bin_type=True),
     "mta.transfer: field 'rcpts[0].hops' must be int >= 0"),
    (msgpack.packb(good(type_="mta.transfer", body={
        "msg_id": "m", "sender": "a", "raw": b"", "accepted_at": 1, "ndr_for": None, "ndr_rcpts": [], "priority": "normal",
        "rcpts": [{"alias": "b", "alt_of": None, "hint": {"alias": "b"}, "hops": 0}]}), use_bin_type=True),
     "mta.transfer: rcpts[0].hint: missing field 'display_name'"),
    (msgpack.packb(good(type_="fault.clock", body={"offset_ms": 86_400_001})),
     "fault.clock: field 'offset_ms' must be int <= 86400000"),  # for an edge node's runtime as for the host's
    (b"\x00" * (MAX_FRAME_BYTES + 1), "over the limit"),
])
def test_malformed_frames_are_refused_with_a_reason(data, reason):
    with pytest.raises(ProtocolError) as err:
        decode(data)
    assert reason in str(err.value)


def test_a_refused_frame_keeps_its_id_for_the_error_reply():
    with pytest.raises(ProtocolError) as err:
        decode(msgpack.packb(good(body={})))
    assert err.value.frame_id == "x1"


def test_encode_refuses_what_decode_would():
    with pytest.raises(ProtocolError):
        encode(Frame("dir.lookup", "i", "s", 1, {"alias": 1}))


@pytest.mark.parametrize("decoder", [decode, decode_message])
@pytest.mark.parametrize("nested", [b"\x91" * 100_000 + b"\xc0",  # fixarray of fixarray of ... nil
                                    b"\x81\xa4body" * 100_000 + b"\xc0"])  # {"body": {"body": ...}}
def test_deep_nesting_is_refused_not_crashed(decoder, nested):
    with pytest.raises(ProtocolError):
        decoder(nested)


@pytest.mark.parametrize("decoder", [decode, decode_message])
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(decoder, data):
    try:
        decoder(data)
    except ProtocolError:
        pass


values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
                      | st.binary(max_size=20), lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def fitting(t: msgspec.inspect.Type) -> st.SearchStrategy:
    """Values of a declared type, built from the declaration alone (msgspec.inspect)."""
    i = msgspec.inspect
    simple = {i.StrType: st.text(max_size=12), i.BoolType: st.booleans(), i.BytesType: st.binary(max_size=12),
              i.NoneType: st.none(), i.FloatType: st.floats(allow_nan=False), i.AnyType: values}
    if type(t) in simple:
        return simple[type(t)]
    if isinstance(t, i.IntType):
        return st.integers(t.ge if t.ge is not None else -2**63, t.le if t.le is not None else 2**63 - 1)
    if isinstance(t, i.UnionType):
        return st.one_of([fitting(x) for x in t.types])
    if isinstance(t, i.ListType):
        return st.lists(fitting(t.item_type), max_size=3)
    if isinstance(t, i.DictType):
        return st.dictionaries(st.text(max_size=8), fitting(t.value_type), max_size=3)
    if isinstance(t, i.EnumType):  # a store's outcome: one of its values
        return st.sampled_from([m.value for m in t.cls])
    fields = t.fields  # a Struct or a TypedDict
    return st.fixed_dictionaries({f.encode_name: fitting(f.type) for f in fields if f.required},
                                 optional={f.encode_name: fitting(f.type) for f in fields if not f.required})


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_what_is_declared_round_trips(data):
    type_ = data.draw(st.sampled_from(sorted(MESSAGES)))
    body = data.draw(fitting(msgspec.inspect.type_info(MESSAGES[type_])))
    frame = decode(msgpack.packb(good(type_=type_, body=body), use_bin_type=True))
    again = decode(encode(frame))
    assert again == frame and type(frame.body) is MESSAGES[type_]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(MESSAGES)), st.dictionaries(st.text(max_size=12), values, max_size=6))
def test_generated_bodies_are_taken_whole_or_refused(type_, body):
    """A body the decoder takes is the body that was sent: nothing dropped, nothing invented but
    the declared defaults; one it refuses, a node's own encode refuses too."""
    data = msgpack.packb(good(type_=type_, body=body), use_bin_type=True)
    try:
        got = decode(data).body
    except ProtocolError:
        with pytest.raises(ProtocolError):
            encode(Frame(type_, "x", "t", 1, body))
        return
    read = msgspec.to_builtins(got, builtin_types=(bytes,))
    assert {k: v for k, v in read.items() if k in body} == body and set(body) <= set(read)


def test_a_batch_is_its_frames_in_order():
    frames = [Frame("ping", f"i{k}", "mta.ex1", k, Ping()) for k in range(20)]  # past the 15 of a fixarray
    assert decode_message(batch([encode(f) for f in frames])) == frames
    assert decode_message(encode(frames[0])) == [frames[0]]


def test_a_batch_with_one_bad_frame_is_refused_whole_naming_it():
    bad = msgpack.packb(good(body={"alias": 5}, id="bad1"))
    with pytest.raises(ProtocolError) as err:
        decode_message(batch([encode(Frame("ping", "i1", "t", 1, {})), bad]))
    assert "batch frame 1" in str(err.value) and "'alias' must be str" in str(err.value)
    assert err.value.frame_id == "bad1"


@pytest.mark.parametrize("items, reason", [
    ([], "1 to 1024 frames"),
    ([good()] * (MAX_BATCH_FRAMES + 1), "1 to 1024 frames"),
    ([good(), [good()]], "batch frame 1: frame must be a map, got list"),
    ([1, 2, 3], "batch frame 0: frame must be a map, got int"),
])
def test_malformed_batches_are_refused(items, reason):
    with pytest.raises(ProtocolError) as err:
        decode_message(msgpack.packb(items))
    assert reason in str(err.value)


def test_a_single_frame_decoder_refuses_a_batch():
    with pytest.raises(ProtocolError, match="frame must be a map, got list"):
        decode(batch([encode(Frame("ping", "i1", "t", 1, {}))] * 2))
