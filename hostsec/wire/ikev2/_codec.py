"""Small helpers shared by the IKEv2 payload codecs (not public)."""

from __future__ import annotations

from hostsec.wire.errors import MalformedPacket

Buffer = bytes | bytearray | memoryview


def u16(data: Buffer, offset: int) -> int:
    """The big-endian 16-bit number at ``offset`` (the caller checked the length)."""
    return data[offset] << 8 | data[offset + 1]


def need(available: int, length: int, what: str) -> None:
    """Raise :class:`MalformedPacket` unless ``available`` octets cover ``length``."""
    if available < length:
        raise MalformedPacket(f"{what} truncated ({available} of {length} octets)")


def check_range(value: int, bits: int, what: str) -> None:
    """ValueError (an encoding bug, not bad input) unless ``value`` fits in ``bits`` bits."""
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{what} must fit in {bits} bits (got {value})")
