"""IKE_AUTH with the first CHILD SA (RFC 7296 1.2, 2.9, 2.15, 2.21; RFC 7383; RFC 7427):
PSK and certificates, refusals with reasons on both sides, fragmentation under loss,
transport mode agreement, traffic selector narrowing, child errors, INITIAL_CONTACT."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hostsec.crypto.auth import AuthMethod
from hostsec.crypto.proposals import Mode, Protocol
from hostsec.ike.v2.events import ChildSADown, IkeSADown
from hostsec.ike.v2.ikesa import IkeSA
from hostsec.wire.ikev2 import AUTH, Notify, NotifyType, Payload
from hostsec.wire.selectors import TrafficSelector

from .ike_harness import (
    Issued,
    Link,
    Packet,
    cert_auth,
    check_events,
    child,
    issue,
    new_key,
    peer_config,
    settle,
    teardown,
)

# ---------------------------------------------------------------------- PSK


def test_psk_brings_up_the_ike_sa_and_the_first_child() -> None:
    link = Link()
    link.establish()
    ua, ub = settle(link)
    assert ua.mode is Mode.TRANSPORT and str(ua.proposal) == "aes128gcm16"
    assert ua.encr_key_in != ua.encr_key_out
    assert ua.replaces is None and ub.replaces is None
    # The IKE_AUTH exchange: two messages, nothing else.
    assert [link.describe(p).exchange for p in link.sent] == ["IKE_SA_INIT"] * 2 + ["IKE_AUTH"] * 2
    teardown(link)


def test_wrong_psk_is_refused_with_a_reason_on_both_sides() -> None:
    link = Link(b_config=peer_config(False, psk=b"another secret that is wrong!!!"))
    link.establish()
    link.run()
    (fail_b,) = link.b.auth_failures()
    (fail_a,) = link.a.auth_failures()
    assert "PSK" in fail_b.reason or "AUTH" in fail_b.reason
    assert "AUTHENTICATION_FAILED" in fail_a.reason
    for host in link.hosts():
        check_events(host)
        assert not host.live_children() and not host.manager.sas


def test_unexpected_peer_identity_with_psk_is_refused() -> None:
    link = Link(peer_config(True, remote_id="c.test"))
    link.establish()
    (fail_a,) = link.a.auth_failures()
    assert "b.test" in fail_a.reason and "c.test" in fail_a.reason
    # B had already accepted A; A's AUTHENTICATION_FAILED notify takes it down again.
    (fail_b,) = link.b.auth_failures()
    assert "refused" in fail_b.reason
    for host in link.hosts():
        check_events(host)
        assert not host.live_children() and not host.manager.sas


def test_lost_ike_auth_request_and_response_are_retransmitted() -> None:
    for lose_response in (False, True):
        link = Link()
        lost = link.lose_first(
            lambda s, r=lose_response: s.exchange == "IKE_AUTH" and s.response == r
        )
        link.establish()
        link.advance(2.0)
        assert lost
        settle(link)  # one pair: a retransmitted IKE_AUTH does not make a second one
        assert len(link.b.children_up()) == 1


# ---------------------------------------------------------------------- certificates


def _pki(kind_a: str = "ecdsa", kind_b: str = "ecdsa") -> dict[str, Issued]:
    ca = issue("hostsec test CA", ca=True, key=new_key("ecdsa", "ca"))
    return {
        "ca": ca,
        "a": issue("a.test", ca, key=new_key(kind_a, "a"), san="a.test"),
        "b": issue("b.test", ca, key=new_key(kind_b, "b"), san="b.test"),
    }


def _cert_link(a_auth: Any, b_auth: Any, **extra: Any) -> Link:
    return Link(
        peer_config(True, auth=a_auth, **extra),
        peer_config(False, auth=b_auth, **extra),
    )


def _auth_methods(link: Link) -> list[int]:
    methods = []
    for p in link.sent:
        s = link.describe(p)
        methods += [o.method for o in s.objects if isinstance(o, AUTH)]
    return methods


@pytest.mark.parametrize(
    ("kind_a", "kind_b"), [("rsa", "rsa"), ("ecdsa", "ecdsa"), ("rsa", "ecdsa")]
)
def test_certificates(kind_a: str, kind_b: str) -> None:
    pki = _pki(kind_a, kind_b)
    link = _cert_link(cert_auth(pki["a"], pki["ca"]), cert_auth(pki["b"], pki["ca"]))
    link.establish()
    settle(link)
    assert link.a.ike_up()[0].remote_id == "b.test"
    assert link.b.ike_up()[0].remote_id == "a.test"
    # Both announced SIGNATURE_HASH_ALGORITHMS: RFC 7427 Digital Signature both ways.
    assert _auth_methods(link) == [AuthMethod.DIGITAL_SIGNATURE] * 2
    # Each side sent its certificate and asked for one of our CA (CERTREQ).
    auth = [link.describe(p) for p in link.sent if link.describe(p).exchange == "IKE_AUTH"]
    assert [s.payloads.count("CERT") for s in auth] == [1, 1]
    assert "CERTREQ" in auth[0].payloads
    init_response = next(link.describe(p) for p in link.sent if p.to == "a")
    assert "CERTREQ" in init_response.payloads
    teardown(link)


def test_certificate_from_an_untrusted_ca_is_refused_by_the_initiator() -> None:
    pki = _pki()
    rogue = issue("rogue CA", ca=True, key=new_key("ecdsa", "rogue"))
    b_cert = issue("b.test", rogue, key=new_key("ecdsa", "b"), san="b.test")
    link = _cert_link(cert_auth(pki["a"], pki["ca"]), cert_auth(b_cert, pki["ca"]))
    link.establish()
    (fail_a,) = link.a.auth_failures()
    assert "untrusted issuer" in fail_a.reason and "rogue CA" in fail_a.reason
    (fail_b,) = link.b.auth_failures()
    assert "refused" in fail_b.reason
    for host in link.hosts():
        check_events(host)
        assert not host.live_children() and not host.manager.sas


def test_certificate_from_an_untrusted_ca_is_refused_by_the_responder() -> None:
    pki = _pki()
    rogue = issue("rogue CA", ca=True, key=new_key("ecdsa", "rogue"))
    a_cert = issue("a.test", rogue, key=new_key("ecdsa", "a"), san="a.test")
    link = _cert_link(cert_auth(a_cert, pki["ca"]), cert_auth(pki["b"], pki["ca"]))
    link.establish()
    (fail_b,) = link.b.auth_failures()
    assert "untrusted issuer" in fail_b.reason
    (fail_a,) = link.a.auth_failures()
    assert "AUTHENTICATION_FAILED" in fail_a.reason
    assert not link.a.children_up() and not link.b.children_up()
    assert not link.a.manager.sas and not link.b.manager.sas


def test_expired_certificate_is_refused() -> None:
    pki = _pki()
    old = issue(
        "a.test",
        pki["ca"],
        key=new_key("ecdsa", "a"),
        san="a.test",
        not_before=datetime(2024, 1, 1, tzinfo=UTC),
        not_after=datetime(2025, 1, 1, tzinfo=UTC),
    )
    link = _cert_link(cert_auth(old, pki["ca"]), cert_auth(pki["b"], pki["ca"]))
    link.establish()
    (fail_b,) = link.b.auth_failures()
    assert "expired" in fail_b.reason
    assert link.a.auth_failures()
    assert not link.a.manager.sas and not link.b.manager.sas


def test_identity_not_in_the_certificate_is_refused() -> None:
    pki = _pki()
    # A claims to be c.test with a certificate for a.test.
    link = Link(
        peer_config(True, auth=cert_auth(pki["a"], pki["ca"]), local_id="c.test"),
        peer_config(False, auth=cert_auth(pki["b"], pki["ca"]), remote_id=None),
    )
    link.establish()
    (fail_b,) = link.b.auth_failures()
    assert "c.test" in fail_b.reason
    assert link.a.auth_failures()
    assert not link.a.manager.sas and not link.b.manager.sas


def test_certificate_of_another_identity_than_expected_is_refused() -> None:
    pki = _pki()
    # B expects x.test; A proves a.test.
    link = Link(
        peer_config(True, auth=cert_auth(pki["a"], pki["ca"])),
        peer_config(False, auth=cert_auth(pki["b"], pki["ca"]), remote_id="x.test"),
    )
    link.establish()
    (fail_b,) = link.b.auth_failures()
    assert "x.test" in fail_b.reason
    assert link.a.auth_failures()
    assert not link.a.manager.sas and not link.b.manager.sas


def _fragmenting_link() -> Link:
    """RSA certificates with an intermediate CA: IKE_AUTH is about 2 KB each way, cut into
    fragments of at most 400 octets (RFC 7383)."""
    ca = issue("hostsec test CA", ca=True, key=new_key("rsa", "ca"))
    sub = issue("hostsec sub CA", ca, ca=True, key=new_key("rsa", "sub"))
    a = issue("a.test", sub, key=new_key("rsa", "a"), san="a.test")
    b = issue("b.test", sub, key=new_key("rsa", "b"), san="b.test")
    return _cert_link(
        cert_auth(a, ca, chain=(sub,)), cert_auth(b, ca, chain=(sub,)), fragment_size=400
    )


def _fragments(link: Link, response: bool) -> list[Packet]:
    out = []
    for p in link.sent:
        s = link.describe(p)
        if s.exchange == "IKE_AUTH" and s.response == response and s.fragment:
            out.append(p)
    return out


def test_large_ike_auth_is_fragmented() -> None:
    link = _fragmenting_link()
    link.establish()
    settle(link)
    for response in (False, True):
        frags = _fragments(link, response)
        totals = {link.describe(p).fragment[1] for p in frags}  # type: ignore[index]
        assert len(frags) >= 5 and totals == {len(frags)}
        assert all(len(p.ike) <= 400 for p in frags)
    assert all(len(p.ike) <= 400 for p in link.sent)


def _first_auth_fragment(link: Link, response: bool, number: int) -> Any:
    """A drop filter for fragment ``number`` of the first IKE_AUTH request or response."""
    done: list[Packet] = []

    def drop(p: Packet) -> bool:
        s = link.describe(p)
        if (
            not done
            and s.exchange == "IKE_AUTH"
            and s.response == response
            and s.fragment is not None
            and s.fragment[0] == number
        ):
            done.append(p)
            return True
        return False

    return drop


@pytest.mark.parametrize("response", [False, True])
@pytest.mark.parametrize("number", [1, 3])
def test_lost_ike_auth_fragment_is_retransmitted(response: bool, number: int) -> None:
    link = _fragmenting_link()
    link.drop = _first_auth_fragment(link, response, number)
    link.establish()
    assert not link.a.children_up()
    link.advance(1.0)
    settle(link)
    assert len(link.b.children_up()) == 1


def test_reordered_and_duplicated_ike_auth_fragments() -> None:
    link = _fragmenting_link()
    link.duplicate = lambda p: link.describe(p).fragment is not None
    link.a.manager.initiate("b", list(link.a.manager.configs["b"].children), link.now)
    while link.pending():
        link.collect()
        link.in_flight.reverse()  # last fragment first, duplicates next to each other
        link.deliver_one()
    settle(link)
    assert len(link.b.children_up()) == 1 and len(link.a.children_up()) == 1


# ---------------------------------------------------------------------- the first CHILD SA


@pytest.mark.parametrize(
    ("a_mode", "b_mode"), [(Mode.TRANSPORT, Mode.TUNNEL), (Mode.TUNNEL, Mode.TRANSPORT)]
)
def test_mode_mismatch_refuses_the_child_but_keeps_the_ike_sa(a_mode: Mode, b_mode: Mode) -> None:
    link = Link(
        peer_config(True, children=(child(a_side=True, mode=a_mode),)),
        peer_config(False, children=(child(a_side=False, mode=b_mode),)),
    )
    link.establish()
    (failed,) = link.a.child_failures()
    assert failed.reason == "NO_PROPOSAL_CHOSEN"
    assert not link.a.children_up() and not link.b.children_up()
    assert len(link.a.ike_up()) == 1 and len(link.b.ike_up()) == 1


def test_transport_request_answered_as_tunnel_is_refused_and_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A responder that drops USE_TRANSPORT_MODE from its answer: the initiator must not
    install a tunnel-mode SA for a transport-mode flow, and deletes what the peer made."""
    original = IkeSA.respond_child

    def rogue(self: IkeSA, *args: Any, **kwargs: Any) -> list[Payload]:
        out = original(self, *args, **kwargs)
        return [
            p
            for p in out
            if not (isinstance(p, Notify) and p.notify_type == NotifyType.USE_TRANSPORT_MODE)
        ]

    monkeypatch.setattr(IkeSA, "respond_child", rogue)
    link = Link()
    link.establish()
    (failed,) = link.a.child_failures()
    assert "tunnel" in failed.reason
    assert not link.a.children_up()
    (down,) = link.b.of(ChildSADown)
    assert down.reason == "deleted by the peer"
    assert not link.b.live_children()
    assert len(link.a.ike_up()) == 1 and not link.a.ike_down()


def test_traffic_selectors_are_narrowed_by_the_responder() -> None:
    any_a = TrafficSelector.from_network("198.51.100.1/32")
    subnet = TrafficSelector.from_network("198.51.100.0/24")
    a_tcp = TrafficSelector.from_network("198.51.100.1/32", 6)
    b_telnet = TrafficSelector.from_network("198.51.100.2/32", 6, 23)
    link = Link(
        peer_config(True, children=(child(local_ts=(any_a,), remote_ts=(subnet,)),)),
        peer_config(False, children=(child(a_side=False),)),
    )
    link.establish()
    ua, ub = settle(link)
    assert ua.local_ts == (a_tcp,) and ua.remote_ts == (b_telnet,)
    assert ub.local_ts == (b_telnet,) and ub.remote_ts == (a_tcp,)


def test_ts_unacceptable_keeps_the_ike_sa() -> None:
    elsewhere = TrafficSelector.from_network("198.51.100.3/32", 6, 23)
    link = Link(peer_config(True, children=(child(remote_ts=(elsewhere,)),)))
    link.establish()
    (failed,) = link.a.child_failures()
    assert failed.reason == "TS_UNACCEPTABLE"
    assert not link.a.children_up() and not link.b.children_up()
    assert len(link.a.ike_up()) == 1 and len(link.b.ike_up()) == 1
    teardown(link)


def test_the_responder_picks_the_flow_whose_proposals_match() -> None:
    """Two flows with the same selectors but different ciphers: the request for the
    second one is not refused because the first one's proposals do not match."""
    second_a = child("second", esp="aes256gcm16")
    second_b = child("second", a_side=False, esp="aes256gcm16")
    link = Link(
        peer_config(True, children=(second_a,)),
        peer_config(False, children=(child(a_side=False), second_b)),
    )
    link.establish()
    ua, ub = settle(link)
    assert ua.child == ub.child == "second" and str(ua.proposal) == "aes256gcm16"


def test_no_proposal_chosen_for_the_child_keeps_the_ike_sa() -> None:
    link = Link(
        peer_config(True, children=(child(esp="aes256gcm16"),)),
        peer_config(False, children=(child(a_side=False, esp="aes128-sha256"),)),
    )
    link.establish()
    (failed,) = link.a.child_failures()
    assert failed.reason == "NO_PROPOSAL_CHOSEN"
    assert len(link.a.ike_up()) == 1 and len(link.b.ike_up()) == 1
    assert not link.a.ike_down() and not link.b.ike_down()


def test_ah_child() -> None:
    link = Link(
        peer_config(True, children=(child(protocol=Protocol.AH, esp="sha256"),)),
        peer_config(False, children=(child(a_side=False, protocol=Protocol.AH, esp="sha256"),)),
    )
    link.establish()
    ua, _ = settle(link)
    assert ua.protocol is Protocol.AH and ua.encr_key_in == b"" and len(ua.integ_key_in) == 32


def test_esp_tfc_padding_not_supported_is_sent() -> None:
    link = Link()
    link.establish()
    auth = [link.describe(p) for p in link.sent if link.describe(p).exchange == "IKE_AUTH"]
    assert all(s.has(NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED) for s in auth)
    assert all(s.has(NotifyType.USE_TRANSPORT_MODE) for s in auth)
    assert auth[0].has(NotifyType.INITIAL_CONTACT)


def test_more_children_follow_ike_auth_with_create_child_sa() -> None:
    ssh_a = (TrafficSelector.from_network("198.51.100.1/32", 6),)
    ssh_b = (TrafficSelector.from_network("198.51.100.2/32", 6, 22),)
    second_a = child("second", esp="aes256gcm16", local_ts=ssh_a, remote_ts=ssh_b)
    second_b = child("second", a_side=False, esp="aes256gcm16", local_ts=ssh_b, remote_ts=ssh_a)
    link = Link(
        peer_config(True, children=(child(), second_a)),
        peer_config(False, children=(child(a_side=False), second_b)),
    )
    link.establish()
    exchanges = [link.describe(p).exchange for p in link.sent]
    assert exchanges[-2:] == ["CREATE_CHILD_SA", "CREATE_CHILD_SA"]
    for name in ("telnet", "second"):
        ua, _ = live_pair_of(link, name)
        assert ua.child == name
    teardown(link)


def live_pair_of(link: Link, name: str) -> Any:
    from .ike_harness import live_pair

    return live_pair(link, name)


def test_initial_contact_replaces_the_stale_ike_sa_of_a_restarted_peer() -> None:
    link = Link()
    link.establish()
    (old_b,) = link.b.children_up()
    # A restarts: a fresh manager, same configuration, no memory of the old SAs.
    link.now += 5.0
    link.a.manager = link._manager("a", link.a.manager.configs["b"], 7, datetime.now(UTC), {})
    link.a.forget()
    link.establish()
    downs = link.b.of(IkeSADown)
    assert len(downs) == 1 and "INITIAL_CONTACT" in downs[0].reason
    (child_down,) = link.b.children_down()
    assert child_down.spi_in == old_b.spi_in
    assert len(link.b.manager.sas) == 1
    settle(link)


def test_initial_contact_leaves_other_negotiations_alone() -> None:
    """Both ends start at once: each IKE_AUTH carries INITIAL_CONTACT, but an IKE SA that
    was not up before the peer started its own must survive it."""
    link = Link(b_config=peer_config(False, children=(child(a_side=False),)))
    link.a.manager.initiate("b", list(link.a.manager.configs["b"].children), link.now)
    link.b.manager.initiate("a", list(link.b.manager.configs["a"].children), link.now)
    link.step("b")  # A's IKE_SA_INIT
    link.step("a")  # B's IKE_SA_INIT
    link.step("a")  # response to A: A sends IKE_AUTH
    link.step("b")  # response to B: B sends IKE_AUTH
    link.step("b", link.find("b", lambda s: not s.response))  # A's IKE_AUTH: B is up
    link.step("a", link.find("a", lambda s: s.response))  # its response: A's SA is up
    assert link.a.ike_up() and link.b.ike_up()
    link.run()  # B's IKE_AUTH reaches A after A's own SA came up
    for host in link.hosts():
        check_events(host)
        assert len(host.ike_up()) == 2, host.name
        # Neither went because of INITIAL_CONTACT; the redundant one of the two is closed
        # by its initiator afterwards (test_ike_duplicates.py), the other one stays.
        assert all("INITIAL_CONTACT" not in e.reason for e in host.ike_down()), host.name
    link.advance(10.0)
    settle(link)
