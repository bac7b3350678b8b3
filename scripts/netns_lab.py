"""Two hosts in network namespaces for poking at by hand, torn down on exit.

    scripts/netns_lab.py up            # a (198.51.100.1, 2001:db8::1) <-> b (.2, ::2)
    scripts/netns_lab.py up --hosts 3  # and c (203.0.113.2) behind b (203.0.113.1)
    scripts/netns_lab.py list          # lab namespaces on this machine and their owners
    scripts/netns_lab.py cleanup       # remove lab namespaces whose owner process is gone

``up`` prints the commands to enter each host and waits for Ctrl-C (or Enter), then
removes everything. Run as root, from the repository: ``PYTHONPATH=. python scripts/...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from hostsec.platform.netns import Lab, lab_namespaces, remove_stale


def _up(args: argparse.Namespace) -> int:
    with Lab(prefix=args.prefix) as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        lab.connect(a, b, ipv6=True, mtu=args.mtu)
        hosts = [a, b]
        if args.hosts == 3:
            c = lab.add_host("c")
            lab.connect(b, c, subnet="203.0.113.0/24", mtu=args.mtu)
            hosts.append(c)
        for host in hosts:
            addrs = ", ".join(
                f"{ifname} {' '.join(str(x) for x in addr)}"
                for ifname, addr in host.interfaces.items()
            )
            print(f"{host.name}: ip netns exec {host.netns} bash    # {addrs}")
        print("Enter or Ctrl-C tears everything down.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.readline()
    print("lab removed")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name, pid in lab_namespaces(args.prefix):
        alive = os.path.exists(f"/proc/{pid}")
        print(f"{name}\towner {pid} {'running' if alive else 'gone'}")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    for name in remove_stale(args.prefix):
        print(f"removed {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prefix", default="hs", help="namespace name prefix (default hs)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the hosts, wait, tear down")
    up.add_argument("--hosts", type=int, choices=(2, 3), default=2)
    up.add_argument("--mtu", type=int, default=1500)
    sub.add_parser("list", help="list lab namespaces")
    sub.add_parser("cleanup", help="remove namespaces of labs whose process is gone")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("netns_lab: needs root", file=sys.stderr)
        return 1
    return {"up": _up, "list": _list, "cleanup": _cleanup}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
