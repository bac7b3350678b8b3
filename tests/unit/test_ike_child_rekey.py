"""CHILD SA rekeying (RFC 7296 1.3.3, 2.8, 2.8.1, 2.25): the scenarios of strongSwan's
``src/libcharon/tests/suites/test_child_rekey.c``, one test each, message by message.

Host A is always the original initiator of the IKE SA; where strongSwan loops over "the
initiator rekeys / the responder rekeys", the test takes ``rekeyer`` = "a" or "b". Nonce
tables follow strongSwan's: the four (or three) nonces in the order they are made.

In every scenario: no pair lost or duplicated (both ends finish with one live pair whose
keys match), the replaced inbound SA stays until its DELETE, every ChildSAUp is matched by
exactly one ChildSADown once the IKE SA is deleted.
"""

from __future__ import annotations

import pytest

from hostsec.ike.v2.child import ChildState
from hostsec.ike.v2.config import Retransmit
from hostsec.ike.v2.ikesa import REKEYED_LINGER, IkeState

from .ike_harness import Host, Link, child, live_pair, peer_config, settle, teardown

BOTH = pytest.mark.parametrize("rekeyer", ["a", "b"])

# (nonces in the order they are made, who wins): the pair created with the lowest nonce
# is redundant. A's rekey makes nonces 0 (Ni) and 2 (Nr); B's rekey 1 (Ni) and 3 (Nr).
COLLISIONS = [
    ((0x00, 0xFF, 0xFF, 0xFF), "b"),
    ((0xFF, 0x00, 0xFF, 0xFF), "a"),
    ((0xFF, 0xFF, 0x00, 0xFF), "b"),
    ((0xFF, 0xFF, 0xFF, 0x00), "a"),
]
THREE_NONCES = [(0x00, 0xFF, 0xFF), (0xFF, 0x00, 0xFF), (0xFF, 0xFF, 0x00)]


def _state(host: Host, spi: int) -> ChildState | None:
    child_sa = host.sa().children.get(spi)
    return child_sa.state if child_sa is not None else None


def _rekey(link: Link, host: Host) -> int:
    """Start rekeying the host's only pair; returns its inbound SPI."""
    spi = host.child().spi_in
    host.sa().rekey_child(spi, link.now)
    assert _state(host, spi) is ChildState.REKEYING
    return spi


def _ke_invalid_link(rekeyer: str = "a") -> Link:
    """PFS groups such that a CREATE_CHILD_SA from ``rekeyer`` (or from both, for "both")
    gets INVALID_KE_PAYLOAD first: each end's first group is one the other refuses."""
    esp = {"a": "aes128gcm16-ecp256-curve25519", "b": "aes128gcm16-ecp384-curve25519"}
    if rekeyer == "a":
        esp["b"] = "aes128gcm16-curve25519"
    elif rekeyer == "b":
        esp["a"] = "aes128gcm16-curve25519"
    return Link(
        peer_config(True, children=(child(esp=esp["a"]),)),
        peer_config(False, children=(child(a_side=False, esp=esp["b"]),)),
    )


def _survivor_made_by(link: Link, winner: str) -> None:
    """The surviving pair is the one whose rekey ``winner`` initiated."""
    for host in link.hosts():
        assert host.child().initiated == (host.name == winner), host.name


def _done(link: Link) -> None:
    settle(link)
    teardown(link)


# ---------------------------------------------------------------------- regular


@BOTH
def test_regular(rekeyer: str) -> None:
    """strongSwan test_regular."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    old_x, old_y = x.child().spi_in, y.child().spi_in
    _rekey(link, x)
    # CREATE_CHILD_SA { N(REKEY_SA), SA, Ni, [KEi,] TSi, TSr } -->
    request = link.step(y.name)
    assert link.describe(request).notifies[0] == "REKEY_SA"
    assert _state(y, old_y) is ChildState.REKEYED and len(y.sa().children) == 2
    # <-- CREATE_CHILD_SA { SA, Nr, [KEr,] TSi, TSr }
    link.step(x.name)
    assert _state(x, old_x) is ChildState.DELETING and len(x.sa().children) == 2
    (new_x,) = [e for e in x.children_up() if e.replaces == old_x]
    # The old pair stays up until its DELETE.
    assert old_x in x.live_children() and old_y in y.live_children()
    # INFORMATIONAL { D } -->
    delete = link.step(y.name)
    assert link.describe(delete).deletes == [(3, 1)]
    assert list(y.sa().children) != [old_y] and len(y.sa().children) == 1
    assert old_y not in y.live_children()
    # <-- INFORMATIONAL { D }
    link.step(x.name)
    assert list(x.sa().children) == [new_x.spi_in]
    assert old_x not in x.live_children()
    _done(link)


@BOTH
def test_regular_ke_invalid(rekeyer: str) -> None:
    """strongSwan test_regular_ke_invalid: the responder wants another DH group."""
    link = _ke_invalid_link(rekeyer)
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    old_x = _rekey(link, x)
    # --> CREATE_CHILD_SA; <-- N(INVALID_KE_PAYLOAD)
    link.step(y.name)
    assert len(y.sa().children) == 1
    reply = link.step(x.name)
    assert link.describe(reply).notifies == ["INVALID_KE_PAYLOAD"]
    assert _state(x, old_x) is ChildState.REKEYING
    # The retry with the group asked for.
    link.run()
    ua, _ = settle(link)
    assert [g.name for g in ua.proposal.dh] == ["CURVE25519"]
    # The next rekey keeps that group: no INVALID_KE_PAYLOAD any more.
    sent = len(link.sent)
    _rekey(link, x)
    link.run()
    assert all(link.describe(p).notifies[:1] != ["INVALID_KE_PAYLOAD"] for p in link.sent[sent:])
    _done(link)


def test_regular_responder_ignore_soft_expire() -> None:
    """strongSwan test_regular_responder_ignore_soft_expire: the responder's rekey timer
    for the pair it already replaced does nothing."""
    link = Link()
    link.establish()
    old_b = link.b.child().spi_in
    _rekey(link, link.a)
    link.step("b")
    link.step("a")
    assert _state(link.b, old_b) is ChildState.REKEYED
    link.b.sa().rekey_child(old_b, link.now)  # the soft expiry of the replaced pair
    assert not link.pending("a") and _state(link.b, old_b) is ChildState.REKEYED
    link.run()
    _done(link)


def test_regular_responder_handle_hard_expire() -> None:
    """strongSwan test_regular_responder_handle_hard_expire: the responder deletes the
    replaced pair itself (hard expiry) while the initiator's DELETE is on its way."""
    link = Link()
    link.establish()
    old_a, old_b = link.a.child().spi_in, link.b.child().spi_in
    _rekey(link, link.a)
    link.step("b")
    link.step("a")  # A sends INFORMATIONAL { D }
    link.b.sa().delete_child(old_b, link.now)  # B's hard expiry: B sends { D } as well
    assert _state(link.b, old_b) is ChildState.DELETING
    link.step("b")  # A's DELETE: B answers without the SA it is deleting itself
    assert old_b not in link.b.live_children()
    link.step("a")  # B's DELETE: A answers likewise
    assert old_a not in link.a.live_children()
    link.run()  # the two empty answers
    _done(link)


def test_regular_responder_deletes_the_replaced_pair_when_no_delete_comes() -> None:
    """Like the above, but the hard expiry is the responder's own timer: the initiator's
    DELETE never arrives."""
    slow = Retransmit(timeout=6.0, base=2.0, tries=3)  # A retransmits at 6 s and 18 s
    link = Link(peer_config(True, retransmit=slow))
    link.establish()
    old_b = link.b.child().spi_in
    _rekey(link, link.a)
    link.drop = lambda p: (
        p.to == "b"
        and link.describe(p).exchange == "INFORMATIONAL"
        and not (link.describe(p).response)
    )
    link.run()
    assert old_b in link.b.live_children()
    link.advance(REKEYED_LINGER)
    assert old_b not in link.b.live_children()  # B deleted it; A answered
    assert len(link.a.live_children()) == 1
    link.drop = lambda p: False
    link.advance(10.0)  # A's DELETE finally arrives: nothing left to delete
    _done(link)


# ---------------------------------------------------------------------- collisions


@pytest.mark.parametrize(("nonces", "winner"), COLLISIONS)
def test_collision(nonces: tuple[int, ...], winner: str) -> None:
    """strongSwan test_collision: both ends rekey the pair at once; the nonces decide."""
    link = Link()
    link.establish()
    old_a, old_b = link.a.child().spi_in, link.b.child().spi_in
    link.nonce_byte = nonces[0]
    _rekey(link, link.a)
    link.nonce_byte = nonces[1]
    _rekey(link, link.b)
    link.nonce_byte = nonces[2]
    link.step("b")  # A's request reaches B: collision
    link.nonce_byte = nonces[3]
    link.step("a")  # B's request reaches A: collision
    assert len(link.a.sa().children) == len(link.b.sa().children) == 2
    link.step("a")  # <-- response to A
    link.step("b")  # response to B -->
    assert len(link.a.sa().children) == len(link.b.sa().children) == 3
    # Nothing is gone before the DELETEs.
    assert old_a in link.a.live_children() and old_b in link.b.live_children()
    link.run()
    _survivor_made_by(link, winner)
    ua, ub = live_pair(link)
    assert ua.replaces == old_a and ub.replaces == old_b
    _done(link)


@pytest.mark.parametrize(("nonces", "winner"), COLLISIONS)
def test_collision_delayed_response(nonces: tuple[int, ...], winner: str) -> None:
    """strongSwan test_collision_delayed_response: B's response to A's rekey is delayed
    until after B's DELETE (of the old or of its redundant pair) reached A."""
    link = Link()
    link.establish()
    link.nonce_byte = nonces[0]
    _rekey(link, link.a)
    link.nonce_byte = nonces[1]
    _rekey(link, link.b)
    link.nonce_byte = nonces[2]
    link.step("b")
    link.nonce_byte = nonces[3]
    link.step("a")
    delayed = link.take("a")  # B's CREATE_CHILD_SA response to A
    link.step("b")  # A's response: B settles the collision and sends its DELETE
    link.step("a")  # B's DELETE
    assert len(link.a.live_children()) == 1
    link.step("b")  # A's answer to it
    link.put(delayed)
    link.run()
    _survivor_made_by(link, winner)
    _done(link)


@pytest.mark.parametrize("nonces", THREE_NONCES)
def test_collision_delayed_request(nonces: tuple[int, ...]) -> None:
    """strongSwan test_collision_delayed_request: A's request is delayed, so B completes
    its rekey without noticing a collision; A's request then meets TEMPORARY_FAILURE."""
    link = Link()
    link.establish()
    old_a = link.a.child().spi_in
    link.nonce_byte = nonces[0]
    _rekey(link, link.a)
    link.nonce_byte = nonces[1]
    _rekey(link, link.b)
    delayed = link.take("b")  # A's CREATE_CHILD_SA request
    link.nonce_byte = nonces[2]
    link.step("a")  # B's request: A notices the collision
    assert len(link.a.sa().children) == 2
    link.step("b")  # A's response: B is done and deletes the old pair
    link.deliver(delayed)  # A's request reaches B: TEMPORARY_FAILURE
    assert link.describe(link.pending("a")[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.step("a")  # B's DELETE of the old pair
    assert list(link.a.live_children()) != [old_a] and len(link.a.live_children()) == 1
    link.step("a")  # TEMPORARY_FAILURE: A gives up, no retry
    link.run()
    assert link.a.child().rekey_at is not None and link.a.child().rekey_at > link.now + 100
    assert not link.a.manager._retry
    _survivor_made_by(link, "b")
    _done(link)


@pytest.mark.parametrize("nonces", THREE_NONCES)
def test_collision_delayed_request_more(nonces: tuple[int, ...]) -> None:
    """strongSwan test_collision_delayed_request_more: A's request arrives after B
    deleted the old pair: CHILD_SA_NOT_FOUND."""
    link = Link()
    link.establish()
    link.nonce_byte = nonces[0]
    _rekey(link, link.a)
    link.nonce_byte = nonces[1]
    _rekey(link, link.b)
    delayed = link.take("b")
    link.nonce_byte = nonces[2]
    link.step("a")
    link.step("b")
    link.step("a")  # B's DELETE
    link.step("b")  # A's answer
    link.deliver(delayed)
    assert link.describe(link.pending("a")[-1]).notifies == ["CHILD_SA_NOT_FOUND"]
    link.run()
    assert not link.a.manager._retry
    _survivor_made_by(link, "b")
    _done(link)


@pytest.mark.parametrize(("nonces", "winner"), COLLISIONS)
def test_collision_ke_invalid(nonces: tuple[int, ...], winner: str) -> None:
    """strongSwan test_collision_ke_invalid: both ends rekey, both get INVALID_KE_PAYLOAD,
    both retry and collide again; the retries' nonces decide."""
    link = _ke_invalid_link("both")
    link.establish()
    link.nonce_byte = nonces[1]  # the first tries' nonces must not matter
    _rekey(link, link.a)
    link.nonce_byte = nonces[0]
    _rekey(link, link.b)
    link.step("b")  # A's request: INVALID_KE
    link.step("a")  # B's request: INVALID_KE
    link.nonce_byte = nonces[0]
    assert link.describe(link.step("a")).notifies == ["INVALID_KE_PAYLOAD"]  # A retries
    link.nonce_byte = nonces[1]
    assert link.describe(link.step("b")).notifies == ["INVALID_KE_PAYLOAD"]  # B retries
    link.nonce_byte = nonces[2]
    link.step("b")
    link.nonce_byte = nonces[3]
    link.step("a")
    link.run()
    _survivor_made_by(link, winner)
    _done(link)


@pytest.mark.parametrize("nonces", THREE_NONCES)
def test_collision_ke_invalid_delayed_retry(nonces: tuple[int, ...]) -> None:
    """strongSwan test_collision_ke_invalid_delayed_retry: A's retry is delayed, so to B
    there is no collision; A's retry then meets TEMPORARY_FAILURE."""
    link = _ke_invalid_link("both")
    link.establish()
    link.nonce_byte = nonces[1]
    _rekey(link, link.a)
    link.nonce_byte = nonces[0]
    _rekey(link, link.b)
    link.step("b")
    link.step("a")
    link.nonce_byte = nonces[0]
    link.step("a")  # A retries
    link.nonce_byte = nonces[1]
    link.step("b")  # B retries
    delayed = link.take("b")  # A's retry
    link.nonce_byte = nonces[2]
    link.step("a")  # B's retry: A notices the collision
    link.step("b")  # A's response: B is done
    link.deliver(delayed)
    assert link.describe(link.pending("a")[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.run()
    assert not link.a.manager._retry
    _survivor_made_by(link, "b")
    _done(link)


# ---------------------------------------------------------------------- rekey vs delete


def _no_pairs_left(link: Link) -> None:
    for host in link.hosts():
        assert not host.live_children() and not host.sa().children, host.name
        assert len(host.children_up()) == 1 and len(host.children_down()) == 1
        assert not host.manager._retry
    teardown(link)


@BOTH
def test_collision_delete(rekeyer: str) -> None:
    """strongSwan test_collision_delete: one end rekeys the pair the other deletes."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    _rekey(link, x)
    y.sa().delete_child(y.child().spi_in, link.now)
    link.step(y.name)  # the rekey: TEMPORARY_FAILURE (RFC 7296 2.25.1)
    assert link.describe(link.pending(x.name)[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.step(x.name)  # the DELETE: answered with a DELETE, as usual
    assert not x.live_children()
    link.step(x.name)  # TEMPORARY_FAILURE: nothing left to retry
    link.run()
    _no_pairs_left(link)


@BOTH
def test_collision_delete_drop_delete(rekeyer: str) -> None:
    """strongSwan test_collision_delete_drop_delete: the DELETE is delayed; the rekeyer
    plans a retry, which finds nothing once the DELETE arrived."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    spi_x = _rekey(link, x)
    y.sa().delete_child(y.child().spi_in, link.now)
    link.step(y.name)
    delayed = link.take(x.name, link.find(x.name, lambda s: not s.response))
    link.step(x.name)  # TEMPORARY_FAILURE: a retry is planned
    assert _state(x, spi_x) is ChildState.INSTALLED
    assert x.child().rekey_at is not None and x.child().rekey_at <= link.now + 5
    link.deliver(delayed)
    assert not x.live_children()
    link.advance(10.0)  # the planned retry finds nothing to rekey
    _no_pairs_left(link)


@BOTH
def test_collision_delete_drop_rekey(rekeyer: str) -> None:
    """strongSwan test_collision_delete_drop_rekey: the rekey is delayed until after the
    pair is gone: CHILD_SA_NOT_FOUND, and nothing else happens."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    _rekey(link, x)
    y.sa().delete_child(y.child().spi_in, link.now)
    delayed = link.take(y.name)
    link.step(x.name)  # the DELETE
    link.step(y.name)  # its answer
    link.deliver(delayed)
    assert link.describe(link.pending(x.name)[-1]).notifies == ["CHILD_SA_NOT_FOUND"]
    link.run()
    _no_pairs_left(link)


@BOTH
def test_collision_ike_rekey(rekeyer: str) -> None:
    """strongSwan test_collision_ike_rekey: one end rekeys the pair while the other rekeys
    the IKE SA; both get TEMPORARY_FAILURE (RFC 7296 2.25.1, 2.25.2) and retry later."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    spi_x = _rekey(link, x)
    y.sa().rekey(link.now)
    assert link.describe(link.step(y.name)).notifies[0] == "REKEY_SA"
    assert link.describe(link.pending(x.name)[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.step(x.name)  # the IKE rekey reaches X: TEMPORARY_FAILURE too
    assert link.describe(link.pending(y.name)[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.step(x.name)  # X: retry the CHILD rekey later
    assert _state(x, spi_x) is ChildState.INSTALLED
    link.step(y.name)  # Y: retry the IKE rekey later
    assert y.sa().state is IkeState.ESTABLISHED and y.sa().rekeying is None
    link.advance(30.0)  # both retries go through
    ua, ub = settle(link)
    assert spi_x not in (ua.spi_in, ub.spi_in)
    for host in link.hosts():
        assert len(host.ike_up()) == 2 and len(host.ike_down()) == 1
    teardown(link)


@BOTH
def test_collision_ike_delete(rekeyer: str) -> None:
    """strongSwan test_collision_ike_delete: one end rekeys the pair while the other
    deletes the IKE SA: TEMPORARY_FAILURE, then everything goes."""
    link = Link()
    link.establish()
    x, y = link.host(rekeyer), link.host(link.other(rekeyer))
    _rekey(link, x)
    y.manager.delete_peer(y.peer, link.now)
    link.step(y.name)
    assert link.describe(link.pending(x.name)[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.step(x.name)  # the DELETE of the IKE SA: X is gone
    assert not x.manager.sas and x.ike_down()
    link.run()  # the TEMPORARY_FAILURE finds no SA; Y gets its answer
    for host in link.hosts():
        assert not host.manager.sas and not host.live_children()
        assert len(host.children_down()) == 1 and len(host.ike_down()) == 1


def test_a_rekey_not_sent_yet_yields_to_the_peers() -> None:
    """A's rekey waits behind another exchange when B's rekey of the same pair arrives:
    A drops its own (it was never sent) and B's replaces the pair."""
    from hostsec.ike.v2.ikesa import InformationalTask

    link = Link()
    link.establish()
    link.a.sa().queue_task(InformationalTask(), link.now)  # keeps A's window busy
    spi_a = _rekey(link, link.a)
    _rekey(link, link.b)
    link.step("a", link.find("a", lambda s: not s.response))  # B's rekey reaches A
    assert _state(link.a, spi_a) is ChildState.REKEYED
    link.run()
    rekeys = [p for p in link.sent if "REKEY_SA" in link.describe(p).notifies]
    assert [p.to for p in rekeys] == ["a"]
    _survivor_made_by(link, "b")
    _done(link)
