"""A strongSwan 5.9 charon in a lab host, driven through vici, for scripts/bench_ike.py.

The daemon and its recipe (../shared/interop/README.md) are
:class:`hostsec.agent.swanlab.Charon`'s: started by :meth:`Charon.start` (through the lab
host, which also ends it by PID when the lab closes) and stopped by PID in
:meth:`Charon.stop`. Here: the benchmark's settings and the vici calls it times. Logging
is kept to level 0 so that the log costs the daemon about what hostsec's few INFO lines
per SA cost the agent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import vici

from hostsec.agent import swanlab
from hostsec.agent.swanlab import CharonError, strongswan_conf
from hostsec.platform.netns import Host

# A new IKE_SA for every initiate, even of the same connection (benchmark: many SAs
# between one address pair). No half-open limit per IP (default 5) and no COOKIEs (default
# from 10 half-open, 3 per IP): every strongSwan SA of the benchmark comes from one address,
# and with COOKIEs 5.9.8 loses the race between the IKE_SA_INIT response and its own retry
# with the cookie on a fast link ("ignoring request with ID 0, already processing"): a 4 s
# retransmission stalls every burst. hostsec keeps its COOKIEs (from 10 half-open), which
# cost it no measurable time here.
SETTINGS = {
    "reuse_ikesa": "no",
    "block_threshold": 100000,
    "cookie_threshold": 100000,
    "cookie_threshold_ip": 100000,
}


class Charon(swanlab.Charon):
    """One charon in ``host``; its state (config, log, vici socket) in ``directory``."""

    start_timeout = 15.0
    stop_timeout = 10.0
    vici_timeout = 60.0

    def __init__(self, host: Host, directory: Path) -> None:
        super().__init__(host, directory, "scripts/bench_swan.py")

    def config(self) -> str:
        return strongswan_conf(
            self.dir, self.written_by, settings=SETTINGS, log={"default": 0}, flush_log=False
        )

    def log(self) -> str:
        return super().log()[-4000:]

    def rss(self) -> int:
        """The daemon's resident set size, octets."""
        return int(psutil.Process(self.pid).memory_info().rss)

    # ------------------------------------------------------------------ vici

    def load_conn(self, name: str, conn: dict[str, Any]) -> None:
        try:
            self.session().load_conn({name: conn})
        except vici.exception.CommandException as exc:
            raise CharonError(f"load-conn {name}: {exc}") from None

    def load_psk(self, secret: str) -> None:
        """A PSK for every identity (no owners: the wildcard secret)."""
        self.session().load_shared({"type": "IKE", "data": secret})

    def initiate_blocking(self, session: vici.Session, conn: str, child: str) -> float:
        """Initiate and wait for the IKE_SA and its first CHILD_SA; seconds from the
        request to the answer. No ``control-log`` events are registered, so the request is
        one vici round trip."""
        message = {"ike": conn, "child": child, "timeout": 10000, "init-limits": "no"}
        start = time.perf_counter()
        try:
            session.request("initiate", message)
        except vici.exception.CommandException as exc:
            raise CharonError(f"initiate {conn}: {exc}") from None
        return time.perf_counter() - start

    def initiate_async(self, session: vici.Session, conn: str, child: str) -> None:
        """Start an initiation and return at once (vici ``timeout = -1``)."""
        session.request(
            "initiate", {"ike": conn, "child": child, "timeout": -1, "init-limits": "no"}
        )

    def count_ike_sas(self) -> int:
        return sum(1 for _ in self.session().list_sas())

    def terminate_all(self, conn: str, timeout: float = 60.0) -> None:
        """Delete every IKE_SA of ``conn`` and wait until none is left."""
        session = self.session()
        with contextlib.suppress(vici.exception.CommandException):
            for _ in session.terminate({"ike": conn, "timeout": -1}):
                pass
        deadline = time.monotonic() + timeout
        while self.count_ike_sas() and time.monotonic() < deadline:
            time.sleep(0.1)

    def wait_sas(self, count: int, timeout: float = 60.0) -> int:
        """Wait until ``count`` IKE_SAs are listed (or the time is up); how many are."""
        deadline = time.monotonic() + timeout
        n = self.count_ike_sas()
        while n < count and time.monotonic() < deadline:
            time.sleep(0.1)
            n = self.count_ike_sas()
        return n


class ChildWatcher:
    """Counts ``child-updown`` events (a CHILD_SA installed) in a thread, with the time
    each arrived (time.perf_counter())."""

    def __init__(self, charon: Charon) -> None:
        self.session = charon.session()
        self.ups: list[float] = []
        self.downs = 0
        self.ike_failures = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ChildWatcher:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        events = self.session.listen(["child-updown", "ike-updown"], timeout=0.05)
        # listen() registers on the first next(), which yields (None, None) after the
        # timeout when nothing happens: from then on no event is missed.
        first = next(events)
        self._ready.set()
        self._note(*first)
        for kind, message in events:
            if self._stop.is_set():
                break
            self._note(kind, message)

    def _note(self, kind: bytes | str | None, message: dict[str, Any] | None) -> None:
        if kind is None or message is None:
            return
        name = kind.decode() if isinstance(kind, bytes) else kind
        up = message.get("up") in (b"yes", "yes")
        if name == "child-updown":
            if up:
                self.ups.append(time.perf_counter())
            else:
                self.downs += 1
        elif name == "ike-updown" and not up:
            self.ike_failures += 1

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ups) < count and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
