"""The specialised per-packet paths of EspSA against the general methods, the replay ring
against a reference model, and the batch entry points.

Each EspSA with a combined-mode transform replaces protect/unprotect/encapsulate/
decapsulate on the instance with closures (esp.py, "Specialised per-packet paths"). The
general methods stay reachable as ``EspSA.protect(sa, ...)`` etc. Two SAs built from the
same configuration, one driven through the instance (fast) and one through the class
(general), must give the same octets or the same drop (type and detail) for every input,
and end with the same counters, events, sequence number and replay window.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Callable, Iterable
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import ENCRYPTION
from hostsec.ipsec.errors import DropReason, PacketDropped, Replayed
from hostsec.ipsec.esp import EspSA, _inbound_selector_check
from hostsec.ipsec.replay import ReplayWindow
from hostsec.ipsec.sa import Direction, Lifetime, Mode, SAConfig, UdpEncapsulation
from hostsec.ipsec.sad import SAD
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.wire.ip import (
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPv4Header,
    IPv6Header,
)

from .packets import ipv4_tcp, ipv4_udp, ipv6_tcp, udp_datagram

A = ipaddress.ip_address("198.51.100.1")
B = ipaddress.ip_address("198.51.100.2")
A6 = ipaddress.ip_address("2001:db8::1")
B6 = ipaddress.ip_address("2001:db8::2")
AEADS = ["aes128gcm16", "aes256gcm8", "aes192gcm12", "aes128ccm16", "chacha20poly1305"]
AEADS += ["aes128gmac"]
Outcome = tuple[str, object]


def config(
    proposal: str = "aes128gcm16",
    mode: Mode = Mode.TUNNEL,
    direction: Direction = Direction.INBOUND,
    v6: bool = False,
    **changes: object,
) -> SAConfig:
    prop = parse_proposal(proposal, Protocol.ESP)
    enc = prop.encryption[0]
    key = bytes(range(ENCRYPTION[enc.id].key_material_len(enc.key_bits)))
    fields: dict[str, object] = {
        "spi": 0x2345,
        "protocol": Protocol.ESP,
        "direction": direction,
        "mode": mode,
        "src": A6 if v6 else A,
        "dst": B6 if v6 else B,
        "encryption": enc,
        "encryption_key": key,
        "esn": "esn" in proposal,
    }
    return SAConfig(**{**fields, **changes})  # type: ignore[arg-type]


def outcome(fn: Callable[..., bytes], *args: object) -> Outcome:
    try:
        return ("ok", fn(*args))
    except PacketDropped as exc:
        return (type(exc).__name__, exc.detail)


def state(sa: EspSA) -> tuple[object, ...]:
    window = sa._window
    ring = (window.top, bytes(window.slots)) if window is not None else None
    return (sa.stats.as_dict(), sa.seq, sa.expired, sa.poll_events(), ring)


class Twins:
    """An SA driven through its fast paths and one through the general methods."""

    def __init__(self, cfg: SAConfig) -> None:
        self.fast = EspSA(cfg, 0.0)
        self.general = EspSA(cfg, 0.0)

    def same(self, op: str, *args: object) -> Outcome:
        fast = outcome(getattr(self.fast, op), *args)
        general = outcome(getattr(EspSA, op), self.general, *args)
        assert fast == general, (op, fast, general)
        return fast

    def check_state(self) -> None:
        assert state(self.fast) == state(self.general)


def test_fast_paths_are_installed() -> None:
    sa = EspSA(config(direction=Direction.OUTBOUND), 0.0)
    assert sa.protect != EspSA.protect.__get__(sa)
    for mode in (Mode.TUNNEL, Mode.TRANSPORT):
        for udp in (None, UdpEncapsulation(4500, 4500)):
            cfg = config(mode=mode, direction=Direction.OUTBOUND, v6=True, encapsulation=udp)
            assert "protect" in vars(EspSA(cfg, 0.0)) and "encapsulate" in vars(EspSA(cfg, 0.0))
    inbound = EspSA(config(), 0.0)
    assert "unprotect" in vars(inbound) and "decapsulate" in vars(inbound)
    integrity = parse_proposal("aes128-sha256", Protocol.ESP).integrity[0]
    cbc = EspSA(config("aes128-sha256", integrity=integrity, integrity_key=bytes(32)), 0.0)
    assert "unprotect" not in vars(cbc)  # only combined-mode transforms are specialised
    no_replay = EspSA(config(replay_window=0), 0.0)
    assert "unprotect" not in vars(no_replay)


# -- outbound ---------------------------------------------------------------------------


def ipv6_extension(next_header: int, kind: int) -> bytes:
    """An 8-octet extension header of type ``kind`` (options: PadN; fragment: offset 0,
    M set) followed by ``next_header``."""
    if kind == IPPROTO_FRAGMENT:
        return bytes((next_header, 0, 0, 1)) + b"\x00\x00\x00\x07"
    return bytes((next_header, 0, 1, 4)) + bytes(4)


def outbound_inputs6() -> list[bytes]:
    """IPv6 packets for transport mode: the good, the bad and the odd."""
    a, b = A6.packed, B6.packed
    packets = [ipv6_tcp(a, b, os.urandom(n)) for n in (0, 1, 2, 3, 4, 5, 100, 1339, 1340)]
    udp = udp_datagram(a, b, 40000, 53, b"w" * 33)
    packets.append(IPv6Header(a, b, IPPROTO_UDP).pack(len(udp)) + udp)
    packets.append(ipv6_tcp(B6.packed, bytes(16), b"other addresses"))
    v6 = ipv6_tcp(a, b, b"z" * 40)
    seg = v6[40:]
    packets += [
        v6[:1] + b"\xb8\x12\x34" + v6[4:],  # traffic class and flow label
        v6[:7] + b"\x01" + v6[8:],  # hop limit 1
        IPv6Header(a, b, 59).pack(4) + bytes(4),  # no next header
        IPv6Header(a, b, 47).pack(len(seg)) + seg,  # another protocol (GRE)
        v6 + b"\x00\x00\x00",  # octets after the payload length
        v6[:4] + b"\x00\x10" + v6[6:],  # payload length 16
        v6[:4] + b"\xff\xff" + v6[6:],  # payload length beyond the packet
        v6[:4] + b"\x00\x00" + v6[6:],  # payload length 0: a jumbogram
        v6[:40],  # header only, payload length 0
        v6[:4] + b"\x00\x00" + v6[6:40],  # ... as it should be
        v6[:39],
        b"\x70" + v6[1:],  # IP version 7
        b"\x65" + v6[1:],  # version 6 but an IPv4 look (IHL 5)
    ]
    for kind in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, 43, 135, 51):
        ext = ipv6_extension(IPPROTO_TCP, kind)
        packets.append(IPv6Header(a, b, kind).pack(len(ext) + len(seg)) + ext + seg)
        packets.append(IPv6Header(a, b, kind).pack(4) + ext[:4])  # truncated
    return packets


def outbound_inputs(v6_outer: bool = False) -> list[bytes]:
    a, b = A.packed, B.packed
    packets = [ipv4_tcp(a, b, os.urandom(n)) for n in (0, 1, 2, 3, 4, 5, 100, 1359, 1360)]
    packets.append(ipv4_udp(a, b, b"x" * 33))
    packets.append(ipv6_tcp(A6.packed, B6.packed, b"y" * 17))
    v4 = ipv4_tcp(a, b, b"z" * 40)
    packets += [
        v4[:1] + bytes([0xB8]) + v4[2:],  # DSCP/ECN
        v4[:6] + b"\x00\x00" + v4[8:],  # DF clear
        v4[:6] + b"\x20\x00" + v4[8:],  # MF: a fragment
        v4[:6] + b"\x00\x10" + v4[8:],  # a fragment offset
        v4 + b"\x00\x00\x00",  # octets after the total length
        v4[:2] + b"\x00\x10" + v4[4:],  # total length 16
        v4[:2] + b"\xff\xff" + v4[4:],  # total length beyond the packet
        IPv4Header(a, b, IPPROTO_TCP, options=b"\x01\x01\x01\x00").pack(4) + b"opts",
        b"",
        b"\x45",
        v4[:19],
        b"\x50" + v4[1:],  # IP version 5
        b"\x45" * 20,
        IPv6Header(A6.packed, B6.packed, IPPROTO_UDP).pack(8) + b"\x00" * 8,
    ]
    return packets


@pytest.mark.parametrize("proposal", [*AEADS, "aes128gcm16-esn"])
@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_protect_and_encapsulate_match_general(
    proposal: str, mode: Mode, udp: bool, v6: bool
) -> None:
    encap = UdpEncapsulation(4500, 4501) if udp else None
    cfg = config(proposal, mode, Direction.OUTBOUND, v6, encapsulation=encap)
    twins = Twins(cfg)
    kinds = set()
    for op in ("protect", "encapsulate"):
        for packet in outbound_inputs() + outbound_inputs6():
            kinds.add(twins.same(op, packet)[0])
        twins.check_state()
    assert {"ok", "Malformed"} <= kinds
    if mode is Mode.TRANSPORT:
        assert "PolicyViolation" in kinds  # fragments


@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
def test_protect_v6_round_trips(mode: Mode, udp: bool) -> None:
    """What the IPv6 fast paths send, the general inbound method takes back (the UDP
    checksum checked against udp6_checksum by the twins above)."""
    encap = UdpEncapsulation(4500, 4501) if udp else None
    out = EspSA(config(mode=mode, direction=Direction.OUTBOUND, v6=True, encapsulation=encap), 0.0)
    inbound = EspSA(config(mode=mode, v6=True, encapsulation=encap), 0.0)
    for packet in [*outbound_inputs6()[:12], ipv4_tcp(A.packed, B.packed, b"4")]:
        if mode is Mode.TRANSPORT and packet[0] >> 4 == 4:
            continue
        assert EspSA.unprotect(inbound, out.protect(packet)) == packet


def test_protect_v6_outer_v4_inputs_match_general() -> None:
    twins = Twins(config(mode=Mode.TUNNEL, direction=Direction.OUTBOUND, v6=True))
    for packet in outbound_inputs():
        twins.same("protect", packet)
        twins.same("encapsulate", packet)
    twins.check_state()


@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("op", ["protect", "encapsulate"])
def test_lifetimes_and_sequence_limits_match_general(mode: Mode, v6: bool, op: str) -> None:
    cfg = config(
        mode=mode,
        direction=Direction.OUTBOUND,
        v6=v6,
        soft=Lifetime(bytes=3000, packets=4),
        hard=Lifetime(bytes=100_000, packets=7),
    )
    twins = Twins(cfg)
    if v6:
        packet = ipv6_tcp(A6.packed, B6.packed, b"p" * 600)
    else:
        packet = ipv4_tcp(A.packed, B.packed, b"p" * 600)
    results = [twins.same(op, packet) for _ in range(9)]
    assert [r[0] for r in results] == ["ok"] * 7 + ["Expired"] * 2
    twins.check_state()
    # The sequence number never cycles (RFC 4303 3.3.3): soft event, then refusal.
    twins = Twins(config(mode=mode, direction=Direction.OUTBOUND, v6=v6))
    for sa in (twins.fast, twins.general):
        sa.seq = 0xFFFFFFFF - 2
        sa._fired.add((False, "sequence"))
        sa._rearm()
    results = [twins.same(op, packet) for _ in range(4)]
    assert [r[0] for r in results] == ["ok", "ok", "SequenceExhausted", "Expired"]
    twins.check_state()


# -- inbound ----------------------------------------------------------------------------


def forge(out: EspSA, seq: int, plaintext: bytes) -> bytes:
    """An authentic ESP packet (SPI .. ICV) with any ``plaintext`` (trailer included)."""
    iv = seq.to_bytes(8, "big")
    header = out._spi_bytes + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    aad = out._spi_bytes + iv if out._esn else header
    return header + iv + out._aead_encrypt(out._salt + iv, plaintext, aad)


def outer(esp: bytes, udp: bool, protocol: int = 50, v6: bool = False) -> bytes:
    if udp:
        esp = struct.pack("!HHHH", 4500, 4501, 8 + len(esp), 0) + esp
        protocol = IPPROTO_UDP
    if v6:
        return IPv6Header(A6.packed, B6.packed, protocol, 0, 0x2E, 0xABCDE, 9).pack(len(esp)) + esp
    return IPv4Header(A.packed, B.packed, protocol).pack(len(esp)) + esp


def trailer(pad: int, next_header: int) -> bytes:
    return bytes(range(1, pad + 1)) + bytes((pad, next_header))


def inbound_inputs(
    out: EspSA, mode: Mode, udp: bool, v6: bool = False
) -> list[tuple[bytes, bytes]]:
    """(complete packet, ESP without outer header) pairs: the good, the bad and the odd.
    ``v6``: IPv6 outer headers, and IPv6 inner packets first."""
    a, b = A.packed, B.packed
    inner = [ipv4_tcp(a, b, os.urandom(n)) for n in (0, 1, 2, 3, 200, 1360)]
    inner.append(ipv6_tcp(A6.packed, B6.packed, b"v6"))
    if v6:
        inner = [ipv6_tcp(A6.packed, B6.packed, os.urandom(n)) for n in (0, 1, 2, 3, 200, 1340)]
        inner.append(ipv4_tcp(a, b, b"v4"))
    esps = [out.encapsulate(p) for p in inner]
    seq = out.seq
    v4 = ipv4_tcp(a, b, b"q" * 21)  # 61 octets: payload 41 in transport mode
    payload = v4 if mode is Mode.TUNNEL else v4[20:]
    if v6:
        six = ipv6_tcp(A6.packed, B6.packed, b"s" * 22)
        payload = six if mode is Mode.TUNNEL else six[40:]
        esps += [
            forge(out, seq + 1, payload + trailer(7, 41 if mode is Mode.TUNNEL else 6)),
            forge(out, seq + 2, payload + bytes(4) + trailer(2, 41)),  # TFC padding
            forge(out, seq + 3, six[:4] + b"\x00\x50" + six[6:] + trailer(2, 41)),  # long
            forge(out, seq + 4, b"\x45" + six[1:] + trailer(2, 41)),  # not IPv6 inside
            forge(out, seq + 5, six[:45] + trailer(2, 41)),  # cut short
        ]
        seq += 5
    nh = 4 if mode is Mode.TUNNEL else IPPROTO_TCP
    odd_plaintexts = [
        payload + trailer(3, nh),  # minimal padding
        payload + trailer(7, nh),  # more padding than needed (allowed)
        payload + bytes(4) + trailer(3, nh),  # TFC padding (tunnel: cut by inner length)
        payload + b"\x01\x02\x04" + bytes((3, nh)),  # bad padding
        payload + bytes(3) + bytes((3, nh)),  # zero padding
        payload[:3] + bytes((200, nh)),  # pad length beyond the payload
        payload + trailer(3, 59),  # dummy packet
        payload + trailer(3, 6 if mode is Mode.TUNNEL else 4),  # next header for the other mode
        v4[:2] + b"\x00\x13" + v4[4:] + trailer(3, nh),  # inner total length 19
        v4[:2] + b"\x00\x13" + v4[4:19] + trailer(3, nh),  # ... and 19 octets long
        v4[:2] + b"\x00\x50" + v4[4:] + trailer(3, nh),  # inner total beyond the payload
        b"\x46" + v4[1:] + trailer(3, nh),  # inner IHL 6
        b"\x55" + v4[1:] + trailer(3, nh),  # inner version 5
        bytes(2),  # trailer only
        b"",  # nothing
    ]
    for plaintext in odd_plaintexts:
        seq += 1
        esps.append(forge(out, seq, plaintext))
    good = esps[0]
    fresh = forge(out, seq + 2000, payload + trailer(3, nh))  # not received before
    esps += [
        good,  # a replay
        fresh[:-1] + bytes([fresh[-1] ^ 1]),  # bad ICV
        fresh[:8] + bytes([fresh[8] ^ 0x80]) + fresh[9:],  # bad IV
        fresh[:4] + b"\x00\x00\x00\x00" + fresh[8:],  # sequence number 0
        fresh[:5] + b"\xff" + fresh[6:],  # another sequence number: AAD differs
        b"\x00\x00\x99\x99" + fresh[4:],  # another SA's SPI (through the SA, not the SAD)
        forge(out, seq + 1000, payload + trailer(3, nh)),  # far ahead
        esps[3],  # old but within the window
        forge(out, seq + 1, payload + trailer(3, nh)),  # more than 64 behind: too old
        fresh,
        good[:20],
        good[:8],
    ]
    pairs = [(outer(esp, udp, v6=v6), esp) for esp in esps]
    g = outer(good, udp, v6=v6)
    if v6:
        hop = bytes((IPPROTO_UDP if udp else 50, 0, 1, 4)) + bytes(4)  # hop-by-hop: PadN
        pairs += [
            (g + b"\x00\x00", good),  # octets after the payload length
            (g[:4] + struct.pack("!H", len(g) - 39) + g[6:], good),  # payload length beyond
            (g[:4] + struct.pack("!H", len(g) - 41) + g[6:], good),  # ... short of the end
            (g[:4] + b"\x00\x00" + g[6:], good),  # jumbogram
            (g[:6] + bytes([IPPROTO_UDP if not udp else 50]) + g[7:], good),  # other protocol
            (g[:4] + struct.pack("!H", len(g) - 32) + b"\x00" + g[7:40] + hop + g[40:], good),
            (b"\x65" + g[1:], good),  # version 6, IPv4 look
            (b"\x45" + g[1:], good),  # version 4
            (g[:-5], good[:-5]),
            (g[:60], good[:3]),
            (g[:40], b""),
        ]
        if udp:
            pairs.append((g[:44] + b"\x00\x09" + g[46:], good))  # bad UDP length
            pairs.append((g[:44] + b"\x00\x10" + g[46:56], good[:8]))  # UDP: too short
        return pairs
    pairs += [
        (g + b"\x00\x00", good),  # octets after the IP total length
        (g[:2] + struct.pack("!H", len(g) + 1) + g[4:], good),  # total length beyond
        (g[:9] + bytes([IPPROTO_UDP if not udp else 50]) + g[10:], good),  # other protocol
        (b"\x46" + g[1:], good),  # IPv4 options claimed
        (g[:-5], good[:-5]),
        (g[:40], good[:3]),
        (b"", b""),
    ]
    if udp:
        pairs.append((g[:24] + b"\x00\x09" + g[26:], good))  # bad UDP length
    return pairs


@pytest.mark.parametrize("proposal", [*AEADS, "aes128gcm16-esn"])
@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_unprotect_and_decapsulate_match_general(
    proposal: str, mode: Mode, udp: bool, v6: bool
) -> None:
    encap = UdpEncapsulation(4500, 4501) if udp else None
    out = EspSA(config(proposal, mode, Direction.OUTBOUND, v6, encapsulation=encap), 0.0)
    pairs = inbound_inputs(out, mode, udp, v6)
    unprotect = Twins(config(proposal, mode, v6=v6, encapsulation=encap))
    decapsulate = Twins(config(proposal, mode, v6=v6, encapsulation=encap))
    src, dst = (A6.packed, B6.packed) if v6 else (A.packed, B.packed)
    results, decapsulated = [], []
    for packet, esp in pairs:
        results.append(unprotect.same("unprotect", packet)[0])
        decapsulated.append(decapsulate.same("decapsulate", esp, src, dst, 33)[0])
    unprotect.check_state()
    decapsulate.check_state()
    assert results[:7] == decapsulated[:7] == ["ok"] * 7  # the good ones did pass
    assert {"Replayed", "AuthenticationFailed", "Malformed", "DummyPacket"} <= set(results)


@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
def test_decapsulate_addresses_ttl_and_nat_match_general(mode: Mode) -> None:
    nat = (bytes((203, 0, 113, 7)), bytes((203, 0, 113, 8)))
    encap = UdpEncapsulation(4500, 4500)
    out = EspSA(config(mode=mode, direction=Direction.OUTBOUND, encapsulation=encap), 0.0)
    twins = Twins(config(mode=mode, encapsulation=encap, nat_original=nat))
    plain = [ipv4_tcp(A.packed, B.packed, b"t" * 30), ipv4_udp(A.packed, B.packed, b"u" * 9)]
    for packet in plain * 3:
        esp = out.encapsulate(packet)
        twins.same("decapsulate", esp, A.packed, B.packed, 17)
    for src, dst in ((B.packed, A.packed), (A6.packed, B6.packed), (b"\x01\x02", b"\x03")):
        esp = out.encapsulate(plain[0])
        twins.same("decapsulate", esp, src, dst)
    twins.check_state()
    # Odd addresses in the very first call too (the transport path caches the last ones).
    for src, dst in ((b"", b""), (b"\x01\x02", b"\x03"), (A6.packed, B6.packed)):
        twins = Twins(config(mode=mode, encapsulation=encap, nat_original=nat))
        twins.same("decapsulate", out.encapsulate(plain[0]), src, dst)
        twins.check_state()


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
def test_selectors_and_expiry_match_general(v6: bool, udp: bool) -> None:
    if v6:
        local = (TrafficSelector.from_network("2001:db8::2/128", IPPROTO_TCP, 23),)
        remote = (TrafficSelector.from_network("2001:db8::1/128", IPPROTO_TCP),)
        src, dst, packet = A6.packed, B6.packed, ipv6_tcp
    else:
        local = (TrafficSelector.from_network("198.51.100.2/32", IPPROTO_TCP, 23),)
        remote = (TrafficSelector.from_network("198.51.100.1/32", IPPROTO_TCP),)
        src, dst, packet = A.packed, B.packed, ipv4_tcp
    encap = UdpEncapsulation(4500, 4501) if udp else None
    for mode in (Mode.TUNNEL, Mode.TRANSPORT):
        out = EspSA(
            config(mode=mode, direction=Direction.OUTBOUND, v6=v6, encapsulation=encap), 0.0
        )
        cfg = config(
            mode=mode,
            v6=v6,
            encapsulation=encap,
            selectors=Selectors(local, remote),
            hard=Lifetime(packets=3),
        )
        twins, decapsulate = Twins(cfg), Twins(cfg)
        good = packet(src, dst, b"ok", dport=23)
        other = packet(src, dst, b"no", dport=24)
        kinds, kinds_esp = [], []
        for p in (good, other, good, good, good, good):
            kinds.append(twins.same("unprotect", out.protect(p))[0])
            kinds_esp.append(decapsulate.same("decapsulate", out.encapsulate(p), src, dst)[0])
        expected = ["ok", "SelectorMismatch", "ok", "ok", "Expired", "Expired"]
        assert kinds == kinds_esp == expected
        twins.check_state()
        decapsulate.check_state()


ADDRS = [bytes((198, 51, 100, n)) for n in (0, 1, 2, 7, 255)] + [bytes((203, 0, 113, 9))]
SELECTOR = st.builds(
    lambda a, b, proto, p1, p2, v6: TrafficSelector(
        bytes(16) if v6 else min(a, b),
        b"\xff" * 16 if v6 else max(a, b),
        proto,
        min(p1, p2),
        max(p1, p2),
    ),
    st.sampled_from(ADDRS),
    st.sampled_from(ADDRS),
    st.sampled_from([0, 0, IPPROTO_TCP, IPPROTO_UDP, 1]),
    st.sampled_from([0, 22, 23, 24, 1000, 0xFFFF]),
    st.sampled_from([0, 22, 23, 24, 1000, 0xFFFF]),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(SELECTOR, min_size=1, max_size=3),
    st.lists(SELECTOR, min_size=1, max_size=3),
    st.sampled_from(ADDRS),
    st.sampled_from(ADDRS),
    st.sampled_from([IPPROTO_TCP, IPPROTO_UDP, 1, 132, 50]),
    st.sampled_from([0, 22, 23, 24, 1000, 0xFFFF]),
    st.sampled_from([0, 22, 23, 24, 1000, 0xFFFF]),
    st.sampled_from(
        ["plain", "fragment", "first-fragment", "options", "short", "trailing", "v6", "cut"]
    ),
)
def test_compiled_selector_check_matches_selectors(
    local: list[TrafficSelector],
    remote: list[TrafficSelector],
    src: bytes,
    dst: bytes,
    protocol: int,
    sport: int,
    dport: int,
    shape: str,
) -> None:
    selectors = Selectors(tuple(local), tuple(remote))
    body = struct.pack("!HH", sport, dport) + bytes(16)
    header = IPv4Header(src, dst, protocol)
    if shape == "fragment":
        header = IPv4Header(src, dst, protocol, flags_fragment=0x2003)
    elif shape == "first-fragment":
        header = IPv4Header(src, dst, protocol, flags_fragment=0x2000)
    elif shape == "options":
        header = IPv4Header(src, dst, protocol, options=b"\x01\x01\x01\x00")
    packet = header.pack(len(body)) + body
    if shape == "short":
        packet = header.pack(3) + body[:3]
    elif shape == "trailing":  # the ports lie after the total length
        packet = header.pack(2) + body
    elif shape == "cut":
        packet = packet[:22]
    elif shape == "v6":
        packet = IPv6Header(A6.packed, B6.packed, protocol).pack(len(body)) + body
    compiled = _inbound_selector_check(selectors)
    assert compiled(packet) == selectors.match(packet, True)


def test_compiled_selector_check_cases() -> None:
    """The cases where the compiled check must defer to Selectors.match."""
    a, b = A.packed, B.packed
    ports_only = Selectors(
        (TrafficSelector.from_network("198.51.100.2/32", IPPROTO_TCP, 23),),
        (TrafficSelector.from_network("198.51.100.1/32", IPPROTO_TCP, (40000, 40010)),),
    )
    any_port = Selectors(
        (TrafficSelector.from_network("198.51.100.0/24"),),
        (TrafficSelector.from_network("198.51.100.0/24"),),
    )
    tcp = struct.pack("!HH", 40000, 23) + bytes(16)
    later_fragment = IPv4Header(a, b, IPPROTO_TCP, flags_fragment=0x2003).pack(20) + tcp
    first_fragment = IPv4Header(a, b, IPPROTO_TCP, flags_fragment=0x2000).pack(20) + tcp
    ports_outside = IPv4Header(a, b, IPPROTO_TCP).pack(2) + tcp
    icmp = IPv4Header(a, b, 1).pack(8) + bytes(8)
    cases = [
        (ports_only, ipv4_tcp(a, b, b"x"), True),
        (ports_only, ipv4_tcp(b, a, b"x"), False),  # the wrong way round
        (ports_only, later_fragment, False),  # no ports: only "any port" selectors
        (any_port, later_fragment, True),
        (ports_only, first_fragment, True),
        (ports_only, ports_outside, False),  # malformed: no match
        (ports_only, icmp, False),
        (any_port, icmp, True),
        (ports_only, ipv6_tcp(A6.packed, B6.packed, b"x"), False),
    ]
    for selectors, packet, expected in cases:
        assert selectors.match(packet, True) is expected
        assert _inbound_selector_check(selectors)(packet) is expected


ESN_START = 0xFFFFFFFF - 40


@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
def test_esn_across_2_32_matches_general(mode: Mode) -> None:
    out = EspSA(config("aes128gcm16-esn", mode, Direction.OUTBOUND), 0.0)
    out.seq = ESN_START
    twins = Twins(config("aes128gcm16-esn", mode))
    packet = ipv4_tcp(A.packed, B.packed, b"e" * 50)
    wire = [out.protect(packet) for _ in range(100)]
    order = list(range(100))
    order[10], order[50] = order[50], order[10]  # one jump over the boundary and back
    for i in [*order, 3, 60]:
        twins.same("unprotect", wire[i])
    twins.check_state()
    assert twins.fast.stats.packets == 100
    assert twins.fast._window is not None and twins.fast._window.top == ESN_START + 100


MUTATION = st.tuples(st.sampled_from(["flip", "cut", "add", "set"]), st.integers(0, 2000))


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["aes128gcm16", "chacha20poly1305", "aes128gcm16-esn", "aes256gcm8"]),
    st.sampled_from([Mode.TUNNEL, Mode.TRANSPORT]),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 12), st.lists(MUTATION, max_size=3)), max_size=12),
    st.booleans(),
)
def test_mutated_packets_match_general(
    proposal: str,
    mode: Mode,
    udp: bool,
    picks: list[tuple[int, list[tuple[str, int]]]],
    v6: bool,
) -> None:
    """Random arrival order, replays and corruption: the same outcome on both paths."""
    encap = UdpEncapsulation(4500, 4501) if udp else None
    out = EspSA(config(proposal, mode, Direction.OUTBOUND, v6, encapsulation=encap), 0.0)
    sizes = (0, 1, 2, 3, 64, 300, 1400, 5, 6, 7, 8, 9, 10)
    if v6:
        wire = [out.protect(ipv6_tcp(A6.packed, B6.packed, bytes(n))) for n in sizes]
    else:
        wire = [out.protect(ipv4_tcp(A.packed, B.packed, bytes(n))) for n in sizes]
    twins = Twins(config(proposal, mode, v6=v6, encapsulation=encap))
    for index, mutations in picks:
        packet = bytearray(wire[index])
        for kind, where in mutations:
            if kind == "flip" and packet:
                packet[where % len(packet)] ^= 1 << (where % 8)
            elif kind == "cut":
                del packet[where % (len(packet) + 1) :]
            elif kind == "add":
                packet += bytes(where % 5)
            elif kind == "set" and packet:
                packet[where % min(len(packet), 48)] = where % 256
        twins.same("unprotect", bytes(packet))
    twins.check_state()


# -- the replay window ------------------------------------------------------------------


class ReferenceWindow:
    """RFC 4303 3.4.3 spelled out with a set: the model the ring must agree with."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.top = 0
        self.seen: set[int] = set()

    def accepts(self, seq: int) -> bool:
        if seq > self.top:
            return True
        return seq != 0 and self.top - seq < self.size and seq not in self.seen

    def update(self, seq: int) -> None:
        self.seen.add(seq)
        self.top = max(self.top, seq)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([32, 33, 64, 100, 127, 128, 1000, 4096]),
    st.lists(
        st.one_of(
            st.integers(-140, 140),  # near the top: ahead, within and behind the window
            st.integers(4000, 9000),  # far ahead: beyond the ring
        ),
        max_size=120,
    ),
    st.booleans(),
)
def test_replay_ring_matches_reference(size: int, steps: list[int], verified: bool) -> None:
    window = ReplayWindow(size)
    model = ReferenceWindow(size)
    for step in steps:
        seq = max(0, model.top + step)
        accepted = model.accepts(seq)
        if accepted:
            window.check(seq)
        else:
            with pytest.raises(Replayed):
                window.check(seq)
        if accepted and (verified or step % 3):  # some never verify: no update
            window.update(seq)
            model.update(seq)
        assert window.top == model.top
    for seq in range(max(0, model.top - size - 5), model.top + 3):
        in_window = seq <= model.top and model.top - seq < size
        assert window.received(seq) == (in_window and seq in model.seen), seq


def test_replay_ring_rounds_up_and_keeps_the_configured_size() -> None:
    window = ReplayWindow(100)
    assert len(window.slots) == 128
    for seq in range(1, 201):
        window.update(seq)
    window.check(201)
    with pytest.raises(Replayed, match="left the replay window"):
        window.check(100)  # 101 behind the top: outside a 100-packet window
    with pytest.raises(Replayed, match="duplicate"):
        window.check(101)


def test_replay_bitmap_view() -> None:
    """The classic view (bit i: top - i received) reads and positions the ring."""
    window = ReplayWindow(64)
    for seq in (1, 10, 12, 13, 70):  # 1 has left the window (7 .. 70) since
        window.update(seq)
    assert window.mask == (1 << 64) - 1
    assert window.bitmap == 1 | 1 << (70 - 13) | 1 << (70 - 12) | 1 << (70 - 10)
    window.top = 1000
    window.bitmap = window.mask  # as if everything up to 1000 had been received
    window.check(1001)
    for seq in (1000, 999, 937):
        with pytest.raises(Replayed, match="duplicate"):
            window.check(seq)
    with pytest.raises(Replayed, match="left"):
        window.check(936)
    window.bitmap = 0b101
    assert [window.received(n) for n in (1000, 999, 998)] == [True, False, True]
    assert window.bitmap == 0b101


# -- batches ----------------------------------------------------------------------------


def drops(sa: EspSA) -> dict[str, int]:
    return sa.stats.as_dict()["drops"]  # type: ignore[return-value]


@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
def test_unprotect_many_goes_on_after_a_drop_and_counts_it(mode: Mode) -> None:
    out = EspSA(config(mode=mode, direction=Direction.OUTBOUND), 0.0)
    inbound = EspSA(config(mode=mode), 0.0)
    packets = [ipv4_tcp(A.packed, B.packed, bytes([i]) * i) for i in range(5)]
    wire = [out.protect(p) for p in packets]
    tampered = wire[3][:-1] + bytes([wire[3][-1] ^ 1])
    batch = [wire[0], wire[0], b"\x45junk", wire[1], tampered, wire[2], wire[4]]
    assert inbound.unprotect_many(batch) == [packets[0], packets[1], packets[2], packets[4]]
    assert drops(inbound) == {"auth_failed": 1, "malformed": 1, "replay": 1}
    assert inbound.stats.packets == 4
    assert inbound.unprotect_many([]) == []
    assert inbound.unprotect_many(iter([wire[3]])) == [packets[3]]  # any iterable


def test_protect_many_and_encapsulate_many() -> None:
    out = EspSA(config(direction=Direction.OUTBOUND), 0.0)
    inbound = EspSA(config(), 0.0)
    packets = [ipv4_tcp(A.packed, B.packed, bytes(i)) for i in range(3)]
    wire = out.protect_many([packets[0], b"", packets[1], b"\x99" * 30, packets[2]])
    assert len(wire) == 3
    assert drops(out) == {"malformed": 2}
    assert inbound.unprotect_many(wire) == packets
    esps = out.encapsulate_many([packets[0], b"", packets[1]])
    assert drops(out) == {"malformed": 3}
    assert inbound.decapsulate_many(esps, A.packed, B.packed) == packets[:2]
    assert inbound.decapsulate_many([esps[0], b"\x00" * 3], A.packed, B.packed) == []
    assert drops(inbound) == {"malformed": 1, "replay": 1}


def test_hard_expiry_in_the_middle_of_a_batch() -> None:
    out = EspSA(config(direction=Direction.OUTBOUND, hard=Lifetime(packets=2)), 0.0)
    packet = ipv4_tcp(A.packed, B.packed, b"x")
    assert len(out.protect_many([packet] * 5)) == 2
    assert drops(out) == {"expired": 3}
    sender = EspSA(config(direction=Direction.OUTBOUND), 0.0)
    inbound = EspSA(config(hard=Lifetime(bytes=150)), 0.0)
    wire = sender.protect_many([ipv4_tcp(A.packed, B.packed, bytes(60))] * 4)
    assert len(inbound.unprotect_many(wire)) == 2  # 2 x 100 octets reach 150
    assert drops(inbound) == {"expired": 2}
    assert [e.cause for e in inbound.poll_events()] == ["bytes"]


def sad_with(*sas: EspSA) -> SAD:
    sad = SAD()
    for sa in sas:
        sad.add(sa)
    return sad


def test_sad_entry_points_match_entry_for() -> None:
    out = EspSA(config(direction=Direction.OUTBOUND), 0.0)
    fast = EspSA(config(), 0.0)
    general = EspSA(config(), 0.0)
    sad_fast, sad_general = sad_with(fast), sad_with(general)
    packet = ipv4_tcp(A.packed, B.packed, b"sad")
    good = out.protect(packet)
    unknown = good[:20] + b"\x00\x00\x99\x99" + good[24:]
    inputs = [good, good, unknown, good[:27], good[:2] + b"\x00\x1b" + good[4:], b"", b"\x45"]
    inputs += [
        good[:2] + b"\xff\xff" + good[4:],
        good[:9] + b"\x33" + good[10:],
        out.protect(packet),
    ]

    def via_entry_for(p: bytes) -> bytes:
        return sad_general.entry_for(p).unprotect(p)

    for p in inputs:
        assert outcome(sad_fast.unprotect, p) == outcome(via_entry_for, p)
    assert sad_fast.drops == sad_general.drops
    assert state(fast) == state(general)


def test_sad_batches_count_every_drop() -> None:
    out1 = EspSA(config(direction=Direction.OUTBOUND), 0.0)
    out2 = EspSA(config(direction=Direction.OUTBOUND, spi=0x3000), 0.0)
    in1, in2 = EspSA(config(), 0.0), EspSA(config(spi=0x3000), 0.0)
    sad = sad_with(in1, in2)
    p = [ipv4_tcp(A.packed, B.packed, bytes([i]) * 3) for i in range(4)]
    e = [out1.encapsulate(p[0]), out2.encapsulate(p[1]), out1.encapsulate(p[2])]
    stranger = b"\x00\x00\x77\x77" + e[0][4:]
    batch = [e[0], b"\x00\x01", stranger, e[1], e[1], e[2]]
    assert sad.decapsulate_many(batch, A.packed, B.packed) == [p[0], p[1], p[2]]
    assert sad.drops == {DropReason.MALFORMED: 1, DropReason.UNKNOWN_SPI: 1}
    assert drops(in2) == {"replay": 1}
    wire = [out1.protect(p[3]), b"", out2.protect(p[3])]
    assert sad.unprotect_many(wire) == [p[3], p[3]]
    assert sad.drops == {DropReason.MALFORMED: 2, DropReason.UNKNOWN_SPI: 1}


def _all(fn: Callable[[bytes], bytes], items: Iterable[bytes]) -> list[Outcome]:
    return [outcome(fn, item) for item in items]


def test_batches_equal_single_calls() -> None:
    out = EspSA(config(direction=Direction.OUTBOUND), 0.0)
    packets = [ipv4_tcp(A.packed, B.packed, os.urandom(i)) for i in range(0, 300, 7)]
    wire = out.protect_many(packets)
    one, many = EspSA(config(), 0.0), EspSA(config(), 0.0)
    batch = wire + wire[:5] + [b"\x45" * 40]
    singles = [r[1] for r in _all(one.unprotect, batch) if r[0] == "ok"]
    assert many.unprotect_many(batch) == singles == packets
    assert state(one) == state(many)


@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
def test_protect_v6_transport_longest_packets(udp: bool) -> None:
    """Payload lengths near 2^16: the longest that fits goes out the same on both paths;
    a longer one fails the same way on both (the IPv6 payload length overflows)."""
    encap = UdpEncapsulation(4500, 4501) if udp else None
    twins = Twins(config(mode=Mode.TRANSPORT, direction=Direction.OUTBOUND, encapsulation=encap))
    fits = 0xFFFF - (8 if udp else 0)  # the IPv6 payload: [UDP,] ESP
    longest = max(n for n in range(fits - 40, fits) if 16 + n + 2 + -(n + 2) % 4 + 16 <= fits)
    for length in (longest - 1, longest):
        packet = IPv6Header(A6.packed, B6.packed, IPPROTO_TCP).pack(length) + bytes(length)
        assert twins.same("protect", packet)[0] == "ok"
    packet = IPv6Header(A6.packed, B6.packed, IPPROTO_TCP).pack(longest + 1) + bytes(longest + 1)
    for protect in (twins.fast.protect, partial(EspSA.protect, twins.general)):
        with pytest.raises(struct.error):
            protect(packet)
    twins.check_state()


@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.TRANSPORT])
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
def test_ipv6_fast_paths_do_not_fall_back(
    monkeypatch: pytest.MonkeyPatch, mode: Mode, udp: bool
) -> None:
    """Ordinary IPv6 packets stay on the fast paths: with the general methods replaced by
    ones that fail, before the SAs bind them, every entry point still works."""

    def general(*args: object) -> bytes:
        raise AssertionError("fell back to the general method")

    for op in ("protect", "encapsulate", "unprotect", "decapsulate"):
        monkeypatch.setattr(EspSA, op, general)
    encap = UdpEncapsulation(4500, 4501) if udp else None
    selectors = Selectors(
        (TrafficSelector.from_network("2001:db8::2/128", IPPROTO_TCP, 23),),
        (TrafficSelector.from_network("2001:db8::1/128", IPPROTO_TCP),),
    )
    out = EspSA(config(mode=mode, direction=Direction.OUTBOUND, v6=True, encapsulation=encap), 0.0)
    inbound = [
        EspSA(config(mode=mode, v6=True, encapsulation=encap, selectors=s), 0.0)
        for s in (None, selectors, None, selectors)
    ]
    for n in (0, 1, 2, 3, 1000):
        packet = ipv6_tcp(A6.packed, B6.packed, bytes(n))
        assert inbound[0].unprotect(out.protect(packet)) == packet
        assert inbound[1].unprotect(out.protect(packet)) == packet
        assert inbound[2].decapsulate(out.encapsulate(packet), A6.packed, B6.packed) == packet
        assert inbound[3].decapsulate(out.encapsulate(packet), A6.packed, B6.packed) == packet
