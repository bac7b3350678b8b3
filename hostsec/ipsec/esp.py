"""ESP: protect and unprotect in transport and tunnel mode, IPv4 and IPv6, raw or in UDP.

RFC 4303 (ESP), RFC 4106 / 4309 / 4543 / 7634 (combined-mode transforms), RFC 3948 (ESP
in UDP). The per-packet path is written for speed: the transform objects are bound once,
the trailer comes from a table, the outer header from a template, and combined-mode IVs
are the 64-bit sequence number (unique per key, as RFC 4106 3.1 allows) so no random
number is drawn per packet. CBC IVs are random (RFC 3602 2.4 wants them unpredictable).

Inbound order (RFC 4303 3.4): parse, replay check (cheap, before any crypto), ICV
verification and decryption, replay window update, trailer, then the inner packet's
selectors.

Entry points: protect/unprotect (complete IP packets, as a TUN device gives and takes
them), encapsulate/decapsulate (ESP without the outer header, for sockets that add or
strip it), and their ``*_many`` batch forms. For combined-mode transforms each SA replaces
the single-packet ones, once, with specialised closures that do the same checks with
fewer Python operations (see "Specialised per-packet paths" at the end of this module).
"""

from __future__ import annotations

import functools
import os
import struct
import typing
from collections.abc import Callable, Iterable
from functools import partial

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
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.esp import ESP_HEADER_LEN, padding
from hostsec.wire.ip import (
    IPPROTO_AH,
    IPPROTO_ESP,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_NONE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_FLAG_DF,
    IPV4_FLAG_MF,
    IPV4_FRAGMENT_OFFSET_MASK,
    IPV4_HEADER_LEN,
    IPV6_GENERIC_EXTENSIONS,
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
_U32 = struct.Struct("!I")
# The per-SA header layouts depend on a few parameters only (ICV length, UDP or not, salt
# length): one Struct per format, shared by every SA that needs it (memory per SA).
_layout = functools.lru_cache(maxsize=64)(struct.Struct)
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
        # Selectors.match(inner, True), compiled for the common IPv4 TCP/UDP case.
        self._selector_check = (
            _inbound_selector_check(config.selectors)
            if config.selectors is not None and config.is_inbound
            else None
        )
        self._check_padding = config.check_padding
        self._udp_ports = (self._encap.src_port, self._encap.dst_port) if self._encap else None
        self._select_paths()

    def _select_paths(self) -> None:
        """Bind the specialised per-packet paths of this SA, chosen once (see the section
        "Specialised per-packet paths" below). They shadow the general methods on this
        instance and hand every packet they do not cover back to them."""
        if not self._aead:
            return
        # Counter IVs (every combined-mode transform here); outbound SAs only send.
        if self._iv_source is None and not self.config.is_inbound:
            self.encapsulate = _fast_encapsulate(self)  # type: ignore[method-assign]
            self.protect = _fast_protect(self)  # type: ignore[method-assign]
        window = self._window
        if window is not None:  # anti-replay on: every inbound SA but a rare few
            # Transport mode: the selector check of the parsed fields, one for both paths.
            flow = (
                _inbound_flow_check(self._selectors, 0)
                if self._selectors is not None and not self._tunnel
                else None
            )
            self.unprotect = _fast_unprotect(self, window, flow)  # type: ignore[method-assign]
            self.decapsulate = _fast_decapsulate(self, window, flow)  # type: ignore[method-assign]

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
            out = self._protect_general(packet)
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
        next_header, end = _trailer(plaintext, self._check_padding)
        return next_header, plaintext, end

    def unprotect(self, packet: bytes) -> bytes:
        """The inner IP packet of a complete received packet (IP [, UDP], ESP)."""
        try:
            if self.expired:
                raise Expired("SA reached its hard lifetime")
            inner = self._unprotect(packet)
            if self._selector_check is not None and not self._selector_check(inner):
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
            if self._selector_check is not None and not self._selector_check(inner):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            self.stats.drop(exc.reason)
            raise
        self._account(len(inner))
        return inner

    # -- batches ------------------------------------------------------------------------
    #
    # For a data path that reads many packets per system call (TUN TSO reads, UDP_GRO).
    # Each packet goes through the single-packet entry point, with its checks, counters and
    # lifetime thresholds; a dropped packet is counted there (stats.drops) and left out of
    # the result, and the rest of the batch goes on. An SA that reaches its hard lifetime
    # in the middle of a batch drops the remaining packets (counted as expired).

    def protect_many(self, packets: Iterable[bytes]) -> list[bytes]:
        """:meth:`protect` for each packet: the protected packets, dropped ones left out."""
        return _each(self.protect, packets)

    def encapsulate_many(self, packets: Iterable[bytes]) -> list[bytes]:
        """:meth:`encapsulate` for each packet, dropped ones left out."""
        return _each(self.encapsulate, packets)

    def unprotect_many(self, packets: Iterable[bytes]) -> list[bytes]:
        """:meth:`unprotect` for each packet: the inner packets of those that pass, in order."""
        return _each(self.unprotect, packets)

    def decapsulate_many(
        self, esps: Iterable[bytes], src: bytes, dst: bytes, ttl: int = 64
    ) -> list[bytes]:
        """:meth:`decapsulate` for each ESP packet (all from outer ``src`` to ``dst``)."""
        decapsulate = self.decapsulate
        out: list[bytes] = []
        append = out.append
        for esp in esps:
            try:  # noqa: SIM105 (contextlib.suppress costs a context manager per packet)
                append(decapsulate(esp, src, dst, ttl))
            except PacketDropped:
                pass  # counted by decapsulate
        return out


def _each(path: Callable[[bytes], bytes], packets: Iterable[bytes]) -> list[bytes]:
    """``path`` applied to each packet; dropped packets (already counted) are left out."""
    out: list[bytes] = []
    append = out.append
    for packet in packets:
        try:  # noqa: SIM105 (contextlib.suppress costs a context manager per packet)
            append(path(packet))
        except PacketDropped:
            pass  # counted by ``path``
    return out


def _trailer(plaintext: bytes, check_padding: bool) -> tuple[int, int]:
    """(next header, end of the payload) of a decrypted ESP payload: RFC 4303 2.4 trailer
    (padding, pad length, next header); the padding is checked when ``check_padding``."""
    pad = plaintext[-2]
    end = len(plaintext) - 2 - pad
    if end < 0:
        raise Malformed("ESP pad length exceeds the payload")
    if pad and check_padding and plaintext[end : end + pad] != _PADDINGS[pad]:
        raise Malformed("ESP padding is not the default monotonic sequence")
    next_header = plaintext[-1]
    if next_header == IPPROTO_NONE:
        raise DummyPacket("dummy packet (next header 59)")
    return next_header, end


def _tunnel_next_header(packet: bytes) -> int:
    if len(packet) < IPV4_HEADER_LEN:  # no IP packet is shorter
        raise Malformed("packet too short")
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


# -- Specialised per-packet paths --------------------------------------------------------
#
# In CPython 3.11 most of a packet's time goes to Python work around the cipher call:
# every attribute lookup, slice, concatenation, call and struct operation costs tens of
# nanoseconds, and a 1400-octet AES-GCM call costs about as much as twenty of them. For
# the common case, a combined-mode transform with counter IVs, each SA builds closures
# once, at construction (EspSA._select_paths), that keep everything constant about the SA
# in local cells (the bound AEAD methods, salt and SPI as integers, header layouts as
# struct formats, the replay window's ring) and do the per-packet work in as few
# operations as possible:
# - one struct.unpack_from reads every header field the checks need, and its size is the
#   shortest packet the fast path takes, so that length check comes for free;
# - the outer IPv4 header, ESP header and IV come from one struct.pack, with the header
#   checksum from one sum and one modulo;
# - the tunnel-mode trailer and inner IPv4 length are checked by one comparison with the
#   expected trailer (padding, pad length, next header) for that inner length;
# - a packet in order updates the replay window with one store (see replay.py);
# - the inbound selector check (RFC 4301 5.2) is compiled per SA: for one remote and one
#   local IPv4 selector (nearly every SA) into a few comparisons of octet strings with
#   constants; in transport mode it is given the protocol, addresses and transport header
#   the path already holds instead of parsing the inner packet it built (the whole-packet
#   form serves tunnel mode and the general methods).
# IPv6 likewise, outside and inside, when no extension header comes between the IPv6
# header and ESP (or the upper-layer protocol, outbound in transport mode); the selectors
# of an inner IPv6 packet are checked on the whole packet (Selectors.match).
# Every packet they do not cover (IPv6 extension headers, IPv4 options, short or odd
# packets, TFC padding, other padding, dummy packets) goes to the general methods, which
# also produce every error. The checks, their order (RFC 4303 3.4.3: replay check, ICV
# verification, window update; then trailer, inner packet, selectors), the counters and
# the lifetime thresholds are those of the general methods; tests/unit/test_fastpath.py
# compares both.

#: _TRAILERS4[n & 3][next_header]: the trailer for a payload of n octets (4-octet alignment).
_TRAILERS4 = [_TRAILERS[-(n + 2) & 3] for n in range(4)]
_TUNNEL4_TRAILERS = [row[IPPROTO_IPIP] for row in _TRAILERS4]
_TUNNEL6_TRAILERS = [row[IPPROTO_IPV6] for row in _TRAILERS4]
_SPI_SEQ = struct.Struct("!II")  # SPI, 32-bit sequence number: the AAD without ESN
_SPI_ESN = struct.Struct("!IQ")  # SPI, 64-bit sequence number: the AAD with ESN
_ESP_IV = struct.Struct("!IIQ")  # SPI, sequence number, IV (the 64-bit sequence number)
_V4_ESP_IV = struct.Struct("!BBHHHBBH8sIIQ")  # IPv4 header, SPI, sequence number, IV
_V4_UDP_ESP_IV = struct.Struct("!BBHHHBBH8sHHHHIIQ")  # ... with the RFC 3948 UDP header
_V4_HEADER = struct.Struct("!BBH5sBH8s")  # an IPv4 header without options, middle kept
_V4_FIELDS = struct.Struct("!BBHHHBBH8s")  # every field of an IPv4 header without options
_VERSION_LENGTH = struct.Struct("!BxH")  # version/IHL and total length of an IPv4 header
_V4_SPLIT = struct.Struct("!BxH2xHxB10x")  # version/IHL, total length, flags/offset, protocol
# Version/IHL, total length, flags/offset, protocol, addresses (the selector fields), and
# with the ports.
_FLOW4 = struct.Struct("!BxH2xHxBxx8s")
_FLOW4_PORTS = struct.Struct("!BxH2xHxBxxIIHH")
_TCP_UDP = frozenset({IPPROTO_TCP, IPPROTO_UDP})
_PORTS = struct.Struct("!HH")
_PORTED = frozenset({IPPROTO_TCP, IPPROTO_UDP, 132, 136})  # as flow_key: SCTP, UDP-Lite too
_HARD = "SA reached its hard lifetime"
_PAIR = slice(0, ESP_HEADER_LEN)  # SPI and sequence number of an ESP packet
_V6_FIELDS = struct.Struct("!IHBB32s")  # an IPv6 header: version/class/flow, length, ...
_V6_ESP_IV = struct.Struct("!IHBB32sIIQ")  # IPv6 header, SPI, sequence number, IV
_V6_UDP = struct.Struct("!IHBB32sHHHH")  # IPv6 header and UDP header (ESP follows)
_U16 = struct.Struct("!H")
_V6_SPLIT = struct.Struct("!IHB33x")  # version/class/flow, payload length, next header
# The next headers walk_ipv6 steps over: a packet whose first next header is one of them
# goes to the general methods (transport mode inserts ESP after the per-hop ones).
_V6_WALKED = IPV6_GENERIC_EXTENSIONS | {IPPROTO_FRAGMENT, IPPROTO_AH}
_V6_VERSION = 6 << 28
_BODY = slice(ESP_HEADER_LEN + 8, None)  # what follows an 8-octet IV

# The Internet checksum of a header whose 16-bit words sum to s > 0 (RFC 1071):
#     ~fold(s) & 0xFFFF == 0xFFFE - (s - 1) % 0xFFFF
# since fold(s), the end-around-carry sum, is the number in 1..0xFFFF congruent to s modulo
# 0xFFFF, as is (s - 1) % 0xFFFF + 1. One modulo instead of two folds; the same octets.


class _PacketPath(typing.Protocol):
    """The signature of protect, unprotect and encapsulate."""

    def __call__(self, packet: bytes) -> bytes: ...


class _DecapsulatePath(typing.Protocol):
    def __call__(self, esp: bytes, src: bytes, dst: bytes, ttl: int = 64) -> bytes: ...


#: The inbound selector check of an IPv4 packet already parsed (see _inbound_flow_check):
#: ``check(protocol, addresses, data, end)``.
_FlowCheck = Callable[[int, bytes, bytes, int], bool]
_Range = tuple[int, int, int, int, int]  # protocol, first and last address, port range
_DESTINATION = slice(4, 8)  # of the 8 octets source || destination
_ADDRESS_PAIR = struct.Struct("!II")


def _ipv4_ranges(side: tuple[TrafficSelector, ...]) -> tuple[_Range, ...]:
    """The IPv4 selectors of one side, addresses as integers; an IPv6 selector never holds
    an IPv4 address and is left out. "Any port" is the range -1..0xFFFF, so that the port
    -1, standing for "no port" (TrafficSelector.contains with ``port=None``), matches only
    those selectors."""
    return tuple(
        (
            ts.protocol,
            int.from_bytes(ts.start_addr, "big"),
            int.from_bytes(ts.end_addr, "big"),
            -1 if ts.any_port else ts.start_port,
            ts.end_port,
        )
        for ts in side
        if len(ts.start_addr) == 4
    )


def _inbound_flow_check(selectors: Selectors, offset: int) -> _FlowCheck:
    """``check(protocol, addresses, data, end)``: ``selectors.match(packet, True)`` (RFC 4301
    5.2: the source among the remote selectors, the destination among the local ones) for
    an IPv4 packet that is well formed up to its transport header and not a later fragment
    (fragment offset 0), from its fields: ``protocol``, ``addresses`` (source and
    destination, the 8 octets of the header) and the octets after the IP header at
    ``data[offset:end]`` (``end``: where the packet ends by its total length).

    As flow_key and Selectors.match_key do: TCP, UDP, SCTP and UDP-Lite need their two
    ports (a shorter packet is malformed: no match); ICMP and ICMPv6 need type and code,
    whose ``type << 8 | code`` is matched against the remote side only, the local side
    wanting protocol and address alone; any other protocol has no ports and matches only
    "any port" selectors.

    One remote and one local selector, the shape of nearly every SA, compile into a closure
    without loops; other shapes loop over the selectors."""
    remote, local = _ipv4_ranges(selectors.remote), _ipv4_ranges(selectors.local)
    ports: Callable[[bytes, int], tuple[int, int]] = _PORTS.unpack_from
    address_pair: Callable[[bytes], tuple[int, int]] = _ADDRESS_PAIR.unpack
    ported = _PORTED
    need_ports = offset + 4  # the least ``end`` holding both ports
    need_icmp = offset + 2  # ... ICMP type and code
    after = offset + 1

    if len(remote) == 1 and len(local) == 1:
        (r_proto, r_low, r_high, r_first, r_last) = remote[0]
        (l_proto, l_low, l_high, l_first, l_last) = local[0]
        if r_proto and l_proto and r_proto != l_proto:
            return _never  # no protocol is both
        protocol_wanted = r_proto or l_proto  # 0: any
        r_any, l_any = r_first < 0, l_first < 0
        no_ports = r_any and l_any
        # Addresses as octet strings, which compare as big-endian numbers do. ``addresses``
        # (source || destination) lies between pair_low and pair_high if and only if
        # (source, destination) lies between (r_low, l_low) and (r_high, l_high) in
        # lexicographic order: then the source is in its range, and so is the destination
        # when the remote range is one address (or the local one is every address); else
        # the destination needs its own test.
        pair_low = _ADDRESS_PAIR.pack(r_low, l_low)
        pair_high = _ADDRESS_PAIR.pack(r_high, l_high)
        l_low_octets, l_high_octets = pair_low[_DESTINATION], pair_high[_DESTINATION]
        destination_decided = r_low == r_high or (l_low == 0 and l_high == 0xFFFFFFFF)
        # The ports likewise, as one slice of octets when that test is exact: only the
        # destination port (any source port), only the source port (any destination
        # port), or both with a single source port; else as two numbers.
        lowest = _PORTS.pack(max(r_first, 0), max(l_first, 0))
        highest = _PORTS.pack(r_last, l_last)
        if r_any:
            port_slice = slice(offset + 2, offset + 4)
            port_low, port_high = lowest[2:], highest[2:]
        elif l_any:
            port_slice = slice(offset, offset + 2)
            port_low, port_high = lowest[:2], highest[:2]
        else:
            port_slice = slice(offset, offset + 4)
            port_low, port_high = lowest, highest
        ports_by_octets = r_any or l_any or r_first == r_last

        def check_one(protocol: int, addresses: bytes, data: bytes, end: int) -> bool:
            if (
                not pair_low <= addresses <= pair_high
                or (protocol_wanted and protocol != protocol_wanted)
                or not (
                    destination_decided or l_low_octets <= addresses[_DESTINATION] <= l_high_octets
                )
            ):
                return False
            if protocol in ported:
                if end < need_ports:
                    return False  # malformed
                if no_ports:
                    return True
                if ports_by_octets:
                    return port_low <= data[port_slice] <= port_high
                sport, dport = ports(data, offset)
                return r_first <= sport <= r_last and l_first <= dport <= l_last
            if protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
                if end < need_icmp:
                    return False  # malformed
                return r_any or r_first <= (data[offset] << 8 | data[after]) <= r_last
            return no_ports

        return check_one

    def check(protocol: int, addresses: bytes, data: bytes, end: int) -> bool:
        src, dst = address_pair(addresses)
        if protocol in ported:
            if end < need_ports:
                return False
            sport, dport = ports(data, offset)
        elif protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            if end < need_icmp:
                return False
            sport = data[offset] << 8 | data[after]
            for proto, low, high, first, last in remote:
                if (
                    (not proto or proto == protocol)
                    and low <= src <= high
                    and first <= sport <= last
                ):
                    break
            else:
                return False
            for proto, low, high, _, _ in local:
                if (not proto or proto == protocol) and low <= dst <= high:
                    return True
            return False
        else:
            sport = dport = -1  # no ports: "any port" selectors only
        for proto, low, high, first, last in remote:
            if (not proto or proto == protocol) and low <= src <= high and first <= sport <= last:
                break
        else:
            return False
        for proto, low, high, first, last in local:
            if (not proto or proto == protocol) and low <= dst <= high and first <= dport <= last:
                return True
        return False

    return check


def _never(protocol: int, addresses: bytes, data: bytes, end: int) -> bool:
    return False


def _ipv6_selector_check(selectors: Selectors) -> Callable[[bytes], bool]:
    """``selectors.match(inner, True)`` with IPv6 TCP, UDP, SCTP and UDP-Lite right after
    the IPv6 header (the payload length ending the packet) compared directly against the
    IPv6 selectors: addresses as 16-octet strings, which compare as the numbers do. Every
    other packet goes to Selectors.match (which walks extension headers)."""
    general = selectors.match

    def ranges(side: tuple[TrafficSelector, ...]) -> tuple[tuple[int, bytes, bytes, int, int], ...]:
        return tuple(
            (ts.protocol, ts.start_addr, ts.end_addr, ts.start_port, ts.end_port)
            for ts in side
            if len(ts.start_addr) == 16  # an IPv4 selector never holds an IPv6 address
        )

    remote, local = ranges(selectors.remote), ranges(selectors.local)
    if not remote or not local:  # no IPv6 packet can match: nothing to compile
        return partial(general, inbound=True)
    ports = _PORTS.unpack_from
    ported = _PORTED

    def matches(inner: bytes) -> bool:
        n = len(inner)
        if (
            n < IPV6_HEADER_LEN + 4
            or inner[0] >> 4 != 6
            or inner[6] not in ported
            or ((inner[4] << 8) | inner[5]) + IPV6_HEADER_LEN != n
        ):
            return general(inner, True)
        protocol = inner[6]
        src, dst = inner[8:24], inner[24:40]
        sport, dport = ports(inner, IPV6_HEADER_LEN)
        for proto, low, high, first, last in remote:
            if (not proto or proto == protocol) and low <= src <= high and first <= sport <= last:
                break
        else:
            return False
        for proto, low, high, first, last in local:
            if (not proto or proto == protocol) and low <= dst <= high and first <= dport <= last:
                return True
        return False

    return matches


def _inbound_selector_check(selectors: Selectors) -> Callable[[bytes], bool]:
    """``selectors.match(inner, True)`` for a whole inner packet. One remote and one local
    selector: IPv4 without options and not a later fragment through _inbound_flow_check.
    Other shapes: TCP and UDP in IPv4 without options and not a later fragment through
    integer ranges (one struct.unpack for every field). IPv6 through _ipv6_selector_check.
    Every other packet (options, fragments, malformed headers) goes to Selectors.match."""
    general = _ipv6_selector_check(selectors)
    remote, local = _ipv4_ranges(selectors.remote), _ipv4_ranges(selectors.local)

    if len(remote) == 1 and len(local) == 1:
        flow = _inbound_flow_check(selectors, IPV4_HEADER_LEN)
        head = _FLOW4.unpack_from

        def matches_one(inner: bytes) -> bool:
            try:
                vihl, total, frag, protocol, addresses = head(inner)
            except struct.error:
                return general(inner)
            if (
                vihl != 0x45
                or frag & IPV4_FRAGMENT_OFFSET_MASK
                or total > len(inner)
                or total < IPV4_HEADER_LEN
            ):
                return general(inner)
            return flow(protocol, addresses, inner, total)

        return matches_one

    def matches(inner: bytes) -> bool:
        try:
            vihl, total, frag, protocol, src, dst, sport, dport = _FLOW4_PORTS.unpack_from(inner)
        except struct.error:
            return general(inner)
        if (
            vihl != 0x45
            or protocol not in _TCP_UDP
            or frag & IPV4_FRAGMENT_OFFSET_MASK
            or total > len(inner)
            or total < IPV4_HEADER_LEN + 4  # the ports inside the packet
        ):
            return general(inner)
        for proto, low, high, first, last in remote:
            if (not proto or proto == protocol) and low <= src <= high and first <= sport <= last:
                break
        else:
            return False
        for proto, low, high, first, last in local:
            if (not proto or proto == protocol) and low <= dst <= high and first <= dport <= last:
                return True
        return False

    return matches


def _nonce_and_aad(sa: EspSA) -> tuple[Callable[..., bytes], Callable[..., bytes]]:
    """``(nonce, aad)``: ``nonce(salt, seq)`` and ``aad(spi, seq)`` give the nonce and AAD of
    sequence number ``seq`` in one struct.pack each.

    AAD (RFC 4106 5, RFC 4309 5, RFC 4543 3.3, RFC 7634 2.1): SPI || the 32-bit sequence
    number, or SPI || 64-bit ESN. Without ESN the SA never sends a sequence number above
    2^32 - 1 (``next_seq``), so the number packs as it is. Nonce: salt || IV, the IV being
    the 64-bit sequence number (unique per key, RFC 4106 3.1)."""
    nonce = _layout(f"!{len(sa._salt)}sQ").pack
    aad = (_SPI_ESN if sa._esn else _SPI_SEQ).pack
    return nonce, aad


def _fast_protect(sa: EspSA) -> _PacketPath:
    """``sa.protect`` for a combined-mode transform with counter IVs. Transport mode takes
    IPv4 packets without options and IPv6 ones without extension headers; the rest goes
    to :meth:`EspSA.protect`."""
    general = partial(EspSA.protect, sa)
    encrypt = sa._aead_encrypt
    nonce, aad = _nonce_and_aad(sa)
    salt = sa._salt
    spi = sa.spi
    stats = sa.stats
    addrs = sa._outer_addrs
    ports = sa._udp_ports
    sport, dport = ports if ports is not None else (0, 0)
    overhead = (IPV4_HEADER_LEN if ports is None else 28) + ESP_HEADER_LEN + 8  # + IV
    out_proto = IPPROTO_ESP if ports is None else IPPROTO_UDP
    # Tunnel mode: the outer header's constant words (version, TTL, protocol, addresses),
    # less one for the checksum formula above.
    constant = sa._outer.partial - 1

    # Outer total length minus the inner one, by the inner length modulo 4 (the trailer's
    # length depends on it): headers, IV, trailer and ICV.
    growth = [overhead + len(_TUNNEL4_TRAILERS[n]) + sa._icv_len for n in range(4)]
    pack_esp = _V4_ESP_IV.pack
    pack_udp = _V4_UDP_ESP_IV.pack
    trailers4 = _TUNNEL4_TRAILERS
    trailers6 = _TUNNEL6_TRAILERS

    def protect_tunnel(packet: bytes) -> bytes:
        try:
            if sa.expired:
                raise Expired(_HARD)
            size = len(packet)
            if size < IPV4_HEADER_LEN:
                raise Malformed("packet too short")
            version = packet[0] >> 4
            # RFC 4301 5.1.2.1: DSCP/ECN copied; DF copied from IPv4, set for IPv6.
            if version == 4:
                plaintext = packet + trailers4[size & 3]
                tos = packet[1]
                df = (packet[6] & 0x40) << 8
            elif version == 6:
                plaintext = packet + trailers6[size & 3]
                tos = (packet[0] & 0x0F) << 4 | packet[1] >> 4
                df = 0x4000
            else:
                raise Malformed("not an IP packet")
            seq = sa.seq + 1
            if seq >= sa._seq_mark:
                seq = sa.next_seq()  # a soft event, or the refusal to cycle
            else:
                sa.seq = seq
            total = size + growth[size & 3]
            ident = seq & 0xFFFF
            csum = 0xFFFE - (constant + tos + total + ident + df) % 0xFFFF
            if ports is None:
                out = pack_esp(
                    0x45, tos, total, ident, df, DEFAULT_TTL, IPPROTO_ESP, csum,
                    addrs, spi, seq & _LOW32, seq,
                ) + encrypt(nonce(salt, seq), plaintext, aad(spi, seq))  # fmt: skip
            else:
                out = pack_udp(
                    0x45, tos, total, ident, df, DEFAULT_TTL, IPPROTO_UDP, csum,
                    addrs, sport, dport, total - IPV4_HEADER_LEN, 0, spi, seq & _LOW32, seq,
                ) + encrypt(nonce(salt, seq), plaintext, aad(spi, seq))  # fmt: skip
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        packets = stats.packets + 1
        octets = stats.bytes + size
        stats.packets = packets
        stats.bytes = octets
        if octets >= sa._byte_mark or packets >= sa._packet_mark:
            sa._account_slow()
        return out

    def protect_transport(packet: bytes) -> bytes:
        try:
            vihl, tos, total, ident, frag, ttl, proto, csum, pair = _V4_FIELDS.unpack_from(packet)
        except struct.error:
            return general(packet)
        if vihl != 0x45:
            return protect_transport6(packet)  # IPv6, or options, not IP: general
        try:
            if sa.expired:
                raise Expired(_HARD)
            if total > len(packet) or total < IPV4_HEADER_LEN:
                raise Malformed("bad IPv4 total length")
            if frag & (IPV4_FLAG_MF | IPV4_FRAGMENT_OFFSET_MASK):
                raise PolicyViolation("transport mode does not carry IP fragments (RFC 4303 3.3)")
            seq = sa.seq + 1
            if seq >= sa._seq_mark:
                seq = sa.next_seq()
            else:
                sa.seq = seq
            ciphertext = encrypt(
                nonce(salt, seq),
                packet[IPV4_HEADER_LEN:total] + _TRAILERS4[total & 3][proto],
                aad(spi, seq),
            )
            new_total = overhead + len(ciphertext)
            # RFC 1624 update for the new total length and protocol, as ipv4_rewrite does
            # (the TTL shares the protocol's word and cancels out).
            csum = (
                0xFFFE
                - (
                    (~csum & 0xFFFF)
                    + (0xFFFF - total)
                    + new_total
                    + (0xFFFF - proto)
                    + out_proto
                    - 1
                )
                % 0xFFFF
            )
            if ports is None:
                out = _V4_ESP_IV.pack(
                    0x45, tos, new_total, ident, frag, ttl, IPPROTO_ESP, csum,
                    pair, spi, seq & _LOW32, seq,
                ) + ciphertext  # fmt: skip
            else:
                out = _V4_UDP_ESP_IV.pack(
                    0x45, tos, new_total, ident, frag, ttl, IPPROTO_UDP, csum,
                    pair, sport, dport, new_total - IPV4_HEADER_LEN, 0, spi, seq & _LOW32, seq,
                ) + ciphertext  # fmt: skip
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += len(packet)
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return out

    # IPv6 outer header (RFC 4301 5.1.2.1, as OuterHeader.build): traffic class copied,
    # flow label 0, hop limit DEFAULT_TTL. With UDP (RFC 3948) the UDP checksum is
    # mandatory over IPv6 (RFC 8200 8.1), computed as udp6_checksum does: the pseudo-header
    # (addresses, UDP length, next header 17), the UDP header and the ESP packet, whose
    # length is even (8 + 8 + a multiple of 4 + an even ICV) and starts at an even offset.
    # A sum of 16-bit words is congruent modulo 0xFFFF to the octets read as one number.
    pseudo6 = int.from_bytes(addrs, "big") + IPPROTO_UDP + sport + dport
    pack6 = _V6_ESP_IV.pack
    pack6_udp = _V6_UDP.pack
    pack_esp_iv = _ESP_IV.pack
    icv_len = sa._icv_len

    def protect_tunnel6(packet: bytes) -> bytes:
        try:
            if sa.expired:
                raise Expired(_HARD)
            size = len(packet)
            if size < IPV4_HEADER_LEN:
                raise Malformed("packet too short")
            version = packet[0] >> 4
            if version == 4:
                plaintext = packet + trailers4[size & 3]
                vtf = _V6_VERSION | packet[1] << 20
            elif version == 6:
                plaintext = packet + trailers6[size & 3]
                vtf = _V6_VERSION | ((packet[0] & 0x0F) << 4 | packet[1] >> 4) << 20
            else:
                raise Malformed("not an IP packet")
            seq = sa.seq + 1
            if seq >= sa._seq_mark:
                seq = sa.next_seq()
            else:
                sa.seq = seq
            ciphertext = encrypt(nonce(salt, seq), plaintext, aad(spi, seq))
            if ports is None:
                out = pack6(
                    vtf, ESP_HEADER_LEN + 8 + len(ciphertext), IPPROTO_ESP, DEFAULT_TTL,
                    addrs, spi, seq & _LOW32, seq,
                ) + ciphertext  # fmt: skip
            else:
                esp = pack_esp_iv(spi, seq & _LOW32, seq) + ciphertext
                length = UDP_HEADER_LEN + len(esp)
                words = pseudo6 + 2 * length + int.from_bytes(esp, "big")
                out = pack6_udp(
                    vtf, length, IPPROTO_UDP, DEFAULT_TTL, addrs, sport, dport, length,
                    0xFFFE - (words - 1) % 0xFFFF or 0xFFFF,
                ) + esp  # fmt: skip
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        packets = stats.packets + 1
        octets = stats.bytes + size
        stats.packets = packets
        stats.bytes = octets
        if octets >= sa._byte_mark or packets >= sa._packet_mark:
            sa._account_slow()
        return out

    # Transport mode, IPv6: a packet whose payload is directly the upper-layer protocol (no
    # extension header), payload length neither 0 nor beyond the packet, and not so long
    # that the ESP one overflows 16 bits; every other goes to the general method. ESP goes
    # right after the IPv6 header (RFC 4303 3.1.1), which keeps its fields (the
    # addresses, for the UDP checksum too) but the next header and payload length.
    longest6 = 0xFFFF - (UDP_HEADER_LEN + ESP_HEADER_LEN + 8 + 2 + 3 + icv_len)

    def protect_transport6(packet: bytes) -> bytes:
        try:
            vtf, length, proto, hop_limit, pair = _V6_FIELDS.unpack_from(packet)
        except struct.error:
            return general(packet)
        end = IPV6_HEADER_LEN + length
        if vtf >> 28 != 6 or proto in _V6_WALKED or not 0 < length <= longest6 or end > len(packet):
            return general(packet)
        try:
            if sa.expired:
                raise Expired(_HARD)
            seq = sa.seq + 1
            if seq >= sa._seq_mark:
                seq = sa.next_seq()
            else:
                sa.seq = seq
            ciphertext = encrypt(
                nonce(salt, seq),
                packet[IPV6_HEADER_LEN:end] + _TRAILERS4[length & 3][proto],
                aad(spi, seq),
            )
            if ports is None:
                out = pack6(
                    vtf, ESP_HEADER_LEN + 8 + len(ciphertext), IPPROTO_ESP, hop_limit,
                    pair, spi, seq & _LOW32, seq,
                ) + ciphertext  # fmt: skip
            else:
                esp = pack_esp_iv(spi, seq & _LOW32, seq) + ciphertext
                length = UDP_HEADER_LEN + len(esp)
                words = (
                    int.from_bytes(pair, "big")
                    + (IPPROTO_UDP + sport + dport)
                    + 2 * length
                    + int.from_bytes(esp, "big")
                )
                out = pack6_udp(
                    vtf, length, IPPROTO_UDP, hop_limit, pair, sport, dport, length,
                    0xFFFE - (words - 1) % 0xFFFF or 0xFFFF,
                ) + esp  # fmt: skip
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += len(packet)
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return out

    if sa._tunnel:
        return protect_tunnel6 if sa._outer.version == 6 else protect_tunnel
    return protect_transport


def _fast_encapsulate(sa: EspSA) -> _PacketPath:
    """``sa.encapsulate`` (ESP without outer headers) for a combined-mode transform with
    counter IVs. Transport mode takes IPv4 packets without options; the rest goes to
    :meth:`EspSA.encapsulate`."""
    general = partial(EspSA.encapsulate, sa)
    encrypt = sa._aead_encrypt
    nonce, aad = _nonce_and_aad(sa)
    salt = sa._salt
    spi = sa.spi
    stats = sa.stats

    def encapsulate(packet: bytes) -> bytes:
        size = len(packet)
        if size < IPV4_HEADER_LEN:
            return general(packet)
        version = packet[0] >> 4
        if version == 4:
            plaintext = packet + _TUNNEL4_TRAILERS[size & 3]
        elif version == 6:
            plaintext = packet + _TUNNEL6_TRAILERS[size & 3]
        else:
            return general(packet)
        try:
            if sa.expired:
                raise Expired(_HARD)
            seq = sa.seq + 1
            if seq >= sa._seq_mark:
                seq = sa.next_seq()
            else:
                sa.seq = seq
            out = _ESP_IV.pack(spi, seq & _LOW32, seq) + encrypt(
                nonce(salt, seq),
                plaintext,
                aad(spi, seq),
            )
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += size
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return out

    def encapsulate_transport(packet: bytes) -> bytes:
        try:
            vihl, total, frag, proto = _V4_SPLIT.unpack_from(packet)
        except struct.error:
            return general(packet)
        if vihl != 0x45:
            return encapsulate_transport6(packet)  # IPv6, or options, not IP: general
        try:
            if sa.expired:
                raise Expired(_HARD)
            if total > len(packet) or total < IPV4_HEADER_LEN:
                raise Malformed("bad IPv4 total length")
            if frag & (IPV4_FLAG_MF | IPV4_FRAGMENT_OFFSET_MASK):
                raise PolicyViolation("transport mode does not carry IP fragments (RFC 4303 3.3)")
            seq = sa.seq + 1
            if seq >= sa._seq_mark:
                seq = sa.next_seq()
            else:
                sa.seq = seq
            out = _ESP_IV.pack(spi, seq & _LOW32, seq) + encrypt(
                nonce(salt, seq),
                packet[IPV4_HEADER_LEN:total] + _TRAILERS4[total & 3][proto],
                aad(spi, seq),
            )
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += len(packet)
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return out

    def encapsulate_transport6(packet: bytes) -> bytes:
        # As protect_transport6 in _fast_protect takes them (the ESP packet alone has
        # no 16-bit length to overflow: the general method takes the longest too).
        try:
            vtf, length, proto = _V6_SPLIT.unpack_from(packet)
        except struct.error:
            return general(packet)
        end = IPV6_HEADER_LEN + length
        if vtf >> 28 != 6 or proto in _V6_WALKED or not length or end > len(packet):
            return general(packet)
        try:
            if sa.expired:
                raise Expired(_HARD)
            seq = sa.seq + 1
            if seq >= sa._seq_mark:
                seq = sa.next_seq()
            else:
                sa.seq = seq
            out = _ESP_IV.pack(spi, seq & _LOW32, seq) + encrypt(
                nonce(salt, seq),
                packet[IPV6_HEADER_LEN:end] + _TRAILERS4[length & 3][proto],
                aad(spi, seq),
            )
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += len(packet)
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return out

    return encapsulate if sa._tunnel else encapsulate_transport


def _fast_unprotect(sa: EspSA, window: ReplayWindow, flow: _FlowCheck | None) -> _PacketPath:
    """``sa.unprotect`` for IPv4 packets without options and IPv6 packets without
    extension headers, a combined-mode transform and anti-replay on; everything else goes
    to :meth:`EspSA.unprotect`."""
    general = partial(EspSA.unprotect, sa)
    decrypt = sa._aead_decrypt
    salt = sa._salt
    spi_bytes = sa._spi_bytes
    esn = sa._esn
    spi = sa.spi
    slots = window.slots
    mask = window.ring_mask
    stats = sa.stats
    selectors = sa._selector_check
    # Transport mode: the inner packet's protocol, addresses and transport header are
    # known before it is built (the outer addresses, which RFC 3948 NAT handling keeps).
    whole = typing.cast("Callable[[bytes], bool]", selectors)  # called only with ``flow``
    check_padding = sa._check_padding
    udp = sa._encap is not None
    nat = sa.config.nat_original if udp else None
    esp = IPV4_HEADER_LEN + (UDP_HEADER_LEN if udp else 0)  # where ESP starts
    # Slice objects made once (CPython 3.11 builds one per "packet[a:b]" otherwise).
    esp_pair = slice(esp, esp + ESP_HEADER_LEN)  # SPI and sequence number: the AAD
    body = slice(esp + ESP_HEADER_LEN + 8, None)  # after the IV: ciphertext and ICV
    outer_proto = IPPROTO_UDP if udp else IPPROTO_ESP
    # Version/IHL, total length, protocol, [UDP length,] SPI, sequence number, IV; then the
    # shortest rest taken here: the trailer, the ICV and, in tunnel mode, an inner IPv4
    # header. Transport mode keeps the outer header: TOS, id/flags/TTL, checksum and
    # addresses too.
    udp_part = "4xH2x" if udp else ""
    rest = 2 + sa._icv_len
    tunnel_head = _layout(f"!BxH5xB10x{udp_part}II8s{rest + IPV4_HEADER_LEN}x")
    inner_head = _VERSION_LENGTH.unpack_from  # version/IHL, total length of an inner IPv4
    trailers4 = _TUNNEL4_TRAILERS
    transport_head = _layout(f"!BBH5sBH8s{udp_part}II8s{rest}x")

    def unprotect_tunnel(packet: bytes) -> bytes:
        try:
            if udp:
                vihl, end, proto, udp_len, spi_in, seq, iv = tunnel_head.unpack_from(packet)
            else:
                vihl, end, proto, spi_in, seq, iv = tunnel_head.unpack_from(packet)
                udp_len = 0
        except struct.error:
            return general(packet)
        if (
            vihl != 0x45
            or proto != outer_proto
            or end != len(packet)
            or spi_in != spi
            or (udp and udp_len != end - IPV4_HEADER_LEN)
        ):
            return unprotect_tunnel6(packet)  # IPv6, or the general method
        try:
            if sa.expired:
                raise Expired(_HARD)
            # RFC 4303 3.4.3: the replay check before the ICV, the window update after.
            if esn:
                seq = window.infer(seq)
            top = window.top
            if seq <= top:
                window.check(seq)
            try:
                plaintext = decrypt(
                    salt + iv,
                    packet[body],
                    spi_bytes + seq.to_bytes(8, "big") if esn else packet[esp_pair],
                )
            except InvalidTag:
                raise AuthenticationFailed("ESP ICV mismatch") from None
            if seq == top + 1:  # in order: one store (replay.py)
                slots[seq & mask] = 1
                window.top = seq
            else:
                window.update(seq)
            # The expected trailer for an inner IPv4 packet of ``total`` octets without TFC
            # padding: a match checks padding, pad length, next header (4) and that the
            # inner packet ends where the trailer begins.
            vihl, total = inner_head(plaintext)
            if (
                vihl == 0x45
                and total >= IPV4_HEADER_LEN
                and plaintext[total:] == trailers4[total & 3]
            ):
                inner = plaintext[:total]
            else:
                next_header, stop = _trailer(plaintext, check_padding)
                inner = _tunnel_inner(next_header, plaintext, stop)
                total = len(inner)
            if selectors is not None and not selectors(inner):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += total
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return inner

    def unprotect_transport(packet: bytes) -> bytes:
        try:
            if udp:
                vihl, tos, end, middle, proto, csum, pair, udp_len, spi_in, seq, iv = (
                    transport_head.unpack_from(packet)
                )
            else:
                vihl, tos, end, middle, proto, csum, pair, spi_in, seq, iv = (
                    transport_head.unpack_from(packet)
                )
                udp_len = 0
        except struct.error:
            return general(packet)
        if (
            vihl != 0x45
            or proto != outer_proto
            or end != len(packet)
            or spi_in != spi
            or (udp and udp_len != end - IPV4_HEADER_LEN)
        ):
            return unprotect_transport6(packet)  # IPv6, or the general method
        try:
            if sa.expired:
                raise Expired(_HARD)
            if esn:
                seq = window.infer(seq)
            top = window.top
            if seq <= top:
                window.check(seq)
            try:
                plaintext = decrypt(
                    salt + iv,
                    packet[body],
                    spi_bytes + seq.to_bytes(8, "big") if esn else packet[esp_pair],
                )
            except InvalidTag:
                raise AuthenticationFailed("ESP ICV mismatch") from None
            if seq == top + 1:
                slots[seq & mask] = 1
                window.top = seq
            else:
                window.update(seq)
            # RFC 4303 2.4 trailer, as _trailer() checks it.
            pad = plaintext[-2]
            stop = len(plaintext) - 2 - pad
            if stop < 0:
                raise Malformed("ESP pad length exceeds the payload")
            if pad and check_padding and plaintext[stop:-2] != _PADDINGS[pad]:
                raise Malformed("ESP padding is not the default monotonic sequence")
            next_header = plaintext[-1]
            if next_header == IPPROTO_NONE:
                raise DummyPacket("dummy packet (next header 59)")
            # The outer header with the inner protocol and length (RFC 1624, as
            # ipv4_rewrite does), in front of the payload.
            new_total = IPV4_HEADER_LEN + stop
            csum = (
                0xFFFE
                - (
                    (~csum & 0xFFFF)
                    + (0xFFFF - end)
                    + new_total
                    + (0xFFFF - proto)
                    + next_header
                    - 1
                )
                % 0xFFFF
            )
            inner = (
                _V4_HEADER.pack(0x45, tos, new_total, middle, next_header, csum, pair)
                + plaintext[:stop]
            )
            if nat is not None:  # RFC 3948 3.1.2: a new checksum, the same selector fields
                inner = _nat_fixup(inner, IPV4_HEADER_LEN, next_header, nat)
            # selectors(inner), without parsing inner: its transport header is
            # plaintext[:stop]. The outer fragment offset (middle[2:4]), copied into inner,
            # makes a later fragment (no ports): that rare case goes to selectors(inner).
            if flow is not None and not (
                flow(next_header, pair, plaintext, stop)
                if not (middle[2] & 0x1F or middle[3])
                else whole(inner)
            ):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += new_total
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return inner

    # IPv6 outside, without extension headers: the next header is ESP (or UDP, whose
    # length must be the payload length, as _skip_udp checks), and the payload length
    # ends the packet. Anything else (extension headers, octets after the payload, short
    # or odd packets) goes to the general method, which walks and checks them.
    esp6 = IPV6_HEADER_LEN + (UDP_HEADER_LEN if udp else 0)
    esp6_pair = slice(esp6, esp6 + ESP_HEADER_LEN)
    body6 = slice(esp6 + ESP_HEADER_LEN + 8, None)
    # Version/class/flow, payload length, next header, [UDP length,] SPI, sequence number
    # and IV; then as above. Transport mode keeps hop limit and addresses.
    tunnel6_head = _layout(f"!IHB33x{udp_part}II8s{rest + IPV4_HEADER_LEN}x")
    transport6_head = _layout(f"!IHBB32s{udp_part}II8s{rest}x")
    inner6_length = _U16.unpack_from  # at offset 4: the payload length of an inner IPv6
    trailers6 = _TUNNEL6_TRAILERS

    def unprotect_tunnel6(packet: bytes) -> bytes:
        try:
            if udp:
                vtf, length, proto, udp_len, spi_in, seq, iv = tunnel6_head.unpack_from(packet)
            else:
                vtf, length, proto, spi_in, seq, iv = tunnel6_head.unpack_from(packet)
                udp_len = length
        except struct.error:
            return general(packet)
        if (
            vtf >> 28 != 6
            or proto != outer_proto
            or length + IPV6_HEADER_LEN != len(packet)
            or spi_in != spi
            or udp_len != length
        ):
            return general(packet)
        try:
            if sa.expired:
                raise Expired(_HARD)
            if esn:
                seq = window.infer(seq)
            top = window.top
            if seq <= top:
                window.check(seq)
            try:
                plaintext = decrypt(
                    salt + iv,
                    packet[body6],
                    spi_bytes + seq.to_bytes(8, "big") if esn else packet[esp6_pair],
                )
            except InvalidTag:
                raise AuthenticationFailed("ESP ICV mismatch") from None
            if seq == top + 1:
                slots[seq & mask] = 1
                window.top = seq
            else:
                window.update(seq)
            # As unprotect_tunnel, for an inner IPv4 or IPv6 packet.
            vihl, total = inner_head(plaintext)
            if (
                vihl == 0x45
                and total >= IPV4_HEADER_LEN
                and plaintext[total:] == trailers4[total & 3]
            ) or (
                vihl >> 4 == 6
                and plaintext[(total := IPV6_HEADER_LEN + inner6_length(plaintext, 4)[0]) :]
                == trailers6[total & 3]
            ):
                inner = plaintext[:total]
            else:
                next_header, stop = _trailer(plaintext, check_padding)
                inner = _tunnel_inner(next_header, plaintext, stop)
                total = len(inner)
            if selectors is not None and not selectors(inner):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += total
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return inner

    def unprotect_transport6(packet: bytes) -> bytes:
        try:
            if udp:
                vtf, length, proto, hop_limit, pair, udp_len, spi_in, seq, iv = (
                    transport6_head.unpack_from(packet)
                )
            else:
                vtf, length, proto, hop_limit, pair, spi_in, seq, iv = transport6_head.unpack_from(
                    packet
                )
                udp_len = length
        except struct.error:
            return general(packet)
        if (
            vtf >> 28 != 6
            or proto != outer_proto
            or length + IPV6_HEADER_LEN != len(packet)
            or spi_in != spi
            or udp_len != length
        ):
            return general(packet)
        try:
            if sa.expired:
                raise Expired(_HARD)
            if esn:
                seq = window.infer(seq)
            top = window.top
            if seq <= top:
                window.check(seq)
            try:
                plaintext = decrypt(
                    salt + iv,
                    packet[body6],
                    spi_bytes + seq.to_bytes(8, "big") if esn else packet[esp6_pair],
                )
            except InvalidTag:
                raise AuthenticationFailed("ESP ICV mismatch") from None
            if seq == top + 1:
                slots[seq & mask] = 1
                window.top = seq
            else:
                window.update(seq)
            # RFC 4303 2.4 trailer, as _trailer() checks it.
            pad = plaintext[-2]
            stop = len(plaintext) - 2 - pad
            if stop < 0:
                raise Malformed("ESP pad length exceeds the payload")
            if pad and check_padding and plaintext[stop:-2] != _PADDINGS[pad]:
                raise Malformed("ESP padding is not the default monotonic sequence")
            next_header = plaintext[-1]
            if next_header == IPPROTO_NONE:
                raise DummyPacket("dummy packet (next header 59)")
            # The outer header with the inner next header and length (as ipv6_rewrite),
            # the selectors on the whole inner packet (as the general method).
            inner = _V6_FIELDS.pack(vtf, stop, next_header, hop_limit, pair) + plaintext[:stop]
            if selectors is not None and not selectors(inner):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += IPV6_HEADER_LEN + stop
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return inner

    return unprotect_tunnel if sa._tunnel else unprotect_transport


def _fast_decapsulate(sa: EspSA, window: ReplayWindow, flow: _FlowCheck | None) -> _DecapsulatePath:
    """``sa.decapsulate`` for a combined-mode transform and anti-replay on. Tunnel mode
    does not need the outer addresses; transport mode takes IPv4 and IPv6 ones. Short and
    the rest go to :meth:`EspSA.decapsulate`."""
    general = partial(EspSA.decapsulate, sa)
    decrypt = sa._aead_decrypt
    salt = sa._salt
    spi_bytes = sa._spi_bytes
    spi = sa.spi
    esn = sa._esn
    slots = window.slots
    mask = window.ring_mask
    stats = sa.stats
    selectors = sa._selector_check
    # Transport mode: as in _fast_unprotect, the selector fields without parsing the
    # inner packet (its addresses are ``src`` and ``dst``, and it is never a fragment).
    check_padding = sa._check_padding
    nat = sa.config.nat_original if sa._encap is not None else None
    # SPI, sequence number and IV; the size asks for a trailer, the ICV and, in tunnel
    # mode, an inner IPv4 header.
    rest = 2 + sa._icv_len
    tunnel_head = _layout(f"!II8s{rest + IPV4_HEADER_LEN}x")
    inner_head = _VERSION_LENGTH.unpack_from
    trailers4 = _TUNNEL4_TRAILERS
    transport_head = _layout(f"!II8s{rest}x")
    # Transport mode: the outer addresses of the last call (None before the first: no
    # address is taken unchecked), and their words' sum (RFC 1071).
    last_src: bytes | None = None
    last_dst: bytes | None = None
    addresses = b""
    address_sum = 0
    v6 = False  # the last addresses are IPv6 ones
    whole = typing.cast("Callable[[bytes], bool]", selectors)  # called only with ``flow``

    def decapsulate_tunnel(esp: bytes, src: bytes, dst: bytes, ttl: int = 64) -> bytes:
        try:
            spi_in, seq, iv = tunnel_head.unpack_from(esp)
        except struct.error:
            return general(esp, src, dst, ttl)
        if spi_in != spi:
            return general(esp, src, dst, ttl)
        try:
            if sa.expired:
                raise Expired(_HARD)
            if esn:
                seq = window.infer(seq)
            top = window.top
            if seq <= top:
                window.check(seq)
            try:
                plaintext = decrypt(
                    salt + iv, esp[_BODY], spi_bytes + seq.to_bytes(8, "big") if esn else esp[_PAIR]
                )
            except InvalidTag:
                raise AuthenticationFailed("ESP ICV mismatch") from None
            if seq == top + 1:
                slots[seq & mask] = 1
                window.top = seq
            else:
                window.update(seq)
            vihl, total = inner_head(plaintext)
            if (
                vihl == 0x45
                and total >= IPV4_HEADER_LEN
                and plaintext[total:] == trailers4[total & 3]
            ):
                inner = plaintext[:total]
            else:
                next_header, stop = _trailer(plaintext, check_padding)
                inner = _tunnel_inner(next_header, plaintext, stop)
                total = len(inner)
            if selectors is not None and not selectors(inner):
                raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += total
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return inner

    def decapsulate_transport(esp: bytes, src: bytes, dst: bytes, ttl: int = 64) -> bytes:
        nonlocal last_src, last_dst, addresses, address_sum, v6
        if src != last_src or dst != last_dst:
            if len(src) == 4 and len(dst) == 4:
                v6 = False
            elif len(src) == 16 and len(dst) == 16:
                v6 = True
            else:
                return general(esp, src, dst, ttl)
            last_src, last_dst = src, dst
            addresses = src + dst
            address_sum = int.from_bytes(addresses, "big")  # congruent mod 0xFFFF
        try:
            spi_in, seq, iv = transport_head.unpack_from(esp)
        except struct.error:
            return general(esp, src, dst, ttl)
        if spi_in != spi:
            return general(esp, src, dst, ttl)
        try:
            if sa.expired:
                raise Expired(_HARD)
            if esn:
                seq = window.infer(seq)
            top = window.top
            if seq <= top:
                window.check(seq)
            try:
                plaintext = decrypt(
                    salt + iv, esp[_BODY], spi_bytes + seq.to_bytes(8, "big") if esn else esp[_PAIR]
                )
            except InvalidTag:
                raise AuthenticationFailed("ESP ICV mismatch") from None
            if seq == top + 1:
                slots[seq & mask] = 1
                window.top = seq
            else:
                window.update(seq)
            # RFC 4303 2.4 trailer, as _trailer() checks it.
            pad = plaintext[-2]
            stop = len(plaintext) - 2 - pad
            if stop < 0:
                raise Malformed("ESP pad length exceeds the payload")
            if pad and check_padding and plaintext[stop:-2] != _PADDINGS[pad]:
                raise Malformed("ESP padding is not the default monotonic sequence")
            next_header = plaintext[-1]
            if next_header == IPPROTO_NONE:
                raise DummyPacket("dummy packet (next header 59)")
            if v6:
                # IPv6Header(src, dst, next_header, hop_limit=ttl).pack(stop); the selectors
                # (RFC 4301 5.2) on the whole packet, as the general method checks them.
                total = IPV6_HEADER_LEN + stop
                inner = (
                    _V6_FIELDS.pack(_V6_VERSION, stop, next_header, ttl, addresses)
                    + plaintext[:stop]
                )
                if flow is not None and not whole(inner):
                    raise SelectorMismatch("inner packet does not match the SA's selectors")
            else:
                # IPv4Header(src, dst, next_header, ttl=ttl).pack(stop) gives: TOS 0, id 0,
                # DF, the checksum over 0x4500, length, DF, TTL/protocol and addresses.
                total = IPV4_HEADER_LEN + stop
                words = 0x4500 + total + IPV4_FLAG_DF + (ttl << 8 | next_header) + address_sum
                header = _V4_FIELDS.pack(
                    0x45, 0, total, 0, IPV4_FLAG_DF, ttl, next_header,
                    0xFFFE - (words - 1) % 0xFFFF, addresses,
                )  # fmt: skip
                inner = header + plaintext[:stop]
                if nat is not None:  # RFC 3948 3.1.2: a new checksum, same selector fields
                    inner = _nat_fixup(inner, IPV4_HEADER_LEN, next_header, nat)
                # selectors(inner), without parsing inner: its transport header is
                # plaintext[:stop].
                if flow is not None and not flow(next_header, addresses, plaintext, stop):
                    raise SelectorMismatch("inner packet does not match the SA's selectors")
        except PacketDropped as exc:
            stats.drop(exc.reason)
            raise
        stats.packets += 1
        stats.bytes += total
        if stats.bytes >= sa._byte_mark or stats.packets >= sa._packet_mark:
            sa._account_slow()
        return inner

    return decapsulate_tunnel if sa._tunnel else decapsulate_transport
