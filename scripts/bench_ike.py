#!/usr/bin/env python3
"""IKEv2 set-up cost of hostsec next to strongSwan 5.9, measured in the same run.

For aes128gcm16-prfsha256-ecp256 (ESP aes128gcm16) and aes256-sha256-modp2048 (ESP
aes256-sha256), PSK authentication, three pairings in network namespaces:

    hostsec -> hostsec         two agents (transport mode, the hostsec default)
    hostsec -> strongSwan      an agent initiating to a charon (tunnel mode in UDP: all
                               that strongSwan's userspace backend carries here)
    strongSwan -> strongSwan   two charons (the recipe of ../shared/interop/)

and for each:

* set-up time of an IKE_SA with its first CHILD_SA: one initiation at a time, each with a
  fresh IKE SA; median and p95 over 50 runs (after 5 warm-up runs). The runs of the three
  pairings are interleaved (run i of each, then run i+1) so that a busy machine weighs on
  all three alike. Timed in the client from the request to the answer: hostsec through its
  control socket (``up`` with ``wait``: the agent answers once the CHILD SA is installed,
  and also reports the time it measured itself), strongSwan through vici (``initiate``,
  which answers once the CHILD_SA is installed). No process start-up is counted.
* set-up rate: 200 initiated at once (hostsec: 200 concurrent ``up --wait`` requests, one
  per flow, each flow with its own peer, named by the flow as vici names the child: for a
  peer name the agent looks through all its flows; strongSwan: 200 vici ``initiate`` with
  ``timeout = -1``), from the first request
  to the last CHILD SA reported up; median of 7 rounds. With it, the CPU time both
  daemons used per SA (hostsec: both agents with their data-path workers; strongSwan: both
  charons), which a busy machine disturbs far less than the rate.

Then memory per established IKE_SA + CHILD_SA with 1000 up (first proposal only):

* hostsec: the agent keys IKE SAs by peer address, one peer per address, and an IPv4 link
  here has at most ~500 usable addresses (198.51.100.0/24 and 203.0.113.0/24), while the
  agent speaks IKE over IPv4 only. So 1000 SAs are 4 pairs of agents in their own
  namespaces, 250 peers each (initiator addresses 198.51.100.1-250, responder addresses
  203.0.113.1-250, one address per peer on each side). Memory per SA = the summed RSS
  growth of the 4 responder agents (main process + both data-path workers, which hold the
  ESP SAs) divided by the SAs up; the same for the initiators.
* strongSwan: two charons, 1000 IKE_SAs of one connection between one address pair
  (``reuse_ikesa = no``); RSS growth of the responder (and initiator) charon / SAs up.

Baselines are taken after a warm-up SA was set up and deleted (one-off allocations are not
per-SA costs) and the daemons idled a second; the "after" figure 2 s after the last SA
came up. The agent's main process hardly grows: its heap still has room left by start-up
(installing hundreds of flows), which the IKE SAs fill. So the target is judged on the
workers' RSS growth plus, for the main process, the larger of its RSS growth and the
Python heap its IKE state takes (tracemalloc, measured in this process with the agent's
own policy loader, translate functions and IkeManager; a lower bound, as OpenSSL's own
allocations are not seen).

    scripts/bench_ike.py             a table           (as root; about 3 minutes)
    scripts/bench_ike.py --json      one JSON object
    scripts/bench_ike.py --quick     10 runs, 50 at once, 4 x 25 peers (a smoke run)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import json
import math
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_swan import Charon, ChildWatcher

from hostsec import __version__
from hostsec.agent.control import ControlError, request, socket_path
from hostsec.agent.lab import AgentLab
from hostsec.agent.swanlab import CHARON
from hostsec.agent.translate import IkeCredentials, child_config, ike_config, ike_sa_configs
from hostsec.ike.v2.events import ChildSAUp, Transmit
from hostsec.ike.v2.manager import IkeManager
from hostsec.platform.netns import Host, Lab
from hostsec.policy import PolicySet, read_policy_file, read_secret_file

PROPOSALS = (
    ("aes128gcm16-prfsha256-ecp256", "aes128gcm16"),
    ("aes256-sha256-modp2048", "aes256-sha256"),
)
PSK = "bench-ike-pre-shared-key-0123456789"
AGENT_START = 600.0  # seconds an agent with hundreds of flows may take to come up
HS_HS, HS_SW, SW_SW = "hostsec->hostsec", "hostsec->strongSwan", "strongSwan->strongSwan"
PAIRINGS = (HS_HS, HS_SW, SW_SW)


# ---------------------------------------------------------------------------- helpers


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ip_batch(host: Host, commands: list[str]) -> None:
    if commands:
        host.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", timeout=120)


def tree_rss(pid: int) -> int:
    """RSS of a process and its descendants (an agent and its data-path workers)."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


def control_up(run_dir: Path, name: str, timeout: float) -> dict[str, Any]:
    """``up`` with ``wait`` on the agent's control socket. Unlike
    :func:`hostsec.agent.control.request` the connect blocks (no socket timeout): with
    hundreds of requests at once the agent's listen backlog fills, and a connect with a
    timeout then fails at once (EAGAIN) instead of waiting its turn."""
    payload = {"command": "up", "name": name, "wait": True, "timeout": timeout}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(socket_path(run_dir)))
        sock.settimeout(timeout + 30)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = json.loads(b"".join(chunks))
    if not response.get("ok"):
        raise ControlError(str(response.get("error")))
    result: dict[str, Any] = response["result"]
    return result


def udp_drops(hosts: list[Host]) -> int:
    """Datagrams the kernel dropped for a full socket receive buffer, in these hosts."""
    total = 0
    for host in hosts:
        rows = [r.split() for r in host.run(["cat", "/proc/net/snmp"]).stdout.splitlines()]
        udp = [r for r in rows if r and r[0] == "Udp:"]
        if len(udp) >= 2 and "RcvbufErrors" in udp[0]:
            total += int(udp[1][udp[0].index("RcvbufErrors")])
    return total


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by processes and their descendants."""
    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    return total


def hostsec_policy(
    peers: list[tuple[str, str, str]], ike: str, esp: str, port: str, mode: str
) -> str:
    """One file: a peer (name, address, local address) and its tcp/23 flow, each started
    only on request."""
    parts = []
    for name, address, local in peers:
        parts.append(
            f'[[peer]]\nname = "{name}"\naddress = "{address}"\nlocal_address = "{local}"\n'
            f'auth = "psk"\npsk_file = "../secrets/peer.psk"\nike_proposals = ["{ike}"]\n'
            f'dpd = "off"\n\n'
            f'[[flow]]\nname = "f-{name}"\npeer = "{name}"\nprotocol = "tcp"\n{port}\n'
            f'mode = "{mode}"\nesp_proposals = ["{esp}"]\nstart = "manual"\n'
        )
    return "\n".join(parts)


class BenchLab(AgentLab):
    """AgentLab with two hosts whose link addresses are given (one per side)."""

    def __init__(self, prefix: str, hosts: tuple[str, str], addresses: tuple[str, str]) -> None:
        self.lab = Lab(prefix=prefix)
        self.hosts = {name: self.lab.add_host(name, ipv6=False) for name in hosts}
        self.link = self.lab.connect(
            self.hosts[hosts[0]], self.hosts[hosts[1]], addresses=addresses
        )
        self.agents = {}
        self.logs = {}
        self.root = self.lab.workdir

    def control(self, host: str, command: str, timeout: float = 30.0, **args: Any) -> Any:
        return request(self.run_dir(host), command, args, timeout=timeout)

    def ike_count(self, name: str) -> int:
        return len(self.status(name)["ike_sas"])

    def agent_rss(self, name: str) -> tuple[int, int]:
        """(main process, main + workers) RSS of an agent."""
        pid = self.agents[name].pid
        return int(psutil.Process(pid).memory_info().rss), tree_rss(pid)


# ---------------------------------------------------------------------------- pairings


class Pairing:
    """Two daemons that set up IKE SAs with each other."""

    name = ""

    def __init__(self, n: int, ike: str, esp: str, prefix: str) -> None:
        self.n, self.ike, self.esp, self.prefix = n, ike, esp, prefix

    def start(self) -> None:
        raise NotImplementedError

    def setup_once(self, i: int) -> tuple[float, float | None]:
        """Set up SA number ``i`` (0-based): (client round trip, daemon-measured) seconds."""
        raise NotImplementedError

    def burst(self, count: int, timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    def teardown(self, timeout: float = 60.0) -> None:
        """Delete every SA and wait until both sides have none."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def memory(self) -> dict[str, int]:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The daemons (their descendants count with them)."""
        raise NotImplementedError

    def hosts(self) -> list[Host]:
        raise NotImplementedError


class HostsecInitiates(Pairing):
    """A pairing whose initiator is a hostsec agent (lab host ``initiator``, peers named
    ``peer_prefix`` + k), driven through its control socket."""

    initiator = ""
    peer_prefix = ""
    lab: BenchLab
    used: set[int]

    def sas_left(self) -> int:
        """IKE SAs on both sides."""
        raise NotImplementedError

    def up(self, k: int, timeout: float = 10.0) -> dict[str, Any]:
        self.used.add(k)
        return control_up(self.lab.run_dir(self.initiator), f"f-{self.peer_prefix}{k}", timeout)

    def setup_once(self, i: int) -> tuple[float, float | None]:
        start = time.perf_counter()
        result = self.up(i + 1)
        rtt = time.perf_counter() - start
        if not result["ok"]:
            raise RuntimeError(f"{self.name}: SA {i + 1} not up: {result}")
        return rtt, float(result["elapsed"])

    def burst(self, count: int, timeout: float) -> dict[str, Any]:
        return hostsec_burst(self.up, range(1, count + 1), timeout)

    def teardown(self, timeout: float = 60.0) -> None:
        for k in sorted(self.used):
            with contextlib.suppress(ControlError):
                self.lab.control(self.initiator, "down", name=f"{self.peer_prefix}{k}")
        self.used.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sas_left() == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: SAs left after the teardown")

    def hosts(self) -> list[Host]:
        return list(self.lab.hosts.values())


class HostsecPair(HostsecInitiates):
    """Agent ``hi`` (198.51.100.1-n) initiates to agent ``hr`` (203.0.113.1-n): peer k is
    203.0.113.k from 198.51.100.k, so each side has one peer per address."""

    name = HS_HS
    initiator, peer_prefix = "hi", "r"

    def __init__(self, n: int, ike: str, esp: str, prefix: str) -> None:
        super().__init__(n, ike, esp, prefix)
        if not 1 <= n <= 250:
            raise ValueError("a hostsec pair has 1 to 250 peers")
        self.lab = BenchLab(prefix, ("hi", "hr"), ("198.51.100.1/24", "203.0.113.1/24"))
        self.used: set[int] = set()

    @staticmethod
    def ini(k: int) -> str:
        return f"198.51.100.{k}"

    @staticmethod
    def res(k: int) -> str:
        return f"203.0.113.{k}"

    def start(self, wait: bool = True) -> None:
        lab, n = self.lab, self.n
        hi, hr = lab.hosts["hi"], lab.hosts["hr"]
        hi_if, hr_if = lab.interface("hi"), lab.interface("hr")
        # Extra addresses, and a host route per peer that makes the kernel pick the
        # peer's own local address (the agent's IKE socket does not choose one). Every
        # peer is reached through the other side's first address as gateway: one ARP
        # entry per side instead of one per peer (the kernel's neighbour table is shared
        # by all namespaces: 1024 entries in all, then "neighbor table overflow" and lost
        # packets).
        ip_batch(hi, [f"address add {self.ini(k)}/24 dev {hi_if}" for k in range(2, n + 1)])
        ip_batch(hr, [f"address add {self.res(k)}/24 dev {hr_if}" for k in range(2, n + 1)])
        ip_batch(hi, [f"route add {self.res(1)}/32 dev {hi_if} src {self.ini(1)}"])
        ip_batch(hr, [f"route add {self.ini(1)}/32 dev {hr_if} src {self.res(1)}"])
        via_r, via_i = f"via {self.res(1)} dev {hi_if}", f"via {self.ini(1)} dev {hr_if}"
        ip_batch(
            hi,
            [
                f"route add {self.res(k)}/32 {via_r} src {self.ini(k)} onlink"
                for k in range(2, n + 1)
            ],
        )
        ip_batch(
            hr,
            [
                f"route add {self.ini(k)}/32 {via_i} src {self.res(k)} onlink"
                for k in range(2, n + 1)
            ],
        )
        peers_i = [(f"r{k}", self.res(k), self.ini(k)) for k in range(1, n + 1)]
        peers_r = [(f"i{k}", self.ini(k), self.res(k)) for k in range(1, n + 1)]
        for host, peers, port in (
            ("hi", peers_i, "remote_port = 23"),
            ("hr", peers_r, "local_port = 23"),
        ):
            lab.write_secret(host, "peer.psk", PSK)
            lab.write_policy(host, hostsec_policy(peers, self.ike, self.esp, port, "transport"))
            lab.start_agent(host, wait=False)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        for host in ("hi", "hr"):
            self.lab.wait_ready(host, timeout=AGENT_START)

    def sas_left(self) -> int:
        return self.lab.ike_count("hi") + self.lab.ike_count("hr")

    def pids(self) -> list[int]:
        return [self.lab.agents["hi"].pid, self.lab.agents["hr"].pid]

    def memory(self) -> dict[str, int]:
        main_i, all_i = self.lab.agent_rss("hi")
        main_r, all_r = self.lab.agent_rss("hr")
        return {"initiator": all_i, "responder": all_r, "initiator_main": main_i,
                "responder_main": main_r}  # fmt: skip

    def close(self) -> None:
        self.lab.close()


def hostsec_burst(
    up: Callable[[int, float], dict[str, Any]], peers: range, timeout: float
) -> dict[str, Any]:
    """``up --wait`` for every peer at once, each on its own connection (a thread each)."""
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    lock = threading.Lock()
    ends: list[float] = []

    def one(k: int) -> None:
        try:
            result = up(k, timeout)
        except (ControlError, OSError) as exc:
            with lock:
                errors.append(str(exc))
            return
        with lock:
            results.append(result)
            ends.append(time.perf_counter())

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(peers)) as pool:
        list(pool.map(one, peers))
    ok = [r for r in results if r["ok"]]
    wall = (max(ends) - start) if ends else float("nan")
    span = max(r["finished"] for r in ok) - min(r["started"] for r in ok) if ok else float("nan")
    return {
        "initiated": len(peers),
        "up": len(ok),
        "seconds": wall,
        "rate": len(ok) / wall if ok else 0.0,
        "agent_seconds": span,
        "agent_rate": len(ok) / span if ok and span > 0 else 0.0,
        "errors": errors[:3] + [r["flows"] for r in results if not r["ok"]][:3],
    }


def charon_conn(ike: str, esp: str, initiator: bool, local: str | None, remote: str | None,
                mode: str = "tunnel") -> dict[str, Any]:  # fmt: skip
    conn: dict[str, Any] = {
        "version": "2",
        "proposals": [ike],
        "unique": "never",  # many SAs with one identity; INITIAL_CONTACT must not clear them
        "local": {"auth": "psk"},
        "remote": {"auth": "psk"},
        "children": {
            "c": {
                "mode": mode,
                "local_ts": ["dynamic[tcp]" if initiator else "dynamic[tcp/23]"],
                "remote_ts": ["dynamic[tcp/23]" if initiator else "dynamic[tcp]"],
                "esp_proposals": [esp],
            }
        },
    }
    if local is not None:
        conn["local_addrs"] = [local]
    if remote is not None:
        conn["remote_addrs"] = [remote]
    return conn


class HostsecSwanPair(HostsecInitiates):
    """Agent ``hs`` (198.51.100.1) initiates to charon ``sw`` (203.0.113.1-n): peer k is
    203.0.113.k. The charon answers every peer with one wildcard connection."""

    name = HS_SW
    initiator, peer_prefix = "hs", "s"

    def __init__(self, n: int, ike: str, esp: str, prefix: str) -> None:
        super().__init__(n, ike, esp, prefix)
        if not 1 <= n <= 250:
            raise ValueError("1 to 250 peers")
        self.lab = BenchLab(prefix, ("hs", "sw"), ("198.51.100.1/24", "203.0.113.1/24"))
        self.charon = Charon(self.lab.hosts["sw"], self.lab.root / "sw" / "charon")
        self.used: set[int] = set()

    def start(self) -> None:
        lab, n = self.lab, self.n
        hs, sw = lab.hosts["hs"], lab.hosts["sw"]
        hs_if, sw_if = lab.interface("hs"), lab.interface("sw")
        ip_batch(sw, [f"address add 203.0.113.{k}/24 dev {sw_if}" for k in range(2, n + 1)])
        ip_batch(sw, [f"route add 198.51.100.0/24 dev {sw_if}"])
        # Every strongSwan address through the first as gateway: one ARP entry, not n.
        ip_batch(hs, [f"route add 203.0.113.1/32 dev {hs_if}"])
        ip_batch(hs, [f"route add 203.0.113.0/24 via 203.0.113.1 dev {hs_if} onlink"])
        peers = [(f"s{k}", f"203.0.113.{k}", "198.51.100.1") for k in range(1, n + 1)]
        lab.write_secret("hs", "peer.psk", PSK)
        lab.write_policy("hs", hostsec_policy(peers, self.ike, self.esp, "remote_port = 23",
                                              "tunnel"))  # fmt: skip
        lab.start_agent("hs", wait=False)
        self.charon.start()
        self.charon.load_psk(PSK)
        self.charon.load_conn("bench", charon_conn(self.ike, self.esp, False, None, None))
        lab.wait_ready("hs", timeout=AGENT_START)

    def sas_left(self) -> int:
        return self.lab.ike_count("hs") + self.charon.count_ike_sas()

    def pids(self) -> list[int]:
        return [self.lab.agents["hs"].pid, self.charon.pid]

    def close(self) -> None:
        self.charon.stop()
        self.lab.close()


class SwanPair(Pairing):
    """Charon ``si`` (198.51.100.1) initiates to charon ``sr`` (198.51.100.2); every
    initiation of the one connection makes a new IKE_SA (``reuse_ikesa = no``)."""

    name = SW_SW

    def __init__(self, n: int, ike: str, esp: str, prefix: str) -> None:
        super().__init__(n, ike, esp, prefix)
        self.lab = Lab(prefix=prefix)
        si = self.lab.add_host("si", ipv6=False)
        sr = self.lab.add_host("sr", ipv6=False)
        self.lab.connect(si, sr, addresses=("198.51.100.1/24", "198.51.100.2/24"))
        self.ini = Charon(si, self.lab.workdir / "si")
        self.res = Charon(sr, self.lab.workdir / "sr")

    def start(self) -> None:
        for charon in (self.ini, self.res):
            charon.start()
            charon.load_psk(PSK)
        self.ini.load_conn(
            "bench", charon_conn(self.ike, self.esp, True, "198.51.100.1", "198.51.100.2")
        )
        self.res.load_conn("bench", charon_conn(self.ike, self.esp, False, None, None))
        self.session = self.ini.session()

    def setup_once(self, i: int) -> tuple[float, float | None]:
        return self.ini.initiate_blocking(self.session, "bench", "c"), None

    def burst(self, count: int, timeout: float) -> dict[str, Any]:
        watcher = ChildWatcher(self.ini).start()
        try:
            start = time.perf_counter()
            for _ in range(count):
                self.ini.initiate_async(self.session, "bench", "c")
            watcher.wait(count, timeout)
        finally:
            watcher.stop()
        ups = watcher.ups
        wall = (ups[-1] - start) if ups else float("nan")
        return {
            "initiated": count,
            "up": len(ups),
            "seconds": wall,
            "rate": len(ups) / wall if ups else 0.0,
            "errors": [f"{watcher.ike_failures} IKE SAs failed"] if watcher.ike_failures else [],
        }

    def teardown(self, timeout: float = 60.0) -> None:
        self.ini.terminate_all("bench", timeout)
        deadline = time.monotonic() + timeout
        while self.res.count_ike_sas() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.ini.count_ike_sas() or self.res.count_ike_sas():
            raise TimeoutError(f"{self.name}: SAs left after the teardown")

    def memory(self) -> dict[str, int]:
        return {"initiator": self.ini.rss(), "responder": self.res.rss()}

    def pids(self) -> list[int]:
        return [self.ini.pid, self.res.pid]

    def hosts(self) -> list[Host]:
        return [self.ini.host, self.res.host]

    def close(self) -> None:
        self.ini.stop()
        self.res.stop()
        self.lab.close()


# ---------------------------------------------------------------------------- phases


@contextlib.contextmanager
def pairings(n: int, ike: str, esp: str, tag: str) -> Iterator[dict[str, Pairing]]:
    made: dict[str, Pairing] = {}
    try:
        made[HS_HS] = HostsecPair(n, ike, esp, f"hsbh{tag}")
        made[HS_SW] = HostsecSwanPair(n, ike, esp, f"hsbx{tag}")
        made[SW_SW] = SwanPair(n, ike, esp, f"hsbs{tag}")
        for pairing in made.values():
            pairing.start()
        yield made
    finally:
        for pairing in made.values():
            with contextlib.suppress(Exception):
                pairing.close()


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 3),
        "p95_ms": round(p95(values) * 1000, 3),
        "min_ms": round(min(values) * 1000, 3),
    }


def measure_proposal(ike: str, esp: str, runs: int, warmup: int, burst: int, rounds: int,
                     tag: str, say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    n = max(burst, runs + warmup)
    with pairings(n, ike, esp, tag) as made:
        rtts: dict[str, list[float]] = {p: [] for p in PAIRINGS}
        internal: dict[str, list[float]] = {p: [] for p in PAIRINGS}
        for i in range(warmup + runs):
            for name, pairing in made.items():
                rtt, inside = pairing.setup_once(i)
                if i >= warmup:
                    rtts[name].append(rtt)
                    if inside is not None:
                        internal[name].append(inside)
        setup: dict[str, Any] = {}
        for name in PAIRINGS:
            setup[name] = summary(rtts[name])
            if internal[name]:
                setup[name]["agent"] = summary(internal[name])
            say(f"  setup {name}: {setup[name]}")
        for pairing in made.values():
            pairing.teardown()
        rates: dict[str, list[dict[str, Any]]] = {p: [] for p in PAIRINGS}
        for _ in range(rounds):
            for name, pairing in made.items():
                before, dropped = cpu_seconds(pairing.pids()), udp_drops(pairing.hosts())
                result = pairing.burst(burst, timeout=120.0)
                used = cpu_seconds(pairing.pids()) - before
                result["cpu_ms_per_sa"] = used * 1000 / max(result["up"], 1)
                result["udp_rcvbuf_drops"] = udp_drops(pairing.hosts()) - dropped
                rates[name].append(result)
                say(f"  burst {name}: {result}")
                pairing.teardown()
        rate: dict[str, Any] = {}
        for name in PAIRINGS:
            values = [r["rate"] for r in rates[name]]
            rate[name] = {
                "initiated": burst,
                "rounds": rounds,
                "median_per_s": round(statistics.median(values), 1),
                "per_round": [round(v, 1) for v in values],
                "all_up": all(r["up"] == burst for r in rates[name]),
            }
            rate[name]["udp_rcvbuf_drops"] = [r["udp_rcvbuf_drops"] for r in rates[name]]
            rate[name]["cpu_ms_per_sa"] = round(
                statistics.median(r["cpu_ms_per_sa"] for r in rates[name]), 2
            )
            agent = [r["agent_rate"] for r in rates[name] if "agent_rate" in r]
            if agent:
                rate[name]["agent_median_per_s"] = round(statistics.median(agent), 1)
    return {"ike": ike, "esp": esp, "setup": setup, "rate": rate}


def measure_memory_hostsec(pairs: int, n: int, ike: str, esp: str,
                           say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    made: list[HostsecPair] = []
    try:
        for j in range(pairs):
            made.append(HostsecPair(n, ike, esp, f"hsbm{j}"))
        for pair in made:  # one pair at a time: hundreds of flows take a while to install
            pair.start()
        for pair in made:  # warm-up: one SA up and down (one-off allocations)
            pair.setup_once(0)
            pair.teardown()
        time.sleep(1.0)
        before = [pair.memory() for pair in made]
        results: list[dict[str, Any]] = [{} for _ in made]

        def run(j: int) -> None:
            results[j] = made[j].burst(n, timeout=300.0)

        threads = [threading.Thread(target=run, args=(j,)) for j in range(pairs)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        time.sleep(2.0)
        after = [pair.memory() for pair in made]
        counts = [pair.lab.ike_count("hr") for pair in made]
    finally:
        for pair in made:
            with contextlib.suppress(Exception):
                pair.close()
    up = int(sum(r["up"] for r in results))
    say(f"  hostsec memory: {up} up in {wall:.2f} s; responder IKE SAs {counts}")

    def per_sa(key: str) -> float:
        grown = sum(a[key] - b[key] for a, b in zip(after, before, strict=True))
        return round(grown / max(up, 1) / 1024, 2)

    return {
        "sas": up,
        "agents": f"{pairs} pairs x {n} peers",
        "responder_kib_per_sa": per_sa("responder"),
        "initiator_kib_per_sa": per_sa("initiator"),
        "responder_main_kib_per_sa": per_sa("responder_main"),
        "initiator_main_kib_per_sa": per_sa("initiator_main"),
        "responder_rss_before_mib": round(sum(b["responder"] for b in before) / 2**20, 1),
        "responder_rss_after_mib": round(sum(a["responder"] for a in after) / 2**20, 1),
        "set_up_seconds": round(wall, 2),
        "aggregate_rate_per_s": round(up / wall, 1),
    }


def with_heap(memory: dict[str, Any], heap: dict[str, float]) -> dict[str, Any]:
    """The agent process's RSS barely grows (its heap still has room from start-up, where
    hundreds of flows were installed): count it as the larger of its RSS growth and the
    heap its IKE state takes (``ike_heap_per_sa``), the workers by their RSS growth."""
    memory = dict(memory)
    memory["ike_heap_kib_per_sa_per_side"] = heap["per_side_kib_per_sa"]
    for side in ("responder", "initiator"):
        workers = memory[f"{side}_kib_per_sa"] - memory[f"{side}_main_kib_per_sa"]
        main = max(memory[f"{side}_main_kib_per_sa"], heap["per_side_kib_per_sa"])
        memory[f"{side}_estimate_kib_per_sa"] = round(workers + main, 2)
    return memory


def ike_heap_per_sa(n: int, ike: str, esp: str) -> dict[str, float]:
    """The Python heap (tracemalloc) of what an agent's main process keeps per IKE SA with
    its CHILD SA: two IkeManagers configured from the memory phase's policies by the
    agent's own functions (policy loader, translate), n SAs set up in memory, plus the
    SA configurations the agent keeps per CHILD SA. OpenSSL's own allocations (cipher
    contexts) are not seen: a lower bound. In KiB per SA, for each side."""
    configs: dict[str, list[Any]] = {}
    flows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o700)
        secrets = Path(tmp) / "secrets"
        secrets.mkdir(mode=0o700)
        fd = os.open(secrets / "peer.psk", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, PSK.encode())
        os.close(fd)
        (Path(tmp) / "policies.d").mkdir()
        ini, res = HostsecPair.ini, HostsecPair.res
        sides = {
            "initiator": [(f"r{k}", res(k), ini(k)) for k in range(1, n + 1)],
            "responder": [(f"i{k}", ini(k), res(k)) for k in range(1, n + 1)],
        }
        for side, peers in sides.items():
            path = Path(tmp) / "policies.d" / f"{side}.toml"
            port = "remote_port = 23" if side == "initiator" else "local_port = 23"
            path.write_text(hostsec_policy(peers, ike, esp, port, "transport"))
            policies = PolicySet(read_secret=read_secret_file)
            policies.update_many({str(path): read_policy_file(str(path))})
            configs[side], flows[side] = [], {}
            for peer in policies.peers.values():
                assert peer.local_address is not None and peer.psk is not None
                own = list(policies.flows_of(peer.name))
                creds = IkeCredentials(psk=peer.psk.value)
                configs[side].append(ike_config(peer, own, peer.local_address, creds))
                flows[side][peer.name] = child_config(own[0], peer, peer.local_address)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        managers = {side: IkeManager(c) for side, c in configs.items()}
        kept: dict[str, list[Any]] = {side: [] for side in managers}  # what the agent keeps
        now = 1000.0
        for name, child in flows["initiator"].items():
            local = ipaddress.ip_address(HostsecPair.ini(int(name[1:])))
            managers["initiator"].initiate(name, [child], now, local=(local, 500))
        other = {"initiator": "responder", "responder": "initiator"}
        moved = True
        while moved:
            moved = False
            for side, manager in managers.items():
                out, events = manager.poll()
                kept[side] += [ike_sa_configs(e) for e in events if isinstance(e, ChildSAUp)]
                for item in out:
                    if isinstance(item, Transmit):
                        managers[other[side]].handle_datagram(
                            item.data, item.local, item.remote, now
                        )
                        moved = True
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    up = min(len(v) for v in kept.values())
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return {"sas": up, "both_sides_kib_per_sa": round(grown / max(up, 1) / 1024, 2),
            "per_side_kib_per_sa": round(grown / max(up, 1) / 2048, 2)}  # fmt: skip


def measure_memory_swan(n: int, ike: str, esp: str, say: Callable[[str], None]) -> dict[str, Any]:
    pair = SwanPair(n, ike, esp, "hsbsm")
    try:
        pair.start()
        pair.setup_once(0)
        pair.teardown()
        time.sleep(1.0)
        before = pair.memory()
        result = pair.burst(n, timeout=300.0)
        time.sleep(2.0)
        after = pair.memory()
        counts = pair.res.count_ike_sas()
    finally:
        pair.close()
    up = result["up"]
    say(f"  strongSwan memory: {up} up in {result['seconds']:.2f} s; responder IKE_SAs {counts}")
    return {
        "sas": up,
        "responder_kib_per_sa": round((after["responder"] - before["responder"]) / up / 1024, 2),
        "initiator_kib_per_sa": round((after["initiator"] - before["initiator"]) / up / 1024, 2),
        "responder_rss_before_mib": round(before["responder"] / 2**20, 1),
        "responder_rss_after_mib": round(after["responder"] / 2**20, 1),
        "set_up_seconds": round(result["seconds"], 2),
        "rate_per_s": round(result["rate"], 1),
    }


# ---------------------------------------------------------------------------- report


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prop in report["proposals"]:
        setup, rate = prop["setup"], prop["rate"]
        sw_setup = setup[SW_SW]["median_ms"]
        sw_rate = rate[SW_SW]["median_per_s"]
        out[prop["ike"]] = {
            "setup_hostsec_over_strongswan": round(setup[HS_HS]["median_ms"] / sw_setup, 2),
            "setup_hostsec_to_strongswan_over_strongswan": round(
                setup[HS_SW]["median_ms"] / sw_setup, 2
            ),
            "rate_hostsec_over_strongswan": round(rate[HS_HS]["median_per_s"] / sw_rate, 2),
            "rate_hostsec_to_strongswan_over_strongswan": round(
                rate[HS_SW]["median_per_s"] / sw_rate, 2
            ),
            "cpu_hostsec_over_strongswan": round(
                rate[HS_HS]["cpu_ms_per_sa"] / rate[SW_SW]["cpu_ms_per_sa"], 2
            ),
        }
    mem = report.get("memory")
    if mem:
        sw = mem["strongswan"]["responder_kib_per_sa"]
        out["memory_hostsec_over_strongswan"] = round(
            mem["hostsec"]["responder_kib_per_sa"] / sw, 2
        )
        out["memory_estimate_hostsec_over_strongswan"] = round(
            mem["hostsec"]["responder_estimate_kib_per_sa"] / sw, 2
        )
    return out


def targets(report: dict[str, Any]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for ike, r in report["ratios"].items():
        if isinstance(r, dict):
            met[f"{ike}: setup median <= 2x strongSwan"] = r["setup_hostsec_over_strongswan"] <= 2
            met[f"{ike}: setup rate >= 0.5x strongSwan"] = r["rate_hostsec_over_strongswan"] >= 0.5
    if "memory_estimate_hostsec_over_strongswan" in report["ratios"]:
        met["memory per SA <= 2x strongSwan (RSS growth, agent process by its IKE heap)"] = (
            report["ratios"]["memory_estimate_hostsec_over_strongswan"] <= 2
        )
    return met


def text(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"IKEv2 set-up, hostsec {report['hostsec']} vs {report['strongswan']}, same run "
        f"({report['machine']})",
        f"PSK; {cfg['runs']} runs after {cfg['warmup']} warm-up; {cfg['burst']} initiated at "
        f"once, median of {cfg['rounds']} rounds",
    ]
    for prop in report["proposals"]:
        lines.append(f"\n{prop['ike']} (ESP {prop['esp']})")
        lines.append(
            f"  {'':26}{'median ms':>10}{'p95 ms':>9}{'agent ms':>10}{'SAs/s':>9}{'CPU ms/SA':>11}"
        )
        for name in PAIRINGS:
            s, r = prop["setup"][name], prop["rate"][name]
            agent = f"{s['agent']['median_ms']:.2f}" if "agent" in s else "-"
            lines.append(
                f"  {name:26}{s['median_ms']:>10.2f}{s['p95_ms']:>9.2f}{agent:>10}"
                f"{r['median_per_s']:>9.1f}{r['cpu_ms_per_sa']:>11.2f}"
                + ("" if r["all_up"] else "  (not all up!)")
            )
        rr = report["ratios"][prop["ike"]]
        lines.append(
            f"  hostsec/strongSwan: setup {rr['setup_hostsec_over_strongswan']}x, "
            f"rate {rr['rate_hostsec_over_strongswan']}x, "
            f"CPU per SA {rr['cpu_hostsec_over_strongswan']}x "
            f"(hostsec->strongSwan: {rr['setup_hostsec_to_strongswan_over_strongswan']}x, "
            f"{rr['rate_hostsec_to_strongswan_over_strongswan']}x)"
        )
    mem = report.get("memory")
    if mem:
        h, s = mem["hostsec"], mem["strongswan"]
        lines.append(f"\nmemory per IKE_SA + CHILD_SA ({mem['ike']}), KiB of RSS growth")
        lines.append(
            f"  hostsec ({h['agents']}, {h['sas']} up): responder {h['responder_kib_per_sa']}"
            f" (agent process alone {h['responder_main_kib_per_sa']}), initiator "
            f"{h['initiator_kib_per_sa']} (alone {h['initiator_main_kib_per_sa']})"
        )
        lines.append(
            f"  strongSwan (one charon each side, {s['sas']} up): responder "
            f"{s['responder_kib_per_sa']}, initiator {s['initiator_kib_per_sa']}"
        )
        lines.append(
            f"  hostsec agent process, IKE state on the Python heap (tracemalloc): "
            f"{h['ike_heap_kib_per_sa_per_side']} per side; so responder "
            f"{h['responder_estimate_kib_per_sa']}, initiator {h['initiator_estimate_kib_per_sa']}"
        )
        ratios = report["ratios"]
        lines.append(
            f"  hostsec/strongSwan (responders): {ratios['memory_hostsec_over_strongswan']}x "
            f"by RSS growth, {ratios['memory_estimate_hostsec_over_strongswan']}x with the "
            f"IKE heap; {h['sas']} at once: hostsec {h['aggregate_rate_per_s']}/s over "
            f"{h['agents']}, strongSwan {s['rate_per_s']}/s"
        )
    if "memory_error" in report:
        lines.append(f"\nmemory phase failed: {report['memory_error']}")
    lines.append("\ntargets:")
    for what, ok in report["targets"].items():
        lines.append(f"  {'met ' if ok else 'MISSED'}  {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--runs", type=int, help="set-ups timed per pairing (default 50)")
    parser.add_argument("--burst", type=int, help="SAs initiated at once (default 200)")
    parser.add_argument("--rounds", type=int, help="burst rounds (default 7)")
    parser.add_argument("--peers", type=int, help="peers per hostsec pair for memory (250)")
    parser.add_argument("--pairs", type=int, help="hostsec pairs for memory (default 4)")
    parser.add_argument("--no-memory", action="store_true", help="skip the 1000-SA phase")
    parser.add_argument("--proposal", action="append", help="only this IKE proposal (repeatable)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_ike: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not os.path.exists(CHARON) or shutil.which("ip") is None:
        print(f"bench_ike: needs {CHARON} and ip (see ../shared/interop/)", file=sys.stderr)
        return 2
    quick = args.quick
    runs = args.runs or (10 if quick else 50)
    warmup = 2 if quick else 5
    burst = args.burst or (50 if quick else 200)
    rounds = args.rounds or (1 if quick else 7)
    peers = args.peers or (25 if quick else 250)
    pairs = args.pairs or 4
    chosen = [p for p in PROPOSALS if not args.proposal or p[0] in args.proposal]

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    swan = "strongSwan " + (
        os.popen("dpkg-query -W -f '${Version}' charon-systemd 2>/dev/null").read().strip() or "5.9"
    )
    report: dict[str, Any] = {
        "hostsec": __version__,
        "strongswan": swan,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}",
        "config": {
            "runs": runs,
            "warmup": warmup,
            "burst": burst,
            "rounds": rounds,
            "memory": f"hostsec {pairs} x {peers}, strongSwan {pairs * peers}",
        },
        "proposals": [],
    }
    for index, (ike, esp) in enumerate(chosen):
        say(f"{ike} / {esp}")
        report["proposals"].append(
            measure_proposal(ike, esp, runs, warmup, burst, rounds, str(index), say)
        )
    if not args.no_memory:
        ike, esp = PROPOSALS[0]
        say(f"memory, {pairs * peers} SAs")
        try:
            report["memory"] = {
                "ike": ike,
                "hostsec": with_heap(
                    measure_memory_hostsec(pairs, peers, ike, esp, say),
                    ike_heap_per_sa(peers, ike, esp),
                ),
                "strongswan": measure_memory_swan(pairs * peers, ike, esp, say),
            }
        except Exception as exc:  # report what was measured before it
            report["memory_error"] = f"{type(exc).__name__}: {str(exc)[:1000]}"
            say(f"memory phase failed: {report['memory_error']}")
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    report["load_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(report, indent=2) if args.json else text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
