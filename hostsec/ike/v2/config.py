"""What an IKEv2 SA is configured with: the peer, its authentication and its CHILD SAs.

The agent builds these from the policy files; the state machine never reads files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hostsec.crypto.certs import Credentials, Identity, TrustStore
from hostsec.crypto.proposals import Mode, Proposal, Protocol
from hostsec.wire.selectors import TrafficSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, repr=False)
class PskAuth:
    """Authentication with a pre-shared key (RFC 7296 2.15, method 2)."""

    secret: bytes

    def __repr__(self) -> str:
        return "PskAuth(<secret>)"


@dataclass(frozen=True)
class CertAuth:
    """Authentication with our certificate and the peer's, checked against ``trust``."""

    credentials: Credentials
    trust: TrustStore
    rsa_pss: bool = False


@dataclass(frozen=True)
class Retransmit:
    """Retransmission of requests (RFC 7296 2.1): ``timeout * base**n`` after the n-th send,
    ``tries`` retransmissions, then the exchange (and the IKE SA) has failed. strongSwan's
    defaults: 4 s, 1.8, 5 tries (about 165 s in all)."""

    timeout: float = 4.0
    base: float = 1.8
    tries: int = 5

    def delays(self) -> list[float]:
        return [self.timeout * self.base**n for n in range(self.tries + 1)]

    @property
    def budget(self) -> float:
        return sum(self.delays())


@dataclass(frozen=True)
class Lifetimes:
    """When to rekey (soft, with up to ``jitter`` seconds taken off at random so that both
    ends do not rekey at once) and when the SA dies without a rekey (hard). Volume limits
    come from the data path: its SAs report their sequence space running out (and any
    byte/packet lifetimes set on them) as LifetimeExpired, which the agent turns into a
    rekey or a delete."""

    rekey: float
    hard: float
    jitter: float = 0.0

    @classmethod
    def from_lifetime(cls, lifetime: float) -> Lifetimes:
        """A lifetime as policies state it (hard); rekey at 90%, jitter 5% (strongSwan-like)."""
        return cls(rekey=lifetime * 0.9, hard=lifetime, jitter=lifetime * 0.05)


@dataclass(frozen=True)
class ChildConfig:
    """One flow as a CHILD SA: what it protects and how."""

    name: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    proposals: tuple[Proposal, ...]
    protocol: Protocol = Protocol.ESP
    mode: Mode = Mode.TRANSPORT
    lifetimes: Lifetimes = field(default_factory=lambda: Lifetimes.from_lifetime(3600.0))
    replay_window: int = 64

    def __post_init__(self) -> None:
        if self.protocol not in (Protocol.ESP, Protocol.AH):
            raise ValueError("a CHILD SA is ESP or AH")
        if not self.proposals or any(p.protocol is not self.protocol for p in self.proposals):
            raise ValueError(f"CHILD SA {self.name}: proposals must be {self.protocol.name}")
        if not self.local_ts or not self.remote_ts:
            raise ValueError(f"CHILD SA {self.name}: needs local and remote traffic selectors")

    @property
    def pfs(self) -> bool:
        return any(p.dh for p in self.proposals)


@dataclass(frozen=True)
class IkeConfig:
    """One peer."""

    name: str
    remote: IPAddress
    proposals: tuple[Proposal, ...]
    local_id: Identity
    auth: PskAuth | CertAuth
    remote_id: Identity | None = None
    local: IPAddress | None = None
    children: tuple[ChildConfig, ...] = ()
    lifetimes: Lifetimes = field(default_factory=lambda: Lifetimes.from_lifetime(86400.0))
    dpd: float | None = 30.0
    encapsulation: str = "auto"  # "auto" | "force" | "off"
    fragmentation: bool = True
    fragment_size: int = 1280  # largest IKE datagram before RFC 7383 fragmentation
    retransmit: Retransmit = field(default_factory=Retransmit)
    keepalive: float = 20.0  # NAT keepalive interval when this host is behind a NAT
    initial_contact: bool = True

    def __post_init__(self) -> None:
        if not self.proposals or any(p.protocol is not Protocol.IKE for p in self.proposals):
            raise ValueError(f"peer {self.name}: IKE proposals needed")
        if self.encapsulation not in ("auto", "force", "off"):
            raise ValueError("encapsulation is auto, force or off")

    def child(self, name: str) -> ChildConfig:
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(name)
