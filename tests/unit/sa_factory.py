"""Build matching outbound/inbound SA pairs for tests."""

from __future__ import annotations

import ipaddress
import os

from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY
from hostsec.ipsec.ah import AhSA
from hostsec.ipsec.esp import EspSA, IvSource
from hostsec.ipsec.replay import ReplayWindow
from hostsec.ipsec.sa import Direction, Lifetime, Mode, SAConfig, UdpEncapsulation
from hostsec.ipsec.selectors import Selectors

V4_A = ipaddress.ip_address("198.51.100.1")
V4_B = ipaddress.ip_address("198.51.100.2")
V6_A = ipaddress.ip_address("2001:db8::1")
V6_B = ipaddress.ip_address("2001:db8::2")


def sa_pair(
    proposal: str,
    protocol: Protocol = Protocol.ESP,
    mode: Mode = Mode.TRANSPORT,
    v6: bool = False,
    udp: bool = False,
    esn: bool = False,
    window: int = 64,
    spi: int = 0x1234,
    soft: Lifetime = Lifetime(),
    hard: Lifetime = Lifetime(),
    selectors: Selectors | None = None,
    keys: tuple[bytes, bytes] | None = None,
) -> tuple[EspSA | AhSA, EspSA | AhSA]:
    """(outbound SA at A, inbound SA at B) sharing keys; ``proposal`` in strongSwan syntax."""
    prop = parse_proposal(proposal, protocol)
    enc = prop.encryption[0] if prop.encryption else None
    integ = prop.integrity[0] if prop.integrity else None
    if keys is None:
        enc_key = os.urandom(ENCRYPTION[enc.id].key_material_len(enc.key_bits)) if enc else b""
        integ_key = os.urandom(INTEGRITY[integ].key_len) if integ else b""
    else:
        enc_key, integ_key = keys
    src, dst = (V6_A, V6_B) if v6 else (V4_A, V4_B)

    def config(direction: Direction) -> SAConfig:
        return SAConfig(
            spi=spi,
            protocol=protocol,
            direction=direction,
            mode=mode,
            src=src,
            dst=dst,
            encryption=enc,
            integrity=integ,
            encryption_key=enc_key,
            integrity_key=integ_key,
            esn=esn,
            replay_window=window,
            encapsulation=UdpEncapsulation(4500, 4500) if udp else None,
            soft=soft,
            hard=hard,
            selectors=selectors if direction is Direction.INBOUND else None,
        )

    cls = AhSA if protocol is Protocol.AH else EspSA
    return cls(config(Direction.OUTBOUND), 0.0), cls(config(Direction.INBOUND), 0.0)


def single_sa(
    proposal: str,
    direction: Direction,
    keys: tuple[bytes, bytes],
    protocol: Protocol = Protocol.ESP,
    mode: Mode = Mode.TRANSPORT,
    src: ipaddress.IPv4Address | ipaddress.IPv6Address = V4_A,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address = V4_B,
    spi: int = 0x1234,
    esn: bool = False,
    window: int = 64,
    udp: UdpEncapsulation | None = None,
    iv_source: IvSource | None = None,
    nat_original: tuple[bytes, bytes] | None = None,
) -> EspSA | AhSA:
    """One SA with explicit keys, SPI and addresses (for published test vectors)."""
    prop = parse_proposal(proposal, protocol)
    config = SAConfig(
        spi=spi,
        protocol=protocol,
        direction=direction,
        mode=mode,
        src=src,
        dst=dst,
        encryption=prop.encryption[0] if prop.encryption else None,
        integrity=prop.integrity[0] if prop.integrity else None,
        encryption_key=keys[0],
        integrity_key=keys[1],
        esn=esn,
        replay_window=window,
        encapsulation=udp,
        nat_original=nat_original,
    )
    if protocol is Protocol.AH:
        return AhSA(config, 0.0)
    return EspSA(config, 0.0, iv_source=iv_source)


def replay_window(sa: EspSA | AhSA) -> ReplayWindow:
    """The anti-replay window of an inbound SA. The engine keeps it private; tests that
    must start an SA at a given sequence number (ESN vectors, 2^32 crossings) position
    it through this one accessor so that a rename breaks one place only."""
    window = sa._window
    assert window is not None, "outbound SA or anti-replay off"
    return window


def start_inbound_at(sa: EspSA | AhSA, seq: int) -> None:
    """Make a fresh inbound SA behave as if it had verified the last window's worth of
    sequence numbers up to ``seq`` (so that ESN inference puts the next packets in
    ``seq``'s 2^32 subspace). Only the window's public check/update are used, whatever
    its representation."""
    window = replay_window(sa)
    assert window.top == 0, "start_inbound_at() wants a fresh SA"
    for n in range(max(1, seq - window.size + 1), seq + 1):
        window.update(n)
