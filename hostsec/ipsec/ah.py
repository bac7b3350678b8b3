"""AH: protect and unprotect in transport and tunnel mode, IPv4 and IPv6 (RFC 4302).

The ICV covers the whole packet with the mutable fields zeroed (RFC 4302 3.3.3.1):
IPv4 TOS, flags, fragment offset, TTL, checksum and mutable options; IPv6 traffic class,
flow label, hop limit, and option data marked "may change en route" in hop-by-hop and
destination options. A routing header is mutable but predictable: the sender computes the
ICV over the packet as the receiver will see it. With ESN the high 32 bits of the
sequence number are appended for the ICV (RFC 4302 2.5.1, 3.3.2.1).
"""

from __future__ import annotations

import struct

from hostsec.crypto.integ import make_mac
from hostsec.crypto.proposals import Protocol
from hostsec.crypto.transforms import INTEGRITY
from hostsec.ipsec.errors import (
    AuthenticationFailed,
    Expired,
    Malformed,
    PacketDropped,
    SelectorMismatch,
)
from hostsec.ipsec.headers import (
    OuterHeader,
    inner_length,
    ipv4_rewrite,
    ipv4_split,
    ipv6_rewrite,
    ipv6_transport_split,
)
from hostsec.ipsec.replay import ReplayWindow
from hostsec.ipsec.sa import Mode, SAConfig, SecurityAssociation
from hostsec.wire.ah import AH_FIXED, AH_FIXED_LEN, ah_icv_padding
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ip import (
    IPPROTO_AH,
    IPPROTO_DSTOPTS,
    IPPROTO_HOPOPTS,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_ROUTING,
    IPV6_HEADER_LEN,
    ipv4_header_length,
    ipv4_total_length,
    walk_ipv6,
)

#: IPv4 options that are immutable and so covered by the ICV (RFC 4302 Appendix A1).
_IMMUTABLE_V4_OPTIONS = frozenset({0, 1, 130, 133, 134, 148, 149})
_STOP_AH = frozenset({IPPROTO_AH})
_LOW32 = 0xFFFFFFFF
_U32 = struct.Struct("!I")


def _zero_v4(header: bytes) -> bytes:
    """An IPv4 header with its mutable fields zeroed (RFC 4302 3.3.3.1.1)."""
    # version/IHL, total length, identification, protocol and addresses stay.
    zeroed = header[0:1] + b"\x00" + header[2:6] + b"\x00\x00\x00" + header[9:10] + b"\x00\x00"
    zeroed += header[12:20]
    if len(header) > 20:
        zeroed += _zero_v4_options(header[20:])
    return zeroed


def _zero_v4_options(options: bytes) -> bytes:
    out = bytearray(options)
    i = 0
    while i < len(out):
        kind = out[i]
        if kind == 0:  # end of option list: the rest is padding
            break
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= len(out) or out[i + 1] < 2 or i + out[i + 1] > len(out):
            raise Malformed("bad IPv4 option length")
        length = out[i + 1]
        if kind not in _IMMUTABLE_V4_OPTIONS:
            out[i : i + length] = bytes(length)
        i += length
    return bytes(out)


def _zero_v6(packet: bytearray, ah_offset: int, sending: bool) -> None:
    """Zero the mutable parts of an IPv6 header and the extension headers before AH."""
    packet[0] &= 0xF0  # keep the version; zero the traffic class ...
    packet[1] = 0  # ... and the flow label
    packet[2] = 0
    packet[3] = 0
    packet[7] = 0  # hop limit
    nh = packet[6]
    offset = IPV6_HEADER_LEN
    while offset < ah_offset:
        length = (packet[offset + 1] + 1) * 8
        if nh in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS):
            _zero_v6_options(packet, offset + 2, offset + length)
        elif nh == IPPROTO_ROUTING and sending:
            _predict_routing(packet, offset, length)
        nh = packet[offset]
        offset += length


def _zero_v6_options(packet: bytearray, start: int, end: int) -> None:
    i = start
    while i < end:
        kind = packet[i]
        if kind == 0:  # Pad1
            i += 1
            continue
        if i + 1 >= end or i + 2 + packet[i + 1] > end:
            raise Malformed("bad IPv6 option length")
        length = packet[i + 1]
        if kind & 0x20:  # RFC 8200 4.2: option data may change en route
            packet[i + 2 : i + 2 + length] = bytes(length)
        i += 2 + length


def _predict_routing(packet: bytearray, offset: int, length: int) -> None:
    """Rewrite a type 0/2 routing header and the destination as the receiver will see them."""
    rtype = packet[offset + 2]
    left = packet[offset + 3]
    if left == 0:
        return
    if rtype not in (0, 2):
        raise Malformed(f"AH cannot predict routing header type {rtype}")
    n = (length - 8) // 16
    if left > n:
        raise Malformed("routing header segments left exceeds its addresses")
    addrs = [bytes(packet[offset + 8 + 16 * i : offset + 24 + 16 * i]) for i in range(n)]
    final = addrs[-1]
    # RFC 8200 4.4: each hop swaps the destination with address[n - left]; the first
    # n - left addresses were visited already and stay. The receiver sees: destination =
    # last address, the remaining list shifted by one behind the current destination.
    first = n - left
    visited = [bytes(packet[24:40]), *addrs[first:-1]]
    packet[24:40] = final
    for i, addr in enumerate(visited, start=first):
        packet[offset + 8 + 16 * i : offset + 24 + 16 * i] = addr
    packet[offset + 3] = 0


class AhSA(SecurityAssociation):
    """One AH SA. Outbound :meth:`protect`, inbound :meth:`unprotect`."""

    def __init__(self, config: SAConfig, now: float) -> None:
        super().__init__(config, now)
        if config.protocol is not Protocol.AH or config.integrity is None:
            raise ValueError("not an AH SA")
        mac = make_mac(config.integrity, config.integrity_key)
        self._mac_icv = mac.icv
        self._mac_verify = mac.verify
        self._icv_len = INTEGRITY[config.integrity].icv_len
        self._tunnel = config.mode is Mode.TUNNEL
        self._esn = config.esn
        self._window: ReplayWindow | None = None
        if config.is_inbound:
            if config.replay_window:
                self._window = ReplayWindow(config.replay_window, config.esn)
            elif config.esn:
                raise ValueError("ESN needs the anti-replay window to infer the high bits")
        self._outer = OuterHeader(config.src.packed, config.dst.packed, IPPROTO_AH)
        self._selectors = config.selectors

    def _ah_length(self, ipv6: bool) -> int:
        return AH_FIXED_LEN + self._icv_len + ah_icv_padding(self._icv_len, ipv6)

    def _ah_header(self, next_header: int, length: int, seq: int) -> bytes:
        return AH_FIXED.pack(next_header, length // 4 - 2, 0, self.spi, seq & _LOW32)

    def _seq_tail(self, seq: int) -> bytes:
        return _U32.pack(seq >> 32) if self._esn else b""

    # -- outbound -----------------------------------------------------------------------

    def protect(self, packet: bytes) -> bytes:
        """The complete AH-protected packet."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            out = self._protect(packet, self._tunnel)
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        self._account(len(packet))
        return out

    def protect_transport(self, packet: bytes) -> bytes:
        """AH in transport fashion whatever the SA's mode (the outer SA of a bundle)."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            out = self._protect(packet, False)
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        self._account(len(packet))
        return out

    def _protect(self, packet: bytes, tunnel: bool) -> bytes:
        if not packet or packet[0] >> 4 not in (4, 6):
            raise Malformed("not an IP packet")
        seq = self.next_seq()
        icv_zero = bytes(self._icv_len)
        if tunnel:
            version = self._outer.version
            ah_len = self._ah_length(version == 6)
            nh = IPPROTO_IPIP if packet[0] >> 4 == 4 else IPPROTO_IPV6
            outer = self._outer.build(ah_len + len(packet), packet, seq)
            ah = self._ah_header(nh, ah_len, seq)
            pad = bytes(ah_len - AH_FIXED_LEN - self._icv_len)
            if version == 4:
                icv = self._mac_icv(
                    _zero_v4(outer) + ah + icv_zero + pad + packet + self._seq_tail(seq)
                )
                return outer + ah + icv + pad + packet
            zeroed = bytearray(outer)
            _zero_v6(zeroed, len(outer), True)
            icv = self._mac_icv(bytes(zeroed) + ah + icv_zero + pad + packet + self._seq_tail(seq))
            return outer + ah + icv + pad + packet
        if packet[0] >> 4 == 4:
            ihl, total = ipv4_split(packet)
            ah_len = self._ah_length(False)
            header = ipv4_rewrite(packet, IPPROTO_AH, total + ah_len, ihl)
            ah = self._ah_header(packet[9], ah_len, seq)
            pad = bytes(ah_len - AH_FIXED_LEN - self._icv_len)
            payload = packet[ihl:total]
            icv = self._mac_icv(
                _zero_v4(header) + ah + icv_zero + pad + payload + self._seq_tail(seq)
            )
            return header + ah + icv + pad + payload
        offset, nh_off, upper, end = ipv6_transport_split(packet)
        ah_len = self._ah_length(True)
        prefix = ipv6_rewrite(packet[:offset], nh_off, IPPROTO_AH, end - 40 + ah_len)
        ah = self._ah_header(upper, ah_len, seq)
        pad = bytes(ah_len - AH_FIXED_LEN - self._icv_len)
        payload = packet[offset:end]
        zeroed = bytearray(prefix)
        _zero_v6(zeroed, offset, True)
        icv = self._mac_icv(bytes(zeroed) + ah + icv_zero + pad + payload + self._seq_tail(seq))
        return prefix + ah + icv + pad + payload

    # -- inbound ------------------------------------------------------------------------

    def unprotect(self, packet: bytes) -> bytes:
        """The packet without AH (tunnel mode: the inner packet), after verification."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            out = self._unprotect(packet, self._tunnel)
            if self._selectors is not None and not self._selectors.match(out, True):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        self._account(len(out))
        return out

    def unprotect_transport(self, packet: bytes) -> bytes:
        """Remove AH in transport fashion (the outer SA of a bundle); no selector check."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            out = self._unprotect(packet, False)
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        self._account(len(out))
        return out

    def _verify(self, zeroed_prefix: bytes, ah: bytes, rest: bytes) -> tuple[int, int]:
        """Check replay and ICV of the AH header ``ah``; returns (next header, sequence)."""
        next_header, _plen, _res, _spi, seq_low = AH_FIXED.unpack_from(ah)
        icv_len = self._icv_len
        if len(ah) < AH_FIXED_LEN + icv_len:
            raise Malformed("AH too short for its integrity algorithm")
        window = self._window
        seq = seq_low
        if window is not None:
            if self._esn:
                seq = window.infer(seq_low)
            window.check(seq)
        icv = ah[AH_FIXED_LEN : AH_FIXED_LEN + icv_len]
        data = (
            zeroed_prefix
            + ah[:AH_FIXED_LEN]
            + bytes(icv_len)
            + ah[AH_FIXED_LEN + icv_len :]
            + rest
            + (_U32.pack(seq >> 32) if self._esn else b"")
        )
        if not self._mac_verify(data, icv):
            raise AuthenticationFailed("AH ICV mismatch")
        if window is not None:
            window.update(seq)
        return next_header, seq

    def _unprotect(self, packet: bytes, tunnel: bool) -> bytes:
        if not packet:
            raise Malformed("empty packet")
        try:
            if packet[0] >> 4 == 4:
                ihl = ipv4_header_length(packet)
                end = ipv4_total_length(packet)
                if packet[9] != IPPROTO_AH:
                    raise Malformed("not an AH packet")
                ah_len = _ah_len_at(packet, ihl, end)
                ah = packet[ihl : ihl + ah_len]
                rest = packet[ihl + ah_len : end]
                header = packet[:ihl]
                next_header, _seq = self._verify(_zero_v4(header), ah, rest)
                if tunnel:
                    return _inner(next_header, rest)
                return ipv4_rewrite(header, next_header, end - ah_len, ihl) + rest
            if packet[0] >> 4 == 6:
                layout = walk_ipv6(packet, _STOP_AH)
                if layout.upper_protocol != IPPROTO_AH:
                    raise Malformed("not an AH packet")
                offset = layout.upper_offset
                ah_len = _ah_len_at(packet, offset, layout.end)
                ah = packet[offset : offset + ah_len]
                rest = packet[offset + ah_len : layout.end]
                zeroed = bytearray(packet[:offset])
                _zero_v6(zeroed, offset, False)
                next_header, _seq = self._verify(bytes(zeroed), ah, rest)
                if tunnel:
                    return _inner(next_header, rest)
                prefix = ipv6_rewrite(
                    packet[:offset],
                    layout.next_header_offset,
                    next_header,
                    layout.end - 40 - ah_len,
                )
                return prefix + rest
        except MalformedPacket as exc:
            raise Malformed(exc.reason) from None
        raise Malformed("not an IP packet")


def _ah_len_at(packet: bytes, offset: int, end: int) -> int:
    if end - offset < AH_FIXED_LEN:
        raise Malformed("AH header truncated")
    length = (packet[offset + 1] + 2) * 4
    if length < AH_FIXED_LEN or offset + length > end:
        raise Malformed("bad AH payload length")
    return length


def _inner(next_header: int, payload: bytes) -> bytes:
    if next_header not in (IPPROTO_IPIP, IPPROTO_IPV6):
        raise Malformed(f"tunnel mode payload has next header {next_header}")
    end = inner_length(payload, next_header)
    return payload[:end]
