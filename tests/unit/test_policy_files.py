"""Reading secrets and policy files: permission refusals, with real files in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostsec.policy import (
    PolicySet,
    SecretFileError,
    Unreadable,
    read_policy_file,
    read_secret_file,
    scan_directory,
)
from tests.unit.policy_helpers import FLOW, PEER, PSK


def write(path: Path, data: bytes | str, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_secret_is_read(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "db1.psk", PSK, mode)
    assert read_secret_file(str(path)) == PSK


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o610, 0o660])
def test_secret_readable_or_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "db1.psk", PSK, mode)
    with pytest.raises(SecretFileError) as info:
        read_secret_file(str(path))
    message = str(info.value)
    assert f"mode {mode:04o}" in message and f"chmod 600 {path}" in message
    assert PSK.decode() not in message


def test_secret_that_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.psk").mkdir(mode=0o700)
    with pytest.raises(SecretFileError, match="not a regular file"):
        read_secret_file(str(tmp_path / "dir.psk"))


def test_missing_secret_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_secret_file(str(tmp_path / "nope"))


def test_huge_secret_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "big.keys", b"#" * 100_000, 0o600)
    with pytest.raises(SecretFileError, match="larger than"):
        read_secret_file(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_secret_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "db1.psk", PSK, 0o600)
    os.chown(path, 12345, 12345)
    with pytest.raises(SecretFileError, match="owned by uid 12345"):
        read_secret_file(str(path))
    assert isinstance(read_policy_file(str(write(tmp_path / "p.toml", PEER, 0o644))), bytes)
    os.chown(tmp_path / "p.toml", 12345, 12345)
    result = read_policy_file(str(tmp_path / "p.toml"))
    assert isinstance(result, Unreadable) and "owned by uid 12345" in result.reason


def test_policy_file_reads(tmp_path: Path) -> None:
    path = write(tmp_path / "a.toml", PEER, 0o644)
    assert read_policy_file(str(path)) == PEER.encode()
    assert read_policy_file(str(tmp_path / "gone.toml")) is None


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_policy_file_writable_by_others_is_unreadable(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "a.toml", PEER, mode)
    result = read_policy_file(str(path))
    assert isinstance(result, Unreadable)
    assert f"mode {mode:04o}" in result.reason and "chmod go-w" in result.reason


def test_policy_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "x.toml").mkdir()
    result = read_policy_file(str(tmp_path / "x.toml"))
    assert isinstance(result, Unreadable) and "not a regular file" in result.reason


def test_scan_directory_skips_temp_files_and_reports_removed_ones(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", PEER, 0o644)
    write(tmp_path / ".a.toml.swp", b"\0\0", 0o644)
    write(tmp_path / "a.toml~", "junk", 0o644)
    write(tmp_path / "4913", "", 0o644)
    gone = str(tmp_path / "b.toml")
    elsewhere = "/elsewhere/c.toml"
    found = scan_directory(str(tmp_path), known=(gone, elsewhere))
    assert found == {str(tmp_path / "a.toml"): PEER.encode(), gone: None}
    assert scan_directory(str(tmp_path / "missing")) == {}


def test_policy_set_with_real_secret_files(tmp_path: Path) -> None:
    """A world-readable PSK: the policy is refused at the psk_file line, with the fix."""
    policies = tmp_path / "policies.d"
    psk = write(tmp_path / "secrets" / "db1.psk", PSK, 0o644)
    policy = write(policies / "db1.toml", PEER + FLOW, 0o644)
    ps = PolicySet(read_secret_file)
    diff = ps.update_many(scan_directory(str(policies)))
    assert diff.empty and diff.rejected == (str(policy),)
    line = PEER.split("\n").index('psk_file = "../secrets/db1.psk"') + 1
    (problem,) = [p for p in ps.problems()[str(policy)] if p.location.line]
    assert str(problem).startswith(f"{policy}:{line}: error: peer 'db1': psk_file: {psk} is ")
    assert "mode 0644" in problem.message
    psk.chmod(0o600)
    diff = ps.update_many(scan_directory(str(policies), ps.known_files))  # SIGHUP rescan
    assert [f.name for f in diff.flows_added] == ["telnet"]
    assert ps.problems() == {}
