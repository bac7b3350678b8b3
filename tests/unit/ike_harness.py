"""Two IKEv2 agents wired through an in-memory link that can drop, duplicate, delay and
reorder datagrams; time is a number the test advances (no sleeping)."""

from __future__ import annotations

import ipaddress
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hostsec.crypto.certs import Identity
from hostsec.crypto.proposals import Mode, Protocol, parse_proposals
from hostsec.ike.v2.config import ChildConfig, IkeConfig, Lifetimes, PskAuth, Retransmit
from hostsec.ike.v2.events import ChildSADown, ChildSAUp, Event, IkeSADown, IkeSAUp, Transmit
from hostsec.ike.v2.manager import IkeManager
from hostsec.wire.selectors import TrafficSelector

A_ADDR = ipaddress.ip_address("198.51.100.1")
B_ADDR = ipaddress.ip_address("198.51.100.2")
PSK = b"correct horse battery staple 0123"


def child(
    name: str = "telnet",
    a_side: bool = True,
    mode: Mode = Mode.TRANSPORT,
    esp: str = "aes128gcm16",
    protocol: Protocol = Protocol.ESP,
    lifetime: float = 3600.0,
) -> ChildConfig:
    """The telnet flow seen from A (client, remote port 23) or B (server, local port 23)."""
    a = TrafficSelector.from_network("198.51.100.1/32", 6)
    b = TrafficSelector.from_network("198.51.100.2/32", 6, 23)
    local, remote = (a, b) if a_side else (b, a)
    return ChildConfig(
        name,
        (local,),
        (remote,),
        tuple(parse_proposals([esp], protocol)),
        protocol=protocol,
        mode=mode,
        lifetimes=Lifetimes(rekey=lifetime * 0.9, hard=lifetime),
    )


def peer_config(
    a_side: bool,
    children: tuple[ChildConfig, ...] | None = None,
    ike: str = "aes128gcm16-prfsha256-ecp256",
    psk: bytes = PSK,
    dpd: float | None = 30.0,
    lifetime: float = 86400.0,
    **extra: object,
) -> IkeConfig:
    local, remote = (A_ADDR, B_ADDR) if a_side else (B_ADDR, A_ADDR)
    name = "b" if a_side else "a"
    return IkeConfig(
        name=name,
        remote=remote,
        local=local,
        proposals=tuple(parse_proposals(ike.split(","), Protocol.IKE)),
        local_id=Identity.from_string("a.test" if a_side else "b.test"),
        remote_id=Identity.from_string("b.test" if a_side else "a.test"),
        auth=PskAuth(psk),
        children=children if children is not None else (child(a_side=a_side),),
        dpd=dpd,
        lifetimes=Lifetimes(rekey=lifetime * 0.9, hard=lifetime),
        retransmit=Retransmit(timeout=1.0, base=2.0, tries=3),
        **extra,  # type: ignore[arg-type]
    )


@dataclass
class Host:
    name: str
    address: ipaddress.IPv4Address
    manager: IkeManager
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]

    def children_up(self) -> list[ChildSAUp]:
        return self.of(ChildSAUp)

    def live_children(self) -> dict[int, str]:
        """Inbound SPI -> child name of the SAs that are up (by the events seen)."""
        live: dict[int, str] = {}
        for e in self.events:
            if isinstance(e, ChildSAUp):
                live[e.spi_in] = e.child
            elif isinstance(e, ChildSADown):
                live.pop(e.spi_in, None)
        return live

    def ike_up(self) -> list[IkeSAUp]:
        return self.of(IkeSAUp)

    def ike_down(self) -> list[IkeSADown]:
        return self.of(IkeSADown)


class Link:
    """Delivers datagrams between two managers; a filter may drop, hold or duplicate."""

    def __init__(
        self,
        a_config: IkeConfig | None = None,
        b_config: IkeConfig | None = None,
        seed: int = 1,
        nonce_first_byte: Callable[[str], int | None] | None = None,
    ) -> None:
        self.now = 1000.0
        self.counter = itertools.count()
        self.nonce_hook = nonce_first_byte
        self.a = Host("a", A_ADDR, self._manager("a", a_config or peer_config(True), seed))
        self.b = Host("b", B_ADDR, self._manager("b", b_config or peer_config(False), seed + 1))
        self.in_flight: list[tuple[str, Transmit]] = []  # (destination host, datagram)
        self.held: list[tuple[str, Transmit]] = []
        self.sent: list[tuple[str, Transmit]] = []
        self.drop: Callable[[str, Transmit], bool] = lambda _to, _t: False
        self.hold: Callable[[str, Transmit], bool] = lambda _to, _t: False

    def _manager(self, name: str, config: IkeConfig, seed: int) -> IkeManager:
        def random_bytes(n: int) -> bytes:
            data = bytearray(os.urandom(n))
            if n == 32 and self.nonce_hook is not None:
                first = self.nonce_hook(name)
                if first is not None:
                    data[0] = first
            return bytes(data)

        return IkeManager(
            [config],
            random_bytes=random_bytes,
            wallclock=lambda: datetime(2026, 11, 27, tzinfo=UTC),
            seed=seed,
        )

    def host(self, name: str) -> Host:
        return self.a if name == "a" else self.b

    def other(self, name: str) -> str:
        return "b" if name == "a" else "a"

    def collect(self) -> None:
        for host in (self.a, self.b):
            out, events = host.manager.poll()
            host.events += events
            for t in out:
                if isinstance(t, Transmit):
                    to = "b" if t.remote[0] == B_ADDR else "a"
                    self.sent.append((to, t))
                    if self.drop(to, t):
                        continue
                    if self.hold(to, t):
                        self.held.append((to, t))
                    else:
                        self.in_flight.append((to, t))

    def deliver_one(self) -> bool:
        self.collect()
        if not self.in_flight:
            return False
        to, t = self.in_flight.pop(0)
        host = self.host(to)
        host.manager.handle_datagram(t.data, t.local, t.remote, self.now)
        self.collect()
        return True

    def run(self, limit: int = 200) -> None:
        """Deliver until quiet."""
        for _ in range(limit):
            if not self.deliver_one():
                return
        raise AssertionError("the exchange does not settle")

    def release_held(self) -> None:
        self.in_flight += self.held
        self.held = []

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let time pass, firing timers and delivering what they send."""
        end = self.now + seconds
        while self.now < end:
            nxt = min(
                (t for m in (self.a.manager, self.b.manager) if (t := m.next_timer()) is not None),
                default=end,
            )
            self.now = min(max(nxt, self.now + 0.001), end) if nxt <= end else end
            for host in (self.a, self.b):
                host.manager.handle_timer(self.now)
            self.run()

    def establish(self, children: list[ChildConfig] | None = None) -> None:
        config = self.a.manager.configs["b"]
        kids = children if children is not None else list(config.children)
        self.a.manager.initiate("b", kids, self.now)
        self.run()
