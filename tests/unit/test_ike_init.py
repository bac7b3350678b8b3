"""IKE_SA_INIT (RFC 7296 1.2, 2.6, 2.23; RFC 7383 2.3; RFC 7427 4) between two in-memory
agents: proposals, INVALID_KE_PAYLOAD, cookies, NAT detection, capabilities."""

from __future__ import annotations

from hostsec.crypto.auth import SUPPORTED_HASH_ALGORITHMS
from hostsec.crypto.transforms import DhId
from hostsec.ike.v2.events import ChildSAUp, IkeSAUp, Transmit
from hostsec.ike.v2.ikesa import HALF_OPEN_TIMEOUT
from hostsec.ike.v2.manager import IkeManager
from hostsec.wire.ikev2 import (
    IKEHeader,
    NotifyType,
    UnknownPayload,
    encode_message,
    parse_message,
)
from hostsec.wire.udpencap import NAT_T_PORT, NON_ESP_MARKER

from .ike_harness import (
    A_ADDR,
    B_ADDR,
    NAT_ADDR,
    Link,
    Packet,
    peer_config,
    settle,
    teardown,
)


def _init_summaries(link: Link) -> list[tuple[str, list[str]]]:
    out = []
    for p in link.sent:
        s = link.describe(p)
        if s.exchange == "IKE_SA_INIT":
            out.append(("resp" if s.response else "req", s.notifies))
    return out


def test_the_initiators_first_acceptable_proposal_is_chosen() -> None:
    link = Link(
        peer_config(True, ike="aes256gcm16-prfsha384-ecp384,aes128gcm16-prfsha256-ecp256"),
        peer_config(False, ike="aes128gcm16-prfsha256-ecp256,aes256gcm16-prfsha384-ecp384"),
    )
    link.establish()
    (up_a,) = link.a.ike_up()
    (up_b,) = link.b.ike_up()
    assert str(up_a.proposal) == str(up_b.proposal) == "aes256gcm16-prfsha384-ecp384"
    settle(link)
    teardown(link)


def test_no_proposal_chosen_fails_the_initiator_and_leaves_no_state() -> None:
    link = Link(
        peer_config(True, ike="aes256gcm16-prfsha384-ecp384"),
        peer_config(False, ike="aes128-sha256-modp2048"),
    )
    link.establish()
    assert _init_summaries(link) == [
        ("req", ["NAT_DETECTION_SOURCE_IP", "NAT_DETECTION_DESTINATION_IP",
                 "IKEV2_FRAGMENTATION_SUPPORTED", "SIGNATURE_HASH_ALGORITHMS"]),
        ("resp", ["NO_PROPOSAL_CHOSEN"]),
    ]  # fmt: skip
    (down,) = link.a.ike_down()
    assert "NO_PROPOSAL_CHOSEN" in down.reason
    assert not link.a.manager.sas and not link.b.manager.sas
    assert not link.b.ike_up() and not link.b.ike_down()


def test_invalid_ke_payload_retried_with_the_group_asked_for() -> None:
    link = Link(
        peer_config(True, ike="aes128gcm16-prfsha256-ecp256-curve25519"),
        peer_config(False, ike="aes128gcm16-prfsha256-curve25519"),
    )
    link.establish()
    kinds = [n for _, n in _init_summaries(link)]
    assert kinds[1] == ["INVALID_KE_PAYLOAD"]
    assert len(kinds) == 4  # request, INVALID_KE, request with curve25519, response
    (up,) = link.a.ike_up()
    assert up.proposal.dh == (DhId.CURVE25519,)
    assert len(link.b.ike_up()) == 1
    settle(link)


def test_cookie_asked_for_past_the_half_open_threshold() -> None:
    link = Link(manager_options={"cookie_threshold": 0})
    link.establish()
    kinds = [(k, n[0] if n else "") for k, n in _init_summaries(link)]
    assert kinds == [
        ("req", "NAT_DETECTION_SOURCE_IP"),
        ("resp", "COOKIE"),
        ("req", "COOKIE"),  # RFC 7296 2.6: the cookie comes first
        ("resp", "NAT_DETECTION_SOURCE_IP"),
    ]
    assert link.b.manager.drops == {"cookie required": 1}
    settle(link)


def _spoofed_inits(count: int, start_port: int = 20000) -> list[Packet]:
    """IKE_SA_INIT requests from A's address and ``count`` different ports, made by an
    agent that never answers anything (the attacker)."""
    attacker = IkeManager([peer_config(True)], seed=99)
    packets = []
    for i in range(count):
        port = start_port + i
        attacker.initiate("b", [], 0.0, local=(A_ADDR, port))
        out, _ = attacker.poll()
        for t in out:
            assert isinstance(t, Transmit)
            packets.append(Packet("b", t.data, (A_ADDR, port), (B_ADDR, 500)))
        for sa in list(attacker.sas.values()):
            attacker.forget(sa)
    return packets


def test_a_flood_of_spoofed_ike_sa_init_is_bounded_by_cookies() -> None:
    link = Link()
    link.establish()
    threshold = link.b.manager.cookies.threshold
    for packet in _spoofed_inits(300):
        link.deliver(packet)
    # State only up to the threshold; the rest got a COOKIE and cost nothing.
    assert len(link.b.manager._half_open) == threshold
    assert link.b.manager.drops["cookie required"] == 300 - threshold
    link.in_flight.clear()  # the attacker does not read its mail
    # The established SA keeps working and a legitimate peer still gets in.
    link.b.sa().rekey_child(link.b.child().spi_in, link.now)
    link.run()
    link.a.manager.delete_peer("b", link.now)
    link.run()
    link.establish()
    assert len(link.a.ike_up()) == 2
    # The half-open SAs time out; then no cookie is needed any more.
    link.advance(HALF_OPEN_TIMEOUT + 1)
    assert not link.b.manager._half_open
    assert not link.b.manager.cookies.required(len(link.b.manager._half_open))
    settle(link)


def test_half_open_and_established_limits() -> None:
    """Past the half-open limit (cookies off here) or the SA limit, IKE_SA_INIT is
    dropped without an answer; the SAs already there are untouched."""
    link = Link(manager_options={"cookie_threshold": 100, "half_open_limit": 3})
    link.establish()
    for packet in _spoofed_inits(5):
        link.deliver(packet)
    assert len(link.b.manager._half_open) == 3
    assert link.b.manager.drops["too many IKE SAs"] == 2
    link.in_flight.clear()
    link = Link(manager_options={"established_limit": 1})
    link.establish()
    for packet in _spoofed_inits(2):
        link.deliver(packet)
    assert link.b.manager.drops["too many IKE SAs"] == 2 and len(link.b.manager.sas) == 1
    link.in_flight.clear()
    settle(link)


def test_a_retransmitted_ike_sa_init_gets_the_same_response() -> None:
    link = Link()
    link.duplicate = lambda p: link.describe(p).exchange == "IKE_SA_INIT"
    link.establish()
    responses = [p.data for p in link.sent if p.to == "a" and link.describe(p).response]
    init_responses = [d for d in responses if parse_message(d).header.exchange_type == 34]
    assert len(init_responses) == 2 and init_responses[0] == init_responses[1]
    assert len(link.b.ike_up()) == 1 and len(link.b.manager.sas) == 1
    settle(link)


def test_an_ike_sa_init_replayed_after_establishment_creates_no_state() -> None:
    link = Link()
    link.establish()
    first = next(p for p in link.sent if p.to == "b")
    link.deliver(Packet(first.to, first.data, first.src, first.dst))
    link.run()
    assert len(link.b.manager.sas) == 1 and not link.b.manager._half_open
    settle(link)


def test_lost_ike_sa_init_request_and_response_are_retransmitted() -> None:
    for lose in ("request", "response"):
        link = Link()
        lost = link.lose_first(
            lambda s, r=(lose == "response"): s.exchange == "IKE_SA_INIT" and s.response == r
        )
        link.establish()
        assert not link.a.ike_up()
        link.advance(1.0)
        assert lost and len(link.a.ike_up()) == 1, lose
        assert len(link.b.manager.sas) == 1
        settle(link)


def test_an_unreachable_responder_fails_after_the_retransmissions() -> None:
    link = Link()
    link.drop = lambda p: True
    link.establish()
    link.advance(14.0)
    assert not link.a.ike_down()
    link.advance(1.0)  # 1 + 2 + 4 + 8 s
    (down,) = link.a.ike_down()
    assert "unreachable" in down.reason
    assert len(link.sent) == 4 and not link.a.manager.sas


def test_half_open_sa_times_out_on_the_responder() -> None:
    link = Link()
    link.drop = lambda p: link.describe(p).exchange == "IKE_AUTH"
    link.establish()
    assert len(link.b.manager.sas) == 1 and len(link.b.manager._half_open) == 1
    link.advance(HALF_OPEN_TIMEOUT - 1)
    assert len(link.b.manager.sas) == 1
    link.advance(1.0)
    assert not link.b.manager.sas and not link.b.manager._half_open
    assert not link.b.ike_up()


def test_unsupported_critical_payload_in_ike_sa_init_is_answered() -> None:
    link = Link()
    header = IKEHeader(b"\x01" * 8, b"\x00" * 8, 34, 0, 0x08)
    data = encode_message(header, [UnknownPayload(200, b"abc", critical=True)])
    link.deliver(Packet("b", data, (A_ADDR, 500), (B_ADDR, 500)))
    (reply,) = link.pending("a")
    msg = parse_message(reply.data)
    assert msg.header.response and msg.header.spi_i == b"\x01" * 8
    (notify,) = msg.payloads
    assert notify.notify_type == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD  # type: ignore[attr-defined]
    assert notify.data == bytes([200])  # type: ignore[attr-defined]
    assert not link.b.manager.sas


def test_fragmentation_and_signature_hashes_are_announced_both_ways() -> None:
    link = Link()
    link.establish()
    for host in link.hosts():
        sa = host.sa()
        assert sa.peer_fragmentation
        assert sa.peer_hashes == frozenset(int(h) for h in SUPPORTED_HASH_ALGORITHMS)
    # Without fragmentation on A, B does not announce it either (RFC 7383 2.3).
    link = Link(peer_config(True, fragmentation=False))
    link.establish()
    notifies = _init_summaries(link)
    assert "IKEV2_FRAGMENTATION_SUPPORTED" not in notifies[0][1]
    assert "IKEV2_FRAGMENTATION_SUPPORTED" not in notifies[1][1]
    assert not link.a.sa().peer_fragmentation and not link.b.sa().peer_fragmentation


def test_nat_is_detected_and_ike_floats_to_4500() -> None:
    link = Link(nat=True)
    link.establish()
    (up_a,) = link.a.ike_up()
    (up_b,) = link.b.ike_up()
    assert up_a.nat_local and not up_a.nat_remote
    assert up_b.nat_remote and not up_b.nat_local
    assert link.nat is not None
    mapped_4500 = link.nat.out[(A_ADDR, NAT_T_PORT)]
    assert link.a.sa().local == (A_ADDR, NAT_T_PORT) and link.a.sa().remote == (B_ADDR, 4500)
    assert link.b.sa().remote == mapped_4500
    # IKE_AUTH and everything after it went to port 4500 with the non-ESP marker.
    auth = [p for p in link.sent if link.describe(p).exchange == "IKE_AUTH"]
    assert len(auth) == 2
    assert all(p.data[:4] == NON_ESP_MARKER and p.dst[1] == NAT_T_PORT for p in auth)
    ua, ub = settle(link)
    assert ua.encapsulation == (NAT_T_PORT, NAT_T_PORT)
    assert ub.encapsulation == (NAT_T_PORT, mapped_4500[1])
    assert ub.remote == NAT_ADDR
    # B fixes up transport-mode checksums for A's real address (RFC 3948 3.1.2).
    assert ub.nat_original == (A_ADDR.packed, B_ADDR.packed)


def test_keepalives_from_behind_the_nat_and_a_new_nat_mapping_is_followed() -> None:
    link = Link(
        peer_config(True, dpd=30.0, keepalive=10.0),
        peer_config(False, remote=NAT_ADDR, dpd=None),
        nat=True,
    )
    link.establish()
    link.advance(25.0)
    assert link.a.keepalives == 2 and link.b.keepalives == 0
    assert link.nat is not None
    link.nat.rebind()
    link.advance(10.0)  # A's DPD at 30 s comes from a new public port; B follows it
    new_port = link.nat.out[(A_ADDR, NAT_T_PORT)]
    assert link.b.sa().remote == new_port
    assert not link.a.ike_down() and not link.b.ike_down()
    settle(link)


def test_forced_encapsulation_without_a_nat() -> None:
    link = Link(peer_config(True, encapsulation="force"))
    link.establish()
    (up_a,) = link.a.ike_up()
    (up_b,) = link.b.ike_up()
    assert up_a.nat_local and up_b.nat_remote
    ua, ub = settle(link)
    assert ua.encapsulation == (4500, 4500) and ub.encapsulation == (4500, 4500)
    assert link.b.sa().local[1] == link.b.sa().remote[1] == 4500


def test_forced_encapsulation_by_the_responder() -> None:
    link = Link(b_config=peer_config(False, encapsulation="force"))
    link.establish()
    (up_a,) = link.a.ike_up()
    (up_b,) = link.b.ike_up()
    assert up_a.nat_remote and up_b.nat_local
    ua, ub = settle(link)
    assert ua.encapsulation == (4500, 4500) and ub.encapsulation == (4500, 4500)


def test_no_encapsulation_without_a_nat() -> None:
    link = Link()
    link.establish()
    ups = [link.a.ike_up()[0], link.b.ike_up()[0]]
    assert not any(u.nat_local or u.nat_remote for u in ups)
    events = [e for h in link.hosts() for e in h.events if isinstance(e, ChildSAUp)]
    assert all(e.encapsulation is None for e in events)
    assert all(p.dst[1] == 500 for p in link.sent)


def test_ike_sa_up_reports_both_ends() -> None:
    link = Link()
    link.establish()
    (up,) = link.a.ike_up()
    assert isinstance(up, IkeSAUp)
    assert up.initiator and up.local_id == "a.test" and up.remote_id == "b.test"
    assert up.local == (A_ADDR, 500) and up.remote == (B_ADDR, 500)
    (up_b,) = link.b.ike_up()
    assert not up_b.initiator and up_b.spi_i == up.spi_i and up_b.spi_r == up.spi_r
