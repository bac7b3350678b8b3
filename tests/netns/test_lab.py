"""The namespace lab itself: hosts talk, captures see, and nothing is left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from hostsec.platform.capture import protocol_counts
from hostsec.platform.netns import Lab, lab_namespaces, netns_pids, remove_stale
from hostsec.platform.nsenter import NETNS_RUN_DIR, ChildFailed
from tests.netns.helpers import tcp_echo_server, try_connect, wait_ready

pytestmark = pytest.mark.netns


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_hosts_talk_v4_and_v6_and_the_capture_sees_it(pair) -> None:
    a, b = pair
    assert str(a.ip) == "198.51.100.1" and str(b.ip) == "198.51.100.2"
    assert str(a.ip6) == "2001:db8::1" and str(b.ip6) == "2001:db8::2"
    cap = b.capture("toa")
    a.run(["ping", "-c", "1", "-W", "2", str(b.ip)])
    a.run(["ping", "-c", "1", "-W", "2", str(b.ip6)])
    frames = cap.stop()
    counts = protocol_counts(frames)
    assert counts.get("icmp", 0) >= 2  # request and reply
    assert any(f.protocol == 58 and f.src == "2001:db8::1" for f in frames)
    # The lab's namespaces are the only place anything was built.
    assert (
        "toa"
        not in subprocess.run(["ip", "link"], capture_output=True, text=True, check=True).stdout
    )


def test_names_are_unique_per_process_and_lab() -> None:
    with Lab() as one, Lab() as two:
        h1, h2 = one.add_host("a"), two.add_host("a")
        assert h1.netns != h2.netns
        assert h1.netns.startswith(f"hs{os.getpid()}-")
        with pytest.raises(ValueError):
            one.add_host("a")
        with pytest.raises(ValueError):
            one.connect(h1, h1, subnet="192.0.2.0/24")  # documentation net of others: refused


def test_close_ends_every_process_and_removes_every_namespace() -> None:
    lab = Lab()
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.connect(a, b)
    server = b.spawn(tcp_echo_server, 23)
    wait_ready(server)
    assert a.call(try_connect, str(b.ip), 23) == "connected"
    sleeper = a.popen(["sleep", "600"])
    cap = a.capture("tob")
    # A process that escaped the lab's bookkeeping: started by hand inside the namespace.
    stray = subprocess.Popen(["ip", "netns", "exec", b.netns, "sleep", "600"])
    time.sleep(0.2)
    assert stray.pid in netns_pids(b.netns)
    pids = [server.pid, sleeper.pid, stray.pid, cap.pid]
    names = [a.netns, b.netns]
    lab.close()
    stray.wait(5)
    assert not [p for p in pids if p is not None and _alive(p)]
    assert not [n for n in names if (NETNS_RUN_DIR / n).exists()]
    assert not lab.workdir.exists()


def test_call_reports_errors_from_inside(lab) -> None:
    a = lab.add_host("a")

    def boom() -> None:
        raise RuntimeError("inside")

    with pytest.raises(ChildFailed, match="inside"):
        a.call(boom)
    # The function really ran in the namespace: it sees the lab's loopback only.
    assert a.call(socket.if_nameindex) == [(1, "lo")]


def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    dead = 4_000_000  # above pid_max's default range: never a live process
    while _alive(dead):
        dead += 1
    name = f"hs{dead}-0-a"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert (name, dead) in lab_namespaces()
        removed = remove_stale()
        assert name in removed
        assert not (NETNS_RUN_DIR / name).exists()
    finally:
        if (NETNS_RUN_DIR / name).exists():
            subprocess.run(["ip", "netns", "del", name], check=False)
