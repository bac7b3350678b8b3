"""Property tests of protect/unprotect (hypothesis).

1. Round trip: for every transform, both modes and both families, with and without ESN
   and UDP encapsulation, a random packet (random header fields, IPv4 options, IPv6
   extension headers, sizes) comes back byte for byte.
2. Bit flips: every single-bit flip anywhere in a protected packet is dropped with one of
   the named exceptions, unless it hit a field that the ICV does not cover (the outer
   header of ESP, the mutable fields of AH, the UDP ports of ESP-in-UDP); then the packet
   that comes out is exactly the original (tunnel mode) or the original carrying that same
   changed header field (transport mode, where the outer header is the packet's own).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.errors import (
    AuthenticationFailed,
    DropReason,
    DummyPacket,
    PacketDropped,
    PolicyViolation,
)
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import Mode
from hostsec.wire.ip import IPPROTO_FRAGMENT, IPv6Header, internet_checksum, walk_ipv6

from .packets import (
    A4,
    A6,
    B4,
    B6,
    budget,
    ipv4_packets,
    ipv4_tcp,
    ipv6_packets,
    ipv6_tcp,
    route_ipv6,
)
from .sa_factory import sa_pair
from .test_roundtrip import AH_PROPOSALS, ESP_PROPOSALS

TRANSFORMS = [(p, Protocol.ESP) for p in ESP_PROPOSALS] + [(p, Protocol.AH) for p in AH_PROPOSALS]


def _ids(t: tuple[str, Protocol]) -> str:
    return f"{t[1].name.lower()}-{t[0]}"


def _has_fragment_header(packet: bytes) -> bool:
    return any(h.protocol == IPPROTO_FRAGMENT for h in walk_ipv6(packet).headers)


# ---------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("transform", TRANSFORMS, ids=_ids)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@budget(6)
@given(data=st.data(), esn=st.booleans(), udp=st.booleans())
def test_round_trip(
    transform: tuple[str, Protocol], mode: Mode, v6: bool, esn: bool, udp: bool, data: st.DataObject
) -> None:
    proposal, protocol = transform
    udp = udp and protocol is Protocol.ESP
    out, inbound = sa_pair(proposal, protocol, mode=mode, v6=v6, esn=esn, udp=udp)
    fragments = mode is Mode.TUNNEL  # transport mode refuses fragments (RFC 4303 3.3)
    if v6:
        packets = st.lists(ipv6_packets(fragments=fragments), min_size=1, max_size=3)
    else:
        packets = st.lists(ipv4_packets(fragments=fragments), min_size=1, max_size=3)
    for packet in data.draw(packets):
        wire = out.protect(packet)
        if not v6:
            assert internet_checksum(wire[: (wire[0] & 0x0F) * 4]) == 0
        expected = packet
        if mode is Mode.TRANSPORT and v6 and protocol is Protocol.AH:
            # AH covers the routing header as the final receiver sees it: let the
            # routers on the way do their work first.
            wire, expected = route_ipv6(wire), route_ipv6(packet)
        assert inbound.unprotect(wire) == expected


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@budget(20)
@given(data=st.data())
def test_transport_mode_refuses_fragments(v6: bool, data: st.DataObject) -> None:
    out, _ = sa_pair("aes128gcm16", v6=v6)
    if v6:
        packet = data.draw(ipv6_packets(fragments=True))
        fragment = _has_fragment_header(packet)
    else:
        packet = data.draw(ipv4_packets(fragments=True))
        fragment = bool((packet[6] << 8 | packet[7]) & 0x3FFF)
    if fragment:
        with pytest.raises(PolicyViolation):
            out.protect(packet)
        assert out.stats.drops
    else:
        out.protect(packet)


def test_tunnel_mode_tfc_padding_and_dummy_packets() -> None:
    """RFC 4303 2.7: traffic flow confidentiality padding after the inner packet is cut
    off by the inner length; RFC 4303 2.6: a dummy packet (next header 59) is dropped as
    such and counted."""
    for v6 in (False, True):
        out, inbound = sa_pair("aes128gcm16", mode=Mode.TUNNEL, v6=v6)
        assert isinstance(out, EspSA) and isinstance(inbound, EspSA)
        inner = ipv6_tcp(A6, B6, b"tfc") if v6 else ipv4_tcp(A4, B4, b"tfc")
        src, dst = (A6, B6) if v6 else (A4, B4)
        esp = out.seal(41 if v6 else 4, inner + bytes(37))
        assert inbound.decapsulate(esp, src, dst) == inner
        with pytest.raises(DummyPacket):
            inbound.decapsulate(out.seal(59, bytes(20)), src, dst)
        assert inbound.stats.drops == {DropReason.DUMMY: 1}


def test_ah_ipv6_option_mutability() -> None:
    """Hop-by-hop option data marked "may change en route" is not covered by AH's ICV:
    a router may rewrite it. The option type and the data of other options are."""
    # next header TCP, 16 octets; option 0x3e "MUT!" at 42, option 0x1e "IMM!" at 48, PadN.
    hop_by_hop = b"\x06\x01" + b"\x3e\x04MUT!" + b"\x1e\x04IMM!" + b"\x01\x00"
    segment = ipv6_tcp(A6, B6, b"opt")[40:]
    packet = IPv6Header(A6, B6, 0).pack(len(hop_by_hop) + len(segment)) + hop_by_hop + segment
    out, inbound = sa_pair("sha256", Protocol.AH, v6=True)
    keys = (inbound.config.encryption_key, inbound.config.integrity_key)
    wire = out.protect(packet)
    mutable = 40 + 4  # first octet of "MUT!"
    for index, passes in ((mutable, True), (mutable + 3, True), (mutable + 6, False),
                          (42, False), (48, False)):  # fmt: skip
        _, inbound = sa_pair("sha256", Protocol.AH, v6=True, keys=keys)
        received = bytearray(wire)
        received[index] ^= 0x10
        if passes:
            expected = bytearray(packet)
            expected[index] ^= 0x10
            assert inbound.unprotect(bytes(received)) == bytes(expected)
        else:
            with pytest.raises(AuthenticationFailed):
                inbound.unprotect(bytes(received))


# ---------------------------------------------------------------------------
# Bit flips

# (byte offset, bit mask) of the bits that no ICV covers, per layout; everything else
# must be dropped. IPv4: TOS, identification, flags/fragment, TTL, checksum, addresses
# for ESP (the outer header is outside ESP); TOS, flags/fragment, TTL, checksum for AH
# (RFC 4302 3.3.3.1.1.1). IPv6: traffic class, flow label, hop limit (+ addresses for
# ESP). ESP in UDP: the ports and the checksum (the kernel checks it, not ESP).
_V4_ESP = {1: 0xFF, 4: 0xFF, 5: 0xFF, 6: 0xFF, 7: 0xFF, 8: 0xFF, 10: 0xFF, 11: 0xFF}
_V4_ESP |= {i: 0xFF for i in range(12, 20)}
_V6_ESP = {0: 0x0F, 1: 0xFF, 2: 0xFF, 3: 0xFF, 7: 0xFF} | {i: 0xFF for i in range(8, 40)}
_V4_AH = {1: 0xFF, 6: 0xFF, 7: 0xFF, 8: 0xFF, 10: 0xFF, 11: 0xFF}
_V6_AH = {0: 0x0F, 1: 0xFF, 2: 0xFF, 3: 0xFF, 7: 0xFF}


def _uncovered(protocol: Protocol, v6: bool, udp: bool) -> dict[int, int]:
    if protocol is Protocol.AH:
        return _V6_AH if v6 else _V4_AH
    bits = dict(_V6_ESP if v6 else _V4_ESP)
    if udp:
        base = 40 if v6 else 20
        bits |= {base + i: 0xFF for i in (0, 1, 2, 3, 6, 7)}
    return bits


def _check_flip_result(
    result: bytes, packet: bytes, received: bytes, index: int, mode: Mode, v6: bool
) -> None:
    """A flip of an uncovered bit went through: the result must be the original packet,
    with the flipped header field where the packet's own header is the outer one."""
    header_len = 40 if v6 else 20
    if mode is Mode.TUNNEL or index >= header_len:
        assert result == packet
        return
    expected = bytearray(packet)
    expected[index] = received[index]
    if v6:
        assert result == bytes(expected)
        return
    # IPv4: compare all but the checksum, and the checksum must stay exactly as valid
    # (or invalid) as the one received: hostsec updates it incrementally (RFC 1624)
    # and never turns a damaged header into a valid one.
    masked = bytes(expected[:10]) + bytes(expected[12:])
    assert result[:10] + result[12:] == masked
    assert (internet_checksum(result[:20]) == 0) == (internet_checksum(received[:20]) == 0)


def _flip_all(
    proposal: str, protocol: Protocol, mode: Mode, v6: bool, esn: bool, udp: bool, packet: bytes
) -> None:
    out, inbound = sa_pair(proposal, protocol, mode=mode, v6=v6, esn=esn, udp=udp)
    keys = (inbound.config.encryption_key, inbound.config.integrity_key)
    wire = out.protect(packet)
    uncovered = _uncovered(protocol, v6, udp)
    for bit in range(len(wire) * 8):
        index, mask = bit >> 3, 1 << (bit & 7)
        received = bytearray(wire)
        received[index] ^= mask
        before = sum(inbound.stats.drops.values())
        try:
            result = inbound.unprotect(bytes(received))
        except PacketDropped as exc:
            assert exc.detail and exc.reason
            assert sum(inbound.stats.drops.values()) == before + 1  # counted, once
            continue
        assert uncovered.get(index, 0) & mask, (
            f"flip of bit {bit} (octet {index}) of {wire.hex()} passed"
        )
        _check_flip_result(result, packet, bytes(received), index, mode, v6)
        # The accepted packet moved the replay window: start again with a fresh SA.
        _, inbound = sa_pair(proposal, protocol, mode=mode, v6=v6, esn=esn, udp=udp, keys=keys)
    assert inbound.unprotect(wire) == packet  # and the untouched packet still passes


# One transform of each construction for the whole grid of layouts ...
FLIP_GRID = [
    ("aes128gcm16", Protocol.ESP),
    ("aes128-sha256", Protocol.ESP),
    ("chacha20poly1305", Protocol.ESP),
    ("null-sha1", Protocol.ESP),
    ("sha256", Protocol.AH),
]


_GRID = [
    pytest.param(t, mode, v6, esn, udp, id=f"{_ids(t)}-{mode.value}-v{6 if v6 else 4}"
                 f"-{'esn' if esn else 'noesn'}-{'udp' if udp else 'raw'}")
    for t in FLIP_GRID
    for mode in Mode
    for v6 in (False, True)
    for esn in (False, True)
    for udp in (False, True)
    if not (udp and t[1] is Protocol.AH)  # AH is never UDP-encapsulated (RFC 3948)
]  # fmt: skip


@pytest.mark.parametrize(("transform", "mode", "v6", "esn", "udp"), _GRID)
@budget(1, shrink=False)
@given(data=st.data())
def test_every_bit_flip_grid(
    transform: tuple[str, Protocol], mode: Mode, v6: bool, esn: bool, udp: bool, data: st.DataObject
) -> None:
    proposal, protocol = transform
    packet = data.draw(ipv6_packets(max_payload=40, extensions=False) if v6 else
                       ipv4_packets(max_payload=40, options=False))  # fmt: skip
    _flip_all(proposal, protocol, mode, v6, esn, udp, packet)


# ... and every transform, with the layout drawn at random.
@pytest.mark.parametrize("transform", TRANSFORMS, ids=_ids)
@budget(2, shrink=False)
@given(data=st.data(), mode=st.sampled_from(list(Mode)), v6=st.booleans(), esn=st.booleans())
def test_every_bit_flip_every_transform(
    transform: tuple[str, Protocol], mode: Mode, v6: bool, esn: bool, data: st.DataObject
) -> None:
    proposal, protocol = transform
    udp = protocol is Protocol.ESP and data.draw(st.booleans())
    packet = data.draw(ipv6_packets(max_payload=24, extensions=False) if v6 else
                       ipv4_packets(max_payload=24, options=False))  # fmt: skip
    _flip_all(proposal, protocol, mode, v6, esn, udp, packet)
