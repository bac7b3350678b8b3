"""strongSwan 5.9 in a lab namespace: the recipe of ``../shared/interop`` in one place, for
the interop tests and the benchmarks that run charon next to hostsec.

charon-systemd with a private ``STRONGSWAN_CONF`` and vici socket in the lab's directory;
the userspace ``kernel-libipsec`` backend (no kernel ESP here), which must be loaded
before ``kernel-netlink`` (the first kernel-ipsec backend registered wins); ``kdf``, which
5.9.8 needs for IKE key derivation; and the fwmark pair that lets host-to-host selectors
(the remote TS is the IKE peer itself) go through the userspace backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "/usr/sbin/swanctl"
PLUGINS = (
    "random nonce openssl aes sha1 sha2 hmac kdf gcm chapoly gmp curve25519 pem pkcs1 pkcs8 "
    "x509 pubkey revocation constraints kernel-libipsec kernel-netlink socket-default vici"
)


def strongswan_conf(
    directory: Path,
    written_by: str,
    settings: Mapping[str, object] | None = None,
    log: Mapping[str, int] | None = None,
    append_log: bool = False,
    flush_log: bool = True,
) -> str:
    """A strongswan.conf for a charon whose state (log, vici socket) lives in
    ``directory``: ``settings`` are extra ``charon`` options, ``log`` the log levels by
    subsystem (default 1 for everything)."""
    options = "".join(f"  {key} = {value}\n" for key, value in (settings or {}).items())
    levels = "".join(f"      {key} = {level}\n" for key, level in (log or {"default": 1}).items())
    return (
        f"# written by {written_by} (STRONGSWAN_CONF={directory}/strongswan.conf)\n"
        "charon {\n"
        f"  load = {PLUGINS}\n"
        "  install_virtual_ip = no\n"
        f"{options}"
        "  filelog {\n"
        "    log {\n"
        f"      path = {directory}/charon.log\n"
        f"      append = {'yes' if append_log else 'no'}\n"
        "      time_format = %T\n"
        f"      flush_line = {'yes' if flush_log else 'no'}\n"
        f"{levels}"
        "    }\n"
        "  }\n"
        "  plugins {\n"
        "    vici {\n"
        f"      socket = unix://{directory}/charon.vici\n"
        "    }\n"
        "    kernel-libipsec {\n"
        "      allow_peer_ts = yes\n"
        "    }\n"
        "    socket-default {\n"
        "      fwmark = 0x42\n"
        "    }\n"
        "    kernel-netlink {\n"
        "      fwmark = !0x42\n"
        "    }\n"
        "  }\n"
        "}\n"
    )
