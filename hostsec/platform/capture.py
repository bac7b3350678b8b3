"""Packet captures for tests and the demo: tcpdump started and stopped by PID, a pcap reader.

tcpdump writes classic pcap (``-w``); :func:`read_pcap` reads it without third-party code
and :func:`summarize` turns each frame into a :class:`Frame` with the fields the tests
and the demo look at (addresses, protocol, ports, whether it is ESP, the L4 payload).
"""

from __future__ import annotations

import ipaddress
import os
import re
import select
import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hostsec.wire.udpencap import NAT_T_PORT, NON_ESP_MARKER

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = (0x8100, 0x88A8)
MAX_FRAME = 65552  # an Ethernet header and a 64 KiB GSO packet: nothing is cut off
_DROPPED = re.compile(r"(\d+) packets? dropped by kernel")


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured IP packet, decoded just enough for assertions and summaries."""

    time: float
    version: int  # 4 or 6; 0 for a frame that carries no IP packet
    src: str
    dst: str
    protocol: int  # upper-layer protocol (after IPv6 extension headers we know)
    sport: int | None
    dport: int | None
    payload: bytes  # the L4 payload (TCP/UDP data, the ESP/AH packet, ...)
    packet: bytes  # the whole IP packet

    @property
    def is_esp(self) -> bool:
        """Raw ESP, or ESP in UDP/4500 (RFC 3948: not a keepalive, no non-ESP marker)."""
        if self.protocol == 50:
            return True
        return (
            self.protocol == 17
            and NAT_T_PORT in (self.sport, self.dport)
            and len(self.payload) >= 8
            and self.payload[:4] != NON_ESP_MARKER
        )

    @property
    def is_ah(self) -> bool:
        return self.protocol == 51

    def uses_port(self, protocol: int, port: int) -> bool:
        """A cleartext packet of ``protocol`` with ``port`` as source or destination."""
        return self.protocol == protocol and port in (self.sport, self.dport)

    def __str__(self) -> str:
        names = {1: "icmp", 6: "tcp", 17: "udp", 50: "esp", 51: "ah", 58: "icmp6"}
        proto = names.get(self.protocol, str(self.protocol))
        if self.is_esp and self.protocol == 17:
            proto = "esp-in-udp"
        src, dst = self.src, self.dst
        if self.sport is not None:
            src, dst = f"{src}:{self.sport}", f"{dst}:{self.dport}"
        return f"{self.time:.6f} {proto} {src} > {dst} len {len(self.payload)}"


def read_pcap(path: str | Path) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type, [(timestamp, frame), ...]) of a classic pcap file; lengths checked."""
    data = Path(path).read_bytes()
    if len(data) < 24 or data[:4] not in _PCAP_MAGIC:
        raise ValueError(f"{path}: not a pcap file")
    order, unit = _PCAP_MAGIC[data[:4]]
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    frames: list[tuple[float, bytes]] = []
    offset = 24
    while offset + record.size <= len(data):
        sec, frac, caplen, _wirelen = record.unpack_from(data, offset)
        offset += record.size
        if offset + caplen > len(data):
            break  # a record cut off by an interrupted writer
        frames.append((sec + frac * unit, data[offset : offset + caplen]))
        offset += caplen
    return linktype, frames


def _ip_of(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet inside a link-layer frame, or None."""
    if linktype == LINKTYPE_RAW:
        return frame
    if linktype == LINKTYPE_ETHERNET:
        offset, ethertype = 14, struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
        while ethertype in _ETH_VLAN and len(frame) >= offset + 4:
            ethertype = struct.unpack_from("!H", frame, offset + 2)[0]
            offset += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        offset, ethertype = 16, struct.unpack_from("!H", frame, 14)[0] if len(frame) >= 16 else 0
    elif linktype == LINKTYPE_LINUX_SLL2:
        offset, ethertype = 20, struct.unpack_from("!H", frame, 0)[0] if len(frame) >= 20 else 0
    else:
        return None
    if ethertype not in (_ETH_IPV4, _ETH_IPV6):
        return None
    return frame[offset:]


_IPV6_SKIP = {0, 43, 60, 135}  # hop-by-hop, routing, destination options, mobility


def decode(timestamp: float, packet: bytes) -> Frame:
    """A :class:`Frame` for one IP packet (truncated or odd packets give what is there)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        total = min(len(packet), struct.unpack_from("!H", packet, 2)[0] or len(packet))
        protocol = packet[9]
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
        first_fragment = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF == 0
        offset, end = ihl, total
    elif version == 6 and len(packet) >= 40:
        protocol = packet[6]
        src = str(ipaddress.IPv6Address(packet[8:24]))
        dst = str(ipaddress.IPv6Address(packet[24:40]))
        offset, end = 40, min(len(packet), 40 + struct.unpack_from("!H", packet, 4)[0])
        first_fragment = True
        while protocol in _IPV6_SKIP | {44} and offset + 8 <= end:
            if protocol == 44:
                first_fragment = struct.unpack_from("!H", packet, offset + 2)[0] & 0xFFF8 == 0
                protocol, offset = packet[offset], offset + 8
            else:
                protocol, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    else:
        return Frame(timestamp, 0, "", "", -1, None, None, b"", packet)
    sport = dport = None
    payload = packet[offset:end]
    if protocol in (6, 17, 132) and first_fragment and end - offset >= 4:
        sport, dport = struct.unpack_from("!HH", packet, offset)
        if protocol == 17:
            payload = packet[offset + 8 : end]
        elif protocol == 6 and end - offset >= 20:
            payload = packet[offset + (packet[offset + 12] >> 4) * 4 : end]
    return Frame(timestamp, version, src, dst, protocol, sport, dport, payload, packet)


def summarize(path: str | Path) -> list[Frame]:
    """Every IP packet of a pcap file, decoded."""
    linktype, frames = read_pcap(path)
    out = []
    for ts, frame in frames:
        packet = _ip_of(linktype, frame)
        if packet is not None:
            out.append(decode(ts, packet))
    return out


def protocol_counts(frames: Iterable[Frame]) -> dict[str, int]:
    """How many frames of each kind: 'esp', 'esp-in-udp', 'ah', 'tcp/23', 'udp/500', ..."""
    counts: dict[str, int] = {}
    for f in frames:
        if f.is_esp:
            key = "esp" if f.protocol == 50 else "esp-in-udp"
        elif f.is_ah:
            key = "ah"
        elif f.protocol in (6, 17) and f.sport is not None and f.dport is not None:
            port = min(f.sport, f.dport)
            key = f"{'tcp' if f.protocol == 6 else 'udp'}/{port}"
        else:
            key = {1: "icmp", 58: "icmp6"}.get(f.protocol, f"proto {f.protocol}")
        counts[key] = counts.get(key, 0) + 1
    return counts


class Capture:
    """``tcpdump -i IFACE -w FILE`` in a namespace, started and stopped by PID.

    ``start`` returns once tcpdump says it is listening, so nothing sent afterwards is
    missed; ``stop`` sends SIGINT (tcpdump flushes and exits) and reaps the process.
    After ``stop``, ``dropped`` is how many packets the kernel dropped before tcpdump
    read them (None if tcpdump did not say): a capture that proves an absence needs 0.
    """

    def __init__(
        self,
        argv_prefix: Sequence[str],
        interface: str,
        path: str | Path,
        bpf: str = "",
        snaplen: int = MAX_FRAME,
        buffer_kib: int = 131072,
    ) -> None:
        self.path = Path(path)
        self._argv = [
            *argv_prefix,
            "tcpdump",
            "-i",
            interface,
            "-n",
            "-U",  # packet-buffered: every packet reaches the file when written
            "--immediate-mode",
            # The kernel ring, in KiB. In immediate mode libpcap gives every packet a slot
            # of the snapshot length (veths do GSO: no MTU cap), so tcpdump's defaults
            # (2 MiB, 256 KiB slots) hold 8 packets and lose packets of any fast transfer.
            "-B",
            str(buffer_kib),
            "-Z",
            "root",  # do not drop to user tcpdump: it may not write to self.path
            "-s",
            str(snaplen),
            "-w",
            str(self.path),
        ]
        if bpf:
            self._argv.append(bpf)
        self._proc: subprocess.Popen[bytes] | None = None
        self.stderr = ""
        self.dropped: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> Capture:
        # An argv list (no shell) of tcpdump options and a BPF filter given by the caller.
        self._proc = subprocess.Popen(  # noqa: S603
            self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        seen = b""
        while b"listening on" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"tcpdump did not start: {seen.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                seen += chunk
        self.stderr = seen.decode(errors="replace")
        return self

    def stop(self, timeout: float = 10.0) -> list[Frame]:
        """Stop tcpdump (SIGINT, by PID) and return the frames it wrote."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                _, err = proc.communicate()
            self.stderr += err.decode(errors="replace")
            found = _DROPPED.search(self.stderr)
            self.dropped = int(found.group(1)) if found else None
        if not self.path.exists():
            return []
        return summarize(self.path)

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
