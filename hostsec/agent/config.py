"""Agent settings: ``<config dir>/hostsec.toml`` (optional; every key has a default).

```toml
[agent]
interface = "hostsec0"      # the TUN device
mtu = 1400                  # leaves room for ESP/AH/UDP overhead on a 1500-byte link
routing_table = 4500        # the table that routes protected flows into the TUN device
rule_priority = 4500        # first `ip rule` priority the agent uses (and up to +999)
nft_table = "hostsec"       # the agent's own nftables table (inet family)
log_level = "info"

[ike]                       # IKE retransmission (RFC 7296 2.1, 2.4) and NAT keepalives
retransmit_timeout = 4.0    # seconds before the first retransmission
retransmit_base = 1.8       # each further one waits this much longer
retransmit_tries = 5        # then the peer is dead (a liveness check takes the same path)
nat_keepalive = 20.0        # seconds between NAT keepalives when this host is behind a NAT

[identity]                  # for certificate authentication (IKE)
certificate = "certs/host.pem"      # own certificate (chain), relative to the config dir
private_key = "secrets/host.key"    # mode 0600
cacerts = "cacerts"                 # trusted CAs, PEM files
```
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_DIR = Path("/etc/hostsec")
DEFAULT_RUN_DIR = Path("/run/hostsec")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """hostsec.toml is unusable; the message says where and why."""


@dataclass(frozen=True)
class AgentConfig:
    config_dir: Path = DEFAULT_CONFIG_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    interface: str = "hostsec0"
    mtu: int = 1400
    routing_table: int = 4500
    rule_priority: int = 4500
    nft_table: str = "hostsec"
    log_level: str = "info"
    certificate: Path | None = None
    private_key: Path | None = None
    cacerts: Path | None = None
    retransmit_timeout: float = 4.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    nat_keepalive: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def policy_dir(self) -> Path:
        return self.config_dir / "policies.d"


def _expect(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: '{key}' must be {kind.__name__}")
    return value


def load_config(config_dir: Path, run_dir: Path) -> AgentConfig:
    """Read ``hostsec.toml`` from ``config_dir`` (missing file: all defaults)."""
    path = config_dir / "hostsec.toml"
    values: dict[str, Any] = {"config_dir": config_dir, "run_dir": run_dir}
    if not path.exists():
        return AgentConfig(**values)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    unknown = set(data) - {"agent", "ike", "identity"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s): {', '.join(sorted(unknown))}")
    agent = data.get("agent", {})
    allowed = {"interface", "mtu", "routing_table", "rule_priority", "nft_table", "log_level"}
    for key in agent:
        if key not in allowed:
            raise ConfigError(f"{path}: [agent] has no setting '{key}'")
    where = f"{path}: [agent]"
    if "interface" in agent:
        name = _expect(agent, "interface", str, where)
        if not _IFNAME.match(name):
            raise ConfigError(f"{where}: interface name '{name}' is not a valid device name")
        values["interface"] = name
    if "mtu" in agent:
        mtu = _expect(agent, "mtu", int, where)
        if not 576 <= mtu <= 9000:
            raise ConfigError(f"{where}: mtu must be 576 to 9000")
        values["mtu"] = mtu
    for key in ("routing_table", "rule_priority"):
        if key in agent:
            number = _expect(agent, key, int, where)
            if not 1 <= number <= 0x7FFFF000 or number in (253, 254, 255):
                raise ConfigError(f"{where}: {key} {number} is reserved or out of range")
            values[key] = number
    if "nft_table" in agent:
        name = _expect(agent, "nft_table", str, where)
        if not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,31}$", name):
            raise ConfigError(f"{where}: nft_table must be a plain identifier")
        values["nft_table"] = name
    if "log_level" in agent:
        level = _expect(agent, "log_level", str, where)
        if level not in _LOG_LEVELS:
            raise ConfigError(f"{where}: log_level must be one of {', '.join(_LOG_LEVELS)}")
        values["log_level"] = level
    values.update(_ike_settings(data.get("ike", {}), f"{path}: [ike]"))
    identity = data.get("identity", {})
    where = f"{path}: [identity]"
    for key in identity:
        if key not in ("certificate", "private_key", "cacerts"):
            raise ConfigError(f"{where}: no setting '{key}'")
        values[key] = config_dir / _expect(identity, key, str, where)
    return AgentConfig(**values)


_IKE_LIMITS: dict[str, tuple[float, float]] = {
    "retransmit_timeout": (0.1, 60.0),
    "retransmit_base": (1.0, 4.0),
    "retransmit_tries": (0, 20),
    "nat_keepalive": (1.0, 3600.0),
}


def _ike_settings(ike: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in ike.items():
        if key not in _IKE_LIMITS:
            raise ConfigError(f"{where}: no setting '{key}'")
        low, high = _IKE_LIMITS[key]
        integral = key == "retransmit_tries"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: '{key}' must be a number")
        if integral and not isinstance(value, int):
            raise ConfigError(f"{where}: '{key}' must be an integer")
        if not low <= value <= high:
            raise ConfigError(f"{where}: '{key}' must be {low:g} to {high:g}")
        out[key] = int(value) if integral else float(value)
    return out
