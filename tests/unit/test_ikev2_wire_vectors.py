"""The IKEv2 codec against real messages of strongSwan 5.9.8 (tests/vectors/ikev2/).

Every datagram re-encodes byte for byte. IKE_SA_INIT messages are checked field by field;
encrypted messages are checked up to the SK payload by the codec, then (with the IKE SA
keys charon logged) decrypted here with ``cryptography`` to check the associated-data
helpers against real ciphertexts and to parse the inner payloads too.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hostsec.crypto.ikev2_proposals import from_sa_proposal
from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.wire.ikev2 import (
    AUTH,
    CERT,
    CERTREQ,
    KE,
    SA,
    SK,
    SKF,
    AuthMethod,
    CertEncoding,
    Delete,
    ExchangeType,
    FragmentReassembler,
    FragmentStatus,
    IDi,
    IDr,
    IdType,
    Message,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    PayloadType,
    ProtocolId,
    TSi,
    TSr,
    encode_payloads,
    parse_header,
    parse_message,
    parse_payloads,
)
from hostsec.wire.selectors import TrafficSelector

from .ikev2_vectors import all_datagrams, datagrams, decrypt, document, inner_chains

A = ipaddress.IPv4Address("198.51.100.1").packed
B = ipaddress.IPv4Address("198.51.100.2").packed
ALL_PROPOSALS = [
    "aes256-sha256-modp2048",
    "aes128-sha256-ecp256",
    "aes128gcm16-prfsha256-curve25519",
]


def _proposals(sa: SA) -> list[str]:
    return [str(from_sa_proposal(p)[0]) for p in sa.proposals]


def _ike(text: str) -> Any:
    return parse_proposal(text, Protocol.IKE)


# ---------------------------------------------------------------------------
# Every datagram


@pytest.mark.parametrize(("mode", "index", "datagram"), all_datagrams(), ids=lambda v: str(v)[:12])
def test_every_datagram_round_trips_byte_exact(mode: str, index: int, datagram: bytes) -> None:
    msg = parse_message(datagram)
    assert msg.encode() == datagram
    assert parse_header(datagram) == msg.header
    assert msg.header.major_version == 2
    if msg.header.exchange_type != ExchangeType.IKE_SA_INIT:
        assert msg.encrypted is not None and len(msg.payloads) == 1


# ---------------------------------------------------------------------------
# IKE_SA_INIT, fully


def test_ike_sa_init_request() -> None:
    datagram = datagrams("psk")[0]
    msg = parse_message(datagram)
    h = msg.header
    assert h.exchange_type == ExchangeType.IKE_SA_INIT and h.message_id == 0
    assert h.initiator and not h.response and h.spi_r == bytes(8)
    assert [type(p) for p in msg.payloads] == [SA, KE, Nonce] + [Notify] * 5
    sa = msg.find(SA)
    assert sa is not None
    assert [p.number for p in sa.proposals] == [1, 2, 3]
    assert all(p.protocol == ProtocolId.IKE and p.spi == b"" for p in sa.proposals)
    assert [from_sa_proposal(p)[0] for p in sa.proposals] == [_ike(t) for t in ALL_PROPOSALS]
    ke = msg.find(KE)
    assert ke is not None and ke.dh_group == 14 and len(ke.data) == 256
    nonce = msg.find(Nonce)
    assert nonce is not None and len(nonce.data) == 32
    assert [n.notify_type for n in msg.find_all(Notify)] == [
        NotifyType.NAT_DETECTION_SOURCE_IP,
        NotifyType.NAT_DETECTION_DESTINATION_IP,
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED,
        NotifyType.SIGNATURE_HASH_ALGORITHMS,
        NotifyType.REDIRECT_SUPPORTED,
    ]
    hashes = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    assert hashes is not None and hashes.data_u16_list() == (2, 3, 4, 5)
    # RFC 7296 2.23: SHA-1(SPIi | SPIr | IP | port) of where the request was sent.
    nat_d = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    expected = hashlib.sha1(h.spi_i + h.spi_r + B + (500).to_bytes(2, "big")).digest()
    assert nat_d is not None and nat_d.data == expected


def test_ike_sa_init_response() -> None:
    request, response = (parse_message(d) for d in datagrams("psk")[:2])
    h = response.header
    assert h.response and not h.initiator and h.message_id == 0
    assert h.spi_i == request.header.spi_i and h.spi_r != bytes(8)
    sa = response.find(SA)
    assert sa is not None and len(sa.proposals) == 1 and sa.proposals[0].number == 1
    assert _proposals(sa) == ["aes256-sha256-modp2048"]
    ke = response.find(KE)
    assert ke is not None and ke.dh_group == 14 and len(ke.data) == 256
    certreq = response.find(CERTREQ)
    assert certreq is not None and certreq.encoding == CertEncoding.X509_SIGNATURE
    # The CA's key hash: SHA-1 of its SubjectPublicKeyInfo (RFC 7296 3.7).
    ca = x509.load_pem_x509_certificate(document()["ca_cert_pem"].encode())
    spki = ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert certreq.ca_hashes == (hashlib.sha1(spki).digest(),)
    assert {n.notify_type for n in response.find_all(Notify)} >= {
        NotifyType.NAT_DETECTION_SOURCE_IP,
        NotifyType.NAT_DETECTION_DESTINATION_IP,
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED,
        NotifyType.SIGNATURE_HASH_ALGORITHMS,
        NotifyType.CHILDLESS_IKEV2_SUPPORTED,
        NotifyType.MULTIPLE_AUTH_SUPPORTED,
    }


def test_invalid_ke_payload_and_retry() -> None:
    first, answer, retry, response = (parse_message(d) for d in datagrams("invalidke")[:4])
    ke = first.find(KE)
    assert ke is not None and ke.dh_group == 14
    assert answer.header.spi_r == bytes(8) and len(answer.payloads) == 1
    notify = answer.notify(NotifyType.INVALID_KE_PAYLOAD)
    assert notify is not None and notify.is_error and notify.data_u16() == 19
    assert notify == Notify.invalid_ke_payload(19)
    ke = retry.find(KE)
    assert ke is not None and ke.dh_group == 19 and len(ke.data) == 64
    sa = response.find(SA)
    assert sa is not None and _proposals(sa) == ["aes128-sha256-ecp256"]


def test_cookie_and_retry() -> None:
    grams = datagrams("cookie")
    # [0], [1]: the half-open IKE_SA of halfopen.py; then the request, COOKIE, the retry.
    request, challenge, retry, response = (parse_message(d) for d in grams[2:6])
    cookie = challenge.notify(NotifyType.COOKIE)
    assert challenge.header.response and len(challenge.payloads) == 1
    assert cookie is not None and 1 <= len(cookie.data) <= 64
    # RFC 7296 2.6: the retry starts with the COOKIE, then repeats the first request.
    assert retry.payloads[0] == cookie
    assert retry.header.spi_i == request.header.spi_i
    assert retry.payloads[1:] == request.payloads
    assert response.find(SA) is not None


# ---------------------------------------------------------------------------
# Encrypted messages


def _inner(mode: str, datagram: bytes) -> tuple[Message, tuple[Payload, ...]]:
    msg = parse_message(datagram)
    assert isinstance(msg.encrypted, SK)
    octets = decrypt(mode, datagram)
    payloads = parse_payloads(msg.encrypted.first_payload_type, octets)
    assert encode_payloads(payloads) == (msg.encrypted.first_payload_type, octets)
    return msg, payloads


def _selectors(payload: TSi | TSr) -> list[TrafficSelector]:
    selectors = payload.traffic_selectors()
    assert len(selectors) == len(payload.selectors)
    return list(selectors)


def _find(payloads: tuple[Payload, ...], kind: type[Any]) -> Any:
    found = [p for p in payloads if isinstance(p, kind)]
    assert found, kind
    return found[0]


TS_A = [TrafficSelector.from_network("198.51.100.1/32", 6)]
TS_B = [TrafficSelector.from_network("198.51.100.2/32", 6, 23)]


@pytest.mark.parametrize("mode", ["psk", "invalidke", "cookie"])
def test_ike_auth_psk(mode: str) -> None:
    grams = [d for d in datagrams(mode) if d[18] == ExchangeType.IKE_AUTH]
    request, answer = (_inner(mode, d) for d in grams)
    _msg, inner = request
    assert [type(p).__name__ for p in inner][:8] == [
        "IDi", "Notify", "CERTREQ", "IDr", "AUTH", "SA", "TSi", "TSr"
    ]  # fmt: skip
    assert _find(inner, IDi) == IDi(IdType.ID_FQDN, b"a.test")
    assert _find(inner, IDr) == IDr.from_fqdn("b.test")
    auth = _find(inner, AUTH)
    assert auth.method == AuthMethod.SHARED_KEY_MIC and len(auth.data) == 32  # prf-hmac-sha256
    assert Notify(NotifyType.INITIAL_CONTACT) in inner
    sa = _find(inner, SA)
    assert all(p.protocol == ProtocolId.ESP and len(p.spi) == 4 for p in sa.proposals)
    assert [from_sa_proposal(p)[0] for p in sa.proposals] == [
        parse_proposal(t, Protocol.ESP) for t in ("aes128gcm16", "aes256-sha256")
    ]
    assert _selectors(_find(inner, TSi)) == TS_A
    assert _selectors(_find(inner, TSr)) == TS_B
    _msg, reply = answer
    assert _find(reply, IDr) == IDr.from_fqdn("b.test")
    assert _proposals(_find(reply, SA)) == ["aes128gcm16"]
    assert _selectors(_find(reply, TSi)) == TS_A and _selectors(_find(reply, TSr)) == TS_B


def test_child_rekey_ike_rekey_and_deletes() -> None:
    grams = datagrams("psk")
    messages = [_inner("psk", d) for d in grams[2:]]
    (_a, auth_req), _auth_resp, (_c, rekey_req), (_d, rekey_resp) = messages[:4]
    old_spi = _find(auth_req, SA).proposals[0].spi
    # CHILD_SA rekey (RFC 7296 1.3.3): REKEY_SA names the old inbound SPI; no KE (no PFS).
    assert rekey_req[0] == Notify.rekey_sa(ProtocolId.ESP, old_spi)
    assert [type(p) for p in rekey_req] == [Notify, SA, Nonce, TSi, TSr]
    assert [type(p) for p in rekey_resp] == [SA, Nonce, TSi, TSr]
    new_spi = _find(rekey_req, SA).proposals[0].spi
    assert new_spi != old_spi
    # INFORMATIONAL: the old CHILD_SA deleted, each side naming its own inbound SPI.
    (_e, delete_req), (_f, delete_resp) = messages[4:6]
    assert delete_req == (Delete.child(ProtocolId.ESP, [old_spi]),)
    assert len(delete_resp) == 1 and _find(delete_resp, Delete).protocol == ProtocolId.ESP
    # IKE SA rekey (1.3.2): SA with 8-octet SPIs, Nonce, KE; the new SA uses those SPIs.
    (ike_req_msg, ike_req), (_g, ike_resp) = messages[6:8]
    assert ike_req_msg.header.exchange_type == ExchangeType.CREATE_CHILD_SA
    assert [type(p) for p in ike_req] == [SA, Nonce, KE]
    spi_i = _find(ike_req, SA).proposals[0].spi
    spi_r = _find(ike_resp, SA).proposals[0].spi
    assert len(spi_i) == len(spi_r) == 8
    assert _proposals(_find(ike_resp, SA)) == ["aes256-sha256-modp2048"]
    assert _find(ike_req, KE).dh_group == 14
    # The old IKE SA is deleted; the new one, with the rekeyed SPIs, is deleted at the end.
    (_h, old_delete), (_i, old_empty) = messages[8:10]
    assert old_delete == (Delete.ike(),) and old_empty == ()
    (last_msg, last_delete), (_j, last_empty) = messages[10:12]
    assert (last_msg.header.spi_i, last_msg.header.spi_r) == (spi_i, spi_r)
    assert last_msg.header.message_id == 0
    assert last_delete == (Delete.ike(),) and last_empty == ()


def test_fragmented_ike_auth_with_certificates() -> None:
    grams = datagrams("cert")
    fragments = [parse_message(d) for d in grams[2:6]]
    skfs = [m.encrypted for m in fragments]
    assert all(isinstance(s, SKF) for s in skfs)
    assert [(s.fragment_number, s.total_fragments) for s in skfs] == [(1, 2), (2, 2)] * 2  # type: ignore[union-attr]
    assert [s.first_payload_type for s in skfs] == [PayloadType.IDi, 0, PayloadType.IDr, 0]  # type: ignore[union-attr]
    plaintexts = [decrypt("cert", d) for d in grams[2:6]]
    ca = x509.load_pem_x509_certificate(document()["ca_cert_pem"].encode())
    for (first, second), name, kind in (((0, 1), "a.test", IDi), ((2, 3), "b.test", IDr)):
        reassembler = FragmentReassembler()
        header = fragments[first].header
        # Out of order, with a duplicate.
        assert (
            reassembler.add(header.message_id, 2, 2, 0, plaintexts[second], header.response).status
            is FragmentStatus.STORED
        )
        assert (
            reassembler.add(header.message_id, 2, 2, 0, plaintexts[second], header.response).status
            is FragmentStatus.DUPLICATE
        )
        done = reassembler.add(
            header.message_id,
            1,
            2,
            skfs[first].first_payload_type,
            plaintexts[first],
            header.response,
        )  # type: ignore[union-attr]
        assert done.status is FragmentStatus.COMPLETE
        assert done.data == plaintexts[first] + plaintexts[second]
        inner = parse_payloads(done.first_payload_type, done.data)
        assert encode_payloads(inner) == (done.first_payload_type, done.data)
        assert _find(inner, kind) == kind.from_fqdn(name)
        cert = _find(inner, CERT)
        assert cert.encoding == CertEncoding.X509_SIGNATURE
        parsed = x509.load_der_x509_certificate(cert.data)
        assert parsed.issuer == ca.subject
        assert name in str(parsed.subject)
        auth = _find(inner, AUTH)
        assert auth.method == AuthMethod.DIGITAL_SIGNATURE
        algorithm, signature = auth.signature_parts()
        assert algorithm == bytes.fromhex("300d06092a864886f70d01010b0500")  # sha256WithRSA
        assert len(signature) == 256  # RSA-2048
        assert _selectors(_find(inner, TSi)) == TS_A and _selectors(_find(inner, TSr)) == TS_B
    # After IKE_AUTH, plain SK again.
    _m, delete = _inner("cert", grams[6])
    assert delete == (Delete.ike(),)


def test_every_inner_chain_round_trips() -> None:
    chains = inner_chains()
    assert len(chains) == 24  # 28 encrypted datagrams; two messages came in 2 fragments each
    for first, octets in chains:
        assert encode_payloads(parse_payloads(first, octets)) == (first, octets)
