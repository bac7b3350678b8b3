"""A strongSwan 5.9 charon in a lab host, configured through vici (``../shared/interop/``).

The recipe: ``charon-systemd`` (no pid file, foreground) with a private
``STRONGSWAN_CONF``; the userspace ``kernel-libipsec`` backend (this kernel has no ESP
xfrm types) before ``kernel-netlink``; the vici socket in the charon's own directory;
``allow_peer_ts`` plus the fwmark pair so that host-to-host TS do not swallow IKE itself.
Connections, secrets, keys and certificates are loaded over vici; the same connections
are also written out as ``swanctl/swanctl.conf`` so that a failing case can be replayed by
hand with ``swanctl --load-all -u unix://<dir>/charon.vici``.

The charon is started and stopped by PID (the lab also ends it by PID when it closes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostsec.agent.swanlab import CHARON, SWANCTL, strongswan_conf
from hostsec.platform.netns import Host

if TYPE_CHECKING:
    import vici

PSK = "interop-test-psk-0123456789"


def render_swanctl(value: Mapping[str, Any], indent: int = 0) -> str:
    """A vici message (nested dicts, lists, strings) as swanctl.conf text."""
    pad = "  " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.append(render_swanctl(item, indent + 1))
            lines.append(f"{pad}}}")
        else:
            if isinstance(item, list | tuple):
                text = ", ".join(_text(i) for i in item)
            else:
                text = _text(item)
            if "\n" in text:
                text = "<binary data loaded over vici>"
            lines.append(f"{pad}{key} = {text}")
    return "\n".join(line for line in lines if line)


def _text(item: object) -> str:
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError:
            return "<binary>"
    return str(item)


class CharonError(Exception):
    """The charon did not start, or refused a vici command."""


class Charon:
    """One charon in ``host``; state (configs, log, vici socket) in ``directory``."""

    def __init__(
        self,
        host: Host,
        directory: Path,
        keep_alive: str = "20s",
        retransmit_timeout: float = 1.0,
        retransmit_tries: int = 2,
    ) -> None:
        self.host = host
        self.dir = directory
        self.keep_alive = keep_alive
        self.retransmit_timeout = retransmit_timeout
        self.retransmit_tries = retransmit_tries
        self.proc: subprocess.Popen[bytes] | None = None
        self.conns: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
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

    def env(self) -> dict[str, str]:
        return {
            "STRONGSWAN_CONF": str(self.conf_path),
            "SWANCTL_DIR": str(self.dir / "swanctl"),
        }

    def write_config(self) -> None:
        self.conf_path.write_text(
            strongswan_conf(
                self.dir,
                "tests/interop/swan.py",
                # retransmission (and so dead peer detection) as fast as the tests need
                settings={
                    "keep_alive": self.keep_alive,
                    "retransmit_timeout": self.retransmit_timeout,
                    "retransmit_tries": self.retransmit_tries,
                },
                log={"default": 1, "ike": 2, "cfg": 2, "knl": 1, "esp": 1},
                append_log=True,
            )
        )
        for sub in ("x509", "x509ca", "private", "pkcs8"):
            (self.dir / "swanctl" / sub).mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start charon and wait until its vici socket answers."""
        if self.running:
            return
        self.write_config()
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        out = open(self.dir / "charon.stdout", "ab")  # noqa: SIM115 - the child's stdout
        env = " ".join(f"{k}={v}" for k, v in self.env().items())
        # `ip netns exec` and `env` both exec(): the Popen PID is the daemon's.
        argv = ["env", *env.split(), CHARON]
        self.proc = self.host.popen(argv, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CharonError(f"charon exited ({self.proc.returncode}):\n{self.log()}")
            if self.vici_path.exists():
                try:
                    self.session().version()
                    self._reload()
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise CharonError(f"charon's vici socket did not appear:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the peer vanishes without a word (for dead peer detection)."""
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """The log's current length: :meth:`log_since` shows what came after."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        return self.log()[mark:]

    # ------------------------------------------------------------------ vici

    def session(self, timeout: float = 15.0) -> vici.Session:
        import vici  # imported here: without it the tests are skipped, not broken

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(self.vici_path))
        return vici.Session(sock)

    @contextlib.contextmanager
    def _vici(self, what: str) -> Iterator[vici.Session]:
        from vici.exception import CommandException

        session = self.session()
        try:
            yield session
        except CommandException as exc:
            raise CharonError(f"vici {what}: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                session.transport.socket.close()

    def load_conn(self, name: str, conn: dict[str, Any]) -> None:
        self.conns[name] = conn
        with self._vici("load-conn") as s:
            s.load_conn({name: conn})
        self._write_swanctl()

    def unload_conn(self, name: str) -> None:
        self.conns.pop(name, None)
        with self._vici("unload-conn") as s:
            s.unload_conn({"name": name})
        self._write_swanctl()

    def load_psk(self, name: str, secret: str, ids: Sequence[str]) -> None:
        entry: dict[str, Any] = {"type": "IKE", "data": secret, "owners": list(ids)}
        self.secrets[name] = entry
        with self._vici("load-shared") as s:
            s.load_shared({"id": name, **entry})
        self._write_swanctl()

    def load_key(self, kind: str, pem: bytes) -> None:
        """A private key (``kind`` rsa, ecdsa or any) as PEM."""
        with self._vici("load-key") as s:
            s.load_key({"type": kind, "data": pem})

    def load_cert(self, pem: bytes, ca: bool = False) -> None:
        with self._vici("load-cert") as s:
            s.load_cert({"type": "X509", "flag": "CA" if ca else "NONE", "data": pem})

    def _reload(self) -> None:
        """After a restart: what was loaded before, again."""
        for name, entry in self.secrets.items():
            with self._vici("load-shared") as s:
                s.load_shared({"id": name, **entry})
        for name, conn in self.conns.items():
            with self._vici("load-conn") as s:
                s.load_conn({name: conn})

    def _write_swanctl(self) -> None:
        secrets = {
            f"ike-{n}": {"secret": e["data"], **{f"id-{i}": o for i, o in enumerate(e["owners"])}}
            for n, e in self.secrets.items()
        }
        text = render_swanctl({"connections": self.conns, "secrets": secrets})
        (self.dir / "swanctl" / "swanctl.conf").write_text(
            "# written by tests/interop/swan.py (loaded over vici)\n" + text + "\n"
        )

    def initiate(self, ike: str, child: str, timeout_ms: int = 15000) -> list[str]:
        """``swanctl --initiate``: the control log lines; raises if it failed."""
        lines: list[str] = []
        with self._vici("initiate") as s:
            for entry in s.initiate({"ike": ike, "child": child, "timeout": timeout_ms}):
                msg = entry.get("msg", b"")
                lines.append(msg.decode() if isinstance(msg, bytes) else str(msg))
        return lines

    def terminate(
        self, ike: str | None = None, child: str | None = None, timeout_ms: int = 10000
    ) -> None:
        message: dict[str, Any] = {"timeout": timeout_ms}
        if ike is not None:
            message["ike"] = ike
        if child is not None:
            message["child"] = child
        with self._vici("terminate") as s:
            for _ in s.terminate(message):
                pass

    def terminate_all(self) -> None:
        for ike_name in {name for sa in self.list_sas() for name in sa}:
            with contextlib.suppress(CharonError):
                self.terminate(ike=ike_name)

    def rekey(self, ike: str | None = None, child: str | None = None) -> None:
        """``swanctl --rekey``: starts the rekey and returns (it completes asynchronously)."""
        message: dict[str, Any] = {}
        if ike is not None:
            message["ike"] = ike
        if child is not None:
            message["child"] = child
        with self._vici("rekey") as s:
            s.rekey(message)

    def list_sas(self) -> list[dict[str, Any]]:
        with self._vici("list-sas") as s:
            return [decode(sa) for sa in s.list_sas()]

    def ike_sas(self) -> list[dict[str, Any]]:
        """Every IKE SA (flattened: the conn name is in ``name``)."""
        out = []
        for entry in self.list_sas():
            for name, sa in entry.items():
                out.append({"name": name, **sa})
        return out

    def child_sas(self) -> list[dict[str, Any]]:
        out = []
        for ike in self.ike_sas():
            for child in ike.get("child-sas", {}).values():
                out.append({"ike": ike["name"], **child})
        return out

    def wait_for(self, predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
        """Poll ``predicate(charon)`` until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"strongSwan: {what} not met; SAs: {self.ike_sas()}")
            time.sleep(0.05)

    def swanctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``swanctl ARGS -u unix://...`` in the charon's host (for debugging and logs)."""
        env = [f"{k}={v}" for k, v in self.env().items()]
        return self.host.run(
            ["env", *env, SWANCTL, *args, "-u", f"unix://{self.vici_path}"], check=False
        )


def decode(value: Any) -> Any:
    """vici answers in bytes: strings throughout."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Mapping):
        return {decode(k): decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def conn(
    *,
    local: str,
    remote: str,
    proposals: Sequence[str],
    local_auth: Mapping[str, Any],
    remote_auth: Mapping[str, Any],
    children: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A vici connection (swanctl.conf ``connections.<name>``) for IKEv2."""
    out: dict[str, Any] = {
        "version": "2",
        "local_addrs": [local],
        "remote_addrs": [remote],
        "proposals": list(proposals),
        "local": dict(local_auth),
        "remote": dict(remote_auth),
        "children": {name: dict(child) for name, child in children.items()},
    }
    out.update(extra or {})
    return out


def child(
    local_ts: str,
    remote_ts: str,
    esp_proposals: Sequence[str],
    mode: str = "tunnel",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "mode": mode,
        "local_ts": [local_ts],
        "remote_ts": [remote_ts],
        "esp_proposals": list(esp_proposals),
        **extra,
    }
