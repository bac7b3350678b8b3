"""Data-path worker processes: one per direction (PERFORMANCE.md: processes beat threads).

The agent opens the TUN device and the NAT-T UDP sockets, then starts two workers with
those file descriptors and a control channel (a SOCK_SEQPACKET socketpair carrying
pickled :mod:`hostsec.agent.messages`). The outbound worker reads the TUN device and sends
protected packets on a raw socket (complete IP packets) or the NAT-T socket; the inbound
worker receives ESP and AH on raw sockets and ESP-in-UDP on the NAT-T socket, and writes
the inner packets into the TUN device. Every packet decision is made by the sans-I/O
objects of :mod:`hostsec.ipsec.dataplane`; this module only moves bytes.

Packets cross the kernel boundary in batches wherever Linux allows it (PERFORMANCE.md):
the TUN device carries a virtio-net header, so decrypted TCP enters it as super-packets
(consecutive segments merged by :func:`~hostsec.ipsec.offload.coalesce_tcp`, one write,
the kernel's TCP handles one 64 KB packet instead of ~45); ESP-in-UDP leaves in
``UDP_SEGMENT`` runs and arrives ``UDP_GRO``-coalesced; the TUN device and the sockets
are read until empty (bounded) before the packets go on. Raw ESP/AH sockets have no
batching: one packet per system call. A batch is handled packet by packet by the engine
(every check and counter as for a single packet) and is bounded (:data:`BATCH`,
:data:`MAX_SEGMENTS`, :data:`ROUNDS`), so the control channel is never starved.

The agent does not let the TUN device hand out TSO super-packets: every segment split
from one needs its TCP checksum computed here, which costs more in Python (~3 µs for
1400 octets) than the read the kernel saves (measured: more CPU per GB and less
throughput, BENCHMARKS.md). The worker still splits any it gets
(:func:`~hostsec.ipsec.offload.segment_tcp`), and completes partial checksums.

A worker dies with the agent (PR_SET_PDEATHSIG, and end of file on its channel): the
blackhole routes then keep protected flows dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable

from hostsec.agent import messages as m
from hostsec.ipsec.dataplane import (
    Inbound,
    Outbound,
    Output,
    Transmit,
    split_datagrams,
    udp_runs,
)
from hostsec.ipsec.errors import Malformed, PacketDropped
from hostsec.ipsec.offload import coalesce_tcp, complete_checksum, segment_tcp
from hostsec.platform.linux.sockets import (
    GRO_ANCILLARY,
    IPPROTO_AH,
    IPPROTO_ESP,
    MAX_GSO_SEGMENTS,
    MAX_UDP_PAYLOAD,
    RawReceiver,
    RawSender,
    enable_gro,
    gro_segment_size,
    send_segments,
)
from hostsec.platform.linux.tun import (
    PLAIN_VNET_HDR,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_ECN,
    VNET_GSO_NONE,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    VNET_HDR_LEN,
    VnetHeader,
    has_vnet_header,
    tcp_gso_header,
)

log = logging.getLogger("hostsec.worker")

BATCH = 64  # system calls per batch before the packets are handed on
MAX_SEGMENTS = 128  # packets (segments of super-packets) per batch
ROUNDS = 16  # batches per readiness event before the control channel gets a look
SOCKET_BUFFER = 8 << 20  # socket buffers: a burst of 64 KB runs must not overflow them
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
EVENT_INTERVAL = 0.25  # seconds between collections of SA events (lifetime events go at once)
MAX_PACKET = 65535
_IP_PKTINFO = 8
_IPV6_PKTINFO = 50
_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the agent goes away, so the TUN device closes with it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the agent died before we got here
        os._exit(1)


def send_message(ctl: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        ctl.send(data)
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        log.warning("control channel not writable; message dropped")


def recv_message(ctl: socket.socket) -> object | None:
    """One message from the other end; None when the channel is closed."""
    data = ctl.recv(1 << 20)
    if not data:
        return None
    message: object = pickle.loads(data)  # noqa: S301 - our own agent, over a socketpair
    return message


def _queued(ctl: socket.socket, flags: int) -> list[object] | None:
    """Every control message waiting on ``ctl`` (polled with ``flags``); None when the
    channel is closed or says Stop."""
    if not flags & select.POLLIN:
        return None
    messages: list[object] = []
    while True:
        message = recv_message(ctl)
        if message is None or isinstance(message, m.Stop):
            return None
        messages.append(message)
        if not select.select([ctl], [], [], 0)[0]:
            return messages


def _text(packed: bytes, cache: dict[bytes, str]) -> str:
    text = cache.get(packed)
    if text is None:
        family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
        text = cache[packed] = socket.inet_ntop(family, packed)
    return text


def _errno_key(exc: BaseException) -> str:
    return errno.errorcode.get(getattr(exc, "errno", 0) or 0, type(exc).__name__)


def _bump(counters: dict[str, int], key: str, n: int = 1) -> None:
    counters[key] = counters.get(key, 0) + n


# ------------------------------------------------------------------------ outbound


class _Transmitter:
    """Sends the outputs of the outbound engine: complete IP packets on raw sockets, one
    per system call; ESP-in-UDP in runs of one size to one peer per ``sendmsg``
    (``UDP_SEGMENT``). The NAT-T socket is shared with the inbound worker, which makes it
    non-blocking: a full send buffer is waited for here, never a reason to drop."""

    def __init__(self, udp: dict[int, socket.socket], io: dict[str, int]) -> None:
        self.udp = udp
        self.io = io
        self.raw: dict[int, RawSender] = {}
        self.names: dict[bytes, str] = {}
        self.errors: dict[str, int] = {}
        self.gso = True
        for sock in udp.values():
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, SOCKET_BUFFER)

    def _raw_sendto(self, dst: bytes) -> tuple[Callable[..., int], tuple[str, int]]:
        """The raw socket's ``sendto`` for packets to ``dst``, and the address to give it."""
        version = 4 if len(dst) == 4 else 6
        sender = self.raw.get(version)
        if sender is None:
            sender = self.raw[version] = RawSender(version, sndbuf=SOCKET_BUFFER)
        return sender.sock.sendto, (_text(dst, self.names), 0)

    def send(self, outputs: list[Output]) -> None:
        udp_seen = False
        raw_sent = 0
        last_dst = b""
        sendto: Callable[..., int] | None = None
        address = ("", 0)
        for how, dst, _port, data in outputs:
            if how is not Transmit.IP:
                udp_seen = True
                continue
            try:
                if dst is not last_dst or sendto is None:  # one flow: the same object
                    sendto, address = self._raw_sendto(dst)
                    last_dst = dst
                sendto(data, address)
                raw_sent += 1
            except OSError as exc:
                _bump(self.errors, _errno_key(exc))
        if raw_sent:
            _bump(self.io, "raw_sends", raw_sent)
        if not udp_seen:
            return
        if not self.gso:
            for how, dst, port, data in outputs:
                if how is Transmit.UDP:
                    self._send_udp(dst, port, 0, [data])
            return
        for dst, port, size, buffers in udp_runs(outputs, MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD):
            self._send_udp(dst, port, size, buffers)

    def _send_udp(self, dst: bytes, port: int, size: int, buffers: list[bytes]) -> None:
        text = self.names.get(dst) or _text(dst, self.names)
        sock = self.udp.get(4 if len(dst) == 4 else 6)
        if sock is None:
            _bump(self.errors, "no_socket", len(buffers))
            return
        for _attempt in range(100):
            try:
                send_segments(sock, buffers, size, (text, port))
            except BlockingIOError:
                select.select([], [sock], [], 0.01)  # the buffer drains: wait, do not drop
                continue
            except OSError as exc:
                if len(buffers) > 1 and exc.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT):
                    # The kernel refuses UDP_SEGMENT (too old, or a path that cannot).
                    log.warning("UDP_SEGMENT refused (%s): one datagram per send", exc)
                    self.gso = False
                    for data in buffers:
                        self._send_udp(dst, port, 0, [data])
                    return
                _bump(self.errors, _errno_key(exc), len(buffers))
                return
            io = self.io
            io["udp_sends"] = io.get("udp_sends", 0) + 1
            io["udp_datagrams"] = io.get("udp_datagrams", 0) + len(buffers)
            return
        _bump(self.errors, "EAGAIN", len(buffers))


def _read_tun(
    tun_fd: int, vnet: bool, packets: list[bytes], drops: dict[str, int], io: dict[str, int]
) -> int:
    """Read the TUN device until it is empty or a batch is full; the packets (segments of
    super-packets, checksums completed) are appended to ``packets``; returns the reads."""
    read = os.read
    size = MAX_PACKET + VNET_HDR_LEN
    reads = 0
    append = packets.append
    while reads < BATCH and len(packets) < MAX_SEGMENTS:
        try:
            data = read(tun_fd, size)
        except BlockingIOError:
            break
        reads += 1
        if not vnet:
            append(data)
        elif data[:VNET_HDR_LEN] == PLAIN_VNET_HDR:
            append(data[VNET_HDR_LEN:])
        else:
            try:
                segments = _offloaded(data)
            except PacketDropped as exc:  # fail closed: what cannot be split is dropped
                _bump(drops, f"offload_{exc.reason.value}")
                continue
            if len(segments) > 1:
                _bump(io, "tun_super_packets")
            packets.extend(segments)
    if reads:
        _bump(io, "tun_reads", reads)
    return reads


def _offloaded(data: bytes) -> list[bytes]:
    """What a TUN read with a non-trivial virtio-net header carries, as plain packets."""
    header = VnetHeader.unpack(data)
    packet = data[VNET_HDR_LEN:]
    gso = header.gso_type & ~VNET_GSO_ECN
    if gso in (VNET_GSO_TCPV4, VNET_GSO_TCPV6):
        return segment_tcp(packet, header.gso_size)
    if gso != VNET_GSO_NONE:
        raise Malformed(f"unexpected GSO type {header.gso_type}")
    if header.flags & VNET_F_NEEDS_CSUM:
        return [complete_checksum(packet, header.csum_start, header.csum_offset)]
    return [packet]


def run_outbound(ctl: socket.socket, tun_fd: int, udp: dict[int, socket.socket]) -> None:
    """The outbound loop: TUN -> SPD -> protect -> socket. ``udp``: NAT-T sockets by IP
    version (port 4500, shared with the agent)."""
    engine = Outbound()
    vnet = has_vnet_header(tun_fd)
    io: dict[str, int] = {}
    tx = _Transmitter(udp, io)
    os.set_blocking(tun_fd, False)
    poller = select.poll()
    poller.register(tun_fd, select.POLLIN)
    poller.register(ctl.fileno(), select.POLLIN)
    last_events = time.monotonic()

    def transmit(out: Output) -> None:
        tx.send([out])

    ctl_fd = ctl.fileno()
    while True:
        # Control messages first, all of them: a flow is added before its first packet is
        # looked up (else the packet that should start IKE is dropped as "no_policy").
        for fd, flags in sorted(poller.poll(250), key=lambda item: item[0] != ctl_fd):
            if fd == tun_fd:
                for _round in range(ROUNDS):
                    packets: list[bytes] = []
                    reads = _read_tun(tun_fd, vnet, packets, engine.drops, io)
                    if packets:
                        tx.send(engine.process_many(packets))
                    if reads < BATCH and len(packets) < MAX_SEGMENTS:
                        break  # the device is empty
                urgent = engine.take_acquires()
                if urgent:  # a trap fired: IKE should start now, not at the next tick
                    send_message(ctl, m.Events(urgent))
                continue
            messages = _queued(ctl, flags)
            if messages is None:
                return
            for message in messages:
                _outbound_command(engine, message, ctl, transmit, tx.errors, io)
        now = time.monotonic()
        if engine.events_due or now - last_events >= EVENT_INTERVAL:
            last_events = now
            events = engine.poll_events()
            if events:
                send_message(ctl, m.Events(events))


def _outbound_command(
    engine: Outbound,
    message: object,
    ctl: socket.socket,
    transmit: object,
    errors: dict[str, int],
    io: dict[str, int],
) -> None:
    now = time.monotonic()
    if isinstance(message, m.AddFlow):
        if message.flow in engine.spd:
            engine.remove_flow(message.flow)
        engine.add_flow(message.flow, message.selectors, message.hold_limit)
    elif isinstance(message, m.RemoveFlow):
        engine.remove_flow(message.flow)
    elif isinstance(message, m.InstallOutbound):
        try:
            held = engine.install(message.flow, message.configs, now)
        except (KeyError, ValueError) as exc:
            send_message(ctl, m.Error(f"outbound SA for {message.flow}: {exc}"))
            return
        for out in held:
            transmit(out)  # type: ignore[operator]
    elif isinstance(message, m.UninstallOutbound):
        engine.uninstall(message.flow, message.spi)
    elif isinstance(message, m.MoveOutbound):
        engine.move(message.spis, message.dst, message.port)
    elif isinstance(message, m.StatsRequest):
        sas = {
            sa.spi: {"seq": sa.seq, **sa.stats.as_dict(), "expired": sa.expired}
            for sa in engine.sas()
        }
        data = {
            "flows": engine.flow_stats(),
            "sas": sas,
            "drops": dict(engine.drops),
            "send_errors": dict(errors),
            "io": dict(io),
        }
        send_message(ctl, m.Stats(message.token, "out", data))
    else:
        send_message(ctl, m.Error(f"outbound worker: unknown message {type(message).__name__}"))


# ------------------------------------------------------------------------ inbound


def _pktinfo_dst(ancillary: list[tuple[int, int, bytes]]) -> bytes | None:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            addr: bytes = _IN_PKTINFO.unpack_from(data)[2]
            return addr
        if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(data) >= 16:
            return bytes(data[:16])
    return None


class _TunWriter:
    """Writes inner packets into the TUN device; with a virtio-net header, consecutive
    segments of one TCP connection go as one super-packet (:func:`coalesce_tcp`)."""

    def __init__(self, tun_fd: int, vnet: bool, io: dict[str, int]) -> None:
        self.fd = tun_fd
        self.vnet = vnet
        self.merge = vnet
        self.io = io
        self.errors = 0

    def write(self, packets: list[bytes]) -> None:
        fd = self.fd
        io = self.io
        if not self.merge or len(packets) == 1:
            for packet in packets:
                try:
                    if self.vnet:
                        os.writev(fd, (PLAIN_VNET_HDR, packet))
                    else:
                        os.write(fd, packet)
                except OSError:
                    self.errors += 1
            io["tun_writes"] = io.get("tun_writes", 0) + len(packets)
            return
        writev = os.writev
        writes = merged = 0
        for run in coalesce_tcp(packets):
            writes += 1
            size, parts = run.segment_size, run.parts
            try:
                if size:
                    header = tcp_gso_header(size, run.header_len, run.checksum_start, run.ipv6)
                    writev(fd, [header, *parts])
                    merged += len(parts) - 1
                else:
                    writev(fd, (PLAIN_VNET_HDR, parts[0]))
            except OSError as exc:
                self.errors += 1
                if size and exc.errno == errno.EINVAL:
                    log.warning("TUN refuses TCP super-packets (%s): one packet per write", exc)
                    self.merge = False
        io["tun_writes"] = io.get("tun_writes", 0) + writes
        if merged:
            io["tun_merged_packets"] = io.get("tun_merged_packets", 0) + merged


def run_inbound(
    ctl: socket.socket, tun_fd: int, udp: dict[int, socket.socket], versions: tuple[int, ...]
) -> None:
    """The inbound loop: socket -> SAD -> unprotect -> TUN. IKE datagrams arriving on the
    NAT-T port go to the agent."""
    engine = Inbound()
    io: dict[str, int] = {}
    writer = _TunWriter(tun_fd, has_vnet_header(tun_fd), io)
    poller = select.poll()
    raws: dict[int, RawReceiver] = {}
    for version in versions:
        for protocol in (IPPROTO_ESP, IPPROTO_AH):
            receiver = RawReceiver(protocol, version, rcvbuf=SOCKET_BUFFER)
            receiver.setblocking(False)
            raws[receiver.fileno()] = receiver
            poller.register(receiver.fileno(), select.POLLIN)
    udps: dict[int, tuple[int, socket.socket]] = {}
    for version, sock in udp.items():
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, SOCKET_BUFFER)
        enable_gro(sock)
        udps[sock.fileno()] = (version, sock)
        poller.register(sock.fileno(), select.POLLIN)
    poller.register(ctl.fileno(), select.POLLIN)
    last_events = time.monotonic()
    ctl_fd = ctl.fileno()
    addresses: dict[str, bytes] = {}

    while True:
        # Control messages first: an SA installed together with the packets that need it.
        for fd, flags in sorted(poller.poll(250), key=lambda item: item[0] != ctl_fd):
            raw_receiver = raws.get(fd)
            if raw_receiver is not None:
                _receive_raw(engine, writer, raw_receiver, io)
                continue
            entry = udps.get(fd)
            if entry is not None:
                _receive_udp(engine, writer, ctl, entry, addresses, io)
                continue
            messages = _queued(ctl, flags)
            if messages is None:
                return
            for message in messages:
                _inbound_command(engine, message, ctl, writer)
        now = time.monotonic()
        if engine.events_due or now - last_events >= EVENT_INTERVAL:
            last_events = now
            events = engine.poll_events()
            if events:
                send_message(ctl, m.Events(list(events)))


def _receive_raw(
    engine: Inbound, writer: _TunWriter, receiver: RawReceiver, io: dict[str, int]
) -> None:
    """Read a raw ESP/AH socket until it is empty (bounded): one packet per read."""
    if receiver.version == 6 and receiver.protocol == IPPROTO_ESP:
        _receive_esp6(engine, writer, receiver, io)
        return
    # IPv4 raw sockets give the whole packet; IPv6 AH needs its header rebuilt (the ICV
    # covers it, RFC 4302 3.3.3)
    recv = receiver.sock.recv if receiver.version == 4 else receiver.recv_packet
    for _round in range(ROUNDS):
        received: list[bytes] = []
        append = received.append
        for _ in range(BATCH):
            try:
                append(recv(MAX_PACKET))
            except BlockingIOError:
                break
        if not received:
            return
        io["raw_reads"] = io.get("raw_reads", 0) + len(received)
        inner: list[bytes] = []
        engine.process_ip_many(received, inner)
        if inner:
            writer.write(inner)
        if len(received) < BATCH:
            return


def _receive_esp6(
    engine: Inbound, writer: _TunWriter, receiver: RawReceiver, io: dict[str, int]
) -> None:
    """As _receive_raw, for ESP over IPv6: the socket gives the packet without its IPv6
    header, so it goes to decapsulate with the addresses and hop limit of the read,
    without a header rebuilt only to be parsed again."""
    recv = receiver.recv_v6
    process = engine.process_esp
    for _round in range(ROUNDS):
        inner: list[bytes] = []
        reads = 0
        for _ in range(BATCH):
            try:
                esp, src, dst, hop_limit = recv(MAX_PACKET)
            except BlockingIOError:
                break
            reads += 1
            if dst is None:  # no IPV6_PKTINFO: the SA cannot be checked against it
                _bump(io, "raw_no_destination")
                continue
            packet = process(esp, src, dst, hop_limit)
            if packet is not None:
                inner.append(packet)
        if not reads:
            return
        io["raw_reads"] = io.get("raw_reads", 0) + reads
        if inner:
            writer.write(inner)
        if reads < BATCH:
            return


def _receive_udp(
    engine: Inbound,
    writer: _TunWriter,
    ctl: socket.socket,
    entry: tuple[int, socket.socket],
    addresses: dict[str, bytes],
    io: dict[str, int],
) -> None:
    """Read the NAT-T socket until it is empty (bounded): ESP to the TUN device, IKE to
    the agent. A ``UDP_GRO`` read holds many datagrams of one peer, split here."""
    version, sock = entry
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    recvmsg = sock.recvmsg
    for _round in range(ROUNDS):
        inner: list[bytes] = []
        reads = coalesced = 0
        while reads < BATCH and len(inner) < MAX_SEGMENTS:
            try:
                data, ancillary, _flags, addr = recvmsg(MAX_PACKET, GRO_ANCILLARY)
            except BlockingIOError:
                break
            reads += 1
            host = addr[0]
            src = addresses.get(host)
            if src is None:
                src = addresses[host] = socket.inet_pton(family, host.split("%", 1)[0])
            dst = _pktinfo_dst(ancillary) or b""
            payloads = split_datagrams(data, gro_segment_size(ancillary))
            if len(payloads) > 1:
                coalesced += len(payloads)
            for ike in engine.process_udp_many(payloads, src, dst, inner):
                send_message(ctl, m.IkeDatagram(ike, host, addr[1], dst))
        if reads:
            io["udp_reads"] = io.get("udp_reads", 0) + reads
            if coalesced:
                io["udp_gro_datagrams"] = io.get("udp_gro_datagrams", 0) + coalesced
        if inner:
            writer.write(inner)
        if reads < BATCH and len(inner) < MAX_SEGMENTS:
            return


def _inbound_command(
    engine: Inbound, message: object, ctl: socket.socket, writer: _TunWriter
) -> None:
    now = time.monotonic()
    if isinstance(message, m.InstallInbound):
        try:
            engine.install(message.configs, now)
        except ValueError as exc:
            send_message(ctl, m.Error(f"inbound SA: {exc}"))
    elif isinstance(message, m.RemoveInbound):
        engine.remove(message.protocol, message.spi)
    elif isinstance(message, m.StatsRequest):
        sas = {sa.spi: {**sa.stats.as_dict(), "expired": sa.expired} for sa in engine.sas()}
        drops = {r.value: n for r, n in engine.sad.drops.items()}
        data = {
            "sas": sas,
            "drops": drops,
            "keepalives": engine.keepalives,
            "tun_write_errors": writer.errors,
            "io": dict(writer.io),
        }
        send_message(ctl, m.Stats(message.token, "in", data))
    else:
        send_message(ctl, m.Error(f"inbound worker: unknown message {type(message).__name__}"))


def main(argv: list[str]) -> int:
    """``python -m hostsec.agent.worker out|in CTL_FD TUN_FD [udp4=FD] [udp6=FD] [v6]``"""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent stops us over the channel
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="hostsec worker: %(message)s")
    role, ctl_fd, tun_fd, *rest = argv
    ctl = socket.socket(fileno=int(ctl_fd))
    udp: dict[int, socket.socket] = {}
    versions: tuple[int, ...] = (4,)
    for item in rest:
        if item == "v6":
            versions = (4, 6)
        elif "=" in item:
            name, fd = item.split("=", 1)
            udp[6 if name == "udp6" else 4] = socket.socket(fileno=int(fd))
    if role == "out":
        run_outbound(ctl, int(tun_fd), udp)
    else:
        run_inbound(ctl, int(tun_fd), udp, versions)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
