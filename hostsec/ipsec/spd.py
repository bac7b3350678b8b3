"""The Security Policy Database, outbound side (RFC 4301 4.4.1).

Each protected flow is one SPD entry: its selectors (local and remote traffic selectors)
and an identifier that the data path maps to the SA (or bundle) currently carrying it.
Only packets that policy routing sent into the TUN device reach this lookup, so the SPD
holds PROTECT entries only; anything that matches none is dropped (counted as "no
policy"), never sent in the clear.

Lookup is a dictionary hit for the common case (one remote address, one protocol, one
port on either side; IPv4 without fragments, or IPv6 with TCP/UDP right after the
header) and a scan of the remaining entries otherwise, in insertion order
(more specific entries first is the caller's job, as in RFC 4301 4.4.1's ordered SPD).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ip import IPPROTO_ICMP, IPPROTO_ICMPV6, flow_key

_PORTS = struct.Struct("!HH")
_PORTED = frozenset({6, 17, 132, 136})


@dataclass(frozen=True, slots=True)
class SPDEntry:
    flow: str
    selectors: Selectors


def _single(ts: TrafficSelector) -> tuple[bytes, int, int | None] | None:
    """(address, protocol, port or None for any) if ``ts`` is one address with a fixed
    protocol and a single port (or any port); None if it needs the general matcher."""
    if ts.start_addr != ts.end_addr or ts.protocol == 0:
        return None
    if ts.protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        return None
    if ts.any_port:
        return ts.start_addr, ts.protocol, None
    if ts.start_port == ts.end_port:
        return ts.start_addr, ts.protocol, ts.start_port
    return None


class SPD:
    """Outbound policy lookup: packet -> flow identifier."""

    def __init__(self) -> None:
        self._entries: dict[str, SPDEntry] = {}
        # (remote address, protocol, remote port, local port); None = any port.
        self._exact: dict[tuple[bytes, int, int | None, int | None], str] = {}
        self._general: list[SPDEntry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, flow: str) -> bool:
        return flow in self._entries

    def add(self, flow: str, selectors: Selectors) -> None:
        if flow in self._entries:
            raise ValueError(f"flow {flow!r} is already in the SPD")
        entry = SPDEntry(flow, selectors)
        self._entries[flow] = entry
        keys = self._exact_keys(selectors)
        if keys is None or any(k in self._exact for k in keys):
            self._general.append(entry)
        else:
            for key in keys:
                self._exact[key] = flow

    def remove(self, flow: str) -> None:
        entry = self._entries.pop(flow, None)
        if entry is None:
            return
        self._exact = {k: f for k, f in self._exact.items() if f != flow}
        self._general = [e for e in self._general if e.flow != flow]

    @staticmethod
    def _exact_keys(
        selectors: Selectors,
    ) -> list[tuple[bytes, int, int | None, int | None]] | None:
        keys = []
        for local in selectors.local:
            for remote in selectors.remote:
                loc, rem = _single(local), _single(remote)
                if loc is None or rem is None or loc[1] != rem[1]:
                    return None
                keys.append((rem[0], rem[1], rem[2], loc[2]))
        return keys

    def lookup(self, packet: bytes) -> str | None:
        """The flow an outbound packet belongs to, or None."""
        exact = self._exact
        if not exact or len(packet) < 24:
            return self._lookup_general(packet)
        first = packet[0]
        if first == 0x45 and not (packet[6] & 0x3F or packet[7]):  # IPv4, not a fragment
            protocol, dst, ports_at = packet[9], packet[16:20], 20
        elif (
            first >> 4 == 6
            and packet[6] in _PORTED  # TCP/UDP right after the header, no extension
            and ((packet[4] << 8) | packet[5]) + 40 == len(packet)
            and len(packet) >= 44
        ):
            protocol, dst, ports_at = packet[6], packet[24:40], 40
        else:
            return self._lookup_general(packet)
        if protocol in _PORTED:
            sport, dport = _PORTS.unpack_from(packet, ports_at)
            flow = (
                exact.get((dst, protocol, dport, None))
                or exact.get((dst, protocol, None, sport))
                or exact.get((dst, protocol, dport, sport))
                or exact.get((dst, protocol, None, None))
            )
        else:
            flow = exact.get((dst, protocol, None, None))
        return flow if flow is not None else self._lookup_general(packet)

    def _lookup_general(self, packet: bytes) -> str | None:
        try:
            key = flow_key(packet)
        except MalformedPacket:
            return None
        exact = self._exact
        if exact:
            dport = key.dst_port if key.protocol in _PORTED else None
            sport = key.src_port if key.protocol in _PORTED else None
            for candidate in (
                (key.dst, key.protocol, dport, None),
                (key.dst, key.protocol, None, sport),
                (key.dst, key.protocol, dport, sport),
                (key.dst, key.protocol, None, None),
            ):
                flow = exact.get(candidate)
                if flow is not None:
                    return flow
        for entry in self._general:
            if entry.selectors.match_key(key, inbound=False):
                return entry.flow
        return None
