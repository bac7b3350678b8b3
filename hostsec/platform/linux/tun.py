"""The agent's TUN device on Linux (python-pytun), configured for the data path.

Opening order matters: the device is created down, IPv6 is switched off (or made quiet)
before it goes up so that no router solicitation or MLD report is ever queued on it,
the reverse-path filter is set, the MTU is set, then it goes up.

Reverse-path filtering (DESIGN.md 6) of the packets the agent writes into the TUN, as
measured on Linux 6.18: the kernel's check looks the source up with the ports swapped,
so a packet of a flow whose routing rule sends it into the TUN passes whatever the
mode, even strict; for any other packet (say an ICMP error carried in the SA) the
effective mode max(all, tun) decides, and Linux's loose mode (2) *drops* every packet
that arrives on an interface without an IPv4 address. So, by default, the TUN's own
value is 0 (the effective value is then ``all``'s), and 2 when the TUN is given an
address (then other packets pass even with ``all`` strict).

The device is not persistent: when the last descriptor closes (the agent exits or is
killed), the kernel deletes it and every route through it; the flow's blackhole route
then keeps the flow dropped (see :mod:`hostsec.platform.linux.routing`). The descriptor
is close-on-exec, so a program the agent runs cannot keep the device alive; forked
workers of the data path must die with the agent (``PR_SET_PDEATHSIG``) for the same
reason.

With ``vnet_hdr`` every read and write starts with a virtio-net header
(:class:`VnetHeader`, ``IFF_VNET_HDR``): a writer may then hand the kernel a TCP
super-packet (a GSO packet, like one NIC receive offload assembled) in one system call,
and with ``offload`` (``TUNSETOFFLOAD``) the kernel may hand the reader TCP super-packets
of up to 64 KB (TSO) and packets whose checksum is left partial. What a header asks for
is the reader's job (:mod:`hostsec.ipsec.offload` splits and completes). Not yet:
``IFF_MULTI_QUEUE``; the readers and writers of one descriptor are enough for one
process per direction.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

import pytun
from pyroute2 import IPRoute

from hostsec.platform.linux import sysctl

DEFAULT_NAME = "hostsec0"
DEFAULT_MTU = 1400
DEFAULT_TXQUEUELEN = 2048
MIN_MTU = 576  # RFC 791: every IPv4 host must accept 576-octet datagrams
MIN_MTU_V6 = 1280  # RFC 8200 5

# <linux/if_tun.h>
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int)
TUN_F_CSUM = 0x01  # the reader takes packets with a partial checksum
TUN_F_TSO4 = 0x02  # ... and TCP/IPv4 super-packets
TUN_F_TSO6 = 0x04  # ... and TCP/IPv6 super-packets
TUN_F_TSO_ECN = 0x08
OFFLOAD_TSO = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN

# <linux/virtio_net.h>: struct virtio_net_hdr, in host byte order on a TUN device
VNET_HDR_LEN = 10
VNET_F_NEEDS_CSUM = 0x01  # checksum at csum_start + csum_offset is partial
VNET_F_DATA_VALID = 0x02  # checksum already verified
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_GSO_UDP = 3
VNET_GSO_TCPV6 = 4
VNET_GSO_ECN = 0x80
_VNET = struct.Struct("=BBHHHH")
_IFREQ = struct.Struct("16sH22x")


class VnetHeader(NamedTuple):
    """struct virtio_net_hdr: what a packet read from or written to the TUN device is."""

    flags: int = 0
    gso_type: int = VNET_GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return _VNET.pack(*self)

    @classmethod
    def unpack(cls, data: bytes) -> VnetHeader:
        """The header at the start of ``data`` (at least :data:`VNET_HDR_LEN` octets)."""
        return cls(*_VNET.unpack_from(data))


#: The header of a plain packet: no offload, the kernel checks the checksum.
PLAIN_VNET_HDR = VnetHeader().pack()


def tcp_gso_header(segment_size: int, header_len: int, csum_start: int, ipv6: bool) -> bytes:
    """The header of a TCP super-packet written to the TUN device: segments of
    ``segment_size`` payload octets, TCP checksum partial (pseudo-header sum in the field)."""
    return _VNET.pack(
        VNET_F_NEEDS_CSUM,
        VNET_GSO_TCPV6 if ipv6 else VNET_GSO_TCPV4,
        header_len,
        segment_size,
        csum_start,
        16,  # offsetof(struct tcphdr, check)
    )


def tun_flags(fd: int) -> int:
    """The IFF_* flags of the TUN device open on ``fd`` (``TUNGETIFF``)."""
    result = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    flags: int = _IFREQ.unpack(result)[1]
    return flags


def has_vnet_header(fd: int) -> bool:
    """True if reads and writes on ``fd`` carry a virtio-net header."""
    return bool(tun_flags(fd) & IFF_VNET_HDR)


def set_offload(fd: int, flags: int) -> None:
    """``TUNSETOFFLOAD``: which offloads the reader of ``fd`` accepts (TUN_F_*)."""
    fcntl.ioctl(fd, TUNSETOFFLOAD, flags)


@dataclass(frozen=True, slots=True)
class TunConfig:
    name: str = DEFAULT_NAME
    mtu: int = DEFAULT_MTU
    # Carry IPv6 flows. Without, IPv6 is disabled on the device (and the kernel refuses
    # IPv6 routes through it); with, IPv6 stays on but never talks by itself.
    ipv6: bool = False
    # An optional IPv4 address for the device. Without one, Linux's loose reverse-path
    # check fails for packets written into the TUN whose reverse route is not the TUN;
    # the flows' own packets pass anyway because the routing rules mirror them (see
    # hostsec.platform.linux.routing). Give one only to accept other packets as well.
    ipv4_address: ipaddress.IPv4Interface | None = None
    # The TUN's own rp_filter; None: 2 with ipv4_address, else 0 (see the module text).
    rp_filter: int | None = None
    nonblocking: bool = False
    # Packets the kernel queues for the reader. Linux drops what does not fit, and TCP
    # small queues let one connection have ~1 MB (750+ packets) in flight below it: the
    # default of 500 turns a reader's hiccup into retransmits. None: the kernel's default.
    txqueuelen: int | None = DEFAULT_TXQUEUELEN
    # Reads and writes carry a virtio-net header (IFF_VNET_HDR): GSO writes.
    vnet_hdr: bool = False
    # TUN_F_* offloads the reader accepts (needs vnet_hdr), e.g. OFFLOAD_TSO; 0: none.
    offload: int = 0

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 15 or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"bad interface name {self.name!r}")
        floor = MIN_MTU_V6 if self.ipv6 else MIN_MTU
        if not floor <= self.mtu <= 65535:
            raise ValueError(f"TUN MTU must be {floor} to 65535")
        if self.rp_filter not in (None, 0, 1, 2):
            raise ValueError("rp_filter is 0, 1 or 2")
        if self.offload and not self.vnet_hdr:
            raise ValueError("offloads need the virtio-net header (vnet_hdr)")

    @property
    def own_rp_filter(self) -> int:
        if self.rp_filter is not None:
            return self.rp_filter
        return sysctl.RP_FILTER_LOOSE if self.ipv4_address is not None else sysctl.RP_FILTER_OFF


class LinuxTun:
    """An open, configured TUN device (layer 3, no packet-information header)."""

    def __init__(self, config: TunConfig = TunConfig()) -> None:
        self.config = config
        flags = pytun.IFF_TUN | pytun.IFF_NO_PI
        if config.vnet_hdr:
            flags |= IFF_VNET_HDR
        self._dev = pytun.TunTapDevice(name=config.name, flags=flags)
        try:
            fd: int = self._dev.fileno()
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)  # pytun leaves it off
            if config.vnet_hdr:
                set_offload(fd, config.offload)
            if config.nonblocking:
                os.set_blocking(fd, False)
            self._name: str = self._dev.name
            if config.ipv6:
                sysctl.quiet_ipv6(self._name)
            else:
                sysctl.disable_ipv6(self._name)
            sysctl.write_sysctl(
                sysctl.interface_key(4, self._name, "rp_filter"), config.own_rp_filter
            )
            self._dev.mtu = config.mtu
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=self._name)[0]
                if config.txqueuelen is not None:
                    ipr.link("set", index=index, txqlen=config.txqueuelen)
                if config.ipv4_address is not None:
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(config.ipv4_address.ip),
                        prefixlen=config.ipv4_address.network.prefixlen,
                    )
            self._dev.up()
        except BaseException:
            self._dev.close()
            raise
        self._fd = fd
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu(self) -> int:
        mtu: int = self._dev.mtu
        return mtu

    def set_mtu(self, mtu: int) -> None:
        self._dev.mtu = mtu

    def fileno(self) -> int:
        return self._fd

    @property
    def vnet_hdr(self) -> bool:
        return self.config.vnet_hdr

    def read(self, size: int = 65535) -> bytes:
        """One packet (with ``vnet_hdr``: preceded by its :class:`VnetHeader`)."""
        return os.read(self._fd, size)

    def write(self, packet: bytes) -> int:
        """Write one packet (with ``vnet_hdr``: preceded by its :class:`VnetHeader`)."""
        return os.write(self._fd, packet)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._dev.close()

    def __enter__(self) -> LinuxTun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tun(
    name: str = DEFAULT_NAME, mtu: int = DEFAULT_MTU, ipv6: bool = False, nonblocking: bool = False
) -> LinuxTun:
    """Open and configure the TUN device ``name`` in this thread's network namespace."""
    return LinuxTun(TunConfig(name=name, mtu=mtu, ipv6=ipv6, nonblocking=nonblocking))
