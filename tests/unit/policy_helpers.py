"""Shared pieces of the policy tests: texts, a fake secrets reader, manual keys."""

from __future__ import annotations

import os

from hostsec.policy import SecretFileError

A = "198.51.100.10"  # this host in the examples
B = "198.51.100.20"  # the peer
PSK = b"0x" + b"ab" * 32

PEER = f"""
[[peer]]
name = "db1"
address = "{B}"
auth = "psk"
psk_file = "../secrets/db1.psk"
"""

FLOW = """
[[flow]]
name = "telnet"
peer = "db1"
protocol = "tcp"
remote_port = 23
"""

KEY_GCM_1 = "0x" + "11" * 20
KEY_GCM_2 = "0x" + "22" * 20


def manual_sa(
    src: str = A,
    dst: str = B,
    spi: str = "0x1001",
    protocol: str = "esp",
    proposal: str = "aes128gcm16",
    encryption_key: str | None = KEY_GCM_1,
    integrity_key: str | None = None,
    extra: str = "",
) -> str:
    text = f'[[sa]]\nsrc = "{src}"\ndst = "{dst}"\nprotocol = "{protocol}"\nspi = {spi}\n'
    text += f'proposal = "{proposal}"\n'
    if encryption_key is not None:
        text += f'encryption_key = "{encryption_key}"\n'
    if integrity_key is not None:
        text += f'integrity_key = "{integrity_key}"\n'
    return text + extra + "\n"


KEYS_ESP = manual_sa() + manual_sa(src=B, dst=A, spi="0x1002", encryption_key=KEY_GCM_2)


class FakeSecrets:
    """A secrets reader over a dict (paths as the loader resolves them)."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.refuse: dict[str, str] = {}
        self.reads: list[str] = []

    def __call__(self, path: str) -> bytes:
        path = os.path.normpath(path)
        self.reads.append(path)
        if path in self.refuse:
            raise SecretFileError(self.refuse[path])
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self.files[path]


def secrets_for(directory: str = "/etc/hostsec") -> FakeSecrets:
    """Secrets of the usual layout: policies in DIR/policies.d, secrets in DIR/secrets."""
    return FakeSecrets(
        {
            f"{directory}/secrets/db1.psk": PSK,
            f"{directory}/secrets/db2.psk": PSK,
            f"{directory}/secrets/telnet.keys": KEYS_ESP.encode(),
        }
    )


def policy_path(name: str, directory: str = "/etc/hostsec") -> str:
    return f"{directory}/policies.d/{name}"
