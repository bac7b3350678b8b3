"""Integrity algorithms (MACs) for ESP, AH and IKE: HMAC-x-n, AES-XCBC-MAC-96, AES-CMAC-96.

RFC 2403/2404 (HMAC-MD5-96, HMAC-SHA1-96), RFC 4868 (HMAC-SHA2-256-128/384-192/512-256),
RFC 3566 (AES-XCBC-MAC-96), RFC 4494 (AES-CMAC-96). The full MAC functions are also the
IKE PRFs of RFC 7296 (HMAC-x) and RFC 4434 (AES-XCBC-PRF-128). Every primitive comes from
pyca/cryptography; XCBC is built from AES-ECB block encryptions (RFC 3566 section 4).
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives import cmac, constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hostsec.crypto.transforms import INTEGRITY, IntegId

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class Mac(Protocol):
    """A keyed MAC whose output is truncated to ``icv_len`` octets."""

    icv_len: int

    def icv(self, data: bytes) -> bytes: ...

    def verify(self, data: bytes, icv: bytes) -> bool: ...


class HmacMac:
    """HMAC with a fixed key; each call copies the keyed state (no re-keying per packet)."""

    __slots__ = ("_keyed", "icv_len")

    def __init__(self, hash_name: str, key: bytes, icv_len: int) -> None:
        self._keyed = hmac.HMAC(key, _HASHES[hash_name]())
        self.icv_len = icv_len

    def icv(self, data: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(data)
        return h.finalize()[: self.icv_len]

    def verify(self, data: bytes, icv: bytes) -> bool:
        h = self._keyed.copy()
        h.update(data)
        return constant_time.bytes_eq(h.finalize()[: self.icv_len], icv)


class XcbcMac:
    """AES-XCBC-MAC (RFC 3566), truncated to ``icv_len`` (12 for -96, 16 for the PRF)."""

    __slots__ = ("_k1_cbc", "_k2", "_k3", "icv_len")

    def __init__(self, key: bytes, icv_len: int = 12) -> None:
        if len(key) != 16:
            raise ValueError("AES-XCBC-MAC takes a 128-bit key")
        ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - RFC 3566 4
        derived = ecb.update(b"\x01" * 16 + b"\x02" * 16 + b"\x03" * 16) + ecb.finalize()
        self._k1_cbc = algorithms.AES(derived[:16])
        self._k2 = int.from_bytes(derived[16:32], "big")
        self._k3 = int.from_bytes(derived[32:48], "big")
        self.icv_len = icv_len

    def mac(self, data: bytes) -> bytes:
        """The full 128-bit AES-XCBC-MAC of ``data``."""
        # RFC 3566 4: CBC-MAC under K1 over all blocks but the last; the last block is
        # XORed with K2 (complete) or padded 10* and XORed with K3 (incomplete).
        if data and len(data) % 16 == 0:
            head, last, mask = data[:-16], data[-16:], self._k2
        else:
            cut = len(data) - len(data) % 16
            head, last, mask = data[:cut], data[cut:] + b"\x80", self._k3
            last = last + b"\x00" * (16 - len(last))
        final = (int.from_bytes(last, "big") ^ mask).to_bytes(16, "big")
        enc = Cipher(self._k1_cbc, modes.CBC(b"\x00" * 16)).encryptor()
        return enc.update(head + final)[-16:]

    def icv(self, data: bytes) -> bytes:
        return self.mac(data)[: self.icv_len]

    def verify(self, data: bytes, icv: bytes) -> bool:
        return constant_time.bytes_eq(self.icv(data), icv)


class CmacMac:
    """AES-CMAC (RFC 4493), truncated to ``icv_len`` (12 for AES-CMAC-96, RFC 4494)."""

    __slots__ = ("_key", "icv_len")

    def __init__(self, key: bytes, icv_len: int = 12) -> None:
        if len(key) != 16:
            raise ValueError("AES-CMAC-96 takes a 128-bit key")
        self._key = key
        self.icv_len = icv_len

    def icv(self, data: bytes) -> bytes:
        c = cmac.CMAC(algorithms.AES(self._key))
        c.update(data)
        return c.finalize()[: self.icv_len]

    def verify(self, data: bytes, icv: bytes) -> bool:
        return constant_time.bytes_eq(self.icv(data), icv)


def make_mac(integ: IntegId, key: bytes) -> Mac:
    """The MAC of integrity transform ``integ`` keyed with ``key`` (RFC 7296 2.17 length)."""
    algo = INTEGRITY[integ]
    if len(key) != algo.key_len:
        raise ValueError(f"{algo.name} takes a {algo.key_len}-octet key, not {len(key)}")
    if algo.hash == "aes-xcbc":
        return XcbcMac(key, algo.icv_len)
    if algo.hash == "aes-cmac":
        return CmacMac(key, algo.icv_len)
    return HmacMac(algo.hash, key, algo.icv_len)
