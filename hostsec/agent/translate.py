"""From policy objects and IKE events to what the data path, the OS and IKE take.

Pure functions: the agent calls them; they read no files (secrets come in as bytes).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from hostsec.crypto.certs import Identity
from hostsec.crypto.proposals import Encryption, Proposal, Protocol
from hostsec.crypto.transforms import EsnId, IntegId
from hostsec.ike.v2.config import (
    CertAuth,
    ChildConfig,
    IkeConfig,
    Lifetimes,
    PskAuth,
    Retransmit,
)
from hostsec.ike.v2.events import ChildSAUp
from hostsec.ipsec.sa import Direction, Lifetime, SAConfig, UdpEncapsulation
from hostsec.ipsec.selectors import Selectors
from hostsec.platform.api import FlowMatch
from hostsec.platform.api import PortRange as OsPortRange
from hostsec.policy import Flow, ManualKeys, ManualSA, Peer, Protection
from hostsec.policy.values import PortRange
from hostsec.wire.selectors import TrafficSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _os_ports(ports: PortRange | None) -> OsPortRange | None:
    return None if ports is None else OsPortRange(ports.first, ports.last)


def flow_match(flow: Flow, peer: Peer) -> FlowMatch:
    """The OS view of a flow: what to route into the TUN device and to firewall."""
    return FlowMatch(
        flow.name,
        ipaddress.ip_network(peer.address),
        flow.protocol or 0,
        _os_ports(flow.local_port),
        _os_ports(flow.remote_port),
    )


def _ts(address: IPAddress, protocol: int | None, ports: PortRange | None) -> TrafficSelector:
    lo, hi = (0, 0xFFFF) if ports is None else (ports.first, ports.last)
    return TrafficSelector(address.packed, address.packed, protocol or 0, lo, hi)


def traffic_selectors(
    flow: Flow, peer: Peer, local: IPAddress
) -> tuple[tuple[TrafficSelector, ...], tuple[TrafficSelector, ...]]:
    """(local, remote) selectors of a host-to-host flow."""
    return (
        (_ts(local, flow.protocol, flow.local_port),),
        (_ts(peer.address, flow.protocol, flow.remote_port),),
    )


def flow_selectors(flow: Flow, peer: Peer, local: IPAddress) -> Selectors:
    local_ts, remote_ts = traffic_selectors(flow, peer, local)
    return Selectors(local_ts, remote_ts)


def manual_replay_window(flow: Flow) -> int:
    """The anti-replay window of a manually keyed flow's inbound SAs: off (0) unless the
    flow sets ``replay_window`` itself.

    A manual SA is never re-established, so a sender that restarts (a crash, a reboot)
    counts from sequence number 1 again while its peer's window still sits at the old
    count: with anti-replay on, the peer drops the flow as replays until it restarts too.
    RFC 4301 4.4.2.1 names manually keyed SAs as the case where the receiver disables
    anti-replay (RFC 4303 3.4.3); ``ip xfrm state`` and setkey default to no window too.
    """
    return flow.replay_window if "replay_window" in dict(flow.lines) else 0


def manual_sa_configs(
    flow: Flow, peer: Peer, keys: ManualKeys, local: IPAddress
) -> tuple[list[SAConfig], list[SAConfig]]:
    """(outbound, inbound) SA configurations of a manually keyed flow (RFC 4301 4.5).

    ESP comes first in each list, then AH (the order a bundle takes)."""
    selectors = flow_selectors(flow, peer, local)
    replay_window = manual_replay_window(flow)
    encap = UdpEncapsulation(4500, 4500) if peer.encapsulation == "force" else None

    def config(sa: ManualSA, direction: Direction) -> SAConfig:
        return SAConfig(
            spi=sa.spi,
            protocol=sa.protocol,
            direction=direction,
            mode=flow.mode,
            src=sa.src,
            dst=sa.dst,
            encryption=sa.encryption,
            integrity=sa.integrity,
            encryption_key=sa.encryption_key.value,
            integrity_key=sa.integrity_key.value,
            esn=sa.esn,
            replay_window=replay_window,
            encapsulation=encap if sa.protocol is Protocol.ESP else None,
            selectors=selectors if direction is Direction.INBOUND else None,
        )

    order = [Protocol.ESP, Protocol.AH]
    outbound = [
        config(sa, Direction.OUTBOUND)
        for proto in order
        if (sa := keys.outbound_sa(proto)) is not None
    ]
    inbound = [
        config(sa, Direction.INBOUND)
        for proto in order
        if (sa := keys.inbound_sa(proto)) is not None
    ]
    return outbound, inbound


def with_volume_lifetimes(
    config: SAConfig, lifetime_bytes: int | None, lifetime_packets: int | None, soft: float
) -> SAConfig:
    """``config`` with the flow's volume lifetimes (RFC 4301 4.4.2.1): hard at the limits,
    soft (rekey) at the fraction ``soft`` of them; the time lifetimes stay."""
    if lifetime_bytes is None and lifetime_packets is None:
        return config

    def part(limit: int | None) -> int | None:
        return None if limit is None else max(1, int(limit * soft))

    return dataclasses.replace(
        config,
        hard=dataclasses.replace(config.hard, bytes=lifetime_bytes, packets=lifetime_packets),
        soft=dataclasses.replace(
            config.soft, bytes=part(lifetime_bytes), packets=part(lifetime_packets)
        ),
    )


def ike_sa_configs(event: ChildSAUp) -> tuple[SAConfig, SAConfig]:
    """(outbound, inbound) SA configurations of a CHILD SA negotiated by IKE."""
    proposal = event.proposal
    encryption: Encryption | None = proposal.encryption[0] if proposal.encryption else None
    integrity: IntegId | None = proposal.integrity[0] if proposal.integrity else None
    esn = bool(proposal.esn) and proposal.esn[0] is EsnId.YES
    selectors = Selectors(event.local_ts, event.remote_ts)
    hard = Lifetime(seconds=event.hard_seconds)
    soft = Lifetime(seconds=event.soft_seconds)
    out_encap = in_encap = None
    if event.encapsulation is not None:
        local_port, remote_port = event.encapsulation
        out_encap = UdpEncapsulation(local_port, remote_port)
        in_encap = UdpEncapsulation(remote_port, local_port)
    common = {
        "protocol": event.protocol,
        "mode": event.mode,
        "encryption": encryption,
        "integrity": integrity,
        "esn": esn,
        "soft": soft,
        "hard": hard,
    }
    outbound = SAConfig(
        spi=event.spi_out,
        direction=Direction.OUTBOUND,
        src=event.local,
        dst=event.remote,
        encryption_key=event.encr_key_out,
        integrity_key=event.integ_key_out,
        encapsulation=out_encap,
        **common,  # type: ignore[arg-type]
    )
    inbound = SAConfig(
        spi=event.spi_in,
        direction=Direction.INBOUND,
        src=event.remote,
        dst=event.local,
        encryption_key=event.encr_key_in,
        integrity_key=event.integ_key_in,
        replay_window=event.replay_window,
        encapsulation=in_encap,
        selectors=selectors,
        nat_original=event.nat_original,
        **common,  # type: ignore[arg-type]
    )
    return outbound, inbound


def moved_config(config: SAConfig, address: IPAddress, port: int) -> SAConfig:
    """``config`` of an ESP-in-UDP SA after the peer's NAT mapping moved to ``address``,
    ``port`` (RFC 7296 2.23): the peer's end of the outer header changes, nothing else."""
    encap = config.encapsulation
    if encap is None:
        return config
    if config.is_inbound:
        return dataclasses.replace(
            config, src=address, encapsulation=UdpEncapsulation(port, encap.dst_port)
        )
    return dataclasses.replace(
        config, dst=address, encapsulation=UdpEncapsulation(encap.src_port, port)
    )


@dataclass(frozen=True)
class IkeCredentials:
    """What the agent read for a peer's authentication (secrets as bytes, never logged)."""

    psk: bytes | None = None
    cert_auth: CertAuth | None = None


def child_config(flow: Flow, peer: Peer, local: IPAddress) -> ChildConfig:
    local_ts, remote_ts = traffic_selectors(flow, peer, local)
    protocol = Protocol.AH if flow.protection is Protection.AH else Protocol.ESP
    proposals: tuple[Proposal, ...] = (
        flow.ah_proposals if protocol is Protocol.AH else flow.esp_proposals
    )
    lifetime = float(flow.lifetime or 3600)
    return ChildConfig(
        name=flow.name,
        local_ts=local_ts,
        remote_ts=remote_ts,
        proposals=proposals,
        protocol=protocol,
        mode=flow.mode,
        lifetimes=Lifetimes.from_lifetime(lifetime),
        replay_window=flow.replay_window,
    )


def ike_config(
    peer: Peer,
    flows: list[Flow],
    local: IPAddress,
    credentials: IkeCredentials,
    own_identity: Identity | None = None,
    retransmit: Retransmit | None = None,
    keepalive: float = 20.0,
) -> IkeConfig:
    """The IKEv2 configuration of a peer and its IKE-keyed flows."""
    if credentials.cert_auth is not None:
        auth: PskAuth | CertAuth = credentials.cert_auth
        default_id = own_identity or credentials.cert_auth.credentials.identity
    elif credentials.psk is not None:
        auth = PskAuth(credentials.psk)
        default_id = Identity.from_string(str(local))
    else:
        raise ValueError(f"peer {peer.name}: no credentials")
    local_id = Identity.from_string(peer.local_id) if peer.local_id else default_id
    remote_id = Identity.from_string(peer.remote_id) if peer.remote_id else None
    if remote_id is None and credentials.psk is not None:
        remote_id = Identity.from_string(str(peer.address))
    children = tuple(child_config(f, peer, local) for f in flows)
    return IkeConfig(
        name=peer.name,
        remote=peer.address,
        local=local,
        proposals=peer.ike_proposals,
        local_id=local_id,
        remote_id=remote_id,
        auth=auth,
        children=children,
        lifetimes=Lifetimes.from_lifetime(float(peer.ike_lifetime)),
        dpd=float(peer.dpd) if peer.dpd else None,
        encapsulation=str(peer.encapsulation),
        retransmit=retransmit or Retransmit(),
        keepalive=keepalive,
    )
