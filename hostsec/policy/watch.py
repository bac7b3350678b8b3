"""Watch policies.d (watchdog: inotify on Linux) and report changed files, debounced.

The agent's only I/O piece of the policy package besides reading files: events of one file
are gathered until it has been quiet for ``quiet`` seconds (or ``max_delay`` passed since
its first event, so a file rewritten without pause is not starved), then ``callback`` gets
the set of changed paths, from the watcher's thread (an asyncio agent hands it over with
``loop.call_soon_threadsafe``). The callback reads the files
(:func:`hostsec.policy.files.read_policy_file`) and calls ``PolicySet.update_many``.
Only writes, creations, removals, renames and permission changes count: opening or
reading a file (as the callback does) does not, so reading cannot loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from watchdog.events import (
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from hostsec.policy.names import is_policy_file_name

log = logging.getLogger(__name__)

_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,  # IN_CLOSE_WRITE
    FileDeletedEvent,
    FileMovedEvent,
    FileAttribEvent,
]


class PolicyWatcher:
    def __init__(
        self,
        directory: str,
        callback: Callable[[set[str]], None],
        *,
        quiet: float = 0.2,
        max_delay: float = 2.0,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self._callback = callback
        self._quiet = quiet
        self._max_delay = max_delay
        self._cond = threading.Condition()
        self._last: dict[str, float] = {}  # path -> time of its latest event
        self._first: dict[str, float] = {}  # path -> time of its first pending event
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        handler = _Handler(self)
        observer = Observer()
        observer.schedule(handler, self.directory, recursive=False, event_filter=_EVENTS)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> PolicyWatcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def note(self, path: str) -> None:
        """Record an event for ``path`` (if it is a policy file of the directory)."""
        path = os.path.abspath(path)
        if os.path.dirname(path) != self.directory or not is_policy_file_name(path):
            return
        with self._cond:
            now = time.monotonic()
            self._last[path] = now
            self._first.setdefault(path, now)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                due: set[str] = set()
                while not due:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    deadlines = {
                        p: min(self._last[p] + self._quiet, self._first[p] + self._max_delay)
                        for p in self._last
                    }
                    due = {p for p, deadline in deadlines.items() if deadline <= now}
                    if not due:
                        wait = min(deadlines.values(), default=now + 3600) - now
                        self._cond.wait(max(wait, 0.001))
                for p in due:
                    del self._last[p]
                    del self._first[p]
            try:
                self._callback(due)
            except Exception:
                log.exception("policy watcher callback failed")


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: PolicyWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        self._watcher.note(os.fsdecode(event.src_path))
        if event.dest_path:
            self._watcher.note(os.fsdecode(event.dest_path))
