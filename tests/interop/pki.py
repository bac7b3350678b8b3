"""Throw-away certificate authorities for the interop tests (RSA and ECDSA).

Each CA signs one certificate per host, with the host's FQDN and address as
subjectAltNames and the DN ``C=XX, O=hostsec-interop, CN=<fqdn>``, so that either of the
three identity types (FQDN, IPv4 address, DER DN) can name it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(kind)


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def dn_of(fqdn: str) -> str:
    """The subject DN as strongSwan (and hostsec's policy) writes it."""
    return f"C=XX, O=hostsec-interop, CN={fqdn}"


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hostsec-interop"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    dn: str


@dataclass(frozen=True)
class Authority:
    kind: str  # "rsa" or "ecdsa"
    cert_pem: bytes
    key: PrivateKey
    name: x509.Name

    @classmethod
    def create(cls, kind: str) -> Authority:
        key = _key(kind)
        name = _name(f"Interop {kind.upper()} CA")
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(kind, cert.public_bytes(serialization.Encoding.PEM), key, name)

    def issue(self, fqdn: str, address: str) -> Issued:
        key = _key(self.kind)
        now = datetime.now(UTC)
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(fqdn))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(fqdn), x509.IPAddress(ipaddress.ip_address(address))]
                ),
                critical=False,
            )
            .add_extension(
                x509.KeyUsage(
                    True, False, self.kind == "rsa", False, False, False, False, False, False
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_cert.public_key()  # type: ignore[arg-type]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), dn_of(fqdn))
