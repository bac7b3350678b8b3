"""The transform registry: every algorithm hostsec knows, with its IANA number.

Numbers from RFC 7296 section 3.3.2 and the IANA "Internet Key Exchange Version 2
(IKEv2) Parameters" registry (Transform Types 1-5). One table per transform type; each
entry carries what the packet engine and the proposal parser need to know about it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TransformType(enum.IntEnum):
    """RFC 7296 3.3.2 Transform Type Values."""

    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4  # "Key Exchange Method" in RFC 9370
    ESN = 5


class EncrId(enum.IntEnum):
    """Transform Type 1 - Encryption Algorithm Transform IDs."""

    DES = 2
    TRIPLE_DES = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 21
    CHACHA20_POLY1305 = 28


class PrfId(enum.IntEnum):
    """Transform Type 2 - Pseudorandom Function Transform IDs."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    AES128_XCBC = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    AES128_CMAC = 8


class IntegId(enum.IntEnum):
    """Transform Type 3 - Integrity Algorithm Transform IDs."""

    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    AES_XCBC_96 = 5
    AES_CMAC_96 = 8
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class DhId(enum.IntEnum):
    """Transform Type 4 - Diffie-Hellman (Key Exchange Method) Transform IDs."""

    NONE = 0
    MODP_768 = 1
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    CURVE25519 = 31
    CURVE448 = 32


class EsnId(enum.IntEnum):
    """Transform Type 5 - Extended Sequence Numbers Transform IDs."""

    NO = 0
    YES = 1


class Cipher(enum.Enum):
    """How an encryption transform is built from cryptography's primitives."""

    NULL = "null"
    CBC = "cbc"
    CTR = "ctr"
    GCM = "gcm"
    CCM = "ccm"
    GMAC = "gmac"
    CHACHA20_POLY1305 = "chacha20poly1305"


@dataclass(frozen=True, slots=True)
class EncryptionAlgorithm:
    id: EncrId
    name: str
    cipher: Cipher
    key_sizes: tuple[int, ...]  # in bits; () when the transform takes no key
    variable_key: bool  # carries the Key Length attribute (RFC 7296 3.3.5)
    salt_len: int  # octets of keying material after the key (RFC 4106 / 3686 / 4309 / 7634)
    iv_len: int  # octets of IV on the wire
    block_size: int  # cipher block size for padding (at least 4, RFC 4303 2.4)
    icv_len: int  # AEAD tag length; 0 for non-AEAD transforms
    insecure: bool = False
    block_cipher: str = "aes"  # "aes", "3des", "des", or "" for NULL/ChaCha20

    @property
    def aead(self) -> bool:
        return self.icv_len > 0

    def key_material_len(self, key_bits: int | None) -> int:
        """Octets of KEYMAT this transform takes: key plus salt/nonce (RFC 7296 2.17)."""
        bits = key_bits if key_bits is not None else (self.key_sizes[0] if self.key_sizes else 0)
        return bits // 8 + self.salt_len


@dataclass(frozen=True, slots=True)
class IntegrityAlgorithm:
    id: IntegId
    name: str
    hash: str  # "md5", "sha1", "sha256", "sha384", "sha512", or "aes-xcbc"/"aes-cmac"
    key_len: int  # octets
    icv_len: int  # octets on the wire (the truncated output)
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class PrfAlgorithm:
    id: PrfId
    name: str
    hash: str
    key_len: int  # preferred key length in octets (RFC 7296 2.13)
    output_len: int
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class DhGroup:
    id: DhId
    name: str
    kind: str  # "modp", "ecp", "curve"
    bits: int  # modulus / field size, for key length of the public value
    public_len: int  # octets of the KE payload data (RFC 7296 3.4, RFC 5903 7, RFC 8031 2)
    insecure: bool = False


_AES = (128, 192, 256)

ENCRYPTION: dict[EncrId, EncryptionAlgorithm] = {
    a.id: a
    for a in (
        EncryptionAlgorithm(EncrId.DES, "des", Cipher.CBC, (64,), False, 0, 8, 8, 0, True, "des"),
        EncryptionAlgorithm(
            EncrId.TRIPLE_DES, "3des", Cipher.CBC, (192,), False, 0, 8, 8, 0, True, "3des"
        ),
        EncryptionAlgorithm(EncrId.NULL, "null", Cipher.NULL, (), False, 0, 0, 4, 0, True, ""),
        EncryptionAlgorithm(EncrId.AES_CBC, "aes-cbc", Cipher.CBC, _AES, True, 0, 16, 16, 0),
        EncryptionAlgorithm(EncrId.AES_CTR, "aes-ctr", Cipher.CTR, _AES, True, 4, 8, 4, 0),
        EncryptionAlgorithm(EncrId.AES_CCM_8, "aes-ccm8", Cipher.CCM, _AES, True, 3, 8, 4, 8),
        EncryptionAlgorithm(EncrId.AES_CCM_12, "aes-ccm12", Cipher.CCM, _AES, True, 3, 8, 4, 12),
        EncryptionAlgorithm(EncrId.AES_CCM_16, "aes-ccm16", Cipher.CCM, _AES, True, 3, 8, 4, 16),
        EncryptionAlgorithm(EncrId.AES_GCM_8, "aes-gcm8", Cipher.GCM, _AES, True, 4, 8, 4, 8),
        EncryptionAlgorithm(EncrId.AES_GCM_12, "aes-gcm12", Cipher.GCM, _AES, True, 4, 8, 4, 12),
        EncryptionAlgorithm(EncrId.AES_GCM_16, "aes-gcm16", Cipher.GCM, _AES, True, 4, 8, 4, 16),
        EncryptionAlgorithm(
            EncrId.NULL_AUTH_AES_GMAC, "aes-gmac", Cipher.GMAC, _AES, True, 4, 8, 4, 16
        ),
        EncryptionAlgorithm(
            EncrId.CHACHA20_POLY1305,
            "chacha20poly1305",
            Cipher.CHACHA20_POLY1305,
            (256,),
            False,
            4,
            8,
            4,
            16,
            False,
            "",
        ),
    )
}

INTEGRITY: dict[IntegId, IntegrityAlgorithm] = {
    a.id: a
    for a in (
        IntegrityAlgorithm(IntegId.HMAC_MD5_96, "hmac-md5-96", "md5", 16, 12, True),
        IntegrityAlgorithm(IntegId.HMAC_SHA1_96, "hmac-sha1-96", "sha1", 20, 12, True),
        IntegrityAlgorithm(IntegId.AES_XCBC_96, "aes-xcbc-96", "aes-xcbc", 16, 12),
        IntegrityAlgorithm(IntegId.AES_CMAC_96, "aes-cmac-96", "aes-cmac", 16, 12),
        IntegrityAlgorithm(IntegId.HMAC_SHA2_256_128, "hmac-sha2-256-128", "sha256", 32, 16),
        IntegrityAlgorithm(IntegId.HMAC_SHA2_384_192, "hmac-sha2-384-192", "sha384", 48, 24),
        IntegrityAlgorithm(IntegId.HMAC_SHA2_512_256, "hmac-sha2-512-256", "sha512", 64, 32),
    )
}

PRF: dict[PrfId, PrfAlgorithm] = {
    a.id: a
    for a in (
        PrfAlgorithm(PrfId.HMAC_MD5, "prf-hmac-md5", "md5", 16, 16, True),
        PrfAlgorithm(PrfId.HMAC_SHA1, "prf-hmac-sha1", "sha1", 20, 20, True),
        PrfAlgorithm(PrfId.AES128_XCBC, "prf-aes128-xcbc", "aes-xcbc", 16, 16),
        PrfAlgorithm(PrfId.AES128_CMAC, "prf-aes128-cmac", "aes-cmac", 16, 16),
        PrfAlgorithm(PrfId.HMAC_SHA2_256, "prf-hmac-sha2-256", "sha256", 32, 32),
        PrfAlgorithm(PrfId.HMAC_SHA2_384, "prf-hmac-sha2-384", "sha384", 48, 48),
        PrfAlgorithm(PrfId.HMAC_SHA2_512, "prf-hmac-sha2-512", "sha512", 64, 64),
    )
}

DH_GROUPS: dict[DhId, DhGroup] = {
    g.id: g
    for g in (
        DhGroup(DhId.MODP_768, "modp768", "modp", 768, 96, True),
        DhGroup(DhId.MODP_1024, "modp1024", "modp", 1024, 128, True),
        DhGroup(DhId.MODP_1536, "modp1536", "modp", 1536, 192, True),
        DhGroup(DhId.MODP_2048, "modp2048", "modp", 2048, 256),
        DhGroup(DhId.MODP_3072, "modp3072", "modp", 3072, 384),
        DhGroup(DhId.MODP_4096, "modp4096", "modp", 4096, 512),
        DhGroup(DhId.MODP_6144, "modp6144", "modp", 6144, 768),
        DhGroup(DhId.MODP_8192, "modp8192", "modp", 8192, 1024),
        DhGroup(DhId.ECP_256, "ecp256", "ecp", 256, 64),
        DhGroup(DhId.ECP_384, "ecp384", "ecp", 384, 96),
        DhGroup(DhId.ECP_521, "ecp521", "ecp", 521, 132),
        DhGroup(DhId.CURVE25519, "curve25519", "curve", 255, 32),
        DhGroup(DhId.CURVE448, "curve448", "curve", 448, 56),
    )
}
