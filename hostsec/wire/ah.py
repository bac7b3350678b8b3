"""AH header (RFC 4302 section 2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hostsec.wire.errors import MalformedPacket

#: Next Header, Payload Len, Reserved, SPI, Sequence Number; then the ICV.
AH_FIXED = struct.Struct("!BBHII")
AH_FIXED_LEN = AH_FIXED.size  # 12


def ah_icv_padding(icv_len: int, ipv6: bool) -> int:
    """Octets of padding after the ICV: the header is a multiple of 32 bits for IPv4 and of
    64 bits for IPv6 (RFC 4302 2.6, 3.3.3.2.1)."""
    alignment = 8 if ipv6 else 4
    return -(AH_FIXED_LEN + icv_len) % alignment


@dataclass(frozen=True, slots=True)
class AHHeader:
    next_header: int
    spi: int
    seq: int
    icv: bytes  # ICV including any alignment padding

    @property
    def length(self) -> int:
        return AH_FIXED_LEN + len(self.icv)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> AHHeader:
        if len(data) < offset + AH_FIXED_LEN:
            raise MalformedPacket("AH header truncated")
        nh, plen, _reserved, spi, seq = AH_FIXED.unpack_from(data, offset)
        length = (plen + 2) * 4  # RFC 4302 2.2: in 32-bit words, minus 2
        if length < AH_FIXED_LEN or offset + length > len(data):
            raise MalformedPacket("bad AH payload length")
        return cls(nh, spi, seq, bytes(data[offset + AH_FIXED_LEN : offset + length]))

    def pack(self) -> bytes:
        if (AH_FIXED_LEN + len(self.icv)) % 4:
            raise ValueError("AH length must be a multiple of 4 octets")
        plen = (AH_FIXED_LEN + len(self.icv)) // 4 - 2
        return AH_FIXED.pack(self.next_header, plen, 0, self.spi, self.seq) + self.icv
