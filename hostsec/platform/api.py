"""The OS layer's interfaces: what the agent's data path asks of an operating system.

A backend (``hostsec.platform.linux`` today, a BSD one later) fills these protocols.
They carry no business logic: the agent decides which flows exist and which SA protects
them; the platform only steers packets into the TUN device, drops plaintext that should
have been protected, and moves IP packets between the TUN device and the wire.

A flow, as the platform sees it (:class:`FlowMatch`), is "the packets between this host
and ``remote`` of ``protocol`` with these ports", seen from this host: outbound packets
go to ``remote`` with destination port in ``remote_ports`` and source port in
``local_ports``; inbound packets are the mirror image. Routing rules send the outbound
ones into the TUN; the firewall drops inbound ones that do not come out of the TUN.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Protocols that carry 16-bit ports in the first four octets of their header.
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # TCP, UDP, DCCP, SCTP, UDP-Lite

_FLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,99}$")


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive range of ports (``PortRange(23)`` is port 23 alone)."""

    first: int
    last: int = -1

    def __post_init__(self) -> None:
        if self.last == -1:
            object.__setattr__(self, "last", self.first)
        if not 0 <= self.first <= self.last <= 0xFFFF:
            raise ValueError(f"bad port range {self.first}-{self.last}")

    @property
    def is_any(self) -> bool:
        return self.first == 0 and self.last == 0xFFFF

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass(frozen=True, slots=True)
class FlowMatch:
    """The packets of one protected flow, from this host's point of view.

    ``name`` identifies the flow (letters, digits and ``_.:@/+-``; it appears in rule
    comments). ``protocol`` 0 means every protocol; port ranges are only allowed with a
    protocol that has ports; ``None`` means any port.
    """

    name: str
    remote: IPNetwork  # the peer's address (/32, /128) or the remote subnet (tunnel mode)
    protocol: int = 0
    local_ports: PortRange | None = None
    remote_ports: PortRange | None = None
    local: IPNetwork | None = None  # this host's side; None: any local address

    def __post_init__(self) -> None:
        if not _FLOW_NAME.match(self.name):
            raise ValueError(f"flow name {self.name!r}: letters, digits, _.:@/+- only")
        if not 0 <= self.protocol <= 255:
            raise ValueError("protocol must be 0 (any) to 255")
        ports = [p for p in (self.local_ports, self.remote_ports) if p is not None]
        if ports and self.protocol not in PORT_PROTOCOLS:
            raise ValueError(f"flow {self.name}: ports need TCP, UDP, SCTP, DCCP or UDP-Lite")
        if self.local is not None and self.local.version != self.remote.version:
            raise ValueError(f"flow {self.name}: local and remote of different IP versions")

    @property
    def version(self) -> int:
        return self.remote.version

    @classmethod
    def to_host(
        cls,
        name: str,
        peer: str | IPAddress,
        protocol: int = 0,
        local_port: int | None = None,
        remote_port: int | None = None,
    ) -> FlowMatch:
        """A host-to-host flow, e.g. telnet to a peer:
        ``FlowMatch.to_host("telnet", "198.51.100.2", 6, remote_port=23)``."""
        addr = ipaddress.ip_address(peer)
        return cls(
            name,
            ipaddress.ip_network(addr),
            protocol,
            None if local_port is None else PortRange(local_port),
            None if remote_port is None else PortRange(remote_port),
        )


class TunDevice(Protocol):
    """A layer-3 TUN device: one IP packet per read and per write, no extra header."""

    @property
    def name(self) -> str: ...

    @property
    def mtu(self) -> int: ...

    def fileno(self) -> int: ...

    def read(self, size: int = 65535) -> bytes:
        """One packet (blocking unless the device was opened non-blocking)."""
        ...

    def write(self, packet: bytes) -> int:
        """Hand one IP packet to the kernel, as if it had arrived on the device."""
        ...

    def close(self) -> None: ...


class FlowRouter(Protocol):
    """Steers each flow's outbound packets into the TUN device, fail closed.

    Make-before-break across restarts: :meth:`start` finds what a previous run left
    (which keeps its flows dropped, never in the clear), the agent adds its flows, then
    :meth:`drop_leftovers` removes the rest.
    """

    def start(self) -> None: ...

    def add_flow(
        self, flow: FlowMatch, source: IPAddress, mtu: int | None = None, verify: bool = True
    ) -> int:
        """Route ``flow`` into the TUN with ``source`` as the packets' source address
        (and a path MTU of ``mtu``); the routing table (or the backend's equivalent).
        ``verify``: read what the OS installed back at once; else :meth:`verify` later."""
        ...

    def verify(self, names: list[str]) -> dict[str, str]:
        """What the OS holds for these flows, compared with them: mismatches by name."""
        ...

    def remove_flow(self, name: str) -> None: ...

    def remove_flows(self, names: list[str]) -> None: ...

    def attach(self) -> None:
        """(Re)install the TUN routes of every flow: after the TUN device (re)appears."""
        ...

    def drop_leftovers(self) -> None: ...

    def stop(self) -> None:
        """Remove everything this router installed (rules, routes): a clean stop."""
        ...


class Firewall(Protocol):
    """Drops inbound plaintext of protected flows that did not come out of the TUN."""

    def start(self) -> None: ...

    def add_flow(self, flow: FlowMatch) -> None: ...

    def add_flows(self, flows: list[FlowMatch]) -> None:
        """Several at once, all or none."""
        ...

    def remove_flows(self, names: list[str]) -> None: ...

    def remove_flow(self, name: str) -> None: ...

    def drop_leftovers(self) -> None: ...

    def dropped(self) -> dict[str, int]:
        """Packets dropped so far, per flow name."""
        ...

    def stop(self) -> None: ...
