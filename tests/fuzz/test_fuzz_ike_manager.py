"""Fuzz the IKEv2 state machine: whatever arrives, IkeManager never raises and never hits
an internal error; bad input only counts drops (or gets the answer RFC 7296 asks for).

Three depths:
- raw datagrams and mutations of real ones, to a fresh agent and to one with an
  established IKE SA (they mostly die at parsing or at the ICV);
- real requests and responses of every exchange, decrypted, their payload lists mutated
  (payloads dropped, duplicated, replaced by arbitrary ones, reordered) and sealed again
  with the peer's keys, so that they reach the exchange handlers themselves. Events must
  stay coherent (a pair comes up once and goes down at most once).

Bounded: a few seconds per test (HOSTSEC_FUZZ_EXAMPLES scales a deeper run).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostsec.ike.v2.manager import IkeManager
from hostsec.wire.ikev2 import ExchangeType, Payload
from hostsec.wire.udpencap import NON_ESP_MARKER

from ..unit.ike_harness import A_ADDR, B_ADDR, Link, Packet, check_events, peer_config
from ..unit.ikev2_strategies import clear_payloads

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("HOSTSEC_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _no_internal_errors(*managers: IkeManager) -> None:
    for m in managers:
        assert not [k for k in m.drops if k.startswith("internal error")], m.drops


# ---------------------------------------------------------------------- reference traffic


@functools.cache
def _reference() -> tuple[list[Packet], dict[str, list[tuple[int, bool, list[Payload]]]]]:
    """Every datagram of a life with all exchanges, and their decrypted payload lists by
    exchange: {exchange name: [(exchange type, is response, payloads)]}."""
    from ..unit.test_ike_child import _ssh
    from ..unit.test_ike_loss import _life

    link = Link(
        peer_config(True, children=(_child_pfs(True), _ssh(True, "aes128gcm16-ecp256"))),
        peer_config(False, children=(_child_pfs(False), _ssh(False, "aes128gcm16-ecp256"))),
    )
    _life(link)
    link.a.manager.delete_peer("b", link.now)
    link.run()
    templates: dict[str, list[tuple[int, bool, list[Payload]]]] = {}
    for p in link.sent:
        s = link.describe(p)
        if s.fragment is None and (s.decrypted or not s.encrypted):
            kind = ExchangeType[s.exchange]
            templates.setdefault(s.exchange, []).append((int(kind), s.response, s.objects))
    return list(link.sent), templates


def _child_pfs(a_side: bool) -> Any:
    from ..unit.ike_harness import child

    return child(a_side=a_side, esp="aes128gcm16-ecp256")


def _established() -> Link:
    link = Link(peer_config(True, dpd=5.0), peer_config(False, dpd=5.0))
    link.establish()
    link.check_flows = False  # forged messages: B does not know what A was told
    return link


# ---------------------------------------------------------------------- raw bytes


@FUZZ
@given(data=st.binary(max_size=600), port=st.sampled_from([500, 4500]), marker=st.booleans())
def test_random_datagrams(data: bytes, port: int, marker: bool) -> None:
    manager = IkeManager([peer_config(False)])
    payload = (NON_ESP_MARKER + data) if marker else data
    manager.handle_datagram(payload, (A_ADDR, port), (B_ADDR, port), 0.0)
    manager.handle_timer(100.0)
    manager.poll()
    _no_internal_errors(manager)


@st.composite
def _mutated(draw: st.DrawFn, datagrams: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(datagrams)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        at = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            del data[at:]
        elif op == 2:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
    return bytes(data)


def _raw_reference() -> list[bytes]:
    return [p.ike for p in _reference()[0]]


@FUZZ
@given(data=st.data())
def test_mutated_datagrams_to_a_fresh_responder(data: st.DataObject) -> None:
    datagram = data.draw(_mutated(_raw_reference()))
    manager = IkeManager([peer_config(False)])
    manager.handle_datagram(datagram, (A_ADDR, 500), (B_ADDR, 500), 0.0)
    manager.handle_timer(100.0)
    manager.poll()
    _no_internal_errors(manager)


@FUZZ
@given(data=st.data())
def test_mutated_datagrams_to_an_established_sa(data: st.DataObject) -> None:
    link = _established()
    sa = link.a.sa()
    datagram = bytearray(data.draw(_mutated(_raw_reference())))
    if len(datagram) >= 16 and data.draw(st.booleans()):
        datagram[:16] = sa.spi_i + sa.spi_r  # aim at the live SA
    link.deliver(Packet("a", bytes(datagram), (B_ADDR, 500), (A_ADDR, 500)))
    link.advance(20.0)
    _no_internal_errors(link.a.manager, link.b.manager)
    for host in link.hosts():
        check_events(host)


# ---------------------------------------------------------------------- inside the SK payload


@st.composite
def _payload_list(draw: st.DrawFn, template: list[Payload]) -> list[Payload]:
    payloads = list(template)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 4))
        at = draw(st.integers(0, max(len(payloads) - 1, 0)))
        if op == 0 and payloads:
            del payloads[at]
        elif op == 1:
            payloads.insert(at, draw(clear_payloads))
        elif op == 2 and payloads:
            payloads[at] = draw(clear_payloads)
        elif op == 3 and payloads:
            payloads.insert(at, payloads[at])
        elif payloads:
            payloads = draw(st.permutations(payloads))
    return payloads


def _templates(response: bool) -> list[tuple[int, list[Payload]]]:
    out = []
    for name, items in _reference()[1].items():
        if name == "IKE_SA_INIT":
            continue
        out += [(kind, payloads) for kind, resp, payloads in items if resp == response]
    return out


def _deliver_sealed(
    link: Link, kind: int, message_id: int, response: bool, payloads: list[Payload]
) -> None:
    sa_b = link.b.sa()
    try:
        datagrams = sa_b._seal(kind, message_id, response, payloads)
    except ValueError:
        return  # not encodable (e.g. a payload over 64 KB)
    for d in datagrams:
        link.deliver(Packet("a", sa_b._wire(d), sa_b.local, sa_b.remote))


@FUZZ
@given(data=st.data())
def test_mutated_requests_inside_an_established_sa(data: st.DataObject) -> None:
    link = _established()
    kind, template = data.draw(st.sampled_from(_templates(response=False)))
    payloads = data.draw(_payload_list(template))
    if data.draw(st.booleans()):
        kind = data.draw(st.sampled_from([34, 35, 36, 37, data.draw(st.integers(0, 255))]))
    message_id = link.a.sa().expected_request_id
    _deliver_sealed(link, kind, message_id, False, payloads)
    link.advance(40.0)
    _no_internal_errors(link.a.manager, link.b.manager)
    for host in link.hosts():
        check_events(host)


_STARTERS = ["child", "rekey_child", "rekey_ike", "delete_child", "dpd"]


@FUZZ
@given(data=st.data())
def test_mutated_responses_inside_an_established_sa(data: st.DataObject) -> None:
    """A starts an exchange; what comes back is a mutated response of any exchange."""
    from ..unit.test_ike_child import _ssh

    link = Link(
        peer_config(True, children=(_child_pfs(True), _ssh(True, "aes128gcm16-ecp256"))),
        peer_config(False, children=(_child_pfs(False), _ssh(False, "aes128gcm16-ecp256"))),
    )
    link.establish([link.a.manager.configs["b"].children[0]])
    link.check_flows = False
    sa = link.a.sa()
    starter = data.draw(st.sampled_from(_STARTERS))
    spi = next(iter(sa.children), 0)
    if starter == "child":
        link.a.manager.initiate("b", [link.a.manager.configs["b"].child("ssh")], link.now)
    elif starter == "rekey_child" and spi:
        sa.rekey_child(spi, link.now)
    elif starter == "rekey_ike":
        sa.rekey(link.now)
    elif starter == "delete_child" and spi:
        sa.delete_child(spi, link.now)
    else:
        link.a.sa().queue_task(_dpd(), link.now)
    link.in_flight.clear()  # the request never reaches B
    active = sa.active
    assert active is not None
    kind, template = data.draw(st.sampled_from(_templates(response=True)))
    if data.draw(st.booleans()):
        kind = active.exchange
    payloads = data.draw(_payload_list(template))
    _deliver_sealed(link, kind, active.message_id, True, payloads)
    link.advance(40.0)
    _no_internal_errors(link.a.manager, link.b.manager)
    for host in link.hosts():
        check_events(host)


def _dpd() -> Any:
    from hostsec.ike.v2.ikesa import InformationalTask

    return InformationalTask()


@FUZZ
@given(data=st.data())
def test_mutated_ike_auth_to_a_half_open_responder(data: st.DataObject) -> None:
    """B answered IKE_SA_INIT; A's IKE_AUTH is replaced by a mutated one, sealed with the
    right keys: B never raises, and either refuses it or comes up coherently."""
    link = Link()
    link.check_flows = False
    link.a.manager.initiate("b", list(link.a.manager.configs["b"].children), link.now)
    link.step("b")  # IKE_SA_INIT
    link.step("a")  # its response: A sends IKE_AUTH
    link.in_flight.clear()
    sa_a = next(iter(link.a.manager.sas.values()))
    (template,) = [p for k, r, p in _reference()[1]["IKE_AUTH"] if not r][:1]
    payloads = data.draw(_payload_list(template))
    datagrams = sa_a._seal(ExchangeType.IKE_AUTH, 1, False, payloads)
    for d in datagrams:
        link.deliver(Packet("b", d, sa_a.local, sa_a.remote))
    link.advance(40.0)
    _no_internal_errors(link.a.manager, link.b.manager)
    check_events(link.b)


@FUZZ
@given(data=st.data())
def test_mutated_ike_sa_init_requests(data: st.DataObject) -> None:
    """IKE_SA_INIT requests with their (clear) payload lists mutated."""
    from hostsec.wire.ikev2 import IKEHeader, encode_message

    items = [p for _k, r, p in _reference()[1]["IKE_SA_INIT"] if not r]
    payloads = data.draw(_payload_list(data.draw(st.sampled_from(items))))
    header = IKEHeader(os.urandom(8), b"\x00" * 8, 34, 0, 0x08)
    try:
        datagram = encode_message(header, payloads)
    except ValueError:
        return
    manager = IkeManager([peer_config(False)], cookie_threshold=data.draw(st.sampled_from([0, 10])))
    manager.handle_datagram(datagram, (A_ADDR, 500), (B_ADDR, 500), 0.0)
    manager.handle_timer(100.0)
    manager.poll()
    _no_internal_errors(manager)
