"""The frame codec: what is declared round-trips; anything else is refused with a reason."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import MAX_BATCH_FRAMES, MAX_FRAME_BYTES, MESSAGES, VERSION, Frame, ProtocolError, batch, decode, decode_message, encode
from protocol.frame import _fits


def good(type_="dir.lookup", body=None, **header):
    raw = {"v": VERSION, "type": type_, "id": "x1", "src": "t", "clock": 3, "trace": None, "re": None,
           "body": {"alias": "bob"} if body is None else body}
    raw.update(header)
    return raw


def test_round_trip():
    f = Frame("store.deliver", "i1", "mta.ex1", 9,
              {"msg_id": "m1", "mailbox": "bob", "raw": b"\x00bytes", "ndr_for": None, "ndr_rcpts": [],
               "expires_at": 1e12}, "m1")
    assert decode(encode(f)) == f


@pytest.mark.parametrize("data, reason", [
    (b"\xc1", "not a msgpack frame"),
    (msgpack.packb([1, 2]), "frame must be a map"),
    (msgpack.packb({k: v for k, v in good().items() if k != "src"}), "lacks 'src'"),
    (msgpack.packb(good(clock="3")), "'clock' must be int"),
    (msgpack.packb(good(clock=True)), "'clock' must be int"),
    (msgpack.packb(good(v=VERSION + 1)), f"version {VERSION + 1}"),
    (msgpack.packb(good(type_="no.such")), "unknown message type 'no.such'"),
    (msgpack.packb(good(body={})), "missing field 'alias'"),
    (msgpack.packb(good(body={"alias": 5})), "field 'alias' must be str"),
    (msgpack.packb(good(body={"alias": "a", "x": 1})), "unknown field"),
    (msgpack.packb(good(extra=1)), "unknown key"),
    (msgpack.packb(good(type_="mta.submit", body={"msg_id": None, "sender": "a", "recipients": ["b", 3],
                                                  "subject": "", "body": "", "priority": None})), "list of str"),
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


def test_deep_nesting_is_refused_not_crashed():
    nested = b"\x91" * 100_000 + b"\xc0"  # fixarray of fixarray of ... nil
    with pytest.raises(ProtocolError):
        decode(nested)


@pytest.mark.parametrize("decoder", [decode, decode_message])
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(decoder, data):
    try:
        decoder(data)
    except ProtocolError:
        pass


values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
                      | st.binary(max_size=20), lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(MESSAGES)), st.dictionaries(st.text(max_size=12), values, max_size=6))
def test_generated_bodies_are_accepted_only_when_they_fit_the_declaration(type_, body):
    data = msgpack.packb(good(type_=type_, body=body), use_bin_type=True)
    spec = MESSAGES[type_]
    fits = set(body) == set(spec) and all(_fits(body[k], spec[k]) for k in spec)
    try:
        decode(data)
        assert fits
    except ProtocolError:
        assert not fits


def test_a_batch_is_its_frames_in_order():
    frames = [Frame("ping", f"i{k}", "mta.ex1", k, {}) for k in range(20)]  # past the 15 of a fixarray
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
