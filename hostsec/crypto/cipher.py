"""Encryption transforms as ESP uses them, built from pyca/cryptography.

Combined-mode (AEAD) transforms take the keying material ``key || salt`` and a per-packet
IV; the nonce is ``salt || IV``. They share cryptography's AEAD interface and raise
:class:`cryptography.exceptions.InvalidTag` when the ICV does not verify:
- AES-GCM with 8/12/16-octet ICV (RFC 4106), AES-CCM (RFC 4309, 3-octet salt),
  ChaCha20-Poly1305 (RFC 7634), AES-GMAC (RFC 4543, authentication only: the payload is
  authenticated as additional data and travels in the clear).
Plain ciphers (used with a separate integrity transform):
- AES-CBC (RFC 3602), 3DES-CBC (RFC 2451), DES-CBC (RFC 2405), AES-CTR (RFC 3686),
  NULL (RFC 2410).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from hostsec.crypto.transforms import ENCRYPTION, Cipher, EncrId


class AeadPrimitive(Protocol):
    """What cryptography's AESGCM, AESCCM and ChaCha20Poly1305 offer: ``encrypt`` returns
    ciphertext || ICV, ``decrypt`` raises :class:`InvalidTag` when the ICV is wrong."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Aead:
    """A combined-mode transform as ESP and IKE use it: nonce = ``salt`` || IV."""

    primitive: AeadPrimitive
    salt: bytes
    iv_len: int
    icv_len: int
    block_size: int = 4  # RFC 4303 2.4: 32-bit alignment for stream-like transforms

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self.primitive.encrypt(self.salt + iv, plaintext, aad)

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt and verify; raises :class:`InvalidTag`."""
        return self.primitive.decrypt(self.salt + iv, ciphertext, aad)


class PlainCipher(Protocol):
    """A cipher without integrity of its own; ESP pairs it with a MAC."""

    iv_len: int
    block_size: int

    def encrypt(self, iv: bytes, plaintext: bytes) -> bytes: ...

    def decrypt(self, iv: bytes, ciphertext: bytes) -> bytes: ...


class TruncatedGcm:
    """AES-GCM with an 8- or 12-octet ICV (RFC 4106 ENCR_AES_GCM_8 / _12)."""

    __slots__ = ("_aesgcm", "_key", "_tag_len")

    def __init__(self, key: bytes, tag_len: int) -> None:
        self._aesgcm = AESGCM(key)
        self._key = key
        self._tag_len = tag_len

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        # A truncated GCM tag is the leading octets of the full tag (NIST SP 800-38D 5.2.1.2).
        return self._aesgcm.encrypt(nonce, data, associated_data)[: len(data) + self._tag_len]

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        if len(data) < self._tag_len:
            raise InvalidTag
        body, tag = data[: -self._tag_len], data[-self._tag_len :]
        dec = _Cipher(
            algorithms.AES(self._key), modes.GCM(nonce, tag, min_tag_length=self._tag_len)
        ).decryptor()
        if associated_data:
            dec.authenticate_additional_data(associated_data)
        return dec.update(body) + dec.finalize()


class Gmac:
    """AES-GMAC per RFC 4543 (ENCR_NULL_AUTH_AES_GMAC): nothing is encrypted.

    ESP passes SPI and sequence number as associated data; RFC 4543 section 5 then
    authenticates IV and plaintext too, and GCM runs over an empty plaintext. The nonce
    handed in is salt || IV, so the IV is its last eight octets.
    """

    __slots__ = ("_aesgcm",)

    def __init__(self, key: bytes) -> None:
        self._aesgcm = AESGCM(key)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        aad = (associated_data or b"") + nonce[4:] + data
        return data + self._aesgcm.encrypt(nonce, b"", aad)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        if len(data) < 16:
            raise InvalidTag
        body, tag = data[:-16], data[-16:]
        self._aesgcm.decrypt(nonce, tag, (associated_data or b"") + nonce[4:] + body)
        return body


class CbcCipher:
    """AES-CBC (RFC 3602), 3DES-CBC (RFC 2451), DES-CBC (RFC 2405): IV = block size."""

    __slots__ = ("_algorithm", "block_size", "iv_len")

    def __init__(self, algorithm: algorithms.AES | TripleDES, block_size: int) -> None:
        self._algorithm = algorithm
        self.iv_len = block_size
        self.block_size = block_size

    def encrypt(self, iv: bytes, plaintext: bytes) -> bytes:
        enc = _Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return enc.update(plaintext) + enc.finalize()

    def decrypt(self, iv: bytes, ciphertext: bytes) -> bytes:
        dec = _Cipher(self._algorithm, modes.CBC(iv)).decryptor()
        return dec.update(ciphertext) + dec.finalize()


class CtrCipher:
    """AES-CTR per RFC 3686: counter block = nonce (4) || IV (8) || counter from 1."""

    __slots__ = ("_algorithm", "_nonce", "block_size", "iv_len")

    def __init__(self, key: bytes, nonce: bytes) -> None:
        self._algorithm = algorithms.AES(key)
        self._nonce = nonce
        self.iv_len = 8
        self.block_size = 4

    def encrypt(self, iv: bytes, plaintext: bytes) -> bytes:
        enc = _Cipher(
            self._algorithm, modes.CTR(self._nonce + iv + b"\x00\x00\x00\x01")
        ).encryptor()
        return enc.update(plaintext) + enc.finalize()

    decrypt = encrypt


class NullCipher:
    """ENCR_NULL (RFC 2410): no IV, no change."""

    __slots__ = ("block_size", "iv_len")

    def __init__(self) -> None:
        self.iv_len = 0
        self.block_size = 4

    def encrypt(self, iv: bytes, plaintext: bytes) -> bytes:
        return plaintext

    decrypt = encrypt


def _split(encr: EncrId, keymat: bytes) -> tuple[bytes, bytes]:
    algo = ENCRYPTION[encr]
    key_len = len(keymat) - algo.salt_len
    if algo.key_sizes and key_len * 8 not in algo.key_sizes:
        raise ValueError(
            f"{algo.name} takes {', '.join(str(k) for k in algo.key_sizes)}-bit keys"
            f" plus {algo.salt_len} octets of salt, not {len(keymat)} octets"
        )
    if not algo.key_sizes and key_len:
        raise ValueError(f"{algo.name} takes no key")
    return keymat[:key_len], keymat[key_len:]


def make_aead(encr: EncrId, keymat: bytes) -> Aead:
    """The combined-mode transform ``encr`` keyed with ``keymat`` (key || salt)."""
    algo = ENCRYPTION[encr]
    key, salt = _split(encr, keymat)
    primitive: AeadPrimitive
    if algo.cipher is Cipher.GCM:
        primitive = AESGCM(key) if algo.icv_len == 16 else TruncatedGcm(key, algo.icv_len)
    elif algo.cipher is Cipher.CHACHA20_POLY1305:
        primitive = ChaCha20Poly1305(key)
    elif algo.cipher is Cipher.CCM:
        primitive = AESCCM(key, tag_length=algo.icv_len)
    elif algo.cipher is Cipher.GMAC:
        primitive = Gmac(key)
    else:
        raise ValueError(f"{algo.name} is not a combined-mode transform")
    return Aead(primitive, salt, algo.iv_len, algo.icv_len, algo.block_size)


def make_cipher(encr: EncrId, keymat: bytes) -> PlainCipher:
    """The plain cipher ``encr`` keyed with ``keymat`` (key, or key || nonce for CTR)."""
    algo = ENCRYPTION[encr]
    key, salt = _split(encr, keymat)
    if algo.cipher is Cipher.NULL:
        return NullCipher()
    if algo.cipher is Cipher.CTR:
        return CtrCipher(key, salt)
    if algo.cipher is Cipher.CBC:
        if algo.block_cipher == "aes":
            return CbcCipher(algorithms.AES(key), 16)
        if algo.block_cipher == "des":
            # Single DES is 3DES-EDE with K1 = K2 = K3 (FIPS 46-3): only for legacy peers.
            return CbcCipher(TripleDES(key * 3), 8)
        return CbcCipher(TripleDES(key), 8)
    raise ValueError(f"{algo.name} is a combined-mode transform")
