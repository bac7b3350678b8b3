"""Choosing what two peers agree on: proposals (RFC 7296 2.7, 3.3.6) and traffic
selectors (RFC 7296 2.9). Pure functions, shared by IKEv2 and IKEv1 Quick Mode.

A responder picks one proposal from the initiator's list with exactly one transform of
each type, every one of them acceptable to its own configuration; the initiator then
checks that what came back is something it offered. Traffic selectors are narrowed to
the intersection of what was proposed and what the responder's policy allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

from hostsec.crypto.proposals import Proposal, Protocol
from hostsec.crypto.transforms import DhId, EsnId
from hostsec.wire.selectors import TrafficSelector

_T = TypeVar("_T")


def _pick(offered: Sequence[_T], acceptable: Sequence[_T]) -> tuple[_T, ...] | None:
    """(first offered item that is acceptable,) in the initiator's order of preference;
    () when neither side lists any; None when there is no overlap."""
    if not offered and not acceptable:
        return ()
    for item in offered:
        if item in acceptable:
            return (item,)
    return None


def _match(offered: Proposal, configured: Proposal) -> Proposal | None:
    """One transform of each type, taken from ``offered``, all accepted by ``configured``."""
    if offered.protocol is not configured.protocol:
        return None
    child = offered.protocol is not Protocol.IKE
    encryption = _pick(offered.encryption, configured.encryption)
    integrity = _pick(offered.integrity, configured.integrity)
    prf = _pick(offered.prf, configured.prf)
    if child:
        # CHILD SAs: no DH group (or NONE) means no PFS, and no ESN transform means no
        # ESN; both sides must agree on either (RFC 7296 3.3.3).
        dh = _pick(offered.dh or (DhId.NONE,), configured.dh or (DhId.NONE,))
        esn = _pick(offered.esn or (EsnId.NO,), configured.esn or (EsnId.NO,))
    else:
        dh = _pick(offered.dh, configured.dh)
        esn = _pick(offered.esn, configured.esn)
    if encryption is None or integrity is None or prf is None or dh is None or esn is None:
        return None
    return Proposal(
        offered.protocol,
        encryption,
        integrity,
        prf,
        tuple(g for g in dh if g is not DhId.NONE),
        esn,
    )


def select_proposal(
    offered: Sequence[Proposal],
    configured: Sequence[Proposal],
    prefer_configured: bool = False,
) -> tuple[int, Proposal] | None:
    """The responder's choice: (index into ``offered``, the single-transform proposal).

    By default the initiator's order wins (as strongSwan does); with ``prefer_configured``
    the responder's own order does.
    """
    if prefer_configured:
        for mine in configured:
            for index, theirs in enumerate(offered):
                match = _match(theirs, mine)
                if match is not None:
                    return index, match
        return None
    for index, theirs in enumerate(offered):
        for mine in configured:
            match = _match(theirs, mine)
            if match is not None:
                return index, match
    return None


def is_single(proposal: Proposal) -> bool:
    """Exactly one transform of each type present (what a responder must send back)."""
    return all(
        len(getattr(proposal, kind)) <= 1
        for kind in ("encryption", "integrity", "prf", "dh", "esn")
    )


def accepts_choice(offered: Sequence[Proposal], chosen: Proposal) -> bool:
    """Initiator side: was ``chosen`` (one transform per type) part of one of our offers?"""
    if not is_single(chosen):
        return False
    return any(_match(chosen, mine) == _normalise(chosen) for mine in offered)


def _normalise(p: Proposal) -> Proposal:
    esn = p.esn or ((EsnId.NO,) if p.protocol is not Protocol.IKE else ())
    return replace(p, dh=tuple(g for g in p.dh if g is not DhId.NONE), esn=esn)


def without_dh(proposals: Sequence[Proposal]) -> list[Proposal]:
    """CHILD proposals for IKE_AUTH: the first CHILD_SA never does PFS (RFC 7296 1.2)."""
    return [replace(p, dh=()) for p in proposals]


def first_dh_group(proposals: Sequence[Proposal]) -> DhId | None:
    """The group to send a KE payload for: the first group of the first proposal."""
    for p in proposals:
        for g in p.dh:
            if g is not DhId.NONE:
                return g
    return None


# ---------------------------------------------------------------------------
# Traffic selectors (RFC 7296 2.9)


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    """The selector matching what both ``a`` and ``b`` match, or None."""
    if len(a.start_addr) != len(b.start_addr):
        return None
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return None
    protocol = a.protocol or b.protocol
    start = max(a.start_addr, b.start_addr)
    end = min(a.end_addr, b.end_addr)
    if start > end:
        return None
    lo = max(a.start_port, b.start_port)
    hi = min(a.end_port, b.end_port)
    if lo > hi:
        return None
    return TrafficSelector(start, end, protocol, lo, hi)


def narrow(
    proposed: Sequence[TrafficSelector], allowed: Sequence[TrafficSelector]
) -> list[TrafficSelector]:
    """Every non-empty intersection of a proposed and an allowed selector, without
    duplicates, in the order of the proposal (RFC 7296 2.9: the responder narrows)."""
    out: list[TrafficSelector] = []
    for p in proposed:
        for a in allowed:
            ts = intersect(p, a)
            if ts is not None and ts not in out:
                out.append(ts)
    return out


def contained(inner: TrafficSelector, outer: TrafficSelector) -> bool:
    """``inner`` matches nothing that ``outer`` does not."""
    return intersect(inner, outer) == inner


def all_contained(narrowed: Sequence[TrafficSelector], proposed: Sequence[TrafficSelector]) -> bool:
    """Initiator side: the responder may only narrow, never widen (RFC 7296 2.9)."""
    return bool(narrowed) and all(any(contained(n, p) for p in proposed) for n in narrowed)
