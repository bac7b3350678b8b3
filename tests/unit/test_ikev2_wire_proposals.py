"""Proposals to and from the SA payload (hostsec.crypto.ikev2_proposals, RFC 7296 3.3)."""

from __future__ import annotations

import pytest

from hostsec.crypto.ikev2_proposals import (
    UnsupportedProposal,
    from_sa_payload,
    from_sa_proposal,
    to_sa_payload,
    to_sa_proposal,
)
from hostsec.crypto.proposals import Encryption, Proposal, Protocol, parse_proposal
from hostsec.crypto.transforms import DhId, EncrId, EsnId, IntegId, PrfId, TransformType
from hostsec.wire.ikev2 import (
    SA,
    SAProposal,
    Transform,
    TransformAttribute,
    encode_payloads,
    parse_payloads,
)

IKE = [
    "aes128gcm16-prfsha256-ecp256",
    "aes256-sha256-modp2048",
    "aes256gcm16-prfsha384-ecp384",
    "chacha20poly1305-prfsha256-curve25519",
    "aes128-aes256-sha256-sha384-modp2048-ecp256",
    "aes128ctr-aesxcbc-prfaescmac-curve448",
    "3des-sha1-modp1024",
    "aes192ccm12-prfsha512-ecp521",
    "aes128gcm16-aes256gcm16-prfsha256-prfsha512-x25519-ecp384",
]
ESP = [
    "aes128gcm16",
    "aes256-sha256",
    "chacha20poly1305",
    "aes256-sha256-modp2048",
    "aes128-sha1-esn",
    "aes128-sha256-esn-noesn",
    "aes128gmac",
    "null-sha256",
    "aes128ctr-sha512-ecp256",
    "des-md5",
]
AH = ["sha256", "sha1-modp2048", "aescmac-esn"]


def _cases() -> list[Proposal]:
    return (
        [parse_proposal(t, Protocol.IKE) for t in IKE]
        + [parse_proposal(t, Protocol.ESP) for t in ESP]
        + [parse_proposal(t, Protocol.AH) for t in AH]
    )


@pytest.mark.parametrize("proposal", _cases(), ids=str)
def test_round_trip_through_the_wire(proposal: Proposal) -> None:
    spi = b"" if proposal.protocol is Protocol.IKE else b"\x00\x00\x10\x01"
    wire = to_sa_proposal(proposal, 3, spi)
    assert wire.number == 3 and wire.protocol == proposal.protocol and wire.spi == spi
    sa = SA((wire,))
    back = parse_payloads(*encode_payloads([sa]))
    assert back == (sa,)
    assert from_sa_proposal(wire) == (proposal, spi)


def test_one_transform_per_algorithm_and_key_length() -> None:
    proposal = parse_proposal("aes128-aes256-sha256-modp2048-ecp256", Protocol.IKE)
    wire = to_sa_proposal(proposal)
    assert [(t.transform_type, t.transform_id, t.key_length) for t in wire.transforms] == [
        (TransformType.ENCR, EncrId.AES_CBC, 128),
        (TransformType.ENCR, EncrId.AES_CBC, 256),
        (TransformType.INTEG, IntegId.HMAC_SHA2_256_128, None),
        (TransformType.PRF, PrfId.HMAC_SHA2_256, None),
        (TransformType.DH, DhId.MODP_2048, None),
        (TransformType.DH, DhId.ECP_256, None),
    ]
    chacha = to_sa_proposal(parse_proposal("chacha20poly1305", Protocol.ESP))
    assert [(t.transform_id, t.key_length) for t in chacha.transforms] == [
        (EncrId.CHACHA20_POLY1305, None),
        (EsnId.NO, None),
    ]


def test_payload_numbering_and_filtering() -> None:
    offered = [parse_proposal(t, Protocol.ESP) for t in ("aes128gcm16", "aes256-sha256")]
    sa = to_sa_payload(offered, b"\x01\x02\x03\x04")
    assert [p.number for p in sa.proposals] == [1, 2]
    unknown = SAProposal(3, 3, b"\x01\x02\x03\x04", (Transform(1, 12, ()), Transform(9, 1)))
    sa = SA((*sa.proposals, unknown))
    assert from_sa_payload(sa) == [
        (1, offered[0], b"\x01\x02\x03\x04"),
        (2, offered[1], b"\x01\x02\x03\x04"),
    ]


def _esp(*transforms: Transform) -> SAProposal:
    return SAProposal(1, 3, b"\x00\x00\x10\x01", transforms)


ESN_NO = Transform.make(5, 0)


def test_unsupported_transforms_are_dropped_others_kept() -> None:
    proposal, _spi = from_sa_proposal(
        _esp(
            Transform.make(1, 12, 100),  # AES-CBC with a key length AES does not have
            Transform.make(1, 12),  # AES-CBC without the required Key Length
            Transform.make(1, 9999, 128),  # unknown ENCR ID
            Transform(1, 12, (TransformAttribute(14, 128), TransformAttribute(77, 1))),  # attr
            Transform.make(1, 28, 128),  # ChaCha20 with a wrong key length
            Transform.make(1, 12, 192),
            Transform.make(3, 12, 128),  # Key Length on INTEG
            Transform.make(3, 12),
            Transform.make(3, 250),  # unknown INTEG
            ESN_NO,
        )
    )
    assert proposal == Proposal(
        Protocol.ESP,
        (Encryption(EncrId.AES_CBC, 192),),
        (IntegId.HMAC_SHA2_256_128,),
        esn=(EsnId.NO,),
    )
    chacha, _ = from_sa_proposal(_esp(Transform.make(1, 28, 256), ESN_NO))
    assert chacha.encryption == (Encryption(EncrId.CHACHA20_POLY1305),)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (SAProposal(1, 4, b"", (Transform.make(1, 20, 128),)), "protocol ID 4"),
        (_esp(Transform.make(1, 20, 128), Transform.make(6, 1)), "transform type 6"),
        (_esp(Transform.make(1, 20, 100), ESN_NO), "no supported ENCR"),
        (_esp(Transform.make(1, 12, 128), Transform.make(3, 99), ESN_NO), "no supported INTEG"),
        (_esp(Transform.make(3, 12), ESN_NO), "ESP proposal without ENCR"),
        (SAProposal(1, 2, b"", (ESN_NO,)), "AH proposal without INTEG"),
        (
            SAProposal(
                1, 1, b"", (Transform.make(1, 12, 128), Transform.make(2, 5), Transform.make(4, 14))
            ),
            "IKE proposal without INTEG",
        ),
        (
            SAProposal(1, 1, b"", (Transform.make(1, 20, 128), Transform.make(4, 19))),
            "IKE proposal without PRF",
        ),
        (
            SAProposal(1, 1, b"", (Transform.make(1, 20, 128), Transform.make(2, 5))),
            "IKE proposal without DH",
        ),
    ],
)
def test_unacceptable_proposals(wire: SAProposal, reason: str) -> None:
    with pytest.raises(UnsupportedProposal, match=reason):
        from_sa_proposal(wire)


def test_missing_esn_reads_as_no_esn() -> None:
    proposal, _ = from_sa_proposal(_esp(Transform.make(1, 20, 128)))
    assert proposal == parse_proposal("aes128gcm16", Protocol.ESP)


def test_aead_ike_proposal_with_integ_none_reads_as_without_integ() -> None:
    wire = SAProposal(
        1,
        1,
        b"",
        (
            Transform.make(1, 20, 256),
            Transform.make(3, 0),
            Transform.make(2, 6),
            Transform.make(4, 20),
        ),
    )
    proposal, _ = from_sa_proposal(wire)
    assert proposal == parse_proposal("aes256gcm16-prfsha384-ecp384", Protocol.IKE)
    mixed = _esp(Transform.make(1, 12, 128), Transform.make(3, 0), ESN_NO)
    assert from_sa_proposal(mixed)[0].integrity == (IntegId.NONE,)  # not AEAD: kept
