"""IKEv2 authentication data: the signed octets, PSK and signature AUTH payloads.

- Signed octets (RFC 7296 2.15): InitiatorSignedOctets = RealMessage1 | NonceRData |
  MACedIDForI with MACedIDForI = prf(SK_pi, RestOfInitIDPayload); the responder's the same
  with RealMessage2, NonceIData and SK_pr.
- Shared Key Message Integrity Code, method 2: AUTH = prf(prf(Shared Secret,
  "Key Pad for IKEv2"), <SignedOctets>), checked in constant time.
- RSA Digital Signature, method 1: RSASSA-PKCS1-v1_5 with SHA-1 (RFC 7296 3.8).
- ECDSA methods 9, 10, 11 (RFC 4754): P-256/SHA-256, P-384/SHA-384, P-521/SHA-512, the
  signature as r | s, each left-padded to the length of the group order.
- Digital Signature, method 14 (RFC 7427): a one-octet length, the ASN.1
  AlgorithmIdentifier of the signature scheme, then the signature (DER for ECDSA): RSA
  PKCS#1 v1.5 and RSASSA-PSS with SHA-256/384/512, ECDSA with SHA-256/384/512, Ed25519 and
  Ed448 (RFC 8420, hash "Identity").
- SIGNATURE_HASH_ALGORITHMS (RFC 7427 4): the list of 16-bit hash identifiers we announce,
  and the choice of a scheme from the peer's list and the type of our key.

Every failure is an :class:`AuthenticationError` with a reason; secrets never appear in a
message or a repr.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import constant_time, hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)

from hostsec.crypto.prf import Prf
from hostsec.crypto.transforms import PrfId

KEY_PAD = b"Key Pad for IKEv2"  # RFC 7296 2.15: 17 ASCII octets, no terminator

SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


class AuthenticationError(Exception):
    """Authentication data that cannot be produced or does not verify."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthMethod(enum.IntEnum):
    """RFC 7296 3.8 Auth Method, with RFC 4754 and RFC 7427 additions."""

    RSA_DIGITAL_SIGNATURE = 1
    SHARED_KEY_MIC = 2
    DSS_DIGITAL_SIGNATURE = 3
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    DIGITAL_SIGNATURE = 14


class HashAlgorithm(enum.IntEnum):
    """IANA "IKEv2 Hash Algorithms" (RFC 7427 4, RFC 8420): SIGNATURE_HASH_ALGORITHMS values.
    6 and 7 (Streebog, RFC 9385) exist but are not supported here."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5


# What we announce and accept in method 14 (SHA-1 is not offered, RFC 8247 3.1).
SUPPORTED_HASH_ALGORITHMS: tuple[HashAlgorithm, ...] = (
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
)

_HASH_CLASSES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA1: hashes.SHA1,
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}


# ---------------------------------------------------------------- SIGNATURE_HASH_ALGORITHMS


def encode_signature_hash_algorithms(
    algorithms: Iterable[int] = SUPPORTED_HASH_ALGORITHMS,
) -> bytes:
    """Notification data of SIGNATURE_HASH_ALGORITHMS: 2-octet identifiers (RFC 7427 4)."""
    return b"".join(int(a).to_bytes(2, "big") for a in algorithms)


def decode_signature_hash_algorithms(data: bytes) -> frozenset[int]:
    """The hash identifiers of a SIGNATURE_HASH_ALGORITHMS notification (unknown ones kept,
    so that the caller may log them; they are ignored by the scheme choice)."""
    if len(data) % 2:
        raise AuthenticationError("SIGNATURE_HASH_ALGORITHMS data has an odd length")
    return frozenset(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


# ---------------------------------------------------------------- signed octets and PSK


def _prf(prf: Prf | PrfId | int) -> Prf:
    return prf if isinstance(prf, Prf) else Prf(prf)


def signed_octets(
    prf: Prf | PrfId | int, real_message: bytes, peer_nonce: bytes, sk_p: bytes, id_payload: bytes
) -> bytes:
    """The octets an IKE_AUTH peer signs or MACs (RFC 7296 2.15).

    ``real_message`` is this side's IKE_SA_INIT message exactly as sent (header included,
    reassembled if it was fragmented), ``peer_nonce`` the other side's nonce data, ``sk_p``
    this side's SK_pi (initiator) or SK_pr (responder), ``id_payload`` the body of this
    side's ID payload after the generic payload header (ID Type, RESERVED, data).
    """
    return real_message + peer_nonce + _prf(prf)(sk_p, id_payload)


def psk_auth_data(prf: Prf | PrfId | int, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>) (method 2)."""
    if not psk:
        raise AuthenticationError("empty pre-shared key")
    p = _prf(prf)
    return p(p(psk, KEY_PAD), octets)


def verify_psk_auth(prf: Prf | PrfId | int, psk: bytes, octets: bytes, auth_data: bytes) -> None:
    """Check a method 2 AUTH payload in constant time; raises :class:`AuthenticationError`."""
    expected = psk_auth_data(prf, psk, octets)
    if not constant_time.bytes_eq(expected, auth_data):
        raise AuthenticationError("pre-shared key AUTH does not verify")


# ---------------------------------------------------------------- signature schemes


def _tlv(tag: int, content: bytes) -> bytes:
    # Short-form DER length only: every structure built here is under 128 octets.
    assert len(content) < 0x80
    return bytes((tag, len(content))) + content


_SEQ, _OID, _NULL, _INT = 0x30, 0x06, 0x05, 0x02
_OID_HASH = {
    HashAlgorithm.SHA2_256: bytes.fromhex("608648016503040201"),
    HashAlgorithm.SHA2_384: bytes.fromhex("608648016503040202"),
    HashAlgorithm.SHA2_512: bytes.fromhex("608648016503040203"),
}
_OID_RSA_PKCS1 = {  # sha{256,384,512}WithRSAEncryption, 1.2.840.113549.1.1.{11,12,13}
    HashAlgorithm.SHA2_256: bytes.fromhex("2a864886f70d01010b"),
    HashAlgorithm.SHA2_384: bytes.fromhex("2a864886f70d01010c"),
    HashAlgorithm.SHA2_512: bytes.fromhex("2a864886f70d01010d"),
}
_OID_ECDSA = {  # ecdsa-with-SHA{256,384,512}, 1.2.840.10045.4.3.{2,3,4}
    HashAlgorithm.SHA2_256: bytes.fromhex("2a8648ce3d040302"),
    HashAlgorithm.SHA2_384: bytes.fromhex("2a8648ce3d040303"),
    HashAlgorithm.SHA2_512: bytes.fromhex("2a8648ce3d040304"),
}
_OID_RSASSA_PSS = bytes.fromhex("2a864886f70d01010a")  # 1.2.840.113549.1.1.10
_OID_MGF1 = bytes.fromhex("2a864886f70d010108")  # 1.2.840.113549.1.1.8
_OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112 (RFC 8410)
_OID_ED448 = bytes.fromhex("2b6571")  # 1.3.101.113


def _algid(oid: bytes, params: bytes | None = None) -> bytes:
    return _tlv(_SEQ, _tlv(_OID, oid) + (params if params is not None else b""))


def _pss_algids(h: HashAlgorithm) -> tuple[bytes, ...]:
    """RSASSA-PSS AlgorithmIdentifiers (RFC 4055 3.1) for hash ``h``, MGF1 with ``h`` and a
    salt as long as the hash. The first is the one we send (hash parameters NULL, the
    DEFAULT trailerField left out as DER requires); the variants are accepted too."""
    salt = _tlv(0xA2, _tlv(_INT, bytes((_HASH_CLASSES[h]().digest_size,))))
    trailer = _tlv(0xA3, _tlv(_INT, b"\x01"))
    out = []
    for hash_null in (True, False):
        hash_id = _algid(_OID_HASH[h], _tlv(_NULL, b"") if hash_null else None)
        for mgf_null in (True, False):
            mgf_hash = _algid(_OID_HASH[h], _tlv(_NULL, b"") if mgf_null else None)
            mgf = _tlv(0xA1, _algid(_OID_MGF1, mgf_hash))
            for with_trailer in (False, True):
                params = _tlv(0xA0, hash_id) + mgf + salt + (trailer if with_trailer else b"")
                out.append(_algid(_OID_RSASSA_PSS, _tlv(_SEQ, params)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SignatureScheme:
    """How a signature AUTH payload is made: the method, the key type, the hash and, for
    method 14, the AlgorithmIdentifier sent (``algorithm_ids[0]``) and those accepted."""

    name: str
    method: AuthMethod
    key_type: str  # "rsa", "ecdsa", "ed25519", "ed448"
    hash: HashAlgorithm
    pss: bool = False
    curve: str | None = None  # methods 9/10/11: the curve the key must be on
    algorithm_ids: tuple[bytes, ...] = ()

    @property
    def algorithm_identifier(self) -> bytes:
        return self.algorithm_ids[0] if self.algorithm_ids else b""


_SHA2 = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)
_BITS = {HashAlgorithm.SHA2_256: 256, HashAlgorithm.SHA2_384: 384, HashAlgorithm.SHA2_512: 512}

RSA_SHA1 = SignatureScheme("rsa-sha1", AuthMethod.RSA_DIGITAL_SIGNATURE, "rsa", HashAlgorithm.SHA1)
ECDSA_P256 = SignatureScheme(
    "ecdsa-p256-sha256", AuthMethod.ECDSA_SHA256_P256, "ecdsa", HashAlgorithm.SHA2_256, False,
    "secp256r1",
)  # fmt: skip
ECDSA_P384 = SignatureScheme(
    "ecdsa-p384-sha384", AuthMethod.ECDSA_SHA384_P384, "ecdsa", HashAlgorithm.SHA2_384, False,
    "secp384r1",
)  # fmt: skip
ECDSA_P521 = SignatureScheme(
    "ecdsa-p521-sha512", AuthMethod.ECDSA_SHA512_P521, "ecdsa", HashAlgorithm.SHA2_512, False,
    "secp521r1",
)  # fmt: skip

_DS = AuthMethod.DIGITAL_SIGNATURE
RSA_PKCS1: dict[HashAlgorithm, SignatureScheme] = {
    h: SignatureScheme(
        f"rsa-pkcs1-sha{_BITS[h]}",
        _DS,
        "rsa",
        h,
        algorithm_ids=(_algid(_OID_RSA_PKCS1[h], _tlv(_NULL, b"")), _algid(_OID_RSA_PKCS1[h])),
    )
    for h in _SHA2
}
RSA_PSS: dict[HashAlgorithm, SignatureScheme] = {
    h: SignatureScheme(f"rsa-pss-sha{_BITS[h]}", _DS, "rsa", h, True, algorithm_ids=_pss_algids(h))
    for h in _SHA2
}
ECDSA: dict[HashAlgorithm, SignatureScheme] = {
    h: SignatureScheme(
        f"ecdsa-sha{_BITS[h]}",
        _DS,
        "ecdsa",
        h,
        algorithm_ids=(_algid(_OID_ECDSA[h]), _algid(_OID_ECDSA[h], _tlv(_NULL, b""))),
    )
    for h in _SHA2
}
ED25519 = SignatureScheme(
    "ed25519", _DS, "ed25519", HashAlgorithm.IDENTITY, algorithm_ids=(_algid(_OID_ED25519),)
)
ED448 = SignatureScheme(
    "ed448", _DS, "ed448", HashAlgorithm.IDENTITY, algorithm_ids=(_algid(_OID_ED448),)
)

_LEGACY: dict[AuthMethod, SignatureScheme] = {
    s.method: s for s in (RSA_SHA1, ECDSA_P256, ECDSA_P384, ECDSA_P521)
}
_BY_ALGORITHM_ID: dict[bytes, SignatureScheme] = {
    algid: s
    for s in (*RSA_PKCS1.values(), *RSA_PSS.values(), *ECDSA.values(), ED25519, ED448)
    for algid in s.algorithm_ids
}
_CURVE_HASH = {
    "secp256r1": HashAlgorithm.SHA2_256,
    "secp384r1": HashAlgorithm.SHA2_384,
    "secp521r1": HashAlgorithm.SHA2_512,
}
_CURVE_LEGACY = {s.curve: s for s in (ECDSA_P256, ECDSA_P384, ECDSA_P521)}


def _key_type(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return "ed448"
    return type(key).__name__


def choose_signature_scheme(
    key: PrivateKeyTypes, peer_hashes: Collection[int] | None, *, rsa_pss: bool = False
) -> SignatureScheme:
    """The scheme to sign our AUTH with, given our key and the hashes the peer announced in
    SIGNATURE_HASH_ALGORITHMS (None or empty: it sent none, RFC 7427 4).

    With a common SHA-2 hash, method 14 is used: RSA PKCS#1 v1.5 (RSASSA-PSS when
    ``rsa_pss``) with SHA-256 first, ECDSA with the hash matching the curve first, EdDSA
    when the peer announced "Identity". Otherwise the legacy method of the key type
    (1 for RSA, 9/10/11 for ECDSA by curve); EdDSA has none.
    """
    kind = _key_type(key)
    peer = {int(h) for h in peer_hashes or ()}
    if kind in ("ed25519", "ed448"):
        if HashAlgorithm.IDENTITY not in peer:
            raise AuthenticationError(
                f"{kind} needs Digital Signature authentication: the peer did not announce "
                "the Identity hash (RFC 8420)"
            )
        return ED25519 if kind == "ed25519" else ED448
    if kind == "rsa":
        for h in _SHA2:
            if h in peer:
                return (RSA_PSS if rsa_pss else RSA_PKCS1)[h]
        return RSA_SHA1
    if kind == "ecdsa":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        curve = key.curve.name
        matching = _CURVE_HASH.get(curve)
        for h in (*((matching,) if matching else ()), *_SHA2):
            if h in peer:
                return ECDSA[h]
        if curve in _CURVE_LEGACY:
            return _CURVE_LEGACY[curve]
        raise AuthenticationError(f"no ECDSA authentication method for curve {curve}")
    raise AuthenticationError(f"unsupported private key type {kind}")


def _order_len(curve: ec.EllipticCurve) -> int:
    return (curve.key_size + 7) // 8


def _sign_raw(key: PrivateKeyTypes, scheme: SignatureScheme, octets: bytes) -> bytes:
    if _key_type(key) != scheme.key_type:
        raise AuthenticationError(f"{scheme.name} needs a key of type {scheme.key_type}")
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(octets)
    h = _HASH_CLASSES[scheme.hash]()
    if isinstance(key, rsa.RSAPrivateKey):
        pad: padding.AsymmetricPadding = (
            padding.PSS(padding.MGF1(h), h.digest_size) if scheme.pss else padding.PKCS1v15()
        )
        return key.sign(octets, pad, h)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    der = key.sign(octets, ec.ECDSA(h))
    if scheme.method == AuthMethod.DIGITAL_SIGNATURE:
        return der  # RFC 7427 3: ECDSA signatures in method 14 are DER Ecdsa-Sig-Value
    if key.curve.name != scheme.curve:
        raise AuthenticationError(f"{scheme.name} needs a key on {scheme.curve}")
    r, s = utils.decode_dss_signature(der)
    n = _order_len(key.curve)
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")  # RFC 4754 7: r | s


def sign_auth(key: PrivateKeyTypes, scheme: SignatureScheme, octets: bytes) -> bytes:
    """The Authentication Data of an AUTH payload signed with ``scheme`` (method
    ``scheme.method``); for method 14 it starts with the AlgorithmIdentifier."""
    try:
        sig = _sign_raw(key, scheme, octets)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuthenticationError(f"cannot sign with {scheme.name}: {type(exc).__name__}") from None
    if scheme.method == AuthMethod.DIGITAL_SIGNATURE:
        algid = scheme.algorithm_identifier
        return bytes((len(algid),)) + algid + sig
    return sig


def sign(
    key: PrivateKeyTypes,
    octets: bytes,
    peer_hashes: Collection[int] | None,
    *,
    rsa_pss: bool = False,
) -> tuple[AuthMethod, bytes]:
    """Choose a scheme for ``key`` and the peer's hashes, sign: (Auth Method, AUTH data)."""
    scheme = choose_signature_scheme(key, peer_hashes, rsa_pss=rsa_pss)
    return scheme.method, sign_auth(key, scheme, octets)


def _verify_raw(
    public_key: CertificatePublicKeyTypes, scheme: SignatureScheme, sig: bytes, octets: bytes
) -> None:
    if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(sig, octets)
        return
    h = _HASH_CLASSES[scheme.hash]()
    if isinstance(public_key, rsa.RSAPublicKey):
        pad: padding.AsymmetricPadding = (
            padding.PSS(padding.MGF1(h), h.digest_size) if scheme.pss else padding.PKCS1v15()
        )
        public_key.verify(sig, octets, pad, h)
        return
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    if scheme.method != AuthMethod.DIGITAL_SIGNATURE:
        if public_key.curve.name != scheme.curve:
            raise AuthenticationError(f"{scheme.name} with a key on {public_key.curve.name}")
        n = _order_len(public_key.curve)
        if len(sig) != 2 * n:
            raise AuthenticationError(f"{scheme.name} signature is {len(sig)} octets, not {2 * n}")
        r = int.from_bytes(sig[:n], "big")
        s = int.from_bytes(sig[n:], "big")
        sig = utils.encode_dss_signature(r, s)
    public_key.verify(sig, octets, ec.ECDSA(h))


def verify_signature_auth(
    method: int,
    auth_data: bytes,
    public_key: CertificatePublicKeyTypes,
    octets: bytes,
    *,
    accepted_hashes: Collection[int] = SUPPORTED_HASH_ALGORITHMS,
    allow_legacy: bool = True,
) -> SignatureScheme:
    """Check a signature AUTH payload (method 1, 9, 10, 11 or 14) against the peer's public
    key (from its certificate). Returns the scheme used; raises :class:`AuthenticationError`.
    ``accepted_hashes`` are those we announced (method 14); ``allow_legacy`` admits methods
    1 and 9-11, whose hash is fixed by the method."""
    try:
        m = AuthMethod(method)
    except ValueError:
        raise AuthenticationError(f"unsupported authentication method {method}") from None
    if m == AuthMethod.DIGITAL_SIGNATURE:
        if not auth_data:
            raise AuthenticationError("empty Digital Signature AUTH data")
        n = auth_data[0]
        if len(auth_data) < 1 + n:
            raise AuthenticationError("truncated AlgorithmIdentifier in AUTH data")
        scheme = _BY_ALGORITHM_ID.get(auth_data[1 : 1 + n])
        if scheme is None:
            raise AuthenticationError("unsupported signature algorithm in AUTH data")
        if scheme.hash not in {int(h) for h in accepted_hashes}:
            raise AuthenticationError(f"{scheme.name}: hash not among those we announced")
        sig = auth_data[1 + n :]
    elif m in _LEGACY:
        if not allow_legacy:
            raise AuthenticationError(f"authentication method {m.name} is not allowed")
        scheme = _LEGACY[m]
        sig = auth_data
    else:
        raise AuthenticationError(f"{m.name} is not a supported signature method")
    kind = _key_type(public_key)
    if kind != scheme.key_type:
        raise AuthenticationError(f"{scheme.name} signature but the peer key is {kind}")
    if not sig:
        raise AuthenticationError("empty signature")
    try:
        _verify_raw(public_key, scheme, sig, octets)
    except InvalidSignature:
        raise AuthenticationError(f"{scheme.name} signature does not verify") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuthenticationError(f"{scheme.name} signature is malformed") from None
    return scheme
