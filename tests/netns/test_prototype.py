"""The pieces fit: TUN -> ESP (hostsec.ipsec, manual keys) -> raw socket or UDP/4500 ->
the other namespace -> SAD -> TUN, with policy routing and the firewall on both sides.

A tiny data path, one loop per host, no agent: it proves that a real TCP session on
port 23 crosses the wire only as ESP while port 80 stays in the clear and works.
"""

from __future__ import annotations

import ipaddress
import os
import select
import signal
import time
from dataclasses import dataclass

import pytest

from hostsec.crypto.proposals import Encryption, Protocol
from hostsec.crypto.transforms import EncrId
from hostsec.ipsec.errors import PacketDropped
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import Direction, Mode, SAConfig, UdpEncapsulation
from hostsec.ipsec.sad import SAD
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.platform.api import FlowMatch
from hostsec.platform.linux.firewall import NftablesFirewall
from hostsec.platform.linux.routing import LinuxPolicyRouter
from hostsec.platform.linux.sockets import RawReceiver, RawSender, UdpSocket
from hostsec.platform.linux.tun import LinuxTun, TunConfig
from hostsec.platform.mtu import TransformSet, inner_mtu
from hostsec.wire.udpencap import Datagram, classify
from tests.netns.helpers import echo_roundtrip, tcp_echo_server, try_connect, wait_ready

pytestmark = pytest.mark.netns

A = ipaddress.IPv4Address("198.51.100.1")
B = ipaddress.IPv4Address("198.51.100.2")
GCM = Encryption(EncrId.AES_GCM_16, 128)


@dataclass(frozen=True)
class Side:
    local: ipaddress.IPv4Address
    peer: ipaddress.IPv4Address
    flow: FlowMatch
    outbound: SAConfig
    inbound: SAConfig
    udp: bool


def _sa(spi: int, key: bytes, src, dst, direction, sel: Selectors | None, udp: bool) -> SAConfig:
    return SAConfig(
        spi=spi,
        protocol=Protocol.ESP,
        direction=direction,
        mode=Mode.TRANSPORT,
        src=src,
        dst=dst,
        encryption=GCM,
        encryption_key=key,
        encapsulation=UdpEncapsulation(4500, 4500) if udp else None,
        selectors=sel,
    )


def _sides(udp: bool) -> tuple[Side, Side]:
    """Manual keys (RFC 4301 4.5): one SA each way, tcp/23 between A (client) and B."""
    k_ab, k_ba = os.urandom(20), os.urandom(20)
    a_ts = TrafficSelector.from_network("198.51.100.1/32", 6)
    b_ts = TrafficSelector.from_network("198.51.100.2/32", 6, 23)
    at_a = Selectors(local=(a_ts,), remote=(b_ts,))
    at_b = Selectors(local=(b_ts,), remote=(a_ts,))
    a = Side(
        A,
        B,
        FlowMatch.to_host("telnet", B, 6, remote_port=23),
        _sa(0x1001, k_ab, A, B, Direction.OUTBOUND, None, udp),
        _sa(0x2002, k_ba, B, A, Direction.INBOUND, at_a, udp),
        udp,
    )
    b = Side(
        B,
        A,
        FlowMatch.to_host("telnet", A, 6, local_port=23),
        _sa(0x2002, k_ba, B, A, Direction.OUTBOUND, None, udp),
        _sa(0x1001, k_ab, A, B, Direction.INBOUND, at_b, udp),
        udp,
    )
    return a, b


def datapath(conn, side: Side) -> None:
    """TUN <-> ESP <-> wire, until told to quit; then a clean stop."""
    mtu = inner_mtu(1500, TransformSet(EncrId.AES_GCM_16, udp_encapsulation=side.udp))
    tun = LinuxTun(TunConfig(mtu=mtu))
    router, firewall = LinuxPolicyRouter(), NftablesFirewall()
    router.start()
    firewall.start()
    router.add_flow(side.flow, side.local)
    firewall.add_flow(side.flow)
    router.drop_leftovers()
    firewall.drop_leftovers()
    out_sa = EspSA(side.outbound, time.monotonic())
    sad = SAD()
    sad.add(EspSA(side.inbound, time.monotonic()))
    sender = RawSender(4)
    wire: RawReceiver | UdpSocket = UdpSocket(4, 4500) if side.udp else RawReceiver(50, 4)
    drops = 0
    conn.send("ready")
    while True:
        ready = select.select([tun, wire, conn], [], [])[0]
        if tun in ready:
            packet = tun.read()
            if side.udp:  # the kernel adds IP and UDP headers
                wire.send(out_sa.encapsulate(packet), side.peer, 4500)  # type: ignore[union-attr]
            else:
                sender.send(out_sa.protect(packet))
        if wire in ready:
            try:
                if isinstance(wire, UdpSocket):
                    d = wire.recv()
                    if classify(d.payload) is Datagram.ESP:
                        assert d.dst is not None
                        tun.write(sad.decapsulate(d.payload, d.src.packed, d.dst.packed))
                else:
                    tun.write(sad.unprotect(wire.recv().packet))
            except PacketDropped:
                drops += 1
        if conn in ready and conn.recv() == "quit":
            router.stop()
            firewall.stop()
            conn.send((out_sa.stats.packets, drops, router.installed(), firewall.exists()))
            return


@pytest.mark.parametrize("udp", [False, True], ids=["raw-esp", "esp-in-udp"])
def test_telnet_crosses_the_wire_only_as_esp(pair, udp: bool) -> None:
    a, b = pair
    side_a, side_b = _sides(udp)
    wait_ready(b.spawn(tcp_echo_server, 23))
    wait_ready(b.spawn(tcp_echo_server, 80))
    dp_a = wait_ready(a.spawn(datapath, side_a))
    dp_b = wait_ready(b.spawn(datapath, side_b))
    cap = b.capture("toa")

    marker = b"hostsec-cleartext-marker-"
    data = (marker + os.urandom(64)) * (1_000_000 // (len(marker) + 64))
    assert a.call(echo_roundtrip, "198.51.100.2", 23, data, timeout=60) == data
    assert a.call(try_connect, "198.51.100.2", 80) == "connected"
    frames = cap.stop()

    esp = [f for f in frames if f.is_esp]
    assert esp
    if cap.dropped == 0:  # under heavy load tcpdump may lose frames: then no exact count
        assert len(esp) > 500
    assert all((f.protocol == 17) == udp for f in esp)
    assert not [f for f in frames if f.uses_port(6, 23)], "cleartext tcp/23 on the wire"
    assert not [f for f in frames if marker in f.packet]
    assert any(f.uses_port(6, 80) for f in frames)

    for dp in (dp_a, dp_b):
        dp.conn.send("quit")
        sent, drops, installed, table = dp.conn.recv()
        assert sent > 500 and drops == 0
        assert installed == ([], []) and not table  # a clean stop leaves nothing
    assert "hostsec" not in a.run(["nft", "list", "ruleset"]).stdout
    assert "lookup 1752" not in a.run(["ip", "rule"]).stdout


def test_sigkill_of_one_side_keeps_telnet_off_the_wire(pair) -> None:
    a, b = pair
    side_a, side_b = _sides(False)
    wait_ready(b.spawn(tcp_echo_server, 23))
    dp_a = wait_ready(a.spawn(datapath, side_a))
    dp_b = wait_ready(b.spawn(datapath, side_b))
    assert a.call(echo_roundtrip, "198.51.100.2", 23, b"before" * 1000) == b"before" * 1000
    cap = b.capture("toa")
    dp_a.kill(signal.SIGKILL)
    dp_a.wait(5)
    assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "EINVAL"  # the blackhole
    frames = cap.stop()
    assert not [f for f in frames if f.uses_port(6, 23)]
    with a.entered():
        leftovers = LinuxPolicyRouter()
        leftovers.start()
        assert len(leftovers.installed()[0]) == 1  # the dead run's rule is still there
        leftovers.close()
    # The killed side comes back and replaces its own leftovers; manual keys have no
    # rekeying, so both sides start over with fresh SAs (the old sequence numbers would
    # be replays), and telnet works again.
    dp_b.conn.send("quit")
    dp_b.conn.recv()
    side_a, side_b = _sides(False)
    wait_ready(a.spawn(datapath, side_a))
    wait_ready(b.spawn(datapath, side_b))
    assert a.call(echo_roundtrip, "198.51.100.2", 23, b"after" * 1000) == b"after" * 1000
    with a.entered():
        router = LinuxPolicyRouter()
        rules, routes = router.installed()
        router.close()
    assert len(rules) == 1 and len(routes) == 2  # only the new run's
