"""How much room ESP, AH and UDP encapsulation take: the TUN's (or a route's) MTU.

Packets the agent sends on raw sockets are never fragmented by the kernel (they fail
with EMSGSIZE), and TCP takes its MSS from the route's MTU, so the MTU of the path into
the TUN must be the largest inner packet whose protected form still fits the link:
:func:`inner_mtu`. Sizes follow RFC 4303 2 (ESP: SPI, sequence number, IV, padding to
the cipher's block size and 4 octets, pad length, next header, ICV), RFC 4302 2 (AH:
12 octets, ICV, padded to 32 bits for IPv4 and 64 bits for IPv6), RFC 3948 2.1 (8
octets of UDP). Tunnel mode adds an outer IP header; transport mode keeps the inner one.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY, EncrId, IntegId
from hostsec.wire.ah import AH_FIXED_LEN, ah_icv_padding

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
ESP_HEADER = 8  # SPI, sequence number
ESP_TRAILER = 2  # pad length, next header


@dataclass(frozen=True, slots=True)
class TransformSet:
    """The protection of one flow, as far as sizes go."""

    esp_encryption: EncrId | None = None  # None: no ESP
    esp_integrity: IntegId | None = None  # None with an AEAD (or with no ESP)
    ah_integrity: IntegId | None = None  # None: no AH
    tunnel: bool = False
    udp_encapsulation: bool = False
    outer_version: int = 4  # IP version of the outer header (the SA's endpoints)

    def __post_init__(self) -> None:
        if self.esp_encryption is None and self.ah_integrity is None:
            raise ValueError("a transform set has ESP, AH or both")
        if self.udp_encapsulation and (self.esp_encryption is None or self.ah_integrity):
            raise ValueError("UDP encapsulation is for ESP alone (RFC 3948)")
        if self.outer_version not in (4, 6):
            raise ValueError("outer IP version is 4 or 6")


def _esp_sizes(ts: TransformSet) -> tuple[int, int, int]:
    """(fixed octets before the payload, block size, ICV octets) of the ESP part."""
    assert ts.esp_encryption is not None
    algo = ENCRYPTION[ts.esp_encryption]
    if algo.aead:
        icv = algo.icv_len
        block = max(4, algo.block_size)
    else:
        if ts.esp_integrity is None or ts.esp_integrity is IntegId.NONE:
            raise ValueError("ESP without an AEAD needs an integrity algorithm")
        icv = INTEGRITY[ts.esp_integrity].icv_len
        block = max(4, algo.block_size)
    return ESP_HEADER + algo.iv_len, block, icv


def _ah_size(ts: TransformSet) -> int:
    assert ts.ah_integrity is not None
    icv = INTEGRITY[ts.ah_integrity].icv_len
    return AH_FIXED_LEN + icv + ah_icv_padding(icv, ts.outer_version == 6)


def protected_size(inner: int, ts: TransformSet, inner_header: int = IPV4_HEADER) -> int:
    """Octets on the wire for an inner IP packet of ``inner`` octets whose IP header
    (with extension headers/options, transport mode) is ``inner_header`` octets."""
    if inner < inner_header:
        raise ValueError("inner packet shorter than its header")
    outer_ip = IPV6_HEADER if ts.outer_version == 6 else IPV4_HEADER
    if ts.tunnel:
        header, protected = outer_ip, inner  # the whole inner packet is the payload
    else:
        header, protected = inner_header, inner - inner_header
    size = protected
    if ts.esp_encryption is not None:
        before, block, icv = _esp_sizes(ts)
        size = before + -(-(size + ESP_TRAILER) // block) * block + icv
        if ts.udp_encapsulation:
            size += UDP_HEADER
    if ts.ah_integrity is not None:
        size += _ah_size(ts)
    return header + size


def max_overhead(ts: TransformSet, inner_header: int = IPV4_HEADER) -> int:
    """The most octets protection adds to any packet (worst-case padding)."""
    return max(protected_size(inner_header + n, ts, inner_header) - inner_header - n
               for n in range(64))  # fmt: skip


def inner_mtu(link_mtu: int, ts: TransformSet, inner_header: int = IPV4_HEADER) -> int:
    """The largest inner packet whose protected form fits in ``link_mtu`` octets."""
    size = link_mtu - max_overhead(ts, inner_header)
    if size < inner_header:
        raise ValueError(f"link MTU {link_mtu} leaves no room for a packet")
    while protected_size(size + 1, ts, inner_header) <= link_mtu:
        size += 1
    return size


def tun_mtu(link_mtu: int, transform_sets: list[TransformSet], ipv6: bool = False) -> int:
    """One MTU for a TUN that carries flows with all these transform sets: the smallest."""
    inner_header = IPV6_HEADER if ipv6 else IPV4_HEADER
    return min(inner_mtu(link_mtu, ts, inner_header) for ts in transform_sets)
