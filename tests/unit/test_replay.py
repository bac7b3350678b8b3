"""The anti-replay window and sequence numbers against a reference model.

The model is RFC 4303 3.4.3 written as plainly as possible: a set of the sequence numbers
accepted so far, the highest of them, and the rule "accept if new and not older than the
window". The window under test is a bitmap; whatever the arrival order, window size
(32..4096) or position (including across 2^32 with ESN, where only the low 32 bits
travel and infer() must find the high ones), both must decide alike.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.errors import AuthenticationFailed, Replayed, SequenceExhausted
from hostsec.ipsec.replay import MAX_WINDOW, MIN_WINDOW, ReplayWindow
from hostsec.ipsec.sa import Direction, LifetimeExpired

from .packets import budget, ipv4_tcp
from .sa_factory import V4_A, V4_B, sa_pair, start_inbound_at

LOW32 = 0xFFFFFFFF


class Model:
    """RFC 4303 3.4.3: numbers are accepted once, and only within W of the highest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.top = 0

    def acceptable(self, seq: int) -> bool:
        if seq == 0 or seq in self.seen:
            return False
        return seq > self.top or self.top - seq < self.size

    def accept(self, seq: int) -> None:
        self.seen.add(seq)
        self.top = max(self.top, seq)


def _offer(window: ReplayWindow, seq: int) -> bool:
    """check(), then update() as the SA does after a successful verification."""
    try:
        window.check(seq)
    except Replayed:
        return False
    window.update(seq)
    return True


# Arrivals: a random walk around the highest number so far, with jumps past the window
# and some duplicates; plus plain permutations of a range.
_steps = st.one_of(
    st.integers(-80, 80),
    st.integers(-5000, 5000),
    st.sampled_from([0, 1, -1]),  # duplicates and in-order arrivals
)


@st.composite
def _arrivals(draw: st.DrawFn, start: int, count: int = 300) -> list[int]:
    if draw(st.booleans()):
        n = draw(st.integers(1, count))
        order = draw(st.permutations(range(start, start + n)))
        dups = draw(st.lists(st.sampled_from(order), max_size=n // 4))
        return list(order) + dups
    seqs, current = [], start
    for step in draw(st.lists(_steps, min_size=1, max_size=count)):
        current = max(1, current + step)
        seqs.append(current)
    return seqs


_sizes = st.one_of(st.sampled_from([32, 64, 128, 1024, 4096]), st.integers(MIN_WINDOW, MAX_WINDOW))


@budget(150)
@given(size=_sizes, data=st.data())
def test_window_matches_the_model(size: int, data: st.DataObject) -> None:
    window, model = ReplayWindow(size), Model(size)
    for seq in data.draw(_arrivals(1)):
        expected = model.acceptable(seq)
        assert _offer(window, seq) == expected, (seq, model.top)
        if expected:
            model.accept(seq)
        assert window.top == model.top


@budget(150)
@given(size=_sizes, below=st.integers(0, 5000), data=st.data())
def test_esn_window_across_2_32_matches_the_model(
    size: int, below: int, data: st.DataObject
) -> None:
    """ESN: start ``below`` under 2^32 and wander across it. Only the low 32 bits are
    given to infer(); a wrong guess of the high bits would fail the ICV in a real SA,
    so the packet counts as accepted only if the guess was right."""
    start = (1 << 32) - below
    window, model = ReplayWindow(size, esn=True), Model(size)
    for seq in range(start - size, start):  # as if everything up to start-1 had arrived
        window.update(seq)
        model.accept(seq)
    for seq in data.draw(_arrivals(start)):
        top = window.top
        inferred = window.infer(seq & LOW32)
        if top - size < seq <= top - size + (1 << 32):
            # RFC 4303 A2.2: inside the window or ahead of it by less than 2^32 - W.
            assert inferred == seq, (seq, top)
        expected = model.acceptable(seq)
        accepted = inferred == seq and _offer(window, seq)
        assert accepted == expected, (seq, top, inferred)
        if expected:
            model.accept(seq)
        assert window.top == model.top


def test_infer_without_esn_is_the_identity() -> None:
    window = ReplayWindow(64)
    window.top = (1 << 32) - 1
    assert window.infer(5) == 5


def test_window_sizes_are_bounded() -> None:
    for bad in (0, 31, 4097):
        with pytest.raises(ValueError):
            ReplayWindow(bad)
    ReplayWindow(MIN_WINDOW)
    ReplayWindow(MAX_WINDOW)


# ---------------------------------------------------------------------------
# The same through an SA: replay check before the ICV, window update only after it.


@budget(25)
@given(
    window=st.sampled_from([32, 64, 200]),
    esn=st.booleans(),
    start=st.sampled_from([0, (1 << 32) - 40]),
    data=st.data(),
)
def test_sa_against_the_model(window: int, esn: bool, start: int, data: st.DataObject) -> None:
    """Real packets in a random order, with duplicates and forgeries. A forged packet
    (one ICV bit flipped, possibly far ahead of the window) is never accepted and never
    moves the window; every genuine packet is accepted exactly when the model says so."""
    if start and not esn:
        start = 0  # without ESN the space ends at 2^32 - 1
    proposal = data.draw(st.sampled_from(["aes128gcm16", "aes128-sha256", "sha256"]))
    proto = Protocol.AH if proposal == "sha256" else Protocol.ESP
    out, inbound = sa_pair(proposal, proto, esn=esn, window=window)
    out.seq = start
    if start:
        start_inbound_at(inbound, start)
    count = data.draw(st.integers(1, 120))
    packet = ipv4_tcp(V4_A.packed, V4_B.packed, b"replay")
    sent = {start + i + 1: out.protect(packet) for i in range(count)}
    model = Model(window)
    model.top = start
    model.seen = set(range(max(1, start - window + 1), start + 1)) if start else set()
    order = data.draw(st.lists(st.sampled_from(sorted(sent)), min_size=1, max_size=2 * count))
    forge_at = data.draw(st.sets(st.integers(0, len(order) - 1)))
    for i, seq in enumerate(order):
        wire = bytearray(sent[seq])
        if i in forge_at:
            wire[-1] ^= 0x01
            with pytest.raises((AuthenticationFailed, Replayed)):
                inbound.unprotect(bytes(wire))
            continue
        if model.acceptable(seq):
            assert inbound.unprotect(bytes(wire)) == packet
            model.accept(seq)
        else:
            # Too old for the window: with ESN the inferred high bits may be wrong, and
            # then it is the ICV that fails.
            with pytest.raises((Replayed, AuthenticationFailed)):
                inbound.unprotect(bytes(wire))
    assert inbound.stats.packets == sum(1 for seq in model.seen if seq > start)


def test_forgery_far_ahead_does_not_move_the_window() -> None:
    out, inbound = sa_pair("aes128gcm16", window=32)
    packet = ipv4_tcp(V4_A.packed, V4_B.packed, b"x")
    first = out.protect(packet)
    out.seq = 10_000
    ahead = bytearray(out.protect(packet))
    ahead[-3] ^= 0x40
    with pytest.raises(AuthenticationFailed):
        inbound.unprotect(bytes(ahead))
    assert inbound.unprotect(first) == packet  # seq 1 is still inside the window


# ---------------------------------------------------------------------------
# Outbound sequence numbers never cycle (RFC 4303 3.3.3)


@pytest.mark.parametrize("esn", [False, True], ids=["noesn", "esn"])
@pytest.mark.parametrize("proposal", ["aes128gcm16", "aes128-sha256", "sha256"])
def test_sequence_space_ends_without_cycling(esn: bool, proposal: str) -> None:
    proto = Protocol.AH if proposal == "sha256" else Protocol.ESP
    out, inbound = sa_pair(proposal, proto, esn=esn)
    last = (1 << 64) - 1 if esn else (1 << 32) - 1
    soft = last - (last + 1) // 16
    packet = ipv4_tcp(V4_A.packed, V4_B.packed, b"seq")
    # Well before the end, one soft "sequence" event asks for a rekey.
    out.seq = soft - 2
    out.protect(packet)
    assert out.poll_events() == []
    out.protect(packet)
    out.protect(packet)
    assert out.poll_events() == [LifetimeExpired(out.spi, Direction.OUTBOUND, False, "sequence")]
    # The last number is sent; the next packet is refused, and the SA is dead.
    out.seq = last - 1
    wire = out.protect(packet)
    start_inbound_at(inbound, last - 1)
    assert inbound.unprotect(wire) == packet
    with pytest.raises(SequenceExhausted):
        out.protect(packet)
    assert out.seq == last
    assert out.poll_events() == [LifetimeExpired(out.spi, Direction.OUTBOUND, True, "sequence")]
    assert out.stats.drops
