"""Per-namespace kernel settings under /proc/sys (Linux).

The network sysctls under ``/proc/sys/net`` belong to the network namespace of the
thread that opens the file, so these helpers act on the caller's namespace.

Reverse-path filtering (RFC 3704; Linux ``rp_filter``): 0 off, 1 strict, 2 loose. The
value in force for an interface is the maximum of ``all`` and the interface's own
value. Linux's loose mode drops every packet that arrives on an interface without an
IPv4 address, so for the address-less TUN it is no better than strict; see
:mod:`hostsec.platform.linux.tun` for what the TUN gets.
"""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")
RP_FILTER_OFF = 0
RP_FILTER_STRICT = 1
RP_FILTER_LOOSE = 2


def _path(key: str) -> Path:
    key = key.replace(".", "/") if "/" not in key else key
    path = PROC_SYS / key
    if ".." in Path(key).parts:
        raise ValueError(f"bad sysctl key {key!r}")
    return path


def read_sysctl(key: str) -> str:
    """The value of ``key`` (``net/ipv4/conf/all/rp_filter`` or ``net.ipv4...``)."""
    return _path(key).read_text().strip()


def write_sysctl(key: str, value: str | int) -> None:
    _path(key).write_text(f"{value}\n")


def interface_key(family: int, interface: str, name: str) -> str:
    """``net/ipv4/conf/<if>/<name>`` (family 4) or ``net/ipv6/conf/<if>/<name>`` (6).
    Interface names may contain dots, so the slash form is always used."""
    if "/" in interface or interface in (".", ".."):
        raise ValueError(f"bad interface name {interface!r}")
    return f"net/ipv{family}/conf/{interface}/{name}"


def effective_rp_filter(interface: str) -> int:
    """The reverse-path filter mode the kernel applies on ``interface``: max(all, dev)."""
    every = int(read_sysctl(interface_key(4, "all", "rp_filter")))
    own = int(read_sysctl(interface_key(4, interface, "rp_filter")))
    return max(every, own)


def ipv6_available() -> bool:
    return (PROC_SYS / "net/ipv6/conf/all").is_dir()


def disable_ipv6(interface: str) -> None:
    """No IPv6 on ``interface`` (no link-local address, no RS/MLD/DAD noise)."""
    if ipv6_available():
        write_sysctl(interface_key(6, interface, "disable_ipv6"), 1)


def quiet_ipv6(interface: str) -> None:
    """IPv6 on ``interface`` but without self-generated traffic: no link-local address
    (``addr_gen_mode`` 1), no router solicitations, no autoconfiguration."""
    if not ipv6_available():
        return
    for name, value in (
        ("addr_gen_mode", 1),
        ("accept_ra", 0),
        ("autoconf", 0),
        ("router_solicitations", 0),
        ("accept_dad", 0),
    ):
        write_sysctl(interface_key(6, interface, name), value)
