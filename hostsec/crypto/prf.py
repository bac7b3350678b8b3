"""The IKE pseudorandom functions and prf+ (RFC 7296 2.13).

- HMAC-MD5, HMAC-SHA1 (RFC 2104), HMAC-SHA2-256/384/512 (RFC 4868): variable-length keys.
- AES-XCBC-PRF-128 (RFC 4434): a key shorter than 128 bits is padded with zero bits on the
  right, a longer one is first reduced with AES-XCBC-MAC under the all-zero key.
- AES-CMAC-PRF-128 (RFC 4615): a key that is not 128 bits long is first reduced with
  AES-CMAC under the all-zero key.

``prf+`` (RFC 7296 2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), for n <= 255.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import cmac, hashes, hmac
from cryptography.hazmat.primitives.ciphers import algorithms

from hostsec.crypto.integ import XcbcMac
from hostsec.crypto.transforms import PRF, PrfAlgorithm, PrfId

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_AES_BLOCK = 16
_PRF_PLUS_MAX_BLOCKS = 255  # the counter is one octet (RFC 7296 2.13)


def _aes_cmac(key: bytes, data: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def xcbc_prf_key(key: bytes) -> bytes:
    """RFC 4434 2: the 128-bit AES key that AES-XCBC-PRF-128 uses for ``key``."""
    if len(key) == _AES_BLOCK:
        return key
    if len(key) < _AES_BLOCK:
        return key + bytes(_AES_BLOCK - len(key))
    return XcbcMac(bytes(_AES_BLOCK), _AES_BLOCK).mac(key)


def cmac_prf_key(key: bytes) -> bytes:
    """RFC 4615 3: the 128-bit AES key that AES-CMAC-PRF-128 uses for ``key``."""
    if len(key) == _AES_BLOCK:
        return key
    return _aes_cmac(bytes(_AES_BLOCK), key)


class Prf:
    """A negotiated IKE PRF, callable as ``prf(key, data)``.

    ``key_len`` is the preferred key length and ``output_len`` the output length (both in
    octets, RFC 7296 2.13); :meth:`keyed` fixes the key once for repeated use (prf+).
    """

    __slots__ = ("algorithm", "id", "key_len", "output_len")

    def __init__(self, prf_id: PrfId | int) -> None:
        try:
            self.algorithm: PrfAlgorithm = PRF[PrfId(prf_id)]
        except (ValueError, KeyError):
            raise ValueError(f"unsupported PRF {int(prf_id)}") from None
        self.id = self.algorithm.id
        self.key_len = self.algorithm.key_len
        self.output_len = self.algorithm.output_len

    def keyed(self, key: bytes) -> Callable[[bytes], bytes]:
        """``data -> prf(key, data)`` with the key set up once."""
        name = self.algorithm.hash
        if name == "aes-xcbc":
            mac = XcbcMac(xcbc_prf_key(key), _AES_BLOCK)
            return mac.mac
        if name == "aes-cmac":
            aes_key = cmac_prf_key(key)
            return lambda data: _aes_cmac(aes_key, data)
        base = hmac.HMAC(key, _HASHES[name]())

        def _hmac(data: bytes) -> bytes:
            h = base.copy()
            h.update(data)
            return h.finalize()

        return _hmac

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return self.keyed(key)(data)

    def __repr__(self) -> str:
        return f"Prf({self.algorithm.name})"


def prf_plus(prf: Prf | PrfId | int, key: bytes, seed: bytes, length: int) -> bytes:
    """``length`` octets of prf+(key, seed) (RFC 7296 2.13)."""
    p = prf if isinstance(prf, Prf) else Prf(prf)
    if length < 0:
        raise ValueError("prf+ length must not be negative")
    if length > _PRF_PLUS_MAX_BLOCKS * p.output_len:
        raise ValueError(
            f"prf+ with {p.algorithm.name} gives at most "
            f"{_PRF_PLUS_MAX_BLOCKS * p.output_len} octets, {length} asked"
        )
    f = p.keyed(key)
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = f(block + seed + bytes((counter,)))
        out += block
        counter += 1
    return bytes(out[:length])
