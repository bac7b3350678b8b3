"""strongSwan-style proposal strings, parsed into structured proposals and back.

``aes128gcm16-prfsha256-ecp256`` (IKE), ``aes256-sha256-modp2048`` (IKE or ESP with PFS),
``aes128gcm16``, ``chacha20poly1305``, ``3des-md5``, ``null-sha256``, ``aes128gmac``,
``aes128-sha256-esn`` (ESP), ``sha256`` (AH). Tokens are the keywords of strongSwan's
proposal syntax, so proposals can be copied between the two. A proposal lists one or
more algorithms of each transform type; the order within a type is the preference.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from hostsec.crypto.transforms import (
    DH_GROUPS,
    ENCRYPTION,
    INTEGRITY,
    PRF,
    DhId,
    EncrId,
    EncryptionAlgorithm,
    EsnId,
    IntegId,
    PrfId,
    TransformType,
)

_T = TypeVar("_T")


class ProposalError(ValueError):
    """A proposal string that cannot be used; the message names the offending token."""

    def __init__(self, message: str, token: str | None = None) -> None:
        super().__init__(message)
        self.token = token


class Protocol(enum.IntEnum):
    """RFC 7296 3.3.1 Protocol ID."""

    IKE = 1
    AH = 2
    ESP = 3


class Mode(enum.Enum):
    """IPsec mode of a CHILD SA (RFC 4301 4.1); negotiated along with its proposal."""

    TRANSPORT = "transport"
    TUNNEL = "tunnel"


@dataclass(frozen=True, slots=True)
class Encryption:
    """An encryption transform with its key length in bits (None: fixed by the transform)."""

    id: EncrId
    key_bits: int | None = None

    @property
    def algorithm(self) -> EncryptionAlgorithm:
        return ENCRYPTION[self.id]

    @property
    def aead(self) -> bool:
        return ENCRYPTION[self.id].aead

    @property
    def effective_key_bits(self) -> int:
        algo = ENCRYPTION[self.id]
        if self.key_bits is not None:
            return self.key_bits
        return algo.key_sizes[0] if algo.key_sizes else 0


@dataclass(frozen=True, slots=True)
class Proposal:
    """One proposal: the algorithms of each transform type, in order of preference."""

    protocol: Protocol
    encryption: tuple[Encryption, ...] = ()
    integrity: tuple[IntegId, ...] = ()
    prf: tuple[PrfId, ...] = ()
    dh: tuple[DhId, ...] = ()
    esn: tuple[EsnId, ...] = ()

    @property
    def aead(self) -> bool:
        return bool(self.encryption) and self.encryption[0].aead

    def insecure_algorithms(self) -> list[str]:
        """The tokens of this proposal that are insecure (DES, 3DES, MD5, SHA-1, NULL, ...)."""
        return [token for token, insecure in _tokens(self) if insecure]

    def __str__(self) -> str:
        return format_proposal(self)


# ---------------------------------------------------------------------------
# The keyword table


def _encryption_keywords() -> tuple[dict[str, Encryption], dict[Encryption, str]]:
    """All encryption keywords, and the canonical keyword of each transform."""
    canonical: dict[str, Encryption] = {
        "null": Encryption(EncrId.NULL),
        "des": Encryption(EncrId.DES),
        "3des": Encryption(EncrId.TRIPLE_DES),
        "chacha20poly1305": Encryption(EncrId.CHACHA20_POLY1305),
    }
    aliases: dict[str, Encryption] = {}
    icv_ids = {
        "gcm": {8: EncrId.AES_GCM_8, 12: EncrId.AES_GCM_12, 16: EncrId.AES_GCM_16},
        "ccm": {8: EncrId.AES_CCM_8, 12: EncrId.AES_CCM_12, 16: EncrId.AES_CCM_16},
    }
    for bits in (128, 192, 256):
        canonical[f"aes{bits}"] = Encryption(EncrId.AES_CBC, bits)
        canonical[f"aes{bits}ctr"] = Encryption(EncrId.AES_CTR, bits)
        canonical[f"aes{bits}gmac"] = Encryption(EncrId.NULL_AUTH_AES_GMAC, bits)
        for mode, ids in icv_ids.items():
            for icv, encr in ids.items():
                canonical[f"aes{bits}{mode}{icv}"] = Encryption(encr, bits)
                aliases[f"aes{bits}{mode}{icv * 8}"] = Encryption(encr, bits)
            aliases[f"aes{bits}{mode}"] = Encryption(ids[16], bits)
    aliases["aes"] = canonical["aes128"]
    names = {enc: kw for kw, enc in canonical.items()}
    return canonical | aliases, names


_ENCRYPTION_KEYWORDS, _ENCRYPTION_NAMES = _encryption_keywords()

_INTEGRITY_KEYWORDS: dict[str, IntegId] = {
    "md5": IntegId.HMAC_MD5_96,
    "sha1": IntegId.HMAC_SHA1_96,
    "sha": IntegId.HMAC_SHA1_96,
    "aesxcbc": IntegId.AES_XCBC_96,
    "aescmac": IntegId.AES_CMAC_96,
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha2_256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha2_384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
    "sha2_512": IntegId.HMAC_SHA2_512_256,
}

_PRF_KEYWORDS: dict[str, PrfId] = {
    "prfmd5": PrfId.HMAC_MD5,
    "prfsha1": PrfId.HMAC_SHA1,
    "prfaesxcbc": PrfId.AES128_XCBC,
    "prfaescmac": PrfId.AES128_CMAC,
    "prfsha256": PrfId.HMAC_SHA2_256,
    "prfsha384": PrfId.HMAC_SHA2_384,
    "prfsha512": PrfId.HMAC_SHA2_512,
}

#: strongSwan maps each integrity keyword of an IKE proposal to the matching PRF when the
#: proposal names no PRF of its own.
_PRF_FOR_INTEGRITY: dict[IntegId, PrfId] = {
    IntegId.HMAC_MD5_96: PrfId.HMAC_MD5,
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,
    IntegId.AES_XCBC_96: PrfId.AES128_XCBC,
    IntegId.AES_CMAC_96: PrfId.AES128_CMAC,
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}

_DH_KEYWORDS: dict[str, DhId] = {g.name: g.id for g in DH_GROUPS.values()}
_DH_KEYWORDS.update({"x25519": DhId.CURVE25519, "x448": DhId.CURVE448})

_ESN_KEYWORDS: dict[str, EsnId] = {"esn": EsnId.YES, "noesn": EsnId.NO}

# Canonical names for formatting: the first keyword of each value above.
_INTEGRITY_NAMES = {v: k for k, v in reversed(list(_INTEGRITY_KEYWORDS.items()))}
_PRF_NAMES = {v: k for k, v in _PRF_KEYWORDS.items()}
_DH_NAMES = {g.id: g.name for g in DH_GROUPS.values()}
_ESN_NAMES = {v: k for k, v in _ESN_KEYWORDS.items()}


def keyword_type(token: str) -> TransformType | None:
    """Which transform type a keyword names, or None if it is not a keyword."""
    if token in _ENCRYPTION_KEYWORDS:
        return TransformType.ENCR
    if token in _INTEGRITY_KEYWORDS:
        return TransformType.INTEG
    if token in _PRF_KEYWORDS:
        return TransformType.PRF
    if token in _DH_KEYWORDS:
        return TransformType.DH
    if token in _ESN_KEYWORDS:
        return TransformType.ESN
    return None


# ---------------------------------------------------------------------------
# Parsing


def parse_proposal(text: str, protocol: Protocol) -> Proposal:
    """Parse one strongSwan-style proposal string for ``protocol``.

    Raises :class:`ProposalError` naming the token for an unknown keyword, a keyword that
    has no place in this protocol, a repeated keyword, or a contradictory combination.
    """
    if not isinstance(text, str) or not text.strip():
        raise ProposalError("empty proposal")
    tokens = [t.strip().lower() for t in text.strip().split("-")]
    encryption: list[Encryption] = []
    integrity: list[IntegId] = []
    prf: list[PrfId] = []
    dh: list[DhId] = []
    esn: list[EsnId] = []
    seen: set[str] = set()
    for token in tokens:
        if not token:
            raise ProposalError(f"empty token in proposal '{text}'", token)
        kind = keyword_type(token)
        if kind is None:
            raise ProposalError(f"unknown algorithm '{token}' in proposal '{text}'", token)
        if token in seen:
            raise ProposalError(f"'{token}' appears twice in proposal '{text}'", token)
        seen.add(token)
        if kind is TransformType.ENCR:
            if protocol is Protocol.AH:
                raise ProposalError(f"AH does not encrypt: '{token}' in '{text}'", token)
            _append_unique(encryption, _ENCRYPTION_KEYWORDS[token], token, text)
        elif kind is TransformType.INTEG:
            _append_unique(integrity, _INTEGRITY_KEYWORDS[token], token, text)
        elif kind is TransformType.PRF:
            if protocol is not Protocol.IKE:
                raise ProposalError(
                    f"'{token}' is a PRF, which only IKE proposals take ('{text}')", token
                )
            _append_unique(prf, _PRF_KEYWORDS[token], token, text)
        elif kind is TransformType.DH:
            _append_unique(dh, _DH_KEYWORDS[token], token, text)
        else:
            if protocol is Protocol.IKE:
                raise ProposalError(f"'{token}' only applies to ESP and AH ('{text}')", token)
            _append_unique(esn, _ESN_KEYWORDS[token], token, text)

    def named(table: Mapping[str, object], value: object) -> str:
        # The token the user wrote for ``value`` (an alias, maybe), for the error message.
        return next(t for t in tokens if table.get(t) == value)

    aead = [e for e in encryption if e.aead]
    if aead and len(aead) != len(encryption):
        token = named(_ENCRYPTION_KEYWORDS, aead[0])
        raise ProposalError(
            f"AEAD '{token}' and non-AEAD encryption cannot share a proposal ('{text}')", token
        )
    if aead and integrity:
        token = named(_INTEGRITY_KEYWORDS, integrity[0])
        raise ProposalError(
            f"'{token}' contradicts the AEAD algorithm in '{text}' (AEAD has its own integrity)",
            token,
        )

    if protocol is Protocol.IKE:
        if not encryption:
            raise ProposalError(f"an IKE proposal needs an encryption algorithm ('{text}')")
        for e in encryption:
            if e.id in (EncrId.NULL, EncrId.NULL_AUTH_AES_GMAC):
                token = named(_ENCRYPTION_KEYWORDS, e)
                raise ProposalError(
                    f"IKE cannot use NULL encryption or GMAC: '{token}' in '{text}'", token
                )
        if not aead and not integrity:
            raise ProposalError(f"an IKE proposal needs an integrity algorithm ('{text}')")
        if not prf:
            if aead:
                raise ProposalError(
                    f"an IKE proposal with AEAD needs an explicit PRF, e.g. prfsha256 ('{text}')"
                )
            prf = _unique(_PRF_FOR_INTEGRITY[i] for i in integrity)
        if not dh:
            raise ProposalError(f"an IKE proposal needs a key exchange group ('{text}')")
        if DhId.NONE in dh:
            raise ProposalError(f"an IKE proposal needs a real key exchange group ('{text}')")
    elif protocol is Protocol.ESP:
        if not encryption:
            raise ProposalError(f"an ESP proposal needs an encryption algorithm ('{text}')")
        if not aead and not integrity:
            raise ProposalError(
                f"ESP without integrity protection is refused; add e.g. sha256 ('{text}')"
            )
        if not esn:
            esn = [EsnId.NO]
    else:  # AH
        if not integrity:
            raise ProposalError(f"an AH proposal needs an integrity algorithm ('{text}')")
        if not esn:
            esn = [EsnId.NO]

    return Proposal(
        protocol, tuple(encryption), tuple(integrity), tuple(prf), tuple(dh), tuple(esn)
    )


def parse_proposals(texts: list[str] | tuple[str, ...], protocol: Protocol) -> list[Proposal]:
    """Parse a list of proposal strings (a comma-separated string is split too)."""
    result: list[Proposal] = []
    for text in texts:
        for part in text.split(","):
            result.append(parse_proposal(part, protocol))
    return result


def _append_unique(items: list[_T], item: _T, token: str, text: str) -> None:
    # Aliases (sha and sha1) can name the same algorithm twice.
    if item in items:
        raise ProposalError(f"'{token}' repeats an algorithm of proposal '{text}'", token)
    items.append(item)


def _unique(items: Iterable[PrfId]) -> list[PrfId]:
    out: list[PrfId] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# ---------------------------------------------------------------------------
# Formatting


def _tokens(proposal: Proposal) -> list[tuple[str, bool]]:
    """(keyword, insecure) for every algorithm of the proposal, in canonical order."""
    out: list[tuple[str, bool]] = []
    for enc in proposal.encryption:
        out.append((_ENCRYPTION_NAMES[enc], ENCRYPTION[enc.id].insecure))
    for integ in proposal.integrity:
        out.append((_INTEGRITY_NAMES[integ], INTEGRITY[integ].insecure))
    implied = _unique(_PRF_FOR_INTEGRITY[i] for i in proposal.integrity)
    if proposal.protocol is Protocol.IKE and (proposal.aead or list(proposal.prf) != implied):
        for p in proposal.prf:
            out.append((_PRF_NAMES[p], PRF[p].insecure))
    for group in proposal.dh:
        if group is DhId.NONE:
            continue
        out.append((_DH_NAMES[group], DH_GROUPS[group].insecure))
    if proposal.protocol is not Protocol.IKE and tuple(proposal.esn) != (EsnId.NO,):
        for e in proposal.esn:
            out.append((_ESN_NAMES[e], False))
    return out


def format_proposal(proposal: Proposal) -> str:
    """The strongSwan-style string for ``proposal``: ``parse(format(p)) == p``."""
    return "-".join(token for token, _ in _tokens(proposal))
