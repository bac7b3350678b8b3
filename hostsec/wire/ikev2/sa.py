"""The Security Association payload: proposals, transforms, attributes (RFC 7296 3.3).

Every length and count is checked against the octets at hand. Transform attributes
(3.3.5): the Key Length attribute (type 14) MUST use the TV form, so a TLV-encoded or
repeated Key Length is malformed; attributes of other (unknown) types are kept as they came
(TV value as an ``int``, TLV value as ``bytes``) so that a responder can refuse the
transform or proposal that carries them, as RFC 7296 3.3.6 asks, instead of failing the
whole message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2._codec import Buffer, check_range, need, u16
from hostsec.wire.ikev2.constants import ATTRIBUTE_KEY_LENGTH, ProtocolId, as_enum

#: Last Substruc, RESERVED, Proposal Length, Proposal Num, Protocol ID, SPI Size, #Transforms.
PROPOSAL_HEADER = struct.Struct("!BBHBBBB")
#: Last Substruc, RESERVED, Transform Length, Transform Type, RESERVED, Transform ID.
TRANSFORM_HEADER = struct.Struct("!BBHBBH")
_ATTR_HEADER = struct.Struct("!HH")
LAST = 0
MORE_PROPOSALS = 2
MORE_TRANSFORMS = 3
_AF = 0x8000


@dataclass(frozen=True, slots=True)
class TransformAttribute:
    """One transform attribute: ``value`` an int for the TV form (AF = 1), bytes for TLV."""

    attribute_type: int
    value: int | bytes

    def __post_init__(self) -> None:
        check_range(self.attribute_type, 15, "attribute type")
        if isinstance(self.value, int):
            check_range(self.value, 16, "TV attribute value")
        else:
            check_range(len(self.value), 16, "TLV attribute length")

    @property
    def tv(self) -> bool:
        return isinstance(self.value, int)

    def encode(self) -> bytes:
        if isinstance(self.value, int):
            return _ATTR_HEADER.pack(_AF | self.attribute_type, self.value)
        return _ATTR_HEADER.pack(self.attribute_type, len(self.value)) + bytes(self.value)


@dataclass(frozen=True, slots=True)
class Transform:
    """Transform Substructure (3.3.2): type, ID and attributes in wire order."""

    transform_type: int
    transform_id: int
    attributes: tuple[TransformAttribute, ...] = ()

    def __post_init__(self) -> None:
        check_range(self.transform_type, 8, "transform type")
        check_range(self.transform_id, 16, "transform ID")
        if sum(1 for a in self.attributes if a.attribute_type == ATTRIBUTE_KEY_LENGTH) > 1:
            raise ValueError("a transform carries at most one Key Length attribute")
        if any(a.attribute_type == ATTRIBUTE_KEY_LENGTH and not a.tv for a in self.attributes):
            raise ValueError("Key Length is a TV attribute (RFC 7296 3.3.5)")

    @classmethod
    def make(
        cls, transform_type: int, transform_id: int, key_length: int | None = None
    ) -> Transform:
        """A transform, with a Key Length attribute (in bits) when ``key_length`` is given."""
        if key_length is None:
            return cls(transform_type, transform_id)
        return cls(
            transform_type, transform_id, (TransformAttribute(ATTRIBUTE_KEY_LENGTH, key_length),)
        )

    @property
    def key_length(self) -> int | None:
        """The Key Length attribute in bits, or None."""
        for attr in self.attributes:
            if attr.attribute_type == ATTRIBUTE_KEY_LENGTH and isinstance(attr.value, int):
                return attr.value
        return None

    @property
    def unknown_attributes(self) -> tuple[TransformAttribute, ...]:
        """Attributes other than Key Length: a responder MUST NOT pick this transform."""
        return tuple(a for a in self.attributes if a.attribute_type != ATTRIBUTE_KEY_LENGTH)

    def encode(self, last: bool) -> bytes:
        attrs = b"".join(a.encode() for a in self.attributes)
        length = TRANSFORM_HEADER.size + len(attrs)
        check_range(length, 16, "transform length")
        head = TRANSFORM_HEADER.pack(
            LAST if last else MORE_TRANSFORMS,
            0,
            length,
            self.transform_type,
            0,
            self.transform_id,
        )
        return head + attrs


@dataclass(frozen=True, slots=True)
class SAProposal:
    """Proposal Substructure (3.3.1): number, protocol, SPI and transforms.

    ``spi`` is empty in an initial IKE_SA_INIT, 8 octets for an IKE SA rekey, 4 for ESP
    and AH; the codec takes any SPI Size and leaves that check to the protocol logic.
    """

    number: int
    protocol: int
    spi: bytes = b""
    transforms: tuple[Transform, ...] = ()

    def __post_init__(self) -> None:
        check_range(self.number, 8, "proposal number")
        check_range(self.protocol, 8, "protocol ID")
        check_range(len(self.spi), 8, "SPI size")
        check_range(len(self.transforms), 8, "number of transforms")

    def encode(self, last: bool) -> bytes:
        count = len(self.transforms)
        body = b"".join(t.encode(i == count - 1) for i, t in enumerate(self.transforms))
        length = PROPOSAL_HEADER.size + len(self.spi) + len(body)
        check_range(length, 16, "proposal length")
        head = PROPOSAL_HEADER.pack(
            LAST if last else MORE_PROPOSALS,
            0,
            length,
            self.number,
            self.protocol,
            len(self.spi),
            count,
        )
        return head + self.spi + body


def encode_proposals(proposals: tuple[SAProposal, ...]) -> bytes:
    """The body of an SA payload."""
    count = len(proposals)
    return b"".join(p.encode(i == count - 1) for i, p in enumerate(proposals))


def decode_proposals(body: Buffer) -> tuple[SAProposal, ...]:
    """Parse the body of an SA payload: one or more proposals, exactly filling it."""
    if not body:
        raise MalformedPacket("SA payload without proposals")
    proposals: list[SAProposal] = []
    offset = 0
    end = len(body)
    while offset < end:
        need(end - offset, PROPOSAL_HEADER.size, "proposal header")
        last, _res, length, number, protocol, spi_size, count = PROPOSAL_HEADER.unpack_from(
            body, offset
        )
        if length < PROPOSAL_HEADER.size + spi_size or offset + length > end:
            raise MalformedPacket(f"bad proposal length {length}")
        final = offset + length == end
        if last != (LAST if final else MORE_PROPOSALS):
            raise MalformedPacket(f"proposal {number}: Last Substruc {last} contradicts the length")
        start = offset + PROPOSAL_HEADER.size
        spi = bytes(body[start : start + spi_size])
        transforms = _decode_transforms(body[start + spi_size : offset + length], count, number)
        proposals.append(SAProposal(number, as_enum(ProtocolId, protocol), spi, transforms))
        offset += length
    return tuple(proposals)


def _decode_transforms(data: Buffer, count: int, number: int) -> tuple[Transform, ...]:
    transforms: list[Transform] = []
    offset = 0
    end = len(data)
    while offset < end:
        need(end - offset, TRANSFORM_HEADER.size, "transform header")
        last, _r1, length, ttype, _r2, tid = TRANSFORM_HEADER.unpack_from(data, offset)
        if length < TRANSFORM_HEADER.size or offset + length > end:
            raise MalformedPacket(f"proposal {number}: bad transform length {length}")
        final = offset + length == end
        if last != (LAST if final else MORE_TRANSFORMS):
            raise MalformedPacket(
                f"proposal {number}: transform Last Substruc {last} contradicts the length"
            )
        attrs = _decode_attributes(data[offset + TRANSFORM_HEADER.size : offset + length])
        transforms.append(Transform(ttype, tid, attrs))
        offset += length
    if len(transforms) != count:
        raise MalformedPacket(
            f"proposal {number} announces {count} transforms but holds {len(transforms)}"
        )
    return tuple(transforms)


def _decode_attributes(data: Buffer) -> tuple[TransformAttribute, ...]:
    attrs: list[TransformAttribute] = []
    offset = 0
    end = len(data)
    while offset < end:
        need(end - offset, _ATTR_HEADER.size, "transform attribute")
        word = u16(data, offset)
        atype = word & ~_AF & 0xFFFF
        if word & _AF:
            value: int | bytes = u16(data, offset + 2)
            offset += 4
        else:
            length = u16(data, offset + 2)
            if offset + 4 + length > end:
                raise MalformedPacket(f"transform attribute {atype} overruns its transform")
            if atype == ATTRIBUTE_KEY_LENGTH:
                raise MalformedPacket("Key Length attribute in TLV form (RFC 7296 3.3.5)")
            value = bytes(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
        if atype == ATTRIBUTE_KEY_LENGTH and any(a.attribute_type == atype for a in attrs):
            raise MalformedPacket("repeated Key Length attribute")
        attrs.append(TransformAttribute(atype, value))
    return tuple(attrs)
