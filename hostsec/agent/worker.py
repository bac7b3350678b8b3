"""Data-path worker processes: one per direction (PERFORMANCE.md: processes beat threads).

The agent creates the TUN device and the sockets, then starts two workers with those file
descriptors and a control channel (a SOCK_SEQPACKET socketpair carrying pickled
:mod:`hostsec.agent.messages`). The outbound worker reads the TUN device and sends
protected packets; the inbound worker receives ESP/AH/UDP-4500 and writes the inner
packets into the TUN device. All packet decisions are made by the sans-I/O objects of
:mod:`hostsec.ipsec.dataplane`; this module only moves bytes.

A worker exits when its control channel closes (the agent is gone): the blackhole routes
then keep protected flows dropped.
"""

from __future__ import annotations

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
from dataclasses import dataclass

from hostsec.agent import messages as m
from hostsec.ipsec.dataplane import Inbound, Outbound, Output, Transmit
from hostsec.wire.udpencap import Datagram

log = logging.getLogger("hostsec.worker")

BATCH = 64  # packets handled per readiness event before looking at the control channel
EVENT_INTERVAL = 0.25  # seconds between collections of SA events
IPV6_PKTINFO = 50
IP_PKTINFO = 8
_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
MAX_PACKET = 65535


@dataclass(frozen=True)
class Receiver:
    """One receiving socket of the inbound worker and what arrives on it."""

    fd: int
    kind: str  # "ip4" (raw, with IPv4 header), "esp6" (raw IPv6 ESP), "udp4", "udp6"


def _send_message(ctl: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        ctl.send(data)
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        log.warning("control channel to the agent is not writable; message dropped")


def _recv_message(ctl: socket.socket) -> object | None:
    """One message from the agent; None when the channel is closed."""
    data = ctl.recv(1 << 20)
    if not data:
        return None
    message: object = pickle.loads(data)  # noqa: S301 - our own parent, over a socketpair
    return message


class _AddressCache:
    """bytes -> str for socket addresses (sendto wants text; the engine deals in bytes)."""

    def __init__(self) -> None:
        self._cache: dict[bytes, str] = {}

    def __call__(self, packed: bytes) -> str:
        text = self._cache.get(packed)
        if text is None:
            family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
            text = socket.inet_ntop(family, packed)
            self._cache[packed] = text
        return text


def run_outbound(ctl: socket.socket, tun_fd: int, sockets: dict[str, socket.socket]) -> None:
    """The outbound loop: TUN -> SPD -> protect -> socket.

    ``sockets``: "esp4"/"esp6" raw ESP sockets (kernel adds the IP header), "ip4"/"ip6"
    raw sockets with the IP header included (AH and bundles), "udp4"/"udp6" the NAT-T
    sockets. Any may be missing if the host does not use that path.
    """
    engine = Outbound()
    text = _AddressCache()
    os.set_blocking(tun_fd, False)
    poller = select.poll()
    poller.register(tun_fd, select.POLLIN)
    poller.register(ctl.fileno(), select.POLLIN)
    send_errors: dict[str, int] = {}
    last_events = time.monotonic()

    def transmit(out: Output) -> None:
        how, dst, port, data = out
        v6 = len(dst) == 16
        try:
            if how is Transmit.RAW:
                sockets["esp6" if v6 else "esp4"].sendto(data, (text(dst), 0))
            elif how is Transmit.UDP:
                sockets["udp6" if v6 else "udp4"].sendto(data, (text(dst), port))
            else:
                sockets["ip6" if v6 else "ip4"].sendto(data, (text(dst), 0))
        except (BlockingIOError, OSError) as exc:
            key = errno.errorcode.get(getattr(exc, "errno", 0) or 0, type(exc).__name__)
            send_errors[key] = send_errors.get(key, 0) + 1

    while True:
        ready = poller.poll(250)
        for fd, flags in ready:
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
            elif flags & (select.POLLHUP | select.POLLERR) and not flags & select.POLLIN:
                return
            else:
                message = _recv_message(ctl)
                if message is None:
                    return
                if isinstance(message, m.Stop):
                    return
                _outbound_command(engine, message, ctl, transmit, send_errors)
        now = time.monotonic()
        if now - last_events >= EVENT_INTERVAL:
            last_events = now
            events = engine.poll_events()
            if events:
                _send_message(ctl, m.Events(events))


def _outbound_command(
    engine: Outbound,
    message: object,
    ctl: socket.socket,
    transmit: object,
    send_errors: dict[str, int],
) -> None:
    now = time.monotonic()
    if isinstance(message, m.AddFlow):
        engine.add_flow(message.flow, message.selectors, message.hold_limit)
    elif isinstance(message, m.RemoveFlow):
        engine.remove_flow(message.flow)
    elif isinstance(message, m.InstallOutbound):
        try:
            held = engine.install(message.flow, message.configs, now)
        except (KeyError, ValueError) as exc:
            _send_message(ctl, m.Error(f"install outbound SA for {message.flow}: {exc}"))
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
        _send_message(
            ctl,
            m.Stats(
                message.token,
                "out",
                {
                    "flows": engine.flow_stats(),
                    "sas": sas,
                    "drops": dict(engine.drops),
                    "send_errors": dict(send_errors),
                },
            ),
        )
    else:
        _send_message(ctl, m.Error(f"outbound worker: unknown message {type(message).__name__}"))


def _pktinfo_dst(ancillary: list[tuple[int, int, bytes]]) -> bytes | None:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            addr: bytes = _IN_PKTINFO.unpack_from(data)[2]
            return addr
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            addr6: bytes = _IN6_PKTINFO.unpack_from(data)[0]
            return addr6
    return None


def run_inbound(ctl: socket.socket, tun_fd: int, receivers: list[Receiver]) -> None:
    """The inbound loop: socket -> SAD -> unprotect -> TUN. IKE datagrams that arrive on
    the NAT-T port are passed to the agent."""
    engine = Inbound()
    poller = select.poll()
    kinds: dict[int, str] = {}
    socks: dict[int, socket.socket] = {}
    for r in receivers:
        sock = socket.socket(fileno=r.fd)
        sock.setblocking(False)
        socks[r.fd] = sock
        kinds[r.fd] = r.kind
        poller.register(r.fd, select.POLLIN)
    poller.register(ctl.fileno(), select.POLLIN)
    write_errors = 0
    last_events = time.monotonic()
    cmsg_space = socket.CMSG_SPACE(32)

    while True:
        ready = poller.poll(250)
        for fd, flags in ready:
            kind = kinds.get(fd)
            if kind is None:
                if flags & (select.POLLHUP | select.POLLERR) and not flags & select.POLLIN:
                    return
                message = _recv_message(ctl)
                if message is None or isinstance(message, m.Stop):
                    return
                _inbound_command(engine, message, ctl, write_errors)
                continue
            sock = socks[fd]
            for _ in range(BATCH):
                try:
                    if kind == "ip4":
                        packet = sock.recv(MAX_PACKET)
                        inner = engine.process_ip(packet)
                    else:
                        data, ancillary, _flags, addr = sock.recvmsg(MAX_PACKET, cmsg_space)
                        src = socket.inet_pton(
                            socket.AF_INET6 if kind.endswith("6") else socket.AF_INET, addr[0]
                        )
                        dst = _pktinfo_dst(ancillary) or b""
                        if kind == "esp6":
                            inner = engine.process_esp(data, src, dst)
                        else:
                            what, inner = engine.process_udp(data, src, dst)
                            if what is Datagram.IKE:
                                _send_message(ctl, m.IkeDatagram(data, addr[0], addr[1], dst))
                except BlockingIOError:
                    break
                if inner is not None:
                    try:
                        os.write(tun_fd, inner)
                    except OSError:
                        write_errors += 1
        now = time.monotonic()
        if now - last_events >= EVENT_INTERVAL:
            last_events = now
            events = engine.poll_events()
            if events:
                _send_message(ctl, m.Events(list(events)))


def _inbound_command(engine: Inbound, message: object, ctl: socket.socket, errors: int) -> None:
    now = time.monotonic()
    if isinstance(message, m.InstallInbound):
        try:
            engine.install(message.configs, now)
        except ValueError as exc:
            _send_message(ctl, m.Error(f"install inbound SA: {exc}"))
    elif isinstance(message, m.RemoveInbound):
        engine.remove(message.protocol, message.spi)
    elif isinstance(message, m.StatsRequest):
        sas = {sa.spi: {**sa.stats.as_dict(), "expired": sa.expired} for sa in engine.sas()}
        drops = {r.value: n for r, n in engine.sad.drops.items()}
        _send_message(
            ctl,
            m.Stats(
                message.token,
                "in",
                {
                    "sas": sas,
                    "drops": drops,
                    "keepalives": engine.keepalives,
                    "tun_write_errors": errors,
                },
            ),
        )
    else:
        _send_message(ctl, m.Error(f"inbound worker: unknown message {type(message).__name__}"))


def main(argv: list[str]) -> int:
    """``python -m hostsec.agent.worker out|in CTL_FD TUN_FD NAME=FD ...``"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent stops us over the channel
    logging.basicConfig(level=logging.INFO, format="hostsec worker: %(message)s")
    role, ctl_fd, tun_fd, *rest = argv
    ctl = socket.socket(fileno=int(ctl_fd))
    named = dict(item.split("=", 1) for item in rest)
    if role == "out":
        sockets = {name: socket.socket(fileno=int(fd)) for name, fd in named.items()}
        run_outbound(ctl, int(tun_fd), sockets)
    else:
        # Names are "kind" or "kind:label" (two raw IPv4 sockets: "ip4:esp", "ip4:ah").
        receivers = [Receiver(int(fd), name.split(":")[0]) for name, fd in named.items()]
        run_inbound(ctl, int(tun_fd), receivers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
