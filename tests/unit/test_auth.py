"""IKEv2 AUTH: signed octets, PSK MIC, signature methods 1/9/10/11/14, RFC 7427 encodings."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsec.crypto import auth
from hostsec.crypto.auth import AuthenticationError, AuthMethod, HashAlgorithm
from hostsec.crypto.prf import Prf
from hostsec.crypto.transforms import PrfId

OCTETS = b"RealMessage1 ... | NonceRData | MACedIDForI" * 3
ALL_HASHES = (2, 3, 4, 5)


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "rsa": rsa.generate_private_key(65537, 2048),
        "rsa-other": rsa.generate_private_key(65537, 2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "k256": ec.generate_private_key(ec.SECP256K1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }


# ---------------------------------------------------------------- signed octets, PSK


def test_signed_octets_rfc7296_2_15() -> None:
    sk_pi = b"\x5a" * 32
    id_body = b"\x02\x00\x00\x00" + b"web1.example.net"  # ID_FQDN, RESERVED, data
    octets = auth.signed_octets(PrfId.HMAC_SHA2_256, b"<message 1>", b"<Nr>", sk_pi, id_body)
    maced = hmac.new(sk_pi, id_body, hashlib.sha256).digest()
    assert octets == b"<message 1>" + b"<Nr>" + maced


def test_psk_auth_rfc7296_2_15() -> None:
    psk, octets = b"correct horse battery staple", OCTETS
    pad_key = hmac.new(psk, b"Key Pad for IKEv2", hashlib.sha256).digest()
    expected = hmac.new(pad_key, octets, hashlib.sha256).digest()
    assert auth.KEY_PAD == b"Key Pad for IKEv2" and len(auth.KEY_PAD) == 17
    assert auth.psk_auth_data(PrfId.HMAC_SHA2_256, psk, octets) == expected
    auth.verify_psk_auth(PrfId.HMAC_SHA2_256, psk, octets, expected)


@pytest.mark.parametrize("prf_id", list(PrfId))
def test_psk_auth_rejections(prf_id: PrfId) -> None:
    psk = b"x" * 40  # longer than 128 bits: the XCBC/CMAC key rules apply (RFC 4434, 4615)
    data = auth.psk_auth_data(prf_id, psk, OCTETS)
    assert len(data) == Prf(prf_id).output_len
    auth.verify_psk_auth(prf_id, psk, OCTETS, data)
    bad = [
        (b"y" * 40, OCTETS, data),  # wrong PSK
        (psk, OCTETS + b"!", data),  # tampered octets
        (psk, OCTETS, data[:-1]),  # truncated AUTH
        (psk, OCTETS, data[:-1] + bytes([data[-1] ^ 1])),  # one bit flipped
        (psk, OCTETS, b""),
    ]
    for key, octets, auth_data in bad:
        with pytest.raises(AuthenticationError, match="does not verify") as info:
            auth.verify_psk_auth(prf_id, key, octets, auth_data)
        assert key.decode() not in str(info.value)
    with pytest.raises(AuthenticationError, match="empty"):
        auth.psk_auth_data(prf_id, b"", OCTETS)


# ---------------------------------------------------------------- RFC 7427 encodings

# RFC 7427 Appendix A.1 / RFC 4055: sha{256,384,512}WithRSAEncryption with NULL parameters.
# RFC 7427 Appendix A.3 (identical to the CA/B Forum BR 7.1.3.2.2 encodings): ecdsa-with-SHA*
# without parameters. RFC 8420 2 / RFC 8410 3: Ed25519 and Ed448 without parameters.
# RSASSA-PSS: RFC 4055 parameters with NULL hash parameters, MGF1 with the same hash and the
# hash length as salt, trailerField omitted (BoringSSL's kPSSParamsSHA256/384/512 bytes).
EXPECTED_ALGORITHM_IDS = {
    "rsa-pkcs1-sha256": "300d06092a864886f70d01010b0500",
    "rsa-pkcs1-sha384": "300d06092a864886f70d01010c0500",
    "rsa-pkcs1-sha512": "300d06092a864886f70d01010d0500",
    "ecdsa-sha256": "300a06082a8648ce3d040302",
    "ecdsa-sha384": "300a06082a8648ce3d040303",
    "ecdsa-sha512": "300a06082a8648ce3d040304",
    "ed25519": "300506032b6570",
    "ed448": "300506032b6571",
    "rsa-pss-sha256": (
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500"
        "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120"
    ),
    "rsa-pss-sha384": (
        "304106092a864886f70d01010a3034a00f300d06096086480165030402020500"
        "a11c301a06092a864886f70d010108300d06096086480165030402020500a203020130"
    ),
    "rsa-pss-sha512": (
        "304106092a864886f70d01010a3034a00f300d06096086480165030402030500"
        "a11c301a06092a864886f70d010108300d06096086480165030402030500a203020140"
    ),
}

SCHEMES = {
    s.name: s
    for s in (
        *auth.RSA_PKCS1.values(),
        *auth.RSA_PSS.values(),
        *auth.ECDSA.values(),
        auth.ED25519,
        auth.ED448,
    )
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ALGORITHM_IDS))
def test_algorithm_identifiers_byte_exact(name: str) -> None:
    assert SCHEMES[name].algorithm_identifier.hex() == EXPECTED_ALGORITHM_IDS[name]


def test_signature_hash_algorithms_notify() -> None:
    assert auth.encode_signature_hash_algorithms() == bytes.fromhex("0002000300040005")
    assert auth.decode_signature_hash_algorithms(bytes.fromhex("000100020006ffff")) == {
        1,
        2,
        6,
        0xFFFF,
    }
    assert auth.decode_signature_hash_algorithms(b"") == frozenset()
    with pytest.raises(AuthenticationError, match="odd length"):
        auth.decode_signature_hash_algorithms(b"\x00\x02\x00")
    assert [int(x) for x in HashAlgorithm] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------- choosing a scheme


@pytest.mark.parametrize(
    ("key", "peer", "pss", "expected", "method"),
    [
        ("rsa", ALL_HASHES, False, "rsa-pkcs1-sha256", 14),
        ("rsa", ALL_HASHES, True, "rsa-pss-sha256", 14),
        ("rsa", (4,), False, "rsa-pkcs1-sha512", 14),
        ("rsa", None, False, "rsa-sha1", 1),
        ("rsa", (1, 5), False, "rsa-sha1", 1),  # nothing common in SHA-2
        ("p256", ALL_HASHES, False, "ecdsa-sha256", 14),
        ("p384", ALL_HASHES, False, "ecdsa-sha384", 14),
        ("p521", ALL_HASHES, False, "ecdsa-sha512", 14),
        ("p384", (2,), False, "ecdsa-sha256", 14),
        ("p256", None, False, "ecdsa-p256-sha256", 9),
        ("p384", (), False, "ecdsa-p384-sha384", 10),
        ("p521", None, False, "ecdsa-p521-sha512", 11),
        ("k256", (2,), False, "ecdsa-sha256", 14),
        ("ed25519", ALL_HASHES, False, "ed25519", 14),
        ("ed448", (5,), False, "ed448", 14),
    ],
)
def test_choose_signature_scheme(
    keys: dict[str, Any],
    key: str,
    peer: tuple[int, ...] | None,
    pss: bool,
    expected: str,
    method: int,
) -> None:
    scheme = auth.choose_signature_scheme(keys[key], peer, rsa_pss=pss)
    assert scheme.name == expected
    assert scheme.method == method


def test_choose_signature_scheme_refusals(keys: dict[str, Any]) -> None:
    with pytest.raises(AuthenticationError, match="Identity hash"):
        auth.choose_signature_scheme(keys["ed25519"], (2, 3, 4), rsa_pss=False)
    with pytest.raises(AuthenticationError, match="Identity hash"):
        auth.choose_signature_scheme(keys["ed448"], None)
    with pytest.raises(AuthenticationError, match="secp256k1"):
        auth.choose_signature_scheme(keys["k256"], None)


# ---------------------------------------------------------------- sign / verify


ROUND_TRIPS = [
    ("rsa", None, False),
    ("rsa", (2,), False),
    ("rsa", (3,), False),
    ("rsa", (4,), False),
    ("rsa", (2,), True),
    ("rsa", (3,), True),
    ("rsa", (4,), True),
    ("p256", None, False),
    ("p384", None, False),
    ("p521", None, False),
    ("p256", (2,), False),
    ("p256", (4,), False),
    ("p384", (3,), False),
    ("p521", (4,), False),
    ("k256", (3,), False),
    ("ed25519", (5,), False),
    ("ed448", (5,), False),
]


@pytest.mark.parametrize(("key", "peer", "pss"), ROUND_TRIPS)
def test_sign_verify_round_trip(
    keys: dict[str, Any], key: str, peer: tuple[int, ...] | None, pss: bool
) -> None:
    private = keys[key]
    method, data = auth.sign(private, OCTETS, peer, rsa_pss=pss)
    scheme = auth.verify_signature_auth(method, data, private.public_key(), OCTETS)
    assert scheme == auth.choose_signature_scheme(private, peer, rsa_pss=pss)
    if method == AuthMethod.DIGITAL_SIGNATURE:
        n = data[0]
        assert data[1 : 1 + n] == scheme.algorithm_identifier
    # Tampered octets, a flipped signature bit and a wrong key are all refused.
    with pytest.raises(AuthenticationError):
        auth.verify_signature_auth(method, data, private.public_key(), OCTETS + b"x")
    flipped = data[:-1] + bytes([data[-1] ^ 0x01])
    with pytest.raises(AuthenticationError):
        auth.verify_signature_auth(method, flipped, private.public_key(), OCTETS)
    other: Any
    if key == "rsa":
        other = keys["rsa-other"]
    elif key == "ed25519":
        other = ed25519.Ed25519PrivateKey.generate()
    elif key == "ed448":
        other = ed448.Ed448PrivateKey.generate()
    else:
        other = ec.generate_private_key(private.curve)
    with pytest.raises(AuthenticationError, match="does not verify"):
        auth.verify_signature_auth(method, data, other.public_key(), OCTETS)


def test_signatures_verify_with_cryptography_directly(keys: dict[str, Any]) -> None:
    # Method 1: RSASSA-PKCS1-v1_5 with SHA-1 over the octets (RFC 7296 3.8).
    method, data = auth.sign(keys["rsa"], OCTETS, None)
    assert method == AuthMethod.RSA_DIGITAL_SIGNATURE
    keys["rsa"].public_key().verify(data, OCTETS, padding.PKCS1v15(), hashes.SHA1())
    # Methods 9/10/11: r | s, each as long as the group order (RFC 4754 7).
    legacy = (
        ("p256", 32, hashes.SHA256()),
        ("p384", 48, hashes.SHA384()),
        ("p521", 66, hashes.SHA512()),
    )
    for name, n, h in legacy:
        method, data = auth.sign(keys[name], OCTETS, None)
        assert len(data) == 2 * n
        der = utils.encode_dss_signature(int.from_bytes(data[:n]), int.from_bytes(data[n:]))
        keys[name].public_key().verify(der, OCTETS, ec.ECDSA(h))
    # Method 14 ECDSA: DER Ecdsa-Sig-Value after the AlgorithmIdentifier (RFC 7427 3).
    method, data = auth.sign(keys["p256"], OCTETS, (2,))
    sig = data[1 + data[0] :]
    keys["p256"].public_key().verify(sig, OCTETS, ec.ECDSA(hashes.SHA256()))
    # Method 14 RSASSA-PSS: salt as long as the hash.
    method, data = auth.sign(keys["rsa"], OCTETS, (3,), rsa_pss=True)
    pss = padding.PSS(padding.MGF1(hashes.SHA384()), 48)
    keys["rsa"].public_key().verify(data[1 + data[0] :], OCTETS, pss, hashes.SHA384())
    # Ed25519: the octets themselves are signed (RFC 8420).
    method, data = auth.sign(keys["ed25519"], OCTETS, (5,))
    keys["ed25519"].public_key().verify(data[1 + data[0] :], OCTETS)


def test_accepted_pss_encoding_variants(keys: dict[str, Any]) -> None:
    # A peer may send the PSS parameters with the DEFAULT trailerField, or hash parameters
    # absent: still RSASSA-PSS/SHA-256/salt 32.
    sig = keys["rsa"].sign(OCTETS, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    variants = auth.RSA_PSS[HashAlgorithm.SHA2_256].algorithm_ids
    assert len(variants) == 8 and len(set(variants)) == 8
    for algid in variants:
        data = bytes((len(algid),)) + algid + sig
        scheme = auth.verify_signature_auth(14, data, keys["rsa"].public_key(), OCTETS)
        assert scheme.name == "rsa-pss-sha256"


def test_verify_refusals(keys: dict[str, Any]) -> None:
    pub = keys["p256"].public_key()
    _, data14 = auth.sign(keys["p256"], OCTETS, (2,))
    _, data9 = auth.sign(keys["p256"], OCTETS, None)
    cases: list[tuple[int, bytes, Any, str]] = [
        (14, b"", pub, "empty"),
        (14, b"\x40" + data14[1:20], pub, "truncated"),
        (14, b"\x03\x30\x01\x00" + b"sig", pub, "unsupported signature algorithm"),
        (14, data14[: 1 + data14[0]], pub, "empty signature"),
        (14, data14, keys["rsa"].public_key(), "peer key is rsa"),
        (9, data9, keys["p384"].public_key(), "key on secp384r1"),
        (10, data9, keys["p384"].public_key(), "octets"),
        (9, data9[:-1], pub, "octets"),
        (2, data9, pub, "not a supported signature method"),
        (3, data9, pub, "not a supported signature method"),
        (200, data9, pub, "unsupported authentication method 200"),
        (1, data9, pub, "peer key is ecdsa"),
    ]
    for method, data, key, reason in cases:
        with pytest.raises(AuthenticationError, match=reason):
            auth.verify_signature_auth(method, data, key, OCTETS)
    # A hash we did not announce, and the legacy methods when they are not allowed.
    with pytest.raises(AuthenticationError, match="not among those we announced"):
        auth.verify_signature_auth(14, data14, pub, OCTETS, accepted_hashes=(3, 4))
    with pytest.raises(AuthenticationError, match="not allowed"):
        auth.verify_signature_auth(9, data9, pub, OCTETS, allow_legacy=False)
    # Signing with a key that does not fit the scheme.
    with pytest.raises(AuthenticationError, match="needs a key of type rsa"):
        auth.sign_auth(keys["p256"], auth.RSA_SHA1, OCTETS)
    with pytest.raises(AuthenticationError, match="secp384r1"):
        auth.sign_auth(keys["p256"], auth.ECDSA_P384, OCTETS)


@pytest.mark.parametrize("method", [1, 9, 11, 14])
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_fuzz_auth_data_only_raises_authentication_error(
    method: int, data: bytes, keys: dict[str, Any]
) -> None:
    key = keys["rsa"] if method == 1 else keys["p256"] if method in (9, 14) else keys["p521"]
    with pytest.raises(AuthenticationError):
        auth.verify_signature_auth(method, data, key.public_key(), OCTETS)
