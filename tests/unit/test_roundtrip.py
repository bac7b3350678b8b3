"""Protect then unprotect gives the packet back, for every transform, mode and family."""

from __future__ import annotations

import pytest

from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.errors import AuthenticationFailed, Malformed, Replayed
from hostsec.ipsec.sa import Mode
from hostsec.wire.ip import IPPROTO_AH, IPPROTO_ESP, IPPROTO_UDP, internet_checksum

from .packets import ipv4_tcp, ipv6_tcp
from .sa_factory import V4_A, V4_B, V6_A, V6_B, sa_pair

ESP_PROPOSALS = [
    "aes128gcm16",
    "aes192gcm16",
    "aes256gcm16",
    "aes128gcm12",
    "aes256gcm8",
    "aes128ccm16",
    "aes256ccm8",
    "chacha20poly1305",
    "aes128gmac",
    "aes256gmac",
    "aes128-sha256",
    "aes192-sha384",
    "aes256-sha512",
    "aes128-sha1",
    "aes128-md5",
    "aes128-aesxcbc",
    "aes128-aescmac",
    "aes128ctr-sha256",
    "aes256ctr-sha1",
    "3des-sha1",
    "des-md5",
    "null-sha256",
]
AH_PROPOSALS = ["sha256", "sha384", "sha512", "sha1", "md5", "aesxcbc", "aescmac"]


def _packet(v6: bool, payload: bytes = b"hello telnet\r\n") -> bytes:
    if v6:
        return ipv6_tcp(V6_A.packed, V6_B.packed, payload)
    return ipv4_tcp(V4_A.packed, V4_B.packed, payload)


@pytest.mark.parametrize("proposal", ESP_PROPOSALS)
@pytest.mark.parametrize("mode", [Mode.TRANSPORT, Mode.TUNNEL])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("esn", [False, True], ids=["noesn", "esn"])
def test_esp_round_trip(proposal: str, mode: Mode, v6: bool, esn: bool) -> None:
    out_sa, in_sa = sa_pair(proposal, mode=mode, v6=v6, esn=esn)
    for size in (0, 1, 15, 16, 17, 100, 1400):
        packet = _packet(v6, (bytes(range(256)) * 6)[:size])
        wire = out_sa.protect(packet)
        assert in_sa.unprotect(wire) == packet
    assert out_sa.stats.packets == 7
    assert in_sa.stats.packets == 7


@pytest.mark.parametrize("proposal", AH_PROPOSALS)
@pytest.mark.parametrize("mode", [Mode.TRANSPORT, Mode.TUNNEL])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("esn", [False, True], ids=["noesn", "esn"])
def test_ah_round_trip(proposal: str, mode: Mode, v6: bool, esn: bool) -> None:
    out_sa, in_sa = sa_pair(proposal, Protocol.AH, mode=mode, v6=v6, esn=esn)
    packet = _packet(v6)
    wire = out_sa.protect(packet)
    assert in_sa.unprotect(wire) == packet
    # AH is not encryption: the payload is visible on the wire.
    assert b"hello telnet" in wire


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("mode", [Mode.TRANSPORT, Mode.TUNNEL])
def test_esp_in_udp(v6: bool, mode: Mode) -> None:
    out_sa, in_sa = sa_pair("aes128gcm16", mode=mode, v6=v6, udp=True)
    packet = _packet(v6)
    wire = out_sa.protect(packet)
    if v6:
        assert wire[6] == IPPROTO_UDP
    else:
        assert wire[9] == IPPROTO_UDP
        assert internet_checksum(wire[:20]) == 0
    assert in_sa.unprotect(wire) == packet


def test_transport_header_rewrite_v4() -> None:
    out_sa, _ = sa_pair("aes128gcm16")
    wire = out_sa.protect(_packet(False))
    assert wire[9] == IPPROTO_ESP
    assert (wire[2] << 8 | wire[3]) == len(wire)
    assert internet_checksum(wire[:20]) == 0
    out_ah, _ = sa_pair("sha256", Protocol.AH)
    wire = out_ah.protect(_packet(False))
    assert wire[9] == IPPROTO_AH
    assert internet_checksum(wire[:20]) == 0


def test_tampering_is_detected() -> None:
    out_sa, in_sa = sa_pair("aes128-sha256")
    wire = bytearray(out_sa.protect(_packet(False)))
    wire[-20] ^= 1
    with pytest.raises(AuthenticationFailed):
        in_sa.unprotect(bytes(wire))
    assert in_sa.stats.drops


def test_replay_is_detected() -> None:
    out_sa, in_sa = sa_pair("aes128gcm16")
    wire = out_sa.protect(_packet(False))
    in_sa.unprotect(wire)
    with pytest.raises(Replayed):
        in_sa.unprotect(wire)


def test_garbage_is_malformed() -> None:
    _, in_sa = sa_pair("aes128gcm16")
    for junk in (b"", b"\x45", b"\x45" + bytes(30), b"\x60" + bytes(10), b"\x00" * 60):
        with pytest.raises(Malformed):
            in_sa.unprotect(junk)
