"""IKE SA rekeying (RFC 7296 1.3.2, 2.8.1, 2.18, 2.25): the scenarios of strongSwan's
``src/libcharon/tests/suites/test_ike_rekey.c``, one test each, message by message.

Host A is always the original initiator of the IKE SA. In every scenario: both ends end
with one IKE SA (the same, same keys) carrying the one CHILD SA pair, which is never torn
down or re-created by the rekey; an SA made by a rekey that loses a collision is never
announced (no IkeSAUp, no IkeSADown); the replaced IKE SA goes down exactly once.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from hostsec.crypto.proposals import Protocol, parse_proposals
from hostsec.crypto.transforms import DhId
from hostsec.ike.v2.ikesa import IKE_REKEYED_LINGER, IkeSA, IkeState

from .ike_harness import (
    WALLCLOCK,
    Host,
    Link,
    check_ike_pair,
    peer_config,
    settle,
    teardown,
)

BOTH = pytest.mark.parametrize("rekeyer", ["a", "b"])

# A's rekey makes nonces 0 (Ni) and 2 (Nr), B's 1 (Ni) and 3 (Nr); the new SA with the
# lowest nonce is redundant.
COLLISIONS = [
    ((0x00, 0xFF, 0xFF, 0xFF), "b"),
    ((0xFF, 0x00, 0xFF, 0xFF), "a"),
    ((0xFF, 0xFF, 0x00, 0xFF), "b"),
    ((0xFF, 0xFF, 0xFF, 0x00), "a"),
]
THREE_NONCES = [(0x00, 0xFF, 0xFF), (0xFF, 0x00, 0xFF), (0xFF, 0xFF, 0x00)]


def _rekey(link: Link, host: Host) -> IkeSA:
    sa = host.sa()
    sa.rekey(link.now)
    assert sa.rekeying is not None
    return sa


def _ike_events(link: Link, ups: int = 2, downs: int = 1) -> None:
    for host in link.hosts():
        assert len(host.ike_up()) == ups and len(host.ike_down()) == downs, host.name
        # The CHILD SA moved: it was never taken down or brought up again.
        assert len(host.children_up()) == 1 and not host.children_down(), host.name
    (down_a,) = link.a.ike_down()[-1:]
    assert down_a.reason == "rekeyed"


def _survivor_made_by(link: Link, winner: str) -> None:
    """The IKE SA left is the one ``winner``'s rekey made (its original initiator)."""
    for host in link.hosts():
        assert host.sa().initiator == (host.name == winner), host.name


def _done(link: Link) -> None:
    settle(link)
    _ike_events(link)
    teardown(link)


def _policy(host: Host, ike: str) -> None:
    """The host's policy changes (as the agent would apply a new file) to ``ike``."""
    sa = host.sa()
    sa.config = replace(sa.config, proposals=tuple(parse_proposals(ike.split(","), Protocol.IKE)))


# ---------------------------------------------------------------------- regular


@BOTH
def test_regular(rekeyer: str) -> None:
    """strongSwan test_regular."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    old_x, old_y = x.sa(), y.sa()
    _rekey(link, x)
    # CREATE_CHILD_SA { SA, Ni, KEi } -->
    request = link.step(y.name)
    assert "REKEY_SA" not in link.describe(request).notifies
    assert old_y.state is IkeState.REKEYED and not old_y.children
    new_y = y.sa()
    assert new_y is not old_y and new_y.established and len(new_y.children) == 1
    # <-- CREATE_CHILD_SA { SA, Nr, KEr }
    link.step(x.name)
    assert old_x.state is IkeState.REKEYED and not old_x.children
    assert x.sa().id == new_y.id and len(x.sa().children) == 1
    # INFORMATIONAL { D } -->
    assert link.describe(link.step(y.name)).deletes == [(1, 0)]
    assert old_y.dead
    # <-- INFORMATIONAL { }
    link.step(x.name)
    assert old_x.dead
    (up,) = x.ike_up()[1:]
    assert up.rekeyed_from == old_x.id
    # The new SA is the rekeyer's: it is its original initiator (RFC 7296 2.18).
    assert x.sa().initiator and not y.sa().initiator
    _done(link)


@BOTH
def test_regular_ke_invalid(rekeyer: str) -> None:
    """strongSwan test_regular_ke_invalid: the responder's policy no longer accepts the
    current DH group: INVALID_KE_PAYLOAD, then the rekey with the group it wants."""
    both = "aes128gcm16-prfsha256-ecp256-curve25519"
    link = Link(peer_config(True, ike=both), peer_config(False, ike=both))
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    assert x.sa().proposal.dh == (DhId.ECP_256,)  # type: ignore[union-attr]
    _policy(y, "aes128gcm16-prfsha256-curve25519")
    _rekey(link, x)
    link.step(y.name)
    assert y.sa().established and y.sa().state is IkeState.ESTABLISHED
    assert link.describe(link.step(x.name)).notifies == ["INVALID_KE_PAYLOAD"]
    assert x.sa().rekeying is not None
    link.run()
    assert x.sa().proposal.dh == (DhId.CURVE25519,)  # type: ignore[union-attr]
    _done(link)


def test_rekey_keeps_the_current_group() -> None:
    """Proposals listing several groups: the rekey offers the current one first, so the
    peer (choosing in the initiator's order) takes it without INVALID_KE_PAYLOAD."""
    link = Link(
        peer_config(True, ike="aes128gcm16-prfsha256-ecp256-curve25519"),
        peer_config(False, ike="aes128gcm16-prfsha256-curve25519-ecp256"),
    )
    link.establish()
    # B's first group is curve25519, but A chose (A's order) ecp256.
    _rekey(link, link.b)
    link.run()
    assert all("INVALID_KE_PAYLOAD" not in link.describe(p).notifies for p in link.sent)
    assert link.b.sa().proposal.dh == (DhId.ECP_256,)  # type: ignore[union-attr]
    _done(link)


# ---------------------------------------------------------------------- collisions


def _both_rekey(link: Link, nonces: tuple[int, ...]) -> None:
    link.nonce_byte = nonces[0]
    _rekey(link, link.a)
    link.nonce_byte = nonces[1]
    _rekey(link, link.b)


@pytest.mark.parametrize(("nonces", "winner"), COLLISIONS)
def test_collision(nonces: tuple[int, ...], winner: str) -> None:
    """strongSwan test_collision: both ends rekey the IKE SA at once."""
    link = Link()
    link.establish()
    _both_rekey(link, nonces)
    link.nonce_byte = nonces[2]
    link.step("b")
    link.nonce_byte = nonces[3]
    link.step("a")
    # Neither new SA is in use before the responses settle the collision.
    for host in link.hosts():
        assert any(s.state is IkeState.CREATED for s in host.sas())
        assert len(host.ike_up()) == 1
    link.step("a")
    link.step("b")
    link.run()
    _survivor_made_by(link, winner)
    _done(link)


@pytest.mark.parametrize(("nonces", "winner"), COLLISIONS)
def test_collision_delayed_response(nonces: tuple[int, ...], winner: str) -> None:
    """strongSwan test_collision_delayed_response: B's response to A's rekey arrives after
    B's DELETE (of the old SA if B won, of its redundant SA if it lost)."""
    link = Link()
    link.establish()
    _both_rekey(link, nonces)
    link.nonce_byte = nonces[2]
    link.step("b")
    link.nonce_byte = nonces[3]
    link.step("a")
    delayed = link.take("a")  # B's response to A
    link.step("b")  # A's response: B settles and sends its DELETE
    link.step("a")  # the DELETE: if B won, A takes B's new SA and drops the old one;
    #                 if B lost, it deletes its redundant SA, which A does not use yet
    link.run()
    link.put(delayed)  # too late if B won (the old SA is gone)
    link.advance(IKE_REKEYED_LINGER + 1)  # retransmissions, and the leftovers go
    _survivor_made_by(link, winner)
    _done(link)


@pytest.mark.parametrize("nonces", THREE_NONCES)
def test_collision_dropped_request(nonces: tuple[int, ...]) -> None:
    """strongSwan test_collision_dropped_request: A's request is lost; B's rekey completes
    and its DELETE of the old SA tells A that B's new SA is the one."""
    link = Link()
    link.establish()
    _both_rekey(link, nonces)
    link.take("b")  # A's request: lost
    link.nonce_byte = nonces[2]
    link.step("a")  # B's request: A answers (and waits for its own response)
    assert len(link.a.ike_up()) == 1
    link.step("b")  # B: rekey done, DELETE of the old SA
    link.step("a")
    assert len(link.a.ike_up()) == 2
    link.run()
    _survivor_made_by(link, "b")
    _done(link)


@pytest.mark.parametrize("nonces", THREE_NONCES)
def test_collision_delayed_request(nonces: tuple[int, ...]) -> None:
    """strongSwan test_collision_delayed_request: A's request arrives after B finished:
    TEMPORARY_FAILURE, which A never sees because B's DELETE took the old SA first."""
    link = Link()
    link.establish()
    _both_rekey(link, nonces)
    delayed = link.take("b")
    link.nonce_byte = nonces[2]
    link.step("a")
    link.step("b")  # B is done and deletes the old SA
    link.deliver(delayed)
    assert link.describe(link.pending("a")[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.step("a")  # the DELETE: A takes B's SA
    link.run()  # the TEMPORARY_FAILURE for an SA that is gone
    _survivor_made_by(link, "b")
    assert link.a.manager.drops.get("unknown IKE SA") == 1
    _done(link)


@pytest.mark.parametrize("nonces", THREE_NONCES)
def test_collision_delayed_request_and_delete(nonces: tuple[int, ...]) -> None:
    """strongSwan test_collision_delayed_request_and_delete: the TEMPORARY_FAILURE comes
    before the DELETE; A then completes B's rekey and does not try again."""
    link = Link()
    link.establish()
    _both_rekey(link, nonces)
    delayed = link.take("b")
    link.nonce_byte = nonces[2]
    link.step("a")
    link.step("b")
    link.deliver(delayed)
    delete = link.take("a", link.find("a", lambda s: not s.response))
    link.step("a")  # TEMPORARY_FAILURE: B's rekey stands
    assert len(link.a.ike_up()) == 2 and link.a.sa().rekey_at is not None
    assert link.a.sa().rekey_at > link.now + 1000  # no retry planned
    link.deliver(delete)
    link.run()
    _survivor_made_by(link, "b")
    _done(link)


@pytest.mark.parametrize("nonces", THREE_NONCES)
def test_collision_ke_invalid_delayed_retry(nonces: tuple[int, ...]) -> None:
    """strongSwan test_collision_ke_invalid_delayed_retry: A's first try gets
    INVALID_KE_PAYLOAD, its retry is delayed until B finished its own rekey."""
    both = "aes128gcm16-prfsha256-ecp256-curve25519"
    link = Link(peer_config(True, ike=both), peer_config(False, ike=both))
    link.establish()
    _policy(link.b, "aes128gcm16-prfsha256-curve25519")
    _both_rekey(link, nonces)
    link.step("b")  # A's request: INVALID_KE_PAYLOAD
    link.nonce_byte = nonces[2]
    link.step("a")  # B's request: A answers
    assert link.describe(link.step("a")).notifies == ["INVALID_KE_PAYLOAD"]  # A retries
    delayed = link.take("b", link.find("b", lambda s: not s.response))  # the retry
    link.step("b")  # A's response: B is done
    link.deliver(delayed)
    assert link.describe(link.pending("a")[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.run()
    _survivor_made_by(link, "b")
    _done(link)


# ---------------------------------------------------------------------- rekey vs delete


@BOTH
def test_collision_delete(rekeyer: str) -> None:
    """strongSwan test_collision_delete: one end rekeys the IKE SA the other deletes."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    _rekey(link, x)
    y.manager.delete_peer(y.peer, link.now)
    link.step(y.name)  # the rekey: TEMPORARY_FAILURE (RFC 7296 2.25.2)
    assert link.describe(link.pending(x.name)[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.step(x.name)  # the DELETE: answered as usual; X forgets its rekey
    assert not x.manager.sas
    link.run()
    for host in link.hosts():
        assert not host.manager.sas and not host.live_children()
        assert len(host.ike_down()) == 1 and len(host.children_down()) == 1


@BOTH
def test_collision_delete_drop_delete(rekeyer: str) -> None:
    """strongSwan test_collision_delete_drop_delete: the DELETE is delayed; the rekeyer
    plans a retry, then the DELETE arrives."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    sa = _rekey(link, x)
    y.manager.delete_peer(y.peer, link.now)
    link.step(y.name)
    delayed = link.take(x.name, link.find(x.name, lambda s: not s.response))
    link.step(x.name)  # TEMPORARY_FAILURE: retry planned
    assert sa.established and sa.rekeying is None
    assert sa.rekey_at is not None and sa.rekey_at <= link.now + 5
    link.deliver(delayed)
    link.advance(10.0)
    for host in link.hosts():
        assert not host.manager.sas and not host.live_children()
        assert len(host.ike_down()) == 1 and len(host.children_down()) == 1


# ---------------------------------------------------------------------- with CHILD SAs


def test_ike_rekey_waits_for_a_child_rekey_to_finish() -> None:
    """RFC 7296 2.25.2: an IKE rekey queued behind a CHILD SA rekey goes after it."""
    link = Link()
    link.establish()
    spi = link.a.child().spi_in
    link.a.sa().rekey_child(spi, link.now)
    link.a.sa().rekey(link.now)
    link.run()
    link.advance(10.0)
    settle(link)
    for host in link.hosts():
        assert len(host.ike_up()) == 2 and len(host.ike_down()) == 1
    assert spi not in link.a.live_children()
    assert len(link.a.children_up()) == 2 and len(link.a.children_down()) == 1


def test_child_rekey_queued_on_the_old_ike_sa_moves_to_the_new_one() -> None:
    link = Link()
    link.establish()
    spi = link.b.child().spi_in
    link.a.sa().rekey(link.now)
    link.step("b")  # B now uses the new IKE SA
    old = next(s for s in link.b.sas() if s.state is IkeState.REKEYED)
    link.b.sa().rekey_child(spi, link.now)  # goes over the new SA
    assert old.active is None
    link.run()
    _, ub = settle(link)
    assert ub.replaces == spi
    check_ike_pair(link)
    teardown(link)


def test_lost_rekey_response_is_answered_again_from_the_old_sa() -> None:
    link = Link()
    link.establish()
    link.lose_first(lambda s: s.exchange == "CREATE_CHILD_SA" and s.response)
    _rekey(link, link.a)
    link.run()
    assert len(link.b.ike_up()) == 2 and len(link.a.ike_up()) == 1
    link.advance(1.0)  # A retransmits on the old SA; B answers from its cache
    _done(link)


def test_replaced_ike_sa_is_deleted_by_the_responder_when_the_peer_does_not() -> None:
    link = Link(peer_config(True, dpd=None), peer_config(False, dpd=None))
    link.establish()
    _rekey(link, link.a)
    link.step("b")
    link.take("a")  # the response never arrives, and A gives up on the old SA
    link.a.manager = link._manager("a", link.a.manager.configs["b"], 7, WALLCLOCK, {})
    old = next(s for s in link.b.sas() if s.state is IkeState.REKEYED)
    link.advance(IKE_REKEYED_LINGER + 20.0)
    assert old.dead
    assert len(link.b.ike_down()) == 1 and link.b.ike_down()[0].spi_i == old.spi_i


def test_a_rekey_not_sent_yet_yields_to_the_peers() -> None:
    """A's IKE rekey waits behind another exchange when B's arrives: A drops its own."""
    from hostsec.ike.v2.ikesa import InformationalTask

    link = Link()
    link.establish()
    link.a.sa().queue_task(InformationalTask(), link.now)
    _rekey(link, link.a)
    _rekey(link, link.b)
    link.step("a", link.find("a", lambda s: not s.response))
    assert len(link.a.ike_up()) == 2
    link.run()
    rekeys = [p for p in link.sent if link.describe(p).exchange == "CREATE_CHILD_SA"]
    assert [p.to for p in rekeys] == ["a", "b"]  # B's request and A's answer only
    _survivor_made_by(link, "b")
    _done(link)
