"""hostsec.toml [ike]: retransmission and NAT keepalive settings (the dead peer budget)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostsec.agent.config import AgentConfig, ConfigError, load_config


def _load(tmp_path: Path, text: str) -> AgentConfig:
    (tmp_path / "hostsec.toml").write_text(text)
    return load_config(tmp_path, tmp_path / "run")


def test_defaults_are_strongswans(tmp_path: Path) -> None:
    config = load_config(tmp_path, tmp_path / "run")
    assert (config.retransmit_timeout, config.retransmit_base, config.retransmit_tries) == (
        4.0,
        1.8,
        5,
    )
    assert config.nat_keepalive == 20.0


def test_ike_section(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "[ike]\nretransmit_timeout = 0.5\nretransmit_base = 2\nretransmit_tries = 3\n"
        "nat_keepalive = 5\n",
    )
    assert config.retransmit_timeout == 0.5
    assert config.retransmit_base == 2.0
    assert config.retransmit_tries == 3
    assert config.nat_keepalive == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ike]\nretransmit_tries = 2.5\n", "must be an integer"),
        ("[ike]\nretransmit_timeout = true\n", "must be a number"),
        ("[ike]\nretransmit_timeout = 0\n", "must be 0.1 to 60"),
        ("[ike]\nnat_keepalive = 'often'\n", "must be a number"),
        ("[ike]\ndpd = 5\n", "no setting 'dpd'"),
    ],
)
def test_bad_ike_settings(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)
