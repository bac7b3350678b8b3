"""UDP encapsulation of ESP and IKE on one port (RFC 3948).

On UDP port 4500 a datagram is one of: a NAT keepalive (the single octet 0xFF, section
2.3), IKE (starts with the four-octet non-ESP marker of zeros, section 2.2), or ESP
(starts with a non-zero SPI, section 2.1).
"""

from __future__ import annotations

import enum
import struct

from hostsec.wire.errors import MalformedPacket

NAT_T_PORT = 4500
IKE_PORT = 500
NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"
UDP_HEADER = struct.Struct("!HHHH")
UDP_HEADER_LEN = UDP_HEADER.size


class Datagram(enum.Enum):
    KEEPALIVE = "keepalive"
    IKE = "ike"
    ESP = "esp"


def classify(payload: bytes | bytearray | memoryview) -> Datagram:
    """What a datagram received on the NAT-T port carries (RFC 3948 section 2)."""
    if len(payload) == 1 and payload[0] == 0xFF:
        return Datagram.KEEPALIVE
    if len(payload) < 4:
        raise MalformedPacket("UDP-encapsulated datagram too short")
    if payload[:4] == NON_ESP_MARKER:
        return Datagram.IKE
    if len(payload) < 8:
        raise MalformedPacket("UDP-encapsulated ESP too short")
    return Datagram.ESP


def udp_header(src_port: int, dst_port: int, payload_length: int) -> bytes:
    """A UDP header with checksum zero, as RFC 3948 3.1.1 allows for ESP in UDP (IPv4).

    For IPv6 a zero UDP checksum is only allowed under RFC 6936's rules; callers sending
    over IPv6 sockets let the kernel fill the checksum in.
    """
    return UDP_HEADER.pack(src_port, dst_port, UDP_HEADER_LEN + payload_length, 0)


def parse_udp_header(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int]:
    """The (source port, destination port, length) of a UDP header, length checked."""
    if len(data) < offset + UDP_HEADER_LEN:
        raise MalformedPacket("UDP header truncated")
    sport, dport, length, _csum = UDP_HEADER.unpack_from(data, offset)
    if length < UDP_HEADER_LEN or offset + length > len(data):
        raise MalformedPacket("bad UDP length")
    return sport, dport, length
