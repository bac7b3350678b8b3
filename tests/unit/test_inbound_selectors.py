"""The compiled inbound selector checks of esp.py against Selectors.match(inner, True).

RFC 4301 5.2: an inbound packet's inner header must match the SA's selectors. esp.py
compiles the selectors of each SA into closures: ``_inbound_selector_check`` (a whole inner
packet) and ``_inbound_flow_check`` (an IPv4 packet whose protocol, addresses and transport
header the caller already knows: the transport-mode fast paths). Both must give the verdict
of ``Selectors.match(packet, True)`` for every selector set and every packet; and on every
fast path a mismatch must still be dropped and counted as ``selector_mismatch``.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hostsec.ipsec.errors import DropReason, PacketDropped, SelectorMismatch
from hostsec.ipsec.esp import _PORTED, EspSA, _inbound_flow_check, _inbound_selector_check
from hostsec.ipsec.sa import Direction, Mode, UdpEncapsulation
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.ipsec.spd import SPD
from hostsec.wire import ip
from hostsec.wire.ip import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPv4Header, IPv6Header

from .test_fastpath import A, B, Twins, config, forge, trailer

ADDRS = [
    bytes(ipaddress.ip_address(a).packed)
    for a in (
        "0.0.0.0",
        "198.51.100.0",
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.255",
        "198.51.101.0",
        "203.0.113.9",
        "255.255.255.255",
    )
]
# Ports (and ICMP type << 8 | code) around the octet boundaries the compiled checks cut at.
PORTS = [0, 1, 22, 23, 255, 256, 511, 0x1600, 40000, 0xFFFE, 0xFFFF]
PROTOCOLS = [0, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, 58, 132, 136, 50, 255]
V6_LOW, V6_HIGH = bytes(16), b"\xff" * 16


@st.composite
def selector(draw: st.DrawFn) -> TrafficSelector:
    first, last = sorted((draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))))
    protocol = draw(st.sampled_from([0, 0, 0, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 58, 132]))
    if draw(st.integers(0, 9)) == 0:  # an IPv6 selector: never holds an IPv4 address
        return TrafficSelector(V6_LOW, V6_HIGH, protocol, first, last)
    low, high = sorted((draw(st.sampled_from(ADDRS)), draw(st.sampled_from(ADDRS))))
    if draw(st.booleans()):
        first, last = 0, 0xFFFF  # any port, as most selectors are
    return TrafficSelector(low, high, protocol, first, last)


@st.composite
def selectors(draw: st.DrawFn) -> Selectors:
    # One remote and one local selector most of the time: the shape compiled without loops.
    sizes = st.sampled_from([1, 1, 1, 2, 3])
    local = draw(st.lists(selector(), min_size=draw(sizes), max_size=3))
    remote = draw(st.lists(selector(), min_size=draw(sizes), max_size=3))
    return Selectors(tuple(local), tuple(remote))


SHAPES = [
    "plain",
    "plain",
    "plain",
    "later-fragment",
    "first-fragment",
    "options",
    "trailing",  # octets after the total length (the ports may lie there)
    "cut",  # total length beyond the octets at hand
    "short-header",
    "v6",
]


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """IPv4 (and some IPv6) packets with any protocol, addresses, ports and lengths."""
    shape = draw(st.sampled_from(SHAPES))
    protocol = draw(st.sampled_from(PROTOCOLS))
    src, dst = draw(st.sampled_from(ADDRS)), draw(st.sampled_from(ADDRS))
    sport, dport = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
    size = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 8, 8]))  # transport octets
    body = (struct.pack("!HH", sport, dport) + b"\x00\x10\x00\x00")[:size]
    frag = 0
    if shape == "later-fragment":
        frag = draw(st.sampled_from([0x0001, 0x2003, 0x4010, 0x1FFF]))
    elif shape == "first-fragment":
        frag = draw(st.sampled_from([0x2000, 0x4000, 0x6000]))
    options = b"\x01\x01\x01\x00" if shape == "options" else b""
    header = IPv4Header(src, dst, protocol, flags_fragment=frag, options=options)
    if shape == "v6":
        return IPv6Header(bytes(15) + b"\x01", bytes(15) + b"\x02", protocol).pack(size) + body
    if shape == "trailing":
        cut = draw(st.integers(0, size))
        return header.pack(cut) + body
    packet = header.pack(len(body)) + body
    if shape == "cut":
        return packet[: draw(st.integers(0, len(packet) - 1))]
    if shape == "short-header":
        return packet[: draw(st.integers(0, 19))]
    return packet


def flow_fields(packet: bytes) -> tuple[int, bytes, int] | None:
    """(protocol, addresses, total length) when _inbound_flow_check applies: IPv4 without
    options, the total length within the packet and the header, not a later fragment."""
    if len(packet) < 20 or packet[0] != 0x45:
        return None
    total = (packet[2] << 8) | packet[3]
    if total > len(packet) or total < 20 or (packet[6] << 8 | packet[7]) & 0x1FFF:
        return None
    return packet[9], packet[12:20], total


def test_ported_protocols_are_flow_keys() -> None:
    assert _PORTED == ip._PORTED  # the protocols whose ports flow_key reads


@settings(max_examples=600, deadline=None)
@given(selectors(), packets())
def test_compiled_checks_match_selectors(sel: Selectors, packet: bytes) -> None:
    expected = sel.match(packet, True)
    assert _inbound_selector_check(sel)(packet) is expected
    fields = flow_fields(packet)
    if fields is not None:
        protocol, addresses, total = fields
        # As the whole-packet check calls it (offset 20) and as the transport-mode fast
        # paths do (the transport header at offset 0, a trailer after ``end``).
        assert _inbound_flow_check(sel, 20)(protocol, addresses, packet, total) is expected
        data = packet[20:] + b"\x01\x02\x02\x06"
        assert _inbound_flow_check(sel, 0)(protocol, addresses, data, total - 20) is expected


def ts(net: str, protocol: int = 0, ports: tuple[int, int] | int | None = None) -> TrafficSelector:
    return TrafficSelector.from_network(net, protocol, ports)


def span(
    first: str, last: str, protocol: int = 0, ports: tuple[int, int] = (0, 0xFFFF)
) -> TrafficSelector:
    low, high = ipaddress.ip_address(first).packed, ipaddress.ip_address(last).packed
    return TrafficSelector(low, high, protocol, *ports)


def v4(src: str, dst: str, protocol: int, head: bytes, frag: int = 0) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    return IPv4Header(s, d, protocol, flags_fragment=frag).pack(len(head)) + head


def ports(sport: int, dport: int) -> bytes:
    return struct.pack("!HHI", sport, dport, 0)


def test_compiled_checks_edge_cases() -> None:
    """Cases where a shortcut of the one-to-one closure would go wrong; each verdict is
    Selectors.match's (asserted), and the compiled checks must give it."""
    r, loc = "198.51.100.1", "198.51.100.2"
    ranged = Selectors(
        (span("198.51.100.5", "198.51.100.6"),), (span("198.51.100.0", "198.51.100.2"),)
    )
    cases = [
        # source inside its range, source || destination inside the pair's, destination not
        (ranged, v4("198.51.100.1", "198.51.100.9", 6, ports(1, 2)), False),
        (ranged, v4("198.51.100.1", "198.51.100.5", 6, ports(1, 2)), True),
        (ranged, v4("198.51.100.0", "198.51.100.4", 6, ports(1, 2)), False),
        (ranged, v4("198.51.100.2", "198.51.100.7", 6, ports(1, 2)), False),
        # port ranges on both sides: the same for the four port octets
        (
            Selectors((ts(f"{loc}/32", 6, (22, 23)),), (ts(f"{r}/32", 6, (1000, 2000)),)),
            v4(r, loc, 6, ports(1500, 80)),
            False,
        ),
        (
            Selectors((ts(f"{loc}/32", 6, (22, 23)),), (ts(f"{r}/32", 6, (1000, 2000)),)),
            v4(r, loc, 6, ports(1500, 23)),
            True,
        ),
        (
            Selectors((ts(f"{loc}/32", 6, (22, 23)),), (ts(f"{r}/32", 6, 1000),)),
            v4(r, loc, 6, ports(1000, 24)),
            False,
        ),
        (
            Selectors((ts(f"{loc}/32", 6, 22),), (ts(f"{r}/32", 6),)),
            v4(r, loc, 6, ports(9, 22)),
            True,
        ),
        (
            Selectors((ts(f"{loc}/32", 6, 22),), (ts(f"{r}/32", 6),)),
            v4(r, loc, 6, ports(22, 9)),
            False,
        ),
        (
            Selectors((ts(f"{loc}/32", 17),), (ts(f"{r}/32", 17, 53),)),
            v4(r, loc, 17, ports(53, 9)),
            True,
        ),
        (
            Selectors((ts(f"{loc}/32", 17),), (ts(f"{r}/32", 17, 53),)),
            v4(r, loc, 17, ports(9, 53)),
            False,
        ),
        # ICMP: type << 8 | code against the remote side; the local side's ports ignored
        (
            Selectors((ts(f"{loc}/32", 1, 0x0800),), (ts(f"{r}/32", 1, (0x0800, 0x08FF)),)),
            v4(r, loc, 1, b"\x08\x00\x00\x00"),
            True,
        ),
        (
            Selectors((ts(f"{loc}/32", 0, 5),), (ts(f"{r}/32", 0, (0x0800, 0x08FF)),)),
            v4(r, loc, 1, b"\x00\x00\x00\x00"),
            False,
        ),
        (Selectors((ts(f"{loc}/32", 1),), (ts(f"{r}/32", 1),)), v4(r, loc, 1, b"\x08"), False),
        # no ports: only "any port" selectors; a later fragment has none either
        (Selectors((ts(f"{loc}/32", 0, 22),), (ts(f"{r}/32"),)), v4(r, loc, 50, bytes(8)), False),
        (Selectors((ts(f"{loc}/32"),), (ts(f"{r}/32"),)), v4(r, loc, 50, bytes(8)), True),
        (
            Selectors((ts(f"{loc}/32", 6, 22),), (ts(f"{r}/32", 6),)),
            v4(r, loc, 6, ports(9, 22), 0x2001),
            False,
        ),
        # protocols that disagree, and a TCP header too short for its ports
        (Selectors((ts(f"{loc}/32", 6),), (ts(f"{r}/32", 17),)), v4(r, loc, 6, ports(1, 2)), False),
        (
            Selectors((ts(f"{loc}/32", 6),), (ts(f"{r}/32", 17),)),
            v4(r, loc, 17, ports(1, 2)),
            False,
        ),
        (Selectors((ts(f"{loc}/32", 6),), (ts(f"{r}/32", 0),)), v4(r, loc, 17, ports(1, 2)), False),
        (Selectors((ts(f"{loc}/32"),), (ts(f"{r}/32"),)), v4(r, loc, 6, b"\x00\x01\x00"), False),
        # every local address, a range of remote ones
        (
            Selectors((ts("0.0.0.0/0"),), (ts("198.51.100.0/24"),)),
            v4(r, "203.0.113.9", 6, ports(1, 2)),
            True,
        ),
    ]
    for sel, packet, expected in cases:
        assert sel.match(packet, True) is expected, (sel, packet.hex())
        assert _inbound_selector_check(sel)(packet) is expected, (sel, packet.hex())
        fields = flow_fields(packet)
        if fields is not None:
            protocol, addresses, total = fields
            check = _inbound_flow_check(sel, 0)
            assert check(protocol, addresses, packet[20:], total - 20) is expected, (
                sel,
                packet.hex(),
            )


# -- on the fast paths ------------------------------------------------------------------

NAT = (bytes((203, 0, 113, 7)), bytes((203, 0, 113, 8)))
OUTER_ADDRS = [A.packed, B.packed, ADDRS[4], ADDRS[6]]


def inner_for(
    mode: Mode, protocol: int, head: bytes, src: bytes, dst: bytes, frag: int
) -> tuple[int, bytes]:
    """(next header, ESP payload): in tunnel mode a whole IPv4 packet, in transport mode the
    transport header alone (its addresses are the outer ones)."""
    if mode is Mode.TUNNEL:
        return 4, IPv4Header(src, dst, protocol, flags_fragment=frag).pack(len(head)) + head
    return protocol, head


@settings(max_examples=150, deadline=None)
@given(
    selectors(),
    st.sampled_from([Mode.TRANSPORT, Mode.TRANSPORT, Mode.TUNNEL]),
    st.sampled_from(["esp", "udp", "udp-nat"]),
    st.lists(
        st.tuples(
            st.sampled_from(PROTOCOLS),
            st.sampled_from(PORTS),
            st.sampled_from(PORTS),
            st.sampled_from([0, 1, 2, 3, 4, 8, 20]),
            st.sampled_from(OUTER_ADDRS),
            st.sampled_from(OUTER_ADDRS),
            st.sampled_from([0, 0, 0x4000, 0x2000, 0x0003, 0x4010]),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_fast_paths_check_selectors_as_general(
    sel: Selectors,
    mode: Mode,
    encap: str,
    flows: list[tuple[int, int, int, int, bytes, bytes, int]],
) -> None:
    """Random selectors and inner packets through unprotect and decapsulate: the fast path
    and the general method give the same inner packet or the same drop, and count alike."""
    udp = UdpEncapsulation(4500, 4500) if encap != "esp" else None
    nat = NAT if encap == "udp-nat" else None
    out = EspSA(config(mode=mode, direction=Direction.OUTBOUND, encapsulation=udp), 0.0)
    cfg = config(mode=mode, encapsulation=udp, nat_original=nat, selectors=sel)
    unprotect, decapsulate = Twins(cfg), Twins(cfg)
    for seq, (protocol, sport, dport, size, src, dst, frag) in enumerate(flows, 1):
        head = (struct.pack("!HH", sport, dport) + bytes(16))[:size]
        nh, payload = inner_for(mode, protocol, head, src, dst, frag)
        esp = forge(out, seq, payload + trailer(-(len(payload) + 2) % 4, nh))
        wire = esp if udp is None else struct.pack("!HHHH", 4500, 4500, 8 + len(esp), 0) + esp
        outer = IPv4Header(src, dst, 50 if udp is None else 17, flags_fragment=frag)
        unprotect.same("unprotect", outer.pack(len(wire)) + wire)
        decapsulate.same("decapsulate", esp, src, dst)
    unprotect.check_state()
    decapsulate.check_state()


def test_every_fast_path_drops_and_counts_a_mismatch() -> None:
    """One flow's selectors (TCP to local port 22, the remote's address) on each fast path:
    the flow passes, another port, protocol or address is dropped as selector_mismatch."""
    a, b = A.packed, B.packed  # inbound: source A (remote), destination B (local)
    sel = Selectors((ts(f"{B}/32", IPPROTO_TCP, 22),), (ts(f"{A}/32", IPPROTO_TCP),))
    for mode in (Mode.TRANSPORT, Mode.TUNNEL):
        for encap in ("esp", "udp", "udp-nat"):
            udp = UdpEncapsulation(4500, 4500) if encap != "esp" else None
            nat = NAT if encap == "udp-nat" else None
            out = EspSA(config(mode=mode, direction=Direction.OUTBOUND, encapsulation=udp), 0.0)
            sa = EspSA(config(mode=mode, encapsulation=udp, nat_original=nat, selectors=sel), 0.0)
            assert "unprotect" in vars(sa) and "decapsulate" in vars(sa)  # the fast paths
            tcp = ports(40000, 22) + bytes(12)
            flows = [
                (IPPROTO_TCP, tcp, a, b, True),
                (IPPROTO_TCP, ports(40000, 23) + bytes(12), a, b, False),
                (IPPROTO_UDP, ports(40000, 22), a, b, False),
                (IPPROTO_TCP, tcp, b, a, False),
                (IPPROTO_ICMP, b"\x08\x00\x00\x00", a, b, False),
            ]
            seq = 0
            for op in ("unprotect", "decapsulate"):
                for protocol, head, src, dst, passes in flows:
                    seq += 1
                    nh, payload = inner_for(mode, protocol, head, src, dst, 0)
                    esp = forge(out, seq, payload + trailer(-(len(payload) + 2) % 4, nh))
                    before = sa.stats.drops.get(DropReason.SELECTOR_MISMATCH, 0)
                    if op == "unprotect":
                        wire = esp
                        if udp is not None:
                            wire = struct.pack("!HHHH", 4500, 4500, 8 + len(esp), 0) + esp
                        outer = IPv4Header(src, dst, 50 if udp is None else 17)
                        args: tuple[object, ...] = (outer.pack(len(wire)) + wire,)
                    else:
                        args = (esp, src, dst)
                    try:
                        getattr(sa, op)(*args)
                        passed = True
                    except PacketDropped as exc:
                        assert isinstance(exc, SelectorMismatch), (mode, encap, op, exc)
                        passed = False
                    after = sa.stats.drops.get(DropReason.SELECTOR_MISMATCH, 0)
                    assert passed is passes, (mode, encap, op, protocol, src, dst)
                    assert after == before + (not passes)


# ----------------------------------------------------------------------------- IPv6

V6_ADDRS = [
    bytes(ipaddress.ip_address(a).packed)
    for a in ("::", "2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::ff", "2001:db8:0:1::")
]
V6_ADDRS.append(b"\xff" * 16)
# Next headers: the ported ones, others, and extension headers (which the direct
# comparison must leave to Selectors.match).
V6_NEXT = [IPPROTO_TCP, IPPROTO_UDP, 132, 136, 58, 50, 0, 43, 44, 60, 59]


@st.composite
def v6_selector(draw: st.DrawFn) -> TrafficSelector:
    low, high = sorted((draw(st.sampled_from(V6_ADDRS)), draw(st.sampled_from(V6_ADDRS))))
    first, last = sorted((draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))))
    if draw(st.booleans()):
        first, last = 0, 0xFFFF
    protocol = draw(st.sampled_from([0, 0, IPPROTO_TCP, IPPROTO_UDP, 58, 132]))
    return TrafficSelector(low, high, protocol, first, last)


@st.composite
def v6_packets(draw: st.DrawFn) -> bytes:
    """IPv6 packets around what the direct comparison takes: the payload length exact,
    short, long or past the end; transport headers of 0 to 8 octets; extension headers."""
    src, dst = draw(st.sampled_from(V6_ADDRS)), draw(st.sampled_from(V6_ADDRS))
    nh = draw(st.sampled_from(V6_NEXT))
    body = struct.pack("!HH", draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS)))
    body = (body + draw(st.binary(max_size=12)))[: draw(st.integers(0, 16))]
    length = len(body) + draw(st.sampled_from([0, 0, 0, -1, 1, -4, 40]))
    header = IPv6Header(src, dst, nh).pack(max(0, length) & 0xFFFF)
    return header + body + draw(st.sampled_from([b"", b"", b"tail"]))


@settings(max_examples=800, deadline=None)
@given(
    st.lists(v6_selector(), min_size=1, max_size=3),
    st.lists(v6_selector(), min_size=1, max_size=3),
    v6_packets(),
)
def test_ipv6_inner_packets_are_checked_as_selectors_match(
    local: list[TrafficSelector], remote: list[TrafficSelector], packet: bytes
) -> None:
    sel = Selectors(tuple(local), tuple(remote))
    assert _inbound_selector_check(sel)(packet) == sel.match(packet, True)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(V6_ADDRS),
            st.sampled_from([IPPROTO_TCP, IPPROTO_UDP, 132]),
            st.sampled_from([None, 23, 5201]),
            st.sampled_from([None, 23, 40000]),
        ),
        min_size=1,
        max_size=4,
    ),
    st.data(),
)
def test_spd_ipv6_lookup_is_the_general_lookup(
    flows: list[tuple[bytes, int, int | None, int | None]], data: st.DataObject
) -> None:
    """SPD.lookup's direct IPv6 case gives what its general path (flow_key) gives, for
    packets aimed at the flows (or near them) and any others."""
    remote, protocol, rport, lport = data.draw(st.sampled_from(flows))
    packet = data.draw(v6_packets())
    if data.draw(st.booleans()):  # aimed at a flow: its destination, protocol and ports
        dport = rport if rport is not None else data.draw(st.sampled_from(PORTS))
        sport = lport if lport is not None else data.draw(st.sampled_from(PORTS))
        if data.draw(st.booleans()):
            sport, dport = dport, sport
        packet = (
            packet[:6]
            + bytes((data.draw(st.sampled_from([protocol, protocol, 0, 58])),))
            + packet[7:24]
            + remote
            + struct.pack("!HH", sport, dport)
            + packet[44:]
        )
    spd = SPD()
    local = V6_ADDRS[2]

    def one(address: bytes, protocol: int, port: int | None) -> TrafficSelector:
        first, last = (port, port) if port else (0, 0xFFFF)
        return TrafficSelector(address, address, protocol, first, last)

    for i, (remote, protocol, rport, lport) in enumerate(flows):
        selectors = Selectors((one(local, protocol, lport),), (one(remote, protocol, rport),))
        if f"f{i}" not in spd and not any(e.selectors == selectors for e in spd._entries.values()):
            spd.add(f"f{i}", selectors)
    assert spd.lookup(packet) == spd._lookup_general(packet)
