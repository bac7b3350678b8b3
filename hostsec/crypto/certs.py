"""X.509 for IKE: own credentials, trust anchors, chain verification, identities, CERTREQ.

- Own certificate chain and private key from PEM files; a key file that the group or
  others may access, or that someone else owns, is refused (DESIGN 3).
- :class:`TrustStore`: CA certificates from a directory of PEM/DER files (``cacerts/``).
- Chain verification to a trust anchor (RFC 5280 6, as RFC 4945 5 profiles it for IKE):
  the signature of each link, validity dates at ``now``, basicConstraints CA:TRUE and
  keyCertSign on issuers, path length constraints, digitalSignature (or nonRepudiation) in
  the end entity's key usage, no unknown critical extension, no MD5 (nor SHA-1 unless
  allowed) certificate signatures, RSA keys of at least 2048 bits. The checks are made
  here with cryptography's x509 objects: its ``x509.verification`` policies follow the Web
  PKI (they refuse Ed25519 CAs, for one) and IKE is neither TLS server nor client.
- Identities (RFC 7296 3.5, RFC 4945 3.1): ID_IPV4_ADDR and ID_IPV6_ADDR against SAN
  iPAddress, ID_FQDN against SAN dNSName, ID_RFC822_ADDR against SAN rfc822Name,
  ID_DER_ASN1_DN against the subject (or a SAN directoryName).
- CERTREQ (RFC 7296 3.7): the CA key hash is SHA-1 of the CA's SubjectPublicKeyInfo.

Every refusal is a :class:`CertificateError` with a reason meant for the operator.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from hostsec.crypto.secretfile import SecretFileRefused, read_secret

SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

CA_KEY_HASH_LEN = 20  # SHA-1 (RFC 7296 3.7)
MAX_FILE_SIZE = 1 << 20
MAX_CHAIN_DEPTH = 8
MAX_INTERMEDIATES = 16  # CERT payloads a peer may send us for one chain
MAX_LINK_CHECKS = 64  # signature checks per chain verification
_CERT_SUFFIXES = (".pem", ".crt", ".cer")
_DER_SUFFIX = ".der"

# Extensions whose meaning we check or which carry no constraint: they may be critical.
_UNDERSTOOD = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)


class CertificateError(Exception):
    """A certificate, chain, key file or identity that is refused, and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- identities


class IdType(enum.IntEnum):
    """RFC 7296 3.5 ID Type."""

    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


_DN_ATTRIBUTE_NAMES = {  # strongSwan's names beyond RFC 4514's CN L ST O OU C STREET DC UID
    "E": NameOID.EMAIL_ADDRESS,
    "Email": NameOID.EMAIL_ADDRESS,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "SN": NameOID.SURNAME,
    "G": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
}
_DN_NAMES_OUT = {
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "G",
    NameOID.TITLE: "T",
}


def parse_dn(text: str) -> x509.Name:
    """A DN as strongSwan writes it: RDNs most significant first, separated by commas
    (spaces after them allowed), RFC 4514 escaping within values."""
    parts: list[str] = []
    current = ""
    escaped = False
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            current += ch
            escaped = True
        elif ch == ",":
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    if any(not p for p in parts):
        raise ValueError("empty RDN")
    # RFC 4514 strings list the RDNs the other way round.
    return x509.Name.from_rfc4514_string(",".join(reversed(parts)), _DN_ATTRIBUTE_NAMES)


_DN_STRINGS = {  # ASN.1 string tags of DirectoryString and friends -> codec
    0x0C: "utf-8",  # UTF8String
    0x12: "ascii",  # NumericString
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # TeletexString (T61), as everyone treats it
    0x16: "ascii",  # IA5String
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}


def _der_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, value, offset after it) of the DER element at ``offset``; lengths checked."""
    if offset + 2 > len(data):
        raise ValueError("truncated")
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 3 or offset + count > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + length > len(data):
        raise ValueError("truncated")
    return tag, data[offset : offset + length], offset + length


def _der_oid(value: bytes) -> str:
    if not value or value[-1] & 0x80:
        raise ValueError("bad OID")
    arcs: list[int] = []
    n = 0
    for byte in value:
        n = (n << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(n)
            n = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def der_to_name(data: bytes) -> x509.Name | None:
    """The DN of an ID_DER_ASN1_DN (RFC 7296 3.5), its string types made canonical so
    that names compare by value; None when it is not a Name of string attributes."""
    try:
        tag, body, end = _der_tlv(data, 0)
        if tag != 0x30 or end != len(data):
            return None
        rdns: list[x509.RelativeDistinguishedName] = []
        offset = 0
        while offset < len(body):
            tag, rdn, offset = _der_tlv(body, offset)
            if tag != 0x31:
                return None
            attributes: list[x509.NameAttribute[str]] = []
            inner = 0
            while inner < len(rdn):
                tag, atv, inner = _der_tlv(rdn, inner)
                if tag != 0x30:
                    return None
                oid_tag, oid, rest = _der_tlv(atv, 0)
                value_tag, value, after = _der_tlv(atv, rest)
                if oid_tag != 0x06 or after != len(atv) or value_tag not in _DN_STRINGS:
                    return None
                text = value.decode(_DN_STRINGS[value_tag])
                attributes.append(x509.NameAttribute(x509.ObjectIdentifier(_der_oid(oid)), text))
            if not attributes:
                return None
            rdns.append(x509.RelativeDistinguishedName(attributes))
        return x509.Name(rdns)
    except (ValueError, UnicodeDecodeError):
        return None


def format_dn(name: x509.Name) -> str:
    """A DN as strongSwan prints it: ``C=CH, O=Example, CN=db1``."""
    return ", ".join(rdn.rfc4514_string(_DN_NAMES_OUT) for rdn in name.rdns)


@dataclass(frozen=True, slots=True)
class Identity:
    """An IKE identity as the ID payload carries it: a type and its identification data.
    ``name`` holds the parsed DN of an ID_DER_ASN1_DN built from a string or a certificate,
    so that it matches a certificate whatever string types the DER uses."""

    type: IdType
    data: bytes
    name: x509.Name | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_string(cls, text: str) -> Identity:
        """Parse an identity as written in a policy: an IPv4 or IPv6 literal, a DN written
        as strongSwan writes it (``C=CH, O=Example, CN=db1``: most significant RDN first, in
        certificate order), ``user@example.net`` (RFC822), ``@host`` or ``host`` (FQDN)."""
        text = text.strip()
        if not text:
            raise CertificateError("empty identity")
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            kind = IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR
            return cls(kind, addr.packed)
        if "=" in text:
            try:
                return cls.from_name(parse_dn(text))
            except ValueError:
                raise CertificateError(f"not a distinguished name: {text!r}") from None
        kind = IdType.FQDN
        if text.startswith("@"):
            text = text[1:]
        elif "@" in text:
            kind = IdType.RFC822_ADDR
        try:
            data = text.encode("ascii")
        except UnicodeEncodeError:
            raise CertificateError(f"identity is not ASCII: {text!r}") from None
        if not data:
            raise CertificateError("empty identity")
        return cls(kind, data)

    @classmethod
    def from_name(cls, name: x509.Name) -> Identity:
        return cls(IdType.DER_ASN1_DN, name.public_bytes(), name)

    @classmethod
    def from_payload(cls, id_type: int, data: bytes) -> Identity:
        """An identity from a received ID payload; raises for types we do not know."""
        try:
            kind = IdType(id_type)
        except ValueError:
            raise CertificateError(f"unsupported ID type {id_type}") from None
        if kind == IdType.IPV4_ADDR and len(data) != 4:
            raise CertificateError("ID_IPV4_ADDR is not 4 octets")
        if kind == IdType.IPV6_ADDR and len(data) != 16:
            raise CertificateError("ID_IPV6_ADDR is not 16 octets")
        if not data:
            raise CertificateError("empty identification data")
        if kind == IdType.DER_ASN1_DN:
            # Compare DNs by value, not by string type: strongSwan encodes a configured
            # "CN=..." as PrintableString where certificates usually hold UTF8String.
            name = der_to_name(data)
            if name is not None:
                return cls(kind, name.public_bytes(), name)
        return cls(kind, data)

    def __str__(self) -> str:
        if self.type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            try:
                return str(ipaddress.ip_address(self.data))
            except ValueError:
                return self.data.hex()
        if self.type == IdType.DER_ASN1_DN and self.name is not None:
            return format_dn(self.name)
        if self.type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("ascii", "replace")
        return f"{self.type.name}:{self.data.hex()}"


def identity_of(cert: x509.Certificate) -> Identity:
    """The default identity of a certificate holder: its subject DN."""
    return Identity.from_name(cert.subject)


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        raise CertificateError("malformed subjectAltName") from None


def _fqdn(value: str | bytes) -> str:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return text.rstrip(".").lower()


def _rfc822_equal(a: str, b: str) -> bool:
    # RFC 5280 7.5: the local part is case-sensitive, the domain is not.
    la, _, da = a.rpartition("@")
    lb, _, db = b.rpartition("@")
    return la == lb and da.lower() == db.lower()


def identity_matches(cert: x509.Certificate, identity: Identity) -> bool:
    """Whether ``identity`` is bound to ``cert`` (RFC 4945 3.1)."""
    san = _san(cert)
    t = identity.type
    if t in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        if san is None:
            return False
        return any(
            isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)
            and a.packed == identity.data
            for a in san.get_values_for_type(x509.IPAddress)
        )
    if t == IdType.FQDN:
        if san is None:
            return False
        want = _fqdn(identity.data)
        return any(_fqdn(n) == want for n in san.get_values_for_type(x509.DNSName))
    if t == IdType.RFC822_ADDR:
        if san is None:
            return False
        want_mail = identity.data.decode("ascii", "replace")
        return any(_rfc822_equal(m, want_mail) for m in san.get_values_for_type(x509.RFC822Name))
    if t == IdType.DER_ASN1_DN:
        names = [cert.subject]
        if san is not None:
            names += san.get_values_for_type(x509.DirectoryName)
        for n in names:
            if identity.name is not None and identity.name == n:
                return True
            if identity.data == n.public_bytes():
                return True
        return False
    return False


def check_identity(cert: x509.Certificate, identity: Identity) -> None:
    """Raise ``CertificateError("identity mismatch ...")`` unless ``identity`` is bound to
    ``cert``. With certificates, check both the peer's ID payload and the configured remote
    identity against the certificate."""
    if not identity_matches(cert, identity):
        raise CertificateError(
            f"identity mismatch: {identity.type.name} {identity} is not in the certificate "
            f"of {format_dn(cert.subject)}"
        )


# ---------------------------------------------------------------- files and credentials


def read_private_file(path: Path, *, max_size: int = MAX_FILE_SIZE) -> bytes:
    """The contents of a secret file (private key, PSK): see
    :func:`hostsec.crypto.secretfile.read_secret` for the rules."""
    try:
        return read_secret(path, max_size)
    except SecretFileRefused as exc:
        raise CertificateError(str(exc)) from None
    except OSError as exc:
        raise CertificateError(f"{path}: cannot open ({exc.strerror})") from None


def _read_public_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_FILE_SIZE:
        raise CertificateError(f"{path}: larger than {MAX_FILE_SIZE} octets")
    return data


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; raises if there is none or one is malformed."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertificateError("no certificate found")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError("malformed PEM certificate") from None
    if not certs:
        raise CertificateError("no certificate found")
    return certs


def load_der_certificate(data: bytes) -> x509.Certificate:
    """A certificate from a CERT payload (encoding 4, X.509 Certificate - Signature)."""
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateError("malformed certificate") from None


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """Our certificate chain (end entity first) and its private key."""

    chain: tuple[x509.Certificate, ...]
    private_key: SigningKey

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def identity(self) -> Identity:
        return identity_of(self.chain[0])

    def __repr__(self) -> str:  # never the key
        return f"Credentials({format_dn(self.chain[0].subject)}, chain={len(self.chain)})"


def load_private_key(path: Path, password: bytes | None = None) -> SigningKey:
    """A PEM private key (RSA, ECDSA, Ed25519, Ed448) from a file only we can read."""
    data = read_private_file(path)
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertificateError(f"{path}: not a usable PEM private key") from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise CertificateError(f"{path}: unsupported private key type {type(key).__name__}")
    return key


def load_credentials(cert_path: Path, key_path: Path, password: bytes | None = None) -> Credentials:
    """Our chain (PEM bundle: end entity and intermediates) and private key. The end entity
    is the certificate whose public key is the private key's; it is put first."""
    certs = load_pem_certificates(_read_public_file(cert_path))
    key = load_private_key(key_path, password)
    public = key.public_key()
    own = [c for c in certs if c.public_key() == public]
    if not own:
        raise CertificateError(f"{cert_path}: no certificate matches the private key {key_path}")
    leaf = own[0]
    return Credentials((leaf, *(c for c in certs if c is not leaf)), key)


def ca_key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the certificate's SubjectPublicKeyInfo: a CERTREQ CA entry (RFC 7296 3.7)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    h = hashes.Hash(hashes.SHA1())  # noqa: S303 - the hash RFC 7296 3.7 defines
    h.update(spki)
    return h.finalize()


def split_key_hashes(certreq_data: bytes) -> tuple[bytes, ...]:
    """The CA key hashes of a CERTREQ payload (encoding 4): 20-octet SHA-1 values."""
    if len(certreq_data) % CA_KEY_HASH_LEN:
        raise CertificateError("CERTREQ data is not a list of 20-octet SHA-1 hashes")
    return tuple(
        certreq_data[i : i + CA_KEY_HASH_LEN] for i in range(0, len(certreq_data), CA_KEY_HASH_LEN)
    )


# ---------------------------------------------------------------- trust and chains


def _who(cert: x509.Certificate) -> str:
    return format_dn(cert.subject) or f"serial {cert.serial_number:x}"


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError:
        raise CertificateError(f"{_who(cert)}: malformed extensions") from None


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return _extensions(cert).get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    bc = _ext(cert, x509.BasicConstraints)
    return isinstance(bc, x509.BasicConstraints) and bc.ca


class TrustStore:
    """Trust anchors: the CA certificates of ``cacerts/``."""

    def __init__(self, anchors: Iterable[x509.Certificate] = (), errors: Iterable[str] = ()):
        unique: dict[bytes, x509.Certificate] = {}
        for a in anchors:
            unique.setdefault(a.public_bytes(serialization.Encoding.DER), a)
        self.anchors: tuple[x509.Certificate, ...] = tuple(unique.values())
        self.load_errors: tuple[str, ...] = tuple(errors)
        self._der = set(unique)
        self._hashes = {ca_key_hash(a): a for a in self.anchors}

    @classmethod
    def from_directory(cls, path: Path) -> TrustStore:
        """Every CA certificate of ``*.pem``, ``*.crt``, ``*.cer`` (PEM) and ``*.der`` files
        in ``path``. A file that cannot be used is skipped and named in ``load_errors``."""
        anchors: list[x509.Certificate] = []
        errors: list[str] = []
        try:
            entries = sorted(path.iterdir())
        except OSError as exc:
            raise CertificateError(f"{path}: cannot list ({exc.strerror})") from None
        for entry in entries:
            suffix = entry.suffix.lower()
            if suffix not in (*_CERT_SUFFIXES, _DER_SUFFIX) or not entry.is_file():
                continue
            try:
                data = _read_public_file(entry)
                certs = (
                    [load_der_certificate(data)]
                    if suffix == _DER_SUFFIX
                    else load_pem_certificates(data)
                )
                for cert in certs:
                    if not _is_ca(cert):
                        raise CertificateError(f"{_who(cert)} is not a CA certificate")
                anchors.extend(certs)
            except CertificateError as exc:
                errors.append(f"{entry}: {exc.reason}")
        return cls(anchors, errors)

    def key_hashes(self) -> tuple[bytes, ...]:
        """The CA key hashes to send in CERTREQ (RFC 7296 3.7)."""
        return tuple(self._hashes)

    def anchors_for_key_hashes(self, key_hashes: Iterable[bytes]) -> tuple[x509.Certificate, ...]:
        """Our anchors among those a peer's CERTREQ names."""
        return tuple(self._hashes[h] for h in key_hashes if h in self._hashes)

    def verify(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: datetime,
        *,
        min_rsa_bits: int = 2048,
        allow_sha1: bool = False,
        max_depth: int = MAX_CHAIN_DEPTH,
    ) -> tuple[x509.Certificate, ...]:
        """Verify ``leaf`` (with the peer's ``intermediates``, in any order) up to a trust
        anchor at time ``now`` (timezone-aware). Returns the chain, leaf first, anchor last;
        raises :class:`CertificateError` with the reason."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime")
        if len(intermediates) > MAX_INTERMEDIATES:
            raise CertificateError(
                f"{len(intermediates)} intermediate certificates (at most {MAX_INTERMEDIATES})"
            )
        policy = _Policy(now, min_rsa_bits, allow_sha1)
        policy.check_end_entity(leaf)
        pool: dict[bytes, x509.Certificate] = {}
        for c in intermediates:
            pool.setdefault(c.public_bytes(serialization.Encoding.DER), c)
        search = _Search(policy, list(pool.values()), max_depth)
        chain = self._build([leaf], search)
        if chain is not None:
            return tuple(chain)
        # The most telling refusal: a concrete defect of a candidate issuer beats "untrusted".
        for err in search.errors:
            if not err.reason.startswith("untrusted issuer"):
                raise err
        raise search.errors[0] if search.errors else CertificateError("untrusted issuer")

    def _build(
        self, chain: list[x509.Certificate], search: _Search
    ) -> list[x509.Certificate] | None:
        cert = chain[-1]
        if cert.public_bytes(serialization.Encoding.DER) in self._der:
            return chain  # the peer sent one of our anchors itself
        if len(chain) > search.max_depth:
            search.errors.append(
                CertificateError(f"chain longer than {search.max_depth} certificates")
            )
            return None
        candidates = [(a, True) for a in self.anchors if a.subject == cert.issuer] + [
            (c, False)
            for c in search.pool
            if c.subject == cert.issuer and all(c is not x for x in chain)
        ]
        if not candidates:
            search.errors.append(
                CertificateError(f"untrusted issuer {format_dn(cert.issuer)} of {_who(cert)}")
            )
            return None
        for issuer, is_anchor in candidates:
            # Peers choose the intermediates: bound the work a crafted set can cause.
            search.links_left -= 1
            if search.links_left < 0:
                raise CertificateError("gave up building the chain: too many candidate issuers")
            try:
                search.policy.check_link(cert, issuer, intermediates_below=len(chain) - 1)
            except CertificateError as exc:
                search.errors.append(exc)
                continue
            if is_anchor:
                return [*chain, issuer]
            found = self._build([*chain, issuer], search)
            if found is not None:
                return found
        return None


@dataclass(slots=True)
class _Search:
    policy: _Policy
    pool: list[x509.Certificate]
    max_depth: int
    errors: list[CertificateError] = field(default_factory=list)
    links_left: int = MAX_LINK_CHECKS


@dataclass(frozen=True, slots=True)
class _Policy:
    now: datetime
    min_rsa_bits: int
    allow_sha1: bool

    def check_common(self, cert: x509.Certificate) -> None:
        who = _who(cert)
        if self.now < cert.not_valid_before_utc:
            raise CertificateError(f"not yet valid: {who} (valid from {cert.not_valid_before_utc})")
        if self.now > cert.not_valid_after_utc:
            raise CertificateError(f"expired: {who} (valid until {cert.not_valid_after_utc})")
        for ext in _extensions(cert):
            if ext.critical and ext.oid not in _UNDERSTOOD:
                kind = type(ext.value).__name__
                name = ext.oid.dotted_string if kind == "UnrecognizedExtension" else kind
                raise CertificateError(f"unsupported critical extension {name} in {who}")
        try:
            key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise CertificateError(f"unsupported public key in {who}") from None
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < self.min_rsa_bits:
            raise CertificateError(
                f"RSA key of {key.key_size} bits in {who} (at least {self.min_rsa_bits})"
            )

    def check_end_entity(self, cert: x509.Certificate) -> None:
        self.check_common(cert)
        ku = _ext(cert, x509.KeyUsage)
        # RFC 4945 5.1.3.2: digitalSignature or nonRepudiation for IKE authentication.
        if isinstance(ku, x509.KeyUsage) and not (ku.digital_signature or ku.content_commitment):
            raise CertificateError(f"key usage of {_who(cert)} does not allow digitalSignature")

    def check_link(
        self, cert: x509.Certificate, issuer: x509.Certificate, intermediates_below: int
    ) -> None:
        who = _who(issuer)
        self.check_common(issuer)
        bc = _ext(issuer, x509.BasicConstraints)
        if not (isinstance(bc, x509.BasicConstraints) and bc.ca):
            raise CertificateError(f"issuer {who} is not a CA (basicConstraints)")
        if bc.path_length is not None and intermediates_below > bc.path_length:
            raise CertificateError(f"path length constraint of {who} exceeded")
        ku = _ext(issuer, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
            raise CertificateError(f"key usage of {who} does not allow certificate signing")
        try:
            algo = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            raise CertificateError(f"unsupported signature algorithm on {_who(cert)}") from None
        if isinstance(algo, hashes.MD5) or (isinstance(algo, hashes.SHA1) and not self.allow_sha1):
            raise CertificateError(f"weak signature hash {algo.name} on {_who(cert)}")
        try:
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            raise CertificateError(f"bad signature on {_who(cert)} by {who}") from None
