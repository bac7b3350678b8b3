"""Small programs the netns tests run inside hosts (as forked children) and their glue."""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from hostsec.platform.linux.tun import LinuxTun, TunConfig
from hostsec.platform.nsenter import Child
from hostsec.wire.ip import IPPROTO_UDP, IPv4Header, IPv6Header, transport_checksum

# -- the TUN held by a process ------------------------------------------------------------


def tun_holder(
    conn: Connection, name: str = "hostsec0", mtu: int = 1400, ipv6: bool = False
) -> None:
    """Open the TUN, say "ready", then report every packet read and write what is sent."""
    tun = LinuxTun(TunConfig(name=name, mtu=mtu, ipv6=ipv6))
    conn.send("ready")
    while True:
        ready, _, _ = select.select([tun, conn], [], [], 1.0)
        if tun in ready:
            conn.send(("packet", tun.read()))
        if conn in ready:
            msg = conn.recv()
            if msg == "quit":
                tun.close()
                return
            tun.write(msg)


def collect(conn: Connection, seconds: float) -> list[bytes]:
    """Packets a :func:`tun_holder` reported during the next ``seconds``."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if conn.poll(left):
            kind, packet = conn.recv()
            assert kind == "packet"
            out.append(packet)
    return out


# -- TCP and UDP endpoints -------------------------------------------------------------------


def tcp_echo_server(conn: Connection, port: int, family: int = socket.AF_INET) -> None:
    """Accept on ``port`` (all addresses), echo everything back; report accepted peers."""
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    srv.listen(16)
    conn.send("ready")

    def serve(c: socket.socket) -> None:
        with c:
            while data := c.recv(65536):
                c.sendall(data)

    while True:
        c, addr = srv.accept()
        with contextlib.suppress(Exception):
            conn.send(("accepted", addr[0], addr[1]))
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def try_connect(address: str, port: int, timeout: float = 5.0, mark: int | None = None) -> str:
    """ "connected", "timeout", or the errno name of a failed TCP connect. Checks that
    expect "connected" keep the generous default timeout (a loaded CI machine)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    if mark is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    s.settimeout(timeout)
    try:
        s.connect((address, port))
        return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        s.close()


def echo_roundtrip(address: str, port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send ``data`` to a TCP echo server and read the same number of octets back."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((address, port))
        received = bytearray()

        def reader() -> None:
            while len(received) < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        t.join(timeout)
        return bytes(received)


def udp_receiver(conn: Connection, port: int, family: int = socket.AF_INET) -> None:
    """Bind UDP ``port`` and report each datagram as (payload, source address)."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    conn.send("ready")
    while True:
        data, addr = s.recvfrom(65535)
        conn.send((data, addr[0]))


def wait_ready(child: Child, timeout: float = 10.0) -> Child:
    """Wait for a spawned child's "ready"; if it died instead, raise its error."""
    assert child.conn is not None
    if child.conn.poll(timeout):
        try:
            message = child.conn.recv()
        except EOFError:
            child.result(5)  # raises ChildFailed with the child's traceback
            raise
        assert message == "ready", message
        return child
    raise AssertionError("child did not get ready")


def messages(conn: Connection, seconds: float) -> list[Any]:
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if conn.poll(left):
            try:
                out.append(conn.recv())
            except EOFError:  # the child is done (or died: its result tells why)
                break
    return out


# -- packets -------------------------------------------------------------------------------


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 UDP packet with correct checksums."""
    s, d = socket.inet_pton(_af(src), src), socket.inet_pton(_af(dst), dst)
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    csum = transport_checksum(s, d, IPPROTO_UDP, seg) or 0xFFFF
    seg = seg[:6] + struct.pack("!H", csum) + seg[8:]
    if ":" in src:
        return IPv6Header(s, d, IPPROTO_UDP).pack(len(seg)) + seg
    return IPv4Header(s, d, IPPROTO_UDP, identification=1).pack(len(seg)) + seg


def ip_packet(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet of ``protocol`` around ``payload`` (lengths and checksum right)."""
    s, d = socket.inet_pton(_af(src), src), socket.inet_pton(_af(dst), dst)
    if ":" in src:
        return IPv6Header(s, d, protocol).pack(len(payload)) + payload
    return IPv4Header(s, d, protocol, identification=1).pack(len(payload)) + payload


def _af(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def tcp_ports(packet: bytes) -> tuple[int, int, int] | None:
    """(source port, destination port, TCP flags) of an IPv4/IPv6 TCP packet, else None."""
    if packet[0] >> 4 == 4 and packet[9] == 6:
        off = (packet[0] & 0x0F) * 4
    elif packet[0] >> 4 == 6 and packet[6] == 6:
        off = 40
    else:
        return None
    sport, dport = struct.unpack_from("!HH", packet, off)
    return sport, dport, packet[off + 13]


def addresses(packet: bytes) -> tuple[str, str]:
    if packet[0] >> 4 == 4:
        return socket.inet_ntop(socket.AF_INET, packet[12:16]), socket.inet_ntop(
            socket.AF_INET, packet[16:20]
        )
    return socket.inet_ntop(socket.AF_INET6, packet[8:24]), socket.inet_ntop(
        socket.AF_INET6, packet[24:40]
    )
