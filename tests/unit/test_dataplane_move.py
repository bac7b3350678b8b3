"""The peer's NAT mapping moves (RFC 7296 2.23, RFC 3948): the outbound ESP-in-UDP of its
flows follows it on the same SAs; the agent's SA records follow too."""

from __future__ import annotations

import dataclasses
import ipaddress

from hostsec.agent.translate import moved_config, with_volume_lifetimes
from hostsec.crypto.proposals import Protocol
from hostsec.ipsec.dataplane import Outbound, Transmit
from hostsec.ipsec.errors import Expired
from hostsec.ipsec.sa import Direction, Lifetime, Mode, UdpEncapsulation
from hostsec.ipsec.sad import create_sa
from hostsec.ipsec.selectors import Selectors, TrafficSelector

from .packets import ipv4_tcp
from .sa_factory import V4_A, V4_B, sa_pair

A, B = V4_A.packed, V4_B.packed
NEW = ipaddress.ip_address("203.0.113.7")


def _flow(engine: Outbound, name: str, port: int) -> None:
    engine.add_flow(
        name,
        Selectors(
            (TrafficSelector.from_network("198.51.100.1/32", 6),),
            (TrafficSelector.from_network("198.51.100.2/32", 6, port),),
        ),
    )


def test_moved_flows_keep_their_sa_and_sequence_numbers() -> None:
    engine = Outbound()
    _flow(engine, "telnet", 23)
    _flow(engine, "other", 24)
    _flow(engine, "raw", 25)
    udp_out, udp_in = sa_pair("aes128gcm16", mode=Mode.TUNNEL, udp=True, spi=0x777)
    other_out, _ = sa_pair("aes128gcm16", mode=Mode.TUNNEL, udp=True, spi=0x888)
    raw_out, _ = sa_pair("aes128gcm16", spi=0x999)
    engine.install("telnet", [udp_out.config], 0.0)
    engine.install("other", [other_out.config], 0.0)
    engine.install("raw", [raw_out.config], 0.0)
    first = ipv4_tcp(A, B, b"before", dport=23)
    how, dst, port, data = engine.process(first) or (None, b"", 0, b"")
    assert how is Transmit.UDP and dst == B and port == 4500
    assert udp_in.decapsulate(data, A, B) == first

    # The raw ESP SA 0x999 is named too: only ESP-in-UDP carriers move.
    assert engine.move([0x777, 0x999, 0x12345], NEW.packed, 40123) == ["telnet"]
    second = ipv4_tcp(A, B, b"after", dport=23)
    how, dst, port, data = engine.process(second) or (None, b"", 0, b"")
    assert how is Transmit.UDP and dst == NEW.packed and port == 40123
    # The same SA: the peer's inbound SA takes it, sequence number 2 after 1.
    assert udp_in.decapsulate(data, A, NEW.packed) == second
    assert int.from_bytes(data[4:8], "big") == 2
    assert engine.flow_stats()["telnet"]["packets"] == 2
    # The others did not move.
    out = engine.process(ipv4_tcp(A, B, b"x", dport=24))
    assert out is not None and out[1:3] == (B, 4500)
    out = engine.process(ipv4_tcp(A, B, b"x", dport=25))
    assert out is not None and out[0] is Transmit.IP and out[1] == B


def test_moved_config() -> None:
    out_sa, in_sa = sa_pair("aes128gcm16", udp=True)
    out_cfg = moved_config(out_sa.config, NEW, 40123)
    assert out_cfg.dst == NEW and out_cfg.src == V4_A
    assert out_cfg.encapsulation == UdpEncapsulation(4500, 40123)
    assert (
        out_cfg.spi == out_sa.config.spi and out_cfg.encryption_key == out_sa.config.encryption_key
    )
    # An inbound SA's peer is its source: the ports swap sides.
    in_cfg = moved_config(in_sa.config, NEW, 40123)
    assert in_cfg.direction is Direction.INBOUND
    assert in_cfg.src == NEW and in_cfg.dst == V4_B
    assert in_cfg.encapsulation == UdpEncapsulation(40123, 4500)
    # Without UDP encapsulation nothing changes.
    plain, _ = sa_pair("sha256", Protocol.AH)
    assert moved_config(plain.config, NEW, 40123) is plain.config


def test_volume_lifetimes_rekey_then_expire_by_bytes_and_packets() -> None:
    """A flow's lifetime_bytes/lifetime_packets reach its SAs: soft (rekey) at the given
    fraction, hard at the limit (RFC 4301 4.4.2.1); time lifetimes stay as negotiated."""
    out_sa, _ = sa_pair("aes128gcm16", mode=Mode.TUNNEL)
    base = dataclasses.replace(out_sa.config, soft=Lifetime(seconds=90.0), hard=Lifetime(100.0))
    assert with_volume_lifetimes(base, None, None, 0.85) is base
    config = with_volume_lifetimes(base, 10_000, None, 0.5)
    assert config.hard == Lifetime(seconds=100.0, bytes=10_000)
    assert config.soft == Lifetime(seconds=90.0, bytes=5_000)
    sa = create_sa(config, 0.0)
    packet = ipv4_tcp(A, B, b"x" * 960)  # 1000 octets
    events = []
    sent = 0
    for _ in range(12):
        try:
            sa.protect(packet)
            sent += 1
        except Expired:
            break
        events += sa.poll_events()
    events += sa.poll_events()
    causes = [(e.hard, e.cause) for e in events]
    assert causes == [(False, "bytes"), (True, "bytes")], causes
    assert sent == 10  # the 11th packet would pass the hard limit: refused

    by_packets = create_sa(with_volume_lifetimes(base, None, 200, 0.9), 0.0)
    for _ in range(180):
        by_packets.protect(packet)
    assert [(e.hard, e.cause) for e in by_packets.poll_events()] == [(False, "packets")]
