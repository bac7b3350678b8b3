"""A network-namespace lab: hosts, veth links, processes and captures, always torn down.

Used by the netns tests and by ``hostsec demo``. Every namespace is named
``<prefix><pid>-<n>-<host>`` (``n`` counts the labs of the process) so that labs of
concurrent runs never collide and leftovers of a crashed run are recognisable
(:func:`remove_stale` deletes those whose PID is gone).
Veth pairs are created directly between two namespaces: nothing is ever created in the
namespace the lab runs in. Addresses come from 198.51.100.0/24 (and 2001:db8::/64), or
203.0.113.0/24 for a second subnet.

    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        lab.connect(a, b)                    # a 198.51.100.1, b 198.51.100.2
        b.popen(["python3", "-m", "http.server", "80"])
        print(a.run(["ping", "-c1", "198.51.100.2"]).stdout)
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from hostsec.platform.capture import Capture
from hostsec.platform.linux.sysctl import read_sysctl, write_sysctl
from hostsec.platform.nsenter import NETNS_RUN_DIR, Child, call_in, entered, spawn_in

_T = TypeVar("_T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

DEFAULT_PREFIX = "hs"
SUBNET4 = ipaddress.IPv4Network("198.51.100.0/24")
SUBNET4_B = ipaddress.IPv4Network("203.0.113.0/24")
SUBNET6 = ipaddress.IPv6Network("2001:db8::/64")
_ALLOWED = (SUBNET4, SUBNET4_B, ipaddress.IPv6Network("2001:db8::/32"))
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_LAB_NUMBERS = itertools.count()


def _check_allowed(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    if not any(net.version == a.version and net.subnet_of(a) for a in _ALLOWED):  # type: ignore[arg-type]
        raise ValueError(f"{net}: labs only use 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32")


class Host:
    """One network namespace of a :class:`Lab`."""

    def __init__(self, lab: Lab, name: str, netns: str) -> None:
        self.lab = lab
        self.name = name
        self.netns = netns
        self.interfaces: dict[str, list[IPInterface]] = {}

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r})"

    # -- addresses -------------------------------------------------------------------

    def address(self, version: int = 4, interface: str | None = None) -> IPAddress:
        """The first address of this host of IP ``version`` (on ``interface``)."""
        for ifname, addrs in self.interfaces.items():
            if interface is not None and ifname != interface:
                continue
            for a in addrs:
                if a.version == version:
                    return a.ip
        raise LookupError(f"{self.name} has no IPv{version} address")

    @property
    def ip(self) -> IPAddress:
        return self.address(4)

    @property
    def ip6(self) -> IPAddress:
        return self.address(6)

    # -- running things inside ---------------------------------------------------------

    def iproute(self) -> IPRoute:
        """A pyroute2 IPRoute bound to this namespace (never creates it)."""
        return IPRoute(netns=self.netns, flags=0)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread inside the host for the block (objects opened keep the namespace)."""
        with entered(self.netns):
            yield

    def call(self, fn: Callable[..., _T], *args: Any, timeout: float = 30.0, **kw: Any) -> _T:
        """``fn(*args, **kw)`` in a forked child inside this host; its (pickled) result."""
        return call_in(self.netns, fn, *args, timeout=timeout, **kw)

    def spawn(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Child:
        """``fn(conn, *args, **kw)`` in a forked child inside this host, left running.
        ``Child.conn`` talks to ``conn``; the lab stops the child (by PID) at the end."""
        child = spawn_in(self.netns, fn, *args, **kw)
        self.lab._children.append(child)
        return child

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run in this host (``ip netns exec`` execs, keeping the PID)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a process in this host; the lab ends it by PID at the end."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.argv(argv), **kw)  # noqa: S603
        self.lab._procs.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 30.0, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in this host to completion; stdout/stderr as text."""
        return subprocess.run(  # noqa: S603 - an argv list from the caller, no shell
            self.argv(argv), check=check, timeout=timeout, capture_output=True, text=True, **kw
        )

    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read (and with ``value``, first write) ``/proc/sys/<key>`` inside this host."""
        with self.entered():
            if value is not None:
                write_sysctl(key, value)
            return read_sysctl(key)

    def capture(self, interface: str, path: str | Path | None = None, bpf: str = "") -> Capture:
        """A started tcpdump on ``interface`` in this host; stop it with ``.stop()``."""
        if path is None:
            path = self.lab.workdir / f"{self.name}-{interface}-{len(self.lab._captures)}.pcap"
        cap = Capture(["ip", "netns", "exec", self.netns], interface, path, bpf)
        self.lab._captures.append(cap)
        return cap.start()


class Link:
    """A veth pair between two hosts."""

    def __init__(self, a: Host, a_if: str, b: Host, b_if: str) -> None:
        self.a, self.a_if, self.b, self.b_if = a, a_if, b, b_if

    def interface_of(self, host: Host) -> str:
        return self.a_if if host is self.a else self.b_if


class Lab:
    """Network namespaces joined by veth pairs; :meth:`close` removes everything it made."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, workdir: str | Path | None = None) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", prefix):
            raise ValueError("lab prefix: 1-8 lowercase letters and digits")
        self.prefix = prefix
        self.tag = f"{prefix}{os.getpid()}-{next(_LAB_NUMBERS)}"
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self._children: list[Child] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._captures: list[Capture] = []
        self._own_workdir = workdir is None
        if workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        else:
            self.workdir = Path(workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        self._closed = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str, ipv6: bool = True) -> Host:
        """A new namespace with loopback up (and IPv6 disabled unless ``ipv6``)."""
        if not _NAME.match(name):
            raise ValueError("host name: 1-8 lowercase letters and digits, starting with a letter")
        if name in self.hosts:
            raise ValueError(f"host {name} exists")
        netns = f"{self.tag}-{name}"
        if (NETNS_RUN_DIR / netns).exists():
            raise FileExistsError(f"network namespace {netns} exists")
        pr_netns.create(netns)
        host = Host(self, name, netns)
        self.hosts[name] = host
        with host.iproute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        if not ipv6:
            host.sysctl("net/ipv6/conf/all/disable_ipv6", 1)
            host.sysctl("net/ipv6/conf/default/disable_ipv6", 1)
        else:  # no duplicate address detection: addresses usable at once
            host.sysctl("net/ipv6/conf/all/accept_dad", 0)
            host.sysctl("net/ipv6/conf/default/accept_dad", 0)
        return host

    def _next_addresses(
        self, net: ipaddress.IPv4Network | ipaddress.IPv6Network
    ) -> tuple[IPInterface, IPInterface]:
        used = {a.ip for h in self.hosts.values() for addrs in h.interfaces.values() for a in addrs}
        free = (ip for ip in net.hosts() if ip not in used)
        first, second = next(free), next(free)
        return (
            ipaddress.ip_interface(f"{first}/{net.prefixlen}"),
            ipaddress.ip_interface(f"{second}/{net.prefixlen}"),
        )

    def connect(
        self,
        a: Host,
        b: Host,
        subnet: str | None = None,
        ipv6: bool = False,
        mtu: int = 1500,
        addresses: tuple[str, str] | None = None,
    ) -> Link:
        """A veth pair between ``a`` and ``b`` with addresses from ``subnet`` (default
        198.51.100.0/24, the next free ones) and, with ``ipv6``, from 2001:db8::/64."""
        net4 = ipaddress.IPv4Network(subnet) if subnet else SUBNET4
        _check_allowed(net4)
        if addresses is not None:
            pair4 = (ipaddress.ip_interface(addresses[0]), ipaddress.ip_interface(addresses[1]))
            for p in pair4:
                _check_allowed(p.network)
        else:
            pair4 = self._next_addresses(net4)
        a_if, b_if = f"to{b.name}"[:15], f"to{a.name}"[:15]
        with a.iproute() as ipr:
            ipr.link("add", ifname=a_if, kind="veth", peer={"ifname": b_if, "net_ns_fd": b.netns})
        pairs: list[tuple[IPInterface, IPInterface]] = [pair4]
        if ipv6:
            pairs.append(self._next_addresses(SUBNET6))
        for host, ifname, index in ((a, a_if, 0), (b, b_if, 1)):
            with host.iproute() as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.link("set", index=idx, mtu=mtu)
                for pair in pairs:
                    addr = pair[index]
                    ipr.addr(
                        "add", index=idx, address=str(addr.ip), prefixlen=addr.network.prefixlen
                    )
                    host.interfaces.setdefault(ifname, []).append(addr)
                ipr.link("set", index=idx, state="up")
        link = Link(a, a_if, b, b_if)
        self.links.append(link)
        return link

    def close(self) -> None:
        """End every process the lab started (by PID), then delete its namespaces."""
        if self._closed:
            return
        self._closed = True
        for cap in self._captures:
            with contextlib.suppress(Exception):
                cap.stop()
        for child in self._children:
            with contextlib.suppress(Exception):
                child.stop(timeout=2)
        for proc in self._procs:
            _end(proc)
        for host in self.hosts.values():
            remove_netns(host.netns)
        self.hosts.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(3)


def netns_pids(netns: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``netns``."""
    try:
        target = os.stat(NETNS_RUN_DIR / netns)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def remove_netns(netns: str, grace: float = 2.0) -> None:
    """Delete namespace ``netns``: first end (by PID) whatever still runs inside it.

    Only for namespaces a lab made: everything inside was started by the lab or its
    children. With no process left, the kernel destroys the namespace and its veths.
    """
    pids = [p for p in netns_pids(netns) if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _running(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            break
    if (NETNS_RUN_DIR / netns).exists():
        pr_netns.remove(netns)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def lab_namespaces(prefix: str = DEFAULT_PREFIX) -> list[tuple[str, int]]:
    """(namespace, owner PID) of every lab namespace with ``prefix``."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-\d+-[a-z][a-z0-9]*$")
    out = []
    if NETNS_RUN_DIR.is_dir():
        for name in sorted(os.listdir(NETNS_RUN_DIR)):
            m = pattern.match(name)
            if m:
                out.append((name, int(m.group(1))))
    return out


def remove_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete the lab namespaces with ``prefix`` whose owning process is gone."""
    removed = []
    for name, pid in lab_namespaces(prefix):
        if pid != os.getpid() and not _running(pid):
            remove_netns(name)
            removed.append(name)
    return removed
