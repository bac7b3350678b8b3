"""The IKEv2 payloads (RFC 7296 3.2-3.16, RFC 7383 2.5): one frozen dataclass each.

Every payload class has ``TYPE`` (its Payload Type), :meth:`Payload.encode_body` (the
octets after the 4-octet generic payload header) and :meth:`Payload.decode_body` (the
reverse, raising :class:`MalformedPacket` with a reason for anything that does not parse).
The generic header itself, the Next Payload chaining and the lengths are handled by
:mod:`hostsec.wire.ikev2.message`.

``critical`` is the C bit of the generic header as received. RFC 7296 3.2: the receiver
ignores it for payload types it knows, and senders MUST leave it clear for the types of
RFC 7296; it matters for :class:`UnknownPayload`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Self

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2._codec import Buffer, check_range, need, u16
from hostsec.wire.ikev2.constants import (
    AuthMethod,
    CertEncoding,
    CfgType,
    ConfigAttributeType,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    as_enum,
    is_error_notify,
)
from hostsec.wire.ikev2.sa import SAProposal, decode_proposals, encode_proposals
from hostsec.wire.ikev2.ts import (
    TrafficSelectorEntry,
    TSAddressRange,
    decode_selectors,
    encode_selectors,
)
from hostsec.wire.selectors import TrafficSelector

#: Next Payload, C|RESERVED, Payload Length.
GENERIC_HEADER = struct.Struct("!BBH")
GENERIC_HEADER_LEN = GENERIC_HEADER.size
CRITICAL = 0x80
NONCE_MIN = 16
NONCE_MAX = 256
#: SHA-1 hashes in CERTREQ (3.7) and in Hash and URL (3.6).
SHA1_LEN = 20


@dataclass(frozen=True, slots=True)
class Payload:
    """Base of every payload."""

    TYPE: ClassVar[int] = PayloadType.NONE
    critical: bool = field(default=False, kw_only=True)

    @property
    def payload_type(self) -> int:
        return self.TYPE

    def encode_body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        raise NotImplementedError


# ---------------------------------------------------------------------------
# SA, KE


@dataclass(frozen=True, slots=True)
class SA(Payload):
    """Security Association payload (3.3): one or more proposals."""

    TYPE: ClassVar[int] = PayloadType.SA
    proposals: tuple[SAProposal, ...]

    def encode_body(self) -> bytes:
        return encode_proposals(self.proposals)

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        return cls(decode_proposals(body))


@dataclass(frozen=True, slots=True)
class KE(Payload):
    """Key Exchange payload (3.4): Diffie-Hellman Group Num and the public value."""

    TYPE: ClassVar[int] = PayloadType.KE
    dh_group: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.dh_group, 16, "DH group")

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.dh_group, 0) + self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 4, "KE payload")
        return cls(u16(body, 0), bytes(body[4:]))


# ---------------------------------------------------------------------------
# Identification, certificates, authentication


@dataclass(frozen=True, slots=True)
class _Identification(Payload):
    """IDi / IDr (3.5): ID Type and Identification Data."""

    id_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.id_type, 8, "ID type")
        _check_id(self.id_type, self.data, ValueError)

    @property
    def rest_of_payload(self) -> bytes:
        """IDType | RESERVED | IDData: the octets RFC 7296 2.15 signs (RestOfInitIDPayload)."""
        return self.encode_body()

    def encode_body(self) -> bytes:
        return bytes((self.id_type, 0, 0, 0)) + self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 4, "ID payload")
        id_type, data = body[0], bytes(body[4:])
        _check_id(id_type, data, MalformedPacket)
        return cls(as_enum(IdType, id_type), data)

    @classmethod
    def from_address(cls, address: bytes) -> Self:
        """ID_IPV4_ADDR or ID_IPV6_ADDR from a packed address."""
        kind = IdType.ID_IPV4_ADDR if len(address) == 4 else IdType.ID_IPV6_ADDR
        return cls(kind, address)

    @classmethod
    def from_fqdn(cls, name: str) -> Self:
        return cls(IdType.ID_FQDN, name.encode("ascii"))

    @classmethod
    def from_rfc822(cls, address: str) -> Self:
        return cls(IdType.ID_RFC822_ADDR, address.encode("ascii"))

    def __str__(self) -> str:
        if self.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            return self.data.decode("ascii", "backslashreplace")
        return f"{as_enum(IdType, self.id_type)!s}:{self.data.hex()}"


def _check_id(id_type: int, data: bytes, error: type[Exception]) -> None:
    if id_type == IdType.ID_IPV4_ADDR and len(data) != 4:
        raise error(f"ID_IPV4_ADDR of {len(data)} octets")
    if id_type == IdType.ID_IPV6_ADDR and len(data) != 16:
        raise error(f"ID_IPV6_ADDR of {len(data)} octets")


@dataclass(frozen=True, slots=True)
class IDi(_Identification):
    TYPE: ClassVar[int] = PayloadType.IDi


@dataclass(frozen=True, slots=True)
class IDr(_Identification):
    TYPE: ClassVar[int] = PayloadType.IDr


@dataclass(frozen=True, slots=True)
class CERT(Payload):
    """Certificate payload (3.6): Cert Encoding and the certificate octets, uninterpreted.

    For the Hash and URL encodings (12, 13) the data is a 20-octet SHA-1 hash and a URL.
    """

    TYPE: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.encoding, 8, "certificate encoding")

    def encode_body(self) -> bytes:
        return bytes((self.encoding,)) + self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 1, "CERT payload")
        encoding = body[0]
        hash_and_url = (CertEncoding.HASH_AND_URL_X509, CertEncoding.HASH_AND_URL_X509_BUNDLE)
        if encoding in hash_and_url and len(body) < 1 + SHA1_LEN:
            raise MalformedPacket("Hash and URL certificate without its hash")
        return cls(as_enum(CertEncoding, encoding), bytes(body[1:]))


@dataclass(frozen=True, slots=True)
class CERTREQ(Payload):
    """Certificate Request payload (3.7). For X.509 the data is SHA-1 hashes of CA keys."""

    TYPE: ClassVar[int] = PayloadType.CERTREQ
    encoding: int
    data: bytes = b""

    def __post_init__(self) -> None:
        check_range(self.encoding, 8, "certificate encoding")

    @classmethod
    def from_ca_hashes(cls, hashes: list[bytes] | tuple[bytes, ...]) -> Self:
        """An X.509 CERTREQ naming trust anchors by the SHA-1 hash of their public key."""
        if any(len(h) != SHA1_LEN for h in hashes):
            raise ValueError("CA key hashes are 20-octet SHA-1 values")
        return cls(CertEncoding.X509_SIGNATURE, b"".join(hashes))

    @property
    def ca_hashes(self) -> tuple[bytes, ...]:
        """The 20-octet CA public key hashes of an X.509 CERTREQ (empty for other encodings)."""
        if self.encoding != CertEncoding.X509_SIGNATURE:
            return ()
        return tuple(self.data[i : i + SHA1_LEN] for i in range(0, len(self.data), SHA1_LEN))

    def encode_body(self) -> bytes:
        return bytes((self.encoding,)) + self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 1, "CERTREQ payload")
        encoding, data = body[0], bytes(body[1:])
        if encoding == CertEncoding.X509_SIGNATURE and len(data) % SHA1_LEN:
            raise MalformedPacket("X.509 CERTREQ is not a list of 20-octet hashes")
        return cls(as_enum(CertEncoding, encoding), data)


@dataclass(frozen=True, slots=True)
class AUTH(Payload):
    """Authentication payload (3.8): Auth Method and Authentication Data.

    For Digital Signature (14, RFC 7427 3) the data is a one-octet length, the DER
    AlgorithmIdentifier, then the signature: see :meth:`signature_parts`.
    """

    TYPE: ClassVar[int] = PayloadType.AUTH
    method: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.method, 8, "auth method")

    @classmethod
    def digital_signature(cls, algorithm_identifier: bytes, signature: bytes) -> Self:
        """Auth Method 14 data: length of the AlgorithmIdentifier, it, the signature."""
        check_range(len(algorithm_identifier), 8, "AlgorithmIdentifier length")
        data = bytes((len(algorithm_identifier),)) + algorithm_identifier + signature
        return cls(AuthMethod.DIGITAL_SIGNATURE, data)

    def signature_parts(self) -> tuple[bytes, bytes]:
        """(AlgorithmIdentifier DER, signature) of a Digital Signature AUTH (RFC 7427 3)."""
        if self.method != AuthMethod.DIGITAL_SIGNATURE:
            raise ValueError("not a Digital Signature (14) AUTH payload")
        _check_signature(self.data)
        size = self.data[0]
        return self.data[1 : 1 + size], self.data[1 + size :]

    def encode_body(self) -> bytes:
        return bytes((self.method, 0, 0, 0)) + self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 4, "AUTH payload")
        method, data = body[0], bytes(body[4:])
        if method == AuthMethod.DIGITAL_SIGNATURE:
            _check_signature(data)
        return cls(as_enum(AuthMethod, method), data)


def _check_signature(data: bytes) -> None:
    if not data or 1 + data[0] > len(data):
        raise MalformedPacket("Digital Signature AUTH: AlgorithmIdentifier overruns the data")


# ---------------------------------------------------------------------------
# Nonce, Notify, Delete, Vendor ID


@dataclass(frozen=True, slots=True)
class Nonce(Payload):
    """Nonce payload, Ni or Nr (3.9): 16 to 256 octets."""

    TYPE: ClassVar[int] = PayloadType.NONCE
    data: bytes

    def __post_init__(self) -> None:
        if not NONCE_MIN <= len(self.data) <= NONCE_MAX:
            raise ValueError("a nonce is 16 to 256 octets")

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        if not NONCE_MIN <= len(body) <= NONCE_MAX:
            raise MalformedPacket(f"nonce of {len(body)} octets (RFC 7296 3.9: 16 to 256)")
        return cls(bytes(body))


@dataclass(frozen=True, slots=True)
class Notify(Payload):
    """Notify payload (3.10): Protocol ID, SPI, Notify Message Type, Notification Data.

    ``protocol`` is 0 when there is no SPI (RFC 7296 3.10: it MUST then be ignored).
    """

    TYPE: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    def __post_init__(self) -> None:
        check_range(self.notify_type, 16, "notify type")
        check_range(self.protocol, 8, "protocol ID")
        check_range(len(self.spi), 8, "SPI size")

    @property
    def is_error(self) -> bool:
        return is_error_notify(self.notify_type)

    def data_u16(self) -> int:
        """A 2-octet number as data (INVALID_KE_PAYLOAD: the DH group the responder wants)."""
        if len(self.data) != 2:
            raise MalformedPacket(f"notify {self.notify_type}: {len(self.data)} octets, not 2")
        return u16(self.data, 0)

    def data_u16_list(self) -> tuple[int, ...]:
        """A list of 2-octet numbers (SIGNATURE_HASH_ALGORITHMS, RFC 7427 4)."""
        if len(self.data) % 2:
            raise MalformedPacket(f"notify {self.notify_type}: odd data length")
        return tuple(u16(self.data, i) for i in range(0, len(self.data), 2))

    @classmethod
    def invalid_ke_payload(cls, dh_group: int) -> Self:
        return cls(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", dh_group))

    @classmethod
    def unsupported_critical_payload(cls, payload_type: int) -> Self:
        return cls(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes((payload_type,)))

    @classmethod
    def signature_hash_algorithms(cls, algorithms: list[int] | tuple[int, ...]) -> Self:
        data = b"".join(struct.pack("!H", a) for a in algorithms)
        return cls(NotifyType.SIGNATURE_HASH_ALGORITHMS, data)

    @classmethod
    def rekey_sa(cls, protocol: int, spi: bytes) -> Self:
        """REKEY_SA for the Child SA with inbound ``spi`` (RFC 7296 1.3.3)."""
        return cls(NotifyType.REKEY_SA, b"", protocol, spi)

    def encode_body(self) -> bytes:
        head = struct.pack("!BBH", self.protocol, len(self.spi), self.notify_type)
        return head + self.spi + self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 4, "Notify payload")
        protocol, spi_size, notify_type = body[0], body[1], u16(body, 2)
        need(len(body) - 4, spi_size, "Notify SPI")
        spi = bytes(body[4 : 4 + spi_size])
        return cls(
            as_enum(NotifyType, notify_type),
            bytes(body[4 + spi_size :]),
            as_enum(ProtocolId, protocol),
            spi,
        )


@dataclass(frozen=True, slots=True)
class Delete(Payload):
    """Delete payload (3.11): Protocol ID, SPI Size, the SPIs.

    Deleting the IKE SA: protocol IKE, SPI Size 0, no SPIs (:meth:`ike`). Child SAs: ESP or
    AH, 4-octet SPIs (:meth:`child`).
    """

    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol: int
    spi_size: int = 0
    spis: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        check_range(self.protocol, 8, "protocol ID")
        check_range(self.spi_size, 8, "SPI size")
        check_range(len(self.spis), 16, "number of SPIs")
        if any(len(spi) != self.spi_size for spi in self.spis):
            raise ValueError("every SPI must have SPI Size octets")
        if self.spis and not self.spi_size:
            raise ValueError("SPIs of size 0")

    @classmethod
    def ike(cls) -> Self:
        return cls(ProtocolId.IKE)

    @classmethod
    def child(cls, protocol: int, spis: list[bytes] | tuple[bytes, ...]) -> Self:
        return cls(protocol, 4, tuple(spis))

    def encode_body(self) -> bytes:
        head = struct.pack("!BBH", self.protocol, self.spi_size, len(self.spis))
        return head + b"".join(self.spis)

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 4, "Delete payload")
        protocol, size, count = body[0], body[1], u16(body, 2)
        if size == 0 and count:
            raise MalformedPacket(f"Delete payload with {count} SPIs of size 0")
        if len(body) - 4 != size * count:
            raise MalformedPacket(
                f"Delete payload: {count} SPIs of {size} octets in {len(body) - 4} octets"
            )
        spis = tuple(bytes(body[i : i + size]) for i in range(4, len(body), size or 1))
        return cls(as_enum(ProtocolId, protocol), size, spis)


@dataclass(frozen=True, slots=True)
class VendorID(Payload):
    """Vendor ID payload (3.12)."""

    TYPE: ClassVar[int] = PayloadType.VENDOR_ID
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        return cls(bytes(body))


# ---------------------------------------------------------------------------
# Traffic selectors


@dataclass(frozen=True, slots=True)
class _TrafficSelectors(Payload):
    """TSi / TSr (3.13)."""

    selectors: tuple[TrafficSelectorEntry, ...]

    @classmethod
    def from_selectors(cls, selectors: Iterable[TrafficSelector]) -> Self:
        return cls(tuple(TSAddressRange.from_selector(ts) for ts in selectors))

    def traffic_selectors(self) -> tuple[TrafficSelector, ...]:
        """The selectors a :class:`TrafficSelector` can hold, in order.

        Left out: other TS types, OPAQUE ports and empty ranges. Reading fewer selectors
        than were sent only narrows (RFC 7296 2.9); compare with ``len(self.selectors)``
        to know whether anything was left out.
        """
        result: list[TrafficSelector] = []
        for ts in self.selectors:
            if isinstance(ts, TSAddressRange):
                try:
                    result.append(ts.to_selector())
                except ValueError:
                    continue
        return tuple(result)

    def encode_body(self) -> bytes:
        return encode_selectors(self.selectors)

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        return cls(decode_selectors(body))


@dataclass(frozen=True, slots=True)
class TSi(_TrafficSelectors):
    TYPE: ClassVar[int] = PayloadType.TSi


@dataclass(frozen=True, slots=True)
class TSr(_TrafficSelectors):
    TYPE: ClassVar[int] = PayloadType.TSr


# ---------------------------------------------------------------------------
# Encrypted payloads


@dataclass(frozen=True, slots=True)
class SK(Payload):
    """Encrypted and Authenticated payload (3.14), opaque: IV || ciphertext || ICV.

    ``first_payload_type`` is its Next Payload field: the type of the first payload inside.
    The SK payload is always the last one of a message.
    """

    TYPE: ClassVar[int] = PayloadType.SK
    first_payload_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.first_payload_type, 8, "first payload type")

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        raise TypeError("SK needs its Next Payload field: use decode_encrypted")


@dataclass(frozen=True, slots=True)
class SKF(Payload):
    """Encrypted Fragment payload (RFC 7383 2.5): Fragment Number, Total Fragments, data.

    ``first_payload_type`` is the type of the first inner payload in fragment 1 and 0 in the
    others. ``data`` is IV || ciphertext || ICV of this fragment, opaque.
    """

    TYPE: ClassVar[int] = PayloadType.SKF
    first_payload_type: int
    fragment_number: int
    total_fragments: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.first_payload_type, 8, "first payload type")
        check_range(self.fragment_number, 16, "fragment number")
        check_range(self.total_fragments, 16, "total fragments")
        if not 1 <= self.fragment_number <= self.total_fragments:
            raise ValueError("fragment numbers run from 1 to Total Fragments")

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.fragment_number, self.total_fragments) + self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        raise TypeError("SKF needs its Next Payload field: use decode_encrypted")


def decode_encrypted(payload_type: int, next_payload: int, body: Buffer) -> SK | SKF:
    """Parse an SK or SKF payload body; ``next_payload`` is its generic header's field."""
    if payload_type == PayloadType.SK:
        return SK(as_enum(PayloadType, next_payload), bytes(body))
    need(len(body), 4, "Encrypted Fragment payload")
    number, total = u16(body, 0), u16(body, 2)
    if not 1 <= number <= total:
        # RFC 7383 2.6: such a fragment MUST be discarded.
        raise MalformedPacket(f"fragment number {number} of {total}")
    return SKF(as_enum(PayloadType, next_payload), number, total, bytes(body[4:]))


# ---------------------------------------------------------------------------
# Configuration, EAP, unknown


@dataclass(frozen=True, slots=True)
class ConfigAttribute:
    """One configuration attribute (3.15.1); the value is uninterpreted."""

    attribute_type: int
    value: bytes = b""

    def __post_init__(self) -> None:
        check_range(self.attribute_type, 15, "configuration attribute type")
        check_range(len(self.value), 16, "configuration attribute length")

    def encode(self) -> bytes:
        return struct.pack("!HH", self.attribute_type, len(self.value)) + self.value


@dataclass(frozen=True, slots=True)
class CP(Payload):
    """Configuration payload (3.15): CFG Type and attributes."""

    TYPE: ClassVar[int] = PayloadType.CP
    cfg_type: int
    attributes: tuple[ConfigAttribute, ...] = ()

    def __post_init__(self) -> None:
        check_range(self.cfg_type, 8, "CFG type")

    def encode_body(self) -> bytes:
        return bytes((self.cfg_type, 0, 0, 0)) + b"".join(a.encode() for a in self.attributes)

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 4, "CP payload")
        attributes: list[ConfigAttribute] = []
        offset = 4
        end = len(body)
        while offset < end:
            need(end - offset, 4, "configuration attribute")
            atype = u16(body, offset) & 0x7FFF  # the R bit MUST be ignored on receipt
            length = u16(body, offset + 2)
            need(end - offset - 4, length, "configuration attribute value")
            value = bytes(body[offset + 4 : offset + 4 + length])
            attributes.append(ConfigAttribute(as_enum(ConfigAttributeType, atype), value))
            offset += 4 + length
        return cls(as_enum(CfgType, body[0]), tuple(attributes))


@dataclass(frozen=True, slots=True)
class EAP(Payload):
    """EAP payload (3.16): one EAP message (RFC 3748), its own Length field checked."""

    TYPE: ClassVar[int] = PayloadType.EAP
    data: bytes

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        need(len(body), 4, "EAP message")
        if u16(body, 2) != len(body):
            raise MalformedPacket(f"EAP Length {u16(body, 2)} in a {len(body)}-octet payload")
        return cls(bytes(body))


@dataclass(frozen=True, slots=True)
class UnknownPayload(Payload):
    """A payload of a type this codec does not interpret, kept for the round trip.

    Without the critical bit it is to be ignored (RFC 7296 2.5). With the critical bit set
    the parser raises :class:`UnsupportedCriticalPayload` instead of returning it.
    """

    unknown_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.unknown_type, 8, "payload type")
        if self.unknown_type == PayloadType.NONE:
            raise ValueError("payload type 0 ends the chain")
        if self.unknown_type in PAYLOAD_CLASSES or self.unknown_type in ENCRYPTED_TYPES:
            raise ValueError(f"payload type {self.unknown_type} has its own class")

    @property
    def payload_type(self) -> int:
        return self.unknown_type

    def encode_body(self) -> bytes:
        return self.data

    @classmethod
    def decode_body(cls, body: Buffer) -> Self:
        raise TypeError("UnknownPayload needs its type")


#: Payload Type -> class, for the types with a plain body (all but SK and SKF).
PAYLOAD_CLASSES: dict[int, type[Payload]] = {
    cls.TYPE: cls
    for cls in (
        SA,
        KE,
        IDi,
        IDr,
        CERT,
        CERTREQ,
        AUTH,
        Nonce,
        Notify,
        Delete,
        VendorID,
        TSi,
        TSr,
        CP,
        EAP,
    )
}
ENCRYPTED_TYPES = frozenset({PayloadType.SK, PayloadType.SKF})
