"""CREATE_CHILD_SA for new CHILD SAs (RFC 7296 1.3.1) with and without PFS, its error
paths, and the lifetimes of CHILD and IKE SAs (rekey with jitter before the hard limit)."""

from __future__ import annotations

import pytest

from hostsec.crypto.transforms import DhId
from hostsec.ike.v2.config import ChildConfig, Lifetimes
from hostsec.ike.v2.events import ChildSADown
from hostsec.wire.selectors import TrafficSelector

from .ike_harness import (
    Link,
    check_events,
    child,
    live_pair,
    peer_config,
    settle,
    teardown,
)

SSH_A = (TrafficSelector.from_network("198.51.100.1/32", 6),)
SSH_B = (TrafficSelector.from_network("198.51.100.2/32", 6, 22),)


def _ssh(a_side: bool, esp: str = "aes128gcm16", **kw: object) -> ChildConfig:
    local, remote = (SSH_A, SSH_B) if a_side else (SSH_B, SSH_A)
    return child("ssh", a_side=a_side, esp=esp, local_ts=local, remote_ts=remote, **kw)  # type: ignore[arg-type]


def _link(a_esp: str = "aes128gcm16", b_esp: str = "aes128gcm16") -> Link:
    return Link(
        peer_config(True, children=(child(), _ssh(True, a_esp))),
        peer_config(False, children=(child(a_side=False), _ssh(False, b_esp))),
    )


def _add_ssh(link: Link) -> None:
    config = link.a.manager.configs["b"].child("ssh")
    link.a.manager.initiate("b", [config], link.now)


def _create_child_messages(link: Link) -> list[tuple[bool, list[str], list[str]]]:
    out = []
    for p in link.sent:
        s = link.describe(p)
        if s.exchange == "CREATE_CHILD_SA":
            out.append((s.response, s.payloads, s.notifies))
    return out


def test_new_child_without_pfs() -> None:
    link = _link()
    link.establish([child()])
    _add_ssh(link)
    link.run()
    ((_, request, _), (_, response, _)) = _create_child_messages(link)
    assert "KE" not in request and "KE" not in response
    assert request.index("SA") < request.index("NONCE") < request.index("TSi")
    ua, _ = live_pair(link, "ssh")
    telnet, _ = live_pair(link, "telnet")
    assert ua.proposal.dh == () and ua.encr_key_out != telnet.encr_key_out
    teardown(link)


def test_new_child_with_pfs() -> None:
    link = _link("aes128gcm16-ecp256", "aes128gcm16-ecp256")
    link.establish([child()])
    _add_ssh(link)
    link.run()
    ((_, request, _), (_, response, _)) = _create_child_messages(link)
    assert "KE" in request and "KE" in response
    ua, _ = live_pair(link, "ssh")
    assert ua.proposal.dh == (DhId.ECP_256,)
    teardown(link)


def test_first_child_in_ike_auth_never_does_pfs() -> None:
    link = _link("aes128gcm16-ecp256", "aes128gcm16-ecp256")
    link.establish([child(esp="aes128gcm16-ecp256")])
    ua, _ = live_pair(link, "telnet")
    assert ua.proposal.dh == ()  # RFC 7296 1.2: no KE in IKE_AUTH


def test_pfs_group_refused_then_retried_with_the_asked_one() -> None:
    link = _link("aes128gcm16-ecp256-curve25519", "aes128gcm16-curve25519")
    link.establish([child()])
    _add_ssh(link)
    link.run()
    messages = _create_child_messages(link)
    assert messages[1][2] == ["INVALID_KE_PAYLOAD"]
    assert len(messages) == 4
    ua, _ = live_pair(link, "ssh")
    assert ua.proposal.dh == (DhId.CURVE25519,)
    teardown(link)


def test_temporary_failure_then_retry() -> None:
    """B is rekeying the IKE SA when A asks for a new CHILD SA: TEMPORARY_FAILURE
    (RFC 7296 2.25.2); A tries again a little later, over the new IKE SA."""
    link = _link()
    link.establish([child()])
    link.b.sa().rekey(link.now)
    _add_ssh(link)
    link.step("b")  # A's CREATE_CHILD_SA meets B's IKE rekey
    assert link.describe(link.pending("a")[-1]).notifies == ["TEMPORARY_FAILURE"]
    link.run()
    assert not [e for e in link.a.children_up() if e.child == "ssh"]
    assert link.a.manager._retry
    link.advance(30.0)
    live_pair(link, "ssh")
    live_pair(link, "telnet")
    for host in link.hosts():
        check_events(host)
        assert len(host.ike_up()) == 2
    teardown(link)


def test_no_proposal_chosen_for_a_new_child() -> None:
    link = _link("aes256gcm16", "aes128gcm16")
    link.establish([child()])
    _add_ssh(link)
    link.run()
    (failed,) = link.a.child_failures()
    assert failed.child == "ssh" and failed.reason == "NO_PROPOSAL_CHOSEN"
    settle(link)  # the telnet pair and the IKE SA are untouched


def test_ts_unacceptable_for_a_new_child() -> None:
    link = Link(
        peer_config(True, children=(child(), _ssh(True))),
        peer_config(False, children=(child(a_side=False),)),
    )
    link.establish([child()])
    _add_ssh(link)
    link.run()
    (failed,) = link.a.child_failures()
    assert failed.reason == "TS_UNACCEPTABLE"
    settle(link)


# ---------------------------------------------------------------------- lifetimes


def _lifetime_link(child_lifetimes: Lifetimes, **ike: object) -> Link:
    a = child(lifetimes=child_lifetimes)
    b = child(a_side=False, lifetimes=child_lifetimes)
    return Link(
        peer_config(True, children=(a,), dpd=None, **ike),
        peer_config(False, children=(b,), dpd=None, **ike),
    )


def _rekey_times(link: Link, start: float) -> list[float]:
    times = []
    for p in link.sent:
        s = link.describe(p)
        if s.exchange == "CREATE_CHILD_SA" and not s.response and "REKEY_SA" in s.notifies:
            times.append(p.sent_at - start)
    return times


def test_both_ends_rekey_at_the_soft_lifetime_without_jitter() -> None:
    """Without jitter both ends rekey at the same instant: a collision, settled."""
    link = _lifetime_link(Lifetimes(rekey=90.0, hard=100.0))
    link.establish()
    start = link.now
    link.advance(95.0)
    assert _rekey_times(link, start) == [90.0, 90.0]
    settle(link)
    teardown(link)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_child_rekeyed_with_jitter_before_the_hard_lifetime(seed: int) -> None:
    lifetimes = Lifetimes(rekey=90.0, hard=100.0, jitter=20.0)
    link = Link(
        peer_config(True, children=(child(lifetimes=lifetimes),), dpd=None),
        peer_config(False, children=(child(a_side=False, lifetimes=lifetimes),), dpd=None),
        seed=seed,
    )
    link.establish()
    start = link.now
    link.advance(100.0)
    times = _rekey_times(link, start)
    assert times and 70.0 <= times[0] < 90.0
    # Past several lifetimes: always exactly one live pair, never a hard expiry.
    link.advance(400.0)
    settle(link)
    for host in link.hosts():
        assert all(e.reason != "lifetime expired" for e in host.of(ChildSADown))
    teardown(link)


def test_child_hard_expiry_without_rekey_deletes_it() -> None:
    link = _lifetime_link(Lifetimes(rekey=200.0, hard=100.0))
    link.establish()
    link.advance(99.0)
    assert link.a.live_children() and link.b.live_children()
    link.advance(1.0)
    for host in link.hosts():
        assert not host.live_children(), host.name
        (down,) = host.children_down()
        assert down.reason in ("lifetime expired", "deleted by the peer")
        assert host.sa().established
    check_events(link.a)


def test_ike_rekeyed_before_its_hard_lifetime_keeps_the_children() -> None:
    ike = Lifetimes(rekey=90.0, hard=100.0, jitter=10.0)
    link = _lifetime_link(Lifetimes.from_lifetime(3600.0), lifetimes=ike)
    link.establish()
    link.advance(350.0)
    settle(link)
    for host in link.hosts():
        assert len(host.ike_up()) >= 4 and len(host.ike_down()) == len(host.ike_up()) - 1
        assert all(d.reason == "rekeyed" for d in host.ike_down())
        assert len(host.children_up()) == 1  # the same pair all along
    teardown(link)


def test_ike_hard_expiry_without_rekey_takes_everything_down() -> None:
    ike = Lifetimes(rekey=300.0, hard=100.0)
    link = _lifetime_link(Lifetimes.from_lifetime(3600.0), lifetimes=ike)
    link.establish()
    link.advance(101.0)
    for host in link.hosts():
        assert not host.manager.sas and not host.live_children(), host.name
        (down,) = host.ike_down()
        assert down.reason in ("IKE SA lifetime expired without rekey", "deleted by the peer")
        check_events(host)
