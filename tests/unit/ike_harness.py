"""Two IKEv2 agents wired through an in-memory link; time is a number the test advances.

The link can drop, hold (delay), duplicate and reorder datagrams, and it can put host A
behind a NAT that rewrites A's source address and port (and maps them back). Tests either
let it run until quiet (:meth:`Link.run`, :meth:`Link.advance`) or move one datagram at a
time (:meth:`Link.step`, :meth:`Link.take`, :meth:`Link.put`), the way strongSwan's
exchange tests do (``src/libcharon/tests/utils/exchange_test_helper.c``).

Nonces: set :attr:`Link.nonce_byte` to force the first octet of the nonces generated from
then on (strongSwan's ``nonce_first_byte``), to decide who wins a collision.

Each host also plays the agent: it follows the events (installs inbound SAs, keeps them a
few seconds after ChildSADown, sends each flow on the pair the events say) and, after
every datagram delivered, the link checks that what one end sends on the other accepts
(:meth:`Link.flows_continue`): a rekey or a collision never leaves a flow without an SA.
The invariant checks at the end (:func:`settle`, :func:`teardown`) say that no pair was
lost or duplicated and that the events are coherent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hostsec.crypto.certs import Identity
from hostsec.crypto.proposals import Mode, Protocol, parse_proposals
from hostsec.ike.v2.child import ChildSA
from hostsec.ike.v2.config import (
    ChildConfig,
    IkeConfig,
    Lifetimes,
    PskAuth,
    Retransmit,
)
from hostsec.ike.v2.events import (
    AuthenticationFailed,
    ChildSADown,
    ChildSAFailed,
    ChildSAUp,
    Endpoint,
    Event,
    IkeSADown,
    IkeSAUp,
    NatKeepalive,
    Transmit,
)
from hostsec.ike.v2.ikesa import IkeSA, IkeState
from hostsec.ike.v2.manager import IkeManager
from hostsec.ike.v2.protect import DecryptionFailed
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2 import (
    SKF,
    Delete,
    ExchangeType,
    Notify,
    NotifyType,
    PayloadType,
    parse_message,
    parse_payloads,
)
from hostsec.wire.selectors import TrafficSelector
from hostsec.wire.udpencap import NON_ESP_MARKER

IPv4 = ipaddress.IPv4Address
A_ADDR = IPv4("198.51.100.1")
B_ADDR = IPv4("198.51.100.2")
NAT_ADDR = IPv4("203.0.113.1")  # A's public address when it sits behind the NAT
PSK = b"correct horse battery staple 0123"
WALLCLOCK = datetime(2026, 11, 27, tzinfo=UTC)
RETRANSMIT = Retransmit(timeout=1.0, base=2.0, tries=3)  # 1 + 2 + 4 + 8 = 15 s budget


def child(
    name: str = "telnet",
    a_side: bool = True,
    mode: Mode = Mode.TRANSPORT,
    esp: str | list[str] = "aes128gcm16",
    protocol: Protocol = Protocol.ESP,
    lifetime: float = 3600.0,
    lifetimes: Lifetimes | None = None,
    local_ts: tuple[TrafficSelector, ...] | None = None,
    remote_ts: tuple[TrafficSelector, ...] | None = None,
    a_addr: IPv4 = A_ADDR,
    b_addr: IPv4 = B_ADDR,
) -> ChildConfig:
    """The telnet flow seen from A (client, remote port 23) or B (server, local port 23)."""
    a = TrafficSelector.from_network(f"{a_addr}/32", 6)
    b = TrafficSelector.from_network(f"{b_addr}/32", 6, 23)
    local, remote = ((a,), (b,)) if a_side else ((b,), (a,))
    proposals = [esp] if isinstance(esp, str) else esp
    return ChildConfig(
        name,
        local_ts if local_ts is not None else local,
        remote_ts if remote_ts is not None else remote,
        tuple(parse_proposals(proposals, protocol)),
        protocol=protocol,
        mode=mode,
        lifetimes=lifetimes or Lifetimes(rekey=lifetime * 0.9, hard=lifetime),
    )


def peer_config(
    a_side: bool,
    children: tuple[ChildConfig, ...] | None = None,
    ike: str | list[str] = "aes128gcm16-prfsha256-ecp256",
    psk: bytes = PSK,
    dpd: float | None = 30.0,
    lifetime: float = 86400.0,
    remote: IPv4 | None = None,
    local_id: str | None = None,
    remote_id: str | None = "default",
    **extra: Any,
) -> IkeConfig:
    """A's view of B (named "b") or B's view of A (named "a")."""
    local, peer = (A_ADDR, B_ADDR) if a_side else (B_ADDR, A_ADDR)
    name = "b" if a_side else "a"
    proposals = ike.split(",") if isinstance(ike, str) else ike
    if remote_id == "default":
        remote_id = "b.test" if a_side else "a.test"
    extra.setdefault("auth", PskAuth(psk))
    extra.setdefault("lifetimes", Lifetimes(rekey=lifetime * 0.9, hard=lifetime))
    extra.setdefault("retransmit", RETRANSMIT)
    return IkeConfig(
        name=name,
        remote=remote or peer,
        local=local,
        proposals=tuple(parse_proposals(proposals, Protocol.IKE)),
        local_id=Identity.from_string(local_id or ("a.test" if a_side else "b.test")),
        remote_id=Identity.from_string(remote_id) if remote_id else None,
        children=children if children is not None else (child(a_side=a_side),),
        dpd=dpd,
        **extra,
    )


@dataclass
class Packet:
    """A datagram on the wire, as its receiver will see it (after any NAT)."""

    to: str
    data: bytes
    src: Endpoint
    dst: Endpoint
    number: int = 0  # order of sending over the life of the link
    sent_at: float = 0.0
    summary: Summary | None = field(default=None, repr=False)  # as decrypted when sent

    @property
    def ike(self) -> bytes:
        return self.data[4:] if self.data[:4] == NON_ESP_MARKER else self.data


@dataclass
class Summary:
    """What an IKE datagram carries, decrypted with the receiver's keys when possible."""

    exchange: str
    response: bool
    message_id: int
    payloads: list[str]
    notifies: list[str]
    deletes: list[tuple[int, int]]  # (protocol, number of SPIs)
    fragment: tuple[int, int] | None = None
    objects: list[Any] = field(default_factory=list)  # the payloads themselves
    encrypted: bool = False
    decrypted: bool = False

    def has(self, notify: NotifyType) -> bool:
        return notify.name in self.notifies


@dataclass
class Nat:
    """A NAPT in front of A: A's (address, port) leave as (NAT_ADDR, mapped port)."""

    inside: IPv4 = A_ADDR
    public: IPv4 = NAT_ADDR
    next_port: int = 40000
    out: dict[Endpoint, Endpoint] = field(default_factory=dict)

    def outbound(self, src: Endpoint) -> Endpoint:
        if src not in self.out:
            self.next_port += 1
            self.out[src] = (self.public, self.next_port)
        return self.out[src]

    def inbound(self, dst: Endpoint) -> Endpoint | None:
        for inside, public in self.out.items():
            if public == dst:
                return inside
        return None  # no mapping: the NAT drops it

    def rebind(self) -> None:
        """The mappings time out: the next datagrams get new public ports."""
        self.out.clear()


AGENT_LINGER = 5.0  # seconds the agent keeps an inbound SA after its ChildSADown


@dataclass
class Host:
    name: str
    address: IPv4
    manager: IkeManager
    peer: str  # the name of its peer configuration
    events: list[Event] = field(default_factory=list)
    keepalives: int = 0
    # What an agent following the events does: the SA each flow sends on, whether that
    # choice came from a rekey (then the peer must already have the inbound SA), and until
    # when each inbound SA is accepted.
    outbound: dict[str, int | None] = field(default_factory=dict)
    from_rekey: dict[str, bool] = field(default_factory=dict)
    accepts: dict[int, float] = field(default_factory=dict)
    live: dict[int, ChildSAUp] = field(default_factory=dict)  # by the events seen

    def forget(self) -> None:
        """The agent restarts: no events, nothing installed."""
        self.events.clear()
        self.live.clear()
        self.outbound.clear()
        self.from_rekey.clear()
        self.accepts.clear()

    def follow(self, events: list[Event], now: float) -> None:
        for e in events:
            if isinstance(e, ChildSAUp):
                self.live[e.spi_in] = e
            elif isinstance(e, ChildSADown):
                self.live.pop(e.spi_in, None)
            if isinstance(e, ChildSAUp):
                self.accepts[e.spi_in] = float("inf")
                if e.outbound or self.outbound.get(e.child) is None:
                    self.outbound[e.child] = e.spi_out
                    self.from_rekey[e.child] = e.replaces is not None
            elif isinstance(e, ChildSADown):
                self.accepts[e.spi_in] = now + AGENT_LINGER
                if self.outbound.get(e.child) == e.spi_out:
                    after = self.live.get(e.replaced_by) if e.replaced_by is not None else None
                    if after is None:
                        # Another pair of the flow still up (a duplicate IKE SA's), as the
                        # agent does (Agent._child_down).
                        after = next(
                            (p for p in reversed(self.live.values()) if p.child == e.child), None
                        )
                    self.outbound[e.child] = after.spi_out if after else None
                    self.from_rekey[e.child] = True

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def children_up(self) -> list[ChildSAUp]:
        return self.of(ChildSAUp)

    def children_down(self) -> list[ChildSADown]:
        return self.of(ChildSADown)

    def child_failures(self) -> list[ChildSAFailed]:
        return self.of(ChildSAFailed)

    def auth_failures(self) -> list[AuthenticationFailed]:
        return self.of(AuthenticationFailed)

    def live_children(self) -> dict[int, ChildSAUp]:
        """Inbound SPI -> ChildSAUp of the pairs that are up, by the events seen."""
        return dict(self.live)

    def ike_up(self) -> list[IkeSAUp]:
        return self.of(IkeSAUp)

    def ike_down(self) -> list[IkeSADown]:
        return self.of(IkeSADown)

    def sa(self) -> IkeSA:
        """The IKE SA in use with the peer (fails if there is none)."""
        sa = self.manager.sa_for(self.peer)
        assert sa is not None, f"{self.name} has no IKE SA"
        return sa

    def sas(self) -> list[IkeSA]:
        return list(dict.fromkeys(self.manager.sas.values()))

    def child(self, spi_in: int | None = None) -> ChildSA:
        """A CHILD SA of the IKE SA in use (the only one when ``spi_in`` is None)."""
        children = self.sa().children
        if spi_in is None:
            assert len(children) == 1, f"{self.name} has {len(children)} CHILD SAs"
            return next(iter(children.values()))
        return children[spi_in]


class Link:
    """Delivers datagrams between two managers; filters may drop, hold or duplicate."""

    def __init__(
        self,
        a_config: IkeConfig | None = None,
        b_config: IkeConfig | None = None,
        seed: int = 1,
        nonce_first_byte: Callable[[str], int | None] | None = None,
        nat: bool = False,
        manager_options: dict[str, Any] | None = None,
        wallclock: datetime = WALLCLOCK,
    ) -> None:
        self.now = 1000.0
        self.counter = itertools.count(1)
        self.nonce_hook = nonce_first_byte
        self.nonce_byte: int | None = None
        self.nat = Nat() if nat else None
        if a_config is None:
            a_config = peer_config(True)
        if b_config is None:
            b_config = peer_config(False, remote=NAT_ADDR if nat else None)
        options = manager_options or {}
        self.a = Host("a", A_ADDR, self._manager("a", a_config, seed, wallclock, options), "b")
        self.b = Host("b", B_ADDR, self._manager("b", b_config, seed + 1, wallclock, options), "a")
        self.in_flight: list[Packet] = []
        self.held: list[Packet] = []
        self.sent: list[Packet] = []
        self.dropped: list[Packet] = []
        self.drop: Callable[[Packet], bool] = lambda _p: False
        self.hold: Callable[[Packet], bool] = lambda _p: False
        self.duplicate: Callable[[Packet], bool] = lambda _p: False
        self.delay: Callable[[Packet], float | None] = lambda _p: None
        self.check_flows = True
        self.later: list[tuple[float, Packet]] = []  # (due time, datagram) delayed

    def _manager(
        self, name: str, config: IkeConfig, seed: int, wallclock: datetime, options: dict[str, Any]
    ) -> IkeManager:
        def random_bytes(n: int) -> bytes:
            data = bytearray(os.urandom(n))
            if n == 32:  # nonces (and only nonces) are 32 octets here
                first = self.nonce_byte
                if self.nonce_hook is not None:
                    first = self.nonce_hook(name)
                if first is not None:
                    data[0] = first
            return bytes(data)

        return IkeManager(
            [config], random_bytes=random_bytes, wallclock=lambda: wallclock, seed=seed, **options
        )

    # ------------------------------------------------------------------ hosts

    def host(self, name: str) -> Host:
        return self.a if name == "a" else self.b

    def other(self, name: str) -> str:
        return "b" if name == "a" else "a"

    def hosts(self) -> tuple[Host, Host]:
        return self.a, self.b

    # ------------------------------------------------------------------ the wire

    def _route(self, sender: str, t: Transmit) -> Packet | None:
        src, dst = t.local, t.remote
        if self.nat is not None and sender == "a":
            src = self.nat.outbound(src)
        if self.nat is not None and dst[0] == self.nat.public:
            inside = self.nat.inbound(dst)
            if inside is None:
                return None
            dst = inside
        if dst[0] == B_ADDR:
            to = "b"
        elif dst[0] == A_ADDR:
            to = "a"
        else:
            return None
        return Packet(to, t.data, src, dst, next(self.counter), self.now)

    def lose_first(self, match: Callable[[Summary], bool], count: int = 1) -> list[Packet]:
        """Drop the first ``count`` datagrams whose summary matches; returns them (filled
        in as they are lost)."""
        lost: list[Packet] = []

        def drop(p: Packet) -> bool:
            if len(lost) < count and match(self.describe(p)):
                lost.append(p)
                return True
            return False

        self.drop = drop
        return lost

    def send(self, packet: Packet) -> None:
        """Put a datagram on the wire, through the filters."""
        self.sent.append(packet)
        with contextlib.suppress(MalformedPacket):
            packet.summary = self._summarise(packet)
        if self.drop(packet):
            self.dropped.append(packet)
            return
        if self.hold(packet):
            self.held.append(packet)
            return
        delay = self.delay(packet)
        if delay is not None:
            self.later.append((self.now + delay, packet))
            return
        self.in_flight.append(packet)
        if self.duplicate(packet):
            self.in_flight.append(Packet(packet.to, packet.data, packet.src, packet.dst, 0))

    def collect(self) -> None:
        for host in (self.a, self.b):
            out, events = host.manager.poll()
            host.events += events
            host.follow(events, self.now)
            for t in out:
                if isinstance(t, NatKeepalive):
                    host.keepalives += 1
                    if self.nat is not None and host.name == "a":
                        self.nat.outbound(t.local)  # keeps (or re-creates) the mapping
                    continue
                packet = self._route(host.name, t)
                if packet is not None:
                    self.send(packet)

    def deliver(self, packet: Packet) -> None:
        host = self.host(packet.to)
        host.manager.handle_datagram(packet.data, packet.src, packet.dst, self.now)
        self.collect()
        if self.check_flows:
            self.flows_continue()

    def flows_continue(self) -> None:
        """What each end sends on, the other end accepts; an end with a live pair for a
        flow sends on one (no black hole while pairs come and go)."""
        for x in self.hosts():
            y = self.host(self.other(x.name))
            live = x.live
            for flow, spi in x.outbound.items():
                pairs = [e for e in live.values() if e.child == flow]
                if spi is None:
                    assert not pairs, f"{x.name}: {flow} has pairs but sends on none"
                    continue
                assert any(e.spi_out == spi for e in pairs), f"{x.name}: sends on a dead SA"
                if self.from_rekey_checked(x, flow):
                    assert y.accepts.get(spi, -1.0) >= self.now, (
                        f"{x.name} sends {flow} on 0x{spi:08x}, which {y.name} does not accept"
                        "\n" + "\n".join(self.trace())
                    )

    def from_rekey_checked(self, x: Host, flow: str) -> bool:
        """A brand-new pair may be used by its responder before the initiator has its
        answer (nothing better exists); a pair switched to by a rekey may not."""
        return x.from_rekey.get(flow, False)

    def pending(self, to: str | None = None) -> list[Packet]:
        self.collect()
        return [p for p in self.in_flight if to is None or p.to == to]

    def take(self, to: str | None = None, index: int = 0) -> Packet:
        """Remove a datagram from the wire (to deliver it later, or never)."""
        packet = self.pending(to)[index]
        self.in_flight.remove(packet)
        return packet

    def put(self, packet: Packet) -> None:
        """Put a datagram taken earlier back at the end of the wire."""
        self.in_flight.append(packet)

    def step(self, to: str | None = None, index: int = 0) -> Packet:
        """Deliver the next datagram (to ``to``) and return it."""
        packet = self.take(to, index)
        self.deliver(packet)
        return packet

    def find(self, to: str, match: Callable[[Summary], bool]) -> int:
        """Index (for :meth:`step` and :meth:`take`) of the first pending datagram to
        ``to`` whose summary matches."""
        for i, p in enumerate(self.pending(to)):
            if match(self.describe(p)):
                return i
        raise AssertionError(f"nothing pending to {to} matches")

    def deliver_one(self) -> bool:
        self.collect()
        if not self.in_flight:
            return False
        self.deliver(self.in_flight.pop(0))
        return True

    def run(self, limit: int = 500) -> None:
        """Deliver until quiet."""
        for _ in range(limit):
            if not self.deliver_one():
                return
        raise AssertionError("the exchange does not settle")

    def release_held(self) -> None:
        self.in_flight += self.held
        self.held = []

    def advance(self, seconds: float) -> None:
        """Let time pass, firing timers when they are due and delivering what they send."""
        end = self.now + seconds
        self.run()
        spins = 0
        while True:
            due = [t for h in self.hosts() if (t := h.manager.next_timer()) is not None]
            due += [t for t, _ in self.later]
            nxt = min(due, default=end + 1)
            if nxt > end:
                break
            spins = spins + 1 if nxt <= self.now else 0
            assert spins < 50, f"a timer stays due at {self.now}"
            self.now = max(nxt, self.now)
            arrived = [p for t, p in self.later if t <= self.now]
            self.later = [(t, p) for t, p in self.later if t > self.now]
            self.in_flight += arrived
            for host in self.hosts():
                host.manager.handle_timer(self.now)
            self.run()
        self.now = end

    def establish(self, children: list[ChildConfig] | None = None) -> None:
        config = self.a.manager.configs["b"]
        kids = children if children is not None else list(config.children)
        self.a.manager.initiate("b", kids, self.now)
        self.run()

    # ------------------------------------------------------------------ looking inside

    def describe(self, packet: Packet) -> Summary:
        """Say what ``packet`` carries, decrypted with its receiver's keys (at the time it
        was sent: the SA may be gone since)."""
        summary = packet.summary
        if summary is None or (summary.encrypted and not summary.decrypted):
            summary = packet.summary = self._summarise(packet)
        return summary

    def _summarise(self, packet: Packet) -> Summary:
        msg = parse_message(packet.ike)
        h = msg.header
        try:
            exchange = ExchangeType(h.exchange_type).name
        except ValueError:
            exchange = str(h.exchange_type)
        payloads = list(msg.payloads)
        fragment = None
        enc = msg.encrypted
        decrypted = False
        if enc is not None:
            receiver = self.host(packet.to).manager
            sa = receiver.sas.get((h.spi_i, h.spi_r))
            payloads = payloads[:-1]
            if isinstance(enc, SKF):
                fragment = (enc.fragment_number, enc.total_fragments)
            if sa is not None and sa.protector is not None and fragment is None:
                try:
                    opened = sa.protector.open(packet.ike, enc)
                    payloads += list(parse_payloads(opened.first_payload_type, opened.octets))
                    decrypted = True
                except (DecryptionFailed, MalformedPacket):
                    pass
        names = [PayloadType(p.payload_type).name for p in payloads if _known(p.payload_type)]
        notifies = [_notify_name(p.notify_type) for p in payloads if isinstance(p, Notify)]
        deletes = [(p.protocol, len(p.spis)) for p in payloads if isinstance(p, Delete)]
        return Summary(
            exchange,
            h.response,
            h.message_id,
            names,
            notifies,
            deletes,
            fragment,
            payloads,
            encrypted=enc is not None,
            decrypted=decrypted,
        )

    def trace(self, packets: Iterable[Packet] | None = None) -> list[str]:
        """One line per datagram sent so far (for assertion messages)."""
        lines = []
        for p in packets if packets is not None else self.sent:
            try:
                s = self.describe(p)
                kind = "resp" if s.response else "req"
                lines.append(
                    f"#{p.number} ->{p.to} {s.exchange} {kind} {s.message_id} "
                    f"{','.join(s.notifies or s.payloads)}"
                )
            except MalformedPacket:
                lines.append(f"#{p.number} ->{p.to} ({len(p.data)} octets)")
        return lines


def _known(payload_type: int) -> bool:
    try:
        PayloadType(payload_type)
    except ValueError:
        return False
    return True


def _notify_name(code: int) -> str:
    try:
        return NotifyType(code).name
    except ValueError:
        return str(code)


# ---------------------------------------------------------------------- invariants


def check_events(host: Host) -> None:
    """Events are coherent: a pair comes up once and goes down at most once, after it came
    up; an IKE SA comes up once and goes down at most once."""
    up: dict[int, ChildSAUp] = {}
    down: set[int] = set()
    for e in host.events:
        if isinstance(e, ChildSAUp):
            assert e.spi_in not in up, f"{host.name}: CHILD SA 0x{e.spi_in:08x} up twice"
            up[e.spi_in] = e
        elif isinstance(e, ChildSADown):
            assert e.spi_in in up, f"{host.name}: 0x{e.spi_in:08x} down but never up"
            assert e.spi_in not in down, f"{host.name}: 0x{e.spi_in:08x} down twice"
            assert up[e.spi_in].spi_out == e.spi_out
            down.add(e.spi_in)
    ike_up: set[tuple[bytes, bytes]] = set()
    ike_down: set[tuple[bytes, bytes]] = set()
    for e in host.events:
        if isinstance(e, IkeSAUp):
            key = (e.spi_i, e.spi_r)
            assert key not in ike_up, f"{host.name}: IKE SA up twice"
            ike_up.add(key)
        elif isinstance(e, IkeSADown):
            key = (e.spi_i, e.spi_r)
            assert key not in ike_down, f"{host.name}: IKE SA down twice"
            ike_down.add(key)


def live_pair(link: Link, name: str | None = None) -> tuple[ChildSAUp, ChildSAUp]:
    """The single live pair (of CHILD SA ``name``) on each side, checked to match: A's
    outbound SA is B's inbound one and the other way round, with the same keys, and the
    IKE SAs' records agree with the events."""
    pairs = []
    for host in link.hosts():
        live = [e for e in host.live_children().values() if name is None or e.child == name]
        assert len(live) == 1, f"{host.name}: {len(live)} live CHILD SAs\n" + "\n".join(
            link.trace()
        )
        pairs.append(live[0])
    ua, ub = pairs
    assert ua.spi_out == ub.spi_in and ua.spi_in == ub.spi_out, "SPIs do not pair up"
    assert ua.encr_key_out == ub.encr_key_in and ua.integ_key_out == ub.integ_key_in
    assert ua.encr_key_in == ub.encr_key_out and ua.integ_key_in == ub.integ_key_out
    assert ua.proposal == ub.proposal and ua.mode is ub.mode
    for host, up in ((link.a, ua), (link.b, ub)):
        records = [c for sa in host.sas() for c in sa.children.values() if c.name == up.child]
        live = [c for c in records if c.live]
        assert [c.spi_in for c in live] == [up.spi_in], f"{host.name}: records disagree"
    return ua, ub


def check_ike_pair(link: Link) -> tuple[IkeSA, IkeSA]:
    """Exactly one usable IKE SA on each side, the same one, with the same keys."""
    usable = []
    for host in link.hosts():
        sas = [s for s in host.sas() if s.state is IkeState.ESTABLISHED]
        assert len(sas) == 1, f"{host.name}: {len(sas)} established IKE SAs"
        usable.append(sas[0])
    sa_a, sa_b = usable
    assert sa_a.id == sa_b.id
    assert sa_a.keys is not None and sa_b.keys is not None
    assert sa_a.keys.sk_d == sa_b.keys.sk_d and sa_a.keys.sk_ei == sa_b.keys.sk_ei
    return sa_a, sa_b


def check_idle(link: Link) -> None:
    """Nothing in flight, no exchange outstanding, nothing queued, no leftover SAs."""
    assert not link.pending(), "\n".join(link.trace(link.in_flight))
    for host in link.hosts():
        for sa in host.sas():
            assert sa.active is None and not sa.queue, f"{host.name}: {sa.state} busy"
            assert sa.state is IkeState.ESTABLISHED, f"{host.name}: leftover {sa.state} SA"
            for c in sa.children.values():
                assert c.live and c.peer_rekey is None, f"{host.name}: child {c.state}"


def teardown(link: Link, by: str = "a") -> None:
    """Delete the IKE SA and check that every pair that came up went down exactly once."""
    host = link.host(by)
    link.check_flows = False  # everything goes: nothing to carry on
    host.manager.delete_peer(host.peer, link.now)
    link.advance(60.0)
    for h in link.hosts():
        check_events(h)
        assert not h.live_children(), f"{h.name}: pairs left after the IKE SA went"
        assert not h.manager.sas, f"{h.name}: IKE SAs left"
        ups = {e.spi_in for e in h.children_up()}
        downs = [e.spi_in for e in h.children_down()]
        assert sorted(downs) == sorted(ups)
        ike_ups = {(e.spi_i, e.spi_r) for e in h.ike_up()}
        ike_downs = {(e.spi_i, e.spi_r) for e in h.ike_down()}
        assert ike_ups <= ike_downs


def settle(link: Link) -> tuple[ChildSAUp, ChildSAUp]:
    """After a scenario: a single live pair, one IKE SA, idle, coherent events."""
    ua, ub = live_pair(link)
    check_ike_pair(link)
    check_idle(link)
    for h in link.hosts():
        check_events(h)
    return ua, ub


# ---------------------------------------------------------------------- a tiny PKI


@dataclass
class Issued:
    cert: Any  # x509.Certificate
    key: Any  # its private key


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hostsec test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


_KEYS: dict[tuple[str, str], Any] = {}


def new_key(kind: str = "ecdsa", label: str = "") -> Any:
    """A private key, cached per (kind, label): RSA key generation is slow."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if (kind, label) not in _KEYS:
        if kind == "rsa":
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        _KEYS[(kind, label)] = key
    return _KEYS[(kind, label)]


def issue(
    cn: str,
    issuer: Issued | None = None,
    *,
    key: Any = None,
    ca: bool = False,
    san: str | None = None,
    not_before: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    not_after: datetime = datetime(2027, 12, 31, tzinfo=UTC),
) -> Issued:
    """A certificate for ``cn`` signed by ``issuer`` (self-signed without one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = key if key is not None else new_key("ecdsa", cn)
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def cert_auth(leaf: Issued, *anchors: Issued, chain: tuple[Issued, ...] = ()) -> Any:
    """CertAuth for ``leaf`` (sending ``chain`` too) trusting ``anchors``."""
    from hostsec.crypto.certs import Credentials, TrustStore
    from hostsec.ike.v2.config import CertAuth

    credentials = Credentials((leaf.cert, *(c.cert for c in chain)), leaf.key)
    return CertAuth(credentials, TrustStore([a.cert for a in anchors]))
