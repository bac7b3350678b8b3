"""Entering a Linux network namespace: setns(2) for this thread, or for a forked child.

Everything in :mod:`hostsec.platform` works in the network namespace of the calling
thread; the agent simply runs inside its namespace. Tests and the demo, which drive
several "hosts" from one process, use :func:`entered` (this thread, restored on exit)
or :func:`call_in` / :func:`spawn_in` (a forked child that never comes back).

Sockets, TUN devices and netlink sockets keep the namespace they were created in, so an
object opened under :func:`entered` stays bound to that namespace after the block.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import multiprocessing.connection
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_T = TypeVar("_T")
_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def netns_path(name: str) -> Path:
    """Where ``ip netns`` (and pyroute2) mount the namespace called ``name``."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad network namespace name {name!r}")
    return NETNS_RUN_DIR / name


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name``; always come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def enter_for_good(name: str) -> None:
    """Move this (single-threaded, forked) process into namespace ``name``."""
    target = os.open(netns_path(name), os.O_RDONLY)
    try:
        _setns(target)
    finally:
        os.close(target)


class ChildFailed(RuntimeError):
    """A function run in a namespace child raised; carries the child's traceback."""


_FORK = multiprocessing.get_context("fork")


def _child_main(
    name: str,
    conn: multiprocessing.connection.Connection | None,
    result: multiprocessing.connection.Connection,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    # A child must not inherit the parent's handlers (pytest's, the agent's).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        enter_for_good(name)
        value = fn(conn, *args, **kwargs) if conn is not None else fn(*args, **kwargs)
        result.send(("ok", value))
    except BaseException as exc:  # report everything, then exit non-zero
        result.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        os._exit(1)
    os._exit(0)


class Child:
    """A forked process living in a namespace; ended by its PID."""

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        conn: multiprocessing.connection.Connection | None,
        result: multiprocessing.connection.Connection,
    ) -> None:
        self._process = process
        self.conn = conn  # the parent's end of the duplex pipe handed to the function
        self._result = result

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None
        return pid

    def alive(self) -> bool:
        return self._process.is_alive()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to this child (by PID), if it still runs."""
        if self._process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end; its exit code, or None if still running."""
        self._process.join(timeout)
        return self._process.exitcode

    def result(self, timeout: float | None = 30.0) -> Any:
        """The function's return value (waits for it); raises :class:`ChildFailed`."""
        if not self._result.poll(timeout):
            self.kill()
            self.wait(5)
            raise TimeoutError(f"namespace child {self.pid} gave no result in {timeout} s")
        try:
            status, value = self._result.recv()
        except EOFError:
            self.wait(5)
            raise ChildFailed(
                f"namespace child {self.pid} died without a result "
                f"(exit code {self._process.exitcode})"
            ) from None
        self.wait(5)
        if status != "ok":
            raise ChildFailed(str(value))
        return value

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the child."""
        if self._process.is_alive():
            self.kill(signal.SIGTERM)
            self._process.join(timeout)
        if self._process.is_alive():
            self.kill(signal.SIGKILL)
            self._process.join(timeout)
        for c in (self.conn, self._result):
            if c is not None:
                c.close()


def spawn_in(
    name: str, fn: Callable[..., Any], *args: Any, channel: bool = True, **kwargs: Any
) -> Child:
    """Fork a child into namespace ``name`` running ``fn``.

    With ``channel`` (the default) ``fn`` gets one end of a duplex pipe as its first
    argument and ``Child.conn`` is the other: use it to say "ready", to pass packets seen.
    """
    parent_end: multiprocessing.connection.Connection | None = None
    child_end: multiprocessing.connection.Connection | None = None
    if channel:
        parent_end, child_end = _FORK.Pipe(duplex=True)
    result_read, result_write = _FORK.Pipe(duplex=False)
    process = _FORK.Process(
        target=_child_main,
        args=(name, child_end, result_write, fn, args, kwargs),
        daemon=True,
    )
    process.start()
    result_write.close()
    if child_end is not None:
        child_end.close()
    return Child(process, parent_end, result_read)


def call_in(name: str, fn: Callable[..., _T], *args: Any, timeout: float = 30.0, **kw: Any) -> _T:
    """Run ``fn(*args, **kw)`` in a forked child inside namespace ``name``; its result."""
    child = spawn_in(name, fn, *args, channel=False, **kw)
    try:
        value: _T = child.result(timeout)
        return value
    finally:
        child.stop()
