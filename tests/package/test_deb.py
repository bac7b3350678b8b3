"""The Debian package: built by scripts/build-deb.sh, inspected, and its hostsec run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.package


def _need(tool: str) -> None:
    if shutil.which(tool) is None or not Path("/usr/bin/python3").exists():
        if os.environ.get("HOSTSEC_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"{tool} or /usr/bin/python3 missing")
        pytest.skip(f"{tool} or /usr/bin/python3 missing")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need("dpkg-deb")
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-deb.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("hostsec_*.deb")
    return path


def test_control_fields(deb: Path) -> None:
    info = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True)
    fields = dict(
        line.split(": ", 1) for line in info.stdout.splitlines() if ": " in line and line[0] != " "
    )
    assert fields["Package"] == "hostsec"
    depends = fields["Depends"]
    for dep in ("nftables", "iproute2", "python3"):
        assert dep in depends


def test_contents(deb: Path) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    )
    names = listing.stdout
    for path in (
        "./usr/bin/hostsec -> /opt/hostsec/venv/bin/hostsec",
        "./lib/systemd/system/hostsec.service",
        "./etc/hostsec/policies.d/",
        "./opt/hostsec/venv/bin/hostsec",
    ):
        assert path in names
    secrets = next(line for line in names.splitlines() if line.endswith("./etc/hostsec/secrets/"))
    assert secrets.startswith("drwx------")


def test_the_packaged_hostsec_runs(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    venv = tmp_path / "opt" / "hostsec" / "venv"
    script = (venv / "bin" / "hostsec").read_text()
    assert script.startswith("#!/opt/hostsec/venv/bin/python")  # relocated to its final path
    python = venv / "bin" / "python3"
    version = subprocess.run(
        [str(python), "-m", "hostsec", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("hostsec ")
    examples = tmp_path / "usr" / "share" / "doc" / "hostsec" / "examples"
    check = subprocess.run(
        [
            str(python),
            "-m",
            "hostsec",
            "policy",
            "check",
            "--no-secrets",
            str(examples / "telnet-psk" / "web1" / "policies.d"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
