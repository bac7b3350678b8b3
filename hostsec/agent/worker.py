"""Data-path worker processes: one per direction (PERFORMANCE.md: processes beat threads).

The agent opens the TUN device and the NAT-T UDP sockets, then starts two workers with
those file descriptors and a control channel (a SOCK_SEQPACKET socketpair carrying
pickled :mod:`hostsec.agent.messages`). The outbound worker reads the TUN device and sends
protected packets on a raw socket (complete IP packets) or the NAT-T socket; the inbound
worker receives ESP and AH on raw sockets and ESP-in-UDP on the NAT-T socket, and writes
the inner packets into the TUN device. Every packet decision is made by the sans-I/O
objects of :mod:`hostsec.ipsec.dataplane`; this module only moves bytes.

A worker dies with the agent (PR_SET_PDEATHSIG, and end of file on its channel): the
blackhole routes then keep protected flows dropped.
"""

from __future__ import annotations

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

from hostsec.agent import messages as m
from hostsec.ipsec.dataplane import Inbound, Outbound, Output, Transmit
from hostsec.platform.linux.sockets import IPPROTO_AH, IPPROTO_ESP, RawReceiver, RawSender
from hostsec.wire.udpencap import Datagram

log = logging.getLogger("hostsec.worker")

BATCH = 64  # packets handled per readiness event before looking at the control channel
EVENT_INTERVAL = 0.25  # seconds between collections of SA events
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


def run_outbound(ctl: socket.socket, tun_fd: int, udp: dict[int, socket.socket]) -> None:
    """The outbound loop: TUN -> SPD -> protect -> socket. ``udp``: NAT-T sockets by IP
    version (port 4500, shared with the agent)."""
    engine = Outbound()
    raw: dict[int, RawSender] = {}
    names: dict[bytes, str] = {}
    os.set_blocking(tun_fd, False)
    poller = select.poll()
    poller.register(tun_fd, select.POLLIN)
    poller.register(ctl.fileno(), select.POLLIN)
    errors: dict[str, int] = {}
    last_events = time.monotonic()

    def transmit(out: Output) -> None:
        how, dst, port, data = out
        version = 4 if len(dst) == 4 else 6
        try:
            if how is Transmit.UDP:
                udp[version].sendto(data, (_text(dst, names), port))
            else:
                sender = raw.get(version)
                if sender is None:
                    sender = raw[version] = RawSender(version)
                sender.send(data)
        except (OSError, KeyError, ValueError) as exc:
            key = errno.errorcode.get(getattr(exc, "errno", 0) or 0, type(exc).__name__)
            errors[key] = errors.get(key, 0) + 1

    ctl_fd = ctl.fileno()
    while True:
        # Control messages first, all of them: a flow is added before its first packet is
        # looked up (else the packet that should start IKE is dropped as "no_policy").
        for fd, flags in sorted(poller.poll(250), key=lambda item: item[0] != ctl_fd):
            if fd == tun_fd:
                process = engine.process
                for _ in range(BATCH):
                    try:
                        packet = os.read(tun_fd, MAX_PACKET)
                    except BlockingIOError:
                        break
                    out = process(packet)
                    if out is not None:
                        transmit(out)
                urgent = engine.take_acquires()
                if urgent:  # a trap fired: IKE should start now, not at the next tick
                    send_message(ctl, m.Events(urgent))
                continue
            messages = _queued(ctl, flags)
            if messages is None:
                return
            for message in messages:
                _outbound_command(engine, message, ctl, transmit, errors)
        now = time.monotonic()
        if now - last_events >= EVENT_INTERVAL:
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
        }
        send_message(ctl, m.Stats(message.token, "out", data))
    else:
        send_message(ctl, m.Error(f"outbound worker: unknown message {type(message).__name__}"))


def _pktinfo_dst(ancillary: list[tuple[int, int, bytes]]) -> bytes | None:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            addr: bytes = _IN_PKTINFO.unpack_from(data)[2]
            return addr
        if level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(data) >= 16:
            return bytes(data[:16])
    return None


def run_inbound(
    ctl: socket.socket, tun_fd: int, udp: dict[int, socket.socket], versions: tuple[int, ...]
) -> None:
    """The inbound loop: socket -> SAD -> unprotect -> TUN. IKE datagrams arriving on the
    NAT-T port go to the agent."""
    engine = Inbound()
    poller = select.poll()
    raws: dict[int, RawReceiver] = {}
    for version in versions:
        for protocol in (IPPROTO_ESP, IPPROTO_AH):
            receiver = RawReceiver(protocol, version)
            receiver.setblocking(False)
            raws[receiver.fileno()] = receiver
            poller.register(receiver.fileno(), select.POLLIN)
    udps: dict[int, tuple[int, socket.socket]] = {}
    for version, sock in udp.items():
        sock.setblocking(False)
        udps[sock.fileno()] = (version, sock)
        poller.register(sock.fileno(), select.POLLIN)
    poller.register(ctl.fileno(), select.POLLIN)
    write_errors = [0]
    last_events = time.monotonic()
    cmsg_space = socket.CMSG_SPACE(32)

    def deliver(inner: bytes | None) -> None:
        if inner is not None:
            try:
                os.write(tun_fd, inner)
            except OSError:
                write_errors[0] += 1

    ctl_fd = ctl.fileno()
    while True:
        # Control messages first: an SA installed together with the packets that need it.
        for fd, flags in sorted(poller.poll(250), key=lambda item: item[0] != ctl_fd):
            raw_receiver = raws.get(fd)
            if raw_receiver is not None:
                for _ in range(BATCH):
                    try:
                        packet = raw_receiver.recv(MAX_PACKET)
                    except BlockingIOError:
                        break
                    deliver(engine.process_ip(packet.packet))
                continue
            entry = udps.get(fd)
            if entry is not None:
                version, sock = entry
                family = socket.AF_INET if version == 4 else socket.AF_INET6
                for _ in range(BATCH):
                    try:
                        data, ancillary, _flags, addr = sock.recvmsg(MAX_PACKET, cmsg_space)
                    except BlockingIOError:
                        break
                    src = socket.inet_pton(family, addr[0].split("%", 1)[0])
                    dst = _pktinfo_dst(ancillary) or b""
                    kind, inner = engine.process_udp(data, src, dst)
                    if kind is Datagram.IKE:
                        send_message(ctl, m.IkeDatagram(data, addr[0], addr[1], dst))
                    else:
                        deliver(inner)
                continue
            messages = _queued(ctl, flags)
            if messages is None:
                return
            for message in messages:
                _inbound_command(engine, message, ctl, write_errors[0])
        now = time.monotonic()
        if now - last_events >= EVENT_INTERVAL:
            last_events = now
            events = engine.poll_events()
            if events:
                send_message(ctl, m.Events(list(events)))


def _inbound_command(engine: Inbound, message: object, ctl: socket.socket, errors: int) -> None:
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
            "tun_write_errors": errors,
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
