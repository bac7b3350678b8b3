"""hostsec against an independent implementation: scapy's ``SecurityAssociation``.

Both directions for every case: hostsec protects and scapy decrypts and verifies the ICV;
scapy protects and hostsec unprotects. The packets come back byte for byte.

What scapy (2.5-2.8) can and cannot do, and how the tests deal with it:
- Keys: ESP ``crypt_key`` is the whole KEYMAT, key || salt for GCM/GMAC/ChaCha20/CTR
  (4-octet salt) and CCM (3-octet salt), as hostsec's ``encryption_key``.
- It draws a random IV unless ``iv=`` is given, and counts sequence numbers from
  ``seq_num``; it never infers ESN high bits: ``esn=`` is told the high half.
- AES-GCM through ``AESGCM`` always makes a 16-octet ICV: no GCM-8/12 (those are
  covered by the RFC 4106 vectors in test_vectors.py). No AES-XCBC either.
- NAT-T (``nat_t_header``) writes a zero UDP checksum, for IPv6 too, and loses IPv6
  extension headers in front of the UDP header when it decrypts.
- It does not check the ESP padding, the replay window or the selectors.
- IPv6 transport mode: scapy (like Linux) puts ESP/AH after destination options that
  follow no routing header, hostsec before them; RFC 4303 3.1.1 allows both, and both
  sides must read either.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH, ESP, IPSecIntegrityError, SecurityAssociation
from scapy.packet import bind_layers, split_layers

from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY
from hostsec.ipsec.errors import AuthenticationFailed
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import Direction, Mode, UdpEncapsulation

from .sa_factory import V4_A, V4_B, V6_A, V6_B, single_sa, start_inbound_at

SPI = 0x0B0A0901


@dataclass(frozen=True)
class Transform:
    proposal: str  # hostsec (strongSwan syntax)
    crypt: str | None  # scapy crypt_algo
    auth: str | None  # scapy auth_algo
    crypt_icv: int | None = None  # scapy crypt_icv_size

    def __str__(self) -> str:
        return self.proposal


ESP_CORE = [
    Transform("aes128-sha1", "AES-CBC", "HMAC-SHA1-96"),
    Transform("aes256-sha256", "AES-CBC", "SHA2-256-128"),
    Transform("aes128gcm16", "AES-GCM", None),
    Transform("chacha20poly1305", "CHACHA20-POLY1305", None),
    Transform("null-sha256", "NULL", "SHA2-256-128"),
]
ESP_MORE = [
    Transform("aes192-sha384", "AES-CBC", "SHA2-384-192"),
    Transform("aes256-sha512", "AES-CBC", "SHA2-512-256"),
    Transform("aes128-md5", "AES-CBC", "HMAC-MD5-96"),
    Transform("aes128-aescmac", "AES-CBC", "AES-CMAC-96"),
    Transform("aes256gcm16", "AES-GCM", None),
    Transform("aes128ctr-sha256", "AES-CTR", "SHA2-256-128"),
    Transform("aes256ctr-sha1", "AES-CTR", "HMAC-SHA1-96"),
    Transform("aes128ccm16", "AES-CCM", None, 16),
    Transform("aes256ccm8", "AES-CCM", None, 8),
    Transform("aes128gmac", "AES-NULL-GMAC", None),
    Transform("aes256gmac", "AES-NULL-GMAC", None),
    Transform("3des-sha1", "3DES", "HMAC-SHA1-96"),
    Transform("des-md5", "DES", "HMAC-MD5-96"),
]
AH_ALL = [
    Transform("sha1", None, "HMAC-SHA1-96"),
    Transform("sha256", None, "SHA2-256-128"),
    Transform("sha384", None, "SHA2-384-192"),
    Transform("sha512", None, "SHA2-512-256"),
    Transform("md5", None, "HMAC-MD5-96"),
    Transform("aescmac", None, "AES-CMAC-96"),
]


def _keys(t: Transform, protocol: Protocol) -> tuple[bytes, bytes]:
    """Fixed, distinct keys of the right lengths (reproducible failures)."""
    prop = parse_proposal(t.proposal, protocol)
    enc_len = integ_len = 0
    if prop.encryption:
        enc = prop.encryption[0]
        enc_len = ENCRYPTION[enc.id].key_material_len(enc.key_bits)
    if prop.integrity:
        integ_len = INTEGRITY[prop.integrity[0]].key_len
    return bytes((7 * i + 1) & 0xFF for i in range(enc_len)), bytes(
        (11 * i + 5) & 0xFF for i in range(integ_len)
    )


def _addresses(v6: bool) -> tuple[Any, Any]:
    return (V6_A, V6_B) if v6 else (V4_A, V4_B)


def _scapy_sa(
    t: Transform,
    protocol: Protocol,
    keys: tuple[bytes, bytes],
    mode: Mode,
    v6: bool,
    udp: bool = False,
    esn: bool = False,
    esn_hi: int = 0,
    seq_num: int = 1,
) -> SecurityAssociation:
    src, dst = _addresses(v6)
    tunnel = None
    if mode is Mode.TUNNEL:
        tunnel = IPv6(src=str(src), dst=str(dst)) if v6 else IP(src=str(src), dst=str(dst))
    kwargs: dict[str, Any] = {
        "spi": SPI,
        "seq_num": seq_num,
        "tunnel_header": tunnel,
        "esn_en": esn,
        "esn": esn_hi,
    }
    if t.auth:
        kwargs.update(auth_algo=t.auth, auth_key=keys[1])
    if protocol is Protocol.ESP:
        kwargs.update(crypt_algo=t.crypt, crypt_key=keys[0] or None, crypt_icv_size=t.crypt_icv)
        if udp:
            kwargs["nat_t_header"] = UDP(sport=4500, dport=4500)
        return SecurityAssociation(ESP, **kwargs)
    return SecurityAssociation(AH, **kwargs)


def _hostsec_sa(
    t: Transform,
    protocol: Protocol,
    keys: tuple[bytes, bytes],
    direction: Direction,
    mode: Mode,
    v6: bool,
    udp: bool = False,
    esn: bool = False,
    nat_original: tuple[bytes, bytes] | None = None,
) -> Any:
    src, dst = _addresses(v6)
    return single_sa(
        t.proposal + ("-esn" if esn else ""),
        direction,
        keys,
        protocol=protocol,
        mode=mode,
        src=src,
        dst=dst,
        spi=SPI,
        esn=esn,
        udp=UdpEncapsulation(4500, 4500) if udp else None,
        nat_original=nat_original,
    )


def _inner_packets(v6: bool, mode: Mode) -> list[bytes]:
    """A few packets of the family, sizes around the block boundaries."""
    src, dst = _addresses(v6)
    out = []
    for size in (0, 13, 14, 15, 1000):
        payload = bytes((i * 37) & 0xFF for i in range(size))
        if v6:
            out.append(raw(IPv6(src=str(src), dst=str(dst)) / TCP(sport=40000, dport=23) / payload))
        else:
            out.append(raw(IP(src=str(src), dst=str(dst)) / TCP(sport=40000, dport=23) / payload))
    if v6:
        # Extension headers: hop-by-hop stays in front of ESP/AH; destination options
        # may go either side (RFC 4303 3.1.1).
        out.append(raw(IPv6(src=str(src), dst=str(dst)) / IPv6ExtHdrHopByHop()
                       / IPv6ExtHdrDestOpt() / TCP(sport=1, dport=23) / b"ext"))  # fmt: skip
        out.append(raw(IPv6(src=str(src), dst=str(dst)) / ICMPv6EchoRequest(data=b"ping")))
        # Option data that may change en route (type 0x3e) is zeroed for AH's ICV, the
        # data of an option that may not (0x1e) is covered (RFC 4302 3.3.3.1.2.1).
        options = [HBHOptUnknown(otype=0x3E, optdata=b"mutable"),
                   HBHOptUnknown(otype=0x1E, optdata=b"fixed")]  # fmt: skip
        out.append(raw(IPv6(src=str(src), dst=str(dst)) / IPv6ExtHdrHopByHop(options=options)
                       / UDP(sport=9, dport=9) / b"opts"))  # fmt: skip
    else:
        out.append(raw(IP(src=str(src), dst=str(dst), tos=0x28, ttl=17, id=4242, flags="DF",
                          options=[IPOption_NOP(), IPOption_Router_Alert()])
                       / UDP(sport=5000, dport=53) / b"options"))  # fmt: skip
    if mode is Mode.TUNNEL:
        # The other family inside the tunnel.
        other_src, other_dst = _addresses(not v6)
        cls = IP if v6 else IPv6
        out.append(raw(cls(src=str(other_src), dst=str(other_dst)) / UDP(sport=7, dport=7) / b"x"))
    return out


def _parse(wire: bytes) -> Any:
    return IPv6(wire) if wire[0] >> 4 == 6 else IP(wire)


def _both_ways(
    t: Transform,
    protocol: Protocol,
    mode: Mode,
    v6: bool,
    udp: bool = False,
    esn: bool = False,
    packets: list[bytes] | None = None,
) -> None:
    keys = _keys(t, protocol)
    packets = packets if packets is not None else _inner_packets(v6, mode)
    # hostsec protects, scapy decrypts and verifies.
    out = _hostsec_sa(t, protocol, keys, Direction.OUTBOUND, mode, v6, udp, esn)
    theirs = _scapy_sa(t, protocol, keys, mode, v6, udp, esn)
    for packet in packets:
        wire = out.protect(packet)
        assert raw(theirs.decrypt(_parse(wire))) == packet
    # The check is real: one flipped bit and scapy refuses the packet.
    wire = bytearray(out.protect(packets[0]))
    wire[-1] ^= 0x01
    with pytest.raises(IPSecIntegrityError):
        theirs.decrypt(_parse(bytes(wire)))
    # scapy protects, hostsec unprotects.
    inbound = _hostsec_sa(t, protocol, keys, Direction.INBOUND, mode, v6, udp, esn)
    theirs = _scapy_sa(t, protocol, keys, mode, v6, udp, esn)
    for packet in packets:
        wire = raw(theirs.encrypt(_parse(packet)))
        assert inbound.unprotect(wire) == packet
    wire = bytearray(raw(theirs.encrypt(_parse(packets[0]))))
    wire[-1] ^= 0x01
    with pytest.raises(AuthenticationFailed):
        inbound.unprotect(bytes(wire))


# ---------------------------------------------------------------------------
# ESP


@pytest.mark.parametrize("t", ESP_CORE, ids=str)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("esn", [False, True], ids=["noesn", "esn"])
def test_esp_core_transforms(t: Transform, mode: Mode, v6: bool, esn: bool) -> None:
    _both_ways(t, Protocol.ESP, mode, v6, esn=esn)


@pytest.mark.parametrize("t", ESP_MORE, ids=str)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
def test_esp_more_transforms(t: Transform, mode: Mode) -> None:
    _both_ways(t, Protocol.ESP, mode, v6=mode is Mode.TUNNEL)


@pytest.mark.parametrize("t", [ESP_CORE[1], ESP_CORE[2], ESP_CORE[3]], ids=str)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_esp_nat_t(t: Transform, mode: Mode, v6: bool) -> None:
    """ESP in UDP/4500 (RFC 3948) against scapy's ``nat_t_header``. scapy drops the IPv6
    extension headers in front of the UDP header when it decrypts: those packets are left
    out here (hostsec's own round trip covers them)."""
    packets = [p for p in _inner_packets(v6, mode) if not v6 or p[6] not in (0, 43, 60)]
    _both_ways(t, Protocol.ESP, mode, v6, udp=True, packets=packets)
    # The UDP checksum hostsec writes: zero over IPv4 (RFC 3948 3.1.1), and over IPv6
    # the real one (RFC 8200 8.1), as scapy computes it.
    out = _hostsec_sa(t, Protocol.ESP, _keys(t, Protocol.ESP), Direction.OUTBOUND, mode, v6,
                      udp=True)  # fmt: skip
    for packet in packets:
        parsed = _parse(out.protect(packet))
        sent = parsed[UDP].chksum
        if not v6:
            assert sent == 0
            continue
        del parsed[UDP].chksum
        assert sent == _parse(raw(parsed))[UDP].chksum != 0


@pytest.mark.parametrize("t", [ESP_CORE[1], ESP_CORE[2]], ids=str)
def test_esp_esn_across_2_32(t: Transform) -> None:
    """Sequence numbers 2^32-3 .. 2^32+3: hostsec sends the low half and authenticates the
    high half; scapy is told the high half. The other way hostsec must infer it."""
    keys = _keys(t, Protocol.ESP)
    packet = _inner_packets(False, Mode.TRANSPORT)[4]
    start = (1 << 32) - 4
    out = _hostsec_sa(t, Protocol.ESP, keys, Direction.OUTBOUND, Mode.TRANSPORT, False, esn=True)
    out.seq = start
    for seq in range(start + 1, start + 8):
        wire = out.protect(packet)
        assert int.from_bytes(wire[24:28], "big") == seq & 0xFFFFFFFF
        theirs = _scapy_sa(t, Protocol.ESP, keys, Mode.TRANSPORT, False, esn=True,
                           esn_hi=seq >> 32)  # fmt: skip
        assert raw(theirs.decrypt(_parse(wire))) == packet
        wrong = _scapy_sa(t, Protocol.ESP, keys, Mode.TRANSPORT, False, esn=True,
                          esn_hi=(seq >> 32) ^ 1)  # fmt: skip
        with pytest.raises(IPSecIntegrityError):
            wrong.decrypt(_parse(wire))
    inbound = _hostsec_sa(t, Protocol.ESP, keys, Direction.INBOUND, Mode.TRANSPORT, False,
                          esn=True)  # fmt: skip
    start_inbound_at(inbound, start)
    for seq in range(start + 1, start + 8):
        theirs = _scapy_sa(t, Protocol.ESP, keys, Mode.TRANSPORT, False, esn=True,
                           esn_hi=seq >> 32, seq_num=seq & 0xFFFFFFFF)  # fmt: skip
        assert inbound.unprotect(raw(theirs.encrypt(_parse(packet)))) == packet
    assert inbound.stats.packets == 7


def test_esp_nat_t_transport_checksum_fixup() -> None:
    """RFC 3948 3.1.2: a NAT rewrote the outer addresses of a transport-mode packet; the
    TCP checksum inside still covers the peer's original addresses (NAT-OA) and hostsec
    must adjust it to the addresses the packet now carries."""
    t = ESP_CORE[2]
    keys = _keys(t, Protocol.ESP)
    private_src = ipaddress.ip_address("203.0.113.10")
    packet = IP(src=str(private_src), dst=str(V4_B)) / TCP(sport=40000, dport=23) / b"login:"
    theirs = _scapy_sa(t, Protocol.ESP, keys, Mode.TRANSPORT, False, udp=True)
    wire = theirs.encrypt(IP(raw(packet)))
    wire[IP].src = str(V4_A)  # what the NAT does: new source, header checksum redone
    del wire[IP].chksum
    inbound = _hostsec_sa(t, Protocol.ESP, keys, Direction.INBOUND, Mode.TRANSPORT, False,
                          udp=True, nat_original=(private_src.packed, V4_B.packed))  # fmt: skip
    inner = IP(inbound.unprotect(raw(wire)))
    assert inner.src == str(V4_A) and bytes(inner[TCP].payload) == b"login:"
    received = inner[TCP].chksum
    del inner[TCP].chksum
    assert IP(raw(inner))[TCP].chksum == received  # valid for the new source address


# ---------------------------------------------------------------------------
# AH


@pytest.mark.parametrize("t", AH_ALL, ids=str)
@pytest.mark.parametrize("mode", list(Mode), ids=lambda m: m.value)
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_ah(t: Transform, mode: Mode, v6: bool) -> None:
    _both_ways(t, Protocol.AH, mode, v6)


@pytest.mark.parametrize("t", [AH_ALL[0], AH_ALL[1]], ids=str)
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_ah_esn(t: Transform, v6: bool) -> None:
    _both_ways(t, Protocol.AH, Mode.TRANSPORT, v6, esn=True)


def test_ah_ipv4_options_mutable_and_immutable() -> None:
    """Record Route (mutable, zeroed for the ICV) next to Router Alert (immutable)."""
    src, dst = str(V4_A), str(V4_B)
    packets = [raw(IP(src=src, dst=dst, options=[IPOption_NOP(), IPOption_Router_Alert(),
                      IPOption_RR(routers=["198.51.100.9"])]) / TCP(dport=23) / b"rr")]  # fmt: skip
    _both_ways(AH_ALL[1], Protocol.AH, Mode.TRANSPORT, False, packets=packets)
    # A router on the way records itself: the ICV still verifies (RR is mutable).
    keys = _keys(AH_ALL[1], Protocol.AH)
    out = _hostsec_sa(AH_ALL[1], Protocol.AH, keys, Direction.OUTBOUND, Mode.TRANSPORT, False)
    wire = IP(out.protect(packets[0]))
    wire.ttl -= 3
    wire.options[2].routers = ["198.51.100.77"]
    del wire.chksum
    inbound = _hostsec_sa(AH_ALL[1], Protocol.AH, keys, Direction.INBOUND, Mode.TRANSPORT, False)
    result = IP(inbound.unprotect(raw(wire)))
    assert result.options[2].routers == ["198.51.100.77"] and result.ttl == 61


def _route(packet: bytes) -> bytes:
    """What the routers on the way make of a type 0 routing header (RFC 8200 4.4)."""
    p = IPv6(packet)
    rh = p[IPv6ExtHdrRouting]
    while rh.segleft:
        i = len(rh.addresses) - rh.segleft
        addresses = list(rh.addresses)
        addresses[i], p.dst = p.dst, addresses[i]
        rh.addresses = addresses
        rh.segleft -= 1
    return raw(p)


@pytest.mark.parametrize("visited", [0, 1], ids=["fresh", "one-visited"])
def test_ah_ipv6_routing_header_is_predicted(visited: int) -> None:
    """The sender computes the ICV over the routing header and destination as the final
    receiver will see them (RFC 4302 3.3.3.1.2.2). Both sides, routed on the way."""
    t = AH_ALL[1]
    keys = _keys(t, Protocol.AH)
    hops = ["2001:db8::a", "2001:db8::b", str(V6_B)]
    packet = raw(IPv6(src=str(V6_A), dst="2001:db8::f")
                 / IPv6ExtHdrRouting(addresses=hops, segleft=3 - visited)
                 / TCP(dport=23) / b"routed")  # fmt: skip
    out = _hostsec_sa(t, Protocol.AH, keys, Direction.OUTBOUND, Mode.TRANSPORT, True)
    inbound = _hostsec_sa(t, Protocol.AH, keys, Direction.INBOUND, Mode.TRANSPORT, True)
    wire = _route(out.protect(packet))
    assert inbound.unprotect(wire) == _route(packet)
    if visited == 0:
        # scapy predicts only a routing header that has visited nothing yet.
        theirs = _scapy_sa(t, Protocol.AH, keys, Mode.TRANSPORT, True)
        assert raw(theirs.decrypt(IPv6(wire))) == _route(packet)
        inbound = _hostsec_sa(t, Protocol.AH, keys, Direction.INBOUND, Mode.TRANSPORT, True)
        wire = _route(raw(theirs.encrypt(IPv6(packet))))
        assert inbound.unprotect(wire) == _route(packet)


def test_bundle_ah_over_esp_against_scapy() -> None:
    """AH+ESP in transport mode: scapy applies ESP, then AH over the result."""
    from hostsec.ipsec.ah import AhSA
    from hostsec.ipsec.bundle import Bundle

    esp_t, ah_t = ESP_CORE[2], AH_ALL[1]
    esp_keys, ah_keys = _keys(esp_t, Protocol.ESP), _keys(ah_t, Protocol.AH)
    packet = _inner_packets(False, Mode.TRANSPORT)[4]

    def pair(direction: Direction) -> Bundle:
        esp = _hostsec_sa(esp_t, Protocol.ESP, esp_keys, direction, Mode.TRANSPORT, False)
        ah = single_sa(ah_t.proposal, direction, ah_keys, protocol=Protocol.AH, spi=SPI + 1)
        assert isinstance(esp, EspSA) and isinstance(ah, AhSA)
        return Bundle(esp, ah)

    scapy_esp = _scapy_sa(esp_t, Protocol.ESP, esp_keys, Mode.TRANSPORT, False)
    scapy_ah = _scapy_sa(ah_t, Protocol.AH, ah_keys, Mode.TRANSPORT, False)
    scapy_ah.spi = SPI + 1
    wire = pair(Direction.OUTBOUND).protect(packet)
    without_ah = IP(raw(scapy_ah.decrypt(IP(wire))))  # re-dissect: AH leaves ESP as Raw
    assert raw(scapy_esp.decrypt(without_ah)) == packet
    # scapy's AuthAlgo.sign() takes any packet with an ESP layer for ESP, and so signs
    # AH-over-ESP as if it were ESP (it cannot verify its own result). Dissecting the
    # ESP part as raw bytes while AH is applied avoids that.
    esp_wire = raw(scapy_esp.encrypt(IP(packet)))
    split_layers(IP, ESP, proto=socket.IPPROTO_ESP)
    try:
        wire = raw(scapy_ah.encrypt(IP(esp_wire)))
        assert not IP(wire).haslayer(ESP)
    finally:
        bind_layers(IP, ESP, proto=socket.IPPROTO_ESP)
    assert pair(Direction.INBOUND).unprotect(wire) == packet
