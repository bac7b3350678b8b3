"""The data plane as two sans-I/O objects: outbound (TUN -> wire) and inbound (wire -> TUN).

The agent's data-path workers own the sockets and the TUN device and call these objects
per packet; everything that decides what happens to a packet lives here, so it can be
tested without root.

Outbound (RFC 4301 5.1): SPD lookup -> the flow's current SA or bundle -> protect. A
packet of a flow without an SA is held in a small bounded queue and an :class:`Acquire`
event asks the keying side for an SA (a "trap", like an access list on a router); when an
SA is installed the held packets go out first. Packets matching no flow are dropped.

Inbound (RFC 4301 5.2): SAD lookup by SPI -> unprotect (replay, ICV, decrypt, selectors)
-> the inner packet for the TUN device. On the NAT-T port, IKE and keepalives are told
apart from ESP (RFC 3948 2).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.ah import AhSA
from hostsec.ipsec.bundle import Bundle
from hostsec.ipsec.errors import DropReason, PacketDropped
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import SAConfig, SAEvent
from hostsec.ipsec.sad import SAD, create_sa
from hostsec.ipsec.selectors import Selectors
from hostsec.ipsec.spd import SPD
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.udpencap import Datagram, classify


class Transmit(enum.IntEnum):
    """How a protected packet leaves the host."""

    IP = 1  # a complete IP packet (ESP, AH, bundles): a raw socket with the header included
    UDP = 2  # ESP without IP/UDP headers: the NAT-T UDP socket adds them


#: (how, destination address, destination port or 0, bytes)
Output = tuple[Transmit, bytes, int, bytes]


@dataclass(frozen=True, slots=True)
class Acquire:
    """A flow has traffic but no SA (RFC 4301 5.1 step 3a "trap")."""

    flow: str


DataplaneEvent = Acquire | SAEvent


@dataclass
class _Carrier:
    """What carries one flow outbound: its SA or bundle and how to send its packets."""

    sa: EspSA | AhSA | Bundle
    how: Transmit
    dst: bytes
    port: int

    def send(self, packet: bytes) -> Output:
        sa = self.sa
        if self.how is Transmit.IP:
            return (Transmit.IP, self.dst, 0, sa.protect(packet))
        assert isinstance(sa, EspSA)
        return (self.how, self.dst, self.port, sa.encapsulate(packet))

    def spis(self) -> list[int]:
        if isinstance(self.sa, Bundle):
            return [self.sa.esp.spi, self.sa.ah.spi]
        return [self.sa.spi]

    def sas(self) -> list[EspSA | AhSA]:
        if isinstance(self.sa, Bundle):
            return [self.sa.esp, self.sa.ah]
        return [self.sa]


def build_sa_or_bundle(configs: list[SAConfig], now: float) -> EspSA | AhSA | Bundle:
    """One SA, or an ESP+AH bundle from two configs of the same direction."""
    sas = [create_sa(c, now) for c in configs]
    if len(sas) == 1:
        return sas[0]
    esp = [s for s in sas if isinstance(s, EspSA)]
    ah = [s for s in sas if isinstance(s, AhSA)]
    if len(sas) != 2 or len(esp) != 1 or len(ah) != 1:
        raise ValueError("a bundle is one ESP SA and one AH SA")
    return Bundle(esp[0], ah[0])


@dataclass
class _Flow:
    name: str
    selectors: Selectors
    hold_limit: int
    carrier: _Carrier | None = None
    held: deque[bytes] = field(default_factory=deque)
    acquiring: bool = False
    packets: int = 0
    bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)


class Outbound:
    """TUN -> wire. One instance per outbound data-path worker."""

    def __init__(self) -> None:
        self.spd = SPD()
        self._flows: dict[str, _Flow] = {}
        self._events: list[DataplaneEvent] = []
        self.drops: dict[str, int] = {}

    # -- configuration ------------------------------------------------------------------

    def add_flow(self, name: str, selectors: Selectors, hold_limit: int = 16) -> None:
        self.spd.add(name, selectors)
        self._flows[name] = _Flow(name, selectors, hold_limit)

    def remove_flow(self, name: str) -> None:
        self.spd.remove(name)
        self._flows.pop(name, None)

    def install(self, flow: str, configs: list[SAConfig], now: float) -> list[Output]:
        """Make ``configs`` (one SA, or ESP+AH) the flow's outbound SA; returns the held
        packets, now protected, to send first."""
        entry = self._flows[flow]
        sa = build_sa_or_bundle(configs, now)
        first = configs[0]
        if isinstance(sa, EspSA) and first.encapsulation is not None:
            how, port = Transmit.UDP, first.encapsulation.dst_port
        else:
            how, port = Transmit.IP, 0
        entry.carrier = _Carrier(sa, how, first.dst.packed, port)
        entry.acquiring = False
        out: list[Output] = []
        while entry.held:
            result = self._send(entry, entry.held.popleft())
            if result is not None:
                out.append(result)
        return out

    def uninstall(self, flow: str, spi: int | None = None) -> None:
        """Remove the flow's outbound SA (only if it is ``spi``, when given)."""
        entry = self._flows.get(flow)
        if entry is None or entry.carrier is None:
            return
        if spi is None or spi in entry.carrier.spis():
            entry.carrier = None

    # -- packets ------------------------------------------------------------------------

    def process(self, packet: bytes) -> Output | None:
        """Protect one packet read from the TUN device; None if it was held or dropped."""
        name = self.spd.lookup(packet)
        if name is None:
            self._drop("no_policy")
            return None
        entry = self._flows[name]
        if entry.carrier is None:
            if len(entry.held) >= entry.hold_limit:
                entry.drops["hold_queue_full"] = entry.drops.get("hold_queue_full", 0) + 1
            else:
                entry.held.append(packet)
            if not entry.acquiring:
                entry.acquiring = True
                self._events.append(Acquire(name))
            return None
        return self._send(entry, packet)

    def _send(self, entry: _Flow, packet: bytes) -> Output | None:
        carrier = entry.carrier
        assert carrier is not None
        try:
            out = carrier.send(packet)
        except PacketDropped as exc:
            reason = exc.reason.value
            entry.drops[reason] = entry.drops.get(reason, 0) + 1
            if exc.reason in (DropReason.EXPIRED, DropReason.SEQUENCE_EXHAUSTED):
                for sa in carrier.sas():
                    self._events.extend(sa.poll_events())
            return None
        entry.packets += 1
        entry.bytes += len(packet)
        return out

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def take_acquires(self) -> list[DataplaneEvent]:
        """Only the events raised by packets (acquires, expiry): cheap, for every batch."""
        events, self._events = self._events, []
        return events

    def poll_events(self) -> list[DataplaneEvent]:
        events, self._events = self._events, []
        for entry in self._flows.values():
            if entry.carrier is not None:
                for sa in entry.carrier.sas():
                    events.extend(sa.poll_events())
        return events

    def sas(self) -> list[EspSA | AhSA]:
        return [sa for f in self._flows.values() if f.carrier for sa in f.carrier.sas()]

    def flow_stats(self) -> dict[str, dict[str, object]]:
        return {
            f.name: {
                "packets": f.packets,
                "bytes": f.bytes,
                "held": len(f.held),
                "drops": dict(f.drops),
                "sa": f.carrier.spis() if f.carrier else [],
            }
            for f in self._flows.values()
        }


class Inbound:
    """Wire -> TUN. One instance per inbound data-path worker."""

    def __init__(self) -> None:
        self.sad = SAD()
        self.keepalives = 0

    def install(self, configs: list[SAConfig], now: float) -> None:
        self.sad.add(build_sa_or_bundle(configs, now))

    def remove(self, protocol: Protocol, spi: int) -> None:
        self.sad.remove(protocol, spi)

    def process_ip(self, packet: bytes) -> bytes | None:
        """A packet from a raw ESP/AH socket (with its IP header): the inner packet or None."""
        try:
            return self.sad.unprotect(packet)
        except PacketDropped:
            return None  # counted by the SA (or by the SAD for an unknown SPI)

    def process_esp(self, esp: bytes, src: bytes, dst: bytes) -> bytes | None:
        """ESP without its IP header (raw IPv6 socket): the inner packet or None."""
        try:
            return self.sad.decapsulate(esp, src, dst)
        except PacketDropped:
            return None

    def process_udp(self, payload: bytes, src: bytes, dst: bytes) -> tuple[Datagram, bytes | None]:
        """A datagram from the NAT-T port: (what it was, the inner packet if it was ESP)."""
        try:
            kind = classify(payload)
        except MalformedPacket:
            self.sad.drops[DropReason.MALFORMED] = self.sad.drops.get(DropReason.MALFORMED, 0) + 1
            return Datagram.ESP, None
        if kind is Datagram.ESP:
            return kind, self.process_esp(payload, src, dst)
        if kind is Datagram.KEEPALIVE:
            self.keepalives += 1
        return kind, None

    def sas(self) -> list[EspSA | AhSA]:
        return [sa for e in self.sad.entries() for sa in _members(e)]

    def poll_events(self) -> list[SAEvent]:
        return [ev for sa in self.sas() for ev in sa.poll_events()]


def _members(entry: EspSA | AhSA | Bundle) -> list[EspSA | AhSA]:
    return [entry.esp, entry.ah] if isinstance(entry, Bundle) else [entry]
