"""A byte string that must never be printed: PSKs and manual keys."""

from __future__ import annotations

import hashlib
import hmac


class Secret:
    """Key material. ``repr``/``str`` never show it; equality is constant-time."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    @property
    def value(self) -> bytes:
        """The octets themselves (hand them to the crypto, never to a log)."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        # A digest, so that the hash of a dataclass holding a secret reveals nothing useful.
        return hash(hashlib.sha256(b"hostsec-secret" + self._value).digest())

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__
