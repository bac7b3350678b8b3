"""Transport mode through a NAT (RFC 7296 2.23.1) in memory: the responder's policy names
the address it sees (the NAT's), as the agent's does; the selectors are substituted on
both sides and each side learns the addresses the other's checksums cover (RFC 3948 3.1.2).
"""

from __future__ import annotations

from tests.unit.ike_harness import (
    A_ADDR,
    B_ADDR,
    NAT_ADDR,
    Link,
    child,
    peer_config,
    settle,
)


def _single(selectors: tuple[object, ...]) -> bytes:
    (ts,) = selectors
    assert ts.start_addr == ts.end_addr  # type: ignore[attr-defined]
    return ts.start_addr  # type: ignore[attr-defined, no-any-return]


def test_responder_policy_with_the_nat_address() -> None:
    b_config = peer_config(False, remote=NAT_ADDR, children=(child(a_side=False, a_addr=NAT_ADDR),))
    link = Link(b_config=b_config, nat=True)
    link.establish()
    ua, ub = settle(link)
    # Each side's SA uses the addresses its own stack sees ...
    assert _single(ua.local_ts) == A_ADDR.packed and _single(ua.remote_ts) == B_ADDR.packed
    assert _single(ub.local_ts) == B_ADDR.packed and _single(ub.remote_ts) == NAT_ADDR.packed
    # ... and fixes up checksums for the addresses the other side's stack used:
    # B's packets were sent to A's public address, A's from its inside address.
    assert ua.nat_original == (B_ADDR.packed, NAT_ADDR.packed)
    assert ub.nat_original == (A_ADDR.packed, B_ADDR.packed)
    assert ua.encapsulation is not None and ub.encapsulation is not None


def test_responder_policy_with_the_inside_address_still_works() -> None:
    link = Link(nat=True)  # B's child names A's inside address (looked up second)
    link.establish()
    ua, ub = settle(link)
    assert _single(ub.remote_ts) == A_ADDR.packed
    assert ub.nat_original == (A_ADDR.packed, B_ADDR.packed)
    assert ua.nat_original == (B_ADDR.packed, A_ADDR.packed)  # nothing to fix: a no-op


def test_no_substitution_without_a_nat() -> None:
    link = Link()
    link.establish()
    ua, ub = settle(link)
    assert ua.nat_original is None and ub.nat_original is None
    assert ua.encapsulation is None and ub.encapsulation is None
