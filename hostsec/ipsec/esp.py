"""ESP: protect and unprotect in transport and tunnel mode, IPv4 and IPv6, raw or in UDP.

RFC 4303 (ESP), RFC 4106 / 4309 / 4543 / 7634 (combined-mode transforms), RFC 3948 (ESP
in UDP). The per-packet path is written for speed: the transform objects are bound once,
the trailer comes from a table, the outer header from a template, and combined-mode IVs
are the 64-bit sequence number (unique per key, as RFC 4106 3.1 allows) so no random
number is drawn per packet. CBC IVs are random (RFC 3602 2.4 wants them unpredictable).

Inbound order (RFC 4303 3.4): parse, replay check (cheap, before any crypto), ICV
verification and decryption, replay window update, trailer, then the inner packet's
selectors.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from hostsec.crypto.cipher import make_aead, make_cipher
from hostsec.crypto.integ import make_mac
from hostsec.crypto.proposals import Protocol
from hostsec.crypto.transforms import ENCRYPTION, Cipher, IntegId
from hostsec.ipsec.errors import (
    AuthenticationFailed,
    DummyPacket,
    Expired,
    Malformed,
    PacketDropped,
    PolicyViolation,
    SelectorMismatch,
    UnknownSPI,
)
from hostsec.ipsec.headers import (
    DEFAULT_TTL,
    OuterHeader,
    ipv4_rewrite,
    ipv4_split,
    ipv6_rewrite,
    ipv6_transport_split,
    udp6_checksum,
)
from hostsec.ipsec.replay import ReplayWindow
from hostsec.ipsec.sa import Mode, SAConfig, SecurityAssociation
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.esp import ESP_HEADER, ESP_HEADER_LEN, padding
from hostsec.wire.ip import (
    IPPROTO_ESP,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_NONE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_HEADER_LEN,
    IPV6_HEADER_LEN,
    IPv4Header,
    IPv6Header,
    checksum_adjust,
    ipv4_header_length,
    walk_ipv6,
)
from hostsec.wire.udpencap import UDP_HEADER_LEN, udp_header

#: _TRAILERS[pad_length][next_header]: padding 1..n, pad length, next header (RFC 4303 2.4).
_TRAILERS: list[list[bytes]] = [
    [bytes(range(1, pad + 1)) + bytes((pad, nh)) for nh in range(256)] for pad in range(16)
]
_LOW32 = 0xFFFFFFFF
_ESP_PAIR = ESP_HEADER  # SPI, sequence number
_U32 = struct.Struct("!I")
_UDP = struct.Struct("!HHHH")
_V4_ESP = struct.Struct("!BBHHHBBH8sII")  # outer IPv4 header, SPI, sequence number
_V4_UDP_ESP = struct.Struct("!BBHHHBBH8sHHHHII")  # ... with the RFC 3948 UDP header
_V4_ESP_IN = struct.Struct("!BxH5xB10xII")  # version/IHL, total length, protocol, SPI, seq
_INNER_V4 = struct.Struct("!BxH")  # version/IHL, total length
_PADDINGS = [padding(n) for n in range(256)]
_STOP_ESP = frozenset({IPPROTO_ESP, IPPROTO_UDP})

IvSource = Callable[[int, int], bytes]  # (sequence number, IV length) -> IV; for tests


class EspSA(SecurityAssociation):
    """One ESP SA. Outbound: :meth:`protect` / :meth:`encapsulate`. Inbound:
    :meth:`unprotect` / :meth:`decapsulate`."""

    def __init__(self, config: SAConfig, now: float, iv_source: IvSource | None = None) -> None:
        super().__init__(config, now)
        if config.protocol is not Protocol.ESP or config.encryption is None:
            raise ValueError("not an ESP SA")
        algo = ENCRYPTION[config.encryption.id]
        self._aead = algo.aead
        self._spi_bytes = config.spi.to_bytes(4, "big")
        self._esn = config.esn
        self._tunnel = config.mode is Mode.TUNNEL
        self._encap = config.encapsulation
        if self._aead:
            aead = make_aead(config.encryption.id, config.encryption_key)
            self._aead_encrypt: Callable[[bytes, bytes, bytes], bytes] = aead.primitive.encrypt
            self._aead_decrypt: Callable[[bytes, bytes, bytes], bytes] = aead.primitive.decrypt
            self._salt = aead.salt
            self._iv_len = aead.iv_len
            self._icv_len = aead.icv_len
            self._block = aead.block_size
        else:
            cipher = make_cipher(config.encryption.id, config.encryption_key)
            assert config.integrity is not None and config.integrity is not IntegId.NONE
            mac = make_mac(config.integrity, config.integrity_key)
            self._encrypt = cipher.encrypt
            self._decrypt = cipher.decrypt
            self._mac_icv = mac.icv
            self._mac_verify = mac.verify
            self._iv_len = cipher.iv_len
            self._icv_len = mac.icv_len
            self._block = max(4, cipher.block_size)
        self._random_iv = algo.cipher is Cipher.CBC
        self._iv_source = iv_source
        self._min_len = ESP_HEADER_LEN + self._iv_len + 2 + self._icv_len
        self._window: ReplayWindow | None = None
        if config.is_inbound:
            if config.replay_window:
                self._window = ReplayWindow(config.replay_window, config.esn)
            elif config.esn:
                raise ValueError("ESN needs the anti-replay window to infer the high bits")
        udp = (self._encap.src_port, self._encap.dst_port) if self._encap else None
        self._outer = OuterHeader(config.src.packed, config.dst.packed, IPPROTO_ESP, udp)
        self._outer_addrs = config.src.packed + config.dst.packed
        self._selectors = config.selectors
        self._check_padding = config.check_padding
        # The per-packet fast paths: combined-mode transform, counter IV, IPv4 outer header.
        self._fast = (
            self._aead and iv_source is None and not self._random_iv and config.src.version == 4
        )
        self._pad_mask = self._block - 1  # block sizes are powers of two
        self._udp_ports = (self._encap.src_port, self._encap.dst_port) if self._encap else None

    # -- outbound -----------------------------------------------------------------------

    def seal(self, next_header: int, payload: bytes) -> bytes:
        """The ESP packet (SPI .. ICV) carrying ``payload`` of type ``next_header``."""
        seq = self.seq + 1
        if seq >= self._seq_mark:
            seq = self.next_seq()
        else:
            self.seq = seq
        pad = -(len(payload) + 2) % self._block
        if self._iv_source is not None:
            iv = self._iv_source(seq, self._iv_len)
        elif self._random_iv:
            iv = os.urandom(self._iv_len)
        elif self._iv_len:
            iv = seq.to_bytes(8, "big")  # every counter-mode transform here has an 8-octet IV
        else:
            iv = b""  # ENCR_NULL
        header = self._spi_bytes + (seq & _LOW32).to_bytes(4, "big")
        plaintext = payload + _TRAILERS[pad][next_header]
        if self._aead:
            # RFC 4106 5 / RFC 7634 2.1: AAD is SPI || seq (32 bits), or SPI || ESN (64 bits).
            aad = self._spi_bytes + seq.to_bytes(8, "big") if self._esn else header
            return header + iv + self._aead_encrypt(self._salt + iv, plaintext, aad)
        body = header + iv + self._encrypt(iv, plaintext)
        # RFC 4303 2.2.1 / 3.3.2.2: with ESN the high 32 bits follow the packet in the ICV.
        mac_input = body + (seq >> 32).to_bytes(4, "big") if self._esn else body
        return body + self._mac_icv(mac_input)

    def _protect_tunnel4(self, packet: bytes) -> bytes:
        """Tunnel mode, IPv4 outer header, combined-mode transform: the hot path."""
        size = len(packet)
        if size < IPV4_HEADER_LEN:
            raise Malformed("packet too short")
        first = packet[0]
        if first >> 4 == 4:
            next_header, tos, df = IPPROTO_IPIP, packet[1], (packet[6] & 0x40) << 8
        elif first >> 4 == 6:
            next_header, tos, df = IPPROTO_IPV6, (first & 0x0F) << 4 | packet[1] >> 4, 0x4000
        else:
            raise Malformed("not an IP packet")
        seq = self.seq + 1
        if seq >= self._seq_mark:
            seq = self.next_seq()
        else:
            self.seq = seq
        iv = seq.to_bytes(8, "big")
        seq_low = seq & _LOW32
        aad = self._spi_bytes + iv if self._esn else _ESP_PAIR.pack(self.spi, seq_low)
        ciphertext = self._aead_encrypt(
            self._salt + iv, packet + _TRAILERS[-(size + 2) & self._pad_mask][next_header], aad
        )
        ident = seq & 0xFFFF
        ports = self._udp_ports
        if ports is None:
            total = 36 + len(ciphertext)
            s = self._outer.partial + tos + total + ident + df
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            head = _V4_ESP.pack(
                0x45, tos, total, ident, df, DEFAULT_TTL, IPPROTO_ESP, ~s & 0xFFFF,
                self._outer_addrs, self.spi, seq_low,
            )  # fmt: skip
        else:
            total = 44 + len(ciphertext)
            s = self._outer.partial + tos + total + ident + df
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            head = _V4_UDP_ESP.pack(
                0x45, tos, total, ident, df, DEFAULT_TTL, IPPROTO_UDP, ~s & 0xFFFF,
                self._outer_addrs, ports[0], ports[1], total - 20, 0, self.spi, seq_low,
            )  # fmt: skip
        return head + iv + ciphertext

    def _protect_transport4(self, packet: bytes) -> bytes:
        """Transport mode, IPv4 without options, combined-mode transform: the hot path."""
        if len(packet) < IPV4_HEADER_LEN or packet[0] != 0x45:
            return self._protect_general(packet)
        total = (packet[2] << 8) | packet[3]
        if total > len(packet) or total < IPV4_HEADER_LEN:
            raise Malformed("bad IPv4 total length")
        if packet[6] & 0x3F or packet[7]:
            raise PolicyViolation("transport mode does not carry IP fragments (RFC 4303 3.3)")
        seq = self.seq + 1
        if seq >= self._seq_mark:
            seq = self.next_seq()
        else:
            self.seq = seq
        iv = seq.to_bytes(8, "big")
        seq_low = seq & _LOW32
        esp_head = _ESP_PAIR.pack(self.spi, seq_low)
        aad = self._spi_bytes + iv if self._esn else esp_head
        next_header = packet[9]
        payload = packet[IPV4_HEADER_LEN:total] if total != len(packet) else packet[20:]
        ciphertext = self._aead_encrypt(
            self._salt + iv,
            payload + _TRAILERS[-(total - 18) & self._pad_mask][next_header],
            aad,
        )
        ports = self._udp_ports
        new_total = 36 + len(ciphertext) if ports is None else 44 + len(ciphertext)
        protocol = IPPROTO_ESP if ports is None else IPPROTO_UDP
        header = ipv4_rewrite(packet, protocol, new_total)
        if ports is None:
            return header + esp_head + iv + ciphertext
        return (
            header + _UDP.pack(ports[0], ports[1], new_total - 20, 0) + esp_head + iv + ciphertext
        )

    def encapsulate(self, packet: bytes) -> bytes:
        """ESP for ``packet`` without outer IP/UDP headers (for sockets that add them)."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            if self._tunnel:
                esp = self.seal(_tunnel_next_header(packet), packet)
            elif packet and packet[0] >> 4 == 4:
                ihl, total = ipv4_split(packet)
                esp = self.seal(packet[9], packet[ihl:total])
            else:
                offset, _nh_off, upper, end = ipv6_transport_split(packet)
                esp = self.seal(upper, packet[offset:end])
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        self._account(len(packet))
        return esp

    def protect(self, packet: bytes) -> bytes:
        """The complete outer packet: IP header [, UDP header], ESP."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            if not self._fast:
                out = self._protect_general(packet)
            elif self._tunnel:
                out = self._protect_tunnel4(packet)
            else:
                out = self._protect_transport4(packet)
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        st = self.stats
        st.packets += 1
        st.bytes += len(packet)
        if st.bytes >= self._byte_mark or st.packets >= self._packet_mark:
            self._account_slow()
        return out

    def _protect_general(self, packet: bytes) -> bytes:
        """Every transform, mode and address family (no accounting)."""
        if self._tunnel:
            esp = self.seal(_tunnel_next_header(packet), packet)
            outer = self._outer.build(len(esp), packet, self.seq)
            if self._encap and self._outer.version == 6:
                return outer[:IPV6_HEADER_LEN] + udp6_checksum(
                    self._outer.src, self._outer.dst, outer[IPV6_HEADER_LEN:] + esp
                )
            return outer + esp
        if packet and packet[0] >> 4 == 4:
            ihl, total = ipv4_split(packet)
            esp = self.seal(packet[9], packet[ihl:total])
            return self._transport_v4(packet[:ihl], esp)
        offset, nh_off, upper, end = ipv6_transport_split(packet)
        esp = self.seal(upper, packet[offset:end])
        return self._transport_v6(packet, offset, nh_off, esp)

    def _transport_v4(self, header: bytes, esp: bytes) -> bytes:
        if self._encap is None:
            return ipv4_rewrite(header, IPPROTO_ESP, len(header) + len(esp), len(header)) + esp
        udp = udp_header(self._encap.src_port, self._encap.dst_port, len(esp))
        total = len(header) + UDP_HEADER_LEN + len(esp)
        return ipv4_rewrite(header, IPPROTO_UDP, total, len(header)) + udp + esp

    def _transport_v6(self, packet: bytes, offset: int, nh_off: int, esp: bytes) -> bytes:
        if self._encap is None:
            prefix = ipv6_rewrite(packet[:offset], nh_off, IPPROTO_ESP, offset - 40 + len(esp))
            return prefix + esp
        length = UDP_HEADER_LEN + len(esp)
        prefix = ipv6_rewrite(packet[:offset], nh_off, IPPROTO_UDP, offset - 40 + length)
        udp = udp_header(self._encap.src_port, self._encap.dst_port, len(esp)) + esp
        return prefix + udp6_checksum(packet[8:24], packet[24:40], udp)

    # -- inbound ------------------------------------------------------------------------

    def open(self, esp: bytes) -> tuple[int, bytes]:
        """Verify and decrypt one ESP packet: (next header, payload). Raises a drop."""
        next_header, plaintext, end = self._open(esp)
        return next_header, plaintext[:end]

    def _open(self, esp: bytes) -> tuple[int, bytes, int]:
        """(next header, plaintext, end of the payload in the plaintext)."""
        if len(esp) < self._min_len:
            raise Malformed("ESP packet too short for its transform")
        if esp[:4] != self._spi_bytes:
            # With ESN the AAD carries the SA's SPI, not the packet's: check it here.
            raise UnknownSPI("ESP SPI is not this SA's")
        seq = _U32.unpack_from(esp, 4)[0]
        window = self._window
        if window is not None:
            if self._esn:
                seq = window.infer(seq)
            if seq <= window.top:
                window.check(seq)
        iv_end = 8 + self._iv_len
        if self._aead:
            aad = self._spi_bytes + seq.to_bytes(8, "big") if self._esn else esp[:8]
            try:
                plaintext = self._aead_decrypt(self._salt + esp[8:iv_end], esp[iv_end:], aad)
            except InvalidTag:
                raise AuthenticationFailed("ESP ICV mismatch") from None
        else:
            icv_len = self._icv_len
            body = esp[:-icv_len]
            mac_input = body + (seq >> 32).to_bytes(4, "big") if self._esn else body
            if not self._mac_verify(mac_input, esp[-icv_len:]):
                raise AuthenticationFailed("ESP ICV mismatch")
            ciphertext = body[iv_end:]
            if len(ciphertext) % self._block:
                raise Malformed("ESP ciphertext is not a multiple of the block size")
            plaintext = self._decrypt(esp[8:iv_end], ciphertext)
        if window is not None:
            window.update(seq)
        # RFC 4303 2.4 trailer: padding, pad length, next header.
        pad = plaintext[-2]
        end = len(plaintext) - 2 - pad
        if end < 0:
            raise Malformed("ESP pad length exceeds the payload")
        if pad and self._check_padding and plaintext[end : end + pad] != _PADDINGS[pad]:
            raise Malformed("ESP padding is not the default monotonic sequence")
        next_header = plaintext[-1]
        if next_header == IPPROTO_NONE:
            raise DummyPacket("dummy packet (next header 59)")
        return next_header, plaintext, end

    def unprotect(self, packet: bytes) -> bytes:
        """The inner IP packet of a complete received packet (IP [, UDP], ESP)."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            if self._aead and packet[:1] == b"\x45":
                inner = self._unprotect_fast4(packet)
            else:
                inner = self._unprotect(packet)
            if self._selectors is not None and not self._selectors.match(inner, True):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        st = self.stats
        st.packets += 1
        st.bytes += len(inner)
        if st.bytes >= self._byte_mark or st.packets >= self._packet_mark:
            self._account_slow()
        return inner

    def _unprotect_fast4(self, packet: bytes) -> bytes:
        """IPv4 without options, combined-mode transform: the hot path of :meth:`_open`."""
        try:
            _vihl, end, protocol, _spi, seq = _V4_ESP_IN.unpack_from(packet)
        except struct.error:
            raise Malformed("ESP packet truncated") from None
        if end > len(packet):
            raise Malformed("bad IPv4 total length")
        start = IPV4_HEADER_LEN
        if protocol != IPPROTO_ESP or self._encap is not None:
            if protocol != IPPROTO_UDP or self._encap is None:
                raise Malformed("not an ESP packet for this SA")
            start = self._skip_udp(packet, IPV4_HEADER_LEN, end)
            seq = _U32.unpack_from(packet, start + 4)[0]
        if end - start < self._min_len:
            raise Malformed("ESP packet too short for its transform")
        if packet[start : start + 4] != self._spi_bytes:
            raise UnknownSPI("ESP SPI is not this SA's")
        window = self._window
        if window is not None:
            if self._esn:
                seq = window.infer(seq)
            if seq <= window.top:
                window.check(seq)
        iv_end = start + 16
        try:
            plaintext = self._aead_decrypt(
                self._salt + packet[start + 8 : iv_end],
                packet[iv_end:end],
                self._spi_bytes + seq.to_bytes(8, "big")
                if self._esn
                else packet[start : iv_end - 8],
            )
        except InvalidTag:
            raise AuthenticationFailed("ESP ICV mismatch") from None
        if window is not None:
            if seq == window.top + 1:  # in order: slide by one
                window.bitmap = ((window.bitmap << 1) | 1) & window.mask
                window.top = seq
            else:
                window.update(seq)
        pad = plaintext[-2]
        stop = len(plaintext) - 2 - pad
        if pad and (stop < 0 or (self._check_padding and plaintext[stop:-2] != _PADDINGS[pad])):
            raise Malformed("ESP padding is not the default monotonic sequence")
        next_header = plaintext[-1]
        if self._tunnel:
            if next_header == IPPROTO_IPIP and stop >= IPV4_HEADER_LEN:
                first, total = _INNER_V4.unpack_from(plaintext)
                if first == 0x45 and IPV4_HEADER_LEN <= total <= stop:
                    return plaintext[:total]
            if next_header == IPPROTO_NONE:
                raise DummyPacket("dummy packet (next header 59)")
            return _tunnel_inner(next_header, plaintext, stop)
        if next_header == IPPROTO_NONE:
            raise DummyPacket("dummy packet (next header 59)")
        header = ipv4_rewrite(packet, next_header, IPV4_HEADER_LEN + stop)
        if self.config.nat_original is not None and self._encap is not None:
            return _nat_fixup(
                header + plaintext[:stop], IPV4_HEADER_LEN, next_header, self.config.nat_original
            )
        return header + plaintext[:stop]

    def _unprotect(self, packet: bytes) -> bytes:
        size = len(packet)
        if size < IPV4_HEADER_LEN:
            raise Malformed("packet too short")
        first = packet[0]
        if first == 0x45:  # IPv4 without options, the common case
            ihl = IPV4_HEADER_LEN
        elif first >> 4 == 4:
            try:
                ihl = ipv4_header_length(packet)
            except MalformedPacket as exc:
                raise Malformed(exc.reason) from None
        elif first >> 4 == 6:
            return self._unprotect_v6(packet)
        else:
            raise Malformed("not an IP packet")
        end = (packet[2] << 8) | packet[3]
        if end > size or end < ihl:
            raise Malformed("bad IPv4 total length")
        protocol = packet[9]
        if protocol == IPPROTO_ESP and self._encap is None:
            start = ihl
        elif protocol == IPPROTO_UDP and self._encap is not None:
            start = self._skip_udp(packet, ihl, end)
        else:
            raise Malformed("not an ESP packet for this SA")
        next_header, plaintext, stop = self._open(packet[start:end])
        if self._tunnel:
            return _tunnel_inner(next_header, plaintext, stop)
        payload = plaintext[:stop]
        header = ipv4_rewrite(packet, next_header, ihl + stop, ihl)
        if self.config.nat_original is not None and self._encap is not None:
            return _nat_fixup(header + payload, ihl, next_header, self.config.nat_original)
        return header + payload

    def _unprotect_v6(self, packet: bytes) -> bytes:
        try:
            layout = walk_ipv6(packet, _STOP_ESP)
        except MalformedPacket as exc:
            raise Malformed(exc.reason) from None
        start = layout.upper_offset
        if layout.upper_protocol == IPPROTO_ESP and self._encap is None:
            pass
        elif layout.upper_protocol == IPPROTO_UDP and self._encap is not None:
            start = self._skip_udp(packet, start, layout.end)
        else:
            raise Malformed("not an ESP packet for this SA")
        next_header, plaintext, stop = self._open(packet[start : layout.end])
        if self._tunnel:
            return _tunnel_inner(next_header, plaintext, stop)
        offset = layout.upper_offset
        prefix = ipv6_rewrite(
            packet[:offset], layout.next_header_offset, next_header, offset - 40 + stop
        )
        return prefix + plaintext[:stop]

    def _skip_udp(self, packet: bytes, offset: int, end: int) -> int:
        if end - offset < UDP_HEADER_LEN + ESP_HEADER_LEN:
            raise Malformed("UDP-encapsulated ESP truncated")
        length = (packet[offset + 4] << 8) | packet[offset + 5]
        if length != end - offset:
            raise Malformed("bad UDP length")
        return offset + UDP_HEADER_LEN

    def decapsulate(self, esp: bytes, src: bytes, dst: bytes, ttl: int = 64) -> bytes:
        """The inner IP packet of an ESP packet received without its outer IP header (from
        a UDP socket, or a raw IPv6 socket); ``src``/``dst`` are the outer addresses."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            next_header, plaintext, stop = self._open(esp)
            if self._tunnel:
                inner = _tunnel_inner(next_header, plaintext, stop)
            elif len(src) == 4:
                header = IPv4Header(src, dst, next_header, ttl=ttl).pack(stop)
                inner = header + plaintext[:stop]
                if self.config.nat_original is not None and self._encap is not None:
                    inner = _nat_fixup(
                        inner, IPV4_HEADER_LEN, next_header, self.config.nat_original
                    )
            else:
                header = IPv6Header(src, dst, next_header, hop_limit=ttl).pack(stop)
                inner = header + plaintext[:stop]
            if self._selectors is not None and not self._selectors.match(inner, True):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        self._account(len(inner))
        return inner


def _tunnel_next_header(packet: bytes) -> int:
    if not packet:
        raise Malformed("empty packet")
    version = packet[0] >> 4
    if version == 4:
        return IPPROTO_IPIP
    if version == 6:
        return IPPROTO_IPV6
    raise Malformed("not an IP packet")


def _tunnel_inner(next_header: int, plaintext: bytes, stop: int) -> bytes:
    """The inner packet of a tunnel-mode payload ``plaintext[:stop]``; TFC padding (RFC 4303
    2.7) between the inner packet and the trailer is cut off by the inner length."""
    if next_header == IPPROTO_IPIP:
        if stop < IPV4_HEADER_LEN or plaintext[0] >> 4 != 4:
            raise Malformed("inner packet is not IPv4")
        total = (plaintext[2] << 8) | plaintext[3]
        if total > stop or total < (plaintext[0] & 0x0F) * 4 or total < IPV4_HEADER_LEN:
            raise Malformed("bad inner IPv4 total length")
        return plaintext[:total]
    if next_header == IPPROTO_IPV6:
        if stop < IPV6_HEADER_LEN or plaintext[0] >> 4 != 6:
            raise Malformed("inner packet is not IPv6")
        total = IPV6_HEADER_LEN + ((plaintext[4] << 8) | plaintext[5])
        if total > stop:
            raise Malformed("bad inner IPv6 payload length")
        return plaintext[:total]
    raise Malformed(f"tunnel mode payload has next header {next_header}")


def _nat_fixup(packet: bytes, ihl: int, protocol: int, original: tuple[bytes, bytes]) -> bytes:
    """RFC 3948 3.1.2: the peer's TCP/UDP checksum covers its original addresses; adjust it
    incrementally to the addresses this packet now carries (RFC 1624)."""
    if protocol == IPPROTO_TCP:
        where = ihl + 16
    elif protocol == IPPROTO_UDP:
        where = ihl + 6
    else:
        return packet
    if len(packet) < where + 2:
        raise Malformed("transport header truncated")
    csum = (packet[where] << 8) | packet[where + 1]
    if protocol == IPPROTO_UDP and csum == 0:
        return packet  # no UDP checksum (IPv4)
    new = checksum_adjust(csum, original[0] + original[1], packet[12:20])
    if protocol == IPPROTO_UDP and new == 0:
        new = 0xFFFF
    return packet[:where] + new.to_bytes(2, "big") + packet[where + 2 :]
