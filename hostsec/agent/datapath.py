"""The agent's side of the data-path workers: start them, talk to them, stop them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from hostsec.agent import messages as m
from hostsec.agent.worker import recv_message, send_message

log = logging.getLogger("hostsec.datapath")


class _Worker:
    def __init__(self, role: str, tun_fd: int, udp: dict[int, int], ipv6: bool) -> None:
        self.role = role
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Large buffers: SA installs carry keys and selectors; stats can be big.
        for s in (parent, child):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        args = [
            sys.executable,
            "-m",
            "hostsec.agent.worker",
            role,
            str(child.fileno()),
            str(tun_fd),
        ]
        args += [f"udp{v}={fd}" for v, fd in udp.items()]
        if ipv6:
            args.append("v6")
        fds = (child.fileno(), tun_fd, *udp.values())
        self.process = subprocess.Popen(args, pass_fds=fds, close_fds=True)  # noqa: S603
        child.close()
        self.channel = parent
        self.channel.setblocking(False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: object) -> None:
        self.channel.setblocking(True)
        try:
            send_message(self.channel, message)
        finally:
            self.channel.setblocking(False)

    def stop(self, timeout: float = 3.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send(m.Stop())
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()  # by PID: it is our child
                self.process.wait(timeout)
        self.channel.close()


class DataPath:
    """The outbound and inbound workers, their channels, and stats requests."""

    def __init__(
        self,
        tun_fd: int,
        udp: dict[int, int],
        ipv6: bool,
        on_message: Callable[[object], None],
        on_death: Callable[[str], None],
    ) -> None:
        self.tun_fd = tun_fd
        self.udp = udp
        self.ipv6 = ipv6
        self.on_message = on_message
        self.on_death = on_death
        self.out: _Worker | None = None
        self.inb: _Worker | None = None
        self._tokens = itertools.count(1)
        self._pending: dict[tuple[int, str], asyncio.Future[dict[str, Any]]] = {}
        self._stopping = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.out = _Worker("out", self.tun_fd, self.udp, self.ipv6)
        self.inb = _Worker("in", self.tun_fd, self.udp, self.ipv6)
        for worker in (self.out, self.inb):
            loop.add_reader(worker.channel.fileno(), self._readable, worker)
        log.info("data path workers started (out pid %d, in pid %d)", self.out.pid, self.inb.pid)

    def _readable(self, worker: _Worker) -> None:
        while True:
            try:
                message = recv_message(worker.channel)
            except BlockingIOError:
                return
            except OSError:
                message = None
            if message is None:
                asyncio.get_running_loop().remove_reader(worker.channel.fileno())
                if not self._stopping:
                    self.on_death(f"{worker.role} worker (pid {worker.pid}) exited")
                return
            if isinstance(message, m.Stats):
                future = self._pending.pop((message.token, message.direction), None)
                if future is not None and not future.done():
                    future.set_result(message.data)
                continue
            self.on_message(message)

    def to_out(self, message: object) -> None:
        if self.out is not None:
            self.out.send(message)

    def to_in(self, message: object) -> None:
        if self.inb is not None:
            self.inb.send(message)

    async def stats(self, timeout: float = 2.0) -> tuple[dict[str, Any], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        token = next(self._tokens)
        futures: list[asyncio.Future[dict[str, Any]]] = []
        for direction, worker in (("out", self.out), ("in", self.inb)):
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._pending[(token, direction)] = future
            futures.append(future)
            if worker is not None:
                worker.send(m.StatsRequest(token))
        try:
            out, inb = await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except TimeoutError:
            for direction in ("out", "in"):
                self._pending.pop((token, direction), None)
            return {}, {}
        return out, inb

    def stop(self) -> None:
        self._stopping = True
        loop = None
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
        for worker in (self.out, self.inb):
            if worker is None:
                continue
            if loop is not None:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(worker.channel.fileno())
            worker.stop()
        self.out = self.inb = None

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in (self.out, self.inb) if w is not None]
