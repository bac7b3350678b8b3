"""Stateless cookies against IKE_SA_INIT floods (RFC 7296 2.6).

When too many half-open IKE SAs exist, the responder answers an IKE_SA_INIT request that
carries no valid cookie with a COOKIE notification and keeps no state. A cookie is
``<secret version> | HMAC-SHA256(secret, Ni | IPi | SPIi)``; the secret changes
periodically and the previous one stays valid for one period, so a cookie handed out just
before a change still works.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives import constant_time, hashes, hmac

COOKIE_LEN = 4 + 32
_VERSION = struct.Struct("!I")


class CookieJar:
    """Makes and checks cookies; decides when they are required."""

    def __init__(
        self,
        threshold: int = 10,
        lifetime: float = 120.0,
        now: float = 0.0,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.threshold = threshold  # half-open SAs before cookies are required
        self.lifetime = lifetime  # seconds a secret version is current
        self._random = random
        self._version = 0
        self._secret = random(32)
        self._previous: bytes | None = None
        self._rotated = now

    def required(self, half_open: int) -> bool:
        return half_open >= self.threshold

    def handle_timer(self, now: float) -> None:
        if now - self._rotated >= self.lifetime:
            self._previous = self._secret
            self._secret = self._random(32)
            self._version = (self._version + 1) & 0xFFFFFFFF
            self._rotated = now

    def next_timer(self) -> float:
        return self._rotated + self.lifetime

    @staticmethod
    def _mac(secret: bytes, ni: bytes, ip: bytes, spi_i: bytes) -> bytes:
        h = hmac.HMAC(secret, hashes.SHA256())
        h.update(ni + ip + spi_i)
        return h.finalize()

    def make(self, ni: bytes, ip: bytes, spi_i: bytes) -> bytes:
        """The cookie for an initiator's nonce, address (packed) and SPI."""
        return _VERSION.pack(self._version) + self._mac(self._secret, ni, ip, spi_i)

    def verify(self, cookie: bytes, ni: bytes, ip: bytes, spi_i: bytes) -> bool:
        if len(cookie) != COOKIE_LEN:
            return False
        version = _VERSION.unpack_from(cookie)[0]
        if version == self._version:
            secret: bytes | None = self._secret
        elif version == (self._version - 1) & 0xFFFFFFFF:
            secret = self._previous
        else:
            secret = None
        if secret is None:
            return False
        return constant_time.bytes_eq(cookie[4:], self._mac(secret, ni, ip, spi_i))
