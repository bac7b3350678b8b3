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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyroute2.ethtool import Ethtool

from hostsec.agent.control import ControlError, request, socket_path
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

    def __enter__(self) -> AgentLab:
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
        raise TimeoutError(f"condition not met on {name}: {json.dumps(status)[:2000]}")

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
