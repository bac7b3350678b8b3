"""IKEv2 exchanges between two in-memory agents (RFC 7296)."""

from __future__ import annotations

from hostsec.crypto.proposals import Mode
from hostsec.ike.v2.events import AuthenticationFailed, ChildSAUp

from .ike_harness import Link, peer_config


def test_ike_sa_init_and_auth_with_psk_bring_up_the_child() -> None:
    link = Link()
    link.establish()
    assert len(link.a.ike_up()) == 1 and len(link.b.ike_up()) == 1
    (ua,) = link.a.children_up()
    (ub,) = link.b.children_up()
    assert isinstance(ua, ChildSAUp)
    assert ua.mode is Mode.TRANSPORT
    assert ua.spi_in == ub.spi_out and ua.spi_out == ub.spi_in
    assert ua.encr_key_out == ub.encr_key_in and ua.encr_key_in == ub.encr_key_out
    assert ua.encr_key_in != ua.encr_key_out
    assert str(ua.proposal) == "aes128gcm16"


def test_wrong_psk_fails_on_both_sides() -> None:
    link = Link(b_config=peer_config(False, psk=b"another secret that is wrong!!!"))
    link.establish()
    assert not link.a.children_up() and not link.b.children_up()
    assert link.b.of(AuthenticationFailed)
    assert link.a.of(AuthenticationFailed)


def test_child_rekey_initiated_by_either_side() -> None:
    for rekeyer in ("a", "b"):
        link = Link()
        link.establish()
        host = link.host(rekeyer)
        (old,) = host.children_up()
        sa = host.manager.sa_for("b" if rekeyer == "a" else "a")
        assert sa is not None
        sa.rekey_child(old.spi_in, link.now)
        link.run()
        for h in (link.a, link.b):
            live = h.live_children()
            assert len(live) == 1, (rekeyer, h.name, live)
            assert old.spi_in not in live and old.spi_out not in live
        new_a = next(e for e in link.a.children_up() if e.spi_in in link.a.live_children())
        assert new_a.replaces is not None


def test_ike_rekey_moves_children() -> None:
    link = Link()
    link.establish()
    sa = link.a.manager.sa_for("b")
    assert sa is not None
    sa.rekey(link.now)
    link.run()
    assert len(link.a.ike_up()) == 2 and len(link.b.ike_up()) == 2
    assert len(link.a.ike_down()) == 1 and len(link.b.ike_down()) == 1
    new = link.a.manager.sa_for("b")
    assert new is not None and new is not sa and len(new.children) == 1
    # The child survives and can still be rekeyed over the new IKE SA.
    (spi,) = new.children
    new.rekey_child(spi, link.now)
    link.run()
    assert len(link.a.live_children()) == 1 and len(link.b.live_children()) == 1
    assert spi not in link.a.live_children()


def test_dead_peer_is_detected_by_dpd() -> None:
    link = Link(a_config=peer_config(True, dpd=5.0))
    link.establish()
    link.drop = lambda p: p.to == "b"  # b is gone
    link.advance(5.0 + 1 + 2 + 4 + 8 + 1)  # DPD interval + retransmit budget
    assert link.a.ike_down()
    assert "unreachable" in link.a.ike_down()[0].reason
    assert not link.a.live_children()


def test_delete_child_and_ike() -> None:
    link = Link()
    link.establish()
    sa = link.b.manager.sa_for("a")
    assert sa is not None
    (spi,) = list(sa.children)
    sa.delete_child(spi, link.now)
    link.run()
    assert not link.a.live_children() and not link.b.live_children()
    sa.delete(link.now)
    link.run()
    assert link.a.ike_down() and link.b.ike_down()


def test_child_rekey_collision_resolved_by_nonces() -> None:
    for lowest in ("a", "b"):
        link = Link(nonce_first_byte=lambda name, low=lowest: 0x00 if name == low else 0xFF)
        link.establish()
        sa_a = link.a.manager.sa_for("b")
        sa_b = link.b.manager.sa_for("a")
        assert sa_a and sa_b
        (spi_a,) = list(sa_a.children)
        (spi_b,) = list(sa_b.children)
        sa_a.rekey_child(spi_a, link.now)
        sa_b.rekey_child(spi_b, link.now)
        link.run()
        live_a, live_b = link.a.live_children(), link.b.live_children()
        assert len(live_a) == 1 and len(live_b) == 1, (lowest, live_a, live_b)
        (ua,) = [e for e in link.a.children_up() if e.spi_in in live_a]
        (ub,) = [e for e in link.b.children_up() if e.spi_in in live_b]
        assert ua.spi_in == ub.spi_out and ua.spi_out == ub.spi_in
