"""Wireshark key tables for debugging: ``esp_sa`` and ``ikev2_decryption_table`` UAT lines.

The files go to Wireshark's profile directory (or ``tshark -o uat:esp_sa:...``). Labels are
the ones Wireshark 4.0 uses; algorithms it cannot decrypt are written as NULL/ANY so the
line still identifies the SA. These lines hold live keys: the control socket that hands
them out is root-only, and ``hostsec keys`` writes the file with mode 0600.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol as TypingProtocol

from hostsec.crypto.keys import IkeSaKeys
from hostsec.crypto.proposals import Proposal, Protocol
from hostsec.crypto.transforms import EncrId, IntegId
from hostsec.ipsec.sa import SAConfig

_ESP_ENCRYPTION = {
    EncrId.NULL: "NULL",
    EncrId.TRIPLE_DES: "TripleDES-CBC [RFC2451]",
    EncrId.AES_CBC: "AES-CBC [RFC3602]",
    EncrId.AES_CTR: "AES-CTR [RFC3686]",
    EncrId.DES: "DES-CBC [RFC2405]",
    EncrId.AES_GCM_8: "AES-GCM with 8 octet ICV [RFC4106]",
    EncrId.AES_GCM_12: "AES-GCM with 12 octet ICV [RFC4106]",
    EncrId.AES_GCM_16: "AES-GCM with 16 octet ICV [RFC4106]",
}
_ESP_INTEGRITY = {
    IntegId.HMAC_SHA1_96: "HMAC-SHA-1-96 [RFC2404]",
    IntegId.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
    IntegId.HMAC_MD5_96: "HMAC-MD5-96 [RFC2403]",
}


def _q(text: str) -> str:
    return f'"{text}"'


def esp_sa_line(config: SAConfig) -> str | None:
    """One ``esp_sa`` line, or None for AH (Wireshark only decrypts ESP)."""
    if config.protocol is not Protocol.ESP or config.encryption is None:
        return None
    family = "IPv4" if config.src.version == 4 else "IPv6"
    encryption = _ESP_ENCRYPTION.get(config.encryption.id, "NULL")
    key = "0x" + config.encryption_key.hex() if config.encryption_key else ""
    if config.integrity is not None:
        integrity = _ESP_INTEGRITY.get(config.integrity, "NULL")
        integ_key = "0x" + config.integrity_key.hex()
    else:
        integrity, integ_key = "NULL", ""
    fields = [
        family,
        str(config.src),
        str(config.dst),
        f"0x{config.spi:08x}",
        encryption,
        key,
        integrity,
        integ_key,
    ]
    return ",".join(_q(f) for f in fields)


def esp_sa_lines(configs: Iterable[SAConfig]) -> list[str]:
    return [line for c in configs if (line := esp_sa_line(c)) is not None]


_IKE_ENCRYPTION = {
    (EncrId.AES_CBC, 128): "AES-CBC-128 [RFC3602]",
    (EncrId.AES_CBC, 192): "AES-CBC-192 [RFC3602]",
    (EncrId.AES_CBC, 256): "AES-CBC-256 [RFC3602]",
    (EncrId.AES_CTR, 128): "AES-CTR-128 [RFC5930]",
    (EncrId.AES_CTR, 192): "AES-CTR-192 [RFC5930]",
    (EncrId.AES_CTR, 256): "AES-CTR-256 [RFC5930]",
    **{
        (encr, bits): f"AES-GCM-{bits} with {icv} octet ICV [RFC5282]"
        for encr, icv in ((EncrId.AES_GCM_8, 8), (EncrId.AES_GCM_12, 12), (EncrId.AES_GCM_16, 16))
        for bits in (128, 192, 256)
    },
}
_IKE_INTEGRITY = {
    IntegId.HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
    IntegId.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
    IntegId.HMAC_MD5_96: "HMAC_MD5_96 [RFC2403]",
}


class _IkeLike(TypingProtocol):
    spi_i: bytes
    spi_r: bytes
    proposal: Proposal | None
    keys: IkeSaKeys | None


def ikev2_line(sa: _IkeLike) -> str | None:
    """One ``ikev2_decryption_table`` line for an established IKE SA."""
    if sa.keys is None or sa.proposal is None or not sa.proposal.encryption:
        return None
    enc = sa.proposal.encryption[0]
    encryption = _IKE_ENCRYPTION.get((enc.id, enc.effective_key_bits))
    if encryption is None:
        return None
    integ = sa.proposal.integrity[0] if sa.proposal.integrity else None
    integrity = _IKE_INTEGRITY.get(integ, "NONE [RFC4306]") if integ else "NONE [RFC4306]"
    k = sa.keys
    fields = [
        sa.spi_i.hex(),
        sa.spi_r.hex(),
        k.sk_ei.hex(),
        k.sk_er.hex(),
        encryption,
        k.sk_ai.hex(),
        k.sk_ar.hex(),
        integrity,
    ]
    return ",".join(_q(f) for f in fields)


def ikev2_lines(sas: Iterable[_IkeLike]) -> list[str]:
    return [line for sa in sas if (line := ikev2_line(sa)) is not None]
