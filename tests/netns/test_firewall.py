"""nftables enforcement: inbound plaintext of a protected flow is dropped unless it came
out of the TUN; per-flow add/remove, atomic replacement after a crash, clean removal."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from hostsec.platform.api import FlowMatch, PortRange
from hostsec.platform.linux.firewall import FirewallConfig, NftablesFirewall
from hostsec.platform.linux.sockets import RawReceiver, RawSender, UdpSocket
from hostsec.platform.netns import Host
from tests.netns.helpers import (
    ip_packet,
    messages,
    tcp_echo_server,
    try_connect,
    tun_holder,
    udp_packet,
    udp_receiver,
    wait_ready,
)

pytestmark = pytest.mark.netns

SERVER_FLOW = FlowMatch.to_host("telnet-from-a", "198.51.100.1", 6, local_port=23)


def _firewall(host: Host, **kw: object) -> NftablesFirewall:
    fw = NftablesFirewall(FirewallConfig(**kw))  # type: ignore[arg-type]
    with host.entered():
        fw.start()
    return fw


def _nft(host: Host) -> str:
    return host.run(["nft", "list", "ruleset"]).stdout


def test_injected_cleartext_syn_never_reaches_the_server(pair) -> None:
    a, b = pair  # b is the telnet server; a is the peer, sending in the clear
    server = b.spawn(tcp_echo_server, 23)
    wait_ready(server)
    web = b.spawn(tcp_echo_server, 80)
    wait_ready(web)
    fw = _firewall(b)
    with b.entered():
        fw.add_flow(SERVER_FLOW)
    ruleset = _nft(b)
    assert 'iifname != "hostsec0" ip saddr 198.51.100.1 tcp dport 23 counter' in ruleset
    assert 'comment "hostsec flow telnet-from-a"' in ruleset

    cap = b.capture("toa")
    assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "timeout"
    assert a.call(try_connect, "198.51.100.2", 80) == "connected"
    frames = cap.stop()
    assert [f for f in frames if f.dport == 23 and f.src == "198.51.100.1"], "SYN was on the wire"
    assert not [f for f in frames if f.sport == 23]  # never answered
    assert not [m for m in messages(server.conn, 0.2) if m[0] == "accepted"]
    with b.entered():
        assert fw.dropped()["telnet-from-a"] >= 1

    with b.entered():
        fw.remove_flow("telnet-from-a")
    assert a.call(try_connect, "198.51.100.2", 23) == "connected"
    with b.entered():
        fw.stop()
        fw.stop()  # twice is harmless
        assert not fw.exists()
    assert "hostsec" not in _nft(b)


def test_client_side_drops_cleartext_replies_from_port_23(pair) -> None:
    a, b = pair  # a is the client: replies from b's port 23 must come out of the TUN
    server = b.spawn(tcp_echo_server, 23)
    wait_ready(server)
    fw = _firewall(a)
    with a.entered():
        fw.add_flow(FlowMatch.to_host("telnet-to-b", "198.51.100.2", 6, remote_port=23))
    assert "tcp sport 23" in _nft(a)
    assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "timeout"  # SYN-ACK dropped
    with a.entered():
        assert fw.dropped()["telnet-to-b"] >= 1
        fw.stop()


def test_packets_out_of_the_tun_pass(pair) -> None:
    a, b = pair
    holder = a.spawn(tun_holder)
    wait_ready(holder)
    receiver = a.spawn(udp_receiver, 7000)
    wait_ready(receiver)
    flow = FlowMatch("udp7000", ipaddress.ip_network("198.51.100.2/32"), 17, PortRange(7000))
    fw = _firewall(a)
    with a.entered():
        fw.add_flow(flow)

    def send_clear() -> None:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"clear", ("198.51.100.1", 7000))

    b.call(send_clear)
    holder.conn.send(udp_packet("198.51.100.2", "198.51.100.1", 5000, 7000, b"via tun"))
    got = messages(receiver.conn, 1.0)
    assert got == [(b"via tun", "198.51.100.2")]
    with a.entered():
        assert fw.dropped() == {"udp7000": 1}
        fw.stop()


def test_restart_replaces_the_table_atomically(pair) -> None:
    _, b = pair
    old = _firewall(b)
    with b.entered():
        old.add_flow(SERVER_FLOW)
        old.add_flow(FlowMatch.to_host("smtp", "198.51.100.1", 6, local_port=25))
    # Crash: the table stays. A new run starts and keeps it until its first change.
    new = _firewall(b)
    assert "smtp" in _nft(b)
    with b.entered():
        new.add_flow(SERVER_FLOW)
    ruleset = _nft(b)
    assert "telnet-from-a" in ruleset and "smtp" not in ruleset
    assert ruleset.count("table inet hostsec") == 1
    with b.entered():
        new.drop_leftovers()
        new.stop()
    assert "hostsec" not in _nft(b)


def test_instances_have_their_own_tables(pair) -> None:
    _, b = pair
    one, two = _firewall(b), _firewall(b, table="hostsec_2", tun="hostsec2")
    with b.entered():
        one.add_flow(SERVER_FLOW)
        two.add_flow(SERVER_FLOW)
        one.stop()
        assert two.exists() and not one.exists()
        two.stop()
    with pytest.raises(ValueError):
        FirewallConfig(table="bad name;")
    with pytest.raises(ValueError):
        FirewallConfig(tun='x" accept')


def test_every_protocol_flow_spares_esp_ike_and_neighbour_discovery(pair) -> None:
    a, b = pair
    server = b.spawn(tcp_echo_server, 80, socket.AF_INET6)
    wait_ready(server)
    fw = _firewall(b)
    with b.entered():
        fw.add_flow(FlowMatch.to_host("all4", "198.51.100.1"))
        fw.add_flow(FlowMatch.to_host("all6", "2001:db8::1"))

    def esp_and_ike(conn) -> None:
        esp, udp, esp6 = RawReceiver(50, 4), UdpSocket(4, 4500), RawReceiver(50, 6)
        for sock in (esp, udp, esp6):
            sock.sock.settimeout(3)
        conn.send("ready")
        conn.send(("esp4", esp.recv().packet[20:]))
        conn.send(("udp", udp.recv().payload))
        conn.send(("esp6", esp6.recv().packet[40:]))

    rx = b.spawn(esp_and_ike)
    wait_ready(rx)

    def send() -> None:
        RawSender(4).send(ip_packet("198.51.100.1", "198.51.100.2", 50, b"\x00\x00\x10\x00" * 3))
        UdpSocket(4, 4501).send(b"\x00\x00\x00\x00ike", "198.51.100.2", 4500)
        RawSender(6).send(ip_packet("2001:db8::1", "2001:db8::2", 50, b"\x00\x00\x10\x00" * 3))

    a.call(send)
    assert messages(rx.conn, 2.0) == [
        ("esp4", b"\x00\x00\x10\x00" * 3),
        ("udp", b"\x00\x00\x00\x00ike"),
        ("esp6", b"\x00\x00\x10\x00" * 3),
    ]
    # Neighbour discovery still works: flush a's neighbour cache and reach b's port 80?
    # No: TCP is dropped. Ping6 (ICMPv6 echo) is dropped too, but NS/NA must pass, which
    # shows as a resolved (REACHABLE/STALE/DELAY) entry instead of FAILED.
    a.run(["ip", "-6", "neigh", "flush", "all"])
    assert a.call(try_connect, "2001:db8::2", 80, 1.0) == "timeout"
    neigh = a.run(["ip", "-6", "neigh", "show", "2001:db8::2"]).stdout
    assert "lladdr" in neigh, neigh
    assert a.call(try_connect, "198.51.100.2", 80, 0.5) == "timeout"
    with b.entered():
        dropped = fw.dropped()
        fw.stop()
    assert dropped["all6"] >= 1 and dropped["all4"] >= 1


def test_outbound_plaintext_is_dropped_when_the_steering_rule_is_missing(pair) -> None:
    """Defence in depth: with no policy rule sending the flow into the TUN (not installed,
    or flushed by hand), its packets would leave in the clear; the output chain drops
    them. Other ports, and the agent's own marked packets, pass."""
    a, b = pair  # a is the telnet client, without its routing rule
    wait_ready(b.spawn(tcp_echo_server, 23))
    wait_ready(b.spawn(tcp_echo_server, 80))
    fw = _firewall(a)
    client_flow = FlowMatch.to_host("telnet-to-b", "198.51.100.2", 6, remote_port=23)
    with a.entered():
        fw.add_flow(client_flow)
    ruleset = _nft(a)
    assert 'oifname != "hostsec0" ip daddr 198.51.100.2 tcp dport 23 counter' in ruleset
    cap = b.capture("toa")
    assert a.call(try_connect, "198.51.100.2", 23, 1.0) != "connected"
    assert a.call(try_connect, "198.51.100.2", 80) == "connected"
    frames = cap.stop()
    assert not [f for f in frames if f.dport == 23], "plaintext tcp/23 left the client"
    assert [f for f in frames if f.dport == 80]
    # The agent's own packets carry the bypass mark and leave (the reply to this one is
    # plaintext tcp/23 from the peer, which the inbound chain drops: no connection).
    cap = b.capture("toa")
    mark = FirewallConfig().bypass_mark
    a.call(try_connect, "198.51.100.2", 23, 1.0, mark)
    frames = cap.stop()
    assert [f for f in frames if f.dport == 23 and f.src == "198.51.100.1"]
    with a.entered():
        assert fw.dropped()["telnet-to-b"] >= 2  # the SYN out, the SYN-ACK in
        fw.stop()


def test_many_flows_in_one_transaction_and_counts_survive_rewrites(pair) -> None:
    """add_flows writes the table once for many flows; every later rewrite (a flow added
    or removed) keeps what the other flows dropped so far."""
    a, b = pair
    server = b.spawn(tcp_echo_server, 23)
    wait_ready(server)
    fw = _firewall(b)
    others = [
        FlowMatch.to_host(f"other{i}", "198.51.100.1", 6, local_port=2000 + i) for i in range(50)
    ]
    with b.entered():
        fw.add_flows([SERVER_FLOW, *others])
        with pytest.raises(ValueError, match="already enforced"):
            fw.add_flows([FlowMatch.to_host("new", "198.51.100.1", 6, local_port=99), others[0]])
        assert "new" not in fw.dropped()  # all or none
    assert _nft(b).count("hostsec flow other") == 2 * 50  # inbound and outbound rule each
    assert a.call(try_connect, "198.51.100.2", 23, 1.0) == "timeout"
    with b.entered():
        before = fw.dropped()["telnet-from-a"]
        assert before >= 1
        fw.add_flow(FlowMatch.to_host("later", "198.51.100.1", 6, local_port=2222))
        fw.remove_flow("other7")
        after = fw.dropped()
        assert after["telnet-from-a"] == before
        assert "other7" not in after and after["later"] == 0
        fw.stop()
