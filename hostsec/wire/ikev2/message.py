"""IKEv2 messages: the payload chain, whole datagrams, and the octets SK protects.

RFC 7296 3.2: each payload starts with a generic header (Next Payload, C bit, Payload
Length); the IKE header's Next Payload names the first one; the chain ends with Next
Payload 0. The Encrypted payload (SK, 3.14; SKF, RFC 7383 2.5) is always the last payload;
its Next Payload field names the first payload *inside* it.

Parsing: :func:`parse_message` (a datagram) and :func:`parse_payloads` (the decrypted
inside of an SK payload). Both check every length, skip nothing silently: a payload of an
unknown type without the critical bit comes back as :class:`UnknownPayload` (to be
ignored, RFC 7296 2.5); with the critical bit they raise
:class:`UnsupportedCriticalPayload` once the whole chain has been checked.

Encoding: :func:`encode_message` and :func:`encode_payloads` compute the chaining and the
lengths. For the Encrypted payload, :func:`encrypted_message_prefix` gives the octets that
precede the IV (IKE header, any clear payloads, SK or SKF header): the associated data of
an AEAD cipher (RFC 5282 5.1, RFC 7383 2.5) and the start of what the ICV covers (RFC 7296
3.14: everything from the IKE header up to the ICV). :func:`encrypted_prefix_of` returns
the same octets of a received message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2._codec import Buffer, check_range
from hostsec.wire.ikev2.constants import PayloadType
from hostsec.wire.ikev2.errors import UnsupportedCriticalPayload
from hostsec.wire.ikev2.header import IKE_HEADER_LEN, IKEHeader, decode_header
from hostsec.wire.ikev2.payloads import (
    CRITICAL,
    ENCRYPTED_TYPES,
    GENERIC_HEADER,
    GENERIC_HEADER_LEN,
    PAYLOAD_CLASSES,
    SK,
    SKF,
    Notify,
    Payload,
    UnknownPayload,
    decode_encrypted,
)

_P = TypeVar("_P", bound=Payload)

#: SKF carries Fragment Number and Total Fragments before its IV (RFC 7383 2.5).
SKF_FIELDS_LEN = 4


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed IKEv2 message: the header and the payloads in wire order."""

    header: IKEHeader
    payloads: tuple[Payload, ...]

    def find(self, kind: type[_P]) -> _P | None:
        """The first payload of class ``kind``, or None."""
        return find(self.payloads, kind)

    def find_all(self, kind: type[_P]) -> list[_P]:
        return find_all(self.payloads, kind)

    def notify(self, notify_type: int) -> Notify | None:
        """The first Notify of ``notify_type``, or None."""
        return find_notify(self.payloads, notify_type)

    @property
    def encrypted(self) -> SK | SKF | None:
        """The SK or SKF payload (always the last one), or None."""
        if self.payloads and isinstance(self.payloads[-1], SK | SKF):
            return self.payloads[-1]
        return None

    def encode(self) -> bytes:
        return encode_message(self.header, self.payloads)


def find(payloads: Sequence[Payload], kind: type[_P]) -> _P | None:
    """The first payload of class ``kind`` in ``payloads``, or None."""
    for payload in payloads:
        if isinstance(payload, kind):
            return payload
    return None


def find_all(payloads: Sequence[Payload], kind: type[_P]) -> list[_P]:
    """Every payload of class ``kind``, in order."""
    return [p for p in payloads if isinstance(p, kind)]


def find_notify(payloads: Sequence[Payload], notify_type: int) -> Notify | None:
    """The first Notify payload of ``notify_type`` in ``payloads``, or None."""
    for payload in payloads:
        if isinstance(payload, Notify) and payload.notify_type == notify_type:
            return payload
    return None


# ---------------------------------------------------------------------------
# Parsing


def _walk(
    data: Buffer, offset: int, first_type: int, allow_encrypted: bool
) -> Iterator[tuple[int, int, int, int, bool]]:
    """(type, Next Payload field, body start, body end, critical) of each payload.

    Checks that each generic header and body fit, that the chain ends exactly at the end of
    ``data`` and that SK/SKF, if allowed at all, is the last payload.
    """
    end = len(data)
    ptype = first_type
    while ptype != PayloadType.NONE:
        if end - offset < GENERIC_HEADER_LEN:
            raise MalformedPacket(f"payload {ptype}: generic header truncated")
        next_type, flags, length = GENERIC_HEADER.unpack_from(data, offset)
        if length < GENERIC_HEADER_LEN or length > end - offset:
            raise MalformedPacket(f"payload {ptype}: bad payload length {length}")
        body_end = offset + length
        if ptype in ENCRYPTED_TYPES:
            if not allow_encrypted:
                raise MalformedPacket(f"Encrypted payload {ptype} inside an Encrypted payload")
            if body_end != end:
                raise MalformedPacket(f"Encrypted payload {ptype} is not the last payload")
            yield ptype, next_type, offset + GENERIC_HEADER_LEN, body_end, bool(flags & CRITICAL)
            return
        yield ptype, next_type, offset + GENERIC_HEADER_LEN, body_end, bool(flags & CRITICAL)
        offset = body_end
        ptype = next_type
    if offset != end:
        raise MalformedPacket(f"{end - offset} octets after the last payload")


def _decode_chain(
    data: Buffer, offset: int, first_type: int, allow_encrypted: bool, header: IKEHeader | None
) -> tuple[Payload, ...]:
    payloads: list[Payload] = []
    unsupported: int | None = None
    for ptype, next_type, start, stop, critical in _walk(data, offset, first_type, allow_encrypted):
        body = data[start:stop]
        if ptype in ENCRYPTED_TYPES:
            payload: Payload = decode_encrypted(ptype, next_type, body)
            if critical:
                payload = _with_critical(payload)
        elif ptype in PAYLOAD_CLASSES:
            payload = PAYLOAD_CLASSES[ptype].decode_body(body)
            if critical:
                payload = _with_critical(payload)
        else:
            if critical and unsupported is None:
                unsupported = ptype
            payload = UnknownPayload(ptype, bytes(body), critical=critical)
        payloads.append(payload)
    if unsupported is not None:
        raise UnsupportedCriticalPayload(unsupported, header)
    return tuple(payloads)


def _with_critical(payload: Payload) -> Payload:
    # Frozen dataclasses: rebuild with the flag (rare; senders leave it clear, 3.2).
    return replace(payload, critical=True)


def parse_message(datagram: Buffer) -> Message:
    """Parse one IKEv2 datagram (without the non-ESP marker of UDP port 4500).

    Raises :class:`InvalidMajorVersion` (major version not 2), :class:`UnsupportedCriticalPayload`
    (an unknown payload type with the critical bit, RFC 7296 2.5) or
    :class:`MalformedPacket` with a reason for anything else that is wrong: the header's
    Length must equal the datagram's length, every payload must fit, the chain must end
    exactly at the end, SK/SKF must come last.
    """
    header, next_payload, length = decode_header(datagram)
    if length != len(datagram):
        raise MalformedPacket(
            f"IKE message length {length} does not match the datagram ({len(datagram)} octets)"
        )
    payloads = _decode_chain(datagram, IKE_HEADER_LEN, next_payload, True, header)
    return Message(header, payloads)


def parse_payloads(first_payload_type: int, data: Buffer) -> tuple[Payload, ...]:
    """Parse a decrypted payload chain: the inside of SK (unpadded) or reassembled SKF.

    ``first_payload_type`` is the SK payload's Next Payload field. An SK or SKF inside is
    malformed. Raises :class:`UnsupportedCriticalPayload` (with ``header`` None) for an
    unknown critical payload.
    """
    return _decode_chain(data, 0, first_payload_type, False, None)


def encrypted_prefix_of(datagram: Buffer) -> bytes:
    """The octets of a received message before its SK/SKF payload's IV.

    IKE header, clear payloads, and the SK generic header (SKF: with Fragment Number and
    Total Fragments): the AEAD associated data (RFC 5282 5.1, RFC 7383 2.5). The ICV of a
    non-AEAD transform covers the datagram up to the ICV (RFC 7296 3.14).
    """
    _header, next_payload, length = decode_header(datagram)
    if length != len(datagram):
        raise MalformedPacket("IKE message length does not match the datagram")
    for ptype, _next, start, _stop, _crit in _walk(datagram, IKE_HEADER_LEN, next_payload, True):
        if ptype in ENCRYPTED_TYPES:
            iv_at = start
            if ptype == PayloadType.SKF:
                if len(datagram) - start < SKF_FIELDS_LEN:
                    raise MalformedPacket("Encrypted Fragment payload truncated")
                iv_at += SKF_FIELDS_LEN
            return bytes(datagram[:iv_at])
    raise MalformedPacket("no Encrypted payload in the message")


# ---------------------------------------------------------------------------
# Encoding


def _generic_header(next_type: int, payload: Payload, body_len: int) -> bytes:
    length = GENERIC_HEADER_LEN + body_len
    if length > 0xFFFF:
        raise ValueError(f"payload {payload.payload_type} is too long ({length} octets)")
    return GENERIC_HEADER.pack(next_type, CRITICAL if payload.critical else 0, length)


def _chain(
    payloads: Sequence[Payload], allow_encrypted: bool, final_next: int = PayloadType.NONE
) -> bytes:
    parts: list[bytes] = []
    count = len(payloads)
    for i, payload in enumerate(payloads):
        body = payload.encode_body()
        if isinstance(payload, SK | SKF):
            if not allow_encrypted:
                raise ValueError("an Encrypted payload cannot be inside another")
            if i != count - 1:
                raise ValueError("the Encrypted payload must be the last payload")
            next_type = payload.first_payload_type
        else:
            next_type = payloads[i + 1].payload_type if i + 1 < count else final_next
        parts.append(_generic_header(next_type, payload, len(body)))
        parts.append(body)
    return b"".join(parts)


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """(first payload type, octets) of a payload chain to put inside SK (before padding)."""
    first = payloads[0].payload_type if payloads else PayloadType.NONE
    return first, _chain(payloads, False)


def encode_message(header: IKEHeader, payloads: Sequence[Payload]) -> bytes:
    """The datagram: header (Next Payload and Length computed) and the payload chain."""
    body = _chain(payloads, True)
    first = payloads[0].payload_type if payloads else PayloadType.NONE
    return header.encode(first, IKE_HEADER_LEN + len(body)) + body


def encrypted_message_prefix(
    header: IKEHeader,
    first_payload_type: int,
    encrypted_length: int,
    *,
    clear_payloads: Sequence[Payload] = (),
    fragment: tuple[int, int] | None = None,
) -> bytes:
    """The octets before the IV of a message whose last payload is SK (or SKF).

    ``encrypted_length`` is the length of IV || ciphertext || ICV that will follow, so
    that the header's Length and the SK Payload Length are final; ``fragment`` is
    (Fragment Number, Total Fragments) for an SKF payload (RFC 7383 2.5; pass
    ``first_payload_type`` 0 for all fragments but the first). The result is the AEAD
    associated data (RFC 5282 5.1); the message is ``prefix + iv + ciphertext + icv``,
    equal to :func:`encode_message` with an SK/SKF payload holding those octets.
    """
    check_range(first_payload_type, 8, "first payload type")
    check_range(encrypted_length, 16, "encrypted length")
    if fragment is None:
        kind: int = PayloadType.SK
        extra = b""
    else:
        number, total = fragment
        check_range(number, 16, "fragment number")
        check_range(total, 16, "total fragments")
        if not 1 <= number <= total:
            raise ValueError("fragment numbers run from 1 to Total Fragments")
        kind = PayloadType.SKF
        extra = number.to_bytes(2, "big") + total.to_bytes(2, "big")
    for payload in clear_payloads:
        if isinstance(payload, SK | SKF):
            raise ValueError("the clear payloads cannot hold an Encrypted payload")
    # The clear chain's last Next Payload names SK/SKF.
    clear = _chain(clear_payloads, False, final_next=kind)
    sk_length = GENERIC_HEADER_LEN + len(extra) + encrypted_length
    if sk_length > 0xFFFF:
        raise ValueError(f"Encrypted payload too long ({sk_length} octets)")
    sk_header = GENERIC_HEADER.pack(first_payload_type, 0, sk_length) + extra
    first = clear_payloads[0].payload_type if clear_payloads else kind
    total_length = IKE_HEADER_LEN + len(clear) + sk_length
    return header.encode(first, total_length) + clear + sk_header


# ---------------------------------------------------------------------------
# Padding of the SK plaintext (RFC 7296 3.14)


def sk_pad(payload_octets: bytes, block_size: int) -> bytes:
    """Payloads || Padding || Pad Length, the minimum padding for ``block_size``.

    RFC 7296 3.14: the padding may hold any value; zeros are used. For AEAD transforms
    RFC 5282 keeps the same format (use the cipher's block size, or 1 for no padding).
    """
    if not 1 <= block_size <= 256:
        raise ValueError("block size must be 1 to 256")
    pad = -(len(payload_octets) + 1) % block_size
    return payload_octets + bytes(pad) + bytes((pad,))


def sk_unpad(plaintext: Buffer) -> bytes:
    """The payload octets of a decrypted SK plaintext (RFC 7296 3.14): any padding accepted."""
    if not plaintext:
        raise MalformedPacket("empty Encrypted payload plaintext")
    pad = plaintext[-1]
    if pad + 1 > len(plaintext):
        raise MalformedPacket(f"Pad Length {pad} exceeds the plaintext ({len(plaintext)} octets)")
    return bytes(plaintext[: len(plaintext) - 1 - pad])
