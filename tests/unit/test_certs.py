"""X.509 trust for IKE: a small PKI built in the test, chains, refusals, identities, files."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsec.crypto import auth
from hostsec.crypto.certs import (
    CertificateError,
    Identity,
    IdType,
    TrustStore,
    ca_key_hash,
    check_identity,
    identity_matches,
    identity_of,
    load_credentials,
    load_der_certificate,
    read_private_file,
    split_key_hashes,
)

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _name(cn: str, org: str = "hostsec test") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _ku(
    *, ca: bool, digital_signature: bool = True, non_repudiation: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=non_repudiation,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class Cert:
    cert: x509.Certificate
    key: Any


@dataclass
class Spec:
    """What a test certificate looks like; the defaults make a valid one."""

    subject: x509.Name
    key: Any
    ca: bool = False
    path_length: int | None = None
    ku: x509.KeyUsage | None = None
    basic_constraints: bool = True
    san: list[x509.GeneralName] = field(default_factory=list)
    not_before: dt.datetime = NOW - 30 * DAY
    not_after: dt.datetime = NOW + 365 * DAY
    extra: list[tuple[x509.ExtensionType, bool]] = field(default_factory=list)
    pss: bool = False


def issue(spec: Spec, issuer: Cert | None) -> Cert:
    """Sign ``spec`` with ``issuer`` (self-signed when None)."""
    signer_key = issuer.key if issuer else spec.key
    issuer_name = issuer.cert.subject if issuer else spec.subject
    b = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(issuer_name)
        .public_key(spec.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(spec.key.public_key()), False)
    )
    if spec.basic_constraints:
        b = b.add_extension(x509.BasicConstraints(spec.ca, spec.path_length), critical=True)
    ku = spec.ku if spec.ku is not None else _ku(ca=spec.ca, digital_signature=not spec.ca)
    b = b.add_extension(ku, critical=True)
    if spec.san:
        b = b.add_extension(x509.SubjectAlternativeName(spec.san), critical=False)
    for ext, critical in spec.extra:
        b = b.add_extension(ext, critical=critical)
    if isinstance(signer_key, ed25519.Ed25519PrivateKey):
        return Cert(b.sign(signer_key, None), spec.key)
    if spec.pss:
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        return Cert(b.sign(signer_key, hashes.SHA256(), rsa_padding=pss), spec.key)
    return Cert(b.sign(signer_key, hashes.SHA256()), spec.key)


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    rsa_root_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    p: dict[str, Any] = {}
    p["root"] = issue(Spec(_name("RSA Root CA"), rsa_root_key, ca=True), None)
    p["ec_root"] = issue(
        Spec(_name("ECDSA Root CA"), ec.generate_private_key(ec.SECP384R1()), ca=True), None
    )
    p["inter"] = issue(Spec(_name("ECDSA Intermediate CA"), ec_key, ca=True), p["root"])
    p["leaf_key"] = ec.generate_private_key(ec.SECP256R1())
    p["san"] = [
        x509.DNSName("db1.example.net"),
        x509.IPAddress(ipaddress.ip_address("198.51.100.20")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::20")),
        x509.RFC822Name("admin@example.net"),
    ]
    p["leaf"] = issue(Spec(_name("db1"), p["leaf_key"], san=p["san"]), p["inter"])
    p["rsa_leaf"] = issue(
        Spec(
            _name("web1"),
            rsa.generate_private_key(65537, 2048),
            san=[x509.DNSName("web1.example.net")],
        ),
        p["root"],
    )
    # A different CA that calls itself "RSA Root CA": same name, other key.
    p["impostor"] = issue(
        Spec(_name("RSA Root CA"), rsa.generate_private_key(65537, 2048), ca=True), None
    )
    p["store"] = TrustStore([p["root"].cert, p["ec_root"].cert])
    return p


def verify(
    pki: dict[str, Any], leaf: Cert, *chain: Cert, **kw: Any
) -> tuple[x509.Certificate, ...]:
    store: TrustStore = kw.pop("store", pki["store"])
    return store.verify(leaf.cert, [c.cert for c in chain], kw.pop("now", NOW), **kw)


# ---------------------------------------------------------------- chains that verify


def test_chain_through_an_intermediate(pki: dict[str, Any]) -> None:
    chain = verify(pki, pki["leaf"], pki["inter"])
    assert chain == (pki["leaf"].cert, pki["inter"].cert, pki["root"].cert)


def test_leaf_directly_under_the_root(pki: dict[str, Any]) -> None:
    assert verify(pki, pki["rsa_leaf"]) == (pki["rsa_leaf"].cert, pki["root"].cert)


def test_extra_and_reordered_intermediates(pki: dict[str, Any]) -> None:
    decoy = issue(
        Spec(_name("Unrelated CA"), ec.generate_private_key(ec.SECP256R1()), ca=True), None
    )
    chain = verify(pki, pki["leaf"], decoy, pki["root"], pki["inter"])
    assert chain[-1] == pki["root"].cert and len(chain) == 3


def test_ed25519_and_ecdsa_roots_and_pss_signatures(pki: dict[str, Any]) -> None:
    # Ed25519 CAs are fine for IKE (cryptography's Web PKI verifier would refuse them).
    ed_root = issue(
        Spec(_name("Ed25519 Root"), ed25519.Ed25519PrivateKey.generate(), ca=True), None
    )
    ed_leaf = issue(Spec(_name("ed-leaf"), ed25519.Ed25519PrivateKey.generate()), ed_root)
    store = TrustStore([ed_root.cert])
    assert verify(pki, ed_leaf, store=store) == (ed_leaf.cert, ed_root.cert)
    ec_leaf = issue(
        Spec(_name("under-ec-root"), ec.generate_private_key(ec.SECP384R1())), pki["ec_root"]
    )
    assert verify(pki, ec_leaf)[-1] == pki["ec_root"].cert
    pss_leaf = issue(
        Spec(_name("pss"), ec.generate_private_key(ec.SECP256R1()), pss=True), pki["root"]
    )
    assert verify(pki, pss_leaf)[-1] == pki["root"].cert


def test_an_anchor_presented_as_the_end_entity(pki: dict[str, Any]) -> None:
    # A self-signed certificate that is trusted directly (and may sign AUTH payloads).
    ku = _ku(ca=True, digital_signature=True)
    pinned = issue(
        Spec(_name("pinned"), ec.generate_private_key(ec.SECP256R1()), ca=True, ku=ku), None
    )
    store = TrustStore([pinned.cert])
    assert verify(pki, pinned, store=store) == (pinned.cert,)
    # A CA whose key usage does not allow signatures is no end entity.
    with pytest.raises(CertificateError, match="does not allow digitalSignature"):
        verify(pki, pki["root"])


def test_non_repudiation_alone_is_enough(pki: dict[str, Any]) -> None:
    ku = _ku(ca=False, digital_signature=False, non_repudiation=True)
    leaf = issue(Spec(_name("nr"), ec.generate_private_key(ec.SECP256R1()), ku=ku), pki["root"])
    assert verify(pki, leaf)[0] == leaf.cert


# ---------------------------------------------------------------- refusals


def test_untrusted_issuer(pki: dict[str, Any]) -> None:
    with pytest.raises(CertificateError, match="untrusted issuer"):
        verify(pki, pki["leaf"])  # intermediate not sent
    other_root = issue(
        Spec(_name("Other Root"), ec.generate_private_key(ec.SECP256R1()), ca=True), None
    )
    stranger = issue(Spec(_name("stranger"), ec.generate_private_key(ec.SECP256R1())), other_root)
    with pytest.raises(CertificateError, match="untrusted issuer"):
        verify(pki, stranger, other_root)


def test_wrong_ca_with_the_same_name(pki: dict[str, Any]) -> None:
    forged = issue(Spec(_name("forged"), ec.generate_private_key(ec.SECP256R1())), pki["impostor"])
    with pytest.raises(CertificateError, match="bad signature"):
        verify(pki, forged)
    with pytest.raises(CertificateError, match="bad signature"):
        verify(pki, forged, pki["impostor"])  # sending the impostor root does not help


@pytest.mark.parametrize(
    ("now", "reason"),
    [(NOW + 400 * DAY, "expired"), (NOW - 40 * DAY, "not yet valid")],
)
def test_validity_dates(pki: dict[str, Any], now: dt.datetime, reason: str) -> None:
    with pytest.raises(CertificateError, match=reason):
        verify(pki, pki["leaf"], pki["inter"], now=now)


def test_expired_leaf_and_expired_intermediate(pki: dict[str, Any]) -> None:
    old = issue(
        Spec(_name("old"), ec.generate_private_key(ec.SECP256R1()), not_after=NOW - DAY),
        pki["root"],
    )
    with pytest.raises(CertificateError, match=r"expired: O=hostsec test, CN=old"):
        verify(pki, old)
    old_inter = issue(
        Spec(
            _name("Old Intermediate"),
            ec.generate_private_key(ec.SECP256R1()),
            ca=True,
            not_after=NOW - DAY,
        ),
        pki["root"],
    )
    leaf = issue(Spec(_name("young"), ec.generate_private_key(ec.SECP256R1())), old_inter)
    with pytest.raises(CertificateError, match=r"expired: O=hostsec test, CN=Old Intermediate"):
        verify(pki, leaf, old_inter)


def test_issuer_must_be_a_ca(pki: dict[str, Any]) -> None:
    not_ca = issue(
        Spec(_name("Not A CA"), ec.generate_private_key(ec.SECP256R1()), ku=_ku(ca=True)),
        pki["root"],
    )
    leaf = issue(Spec(_name("under-not-ca"), ec.generate_private_key(ec.SECP256R1())), not_ca)
    with pytest.raises(CertificateError, match="is not a CA"):
        verify(pki, leaf, not_ca)
    no_bc = issue(
        Spec(
            _name("No BC"),
            ec.generate_private_key(ec.SECP256R1()),
            ku=_ku(ca=True),
            basic_constraints=False,
        ),
        pki["root"],
    )
    leaf2 = issue(Spec(_name("under-no-bc"), ec.generate_private_key(ec.SECP256R1())), no_bc)
    with pytest.raises(CertificateError, match="is not a CA"):
        verify(pki, leaf2, no_bc)


def test_issuer_key_usage_must_allow_cert_signing(pki: dict[str, Any]) -> None:
    ku = _ku(ca=False, digital_signature=True)
    weak = issue(
        Spec(_name("KU CA"), ec.generate_private_key(ec.SECP256R1()), ca=True, ku=ku), pki["root"]
    )
    leaf = issue(Spec(_name("under-ku-ca"), ec.generate_private_key(ec.SECP256R1())), weak)
    with pytest.raises(CertificateError, match="does not allow certificate signing"):
        verify(pki, leaf, weak)


def test_path_length_constraint(pki: dict[str, Any]) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root0 = issue(Spec(_name("Pathlen0 Root"), root_key, ca=True, path_length=0), None)
    inter = issue(
        Spec(_name("Pathlen Inter"), ec.generate_private_key(ec.SECP256R1()), ca=True), root0
    )
    leaf = issue(Spec(_name("deep"), ec.generate_private_key(ec.SECP256R1())), inter)
    direct = issue(Spec(_name("shallow"), ec.generate_private_key(ec.SECP256R1())), root0)
    store = TrustStore([root0.cert])
    with pytest.raises(CertificateError, match="path length"):
        verify(pki, leaf, inter, store=store)
    assert len(verify(pki, direct, store=store)) == 2


def test_leaf_key_usage_must_allow_signatures(pki: dict[str, Any]) -> None:
    ku = _ku(ca=False, digital_signature=False)
    leaf = issue(Spec(_name("no-ds"), ec.generate_private_key(ec.SECP256R1()), ku=ku), pki["root"])
    with pytest.raises(CertificateError, match="does not allow digitalSignature"):
        verify(pki, leaf)


def test_unknown_critical_extension(pki: dict[str, Any]) -> None:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    leaf = issue(
        Spec(_name("crit"), ec.generate_private_key(ec.SECP256R1()), extra=[(ext, True)]),
        pki["root"],
    )
    with pytest.raises(CertificateError, match="unsupported critical extension"):
        verify(pki, leaf)
    fine = issue(
        Spec(_name("noncrit"), ec.generate_private_key(ec.SECP256R1()), extra=[(ext, False)]),
        pki["root"],
    )
    assert verify(pki, fine)[0] == fine.cert
    # Name constraints are not processed: a CA that sets them critically is refused.
    nc = x509.NameConstraints([x509.DNSName("example.net")], None)
    constrained = issue(
        Spec(_name("NC CA"), ec.generate_private_key(ec.SECP256R1()), ca=True, extra=[(nc, True)]),
        pki["root"],
    )
    below = issue(Spec(_name("nc-leaf"), ec.generate_private_key(ec.SECP256R1())), constrained)
    with pytest.raises(CertificateError, match="unsupported critical extension NameConstraints"):
        verify(pki, below, constrained)


def test_small_rsa_keys(pki: dict[str, Any]) -> None:
    small = issue(Spec(_name("rsa1024"), rsa.generate_private_key(65537, 1024)), pki["root"])
    with pytest.raises(CertificateError, match="RSA key of 1024 bits"):
        verify(pki, small)
    assert verify(pki, small, min_rsa_bits=1024)[0] == small.cert


def test_chain_depth_limit(pki: dict[str, Any]) -> None:
    cas = [pki["root"]]
    for i in range(4):
        cas.append(
            issue(
                Spec(_name(f"Level {i}"), ec.generate_private_key(ec.SECP256R1()), ca=True), cas[-1]
            )
        )
    leaf = issue(Spec(_name("bottom"), ec.generate_private_key(ec.SECP256R1())), cas[-1])
    assert len(verify(pki, leaf, *cas[1:])) == 6
    with pytest.raises(CertificateError, match="chain longer than 3"):
        verify(pki, leaf, *cas[1:], max_depth=3)


def test_crafted_intermediates_are_bounded(pki: dict[str, Any]) -> None:
    # Many CAs with the same name, each "issued" by that name: a search tree that would
    # explode without a budget. Also too many CERT payloads are refused outright.
    same, key = _name("Loop CA"), ec.generate_private_key(ec.SECP256R1())
    loop = [issue(Spec(same, key, ca=True), None) for _ in range(8)]  # all verify each other
    leaf = issue(Spec(_name("looped"), ec.generate_private_key(ec.SECP256R1())), loop[0])
    with pytest.raises(CertificateError, match="too many candidate issuers"):
        verify(pki, leaf, *loop)
    with pytest.raises(CertificateError, match="17 intermediate certificates"):
        verify(pki, leaf, *(loop * 3)[:17])
    # Duplicates are harmless: the same chain sent twice still verifies.
    assert len(verify(pki, pki["leaf"], pki["inter"], pki["inter"])) == 3


def test_now_must_be_aware(pki: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(pki, pki["leaf"], pki["inter"], now=dt.datetime(2025, 6, 1))


# ---------------------------------------------------------------- identities


@pytest.mark.parametrize(
    ("text", "kind", "match"),
    [
        ("db1.example.net", IdType.FQDN, True),
        ("DB1.Example.NET.", IdType.FQDN, True),
        ("@db1.example.net", IdType.FQDN, True),
        ("other.example.net", IdType.FQDN, False),
        ("db1", IdType.FQDN, False),  # the CN is never an FQDN identity (RFC 4945 3.1)
        ("198.51.100.20", IdType.IPV4_ADDR, True),
        ("198.51.100.21", IdType.IPV4_ADDR, False),
        ("2001:db8::20", IdType.IPV6_ADDR, True),
        ("2001:db8::21", IdType.IPV6_ADDR, False),
        ("admin@example.net", IdType.RFC822_ADDR, True),
        ("admin@EXAMPLE.net", IdType.RFC822_ADDR, True),
        ("Admin@example.net", IdType.RFC822_ADDR, False),
        ("O=hostsec test, CN=db1", IdType.DER_ASN1_DN, True),  # strongSwan's DN syntax
        ("O=hostsec test,CN=db1", IdType.DER_ASN1_DN, True),
        ("CN=db1, O=hostsec test", IdType.DER_ASN1_DN, False),  # RDNs in the other order
        ("O=hostsec test, CN=db2", IdType.DER_ASN1_DN, False),
    ],
)
def test_identity_matching(pki: dict[str, Any], text: str, kind: IdType, match: bool) -> None:
    ident = Identity.from_string(text)
    assert ident.type == kind
    assert identity_matches(pki["leaf"].cert, ident) is match
    if match:
        check_identity(pki["leaf"].cert, ident)
    else:
        with pytest.raises(CertificateError, match="identity mismatch"):
            check_identity(pki["leaf"].cert, ident)


def test_identity_from_payloads(pki: dict[str, Any]) -> None:
    leaf = pki["leaf"].cert
    # The DER subject as a peer sends it in ID_DER_ASN1_DN.
    assert identity_matches(leaf, Identity.from_payload(9, leaf.subject.public_bytes()))
    # A DN with other string types still matches through the parsed name.
    assert identity_matches(leaf, Identity.from_name(_name("db1")))
    assert identity_matches(leaf, Identity.from_payload(1, bytes([198, 51, 100, 20])))
    assert identity_matches(leaf, Identity.from_payload(2, b"db1.example.net"))
    assert not identity_matches(leaf, Identity.from_payload(11, b"key-id"))
    assert identity_of(leaf) == Identity(IdType.DER_ASN1_DN, leaf.subject.public_bytes())
    assert str(identity_of(leaf)) == "O=hostsec test, CN=db1"
    dn = Identity.from_string(r"C=CH, O=Example\, Inc., OU=R\+D, CN=db1, E=admin@example.net")
    assert dn.name is not None
    assert [a.value for a in dn.name] == ["CH", "Example, Inc.", "R+D", "db1", "admin@example.net"]
    assert str(dn) == r"C=CH, O=Example\, Inc., OU=R\+D, CN=db1, E=admin@example.net"
    assert Identity.from_string(str(dn)) == dn
    for bad_type, data, reason in [
        (1, b"\x01\x02\x03", "not 4 octets"),
        (5, b"\x00" * 4, "not 16 octets"),
        (2, b"", "empty"),
        (4, b"\x00" * 8, "unsupported ID type 4"),
    ]:
        with pytest.raises(CertificateError, match=reason):
            Identity.from_payload(bad_type, data)
    for text in ("", "   ", "@", "CN=x,=y", "h\u00f6st.example"):
        with pytest.raises(CertificateError):
            Identity.from_string(text)


def test_no_san_no_address_match(pki: dict[str, Any]) -> None:
    assert not identity_matches(pki["root"].cert, Identity.from_string("198.51.100.20"))
    assert not identity_matches(pki["root"].cert, Identity.from_string("x.example"))
    assert not identity_matches(pki["root"].cert, Identity.from_string("a@x.example"))


# ---------------------------------------------------------------- CERTREQ


def test_ca_key_hash_is_sha1_of_spki(pki: dict[str, Any]) -> None:
    root = pki["root"].cert
    spki = root.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ca_key_hash(root) == hashlib.sha1(spki).digest()
    store: TrustStore = pki["store"]
    assert store.key_hashes() == (ca_key_hash(root), ca_key_hash(pki["ec_root"].cert))
    certreq = b"".join(store.key_hashes()) + b"\x00" * 20
    assert store.anchors_for_key_hashes(split_key_hashes(certreq)) == (
        root,
        pki["ec_root"].cert,
    )
    assert split_key_hashes(b"") == ()
    with pytest.raises(CertificateError, match="20-octet"):
        split_key_hashes(b"\x00" * 21)


def test_der_certificates_from_cert_payloads(pki: dict[str, Any]) -> None:
    der = pki["leaf"].cert.public_bytes(serialization.Encoding.DER)
    assert load_der_certificate(der) == pki["leaf"].cert
    with pytest.raises(CertificateError, match="malformed"):
        load_der_certificate(der[:-10])


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_cert_payload_only_raises_certificate_error(data: bytes) -> None:
    try:
        cert = load_der_certificate(data)
    except CertificateError:
        return
    assert cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------- files


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: Any, password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_trust_store_from_directory(pki: dict[str, Any], tmp_path: Path) -> None:
    _write(tmp_path / "a-root.pem", _pem(pki["root"].cert), 0o644)
    _write(tmp_path / "b-bundle.crt", _pem(pki["ec_root"].cert, pki["inter"].cert), 0o644)
    _write(
        tmp_path / "c-root.der", pki["root"].cert.public_bytes(serialization.Encoding.DER), 0o644
    )
    _write(tmp_path / "d-leaf.pem", _pem(pki["leaf"].cert), 0o644)
    _write(tmp_path / "e-garbage.pem", b"-----BEGIN CERTIFICATE-----\nnope\n", 0o644)
    _write(tmp_path / "notes.txt", b"not a certificate", 0o644)
    (tmp_path / "sub.pem").mkdir()
    store = TrustStore.from_directory(tmp_path)
    # The root is in two files: it is kept once.
    assert store.anchors == (pki["root"].cert, pki["ec_root"].cert, pki["inter"].cert)
    assert len(store.load_errors) == 2
    assert "d-leaf.pem" in store.load_errors[0] and "not a CA" in store.load_errors[0]
    assert "e-garbage.pem" in store.load_errors[1]
    assert store.verify(pki["leaf"].cert, [], NOW)[-1] == pki["inter"].cert
    with pytest.raises(CertificateError, match="cannot list"):
        TrustStore.from_directory(tmp_path / "missing")


def test_credentials(pki: dict[str, Any], tmp_path: Path) -> None:
    certs = _write(tmp_path / "chain.pem", _pem(pki["inter"].cert, pki["leaf"].cert), 0o644)
    key = _write(tmp_path / "key.pem", _key_pem(pki["leaf_key"]), 0o600)
    creds = load_credentials(certs, key)
    assert creds.chain == (pki["leaf"].cert, pki["inter"].cert)  # end entity first
    assert creds.identity == identity_of(pki["leaf"].cert)
    secret = pki["leaf_key"].private_numbers().private_value
    assert str(secret) not in repr(creds) and "db1" in repr(creds)
    # The loaded key signs AUTH payloads that verify with the certificate's public key.
    method, data = auth.sign(creds.private_key, b"octets", (2, 3, 4))
    auth.verify_signature_auth(method, data, creds.certificate.public_key(), b"octets")
    # A password-protected key.
    locked = _write(tmp_path / "locked.pem", _key_pem(pki["leaf_key"], b"pw"), 0o400)
    assert load_credentials(certs, locked, b"pw").chain[0] == pki["leaf"].cert
    with pytest.raises(CertificateError, match="not a usable PEM private key"):
        load_credentials(certs, locked, b"wrong")


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o700 | 0o001])
def test_key_files_open_to_others_are_refused(
    pki: dict[str, Any], tmp_path: Path, mode: int
) -> None:
    certs = _write(tmp_path / "chain.pem", _pem(pki["leaf"].cert), 0o644)
    key = _write(tmp_path / "key.pem", _key_pem(pki["leaf_key"]), mode)
    with pytest.raises(
        CertificateError,
        match=rf"accessible by group or others \(mode {mode:04o}\).*chmod 600",
    ) as info:
        load_credentials(certs, key)
    assert "PRIVATE KEY" not in str(info.value)


def test_credentials_refusals(pki: dict[str, Any], tmp_path: Path) -> None:
    certs = _write(tmp_path / "chain.pem", _pem(pki["rsa_leaf"].cert), 0o644)
    key = _write(tmp_path / "key.pem", _key_pem(pki["leaf_key"]), 0o600)
    with pytest.raises(CertificateError, match="no certificate matches the private key"):
        load_credentials(certs, key)
    garbage = _write(tmp_path / "garbage.pem", b"not a key", 0o600)
    with pytest.raises(CertificateError, match="not a usable PEM private key"):
        load_credentials(certs, garbage)
    with pytest.raises(CertificateError, match="cannot open"):
        read_private_file(tmp_path / "missing.pem")
    with pytest.raises(CertificateError, match="not a regular file"):
        read_private_file(tmp_path)
    empty_certs = _write(tmp_path / "empty.pem", b"", 0o644)
    with pytest.raises(CertificateError, match="no certificate"):
        load_credentials(empty_certs, key)
    big = _write(tmp_path / "big.key", b"x" * 2048, 0o600)
    with pytest.raises(CertificateError, match="larger than 1024"):
        read_private_file(big, max_size=1024)
    assert read_private_file(big) == b"x" * 2048


# ---------------------------------------------------------------- strongSwan-made certificates


def test_strongswan_pki_certificates() -> None:
    import json

    from ..conftest import VECTORS

    data = json.loads((VECTORS / "strongswan_pki_certs.json").read_text())
    c = {k: load_der_certificate(bytes.fromhex(v["der"])) for k, v in data["certificates"].items()}
    store = TrustStore([c["pss_root"], c["ed_root"]])
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    # ECDSA P-384 end entity under an Ed25519 root; RSA end entity under an RSA-PSS root.
    assert store.verify(c["ecdsa_leaf"], [], when) == (c["ecdsa_leaf"], c["ed_root"])
    assert store.verify(c["rsa_leaf"], [], when) == (c["rsa_leaf"], c["pss_root"])
    check_identity(c["ecdsa_leaf"], Identity.from_string("db1.example.net"))
    check_identity(c["ecdsa_leaf"], Identity.from_string("198.51.100.20"))
    check_identity(c["rsa_leaf"], Identity.from_string("2001:db8::10"))
    check_identity(c["rsa_leaf"], Identity.from_string("C=CH, O=hostsec test, CN=web1.example.net"))
    with pytest.raises(CertificateError, match="expired"):
        store.verify(c["rsa_leaf"], [], when + dt.timedelta(days=3700))
    # strongSwan encodes RSASSA-PSS/SHA-256 exactly as we send it in RFC 7427 AUTH payloads.
    pss = auth.RSA_PSS[auth.HashAlgorithm.SHA2_256].algorithm_identifier
    assert pss.hex() == data["pss_sha256_algorithm_identifier"]
