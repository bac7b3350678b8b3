"""Checks of a flow against its peer, which may be defined in another file.

:func:`link_flow` is pure: the policy set calls it whenever the peer or the flow changes.
Besides "the peer exists", it checks what depends on both (IKE keying needs a peer with
``auth``; AH cannot go in UDP; insecure ESP/AH algorithms need the peer's
``allow_insecure``) and chooses this host's view of a manually keyed flow's SAs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostsec.crypto.proposals import Protocol
from hostsec.policy.manual import ManualKeys, select_manual_keys
from hostsec.policy.problems import Location, Problem, error, has_errors, warning
from hostsec.policy.schema import Encapsulation, Flow, Keying, Peer


@dataclass(frozen=True)
class Link:
    """The result of checking a flow against its peer."""

    problems: tuple[Problem, ...]
    keys: ManualKeys | None = None  # manual keying with its secrets read: this host's SAs

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)


def flow_protocols(flow: Flow) -> tuple[Protocol, ...]:
    """The IPsec protocols of a flow, outer first on the wire (AH around ESP)."""
    protocols: list[Protocol] = []
    if flow.protection.ah:
        protocols.append(Protocol.AH)
    if flow.protection.esp:
        protocols.append(Protocol.ESP)
    return tuple(protocols)


def link_flow(flow: Flow, peer: Peer | None) -> Link:
    file = flow.source.file
    what = f"flow '{flow.name}'"
    problems: list[Problem] = []
    if peer is None:
        return Link(
            (
                error(
                    file,
                    flow.line_of("peer"),
                    f"{what}: peer '{flow.peer}' is not defined in any policy file",
                ),
            )
        )
    if flow.keying is Keying.IKE and peer.auth is None:
        problems.append(
            error(
                file,
                flow.line_of("peer"),
                f"{what} is keyed by IKE but peer '{peer.name}' has no auth "
                '(set auth on the peer, or keying = "manual" on the flow)',
            )
        )
    if flow.protection.ah and peer.encapsulation is Encapsulation.FORCE:
        problems.append(
            error(
                file,
                flow.line_of("protection"),
                f"{what} uses AH, which cannot be carried in UDP (RFC 3948 covers ESP only), "
                f"but peer '{peer.name}' has encapsulation = \"force\"",
            )
        )
    if flow.protocol == 1 and peer.address.version == 6:
        problems.append(
            error(
                file, flow.line_of("protocol"), f'{what}: use protocol = "icmpv6" for an IPv6 peer'
            )
        )
    if flow.protocol == 58 and peer.address.version == 4:
        problems.append(
            error(file, flow.line_of("protocol"), f'{what}: use "icmp" for an IPv4 peer')
        )
    for key, proposals in (
        ("esp_proposals", flow.esp_proposals),
        ("ah_proposals", flow.ah_proposals),
    ):
        for proposal in proposals:
            insecure = proposal.insecure_algorithms()
            if not insecure:
                continue
            names = ", ".join(insecure)
            if peer.allow_insecure:
                problems.append(
                    warning(
                        file,
                        flow.line_of(key),
                        f"{what}: {key}: insecure algorithm {names} in '{proposal}' (allowed by "
                        f"peer '{peer.name}')",
                    )
                )
            else:
                problems.append(
                    error(
                        file,
                        flow.line_of(key),
                        f"{what}: {key}: insecure algorithm {names} in '{proposal}'; set "
                        f"allow_insecure = true on peer '{peer.name}' only if it needs it",
                    )
                )
    keys: ManualKeys | None = None
    if flow.keying is Keying.MANUAL and flow.manual is not None:
        keys, key_problems = select_manual_keys(
            flow.manual,
            protocols=flow_protocols(flow),
            peer_name=peer.name,
            peer_address=peer.address,
            local_address=peer.local_address,
            allow_insecure=peer.allow_insecure,
            where=Location(file, flow.line_of("manual_keys")),
        )
        problems.extend(key_problems)
    return Link(tuple(problems), keys if not has_errors(problems) else None)
