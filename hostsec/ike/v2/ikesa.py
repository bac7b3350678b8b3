"""One IKEv2 SA as a sans-I/O state machine (RFC 7296).

Inputs: parsed messages with their datagram and addresses (:meth:`IkeSA.handle`), the
clock (:meth:`IkeSA.handle_timer`) and commands (initiate, create/rekey/delete a CHILD SA,
rekey/delete the IKE SA, note inbound traffic). Outputs, collected by the
:class:`~hostsec.ike.v2.manager.IkeManager`: datagrams to send, events for the agent, and
the next time the SA wants the clock.

Exchanges are tasks. We keep at most one request outstanding (a window of one, RFC 7296
2.3); further tasks wait in a queue. A request is retransmitted on a growing timeout until
its response arrives or the retries are used up, which kills the IKE SA (dead peer). A
request from the peer is answered once; a retransmission of it gets the cached response.

Collisions (RFC 7296 2.8.1, 2.25) are resolved by the nonce rule: when both ends rekey the
same SA at once, the new SA created with the lowest of the four nonces is redundant and is
deleted by the end that initiated it; the replaced SA is deleted by the end that
initiated the surviving one. A rekey by the peer that we answer while our own rekey of the
same SA is out is kept aside (a CHILD pair as ``peer_rekey``; an IKE SA in state CREATED,
which ignores requests) until our response settles it. If our rekey fails instead
(TEMPORARY_FAILURE, another error, or the peer deleting the old SA first: it did not see
the collision), the peer's rekey stands. A rekey we have not sent yet yields to the
peer's. Replaced or redundant SAs the peer should delete are deleted by us if it does not
within a while. Rekeying, deleting a CHILD SA and rekeying the IKE SA exclude each other
with TEMPORARY_FAILURE (RFC 7296 2.25.1, 2.25.2).
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from hostsec.crypto.auth import (
    SUPPORTED_HASH_ALGORITHMS,
    AuthenticationError,
    decode_signature_hash_algorithms,
    psk_auth_data,
    sign,
    signed_octets,
    verify_psk_auth,
    verify_signature_auth,
)
from hostsec.crypto.certs import (
    CertificateError,
    Identity,
    check_identity,
    load_der_certificate,
)
from hostsec.crypto.dh import KeyExchange, KeyExchangeError, new_key_exchange
from hostsec.crypto.ikev2_proposals import from_sa_payload, to_sa_payload, to_sa_proposal
from hostsec.crypto.keys import (
    IkeSaKeys,
    derive_child_sa_for,
    derive_ike_sa_for,
    derive_rekeyed_ike_sa_for,
)
from hostsec.crypto.prf import Prf
from hostsec.crypto.proposals import Mode, Proposal, Protocol
from hostsec.crypto.transforms import DhId
from hostsec.ike.selection import (
    accepts_choice,
    all_contained,
    first_dh_group,
    narrow,
    select_proposal,
    without_dh,
)
from hostsec.ike.v2.child import ChildSA, ChildState
from hostsec.ike.v2.config import CertAuth, ChildConfig, IkeConfig, PskAuth
from hostsec.ike.v2.events import (
    AuthenticationFailed,
    ChildSADown,
    ChildSAFailed,
    ChildSAUp,
    Endpoint,
    Event,
    IkeEndpointChanged,
    IkeSADown,
    IkeSAUp,
    Log,
    NatKeepalive,
    Transmit,
)
from hostsec.ike.v2.protect import DecryptionFailed, Protector
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2 import (
    AUTH,
    CERT,
    CERTREQ,
    KE,
    SA,
    SKF,
    CertEncoding,
    Delete,
    ExchangeType,
    FragmentReassembler,
    FragmentStatus,
    HeaderFlags,
    IDi,
    IDr,
    IKEHeader,
    Message,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    ProtocolId,
    TSAddressRange,
    TSi,
    TSr,
    UnsupportedCriticalPayload,
    encode_message,
    find,
    find_all,
    find_notify,
    parse_payloads,
)
from hostsec.wire.selectors import TrafficSelector
from hostsec.wire.udpencap import NAT_T_PORT, NON_ESP_MARKER

if TYPE_CHECKING:
    from hostsec.ike.v2.manager import IkeManager

NONCE_LEN = 32
HALF_OPEN_TIMEOUT = 30.0  # responder: IKE_AUTH must follow IKE_SA_INIT within this
REKEYED_LINGER = 10.0  # a replaced CHILD SA we wait on the peer to delete, then delete it
IKE_REKEYED_LINGER = 30.0  # the same for a replaced (or redundant) IKE SA
_CHILD_ERRORS = (
    NotifyType.NO_PROPOSAL_CHOSEN,
    NotifyType.TS_UNACCEPTABLE,
    NotifyType.SINGLE_PAIR_REQUIRED,
    NotifyType.NO_ADDITIONAL_SAS,
    NotifyType.INTERNAL_ADDRESS_FAILURE,
    NotifyType.FAILED_CP_REQUIRED,
    NotifyType.INVALID_SELECTORS,
)


class IkeState(enum.Enum):
    INIT = "init"  # initiator: IKE_SA_INIT sent
    AUTH = "auth"  # IKE_AUTH in progress (either role)
    ESTABLISHED = "established"
    CREATED = "created"  # made by a rekey whose collision is not settled yet: not in use
    REKEYED = "rekeyed"  # replaced by a new IKE SA, waiting to be deleted
    DELETING = "deleting"
    DEAD = "dead"


def nat_hash(spi_i: bytes, spi_r: bytes, address: bytes, port: int) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port) (RFC 7296 2.23)."""
    h = hashes.Hash(hashes.SHA1())  # noqa: S303 - the hash RFC 7296 2.23 defines
    h.update(spi_i + spi_r + address + port.to_bytes(2, "big"))
    return h.finalize()


def notify_name(code: int) -> str:
    try:
        return NotifyType(code).name
    except ValueError:
        return str(code)


def ts_payload_entries(selectors: tuple[TrafficSelector, ...]) -> tuple[TSAddressRange, ...]:
    return tuple(TSAddressRange.from_selector(ts) for ts in selectors)


def selectors_of(payload: TSi | TSr | None) -> tuple[TrafficSelector, ...]:
    """The address-range selectors of a TS payload (unknown TS types are ignored)."""
    return payload.traffic_selectors() if payload is not None else ()


def _pin(selectors: tuple[TrafficSelector, ...], address: bytes) -> tuple[TrafficSelector, ...]:
    """RFC 7296 2.23.1 address substitution: every selector of ``address``'s family gets that
    single address; protocol and ports stay."""
    return tuple(
        dataclasses.replace(ts, start_addr=address, end_addr=address)
        if len(ts.start_addr) == len(address)
        else ts
        for ts in selectors
    )


def _spi_bytes(spi: int) -> bytes:
    return spi.to_bytes(4, "big")


def _protocol_id(protocol: Protocol) -> int:
    return ProtocolId.AH if protocol is Protocol.AH else ProtocolId.ESP


@dataclass
class _Outstanding:
    """Our request in flight."""

    task: Task
    message_id: int
    exchange: int
    datagrams: list[bytes]
    sent_at: float
    deadline: float
    tries: int = 0


class Task:
    """One exchange we initiate. ``build`` returns the request payloads (or None: nothing
    to do any more), ``process`` handles the response, ``fail`` the give-up."""

    exchange: int = ExchangeType.INFORMATIONAL
    name = "task"

    def build(self, sa: IkeSA, now: float) -> list[Payload] | None:
        raise NotImplementedError

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        raise NotImplementedError

    def fail(self, sa: IkeSA, reason: str, now: float) -> None:
        pass


class IkeSA:
    """An IKE SA and its CHILD SAs."""

    def __init__(
        self,
        manager: IkeManager,
        config: IkeConfig,
        initiator: bool,
        local: Endpoint,
        remote: Endpoint,
        now: float,
        spi_i: bytes,
        spi_r: bytes = b"\x00" * 8,
    ) -> None:
        self.manager = manager
        self.config = config
        self.name = config.name
        self.initiator = initiator  # original initiator of this IKE SA
        self.local = local
        self.remote = remote
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.created = now
        self.established_at: float | None = None
        self.from_auth = False  # established by IKE_AUTH (not by rekeying another SA)
        self.state = IkeState.INIT if initiator else IkeState.AUTH
        self.proposal: Proposal | None = None
        self.keys: IkeSaKeys | None = None
        self.prf: Prf | None = None
        self.protector: Protector | None = None
        self.ni = b""
        self.nr = b""
        self.ke: KeyExchange | None = None
        self.init_request = b""  # IKE_SA_INIT request as sent (RealMessage1)
        self.init_response = b""  # IKE_SA_INIT response as sent (RealMessage2)
        self.remote_id: Identity | None = None
        self.peer_fragmentation = False
        self.peer_hashes: frozenset[int] = frozenset()
        self.nat_local = False
        self.nat_remote = False
        self.children: dict[int, ChildSA] = {}
        self.next_request_id = 0
        self.expected_request_id = 0
        self.active: _Outstanding | None = None
        self.queue: deque[Task] = deque()
        self.cached_response: tuple[int, list[bytes]] | None = None
        self.reassembler = FragmentReassembler()
        self.last_received = now
        self.last_sent = now
        self.rekey_at: float | None = None
        self.expire_at: float | None = None
        self.out: list[Transmit | NatKeepalive] = []
        self.events: list[Event] = []
        self.pending_children: list[ChildConfig] = []
        self.cookie: bytes | None = None
        self.rekeying: RekeyIkeTask | None = None
        self.peer_rekey: tuple[IkeSA, bytes, bytes] | None = None  # collision bookkeeping
        self.replaced_by: IkeSA | None = None
        self.delete_reason = ""
        self.spawned = False  # made by a rekey (not by IKE_SA_INIT)
        self.announced = False  # IkeSAUp was sent: IkeSADown will follow
        self.linger_until: float | None = None  # REKEYED: the peer should delete it by then

    # ------------------------------------------------------------------ helpers

    @property
    def id(self) -> tuple[bytes, bytes]:
        return self.spi_i, self.spi_r

    @property
    def established(self) -> bool:
        return self.state is IkeState.ESTABLISHED

    @property
    def dead(self) -> bool:
        return self.state is IkeState.DEAD

    def random(self, n: int) -> bytes:
        return self.manager.random(n)

    def log(self, message: str, level: str = "info") -> None:
        self.events.append(Log(self.name, message, level))

    def _header(self, exchange: int, message_id: int, response: bool) -> IKEHeader:
        flags = 0
        if self.initiator:
            flags |= HeaderFlags.INITIATOR
        if response:
            flags |= HeaderFlags.RESPONSE
        return IKEHeader(self.spi_i, self.spi_r, exchange, message_id, flags)

    def _wire(self, data: bytes) -> bytes:
        """UDP payload for ``data``: with the non-ESP marker on the NAT-T port."""
        if self.local[1] == NAT_T_PORT or self.remote[1] == NAT_T_PORT:
            return NON_ESP_MARKER + data
        return data

    def _send(self, datagrams: list[bytes], now: float) -> None:
        for d in datagrams:
            self.out.append(Transmit(self._wire(d), self.local, self.remote))
        self.last_sent = now

    def _fragment_size(self) -> int | None:
        if self.config.fragmentation and self.peer_fragmentation:
            return self.config.fragment_size
        return None

    def _seal(
        self, exchange: int, message_id: int, response: bool, payloads: list[Payload]
    ) -> list[bytes]:
        assert self.protector is not None
        header = self._header(exchange, message_id, response)
        return self.protector.seal(header, payloads, self._fragment_size())

    def use_nat_t(self) -> bool:
        return self.remote[1] == NAT_T_PORT or self.local[1] == NAT_T_PORT

    def _float(self) -> None:
        """Move IKE to port 4500 after IKE_SA_INIT (RFC 7296 2.23, RFC 3948)."""
        if self.local[1] != NAT_T_PORT:
            self.local = (self.local[0], NAT_T_PORT)
        if self.remote[1] != NAT_T_PORT:
            self.remote = (self.remote[0], NAT_T_PORT)

    def _jitter(self, seconds: float) -> float:
        return self.manager.rng.uniform(0, seconds) if seconds > 0 else 0.0

    def _arm_ike_lifetimes(self, now: float) -> None:
        life = self.config.lifetimes
        self.rekey_at = now + life.rekey - self._jitter(life.jitter)
        self.expire_at = now + life.hard

    # ------------------------------------------------------------------ output

    def poll(self) -> tuple[list[Transmit | NatKeepalive], list[Event]]:
        out, events = self.out, self.events
        self.out, self.events = [], []
        return out, events

    def next_timer(self) -> float | None:
        times: list[float] = []
        if self.state is IkeState.DEAD:
            return None
        if self.active is not None:
            times.append(self.active.deadline)
        if self.state is IkeState.AUTH and not self.initiator:
            times.append(self.created + HALF_OPEN_TIMEOUT)
        if self.state is IkeState.REKEYED and self.linger_until is not None:
            times.append(self.linger_until)
        if self.established:
            for t in (self.rekey_at, self.expire_at):
                if t is not None:
                    times.append(t)
            if self.config.dpd:
                times.append(self.last_received + self.config.dpd)
            if self.nat_local and self.use_nat_t():
                times.append(self.last_sent + self.config.keepalive)
            for child in self.children.values():
                if child.rekey_at is not None and child.state is ChildState.INSTALLED:
                    times.append(child.rekey_at)
                if child.expire_at is not None:
                    times.append(child.expire_at)
        return min(times) if times else None

    # ------------------------------------------------------------------ requests

    def queue_task(self, task: Task, now: float, first: bool = False) -> None:
        if first:
            self.queue.appendleft(task)
        else:
            self.queue.append(task)
        self._run_queue(now)

    def _run_queue(self, now: float) -> None:
        while self.active is None and self.queue:
            if self.state in (IkeState.DEAD, IkeState.INIT) or (
                self.state is IkeState.AUTH and self.initiator
            ):
                return
            task = self.queue.popleft()
            payloads = task.build(self, now)
            if payloads is None:
                continue
            message_id = self.next_request_id
            self.next_request_id += 1
            datagrams = self._seal(task.exchange, message_id, False, payloads)
            self._start_request(task, task.exchange, message_id, datagrams, now)

    def _start_request(
        self, task: Task, exchange: int, message_id: int, datagrams: list[bytes], now: float
    ) -> None:
        delay = self.config.retransmit.timeout
        self.active = _Outstanding(task, message_id, exchange, datagrams, now, now + delay)
        self._send(datagrams, now)

    def _retransmit(self, now: float) -> None:
        active = self.active
        assert active is not None
        delays = self.config.retransmit.delays()
        active.tries += 1
        if active.tries >= len(delays):
            self.active = None
            reason = (
                f"no response to {ExchangeType(active.exchange).name} after {active.tries} tries"
            )
            active.task.fail(self, reason, now)
            self._die(f"peer unreachable: {reason}", now)
            return
        active.deadline = now + delays[active.tries]
        self._send(active.datagrams, now)

    # ------------------------------------------------------------------ timers

    def handle_timer(self, now: float) -> None:
        if self.state is IkeState.DEAD:
            return
        if self.active is not None and now >= self.active.deadline:
            self._retransmit(now)
            if self.dead:
                return
        if self.state is IkeState.AUTH and not self.initiator:
            if now >= self.created + HALF_OPEN_TIMEOUT:
                self._die("half-open IKE SA: no IKE_AUTH arrived", now)
            return
        if self.state is IkeState.REKEYED:
            if self.linger_until is not None and now >= self.linger_until:
                self._linger_expired(now)
            return
        if not self.established:
            return
        if self.expire_at is not None and now >= self.expire_at:
            # Hard lifetime: the SA must not be used any more; tell the peer once.
            self._die("IKE SA lifetime expired without rekey", now, notify_peer=True)
            return
        if self.rekey_at is not None and now >= self.rekey_at:
            self.rekey_at = None
            self.rekey(now)
        for child in list(self.children.values()):
            if child.expire_at is not None and now >= child.expire_at:
                child.expire_at = None
                if child.state is ChildState.REKEYED:
                    self.log(f"replaced CHILD SA 0x{child.spi_in:08x} not deleted by the peer")
                self.delete_child(child.spi_in, now, reason="lifetime expired")
            elif (
                child.rekey_at is not None
                and now >= child.rekey_at
                and child.state is ChildState.INSTALLED
            ):
                child.rekey_at = None
                self.rekey_child(child.spi_in, now)
        if self.config.dpd and now >= self.last_received + self.config.dpd:
            if self.active is None and not self.queue:
                self.queue_task(InformationalTask(), now)
            self.last_received = now  # one liveness check per interval
        if self.nat_local and self.use_nat_t() and now >= self.last_sent + self.config.keepalive:
            self.out.append(NatKeepalive(self.local, self.remote))
            self.last_sent = now

    def note_traffic(self, now: float) -> None:
        """Inbound ESP/AH traffic of a CHILD SA arrived: the peer is alive (no DPD needed)."""
        self.last_received = max(self.last_received, now)

    # ------------------------------------------------------------------ dying

    def _die(self, reason: str, now: float, notify_peer: bool = False) -> None:
        """Drop the SA and everything it carries; with ``notify_peer``, send one DELETE
        for it first (not retransmitted: the SA is gone whatever the peer says)."""
        if self.state is IkeState.DEAD:
            return
        if notify_peer and self.protector is not None and self.announced:
            header_id = self.next_request_id
            self.next_request_id += 1
            self._send(
                self._seal(ExchangeType.INFORMATIONAL, header_id, False, [Delete.ike()]), now
            )
        self.state = IkeState.DEAD
        self.delete_reason = reason
        if self.peer_rekey is not None:
            # The SA the peer was making by rekeying this one dies with it.
            pending, self.peer_rekey = self.peer_rekey[0], None
            if pending.state is IkeState.CREATED:
                pending._die(reason, now)
        children = list(self.children.values())
        self.children.clear()
        for child in children:
            self._child_down(child, reason, successor=False)
        for task in list(self.queue):
            task.fail(self, reason, now)
        self.queue.clear()
        if self.active is not None:
            active, self.active = self.active, None
            active.task.fail(self, reason, now)
        if self.announced or not self.spawned:
            # Every IkeSAUp gets its IkeSADown; so does a failed negotiation. An SA made
            # by a rekey that was never used goes quietly.
            self.events.append(IkeSADown(self.name, self.spi_i, self.spi_r, reason))
        self.manager.forget(self)

    def _linger_expired(self, now: float) -> None:
        """A replaced IKE SA the peer should have deleted by now (RFC 7296 2.8.2)."""
        self.linger_until = None
        if self.announced:
            self.log("the peer did not delete the replaced IKE SA; deleting it")
            self.delete(now, reason="rekeyed")
        else:
            self._die("redundant IKE SA not deleted by the peer", now)

    def _child_down(self, child: ChildSA, reason: str, successor: bool = True) -> None:
        """Tell the agent a pair is gone (after it left ``children``), and which pair
        carries its flow on: its replacement, or the peer's rekey of it we answered."""
        after = child.replaced_by if child.replaced_by is not None else child.peer_rekey
        if not successor or after not in self.children:
            after = None
        for other in self.children.values():
            if other.replaced_by == child.spi_in:
                other.replaced_by = after
        self.events.append(
            ChildSADown(
                self.name,
                child.name,
                child.protocol,
                child.spi_in,
                child.spi_out,
                reason,
                replaced_by=after,
            )
        )

    # ================================================================== initiator

    def initiate(self, children: list[ChildConfig], now: float) -> None:
        """Start IKE_SA_INIT; the first CHILD SA rides in IKE_AUTH, the others follow."""
        self.pending_children = list(children)
        self.ni = self.random(NONCE_LEN)
        group = first_dh_group(self.config.proposals)
        assert group is not None
        self.ke = new_key_exchange(group)
        self._send_init(now)

    def _init_payloads(self) -> list[Payload]:
        assert self.ke is not None
        payloads: list[Payload] = []
        if self.cookie is not None:
            payloads.append(Notify(NotifyType.COOKIE, self.cookie))
        payloads += [
            to_sa_payload(self.config.proposals),
            KE(self.ke.group, self.ke.public_value),
            Nonce(self.ni),
        ]
        payloads += self._nat_detection(b"\x00" * 8)
        if self.config.fragmentation:
            payloads.append(Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        payloads.append(Notify.signature_hash_algorithms(SUPPORTED_HASH_ALGORITHMS))
        return payloads

    def _nat_detection(self, spi_r: bytes) -> list[Payload]:
        if self.config.encapsulation == "off":
            return []
        local_addr, local_port = self.local
        if self.config.encapsulation == "force":
            # RFC 7296 2.23: faking the source hash makes both ends use UDP encapsulation.
            source = self.random(20)
        else:
            source = nat_hash(self.spi_i, spi_r, local_addr.packed, local_port)
        destination = nat_hash(self.spi_i, spi_r, self.remote[0].packed, self.remote[1])
        return [
            Notify(NotifyType.NAT_DETECTION_SOURCE_IP, source),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, destination),
        ]

    def _send_init(self, now: float) -> None:
        header = self._header(ExchangeType.IKE_SA_INIT, 0, False)
        self.init_request = encode_message(header, self._init_payloads())
        self.next_request_id = 1
        task = InitTask()
        self.active = _Outstanding(
            task, 0, ExchangeType.IKE_SA_INIT, [self.init_request], now,
            now + self.config.retransmit.timeout,
        )  # fmt: skip
        self._send([self.init_request], now)

    def _process_init_response(self, msg: Message, datagram: bytes, now: float) -> None:
        payloads = msg.payloads
        cookie = find_notify(payloads, NotifyType.COOKIE)
        if cookie is not None:
            if self.cookie is not None and self.cookie == cookie.data:
                self._die("responder keeps asking for the same cookie", now)
                return
            self.cookie = cookie.data
            self.log("responder asked for a cookie (RFC 7296 2.6); retrying with it")
            self.active = None
            self._send_init(now)
            return
        invalid_ke = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            try:
                group = DhId(invalid_ke.data_u16())
            except (ValueError, MalformedPacket):
                self._die("INVALID_KE_PAYLOAD with an unknown group", now)
                return
            if not any(group in p.dh for p in self.config.proposals):
                self._die(f"responder wants DH group {group.name}, which we do not offer", now)
                return
            assert self.ke is not None
            if group == self.ke.group:
                self._die("INVALID_KE_PAYLOAD for the group we sent", now)
                return
            self.log(f"responder asked for DH group {group.name}; retrying")
            self.ke = new_key_exchange(group)
            self.active = None
            self._send_init(now)
            return
        for n in payloads:
            if isinstance(n, Notify) and n.is_error:
                self._fail_auth_or_die(
                    f"IKE_SA_INIT refused: {notify_name(n.notify_type)}", now, auth=False
                )
                return
        sa, ke, nonce = msg.find(SA), msg.find(KE), msg.find(Nonce)
        if sa is None or ke is None or nonce is None:
            self._die("IKE_SA_INIT response without SA, KE or nonce", now)
            return
        offers = from_sa_payload(sa)
        if len(sa.proposals) != 1 or len(offers) != 1:
            self._die("IKE_SA_INIT response must hold exactly one acceptable proposal", now)
            return
        _, chosen, _spi = offers[0]
        if not accepts_choice(self.config.proposals, chosen):
            self._die(f"responder chose a proposal we did not offer: {chosen}", now)
            return
        assert self.ke is not None
        if not chosen.dh or ke.dh_group != chosen.dh[0] or ke.dh_group != self.ke.group:
            self._die("KE payload does not match the chosen DH group", now)
            return
        try:
            shared = self.ke.shared_secret(ke.data)
        except KeyExchangeError as exc:
            self._die(f"bad key exchange value: {exc.reason}", now)
            return
        self.spi_r = msg.header.spi_r
        if self.spi_r == b"\x00" * 8:
            self._die("responder SPI is zero", now)
            return
        self.nr = nonce.data
        self.init_response = bytes(datagram)
        self.proposal = chosen
        self._derive(shared)
        self.ke = None
        self._read_init_notifies(payloads, responder_view=False)
        self.manager.rekeyed_spis(self)
        self.state = IkeState.AUTH
        self.active = None
        self.queue.appendleft(AuthTask(self.pending_children[:1]))
        self.pending_children = self.pending_children[1:]
        # IKE_AUTH goes out at once (the queue runs only once AUTH may be sent).
        task = self.queue.popleft()
        payloads_out = task.build(self, now)
        assert payloads_out is not None
        datagrams = self._seal(ExchangeType.IKE_AUTH, 1, False, payloads_out)
        self.next_request_id = 2
        self._start_request(task, ExchangeType.IKE_AUTH, 1, datagrams, now)

    def _derive(self, shared: bytes) -> None:
        assert self.proposal is not None
        self.keys = derive_ike_sa_for(
            self.proposal, shared, self.ni, self.nr, self.spi_i, self.spi_r
        )
        self.prf = Prf(self.proposal.prf[0])
        self.protector = Protector(self.proposal, self.keys, self.initiator, self.random)

    def _read_init_notifies(self, payloads: tuple[Payload, ...], responder_view: bool) -> None:
        """NAT detection, fragmentation and signature hash support of the peer's
        IKE_SA_INIT message (RFC 7296 2.23, RFC 7383 2.3, RFC 7427 4)."""
        self.peer_fragmentation = (
            find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        )
        hashes_notify = find_notify(payloads, NotifyType.SIGNATURE_HASH_ALGORITHMS)
        if hashes_notify is not None:
            try:
                self.peer_hashes = decode_signature_hash_algorithms(hashes_notify.data)
            except AuthenticationError:
                self.peer_hashes = frozenset()
        sources = [
            n.data
            for n in find_all(payloads, Notify)
            if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP
        ]
        destination = find_notify(payloads, NotifyType.NAT_DETECTION_DESTINATION_IP)
        if not sources or destination is None or self.config.encapsulation == "off":
            return
        spi_r = b"\x00" * 8 if responder_view else self.spi_r
        # The peer's view of us: its DESTINATION hash against our address and port.
        ours = nat_hash(self.spi_i, spi_r, self.local[0].packed, self.local[1])
        self.nat_local = destination.data != ours or self.config.encapsulation == "force"
        theirs = nat_hash(self.spi_i, spi_r, self.remote[0].packed, self.remote[1])
        self.nat_remote = theirs not in sources
        if self.nat_local or self.nat_remote:
            self.log(
                "NAT detected: "
                + ("this host is behind a NAT" if self.nat_local else "the peer is behind a NAT")
                + (" (encapsulation forced)" if self.config.encapsulation == "force" else "")
            )
            if not responder_view:
                # The initiator moves to port 4500 now; the responder follows when a
                # request arrives there, from whatever port the NAT gave it (2.23).
                self._float()

    # ------------------------------------------------------------------ IKE_AUTH helpers

    def _id_payload(self, cls: type[IDi] | type[IDr]) -> IDi | IDr:
        ident = self.config.local_id
        return cls(int(ident.type), ident.data)

    def _own_auth(self, id_body: bytes) -> AUTH:
        assert self.prf is not None and self.keys is not None
        real = self.init_request if self.initiator else self.init_response
        peer_nonce = self.nr if self.initiator else self.ni
        sk_p = self.keys.sk_pi if self.initiator else self.keys.sk_pr
        octets = signed_octets(self.prf, real, peer_nonce, sk_p, id_body)
        auth = self.config.auth
        if isinstance(auth, PskAuth):
            return AUTH(2, psk_auth_data(self.prf, auth.secret, octets))
        method, data = sign(
            auth.credentials.private_key, octets, self.peer_hashes, rsa_pss=auth.rsa_pss
        )
        return AUTH(int(method), data)

    def _cert_payloads(self) -> list[Payload]:
        auth = self.config.auth
        if not isinstance(auth, CertAuth):
            return []
        return [
            CERT(CertEncoding.X509_SIGNATURE, cert.public_bytes(Encoding.DER))
            for cert in auth.credentials.chain
        ]

    def _certreq(self) -> list[Payload]:
        auth = self.config.auth
        if not isinstance(auth, CertAuth):
            return []
        hashes_ = auth.trust.key_hashes()
        return [CERTREQ.from_ca_hashes(list(hashes_))] if hashes_ else []

    def _verify_peer(
        self, payloads: tuple[Payload, ...], id_payload: IDi | IDr, now_wall: datetime
    ) -> Identity:
        """Check the peer's identity and AUTH payload; raises AuthenticationError."""
        assert self.prf is not None and self.keys is not None
        try:
            peer_id = Identity.from_payload(id_payload.id_type, id_payload.data)
        except CertificateError as exc:
            raise AuthenticationError(exc.reason) from None
        expected = self.config.remote_id
        auth_payload = find(payloads, AUTH)
        if auth_payload is None:
            raise AuthenticationError("no AUTH payload")
        real = self.init_response if self.initiator else self.init_request
        own_nonce = self.ni if self.initiator else self.nr
        sk_p = self.keys.sk_pr if self.initiator else self.keys.sk_pi
        octets = signed_octets(self.prf, real, own_nonce, sk_p, id_payload.rest_of_payload)
        auth = self.config.auth
        if isinstance(auth, PskAuth):
            if expected is not None and peer_id != expected:
                raise AuthenticationError(f"peer identity {peer_id} is not the expected {expected}")
            if auth_payload.method != 2:
                raise AuthenticationError(
                    f"peer used authentication method {auth_payload.method}, expected PSK (2)"
                )
            verify_psk_auth(self.prf, auth.secret, octets, auth_payload.data)
            return peer_id
        certs = [c for c in find_all(payloads, CERT) if c.encoding == CertEncoding.X509_SIGNATURE]
        if not certs:
            raise AuthenticationError("no certificate from the peer")
        try:
            leaf = load_der_certificate(certs[0].data)
            intermediates = [load_der_certificate(c.data) for c in certs[1:16]]
            auth.trust.verify(leaf, intermediates, now_wall)
            check_identity(leaf, peer_id)
            if expected is not None:
                check_identity(leaf, expected)
                if peer_id != expected and expected.type == peer_id.type:
                    raise CertificateError(f"identity mismatch: {peer_id} is not {expected}")
        except CertificateError as exc:
            raise AuthenticationError(f"certificate refused: {exc.reason}") from None
        verify_signature_auth(auth_payload.method, auth_payload.data, leaf.public_key(), octets)
        return peer_id

    def _fail_auth_or_die(self, reason: str, now: float, auth: bool = True) -> None:
        if auth:
            self.events.append(AuthenticationFailed(self.name, reason, self.remote))
        self._die(reason, now)

    # ------------------------------------------------------------------ CHILD helpers

    def child_request(
        self, config: ChildConfig, spi_in: int, in_ike_auth: bool, kex: KeyExchange | None
    ) -> list[Payload]:
        """SA, [KE,] TSi, TSr and mode notifies of a CHILD SA request (not the nonce)."""
        proposals = list(config.proposals)
        if in_ike_auth:
            proposals = without_dh(proposals)
        payloads: list[Payload] = []
        if config.mode is Mode.TRANSPORT:
            payloads.append(Notify(NotifyType.USE_TRANSPORT_MODE))
        payloads.append(Notify(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED))
        payloads.append(to_sa_payload(proposals, _spi_bytes(spi_in)))
        if kex is not None:
            payloads.append(KE(kex.group, kex.public_value))
        payloads.append(TSi(ts_payload_entries(config.local_ts)))
        payloads.append(TSr(ts_payload_entries(config.remote_ts)))
        return payloads

    def install_child(
        self,
        config: ChildConfig,
        proposal: Proposal,
        spi_in: int,
        spi_out: int,
        local_ts: tuple[TrafficSelector, ...],
        remote_ts: tuple[TrafficSelector, ...],
        mode: Mode,
        nonce_i: bytes,
        nonce_r: bytes,
        shared: bytes | None,
        initiated: bool,
        now: float,
        replaces: int | None = None,
        nat_original: tuple[bytes, bytes] | None = None,
    ) -> ChildSA:
        """Derive the keys (RFC 7296 2.17), record the pair, tell the agent.
        ``nat_original``: the (source, destination) addresses the peer's transport checksums
        cover, when a NAT changed them (RFC 7296 2.23.1, RFC 3948 3.1.2)."""
        assert self.keys is not None and self.prf is not None
        keys = derive_child_sa_for(self.prf, self.keys.sk_d, proposal, nonce_i, nonce_r, shared)
        # Our outbound keys are the initiator's (of this exchange) when we initiated it.
        if initiated:
            enc_out, int_out, enc_in, int_in = keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r
        else:
            enc_out, int_out, enc_in, int_in = keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i
        life = config.lifetimes
        child = ChildSA(
            config=config,
            protocol=config.protocol,
            mode=mode,
            proposal=proposal,
            spi_in=spi_in,
            spi_out=spi_out,
            local_ts=local_ts,
            remote_ts=remote_ts,
            created=now,
            rekey_at=now + life.rekey - self._jitter(life.jitter),
            expire_at=now + life.hard,
            nonce_i=nonce_i,
            nonce_r=nonce_r,
            initiated=initiated,
        )
        self.children[spi_in] = child
        encap = (self.local[1], self.remote[1]) if self.use_nat_t() else None
        if encap is None or mode is not Mode.TRANSPORT:
            nat_original = None
        self.events.append(
            ChildSAUp(
                ike=self.name,
                child=config.name,
                protocol=config.protocol,
                mode=mode,
                proposal=proposal,
                spi_in=spi_in,
                spi_out=spi_out,
                encr_key_in=enc_in,
                integ_key_in=int_in,
                encr_key_out=enc_out,
                integ_key_out=int_out,
                local_ts=local_ts,
                remote_ts=remote_ts,
                local=self.local[0],
                remote=self.remote[0],
                encapsulation=encap,
                nat_original=nat_original,
                replaces=replaces,
                # The answerer of a rekey sends on it once the old pair is deleted (2.8).
                outbound=initiated or replaces is None,
                soft_seconds=life.rekey,
                hard_seconds=life.hard,
                replay_window=config.replay_window,
            )
        )
        return child

    def respond_child(
        self,
        payloads: tuple[Payload, ...],
        nonce_i: bytes,
        nonce_r: bytes,
        in_ike_auth: bool,
        now: float,
        rekey_of: ChildSA | None = None,
    ) -> list[Payload]:
        """Responder side of a CHILD SA in IKE_AUTH or CREATE_CHILD_SA: the response's
        SA, [KE,] TSi, TSr and notifies, or the error notify."""
        sa = find(payloads, SA)
        tsi = selectors_of(find(payloads, TSi))
        tsr = selectors_of(find(payloads, TSr))
        if sa is None or not tsi or not tsr:
            return (
                [Notify(NotifyType.INVALID_SYNTAX)]
                if not in_ike_auth
                else [Notify(NotifyType.TS_UNACCEPTABLE)]
            )
        offers = [
            (p, spi) for _num, p, spi in from_sa_payload(sa) if p.protocol is not Protocol.IKE
        ]
        transport = find_notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
        nat_original = None
        views = [(tsi, tsr)]
        if transport and (self.nat_local or self.nat_remote):
            # RFC 7296 2.23.1: keep the addresses as sent (the peer's checksums cover them,
            # RFC 3948 3.1.2), substitute the addresses of the IKE SA for the NATed side(s),
            # and look up, narrow and answer with those; a configuration that names the
            # peer's addresses as sent (its inside address) is looked up second.
            nat_original = (tsi[0].start_addr, tsr[0].start_addr)
            sub_tsi = _pin(tsi, self.remote[0].packed) if self.nat_remote else tsi
            sub_tsr = _pin(tsr, self.local[0].packed) if self.nat_local else tsr
            views = [(sub_tsi, sub_tsr), (tsi, tsr)]
        # The peer's TSi are its side (our remote), TSr ours (our local).
        candidates = [rekey_of.config] if rekey_of is not None else list(self.config.children)
        # The first configuration whose selectors overlap the peer's and that accepts one
        # of its proposals in the mode it asked for; the refusal names what went wrong
        # with the first one whose selectors matched.
        refusal: str | None = None
        chosen: tuple[ChildConfig, int, Proposal, list[TrafficSelector], list[TrafficSelector]]
        for config in candidates:
            for view_i, view_r in views:
                local_ts = narrow(view_r, config.local_ts)
                remote_ts = narrow(view_i, config.remote_ts)
                if local_ts and remote_ts:
                    break
            if not local_ts or not remote_ts:
                continue
            configured = list(config.proposals)
            if in_ike_auth:
                configured = without_dh(configured)
            selected = select_proposal([p for p, _ in offers], configured)
            if selected is None:
                refusal = refusal or f"no acceptable CHILD SA proposal for {config.name}"
                continue
            if (config.mode is Mode.TRANSPORT) != transport:
                # Never silently turn a transport request into a tunnel (or back).
                refusal = refusal or (
                    f"{config.name}: peer asked for {'transport' if transport else 'tunnel'} "
                    f"mode, configured {config.mode.value}"
                )
                continue
            chosen = (config, selected[0], selected[1], local_ts, remote_ts)
            break
        else:
            if refusal is None:
                self.log("no CHILD SA configuration matches the peer's traffic selectors")
                return [Notify(NotifyType.TS_UNACCEPTABLE)]
            self.log(refusal)
            return [Notify(NotifyType.NO_PROPOSAL_CHOSEN)]
        chosen_config, index, proposal, local_ts, remote_ts = chosen
        peer_spi = offers[index][1]
        if len(peer_spi) != 4:
            return [Notify(NotifyType.INVALID_SYNTAX)]
        shared = None
        out: list[Payload] = []
        if proposal.dh:
            ke = find(payloads, KE)
            if ke is None or ke.dh_group != proposal.dh[0]:
                return [Notify.invalid_ke_payload(int(proposal.dh[0]))]
            kex = new_key_exchange(proposal.dh[0])
            try:
                shared = kex.shared_secret(ke.data)
            except KeyExchangeError as exc:
                self.log(f"bad KE value in CREATE_CHILD_SA: {exc.reason}")
                return [Notify(NotifyType.NO_PROPOSAL_CHOSEN)]
            out_ke: KE | None = KE(kex.group, kex.public_value)
        else:
            out_ke = None
        spi_in = self.manager.allocate_spi(chosen_config.protocol)
        self.install_child(
            chosen_config,
            proposal,
            spi_in,
            int.from_bytes(peer_spi, "big"),
            tuple(local_ts),
            tuple(remote_ts),
            chosen_config.mode,
            nonce_i,
            nonce_r,
            shared,
            initiated=False,
            now=now,
            replaces=rekey_of.spi_in if rekey_of is not None else None,
            nat_original=nat_original,
        )
        if chosen_config.mode is Mode.TRANSPORT:
            out.append(Notify(NotifyType.USE_TRANSPORT_MODE))
        out.append(Notify(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED))
        out.append(SA((to_sa_proposal(proposal, index + 1, _spi_bytes(spi_in)),)))
        if out_ke is not None:
            out.append(out_ke)
        out.append(TSi(ts_payload_entries(tuple(remote_ts))))
        out.append(TSr(ts_payload_entries(tuple(local_ts))))
        return out

    def accept_child_response(
        self,
        config: ChildConfig,
        payloads: tuple[Payload, ...],
        spi_in: int,
        nonce_i: bytes,
        nonce_r: bytes,
        kex: KeyExchange | None,
        in_ike_auth: bool,
        now: float,
        replaces: int | None = None,
    ) -> ChildSA | None:
        """Initiator side: check the responder's choice and install the pair; None (and a
        ChildSAFailed event) if it cannot be used."""
        for code in _CHILD_ERRORS:
            if find_notify(payloads, code) is not None:
                self._child_failed(config, spi_in, NotifyType(code).name, now)
                return None
        sa = find(payloads, SA)
        if sa is None:
            self._child_failed(config, spi_in, "response without SA", now)
            return None
        # From here on the peer has installed a pair: refusing it means deleting it.
        tsi = selectors_of(find(payloads, TSi))
        tsr = selectors_of(find(payloads, TSr))
        if not tsi or not tsr:
            self.refuse_child(config, spi_in, "response without traffic selectors", now)
            return None
        offers = from_sa_payload(sa)
        if len(sa.proposals) != 1 or len(offers) != 1:
            self.refuse_child(config, spi_in, "response must hold one proposal", now)
            return None
        _, chosen, peer_spi = offers[0]
        proposals = list(config.proposals)
        if in_ike_auth:
            proposals = without_dh(proposals)
        if chosen.protocol is not config.protocol or not accepts_choice(proposals, chosen):
            self.refuse_child(config, spi_in, f"peer chose what we did not offer: {chosen}", now)
            return None
        if len(peer_spi) != 4:
            self.refuse_child(config, spi_in, "bad SPI size", now)
            return None
        transport = find_notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
        nat_original = None
        if transport and (self.nat_local or self.nat_remote):
            # RFC 7296 2.23.1: the responder answered with the addresses it sees, the ones
            # its checksums cover (its source is TSr, its destination TSi); substitute our
            # IKE SA's addresses for the NATed side(s) before checking or installing.
            nat_original = (tsr[0].start_addr, tsi[0].start_addr)
            if self.nat_local:
                tsi = _pin(tsi, self.local[0].packed)
            if self.nat_remote:
                tsr = _pin(tsr, self.remote[0].packed)
        if not all_contained(tsi, config.local_ts) or not all_contained(tsr, config.remote_ts):
            self.refuse_child(config, spi_in, "peer widened the traffic selectors", now)
            return None
        mode = Mode.TRANSPORT if transport else Mode.TUNNEL
        if mode is not config.mode:
            # Never let a transport-mode flow silently become a tunnel (or back).
            self.refuse_child(
                config,
                spi_in,
                f"peer answered with {mode.value} mode, {config.mode.value} wanted",
                now,
            )
            return None
        shared = None
        if chosen.dh:
            ke = find(payloads, KE)
            if kex is None or ke is None or ke.dh_group != kex.group:
                self.refuse_child(config, spi_in, "KE payload missing or of the wrong group", now)
                return None
            try:
                shared = kex.shared_secret(ke.data)
            except KeyExchangeError as exc:
                self.refuse_child(config, spi_in, f"bad KE value: {exc.reason}", now)
                return None
        return self.install_child(
            config,
            chosen,
            spi_in,
            int.from_bytes(peer_spi, "big"),
            tsi,
            tsr,
            mode,
            nonce_i,
            nonce_r,
            shared,
            initiated=True,
            now=now,
            replaces=replaces,
            nat_original=nat_original,
        )

    def _child_failed(self, config: ChildConfig, spi_in: int, reason: str, now: float) -> None:
        self.manager.release_spi(spi_in)
        self.events.append(ChildSAFailed(self.name, config.name, reason))

    def refuse_child(self, config: ChildConfig, spi_in: int, reason: str, now: float) -> None:
        """The peer installed a pair we cannot use: report it and have the peer delete it
        (RFC 7296 1.4.1; the SPI is released when the DELETE exchange is over)."""
        self.log(f"{config.name}: refusing the peer's CHILD SA: {reason}", "warning")
        self.events.append(ChildSAFailed(self.name, config.name, reason))
        self.queue_task(DeleteChildTask.for_spis(config.protocol, [spi_in]), now)

    # ================================================================== commands

    def create_child(self, config: ChildConfig, now: float) -> None:
        if self.state is IkeState.INIT or (self.state is IkeState.AUTH and self.initiator):
            if all(c.name != config.name for c in self.pending_children):
                self.pending_children.append(config)
            return
        self.queue_task(CreateChildTask(config), now)

    def rekey_child(self, spi_in: int, now: float) -> None:
        child = self.children.get(spi_in)
        if child is None or child.state is not ChildState.INSTALLED:
            return
        child.state = ChildState.REKEYING
        self.queue_task(CreateChildTask(child.config, rekey_of=child), now)

    def delete_child(self, spi_in: int, now: float, reason: str = "deleted") -> None:
        child = self.children.get(spi_in)
        if child is None or child.state is ChildState.DELETING:
            return
        child.state = ChildState.DELETING
        self.queue_task(DeleteChildTask([child], reason), now)

    def delete_children_named(self, name: str, now: float) -> None:
        for child in list(self.children.values()):
            if child.name == name:
                self.delete_child(child.spi_in, now, reason="deleted by the operator")

    def rekey(self, now: float) -> None:
        if self.established and self.rekeying is None:
            task = RekeyIkeTask()
            self.rekeying = task
            self.queue_task(task, now)

    def delete(self, now: float, reason: str = "deleted") -> None:
        if self.state in (IkeState.DEAD, IkeState.DELETING):
            return
        if self.state is not IkeState.ESTABLISHED and self.state is not IkeState.REKEYED:
            self._die(reason, now)
            return
        self.state = IkeState.DELETING
        self.delete_reason = reason
        # Deleting the IKE SA goes first: nothing else is worth sending now.
        for queued in self.queue:
            queued.fail(self, reason, now)
        self.queue.clear()
        task = DeleteIkeTask(reason)
        if self.active is None:
            self.queue_task(task, now)
        else:
            self.queue.append(task)

    # ================================================================== receiving

    def handle(
        self, msg: Message, datagram: bytes, src: Endpoint, dst: Endpoint, now: float
    ) -> None:
        header = msg.header
        if self.state is IkeState.DEAD:
            return
        if header.response:
            active = self.active
            if active is None or header.message_id != active.message_id:
                return  # a late or unexpected response: ignore (RFC 7296 2.3)
            if header.exchange_type != active.exchange:
                return
            if header.exchange_type == ExchangeType.IKE_SA_INIT:
                self._process_init_response(msg, datagram, now)
                return
            payloads = self._decrypt(msg, datagram, True)
            if payloads is None:
                return
            self._update_remote(src, dst)
            self.last_received = now
            self.active = None
            active.task.process(self, payloads, now)
            self._run_queue(now)
            return
        # A request from the peer.
        if self.state is IkeState.CREATED:
            # Not ours to use yet (a rekey collision is being settled): the peer will
            # retransmit (RFC 7296 2.8.1; strongSwan behaves the same).
            return
        if header.message_id == self.expected_request_id - 1 and self.cached_response is not None:
            mid, datagrams = self.cached_response
            if mid == header.message_id and self._first_fragment(msg):
                self._send(datagrams, now)  # retransmitted request: same response
            return
        if header.message_id != self.expected_request_id:
            return
        if header.exchange_type == ExchangeType.IKE_SA_INIT:
            return
        unsupported: UnsupportedCriticalPayload | None = None
        try:
            payloads = self._decrypt(msg, datagram, False)
        except UnsupportedCriticalPayload as exc:
            payloads, unsupported = (), exc
        if payloads is None:
            return
        self._update_remote(src, dst)
        self.last_received = now
        self.expected_request_id += 1
        exchange = header.exchange_type
        if unsupported is not None:
            # RFC 7296 2.5: reject the request, naming the payload type.
            self.log(f"request with an unsupported critical payload {unsupported.payload_type}")
            response: list[Payload] = [
                Notify.unsupported_critical_payload(unsupported.payload_type)
            ]
        elif (
            exchange == ExchangeType.IKE_AUTH and not self.initiator and self.state is IkeState.AUTH
        ):
            response = self._respond_auth(payloads, now)
        elif exchange == ExchangeType.CREATE_CHILD_SA and self.state in (
            IkeState.ESTABLISHED,
            IkeState.REKEYED,
            IkeState.DELETING,
        ):
            response = self._respond_create_child(payloads, now)
        elif exchange == ExchangeType.INFORMATIONAL and self.state is not IkeState.AUTH:
            response = self._respond_informational(payloads, now)
        else:
            response = [Notify(NotifyType.INVALID_SYNTAX)]
        datagrams = self._seal(exchange, header.message_id, True, response)
        self.cached_response = (header.message_id, datagrams)
        self._send(datagrams, now)
        if unsupported is not None and self.state is IkeState.AUTH:
            self._die("IKE_AUTH with an unsupported critical payload", now)
        if self.dead:
            return
        self._after_response(now)
        self._run_queue(now)

    def _first_fragment(self, msg: Message) -> bool:
        enc = msg.encrypted
        return not isinstance(enc, SKF) or enc.fragment_number == 1

    def _update_remote(self, src: Endpoint, dst: Endpoint) -> None:
        """RFC 7296 2.23: answer on the port a request came to (the peer may float to 4500
        without a NAT), and follow the peer's address and port after a NAT mapping change.

        Called only for a message that passed its integrity check and is new (the next
        request, or the response to our outstanding one): a replayed or forged datagram
        cannot move the SA. Only a host not behind a NAT follows a peer behind one; a
        host behind a NAT SHOULD NOT (one packet would break its connection)."""
        if dst[1] == NAT_T_PORT and self.local[1] != NAT_T_PORT:
            self.local = (self.local[0], NAT_T_PORT)
            self.remote = src
            return
        if src == self.remote or not self.nat_remote or self.nat_local or not self.use_nat_t():
            return
        old, self.remote = self.remote, src
        self.events.append(IkeEndpointChanged(self.name, self.spi_i, self.spi_r, old, src))

    def _decrypt(self, msg: Message, datagram: bytes, response: bool) -> tuple[Payload, ...] | None:
        """The payloads of an SK message (or, once all are in, of its SKF fragments); None
        to drop it. Raises UnsupportedCriticalPayload for a request that must be refused."""
        enc = msg.encrypted
        if enc is None or self.protector is None:
            return None
        try:
            opened = self.protector.open(datagram, enc)
        except DecryptionFailed:
            return None
        first, octets = opened.first_payload_type, opened.octets
        if opened.fragment is not None:
            number, total = opened.fragment
            result = self.reassembler.add(
                msg.header.message_id, number, total, first, octets, is_response=response
            )
            if result.status is not FragmentStatus.COMPLETE:
                return None
            first, octets = result.first_payload_type, result.data
        try:
            return msg.payloads[:-1] + parse_payloads(first, octets)
        except UnsupportedCriticalPayload:
            if not response:
                raise  # answered (RFC 7296 2.5)
            return None
        except MalformedPacket as exc:
            self.log(f"malformed encrypted payloads: {exc.reason}", "warning")
            return None

    def _after_response(self, now: float) -> None:
        """Work queued by a request we answered (e.g. deleting a redundant SA)."""

    # ------------------------------------------------------------------ IKE_AUTH responder

    def _respond_auth(self, payloads: tuple[Payload, ...], now: float) -> list[Payload]:
        idi = find(payloads, IDi)
        if idi is None:
            self._fail_auth_or_die("IKE_AUTH without IDi", now)
            self.state = IkeState.DEAD
            return [Notify(NotifyType.AUTHENTICATION_FAILED)]
        try:
            self.remote_id = self._verify_peer(payloads, idi, self.manager.wallclock())
        except AuthenticationError as exc:
            self.log(f"authentication of the peer failed: {exc.reason}", "warning")
            self.events.append(AuthenticationFailed(self.name, exc.reason, self.remote))
            self._die(f"authentication failed: {exc.reason}", now)
            return [Notify(NotifyType.AUTHENTICATION_FAILED)]
        idr = self._id_payload(IDr)
        out: list[Payload] = [idr, *self._cert_payloads(), self._own_auth(idr.rest_of_payload)]
        self._establish(now)
        if find(payloads, SA) is not None:
            out += self.respond_child(payloads, self.ni, self.nr, True, now)
        if find_notify(payloads, NotifyType.INITIAL_CONTACT) is not None and self.remote_id:
            self.manager.initial_contact(self, self.remote_id, now)
        self.manager.ike_auth_done(self)
        return out

    def _establish(self, now: float, rekeyed_from: tuple[bytes, bytes] | None = None) -> None:
        assert self.proposal is not None
        self.manager.half_open_done(self)
        self.state = IkeState.ESTABLISHED
        self.announced = True
        self.established_at = now
        self.last_received = now
        self._arm_ike_lifetimes(now)
        self.events.append(
            IkeSAUp(
                self.name,
                self.spi_i,
                self.spi_r,
                self.initiator,
                self.proposal,
                str(self.config.local_id),
                str(self.remote_id) if self.remote_id else "",
                self.local,
                self.remote,
                self.nat_local,
                self.nat_remote,
                rekeyed_from,
            )
        )

    # ------------------------------------------------------------------ CREATE_CHILD_SA responder

    def _respond_create_child(self, payloads: tuple[Payload, ...], now: float) -> list[Payload]:
        nonce = find(payloads, Nonce)
        sa = find(payloads, SA)
        if nonce is None or sa is None:
            return [Notify(NotifyType.INVALID_SYNTAX)]
        if self.state is not IkeState.ESTABLISHED:
            return [Notify(NotifyType.TEMPORARY_FAILURE)]
        if any(p.protocol == ProtocolId.IKE for p in sa.proposals):
            return self._respond_rekey_ike(payloads, sa, nonce, now)
        if (
            self.rekeying is not None
            and self.active is not None
            and self.active.task is self.rekeying
        ):
            # RFC 7296 2.25.2: rekeying the IKE SA; CHILD SA work must wait.
            return [Notify(NotifyType.TEMPORARY_FAILURE)]
        nr = self.random(NONCE_LEN)
        rekey = find_notify(payloads, NotifyType.REKEY_SA)
        old: ChildSA | None = None
        if rekey is not None:
            spi_out = int.from_bytes(rekey.spi, "big") if len(rekey.spi) == 4 else -1
            old = next((c for c in self.children.values() if c.spi_out == spi_out), None)
            if old is None:
                return [Notify(NotifyType.CHILD_SA_NOT_FOUND, b"", rekey.protocol, rekey.spi)]
            if old.state is ChildState.DELETING:
                # RFC 7296 2.25.1: rekey of an SA we are deleting.
                return [Notify(NotifyType.TEMPORARY_FAILURE)]
            if old.state is ChildState.REKEYED:
                return [Notify(NotifyType.TEMPORARY_FAILURE)]
        response = self.respond_child(payloads, nonce.data, nr, False, now, rekey_of=old)
        if find(response, SA) is None:
            return response
        new_spi = next(s for s, c in self.children.items() if c.nonce_r == nr)
        if old is not None:
            # Collision: we are rekeying it too (RFC 7296 2.8.1). Decide when our own
            # response arrives; if our request has not left yet, drop it.
            if old.state is ChildState.REKEYING and not self._cancel_queued_rekey(old, now):
                old.peer_rekey = new_spi
                return [Nonce(nr), *response]
            old.state = ChildState.REKEYED
            old.replaced_by = new_spi
            old.rekey_at = None
            old.expire_at = now + REKEYED_LINGER  # the peer deletes it; else we do
        return [Nonce(nr), *response]

    def _cancel_queued_rekey(self, child: ChildSA, now: float) -> bool:
        """Drop our rekey of ``child`` if it has not been sent yet (the peer's does it)."""
        for task in list(self.queue):
            if isinstance(task, CreateChildTask) and task.rekey_of is child:
                self.queue.remove(task)
                task.fail(self, "the peer rekeyed it first", now)
                return True
        return False

    def _respond_rekey_ike(
        self, payloads: tuple[Payload, ...], sa: SA, nonce: Nonce, now: float
    ) -> list[Payload]:
        assert self.prf is not None and self.keys is not None
        busy = self.active is not None and isinstance(
            self.active.task, CreateChildTask | DeleteChildTask
        )
        if busy or any(c.state is ChildState.REKEYING for c in self.children.values()):
            # RFC 7296 2.25.1: CHILD SA work in progress.
            return [Notify(NotifyType.TEMPORARY_FAILURE)]
        offers = [(p, spi) for _n, p, spi in from_sa_payload(sa) if p.protocol is Protocol.IKE]
        selected = select_proposal([p for p, _ in offers], list(self.config.proposals))
        if selected is None:
            return [Notify(NotifyType.NO_PROPOSAL_CHOSEN)]
        index, proposal = selected
        peer_spi = offers[index][1]
        ke = find(payloads, KE)
        if ke is None or not proposal.dh or ke.dh_group != proposal.dh[0]:
            return [Notify.invalid_ke_payload(int(proposal.dh[0]))]
        if len(peer_spi) != 8:
            return [Notify(NotifyType.INVALID_SYNTAX)]
        kex = new_key_exchange(proposal.dh[0])
        try:
            shared = kex.shared_secret(ke.data)
        except KeyExchangeError:
            return [Notify(NotifyType.NO_PROPOSAL_CHOSEN)]
        nr = self.random(NONCE_LEN)
        new_spi_r = self.manager.new_ike_spi()
        new = self._spawn_rekeyed(proposal, shared, nonce.data, nr, peer_spi, new_spi_r, False, now)
        if (
            self.rekeying is not None
            and self.active is not None
            and self.active.task is self.rekeying
        ):
            # Both ends rekey at once (RFC 7296 2.8.1): settled when our response comes.
            self.peer_rekey = (new, nonce.data, nr)
        else:
            if self.rekeying is not None:
                # Our own rekey has not left yet: the peer's one does the job.
                self.queue = deque(t for t in self.queue if t is not self.rekeying)
                self.rekeying = None
            self._hand_over(new, now, await_delete=True)
        return [
            SA((to_sa_proposal(proposal, index + 1, new_spi_r),)),
            Nonce(nr),
            KE(kex.group, kex.public_value),
        ]

    def _spawn_rekeyed(
        self,
        proposal: Proposal,
        shared: bytes,
        ni: bytes,
        nr: bytes,
        spi_i: bytes,
        spi_r: bytes,
        we_initiated: bool,
        now: float,
    ) -> IkeSA:
        """The new IKE SA of a rekey (RFC 7296 2.18); its initiator is the rekey's."""
        assert self.keys is not None and self.prf is not None
        keys = derive_rekeyed_ike_sa_for(
            self.prf, self.keys.sk_d, proposal, shared, ni, nr, spi_i, spi_r
        )
        new = IkeSA(
            self.manager, self.config, we_initiated, self.local, self.remote, now, spi_i, spi_r
        )
        new.proposal = proposal
        new.keys = keys
        new.prf = Prf(proposal.prf[0])
        new.protector = Protector(proposal, keys, we_initiated, self.random)
        new.ni, new.nr = ni, nr
        new.remote_id = self.remote_id
        new.peer_fragmentation = self.peer_fragmentation
        new.peer_hashes = self.peer_hashes
        new.nat_local, new.nat_remote = self.nat_local, self.nat_remote
        new.spawned = True
        new.state = IkeState.CREATED  # not usable until handed over
        self.manager.register(new)
        return new

    def _hand_over(self, new: IkeSA, now: float, await_delete: bool = False) -> None:
        """Move our CHILD SAs to ``new`` and retire this IKE SA (RFC 7296 2.18). With
        ``await_delete`` the peer is to delete this one; if it does not, we will."""
        for spi, child in list(self.children.items()):
            new.children[spi] = child
        self.children.clear()
        new.pending_children = self.pending_children
        for task in list(self.queue):
            if isinstance(task, CreateChildTask | DeleteChildTask):
                new.queue.append(task)
        self.queue = deque(t for t in self.queue if isinstance(t, DeleteIkeTask))
        self.replaced_by = new
        self.state = IkeState.REKEYED
        self.rekeying = None
        if await_delete:
            self.linger_until = now + IKE_REKEYED_LINGER
        new._establish(now, rekeyed_from=(self.spi_i, self.spi_r))
        self.log(
            f"IKE SA rekeyed: {self.spi_i.hex()}_i {self.spi_r.hex()}_r -> "
            f"{new.spi_i.hex()}_i {new.spi_r.hex()}_r"
        )
        new._run_queue(now)

    # ------------------------------------------------------------------ INFORMATIONAL responder

    def _respond_informational(self, payloads: tuple[Payload, ...], now: float) -> list[Payload]:
        deletes = find_all(payloads, Delete)
        for d in deletes:
            if d.protocol == ProtocolId.IKE:
                self._peer_deleted_ike(now)
                return []
        out: list[Payload] = []
        for d in deletes:
            if d.protocol not in (ProtocolId.ESP, ProtocolId.AH):
                continue
            ours: list[bytes] = []
            for spi in d.spis:
                spi_out = int.from_bytes(spi, "big")
                child = next((c for c in self.children.values() if c.spi_out == spi_out), None)
                if child is None:
                    continue
                if child.state is not ChildState.DELETING:
                    # RFC 7296 1.4.1: answer with our half, unless we are deleting it too.
                    ours.append(_spi_bytes(child.spi_in))
                del self.children[child.spi_in]
                self._child_down(child, "deleted by the peer")
                self._peer_deleted(child, now)
            if ours:
                out.append(Delete.child(d.protocol, ours))
        for n in find_all(payloads, Notify):
            if n.notify_type == NotifyType.AUTHENTICATION_FAILED:
                self.events.append(
                    AuthenticationFailed(self.name, "peer refused our AUTH", self.remote)
                )
                self._die("peer reported AUTHENTICATION_FAILED", now)
                return []
            if n.is_error:
                self.log(f"peer reported error notify {n.notify_type}", "warning")
        return out

    def _peer_deleted_ike(self, now: float) -> None:
        if self.peer_rekey is not None and self.state is IkeState.ESTABLISHED:
            # RFC 7296 2.8.1: the peer completed its rekey of this SA without noticing
            # ours (our request was delayed or lost): its new SA is the one.
            theirs, self.peer_rekey = self.peer_rekey[0], None
            if theirs.state is IkeState.CREATED:
                self.log("peer rekeyed the IKE SA while we did: using its new SA")
                self._hand_over(theirs, now)
        if self.state is IkeState.REKEYED:
            self._die("rekeyed", now)
        else:
            self.log("peer deleted the IKE SA")
            self._die("deleted by the peer", now)

    def _peer_deleted(self, child: ChildSA, now: float) -> None:
        """A pair the peer deleted may have been part of a rekey we are waiting on."""
        for other in self.children.values():
            if other.peer_rekey == child.spi_in:
                other.peer_rekey = None


# ====================================================================== tasks


class InitTask(Task):
    exchange = ExchangeType.IKE_SA_INIT
    name = "IKE_SA_INIT"

    def fail(self, sa: IkeSA, reason: str, now: float) -> None:
        sa.events.append(Log(sa.name, f"IKE_SA_INIT failed: {reason}", "warning"))


class AuthTask(Task):
    """IKE_AUTH with the first CHILD SA (RFC 7296 1.2)."""

    exchange = ExchangeType.IKE_AUTH
    name = "IKE_AUTH"

    def __init__(self, children: list[ChildConfig]) -> None:
        self.child = children[0] if children else None
        self.spi_in: int | None = None

    def build(self, sa: IkeSA, now: float) -> list[Payload]:
        idi = sa._id_payload(IDi)
        payloads: list[Payload] = [idi, *sa._cert_payloads()]
        if sa.config.initial_contact and not sa.manager.in_contact(sa):
            payloads.append(Notify(NotifyType.INITIAL_CONTACT))
        payloads += sa._certreq()
        if sa.config.remote_id is not None:
            payloads.append(IDr(int(sa.config.remote_id.type), sa.config.remote_id.data))
        payloads.append(sa._own_auth(idi.rest_of_payload))
        if self.child is not None:
            self.spi_in = sa.manager.allocate_spi(self.child.protocol)
            payloads += sa.child_request(self.child, self.spi_in, True, None)
        return payloads

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        if find_notify(payloads, NotifyType.AUTHENTICATION_FAILED) is not None:
            sa._fail_auth_or_die("the peer refused our authentication (AUTHENTICATION_FAILED)", now)
            return
        idr = find(payloads, IDr)
        if idr is None:
            sa._fail_auth_or_die("IKE_AUTH response without IDr", now)
            return
        try:
            sa.remote_id = sa._verify_peer(payloads, idr, sa.manager.wallclock())
        except AuthenticationError as exc:
            sa.log(f"authentication of the peer failed: {exc.reason}", "warning")
            # Tell the peer (RFC 7296 2.21.2) and drop the SA.
            datagrams = sa._seal(
                ExchangeType.INFORMATIONAL, sa.next_request_id, False,
                [Notify(NotifyType.AUTHENTICATION_FAILED)],
            )  # fmt: skip
            sa._send(datagrams, now)
            sa._fail_auth_or_die(f"authentication failed: {exc.reason}", now)
            return
        sa._establish(now)
        if self.child is not None and self.spi_in is not None:
            sa.accept_child_response(
                self.child, payloads, self.spi_in, sa.ni, sa.nr, None, True, now
            )
        for config in sa.pending_children:
            sa.queue.append(CreateChildTask(config))
        sa.pending_children = []
        sa.manager.ike_auth_done(sa)

    def fail(self, sa: IkeSA, reason: str, now: float) -> None:
        if self.spi_in is not None:
            sa.manager.release_spi(self.spi_in)


class CreateChildTask(Task):
    """CREATE_CHILD_SA for a new CHILD SA, or to rekey one (RFC 7296 1.3.1, 1.3.3)."""

    exchange = ExchangeType.CREATE_CHILD_SA
    name = "CREATE_CHILD_SA"

    def __init__(self, config: ChildConfig, rekey_of: ChildSA | None = None) -> None:
        self.config = config
        self.rekey_of = rekey_of
        self.spi_in: int | None = None
        self.ni = b""
        self.kex: KeyExchange | None = None
        self.group: DhId | None = None

    def build(self, sa: IkeSA, now: float) -> list[Payload] | None:
        old = self.rekey_of
        if old is not None and (
            old.spi_in not in sa.children or old.state is not ChildState.REKEYING
        ):
            self.fail(sa, "deleted or replaced meanwhile", now)
            return None
        if self.spi_in is None:
            self.spi_in = sa.manager.allocate_spi(self.config.protocol)
        self.ni = sa.random(NONCE_LEN)
        if self.config.pfs:
            group = self.group or self._previous_group() or first_dh_group(self.config.proposals)
            assert group is not None
            self.kex = new_key_exchange(group)
        payloads: list[Payload] = []
        if old is not None:
            payloads.append(Notify.rekey_sa(_protocol_id(old.protocol), _spi_bytes(old.spi_in)))
        request = sa.child_request(self.config, self.spi_in, False, self.kex)
        # RFC 7296 1.3.1 order: [N(REKEY_SA)], SA, Ni, [KEi], TSi, TSr (notifies may lead).
        sa_index = next(i for i, p in enumerate(request) if isinstance(p, SA))
        request.insert(sa_index + 1, Nonce(self.ni))
        return payloads + request

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        assert self.spi_in is not None
        old = self.rekey_of
        group = retry_group(payloads, self.config.proposals, self.kex)
        if group is not None:
            self.group = group
            sa.queue_task(self, now, first=True)
            return
        if find_notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
            sa.log(f"{self.config.name}: peer is busy (TEMPORARY_FAILURE); retrying later")
            sa.manager.release_spi(self.spi_in)
            self.spi_in = None
            if old is None:
                sa.manager.retry_later(sa, self.config, now)
            else:
                self._rekey_failed(sa, old, now, retry=(1.0, 5.0))
            return
        if find_notify(payloads, NotifyType.CHILD_SA_NOT_FOUND) is not None:
            sa.manager.release_spi(self.spi_in)
            self.spi_in = None
            if old is not None and old.spi_in in sa.children:
                # RFC 7296 2.25.1: the peer deleted it (its DELETE may still be on the way).
                sa.log(f"peer does not know CHILD SA 0x{old.spi_in:08x}; deleting it")
                old.state = ChildState.INSTALLED
                sa.delete_child(old.spi_in, now, reason="peer lost it")
            return
        nonce = find(payloads, Nonce)
        if nonce is None:
            if find(payloads, SA) is not None:
                sa.refuse_child(self.config, self.spi_in, "response without nonce", now)
            else:  # an error notify, reported by accept_child_response
                sa.accept_child_response(
                    self.config, payloads, self.spi_in, self.ni, b"", None, False, now
                )
            if old is not None:
                self._rekey_failed(sa, old, now)
            return
        new = sa.accept_child_response(
            self.config,
            payloads,
            self.spi_in,
            self.ni,
            nonce.data,
            self.kex,
            False,
            now,
            replaces=old.spi_in if old is not None else None,
        )
        self.kex = None
        if old is None:
            return
        if new is None:
            self._rekey_failed(sa, old, now)
            return
        self._resolve(sa, old, new, now)

    def _previous_group(self) -> DhId | None:
        """A rekey keeps the DH group of the pair it replaces, if we still accept it."""
        old = self.rekey_of
        if old is None or not old.proposal.dh:
            return None
        group = old.proposal.dh[0]
        return group if any(group in p.dh for p in self.config.proposals) else None

    @staticmethod
    def _rekey_failed(
        sa: IkeSA, old: ChildSA, now: float, retry: tuple[float, float] = (10.0, 20.0)
    ) -> None:
        """Our rekey of ``old`` did not happen. If the peer rekeyed it meanwhile (we
        answered its request while ours was out), the peer's pair replaces it and the peer
        deletes it; otherwise try again later."""
        if old.spi_in not in sa.children or old.state is not ChildState.REKEYING:
            return
        theirs = sa.children.get(old.peer_rekey) if old.peer_rekey is not None else None
        old.peer_rekey = None
        if theirs is not None:
            old.state = ChildState.REKEYED
            old.replaced_by = theirs.spi_in
            old.expire_at = now + REKEYED_LINGER
            return
        old.state = ChildState.INSTALLED
        old.rekey_at = now + sa.manager.rng.uniform(*retry)
        if old.expire_at is not None:
            old.rekey_at = min(old.rekey_at, max(now, old.expire_at - 1.0))

    def _resolve(self, sa: IkeSA, old: ChildSA, new: ChildSA, now: float) -> None:
        """Our rekey of ``old`` produced ``new``; settle a collision if there was one."""
        theirs = sa.children.get(old.peer_rekey) if old.peer_rekey is not None else None
        if theirs is None:
            # No collision (or the peer's new pair is already gone): delete the old pair.
            old.replaced_by = new.spi_in
            old.state = ChildState.DELETING
            sa.queue_task(DeleteChildTask([old], "rekeyed"), now)
            return
        # RFC 7296 2.8.1: the pair with the lowest of the four nonces is redundant and is
        # deleted by the end that created it; the old pair by the winner's creator.
        if new.lowest_nonce < theirs.lowest_nonce:
            sa.log(f"rekey collision on 0x{old.spi_in:08x}: the peer's rekey wins")
            new.state = ChildState.DELETING
            # Until the peer deletes the old pair we send on it again, then on theirs.
            new.replaced_by = old.spi_in if old.spi_in in sa.children else theirs.spi_in
            old.state = ChildState.REKEYED
            old.replaced_by = theirs.spi_in
            old.expire_at = now + REKEYED_LINGER
            sa.queue_task(DeleteChildTask([new], "redundant after a rekey collision"), now)
        else:
            sa.log(f"rekey collision on 0x{old.spi_in:08x}: our rekey wins")
            old.replaced_by = new.spi_in
            old.state = ChildState.DELETING
            # The peer deletes its redundant pair; if it does not, we do.
            theirs.state = ChildState.REKEYED
            theirs.replaced_by = new.spi_in
            theirs.expire_at = now + REKEYED_LINGER
            theirs.rekey_at = None
            sa.queue_task(DeleteChildTask([old], "rekeyed"), now)
        old.peer_rekey = None

    def fail(self, sa: IkeSA, reason: str, now: float) -> None:
        if self.spi_in is not None:
            sa.manager.release_spi(self.spi_in)
            self.spi_in = None


class DeleteChildTask(Task):
    """INFORMATIONAL with DELETE for CHILD SAs (RFC 7296 1.4.1)."""

    exchange = ExchangeType.INFORMATIONAL
    name = "DELETE CHILD"

    def __init__(self, children: list[ChildSA], reason: str = "deleted") -> None:
        self.children = children
        self.reason = reason
        self.spis: dict[Protocol, list[int]] = {}

    @classmethod
    def for_spis(cls, protocol: Protocol, spis: list[int]) -> DeleteChildTask:
        task = cls([], "refused")
        task.spis = {protocol: list(spis)}
        return task

    def build(self, sa: IkeSA, now: float) -> list[Payload] | None:
        by_protocol: dict[Protocol, list[int]] = {p: list(s) for p, s in self.spis.items()}
        for child in self.children:
            if child.spi_in in sa.children:
                by_protocol.setdefault(child.protocol, []).append(child.spi_in)
        payloads: list[Payload] = [
            Delete.child(_protocol_id(proto), [_spi_bytes(s) for s in spis])
            for proto, spis in by_protocol.items()
            if spis
        ]
        return payloads or None

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        self._remove(sa)

    def fail(self, sa: IkeSA, reason: str, now: float) -> None:
        self._remove(sa)

    def _remove(self, sa: IkeSA) -> None:
        for child in self.children:
            if sa.children.pop(child.spi_in, None) is not None:
                sa._child_down(child, self.reason)
        for spis in self.spis.values():
            for spi in spis:
                sa.manager.release_spi(spi)


class DeleteIkeTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    name = "DELETE IKE"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def build(self, sa: IkeSA, now: float) -> list[Payload]:
        return [Delete.ike()]

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        sa._die(self.reason, now)

    def fail(self, sa: IkeSA, reason: str, now: float) -> None:
        pass  # _die follows


class InformationalTask(Task):
    """An empty INFORMATIONAL request: the liveness check (DPD, RFC 7296 2.4)."""

    exchange = ExchangeType.INFORMATIONAL
    name = "DPD"

    def build(self, sa: IkeSA, now: float) -> list[Payload]:
        return []

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        pass


class RekeyIkeTask(Task):
    """CREATE_CHILD_SA that rekeys the IKE SA (RFC 7296 1.3.2, 2.18)."""

    exchange = ExchangeType.CREATE_CHILD_SA
    name = "REKEY IKE"

    def __init__(self) -> None:
        self.spi_i = b""
        self.ni = b""
        self.kex: KeyExchange | None = None
        self.group: DhId | None = None

    def build(self, sa: IkeSA, now: float) -> list[Payload] | None:
        if not sa.established or sa.rekeying is not self:
            return None
        if any(c.state is ChildState.REKEYING for c in sa.children.values()):
            # Wait for CHILD SA rekeys to finish (RFC 7296 2.25.2).
            sa.rekeying = None
            sa.rekey_at = now + 5.0
            return None
        self.spi_i = sa.manager.new_ike_spi()
        self.ni = sa.random(NONCE_LEN)
        current = sa.proposal.dh[0] if sa.proposal and sa.proposal.dh else None
        if current is None or not any(current in p.dh for p in sa.config.proposals):
            current = first_dh_group(sa.config.proposals)  # the policy changed
        group = self.group or current
        assert group is not None
        self.kex = new_key_exchange(group)
        return [
            to_sa_payload(prefer_group(sa.config.proposals, group), self.spi_i),
            Nonce(self.ni),
            KE(self.kex.group, self.kex.public_value),
        ]

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        assert self.kex is not None
        group = retry_group(payloads, sa.config.proposals, self.kex)
        if group is not None:
            self.group = group
            sa.queue_task(self, now, first=True)
            return
        if find_notify(payloads, NotifyType.TEMPORARY_FAILURE) is not None:
            self._abandon(sa, "the peer is busy (TEMPORARY_FAILURE)", now, retry=(1.0, 5.0))
            return
        sa_payload, nonce, ke = find(payloads, SA), find(payloads, Nonce), find(payloads, KE)
        if sa_payload is None or nonce is None or ke is None:
            self._abandon(sa, "response without SA, nonce or KE", now)
            return
        offers = from_sa_payload(sa_payload)
        if len(offers) != 1 or not accepts_choice(sa.config.proposals, offers[0][1]):
            self._abandon(sa, "the peer chose a proposal we did not offer", now)
            return
        _, chosen, spi_r = offers[0]
        if len(spi_r) != 8 or ke.dh_group != self.kex.group or chosen.dh[:1] != (self.kex.group,):
            self._abandon(sa, "bad SPI or key exchange in the response", now)
            return
        try:
            shared = self.kex.shared_secret(ke.data)
        except KeyExchangeError as exc:
            self._abandon(sa, f"bad KE value: {exc.reason}", now)
            return
        ours = sa._spawn_rekeyed(chosen, shared, self.ni, nonce.data, self.spi_i, spi_r, True, now)
        sa.rekeying = None
        collision = sa.peer_rekey
        sa.peer_rekey = None
        if collision is None:
            sa._hand_over(ours, now)
            sa.queue_task(DeleteIkeTask("rekeyed"), now, first=True)
            return
        theirs, their_ni, our_nr = collision
        # RFC 7296 2.8.1: the new SA with the lowest of the four nonces is redundant and
        # is deleted by its creator; the winner's creator deletes the old SA.
        if min(self.ni, nonce.data) < min(their_ni, our_nr):
            sa.log("IKE rekey collision: the peer's rekey wins")
            sa._hand_over(theirs, now, await_delete=True)
            ours.state = IkeState.ESTABLISHED
            ours.established_at = now
            ours.replaced_by = theirs
            ours.delete(now, reason="redundant after an IKE rekey collision")
        else:
            sa.log("IKE rekey collision: our rekey wins")
            sa._hand_over(ours, now)
            theirs.state = IkeState.REKEYED  # the peer deletes it; if not, we drop it
            theirs.replaced_by = ours
            theirs.linger_until = now + IKE_REKEYED_LINGER
            sa.queue_task(DeleteIkeTask("rekeyed"), now, first=True)

    def _abandon(
        self, sa: IkeSA, reason: str, now: float, retry: tuple[float, float] = (10.0, 10.0)
    ) -> None:
        """Our rekey did not happen. If the peer rekeyed the SA meanwhile (we answered its
        request while ours was out), its new SA is the one: it will delete the old SA.
        Otherwise try again later."""
        sa.rekeying = None
        self.kex = None
        collision, sa.peer_rekey = sa.peer_rekey, None
        if collision is not None and collision[0].state is IkeState.CREATED:
            sa.log(f"IKE rekey not done ({reason}); the peer's rekey stands")
            sa._hand_over(collision[0], now, await_delete=True)
            return
        sa.log(f"IKE rekey not done ({reason}); trying again later")
        sa.rekey_at = now + sa.manager.rng.uniform(*retry)

    def fail(self, sa: IkeSA, reason: str, now: float) -> None:
        sa.rekeying = None


def retry_group(
    payloads: tuple[Payload, ...], proposals: tuple[Proposal, ...], kex: KeyExchange | None
) -> DhId | None:
    """The DH group an INVALID_KE_PAYLOAD among ``payloads`` asks a CREATE_CHILD_SA to be
    retried with (RFC 7296 1.3, 3.10.1): one of ``proposals`` and not the group of ``kex``
    (the one just sent); None when there is no such notify or it asks for no usable group."""
    invalid_ke = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
    if invalid_ke is None:
        return None
    try:
        group = DhId(invalid_ke.data_u16())
    except (ValueError, MalformedPacket):
        return None
    if kex is not None and group == kex.group:
        return None
    return group if any(group in p.dh for p in proposals) else None


def prefer_group(proposals: tuple[Proposal, ...], group: DhId) -> list[Proposal]:
    """``proposals`` with ``group`` first wherever it appears, and the proposals holding it
    first: a rekey keeps the current group unless the peer insists (no INVALID_KE)."""
    out = [replace(p, dh=(group, *(g for g in p.dh if g != group))) if group in p.dh else p
           for p in proposals]  # fmt: skip
    return sorted(out, key=lambda p: group not in p.dh)


__all__ = [
    "IkeSA",
    "IkeState",
    "nat_hash",
]
