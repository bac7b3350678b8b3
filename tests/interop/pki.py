"""Throw-away certificate authorities for the interop tests (RSA and ECDSA).

Each CA signs one certificate per host, with the host's FQDN and address as
subjectAltNames and the DN ``C=XX, O=hostsec-interop, CN=<fqdn>``, so that either of the
three identity types (FQDN, IPv4 address, DER DN) can name it. The certificates
themselves come from :mod:`hostsec.agent.labpki`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from hostsec.agent import labpki


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
    ca: labpki.Authority

    @classmethod
    def create(cls, kind: str) -> Authority:
        return cls(kind, labpki.Authority.create(_name(f"Interop {kind.upper()} CA"), kind, 2))

    @property
    def cert_pem(self) -> bytes:
        return self.ca.pem

    def issue(self, fqdn: str, address: str) -> Issued:
        issued = self.ca.issue(_name(fqdn), [fqdn, address], kind=self.kind, eku=True)
        return Issued(issued.cert_pem, issued.key_pem, dn_of(fqdn))
