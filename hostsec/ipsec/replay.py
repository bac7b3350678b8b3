"""The anti-replay window (RFC 4303 3.4.3, Appendix A; RFC 4302 3.4.3).

The window is a sliding bitmap held in one Python int: bit ``i`` set means that
sequence number ``top - i`` has been received and verified. Sizes 32 to 4096 bits.

The check happens before the ICV is verified (cheap rejection) and the update only after
a successful verification, so a forged packet cannot move the window.
"""

from __future__ import annotations

from hostsec.ipsec.errors import Replayed

MIN_WINDOW = 32
MAX_WINDOW = 4096
DEFAULT_WINDOW = 64  # RFC 4303 3.4.3
_LOW32 = 0xFFFFFFFF


class ReplayWindow:
    __slots__ = ("bitmap", "esn", "mask", "size", "top")

    def __init__(self, size: int = DEFAULT_WINDOW, esn: bool = False) -> None:
        if not MIN_WINDOW <= size <= MAX_WINDOW:
            raise ValueError(f"replay window must be {MIN_WINDOW} to {MAX_WINDOW} packets")
        self.size = size
        self.esn = esn
        self.top = 0  # highest verified sequence number (64-bit with ESN)
        self.bitmap = 0
        self.mask = (1 << size) - 1

    def infer(self, seq_low: int) -> int:
        """The full sequence number for the low 32 bits on the wire (RFC 4303 Appendix A2.2).

        Without ESN this is ``seq_low`` itself.
        """
        if not self.esn:
            return seq_low
        top = self.top
        th = top >> 32
        tl = top & _LOW32
        bottom = tl - self.size + 1  # Bl, may be negative in case B
        if bottom >= 0:
            # Case A: the window lies within one 2^32 subspace.
            return ((th + 1) << 32 | seq_low) if seq_low < bottom else (th << 32 | seq_low)
        # Case B: the window spans two subspaces.
        if seq_low >= (bottom & _LOW32):
            if th == 0:
                return seq_low  # no earlier subspace: treat as the current one (too old anyway)
            return (th - 1) << 32 | seq_low
        return th << 32 | seq_low

    def check(self, seq: int) -> None:
        """Raise :class:`Replayed` if ``seq`` (full, as inferred) must be rejected."""
        top = self.top
        if seq > top:
            return
        if seq == 0:
            raise Replayed("sequence number 0 is never sent")
        offset = top - seq
        if offset >= self.size:
            raise Replayed("sequence number left the replay window")
        if (self.bitmap >> offset) & 1:
            raise Replayed("duplicate sequence number")

    def update(self, seq: int) -> None:
        """Record a verified ``seq`` (call :meth:`check` first)."""
        top = self.top
        if seq > top:
            shift = seq - top
            if shift >= self.size:
                self.bitmap = 1
            else:
                self.bitmap = ((self.bitmap << shift) | 1) & self.mask
            self.top = seq
        else:
            self.bitmap |= 1 << (top - seq)
