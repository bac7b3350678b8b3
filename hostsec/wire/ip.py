"""IPv4 and IPv6 headers, the Internet checksum and its incremental update.

RFC 791 (IPv4), RFC 8200 (IPv6), RFC 1071 (checksum), RFC 1624 (incremental update).
Pure functions over bytes: every length is checked before it is used, and every
failure is a :class:`MalformedPacket` carrying a reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hostsec.wire.errors import MalformedPacket

# IANA protocol numbers used throughout hostsec.
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_MH = 135

#: IPv6 extension headers that use the generic (next header, length in 8-octet units) form.
IPV6_GENERIC_EXTENSIONS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_MH})

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
IPV4_FLAG_DF = 0x4000
IPV4_FLAG_MF = 0x2000
IPV4_FRAGMENT_OFFSET_MASK = 0x1FFF

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_U16 = struct.Struct("!H")
_PORTS = struct.Struct("!HH")


# ---------------------------------------------------------------------------
# Checksums (RFC 1071, RFC 1624)


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit one's complement sum of ``data`` (odd lengths padded with zero), folded.

    Reading the data as one big-endian integer, 2^16 = 1 (mod 2^16 - 1), so the sum of the
    16-bit words is that integer modulo 0xFFFF (RFC 1071 section 2); 0xFFFF and 0 are the
    two zeros of one's complement, and a non-zero input sums to the "negative" one.
    """
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    value = int.from_bytes(data, "big")
    total = (value % 0xFFFF) + initial
    total = (total & 0xFFFF) + (total >> 16)
    if total == 0 and (value or initial):
        return 0xFFFF
    return total


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (RFC 1071): the complement of the sum."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def checksum_adjust(checksum: int, old: bytes, new: bytes) -> int:
    """Update ``checksum`` after the even-length field ``old`` became ``new`` (RFC 1624 eq. 3).

    HC' = ~(~HC + ~m + m'), computed over all 16-bit words of the field.
    """
    if len(old) != len(new) or len(old) & 1:
        raise ValueError("checksum_adjust needs two fields of the same even length")
    total = (~checksum & 0xFFFF) + ones_complement_sum(new) + (~ones_complement_sum(old) & 0xFFFF)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum_adjust_word(checksum: int, old: int, new: int) -> int:
    """Update ``checksum`` after one 16-bit word changed from ``old`` to ``new`` (RFC 1624)."""
    total = (~checksum & 0xFFFF) + (~old & 0xFFFF) + new
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """The one's complement sum of the TCP/UDP pseudo-header (RFC 793, RFC 8200 8.1)."""
    if len(src) == 4:
        head = src + dst + bytes((0, protocol)) + _U16.pack(length)
    else:
        head = src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, protocol))
    return ones_complement_sum(head)


def transport_checksum(src: bytes, dst: bytes, protocol: int, segment: bytes) -> int:
    """The TCP/UDP/ICMPv6 checksum of ``segment`` (its own checksum field must be zero)."""
    return internet_checksum(segment, pseudo_header_sum(src, dst, protocol, len(segment)))


# ---------------------------------------------------------------------------
# IPv4 (RFC 791)


@dataclass(frozen=True, slots=True)
class IPv4Header:
    src: bytes
    dst: bytes
    protocol: int
    total_length: int = 0
    tos: int = 0
    identification: int = 0
    flags_fragment: int = IPV4_FLAG_DF
    ttl: int = 64
    checksum: int = 0
    options: bytes = b""

    @property
    def header_length(self) -> int:
        return IPV4_HEADER_LEN + len(self.options)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> IPv4Header:
        ihl = ipv4_header_length(data)
        (_vihl, tos, total, ident, frag, ttl, proto, csum, src, dst) = _V4.unpack_from(data)
        return cls(
            src=src,
            dst=dst,
            protocol=proto,
            total_length=total,
            tos=tos,
            identification=ident,
            flags_fragment=frag,
            ttl=ttl,
            checksum=csum,
            options=bytes(data[IPV4_HEADER_LEN:ihl]),
        )

    def pack(self, payload_length: int | None = None) -> bytes:
        """The header with a computed checksum; ``payload_length`` sets the total length."""
        if len(self.options) % 4 or len(self.options) > 40:
            raise ValueError("IPv4 options must be a multiple of 4 octets, at most 40")
        hlen = self.header_length
        total = self.total_length if payload_length is None else hlen + payload_length
        head = (
            _V4.pack(
                0x40 | (hlen >> 2),
                self.tos,
                total,
                self.identification,
                self.flags_fragment,
                self.ttl,
                self.protocol,
                0,
                self.src,
                self.dst,
            )
            + self.options
        )
        csum = internet_checksum(head)
        return head[:10] + _U16.pack(csum) + head[12:]


def ipv4_header_length(data: bytes | bytearray | memoryview) -> int:
    """Validate an IPv4 header and return its length (IHL * 4)."""
    if len(data) < IPV4_HEADER_LEN:
        raise MalformedPacket("IPv4 header truncated")
    first = data[0]
    if first >> 4 != 4:
        raise MalformedPacket("not an IPv4 packet")
    ihl = (first & 0x0F) * 4
    if ihl < IPV4_HEADER_LEN or ihl > len(data):
        raise MalformedPacket("bad IPv4 header length")
    return ihl


def ipv4_total_length(data: bytes | bytearray | memoryview) -> int:
    """The total length field, checked against the header and the bytes at hand."""
    ihl = ipv4_header_length(data)
    total = (data[2] << 8) | data[3]
    if total < ihl or total > len(data):
        raise MalformedPacket("bad IPv4 total length")
    return total


# ---------------------------------------------------------------------------
# IPv6 (RFC 8200)


@dataclass(frozen=True, slots=True)
class IPv6Header:
    src: bytes
    dst: bytes
    next_header: int
    payload_length: int = 0
    traffic_class: int = 0
    flow_label: int = 0
    hop_limit: int = 64

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> IPv6Header:
        if len(data) < IPV6_HEADER_LEN:
            raise MalformedPacket("IPv6 header truncated")
        (vtf, plen, nh, hlim, src, dst) = _V6.unpack_from(data)
        if vtf >> 28 != 6:
            raise MalformedPacket("not an IPv6 packet")
        return cls(
            src=src,
            dst=dst,
            next_header=nh,
            payload_length=plen,
            traffic_class=(vtf >> 20) & 0xFF,
            flow_label=vtf & 0xFFFFF,
            hop_limit=hlim,
        )

    def pack(self, payload_length: int | None = None) -> bytes:
        plen = self.payload_length if payload_length is None else payload_length
        vtf = (6 << 28) | (self.traffic_class << 20) | self.flow_label
        return _V6.pack(vtf, plen, self.next_header, self.hop_limit, self.src, self.dst)


def ipv6_payload_end(data: bytes | bytearray | memoryview) -> int:
    """Validate an IPv6 header and return the end of its payload (40 + payload length)."""
    if len(data) < IPV6_HEADER_LEN:
        raise MalformedPacket("IPv6 header truncated")
    if data[0] >> 4 != 6:
        raise MalformedPacket("not an IPv6 packet")
    end = IPV6_HEADER_LEN + ((data[4] << 8) | data[5])
    if end > len(data):
        raise MalformedPacket("bad IPv6 payload length")
    if end == IPV6_HEADER_LEN and len(data) > IPV6_HEADER_LEN:
        # Payload length 0 means a jumbogram (RFC 2675): not for IPsec here.
        raise MalformedPacket("IPv6 jumbograms are not supported")
    return end


@dataclass(frozen=True, slots=True)
class ExtensionHeader:
    """One IPv6 extension header as found by :func:`walk_ipv6`."""

    protocol: int  # its own type (the previous header's next header value)
    offset: int  # where it starts in the packet
    length: int  # its length in octets


@dataclass(frozen=True, slots=True)
class IPv6Layout:
    """Where things are in an IPv6 packet (RFC 8200 section 4)."""

    headers: tuple[ExtensionHeader, ...] = field(default_factory=tuple)
    upper_protocol: int = IPPROTO_NONE  # first header that is not an extension we walked
    upper_offset: int = IPV6_HEADER_LEN
    next_header_offset: int = 6  # the byte that holds ``upper_protocol``
    end: int = IPV6_HEADER_LEN


def walk_ipv6(
    data: bytes | bytearray | memoryview, stop_at: frozenset[int] = frozenset()
) -> IPv6Layout:
    """Walk the extension headers of an IPv6 packet.

    Stops at the first header that is not an extension header, or at one whose type is in
    ``stop_at`` (for example ESP or AH). Every length is checked against the payload length.
    """
    end = ipv6_payload_end(data)
    nh = data[6]
    nh_offset = 6
    offset = IPV6_HEADER_LEN
    headers: list[ExtensionHeader] = []
    while nh not in stop_at:
        if nh in IPV6_GENERIC_EXTENSIONS:
            if offset + 2 > end:
                raise MalformedPacket("IPv6 extension header truncated")
            length = (data[offset + 1] + 1) * 8
        elif nh == IPPROTO_FRAGMENT:
            length = 8
        elif nh == IPPROTO_AH:
            if offset + 2 > end:
                raise MalformedPacket("AH header truncated")
            length = (data[offset + 1] + 2) * 4
        else:
            break
        if offset + length > end:
            raise MalformedPacket("IPv6 extension header overruns the packet")
        headers.append(ExtensionHeader(nh, offset, length))
        if len(headers) > 16:
            raise MalformedPacket("too many IPv6 extension headers")
        nh_offset = offset
        nh = data[offset]
        offset += length
    return IPv6Layout(tuple(headers), nh, offset, nh_offset, end)


# ---------------------------------------------------------------------------
# Flows: what a selector looks at


@dataclass(frozen=True, slots=True)
class FlowKey:
    """The selector fields of a packet (RFC 4301 4.4.1.1): addresses, protocol, ports.

    For ICMP and ICMPv6 the "ports" are the message type and code, as IKEv2 traffic
    selectors carry them (RFC 4301 4.4.1.3): ``src_port`` = type, ``dst_port`` = code.
    Ports are ``None`` when the packet is a non-first fragment or the protocol has none.
    """

    src: bytes
    dst: bytes
    protocol: int
    src_port: int | None
    dst_port: int | None


_PORTED = frozenset({IPPROTO_TCP, IPPROTO_UDP, 132, 136})  # TCP, UDP, SCTP, UDP-Lite


def _ports(
    data: bytes | bytearray | memoryview, offset: int, end: int, proto: int
) -> tuple[int | None, int | None]:
    if proto in _PORTED:
        if offset + 4 > end:
            raise MalformedPacket("transport header truncated")
        sport, dport = _PORTS.unpack_from(data, offset)
        return sport, dport
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if offset + 2 > end:
            raise MalformedPacket("ICMP header truncated")
        return data[offset], data[offset + 1]
    return None, None


def flow_key(data: bytes | bytearray | memoryview) -> FlowKey:
    """Extract the selector fields of an IPv4 or IPv6 packet."""
    if not data:
        raise MalformedPacket("empty packet")
    version = data[0] >> 4
    if version == 4:
        ihl = ipv4_header_length(data)
        end = ipv4_total_length(data)
        proto = data[9]
        src = bytes(data[12:16])
        dst = bytes(data[16:20])
        frag = ((data[6] << 8) | data[7]) & IPV4_FRAGMENT_OFFSET_MASK
        if frag:
            return FlowKey(src, dst, proto, None, None)
        sport, dport = _ports(data, ihl, end, proto)
        return FlowKey(src, dst, proto, sport, dport)
    if version == 6:
        layout = walk_ipv6(data)
        src = bytes(data[8:24])
        dst = bytes(data[24:40])
        for header in layout.headers:
            if header.protocol == IPPROTO_FRAGMENT:
                frag_off = ((data[header.offset + 2] << 8) | data[header.offset + 3]) & 0xFFF8
                if frag_off:
                    return FlowKey(src, dst, layout.upper_protocol, None, None)
        sport, dport = _ports(data, layout.upper_offset, layout.end, layout.upper_protocol)
        return FlowKey(src, dst, layout.upper_protocol, sport, dport)
    raise MalformedPacket("not an IP packet")
