"""Fuzz the inbound data path: EspSA/AhSA.unprotect, EspSA.decapsulate, Bundle.unprotect,
SAD.unprotect and SAD.decapsulate. Whatever the bytes, the only exceptions are the named
drops (PacketDropped subclasses); every drop carries a reason and a detail, bumps exactly
one counter, and no message carries key material.

Three kinds of input: half-structured raw packets (IPv4/IPv6 headers with ESP, AH or UDP
and random contents), mutations of genuine protected packets (overwrites, deletions,
insertions, truncations), and "authenticated garbage": packets that verify because the
fuzzer holds the keys (a hostile peer), with arbitrary plaintexts, trailers and next
headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsec.crypto.cipher import make_aead, make_cipher
from hostsec.crypto.integ import make_mac
from hostsec.crypto.proposals import Protocol
from hostsec.crypto.transforms import ENCRYPTION
from hostsec.ipsec.ah import AhSA
from hostsec.ipsec.bundle import Bundle
from hostsec.ipsec.errors import PacketDropped
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import Direction, Mode, UdpEncapsulation
from hostsec.ipsec.sad import SAD
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.wire.ip import IPv4Header, IPv6Header
from tests.unit.packets import budget, ipv4_packets, ipv4_tcp, ipv6_packets, ipv6_tcp
from tests.unit.sa_factory import V4_A, V4_B, V6_A, V6_B, sa_pair, single_sa

pytestmark = pytest.mark.fuzz

_SELECTORS = Selectors(
    local=(TrafficSelector.from_network("198.51.100.0/24"),
           TrafficSelector.from_network("2001:db8::/32")),
    remote=(TrafficSelector.from_network("198.51.100.0/24", 6),
            TrafficSelector.from_network("2001:db8::/32", 6)),
)  # fmt: skip


@dataclass
class Pair:
    """An outbound SA and its inbound twin, and what was used to build them."""

    name: str
    out: EspSA | AhSA
    inbound: EspSA | AhSA
    v6: bool
    keys: tuple[bytes, bytes] = field(repr=False)


def _zoo() -> list[Pair]:
    pairs = []
    specs = [
        ("aes128gcm16", Protocol.ESP),
        ("aes256gcm8", Protocol.ESP),
        ("chacha20poly1305", Protocol.ESP),
        ("aes128gmac", Protocol.ESP),
        ("aes128ccm12", Protocol.ESP),
        ("aes128-sha256", Protocol.ESP),
        ("aes128ctr-sha1", Protocol.ESP),
        ("3des-md5", Protocol.ESP),
        ("null-sha256", Protocol.ESP),
        ("aes128-aesxcbc", Protocol.ESP),
        ("sha256", Protocol.AH),
        ("sha1", Protocol.AH),
        ("aescmac", Protocol.AH),
    ]
    spi = 0x1000
    for proposal, protocol in specs:
        for mode in Mode:
            for v6 in (False, True):
                for esn in (False, True):
                    for udp in (False, True) if protocol is Protocol.ESP else (False,):
                        spi += 1
                        out, inbound = sa_pair(
                            proposal, protocol, mode=mode, v6=v6, esn=esn, udp=udp, spi=spi,
                            window=32, selectors=_SELECTORS if spi % 3 == 0 else None,
                        )  # fmt: skip
                        name = f"{proposal}-{mode.value}-v{6 if v6 else 4}-{esn}-{udp}"
                        keys = (inbound.config.encryption_key, inbound.config.integrity_key)
                        pairs.append(Pair(name, out, inbound, v6, keys))
    return pairs


ZOO = _zoo()
# NAT-T transport mode with the peer's original addresses (checksum fixup path).
_NAT_KEYS = (bytes(range(20)), b"")
_NAT = dict(udp=UdpEncapsulation(4500, 4500), spi=0x7001, nat_original=(bytes((203, 0, 113, 7)),
            V4_B.packed))  # fmt: skip
ZOO.append(Pair("nat-oa", single_sa("aes128gcm16", Direction.OUTBOUND, _NAT_KEYS, **_NAT),
                single_sa("aes128gcm16", Direction.INBOUND, _NAT_KEYS, **_NAT), False,
                _NAT_KEYS))  # fmt: skip

# A SAD holding some of them, and an AH+ESP bundle in each mode.
SAD_ = SAD()
BUNDLES: list[tuple[Bundle, Bundle]] = []
for i, mode in enumerate(Mode):
    esp_out, esp_in = sa_pair("aes128-sha256", mode=mode, spi=0x5000 + i)
    ah_out, ah_in = sa_pair("sha256", Protocol.AH, mode=mode, spi=0x6000 + i)
    assert isinstance(esp_out, EspSA) and isinstance(ah_out, AhSA)
    assert isinstance(esp_in, EspSA) and isinstance(ah_in, AhSA)
    BUNDLES.append((Bundle(esp_out, ah_out), Bundle(esp_in, ah_in)))
    SAD_.add(BUNDLES[-1][1])
for pair in ZOO[::5]:
    SAD_.add(pair.inbound)


def _drops(*entries: EspSA | AhSA | Bundle) -> int:
    total = 0
    for entry in entries:
        if isinstance(entry, Bundle):
            total += _drops(entry.esp, entry.ah)
        else:
            total += sum(entry.stats.drops.values())
    return total


def _all_drops() -> int:
    return (
        sum(SAD_.drops.values())
        + _drops(*(p.inbound for p in ZOO))
        + _drops(*(b for _, b in BUNDLES))
    )


def _check_drop(exc: PacketDropped, keys: tuple[bytes, bytes]) -> None:
    assert exc.detail and exc.reason.value
    text = str(exc)
    for key in keys:
        if len(key) >= 8:
            assert key.hex() not in text


def _expect_only_drops(
    call: object, packet: bytes, keys: tuple[bytes, bytes], *args: bytes
) -> bytes | None:
    """Call ``call(packet, *args)``; a drop must be a PacketDropped counted exactly once."""
    before = _all_drops()
    try:
        result = call(packet, *args)  # type: ignore[operator]
    except PacketDropped as exc:
        _check_drop(exc, keys)
        assert _all_drops() == before + 1, f"{exc!r} counted {_all_drops() - before} times"
        return None
    assert isinstance(result, bytes)
    return result


# ---------------------------------------------------------------------------
# Inputs

_PROTO = st.sampled_from([50, 51, 17, 6, 4, 41, 0])
_SPIS = st.sampled_from(
    [0, 0x1234, 0x5000, 0x5001, 0x6000, 0x6001] + [p.inbound.spi for p in ZOO[::7]]
)


@st.composite
def _raw_packet(draw: st.DrawFn) -> bytes:
    spi = struct.pack("!I", draw(_SPIS)) + struct.pack("!I", draw(st.integers(0, 70)))
    body = draw(st.binary(max_size=150))
    proto = draw(_PROTO)
    if proto == 17:
        body = struct.pack("!HHHH", 4500, 4500, 8 + 8 + len(body), 0) + spi + body
    elif proto == 50:
        body = spi + body
    elif proto == 51:
        body = bytes((6, draw(st.integers(0, 10)), 0, 0)) + spi + body
    cut = draw(st.integers(0, len(body)))
    body = body[: len(body) - cut] if draw(st.booleans()) else body
    if draw(st.booleans()):
        ihl = draw(st.sampled_from([5, 5, 6, 4, 15]))
        options = draw(st.binary(min_size=max(0, 4 * ihl - 20), max_size=max(0, 4 * ihl - 20)))
        total = draw(st.one_of(st.just(4 * ihl + len(body)), st.integers(0, 0xFFFF)))
        head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, 0, 64, proto, 0,
                           V4_A.packed, V4_B.packed)  # fmt: skip
        return head + options + body
    exts = b""
    nh = proto
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from([0, 60, 43, 44]))
        exts = bytes((nh, 0)) + draw(st.binary(min_size=6, max_size=6)) + exts
        nh = kind
    plen = draw(st.one_of(st.just(len(exts) + len(body)), st.integers(0, 0xFFFF)))
    return struct.pack("!IHBB", 6 << 28, plen, nh, 64) + V6_A.packed + V6_B.packed + exts + body


_edit = st.tuples(st.integers(0, 3), st.integers(0, 4000), st.binary(min_size=1, max_size=6))


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, position, blob in edits:
        where = position % (len(out) + 1)
        if kind == 0:
            out[where : where + len(blob)] = blob
        elif kind == 1:
            del out[where : where + len(blob)]
        elif kind == 2:
            out[where:where] = blob
        else:
            del out[where:]
    return bytes(out)


def _inner(draw: st.DrawFn, v6: bool) -> bytes:
    if v6:
        return draw(ipv6_packets(max_payload=60, extensions=draw(st.booleans()), routing=False))
    return draw(ipv4_packets(max_payload=60, options=draw(st.booleans())))


# ---------------------------------------------------------------------------
# Tests


@budget(500)
@given(packet=_raw_packet(), which=st.integers(0, len(ZOO) - 1))
def test_raw_packets_into_every_sa(packet: bytes, which: int) -> None:
    pair = ZOO[which]
    _expect_only_drops(pair.inbound.unprotect, packet, pair.keys)
    if isinstance(pair.inbound, EspSA):
        src, dst = (V6_A.packed, V6_B.packed) if pair.v6 else (V4_A.packed, V4_B.packed)
        _expect_only_drops(pair.inbound.decapsulate, packet[20:], pair.keys, src, dst)


@budget(300)
@given(packet=_raw_packet(), bundle=st.integers(0, len(BUNDLES) - 1))
def test_raw_packets_into_the_sad_and_bundles(packet: bytes, bundle: int) -> None:
    _expect_only_drops(SAD_.unprotect, packet, (b"", b""))
    _expect_only_drops(BUNDLES[bundle][1].unprotect, packet, (b"", b""))
    for offset in (20, 28, 40, 48):
        _expect_only_drops(SAD_.decapsulate, packet[offset:], (b"", b""), V4_A.packed,
                           V4_B.packed)  # fmt: skip


@budget(400)
@given(data=st.data(), which=st.integers(0, len(ZOO) - 1),
       edits=st.lists(_edit, min_size=1, max_size=3))  # fmt: skip
def test_mutated_genuine_packets(data: st.DataObject, which: int, edits: list) -> None:  # type: ignore[type-arg]
    pair = ZOO[which]
    packet = _inner(data.draw, pair.v6)
    wire = pair.out.protect(packet)
    mutated = _mutate(wire, edits)
    result = _expect_only_drops(pair.inbound.unprotect, mutated, pair.keys)
    if result is not None and mutated == wire:
        assert result == packet or pair.name == "nat-oa"


@budget(200)
@given(data=st.data(), bundle=st.integers(0, len(BUNDLES) - 1),
       edits=st.lists(_edit, min_size=1, max_size=3))  # fmt: skip
def test_mutated_bundle_packets(data: st.DataObject, bundle: int, edits: list) -> None:  # type: ignore[type-arg]
    out, inbound = BUNDLES[bundle]
    packet = _inner(data.draw, False)
    wire = out.protect(packet)
    _expect_only_drops(inbound.unprotect, _mutate(wire, edits), (b"", b""))
    _expect_only_drops(SAD_.unprotect, _mutate(out.protect(packet), edits), (b"", b""))


def _seal(pair: Pair, seq: int, plaintext: bytes) -> bytes:
    """ESP as a hostile peer holding the keys would build it: anything authenticated."""
    config = pair.inbound.config
    assert config.encryption is not None
    spi = config.spi.to_bytes(4, "big")
    header = spi + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    if ENCRYPTION[config.encryption.id].aead:
        aead = make_aead(config.encryption.id, config.encryption_key)
        aad = spi + seq.to_bytes(8, "big") if config.esn else header
        return header + bytes(8) + aead.seal(bytes(8), plaintext, aad)
    cipher = make_cipher(config.encryption.id, config.encryption_key)
    assert config.integrity is not None
    mac = make_mac(config.integrity, config.integrity_key)
    iv = bytes(cipher.iv_len)
    body = header + iv + cipher.encrypt(iv, plaintext)
    return body + mac.icv(body + ((seq >> 32).to_bytes(4, "big") if config.esn else b""))


ESP_PAIRS = [i for i, p in enumerate(ZOO) if isinstance(p.inbound, EspSA)]


@budget(400)
@given(
    which=st.sampled_from(ESP_PAIRS),
    body=st.binary(max_size=80),
    pad=st.integers(0, 255),
    next_header=st.sampled_from([4, 41, 6, 17, 1, 59, 0, 50, 255]),
    inner=st.booleans(),
    data=st.data(),
)
def test_authenticated_garbage(
    which: int, body: bytes, pad: int, next_header: int, inner: bool, data: st.DataObject
) -> None:
    """Plaintexts that no honest sender makes, with a valid ICV: short, odd pad lengths,
    wrong padding, inner packets that lie about their length, dummy packets."""
    pair = ZOO[which]
    if inner:
        body = _mutate(_inner(data.draw, data.draw(st.booleans())),
                       data.draw(st.lists(_edit, max_size=2)))  # fmt: skip
    plaintext = body + bytes((pad, next_header))
    config = pair.inbound.config
    assert config.encryption is not None
    block = ENCRYPTION[config.encryption.id].block_size
    if not ENCRYPTION[config.encryption.id].aead and len(plaintext) % block:
        plaintext = bytes(block - len(plaintext) % block) + plaintext
    seq = pair.out.seq + 1
    pair.out.seq = seq  # keep ahead of the receiver's window
    esp = _seal(pair, seq, plaintext)
    src, dst = (V6_A.packed, V6_B.packed) if pair.v6 else (V4_A.packed, V4_B.packed)
    _expect_only_drops(pair.inbound.decapsulate, esp, pair.keys, src, dst)
    seq += 1
    pair.out.seq = seq
    esp = _seal(pair, seq, plaintext)
    encap = config.encapsulation
    if encap is not None:
        esp = struct.pack("!HHHH", encap.src_port, encap.dst_port, 8 + len(esp), 0) + esp
    proto = 17 if encap is not None else 50
    if pair.v6:
        wire = IPv6Header(src, dst, proto).pack(len(esp)) + esp
    else:
        wire = IPv4Header(src, dst, proto).pack(len(esp)) + esp
    _expect_only_drops(pair.inbound.unprotect, wire, pair.keys)


def test_zoo_is_alive() -> None:
    """The fuzzed SAs do accept genuine traffic (a fuzz target that drops everything
    would prove nothing)."""
    for pair in ZOO:
        if pair.v6:
            packet = ipv6_tcp(V6_A.packed, V6_B.packed, b"alive")
        else:
            packet = ipv4_tcp(V4_A.packed, V4_B.packed, b"alive")
        result = pair.inbound.unprotect(pair.out.protect(packet))
        if pair.name == "nat-oa":  # the TCP checksum is adjusted to the NATed addresses
            assert result[:36] == packet[:36] and result[38:] == packet[38:]
        else:
            assert result == packet, pair.name
