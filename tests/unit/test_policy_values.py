"""Single values of policy files, and where the TOML line locator puts things."""

from __future__ import annotations

import ipaddress

import pytest

from hostsec.policy.names import is_policy_file_name
from hostsec.policy.tomllines import TomlLines
from hostsec.policy.values import (
    FieldError,
    PortRange,
    address,
    duration,
    format_duration,
    ip_protocol,
    port_range,
    volume,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("24h", 86400),
        ("2d", 172800),
        ("1h30m", 5400),
        (" 5M ", 300),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert duration(text, 1, 10**7) == seconds


@pytest.mark.parametrize("text", ["", "h", "30", "1.5h", "-1h", "1w", "30m1h", "99999999999s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(FieldError):
        duration(text, 0, 10**12)


def test_duration_off_and_range() -> None:
    assert duration("off", 1, 10, allow_off=True) is None
    with pytest.raises(FieldError, match='cannot be "off"'):
        duration("off", 1, 10)
    with pytest.raises(FieldError, match=r"out of range \(1m to 7d\)"):
        duration("30s", 60, 7 * 86400)
    assert format_duration(90) == "90s" and format_duration(7200) == "2h"


def test_ports() -> None:
    assert port_range(23) == PortRange(23, 23)
    assert port_range("1024-65535") == PortRange(1024, 65535)
    assert port_range("0-65535") is None and port_range("any") is None
    assert str(PortRange(5, 5)) == "5" and str(PortRange(5, 9)) == "5-9"
    for bad in (-1, 65536, "9-1", "x", True, 1.0):
        with pytest.raises(FieldError):
            port_range(bad)


def test_protocols() -> None:
    assert ip_protocol("TCP") == 6 and ip_protocol("ipv6-icmp") == 58 and ip_protocol(50) == 50
    assert ip_protocol("any") is None
    for bad in (0, 256, "tcpp", False):
        with pytest.raises(FieldError):
            ip_protocol(bad)


def test_addresses() -> None:
    assert address("2001:db8::1") == ipaddress.ip_address("2001:db8::1")
    for bad in ("0.0.0.0", "255.255.255.255", "ff02::1", "fe80::1%eth0", "example.net", 1):
        with pytest.raises(FieldError):
            address(bad)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a.toml", True),
        ("10-web.toml", True),
        (".a.toml", False),
        (".a.toml.swp", False),
        ("a.toml~", False),
        ("#a.toml#", False),
        (".#a.toml", False),
        ("4913", False),
        ("a.toml.tmp", False),
        ("a.TOML", False),
        (".toml", False),
        ("a.swp", False),
    ],
)
def test_policy_file_names(name: str, ok: bool) -> None:
    assert is_policy_file_name(name) is ok
    assert is_policy_file_name(f"/etc/hostsec/policies.d/{name}") is ok


def test_lines_ignore_strings_comments_and_arrays() -> None:
    text = '''# [[peer]] in a comment
[[peer]]
name = "a"  # name = "b"
note = """
[[peer]]
fake = 1
"""
list = [
  "x = 1",
  { inline = "[[peer]]" },
]
lit = \'\'\'
[[flow]]
\'\'\'
"quoted key" = 1
dotted.key = 2

[[peer]]
name = "b"
[peer.sub]
z = 1
[[flow]]
name = "f"
'''
    lines = TomlLines(text)
    first, second = lines.array_table("peer", 0), lines.array_table("peer", 1)
    assert first is not None and second is not None
    assert lines.array_table("peer", 2) is None
    assert first.line == 2 and second.line == 18
    assert first.keys == {
        "name": 3,
        "note": 4,
        "list": 8,
        "lit": 12,
        "quoted key": 15,
        "dotted": 16,
    }
    assert second.keys == {"name": 19, "sub": 20}
    flow = lines.array_table("flow", 0)
    assert flow is not None and flow.line == 22 and flow.key("name") == 23
    assert flow.key("missing") == 22


def test_lines_of_inline_array_of_tables() -> None:
    lines = TomlLines('x = 1\npeer = [\n {name = "a"},\n]\n')
    assert lines.array_table("peer", 0) is None
    assert lines.table_or_key("peer", 0).line == 2


def test_find_a_value_line() -> None:
    lines = TomlLines('a = [\n  "one",\n  "two",\n]\n')
    assert lines.find("two", 1) == 3 and lines.find("absent", 1) == 1


@pytest.mark.parametrize(
    ("value", "count"),
    [(1000, 1000), ("1000", 1000), ("64k", 65536), ("64K", 65536), ("500M", 500 << 20),
     ("10G", 10 << 30), ("2t", 2 << 40), (" 3 m ", 3 << 20), ("off", None)],
)  # fmt: skip
def test_volumes(value: object, count: int | None) -> None:
    assert volume(value, 1, 1 << 62) == count


@pytest.mark.parametrize("value", ["", "k", "1.5G", "10 GB", "-5", "1e9", True, 2.5, ["1G"]])
def test_bad_volumes(value: object) -> None:
    with pytest.raises(FieldError):
        volume(value, 1, 1 << 62)


def test_volume_range() -> None:
    with pytest.raises(FieldError, match="out of range"):
        volume("63k", 64 << 10, 1 << 62)
    assert volume("64k", 64 << 10, 1 << 62) == 64 << 10
