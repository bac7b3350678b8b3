"""What the IKEv2 state machine tells the agent, and what it asks it to send."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hostsec.crypto.proposals import Mode, Proposal, Protocol
from hostsec.wire.selectors import TrafficSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = tuple[IPAddress, int]


@dataclass(frozen=True)
class Transmit:
    """A UDP datagram to send: ``data`` is the whole UDP payload (with the non-ESP marker
    when it goes to or from port 4500)."""

    data: bytes
    local: Endpoint
    remote: Endpoint


@dataclass(frozen=True)
class NatKeepalive:
    """Send the one-octet NAT keepalive (RFC 3948 2.3) from ``local`` to ``remote``."""

    local: Endpoint
    remote: Endpoint


@dataclass(frozen=True, repr=False)
class ChildSAUp:
    """A CHILD SA pair is ready to be installed in the data path.

    Keys are raw KEYMAT slices (RFC 7296 2.17) for the inbound and the outbound SA. When
    ``replaces`` is set this pair is the rekey of the pair with that inbound SPI. Install
    the new inbound SA at once. Send on the new outbound SA at once if ``outbound``; if
    not (we answered the rekey: the peer installs its inbound SA only when our answer
    arrives, RFC 7296 2.8), keep sending on the old pair until its ChildSADown, whose
    ``replaced_by`` then names this pair. The old inbound SA stays a little longer after
    its ChildSADown, for packets in flight.
    """

    ike: str
    child: str
    protocol: Protocol
    mode: Mode
    proposal: Proposal
    spi_in: int
    spi_out: int
    encr_key_in: bytes
    integ_key_in: bytes
    encr_key_out: bytes
    integ_key_out: bytes
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    local: IPAddress
    remote: IPAddress
    encapsulation: tuple[int, int] | None  # (local port, remote port) for ESP in UDP
    nat_original: tuple[bytes, bytes] | None = None  # RFC 3948 3.1.2 checksum fix-up
    replaces: int | None = None
    soft_seconds: float | None = None
    hard_seconds: float | None = None
    replay_window: int = 64
    outbound: bool = True

    def __repr__(self) -> str:
        return (
            f"ChildSAUp({self.ike}/{self.child} {self.protocol.name} {self.mode.value} "
            f"in=0x{self.spi_in:08x} out=0x{self.spi_out:08x} {self.proposal})"
        )


@dataclass(frozen=True)
class ChildSADown:
    """A CHILD SA pair is gone. ``replaced_by`` is the inbound SPI of the pair that carries
    its flow on (after a rekey, or when a redundant pair of a rekey collision goes): if
    this pair was the one sent on, send on that one now."""

    ike: str
    child: str
    protocol: Protocol
    spi_in: int
    spi_out: int
    reason: str
    replaced_by: int | None = None


@dataclass(frozen=True)
class ChildSAFailed:
    """A CHILD SA could not be set up (the IKE SA itself may be fine)."""

    ike: str
    child: str
    reason: str


@dataclass(frozen=True)
class IkeSAUp:
    ike: str
    spi_i: bytes
    spi_r: bytes
    initiator: bool
    proposal: Proposal
    local_id: str
    remote_id: str
    local: Endpoint
    remote: Endpoint
    nat_local: bool = False
    nat_remote: bool = False
    rekeyed_from: tuple[bytes, bytes] | None = None


@dataclass(frozen=True)
class IkeSADown:
    ike: str
    spi_i: bytes
    spi_r: bytes
    reason: str


@dataclass(frozen=True)
class IkeEndpointChanged:
    """The peer, behind a NAT, now sends from ``new`` (its NAT's mapping changed): the IKE
    SA talks to it there from now on (RFC 7296 2.23); the ESP-in-UDP destination of the
    IKE SA's CHILD SAs moves with it (RFC 3948), their keys and counters unchanged."""

    ike: str
    spi_i: bytes
    spi_r: bytes
    old: Endpoint
    new: Endpoint


@dataclass(frozen=True)
class AuthenticationFailed:
    """Authentication failed, locally detected or reported by the peer."""

    ike: str
    reason: str
    remote: Endpoint | None = None


@dataclass(frozen=True)
class Log:
    """Something worth one log line (never a secret)."""

    ike: str
    message: str
    level: str = "info"
    extra: dict[str, object] = field(default_factory=dict)


Event = (
    ChildSAUp
    | ChildSADown
    | ChildSAFailed
    | IkeSAUp
    | IkeSADown
    | IkeEndpointChanged
    | AuthenticationFailed
    | Log
)
