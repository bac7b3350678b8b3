"""Build matching outbound/inbound SA pairs for tests."""

from __future__ import annotations

import ipaddress
import os

from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY
from hostsec.ipsec.ah import AhSA
from hostsec.ipsec.esp import EspSA
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
