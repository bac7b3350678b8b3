"""The TUN device: name, MTU, up, no IPv6 chatter, loose rp_filter, packets both ways."""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import time

import pytest
import pytun

from hostsec.platform.linux import sysctl
from hostsec.platform.linux.tun import LinuxTun, TunConfig
from tests.netns.helpers import addresses, udp_packet, udp_receiver, wait_ready

pytestmark = pytest.mark.netns


def _describe(name: str) -> dict[str, object]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        link = ipr.get_links(ifname=name)[0]
        addrs = [a.get("IFA_ADDRESS") for a in ipr.get_addr(index=link["index"])]
    return {
        "mtu": link.get("IFLA_MTU"),
        "up": bool(link["flags"] & 1),
        "addresses": addrs,
        "rp_filter": sysctl.read_sysctl(f"net/ipv4/conf/{name}/rp_filter"),
        "effective": sysctl.effective_rp_filter(name),
        "disable_ipv6": sysctl.read_sysctl(f"net/ipv6/conf/{name}/disable_ipv6"),
    }


def _open_and_listen(
    config: TunConfig | None, seconds: float
) -> tuple[dict[str, object], list[bytes]]:
    """Open a TUN (ours, or with config None a bare pytun one), list what arrives unasked."""
    sysctl.write_sysctl("net/ipv4/conf/all/rp_filter", 1)
    if config is None:
        dev = pytun.TunTapDevice(name="hostsec0", flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        dev.mtu = 1400
        dev.up()
        fd, name = dev.fileno(), dev.name
    else:
        tun = LinuxTun(config)
        fd, name = tun.fileno(), tun.name
    info = _describe(name)
    seen = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            seen.append(os.read(fd, 65535))
    return info, seen


def test_tun_is_configured_and_silent(lab) -> None:
    a, b, c = lab.add_host("a"), lab.add_host("b"), lab.add_host("c")
    # Three TUNs side by side, 3 s each: ours without IPv6, ours with quiet IPv6, and a bare
    # pytun device as the control that shows the chatter being suppressed.
    plain = a.spawn(lambda conn: conn.send(_open_and_listen(TunConfig(mtu=1380), 3.0)))
    addressed = TunConfig(ipv4_address=ipaddress.ip_interface("198.51.100.250/32"))
    with_address = lab.add_host("d").spawn(lambda conn: conn.send(_open_and_listen(addressed, 0)))
    quiet = b.spawn(lambda conn: conn.send(_open_and_listen(TunConfig(mtu=1400, ipv6=True), 3.0)))
    bare = c.spawn(lambda conn: conn.send(_open_and_listen(None, 3.0)))
    (info, seen), (info6, seen6), (_, seen_bare) = (
        plain.conn.recv(),
        quiet.conn.recv(),
        bare.conn.recv(),
    )
    assert info["mtu"] == 1380 and info["up"]
    assert info["addresses"] == []  # no IPv4, no IPv6 link-local
    assert info["disable_ipv6"] == "1"
    # all.rp_filter is 1: without an address the TUN keeps 0 (loose would drop all),
    info_addr, _ = with_address.conn.recv()
    assert info["rp_filter"] == "0" and info["effective"] == 1
    # with one it gets loose, and loose is what the kernel then applies.
    assert info_addr["addresses"] == ["198.51.100.250"]
    assert info_addr["rp_filter"] == "2" and info_addr["effective"] == 2
    assert seen == []
    assert info6["disable_ipv6"] == "0" and info6["addresses"] == []
    assert seen6 == []
    assert any(p[0] >> 4 == 6 for p in seen_bare), "control: a bare TUN does chatter"


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        TunConfig(name="x" * 16)
    with pytest.raises(ValueError):
        TunConfig(mtu=1279, ipv6=True)
    with pytest.raises(ValueError):
        TunConfig(mtu=100)


def _route_test_net_via_tun(conn, name: str) -> None:
    """Hold a TUN with 203.0.113.0/24 routed through it; report packets, write what comes."""
    from pyroute2 import IPRoute

    tun = LinuxTun(TunConfig(name=name))
    with IPRoute() as ipr:
        ipr.route("add", dst="203.0.113.0/24", oif=ipr.link_lookup(ifname=name)[0])
    conn.send("ready")
    while True:
        ready = select.select([tun, conn], [], [], 1.0)[0]
        if tun in ready:
            conn.send(tun.read())
        if conn in ready:
            tun.write(conn.recv())


def test_packets_both_ways(lab) -> None:
    a = lab.add_host("a")
    lab.connect(a, lab.add_host("b"))
    holder = a.spawn(_route_test_net_via_tun, "tun7")
    wait_ready(holder)

    def send() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"out through the tun", ("203.0.113.5", 9))

    a.call(send)
    assert holder.conn.poll(5)
    packet = holder.conn.recv()
    assert addresses(packet)[1] == "203.0.113.5"
    assert packet.endswith(b"out through the tun")

    receiver = a.spawn(udp_receiver, 7000)
    wait_ready(receiver)
    holder.conn.send(udp_packet("203.0.113.5", "198.51.100.1", 5000, 7000, b"in through the tun"))
    assert receiver.conn.poll(5)
    assert receiver.conn.recv() == (b"in through the tun", "203.0.113.5")


def test_closing_removes_the_device(lab) -> None:
    a = lab.add_host("a")

    def open_close() -> tuple[bool, bool]:
        tun = LinuxTun(TunConfig(name="hostsec9"))
        present = "hostsec9" in dict((n, i) for i, n in socket.if_nameindex())
        tun.close()
        tun.close()  # twice is harmless
        gone = "hostsec9" not in [n for _, n in socket.if_nameindex()]
        return present, gone

    assert a.call(open_close) == (True, True)
