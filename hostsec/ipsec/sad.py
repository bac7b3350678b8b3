"""The Security Association Database, inbound side (RFC 4301 4.4.2).

Inbound packets find their SA by protocol and SPI (hostsec allocates its inbound SPIs, so
the SPI alone is unique per protocol, RFC 4301 4.1). A bundle is reachable only through
its outer (AH) SPI: a bare ESP packet cannot skip the AH that its policy requires.
"""

from __future__ import annotations

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


def create_sa(config: SAConfig, now: float) -> EspSA | AhSA:
    """An SA object for ``config``."""
    if config.protocol is Protocol.ESP:
        return EspSA(config, now)
    return AhSA(config, now)


class SAD:
    """Inbound SAs by (protocol, SPI), with counters for packets that found none."""

    def __init__(self) -> None:
        self._esp: dict[int, InboundEntry] = {}
        self._ah: dict[int, InboundEntry] = {}
        self.drops: dict[DropReason, int] = {}

    def __len__(self) -> int:
        return len(self._esp) + len(self._ah)

    def add(self, entry: InboundEntry) -> None:
        if isinstance(entry, Bundle):
            table, spi = self._ah, entry.ah.spi
        elif isinstance(entry, AhSA):
            table, spi = self._ah, entry.spi
        else:
            table, spi = self._esp, entry.spi
        if spi in table:
            raise ValueError(f"inbound SPI 0x{spi:08x} is already in use")
        table[spi] = entry

    def remove(self, protocol: Protocol, spi: int) -> InboundEntry | None:
        table = self._ah if protocol is Protocol.AH else self._esp
        return table.pop(spi, None)

    def entries(self) -> list[InboundEntry]:
        return [*self._esp.values(), *self._ah.values()]

    def lookup(self, protocol: Protocol, spi: int) -> InboundEntry | None:
        table = self._ah if protocol is Protocol.AH else self._esp
        return table.get(spi)

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
        return self.entry_for(packet).unprotect(packet)

    def decapsulate(self, esp: bytes, src: bytes, dst: bytes) -> bytes:
        """Unprotect ESP received without its IP header (UDP/4500 or a raw IPv6 socket)."""
        if len(esp) < 8:
            exc = Malformed("ESP header truncated")
            self._count(exc)
            raise exc
        spi = int.from_bytes(esp[:4], "big")
        entry = self._esp.get(spi)
        if not isinstance(entry, EspSA):
            exc2 = UnknownSPI(f"no inbound SA with SPI 0x{spi:08x}")
            self._count(exc2)
            raise exc2
        return entry.decapsulate(esp, src, dst)
