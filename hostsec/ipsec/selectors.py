"""Traffic selectors (RFC 4301 4.4.1, in the range form of RFC 7296 3.13.1).

A selector is a protocol (0 for any), an address range and a port range. An SA carries
the selectors it was negotiated for; every packet it carries must match them (RFC 4301
5.2 step 4 for inbound: the inner packet must match the SA's selectors).

For ICMP and ICMPv6 the 16-bit "port" of a packet is ``type << 8 | code`` (RFC 7296
3.13.1) and is matched against the selector of the packet's source side.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ip import IPPROTO_ICMP, IPPROTO_ICMPV6, FlowKey, flow_key
from hostsec.wire.selectors import TrafficSelector

__all__ = ["Selectors", "TrafficSelector"]


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
