"""TCP segmentation and coalescing in software, at the TUN boundary of the data path.

A TUN device with a virtio-net header (Linux ``IFF_VNET_HDR``) moves TCP in super-packets:
the kernel may hand the reader one packet of up to 64 KB with a segment size instead of
many MSS-sized ones (TSO/GSO, when the reader accepts it), and it takes such a super-packet
from the writer and treats it like a packet that NIC receive offload (GRO) assembled. The
kernel boundary costs the same per system call whatever the size, so this is where the
data path saves most (see PERFORMANCE.md). ESP itself still protects one MSS-sized
segment at a time: every segment on the wire is an ordinary packet with complete
checksums, so any peer can take it.

Outbound, :func:`segment_tcp` splits a super-packet into those segments as a NIC would
(RFC 9293 3.1 header per segment; sequence numbers advance by the payload, FIN and PSH
only on the last segment, CWR only on the first, RFC 3168 6.1.2; IPv4 identification
incremented per segment); :func:`complete_checksum` finishes a checksum the kernel left
partial (the pseudo-header sum is already in the field).

Inbound, :func:`coalesce_tcp` merges consecutive in-order segments of one TCP connection
(decrypted, their ICV, replay window and selectors checked one by one before they get
here) into one super-packet, under the rules Linux GRO applies (same addresses, ports,
acknowledgment number, window, options, TOS, TTL, DF; only ACK and a final PSH; equal
segment sizes but the last). The merged TCP checksum is left partial (pseudo-header sum,
marked "needs checksum" for the kernel): the segments' own checksums are not verified
again, which RFC 3948 3.1.2 allows after ESP has authenticated the data; the IPv4 header
checksum is complete.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from hostsec.ipsec.errors import Malformed
from hostsec.wire.ip import (
    IPPROTO_TCP,
    IPV4_HEADER_LEN,
    IPV6_HEADER_LEN,
    ones_complement_sum,
)

TCP_FIN = 0x01
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_CWR = 0x80
MAX_IP_PACKET = 65535

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_V4_FIXED = struct.Struct("!BBHHHBBH")  # the first 12 octets of an IPv4 header
_V6_FIXED = struct.Struct("!IHBB")  # the first 8 octets of an IPv6 header
# IPv4 (no options) + TCP, the fields coalescing compares: version/IHL and TOS, total
# length, flags/fragment offset with TTL and protocol, addresses and ports, sequence
# number, acknowledgment number with data offset, flags and window, TCP options; one
# layout per TCP data offset (5 to 15 words).
_KEYS = [struct.Struct(f"!2sH2x4s2x12sI8s4x{4 * extra}s") for extra in range(11)]
# IPv6 + TCP (no extension header), the same seven fields: version, traffic class and flow
# label; payload length; next header and hop limit; addresses and ports; then as above.
_KEYS6 = [struct.Struct(f"!4sH2s36sI8s4x{4 * extra}s") for extra in range(11)]


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# ----------------------------------------------------------------------------- outbound


def complete_checksum(packet: bytes, start: int, offset: int) -> bytes:
    """``packet`` with the checksum at ``start + offset`` completed over ``packet[start:]``
    (the field holds the pseudo-header sum, as a kernel leaves a partial checksum)."""
    where = start + offset
    if start < 0 or offset < 0 or where + 2 > len(packet):
        raise Malformed("partial checksum outside the packet")
    checksum = ~ones_complement_sum(packet[start:]) & 0xFFFF
    if checksum == 0 and offset == 6:  # UDP: zero means "no checksum" (RFC 768)
        checksum = 0xFFFF
    return packet[:where] + _U16.pack(checksum) + packet[where + 2 :]


def segment_tcp(packet: bytes, mss: int) -> list[bytes]:
    """The TCP segments of super-packet ``packet`` (IPv4 or IPv6, TCP right after the IP
    header), each carrying at most ``mss`` payload octets, with complete checksums."""
    if mss <= 0:
        raise Malformed("segment size must be positive")
    if not packet:
        raise Malformed("empty packet")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < IPV4_HEADER_LEN or len(packet) < ihl + 20:
            raise Malformed("TCP/IPv4 super-packet truncated")
        if packet[9] != IPPROTO_TCP:
            raise Malformed("segmentation is for TCP")
        if packet[6] & 0x3F or packet[7]:
            raise Malformed("a fragment cannot be segmented")
        total = (packet[2] << 8) | packet[3]
        if total not in (0, len(packet)):  # (0: a kernel may leave it for > 64 KB)
            raise Malformed("bad IPv4 total length")
        src, dst = packet[12:16], packet[16:20]
    elif version == 6:
        ihl = IPV6_HEADER_LEN
        if len(packet) < ihl + 20:
            raise Malformed("TCP/IPv6 super-packet truncated")
        if packet[6] != IPPROTO_TCP:
            raise Malformed("segmentation is for TCP right after the IPv6 header")
        src, dst = packet[8:24], packet[24:40]
    else:
        raise Malformed("not an IP packet")
    doff = (packet[ihl + 12] >> 4) * 4
    hlen = ihl + doff
    if doff < 20 or hlen > len(packet):
        raise Malformed("bad TCP data offset")
    size = len(packet)
    if size - hlen <= mss:  # one segment: only the checksum to finish
        return [_single_segment(packet, ihl, src, dst)]

    flags = packet[ihl + 13]
    seq0 = _U32.unpack_from(packet, ihl + 4)[0]
    tcp = packet[ihl:hlen]
    # One's complement sums that stay the same in every segment: the addresses of the
    # pseudo-header plus its protocol, and the TCP header without sequence number,
    # checksum and the per-segment flags.
    static_flags = flags & ~(TCP_FIN | TCP_PSH | TCP_CWR)
    tcp_base = tcp[:4] + b"\x00\x00\x00\x00" + tcp[8:13] + bytes((static_flags,)) + tcp[14:16]
    tcp_base += b"\x00\x00" + tcp[18:]
    base = ones_complement_sum(src + dst) + IPPROTO_TCP + ones_complement_sum(tcp_base)
    head_a, head_b = tcp[:4], tcp[8:13]
    tail = tcp[14:16]
    options = tcp[18:]
    segments: list[bytes] = []
    append = segments.append
    if version == 4:
        first, tos, _total, ident, frag, ttl, proto, _csum = _V4_FIXED.unpack_from(packet)
        ip_options = packet[IPV4_HEADER_LEN:ihl]
        ip_base = (
            (first << 8 | tos)
            + frag
            + (ttl << 8 | proto)
            + ones_complement_sum(src + dst)
            + (ones_complement_sum(ip_options) if ip_options else 0)
        )
    else:
        word0, _plen, nh, hop = _V6_FIXED.unpack_from(packet)
        addrs = packet[8:40]
    last_start = hlen + ((size - hlen - 1) // mss) * mss
    for index, start in enumerate(range(hlen, size, mss)):
        chunk = packet[start : start + mss]
        seq = (seq0 + start - hlen) & 0xFFFFFFFF
        seg_flags = static_flags
        if start == last_start:
            seg_flags |= flags & (TCP_FIN | TCP_PSH)
        if index == 0:
            seg_flags |= flags & TCP_CWR
        tcp_len = doff + len(chunk)
        # the flags octet is the low octet of its word: the extra bits add as they are
        s = base + tcp_len + (seq >> 16) + (seq & 0xFFFF) + (seg_flags - static_flags)
        checksum = ~_fold(s + ones_complement_sum(chunk)) & 0xFFFF
        tcp_head = (
            head_a
            + _U32.pack(seq)
            + head_b
            + bytes((seg_flags,))
            + tail
            + _U16.pack(checksum)
            + options
        )
        if version == 4:
            seg_total = ihl + tcp_len
            seg_ident = (ident + index) & 0xFFFF
            ip_sum = ~_fold(ip_base + seg_total + seg_ident) & 0xFFFF
            ip_head = (
                _V4_FIXED.pack(first, tos, seg_total, seg_ident, frag, ttl, proto, ip_sum)
                + src
                + dst
                + ip_options
            )
        else:
            ip_head = _V6_FIXED.pack(word0, tcp_len, nh, hop) + addrs
        append(ip_head + tcp_head + chunk)
    return segments


def _single_segment(packet: bytes, ihl: int, src: bytes, dst: bytes) -> bytes:
    """A super-packet that is one segment: its TCP checksum computed in full."""
    tcp = packet[ihl:]
    zeroed = tcp[:16] + b"\x00\x00" + tcp[18:]
    total = ones_complement_sum(src + dst) + IPPROTO_TCP + len(tcp) + ones_complement_sum(zeroed)
    checksum = ~_fold(total) & 0xFFFF
    return packet[: ihl + 16] + _U16.pack(checksum) + packet[ihl + 18 :]


# ----------------------------------------------------------------------------- inbound


class Merged(NamedTuple):
    """One TUN write: ``parts`` concatenated. With ``segment_size`` 0 it is one packet as
    it came; otherwise a TCP super-packet of segments of ``segment_size`` payload octets
    (the last may be shorter) whose IP and TCP headers take ``header_len`` octets, TCP
    checksum left partial at ``checksum_start`` + 16."""

    segment_size: int
    header_len: int
    checksum_start: int
    parts: list[bytes | memoryview]

    @property
    def ipv6(self) -> bool:
        """A TCP/IPv6 super-packet (coalesce_tcp merges IPv4 only without options, so
        the TCP header of a merged packet starts at 40 exactly when it is IPv6)."""
        return self.checksum_start == IPV6_HEADER_LEN


def coalesce_tcp(packets: Sequence[bytes], limit: int = MAX_IP_PACKET) -> list[Merged]:
    """Merge runs of consecutive in-order TCP segments of one connection in ``packets``
    (IPv4 without options, or IPv6 with TCP right after its header) into super-packets of
    at most ``limit`` octets; everything else passes as it is, in order."""
    out: list[Merged] = []
    append = out.append
    group: list[bytes] = []
    # The run being built: the fields every segment must share with its first (IPv4
    # version/IHL and TOS, or IPv6 version, traffic class and flow label; DF, TTL and
    # protocol, or next header and hop limit; addresses and ports; acknowledgment number,
    # data offset, flags and window; TCP options), the segment size, the next sequence
    # number, the size so far, the header length and the IP length field's offset from
    # the packet length (0: IPv4 total length; 40: IPv6 payload length).
    k_vt = k_mid = k_flow = k_ack = k_ack_psh = k_opts = b""
    mss = next_seq = size = hlen = k_base = 0
    unpack = _KEYS[0].unpack_from
    for packet in packets:
        n = len(packet)
        if group and n > hlen:
            # A packet of the other family fails the first-field comparison (its version).
            vt, total, mid, flow, seq, ackwin, opts = unpack(packet)
            payload = n - hlen
            if (
                seq == next_seq
                and flow == k_flow
                and total + k_base == n
                and vt == k_vt
                and mid == k_mid
                and opts == k_opts
                and payload <= mss
                and size + payload <= limit
            ):
                if ackwin == k_ack:
                    group.append(packet)
                    size += payload
                    next_seq = (seq + payload) & 0xFFFFFFFF
                    if payload < mss:  # a short segment ends the run
                        append(_merge(group, mss, size, hlen, k_base))
                        group = []
                    continue
                if ackwin == k_ack_psh:  # PSH ends the run
                    group.append(packet)
                    append(_merge(group, mss, size + payload, hlen, k_base))
                    group = []
                    continue
        if group:
            append(_merge(group, mss, size, hlen, k_base))
            group = []
        # Can this packet start a run? IPv4 without options, TCP, DF or nothing in the
        # fragment field, the exact total length; or IPv6 with TCP as its next header and
        # the exact payload length; data, flags ACK (PSH would end it).
        if n > 60 and packet[0] >> 4 == 6 and packet[6] == IPPROTO_TCP:
            ip_len, keys, k_base = IPV6_HEADER_LEN, _KEYS6, IPV6_HEADER_LEN
            if ((packet[4] << 8) | packet[5]) + IPV6_HEADER_LEN != n:
                append(Merged(0, 0, 0, [packet]))
                continue
        elif n > 40 and packet[0] == 0x45 and packet[9] == IPPROTO_TCP:
            ip_len, keys, k_base = IPV4_HEADER_LEN, _KEYS, 0
            if ((packet[2] << 8) | packet[3]) != n or packet[6] & 0xBF or packet[7]:
                append(Merged(0, 0, 0, [packet]))
                continue
        else:
            append(Merged(0, 0, 0, [packet]))
            continue
        doff = packet[ip_len + 12] >> 4
        hlen = ip_len + doff * 4
        payload = n - hlen
        if packet[ip_len + 13] != TCP_ACK or doff < 5 or payload <= 0:
            append(Merged(0, 0, 0, [packet]))
            continue
        unpack = keys[doff - 5].unpack_from
        k_vt, _total, k_mid, k_flow, seq, k_ack, k_opts = unpack(packet)
        k_ack_psh = k_ack[:5] + bytes((TCP_ACK | TCP_PSH,)) + k_ack[6:]
        group = [packet]
        mss = payload
        size = n
        next_seq = (seq + payload) & 0xFFFFFFFF
    if group:
        append(_merge(group, mss, size, hlen, k_base))
    return out


def _merge(group: list[bytes], mss: int, size: int, hlen: int, ipv6: int) -> Merged:
    """The super-packet of ``group`` (``size`` octets); ``ipv6``: 40 for IPv6, 0 for IPv4."""
    first = group[0]
    if len(group) == 1:
        return Merged(0, 0, 0, [first])
    if ipv6:
        # IPv6 header: the new payload length (RFC 8200 3).
        ip_len, addresses = IPV6_HEADER_LEN, first[8:40]
        ip_head = first[:4] + _U16.pack(size - ip_len) + first[6:40]
    else:
        # IPv4 header: new total length, checksum recomputed (RFC 791 3.1).
        ip_len, addresses = IPV4_HEADER_LEN, first[12:20]
        head = first[:2] + _U16.pack(size) + first[4:10] + b"\x00\x00" + first[12:20]
        ip_head = head[:10] + _U16.pack(~ones_complement_sum(head) & 0xFFFF) + head[12:]
    # TCP: the last segment's flags (PSH), checksum field = the pseudo-header sum (partial;
    # RFC 793 3.1, RFC 8200 8.1: addresses, protocol, TCP length).
    pseudo = _fold(ones_complement_sum(addresses) + IPPROTO_TCP + size - ip_len)
    flags = ip_len + 13
    header = (
        ip_head
        + first[ip_len:flags]
        + bytes((group[-1][flags],))
        + first[flags + 1 : ip_len + 16]
        + _U16.pack(pseudo)
        + first[ip_len + 18 : hlen]
    )
    parts: list[bytes | memoryview] = [header]
    parts += [memoryview(p)[hlen:] for p in group]
    return Merged(mss, hlen, ip_len, parts)
