"""The sans-I/O data plane: SPD lookup, trap/hold queue, install, transmit kinds, inbound."""

from __future__ import annotations

import pytest

from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.dataplane import Acquire, Inbound, Outbound, Transmit
from hostsec.ipsec.sa import Direction, Lifetime, LifetimeExpired, Mode
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.ipsec.spd import SPD
from hostsec.wire.udpencap import NON_ESP_MARKER, Datagram

from .packets import ipv4_tcp, ipv4_udp, ipv6_tcp
from .sa_factory import V4_A, V4_B, V6_A, V6_B, sa_pair

A, B = V4_A.packed, V4_B.packed


def telnet_client() -> Selectors:
    """A's view: tcp to B port 23."""
    return Selectors(
        (TrafficSelector.from_network("198.51.100.1/32", 6),),
        (TrafficSelector.from_network("198.51.100.2/32", 6, 23),),
    )


def test_spd_exact_and_general() -> None:
    spd = SPD()
    spd.add("telnet", telnet_client())
    spd.add(
        "udp-range",
        Selectors(
            (TrafficSelector.from_network("198.51.100.1/32", 17),),
            (TrafficSelector.from_network("198.51.100.0/24", 17, (5000, 5010)),),
        ),
    )
    assert spd.lookup(ipv4_tcp(A, B, b"x", dport=23)) == "telnet"
    assert spd.lookup(ipv4_tcp(A, B, b"x", dport=80)) is None
    assert spd.lookup(ipv4_udp(A, B, b"x", dport=5005)) == "udp-range"
    assert spd.lookup(ipv4_udp(A, B, b"x", dport=5011)) is None
    spd.remove("telnet")
    assert spd.lookup(ipv4_tcp(A, B, b"x", dport=23)) is None
    with pytest.raises(ValueError):
        spd.add("udp-range", telnet_client())


def test_server_side_selector_matches_source_port() -> None:
    spd = SPD()
    spd.add(
        "telnet-server",
        Selectors(
            (TrafficSelector.from_network("198.51.100.2/32", 6, 23),),
            (TrafficSelector.from_network("198.51.100.1/32", 6),),
        ),
    )
    assert spd.lookup(ipv4_tcp(B, A, b"x", sport=23, dport=40000)) == "telnet-server"
    assert spd.lookup(ipv4_tcp(B, A, b"x", sport=24, dport=40000)) is None


def test_trap_holds_then_flushes_in_order() -> None:
    out_sa, in_sa = sa_pair("aes128gcm16")
    engine = Outbound()
    engine.add_flow("telnet", telnet_client(), hold_limit=3)
    packets = [ipv4_tcp(A, B, bytes([i]) * 10) for i in range(5)]
    for p in packets:
        assert engine.process(p) is None
    events = engine.poll_events()
    assert events == [Acquire("telnet")]  # one acquire, not one per packet
    stats = engine.flow_stats()["telnet"]
    assert stats["held"] == 3
    assert stats["drops"] == {"hold_queue_full": 2}
    flushed = engine.install("telnet", [out_sa.config], 0.0)
    assert [o[0] for o in flushed] == [Transmit.IP] * 3
    # The held packets come out first, in order, and decrypt to the originals.
    assert [in_sa.unprotect(o[3]) for o in flushed] == packets[:3]
    out = engine.process(packets[3])
    assert out is not None and in_sa.unprotect(out[3]) == packets[3]


def test_transmit_kinds() -> None:
    engine = Outbound()
    engine.add_flow("telnet", telnet_client())
    ah_out, ah_in = sa_pair("sha256", Protocol.AH)
    engine.install("telnet", [ah_out.config], 0.0)
    how, dst, port, data = engine.process(ipv4_tcp(A, B, b"hi")) or (None, b"", 0, b"")
    assert how is Transmit.IP and dst == B and port == 0
    assert ah_in.unprotect(data) == ipv4_tcp(A, B, b"hi")
    udp_out, udp_in = sa_pair("aes128gcm16", mode=Mode.TUNNEL, udp=True, spi=0x777)
    engine.install("telnet", [udp_out.config], 0.0)
    how, dst, port, data = engine.process(ipv4_tcp(A, B, b"hi")) or (None, b"", 0, b"")
    assert how is Transmit.UDP and port == 4500
    assert udp_in.decapsulate(data, A, B) == ipv4_tcp(A, B, b"hi")


def test_no_policy_is_dropped_and_counted() -> None:
    engine = Outbound()
    assert engine.process(ipv4_tcp(A, B, b"x")) is None
    assert engine.process(b"\x60" + bytes(50)) is None
    assert engine.drops == {"no_policy": 2}


def test_uninstall_by_spi_only_removes_that_sa() -> None:
    out_sa, _ = sa_pair("aes128gcm16", spi=0x1000)
    engine = Outbound()
    engine.add_flow("telnet", telnet_client())
    engine.install("telnet", [out_sa.config], 0.0)
    engine.uninstall("telnet", spi=0x2000)
    assert engine.process(ipv4_tcp(A, B, b"x")) is not None
    engine.uninstall("telnet", spi=0x1000)
    assert engine.process(ipv4_tcp(A, B, b"x")) is None
    assert engine.poll_events() == [Acquire("telnet")]


def test_inbound_ip_udp_and_bundle() -> None:
    engine = Inbound()
    esp_out, esp_in = sa_pair("aes128gcm16", spi=0x1001)
    engine.install([esp_in.config], 0.0)
    packet = ipv4_tcp(A, B, b"payload")
    assert engine.process_ip(esp_out.protect(packet)) == packet
    assert engine.process_ip(esp_out.protect(packet)[:-1]) is None  # counted, not raised
    udp_out, udp_in = sa_pair("aes128gcm16", mode=Mode.TUNNEL, udp=True, spi=0x1002)
    engine.install([udp_in.config], 0.0)
    kind, inner = engine.process_udp(udp_out.encapsulate(packet), A, B)
    assert kind is Datagram.ESP and inner == packet
    assert engine.process_udp(b"\xff", A, B) == (Datagram.KEEPALIVE, None)
    assert engine.process_udp(NON_ESP_MARKER + b"ike", A, B) == (Datagram.IKE, None)
    assert engine.keepalives == 1
    # Bundle: ESP then AH outbound; inbound only reachable through the AH SPI.
    keys_esp = sa_pair("aes128-sha256", spi=0x2001)
    keys_ah = sa_pair("sha256", Protocol.AH, spi=0x2002)
    engine.install([keys_esp[1].config, keys_ah[1].config], 0.0)
    out = Outbound()
    out.add_flow("t", telnet_client())
    out.install("t", [keys_esp[0].config, keys_ah[0].config], 0.0)
    how, _, _, wire = out.process(packet) or (None, b"", 0, b"")
    assert how is Transmit.IP and wire[9] == 51
    assert engine.process_ip(wire) == packet
    bare_esp = keys_esp[0].protect(packet)
    assert engine.process_ip(bare_esp) is None  # ESP without its AH: unknown SPI


def test_lifetime_events_are_due_at_once_in_both_directions() -> None:
    """A soft byte limit crossed by a packet marks the engine's events due (the worker sends
    them after that batch, not at its next periodic collection); polling clears the mark."""
    soft, hard = Lifetime(bytes=2_500), Lifetime(bytes=100_000)
    out_sa, in_sa = sa_pair("aes128gcm16", spi=0x3001, soft=soft, hard=hard)
    outbound, inbound = Outbound(), Inbound()
    outbound.add_flow("telnet", telnet_client())
    outbound.install("telnet", [out_sa.config], 0.0)
    inbound.install([in_sa.config], 0.0)
    packet = ipv4_tcp(A, B, b"x" * 960)
    wire = []
    for _ in range(3):
        assert not outbound.events_due and not inbound.events_due
        result = outbound.process(packet)
        assert result is not None
        wire.append(result[3])
        assert inbound.process_ip(wire[-1]) == packet
    assert outbound.events_due and inbound.events_due
    assert outbound.poll_events() == [LifetimeExpired(0x3001, Direction.OUTBOUND, False, "bytes")]
    assert inbound.poll_events() == [LifetimeExpired(0x3001, Direction.INBOUND, False, "bytes")]
    assert not outbound.events_due and not inbound.events_due
    outbound.process(packet)
    assert not outbound.events_due  # each limit fires once


def test_inbound_esp_without_header_keeps_the_hop_limit() -> None:
    """A raw IPv6 socket gives ESP without its header: process_esp rebuilds the transport
    mode inner packet from the read's addresses and hop limit (and drops what fails)."""
    out_sa, in_sa = sa_pair("aes128gcm16", v6=True, spi=0x6001)
    engine = Inbound()
    engine.install([in_sa.config], 0.0)
    a6, b6 = V6_A.packed, V6_B.packed
    packet = ipv6_tcp(a6, b6, b"payload")
    esp = out_sa.protect(packet)[40:]  # what the socket gives: no IPv6 header
    inner = engine.process_esp(esp, a6, b6, 33)
    assert inner is not None and inner[7] == 33
    assert inner[:7] + inner[8:] == packet[:7] + packet[8:]
    assert engine.process_esp(esp, a6, b6, 33) is None  # a replay
    assert engine.sad.entries()[0].stats.drops  # counted by the SA
