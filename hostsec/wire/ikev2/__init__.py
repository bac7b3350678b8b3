"""IKEv2 messages as bytes (RFC 7296 section 3, RFC 7383): a pure codec.

No crypto, no state, no I/O (the fragment reassembler keeps only the fragments it is
given). Typical use by the state machine::

    msg = parse_message(datagram)            # header + payloads, every length checked
    sa = msg.find(SA); nonce = msg.find(Nonce)
    ...
    datagram = encode_message(header, [SA(...), KE(...), Nonce(...), Notify(...)])

Encrypted messages: ``msg.encrypted`` is the SK (or SKF) payload, opaque; the crypto layer
checks and decrypts it using :func:`encrypted_prefix_of` (the associated data), then
:func:`sk_unpad` and :func:`parse_payloads` give the inner payloads. To send,
:func:`encode_payloads` gives (first type, octets), :func:`sk_pad` pads them, the crypto
layer encrypts with :func:`encrypted_message_prefix` as associated data, and the datagram is
``prefix + iv + ciphertext + icv``.

Errors: everything malformed raises :class:`hostsec.wire.errors.MalformedPacket` (with a
``reason``); two subclasses are meant to be answered: :class:`InvalidMajorVersion` and
:class:`UnsupportedCriticalPayload` (RFC 7296 2.5).
"""

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2.constants import (
    ATTRIBUTE_KEY_LENGTH,
    ERROR_NOTIFY_LIMIT,
    AuthMethod,
    CertEncoding,
    CfgType,
    ConfigAttributeType,
    ExchangeType,
    HashAlgorithm,
    HeaderFlags,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TSType,
    as_enum,
    is_error_notify,
)
from hostsec.wire.ikev2.errors import InvalidMajorVersion, UnsupportedCriticalPayload
from hostsec.wire.ikev2.fragments import (
    FragmentReassembler,
    FragmentResult,
    FragmentStatus,
    split_fragments,
)
from hostsec.wire.ikev2.header import IKE_HEADER_LEN, IKEHeader, decode_header, parse_header
from hostsec.wire.ikev2.message import (
    Message,
    encode_message,
    encode_payloads,
    encrypted_message_prefix,
    encrypted_prefix_of,
    find,
    find_all,
    find_notify,
    parse_message,
    parse_payloads,
    sk_pad,
    sk_unpad,
)
from hostsec.wire.ikev2.payloads import (
    AUTH,
    CERT,
    CERTREQ,
    CP,
    EAP,
    GENERIC_HEADER_LEN,
    KE,
    SA,
    SK,
    SKF,
    ConfigAttribute,
    Delete,
    IDi,
    IDr,
    Nonce,
    Notify,
    Payload,
    TSi,
    TSr,
    UnknownPayload,
    VendorID,
)
from hostsec.wire.ikev2.sa import SAProposal, Transform, TransformAttribute
from hostsec.wire.ikev2.ts import (
    SelectorLike,
    TrafficSelectorEntry,
    TSAddressRange,
    UnknownTrafficSelector,
)

__all__ = [
    "ATTRIBUTE_KEY_LENGTH",
    "AUTH",
    "CERT",
    "CERTREQ",
    "CP",
    "EAP",
    "ERROR_NOTIFY_LIMIT",
    "GENERIC_HEADER_LEN",
    "IKE_HEADER_LEN",
    "KE",
    "SA",
    "SK",
    "SKF",
    "AuthMethod",
    "CertEncoding",
    "CfgType",
    "ConfigAttribute",
    "ConfigAttributeType",
    "Delete",
    "ExchangeType",
    "FragmentReassembler",
    "FragmentResult",
    "FragmentStatus",
    "HashAlgorithm",
    "HeaderFlags",
    "IDi",
    "IDr",
    "IKEHeader",
    "IdType",
    "InvalidMajorVersion",
    "MalformedPacket",
    "Message",
    "Nonce",
    "Notify",
    "NotifyType",
    "Payload",
    "PayloadType",
    "ProtocolId",
    "SAProposal",
    "SelectorLike",
    "TSAddressRange",
    "TSType",
    "TSi",
    "TSr",
    "TrafficSelectorEntry",
    "Transform",
    "TransformAttribute",
    "UnknownPayload",
    "UnknownTrafficSelector",
    "UnsupportedCriticalPayload",
    "VendorID",
    "as_enum",
    "decode_header",
    "encode_message",
    "encode_payloads",
    "encrypted_message_prefix",
    "encrypted_prefix_of",
    "find",
    "find_all",
    "find_notify",
    "is_error_notify",
    "parse_header",
    "parse_message",
    "parse_payloads",
    "sk_pad",
    "sk_unpad",
    "split_fragments",
]
