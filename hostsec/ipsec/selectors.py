"""Traffic selectors (RFC 4301 4.4.1, in the range form of RFC 7296 3.13.1).

A selector is a protocol (0 for any), an address range and a port range. An SA carries
the selectors it was negotiated for; every packet it carries must match them (RFC 4301
5.2 step 4 for inbound: the inner packet must match the SA's selectors).

For ICMP and ICMPv6 the 16-bit "port" of a packet is ``type << 8 | code`` (RFC 7296
3.13.1) and is matched against the selector of the packet's source side.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ip import IPPROTO_ICMP, IPPROTO_ICMPV6, FlowKey, flow_key

_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def _icmp_port(key: FlowKey) -> int | None:
    if key.src_port is None or key.dst_port is None:
        return None
    return key.src_port << 8 | key.dst_port


@dataclass(frozen=True, slots=True)
class Selectors:
    """The selectors of an SA: packets between ``local`` and ``remote`` (RFC 7296: TSi/TSr)."""

    local: tuple[TrafficSelector, ...]
    remote: tuple[TrafficSelector, ...]

    def match(self, packet: bytes, inbound: bool) -> bool:
        """Does ``packet`` belong to this SA? Inbound: source remote, destination local."""
        try:
            key = flow_key(packet)
        except MalformedPacket:
            return False
        return self.match_key(key, inbound)

    def match_key(self, key: FlowKey, inbound: bool) -> bool:
        src_side, dst_side = (self.remote, self.local) if inbound else (self.local, self.remote)
        if key.protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            src_port, dst_port = _icmp_port(key), None
            return any(ts.contains(key.src, key.protocol, src_port) for ts in src_side) and any(
                ts.contains(key.dst, key.protocol, dst_port)
                or (ts.protocol in (0, key.protocol) and _addr_in(ts, key.dst))
                for ts in dst_side
            )
        return any(ts.contains(key.src, key.protocol, key.src_port) for ts in src_side) and any(
            ts.contains(key.dst, key.protocol, key.dst_port) for ts in dst_side
        )

    def __str__(self) -> str:
        local = ", ".join(str(ts) for ts in self.local)
        remote = ", ".join(str(ts) for ts in self.remote)
        return f"{local} === {remote}"


def _addr_in(ts: TrafficSelector, addr: bytes) -> bool:
    return len(addr) == len(ts.start_addr) and ts.start_addr <= addr <= ts.end_addr
