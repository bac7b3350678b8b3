"""hostsec.toml [ike]: NAT keepalive and retransmission settings, checked and handed to IKE."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hostsec.agent.config import ConfigError, load_config
from hostsec.agent.translate import IkeCredentials, ike_config
from hostsec.crypto.proposals import Protocol, parse_proposals
from hostsec.ike.v2.config import Retransmit
from hostsec.policy import Auth, Peer


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "hostsec.toml").write_text(text)
    return tmp_path


def test_defaults_without_an_ike_table(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "[agent]\nmtu = 1400\n"), tmp_path / "run")
    assert config.keepalive == 20.0
    assert (config.retransmit_timeout, config.retransmit_base, config.retransmit_tries) == (
        4.0,
        1.8,
        5,
    )


def test_ike_table_is_read(tmp_path: Path) -> None:
    text = (
        "[ike]\nkeepalive = 2\nretransmit_timeout = 0.5\nretransmit_base = 1.5\n"
        "retransmit_tries = 3\n"
    )
    config = load_config(_write(tmp_path, text), tmp_path / "run")
    assert config.keepalive == 2
    assert Retransmit(
        config.retransmit_timeout, config.retransmit_base, config.retransmit_tries
    ).delays() == [
        0.5,
        0.75,
        1.125,
        1.6875,
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("keepalive = 0", "keepalive must be 1 to 3600"),
        ("retransmit_timeout = 0.01", "retransmit_timeout must be 0.1 to 60"),
        ("retransmit_base = 9", "retransmit_base must be 1 to 4"),
        ("retransmit_tries = 2.5", "'retransmit_tries' must be a number"),
        ("retransmit_tries = true", "'retransmit_tries' must be a number"),
        ('keepalive = "20s"', "'keepalive' must be a number"),
        ("dpd = 5", "no setting 'dpd'"),
    ],
)
def test_bad_ike_settings_are_refused(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, f"[ike]\n{line}\n"), tmp_path / "run")


def test_settings_reach_every_peer_ike_config() -> None:
    peer = Peer(
        "b",
        ipaddress.ip_address("198.51.100.2"),
        Auth.PSK,
        ike_proposals=tuple(parse_proposals(["aes128gcm16-prfsha256-ecp256"], Protocol.IKE)),
    )
    local = ipaddress.ip_address("198.51.100.1")
    creds = IkeCredentials(psk=b"k" * 32)
    config = ike_config(peer, [], local, creds, keepalive=2, retransmit=Retransmit(0.5, 1.5, 3))
    assert config.keepalive == 2 and config.retransmit == Retransmit(0.5, 1.5, 3)
    default = ike_config(peer, [], local, creds)
    assert default.keepalive == 20.0 and default.retransmit == Retransmit()
