"""Policy routing: exactly the protected flow enters the TUN, fail closed without the agent,
leftovers of a crashed run are replaced, a clean stop leaves nothing."""

from __future__ import annotations

import ipaddress
import re
import signal
import socket
import time
from typing import Any

import pytest

from hostsec.platform.api import FlowMatch, PortRange
from hostsec.platform.linux import sysctl
from hostsec.platform.linux.routing import (
    BYPASS_MARK,
    LinuxPolicyRouter,
    RoutingConfig,
    RuleMismatch,
)
from hostsec.platform.netns import Host
from tests.netns.helpers import (
    addresses,
    collect,
    ip_packet,
    tcp_echo_server,
    tcp_ports,
    try_connect,
    tun_holder,
    udp_packet,
    udp_receiver,
    wait_ready,
)

pytestmark = pytest.mark.netns

TELNET_CLIENT = FlowMatch.to_host("telnet-to-b", "198.51.100.2", 6, remote_port=23)
TELNET_SERVER = FlowMatch.to_host("telnet-from-a", "198.51.100.1", 6, local_port=23)
A4 = ipaddress.ip_address("198.51.100.1")
B4 = ipaddress.ip_address("198.51.100.2")


def _router(host: Host, **kw: Any) -> LinuxPolicyRouter:
    with host.entered():
        return LinuxPolicyRouter(RoutingConfig(**kw))


def _ip(host: Host, *args: str) -> str:
    return host.run(["ip", *args]).stdout


def _servers(b: Host, *ports: int, family: int = socket.AF_INET) -> None:
    for port in ports:
        wait_ready(b.spawn(tcp_echo_server, port, family))


def test_client_rule_catches_exactly_tcp_23_to_the_peer(pair) -> None:
    a, b = pair
    _servers(b, 23, 80)
    holder = a.spawn(tun_holder)
    wait_ready(holder)
    with _router(a) as router:
        router.start()
        table = router.add_flow(TELNET_CLIENT, A4)
        # What iproute2 shows: exactly the rule DESIGN.md 6 asks for, and the table.
        rules = _ip(a, "rule", "show")
        assert re.search(
            rf"1000:\s+from all to 198\.51\.100\.2 fwmark 0/0x1000000 ipproto tcp dport 23 "
            rf"lookup {table} proto 104",
            rules,
        ), rules
        routes = _ip(a, "route", "show", "table", str(table))
        assert "default dev hostsec0 proto 104 src 198.51.100.1 metric 1" in routes
        assert "blackhole default proto 104 metric 4294967295" in routes

        cap = b.capture("toa")
        assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "timeout"  # into the TUN
        assert a.call(try_connect, "198.51.100.2", 80) == "connected"  # in the clear
        assert a.call(try_connect, "198.51.100.2", 23, 5.0, BYPASS_MARK) == "connected"
        frames = cap.stop()
        seen = collect(holder.conn, 0.5)

    syns = [p for p in seen if tcp_ports(p) and tcp_ports(p)[1] == 23]
    assert syns, "the SYN to port 23 must have entered the TUN"
    assert all(addresses(p) == ("198.51.100.1", "198.51.100.2") for p in syns)  # real source
    assert not [p for p in seen if tcp_ports(p) and tcp_ports(p)[1] == 80]
    # On the wire: port 80 in the clear, port 23 only from the marked (bypass) socket.
    assert any(f.uses_port(6, 80) for f in frames)
    wire_ports = {f.sport for f in frames if f.protocol == 6 and f.dport == 23}
    tun_ports = {tcp_ports(p)[0] for p in syns}
    assert len(wire_ports) == 1  # the marked connection's, and nothing else
    assert not wire_ports & tun_ports


def test_server_rule_sends_replies_from_port_23_into_the_tun(pair) -> None:
    a, b = pair
    _servers(b, 23, 80)
    holder = b.spawn(tun_holder)
    wait_ready(holder)
    with _router(b) as router:
        router.start()
        router.add_flow(TELNET_SERVER, B4)
        assert "ipproto tcp sport 23 lookup" in _ip(b, "rule", "show")
        cap = a.capture("tob")
        assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "timeout"
        assert a.call(try_connect, "198.51.100.2", 80) == "connected"
        frames = cap.stop()
        seen = collect(holder.conn, 0.5)
    synacks = [p for p in seen if tcp_ports(p) and tcp_ports(p)[0] == 23]
    assert synacks and all(tcp_ports(p)[2] & 0x12 == 0x12 for p in synacks)  # SYN+ACK
    assert not [f for f in frames if f.sport == 23 and f.protocol == 6]  # none on the wire
    assert [f for f in frames if f.dport == 23]  # the cleartext SYN itself did go out
    assert any(f.uses_port(6, 80) for f in frames)


def test_ipv6_flow(pair) -> None:
    a, b = pair
    _servers(b, 23, 80, family=socket.AF_INET6)
    holder = a.spawn(tun_holder, "hostsec0", 1400, True)
    wait_ready(holder)
    flow = FlowMatch.to_host("telnet6", "2001:db8::2", 6, remote_port=23)
    with _router(a) as router:
        router.start()
        table = router.add_flow(flow, ipaddress.ip_address("2001:db8::1"), mtu=1300)
        assert "to 2001:db8::2 fwmark 0/0x1000000 ipproto tcp dport 23" in _ip(a, "-6", "rule")
        routes = _ip(a, "-6", "route", "show", "table", str(table))
        assert "default dev hostsec0 proto 104 src 2001:db8::1 metric 1 mtu 1300" in routes
        assert "blackhole default dev lo proto 104 metric 4294967295" in routes
        assert a.call(try_connect, "2001:db8::2", 23, 1.0) == "timeout"
        assert a.call(try_connect, "2001:db8::2", 80) == "connected"
        seen = collect(holder.conn, 0.5)
        router.stop()
        assert router.installed() == ([], [])
        assert not _ip(a, "-6", "route", "show", "table", str(table)).strip()
    syns = [p for p in seen if p[0] >> 4 == 6 and tcp_ports(p) and tcp_ports(p)[1] == 23]
    assert syns and addresses(syns[0]) == ("2001:db8::1", "2001:db8::2")


def test_misspelled_keywords_are_caught(pair) -> None:
    """The pyroute2 pitfall: dport= instead of dport_range= gives a rule for every port.
    The router reads the rule back, refuses it and removes everything it added."""
    a, _ = pair

    class Sloppy(LinuxPolicyRouter):
        def _rule_request(self, inst: Any) -> dict[str, Any]:
            request = super()._rule_request(inst)
            request["dport"] = request.pop("dport_range")
            return request

    with a.entered():
        router = Sloppy()
    with router:
        with pytest.raises(RuleMismatch, match="dport_range"):
            router.add_flow(TELNET_CLIENT, A4)
        assert router.installed() == ([], [])
        assert router.flows() == {}
    assert "lookup 1752" not in _ip(a, "rule")
    # The same, with the check deferred and made for many flows at once.
    with a.entered():
        router = Sloppy()
    with router:
        router.add_flow(TELNET_CLIENT, A4, verify=False)
        problems = router.verify([TELNET_CLIENT.name, "unknown"])
        assert (
            list(problems) == [TELNET_CLIENT.name] and "dport_range" in problems[TELNET_CLIENT.name]
        )


def test_verify_reads_every_flow_back_at_once(pair) -> None:
    a, _ = pair
    flows = [FlowMatch.to_host(f"f{i}", "198.51.100.2", 6, remote_port=1000 + i) for i in range(40)]
    with a.entered():
        router = LinuxPolicyRouter()
    with router:
        for flow in flows:
            router.add_flow(flow, A4, verify=False)
        assert router.verify([f.name for f in flows]) == {}
        # A rule deleted behind the router's back is reported.
        table = router.flows()["f3"]
        a.run(["ip", "rule", "del", "table", str(table)])
        assert list(router.verify([f.name for f in flows])) == ["f3"]


def test_blackhole_keeps_the_flow_dropped_after_sigkill(pair) -> None:
    a, b = pair
    _servers(b, 23, 80)
    holder = a.spawn(tun_holder)
    wait_ready(holder)
    with _router(a) as router:
        router.start()
        table = router.add_flow(TELNET_CLIENT, A4)
        cap = b.capture("toa")
        holder.kill(signal.SIGKILL)
        holder.wait(5)
        deadline = time.monotonic() + 5
        while "hostsec0" in _ip(a, "link") and time.monotonic() < deadline:
            time.sleep(0.05)
        routes = _ip(a, "route", "show", "table", str(table))
        assert "hostsec0" not in routes and "blackhole default" in routes
        # Dropped locally: the connect fails at once, nothing reaches the wire.
        assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "EINVAL"
        assert a.call(try_connect, "198.51.100.2", 80) == "connected"
        frames = cap.stop()
        assert not [f for f in frames if f.uses_port(6, 23)]
        assert any(f.uses_port(6, 80) for f in frames)

        # The agent comes back: a new TUN, attach(), and the flow enters the TUN again.
        holder2 = a.spawn(tun_holder)
        wait_ready(holder2)
        router.attach()
        assert "default dev hostsec0" in _ip(a, "route", "show", "table", str(table))
        assert a.call(try_connect, "198.51.100.2", 23, 0.5) == "timeout"
        assert [p for p in collect(holder2.conn, 0.5) if tcp_ports(p) and tcp_ports(p)[1] == 23]


def test_flow_added_before_the_tun_exists_is_dropped_not_clear(pair) -> None:
    a, b = pair
    _servers(b, 23)
    with _router(a) as router:
        router.start()
        table = router.add_flow(TELNET_CLIENT, A4)
        assert "hostsec0" not in _ip(a, "route", "show", "table", str(table))
        assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "EINVAL"
        router.stop()


def test_restart_after_crash_replaces_leftovers_make_before_break(pair) -> None:
    a, b = pair
    _servers(b, 23)
    holder = a.spawn(tun_holder)
    wait_ready(holder)
    # Something of the administrator's that must survive everything below.
    with a.iproute() as ipr:
        ipr.route("add", dst="203.0.113.0/24", type="unreachable", table=100)
        ipr.rule("add", table=100, priority=500, dst="203.0.113.0", dst_len=24)
    old = _router(a)
    old.start()
    old.add_flow(TELNET_CLIENT, A4)
    old.add_flow(FlowMatch.to_host("smtp", "198.51.100.2", 6, remote_port=25), A4)
    old.close()  # the agent "crashed": nothing removed

    with _router(a) as new:
        new.start()
        rules_before, _ = new.installed()
        assert len(rules_before) == 2
        # While the leftovers are still there, the flow stays inside (fail closed).
        new.add_flow(TELNET_CLIENT, A4)
        assert a.call(try_connect, "198.51.100.2", 23, 0.5) == "timeout"
        new.drop_leftovers()
        rules, routes = new.installed()
        assert [r["dport_range"] for r in rules] == ["23:23"]
        assert len(routes) == 2  # TUN route and blackhole of the one table
        assert a.call(try_connect, "198.51.100.2", 23, 0.5) == "timeout"
        assert [p for p in collect(holder.conn, 0.5) if tcp_ports(p) and tcp_ports(p)[1] == 23]
        new.stop()
        assert new.installed() == ([], [])
    assert "500:\tfrom all to 203.0.113.0/24 lookup 100" in _ip(a, "rule")
    assert "unreachable 203.0.113.0/24" in _ip(a, "route", "show", "table", "100")
    assert "lookup 1752" not in _ip(a, "rule") and "lookup 1752" not in _ip(a, "-6", "rule")


def test_purge_and_instances_do_not_touch_each_other(pair) -> None:
    a, _ = pair
    other = _router(a, table_base=0x6873_1000, table_span=16, priority=1001, protocol=0x69)
    mine = _router(a)
    other.start()
    other.add_flow(TELNET_CLIENT, A4)
    mine.start()
    mine.add_flow(FlowMatch.to_host("web", "198.51.100.2", 6, remote_port=80), A4)
    mine.purge()
    assert mine.installed() == ([], [])
    assert len(other.installed()[0]) == 1
    other.stop()
    other.close()
    mine.close()


def test_decrypted_packets_pass_strict_rp_filter(pair) -> None:
    """A packet the agent writes into the TUN (source: the peer) is delivered with
    all.rp_filter=1: its reverse lookup matches the flow's own rule (ports swapped)."""
    a, _ = pair
    a.sysctl("net/ipv4/conf/all/rp_filter", 1)
    a.sysctl("net/ipv4/conf/default/rp_filter", 1)
    holder = a.spawn(tun_holder)
    wait_ready(holder)
    assert a.sysctl("net/ipv4/conf/hostsec0/rp_filter") == "0"
    with _router(a) as router:
        router.start()
        flow = FlowMatch("dns-ish", ipaddress.ip_network("198.51.100.2/32"), 17,
                         local_ports=PortRange(7000), remote_ports=PortRange(5000))  # fmt: skip
        router.add_flow(flow, A4)
        got = {}
        for port in (7000, 7001):
            receiver = a.spawn(udp_receiver, port)
            wait_ready(receiver)
            holder.conn.send(udp_packet("198.51.100.2", "198.51.100.1", 5000, port, b"hi"))
            got[port] = receiver.conn.poll(1.5)
        assert got == {7000: True, 7001: False}  # 7001: outside the rules, strict drops it
        with a.entered():
            assert sysctl.effective_rp_filter("hostsec0") == 1
        # Loose mode on the TUN alone does not help: Linux drops on address-less devices.
        a.sysctl("net/ipv4/conf/hostsec0/rp_filter", 2)
        receiver = a.spawn(udp_receiver, 7003)
        wait_ready(receiver)
        holder.conn.send(udp_packet("198.51.100.2", "198.51.100.1", 5000, 7003, b"hi"))
        assert not receiver.conn.poll(1.0)
        # With an IPv4 address on the TUN, loose mode lets other packets through too.
        with a.iproute() as ipr:
            idx = ipr.link_lookup(ifname="hostsec0")[0]
            ipr.addr("add", index=idx, address="198.51.100.250", prefixlen=32)
        receiver = a.spawn(udp_receiver, 7002)
        wait_ready(receiver)
        holder.conn.send(udp_packet("198.51.100.2", "198.51.100.1", 5000, 7002, b"hi"))
        assert receiver.conn.poll(1.5)
        router.stop()


def test_flow_of_every_protocol_lets_marked_esp_out(pair) -> None:
    """A flow of every protocol to the peer: everything enters the TUN except the
    agent's own (marked) packets: ESP from a marked raw socket reaches the wire."""
    from hostsec.platform.linux.sockets import RawReceiver, RawSender

    a, b = pair
    holder = a.spawn(tun_holder)
    wait_ready(holder)

    def receive(conn) -> None:
        r = RawReceiver(50)
        conn.send("ready")
        conn.send(r.recv().packet)

    esp_rx = b.spawn(receive)
    wait_ready(esp_rx)
    with _router(a) as router:
        router.start()
        router.add_flow(FlowMatch.to_host("all", "198.51.100.2"), A4)
        assert "to 198.51.100.2 fwmark 0/0x1000000 lookup" in _ip(a, "rule")
        assert a.call(try_connect, "198.51.100.2", 80, 0.5) == "timeout"
        esp = ip_packet("198.51.100.1", "198.51.100.2", 50, b"\0\0\x10\0\0\0\0\x01ciphertext")

        def send() -> None:
            s = RawSender(4)
            s.send(esp)

        a.call(send)
        assert esp_rx.conn.poll(3)
        assert esp_rx.conn.recv().endswith(b"ciphertext")
        seen = collect(holder.conn, 0.3)
    assert [p for p in seen if tcp_ports(p) and tcp_ports(p)[1] == 80]
    assert not [p for p in seen if p[9] == 50]
