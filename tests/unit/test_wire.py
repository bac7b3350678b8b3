"""hostsec.wire: checksums (RFC 1071, RFC 1624), IPv4/IPv6 headers, the IPv6 extension
header walk, flow keys, ESP/AH/UDP-encapsulation helpers.

References are independent: a plain RFC 1071 loop written here, and scapy's dissection
and checksums for headers, extension header chains and transport checksums.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH as SCAPY_AH
from scapy.packet import Raw

from hostsec.ipsec.headers import ipv4_rewrite
from hostsec.wire.ah import AH_FIXED_LEN, AHHeader, ah_icv_padding
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.esp import pad_length, padding, parse_esp_header, strip_trailer
from hostsec.wire.ip import (
    IPPROTO_AH,
    IPPROTO_ESP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPv4Header,
    IPv6Header,
    checksum_adjust,
    checksum_adjust_word,
    flow_key,
    internet_checksum,
    ipv4_header_length,
    ipv4_total_length,
    ipv6_payload_end,
    ones_complement_sum,
    pseudo_header_sum,
    transport_checksum,
    walk_ipv6,
)
from hostsec.wire.udpencap import (
    NON_ESP_MARKER,
    Datagram,
    classify,
    parse_udp_header,
    udp_header,
)

from .packets import A4, A6, B4, B6, budget, ipv4_packets

# ---------------------------------------------------------------------------
# Checksums


def ref_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 section 4.1, as printed: add 16-bit words, fold the carries."""
    if len(data) % 2:
        data += b"\x00"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes, initial: int = 0) -> int:
    return ~ref_sum(data, initial) & 0xFFFF


def _equal_ones_complement(a: int, b: int) -> bool:
    """0x0000 and 0xFFFF are both zero in one's complement."""
    return a == b or {a, b} == {0, 0xFFFF}


@budget(300)
@given(data=st.binary(max_size=200), initial=st.integers(0, 0xFFFF))
def test_checksum_matches_rfc1071(data: bytes, initial: int) -> None:
    assert _equal_ones_complement(ones_complement_sum(data, initial), ref_sum(data, initial))
    assert ones_complement_sum(data) == ref_sum(data)
    assert internet_checksum(data) == ref_checksum(data)
    # A buffer carrying its own checksum sums to zero.
    if len(data) % 2 == 0:
        with_sum = data + internet_checksum(data).to_bytes(2, "big")
        assert internet_checksum(with_sum) == 0


def test_checksum_edge_values() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\x00\x00") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0x0000
    assert ones_complement_sum(b"\xff\xff\x00\x01") == 0x0001  # end-around carry
    assert internet_checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: pad with zero


def test_rfc1624_section4_example() -> None:
    """RFC 1624 section 4: m = 0x5555 becomes m' = 0x3285 in a header whose other octets
    sum to 0xCD7A. HC = 0xDD2F; eqn. 3 gives HC' = 0x0000 (eqn. 2 would give 0xFFFF)."""
    assert ref_checksum(b"\xcd\x7a\x55\x55") == 0xDD2F
    assert checksum_adjust(0xDD2F, b"\x55\x55", b"\x32\x85") == 0x0000
    assert checksum_adjust_word(0xDD2F, 0x5555, 0x3285) == 0x0000
    assert ref_checksum(b"\xcd\x7a\x32\x85") == 0x0000


@budget(200)
@given(data=st.data())
def test_incremental_update_equals_full_recomputation(data: st.DataObject) -> None:
    """RFC 1624 eqn. 3 on a field of any even length at any even offset (except the
    checksum itself) gives the checksum a full recomputation gives."""
    packet = data.draw(ipv4_packets(max_payload=0))
    header = bytearray(packet[: (packet[0] & 0x0F) * 4])
    words = [w for w in range(0, len(header), 2) if w != 10]
    start = data.draw(st.sampled_from(words))
    count = data.draw(st.integers(1, 4))
    end = start
    while end < len(header) and end - start < 2 * count and end != 10:
        end += 2
    old = bytes(header[start:end])
    new = data.draw(st.binary(min_size=len(old), max_size=len(old)))
    checksum = int.from_bytes(header[10:12], "big")
    header[start:end] = new
    header[10:12] = b"\x00\x00"
    full = ref_checksum(bytes(header))
    assert checksum_adjust(checksum, old, new) == full
    if len(old) == 2:
        assert checksum_adjust_word(checksum, int.from_bytes(old, "big"),
                                    int.from_bytes(new, "big")) == full  # fmt: skip


def test_checksum_adjust_refuses_odd_or_unequal_fields() -> None:
    with pytest.raises(ValueError):
        checksum_adjust(0, b"\x00", b"\x01")
    with pytest.raises(ValueError):
        checksum_adjust(0, b"\x00\x00", b"\x00\x00\x00\x00")


@budget(150)
@given(
    packet=ipv4_packets(max_payload=0),
    protocol=st.integers(0, 255),
    length=st.integers(20, 0xFFFF),
)
def test_transport_mode_header_rewrite(packet: bytes, protocol: int, length: int) -> None:
    """The transport-mode rewrite of protocol and total length (RFC 1624 update of two
    words) gives a header equal to one checksummed from scratch."""
    ihl = (packet[0] & 0x0F) * 4
    length = max(length, ihl)
    rewritten = ipv4_rewrite(packet, protocol, length, ihl)
    expected = bytearray(packet[:ihl])
    expected[2:4] = length.to_bytes(2, "big")
    expected[9] = protocol
    expected[10:12] = b"\x00\x00"
    expected[10:12] = ref_checksum(bytes(expected)).to_bytes(2, "big")
    assert rewritten == bytes(expected)


@budget(100)
@given(payload=st.binary(max_size=100), sport=st.integers(0, 0xFFFF), v6=st.booleans())
def test_transport_checksum_agrees_with_scapy(payload: bytes, sport: int, v6: bool) -> None:
    src, dst = (A6, B6) if v6 else (A4, B4)
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2") if v6 else IP(src="198.51.100.1",
                                                                  dst="198.51.100.2")  # fmt: skip
    for layer, proto, built in (
        (TCP, IPPROTO_TCP, TCP(sport=sport, dport=23, flags="PA", seq=7)),
        (UDP, IPPROTO_UDP, UDP(sport=sport, dport=53)),
    ):
        segment = raw(ip / built / payload)[40 if v6 else 20 :]
        where = 16 if layer is TCP else 6
        zeroed = segment[:where] + b"\x00\x00" + segment[where + 2 :]
        ours = transport_checksum(src, dst, proto, zeroed)
        theirs = int.from_bytes(segment[where : where + 2], "big")
        if layer is UDP and ours == 0:
            ours = 0xFFFF  # RFC 768: a computed zero is sent as all ones
        assert ours == theirs
        assert ones_complement_sum(segment, pseudo_header_sum(src, dst, proto, len(segment))) in (
            0xFFFF,
            0,
        )
    if v6:
        segment = raw(ip / ICMPv6EchoRequest(data=payload))[40:]
        zeroed = segment[:2] + b"\x00\x00" + segment[4:]
        assert transport_checksum(src, dst, IPPROTO_ICMPV6, zeroed) == int.from_bytes(
            segment[2:4], "big"
        )


# ---------------------------------------------------------------------------
# IPv4 and IPv6 headers


@budget(100)
@given(packet=ipv4_packets(max_payload=30))
def test_ipv4_header_against_scapy(packet: bytes) -> None:
    header = IPv4Header.parse(packet)
    ihl = header.header_length
    assert header.pack() == packet[:ihl]
    assert header.pack(len(packet) - ihl) == packet[:ihl]
    assert ipv4_header_length(packet) == ihl
    assert ipv4_total_length(packet) == len(packet)
    theirs = IP(packet)
    assert (theirs.ihl * 4, theirs.len, theirs.proto, theirs.ttl, theirs.tos, theirs.id) == (
        ihl, header.total_length, header.protocol, header.ttl, header.tos, header.identification
    )  # fmt: skip
    del theirs.chksum
    assert raw(theirs)[:ihl] == packet[:ihl]  # scapy computes the same checksum


def test_ipv4_header_errors() -> None:
    good = IPv4Header(A4, B4, IPPROTO_TCP).pack(0)
    for bad in (b"", good[:19], b"\x55" + good[1:], b"\x44" + good[1:], b"\x46" + good[1:]):
        with pytest.raises(MalformedPacket):
            IPv4Header.parse(bad)
    with pytest.raises(MalformedPacket):
        ipv4_total_length(good[:2] + b"\x00\x13" + good[4:])  # shorter than the header
    with pytest.raises(MalformedPacket):
        ipv4_total_length(good[:2] + b"\x00\x15" + good[4:])  # longer than the bytes
    with pytest.raises(ValueError):
        IPv4Header(A4, B4, 6, options=b"\x01").pack(0)


@budget(200)
@given(
    tc=st.integers(0, 255),
    fl=st.integers(0, 0xFFFFF),
    hlim=st.integers(0, 255),
    nh=st.integers(0, 255),
    payload=st.binary(max_size=20),
)
def test_ipv6_header_against_scapy(tc: int, fl: int, hlim: int, nh: int, payload: bytes) -> None:
    ours = IPv6Header(A6, B6, nh, traffic_class=tc, flow_label=fl, hop_limit=hlim)
    theirs = raw(IPv6(src="2001:db8::1", dst="2001:db8::2", tc=tc, fl=fl, hlim=hlim, nh=nh)
                 / Raw(payload))  # fmt: skip
    assert ours.pack(len(payload)) + payload == theirs
    assert IPv6Header.parse(theirs) == IPv6Header(A6, B6, nh, len(payload), tc, fl, hlim)


def test_ipv6_payload_length_errors() -> None:
    header = IPv6Header(A6, B6, IPPROTO_TCP)
    with pytest.raises(MalformedPacket):
        ipv6_payload_end(header.pack(10) + bytes(9))  # claims more than there is
    with pytest.raises(MalformedPacket):
        ipv6_payload_end(header.pack(0) + bytes(8))  # jumbogram (RFC 2675)
    with pytest.raises(MalformedPacket):
        IPv6Header.parse(b"\x40" + bytes(39))
    with pytest.raises(MalformedPacket):
        IPv6Header.parse(bytes(39))
    assert ipv6_payload_end(header.pack(4) + bytes(8)) == 44  # trailing octets beyond it


# ---------------------------------------------------------------------------
# The IPv6 extension header walk, against scapy's dissection

_EXT = st.sampled_from(["hbh", "dst", "rt", "frag", "ah"])


def _scapy_chain(kinds: list[str], upper: str, data: st.DataObject) -> object:
    pkt: object = IPv6(src="2001:db8::1", dst="2001:db8::2")
    for i, kind in enumerate(kinds):
        if kind == "hbh" and i == 0:
            layer: object = IPv6ExtHdrHopByHop()
        elif kind in ("hbh", "dst"):
            layer = IPv6ExtHdrDestOpt()
        elif kind == "rt":
            n = data.draw(st.integers(0, 3))
            layer = IPv6ExtHdrRouting(addresses=[f"2001:db8::{j + 10}" for j in range(n)])
        elif kind == "frag":
            layer = IPv6ExtHdrFragment(offset=data.draw(st.integers(0, 3)), id=5)
        else:
            icv = data.draw(st.sampled_from([12, 16, 24, 32]))
            pad = ah_icv_padding(icv, True)
            following = kinds[i + 1] if i + 1 < len(kinds) else upper
            nh = {**_PROTOCOLS, "hbh": 60, "tcp": 6, "udp": 17, "icmp": 58}[following]
            layer = SCAPY_AH(nh=nh, spi=0x1234, seq=1, icv=bytes(icv), padding=bytes(pad),
                            payloadlen=(AH_FIXED_LEN + icv + pad) // 4 - 2)  # fmt: skip
        pkt = pkt / layer  # type: ignore[operator]
    if upper == "tcp":
        return pkt / TCP(sport=1234, dport=23)  # type: ignore[operator]
    if upper == "udp":
        return pkt / UDP(sport=1234, dport=53)  # type: ignore[operator]
    return pkt / ICMPv6EchoRequest()  # type: ignore[operator]


_PROTOCOLS = {"hbh": 0, "dst": 60, "rt": 43, "frag": 44, "ah": 51}


@budget(120)
@given(kinds=st.lists(_EXT, max_size=5), upper=st.sampled_from(["tcp", "udp", "icmp"]),
       data=st.data())  # fmt: skip
def test_walk_ipv6_against_scapy(kinds: list[str], upper: str, data: st.DataObject) -> None:
    built = _scapy_chain(kinds, upper, data)
    packet = raw(built)
    layout = walk_ipv6(packet)
    # scapy's layers as built (a non-first fragment is not dissected further), one by
    # one: type, offset, length.
    offset, layer = 40, built.payload  # type: ignore[attr-defined]
    expected = []
    later_fragment = False
    for kind in kinds:
        later_fragment |= kind == "frag" and bool(layer.offset)
        length = len(raw(layer)) - len(raw(layer.payload))
        expected.append((_PROTOCOLS[kind if kind != "hbh" or not expected else "dst"],
                         offset, length))  # fmt: skip
        offset += length
        layer = layer.payload
    assert [(h.protocol, h.offset, h.length) for h in layout.headers] == expected
    assert layout.upper_offset == offset == len(packet) - len(raw(layer))
    assert layout.upper_protocol == {"tcp": 6, "udp": 17, "icmp": 58}[upper]
    assert layout.end == len(packet)
    assert packet[layout.next_header_offset] == layout.upper_protocol
    # Stopping at AH leaves it for the caller.
    if "ah" in kinds:
        stopped = walk_ipv6(packet, frozenset({IPPROTO_AH}))
        assert stopped.upper_protocol == IPPROTO_AH
        assert len(stopped.headers) == kinds.index("ah")
    # Flow key: ports (or ICMPv6 type/code) unless this is a non-first fragment.
    key = flow_key(packet)
    assert (key.src, key.dst, key.protocol) == (A6, B6, layout.upper_protocol)
    if later_fragment:
        assert key.src_port is None and key.dst_port is None
    elif upper == "icmp":
        assert (key.src_port, key.dst_port) == (128, 0)  # echo request type and code
    else:
        assert (key.src_port, key.dst_port) == (1234, 23 if upper == "tcp" else 53)


def test_walk_ipv6_errors() -> None:
    def v6(nh: int, body: bytes) -> bytes:
        return IPv6Header(A6, B6, nh).pack(len(body)) + body

    with pytest.raises(MalformedPacket, match="truncated"):
        walk_ipv6(v6(0, b"\x06"))  # one octet of a hop-by-hop header
    with pytest.raises(MalformedPacket, match="overruns"):
        walk_ipv6(v6(60, b"\x06\x01" + bytes(6)))  # says 16 octets, has 8
    with pytest.raises(MalformedPacket, match="overruns"):
        walk_ipv6(v6(44, b"\x06\x00\x00"))  # fragment header cut short
    with pytest.raises(MalformedPacket, match="too many"):
        walk_ipv6(v6(60, (b"\x3c\x00" + bytes(6)) * 20 + b"\x06\x00" + bytes(6)))
    with pytest.raises(MalformedPacket):
        walk_ipv6(v6(51, b"\x06\x00"))  # AH claims 8 octets, fewer there
    layout = walk_ipv6(v6(IPPROTO_ESP, bytes(16)))  # ESP is not walked into
    assert layout.upper_protocol == IPPROTO_ESP and layout.upper_offset == 40


def test_flow_key_ipv4() -> None:
    tcp = raw(IP(src="198.51.100.1", dst="198.51.100.2") / TCP(sport=40000, dport=23))
    assert flow_key(tcp) == flow_key(tcp + b"trailing")  # the total length bounds it
    key = flow_key(tcp)
    assert (key.src, key.dst, key.protocol, key.src_port, key.dst_port) == (
        A4, B4, 6, 40000, 23)  # fmt: skip
    icmp = raw(IP(src="198.51.100.1", dst="198.51.100.2") / ICMP(type=3, code=4))
    assert (flow_key(icmp).src_port, flow_key(icmp).dst_port) == (3, 4)
    later = raw(IP(src="198.51.100.1", dst="198.51.100.2", proto=6, frag=100) / Raw(b"x" * 8))
    assert (flow_key(later).src_port, flow_key(later).dst_port) == (None, None)
    gre = raw(IP(src="198.51.100.1", dst="198.51.100.2", proto=47) / Raw(b"gre"))
    assert flow_key(gre).src_port is None
    with pytest.raises(MalformedPacket):
        flow_key(tcp[:22])  # ports cut off
    for bad in (b"", b"\x00", b"\x70" + bytes(40)):
        with pytest.raises(MalformedPacket):
            flow_key(bad)


# ---------------------------------------------------------------------------
# ESP, AH and UDP encapsulation helpers


def test_esp_padding_and_trailer() -> None:
    assert padding(0) == b"" and padding(3) == b"\x01\x02\x03"
    for length in range(64):
        for block in (4, 8, 16):
            pad = pad_length(length, block)
            assert 0 <= pad < block and (length + pad + 2) % block == 0
            payload = bytes(range(length))
            plaintext = payload + padding(pad) + bytes((pad, 41))
            assert strip_trailer(plaintext) == (41, payload)
    assert strip_trailer(b"\x00\x04") == (4, b"")
    with pytest.raises(MalformedPacket):
        strip_trailer(b"\x04")
    with pytest.raises(MalformedPacket):
        strip_trailer(b"\x01\x05\x04")  # pad length 5, only 1 octet before it
    with pytest.raises(MalformedPacket):
        strip_trailer(b"abc\x02\x03\x02\x04")  # padding 2, 3 instead of 1, 2
    assert strip_trailer(b"abc\x02\x03\x02\x04", check_padding=False) == (4, b"abc")
    assert parse_esp_header(bytes.fromhex("0000123400000007")) == (0x1234, 7)
    with pytest.raises(MalformedPacket):
        parse_esp_header(b"\x00" * 7)


@pytest.mark.parametrize("icv_len", [12, 16, 24, 32])
@pytest.mark.parametrize("v6", [False, True])
def test_ah_header(icv_len: int, v6: bool) -> None:
    pad = ah_icv_padding(icv_len, v6)
    assert (AH_FIXED_LEN + icv_len + pad) % (8 if v6 else 4) == 0 and pad < (8 if v6 else 4)
    header = AHHeader(IPPROTO_TCP, 0x1234, 99, bytes(range(icv_len)) + bytes(pad))
    packed = header.pack()
    assert len(packed) == header.length
    assert AHHeader.parse(b"xy" + packed + b"payload", 2) == header
    theirs = SCAPY_AH(packed + b"payload")
    assert (theirs.nh, theirs.spi, theirs.seq, theirs.payloadlen) == (
        IPPROTO_TCP, 0x1234, 99, len(packed) // 4 - 2)  # fmt: skip
    with pytest.raises(MalformedPacket):
        AHHeader.parse(packed[:-1])  # payload length points past the end
    with pytest.raises(MalformedPacket):
        AHHeader.parse(packed[:11])
    with pytest.raises(ValueError):
        AHHeader(6, 1, 1, b"\x00").pack()


def test_ah_payload_length_too_small() -> None:
    with pytest.raises(MalformedPacket):
        AHHeader.parse(struct.pack("!BBHII", 6, 0, 0, 1, 1))  # (0 + 2) * 4 = 8 < 12


def test_udp_encapsulation() -> None:
    assert classify(b"\xff") is Datagram.KEEPALIVE
    assert classify(NON_ESP_MARKER + b"ike header") is Datagram.IKE
    assert classify(b"\x00\x00\x12\x34\x00\x00\x00\x01") is Datagram.ESP
    for bad in (b"", b"\xfe", b"\x00\x00\x00", b"\x00\x00\x12\x34\x00"):
        with pytest.raises(MalformedPacket):
            classify(bad)
    header = udp_header(4500, 4501, 100)
    assert parse_udp_header(header + bytes(100)) == (4500, 4501, 108)
    assert header[6:8] == b"\x00\x00"  # RFC 3948 3.1.1: zero checksum (IPv4)
    assert parse_udp_header(b"ab" + header + bytes(100), 2) == (4500, 4501, 108)
    with pytest.raises(MalformedPacket):
        parse_udp_header(header + bytes(99))
    with pytest.raises(MalformedPacket):
        parse_udp_header(header[:7])
    with pytest.raises(MalformedPacket):
        parse_udp_header(struct.pack("!HHHH", 1, 2, 7, 0))
