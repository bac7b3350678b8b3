"""Proposal selection (RFC 7296 2.7) and traffic selector narrowing (RFC 7296 2.9)."""

from __future__ import annotations

from hostsec.crypto.proposals import Protocol, parse_proposal, parse_proposals
from hostsec.crypto.transforms import DhId
from hostsec.ike.selection import (
    accepts_choice,
    all_contained,
    first_dh_group,
    intersect,
    narrow,
    select_proposal,
    without_dh,
)
from hostsec.wire.selectors import TrafficSelector as TS  # noqa: N817

IKE = Protocol.IKE
ESP = Protocol.ESP


def test_initiator_order_wins_by_default() -> None:
    offered = parse_proposals(["aes256-sha256-modp2048", "aes128gcm16-prfsha256-ecp256"], IKE)
    configured = parse_proposals(["aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"], IKE)
    index, chosen = select_proposal(offered, configured) or (None, None)
    assert index == 0 and str(chosen) == "aes256-sha256-modp2048"
    index, chosen = select_proposal(offered, configured, prefer_configured=True) or (None, None)
    assert index == 1 and str(chosen) == "aes128gcm16-prfsha256-ecp256"


def test_single_transform_of_each_type_is_chosen() -> None:
    offered = [parse_proposal("aes128-aes256-sha256-sha1-modp2048-ecp256", IKE)]
    configured = [parse_proposal("aes256-sha1-ecp256", IKE)]
    _, chosen = select_proposal(offered, configured) or (None, None)
    assert chosen is not None
    assert str(chosen) == "aes256-sha1-ecp256"
    assert accepts_choice(offered, chosen)
    assert not accepts_choice(offered, parse_proposal("aes192-sha1-ecp256", IKE))
    assert not accepts_choice(offered, offered[0])  # several transforms of a type


def test_no_common_proposal() -> None:
    offered = parse_proposals(["aes128gcm16-prfsha256-ecp256"], IKE)
    configured = parse_proposals(["aes128gcm16-prfsha256-ecp384"], IKE)
    assert select_proposal(offered, configured) is None


def test_child_pfs_must_agree() -> None:
    pfs = parse_proposals(["aes128gcm16-modp2048"], ESP)
    nopfs = parse_proposals(["aes128gcm16"], ESP)
    assert select_proposal(pfs, nopfs) is None
    assert select_proposal(nopfs, pfs) is None
    _, chosen = select_proposal(pfs, pfs) or (None, None)
    assert chosen is not None and chosen.dh == (DhId.MODP_2048,)
    assert without_dh(pfs)[0].dh == ()
    assert first_dh_group(pfs) is DhId.MODP_2048
    assert first_dh_group(nopfs) is None


def test_esn_must_agree() -> None:
    esn = parse_proposals(["aes128gcm16-esn"], ESP)
    either = parse_proposals(["aes128gcm16-esn-noesn"], ESP)
    noesn = parse_proposals(["aes128gcm16"], ESP)
    assert select_proposal(esn, noesn) is None
    assert select_proposal(either, noesn) is not None


def test_narrowing() -> None:
    proposed = [TS.from_network("198.51.100.0/24", 0)]
    allowed = [TS.from_network("198.51.100.2/32", 6, 23)]
    narrowed = narrow(proposed, allowed)
    assert narrowed == [TS.from_network("198.51.100.2/32", 6, 23)]
    assert all_contained(narrowed, proposed)
    assert not all_contained(proposed, narrowed)
    assert narrow([TS.from_network("203.0.113.0/24", 0)], allowed) == []
    assert intersect(TS.from_network("2001:db8::/64"), allowed[0]) is None
    assert intersect(TS.from_network("198.51.100.2/32", 17), allowed[0]) is None
    assert not all_contained([], proposed)
