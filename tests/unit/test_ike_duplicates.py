"""Both ends initiate at once: two IKE SAs, and the redundant one is closed by its creator
(hostsec/ike/v2/duplicates.py; RFC 7296 2.8.1's nonce rule)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hostsec.ike.v2.config import ChildConfig
from hostsec.ike.v2.ikesa import IkeState
from hostsec.wire.selectors import TrafficSelector
from tests.unit.ike_harness import (
    A_ADDR,
    B_ADDR,
    Link,
    child,
    live_pair,
    peer_config,
    settle,
)


def web(a_side: bool) -> ChildConfig:
    a = TrafficSelector.from_network(f"{A_ADDR}/32", 6)
    b = TrafficSelector.from_network(f"{B_ADDR}/32", 6, 80)
    local, remote = ((a,), (b,)) if a_side else ((b,), (a,))
    return child("web", a_side, local_ts=local, remote_ts=remote)


def nonces(a_first: int, b_first: int) -> Callable[[str], int]:
    """First octets of each end's nonces in the order it makes them: A's Ni of its own SA
    (A starts first), B's Ni of its own SA, then each one's Nr of the other's SA."""
    made = {"a": 0, "b": 0}

    def first(name: str) -> int:
        made[name] += 1
        own = a_first if name == "a" else b_first
        return own if made[name] == 1 else 0x80

    return first


def both_initiate(link: Link) -> None:
    link.a.manager.initiate("b", list(link.a.manager.configs["b"].children), link.now)
    link.b.manager.initiate("a", list(link.b.manager.configs["a"].children), link.now)


def deletes_sent(link: Link, by: str) -> list[tuple[str, list[tuple[int, int]]]]:
    return [
        (s.exchange, [(int(proto), n) for proto, n in s.deletes])
        for p in link.sent
        if p.to != by and (s := link.describe(p)).deletes and not s.response
    ]


@pytest.mark.parametrize("redundant", ["a", "b"])
def test_the_sa_with_the_lowest_nonce_is_closed_by_its_initiator(redundant: str) -> None:
    link = Link(nonce_first_byte=nonces(0x00, 0x40) if redundant == "a" else nonces(0x40, 0x00))
    both_initiate(link)
    link.run()
    link.advance(10.0)  # the deleted SA's inbound halves linger, then go
    ua, ub = settle(link)  # one IKE SA, one pair, idle, coherent events
    (sa_a,) = [s for s in link.a.sas() if s.state is IkeState.ESTABLISHED]
    # The survivor is the SA the other end initiated; only the redundant one's creator
    # sent a DELETE (an IKE SA delete: protocol 1).
    assert sa_a.initiator is (redundant == "b")
    other = "b" if redundant == "a" else "a"
    assert deletes_sent(link, redundant) == [("INFORMATIONAL", [(1, 0)])]
    assert deletes_sent(link, other) == []
    for host in link.hosts():
        assert len(host.ike_up()) == 2 and len(host.ike_down()) == 1
        assert len(host.children_up()) == 2 and len(host.children_down()) == 1
    assert ua.spi_out == ub.spi_in


def test_a_flow_only_the_redundant_sa_carries_moves_to_the_survivor_first() -> None:
    # A starts telnet and web, B only telnet; A's SA is the redundant one: A creates web
    # on B's SA, and only then closes its own.
    a_config = peer_config(True, children=(child(a_side=True), web(True)))
    b_config = peer_config(False, children=(child(a_side=False), web(False)))
    link = Link(a_config=a_config, b_config=b_config, nonce_first_byte=nonces(0x00, 0x40))
    link.a.manager.initiate("b", list(a_config.children), link.now)
    link.b.manager.initiate("a", [child(a_side=False)], link.now)
    link.run()
    link.advance(10.0)
    for name in ("telnet", "web"):
        live_pair(link, name)  # exactly one live pair per flow on each side, matching
    (sa_a,) = [s for s in link.a.sas() if s.state is IkeState.ESTABLISHED]
    (sa_b,) = [s for s in link.b.sas() if s.state is IkeState.ESTABLISHED]
    assert not sa_a.initiator and sa_b.initiator
    assert sorted(c.name for c in sa_a.children.values()) == ["telnet", "web"]
    # The flows never lacked an SA on the way (the link checks after every datagram).
    assert link.check_flows
    # web's first pair (on A's SA) went down only after its replacement came up.
    ups = [e for e in link.a.children_up() if e.child == "web"]
    downs = [e for e in link.a.children_down() if e.child == "web"]
    assert len(ups) == 2 and len(downs) == 1
    assert link.a.events.index(ups[1]) < link.a.events.index(downs[0])


def test_the_survivor_carrying_more_flows_needs_nothing_created() -> None:
    # B's SA (the survivor) carries telnet and web, A's (redundant) only telnet.
    b_config = peer_config(False, children=(child(a_side=False), web(False)))
    a_config = peer_config(True, children=(child(a_side=True), web(True)))
    link = Link(a_config=a_config, b_config=b_config, nonce_first_byte=nonces(0x00, 0x40))
    link.a.manager.initiate("b", [child(a_side=True)], link.now)
    link.b.manager.initiate("a", list(link.b.manager.configs["a"].children), link.now)
    link.run()
    link.advance(10.0)
    for name in ("telnet", "web"):
        live_pair(link, name)
    assert len([e for e in link.a.children_up() if e.child == "web"]) == 1
    assert len(link.a.ike_down()) == 1


def test_a_lost_delete_is_retransmitted() -> None:
    link = Link(nonce_first_byte=nonces(0x00, 0x40))
    both_initiate(link)
    lost = link.lose_first(lambda s: bool(s.deletes) and not s.response)
    link.run()
    link.advance(30.0)
    assert len(lost) == 1
    settle(link)


def test_a_single_initiation_makes_no_plan() -> None:
    link = Link()
    link.establish()
    assert not link.a.manager.duplicates.plans and not link.b.manager.duplicates.plans
    settle(link)
    # A second CHILD SA on the same IKE SA is no duplicate IKE SA.
    link.a.manager.initiate("b", [child()], link.now)
    link.run()
    assert len(link.a.sas()) == 1


def test_a_flow_the_peer_refuses_everywhere_does_not_hold_the_plan_up() -> None:
    # A starts telnet and web, B knows only telnet: web is refused on A's SA already, so
    # A's SA carries telnet alone and is closed.
    a_config = peer_config(True, children=(child(a_side=True), web(True)))
    link = Link(a_config=a_config, nonce_first_byte=nonces(0x00, 0x40))
    both_initiate(link)
    link.run()
    link.advance(10.0)
    settle(link)
    assert not link.a.manager.duplicates.plans
    assert [e.child for e in link.a.child_failures()] == ["web"]


def test_the_plan_waits_for_the_flows_and_gives_up_on_refusal() -> None:
    a_config = peer_config(True, children=(child(a_side=True), web(True)))
    b_config = peer_config(False, children=(child(a_side=False), web(False)))
    link = Link(a_config=a_config, b_config=b_config, nonce_first_byte=nonces(0x00, 0x40))
    link.a.manager.initiate("b", list(a_config.children), link.now)
    sa_b = link.b.manager.initiate("a", [child(a_side=False)], link.now)
    # Right after web came up on A's SA, before A asks for it on B's: B's policy changes,
    # its SA no longer takes web.
    for _ in range(200):
        if any(e.child == "web" for e in link.a.children_up()):
            break
        assert link.deliver_one()
    sa_b.config = peer_config(False, children=(child(a_side=False),))
    link.run()
    link.advance(10.0)
    # Web lives on A's SA only: that SA stays, the plan is given up, both SAs are up.
    for host in link.hosts():
        assert len([s for s in host.sas() if s.state is IkeState.ESTABLISHED]) == 2
    live_pair(link, "web")
    assert not link.a.manager.duplicates.plans
    assert any("keeping this duplicate" in getattr(e, "message", "") for e in link.a.events)


def test_no_initial_contact_while_another_sa_with_the_peer_exists() -> None:
    """B's IKE_SA_INIT is delayed until A's SA is up at both ends: B's IKE_AUTH then must
    not claim INITIAL_CONTACT (RFC 7296 2.4), or A would drop the SA B still uses."""
    link = Link(nonce_first_byte=nonces(0x40, 0x00))
    link.hold = lambda p: (
        p.to == "a" and (s := link.describe(p)).exchange == "IKE_SA_INIT" and not s.response
    )
    both_initiate(link)
    link.run()
    assert len(link.a.ike_up()) == 1 and len(link.b.ike_up()) == 1  # A's SA
    link.hold = lambda _p: False
    link.release_held()
    link.run()
    auths = [
        s
        for p in link.sent
        if p.to == "a" and (s := link.describe(p)).exchange == "IKE_AUTH" and not s.response
    ]
    assert len(auths) == 1 and "INITIAL_CONTACT" not in auths[0].notifies
    link.advance(10.0)
    settle(link)
    for host in link.hosts():
        assert all("INITIAL_CONTACT" not in e.reason for e in host.ike_down())


def test_initial_contact_on_a_first_contact() -> None:
    link = Link()
    link.establish()
    (auth,) = [
        s for p in link.sent if (s := link.describe(p)).exchange == "IKE_AUTH" and not s.response
    ]
    assert "INITIAL_CONTACT" in auth.notifies
