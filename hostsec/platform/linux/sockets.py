"""The data path's sockets on Linux: raw IP for ESP (50) and AH (51), UDP for ESP-in-UDP
and IKE (RFC 3948).

Sending: one ``IPPROTO_RAW`` socket per address family sends complete IP packets as
:meth:`EspSA.protect` / :meth:`AhSA.protect` build them (the header is part of what AH
authenticates, and transport mode keeps the original header). ``IPPROTO_RAW`` implies
``IP_HDRINCL`` (and ``IPV6_HDRINCL`` since Linux 4.5): the kernel fills in the IPv4
checksum, and the identification when zero, and routes by the destination in the
header; it never fragments such a packet: a packet over the route's MTU fails with
``EMSGSIZE``, so the TUN MTU must leave room for the overhead (:mod:`..mtu`).

Receiving: a raw socket per protocol (``IPPROTO_ESP``, ``IPPROTO_AH``) gets every such
packet delivered to this host. IPv4 raw sockets return the IPv4 header (Linux keeps
``tot_len`` in network order; BSDs do not); IPv6 raw sockets return the payload only,
so :class:`RawReceiver` rebuilds the IPv6 header from ``IPV6_PKTINFO`` (destination)
and ``IPV6_HOPLIMIT`` (AH zeroes the mutable fields anyway; extension headers that
preceded ESP/AH are lost, which only matters for AH over IPv6 with such headers). While
a raw ESP socket is open the kernel, which has no ESP of its own here, no longer
answers ESP with ICMP "protocol unreachable".

UDP: one socket bound to port 4500 carries ESP-in-UDP and IKE (non-ESP marker) and NAT
keepalives; :func:`hostsec.wire.udpencap.classify` tells them apart. The socket does not
set ``UDP_ENCAP``: that would hand ESP to the kernel's XFRM, which is not used.

Every socket is marked (``SO_MARK``) with the routing bypass mark, so that the policy
rules of :mod:`hostsec.platform.linux.routing` never send the agent's own packets into
the TUN.

Batching (PERFORMANCE.md): :func:`send_segments` hands the kernel many ESP-in-UDP
datagrams of one size to one peer in one ``sendmsg`` (``UDP_SEGMENT``, UDP GSO; they stay
one buffer through a veth or a NIC with UDP segmentation offload); :func:`enable_gro` lets
a socket receive such runs coalesced (``UDP_GRO``), :func:`gro_segment_size` reads the
size to split them by. Raw sockets have no such batching.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from hostsec.platform.api import IPAddress
from hostsec.platform.linux.routing import BYPASS_MARK
from hostsec.wire.ip import IPV4_HEADER_LEN, IPv6Header

IPPROTO_ESP = 50
IPPROTO_AH = 51
NAT_T_PORT = 4500
DEFAULT_RCVBUF = 4 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SO_MARK = getattr(socket, "SO_MARK", 36)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_ANCILLARY = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4) + 64
SOL_UDP = 17
UDP_SEGMENT = 103  # <linux/udp.h>
UDP_GRO = 104
#: UDP_MAX_SEGMENTS of Linux before 6.9 (later kernels take 128)
MAX_GSO_SEGMENTS = 64
#: the largest UDP payload of one IPv4 datagram (and so of one GSO send)
MAX_UDP_PAYLOAD = 65535 - 20 - 8
#: ancillary space for UDP_GRO (an int) and IP_PKTINFO / IPV6_PKTINFO
GRO_ANCILLARY = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20) + 32
_U16_NATIVE = struct.Struct("=H")
_INT = struct.Struct("=i")


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _tune(sock: socket.socket, mark: int | None, rcvbuf: int | None, sndbuf: int | None) -> None:
    if mark:
        sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, mark)
    # The *FORCE variants (CAP_NET_ADMIN) go past net.core.rmem_max/wmem_max.
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, sndbuf)


class RawSender:
    """Sends complete IP packets (IPv4 or IPv6, as given) on an ``IPPROTO_RAW`` socket."""

    def __init__(self, version: int = 4, mark: int | None = BYPASS_MARK, sndbuf: int | None = None):
        self.version = version
        self.sock = socket.socket(_family(version), socket.SOCK_RAW, socket.IPPROTO_RAW)
        _tune(self.sock, mark, None, sndbuf)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, packet: bytes) -> int:
        """Send ``packet``; its destination is read from its header."""
        if self.version == 4:
            if len(packet) < IPV4_HEADER_LEN or packet[0] >> 4 != 4:
                raise ValueError("not an IPv4 packet")
            return self.sock.sendto(packet, (socket.inet_ntop(socket.AF_INET, packet[16:20]), 0))
        if len(packet) < 40 or packet[0] >> 4 != 6:
            raise ValueError("not an IPv6 packet")
        return self.sock.sendto(packet, (socket.inet_ntop(socket.AF_INET6, packet[24:40]), 0))

    def send_to(self, packet: bytes, destination: str) -> int:
        """Send ``packet`` whose header names ``destination`` (its text form, which the
        caller caches): the data path's per-packet call, without re-parsing."""
        return self.sock.sendto(packet, (destination, 0))

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True, slots=True)
class RawPacket:
    """A packet from a raw socket, always a complete IP packet (IPv6 header rebuilt)."""

    packet: bytes
    src: IPAddress
    dst: IPAddress | None
    rebuilt_header: bool  # True for IPv6: header made from the socket's metadata


class RawReceiver:
    """Receives every ESP (or AH) packet delivered to this host, for one address family."""

    def __init__(
        self,
        protocol: int = IPPROTO_ESP,
        version: int = 4,
        rcvbuf: int | None = DEFAULT_RCVBUF,
        mark: int | None = BYPASS_MARK,
    ) -> None:
        if protocol not in (IPPROTO_ESP, IPPROTO_AH):
            raise ValueError("raw receivers are for ESP (50) and AH (51)")
        self.protocol = protocol
        self.version = version
        self.sock = socket.socket(_family(version), socket.SOCK_RAW, protocol)
        _tune(self.sock, mark, rcvbuf, None)
        if version == 6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def recv_packet(self, size: int = 65535) -> bytes:
        """Only the complete IP packet of :meth:`recv` (IPv4: straight from the socket)."""
        if self.version == 4:
            return self.sock.recv(size)
        return self.recv(size).packet

    def recv_v6(self, size: int = 65535) -> tuple[bytes, bytes, bytes | None, int]:
        """IPv6 only, for the data path: (the payload after the IPv6 header, the source and
        destination addresses packed, the hop limit), without building address objects or
        a header; the destination is None when the kernel gave no IPV6_PKTINFO."""
        data, ancdata, _flags, addr = self.sock.recvmsg(size, _ANCILLARY)
        src = socket.inet_pton(socket.AF_INET6, addr[0].split("%", 1)[0])
        dst: bytes | None = None
        hop_limit = 64
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(value) >= 16:
                dst = value[:16]
            elif level == socket.IPPROTO_IPV6 and kind == _IPV6_HOPLIMIT and len(value) >= 4:
                hop_limit = _INT.unpack_from(value)[0]
        return data, src, dst, hop_limit

    def recv(self, size: int = 65535) -> RawPacket:
        if self.version == 4:
            data, addr = self.sock.recvfrom(size)
            dst = ipaddress.IPv4Address(data[16:20]) if len(data) >= IPV4_HEADER_LEN else None
            return RawPacket(data, ipaddress.IPv4Address(addr[0]), dst, False)
        data, ancdata, _flags, addr = self.sock.recvmsg(size, _ANCILLARY)
        src = ipaddress.IPv6Address(addr[0].split("%", 1)[0])
        dst6: ipaddress.IPv6Address | None = None
        hop_limit = 64
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(value) >= 16:
                dst6 = ipaddress.IPv6Address(value[:16])
            elif level == socket.IPPROTO_IPV6 and kind == _IPV6_HOPLIMIT and len(value) >= 4:
                hop_limit = struct.unpack("=i", value[:4])[0]
        if dst6 is None:
            return RawPacket(data, src, None, True)
        header = IPv6Header(src.packed, dst6.packed, self.protocol, hop_limit=hop_limit)
        return RawPacket(header.pack(len(data)) + data, src, dst6, True)

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True, slots=True)
class Datagram:
    """A UDP datagram: payload, the peer's address and port, our address and port."""

    payload: bytes
    src: IPAddress
    sport: int
    dst: IPAddress | None
    dport: int


class UdpSocket:
    """A UDP socket bound to ``port`` (4500 for NAT-T, 500 for IKE), reporting the local
    address each datagram was sent to (``IP_PKTINFO`` / ``IPV6_RECVPKTINFO``)."""

    def __init__(
        self,
        version: int = 4,
        port: int = NAT_T_PORT,
        address: str | IPAddress | None = None,
        rcvbuf: int | None = DEFAULT_RCVBUF,
        mark: int | None = BYPASS_MARK,
    ) -> None:
        self.version = version
        # No SO_REUSEADDR: on Linux it lets a second UDP socket take the port over
        # silently; a second agent on the same port must fail (EADDRINUSE) instead.
        self.sock = socket.socket(_family(version), socket.SOCK_DGRAM)
        _tune(self.sock, mark, rcvbuf, None)
        if version == 4:
            self.sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            # NAT-T listens on every local address unless told one (as charon does).
            bind_to = str(address) if address is not None else "0.0.0.0"  # noqa: S104
        else:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            bind_to = str(address) if address is not None else "::"
        self.sock.bind((bind_to, port))
        self.port: int = self.sock.getsockname()[1]

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def recv(self, size: int = 65535) -> Datagram:
        data, ancdata, _flags, addr = self.sock.recvmsg(size, _ANCILLARY)
        dst: IPAddress | None = None
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(value) >= 12:
                dst = ipaddress.IPv4Address(value[8:12])  # struct in_pktinfo: ipi_addr
            elif level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(value) >= 16:
                dst = ipaddress.IPv6Address(value[:16])
        src = ipaddress.ip_address(addr[0].split("%", 1)[0])
        return Datagram(data, src, addr[1], dst, self.port)

    def send(
        self,
        payload: bytes,
        address: str | IPAddress,
        port: int,
        source: IPAddress | None = None,
    ) -> int:
        """Send ``payload`` to ``address``:``port``; from ``source`` when given (a host with
        several addresses must answer from the one the peer talks to: IP_PKTINFO /
        IPV6_PKTINFO on the message, the socket stays bound to the wildcard address)."""
        if source is None or source.is_unspecified:
            return self.sock.sendto(payload, (str(address), port))
        if source.version == 4:
            info = [
                (socket.IPPROTO_IP, _IP_PKTINFO, struct.pack("=I4s4s", 0, source.packed, bytes(4)))
            ]
        else:
            info = [(socket.IPPROTO_IPV6, _IPV6_PKTINFO, struct.pack("=16sI", source.packed, 0))]
        return self.sock.sendmsg([payload], info, 0, (str(address), port))

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------ UDP GSO / GRO (Linux)


def enable_gro(sock: socket.socket) -> bool:
    """Let ``sock`` receive runs of same-size datagrams coalesced (``UDP_GRO``, Linux 5.0);
    False if the kernel does not know it."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gro_segment_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The size of the datagrams a ``UDP_GRO`` read coalesced, 0 if it is one datagram."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
            # an int (Linux puts the u16 gso_size in an int)
            size: int = _INT.unpack(data[:4])[0] if len(data) >= 4 else _U16_NATIVE.unpack(data)[0]
            return size
    return 0


def send_segments(
    sock: socket.socket, buffers: list[bytes], size: int, address: tuple[str, int]
) -> int:
    """Send ``buffers`` to ``address`` as datagrams: each buffer one datagram of ``size``
    octets but the last, which may be shorter, in one ``sendmsg`` (``UDP_SEGMENT``). The
    caller keeps to :data:`MAX_GSO_SEGMENTS` and :data:`MAX_UDP_PAYLOAD`."""
    if len(buffers) == 1:
        return sock.sendto(buffers[0], address)
    return sock.sendmsg(buffers, [(SOL_UDP, UDP_SEGMENT, _U16_NATIVE.pack(size))], 0, address)
