"""The data plane's batch entry points: the same decisions, checks and counters as one
packet at a time, and the grouping of UDP outputs for UDP_SEGMENT sends."""

from __future__ import annotations

import os

from hostsec.ipsec.dataplane import (
    Acquire,
    Inbound,
    Outbound,
    Transmit,
    split_datagrams,
    udp_runs,
)
from hostsec.ipsec.errors import DropReason
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import Lifetime, Mode
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.wire.udpencap import NAT_KEEPALIVE, NON_ESP_MARKER

from .packets import ipv4_tcp
from .sa_factory import V4_A, V4_B, sa_pair

A, B = V4_A.packed, V4_B.packed
CLIENT = Selectors(
    (TrafficSelector.from_network("198.51.100.1/32", 6),),
    (TrafficSelector.from_network("198.51.100.2/32", 6, 23),),
)
SERVER = Selectors(CLIENT.remote, CLIENT.local)


def telnet(n: int, size: int = 1000) -> list[bytes]:
    return [ipv4_tcp(A, B, os.urandom(size), dport=23) for _ in range(n)]


def engines(udp: bool, mode: Mode = Mode.TRANSPORT, **kw: object) -> tuple[Outbound, Inbound]:
    out_sa, in_sa = sa_pair("aes128gcm16", mode=mode, udp=udp, selectors=SERVER, **kw)  # type: ignore[arg-type]
    out = Outbound()
    out.add_flow("telnet", CLIENT)
    out.install("telnet", [out_sa.config], 0.0)
    inb = Inbound()
    inb.install([in_sa.config], 0.0)
    return out, inb


def test_process_many_matches_process_one_by_one() -> None:
    packets = telnet(5)
    other = ipv4_tcp(A, B, b"web", dport=80)  # no policy
    out, inb = engines(udp=False)
    outputs = out.process_many([packets[0], other, *packets[1:]])
    assert [o[0] for o in outputs] == [Transmit.IP] * 5
    assert all(o[1] == B and o[2] == 0 for o in outputs)
    inner: list[bytes] = []
    inb.process_ip_many([o[3] for o in outputs], inner)
    assert inner == packets
    assert out.drops == {"no_policy": 1}
    stats = out.flow_stats()["telnet"]
    assert stats["packets"] == 5 and stats["bytes"] == sum(map(len, packets))


def test_process_many_tunnel_in_udp() -> None:
    packets = telnet(4)
    out, inb = engines(udp=True, mode=Mode.TUNNEL)
    outputs = out.process_many(packets)
    assert {(o[0], o[1], o[2]) for o in outputs} == {(Transmit.UDP, B, 4500)}
    inner: list[bytes] = []
    ike = inb.process_udp_many([o[3] for o in outputs], A, B, inner)
    assert ike == [] and inner == packets


def test_process_many_holds_without_sa_and_raises_one_acquire() -> None:
    out = Outbound()
    out.add_flow("telnet", CLIENT, hold_limit=2)
    assert out.process_many(telnet(3)) == []
    assert out.take_acquires() == [Acquire("telnet")]
    stats = out.flow_stats()["telnet"]
    assert stats["held"] == 2 and stats["drops"] == {"hold_queue_full": 1}


def test_process_many_counts_an_expired_sa_and_goes_on() -> None:
    out_sa, _in_sa = sa_pair("aes128gcm16", selectors=SERVER, hard=Lifetime(packets=2))
    out = Outbound()
    out.add_flow("telnet", CLIENT)
    out.install("telnet", [out_sa.config], 0.0)
    outputs = out.process_many(telnet(5))
    assert len(outputs) == 2
    assert out.flow_stats()["telnet"]["drops"] == {"expired": 3}


def test_udp_batch_drops_tampered_replayed_and_unknown_and_keeps_the_rest() -> None:
    """A GRO read mixes whatever the peer (or an attacker) sent on the same 4-tuple."""
    packets = telnet(6)
    out, inb = engines(udp=True, mode=Mode.TUNNEL)  # tunnel: the inner header as sent
    esp = [o[3] for o in out.process_many(packets)]
    tampered = esp[2][:-1] + bytes((esp[2][-1] ^ 1,))
    unknown = b"\x99\x99\x99\x99" + esp[3][4:]
    ike = NON_ESP_MARKER + b"IKE message"
    batch = [esp[0], esp[1], tampered, esp[1], ike, NAT_KEEPALIVE, unknown, b"\x01", esp[4]]
    inner: list[bytes] = []
    assert inb.process_udp_many(batch, A, B, inner) == [ike]
    assert inner == [packets[0], packets[1], packets[4]]
    [sa] = inb.sas()
    assert sa.stats.drops == {DropReason.AUTH_FAILED: 1, DropReason.REPLAY: 1}
    assert inb.sad.drops == {DropReason.UNKNOWN_SPI: 1, DropReason.MALFORMED: 1}
    assert inb.keepalives == 1
    # the tampered packet did not move the window: the genuine one still passes
    inb.process_udp_many([esp[2], esp[3], esp[5]], A, B, inner)
    assert inner[3:] == [packets[2], packets[3], packets[5]]


def test_udp_batch_checks_selectors() -> None:
    """An inner packet outside the SA's selectors is dropped, inside a batch too."""
    out_sa, in_sa = sa_pair("aes128gcm16", mode=Mode.TUNNEL, udp=True, selectors=SERVER)
    assert isinstance(out_sa, EspSA)
    inb = Inbound()
    inb.install([in_sa.config], 0.0)
    good, bad = ipv4_tcp(A, B, b"ok", dport=23), ipv4_tcp(A, B, b"no", dport=24)
    inner: list[bytes] = []
    inb.process_udp_many([out_sa.encapsulate(good), out_sa.encapsulate(bad)], A, B, inner)
    assert inner == [good]
    assert inb.sas()[0].stats.drops == {DropReason.SELECTOR_MISMATCH: 1}


def test_raw_batch_drops_and_counts() -> None:
    packets = telnet(3)
    out, inb = engines(udp=False)
    wire = [o[3] for o in out.process_many(packets)]
    broken = wire[1][:30] + bytes((wire[1][30] ^ 0x80,)) + wire[1][31:]
    inner: list[bytes] = []
    inb.process_ip_many([wire[0], broken, wire[0], b"", wire[2]], inner)
    assert inner == [packets[0], packets[2]]
    assert inb.sas()[0].stats.drops == {DropReason.AUTH_FAILED: 1, DropReason.REPLAY: 1}
    assert inb.sad.drops == {DropReason.MALFORMED: 1}


def test_gro_read_split_and_received() -> None:
    """A UDP_GRO read: equal datagrams back to back, the last one shorter."""
    packets = [*telnet(5, 1200), *telnet(1, 300)]
    out, inb = engines(udp=True, mode=Mode.TUNNEL)
    esp = [o[3] for o in out.process_many(packets)]
    assert len({len(e) for e in esp[:5]}) == 1 and len(esp[5]) < len(esp[0])
    payloads = split_datagrams(b"".join(esp), len(esp[0]))
    assert payloads == esp
    inner: list[bytes] = []
    inb.process_udp_many(payloads, A, B, inner)
    assert inner == packets
    assert split_datagrams(esp[0], 0) == [esp[0]]
    assert split_datagrams(esp[0], len(esp[0])) == [esp[0]]


def test_udp_runs() -> None:
    def o(dst: bytes, size: int, port: int = 4500, how: Transmit = Transmit.UDP):  # type: ignore[no-untyped-def]
        return (how, dst, port, bytes(size))

    outputs = [
        o(B, 100), o(B, 100), o(B, 60),  # a run ending with a short one
        o(B, 100), o(A, 100),  # another destination
        o(A, 100, port=4501),  # another port
        o(A, 100, how=Transmit.IP),  # not UDP: left out
        o(A, 100, port=4501), o(A, 120, port=4501),  # larger: a new run
    ]  # fmt: skip
    runs = udp_runs(outputs, max_segments=64, max_bytes=65507)
    assert [(r[0], r[1], r[2], [len(b) for b in r[3]]) for r in runs] == [
        (B, 4500, 100, [100, 100, 60]),
        (B, 4500, 100, [100]),
        (A, 4500, 100, [100]),
        (A, 4501, 100, [100, 100]),
        (A, 4501, 120, [120]),
    ]
    many = [o(B, 1000) for _ in range(150)]
    assert [len(r[3]) for r in udp_runs(many, 64, 65507)] == [64, 64, 22]
    assert [len(r[3]) for r in udp_runs(many, 64, 10_000)] == [10] * 15
