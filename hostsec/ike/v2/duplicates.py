"""Two IKE SAs with one peer because both ends initiated at once.

When both ends start IKE towards each other at the same moment (both bring their flows up
at start, or both see a first packet), each IKE_SA_INIT succeeds and the two hosts end up
with two IKE SAs, each with its own CHILD SAs for the same flows. RFC 7296 allows that
(2.8: duplicate SAs are not an error) but names no rule for IKE_SA_INIT. hostsec applies
the rule of 2.8.1 for redundant SAs made by simultaneous rekeys: the SA created with the
lowest of the nonces is redundant and the end that created it (its initiator) closes it.
Both ends hold the same two SAs with the same nonces, so both pick the same one, and only
one end acts.

Before closing it, that end makes sure the surviving IKE SA carries every CHILD SA the
redundant one carries (it creates the missing ones on the survivor, RFC 7296 1.3.1), so
that deleting the redundant SA takes no flow down: each flow's traffic moves to the
survivor's pair first (the agent sends on another live pair of the flow when one goes).
A peer that is not hostsec and never closes its own redundant SA leaves the duplicate in
place, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hostsec.ike.v2.config import ChildConfig
    from hostsec.ike.v2.ikesa import IkeSA


@dataclass
class Plan:
    """Close ``redundant`` (we initiated it) once ``survivor`` carries all its flows."""

    redundant: IkeSA
    survivor: IkeSA
    requested: set[str] = field(default_factory=set)  # CHILD SAs created on the survivor


def lowest_nonce(sa: IkeSA) -> tuple[bytes, bytes, bytes]:
    """The key the 2.8.1 rule compares: the SA's lowest nonce (SPIs break a tie)."""
    return (min(sa.ni, sa.nr), sa.spi_i, sa.spi_r)


def redundant_of(a: IkeSA, b: IkeSA) -> IkeSA:
    """Of two duplicate IKE SAs, the one the rule closes (the same one at both ends)."""
    return a if lowest_nonce(a) < lowest_nonce(b) else b


def _settled(sa: IkeSA) -> bool:
    """No exchange of ours in flight or queued, no IKE rekey under way."""
    return sa.active is None and not sa.queue and not sa.pending_children and sa.rekeying is None


def live_children(sa: IkeSA) -> dict[str, ChildConfig]:
    return {c.name: c.config for c in sa.children.values() if c.live}


class DuplicateResolver:
    """The manager's plans to close the redundant IKE SAs it initiated."""

    def __init__(self) -> None:
        self.plans: list[Plan] = []

    def established(self, sa: IkeSA, others: list[IkeSA]) -> None:
        """``sa`` just came up through IKE_AUTH; ``others`` are our other established IKE
        SAs, made by IKE_AUTH too, with the same peer and identity."""
        for other in others:
            if any(sa in (p.redundant, p.survivor) for p in self.plans):
                return
            redundant = redundant_of(sa, other)
            survivor = other if redundant is sa else sa
            redundant.log(
                f"duplicate of IKE SA {survivor.spi_i.hex()}_i {survivor.spi_r.hex()}_r "
                "(both ends initiated at once); "
                + (
                    "it will be closed once the other carries its CHILD SAs"
                    if redundant.initiator
                    else "the peer closes it"
                )
            )
            if redundant.initiator:
                self.plans.append(Plan(redundant, survivor))

    def resolve(self, now: float) -> list[IkeSA]:
        """Move each plan on; the SAs it touched (to collect what they now send)."""
        touched: list[IkeSA] = []
        for plan in list(self.plans):
            redundant, survivor = plan.redundant, plan.survivor
            if not (redundant.established and survivor.established):
                self.plans.remove(plan)  # one of them went (deleted, rekeyed, dead)
                continue
            if not (_settled(redundant) and _settled(survivor)):
                continue
            wanted = live_children(redundant)
            have = live_children(survivor)
            missing = {n: c for n, c in wanted.items() if n not in have}
            if not missing:
                redundant.delete(now, reason="duplicate IKE SA (both ends initiated at once)")
                self.plans.remove(plan)
                touched.append(redundant)
                continue
            new = {n: c for n, c in missing.items() if n not in plan.requested}
            if not new:
                # Asked for already, and the survivor is done with them: it refused or
                # lost them. Keep the duplicate rather than take those flows down.
                redundant.log(
                    "the other IKE SA refused CHILD SAs "
                    f"{', '.join(sorted(missing))}: keeping this duplicate"
                )
                self.plans.remove(plan)
                touched.append(redundant)
                continue
            for name, config in new.items():
                plan.requested.add(name)
                survivor.create_child(config, now)
            touched.append(survivor)
        return touched
