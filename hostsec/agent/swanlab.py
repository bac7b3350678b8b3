"""strongSwan 5.9 in a lab namespace: the recipe of ``../shared/interop`` in one place, for
the interop tests and the benchmarks that run charon next to hostsec.

charon-systemd with a private ``STRONGSWAN_CONF`` and vici socket in the lab's directory;
the userspace ``kernel-libipsec`` backend (no kernel ESP here), which must be loaded
before ``kernel-netlink`` (the first kernel-ipsec backend registered wins); ``kdf``, which
5.9.8 needs for IKE key derivation; and the fwmark pair that lets host-to-host selectors
(the remote TS is the IKE peer itself) go through the userspace backend.

:class:`Charon` is the driver both use: it writes the config, starts the daemon in a lab
host, waits until its vici socket answers, and stops it by PID. What a user loads over vici
and measures stays with that user (tests/interop/swan.py, scripts/bench_swan.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hostsec.platform.netns import Host

if TYPE_CHECKING:
    import vici

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


class CharonError(Exception):
    """The charon did not start, or refused a vici command."""


class Charon:
    """One charon in ``host``; its state (strongswan.conf, log, vici socket, stdout) in
    ``directory``. Subclasses choose the config (:meth:`config`, :meth:`env`) and what is
    loaded once the vici socket answers (:meth:`on_ready`); the class attributes are the
    default timeouts, seconds."""

    start_timeout = 10.0
    stop_timeout = 5.0
    vici_timeout = 15.0

    def __init__(self, host: Host, directory: Path, written_by: str) -> None:
        self.host = host
        self.dir = directory
        self.written_by = written_by
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ life cycle

    @property
    def vici_path(self) -> Path:
        return self.dir / "charon.vici"

    @property
    def log_path(self) -> Path:
        return self.dir / "charon.log"

    @property
    def conf_path(self) -> Path:
        return self.dir / "strongswan.conf"

    def config(self) -> str:
        """The strongswan.conf text (the plain recipe unless a subclass says more)."""
        return strongswan_conf(self.dir, self.written_by)

    def env(self) -> dict[str, str]:
        """The daemon's environment (on top of the caller's)."""
        return {"STRONGSWAN_CONF": str(self.conf_path)}

    def write_config(self) -> None:
        self.conf_path.write_text(self.config())

    def start(self, timeout: float | None = None) -> None:
        """Start charon and wait until its vici socket answers (then :meth:`on_ready`)."""
        if self.running:
            return
        self.write_config()
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        out = open(self.dir / "charon.stdout", "ab")  # noqa: SIM115 - the child's stdout
        # `ip netns exec` and `env` both exec(): the Popen PID is the daemon's.
        argv = ["env", *(f"{k}={v}" for k, v in self.env().items()), CHARON]
        self.proc = self.host.popen(argv, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CharonError(f"charon exited ({self.proc.returncode}):\n{self.log()}")
            if self.vici_path.exists():
                try:
                    with self._vici("version") as session:
                        session.version()
                    self.on_ready()
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise CharonError(f"charon's vici socket did not appear:\n{self.log()}")

    def on_ready(self) -> None:
        """Called once the vici socket answers; an OSError here means: not ready yet."""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """The daemon's PID (once started)."""
        assert self.proc is not None, "charon not started"
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> None:
        """Signal the daemon (by PID) and wait; SIGKILL if it is still there after
        ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        wait = self.stop_timeout if timeout is None else timeout
        os.kill(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(wait)

    def kill(self) -> None:
        """SIGKILL: the peer vanishes without a word (for dead peer detection)."""
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ vici

    def session(self, timeout: float | None = None) -> vici.Session:
        import vici  # noqa: PLC0415 - only the labs need it (a test extra, not the agent's)

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.vici_timeout if timeout is None else timeout)
        sock.connect(str(self.vici_path))
        return vici.Session(sock)

    @contextlib.contextmanager
    def _vici(self, what: str) -> Iterator[vici.Session]:
        """A session for one command, closed afterwards; a refusal is a CharonError."""
        from vici.exception import CommandException  # noqa: PLC0415 - as in session()

        session = self.session()
        try:
            yield session
        except CommandException as exc:
            raise CharonError(f"vici {what}: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                session.transport.socket.close()
