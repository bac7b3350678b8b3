"""Throw-away certificate authorities for the demo and the test labs.

A CA (RSA or ECDSA) that signs one certificate per host, with the host's names as
subjectAltNames, and the files an agent reads them from (``cacerts/``, ``certs/``,
``secrets/``, ``[identity]`` in ``hostsec.toml``). Nothing here is meant for production
certificates: keys are made on the spot and never leave the lab's directories.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

IDENTITY_TOML = (
    '[identity]\ncertificate = "certs/host.pem"\nprivate_key = "secrets/host.key"\n'
    'cacerts = "cacerts"\n'
)


class _Lab(Protocol):
    def write_file(self, name: str, relative: str, data: bytes | str, mode: int = ...) -> object:
        raise NotImplementedError

    def write_secret(self, name: str, file: str, data: bytes | str) -> object:
        raise NotImplementedError


def new_key(kind: str = "ecdsa") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key kind {kind!r}")


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def common_name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def validity(
    days: float = 1.0, expired: bool = False, since: float = 1 / 24
) -> tuple[datetime, datetime]:
    """From ``since`` days ago to ``days`` from now; or a period that ended ten days ago."""
    now = datetime.now(UTC)
    if expired:
        return now - timedelta(days=20), now - timedelta(days=10)
    return now - timedelta(days=since), now + timedelta(days=days)


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and key."""

    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(
        cls, subject: x509.Name | str, kind: str = "ecdsa", days: float = 1.0, since: float = 1 / 24
    ) -> Authority:
        """Valid from ``since`` days ago to ``days`` from now."""
        key = new_key(kind)
        name = common_name(subject) if isinstance(subject, str) else subject
        start, end = validity(days, since=since)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                # keyCertSign and cRLSign only
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def pem(self) -> bytes:
        return cert_pem(self.cert)

    def issue(
        self,
        subject: x509.Name | str,
        names: Sequence[str],
        kind: str = "ecdsa",
        expired: bool = False,
        eku: bool = False,
    ) -> Issued:
        """A host certificate: ``names`` (IP addresses or DNS names) as subjectAltNames,
        digitalSignature (and keyEncipherment for RSA), optionally serverAuth and
        clientAuth extended key usages."""
        key = new_key(kind)
        start, end = validity(expired=expired)
        sans: list[x509.GeneralName] = []
        for entry in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                sans.append(x509.DNSName(entry))
        builder = (
            x509.CertificateBuilder()
            .subject_name(common_name(subject) if isinstance(subject, str) else subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.KeyUsage(True, False, kind == "rsa", False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if eku:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert_pem(cert), key_pem(key))


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def install_identity(lab: _Lab, host: str, ca_pem: bytes, issued: Issued) -> None:
    """Give ``host``'s agent its certificate and key and trust ``ca_pem``."""
    lab.write_file(host, "cacerts/ca.pem", ca_pem)
    lab.write_file(host, "certs/host.pem", issued.cert_pem)
    lab.write_secret(host, "host.key", issued.key_pem)
    lab.write_file(host, "hostsec.toml", IDENTITY_TOML)
