"""INFORMATIONAL exchanges (RFC 7296 1.4, 1.5, 2.4, 2.5) and the message-ID window
(RFC 7296 2.1-2.3): DELETE of CHILD and IKE SAs, liveness checks, unknown critical
payloads, retransmissions answered from the cached response, late responses ignored."""

from __future__ import annotations

import pytest

from hostsec.ike.v2.ikesa import IkeSA, Task
from hostsec.wire.ikev2 import (
    ExchangeType,
    Notify,
    NotifyType,
    Payload,
    UnknownPayload,
)

from .ike_harness import (
    Link,
    Packet,
    check_events,
    child,
    live_pair,
    peer_config,
    settle,
    teardown,
)
from .test_ike_child import _ssh

BOTH = pytest.mark.parametrize("by", ["a", "b"])


class Probe(Task):
    """An INFORMATIONAL request with the given payloads; keeps the response."""

    exchange = ExchangeType.INFORMATIONAL
    name = "probe"

    def __init__(self, payloads: list[Payload]) -> None:
        self.payloads = payloads
        self.response: tuple[Payload, ...] | None = None

    def build(self, sa: IkeSA, now: float) -> list[Payload]:
        return self.payloads

    def process(self, sa: IkeSA, payloads: tuple[Payload, ...], now: float) -> None:
        self.response = payloads


# ---------------------------------------------------------------------- DELETE


@BOTH
def test_delete_child(by: str) -> None:
    link = Link()
    link.establish()
    host = link.host(by)
    host.sa().delete_child(host.child().spi_in, link.now)
    link.run()
    for h in link.hosts():
        assert not h.live_children() and not h.sa().children
        (down,) = h.children_down()
        assert down.reason == ("deleted" if h is host else "deleted by the peer")
    teardown(link)


def test_both_ends_delete_the_same_child_at_once() -> None:
    link = Link()
    link.establish()
    link.a.sa().delete_child(link.a.child().spi_in, link.now)
    link.b.sa().delete_child(link.b.child().spi_in, link.now)
    link.run()
    for host in link.hosts():
        check_events(host)
        assert not host.live_children() and len(host.children_down()) == 1
    # Each answered the other's DELETE with an empty one: it was deleting the pair too.
    answers = [link.describe(p) for p in link.sent[-2:]]
    assert all(s.response and s.deletes == [] for s in answers)
    teardown(link)


def test_delete_child_by_name_through_the_manager() -> None:
    link = Link(
        peer_config(True, children=(child(), _ssh(True))),
        peer_config(False, children=(child(a_side=False), _ssh(False))),
    )
    link.establish()
    link.a.manager.delete_child("b", "ssh", link.now)
    link.run()
    live_pair(link, "telnet")
    assert not [e for e in link.a.live_children().values() if e.child == "ssh"]
    teardown(link)


@BOTH
def test_delete_ike_sa_takes_its_children(by: str) -> None:
    link = Link()
    link.establish()
    link.host(by).manager.delete_peer(link.host(by).peer, link.now)
    link.run()
    for host in link.hosts():
        assert not host.manager.sas and not host.live_children()
        (down,) = host.ike_down()
        assert down.reason in ("deleted by the operator", "deleted by the peer")
        check_events(host)


def test_both_ends_delete_the_ike_sa_at_once() -> None:
    link = Link()
    link.establish()
    link.a.manager.delete_peer("b", link.now)
    link.b.manager.delete_peer("a", link.now)
    link.run()
    for host in link.hosts():
        assert not host.manager.sas and len(host.ike_down()) == 1
        check_events(host)


def test_lost_delete_is_retransmitted() -> None:
    link = Link()
    link.establish()
    link.lose_first(lambda s: s.exchange == "INFORMATIONAL")
    link.a.manager.delete_peer("b", link.now)
    link.run()
    assert link.b.manager.sas
    link.advance(1.0)
    assert not link.a.manager.sas and not link.b.manager.sas


def test_unanswered_ike_delete_gives_up() -> None:
    link = Link()
    link.establish()
    link.drop = lambda p: p.to == "b"
    link.a.manager.delete_peer("b", link.now)
    link.advance(20.0)
    assert not link.a.manager.sas
    (down,) = link.a.ike_down()
    assert "unreachable" in down.reason
    assert not link.a.live_children()


# ---------------------------------------------------------------------- liveness


def test_dead_peer_is_detected() -> None:
    link = Link(peer_config(True, dpd=5.0))
    link.establish()
    link.drop = lambda p: p.to == "b"  # B is gone
    link.advance(5.0 + 1 + 2 + 4 + 8 - 0.5)
    assert not link.a.ike_down()
    link.advance(1.0)
    (down,) = link.a.ike_down()
    assert "unreachable" in down.reason
    assert not link.a.live_children() and not link.a.manager.sas
    check_events(link.a)


def test_liveness_check_of_a_live_peer() -> None:
    link = Link(peer_config(True, dpd=5.0), peer_config(False, dpd=None))
    link.establish()
    link.advance(12.0)
    checks = [link.describe(p) for p in link.sent if link.describe(p).exchange == "INFORMATIONAL"]
    assert len(checks) == 4  # two empty requests, two empty responses
    assert all(not s.payloads for s in checks)
    settle(link)


def test_traffic_from_the_peer_makes_liveness_checks_unneeded() -> None:
    link = Link(peer_config(True, dpd=5.0), peer_config(False, dpd=None))
    link.establish()
    for _ in range(6):
        link.advance(2.0)
        link.a.manager.note_traffic("b", link.now)
    assert not [p for p in link.sent if link.describe(p).exchange == "INFORMATIONAL"]


# ---------------------------------------------------------------------- unknown payloads


def test_unknown_critical_payload_in_a_request_is_refused() -> None:
    """RFC 7296 2.5: the request is rejected with UNSUPPORTED_CRITICAL_PAYLOAD naming
    the payload type; the exchange still consumes its message ID."""
    link = Link()
    link.establish()
    probe = Probe([UnknownPayload(200, b"secret sauce", critical=True)])
    link.b.sa().queue_task(probe, link.now)
    link.run()
    assert probe.response is not None
    (notify,) = probe.response
    assert isinstance(notify, Notify)
    assert notify.notify_type == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert notify.data == bytes([200])
    # The window moves on: the next request is answered.
    follow = Probe([])
    link.b.sa().queue_task(follow, link.now)
    link.run()
    assert follow.response == ()
    settle(link)


def test_unknown_non_critical_payload_is_ignored() -> None:
    link = Link()
    link.establish()
    probe = Probe([UnknownPayload(200, b"ignore me")])
    link.b.sa().queue_task(probe, link.now)
    link.run()
    assert probe.response == ()
    settle(link)


# ---------------------------------------------------------------------- message IDs


def test_one_request_outstanding_at_a_time() -> None:
    """RFC 7296 2.3 (window of one): three CHILD SAs asked for at once go one by one."""
    configs_a = tuple(
        child(f"c{i}", remote_ts=(_ts(100 + i),), esp="aes128gcm16") for i in range(3)
    )
    configs_b = tuple(
        child(f"c{i}", a_side=False, local_ts=(_ts(100 + i),), esp="aes128gcm16") for i in range(3)
    )
    link = Link(peer_config(True, children=configs_a), peer_config(False, children=configs_b))
    link.establish([configs_a[0]])
    link.a.manager.initiate("b", list(configs_a[1:]), link.now)
    while link.pending():
        requests = [link.describe(p) for p in link.pending("b") if not link.describe(p).response]
        assert len(requests) <= 1
        link.deliver_one()
    for c in configs_a:
        live_pair(link, c.name)
    ids = [link.describe(p).message_id for p in link.sent if p.to == "b"]
    assert ids == [0, 1, 2, 3]


def _ts(port: int) -> object:
    from hostsec.wire.selectors import TrafficSelector

    return TrafficSelector.from_network("198.51.100.2/32", 6, port)


def test_a_retransmitted_request_gets_the_cached_response() -> None:
    link = Link()
    link.establish()
    first = link.b.child().spi_in
    link.duplicate = lambda p: p.to == "b" and link.describe(p).exchange == "CREATE_CHILD_SA"
    link.a.sa().rekey_child(link.a.child().spi_in, link.now)
    link.run()
    responses = [p.data for p in link.sent if link.describe(p).exchange == "CREATE_CHILD_SA"]
    assert len(responses) == 3 and responses[1] == responses[2]  # request, two answers
    assert first not in link.b.live_children()
    settle(link)  # one new pair, not two
    assert len(link.b.children_up()) == 2


def test_a_late_response_is_ignored() -> None:
    """The response to a request comes after its retransmission was answered too: the
    second copy finds no exchange waiting for it."""
    link = Link(peer_config(True, dpd=5.0), peer_config(False, dpd=None))
    link.establish()
    held: list[Packet] = []
    link.hold = lambda p: p.to == "a" and not held and held.append(p) is None
    link.advance(6.5)  # the DPD request, its answer held, the retransmission answered
    assert held and link.b.sa().cached_response is not None
    before = list(link.a.events)
    link.release_held()
    link.run()
    assert link.a.events == before
    settle(link)


def test_an_old_response_does_not_answer_a_new_request() -> None:
    link = Link()
    link.establish()
    old_response = next(
        p for p in link.sent if link.describe(p).exchange == "IKE_AUTH" and p.to == "a"
    )
    link.a.sa().rekey_child(link.a.child().spi_in, link.now)
    link.deliver(Packet("a", old_response.data, old_response.src, old_response.dst))
    assert link.a.sa().active is not None  # still waiting for its own answer
    link.run()
    settle(link)


def test_requests_outside_the_window_are_dropped() -> None:
    link = Link()
    link.establish()
    sa_b = link.b.sa()
    for _ in range(2):
        sa_b.queue_task(Probe([]), link.now)
        link.run()
    assert link.a.sa().expected_request_id == 2
    for mid in (0, 3):  # an old one (not the last: that one is answered again), a future one
        data = sa_b._seal(ExchangeType.INFORMATIONAL, mid, False, [])[0]
        link.deliver(Packet("a", data, (link.b.address, 500), (link.a.address, 500)))
        assert not link.pending("b")
    settle(link)
