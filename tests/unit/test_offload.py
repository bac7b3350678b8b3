"""Software TCP segmentation and coalescing at the TUN boundary (hostsec.ipsec.offload).

Checksums are checked independently with scapy (it recomputes them from scratch), and
the byte-exact round trip is the one the data path makes: a TSO super-packet split into
segments, each protected by ESP, unprotected on the other side, merged back into one
super-packet for the TUN device.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from hostsec.ipsec.errors import Malformed
from hostsec.ipsec.offload import (
    TCP_ACK,
    TCP_CWR,
    TCP_FIN,
    TCP_PSH,
    Merged,
    coalesce_tcp,
    complete_checksum,
    segment_tcp,
)
from hostsec.ipsec.sa import Mode
from hostsec.wire.ip import (
    IPv4Header,
    IPv6Header,
    internet_checksum,
    ones_complement_sum,
    pseudo_header_sum,
    transport_checksum,
)

from .packets import ipv4_udp
from .sa_factory import V4_A, V4_B, V6_A, V6_B, sa_pair

A, B = V4_A.packed, V4_B.packed
TIMESTAMPS = bytes((1, 1, 8, 10)) + bytes(range(8))  # NOP NOP TS(val, ecr)


def tcp_header(seq: int, flags: int, ack: int = 0x11223344, window: int = 502) -> bytes:
    """A TCP header with the timestamp option, checksum zero."""
    doff = (20 + len(TIMESTAMPS)) // 4
    return struct.pack("!HHIIBBHHH", 40000, 5201, seq, ack, doff << 4, flags, window, 0, 0) + (
        TIMESTAMPS
    )


def tcp4(
    payload: bytes,
    seq: int = 1000,
    flags: int = TCP_ACK,
    ident: int = 100,
    partial: bool = False,
    **tcp: int,
) -> bytes:
    """IPv4/TCP; ``partial``: the TCP checksum field holds the pseudo-header sum, as a
    kernel hands over a packet whose checksum it left to the device (TSO)."""
    seg = tcp_header(seq, flags, **tcp) + payload
    csum = pseudo_header_sum(A, B, 6, len(seg)) if partial else transport_checksum(A, B, 6, seg)
    seg = seg[:16] + struct.pack("!H", csum) + seg[18:]
    return IPv4Header(A, B, 6, identification=ident).pack(len(seg)) + seg


def tcp6(
    payload: bytes,
    seq: int = 1000,
    flags: int = TCP_ACK,
    partial: bool = True,
    header: dict[str, int] | None = None,
    **tcp: int,
) -> bytes:
    """IPv6/TCP, checksum partial (as a TSO read gives it) unless ``partial`` is False;
    ``header``: IPv6 header fields (traffic_class, flow_label, hop_limit)."""
    src, dst = V6_A.packed, V6_B.packed
    seg = tcp_header(seq, flags, **tcp) + payload
    if partial:
        csum = pseudo_header_sum(src, dst, 6, len(seg))
    else:
        csum = transport_checksum(src, dst, 6, seg)
    seg = seg[:16] + struct.pack("!H", csum) + seg[18:]
    return IPv6Header(src, dst, 6, **(header or {})).pack(len(seg)) + seg


def checksums_ok(packet: bytes) -> bool:
    """scapy's own recomputation agrees with the checksums in ``packet``."""
    if packet[0] >> 4 == 4:
        parsed = IP(packet)
        fresh = parsed.copy()
        del fresh[IP].chksum
        del fresh[TCP].chksum
        rebuilt = IP(bytes(fresh))
        ip_ok = parsed[IP].chksum == rebuilt[IP].chksum
        return bool(ip_ok and parsed[TCP].chksum == rebuilt[TCP].chksum)
    parsed6 = IPv6(packet)
    fresh6 = parsed6.copy()
    del fresh6[TCP].chksum
    return bool(parsed6[TCP].chksum == IPv6(bytes(fresh6))[TCP].chksum)


# ----------------------------------------------------------------------------- segment_tcp


def test_segment_tcp4_splits_like_a_nic() -> None:
    mss = 1000
    payload = os.urandom(mss * 5 + 123)
    flags = TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR
    superpacket = tcp4(payload, seq=0xFFFFF000, flags=flags, ident=0xFFFE, partial=True)
    segments = segment_tcp(superpacket, mss)
    assert len(segments) == 6
    seen = b""
    for i, seg in enumerate(segments):
        parsed = IP(seg)
        assert checksums_ok(seg)
        assert parsed.len == len(seg)
        assert parsed.id == (0xFFFE + i) & 0xFFFF  # wraps
        assert parsed.flags == "DF"
        tcp = parsed[TCP]
        assert tcp.seq == (0xFFFFF000 + i * mss) & 0xFFFFFFFF  # wraps
        assert tcp.ack == 0x11223344 and tcp.window == 502
        assert bytes(tcp.payload) == payload[i * mss : (i + 1) * mss]
        # RFC 3168 6.1.2: CWR only on the first; FIN and PSH only on the last.
        expect = TCP_ACK
        if i == 0:
            expect |= TCP_CWR
        if i == 5:
            expect |= TCP_PSH | TCP_FIN
        assert int(tcp.flags) == expect
        assert seg[20 + 20 : 20 + 32] == TIMESTAMPS
        seen += bytes(tcp.payload)
    assert seen == payload


def test_segment_tcp6() -> None:
    payload = os.urandom(3000)
    segments = segment_tcp(tcp6(payload, flags=TCP_ACK | TCP_PSH), 1400)
    assert [len(s) - 40 - 32 for s in segments] == [1400, 1400, 200]
    for seg in segments:
        assert checksums_ok(seg)
        assert IPv6(seg).plen == len(seg) - 40
    assert b"".join(bytes(IPv6(s)[TCP].payload) for s in segments) == payload
    assert [int(IPv6(s)[TCP].flags) for s in segments] == [TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH]


def test_segment_tcp_one_segment_only_completes_the_checksum() -> None:
    packet = tcp4(b"hello", partial=True)
    [segment] = segment_tcp(packet, 1400)
    assert checksums_ok(segment)
    assert segment == tcp4(b"hello")


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=5000), st.integers(1, 1500), st.integers(0, 2**32 - 1))
def test_segment_tcp_any_sizes(payload: bytes, mss: int, seq: int) -> None:
    segments = segment_tcp(tcp4(payload, seq=seq, partial=True), mss)
    assert len(segments) == -(-len(payload) // mss)
    assert b"".join(s[52:] for s in segments) == payload
    for s in segments:
        assert internet_checksum(s[:20]) == 0
        assert transport_checksum(A, B, 6, s[20:]) == 0  # sums to zero with its checksum


@pytest.mark.parametrize(
    ("packet", "mss"),
    [
        (b"", 1000),
        (tcp4(b"x" * 3000), 0),
        (ipv4_udp(A, B, b"x" * 3000), 1000),  # not TCP
        (tcp4(b"x" * 3000)[:30], 1000),  # truncated
        (b"\x50" + tcp4(b"x" * 3000)[1:], 1000),  # version 5
        # a fragment
        (tcp4(b"x" * 3000)[:6] + b"\x20\x00" + tcp4(b"x" * 3000)[8:], 1000),
        # data offset beyond the packet
        (tcp4(b"")[:32] + b"\xf0" + tcp4(b"")[33:], 10),
    ],
)
def test_segment_tcp_refuses_what_it_cannot_split(packet: bytes, mss: int) -> None:
    with pytest.raises(Malformed):
        segment_tcp(packet, mss)


def test_complete_checksum_tcp_and_udp() -> None:
    packet = tcp4(os.urandom(777), partial=True)
    assert complete_checksum(packet, 20, 16) == tcp4(packet[52:])
    # UDP whose checksum comes out as zero is sent as 0xFFFF (RFC 768).
    body = bytearray(struct.pack("!HHHH", 1, 2, 10, 0) + b"\x00\x00")
    partial = pseudo_header_sum(A, B, 17, len(body))
    # choose the payload so that the complete sum is 0xFFFF (checksum 0)
    rest = (0xFFFF - ones_complement_sum(bytes(body), partial)) % 0xFFFF
    body[8:10] = struct.pack("!H", rest)
    body[6:8] = struct.pack("!H", partial)
    udp = IPv4Header(A, B, 17).pack(len(body)) + bytes(body)
    done = complete_checksum(udp, 20, 6)
    assert done[26:28] == b"\xff\xff"
    with pytest.raises(Malformed):
        complete_checksum(udp, 20, 100)


# ----------------------------------------------------------------------------- coalesce_tcp


def joined(merged: Merged) -> bytes:
    return b"".join(bytes(p) for p in merged.parts)


def segments_of(total: int, mss: int, seq: int = 5000, last_flags: int = TCP_ACK) -> list[bytes]:
    payload = os.urandom(total)
    out = []
    for i, start in enumerate(range(0, total, mss)):
        last = start + mss >= total
        out.append(
            tcp4(
                payload[start : start + mss],
                seq=seq + start,
                flags=last_flags if last else TCP_ACK,
                ident=200 + i,
            )
        )
    return out


def test_coalesce_merges_a_run_into_one_super_packet() -> None:
    segs = segments_of(10 * 1000 + 10, 1000, last_flags=TCP_ACK | TCP_PSH)
    [merged] = coalesce_tcp(segs)
    assert merged.segment_size == 1000
    assert merged.header_len == 52 and merged.checksum_start == 20
    packet = joined(merged)
    assert len(packet) == 52 + 10010
    parsed = IP(packet)
    assert parsed.len == len(packet)
    assert internet_checksum(packet[:20]) == 0  # IPv4 header checksum complete
    assert parsed.id == 200 and parsed[TCP].seq == 5000
    assert int(parsed[TCP].flags) == TCP_ACK | TCP_PSH
    # The TCP checksum is partial: the pseudo-header sum for the merged length...
    assert struct.unpack("!H", packet[36:38])[0] == pseudo_header_sum(A, B, 6, len(packet) - 20)
    # ...which the kernel completes; then it is a valid packet carrying all the data.
    completed = complete_checksum(packet, 20, 16)
    assert checksums_ok(completed)
    assert packet[52:] == b"".join(s[52:] for s in segs)


def test_coalesce_keeps_apart_what_linux_gro_keeps_apart() -> None:
    base = segments_of(3000, 1000)
    other_port = tcp4(b"y" * 1000, seq=8000)
    other_port = other_port[:22] + b"\x14\x52" + other_port[24:]  # dport 5202
    cases = {
        "gap": [base[0], base[2]],
        "different ack": [base[0], tcp4(b"z" * 1000, seq=6000, ack=1)],
        "different window": [base[0], tcp4(b"z" * 1000, seq=6000, window=1)],
        "another connection": [base[0], other_port],
        "larger than the first": [base[0], tcp4(b"z" * 1001, seq=6000)],
        "pure ack": [tcp4(b"", seq=5000), tcp4(b"", seq=5000)],
        "FIN": [base[0], tcp4(b"z" * 1000, seq=6000, flags=TCP_ACK | TCP_FIN)],
        "SYN": [tcp4(b"z" * 1000, seq=5000, flags=0x02), tcp4(b"z" * 1000, seq=6000)],
        "UDP": [ipv4_udp(A, B, b"u" * 1000), ipv4_udp(A, B, b"u" * 1000)],
    }
    for name, packets in cases.items():
        merged = coalesce_tcp(packets)
        assert [m.segment_size for m in merged] == [0] * len(packets), name
        assert [joined(m) for m in merged] == packets, name


def test_coalesce_ends_a_run_at_psh_short_segment_and_limit() -> None:
    a = segments_of(2500, 1000, seq=0)  # 1000, 1000, 500: the short one ends the run
    b = segments_of(2000, 1000, seq=2500)
    merged = coalesce_tcp(a + b)
    assert [(m.segment_size, len(joined(m)) - 52) for m in merged] == [(1000, 2500), (1000, 2000)]
    psh = segments_of(3000, 1000, seq=0, last_flags=TCP_ACK | TCP_PSH)
    merged = coalesce_tcp(psh + segments_of(2000, 1000, seq=3000))
    assert [len(joined(m)) - 52 for m in merged] == [3000, 2000]
    # 64 KB at most: 70 segments of 1000 do not fit one packet
    many = segments_of(70_000, 1000, seq=0)
    merged = coalesce_tcp(many)
    assert all(len(joined(m)) <= 65535 for m in merged)
    assert b"".join(joined(m)[52:] for m in merged) == b"".join(s[52:] for s in many)
    assert len(merged) == 2


def test_coalesce_passes_odd_packets_through_in_order() -> None:
    segs = segments_of(3000, 1000)
    udp = ipv4_udp(A, B, b"dns")
    six = tcp6(b"v6")
    merged = coalesce_tcp([six, *segs[:2], udp, segs[2]])
    assert [m.segment_size for m in merged] == [0, 1000, 0, 0]
    assert joined(merged[0]) == six and joined(merged[2]) == udp and joined(merged[3]) == segs[2]


def segments6_of(total: int, mss: int, seq: int = 5000, last_flags: int = TCP_ACK) -> list[bytes]:
    payload = os.urandom(total)
    return [
        tcp6(
            payload[start : start + mss],
            seq=seq + start,
            flags=last_flags if start + mss >= total else TCP_ACK,
            partial=False,
            header={"traffic_class": 0x28, "flow_label": 0x12345, "hop_limit": 61},
        )
        for start in range(0, total, mss)
    ]


def test_coalesce_merges_an_ipv6_run_into_one_super_packet() -> None:
    segs = segments6_of(10 * 1000 + 10, 1000, last_flags=TCP_ACK | TCP_PSH)
    assert all(checksums_ok(s) for s in segs)
    [merged] = coalesce_tcp(segs)
    assert merged.segment_size == 1000 and merged.ipv6
    assert merged.header_len == 72 and merged.checksum_start == 40
    packet = joined(merged)
    assert len(packet) == 72 + 10010
    parsed = IPv6(packet)
    assert parsed.plen == len(packet) - 40  # RFC 8200 3: the payload length
    assert (parsed.tc, parsed.fl, parsed.hlim) == (0x28, 0x12345, 61)
    assert parsed[TCP].seq == 5000 and int(parsed[TCP].flags) == TCP_ACK | TCP_PSH
    # The TCP checksum is partial: the IPv6 pseudo-header sum for the merged length...
    src, dst = V6_A.packed, V6_B.packed
    assert struct.unpack("!H", packet[56:58])[0] == pseudo_header_sum(src, dst, 6, len(packet) - 40)
    # ...which the kernel completes; then it is a valid packet carrying all the data.
    assert checksums_ok(complete_checksum(packet, 40, 16))
    assert packet[72:] == b"".join(s[72:] for s in segs)
    assert not coalesce_tcp(segments_of(2000, 1000))[0].ipv6


def test_coalesce_keeps_apart_ipv6_what_linux_gro_keeps_apart() -> None:
    base = segments6_of(3000, 1000)
    head = {"traffic_class": 0x28, "flow_label": 0x12345, "hop_limit": 61}

    def like(**change: int) -> bytes:
        return tcp6(b"z" * 1000, seq=6000, partial=False, header={**head, **change})

    hop_by_hop = base[1][:6] + b"\x00" + base[1][7:]  # next header 0: an extension header
    cases = {
        "gap": [base[0], base[2]],
        "another flow label": [base[0], like(flow_label=7)],
        "another traffic class": [base[0], like(traffic_class=0)],
        "another hop limit": [base[0], like(hop_limit=64)],
        "an extension header": [base[0], hop_by_hop],
        "octets past the payload length": [base[0], base[1] + b"pad"],
        "an IPv4 segment next": [base[0], tcp4(b"z" * 1000, seq=6000)],
        "an IPv6 segment after IPv4": [tcp4(b"z" * 1000, seq=5000), base[1]],
        "different ack": [base[0], tcp6(b"z" * 1000, seq=6000, partial=False, header=head, ack=1)],
        "FIN": [base[0], tcp6(b"z" * 1000, seq=6000, flags=TCP_ACK | TCP_FIN, header=head)],
    }
    for name, packets in cases.items():
        merged = coalesce_tcp(packets)
        assert [m.segment_size for m in merged] == [0] * len(packets), name
        assert [joined(m) for m in merged] == packets, name


@pytest.mark.parametrize(("mode", "udp"), [(Mode.TRANSPORT, False), (Mode.TUNNEL, True)])
def test_tso_super_packet_through_esp_and_back_byte_exact(mode: Mode, udp: bool) -> None:
    """What the data path does with a 64 KB TSO read: split, protect each segment, send;
    receive, unprotect each, merge, write. The merged packet is the super-packet again."""
    mss = 1348
    payload = os.urandom(48 * mss)
    superpacket = tcp4(payload, seq=77, flags=TCP_ACK | TCP_PSH, ident=9, partial=True)
    out_sa, in_sa = sa_pair("aes128gcm16", mode=mode, udp=udp, window=128)
    segments = segment_tcp(superpacket, mss)
    if udp:
        wire = [out_sa.encapsulate(s) for s in segments]  # type: ignore[union-attr]
        inner = [in_sa.decapsulate(w, A, B) for w in wire]  # type: ignore[union-attr]
    else:
        wire = [out_sa.protect(s) for s in segments]
        inner = [in_sa.unprotect(w) for w in wire]
    assert all(w[-2000:].find(payload[:32]) == -1 for w in wire)  # encrypted on the wire
    assert inner == segments
    [merged] = coalesce_tcp(inner)
    assert merged.segment_size == mss
    assert joined(merged) == superpacket
