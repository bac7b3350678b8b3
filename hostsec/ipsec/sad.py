"""The Security Association Database, inbound side (RFC 4301 4.4.2).

Inbound packets find their SA by protocol and SPI (hostsec allocates its inbound SPIs, so
the SPI alone is unique per protocol, RFC 4301 4.1). A bundle is reachable only through
its outer (AH) SPI: a bare ESP packet cannot skip the AH that its policy requires.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.ah import AhSA
from hostsec.ipsec.bundle import Bundle
from hostsec.ipsec.errors import DropReason, Malformed, PacketDropped, UnknownSPI
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import SAConfig
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ip import (
    IPPROTO_AH,
    IPPROTO_ESP,
    IPPROTO_UDP,
    ipv4_header_length,
    ipv4_total_length,
    walk_ipv6,
)
from hostsec.wire.udpencap import UDP_HEADER_LEN

InboundEntry = EspSA | AhSA | Bundle
_STOP = frozenset({IPPROTO_ESP, IPPROTO_AH, IPPROTO_UDP})
_SPI = struct.Struct("!I4x")  # the SPI of an ESP packet at least 8 octets long
# IPv4 without options carrying ESP: version/IHL, total length, protocol, SPI and 4 more
# octets (what entry_for checks before its lookup).
_V4_ESP_SPI = struct.Struct("!BxH5xB10xI4x")


def create_sa(config: SAConfig, now: float) -> EspSA | AhSA:
    """An SA object for ``config``."""
    if config.protocol is Protocol.ESP:
        return EspSA(config, now)
    return AhSA(config, now)


class SAD:
    """Inbound SAs by (protocol, SPI), with counters for packets that found none."""

    def __init__(self) -> None:
        self._esp: dict[int, EspSA] = {}
        self._ah: dict[int, AhSA | Bundle] = {}
        self.drops: dict[DropReason, int] = {}

    def __len__(self) -> int:
        return len(self._esp) + len(self._ah)

    def add(self, entry: InboundEntry) -> None:
        if isinstance(entry, EspSA):
            if entry.spi in self._esp:
                raise ValueError(f"inbound SPI 0x{entry.spi:08x} is already in use")
            self._esp[entry.spi] = entry
            return
        spi = entry.ah.spi if isinstance(entry, Bundle) else entry.spi
        if spi in self._ah:
            raise ValueError(f"inbound SPI 0x{spi:08x} is already in use")
        self._ah[spi] = entry

    def remove(self, protocol: Protocol, spi: int) -> InboundEntry | None:
        if protocol is Protocol.AH:
            return self._ah.pop(spi, None)
        return self._esp.pop(spi, None)

    def entries(self) -> list[InboundEntry]:
        return [*self._esp.values(), *self._ah.values()]

    def lookup(self, protocol: Protocol, spi: int) -> InboundEntry | None:
        if protocol is Protocol.AH:
            return self._ah.get(spi)
        return self._esp.get(spi)

    def _count(self, exc: PacketDropped) -> None:
        self.drops[exc.reason] = self.drops.get(exc.reason, 0) + 1

    def entry_for(self, packet: bytes) -> InboundEntry:
        """The SA (or bundle) an inbound IP packet is for, by its outermost ESP/AH SPI."""
        try:
            try:
                if not packet:
                    raise Malformed("empty packet")
                if packet[0] >> 4 == 4:
                    offset = ipv4_header_length(packet)
                    end = ipv4_total_length(packet)
                    protocol = packet[9]
                elif packet[0] >> 4 == 6:
                    layout = walk_ipv6(packet, _STOP)
                    offset, end, protocol = layout.upper_offset, layout.end, layout.upper_protocol
                else:
                    raise Malformed("not an IP packet")
            except MalformedPacket as exc:
                raise Malformed(exc.reason) from None
            if protocol == IPPROTO_UDP:
                offset += UDP_HEADER_LEN
                protocol = IPPROTO_ESP
            entry: InboundEntry | None
            if protocol == IPPROTO_ESP:
                if end - offset < 8:
                    raise Malformed("ESP header truncated")
                spi = int.from_bytes(packet[offset : offset + 4], "big")
                entry = self._esp.get(spi)
            elif protocol == IPPROTO_AH:
                if end - offset < 12:
                    raise Malformed("AH header truncated")
                spi = int.from_bytes(packet[offset + 4 : offset + 8], "big")
                entry = self._ah.get(spi)
            else:
                raise Malformed("neither ESP nor AH")
            if entry is None:
                raise UnknownSPI(f"no inbound SA with SPI 0x{spi:08x}")
        except PacketDropped as exc:
            self._count(exc)
            raise
        return entry

    def unprotect(self, packet: bytes) -> bytes:
        """Find the SA of a received packet and unprotect it: the inner packet, or a drop."""
        # The common case first: IPv4 without options carrying ESP for a known SPI, with
        # the checks entry_for() makes (total length within the packet, room for the SPI
        # and the sequence number); everything else through entry_for().
        try:
            first, total, protocol, spi = _V4_ESP_SPI.unpack_from(packet)
        except struct.error:
            return self.entry_for(packet).unprotect(packet)
        if first == 0x45 and protocol == IPPROTO_ESP and total <= len(packet) and total >= 28:
            entry = self._esp.get(spi)
            if entry is not None:
                return entry.unprotect(packet)
        return self.entry_for(packet).unprotect(packet)

    def decapsulate(self, esp: bytes, src: bytes, dst: bytes, ttl: int = 64) -> bytes:
        """Unprotect ESP received without its IP header (UDP/4500 or a raw IPv6 socket);
        ``ttl``: the TTL or hop limit a transport-mode inner packet gets."""
        try:
            spi = _SPI.unpack_from(esp)[0]
        except struct.error:
            exc = Malformed("ESP header truncated")
            self._count(exc)
            raise exc from None
        entry = self._esp.get(spi)
        if entry is None:
            exc2 = UnknownSPI(f"no inbound SA with SPI 0x{spi:08x}")
            self._count(exc2)
            raise exc2
        return entry.decapsulate(esp, src, dst, ttl)

    # -- batches (a data path reading UDP_GRO or many raw packets per system call) ------
    #
    # Each packet is handled as by the single-packet method, with the same checks and
    # counters; a dropped packet is counted (here or by its SA) and left out of the result,
    # and the batch goes on.

    def unprotect_many(self, packets: Iterable[bytes]) -> list[bytes]:
        """:meth:`unprotect` for each packet: the inner packets that pass, in order."""
        out: list[bytes] = []
        append = out.append
        unprotect = self.unprotect
        for packet in packets:
            try:  # noqa: SIM105 (contextlib.suppress costs a context manager per packet)
                append(unprotect(packet))
            except PacketDropped:
                pass  # counted by the SAD or the SA
        return out

    def decapsulate_many(self, esps: Iterable[bytes], src: bytes, dst: bytes) -> list[bytes]:
        """:meth:`decapsulate` for each ESP packet (all from outer ``src`` to ``dst``, as
        one UDP_GRO read gives them): the inner packets that pass, in order."""
        out: list[bytes] = []
        append = out.append
        table = self._esp
        for esp in esps:
            try:
                spi = _SPI.unpack_from(esp)[0]
            except struct.error:
                self._count(Malformed("ESP header truncated"))
                continue
            entry = table.get(spi)
            if entry is None:
                self._count(UnknownSPI(f"no inbound SA with SPI 0x{spi:08x}"))
                continue
            try:  # noqa: SIM105 (contextlib.suppress costs a context manager per packet)
                append(entry.decapsulate(esp, src, dst))
            except PacketDropped:
                pass  # counted by the SA
        return out
