"""Traffic Selectors (RFC 7296 3.13): TS_IPV4_ADDR_RANGE and TS_IPV6_ADDR_RANGE.

The wire form of a selector is kept as :class:`TSAddressRange`, with the same fields as
:class:`hostsec.wire.selectors.TrafficSelector`: ``TSAddressRange.from_selector(ts)`` and
``r.to_selector()`` convert. For ICMP the ports carry type and code (3.13.1). The OPAQUE
port range (start 65535, end 0) and an empty address range round-trip here, but
``to_selector`` refuses them with ``ValueError`` (no ``TrafficSelector`` holds them).
Selectors of other types (TS_FC_ADDR_RANGE, TS_SECLABEL, ...) are kept opaque as
:class:`UnknownTrafficSelector`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2._codec import Buffer, check_range, need, u16
from hostsec.wire.ikev2.constants import TSType
from hostsec.wire.selectors import TrafficSelector

#: TS Type, IP Protocol ID, Selector Length, Start Port, End Port.
TS_HEADER = struct.Struct("!BBHHH")
_TS_LEN = {TSType.TS_IPV4_ADDR_RANGE: 8 + 2 * 4, TSType.TS_IPV6_ADDR_RANGE: 8 + 2 * 16}
OPAQUE_PORTS = (0xFFFF, 0)


@dataclass(frozen=True, slots=True)
class TSAddressRange:
    """TS_IPV4_ADDR_RANGE (4-octet addresses) or TS_IPV6_ADDR_RANGE (16-octet)."""

    start_addr: bytes
    end_addr: bytes
    protocol: int = 0
    start_port: int = 0
    end_port: int = 0xFFFF

    def __post_init__(self) -> None:
        if len(self.start_addr) not in (4, 16) or len(self.end_addr) != len(self.start_addr):
            raise ValueError("selector addresses must both be IPv4 or both IPv6")
        check_range(self.protocol, 8, "IP protocol ID")
        check_range(self.start_port, 16, "start port")
        check_range(self.end_port, 16, "end port")

    @property
    def ts_type(self) -> int:
        if len(self.start_addr) == 4:
            return TSType.TS_IPV4_ADDR_RANGE
        return TSType.TS_IPV6_ADDR_RANGE

    @property
    def opaque(self) -> bool:
        """Ports are OPAQUE (3.13.1): the port is unknown, e.g. non-first fragments."""
        return (self.start_port, self.end_port) == OPAQUE_PORTS

    @classmethod
    def from_selector(cls, ts: TrafficSelector) -> TSAddressRange:
        return cls(ts.start_addr, ts.end_addr, ts.protocol, ts.start_port, ts.end_port)

    def to_selector(self) -> TrafficSelector:
        """The selector; ValueError for an empty address range or OPAQUE ports."""
        return TrafficSelector(
            self.start_addr, self.end_addr, self.protocol, self.start_port, self.end_port
        )

    def encode(self) -> bytes:
        length = 8 + 2 * len(self.start_addr)
        head = TS_HEADER.pack(self.ts_type, self.protocol, length, self.start_port, self.end_port)
        return head + self.start_addr + self.end_addr


@dataclass(frozen=True, slots=True)
class UnknownTrafficSelector:
    """A selector of a TS Type this codec does not read: type, second octet, the rest."""

    ts_type: int
    second_octet: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.ts_type, 8, "TS type")
        check_range(self.second_octet, 8, "TS second octet")
        check_range(len(self.data) + 4, 16, "selector length")
        if self.ts_type in _TS_LEN:
            raise ValueError("address range selectors are TSAddressRange")

    def encode(self) -> bytes:
        return struct.pack("!BBH", self.ts_type, self.second_octet, len(self.data) + 4) + self.data


TrafficSelectorEntry = TSAddressRange | UnknownTrafficSelector


def encode_selectors(selectors: tuple[TrafficSelectorEntry, ...]) -> bytes:
    """Number of TSs, RESERVED, then the selectors (the body of TSi/TSr)."""
    check_range(len(selectors), 8, "number of TSs")
    return bytes((len(selectors), 0, 0, 0)) + b"".join(ts.encode() for ts in selectors)


def decode_selectors(body: Buffer) -> tuple[TrafficSelectorEntry, ...]:
    need(len(body), 4, "TS payload")
    count = body[0]
    selectors: list[TrafficSelectorEntry] = []
    offset = 4
    end = len(body)
    while offset < end:
        need(end - offset, 4, "traffic selector header")
        ts_type, second, length = body[offset], body[offset + 1], u16(body, offset + 2)
        if length < 4 or offset + length > end:
            raise MalformedPacket(f"bad traffic selector length {length}")
        if ts_type in _TS_LEN:
            if length != _TS_LEN[TSType(ts_type)]:
                raise MalformedPacket(f"TS type {ts_type} with length {length}")
            _t, proto, _l, start_port, end_port = TS_HEADER.unpack_from(body, offset)
            half = (length - 8) // 2
            start = offset + 8
            selectors.append(
                TSAddressRange(
                    bytes(body[start : start + half]),
                    bytes(body[start + half : start + 2 * half]),
                    proto,
                    start_port,
                    end_port,
                )
            )
        else:
            selectors.append(
                UnknownTrafficSelector(ts_type, second, bytes(body[offset + 4 : offset + length]))
            )
        offset += length
    if len(selectors) != count:
        raise MalformedPacket(f"TS payload announces {count} selectors but holds {len(selectors)}")
    return tuple(selectors)
