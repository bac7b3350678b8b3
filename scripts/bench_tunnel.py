#!/usr/bin/env python3
"""Tunnel throughput: iperf3 TCP through hostsec, the bare veth and strongSwan's
userspace data path, measured in the same run.

Each case builds two hosts in network namespaces (198.51.100.1 and .2 on one veth),
runs ``iperf3 -c`` in ``a`` against ``iperf3 -s`` in ``b`` on tcp/5201 and reports the
receiver's Gbit/s, the TCP retransmits (``iperf3 --json``), and the CPU time of every
process involved, as percent of one core (psutil; the iperf3 processes from their
rusage). Cases:

    veth                bare veth, no protection (the physical reference)
    hostsec-transport   hostsec, ESP AES-128-GCM transport mode, raw ESP (IP protocol 50)
    hostsec-tunnel-udp  hostsec, ESP AES-128-GCM tunnel mode in UDP/4500 (encapsulation "force")
    strongswan          two charons with kernel-libipsec (strongSwan's C userspace data
                        path), IKEv2 PSK, tunnel-mode ESP AES-128-GCM in UDP/4500
    hostsec-transport-v6, hostsec-tunnel-udp-v6
                        the hostsec cases over IPv6 (2001:db8::1 and ::2), only when
                        named in --cases

hostsec runs with manual keys (the data path does not care where keys come from). Each
case checks that the traffic really crossed the tunnel (SA byte counters). Repeats run
the cases in rounds (interleaved) and report the median. Every namespace and process
started here is stopped by PID and removed (hostsec.platform.netns.Lab).

    scripts/bench_tunnel.py                    10 s per run, 3 rounds, a table
    scripts/bench_tunnel.py --quick            3 s, 1 round
    scripts/bench_tunnel.py --seconds 5 --repeat 2 --cases hostsec-tunnel-udp,strongswan
    scripts/bench_tunnel.py --json             one JSON object
    scripts/bench_tunnel.py --tree main=/work/main   hostsec of main too (case@main)

The CPU column "dp CPU s/GB" is the CPU time of the data-path processes (hostsec's
workers, the charons) per GB carried, "(kernel)" the part spent in system calls: on a
busy machine Gbit/s follows the CPU share a process gets, these follow the work it does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cryptography
import psutil

import hostsec
from hostsec.agent.lab import AgentLab
from hostsec.agent.swanlab import Charon
from hostsec.platform.netns import Host, Lab

PORT = 5201
#: (client host, server host, server address, data-path PIDs by name, traffic check)
Case = tuple[Host, Host, str, dict[str, int], Callable[[int], str | None]]
CASES = ("veth", "hostsec-transport", "hostsec-tunnel-udp", "strongswan")
#: name: (mode, peer encapsulation, IP version); the IPv6 ones only when asked (--cases)
HOSTSEC_CASES = {
    "hostsec-transport": ("transport", "auto", 4),
    "hostsec-tunnel-udp": ("tunnel", "force", 4),
    "hostsec-transport-v6": ("transport", "auto", 6),
    "hostsec-tunnel-udp-v6": ("tunnel", "force", 6),
}
PSK = "bench-tunnel-pre-shared-key-0123456789"

_POLICY = """\
[[peer]]
name = "{peer}"
address = "{address}"
encapsulation = "{encapsulation}"

[[flow]]
name = "iperf"
peer = "{peer}"
protocol = "tcp"
{port}
protection = "esp"
mode = "{mode}"
keying = "manual"
manual_keys = "../secrets/iperf.keys"
"""

_KEYS = """\
[[sa]]
src = "{a}"
dst = "{b}"
spi = 0x5201
protocol = "esp"
proposal = "aes128gcm16"
encryption_key = "{key_ab}"

[[sa]]
src = "{b}"
dst = "{a}"
spi = 0x5202
protocol = "esp"
proposal = "aes128gcm16"
encryption_key = "{key_ba}"
"""


_SWANCTL_CONF = """\
connections {{
  bench {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    proposals = aes128gcm16-prfsha256-curve25519
    local {{
      auth = psk
      id = {local}
    }}
    remote {{
      auth = psk
      id = {remote}
    }}
    children {{
      iperf {{
        mode = tunnel
        local_ts = {local}/32[tcp{local_port}]
        remote_ts = {remote}/32[tcp{remote_port}]
        esp_proposals = aes128gcm16
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    secret = "{psk}"
  }}
}}
"""


# ---------------------------------------------------------------------------- measuring


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds of named long-running processes between start() and stop()."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in processes.items()}
        self._start: dict[str, float] = {}
        self._start_sys: dict[str, float] = {}
        self.kernel: dict[str, float] = {}  # of the CPU seconds, those in the kernel
        self._t0 = 0.0
        self._sys0: Any = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._sys0 = psutil.cpu_times()
        self._start = {n: _cpu_seconds(p) for n, p in self.procs.items()}
        self._start_sys = {n: float(p.cpu_times().system) for n, p in self.procs.items()}

    def stop(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """(wall seconds, CPU seconds per process, system-wide CPU seconds by kind)."""
        used = {}
        for name, proc in self.procs.items():
            try:
                used[name] = _cpu_seconds(proc) - self._start[name]
                self.kernel[name] = float(proc.cpu_times().system) - self._start_sys[name]
            except psutil.Error:
                used[name] = float("nan")
        wall = time.monotonic() - self._t0
        sys1 = psutil.cpu_times()
        system = {
            kind: getattr(sys1, kind) - getattr(self._sys0, kind)
            for kind in ("user", "system", "softirq", "idle")
        }
        return wall, used, system


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait for ``proc`` (our child) and return (exit status, CPU seconds from rusage)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()  # by PID: our own child
            pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        time.sleep(0.02)


def iperf(
    client: Host,
    server: Host,
    address: str,
    seconds: float,
    processes: dict[str, int],
    workdir: Path,
) -> dict[str, Any]:
    """One iperf3 TCP run a -> b; throughput, retransmits, CPU per process."""
    out = workdir / f"iperf-{time.monotonic_ns()}.json"
    srv = server.popen(
        ["iperf3", "-s", "-1", "-B", address, "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # listening?
            result = server.run(["ss", "-Htln", f"sport = :{PORT}"], check=False)
            if str(PORT) in result.stdout:
                break
            time.sleep(0.05)
        meter = CpuMeter(processes)
        with open(out, "wb") as sink:
            cli = client.popen(
                ["iperf3", "-c", address, "-p", str(PORT), "-t", str(seconds), "--json"],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            meter.start()
            status, cli_cpu = _reap(cli, seconds + 30)
        wall, cpu, system = meter.stop()
        _status, srv_cpu = _reap(srv, 10)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    text = out.read_text(errors="replace")
    try:
        report = json.loads(text)
    except ValueError:
        raise RuntimeError(f"iperf3 failed ({status}): {text[-2000:]}") from None
    if "error" in report:
        raise RuntimeError(f"iperf3: {report['error']}")
    end = report["end"]
    received = end["sum_received"]
    sent = end["sum_sent"]
    cpu["iperf3-client"] = cli_cpu
    cpu["iperf3-server"] = srv_cpu
    datapath = sum(v for k, v in cpu.items() if k.startswith(("worker-", "charon-")))
    kernel = sum(v for k, v in meter.kernel.items() if k.startswith(("worker-", "charon-")))
    gbytes = received["bytes"] / 1e9
    return {
        "gbit_s": received["bits_per_second"] / 1e9,
        "bytes": received["bytes"],
        "seconds": received["seconds"],
        "retransmits": sent.get("retransmits", 0),
        # CPU seconds the data-path processes spent per GB carried (less sensitive to a
        # busy machine than Gbit/s)
        "datapath_cpu_s_per_gb": round(datapath / gbytes, 2),
        "datapath_kernel_s_per_gb": round(kernel / gbytes, 2),  # the system-time part
        "cpu_percent": {k: round(100 * v / wall, 1) for k, v in cpu.items()},
        "system_cpu_percent": {k: round(100 * v / wall, 1) for k, v in system.items()},
    }


# ---------------------------------------------------------------------------- the cases


def _link_lab(prefix: str) -> tuple[Lab, Host, Host]:
    lab = Lab(prefix=prefix)
    a, b = lab.add_host("a", ipv6=False), lab.add_host("b", ipv6=False)
    lab.connect(a, b)
    return lab, a, b


@contextlib.contextmanager
def case_veth() -> Iterator[Case]:
    lab, a, b = _link_lab("hsbv")
    try:
        yield a, b, str(b.ip), {}, lambda nbytes: None
    finally:
        lab.close()


def _hostsec_pids(lab: AgentLab) -> dict[str, int]:
    pids = {}
    for name, proc in lab.agents.items():
        pids[f"agent-{name}"] = proc.pid
        for child in psutil.Process(proc.pid).children():
            cmd = child.cmdline()
            if "hostsec.agent.worker" in cmd:
                role = cmd[cmd.index("hostsec.agent.worker") + 1]
                pids[f"worker-{name}-{role}"] = child.pid
    return pids


@contextlib.contextmanager
def case_hostsec(mode: str, encapsulation: str, version: int = 4) -> Iterator[Case]:
    # wire_datagrams=False: the veth passes runs whole
    lab = AgentLab(prefix="hsbh", wire_datagrams=False, ipv6=version == 6)
    try:
        a, b = lab.address("a", version), lab.address("b", version)
        keys = _KEYS.format(a=a, b=b, key_ab=os.urandom(20).hex(), key_ba=os.urandom(20).hex())
        sides = {"a": ("b", b, f"remote_port = {PORT}"), "b": ("a", a, f"local_port = {PORT}")}
        for name, (peer, address, port) in sides.items():
            lab.write_secret(name, "iperf.keys", keys)
            lab.write_policy(
                name,
                _POLICY.format(
                    peer=peer, address=address, port=port, mode=mode, encapsulation=encapsulation
                ),
            )
        lab.start_agents()
        for name in ("a", "b"):
            lab.wait_for(name, lambda s: all(len(f["sas"]) == 2 for f in s["flows"]), 10)

        def check(nbytes: int) -> str | None:
            """None if the bytes went through the SA (and nothing was dropped)."""
            status = lab.status("b")
            inbound = sum(
                sa["bytes"] for f in status["flows"] for sa in f["sas"] if sa["direction"] == "in"
            )
            if inbound < nbytes:
                return f"hostsec: inbound SA carried {inbound} bytes < {nbytes} received"
            return None

        yield lab.hosts["a"], lab.hosts["b"], b, _hostsec_pids(lab), check
    finally:
        lab.close()


def _swanctl(host: Host, side: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = ["env", f"SWANCTL_DIR={side}/swanctl", f"STRONGSWAN_CONF={side}/strongswan.conf"]
    return host.run(
        [*env, "swanctl", *args, "-u", f"unix://{side}/charon.vici"], check=False, timeout=30
    )


@contextlib.contextmanager
def case_strongswan() -> Iterator[Case]:
    if shutil.which("charon-systemd") is None or shutil.which("swanctl") is None:
        raise RuntimeError("strongSwan missing (apt-get install charon-systemd strongswan-swanctl)")
    lab, a, b = _link_lab("hsbs")
    try:
        ips = {"a": str(a.ip), "b": str(b.ip)}
        dirs = {}
        charons = {}
        for name, host, peer in (("a", a, "b"), ("b", b, "a")):
            side = lab.workdir / name
            (side / "swanctl").mkdir(parents=True)
            dirs[name] = side
            local_port, remote_port = ("", f"/{PORT}") if name == "a" else (f"/{PORT}", "")
            (side / "swanctl" / "swanctl.conf").write_text(
                _SWANCTL_CONF.format(
                    local=ips[name],
                    remote=ips[peer],
                    local_port=local_port,
                    remote_port=remote_port,
                    psk=PSK,
                )
            )
            # the plain recipe; the lab ends the charon by PID when it closes
            charons[name] = Charon(host, side, "scripts/bench_tunnel.py")
            charons[name].start()
        for name, host in (("a", a), ("b", b)):
            result = _swanctl(host, dirs[name], "--load-all")
            if result.returncode != 0:
                raise RuntimeError(f"swanctl --load-all ({name}): {result.stdout}{result.stderr}")
        # libipsec routes the whole peer address into ipsec0 (table 220): only tcp/5201 there.
        a.run(["ip", "rule", "add", "pref", "100", "to", ips["b"], "ipproto", "tcp",
               "dport", str(PORT), "lookup", "220"])  # fmt: skip
        a.run(["ip", "rule", "add", "pref", "101", "to", ips["b"], "lookup", "main"])
        b.run(["ip", "rule", "add", "pref", "100", "to", ips["a"], "ipproto", "tcp",
               "sport", str(PORT), "lookup", "220"])  # fmt: skip
        b.run(["ip", "rule", "add", "pref", "101", "to", ips["a"], "lookup", "main"])
        result = _swanctl(a, dirs["a"], "--initiate", "--ike", "bench", "--child", "iperf")
        if result.returncode != 0:
            raise RuntimeError(f"swanctl --initiate: {result.stdout}{result.stderr}")

        def check(nbytes: int) -> str | None:
            text = _swanctl(b, dirs["b"], "--list-sas").stdout
            found = [int(n) for n in re.findall(r"\bin\s+\S+,\s+(\d+) bytes", text)]
            if not found or max(found) < nbytes:
                return f"strongswan: inbound SA carried {found} bytes < {nbytes} received"
            return None

        pids = {f"charon-{n}": c.pid for n, c in charons.items()}
        yield a, b, ips["b"], pids, check
    finally:
        lab.close()


def run_case(name: str, seconds: float, trees: dict[str, str]) -> dict[str, Any]:
    """One run of case ``name`` (``hostsec-...@LABEL``: the agents from tree LABEL)."""
    base, _, label = name.partition("@")
    if base == "veth":
        manager = case_veth()
    elif base == "strongswan":
        manager = case_strongswan()
    else:
        mode, encapsulation, version = HOSTSEC_CASES[base]
        manager = case_hostsec(mode, encapsulation, version)
    # The agents run as "python -m hostsec", which imports from the working directory
    # first, then PYTHONPATH: both point at the tree the case is for.
    root = trees[label] if label else str(Path(hostsec.__file__).resolve().parents[1])
    saved, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
    os.environ["PYTHONPATH"] = root
    os.chdir(root)
    try:
        with manager as (a, b, address, pids, check):
            workdir = a.lab.workdir
            result = iperf(a, b, address, seconds, pids, workdir)
            problem = check(result["bytes"])
            if problem:
                raise RuntimeError(problem)
    finally:
        os.chdir(cwd)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return result


# ---------------------------------------------------------------------------- report


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "iperf3": subprocess.run(
            ["iperf3", "--version"], capture_output=True, text=True, check=False
        ).stdout.split("\n", 1)[0],
    }


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    for name, results in runs.items():
        if not results:
            continue
        rates = [r["gbit_s"] for r in results]
        median = statistics.median(rates)
        # the run closest to the median gives the CPU figures
        typical = min(results, key=lambda r: abs(r["gbit_s"] - median))
        cases[name] = {
            "gbit_s": round(median, 3),
            "gbit_s_runs": [round(x, 3) for x in rates],
            "retransmits": int(statistics.median(r["retransmits"] for r in results)),
            "retransmits_runs": [r["retransmits"] for r in results],
            "datapath_cpu_s_per_gb": typical["datapath_cpu_s_per_gb"],
            "datapath_kernel_s_per_gb": typical["datapath_kernel_s_per_gb"],
            "cpu_percent": typical["cpu_percent"],
            "system_cpu_percent": typical["system_cpu_percent"],
        }
    ratios: dict[str, float] = {}
    base = cases.get("strongswan", {}).get("gbit_s")
    veth = cases.get("veth", {}).get("gbit_s")
    for name in cases:
        if name.partition("@")[0] not in HOSTSEC_CASES:
            continue
        if base:
            ratios[f"{name} / strongswan"] = round(cases[name]["gbit_s"] / base, 2)
        if veth:
            ratios[f"{name} / veth"] = round(cases[name]["gbit_s"] / veth, 3)
    if base and veth:
        ratios["strongswan / veth"] = round(base / veth, 3)
    return {"cases": cases, "ratios": ratios}


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"iperf3 TCP a -> b, {args.seconds} s per run, median of {args.repeat} round(s)")
    head = f"{'case':25} {'Gbit/s':>7} {'retrans':>8} {'dp CPU s/GB':>11} {'(kernel)':>8}"
    print(f"{head}  runs (Gbit/s)")
    for name, c in summary["cases"].items():
        runs = ", ".join(f"{x:.2f}" for x in c["gbit_s_runs"])
        per_gb, kernel = c["datapath_cpu_s_per_gb"], c["datapath_kernel_s_per_gb"]
        line = f"{name:25} {c['gbit_s']:7.2f} {c['retransmits']:8d} {per_gb:11.2f} {kernel:8.2f}"
        print(f"{line}  {runs}")
    print("\nCPU, % of one core (run nearest the median):")
    for name, c in summary["cases"].items():
        procs = ", ".join(f"{k} {v:.0f}" for k, v in c["cpu_percent"].items())
        s = c["system_cpu_percent"]
        print(f"  {name:25} {procs}")
        print(f"  {'':25} machine: user {s['user']:.0f}, system {s['system']:.0f},"
              f" softirq {s['softirq']:.0f}, idle {s['idle']:.0f}")  # fmt: skip
    print("\nratios:")
    for name, value in summary["ratios"].items():
        print(f"  {name:42} {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="iperf3 time per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--quick", action="store_true", help="3 s, one round")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help="comma-separated cases (also: hostsec-transport-v6, hostsec-tunnel-udp-v6)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="also run the hostsec cases with the agents from another checkout (e.g."
        " main=/work/main), as case@LABEL, interleaved with the others",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeat = 3.0, 1
    if os.geteuid() != 0:
        print("bench_tunnel: needs root (network namespaces)", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("bench_tunnel: iperf3 missing (apt-get install iperf3)", file=sys.stderr)
        return 2
    names = [c for c in args.cases.split(",") if c]
    unknown = set(names) - set(CASES) - set(HOSTSEC_CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    trees: dict[str, str] = {}
    for item in args.tree:
        label, _, path = item.partition("=")
        if not label or not path or not (Path(path) / "hostsec" / "__init__.py").exists():
            parser.error(f"--tree {item}: LABEL=PATH of a checkout with hostsec/")
        trees[label] = str(Path(path).resolve())
    # each hostsec case once per tree, next to the run of this checkout
    names = [
        variant
        for n in names
        for variant in [n, *(f"{n}@{t}" for t in trees if n in HOSTSEC_CASES)]
    ]
    machine = _machine()
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    for round_number in range(args.repeat):
        for name in names:
            if name in errors:
                continue
            try:
                result = run_case(name, args.seconds, trees)
            except (RuntimeError, OSError, subprocess.SubprocessError, TimeoutError) as exc:
                errors[name] = str(exc)
                continue
            runs[name].append(result)
            if not args.json:
                print(
                    f"round {round_number + 1}: {name}: {result['gbit_s']:.2f} Gbit/s,"
                    f" {result['retransmits']} retransmits",
                    file=sys.stderr,
                )
    summary = summarize(runs)
    report = {
        "machine": machine,
        "seconds": args.seconds,
        "repeat": args.repeat,
        **summary,
        "errors": errors,
    }
    if args.json:
        print(json.dumps(report, indent=None))
    else:
        print_table(summary, args)
        for name, error in errors.items():
            print(f"ERROR {name}: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
