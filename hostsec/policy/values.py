"""Validators for single values of policy files: durations, addresses, ports, names.

Each takes the value tomllib produced and returns the typed value, or raises
:class:`FieldError` with a message that names the expected form (never a key).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FieldError(ValueError):
    """One value is wrong; the message says what was expected."""


def type_name(value: object) -> str:
    """The TOML name of the type of ``value``."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "date/time"
    return type(value).__name__


def expect_str(value: object, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise FieldError(f"must be {what}, not {type_name(value)}")
    return value


def expect_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"must be true or false, not {type_name(value)}")
    return value


def expect_int(value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"must be an integer ({low} to {high}), not {type_name(value)}")
    if not low <= value <= high:
        raise FieldError(f"must be {low} to {high}, not {value}")
    return value


def choice(value: object, choices: tuple[str, ...]) -> str:
    options = " | ".join(f'"{c}"' for c in choices)
    text = expect_str(value, f"one of {options}")
    if text not in choices:
        raise FieldError(f'must be one of {options}, not "{_short(text)}"')
    return text


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def name(value: object) -> str:
    text = expect_str(value)
    if not _NAME.fullmatch(text):
        raise FieldError(
            f'"{_short(text)}" is not a valid name (letters, digits, ".", "_", "-"; '
            "up to 63 characters, starting with a letter or digit)"
        )
    return text


def identity(value: object) -> str:
    text = expect_str(value)
    if not text or len(text) > 255 or not text.isprintable():
        raise FieldError("must be a non-empty printable string of at most 255 characters")
    return text


def path(value: object) -> str:
    text = expect_str(value, "a path")
    if not text or "\x00" in text or len(text) > 4096:
        raise FieldError("must be a non-empty path")
    return text


def address(value: object) -> IPAddress:
    """An IPv4 or IPv6 address literal (no prefix, no host name) usable as a unicast peer."""
    text = expect_str(value, "an IPv4 or IPv6 address literal")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise FieldError(
            f'"{_short(text)}" is not an IPv4 or IPv6 address literal (host names are not resolved)'
        ) from None
    if addr.is_unspecified or addr.is_multicast:
        raise FieldError(f"{addr} is not a unicast address")
    if isinstance(addr, ipaddress.IPv4Address) and addr == ipaddress.IPv4Address("255.255.255.255"):
        raise FieldError(f"{addr} is not a unicast address")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        raise FieldError("scoped IPv6 addresses (with %zone) are not supported")
    return addr


_DURATION = re.compile(r"(?:(\d{1,7})d)?(?:(\d{1,7})h)?(?:(\d{1,7})m)?(?:(\d{1,9})s)?")


def duration(value: object, low: int, high: int, allow_off: bool = False) -> int | None:
    """``"30s"``, ``"10m"``, ``"1h"``, ``"24h"``, ``"7d"``, ``"1h30m"``, or ``"off"`` -> seconds."""
    form = '"30s", "10m", "1h" or "2d"' + (' or "off"' if allow_off else "")
    if isinstance(value, int) and not isinstance(value, bool):
        raise FieldError(f'must be a duration string like {form}; write "{value}s" for seconds')
    text = expect_str(value, f"a duration like {form}").strip().lower()
    if text == "off":
        if allow_off:
            return None
        raise FieldError('cannot be "off"')
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise FieldError(f'"{_short(text)}" is not a duration like {form}')
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if not low <= total <= high:
        raise FieldError(
            f"{text} is out of range ({format_duration(low)} to {format_duration(high)})"
        )
    return total


def seconds(value: object, low: int, high: int) -> int:
    """A duration that cannot be "off"."""
    result = duration(value, low, high)
    assert result is not None
    return result


_VOLUME = re.compile(r"(\d{1,19})\s*([kmgt]?)")
_VOLUME_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def volume(value: object, low: int, high: int) -> int | None:
    """A count of bytes or packets: ``1000``, ``"64k"``, ``"500M"``, ``"10G"`` (1024-based,
    as strongSwan reads them), or ``"off"`` -> None."""
    form = 'a number, "64k", "500M", "10G" or "off"'
    if isinstance(value, int) and not isinstance(value, bool):
        total = value
    else:
        text = expect_str(value, form).strip().lower()
        if text == "off":
            return None
        match = _VOLUME.fullmatch(text)
        if match is None:
            raise FieldError(f'"{_short(text)}" is not {form}')
        total = int(match.group(1)) * _VOLUME_UNITS[match.group(2)]
    if not low <= total <= high:
        raise FieldError(f"{total} is out of range ({low} to {high})")
    return total


def format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive range of ports; a single port has ``first == last``."""

    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def port_range(value: object) -> PortRange | None:
    """``23``, ``"23"``, ``"1024-65535"``, or ``"any"`` (None)."""
    if isinstance(value, int) and not isinstance(value, bool):
        port = expect_int(value, 0, 65535)
        return PortRange(port, port)
    text = expect_str(value, 'a port number, a range "1024-65535", or "any"').strip()
    if text == "any":
        return None
    match = re.fullmatch(r"(\d{1,5})(?:\s*-\s*(\d{1,5}))?", text)
    if match is None:
        raise FieldError(f'"{_short(text)}" is not a port, a range "1024-65535", or "any"')
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    if first > 65535 or last > 65535:
        raise FieldError("ports are 0 to 65535")
    if first > last:
        raise FieldError(f'port range "{text}" is empty')
    if (first, last) == (0, 65535):
        return None
    return PortRange(first, last)


IP_PROTOCOLS: dict[str, int] = {
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "sctp": 132,
    "udplite": 136,
}
#: Protocols whose packets carry ports that selectors can match.
PORT_PROTOCOLS = frozenset({6, 17, 132, 136})


def ip_protocol(value: object) -> int | None:
    """A protocol name, a number 1-255, or ``"any"`` (None)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return expect_int(value, 1, 255)
    names = ", ".join(f'"{n}"' for n in IP_PROTOCOLS)
    text = expect_str(value, f'a protocol ({names}, "any") or a number').strip().lower()
    if text == "any":
        return None
    if text in IP_PROTOCOLS:
        return IP_PROTOCOLS[text]
    raise FieldError(f'unknown protocol "{_short(text)}" (use {names}, "any", or a number)')


def protocol_name(number: int | None) -> str:
    if number is None:
        return "any"
    for text, num in IP_PROTOCOLS.items():
        if num == number:
            return text
    return str(number)


def _short(text: str, limit: int = 60) -> str:
    """A user value quoted in a message: bounded and printable."""
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."
