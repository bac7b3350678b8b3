"""`hostsec policy check`: output lines, exit codes, and the example drops in policies/."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hostsec.cli import main
from hostsec.crypto.proposals import Protocol
from hostsec.policy import PolicySet, read_secret_file, scan_directory
from tests.conftest import ROOT
from tests.unit.policy_helpers import FLOW, PEER, PSK

EXAMPLES = ROOT / "policies"


def make_config(tmp_path: Path, policy: str, psk_mode: int = 0o600) -> Path:
    (tmp_path / "policies.d").mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "policies.d" / "db1.toml").write_text(policy)
    psk = tmp_path / "secrets" / "db1.psk"
    psk.write_bytes(PSK)
    psk.chmod(psk_mode)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["policy", "check", *args])
    return code, capsys.readouterr().out.splitlines()


def test_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, PEER + FLOW)
    code, out = run(capsys, "--config-dir", str(config))
    assert code == 0
    assert out == ["OK: 1 files, 1 peers, 1 flows"]


def test_errors_exit_1_with_file_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = PEER + 'dpd = "soon"\n' + FLOW.replace('"tcp"', '"tcpp"')
    config = make_config(tmp_path, text)
    path = config / "policies.d" / "db1.toml"
    code, out = run(capsys, str(path))
    assert code == 1
    lines = text.split("\n")
    dpd_line = lines.index('dpd = "soon"') + 1
    protocol_line = lines.index('protocol = "tcpp"') + 1
    assert out == [
        f"{path}:{dpd_line}: error: peer 'db1': dpd \"soon\" is not a duration like "
        '"30s", "10m", "1h" or "2d" or "off"',
        f"{path}:{protocol_line}: error: flow 'telnet': protocol unknown protocol \"tcpp\" "
        '(use "icmp", "tcp", "udp", "gre", "icmpv6", "ipv6-icmp", "sctp", "udplite", "any", '
        "or a number)",
    ]
    assert "OK" not in "\n".join(out)


def test_warnings_only_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(
        tmp_path, PEER + 'allow_insecure = true\nike_proposals = ["aes128-sha1-modp2048"]\n'
    )
    code, out = run(capsys, "--config-dir", str(config))
    assert code == 0
    assert (
        len(out) == 2 and ": warning: peer 'db1': ike_proposals: insecure algorithm sha1" in out[0]
    )
    assert out[1].startswith("OK")


def test_world_readable_psk_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, PEER + FLOW, psk_mode=0o644)
    code, out = run(capsys, "--config-dir", str(config))
    assert code == 1
    assert "mode 0644" in out[0] and "chmod 600" in out[0]
    code, out = run(capsys, "--config-dir", str(config), "--no-secrets")
    assert code == 0


def test_cross_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, PEER + FLOW)
    (config / "policies.d" / "dup.toml").write_text(FLOW)
    (config / "policies.d" / "lost.toml").write_text(
        FLOW.replace('"db1"', '"db9"').replace("telnet", "x")
    )
    code, out = run(capsys, "--config-dir", str(config))
    assert code == 1
    assert any(
        "dup.toml:3: error: flow name 'telnet' is already used by the flow at" in o for o in out
    )
    assert any(
        "lost.toml:4: error: flow 'x': peer 'db9' is not defined in any policy file" in o
        for o in out
    )
    assert not any("not applied" in o for o in out)


def test_missing_path_and_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(tmp_path / "nope.toml"))
    assert code == 1 and out == [f"{tmp_path / 'nope.toml'}: error: no such file or directory"]
    code, out = run(capsys, str(tmp_path))
    assert (
        code == 0 and out[0] == f"{tmp_path}: warning: no policy files (*.toml) in this directory"
    )


def test_a_file_the_agent_would_ignore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(tmp_path, PEER)
    path = config / "policies.d" / "db1.conf"
    path.write_text(PEER)
    code, out = run(capsys, str(path))
    assert code == 0 and "the agent ignores this file" in out[0]


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    with pytest.raises(SystemExit) as info:
        main(["policy"])
    assert info.value.code == 2


def test_real_command_exit_status(tmp_path: Path) -> None:
    config = make_config(tmp_path, PEER + "[oops\n")
    result = subprocess.run(
        [sys.executable, "-m", "hostsec.cli", "policy", "check", "--config-dir", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert (
        f"{config / 'policies.d' / 'db1.toml'}:{PEER.count(chr(10)) + 1}: error: syntax error"
        in result.stdout
    )


# -- the example drops ---------------------------------------------------------------------


HOSTS = sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.glob("*/*") if (p / "policies.d").is_dir())


def private_copy(tmp_path: Path) -> Path:
    """The examples as installed: secrets mode 0600 (git does not keep that)."""
    copy = tmp_path / "policies"
    shutil.copytree(EXAMPLES, copy)
    for secret in copy.glob("*/*/secrets/*"):
        secret.chmod(0o600)
    for policy in copy.glob("*/*/policies.d/*"):
        policy.chmod(0o644)
    return copy


def test_there_are_psk_cert_and_manual_examples() -> None:
    assert {str(h.parent) for h in HOSTS} >= {"telnet-psk", "telnet-cert", "telnet-manual"}
    assert len(HOSTS) >= 6


@pytest.mark.parametrize("host", HOSTS, ids=[str(h) for h in HOSTS])
def test_examples_pass_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: Path
) -> None:
    copy = private_copy(tmp_path)
    code, out = run(capsys, "--config-dir", str(copy / host))
    assert code == 0, out
    assert out == ["OK: 1 files, 1 peers, 1 flows"]


def test_examples_with_readable_secrets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = private_copy(tmp_path)
    keys = copy / "telnet-manual" / "web1" / "secrets" / "telnet.keys"
    keys.chmod(0o644)
    code, out = run(capsys, "--config-dir", str(copy / "telnet-manual" / "web1"))
    assert code == 1 and "mode 0644" in out[0]


def test_manual_example_is_one_file_for_both_hosts(tmp_path: Path) -> None:
    web1_keys = EXAMPLES / "telnet-manual" / "web1" / "secrets" / "telnet.keys"
    db1_keys = EXAMPLES / "telnet-manual" / "db1" / "secrets" / "telnet.keys"
    assert filecmp.cmp(web1_keys, db1_keys, shallow=False)
    copy = private_copy(tmp_path)
    views = {}
    for host, flow in (("web1", "telnet-to-db1"), ("db1", "telnet-from-web1")):
        ps = PolicySet(read_secret_file)
        ps.update_many(scan_directory(str(copy / "telnet-manual" / host / "policies.d")))
        assert ps.problems() == {}
        keys = ps.manual_keys(flow)
        assert keys is not None
        views[host] = keys
    web1_out = views["web1"].outbound_sa(Protocol.ESP)
    db1_in = views["db1"].inbound_sa(Protocol.ESP)
    assert web1_out is not None and web1_out == db1_in
    assert views["web1"].inbound == views["db1"].outbound
    assert str(web1_out.src) == "198.51.100.10" and str(web1_out.dst) == "198.51.100.20"
