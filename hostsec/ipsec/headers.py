"""IP header work for the two IPsec modes (RFC 4301 5.1.2, RFC 4303 3.1, RFC 4302 3.1).

- Tunnel mode: a fresh outer header per packet from a template (addresses fixed per SA),
  checksum from a precomputed partial sum (RFC 1624 style, no full recomputation).
- Transport mode: the packet's own header with protocol and length rewritten, checksum
  updated incrementally (RFC 1624); for IPv6 the IPsec header goes after the per-hop
  extension headers (RFC 4303 3.1.1, RFC 4302 3.1.1).
"""

from __future__ import annotations

import struct

from hostsec.ipsec.errors import Malformed, PolicyViolation
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ip import (
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ROUTING,
    IPPROTO_UDP,
    IPV4_FLAG_DF,
    IPV4_FLAG_MF,
    IPV4_FRAGMENT_OFFSET_MASK,
    IPV6_HEADER_LEN,
    ipv4_header_length,
    ipv6_payload_end,
    ones_complement_sum,
    walk_ipv6,
)
from hostsec.wire.udpencap import UDP_HEADER, UDP_HEADER_LEN

_V4_TAIL = struct.Struct("!BBHHHBBH")  # the first 12 octets; addresses follow
_V6_HEAD = struct.Struct("!IHBB")  # the first 8 octets; addresses follow
_U16 = struct.Struct("!H")
_V4_REWRITE = struct.Struct("!2sH5sBH")  # an IPv4 header with new length/protocol/checksum

DEFAULT_TTL = 64


class OuterHeader:
    """Builds tunnel-mode outer headers (and the UDP header for RFC 3948) for one SA.

    IPv4: DSCP/ECN copied from the inner packet (RFC 4301 5.1.2.1, RFC 6040 normal mode),
    DF copied from an inner IPv4 packet and set for inner IPv6, identification from the
    sequence number. IPv6: traffic class copied, flow label 0, hop limit 64.
    """

    __slots__ = (
        "_addrs",
        "_udp_ports",
        "dst",
        "partial",
        "protocol",
        "src",
        "ttl",
        "udp",
        "version",
    )

    def __init__(
        self,
        src: bytes,
        dst: bytes,
        protocol: int,
        udp: tuple[int, int] | None = None,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        if len(src) != len(dst) or len(src) not in (4, 16):
            raise ValueError("outer addresses must both be IPv4 or both IPv6")
        self.src = src
        self.dst = dst
        self.version = 4 if len(src) == 4 else 6
        self.udp = udp
        self.ttl = ttl
        self.protocol = IPPROTO_UDP if udp else protocol
        self._addrs = src + dst
        self._udp_ports = UDP_HEADER.pack(udp[0], udp[1], 0, 0)[:4] if udp else b""
        # Sum of the words that never change: version/IHL, TTL/protocol, addresses.
        self.partial = ones_complement_sum(
            bytes((0x45, 0, 0, 0, 0, 0, 0, 0, ttl, self.protocol, 0, 0)) + self._addrs
        )

    @property
    def overhead(self) -> int:
        base = 20 if self.version == 4 else IPV6_HEADER_LEN
        return base + (UDP_HEADER_LEN if self.udp else 0)

    def build(self, payload_len: int, inner: bytes, ident: int) -> bytes:
        """The outer header (IP and, with encapsulation, UDP) for a payload of that length."""
        first = inner[0] if inner else 0x40
        if first >> 4 == 4:
            tos = inner[1]
            df = ((inner[6] << 8) & IPV4_FLAG_DF) if len(inner) > 6 else IPV4_FLAG_DF
        else:
            tos = ((inner[0] & 0x0F) << 4 | inner[1] >> 4) if len(inner) > 1 else 0
            df = IPV4_FLAG_DF
        udp = b""
        if self.udp:
            udp_len = UDP_HEADER_LEN + payload_len
            # IPv4: checksum zero (RFC 3948 3.1.1). IPv6: the full checksum is required.
            udp = self._udp_ports + _U16.pack(udp_len) + b"\x00\x00"
            payload_len = udp_len
        if self.version == 4:
            total = 20 + payload_len
            ident &= 0xFFFF
            s = self.partial + tos + total + ident + df
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            return (
                _V4_TAIL.pack(0x45, tos, total, ident, df, self.ttl, self.protocol, ~s & 0xFFFF)
                + self._addrs
                + udp
            )
        return (
            _V6_HEAD.pack((6 << 28) | (tos << 20), payload_len, self.protocol, self.ttl)
            + self._addrs
            + udp
        )


def udp6_checksum(src: bytes, dst: bytes, udp: bytes) -> bytes:
    """A UDP-over-IPv6 datagram with its checksum filled in (RFC 8200 8.1)."""
    pseudo = src + dst + len(udp).to_bytes(4, "big") + b"\x00\x00\x00\x11"
    csum = ~ones_complement_sum(udp[:6] + b"\x00\x00" + udp[8:], ones_complement_sum(pseudo))
    csum &= 0xFFFF
    return udp[:6] + _U16.pack(csum or 0xFFFF) + udp[8:]


# ---------------------------------------------------------------------------
# Transport mode


def ipv4_split(packet: bytes) -> tuple[int, int]:
    """(header length, total length) of an IPv4 packet that transport mode may carry."""
    try:
        ihl = ipv4_header_length(packet)
    except MalformedPacket as exc:
        raise Malformed(exc.reason) from None
    total = (packet[2] << 8) | packet[3]
    if total < ihl or total > len(packet):
        raise Malformed("bad IPv4 total length")
    frag = (packet[6] << 8) | packet[7]
    if frag & (IPV4_FLAG_MF | IPV4_FRAGMENT_OFFSET_MASK):
        raise PolicyViolation("transport mode does not carry IP fragments (RFC 4303 3.3)")
    return ihl, total


def ipv4_rewrite(packet: bytes, protocol: int, total: int, ihl: int = 20) -> bytes:
    """The header (first ``ihl`` octets) of ``packet`` with a new protocol and total length,
    checksum updated (RFC 1624: HC' = ~(~HC + ~m + m') for both changed words)."""
    header = packet
    ttl = header[8]
    s = (
        (~((header[10] << 8) | header[11]) & 0xFFFF)
        + (~((header[2] << 8) | header[3]) & 0xFFFF)
        + total
        + (~(ttl << 8 | header[9]) & 0xFFFF)
        + (ttl << 8 | protocol)
    )
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return _V4_REWRITE.pack(header[:2], total, header[4:9], protocol, ~s & 0xFFFF) + header[12:ihl]


def ipv6_transport_split(packet: bytes) -> tuple[int, int, int, int]:
    """Where transport-mode IPsec goes in an IPv6 packet (RFC 4303 3.1.1).

    Returns (insert offset, offset of the next-header byte to rewrite, upper protocol,
    payload end). The per-hop headers (hop-by-hop, routing, fragment, and destination
    options that precede a routing header) stay in front; the rest is protected.
    """
    try:
        layout = walk_ipv6(packet)
    except MalformedPacket as exc:
        raise Malformed(exc.reason) from None
    headers = layout.headers
    last = -1
    for i, header in enumerate(headers):
        if header.protocol in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT):
            last = i
        if header.protocol == IPPROTO_FRAGMENT:
            raise PolicyViolation("transport mode does not carry IP fragments (RFC 4303 3.3)")
    if last < 0:
        nh_offset, offset = 6, IPV6_HEADER_LEN
    else:
        h = headers[last]
        nh_offset, offset = h.offset, h.offset + h.length
    # Destination options before the last per-hop header fall into the prefix by position;
    # those after it are end-to-end and get protected.
    return offset, nh_offset, packet[nh_offset], layout.end


def ipv6_rewrite(prefix: bytes, nh_offset: int, protocol: int, payload_len: int) -> bytes:
    """The IPv6 header and per-hop extension headers with a new next header and length."""
    out = bytearray(prefix)
    out[nh_offset] = protocol
    out[4:6] = _U16.pack(payload_len)
    return bytes(out)


def inner_length(payload: bytes, next_header: int) -> int:
    """Length of the inner packet of a tunnel-mode payload (TFC padding may follow)."""
    try:
        if next_header == 4:
            if len(payload) < 20 or payload[0] >> 4 != 4:
                raise Malformed("inner packet is not IPv4")
            total = (payload[2] << 8) | payload[3]
            if total < (payload[0] & 0x0F) * 4 or total > len(payload):
                raise Malformed("bad inner IPv4 total length")
            return total
        if next_header == 41:
            return ipv6_payload_end(payload)
    except MalformedPacket as exc:
        raise Malformed(exc.reason) from None
    raise Malformed(f"tunnel mode payload has next header {next_header}")
