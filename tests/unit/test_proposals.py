"""The strongSwan-style proposal parser: keywords, IANA numbers, round trips, errors.

The expected transform IDs are written out here from the IANA "IKEv2 Parameters"
registry (Transform Types 1-5), independently of hostsec.crypto.transforms.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsec.crypto.proposals import (
    Encryption,
    Proposal,
    ProposalError,
    Protocol,
    format_proposal,
    keyword_type,
    parse_proposal,
    parse_proposals,
)
from hostsec.crypto.transforms import DhId, EncrId, EsnId, IntegId, PrfId, TransformType

from .packets import budget

# keyword -> (IANA Transform Type 1 ID, key bits)
ENCRYPTION_KEYWORDS: dict[str, tuple[int, int | None]] = {
    "des": (2, None),
    "3des": (3, None),
    "null": (11, None),
    "chacha20poly1305": (28, None),
    "aes": (12, 128),
}
for _bits in (128, 192, 256):
    ENCRYPTION_KEYWORDS |= {
        f"aes{_bits}": (12, _bits),
        f"aes{_bits}ctr": (13, _bits),
        f"aes{_bits}ccm8": (14, _bits),
        f"aes{_bits}ccm64": (14, _bits),
        f"aes{_bits}ccm12": (15, _bits),
        f"aes{_bits}ccm96": (15, _bits),
        f"aes{_bits}ccm16": (16, _bits),
        f"aes{_bits}ccm128": (16, _bits),
        f"aes{_bits}ccm": (16, _bits),
        f"aes{_bits}gcm8": (18, _bits),
        f"aes{_bits}gcm64": (18, _bits),
        f"aes{_bits}gcm12": (19, _bits),
        f"aes{_bits}gcm96": (19, _bits),
        f"aes{_bits}gcm16": (20, _bits),
        f"aes{_bits}gcm128": (20, _bits),
        f"aes{_bits}gcm": (20, _bits),
        f"aes{_bits}gmac": (21, _bits),
    }
INTEGRITY_KEYWORDS = {  # Transform Type 3
    "md5": 1,
    "sha1": 2,
    "sha": 2,
    "aesxcbc": 5,
    "aescmac": 8,
    "sha256": 12,
    "sha2_256": 12,
    "sha384": 13,
    "sha2_384": 13,
    "sha512": 14,
    "sha2_512": 14,
}
PRF_KEYWORDS = {  # Transform Type 2
    "prfmd5": 1,
    "prfsha1": 2,
    "prfaesxcbc": 4,
    "prfsha256": 5,
    "prfsha384": 6,
    "prfsha512": 7,
    "prfaescmac": 8,
}
DH_KEYWORDS = {  # Transform Type 4
    "modp768": 1,
    "modp1024": 2,
    "modp1536": 5,
    "modp2048": 14,
    "modp3072": 15,
    "modp4096": 16,
    "modp6144": 17,
    "modp8192": 18,
    "ecp256": 19,
    "ecp384": 20,
    "ecp521": 21,
    "curve25519": 31,
    "x25519": 31,
    "curve448": 32,
    "x448": 32,
}
ESN_KEYWORDS = {"esn": 1, "noesn": 0}  # Transform Type 5

AEAD_IDS = {14, 15, 16, 18, 19, 20, 21, 28}
INSECURE = {"des", "3des", "null", "md5", "sha1", "sha", "prfmd5", "prfsha1", "modp768",
            "modp1024", "modp1536"}  # fmt: skip


def _proposals_with(keyword: str) -> list[tuple[str, Protocol]]:
    """Valid proposals that contain ``keyword``, for every protocol that takes it."""
    if keyword in ENCRYPTION_KEYWORDS:
        ident = ENCRYPTION_KEYWORDS[keyword][0]
        if ident in AEAD_IDS:
            out = [(keyword, Protocol.ESP), (f"{keyword}-esn", Protocol.ESP)]
            if ident != 21:  # GMAC does not encrypt: never for IKE
                out.append((f"{keyword}-prfsha256-ecp256", Protocol.IKE))
            return out
        out = [(f"{keyword}-sha256", Protocol.ESP), (f"{keyword}-sha256-modp2048", Protocol.ESP)]
        if ident != 11:  # IKE never uses NULL encryption
            out.append((f"{keyword}-sha256-modp2048", Protocol.IKE))
        return out
    if keyword in INTEGRITY_KEYWORDS:
        return [
            (keyword, Protocol.AH),
            (f"aes128-{keyword}", Protocol.ESP),
            (f"aes128-{keyword}-ecp256", Protocol.IKE),
        ]
    if keyword in PRF_KEYWORDS:
        return [(f"aes128gcm16-{keyword}-ecp256", Protocol.IKE),
                (f"aes128-sha256-{keyword}-ecp256", Protocol.IKE)]  # fmt: skip
    if keyword in DH_KEYWORDS:
        return [(f"aes128-sha256-{keyword}", Protocol.IKE),
                (f"aes128gcm16-{keyword}", Protocol.ESP),
                (f"sha256-{keyword}", Protocol.AH)]  # fmt: skip
    return [(f"aes128gcm16-{keyword}", Protocol.ESP), (f"sha256-{keyword}", Protocol.AH)]


ALL_KEYWORDS = [*ENCRYPTION_KEYWORDS, *INTEGRITY_KEYWORDS, *PRF_KEYWORDS, *DH_KEYWORDS,
                *ESN_KEYWORDS]  # fmt: skip


@pytest.mark.parametrize("keyword", ALL_KEYWORDS)
def test_every_keyword_has_its_iana_number_and_round_trips(keyword: str) -> None:
    for text, protocol in _proposals_with(keyword):
        p = parse_proposal(text, protocol)
        if keyword in ENCRYPTION_KEYWORDS:
            ident, bits = ENCRYPTION_KEYWORDS[keyword]
            assert p.encryption[0] == Encryption(EncrId(ident), bits)
            assert int(p.encryption[0].id) == ident
            assert keyword_type(keyword) is TransformType.ENCR
        elif keyword in INTEGRITY_KEYWORDS:
            assert [int(i) for i in p.integrity] == [INTEGRITY_KEYWORDS[keyword]]
            assert keyword_type(keyword) is TransformType.INTEG
        elif keyword in PRF_KEYWORDS:
            assert [int(i) for i in p.prf] == [PRF_KEYWORDS[keyword]]
            assert keyword_type(keyword) is TransformType.PRF
        elif keyword in DH_KEYWORDS:
            assert [int(i) for i in p.dh] == [DH_KEYWORDS[keyword]]
            assert keyword_type(keyword) is TransformType.DH
        else:
            assert [int(e) for e in p.esn] == [ESN_KEYWORDS[keyword]]
            assert keyword_type(keyword) is TransformType.ESN
        text2 = format_proposal(p)
        assert parse_proposal(text2, protocol) == p
        assert format_proposal(parse_proposal(text2, protocol)) == text2  # canonical
        assert str(p) == text2
        # Case and surrounding blanks do not matter.
        assert parse_proposal(f"  {text.upper()} ", protocol) == p


def test_defaults_the_strongswan_way() -> None:
    ike = parse_proposal("aes256-sha384-ecp384", Protocol.IKE)
    assert ike.prf == (PrfId.HMAC_SHA2_384,)  # PRF follows the integrity algorithm
    assert format_proposal(ike) == "aes256-sha384-ecp384"
    assert parse_proposal("aes128gcm16", Protocol.ESP).esn == (EsnId.NO,)
    assert parse_proposal("sha256", Protocol.AH).esn == (EsnId.NO,)
    both = parse_proposal("aes128-sha256-esn-noesn", Protocol.ESP)
    assert both.esn == (EsnId.YES, EsnId.NO)
    assert parse_proposal(format_proposal(both), Protocol.ESP) == both
    multi = parse_proposal("aes128-aes256-sha256-sha1-modp2048-ecp256", Protocol.ESP)
    assert [e.key_bits for e in multi.encryption] == [128, 256]  # order is preference
    assert multi.integrity == (IntegId.HMAC_SHA2_256_128, IntegId.HMAC_SHA1_96)
    assert multi.dh == (DhId.MODP_2048, DhId.ECP_256)
    assert parse_proposal(format_proposal(multi), Protocol.ESP) == multi
    assert parse_proposals(["aes128gcm16,aes256-sha256", "chacha20poly1305"], Protocol.ESP) == [
        parse_proposal("aes128gcm16", Protocol.ESP),
        parse_proposal("aes256-sha256", Protocol.ESP),
        parse_proposal("chacha20poly1305", Protocol.ESP),
    ]


@pytest.mark.parametrize(
    ("text", "protocol", "insecure"),
    [
        ("3des-md5", Protocol.ESP, ["3des", "md5"]),
        ("des-sha256", Protocol.ESP, ["des"]),
        ("aes128-sha1", Protocol.ESP, ["sha1"]),
        ("aes128-sha", Protocol.ESP, ["sha1"]),
        ("null-sha256", Protocol.ESP, ["null"]),
        ("md5", Protocol.AH, ["md5"]),
        ("aes128-sha256-modp1024", Protocol.IKE, ["modp1024"]),
        ("aes128-sha256-modp768-modp1536", Protocol.IKE, ["modp768", "modp1536"]),
        ("aes128gcm16-prfsha1-ecp256", Protocol.IKE, ["prfsha1"]),
        # The PRF implied by md5 is not a token the user wrote; md5 already says it.
        ("aes128-md5-modp2048", Protocol.IKE, ["md5"]),
        ("aes128-md5-prfmd5-modp2048", Protocol.IKE, ["md5"]),  # prfmd5 is the implied one
        ("aes128-sha256-prfmd5-modp2048", Protocol.IKE, ["prfmd5"]),
        ("aes256gcm16-esn", Protocol.ESP, []),
        ("chacha20poly1305", Protocol.ESP, []),
        ("aes128gmac", Protocol.ESP, []),
        ("aes256-sha512-modp4096", Protocol.ESP, []),
        ("aesxcbc", Protocol.AH, []),
        ("aes256gcm16-prfsha384-curve25519", Protocol.IKE, []),
    ],
)
def test_insecure_algorithms_are_flagged(
    text: str, protocol: Protocol, insecure: list[str]
) -> None:
    assert parse_proposal(text, protocol).insecure_algorithms() == insecure


def test_insecure_flags_cover_exactly_the_legacy_algorithms() -> None:
    for keyword in ALL_KEYWORDS:
        for text, protocol in _proposals_with(keyword):
            flagged = parse_proposal(text, protocol).insecure_algorithms()
            canonical = {"sha": "sha1"}.get(keyword, keyword)
            if keyword in INSECURE:
                assert canonical in flagged, (text, flagged)
            elif keyword not in ("esn", "noesn") and keyword in text.split("-"):
                assert all(f in INSECURE for f in flagged), (text, flagged)


@pytest.mark.parametrize(
    ("text", "protocol", "token"),
    [
        ("aes128-foo", Protocol.ESP, "foo"),
        ("aes128-sha256-modp2049", Protocol.IKE, "modp2049"),
        ("aes128gcm16-sha256", Protocol.ESP, "sha256"),  # AEAD has its own integrity
        ("aes128gcm16-aes128-sha256", Protocol.ESP, "aes128gcm16"),  # AEAD mixed with CBC
        ("aes128-sha256", Protocol.AH, "aes128"),  # AH does not encrypt
        ("aes128-sha256-prfsha256", Protocol.ESP, "prfsha256"),  # PRF only in IKE
        ("aes128-sha256-ecp256-esn", Protocol.IKE, "esn"),  # ESN only in ESP/AH
        ("aes128-sha256-sha256", Protocol.ESP, "sha256"),  # twice
        ("aes128-sha1-sha", Protocol.ESP, "sha"),  # the same algorithm through an alias
        ("aes128--sha256", Protocol.ESP, ""),
        ("aes128gmac-prfsha256-ecp256", Protocol.IKE, "aes128gmac"),  # no GMAC in IKE
        ("null-sha256-ecp256", Protocol.IKE, "null"),
        ("aes128gcm-aes128", Protocol.ESP, "aes128gcm"),  # named as written, not canonical
        ("aes256-aes128ccm64", Protocol.IKE, "aes128ccm64"),
        ("aes128gcm16-sha", Protocol.ESP, "sha"),
    ],
)
def test_errors_name_the_token(text: str, protocol: Protocol, token: str | None) -> None:
    with pytest.raises(ProposalError) as info:
        parse_proposal(text, protocol)
    err = info.value
    assert isinstance(err, ValueError)
    if token is not None:
        assert err.token == token
        assert f"'{token}'" in str(err) or (token == "" and "empty token" in str(err))
    # Whatever the error, a token it names is one the user wrote.
    assert err.token is None or err.token in text.split("-")


@pytest.mark.parametrize(
    ("text", "protocol"),
    [
        ("", Protocol.ESP),
        ("   ", Protocol.ESP),
        ("sha256", Protocol.ESP),  # ESP needs encryption
        ("aes128", Protocol.ESP),  # ... and integrity unless AEAD
        ("null", Protocol.ESP),
        ("modp2048", Protocol.AH),
        ("aes128-sha256", Protocol.IKE),  # no key exchange group
        ("aes128gcm16-ecp256", Protocol.IKE),  # AEAD needs an explicit PRF
        ("aes128-ecp256", Protocol.IKE),
    ],
)
def test_incomplete_proposals_are_errors(text: str, protocol: Protocol) -> None:
    with pytest.raises(ProposalError):
        parse_proposal(text, protocol)


# ---------------------------------------------------------------------------
# Random keyword soup: either a proposal that formats and parses back to itself, or a
# ProposalError that names a token of the input.

_soup = st.lists(
    st.one_of(
        st.sampled_from(ALL_KEYWORDS),
        st.sampled_from(["", "aes", "AES128", "aes129", "sha3", "modp", "gcm16", "ESN"]),
    ),
    min_size=1,
    max_size=6,
)


@budget(600)
@given(tokens=_soup, protocol=st.sampled_from(list(Protocol)))
def test_keyword_soup(tokens: list[str], protocol: Protocol) -> None:
    text = "-".join(tokens)
    try:
        p = parse_proposal(text, protocol)
    except ProposalError as err:
        lowered = [t.strip().lower() for t in text.split("-")]
        assert err.token is None or err.token in lowered, (text, err.token, str(err))
        return
    assert isinstance(p, Proposal) and p.protocol is protocol
    canonical = format_proposal(p)
    assert parse_proposal(canonical, protocol) == p
    assert format_proposal(parse_proposal(canonical, protocol)) == canonical
    if protocol is not Protocol.AH:
        assert p.encryption
    if p.aead:
        assert not p.integrity
    assert set(p.insecure_algorithms()) <= INSECURE
