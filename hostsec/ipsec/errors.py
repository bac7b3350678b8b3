"""Why a packet was dropped: the only exceptions protect and unprotect raise.

Each exception carries a :class:`DropReason` (the counter it bumps) and a human reason.
No message ever contains key material or packet contents.
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    MALFORMED = "malformed"
    UNKNOWN_SPI = "unknown_spi"
    REPLAY = "replay"
    AUTH_FAILED = "auth_failed"
    SELECTOR_MISMATCH = "selector_mismatch"
    SEQUENCE_EXHAUSTED = "sequence_exhausted"
    EXPIRED = "expired"
    DUMMY = "dummy"  # RFC 4303 2.6 dummy packet (next header 59): dropped by design
    NO_SA = "no_sa"
    POLICY = "policy"


class PacketDropped(Exception):
    """Base of every drop; ``reason`` selects the counter, ``detail`` says what happened."""

    reason: DropReason = DropReason.MALFORMED

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Malformed(PacketDropped):
    reason = DropReason.MALFORMED


class UnknownSPI(PacketDropped):
    reason = DropReason.UNKNOWN_SPI


class Replayed(PacketDropped):
    reason = DropReason.REPLAY


class AuthenticationFailed(PacketDropped):
    reason = DropReason.AUTH_FAILED


class SelectorMismatch(PacketDropped):
    reason = DropReason.SELECTOR_MISMATCH


class SequenceExhausted(PacketDropped):
    reason = DropReason.SEQUENCE_EXHAUSTED


class Expired(PacketDropped):
    reason = DropReason.EXPIRED


class DummyPacket(PacketDropped):
    reason = DropReason.DUMMY


class NoSA(PacketDropped):
    reason = DropReason.NO_SA


class PolicyViolation(PacketDropped):
    reason = DropReason.POLICY
