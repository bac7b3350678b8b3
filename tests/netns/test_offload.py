"""Batching at the kernel boundary, against the real kernel: UDP GSO sends arriving
GRO-coalesced, a TUN device handing out TSO super-packets and taking TCP super-packets,
and the agent's data path using all of it with every byte accounted for.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
from typing import Any

import pytest
from pyroute2 import IPRoute

from hostsec.agent.lab import AgentLab
from hostsec.ipsec.offload import coalesce_tcp, segment_tcp
from hostsec.platform.linux.sockets import (
    GRO_ANCILLARY,
    UdpSocket,
    enable_gro,
    gro_segment_size,
    send_segments,
)
from hostsec.platform.linux.tun import (
    OFFLOAD_TSO,
    PLAIN_VNET_HDR,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR_LEN,
    LinuxTun,
    TunConfig,
    VnetHeader,
    has_vnet_header,
    tcp_gso_header,
    tun_flags,
)
from hostsec.platform.nsenter import entered
from tests.netns.helpers import echo_roundtrip, messages, tcp_echo_server, wait_ready

pytestmark = pytest.mark.netns


# ------------------------------------------------------------------------ UDP GSO / GRO


def _gro_receiver(conn: Any) -> None:
    sock = UdpSocket(4, 4500)
    assert enable_gro(sock.sock)
    conn.send("ready")
    while True:
        data, ancillary, _flags, _addr = sock.sock.recvmsg(65535, GRO_ANCILLARY)
        conn.send((data, gro_segment_size(ancillary)))


def test_udp_segment_send_arrives_gro_coalesced(pair) -> None:
    a, b = pair
    rx = wait_ready(b.spawn(_gro_receiver))
    datagrams = [os.urandom(1200) for _ in range(20)] + [os.urandom(500)]

    def send() -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            return send_segments(sock, datagrams, 1200, ("198.51.100.2", 4500))
        finally:
            sock.close()

    assert a.call(send) == sum(map(len, datagrams))  # one sendmsg
    reads = messages(rx.conn, 2.0)
    # the 21 datagrams cross the veth as one buffer and come out of one read with their size
    assert [(len(d), size) for d, size in reads] == [(20 * 1200 + 500, 1200)]
    data = reads[0][0]
    assert [data[i : i + 1200] for i in range(0, len(data), 1200)] == datagrams


# ------------------------------------------------------------------------ TUN offloads


def _tun_info() -> tuple[bool, bool, int, str]:
    plain = LinuxTun(TunConfig(name="plain0"))
    vnet = LinuxTun(TunConfig(name="vnet0", vnet_hdr=True, offload=OFFLOAD_TSO))
    with IPRoute() as ipr:
        qlen = str(ipr.get_links(ifname="vnet0")[0].get_attr("IFLA_TXQLEN"))
    return (
        has_vnet_header(plain.fileno()),
        has_vnet_header(vnet.fileno()),
        tun_flags(vnet.fileno()),
        qlen,
    )


def test_tun_vnet_header_and_queue(pair) -> None:
    a, _b = pair
    plain, vnet, flags, qlen = a.call(_tun_info)
    assert (plain, vnet) == (False, True)
    assert flags & 0x0001 and flags & 0x1000  # IFF_TUN, IFF_NO_PI
    assert qlen == "2048"
    with pytest.raises(ValueError):
        TunConfig(offload=OFFLOAD_TSO)  # offloads need the header


BRIDGE_ADDRESSES = {4: ("198.51.100.1", "198.51.100.2"), 6: ("2001:db8::1", "2001:db8::2")}


def _bridge(conn: Any, other_netns: str, merge: bool, version: int = 4) -> None:
    """Two hosts whose only link is this process: a TUN device in each (TSO offered to
    us), packets moved between them. a -> b: super-packets split into segments, then
    either written one by one (b's kernel checks every checksum we computed) or merged
    again into super-packets. Reports what it saw when told to stop."""

    def tun(address: str, peer: str) -> LinuxTun:
        device = LinuxTun(
            TunConfig(
                name="hsbr0",
                mtu=1400,
                vnet_hdr=True,
                offload=OFFLOAD_TSO,
                ipv6=version == 6,
                ipv4_address=ipaddress.IPv4Interface(f"{address}/32") if version == 4 else None,
            )
        )
        if version == 6:
            os.system(f"ip -6 addr add {address}/128 dev hsbr0 nodad")
            os.system(f"ip -6 route add {peer}/128 dev hsbr0")
        else:
            os.system(f"ip route add {peer}/32 dev hsbr0")
        return device

    a_address, b_address = BRIDGE_ADDRESSES[version]
    tun_a = tun(a_address, b_address)
    with entered(other_netns):
        tun_b = tun(b_address, a_address)
    seen = {"super": 0, "segments": 0, "merged_writes": 0, "merged_segments": 0, "plain": 0}
    conn.send("ready")
    fds = {tun_a.fileno(): tun_b.fileno(), tun_b.fileno(): tun_a.fileno()}
    while True:
        ready = select.select([*fds, conn], [], [])[0]
        if conn in ready:
            conn.recv()
            conn.send(seen)
            return
        for fd in ready:
            if fd not in fds:
                continue
            data = os.read(fd, 65535 + VNET_HDR_LEN)
            header = VnetHeader.unpack(data)
            packet = data[VNET_HDR_LEN:]
            if header.gso_type & 0x7F in (VNET_GSO_TCPV4, VNET_GSO_TCPV6):
                segments = segment_tcp(packet, header.gso_size)
                seen["super"] += 1
                seen["segments"] += len(segments)
            elif header.flags & VNET_F_NEEDS_CSUM:
                segments = segment_tcp(packet, 65535)  # completes the TCP checksum
            else:
                segments = [packet]
            out = fds[fd]
            if not merge:
                for segment in segments:
                    os.writev(out, (PLAIN_VNET_HDR, segment))
                    seen["plain"] += 1
                continue
            for run in coalesce_tcp(segments):
                size, hlen, start, parts = run
                if size:
                    os.writev(out, [tcp_gso_header(size, hlen, start, run.ipv6), *parts])
                    seen["merged_writes"] += 1
                    seen["merged_segments"] += len(parts) - 1
                else:
                    os.writev(out, (PLAIN_VNET_HDR, parts[0]))
                    seen["plain"] += 1


@pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("merge", [False, True], ids=["segments", "merged"])
def test_tso_split_and_gso_merge_carry_tcp_byte_exact(lab, merge: bool, version: int) -> None:
    a, b = lab.add_host("a", ipv6=version == 6), lab.add_host("b", ipv6=version == 6)
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    wait_ready(b.spawn(tcp_echo_server, 23, family))
    bridge = wait_ready(a.spawn(_bridge, b.netns, merge, version))
    data = os.urandom(4_000_000)
    server = BRIDGE_ADDRESSES[version][1]
    assert a.call(echo_roundtrip, server, 23, data, timeout=60) == data
    assert bridge.conn is not None
    bridge.conn.send("stop")
    seen = bridge.conn.recv()
    assert seen["super"] > 10, seen  # the kernel did hand out super-packets
    assert seen["segments"] > 2 * seen["super"], seen
    if merge:
        assert seen["merged_writes"] > 10 and seen["merged_segments"] > 2 * seen["merged_writes"]
    # With merge=False every segment went in alone: the receiving kernel checked every
    # TCP checksum segment_tcp computed (a wrong one would stall the transfer).
    for host in (a, b):
        netstat = host.run(["nstat", "-az", "TcpInCsumErrors"]).stdout
        assert " 0 " in netstat.split("TcpInCsumErrors", 1)[1][:40], netstat


# ------------------------------------------------------------------------ the agent


_POLICY = """\
[[peer]]
name = "{peer}"
address = "{address}"
encapsulation = "{encapsulation}"

[[flow]]
name = "bulk"
peer = "{peer}"
protocol = "tcp"
{port}
protection = "esp"
mode = "{mode}"
keying = "manual"
manual_keys = "../secrets/bulk.keys"
"""

_KEYS = """\
[[sa]]
src = "{a}"
dst = "{b}"
spi = 0x3001
protocol = "esp"
proposal = "aes128gcm16"
encryption_key = "{k1}"

[[sa]]
src = "{b}"
dst = "{a}"
spi = 0x3002
protocol = "esp"
proposal = "aes128gcm16"
encryption_key = "{k2}"
"""


@pytest.mark.parametrize(
    ("mode", "encapsulation", "wire_datagrams"),
    [("tunnel", "force", False), ("tunnel", "force", True), ("transport", "auto", True)],
    ids=["tunnel-udp-veth-passes-runs", "tunnel-udp-wire-datagrams", "transport-raw"],
)
def test_agent_data_path_batches_and_carries_bytes_exactly(
    mode: str, encapsulation: str, wire_datagrams: bool
) -> None:
    with AgentLab(prefix="hsof", wire_datagrams=wire_datagrams) as lab:
        a, b = lab.address("a"), lab.address("b")
        keys = _KEYS.format(a=a, b=b, k1=os.urandom(20).hex(), k2=os.urandom(20).hex())
        sides = {"a": ("b", b, "remote_port = 23"), "b": ("a", a, "local_port = 23")}
        for name, (peer, address, port) in sides.items():
            lab.write_secret(name, "bulk.keys", keys)
            lab.write_policy(
                name,
                _POLICY.format(
                    peer=peer, address=address, port=port, mode=mode, encapsulation=encapsulation
                ),
            )
        lab.start_agents()
        lab.serve_echo("b", 23)
        cap = lab.capture("b")
        result = lab.echo("a", b, 23, 8_000_000, timeout=120, label="offload")
        assert result.get("ok"), result
        frames = cap.stop()
        assert not [f for f in frames if f.uses_port(6, 23)], "cleartext tcp/23 on the wire"
        esp = [f for f in frames if f.is_esp]
        assert all((f.protocol == 17) == (encapsulation == "force") for f in esp)
        if wire_datagrams:  # what a NIC puts on the wire: one ESP packet per frame
            assert max(len(f.packet) for f in esp) <= 1500
            assert len(esp) > 1000  # (tcpdump may drop some at this rate)

        status_a, status_b = lab.status("a"), lab.status("b")
        for status in (status_a, status_b):
            assert not any(status["drops"].values()), status["drops"]
            assert not status["send_errors"], status["send_errors"]
            [flow] = status["flows"]
            for sa in flow["sas"]:
                assert not sa["drops"], sa
        out_a = status_a["datapath_io"]["out"]
        in_b = status_b["datapath_io"]["in"]
        # b wrote the bulk of a's segments into its TUN as super-packets
        assert in_b["tun_merged_packets"] > 1000, in_b
        assert in_b["tun_writes"] < 0.5 * in_b["tun_merged_packets"], in_b
        if encapsulation == "force":
            # a sent runs with UDP_SEGMENT...
            assert out_a["udp_datagrams"] > 3 * out_a["udp_sends"], out_a
            if not wire_datagrams:  # ...which b read GRO-coalesced
                assert in_b["udp_gro_datagrams"] > 1000, in_b
                assert in_b["udp_reads"] < 0.5 * in_b["udp_gro_datagrams"], in_b
        else:
            assert out_a["raw_sends"] > 5000 and in_b["raw_reads"] > 5000
