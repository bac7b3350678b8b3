"""A NAT in front of the peer changes its mapping (RFC 7296 2.23, RFC 3948), in memory.

The host that is not behind the NAT (B) follows the peer's new public address and port
after an integrity-checked, new IKE message from there, and says so with one
:class:`IkeEndpointChanged`; what it sends afterwards (responses, requests, new CHILD SAs'
ESP-in-UDP ports) goes to the new endpoint. A forged or replayed datagram from another
port does not move it, and neither does the host behind the NAT (A) ever follow.
"""

from __future__ import annotations

import dataclasses

from hostsec.ike.v2.events import IkeEndpointChanged
from hostsec.ike.v2.ikesa import InformationalTask
from hostsec.wire.udpencap import NAT_KEEPALIVE, NAT_T_PORT
from tests.unit.ike_harness import (
    A_ADDR,
    B_ADDR,
    NAT_ADDR,
    Link,
    child,
    peer_config,
    settle,
)


def _nat_link() -> Link:
    link = Link(
        peer_config(True, dpd=None),
        # B's policy names the address it sees, A's public one, as the agent's does.
        peer_config(
            False, remote=NAT_ADDR, dpd=None, children=(child(a_side=False, a_addr=NAT_ADDR),)
        ),
        nat=True,
    )
    link.establish()
    return link


def _moves(link: Link, name: str) -> list[IkeEndpointChanged]:
    return link.host(name).of(IkeEndpointChanged)


def _liveness_check(link: Link, by: str) -> None:
    """Queue an empty INFORMATIONAL request (a DPD) on ``by``'s IKE SA."""
    sa = link.host(by).sa()
    sa.queue_task(InformationalTask(), link.now)
    link.collect()


def test_a_new_mapping_is_followed_after_a_verified_request() -> None:
    link = _nat_link()
    assert link.nat is not None
    old = link.b.sa().remote
    assert old == link.nat.out[(A_ADDR, NAT_T_PORT)]
    link.nat.rebind()
    _liveness_check(link, "a")  # A's request leaves through a new mapping
    request = link.take("b")
    assert request.src[0] == NAT_ADDR and request.src != old
    link.deliver(request)
    new = link.nat.out[(A_ADDR, NAT_T_PORT)]
    assert request.src == new
    assert link.b.sa().remote == new
    (moved,) = _moves(link, "b")
    sa_b = link.b.sa()
    assert (moved.ike, moved.spi_i, moved.spi_r) == ("a", sa_b.spi_i, sa_b.spi_r)
    assert moved.old == old and moved.new == new
    # B's response goes to the new mapping (the old one is gone: the NAT would drop it).
    (response,) = link.pending("a")
    assert response.dst == (A_ADDR, NAT_T_PORT) and link.describe(response).response
    link.run()
    assert link.a.sa().active is None, "A's liveness check was answered"
    # Requests from B go there too: B rekeys the CHILD SA, whose new pair's ESP-in-UDP
    # goes to the new port.
    first = link.b.child()
    link.b.sa().rekey_child(first.spi_in, link.now)
    link.run()
    (rekeyed,) = [e for e in link.b.children_up() if e.replaces == first.spi_in]
    assert rekeyed.encapsulation == (NAT_T_PORT, new[1]) and rekeyed.remote == NAT_ADDR
    link.advance(30.0)
    assert not _moves(link, "a") and len(_moves(link, "b")) == 1
    settle(link)


def test_a_new_mapping_is_followed_after_a_verified_response() -> None:
    link = _nat_link()
    assert link.nat is not None
    old = link.b.sa().remote
    _liveness_check(link, "b")
    request = link.take("a")  # B's request reaches A through the old mapping ...
    link.a.manager.handle_datagram(request.data, request.src, request.dst, link.now)
    link.nat.rebind()  # ... which then expires: A's response gets a new one
    (response,) = link.pending("b")
    assert response.src != old
    link.run()
    new = link.nat.out[(A_ADDR, NAT_T_PORT)]
    assert link.b.sa().remote == new and link.b.sa().active is None
    (moved,) = _moves(link, "b")
    assert moved.old == old and moved.new == new
    settle(link)


def test_follows_the_address_too() -> None:
    link = _nat_link()
    assert link.nat is not None
    _liveness_check(link, "a")
    request = link.take("b")
    elsewhere = (NAT_ADDR + 1, 61000)  # another public address of the NAT
    link.deliver(dataclasses.replace(request, src=elsewhere))
    assert link.b.sa().remote == elsewhere
    (moved,) = _moves(link, "b")
    assert moved.new == elsewhere


def test_a_forged_datagram_from_another_port_does_not_move_it() -> None:
    link = _nat_link()
    old = link.b.sa().remote
    _liveness_check(link, "a")
    request = link.take("b")
    attacker = (NAT_ADDR, 55555)
    # The genuine request with its ICV broken, from the attacker's port.
    forged = bytearray(request.data)
    forged[-1] ^= 0x01
    link.deliver(dataclasses.replace(request, data=bytes(forged), src=attacker))
    # A NAT keepalive and garbage on the NAT-T port from there.
    link.deliver(dataclasses.replace(request, data=NAT_KEEPALIVE, src=attacker))
    link.deliver(dataclasses.replace(request, data=b"\x00" * 4 + b"\x01" * 40, src=attacker))
    assert link.b.sa().remote == old and not _moves(link, "b")
    assert not link.pending("a"), "nothing answered to the forgeries"
    # The genuine request, still from the old mapping, is answered there.
    link.deliver(request)
    link.run()
    assert link.a.sa().active is None
    # A replay of that (now old) request from another port is answered from the cache
    # (RFC 7296 2.1) but moves nothing: it is not a new message.
    link.deliver(dataclasses.replace(request, src=attacker))
    assert link.b.sa().remote == old and not _moves(link, "b")
    link.in_flight.clear()  # the cached response went to the old mapping
    settle(link)


def test_an_old_response_replayed_from_another_port_does_not_move_it() -> None:
    link = _nat_link()
    old = link.b.sa().remote
    _liveness_check(link, "b")
    link.step("a")
    response = link.take("b")
    link.deliver(response)
    assert link.b.sa().active is None
    link.deliver(dataclasses.replace(response, src=(NAT_ADDR, 55555)))
    assert link.b.sa().remote == old and not _moves(link, "b")


def test_the_host_behind_the_nat_never_follows() -> None:
    link = _nat_link()
    assert link.a.sa().nat_local
    _liveness_check(link, "b")
    request = link.take("a")
    link.deliver(dataclasses.replace(request, src=(B_ADDR, 4501)))  # verified, other port
    assert link.a.sa().remote == (B_ADDR, NAT_T_PORT) and not _moves(link, "a")
    link.run()  # A answers where it always sends: B gets the response
    assert link.b.sa().active is None


def test_no_nat_no_following() -> None:
    link = Link()
    link.establish()
    assert not link.b.sa().nat_remote
    old = link.b.sa().remote
    _liveness_check(link, "a")
    request = link.take("b")
    link.deliver(dataclasses.replace(request, src=(A_ADDR, 501)))
    assert link.b.sa().remote == old and not _moves(link, "b")


def test_both_behind_nats_neither_follows() -> None:
    # Encapsulation forced on both ends: each thinks it is behind a NAT, and so is the peer.
    link = Link(
        peer_config(True, dpd=None, encapsulation="force"),
        peer_config(False, dpd=None, encapsulation="force"),
    )
    link.establish()
    sa_b = link.b.sa()
    assert sa_b.nat_local and sa_b.nat_remote
    old = sa_b.remote
    _liveness_check(link, "a")
    request = link.take("b")
    link.deliver(dataclasses.replace(request, src=(A_ADDR, 40001)))
    assert link.b.sa().remote == old and not _moves(link, "b")
