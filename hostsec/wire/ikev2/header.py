"""The IKE header (RFC 7296 3.1)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2.constants import ExchangeType, HeaderFlags, as_enum
from hostsec.wire.ikev2.errors import InvalidMajorVersion

#: SPIi, SPIr, Next Payload, MjVer|MnVer, Exchange Type, Flags, Message ID, Length.
IKE_HEADER = struct.Struct("!8s8sBBBBII")
IKE_HEADER_LEN = IKE_HEADER.size  # 28
SPI_LEN = 8
IKE_MAJOR_VERSION = 2


@dataclass(frozen=True, slots=True)
class IKEHeader:
    """The fixed IKE header without its two derived fields.

    Next Payload and Length are computed by :func:`encode_message` from the payloads, so
    they are not kept here. ``flags`` is a :class:`HeaderFlags` value (I = 0x08, V = 0x10,
    R = 0x20); ``minor_version`` is kept for round trips but MUST be ignored on receipt.
    """

    spi_i: bytes
    spi_r: bytes
    exchange_type: int
    message_id: int
    flags: int = 0
    major_version: int = IKE_MAJOR_VERSION
    minor_version: int = 0

    def __post_init__(self) -> None:
        if len(self.spi_i) != SPI_LEN or len(self.spi_r) != SPI_LEN:
            raise ValueError("IKE SPIs are 8 octets")
        if not 0 <= self.exchange_type <= 0xFF or not 0 <= self.flags <= 0xFF:
            raise ValueError("exchange type and flags are one octet each")
        if not 0 <= self.message_id <= 0xFFFFFFFF:
            raise ValueError("the message ID is a 32-bit number")
        if not 0 <= self.major_version <= 0xF or not 0 <= self.minor_version <= 0xF:
            raise ValueError("versions are 4-bit numbers")

    @property
    def initiator(self) -> bool:
        """The I flag: sent by the original initiator of the IKE SA."""
        return bool(self.flags & HeaderFlags.INITIATOR)

    @property
    def response(self) -> bool:
        """The R flag: this message is a response."""
        return bool(self.flags & HeaderFlags.RESPONSE)

    @property
    def version_flag(self) -> bool:
        """The V flag: the sender could speak a higher major version."""
        return bool(self.flags & HeaderFlags.VERSION)

    def encode(self, next_payload: int, length: int) -> bytes:
        """The 28 header octets with the given Next Payload and Length."""
        if not 0 <= next_payload <= 0xFF or not IKE_HEADER_LEN <= length <= 0xFFFFFFFF:
            raise ValueError("next payload or message length out of range")
        return IKE_HEADER.pack(
            self.spi_i,
            self.spi_r,
            next_payload,
            self.major_version << 4 | self.minor_version,
            self.exchange_type,
            self.flags,
            self.message_id,
            length,
        )


def decode_header(data: bytes | bytearray | memoryview) -> tuple[IKEHeader, int, int]:
    """(header, Next Payload, Length) of the first 28 octets, with the version checked.

    Raises :class:`InvalidMajorVersion` for a major version other than 2 and
    :class:`MalformedPacket` for fewer than 28 octets or a Length below 28. The Length is
    not compared with the data here; :func:`parse_header` does that.
    """
    if len(data) < IKE_HEADER_LEN:
        raise MalformedPacket("IKE header truncated")
    spi_i, spi_r, next_payload, version, exchange, flags, message_id, length = (
        IKE_HEADER.unpack_from(data)
    )
    header = IKEHeader(
        spi_i=spi_i,
        spi_r=spi_r,
        exchange_type=as_enum(ExchangeType, exchange),
        message_id=message_id,
        flags=flags,
        major_version=version >> 4,
        minor_version=version & 0x0F,
    )
    if header.major_version != IKE_MAJOR_VERSION:
        raise InvalidMajorVersion(header)
    if length < IKE_HEADER_LEN:
        raise MalformedPacket(f"IKE message length {length} is shorter than its header")
    return header, next_payload, length


def parse_header(datagram: bytes | bytearray | memoryview) -> IKEHeader:
    """The IKE header of a datagram, checked: version 2, Length equal to the datagram's.

    Cheap: for dispatch (find the IKE SA by SPI, check the message ID) before the payloads
    are parsed or decrypted.
    """
    header, _next, length = decode_header(datagram)
    if length != len(datagram):
        raise MalformedPacket(
            f"IKE message length {length} does not match the datagram ({len(datagram)} octets)"
        )
    return header
