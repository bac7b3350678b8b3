"""Raw ESP/AH and UDP/4500 sockets between two namespaces."""

from __future__ import annotations

import errno
import socket

import pytest

from hostsec.platform.linux.routing import BYPASS_MARK
from hostsec.platform.linux.sockets import RawReceiver, RawSender, UdpSocket
from hostsec.wire.udpencap import Datagram, classify
from tests.netns.helpers import ip_packet, messages, wait_ready

pytestmark = pytest.mark.netns

ESP_BODY = (0x1234).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"opaque ciphertext"
AH_BODY = bytes([6, 4, 0, 0]) + (0x4321).to_bytes(4, "big") + (7).to_bytes(4, "big") + b"i" * 12


def _receive(conn, kind: str, version: int, count: int = 1) -> None:
    if kind == "udp":
        sock: RawReceiver | UdpSocket = UdpSocket(version, 4500)
    else:
        sock = RawReceiver(50 if kind == "esp" else 51, version)
    sock.sock.settimeout(5)
    conn.send("ready")
    for _ in range(count):
        got = sock.recv()
        conn.send(got)


def _send(packets: list[bytes], version: int) -> list[int]:
    sender = RawSender(version)
    try:
        return [sender.send(p) for p in packets]
    finally:
        sender.close()


@pytest.mark.parametrize("kind", ["esp", "ah"])
def test_raw_ipv4_both_ways_with_the_header(pair, kind: str) -> None:
    a, b = pair
    rx = wait_ready(b.spawn(_receive, kind, 4))
    body = ESP_BODY if kind == "esp" else AH_BODY
    packet = ip_packet("198.51.100.1", "198.51.100.2", 50 if kind == "esp" else 51, body)
    assert a.call(_send, [packet], 4) == [len(packet)]
    got = messages(rx.conn, 2.0)[0]
    assert str(got.src) == "198.51.100.1" and str(got.dst) == "198.51.100.2"
    assert not got.rebuilt_header
    # Linux hands the IPv4 header over as sent (tot_len in network order); only TTL
    # and checksum are ours to have set, so the packet is the one we built.
    assert got.packet == packet


@pytest.mark.parametrize("kind", ["esp", "ah"])
def test_raw_ipv6_header_is_rebuilt(pair, kind: str) -> None:
    a, b = pair
    rx = wait_ready(b.spawn(_receive, kind, 6))
    body = ESP_BODY if kind == "esp" else AH_BODY
    packet = ip_packet("2001:db8::1", "2001:db8::2", 50 if kind == "esp" else 51, body)
    a.call(_send, [packet], 6)
    got = messages(rx.conn, 2.0)[0]
    assert got.rebuilt_header and str(got.dst) == "2001:db8::2"
    assert got.packet == packet  # same addresses, next header, payload length, hop limit 64


def _receive_v6(conn) -> None:
    sock = RawReceiver(50, 6)
    sock.sock.settimeout(5)
    conn.send("ready")
    conn.send(sock.recv_v6())


def test_raw_ipv6_esp_for_the_data_path(pair) -> None:
    """recv_v6: the ESP payload as sent, the addresses packed and the hop limit as it
    arrived, with no header built (what the inbound worker hands to decapsulate)."""
    a, b = pair
    rx = wait_ready(b.spawn(_receive_v6))
    packet = ip_packet("2001:db8::1", "2001:db8::2", 50, ESP_BODY)
    packet = packet[:7] + bytes([33]) + packet[8:]  # hop limit 33
    a.call(_send, [packet], 6)
    esp, src, dst, hop_limit = messages(rx.conn, 2.0)[0]
    assert esp == ESP_BODY
    assert src == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert dst == socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    assert hop_limit == 33


def test_a_raw_esp_socket_silences_protocol_unreachable(pair) -> None:
    a, b = pair
    packet = ip_packet("198.51.100.1", "198.51.100.2", 50, ESP_BODY)
    cap = a.capture("tob")
    a.call(_send, [packet], 4)  # nobody listens: the kernel has no ESP
    rx = wait_ready(b.spawn(_receive, "esp", 4))
    a.call(_send, [packet], 4)
    assert messages(rx.conn, 2.0)
    frames = cap.stop()
    unreachable = [f for f in frames if f.protocol == 1 and f.payload[:2] == b"\x03\x02"]
    assert len([f for f in frames if f.is_esp]) == 2
    assert len(unreachable) == 1  # for the first packet only


def test_udp_4500_carries_esp_ike_and_keepalives(pair) -> None:
    a, b = pair
    rx = wait_ready(b.spawn(_receive, "udp", 4, 3))

    def send() -> int:
        s = UdpSocket(4, 4500)
        s.send(ESP_BODY, "198.51.100.2", 4500)
        s.send(b"\x00\x00\x00\x00" + b"IKE message", "198.51.100.2", 4500)
        s.send(b"\xff", "198.51.100.2", 4500)
        mark = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)
        s.close()
        return int(mark)

    assert a.call(send) == BYPASS_MARK
    got = messages(rx.conn, 2.0)
    assert [classify(d.payload) for d in got] == [Datagram.ESP, Datagram.IKE, Datagram.KEEPALIVE]
    assert all(str(d.src) == "198.51.100.1" and d.sport == 4500 for d in got)
    assert all(str(d.dst) == "198.51.100.2" and d.dport == 4500 for d in got)  # IP_PKTINFO


def test_udp_ipv6(pair) -> None:
    a, b = pair
    rx = wait_ready(b.spawn(_receive, "udp", 6))

    def send() -> None:
        UdpSocket(6, 4500).send(ESP_BODY, "2001:db8::2", 4500)

    a.call(send)
    got = messages(rx.conn, 2.0)[0]
    assert got.payload == ESP_BODY
    assert (str(got.src), str(got.dst)) == ("2001:db8::1", "2001:db8::2")


def test_oversized_raw_packets_fail_instead_of_fragmenting(lab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.connect(a, b, ipv6=True, mtu=1400)

    def send_big(version: int) -> str:
        src, dst = (
            ("198.51.100.1", "198.51.100.2") if version == 4 else ("2001:db8::1", "2001:db8::2")
        )
        sender = RawSender(version)
        assert sender.send(ip_packet(src, dst, 50, ESP_BODY + b"x" * (1400 - 60 - len(ESP_BODY))))
        try:
            sender.send(ip_packet(src, dst, 50, b"x" * 1400))
        except OSError as exc:
            return errno.errorcode[exc.errno or 0]
        return "sent"

    assert a.call(send_big, 4) == "EMSGSIZE"
    assert a.call(send_big, 6) == "EMSGSIZE"


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        RawReceiver(17)
