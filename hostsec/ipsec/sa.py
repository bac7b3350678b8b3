"""The Security Association: parameters, counters, sequence numbers, lifetimes, events.

RFC 4301 4.4.2 lists what an SAD entry holds; this module keeps the part that does not
depend on the protocol. :mod:`hostsec.ipsec.esp` and :mod:`hostsec.ipsec.ah` add
protect/unprotect. SAs are unidirectional: an outbound SA owns a sequence counter, an
inbound SA a replay window.

Sans-I/O: time only enters through ``now`` arguments; lifetime expiry and "rekey
needed" come out as events from :meth:`SecurityAssociation.poll_events`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from hostsec.crypto.proposals import Encryption, Mode, Protocol
from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY, IntegId
from hostsec.ipsec.errors import DropReason, Expired, SequenceExhausted
from hostsec.ipsec.replay import DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW
from hostsec.ipsec.selectors import Selectors
from hostsec.wire.esp import SPI_MIN

__all__ = ["Direction", "Lifetime", "Mode", "SAConfig", "SecurityAssociation", "UdpEncapsulation"]


class Direction(enum.Enum):
    INBOUND = "in"
    OUTBOUND = "out"


@dataclass(frozen=True, slots=True)
class Lifetime:
    """A lifetime in seconds, bytes and packets; ``None`` means no limit of that kind."""

    seconds: float | None = None
    bytes: int | None = None
    packets: int | None = None


@dataclass(frozen=True, slots=True)
class UdpEncapsulation:
    """ESP in UDP (RFC 3948): the outer UDP ports of this SA's packets."""

    src_port: int
    dst_port: int


@dataclass(frozen=True)
class SAConfig:
    """Everything that defines one SA. Keys are raw octets as RFC 7296 2.17 lays them out:
    ``encryption_key`` includes the salt/nonce of GCM, CCM, CTR, GMAC and ChaCha20."""

    spi: int
    protocol: Protocol  # Protocol.ESP or Protocol.AH
    direction: Direction
    mode: Mode
    src: ipaddress.IPv4Address | ipaddress.IPv6Address  # outer source (tunnel endpoints)
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address  # outer destination
    encryption: Encryption | None = None
    integrity: IntegId | None = None
    encryption_key: bytes = field(default=b"", repr=False)
    integrity_key: bytes = field(default=b"", repr=False)
    esn: bool = False
    replay_window: int = DEFAULT_WINDOW  # 0 turns anti-replay off (RFC 4303 3.4.3)
    soft: Lifetime = Lifetime()
    hard: Lifetime = Lifetime()
    encapsulation: UdpEncapsulation | None = None
    selectors: Selectors | None = None
    # Transport mode through a NAT (RFC 3948 3.1.2): the peer's original addresses
    # (NAT-OAi / NAT-OAr) as its TCP/UDP checksums saw them: (source, destination).
    nat_original: tuple[bytes, bytes] | None = None
    check_padding: bool = True

    def __post_init__(self) -> None:
        if not SPI_MIN <= self.spi <= 0xFFFFFFFF:
            raise ValueError("SPI must be 256 to 2^32-1 (RFC 4303 2.1)")
        if self.protocol not in (Protocol.ESP, Protocol.AH):
            raise ValueError("an IPsec SA is ESP or AH")
        if self.src.version != self.dst.version:
            raise ValueError("SA endpoints must both be IPv4 or both IPv6")
        if self.replay_window and not MIN_WINDOW <= self.replay_window <= MAX_WINDOW:
            raise ValueError(f"replay window must be 0 or {MIN_WINDOW} to {MAX_WINDOW}")
        if self.protocol is Protocol.AH:
            if self.integrity in (None, IntegId.NONE):
                raise ValueError("AH needs an integrity algorithm")
            if self.encryption is not None:
                raise ValueError("AH does not encrypt")
            if self.encapsulation is not None:
                raise ValueError("AH cannot be UDP-encapsulated (RFC 3948 covers ESP only)")
        else:
            if self.encryption is None:
                raise ValueError("ESP needs an encryption algorithm (NULL at least)")
            aead = ENCRYPTION[self.encryption.id].aead
            if aead and self.integrity not in (None, IntegId.NONE):
                raise ValueError("an AEAD transform takes no separate integrity algorithm")
            if not aead and self.integrity in (None, IntegId.NONE):
                raise ValueError("ESP without integrity protection is refused")
        if self.integrity not in (None, IntegId.NONE):
            want = INTEGRITY[self.integrity].key_len
            if len(self.integrity_key) != want:
                raise ValueError(f"integrity key must be {want} octets")

    @property
    def is_inbound(self) -> bool:
        return self.direction is Direction.INBOUND


@dataclass(frozen=True, slots=True)
class LifetimeExpired:
    """A soft (rekey now) or hard (SA is dead) lifetime of an SA was reached."""

    spi: int
    direction: Direction
    hard: bool
    cause: str  # "seconds", "bytes", "packets" or "sequence"


SAEvent = LifetimeExpired

#: Sequence-number space per SA (RFC 4303 2.2: 32 bits, or 64 with ESN).
SEQ_MAX_32 = 0xFFFFFFFF
SEQ_MAX_64 = 0xFFFFFFFFFFFFFFFF


class SAStats:
    """Counters of one SA: packets and bytes carried, drops by reason."""

    __slots__ = ("bytes", "drops", "packets")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.drops: dict[DropReason, int] = {}

    def drop(self, reason: DropReason) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "drops": {r.value: n for r, n in sorted(self.drops.items(), key=lambda i: i[0].value)},
        }


class SecurityAssociation:
    """The protocol-independent part of an SA: counters, sequence numbers, lifetimes.

    Outbound: :meth:`next_seq` hands out sequence numbers and refuses to cycle; a soft
    "sequence" event fires when 1/16 of the space is left (rekey well before the end).
    Both directions: byte and packet lifetimes are compared on every packet against one
    precomputed threshold, time lifetimes in :meth:`handle_timer`.
    """

    def __init__(self, config: SAConfig, now: float) -> None:
        self.config = config
        self.spi = config.spi
        self.created = now
        self.stats = SAStats()
        self.expired = False  # hard lifetime reached: every packet is now dropped
        self._events: list[SAEvent] = []
        # Told when an event is queued: a data path sends lifetime events at once, not at
        # its next periodic collection (a soft byte limit is only a margin ahead of the hard
        # one, which a fast flow can cross in milliseconds).
        self.on_event: Callable[[], None] | None = None
        self._fired: set[tuple[bool, str]] = set()
        self.seq = 0  # outbound: last sequence number used
        self.seq_max = SEQ_MAX_64 if config.esn else SEQ_MAX_32
        self._seq_soft = self.seq_max - (self.seq_max + 1) // 16
        self._byte_mark = 0
        self._packet_mark = 0
        self._seq_mark = 0
        self._rearm()

    # -- lifetimes ---------------------------------------------------------------

    def _rearm(self) -> None:
        """Recompute the next byte/packet/sequence threshold at which to look closer."""
        cfg = self.config
        inf = 1 << 70
        byte_marks = [
            limit
            for hard, limit in ((False, cfg.soft.bytes), (True, cfg.hard.bytes))
            if limit is not None and (hard, "bytes") not in self._fired
        ]
        packet_marks = [
            limit
            for hard, limit in ((False, cfg.soft.packets), (True, cfg.hard.packets))
            if limit is not None and (hard, "packets") not in self._fired
        ]
        self._byte_mark = min(byte_marks, default=inf)
        self._packet_mark = min(packet_marks, default=inf)
        seq_marks = [self.seq_max]
        if (False, "sequence") not in self._fired:
            seq_marks.append(self._seq_soft)
        self._seq_mark = min(seq_marks)

    def _fire(self, hard: bool, cause: str) -> None:
        if (hard, cause) in self._fired:
            return
        self._fired.add((hard, cause))
        self._events.append(LifetimeExpired(self.spi, self.config.direction, hard, cause))
        if hard:
            self.expired = True
        if self.on_event is not None:
            self.on_event()

    def _account_slow(self) -> None:
        """Called when a byte or packet counter passed its mark."""
        cfg = self.config
        st = self.stats
        for hard, limit in ((False, cfg.soft.bytes), (True, cfg.hard.bytes)):
            if limit is not None and st.bytes >= limit:
                self._fire(hard, "bytes")
        for hard, limit in ((False, cfg.soft.packets), (True, cfg.hard.packets)):
            if limit is not None and st.packets >= limit:
                self._fire(hard, "packets")
        self._rearm()

    def _account(self, length: int) -> None:
        """Count one packet of ``length`` octets; look closer only past a threshold."""
        st = self.stats
        st.packets += 1
        st.bytes += length
        if st.bytes >= self._byte_mark or st.packets >= self._packet_mark:
            self._account_slow()

    def next_seq(self) -> int:
        """The next outbound sequence number; never cycles (RFC 4303 3.3.3)."""
        seq = self.seq + 1
        if seq >= self._seq_mark:
            if seq > self.seq_max:
                self._fire(True, "sequence")
                raise SequenceExhausted("sequence number space used up: the SA must be rekeyed")
            self._fire(False, "sequence")
            self._rearm()
        self.seq = seq
        return seq

    def check_alive(self) -> None:
        if self.expired:
            raise Expired("SA reached its hard lifetime")

    def handle_timer(self, now: float) -> None:
        """Check the time lifetimes (RFC 4301 4.4.2.1) at ``now``."""
        age = now - self.created
        if self.config.soft.seconds is not None and age >= self.config.soft.seconds:
            self._fire(False, "seconds")
        if self.config.hard.seconds is not None and age >= self.config.hard.seconds:
            self._fire(True, "seconds")

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` has something to do next (absolute time), or None."""
        times = [
            self.created + limit
            for hard, limit in ((False, self.config.soft.seconds), (True, self.config.hard.seconds))
            if limit is not None and (hard, "seconds") not in self._fired
        ]
        return min(times, default=None)

    def poll_events(self) -> list[SAEvent]:
        events, self._events = self._events, []
        return events

    def describe(self) -> str:
        cfg = self.config
        parts = [cfg.protocol.name, f"SPI 0x{cfg.spi:08x}", cfg.direction.value, cfg.mode.value]
        if cfg.encryption is not None:
            parts.append(ENCRYPTION[cfg.encryption.id].name)
        if cfg.integrity not in (None, IntegId.NONE):
            parts.append(INTEGRITY[cfg.integrity].name)
        if cfg.encapsulation:
            parts.append("udp-encap")
        return " ".join(parts)
