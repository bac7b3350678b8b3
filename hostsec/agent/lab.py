"""Two hosts in network namespaces, each running a hostsec agent: the demo and the netns
tests use this. Everything it starts it stops by PID; everything it creates it removes.

    with AgentLab() as lab:
        lab.write_policy("a", POLICY_A); lab.write_policy("b", POLICY_B)
        lab.start_agents()
        lab.serve_echo("b", 23)
        print(lab.echo("a", "198.51.100.2", 23, 100_000))
        print(lab.status("a"))
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

from pyroute2.ethtool import Ethtool

from hostsec.agent.control import ControlError, request, socket_path
from hostsec.agent.echo import stream
from hostsec.platform.capture import Capture
from hostsec.platform.netns import Host, Lab

AGENT_START_TIMEOUT = 15.0


def _no_udp_segmentation(ifname: str) -> None:
    """``ethtool -K IFNAME tx-udp-segmentation off`` in this thread's namespace."""
    with Ethtool() as ethtool:
        features = ethtool.get_features(ifname)
        features.features["tx-udp-segmentation"].enable = False
        ethtool.set_features(ifname, features)


class AgentLab:
    """Hosts ``a`` (198.51.100.1) and ``b`` (198.51.100.2) on one veth link."""

    def __init__(
        self,
        prefix: str = "hsag",
        hosts: tuple[str, ...] = ("a", "b"),
        wire_datagrams: bool = True,
        ipv6: bool = False,
    ) -> None:
        """``ipv6``: the hosts also get 2001:db8::1 and ::2 on the link (see
        :meth:`address`). ``wire_datagrams``: the veth splits the agents' UDP_SEGMENT runs
        into datagrams as a NIC puts them on a wire, so that a capture shows each
        ESP-in-UDP packet (a veth otherwise hands the run over whole, and tcpdump sees one
        large frame);
        False for benchmarks, which then compare with the bare veth passing TCP unsplit."""
        self.lab = Lab(prefix=prefix)
        self.hosts: dict[str, Host] = {name: self.lab.add_host(name, ipv6=ipv6) for name in hosts}
        self.link = self.lab.connect(self.hosts[hosts[0]], self.hosts[hosts[1]], ipv6=ipv6)
        if wire_datagrams:
            for name in hosts:
                self.hosts[name].call(_no_udp_segmentation, self.interface(name))
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.root = self.lab.workdir

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ files

    def address(self, name: str, version: int = 4) -> str:
        return str(self.hosts[name].address(version))

    def interface(self, name: str) -> str:
        return self.link.interface_of(self.hosts[name])

    def config_dir(self, name: str) -> Path:
        path = self.root / name / "etc"
        (path / "policies.d").mkdir(parents=True, exist_ok=True)
        (path / "secrets").mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def run_dir(self, name: str) -> Path:
        return self.root / name / "run"

    def write_policy(self, name: str, text: str, file: str = "policy.toml") -> Path:
        """Write a policy drop atomically (the agent's watcher sees one complete file)."""
        path = self.config_dir(name) / "policies.d" / file
        tmp = path.with_name(f".{file}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path

    def write_secret(self, name: str, file: str, data: bytes | str) -> Path:
        path = self.config_dir(name) / "secrets" / file
        raw = data.encode() if isinstance(data, str) else data
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        return path

    def write_file(self, name: str, relative: str, data: bytes | str, mode: int = 0o644) -> Path:
        path = self.config_dir(name) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = data.encode() if isinstance(data, str) else data
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.chmod(path, mode)
        return path

    # ------------------------------------------------------------------ agents

    def start_agent(self, name: str, wait: bool = True) -> subprocess.Popen[bytes]:
        host = self.hosts[name]
        log_path = self.root / name / "agent.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.logs[name] = log_path
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
        argv = [
            sys.executable, "-m", "hostsec", "agent", "--foreground",
            "--config-dir", str(self.config_dir(name)), "--run-dir", str(self.run_dir(name)),
        ]  # fmt: skip
        proc = host.popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()
        self.agents[name] = proc
        if wait:
            self.wait_ready(name)
        return proc

    def start_agents(self) -> None:
        for name in self.hosts:
            self.start_agent(name, wait=False)
        for name in self.hosts:
            self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = AGENT_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        proc = self.agents[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"agent {name} exited ({proc.returncode}):\n{self.log(name)}")
            if socket_path(self.run_dir(name)).exists():
                try:
                    self.status(name)
                    return
                except ControlError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"agent {name} did not come up:\n{self.log(name)}")

    def stop_agent(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        proc = self.agents.pop(name, None)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else 0
        os.kill(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            return proc.wait(timeout)

    def kill_agent(self, name: str) -> None:
        """SIGKILL, as a crash: nothing is cleaned up by the agent."""
        self.stop_agent(name, signal.SIGKILL)

    def log(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def status(self, name: str) -> dict[str, Any]:
        result = request(self.run_dir(name), "status", timeout=5.0)
        assert isinstance(result, dict)
        return result

    def hostsec(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``hostsec ARGS --run-dir <host's>`` (a CLI command) and return its output."""
        argv = [sys.executable, "-m", "hostsec", *args, "--run-dir", str(self.run_dir(name))]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603

    def wait_for(self, name: str, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        """Poll the agent's status until ``predicate(status)`` holds."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(ControlError):
                status = self.status(name)
                if predicate(status):
                    return status
            time.sleep(0.1)
        raise TimeoutError(
            f"condition not met on {name}: {json.dumps(status)[:2000]}\n"
            f"--- end of {name}'s log:\n{self.log(name)[-3000:]}"
        )

    # ------------------------------------------------------------------ traffic

    def serve_echo(self, name: str, port: int, version: int = 4) -> subprocess.Popen[bytes]:
        address = self.address(name, version)
        argv = [sys.executable, "-m", "hostsec.agent.echo", "serve", address, str(port)]
        proc = self.hosts[name].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        proc.stdout.readline()  # {"listening": ...}
        return proc

    def echo(
        self,
        name: str,
        to: str,
        port: int,
        nbytes: int,
        timeout: float = 60.0,
        label: str = "hostsec-demo",
    ) -> dict[str, Any]:
        """Run the verifying echo client in host ``name``; ``label`` picks the byte stream
        (:func:`hostsec.agent.echo.stream`) so that a capture can be searched for it."""
        argv = [
            sys.executable, "-m", "hostsec.agent.echo", "client", to, str(port), str(nbytes),
            str(timeout), label,
        ]  # fmt: skip
        result = self.hosts[name].run(argv, check=False, timeout=timeout + 10)
        try:
            parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            parsed = {"ok": False, "error": result.stderr or result.stdout}
        return parsed

    def capture(self, name: str, path: Path | None = None) -> Capture:
        return self.hosts[name].capture(self.interface(name), path)

    def request(self, host: str, command: str, **arguments: Any) -> Any:
        """One control-socket request to the agent of ``host``:
        ``lab.request("a", "rekey", name="telnet")``."""
        return request(self.run_dir(host), command, arguments, timeout=5.0)

    def drop_sent(self, rule: str | None) -> None:
        """On every host, drop what matches the nftables ``rule`` on its way out (for
        example ``udp dport 500``), in a table of the lab's own; None: drop nothing."""
        body = f"    {rule} counter drop\n" if rule else ""
        ruleset = (
            "table ip hostsec_lab_drop\nflush table ip hostsec_lab_drop\n"
            "table ip hostsec_lab_drop {\n  chain output {\n"
            f"    type filter hook output priority 0; policy accept;\n{body}  }}\n}}\n"
        )
        for host in self.hosts.values():
            host.run(["nft", "-f", "-"], input=ruleset)

    def close(self) -> None:
        # SIGTERM to every agent first, then wait: they tear down side by side.
        for proc in self.agents.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for name in list(self.agents):
            with contextlib.suppress(Exception):
                self.stop_agent(name)
        self.lab.close()


NAT_RULESET = """\
table ip hostsec_lab_nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {inside} oifname "{outside_if}" counter masquerade{random}
  }}
}}
"""


class NatAgentLab(AgentLab):
    """Host ``a`` behind a masquerading router ``r``, and host ``b`` outside:

        a 198.51.100.2 --- 198.51.100.1 r 203.0.113.1 --- 203.0.113.2 b

    ``a`` routes everything via ``r``; ``b`` has no route to 198.51.100.0/24 (it only
    ever sees the router's 203.0.113.1). With ``random_ports`` the NAT also remaps source
    ports (``masquerade random``), so that 500 and 4500 do not survive the translation;
    ``udp_timeout`` (seconds) shortens how long the router keeps an idle UDP mapping.
    """

    INSIDE = "198.51.100.0/24"

    def __init__(
        self, prefix: str = "hsnat", random_ports: bool = False, udp_timeout: int | None = None
    ) -> None:
        self.lab = Lab(prefix=prefix)
        try:
            a = self.lab.add_host("a", ipv6=False)
            router = self.lab.add_host("r", ipv6=False)
            b = self.lab.add_host("b", ipv6=False)
            self.inside = self.lab.connect(
                a, router, addresses=("198.51.100.2/24", "198.51.100.1/24")
            )
            self.outside = self.lab.connect(
                router, b, addresses=("203.0.113.1/24", "203.0.113.2/24")
            )
            a.run(["ip", "route", "add", "default", "via", "198.51.100.1"])
            router.sysctl("net/ipv4/ip_forward", 1)
            ruleset = NAT_RULESET.format(
                inside=self.INSIDE,
                outside_if=self.outside.interface_of(router),
                random=" random" if random_ports else "",
            )
            router.run(["nft", "-f", "-"], input=ruleset)
            # Each ESP-in-UDP packet crosses as a datagram, as on a wire (see AgentLab).
            for host, link in ((a, self.inside), (router, self.inside)):
                host.call(_no_udp_segmentation, link.interface_of(host))
            for host, link in ((router, self.outside), (b, self.outside)):
                host.call(_no_udp_segmentation, link.interface_of(host))
            if udp_timeout is not None:  # how long the NAT keeps an idle UDP mapping
                router.sysctl("net/netfilter/nf_conntrack_udp_timeout", udp_timeout)
                router.sysctl("net/netfilter/nf_conntrack_udp_timeout_stream", udp_timeout)
        except BaseException:
            self.lab.close()
            raise
        self.router = router
        self.hosts = {"a": a, "b": b}
        self.link = self.inside
        self.agents = {}
        self.logs = {}
        self.root = self.lab.workdir

    def interface(self, name: str) -> str:
        link = self.inside if name == "a" else self.outside
        return link.interface_of(self.hosts[name])

    def public_address(self, name: str) -> str:
        """The address the other side sees: the router's for ``a``."""
        if name != "a":
            return self.address(name)
        return str(self.router.address(4, self.outside.interface_of(self.router)))

    def capture_outside(self, path: Path | None = None) -> Capture:
        """A capture on the router's outside link (what crosses the NAT, translated)."""
        return self.router.capture(self.outside.interface_of(self.router), path)


# ---------------------------------------------------------------------- policy text


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def peer_toml(name: str, address: str, **settings: object) -> str:
    """A ``[[peer]]`` table: ``peer_toml("b", "198.51.100.2", auth="psk", dpd="5s")``."""
    lines = ["[[peer]]", f"name = {_toml_value(name)}", f"address = {_toml_value(address)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in settings.items() if v is not None]
    return "\n".join(lines) + "\n"


def flow_toml(name: str, peer: str, **settings: object) -> str:
    """A ``[[flow]]`` table: ``flow_toml("telnet", "b", protocol="tcp", remote_port=23)``."""
    lines = ["[[flow]]", f"name = {_toml_value(name)}", f"peer = {_toml_value(peer)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in settings.items() if v is not None]
    return "\n".join(lines) + "\n"


def agent_toml(**ike: float) -> str:
    """A ``hostsec.toml`` with an ``[ike]`` table (nat_keepalive, retransmit_*)."""
    return "[ike]\n" + "".join(f"{k} = {v}\n" for k, v in ike.items())


LAB_PSK = "hostsec-lab-pre-shared-key-0123456789"


def psk_peer(
    lab: AgentLab, host: str, peer: str, address: str, psk: str = LAB_PSK, **settings: object
) -> str:
    """Write ``host``'s PSK file and return its ``[[peer]]`` table for ``peer``."""
    lab.write_secret(host, f"{peer}.psk", psk)
    return peer_toml(peer, address, auth="psk", psk_file=f"../secrets/{peer}.psk", **settings)


def telnet_flows(
    client_peer: str, server_peer: str, port: int = 23, name: str = "telnet", **settings: object
) -> tuple[str, str]:
    """The ``[[flow]]`` of a tcp/``port`` session for the client and for the server side."""
    client = flow_toml(name, client_peer, protocol="tcp", remote_port=port, **settings)
    server = flow_toml(name, server_peer, protocol="tcp", local_port=port, **settings)
    return client, server


# ---------------------------------------------------------------------- a paced session

CHUNK = 8192
INTERVAL = 0.01  # seconds between chunks: about 800 KB/s
STALL = 0.5  # a pause in the echo this long means packets were lost (TCP timed out)


def paced_echo(conn: Connection, address: str, port: int, seconds: float) -> dict[str, Any]:
    """A telnet-like session of known length, for ``Host.spawn``: send CHUNK octets every
    INTERVAL for ``seconds`` to an echo server and check what comes back; say "started"
    over ``conn`` once connected. Reports each pause of the echo longer than STALL as
    (monotonic time it ended, its length)."""
    count = int(seconds / INTERVAL)
    payload = stream(CHUNK * count, "paced")
    received = bytearray()
    stalls: list[tuple[float, float]] = []
    with socket.create_connection((address, port), timeout=10) as sock:
        conn.send("started")

        def send() -> None:
            for i in range(count):
                sock.sendall(payload[i * CHUNK : (i + 1) * CHUNK])
                time.sleep(INTERVAL)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        last = time.monotonic()
        while len(received) < len(payload):
            data = sock.recv(65536)
            if not data:
                break
            now = time.monotonic()
            if now - last > STALL:
                stalls.append((now, now - last))
            last = now
            received += data
        sender.join(10)
    return {"ok": bytes(received) == payload, "bytes": len(received), "stalls": stalls}
