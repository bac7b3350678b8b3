"""Test packets built with hostsec's own header classes (scapy builds the independent ones)."""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from hostsec.wire.ip import (
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_FLAG_DF,
    IPV4_FLAG_MF,
    IPV6_HEADER_LEN,
    IPv4Header,
    IPv6Header,
    transport_checksum,
)


def tcp_segment(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    head = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    seg = head + payload
    csum = transport_checksum(src, dst, IPPROTO_TCP, seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    csum = transport_checksum(src, dst, IPPROTO_UDP, seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


def ipv4_tcp(src: bytes, dst: bytes, payload: bytes, sport: int = 40000, dport: int = 23) -> bytes:
    seg = tcp_segment(src, dst, sport, dport, payload)
    return IPv4Header(src, dst, IPPROTO_TCP, identification=7).pack(len(seg)) + seg


def ipv6_tcp(src: bytes, dst: bytes, payload: bytes, sport: int = 40000, dport: int = 23) -> bytes:
    seg = tcp_segment(src, dst, sport, dport, payload)
    return IPv6Header(src, dst, IPPROTO_TCP).pack(len(seg)) + seg


def ipv4_udp(src: bytes, dst: bytes, payload: bytes, sport: int = 40000, dport: int = 53) -> bytes:
    seg = udp_datagram(src, dst, sport, dport, payload)
    return IPv4Header(src, dst, IPPROTO_UDP).pack(len(seg)) + seg


# ---------------------------------------------------------------------------
# Random packets for property and fuzz tests (hypothesis strategies)

A4, B4 = bytes((198, 51, 100, 1)), bytes((198, 51, 100, 2))
A6 = bytes.fromhex("20010db8000000000000000000000001")
B6 = bytes.fromhex("20010db8000000000000000000000002")
UPPER_PROTOCOLS = (IPPROTO_TCP, IPPROTO_UDP, 1, 47, 132)  # TCP, UDP, ICMP, GRE, SCTP


def _v4_options(draw: st.DrawFn) -> bytes:
    """NOP, Router Alert (immutable), Record Route (mutable), EOL; at most 40 octets."""
    opts = b""
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["nop", "ra", "rr", "eol"]))
        if kind == "nop":
            option = b"\x01"
        elif kind == "ra":
            option = b"\x94\x04\x00\x00"
        elif kind == "rr":
            n = draw(st.integers(1, 3))
            option = bytes((7, 3 + 4 * n, 4)) + draw(st.binary(min_size=4 * n, max_size=4 * n))
        else:
            option = b"\x00"
        if len(opts) + len(option) > 40:
            break
        opts += option
        if kind == "eol":
            break
    return opts + bytes(-len(opts) % 4)


@st.composite
def ipv4_packets(
    draw: st.DrawFn, max_payload: int = 300, options: bool = True, fragments: bool = False
) -> bytes:
    """A well-formed IPv4 packet with random header fields, options and payload."""
    opts = _v4_options(draw) if options and draw(st.booleans()) else b""
    payload = draw(st.binary(max_size=max_payload))
    frag = draw(st.sampled_from([0, IPV4_FLAG_DF]))
    if fragments and draw(st.booleans()):
        frag = draw(st.sampled_from([IPV4_FLAG_MF, IPV4_FLAG_MF | 1, 3]))
    header = IPv4Header(
        A4,
        B4,
        draw(st.sampled_from(UPPER_PROTOCOLS)),
        tos=draw(st.integers(0, 255)),
        identification=draw(st.integers(0, 0xFFFF)),
        flags_fragment=frag,
        ttl=draw(st.integers(1, 255)),
        options=opts,
    )
    return header.pack(len(payload)) + payload


def _v6_options_header(draw: st.DrawFn, next_header: int) -> bytes:
    """Hop-by-hop or destination options: Pad1/PadN, an option whose data may change en
    route (type 0x3e) and one whose data may not (0x1e), padded to 8 octets."""
    body = b""
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from([0x00, 0x01, 0x3E, 0x1E]))
        if kind == 0:
            body += b"\x00"
        else:
            data = draw(st.binary(max_size=6))
            body += bytes((kind, len(data))) + data
    pad = -(2 + len(body)) % 8
    if pad == 1:
        body += b"\x00"
    elif pad:
        body += bytes((1, pad - 2)) + bytes(pad - 2)
    return bytes((next_header, (2 + len(body)) // 8 - 1)) + body


@st.composite
def ipv6_packets(
    draw: st.DrawFn,
    max_payload: int = 300,
    extensions: bool = True,
    fragments: bool = False,
    routing: bool = True,
) -> bytes:
    """A well-formed IPv6 packet, optionally with extension headers (hop-by-hop first,
    destination options, type 0 routing headers, fragment headers)."""
    kinds: list[int] = []
    if extensions:
        choices = [IPPROTO_DSTOPTS] + ([IPPROTO_ROUTING] if routing else [])
        choices += [IPPROTO_FRAGMENT] if fragments else []
        kinds = draw(st.lists(st.sampled_from(choices), max_size=3))
        if draw(st.booleans()):
            kinds.insert(0, IPPROTO_HOPOPTS)
    upper = draw(st.sampled_from((IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, 47)))
    chain = [*kinds, upper]
    exts = b""
    for i, kind in enumerate(kinds):
        nh = chain[i + 1]
        if kind in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS):
            exts += _v6_options_header(draw, nh)
        elif kind == IPPROTO_ROUTING:
            n = draw(st.integers(0, 2))
            left = draw(st.integers(0, n))
            hops = b"".join(A6[:15] + bytes((0x10 + j,)) for j in range(n))
            exts += bytes((nh, 2 * n, 0, left)) + bytes(4) + hops
        else:
            offset = draw(st.sampled_from([0, 8, 16]))
            exts += bytes((nh, 0)) + struct.pack("!HI", offset | draw(st.integers(0, 1)), 7)
    payload = draw(st.binary(max_size=max_payload))
    header = IPv6Header(
        A6,
        B6,
        chain[0],
        traffic_class=draw(st.integers(0, 255)),
        flow_label=draw(st.integers(0, 0xFFFFF)),
        hop_limit=draw(st.integers(1, 255)),
    )
    return header.pack(len(exts) + len(payload)) + exts + payload


def route_ipv6(packet: bytes) -> bytes:
    """``packet`` as its final destination receives it: every type 0 routing header with
    segments left processed by the routers on the way (RFC 8200 4.4)."""
    out = bytearray(packet)
    nh, offset = out[6], IPV6_HEADER_LEN
    while nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT):
        if nh == IPPROTO_ROUTING:
            n = out[offset + 1] // 2
            while out[offset + 3]:
                a = offset + 8 + 16 * (n - out[offset + 3])
                out[24:40], out[a : a + 16] = out[a : a + 16], out[24:40]
                out[offset + 3] -= 1
        length = 8 if nh == IPPROTO_FRAGMENT else (out[offset + 1] + 1) * 8
        nh, offset = out[offset], offset + length
    return bytes(out)


def budget(max_examples: int, shrink: bool = True) -> settings:
    """Hypothesis settings for CI: a fixed number of examples, derandomized (the same
    examples on every run, so CI time is bounded and failures reproduce), no deadline
    (the first call of a transform pays for its key setup). ``shrink=False`` for tests
    whose every example is expensive: a failure is reported as found, not minimized.
    HOSTSEC_HYPOTHESIS_SCALE multiplies the examples and HOSTSEC_HYPOTHESIS_RANDOM=1
    explores new ones, for longer runs by hand."""
    scale = float(os.environ.get("HOSTSEC_HYPOTHESIS_SCALE", "1"))
    phases = list(Phase) if shrink else [p for p in Phase if p is not Phase.shrink]
    return settings(
        max_examples=max(1, int(max_examples * scale)),
        derandomize=os.environ.get("HOSTSEC_HYPOTHESIS_RANDOM") != "1",
        deadline=None,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
