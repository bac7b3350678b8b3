"""The anti-replay window (RFC 4303 3.4.3, Appendix A; RFC 4302 3.4.3).

The window remembers which of the last ``size`` sequence numbers up to ``top`` (the
highest verified one) were received. They are kept in a ring of one octet per sequence
number, indexed by ``seq & ring_mask`` (the ring size is ``size`` rounded up to a power
of two), in the manner of RFC 6479: accepting the next packet in order is one store, with
no shifting of a bitmap, whatever the window size. Sizes 32 to 4096. (``bitmap`` and
``mask`` still give the classic view: bit ``i`` set when ``top - i`` was received.)

Invariant: for every ``n`` with ``top - ring < n <= top``, ``slots[n & ring_mask]`` is 1
if and only if ``n`` was received and verified. When ``top`` advances, the slots of the numbers
passed over are cleared (their old contents belong to numbers that left the window).

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
    __slots__ = ("_zeros", "esn", "ring_mask", "size", "slots", "top")

    def __init__(self, size: int = DEFAULT_WINDOW, esn: bool = False) -> None:
        if not MIN_WINDOW <= size <= MAX_WINDOW:
            raise ValueError(f"replay window must be {MIN_WINDOW} to {MAX_WINDOW} packets")
        self.size = size
        self.esn = esn
        self.top = 0  # highest verified sequence number (64-bit with ESN)
        ring = 1 << (size - 1).bit_length()  # a power of two >= size
        self.ring_mask = ring - 1
        # slots[n & ring_mask] == 1: n was received. Changed in place only, never rebound:
        # the ESP fast paths keep a reference to it.
        self.slots = bytearray(ring)
        self._zeros = bytes(ring)

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
        if top - seq >= self.size:
            raise Replayed("sequence number left the replay window")
        if self.slots[seq & self.ring_mask]:
            raise Replayed("duplicate sequence number")

    def update(self, seq: int) -> None:
        """Record a verified ``seq`` (call :meth:`check` first)."""
        top = self.top
        mask = self.ring_mask
        if seq == top + 1:  # the next one in order: nothing passed over
            self.slots[seq & mask] = 1
            self.top = seq
            return
        if seq > top:
            if seq - top > mask:
                self.slots[:] = self._zeros  # moved by a whole ring: nothing stays
            else:
                # Clear the slots of top+1 .. seq-1 (not received), wrapping around the ring.
                start = (top + 1) & mask
                stop = seq & mask
                if start <= stop:
                    self.slots[start:stop] = self._zeros[: stop - start]
                else:
                    self.slots[start:] = self._zeros[start:]
                    self.slots[:stop] = self._zeros[:stop]
            self.top = seq
        self.slots[seq & mask] = 1

    def received(self, seq: int) -> bool:
        """Whether ``seq`` lies in the window and was recorded (for tests and diagnostics)."""
        top = self.top
        return seq <= top and top - seq < self.size and bool(self.slots[seq & self.ring_mask])

    # The classic bitmap view (not used per packet).

    @property
    def mask(self) -> int:
        """All ``size`` bits of :attr:`bitmap` set."""
        return (1 << self.size) - 1

    @property
    def bitmap(self) -> int:
        """Bit ``i`` set when ``top - i`` was received, for ``i`` below ``size``."""
        return sum(
            1 << i for i in range(min(self.size, self.top + 1)) if self.received(self.top - i)
        )

    @bitmap.setter
    def bitmap(self, value: int) -> None:
        self.slots[:] = self._zeros
        for i in range(min(self.size, self.top + 1)):
            if value >> i & 1:
                self.slots[(self.top - i) & self.ring_mask] = 1
