"""Messages between the agent and its data-path workers (pickled over a socketpair)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.dataplane import DataplaneEvent
from hostsec.ipsec.sa import SAConfig
from hostsec.ipsec.selectors import Selectors

# agent -> outbound worker


@dataclass(frozen=True)
class AddFlow:
    flow: str
    selectors: Selectors
    hold_limit: int = 16


@dataclass(frozen=True)
class RemoveFlow:
    flow: str


@dataclass(frozen=True)
class InstallOutbound:
    """Make ``configs`` (one SA, or ESP and AH of a bundle) the flow's outbound SA."""

    flow: str
    configs: list[SAConfig]


@dataclass(frozen=True)
class UninstallOutbound:
    flow: str
    spi: int | None = None


@dataclass(frozen=True)
class MoveOutbound:
    """The peer's NAT mapping changed: the flows sending ESP in UDP on one of ``spis``
    send to ``dst`` (packed address), ``port`` from now on, on the same SAs."""

    spis: tuple[int, ...]
    dst: bytes
    port: int


# agent -> inbound worker


@dataclass(frozen=True)
class InstallInbound:
    configs: list[SAConfig]


@dataclass(frozen=True)
class RemoveInbound:
    protocol: Protocol
    spi: int


# agent -> either


@dataclass(frozen=True)
class StatsRequest:
    token: int


@dataclass(frozen=True)
class Stop:
    pass


# worker -> agent


@dataclass(frozen=True)
class Stats:
    token: int
    direction: str  # "out" or "in"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Events:
    events: list[DataplaneEvent]


@dataclass(frozen=True)
class IkeDatagram:
    """An IKE message that arrived on the NAT-T port (with its non-ESP marker)."""

    data: bytes
    src: str
    src_port: int
    dst: bytes


@dataclass(frozen=True)
class Error:
    message: str
