"""The hybrid logical clock (protocol.hlc) against the paper's own rules (Kulkarni et al. 2014,
Fig. 5), for any interleaving of sends, receives and physical times."""

from hypothesis import given, settings, strategies as st

from protocol import hlc
from protocol.frame import ProtocolError, decode, encode, Frame


def paper_send(l, c, pt):
    l2 = max(l, pt)
    return l2, (c + 1 if l2 == l else 0)


def paper_receive(l, c, lm, cm, pt):
    l2 = max(l, lm, pt)
    if l2 == l and l2 == lm:
        return l2, max(c, cm) + 1
    if l2 == l:
        return l2, c + 1
    if l2 == lm:
        return l2, cm + 1
    return l2, 0


steps = st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.integers(0, 40), st.integers(0, 9)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_packed_clock_follows_the_papers_rules(moves):
    """One clock, fed sends (True) and receives of (l_m, c_m) at physical times that may stand still."""
    clock, l, c = hlc.Clock(), 0, 0
    for send, pt, lm, cm in moves:
        if send:
            l, c = paper_send(l, c, pt)
            value = clock.tick(pt / 1000)
        else:
            l, c = paper_receive(l, c, lm, cm, pt)
            value = clock.receive(hlc.packed([lm, cm]), pt / 1000)
        assert hlc.pair(value) == [l, c]


def test_a_receive_sorts_after_its_send_whatever_the_clocks_read():
    ahead, behind = hlc.Clock(offset=5.0), hlc.Clock(offset=-5.0)
    sent = ahead.tick(100.0)
    got = behind.receive(sent, 100.001)
    assert got > sent and hlc.pair(got)[0] == hlc.pair(sent)[0], "the receiver takes the sender's time"
    later = behind.tick(100.002)
    assert later > got, "and its next event follows"
    assert hlc.pair(hlc.Clock().tick(100.0)) == [100_000, 0], "with no link, physical time orders"


def test_a_frame_whose_clock_would_overflow_is_refused():
    for clock in (-1, hlc.LIMIT):
        raw = encode(Frame("ping", "p1", "cli.1", 0, {}))
        tampered = raw.replace(b"\xa5clock\x00", b"\xa5clock" + (b"\xff" if clock < 0 else b"\xcf" + clock.to_bytes(8, "big")))
        try:
            decode(tampered)
        except ProtocolError as exc:
            assert "'clock'" in str(exc)
        else:
            raise AssertionError(f"a clock of {clock} was taken")
