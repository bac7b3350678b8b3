"""Traffic selectors as values (RFC 4301 4.4.1 in the range form of RFC 7296 3.13.1).

A selector is a protocol (0 for any), an address range and a port range. IKE carries them
in TS payloads; the data path matches packets against them (hostsec.ipsec.selectors).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """Protocol, address range and port range; addresses as packed bytes (4 or 16 octets)."""

    start_addr: bytes
    end_addr: bytes
    protocol: int = 0
    start_port: int = 0
    end_port: int = 0xFFFF

    def __post_init__(self) -> None:
        if len(self.start_addr) not in (4, 16) or len(self.start_addr) != len(self.end_addr):
            raise ValueError("selector addresses must both be IPv4 or both IPv6")
        if self.start_addr > self.end_addr:
            raise ValueError("selector address range is empty")
        if not (0 <= self.start_port <= self.end_port <= 0xFFFF):
            raise ValueError("selector port range is invalid")
        if not 0 <= self.protocol <= 255:
            raise ValueError("selector protocol must be 0-255")

    @classmethod
    def from_network(
        cls, network: str, protocol: int = 0, ports: tuple[int, int] | int | None = None
    ) -> TrafficSelector:
        """``TrafficSelector.from_network("198.51.100.1/32", 6, 23)``."""
        net = ipaddress.ip_network(network, strict=False)
        if ports is None:
            lo, hi = 0, 0xFFFF
        elif isinstance(ports, int):
            lo = hi = ports
        else:
            lo, hi = ports
        return cls(net.network_address.packed, net.broadcast_address.packed, protocol, lo, hi)

    @property
    def version(self) -> int:
        return 4 if len(self.start_addr) == 4 else 6

    @property
    def any_port(self) -> bool:
        return self.start_port == 0 and self.end_port == 0xFFFF

    def contains(self, addr: bytes, protocol: int, port: int | None) -> bool:
        if self.protocol and self.protocol != protocol:
            return False
        if len(addr) != len(self.start_addr) or not self.start_addr <= addr <= self.end_addr:
            return False
        if port is None:
            # Non-first fragments and port-less protocols only match "any port"
            # (RFC 4301 4.4.1.3 OPAQUE handling is not offered).
            return self.any_port
        return self.start_port <= port <= self.end_port

    def __str__(self) -> str:
        start = ipaddress.ip_address(self.start_addr)
        end = ipaddress.ip_address(self.end_addr)
        nets = list(ipaddress.summarize_address_range(start, end))
        addr = str(nets[0]) if len(nets) == 1 else f"{start}-{end}"
        if not self.protocol:
            return addr if self.any_port else f"{addr}[any/{self._ports()}]"
        proto = _PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        return f"{addr}[{proto}]" if self.any_port else f"{addr}[{proto}/{self._ports()}]"

    def _ports(self) -> str:
        if self.start_port == self.end_port:
            return str(self.start_port)
        return f"{self.start_port}-{self.end_port}"
