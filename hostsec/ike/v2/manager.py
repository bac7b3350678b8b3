"""All IKEv2 SAs of one agent: demultiplexing, responders, cookies and limits.

The agent feeds every UDP datagram received on ports 500 and 4500 to
:meth:`IkeManager.handle_datagram`, the clock to :meth:`IkeManager.handle_timer` and its
commands (initiate a flow, delete a peer, ...) to the other methods; it collects the
datagrams to send and the events with :meth:`IkeManager.poll`. Nothing here does I/O.

Defences (RFC 7296 2.6, 2.21): datagrams that do not parse are dropped and counted; a
responder keeps no state for an IKE_SA_INIT it answers with an error; past a threshold
of half-open SAs, IKE_SA_INIT without a valid cookie gets a COOKIE and no state; the number
of half-open and of established SAs is bounded.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import UTC, datetime

from hostsec.crypto.auth import SUPPORTED_HASH_ALGORITHMS
from hostsec.crypto.certs import Identity
from hostsec.crypto.dh import KeyExchangeError, new_key_exchange
from hostsec.crypto.ikev2_proposals import from_sa_payload, to_sa_proposal
from hostsec.crypto.proposals import Protocol
from hostsec.ike.cookies import CookieJar
from hostsec.ike.selection import select_proposal
from hostsec.ike.v2.config import ChildConfig, IkeConfig
from hostsec.ike.v2.duplicates import DuplicateResolver
from hostsec.ike.v2.events import Endpoint, Event, Log, NatKeepalive, Transmit
from hostsec.ike.v2.ikesa import NONCE_LEN, IkeSA, IkeState
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2 import (
    KE,
    SA,
    ExchangeType,
    HeaderFlags,
    IKEHeader,
    InvalidMajorVersion,
    Message,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    UnsupportedCriticalPayload,
    encode_message,
    find_notify,
    parse_message,
)
from hostsec.wire.udpencap import NAT_T_PORT, NON_ESP_MARKER

ZERO_SPI = b"\x00" * 8


class IkeManager:
    """The IKE side of one agent."""

    def __init__(
        self,
        configs: list[IkeConfig] | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        seed: int | None = None,
        half_open_limit: int = 1000,
        established_limit: int = 10000,
        cookie_threshold: int = 10,
        reserved_spis: Callable[[], frozenset[tuple[Protocol, int]]] | None = None,
    ) -> None:
        self.configs: dict[str, IkeConfig] = {c.name: c for c in configs or []}
        self.random = random_bytes
        self.wallclock = wallclock
        self.rng = random.Random(seed)
        self.half_open_limit = half_open_limit
        self.established_limit = established_limit
        self.cookies = CookieJar(threshold=cookie_threshold)
        self._reserved = reserved_spis or frozenset
        self.sas: dict[tuple[bytes, bytes], IkeSA] = {}
        self._of_peer: dict[str, dict[IkeSA, None]] = {}  # each peer's SAs, in filing order
        self._half_open: dict[tuple[bytes, bytes, int], IkeSA] = {}  # (SPIi, addr, port)
        # Every responder SA by the IKE_SA_INIT that created it, until it dies: a late
        # retransmission of that request must not create another SA (RFC 7296 2.1).
        self._inits: dict[tuple[bytes, bytes, int], IkeSA] = {}
        # Where each SA is filed (its key in ``sas``, its IKE_SA_INIT in ``_inits`` and
        # ``_half_open``): filing and forgetting cost the same with thousands of SAs.
        self._key_of: dict[IkeSA, tuple[bytes, bytes]] = {}
        self._init_of: dict[IkeSA, tuple[bytes, bytes, int]] = {}
        # Each filed SA's next_timer(), as of the last time it was handled or collected
        # (the agent asks for the next timer after every datagram). An SA only gets an
        # earlier timer by handling something (collected then) or by sending (collected
        # by poll); handle_timer looks at every SA again, so a timer that went stale
        # (later) costs one early wake-up.
        self._timers: dict[IkeSA, float | None] = {}
        self._spis: set[tuple[Protocol, int]] = set()
        self._out: list[Transmit | NatKeepalive] = []
        self._events: list[Event] = []
        self.drops: dict[str, int] = {}
        self._retry: list[tuple[float, str, ChildConfig]] = []
        self.duplicates = DuplicateResolver()

    # ------------------------------------------------------------------ configuration

    def set_configs(self, configs: list[IkeConfig]) -> None:
        self.configs = {c.name: c for c in configs}

    def config_for(self, remote: Endpoint) -> IkeConfig | None:
        for c in self.configs.values():
            if c.remote == remote[0]:
                return c
        return None

    # ------------------------------------------------------------------ SA bookkeeping

    def register(self, sa: IkeSA) -> None:
        self._unfile(sa)
        self.sas[sa.id] = sa
        self._key_of[sa] = sa.id
        self._timers[sa] = sa.next_timer()
        self._of_peer.setdefault(sa.name, {})[sa] = None

    def _unfile(self, sa: IkeSA) -> None:
        key = self._key_of.pop(sa, None)
        if key is not None and self.sas.get(key) is sa:
            del self.sas[key]
        self._timers.pop(sa, None)
        filed = self._of_peer.get(sa.name)
        if filed is not None:
            filed.pop(sa, None)
            if not filed:
                del self._of_peer[sa.name]

    def of_peer(self, peer: str) -> list[IkeSA]:
        """Every filed IKE SA with ``peer``, oldest first."""
        return list(self._of_peer.get(peer, ()))

    def forget(self, sa: IkeSA) -> None:
        self._unfile(sa)
        self.half_open_done(sa)
        init = self._init_of.pop(sa, None)
        if init is not None and self._inits.get(init) is sa:
            del self._inits[init]
        out, events = sa.poll()
        self._out += out
        self._events += events

    def rekeyed_spis(self, sa: IkeSA) -> None:
        """The initiator learnt SPIr: re-key the table entry from (SPIi, 0)."""
        self.register(sa)

    def new_ike_spi(self) -> bytes:
        while True:
            spi = self.random(8)
            if spi != ZERO_SPI and all(spi not in key for key in self.sas):
                return spi

    def allocate_spi(self, protocol: Protocol) -> int:
        """A fresh inbound SPI (RFC 4303 2.1: 256 and up), unique in this agent."""
        reserved = self._reserved()
        while True:
            spi = int.from_bytes(self.random(4), "big")
            key = (protocol, spi)
            if spi >= 256 and key not in self._spis and key not in reserved:
                self._spis.add(key)
                return spi

    def release_spi(self, spi: int) -> None:
        self._spis.discard((Protocol.ESP, spi))
        self._spis.discard((Protocol.AH, spi))

    def established(self) -> list[IkeSA]:
        return [sa for sa in self.sas.values() if sa.state is IkeState.ESTABLISHED]

    def sa_for(self, peer: str) -> IkeSA | None:
        """The usable IKE SA with peer ``peer`` (the newest one)."""
        best: IkeSA | None = None
        for sa in self._of_peer.get(peer, ()):
            if sa.state in (
                IkeState.DEAD,
                IkeState.CREATED,
                IkeState.REKEYED,
                IkeState.DELETING,
            ):
                continue
            if best is None or sa.created > best.created:
                best = sa
        return best

    # ------------------------------------------------------------------ commands

    def initiate(
        self, peer: str, children: list[ChildConfig], now: float, local: Endpoint | None = None
    ) -> IkeSA:
        """Bring up ``children`` with ``peer``: on the existing IKE SA, or a new one."""
        config = self.configs[peer]
        sa = self.sa_for(peer)
        if sa is not None:
            for child in children:
                if not any(c.name == child.name and c.live for c in sa.children.values()):
                    sa.create_child(child, now)
            self._collect(sa)
            return sa
        if local is None:
            if config.local is None:
                raise ValueError(f"peer {peer}: the local address to initiate from is unknown")
            local = (config.local, 500)
        sa = IkeSA(self, config, True, local, (config.remote, 500), now, self.new_ike_spi())
        self.register(sa)
        sa.initiate(children, now)
        self._collect(sa)
        return sa

    def delete_peer(self, peer: str, now: float) -> None:
        for sa in self.of_peer(peer):
            sa.delete(now, reason="deleted by the operator")
            self._collect(sa)

    def delete_child(self, peer: str, child: str, now: float) -> None:
        for sa in self.of_peer(peer):
            sa.delete_children_named(child, now)
            self._collect(sa)

    def retry_later(self, sa: IkeSA, config: ChildConfig, now: float) -> None:
        self._retry.append((now + self.rng.uniform(1.0, 5.0), sa.name, config))

    def in_contact(self, sa: IkeSA) -> bool:
        """Another IKE SA with ``sa``'s peer exists, up or being set up by either end.

        RFC 7296 2.4: INITIAL_CONTACT asserts that the new SA is the only one between the
        two; when both ends initiate at once, the peer's SA (half-open here) makes that
        untrue, and the peer would take down the SA it already had with us."""
        return any(
            other is not sa and other.state is not IkeState.DEAD
            for other in self._of_peer.get(sa.name, ())
        )

    def initial_contact(self, sa: IkeSA, remote_id: Identity, now: float) -> None:
        """RFC 7296 2.4: the peer restarted; our older IKE SAs with it are stale.

        Only SAs that were up before the peer started ``sa`` are: when both ends start at
        once, each IKE_AUTH carries INITIAL_CONTACT and neither SA may take the other down.
        """
        for other in self.of_peer(sa.name):
            if (
                other is not sa
                and other.remote_id == remote_id
                and other.established_at is not None
                and other.established_at < sa.created
            ):
                other.log("INITIAL_CONTACT from the peer: dropping this stale IKE SA")
                other._die("replaced after the peer restarted (INITIAL_CONTACT)", now)

    def ike_auth_done(self, sa: IkeSA) -> None:
        """``sa`` came up through IKE_AUTH: is it a duplicate (both ends initiated)?"""
        sa.from_auth = True
        others = [
            other
            for other in self._of_peer.get(sa.name, ())
            if other is not sa
            and other.from_auth
            and other.established
            and other.remote_id == sa.remote_id
        ]
        if others:
            self.duplicates.established(sa, others)

    def _resolve_duplicates(self, now: float) -> None:
        if self.duplicates.plans:
            for sa in self.duplicates.resolve(now):
                self._collect(sa)

    # ------------------------------------------------------------------ input

    def handle_datagram(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> None:
        """One UDP payload received on port 500 or 4500 (with the marker on 4500)."""
        if dst[1] == NAT_T_PORT or src[1] == NAT_T_PORT:
            if data[:4] != NON_ESP_MARKER:
                self._drop("no non-ESP marker on port 4500")
                return
            data = data[4:]
        try:
            msg = parse_message(data)
        except InvalidMajorVersion:
            self._drop("invalid major version")
            return
        except UnsupportedCriticalPayload as exc:
            self._drop("unsupported critical payload")
            self._answer_unsupported(exc, src, dst)
            return
        except MalformedPacket:
            self._drop("malformed")
            return
        header = msg.header
        if header.major_version != 2:
            self._drop("invalid major version")
            return
        sa = self.sas.get((header.spi_i, header.spi_r))
        if sa is None and header.response and header.exchange_type == ExchangeType.IKE_SA_INIT:
            sa = self.sas.get((header.spi_i, ZERO_SPI))
        if sa is None and not header.response and header.spi_r == ZERO_SPI:
            if header.exchange_type == ExchangeType.IKE_SA_INIT and header.message_id == 0:
                self._respond_init(msg, data, src, dst, now)
            else:
                self._drop("unknown IKE SA")
            return
        if sa is None:
            self._drop("unknown IKE SA")
            return
        # Our role decides which flag the peer must set (RFC 7296 3.1).
        if header.initiator == sa.initiator:
            self._drop("wrong initiator flag")
            return
        try:
            sa.handle(msg, data, src, dst, now)
        except Exception as exc:  # a bug must cost one message, never the agent
            self._drop(f"internal error: {type(exc).__name__}")
            self._events.append(
                Log(sa.name, f"internal error handling a message: {exc!r}", "error")
            )
        self._collect(sa)
        self._resolve_duplicates(now)

    def handle_timer(self, now: float) -> None:
        self.cookies.handle_timer(now)
        for sa in list(self.sas.values()):
            t = sa.next_timer()
            if t is not None and now >= t:
                sa.handle_timer(now)
                self._collect(sa)
        # Every timer looked at again: what went stale (later, or the SA gone) is dropped.
        self._timers = {sa: sa.next_timer() for sa in self.sas.values()}
        due = [r for r in self._retry if r[0] <= now]
        self._retry = [r for r in self._retry if r[0] > now]
        for _, peer, config in due:
            if peer in self.configs:
                self.initiate(peer, [config], now)
        self._resolve_duplicates(now)

    def next_timer(self) -> float | None:
        times = [t for t in self._timers.values() if t is not None]
        times += [r[0] for r in self._retry]
        times.append(self.cookies.next_timer())
        return min(times) if times else None

    def note_traffic(self, peer: str, now: float) -> None:
        sa = self.sa_for(peer)
        if sa is not None:
            sa.note_traffic(now)

    # ------------------------------------------------------------------ output

    def poll(self) -> tuple[list[Transmit | NatKeepalive], list[Event]]:
        # Every SA, as something may have been queued outside the entry points above (the
        # agent calls an SA's methods directly); only the few with something to say are
        # collected (the agent polls after every datagram, with thousands of SAs up).
        for sa in self.sas.values():
            if sa.out or sa.events or sa.replaced_by is not None:
                self._collect(sa)
        out, events = self._out, self._events
        self._out, self._events = [], []
        return out, events

    def _collect(self, sa: IkeSA) -> None:
        out, events = sa.poll()
        self._out += out
        self._events += events
        if sa in self._timers:
            self._timers[sa] = sa.next_timer()
        # New IKE SAs spawned by a rekey collect through the same path.
        new = sa.replaced_by
        if new is not None:
            o2, e2 = new.poll()
            self._out += o2
            self._events += e2
            if new in self._timers:
                self._timers[new] = new.next_timer()

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _send_plain(
        self, header: IKEHeader, payloads: list[Payload], local: Endpoint, remote: Endpoint
    ) -> None:
        """An unprotected IKE_SA_INIT response from ``local`` to ``remote``."""
        data = encode_message(header, payloads)
        if local[1] == NAT_T_PORT or remote[1] == NAT_T_PORT:
            data = NON_ESP_MARKER + data
        self._out.append(Transmit(data, local, remote))

    # ------------------------------------------------------------------ responder: IKE_SA_INIT

    def _respond_init(
        self, msg: Message, data: bytes, src: Endpoint, dst: Endpoint, now: float
    ) -> None:
        header = msg.header
        if not header.initiator:
            self._drop("IKE_SA_INIT without the initiator flag")
            return
        key = (header.spi_i, src[0].packed, src[1])
        existing = self._inits.get(key)
        if existing is not None:
            # A retransmitted IKE_SA_INIT: answer again with the same response while the SA
            # is half-open; later ones are stale (RFC 7296 2.1).
            if (
                existing.init_request == bytes(data)
                and existing.init_response
                and existing.state is IkeState.AUTH
            ):
                existing.out.append(Transmit(existing._wire(existing.init_response), dst, src))
                self._collect(existing)
            else:
                self._drop("retransmitted IKE_SA_INIT")
            return
        reply = IKEHeader(header.spi_i, ZERO_SPI, ExchangeType.IKE_SA_INIT, 0, HeaderFlags.RESPONSE)
        sa_payload, ke, nonce = msg.find(SA), msg.find(KE), msg.find(Nonce)
        if sa_payload is None or ke is None or nonce is None:
            self._drop("IKE_SA_INIT without SA, KE or nonce")
            self._send_plain(reply, [Notify(NotifyType.INVALID_SYNTAX)], dst, src)
            return
        half_open = len(self._half_open)
        if self.cookies.required(half_open):
            cookie = find_notify(msg.payloads, NotifyType.COOKIE)
            ip = src[0].packed
            if cookie is None or not self.cookies.verify(cookie.data, nonce.data, ip, header.spi_i):
                self._drop("cookie required")
                token = self.cookies.make(nonce.data, ip, header.spi_i)
                self._send_plain(reply, [Notify(NotifyType.COOKIE, token)], dst, src)
                return
        if half_open >= self.half_open_limit or len(self.sas) >= self.established_limit:
            self._drop("too many IKE SAs")
            return
        config = self.config_for(src)
        if config is None:
            self._events.append(
                Log("-", f"IKE_SA_INIT from {src[0]}: no peer configured", "warning")
            )
            self._send_plain(reply, [Notify(NotifyType.NO_PROPOSAL_CHOSEN)], dst, src)
            return
        offers = from_sa_payload(sa_payload)
        selected = select_proposal([p for _n, p, _s in offers], list(config.proposals))
        if selected is None:
            self._events.append(Log(config.name, "IKE_SA_INIT: no acceptable proposal", "warning"))
            self._send_plain(reply, [Notify(NotifyType.NO_PROPOSAL_CHOSEN)], dst, src)
            return
        index, proposal = selected
        if ke.dh_group != proposal.dh[0]:
            # RFC 7296 1.2: ask for the group we chose; keep no state.
            self._send_plain(reply, [Notify.invalid_ke_payload(int(proposal.dh[0]))], dst, src)
            return
        kex = new_key_exchange(proposal.dh[0])
        try:
            shared = kex.shared_secret(ke.data)
        except KeyExchangeError:
            self._drop("bad KE value")
            self._send_plain(reply, [Notify(NotifyType.INVALID_SYNTAX)], dst, src)
            return
        sa = IkeSA(self, config, False, dst, src, now, header.spi_i, self.new_ike_spi())
        sa.ni = nonce.data
        sa.nr = self.random(NONCE_LEN)
        sa.init_request = bytes(data)
        sa.proposal = proposal
        sa._read_init_notifies(msg.payloads, responder_view=True)
        sa._derive(shared)
        number = offers[index][0]
        payloads: list[Payload] = [
            SA((to_sa_proposal(proposal, number),)),
            KE(kex.group, kex.public_value),
            Nonce(sa.nr),
        ]
        payloads += sa._nat_detection(sa.spi_r)
        if config.fragmentation and sa.peer_fragmentation:
            payloads.append(Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        payloads.append(Notify.signature_hash_algorithms(SUPPORTED_HASH_ALGORITHMS))
        payloads += sa._certreq()
        response_header = IKEHeader(
            header.spi_i, sa.spi_r, ExchangeType.IKE_SA_INIT, 0, HeaderFlags.RESPONSE
        )
        sa.init_response = encode_message(response_header, payloads)
        sa.expected_request_id = 1
        sa.out.append(Transmit(sa._wire(sa.init_response), dst, src))
        self.register(sa)
        self._half_open[key] = sa
        self._inits[key] = sa
        self._init_of[sa] = key
        self._collect(sa)

    def _answer_unsupported(
        self, exc: UnsupportedCriticalPayload, src: Endpoint, dst: Endpoint
    ) -> None:
        """RFC 7296 2.5: an IKE_SA_INIT request with an unknown critical payload is answered
        with UNSUPPORTED_CRITICAL_PAYLOAD (unprotected; nothing else is, 2.21.1)."""
        h = exc.header
        if (
            h is None
            or h.response
            or not h.initiator
            or h.exchange_type != ExchangeType.IKE_SA_INIT
            or h.message_id != 0
            or h.spi_r != ZERO_SPI
        ):
            return
        reply = IKEHeader(h.spi_i, ZERO_SPI, ExchangeType.IKE_SA_INIT, 0, HeaderFlags.RESPONSE)
        self._send_plain(reply, [Notify.unsupported_critical_payload(exc.payload_type)], dst, src)

    def half_open_done(self, sa: IkeSA) -> None:
        key = self._init_of.get(sa)
        if key is not None and self._half_open.get(key) is sa:
            del self._half_open[key]
