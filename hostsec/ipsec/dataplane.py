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

Batches: the workers move packets across the kernel boundary many at a time (a TUN
super-packet split into segments, a ``UDP_GRO`` read, a run of reads); the ``*_many``
methods take such a batch and handle each packet exactly as the one-packet method does
(same checks, same counters, a dropped packet is left out and the batch goes on), and
:func:`udp_runs` groups the UDP outputs of a batch for ``UDP_SEGMENT`` sends.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
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
from hostsec.wire.udpencap import NAT_KEEPALIVE, NON_ESP_MARKER, Datagram, classify


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
        self.events_due = False  # an SA queued a lifetime event: poll_events now

    def _event_due(self) -> None:
        self.events_due = True

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
        for member in entry.carrier.sas():
            member.on_event = self._event_due
        entry.acquiring = False
        out: list[Output] = []
        while entry.held:
            result = self._send(entry, entry.held.popleft())
            if result is not None:
                out.append(result)
        return out

    def move(self, spis: Iterable[int], dst: bytes, port: int) -> list[str]:
        """The peer's NAT mapping changed (RFC 7296 2.23, RFC 3948): every flow sending ESP
        in UDP on one of ``spis`` sends to ``dst``:``port`` from now on, on the same SA
        (its sequence numbers go on). Returns the flows moved."""
        wanted = set(spis)
        moved: list[str] = []
        for entry in self._flows.values():
            carrier = entry.carrier
            if carrier is None or carrier.how is not Transmit.UDP:
                continue
            if wanted.intersection(carrier.spis()):
                carrier.dst, carrier.port = dst, port
                moved.append(entry.name)
        return moved

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

    def process_many(self, packets: Iterable[bytes]) -> list[Output]:
        """:meth:`process` for each packet: the outputs, in order (held and dropped
        packets are left out, counted as by :meth:`process`)."""
        out: list[Output] = []
        append = out.append
        lookup = self.spd.lookup
        flows = self._flows
        name: str | None = None
        entry: _Flow | None = None
        carrier: _Carrier | None = None
        # the carrier of the last flow, unpacked: how, destination, port, protect call
        how, dst, port = Transmit.IP, b"", 0
        seal: Callable[[bytes], bytes] | None = None
        for packet in packets:
            found = lookup(packet)
            if found is None:
                self._drop("no_policy")
                continue
            if found != name or entry is None or entry.carrier is not carrier:
                name, entry = found, flows[found]
                carrier = entry.carrier
                if carrier is not None:
                    how, dst, port = carrier.how, carrier.dst, carrier.port
                    sa = carrier.sa
                    if how is Transmit.IP:
                        seal = sa.protect
                    else:  # ESP in UDP: only an ESP SA (install() made sure)
                        assert isinstance(sa, EspSA)
                        seal = sa.encapsulate
            if carrier is None:
                self.process(packet)  # held, and an acquire raised
                continue
            assert seal is not None
            try:
                data = seal(packet)
            except PacketDropped as exc:
                self._dropped(entry, carrier, exc)
                continue
            entry.packets += 1
            entry.bytes += len(packet)
            append((how, dst, port, data))
        return out

    def _dropped(self, entry: _Flow, carrier: _Carrier, exc: PacketDropped) -> None:
        reason = exc.reason.value
        entry.drops[reason] = entry.drops.get(reason, 0) + 1
        if exc.reason in (DropReason.EXPIRED, DropReason.SEQUENCE_EXHAUSTED):
            for sa in carrier.sas():
                self._events.extend(sa.poll_events())

    def _send(self, entry: _Flow, packet: bytes) -> Output | None:
        carrier = entry.carrier
        assert carrier is not None
        try:
            out = carrier.send(packet)
        except PacketDropped as exc:
            self._dropped(entry, carrier, exc)
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
        self.events_due = False
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
        self.events_due = False  # an SA queued a lifetime event: poll_events now

    def _event_due(self) -> None:
        self.events_due = True

    def install(self, configs: list[SAConfig], now: float) -> None:
        entry = build_sa_or_bundle(configs, now)
        for member in _members(entry):
            member.on_event = self._event_due
        self.sad.add(entry)

    def remove(self, protocol: Protocol, spi: int) -> None:
        self.sad.remove(protocol, spi)

    def process_ip(self, packet: bytes) -> bytes | None:
        """A packet from a raw ESP/AH socket (with its IP header): the inner packet or None."""
        try:
            return self.sad.unprotect(packet)
        except PacketDropped:
            return None  # counted by the SA (or by the SAD for an unknown SPI)

    def process_esp(self, esp: bytes, src: bytes, dst: bytes, ttl: int = 64) -> bytes | None:
        """ESP without its IP header (raw IPv6 socket), from ``src`` to ``dst`` (packed)
        with hop limit ``ttl`` (what a transport-mode inner packet keeps): the inner packet
        or None."""
        try:
            return self.sad.decapsulate(esp, src, dst, ttl)
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

    def process_ip_many(self, packets: Iterable[bytes], inner: list[bytes]) -> None:
        """:meth:`process_ip` for each packet; the inner packets are appended to ``inner``."""
        unprotect = self.sad.unprotect
        append = inner.append
        for packet in packets:
            try:  # noqa: SIM105 (contextlib.suppress costs a context manager per packet)
                append(unprotect(packet))
            except PacketDropped:
                pass  # counted by the SA (or by the SAD for an unknown SPI)

    def process_udp_many(
        self, payloads: Iterable[bytes], src: bytes, dst: bytes, inner: list[bytes]
    ) -> list[bytes]:
        """:meth:`process_udp` for datagrams from one peer (as one ``UDP_GRO`` read gives
        them): ESP inner packets are appended to ``inner``; the IKE datagrams are returned."""
        ike: list[bytes] = []
        decapsulate = self.sad.decapsulate
        append = inner.append
        for payload in payloads:
            if len(payload) >= 8 and payload[:4] != NON_ESP_MARKER:  # ESP (RFC 3948 2.2)
                try:  # noqa: SIM105 (as above)
                    append(decapsulate(payload, src, dst))
                except PacketDropped:
                    pass  # counted by the SA (or by the SAD for an unknown SPI)
            elif payload[:4] == NON_ESP_MARKER:
                ike.append(payload)
            elif payload == NAT_KEEPALIVE:
                self.keepalives += 1
            else:
                self.sad.drops[DropReason.MALFORMED] = (
                    self.sad.drops.get(DropReason.MALFORMED, 0) + 1
                )
        return ike

    def sas(self) -> list[EspSA | AhSA]:
        return [sa for e in self.sad.entries() for sa in _members(e)]

    def poll_events(self) -> list[SAEvent]:
        self.events_due = False
        return [ev for sa in self.sas() for ev in sa.poll_events()]


def _members(entry: EspSA | AhSA | Bundle) -> list[EspSA | AhSA]:
    return [entry.esp, entry.ah] if isinstance(entry, Bundle) else [entry]


#: (destination address, port, segment size, buffers): one ``UDP_SEGMENT`` send
UdpRun = tuple[bytes, int, int, list[bytes]]


def udp_runs(outputs: Iterable[Output], max_segments: int, max_bytes: int) -> list[UdpRun]:
    """The UDP outputs grouped into runs for one send each: consecutive datagrams to the
    same destination and port, all of the first one's size but the last, which may be
    shorter; at most ``max_segments`` datagrams and ``max_bytes`` octets a run. Outputs
    that are not UDP are left out (the caller sends them one by one)."""
    runs: list[UdpRun] = []
    buffers: list[bytes] = []
    dst = b""
    port = size = total = 0
    for how, out_dst, out_port, data in outputs:
        if how is not Transmit.UDP:
            continue
        n = len(data)
        if (
            buffers
            and out_dst == dst
            and out_port == port
            and n <= size
            and len(buffers) < max_segments
            and total + n <= max_bytes
        ):
            buffers.append(data)
            total += n
            if n < size:  # a short one ends the run
                runs.append((dst, port, size, buffers))
                buffers = []
            continue
        if buffers:
            runs.append((dst, port, size, buffers))
        buffers, dst, port, size, total = [data], out_dst, out_port, n, n
    if buffers:
        runs.append((dst, port, size, buffers))
    return runs


def split_datagrams(data: bytes, size: int) -> list[bytes]:
    """The datagrams of a ``UDP_GRO`` read: ``data`` cut every ``size`` octets (the last
    may be shorter); ``size`` 0 (not coalesced) gives ``data`` whole."""
    if size <= 0 or len(data) <= size:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]
