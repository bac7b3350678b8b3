"""The MTU arithmetic of hostsec.platform.mtu against packets the SAs really build."""

from __future__ import annotations

import pytest

from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import IntegId
from hostsec.ipsec.bundle import Bundle
from hostsec.ipsec.sa import Mode
from hostsec.platform.mtu import TransformSet, inner_mtu, max_overhead, protected_size
from tests.unit.packets import ipv4_tcp, ipv6_tcp
from tests.unit.sa_factory import V4_A, V4_B, V6_A, V6_B, sa_pair

CASES = [
    # (ESP proposal or None, AH proposal or None, tunnel, udp, v6)
    ("aes128gcm16", None, False, False, False),
    ("aes128gcm16", None, True, False, False),
    ("aes128gcm16", None, True, True, False),
    ("aes256-sha256", None, False, False, False),
    ("aes128-sha1", None, True, True, False),
    ("chacha20poly1305", None, False, False, True),
    ("aes256-sha512", None, True, False, True),
    ("null-sha256", None, False, False, False),
    (None, "sha256", False, False, False),
    (None, "sha1", True, False, True),
    (None, "sha384", False, False, True),
    ("aes128-sha256", "sha256", False, False, False),
    ("aes128gcm16", "sha512", True, False, False),
]


def _transform_set(esp: str | None, ah: str | None, tunnel: bool, udp: bool, v6: bool):
    enc = integ = ah_integ = None
    if esp:
        prop = parse_proposal(esp, Protocol.ESP)
        enc = prop.encryption[0].id
        integ = prop.integrity[0] if prop.integrity else None
    if ah:
        ah_integ = parse_proposal(ah, Protocol.AH).integrity[0]
    return TransformSet(enc, integ, ah_integ, tunnel, udp, 6 if v6 else 4)


def _packet(v6: bool, payload: bytes) -> bytes:
    if v6:
        return ipv6_tcp(V6_A.packed, V6_B.packed, payload)
    return ipv4_tcp(V4_A.packed, V4_B.packed, payload)


def _protector(esp, ah, tunnel, udp, v6):
    mode = Mode.TUNNEL if tunnel else Mode.TRANSPORT
    sas = []
    if esp:
        sas.append(sa_pair(esp, Protocol.ESP, mode, v6=v6, udp=udp)[0])
    if ah:
        sas.append(sa_pair(ah, Protocol.AH, mode, v6=v6, spi=0x4321)[0])
    if len(sas) == 2:
        return Bundle(sas[0], sas[1]).protect  # type: ignore[arg-type]
    return sas[0].protect


@pytest.mark.parametrize(("esp", "ah", "tunnel", "udp", "v6"), CASES)
def test_sizes_match_real_packets(esp, ah, tunnel, udp, v6) -> None:
    ts = _transform_set(esp, ah, tunnel, udp, v6)
    protect = _protector(esp, ah, tunnel, udp, v6)
    header = 40 if v6 else 20
    overhead = max_overhead(ts, header)
    for payload in range(0, 70):
        inner = _packet(v6, b"x" * payload)
        out = protect(inner)
        assert len(out) == protected_size(len(inner), ts, header)
        assert len(out) - len(inner) <= overhead


@pytest.mark.parametrize(("esp", "ah", "tunnel", "udp", "v6"), CASES)
def test_inner_mtu_is_the_largest_that_fits(esp, ah, tunnel, udp, v6) -> None:
    ts = _transform_set(esp, ah, tunnel, udp, v6)
    header = 40 if v6 else 20
    protect = _protector(esp, ah, tunnel, udp, v6)
    for link in (1500, 1400, 1280 + 100):
        mtu = inner_mtu(link, ts, header)
        fits = _packet(v6, b"y" * (mtu - header - 20))
        too_big = _packet(v6, b"y" * (mtu - header - 19))
        assert len(fits) == mtu
        assert len(protect(fits)) <= link
        assert len(protect(too_big)) > link


def test_overheads_people_quote() -> None:
    gcm = TransformSet(esp_encryption=parse_proposal("aes128gcm16", Protocol.ESP).encryption[0].id)
    # ESP header 8 + IV 8 + trailer 2 + ICV 16, padding to 4: 34..37
    assert max_overhead(gcm) == 37
    udp_tunnel = TransformSet(gcm.esp_encryption, tunnel=True, udp_encapsulation=True)
    assert max_overhead(udp_tunnel) == 37 + 20 + 8
    ah = TransformSet(ah_integrity=IntegId.HMAC_SHA2_256_128)
    assert max_overhead(ah) == 12 + 16
    with pytest.raises(ValueError):
        TransformSet()
