"""Fuzz every wire parser with raw and half-structured bytes: the only exception that may
come out is MalformedPacket, and it carries a reason. Selectors never raise at all."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.wire.ah import AHHeader
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.esp import parse_esp_header, strip_trailer
from hostsec.wire.ip import (
    IPPROTO_AH,
    IPPROTO_ESP,
    IPPROTO_UDP,
    IPv4Header,
    IPv6Header,
    flow_key,
    ipv4_header_length,
    ipv4_total_length,
    ipv6_payload_end,
    walk_ipv6,
)
from hostsec.wire.udpencap import classify, parse_udp_header
from tests.unit.packets import budget

pytestmark = pytest.mark.fuzz

_NEXT = st.sampled_from([0, 4, 6, 17, 41, 43, 44, 50, 51, 58, 59, 60, 135, 255])


@st.composite
def ipv4_like(draw: st.DrawFn) -> bytes:
    """Bytes that get past the first checks of an IPv4 parser now and then."""
    ihl = draw(st.integers(0, 15))
    body = draw(st.binary(max_size=120))
    total = draw(st.one_of(st.just(len(body) + 20), st.integers(0, 0xFFFF)))
    frag = draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001, 0x1FFF]))
    head = struct.pack("!BBHHHBBH", 0x40 | ihl, 0, total, 0, frag, 64, draw(_NEXT), 0)
    return head + draw(st.binary(min_size=8, max_size=8)) + body


@st.composite
def ipv6_like(draw: st.DrawFn) -> bytes:
    """An IPv6 header and a chain of plausible extension headers with random contents."""
    chain = b""
    for _ in range(draw(st.integers(0, 4))):
        units = draw(st.integers(0, 3))
        chain += bytes((draw(_NEXT), units)) + draw(st.binary(min_size=6 + 8 * units,
                                                              max_size=6 + 8 * units))  # fmt: skip
    body = chain + draw(st.binary(max_size=60))
    plen = draw(st.one_of(st.just(len(body)), st.integers(0, 0xFFFF)))
    cut = draw(st.integers(0, len(body)))
    return struct.pack("!IHBB", 6 << 28, plen, draw(_NEXT), 64) + bytes(32) + body[:cut]


RAW = st.one_of(st.binary(max_size=200), ipv4_like(), ipv6_like())

_SELECTORS = Selectors(
    local=(TrafficSelector.from_network("198.51.100.0/24", 6, 23),
           TrafficSelector.from_network("2001:db8::/32")),
    remote=(TrafficSelector.from_network("0.0.0.0/0", 1),
            TrafficSelector.from_network("::/0", 58, (0x8000, 0x80FF))),
)  # fmt: skip

PARSERS: list[tuple[str, Callable[[bytes], object]]] = [
    ("ipv4_header_length", ipv4_header_length),
    ("ipv4_total_length", ipv4_total_length),
    ("IPv4Header.parse", IPv4Header.parse),
    ("IPv6Header.parse", IPv6Header.parse),
    ("ipv6_payload_end", ipv6_payload_end),
    ("walk_ipv6", walk_ipv6),
    ("walk_ipv6 stop ESP/AH/UDP",
     lambda d: walk_ipv6(d, frozenset({IPPROTO_ESP, IPPROTO_AH, IPPROTO_UDP}))),
    ("flow_key", flow_key),
    ("parse_esp_header", parse_esp_header),
    ("strip_trailer", strip_trailer),
    ("strip_trailer unchecked", lambda d: strip_trailer(d, check_padding=False)),
    ("AHHeader.parse", AHHeader.parse),
    ("AHHeader.parse at 20", lambda d: AHHeader.parse(d, 20)),
    ("AHHeader.parse at 40", lambda d: AHHeader.parse(d, 40)),
    ("classify", classify),
    ("parse_udp_header", parse_udp_header),
    ("parse_udp_header at 20", lambda d: parse_udp_header(d, 20)),
]  # fmt: skip


@budget(800)
@given(data=RAW)
def test_wire_parsers(data: bytes) -> None:
    """Every parser sees every input, as bytes, bytearray and memoryview."""
    for view in (data, bytearray(data), memoryview(data)):
        for name, parser in PARSERS:
            try:
                parser(view)  # type: ignore[arg-type]
            except MalformedPacket as exc:
                assert exc.reason and isinstance(exc.reason, str), name
    assert _SELECTORS.match(data, True) in (True, False)
    assert _SELECTORS.match(data, False) in (True, False)
