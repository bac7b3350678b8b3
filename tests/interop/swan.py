"""A strongSwan 5.9 charon in a lab host, configured through vici (``../shared/interop/``).

The daemon, its strongswan.conf recipe and its life cycle (started, and stopped by PID;
the lab also ends it by PID when it closes) are :class:`hostsec.agent.swanlab.Charon`'s.
Here: the tests' settings and log levels, and what they load. Connections, secrets, keys
and certificates are loaded over vici; the same connections are also written out as
``swanctl/swanctl.conf`` so that a failing case can be replayed by hand with
``swanctl --load-all -u unix://<dir>/charon.vici``.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hostsec.agent import swanlab
from hostsec.agent.swanlab import SWANCTL, CharonError, strongswan_conf
from hostsec.platform.netns import Host

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


class Charon(swanlab.Charon):
    """One charon in ``host``; state (configs, log, vici socket) in ``directory``.
    What was loaded over vici is loaded again after a restart, and written out as
    ``swanctl/swanctl.conf``."""

    def __init__(
        self,
        host: Host,
        directory: Path,
        keep_alive: str = "20s",
        retransmit_timeout: float = 1.0,
        retransmit_tries: int = 2,
    ) -> None:
        super().__init__(host, directory, "tests/interop/swan.py")
        self.keep_alive = keep_alive
        self.retransmit_timeout = retransmit_timeout
        self.retransmit_tries = retransmit_tries
        self.conns: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ life cycle

    def env(self) -> dict[str, str]:
        return {**super().env(), "SWANCTL_DIR": str(self.dir / "swanctl")}

    def config(self) -> str:
        return strongswan_conf(
            self.dir,
            self.written_by,
            # retransmission (and so dead peer detection) as fast as the tests need
            settings={
                "keep_alive": self.keep_alive,
                "retransmit_timeout": self.retransmit_timeout,
                "retransmit_tries": self.retransmit_tries,
            },
            log={"default": 1, "ike": 2, "cfg": 2, "knl": 1, "esp": 1},
            append_log=True,
        )

    def write_config(self) -> None:
        super().write_config()
        for sub in ("x509", "x509ca", "private", "pkcs8"):
            (self.dir / "swanctl" / sub).mkdir(parents=True, exist_ok=True)

    def on_ready(self) -> None:
        self._reload()

    def log_mark(self) -> int:
        """The log's current length: :meth:`log_since` shows what came after."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        return self.log()[mark:]

    # ------------------------------------------------------------------ vici

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
