"""Test packets built with hostsec's own header classes (scapy builds the independent ones)."""

from __future__ import annotations

import struct

from hostsec.wire.ip import IPPROTO_TCP, IPPROTO_UDP, IPv4Header, IPv6Header, transport_checksum


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
