"""hostsec.agent.swanlab.Charon without root or strongSwan: a stand-in host runs a small
program instead of charon, so the files written, the argv, the failure reports and the
stop by PID (SIGTERM, then SIGKILL) are checked here; the interop tests run the real one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hostsec.agent.swanlab import CHARON, Charon, CharonError, strongswan_conf


class StandInHost:
    """Records the argv a Charon asks for and runs ``program`` in its place."""

    def __init__(self, program: list[str]) -> None:
        self.program = program
        self.argv: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        self.argv = list(argv)
        proc = subprocess.Popen(self.program, **kw)
        self.procs.append(proc)
        return proc

    def end_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def host_factory() -> Any:
    made: list[StandInHost] = []

    def make(*program: str) -> StandInHost:
        host = StandInHost(list(program))
        made.append(host)
        return host

    yield make
    for host in made:
        host.end_all()


class WithSwanctl(Charon):
    def env(self) -> dict[str, str]:
        return {**super().env(), "SWANCTL_DIR": str(self.dir / "swanctl")}

    def config(self) -> str:
        return strongswan_conf(self.dir, self.written_by, log={"default": 0})


def test_exit_at_start_reports_code_and_log(tmp_path: Path, host_factory: Any) -> None:
    host = host_factory(sys.executable, "-c", "print('out'); raise SystemExit(3)")
    charon = Charon(host, tmp_path / "sw", "tests/unit/test_swanlab.py")
    (tmp_path / "sw" / "charon.log").write_text("no plugin kdf\n")
    with pytest.raises(CharonError, match=r"charon exited \(3\):\nno plugin kdf"):
        charon.start(timeout=10)
    conf = tmp_path / "sw" / "strongswan.conf"
    assert conf.read_text() == strongswan_conf(tmp_path / "sw", "tests/unit/test_swanlab.py")
    assert host.argv == ["env", f"STRONGSWAN_CONF={conf}", CHARON]
    assert (tmp_path / "sw" / "charon.stdout").read_text() == "out\n"


def test_subclass_chooses_config_and_env(tmp_path: Path, host_factory: Any) -> None:
    host = host_factory(sys.executable, "-c", "raise SystemExit(1)")
    charon = WithSwanctl(host, tmp_path, "x")
    (tmp_path / "charon.vici").write_text("stale")
    with pytest.raises(CharonError, match="exited"):
        charon.start(timeout=10)
    assert not (tmp_path / "charon.vici").exists()  # a stale socket is removed first
    assert "      default = 0\n" in (tmp_path / "strongswan.conf").read_text()
    assert host.argv[:3] == [
        "env",
        f"STRONGSWAN_CONF={tmp_path}/strongswan.conf",
        f"SWANCTL_DIR={tmp_path}/swanctl",
    ]


def test_no_vici_socket_times_out_then_stop_by_pid(tmp_path: Path, host_factory: Any) -> None:
    host = host_factory(sys.executable, "-c", "import time; time.sleep(60)")
    charon = Charon(host, tmp_path, "x")
    with pytest.raises(CharonError, match="vici socket did not appear"):
        charon.start(timeout=0.3)
    proc = charon.proc
    assert proc is not None and charon.running and charon.pid == proc.pid
    charon.stop()
    assert proc.returncode == -signal.SIGTERM
    assert not charon.running and charon.proc is None
    charon.stop()  # a second stop is a no-op


def test_stop_escalates_to_sigkill(tmp_path: Path, host_factory: Any) -> None:
    program = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    host = host_factory(sys.executable, "-c", program)
    charon = Charon(host, tmp_path, "x")
    with pytest.raises(CharonError):
        charon.start(timeout=0.2)
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "charon.stdout").read_text():
        assert time.monotonic() < deadline, "stand-in did not start"
        time.sleep(0.01)
    proc = charon.proc
    assert proc is not None
    charon.stop(timeout=0.3)
    assert proc.returncode == -signal.SIGKILL
