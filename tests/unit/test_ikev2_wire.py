"""The IKEv2 codec: header, every payload, the payload chain, errors and SK helpers."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2 import (
    AUTH,
    CERT,
    CERTREQ,
    CP,
    EAP,
    IKE_HEADER_LEN,
    KE,
    SA,
    SK,
    SKF,
    AuthMethod,
    CertEncoding,
    CfgType,
    ConfigAttribute,
    ConfigAttributeType,
    Delete,
    ExchangeType,
    HeaderFlags,
    IDi,
    IDr,
    IdType,
    IKEHeader,
    InvalidMajorVersion,
    Message,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    PayloadType,
    ProtocolId,
    SAProposal,
    Transform,
    TransformAttribute,
    TSAddressRange,
    TSi,
    TSr,
    UnknownPayload,
    UnknownTrafficSelector,
    UnsupportedCriticalPayload,
    VendorID,
    encode_message,
    encode_payloads,
    encrypted_message_prefix,
    encrypted_prefix_of,
    is_error_notify,
    parse_header,
    parse_message,
    parse_payloads,
    sk_pad,
    sk_unpad,
)
from hostsec.wire.selectors import TrafficSelector

from .ikev2_strategies import clear_payloads, encrypted_payloads, headers

SPI_I = bytes.fromhex("0011223344556677")
SPI_R = bytes.fromhex("8899aabbccddeeff")
HEADER = IKEHeader(SPI_I, SPI_R, ExchangeType.IKE_AUTH, 1, HeaderFlags.INITIATOR)
NONCE = Nonce(bytes(range(32)))


def _v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _roundtrip(payloads: list[Payload], header: IKEHeader = HEADER) -> bytes:
    datagram = encode_message(header, payloads)
    assert parse_message(datagram) == Message(header, tuple(payloads))
    assert parse_message(datagram).encode() == datagram
    return datagram


def _generic(next_type: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack("!BBH", next_type, flags, 4 + len(body)) + body


def _datagram(first: int, chain: bytes, header: IKEHeader = HEADER) -> bytes:
    return header.encode(first, IKE_HEADER_LEN + len(chain)) + chain


# ---------------------------------------------------------------------------
# Header


def test_header_layout() -> None:
    datagram = encode_message(HEADER, [NONCE])
    assert datagram[:16] == SPI_I + SPI_R
    assert datagram[16] == PayloadType.NONCE
    assert datagram[17] == 0x20  # version 2.0
    assert datagram[18] == ExchangeType.IKE_AUTH
    assert datagram[19] == 0x08
    assert struct.unpack("!II", datagram[20:28]) == (1, len(datagram))
    header = parse_header(datagram)
    assert header == HEADER
    assert header.initiator and not header.response and not header.version_flag


def test_header_flags_and_unknown_exchange_survive() -> None:
    header = IKEHeader(SPI_I, SPI_R, 99, 0xFFFFFFFF, 0xFF, minor_version=7)
    datagram = _roundtrip([], header)
    parsed = parse_header(datagram)
    assert parsed.exchange_type == 99 and parsed.minor_version == 7
    assert parsed.initiator and parsed.response and parsed.version_flag


@pytest.mark.parametrize("major", [0, 1, 3, 15])
def test_other_major_versions_are_reported(major: int) -> None:
    datagram = bytearray(encode_message(HEADER, [NONCE]))
    datagram[17] = major << 4
    with pytest.raises(InvalidMajorVersion) as info:
        parse_message(bytes(datagram))
    assert info.value.header.major_version == major
    assert info.value.header.spi_i == SPI_I and info.value.header.message_id == 1
    with pytest.raises(InvalidMajorVersion):
        parse_header(bytes(datagram))


def test_length_must_match_the_datagram() -> None:
    datagram = encode_message(HEADER, [NONCE])
    with pytest.raises(MalformedPacket, match="does not match"):
        parse_message(datagram + b"\0")
    with pytest.raises(MalformedPacket, match="does not match"):
        parse_header(datagram[:-1])
    for cut in range(IKE_HEADER_LEN):
        with pytest.raises(MalformedPacket, match="truncated"):
            parse_message(datagram[:cut])
    short = bytearray(datagram)
    short[24:28] = (27).to_bytes(4, "big")
    with pytest.raises(MalformedPacket, match="shorter than its header"):
        parse_message(bytes(short))


def test_header_construction_checks() -> None:
    with pytest.raises(ValueError):
        IKEHeader(b"short", SPI_R, 34, 0)
    with pytest.raises(ValueError):
        IKEHeader(SPI_I, SPI_R, 34, 1 << 32)


# ---------------------------------------------------------------------------
# Every payload round-trips


ESP_PROPOSAL = SAProposal(
    1,
    ProtocolId.ESP,
    b"\x12\x34\x56\x78",
    (
        Transform.make(1, 12, 128),
        Transform.make(1, 12, 256),
        Transform.make(3, 12),
        Transform.make(5, 0),
    ),
)

EXAMPLES: list[Payload] = [
    SA(
        (
            ESP_PROPOSAL,
            SAProposal(2, ProtocolId.ESP, b"\x12\x34\x56\x78", (Transform.make(1, 20, 128),)),
        )
    ),
    KE(19, bytes(64)),
    IDi.from_fqdn("a.test"),
    IDr.from_address(_v4("198.51.100.2")),
    IDi.from_address(ipaddress.IPv6Address("2001:db8::1").packed),
    IDr.from_rfc822("ops@example.net"),
    IDi(IdType.ID_DER_ASN1_DN, b"0\x0b1\t0\x07\x06\x03U\x04\x03\x0c\x00"),
    IDr(IdType.ID_KEY_ID, b"\x01\x02"),
    IDi(IdType.ID_NULL, b""),
    CERT(CertEncoding.X509_SIGNATURE, b"0\x82\x01\x00"),
    CERT(CertEncoding.HASH_AND_URL_X509, bytes(20) + b"http://198.51.100.9/a.crt"),
    CERTREQ.from_ca_hashes([bytes(range(20)), bytes(20)]),
    CERTREQ(CertEncoding.X509_SIGNATURE),
    AUTH(AuthMethod.SHARED_KEY_MIC, bytes(32)),
    AUTH.digital_signature(bytes.fromhex("300d06092a864886f70d01010b0500"), bytes(256)),
    Nonce(bytes(16)),
    Nonce(bytes(256)),
    Notify(NotifyType.COOKIE, bytes(range(24))),
    Notify(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)),
    Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, bytes(20)),
    Notify(NotifyType.USE_TRANSPORT_MODE),
    Notify(NotifyType.INITIAL_CONTACT),
    Notify(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED),
    Notify(NotifyType.NON_FIRST_FRAGMENTS_ALSO),
    Notify.rekey_sa(ProtocolId.ESP, b"\xc0\x01\x02\x03"),
    Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
    Notify.signature_hash_algorithms([2, 3, 4, 5]),
    Notify.invalid_ke_payload(19),
    Notify.unsupported_critical_payload(200),
    Notify(NotifyType.CHILD_SA_NOT_FOUND, b"", ProtocolId.ESP, b"\x00\x00\x10\x01"),
    Notify(NotifyType.INVALID_SELECTORS, b"\x45\x00", ProtocolId.ESP, b"\x00\x00\x10\x01"),
    Notify(40000, b"private use"),
    Delete.ike(),
    Delete.child(ProtocolId.ESP, [b"\x00\x00\x10\x01", b"\x00\x00\x10\x02"]),
    Delete.child(ProtocolId.AH, []),
    VendorID(b"hostsec"),
    TSi((TSAddressRange.from_selector(TrafficSelector.from_network("198.51.100.1/32", 6)),)),
    TSr(
        (
            TSAddressRange.from_selector(TrafficSelector.from_network("198.51.100.0/24", 6, 23)),
            TSAddressRange.from_selector(
                TrafficSelector.from_network("2001:db8::/64", 17, (500, 4500))
            ),
            TSAddressRange(_v4("198.51.100.1"), _v4("198.51.100.1"), 6, 0xFFFF, 0),  # OPAQUE
            UnknownTrafficSelector(10, 0, b"\x00\x05label"),
        )
    ),
    TSi(()),
    CP(CfgType.CFG_REQUEST, (ConfigAttribute(ConfigAttributeType.INTERNAL_IP4_ADDRESS),)),
    CP(
        CfgType.CFG_REPLY,
        (ConfigAttribute(1, _v4("198.51.100.50")), ConfigAttribute(3, _v4("198.51.100.53"))),
    ),
    EAP(bytes((1, 7, 0, 5, 1))),
    UnknownPayload(49, b"GSPM data"),
    UnknownPayload(200, b""),
]


@pytest.mark.parametrize("payload", EXAMPLES, ids=lambda p: type(p).__name__)
def test_each_payload_round_trips(payload: Payload) -> None:
    _roundtrip([payload])
    first, inner = encode_payloads([payload, NONCE])
    assert first == payload.payload_type
    assert parse_payloads(first, inner) == (payload, NONCE)


def test_all_payloads_in_one_message_with_sk_last() -> None:
    payloads = [*EXAMPLES, SK(PayloadType.IDi, bytes(48))]
    datagram = _roundtrip(payloads)
    assert parse_message(datagram).encrypted == payloads[-1]


def test_field_layouts_match_rfc_7296() -> None:
    def body(p: Payload) -> bytes:
        return encode_message(HEADER, [p])[IKE_HEADER_LEN + 4 :]

    assert body(KE(14, b"\xaa")) == b"\x00\x0e\x00\x00\xaa"
    assert body(IDi.from_fqdn("a.test")) == b"\x02\x00\x00\x00a.test"
    assert body(AUTH(2, b"\x01")) == b"\x02\x00\x00\x00\x01"
    assert body(Notify(16393, b"", 3, b"\x01\x02\x03\x04")) == b"\x03\x04\x40\x09\x01\x02\x03\x04"
    assert body(Delete.child(3, [b"\x01\x02\x03\x04"])) == b"\x03\x04\x00\x01\x01\x02\x03\x04"
    assert body(Delete.ike()) == b"\x01\x00\x00\x00"
    assert body(CERTREQ(4, bytes(20))) == b"\x04" + bytes(20)
    assert body(CP(1, (ConfigAttribute(1),))) == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    assert body(SKF(35, 1, 2, b"iv")) == b"\x00\x01\x00\x02iv"
    ts = TSAddressRange(_v4("198.51.100.1"), _v4("198.51.100.2"), 6, 23, 24)
    assert body(TSi((ts,))) == bytes.fromhex("01000000 0706 0010 0017 0018 c6336401 c6336402")
    sa = SA((SAProposal(1, 1, b"", (Transform.make(1, 12, 128), Transform.make(4, 19))),))
    assert body(sa) == bytes.fromhex(
        "00 00 001c 01 01 00 02"  # last proposal, length 28, #1, IKE, SPI size 0, 2 transforms
        "03 00 000c 01 00 000c 800e 0080"  # more, ENCR AES-CBC, Key Length (TV) 128
        "00 00 0008 04 00 0013"  # last, DH 19
    )


@settings(max_examples=300, deadline=None)
@given(headers, st.lists(clear_payloads, max_size=6), st.none() | encrypted_payloads)
def test_generated_messages_round_trip(
    header: IKEHeader, payloads: list[Payload], encrypted: SK | SKF | None
) -> None:
    chain = payloads + ([encrypted] if encrypted is not None else [])
    _roundtrip(chain, header)


# ---------------------------------------------------------------------------
# Unknown and critical payloads (RFC 7296 2.5, 3.2)


def test_unknown_non_critical_payload_is_kept_and_skipped_over() -> None:
    chain = _generic(PayloadType.NONCE, b"opaque") + _generic(0, bytes(16))
    msg = parse_message(_datagram(77, chain))
    assert msg.payloads == (UnknownPayload(77, b"opaque"), Nonce(bytes(16)))
    assert msg.encode() == _datagram(77, chain)


def test_unknown_critical_payload_is_reported_with_its_type() -> None:
    chain = _generic(PayloadType.NONCE, b"x", 0x80) + _generic(0, bytes(16))
    with pytest.raises(UnsupportedCriticalPayload) as info:
        parse_message(_datagram(200, chain))
    assert info.value.payload_type == 200
    assert info.value.header == HEADER
    answer = Notify.unsupported_critical_payload(info.value.payload_type)
    assert answer.data == b"\xc8"
    with pytest.raises(UnsupportedCriticalPayload) as inner:
        parse_payloads(200, chain)
    assert inner.value.header is None


def test_the_first_unsupported_critical_type_is_named() -> None:
    chain = _generic(201, b"", 0x80) + _generic(0, b"", 0x80)
    with pytest.raises(UnsupportedCriticalPayload) as info:
        parse_message(_datagram(200, chain))
    assert info.value.payload_type == 200


def test_malformed_chain_wins_over_unsupported_critical() -> None:
    chain = _generic(PayloadType.NONCE, b"", 0x80) + _generic(0, bytes(15))  # short nonce
    with pytest.raises(MalformedPacket) as info:
        parse_message(_datagram(200, chain))
    assert type(info.value) is MalformedPacket


def test_critical_bit_on_known_payload_is_ignored_but_kept() -> None:
    chain = _generic(0, bytes(16), 0x80)
    msg = parse_message(_datagram(PayloadType.NONCE, chain))
    assert msg.payloads == (Nonce(bytes(16), critical=True),)
    assert msg.encode() == _datagram(PayloadType.NONCE, chain)


def test_reserved_bits_of_generic_header_are_ignored() -> None:
    chain = _generic(0, bytes(16), 0x7F)
    assert parse_message(_datagram(PayloadType.NONCE, chain)).payloads == (Nonce(bytes(16)),)


# ---------------------------------------------------------------------------
# Chain errors


@pytest.mark.parametrize(
    ("first", "chain", "reason"),
    [
        (PayloadType.NONCE, b"\x00\x00\x00", "generic header truncated"),
        (PayloadType.NONCE, b"\x00\x00\x00\x03", "bad payload length 3"),
        (PayloadType.NONCE, b"\x00\x00\x00\x20" + bytes(16), "bad payload length 32"),
        (PayloadType.NONCE, _generic(PayloadType.NONCE, bytes(16)), "generic header truncated"),
        (PayloadType.NONCE, _generic(0, bytes(16)) + b"\x00", "1 octets after the last payload"),
        (0, b"\x00\x00\x00\x04", "4 octets after the last payload"),
        (PayloadType.SK, _generic(0, b"iv") + _generic(0, b""), "not the last payload"),
    ],
)
def test_bad_chains(first: int, chain: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        parse_message(_datagram(first, chain))


def test_encrypted_payload_inside_encrypted_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="inside an Encrypted"):
        parse_payloads(PayloadType.SK, _generic(0, b"data"))
    with pytest.raises(ValueError, match="inside another"):
        encode_payloads([SK(0, b"")])


def test_encoder_refuses_sk_before_other_payloads_and_oversized_payloads() -> None:
    with pytest.raises(ValueError, match="last payload"):
        encode_message(HEADER, [SK(0, b""), NONCE])
    with pytest.raises(ValueError, match="too long"):
        encode_message(HEADER, [VendorID(bytes(0xFFFC))])
    encode_message(HEADER, [VendorID(bytes(0xFFFB))])


# ---------------------------------------------------------------------------
# Payload body errors


def _body_error(payload_type: int, body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        parse_message(_datagram(payload_type, _generic(0, body)))


@pytest.mark.parametrize(
    ("payload_type", "body", "reason"),
    [
        (PayloadType.SA, b"", "without proposals"),
        (PayloadType.SA, b"\x00\x00\x00\x08\x01\x01\x00", "proposal header truncated"),
        (PayloadType.SA, b"\x00\x00\x00\x07\x01\x01\x00\x00", "bad proposal length 7"),
        (PayloadType.SA, b"\x00\x00\x00\x08\x01\x01\x04\x00", "bad proposal length 8"),
        (PayloadType.SA, b"\x00\x00\x00\x09\x01\x01\x00\x00", "bad proposal length 9"),
        (PayloadType.SA, b"\x02\x00\x00\x08\x01\x01\x00\x00", "Last Substruc 2"),
        (
            PayloadType.SA,
            b"\x00\x00\x00\x08\x01\x01\x00\x00" * 2,
            "Last Substruc 0 contradicts",
        ),
        (PayloadType.SA, b"\x00\x00\x00\x08\x01\x01\x00\x01", "announces 1 transforms but holds 0"),
        (
            PayloadType.SA,
            b"\x00\x00\x00\x10\x01\x01\x00\x01" + b"\x00\x00\x00\x07\x01\x00\x00\x0c",
            "bad transform length 7",
        ),
        (
            PayloadType.SA,
            b"\x00\x00\x00\x10\x01\x01\x00\x01" + b"\x03\x00\x00\x08\x01\x00\x00\x0c",
            "transform Last Substruc 3",
        ),
        (
            PayloadType.SA,
            b"\x00\x00\x00\x13\x01\x01\x00\x01" + b"\x00\x00\x00\x0b\x01\x00\x00\x0c\x80\x0e\x00",
            "transform attribute truncated",
        ),
        (
            PayloadType.SA,
            b"\x00\x00\x00\x16\x01\x01\x00\x01"
            + b"\x00\x00\x00\x0e\x01\x00\x00\x0c\x00\x0e\x00\x02\x00\x80",
            "TLV form",
        ),
        (
            PayloadType.SA,
            b"\x00\x00\x00\x14\x01\x01\x00\x01"
            + b"\x00\x00\x00\x0c\x01\x00\x00\x0c\x00\x01\x00\x09",
            "overruns its transform",
        ),
        (
            PayloadType.SA,
            b"\x00\x00\x00\x18\x01\x01\x00\x01"
            + b"\x00\x00\x00\x10\x01\x00\x00\x0c\x80\x0e\x00\x80\x80\x0e\x01\x00",
            "repeated Key Length",
        ),
        (PayloadType.KE, b"\x00\x13\x00", "KE payload truncated"),
        (PayloadType.IDi, b"\x01\x00\x00", "ID payload truncated"),
        (PayloadType.IDi, b"\x01\x00\x00\x00\x01\x02\x03", "ID_IPV4_ADDR of 3 octets"),
        (PayloadType.IDr, b"\x05\x00\x00\x00" + bytes(4), "ID_IPV6_ADDR of 4 octets"),
        (PayloadType.CERT, b"", "CERT payload truncated"),
        (PayloadType.CERT, b"\x0c" + bytes(19), "Hash and URL"),
        (PayloadType.CERTREQ, b"", "CERTREQ payload truncated"),
        (PayloadType.CERTREQ, b"\x04" + bytes(21), "20-octet hashes"),
        (PayloadType.AUTH, b"\x02\x00\x00", "AUTH payload truncated"),
        (PayloadType.AUTH, b"\x0e\x00\x00\x00", "AlgorithmIdentifier overruns"),
        (PayloadType.AUTH, b"\x0e\x00\x00\x00\x05abcd", "AlgorithmIdentifier overruns"),
        (PayloadType.NONCE, bytes(15), "nonce of 15 octets"),
        (PayloadType.NONCE, bytes(257), "nonce of 257 octets"),
        (PayloadType.NOTIFY, b"\x03\x04\x40", "Notify payload truncated"),
        (PayloadType.NOTIFY, b"\x03\x04\x40\x09\x01\x02\x03", "Notify SPI truncated"),
        (PayloadType.DELETE, b"\x03\x04\x00", "Delete payload truncated"),
        (PayloadType.DELETE, b"\x03\x04\x00\x02\x00\x00\x00\x01", "2 SPIs of 4 octets in 4"),
        (PayloadType.DELETE, b"\x01\x00\x00\x01", "SPIs of size 0"),
        (PayloadType.TSi, b"\x01\x00\x00", "TS payload truncated"),
        (PayloadType.TSi, b"\x01\x00\x00\x00", "announces 1 selectors but holds 0"),
        (PayloadType.TSr, b"\x01\x00\x00\x00\x07\x06\x00", "traffic selector header truncated"),
        (PayloadType.TSr, b"\x01\x00\x00\x00\x07\x06\x00\x03", "bad traffic selector length 3"),
        (
            PayloadType.TSr,
            b"\x01\x00\x00\x00\x07\x06\x00\x28" + bytes(36),
            "TS type 7 with length 40",
        ),
        (
            PayloadType.TSr,
            b"\x01\x00\x00\x00\x08\x06\x00\x10" + bytes(12),
            "TS type 8 with length 16",
        ),
        (PayloadType.SKF, b"\x00\x01\x00", "Encrypted Fragment payload truncated"),
        (PayloadType.SKF, b"\x00\x00\x00\x01", "fragment number 0 of 1"),
        (PayloadType.SKF, b"\x00\x03\x00\x02", "fragment number 3 of 2"),
        (PayloadType.CP, b"\x01\x00\x00", "CP payload truncated"),
        (PayloadType.CP, b"\x01\x00\x00\x00\x00\x01\x00", "configuration attribute truncated"),
        (PayloadType.CP, b"\x01\x00\x00\x00\x00\x01\x00\x04\x01", "attribute value truncated"),
        (PayloadType.EAP, b"\x01\x01\x00", "EAP message truncated"),
        (PayloadType.EAP, b"\x01\x01\x00\x09\x01", "EAP Length 9"),
    ],
)
def test_bad_payload_bodies(payload_type: int, body: bytes, reason: str) -> None:
    _body_error(payload_type, body, reason)


def test_cp_ignores_the_reserved_r_bit() -> None:
    body = b"\x02\x00\x00\x00\x80\x01\x00\x04" + _v4("198.51.100.50")
    msg = parse_message(_datagram(PayloadType.CP, _generic(0, body)))
    assert msg.payloads == (CP(2, (ConfigAttribute(1, _v4("198.51.100.50")),)),)


# ---------------------------------------------------------------------------
# Payload helpers


def test_transform_attributes() -> None:
    t = Transform(1, 12, (TransformAttribute(99, b"x"), TransformAttribute(14, 256)))
    assert t.key_length == 256
    assert t.unknown_attributes == (TransformAttribute(99, b"x"),)
    assert TransformAttribute(99, b"x").tv is False
    assert Transform.make(3, 12).key_length is None
    with pytest.raises(ValueError):
        Transform(1, 12, (TransformAttribute(14, 128), TransformAttribute(14, 256)))
    with pytest.raises(ValueError):
        Transform(1, 12, (TransformAttribute(14, b"\x00\x80"),))


def test_notify_helpers() -> None:
    assert Notify.invalid_ke_payload(19).data_u16() == 19
    assert Notify.signature_hash_algorithms([2, 3, 4]).data_u16_list() == (2, 3, 4)
    assert Notify(NotifyType.NO_PROPOSAL_CHOSEN).is_error
    assert not Notify(NotifyType.COOKIE).is_error
    assert is_error_notify(NotifyType.TEMPORARY_FAILURE) and not is_error_notify(16384)
    with pytest.raises(MalformedPacket):
        Notify(NotifyType.INVALID_KE_PAYLOAD, b"\x00").data_u16()
    with pytest.raises(MalformedPacket):
        Notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, b"\x00").data_u16_list()
    msg = Message(HEADER, (NONCE, Notify(NotifyType.COOKIE, b"c"), Notify(NotifyType.COOKIE)))
    assert msg.notify(NotifyType.COOKIE) == Notify(NotifyType.COOKIE, b"c")
    assert msg.notify(NotifyType.REKEY_SA) is None
    assert msg.find(Nonce) == NONCE and msg.find(SA) is None
    assert msg.find_all(Notify) == [Notify(NotifyType.COOKIE, b"c"), Notify(NotifyType.COOKIE)]


def test_identification_helpers() -> None:
    idi = IDi.from_fqdn("a.test")
    assert idi.rest_of_payload == b"\x02\x00\x00\x00a.test"
    assert str(idi) == "a.test"
    assert str(IDr.from_address(_v4("198.51.100.2"))) == "198.51.100.2"
    assert idi != IDr.from_fqdn("a.test")  # same fields, another payload
    with pytest.raises(ValueError):
        IDi(IdType.ID_IPV4_ADDR, b"\x01")


def test_auth_signature_parts() -> None:
    algorithm = bytes.fromhex("300d06092a864886f70d01010b0500")
    auth = AUTH.digital_signature(algorithm, b"sig")
    assert auth.signature_parts() == (algorithm, b"sig")
    with pytest.raises(ValueError):
        AUTH(AuthMethod.SHARED_KEY_MIC, b"x").signature_parts()


def test_certreq_hashes() -> None:
    req = CERTREQ.from_ca_hashes([b"a" * 20, b"b" * 20])
    assert req.ca_hashes == (b"a" * 20, b"b" * 20)
    assert CERTREQ(CertEncoding.PGP, b"a" * 20).ca_hashes == ()
    with pytest.raises(ValueError):
        CERTREQ.from_ca_hashes([b"short"])


def test_delete_constraints() -> None:
    assert Delete.ike() == Delete(ProtocolId.IKE, 0, ())
    with pytest.raises(ValueError):
        Delete(ProtocolId.ESP, 4, (b"\x01",))


def test_eap_and_nonce_constructors_check() -> None:
    with pytest.raises(ValueError):
        Nonce(bytes(15))
    assert EAP(b"\x03\x01\x00\x04").data == b"\x03\x01\x00\x04"


# ---------------------------------------------------------------------------
# Traffic selectors <-> hostsec.ipsec.selectors.TrafficSelector


def test_ts_to_and_from_traffic_selector() -> None:
    for sel in (
        TrafficSelector.from_network("198.51.100.0/24", 6, 23),
        TrafficSelector.from_network("198.51.100.7/32"),
        TrafficSelector.from_network("2001:db8::/48", 17, (500, 4500)),
        TrafficSelector.from_network("198.51.100.1/32", 1, (0x0800, 0x08FF)),  # ICMP echo
    ):
        wire = TSAddressRange.from_selector(sel)
        assert wire.to_selector() == sel
        back = parse_payloads(PayloadType.TSi, encode_payloads([TSi((wire,))])[1])
        assert back == (TSi((wire,)),)
    assert TSAddressRange(_v4("198.51.100.1"), _v4("198.51.100.1")).ts_type == 7


def test_ts_payload_helpers() -> None:
    sels = [
        TrafficSelector.from_network("198.51.100.1/32", 6),
        TrafficSelector.from_network("2001:db8::/64"),
    ]
    payload = TSr.from_selectors(sels)
    assert payload.traffic_selectors() == tuple(sels)
    odd = TSi(
        (
            TSAddressRange(_v4("198.51.100.1"), _v4("198.51.100.1"), 6, 0xFFFF, 0),
            TSAddressRange.from_selector(sels[0]),
            UnknownTrafficSelector(10, 0, b"label"),
        )
    )
    # Only what a TrafficSelector can hold; fewer selectors only narrow (RFC 7296 2.9).
    assert odd.traffic_selectors() == (sels[0],)


def test_opaque_ports_and_empty_ranges_do_not_become_selectors() -> None:
    opaque = TSAddressRange(_v4("198.51.100.1"), _v4("198.51.100.1"), 6, 0xFFFF, 0)
    assert opaque.opaque
    with pytest.raises(ValueError):
        opaque.to_selector()
    empty = TSAddressRange(_v4("198.51.100.9"), _v4("198.51.100.1"))
    with pytest.raises(ValueError):
        empty.to_selector()
    with pytest.raises(ValueError):
        TSAddressRange(bytes(4), bytes(16))
    with pytest.raises(ValueError):
        UnknownTrafficSelector(7, 0, b"")


# ---------------------------------------------------------------------------
# The octets SK and SKF protect (RFC 7296 3.14, RFC 5282 5.1, RFC 7383 2.5)


@settings(max_examples=100, deadline=None)
@given(
    headers,
    st.lists(clear_payloads.filter(lambda p: not isinstance(p, UnknownPayload)), max_size=2),
    st.integers(0, 255),
    st.binary(max_size=64),
    st.none() | st.tuples(st.integers(1, 5), st.integers(0, 5)),
)
def test_encrypted_prefix_matches_the_encoded_message(
    header: IKEHeader,
    clear: list[Payload],
    first: int,
    data: bytes,
    fragment: tuple[int, int] | None,
) -> None:
    if fragment is not None:
        fragment = (fragment[0], fragment[0] + fragment[1])
        sk: SK | SKF = SKF(first, fragment[0], fragment[1], data)
    else:
        sk = SK(first, data)
    datagram = encode_message(header, [*clear, sk])
    prefix = encrypted_message_prefix(
        header, first, len(data), clear_payloads=clear, fragment=fragment
    )
    assert prefix + data == datagram
    assert encrypted_prefix_of(datagram) == prefix


def test_encrypted_prefix_errors() -> None:
    with pytest.raises(MalformedPacket, match="no Encrypted payload"):
        encrypted_prefix_of(encode_message(HEADER, [NONCE]))
    with pytest.raises(ValueError):
        encrypted_message_prefix(HEADER, 35, 10, fragment=(3, 2))
    with pytest.raises(ValueError):
        encrypted_message_prefix(HEADER, 35, 10, clear_payloads=[SK(0, b"")])


@pytest.mark.parametrize("block", [1, 4, 8, 16])
def test_sk_padding(block: int) -> None:
    for size in range(40):
        octets = bytes(range(size))
        padded = sk_pad(octets, block)
        assert len(padded) % block == 0
        assert len(padded) - size - 1 < block
        assert sk_unpad(padded) == octets
    # Any padding length is accepted on receipt.
    assert sk_unpad(b"abc" + bytes(200) + bytes((200,))) == b"abc"


def test_sk_unpad_errors() -> None:
    with pytest.raises(MalformedPacket):
        sk_unpad(b"")
    with pytest.raises(MalformedPacket, match="Pad Length 5"):
        sk_unpad(b"abc\x05")
    with pytest.raises(ValueError):
        sk_pad(b"", 0)
