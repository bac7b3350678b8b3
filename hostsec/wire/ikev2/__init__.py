"""IKEv2 messages as bytes (RFC 7296 section 3, RFC 7383): a pure codec.

No crypto, no state, no I/O (the fragment reassembler keeps only the fragments it is
given). Receiving::

    msg = parse_message(datagram)          # header + payloads, every length checked
    sa, nonce = msg.find(SA), msg.find(Nonce)
    cookie = msg.notify(NotifyType.COOKIE)

    sk = msg.encrypted                     # SK or SKF (opaque IV || ciphertext || ICV)
    aad = encrypted_prefix_of(datagram)    # RFC 5282 associated data; the ICV covers
                                           # datagram[:-icv_len] (RFC 7296 3.14)
    octets = sk_unpad(decrypt(...))        # the crypto layer's job
    inner = parse_payloads(sk.first_payload_type, octets)
    # SKF: reassembler.add_skf(msg.header, sk, octets) until COMPLETE, then parse_payloads

Sending::

    datagram = encode_message(header, [SA(...), KE(...), Nonce(...), Notify(...)])

    first, octets = encode_payloads([IDi(...), AUTH(...), SA(...), TSi(...), TSr(...)])
    padded = sk_pad(octets, block_size)
    prefix = encrypted_message_prefix(header, first, iv_len + len(padded) + icv_len)
    datagram = prefix + iv + ciphertext + icv   # AEAD: prefix is the associated data
    # fragments: for n, chunk in enumerate(split_fragments(octets, size), 1), the same
    # with fragment=(n, total) and first only on n == 1 (0 on the others)

Errors: everything malformed raises :class:`hostsec.wire.errors.MalformedPacket` (with a
``reason``); two subclasses are meant to be answered: :class:`InvalidMajorVersion` and
:class:`UnsupportedCriticalPayload` (RFC 7296 2.5). Building an impossible value (a field
out of range, SK not last, a payload over 65535 octets) raises ValueError.
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
