"""The policies.d watcher with real files (inotify): debounce, temp files, bounded waits."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostsec.policy import PolicySet, read_policy_file
from hostsec.policy.watch import PolicyWatcher
from tests.unit.policy_helpers import FLOW, PEER

WAIT = 5.0  # an event that must come, comes within this
QUIET_CHECK = 0.8  # a callback that must not come, does not come within this


class Calls:
    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[float, set[str]]] = queue.Queue()

    def __call__(self, paths: set[str]) -> None:
        self.queue.put((time.monotonic(), set(paths)))

    def next(self, timeout: float = WAIT) -> set[str]:
        return self.queue.get(timeout=timeout)[1]

    def next_timed(self, timeout: float = WAIT) -> tuple[float, set[str]]:
        return self.queue.get(timeout=timeout)

    def none_within(self, seconds: float = QUIET_CHECK) -> bool:
        try:
            self.queue.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Calls, PolicyWatcher]]:
    calls = Calls()
    watcher = PolicyWatcher(str(tmp_path), calls, quiet=0.2, max_delay=1.0)
    watcher.start()
    try:
        yield tmp_path, calls, watcher
    finally:
        watcher.stop()


def test_a_new_file_is_reported(watched: tuple[Path, Calls, PolicyWatcher]) -> None:
    directory, calls, _ = watched
    (directory / "a.toml").write_text(PEER)
    assert calls.next() == {str(directory / "a.toml")}
    assert calls.none_within()


def test_rapid_writes_are_debounced_into_one_call(
    watched: tuple[Path, Calls, PolicyWatcher],
) -> None:
    directory, calls, _ = watched
    path = directory / "a.toml"
    start = time.monotonic()
    with path.open("w") as handle:
        for chunk in (PEER, FLOW, "# done\n"):
            handle.write(chunk)
            handle.flush()
            time.sleep(0.05)
    last_write = time.monotonic()
    when, paths = calls.next_timed()
    assert paths == {str(path)}
    assert when - last_write >= 0.15  # it waited for the file to be quiet
    assert when - start < WAIT
    assert calls.none_within()  # one call for the whole burst
    assert read_policy_file(str(path)) == (PEER + FLOW + "# done\n").encode()


def test_editor_temp_files_do_not_trigger(watched: tuple[Path, Calls, PolicyWatcher]) -> None:
    directory, calls, _ = watched
    for name in (".a.toml.swp", "a.toml~", "4913", ".#a.toml", "#a.toml#", "a.toml.tmp"):
        (directory / name).write_text("junk")
    (directory / "4913").unlink()
    assert calls.none_within()
    (directory / "real.toml").write_text(PEER)  # the watcher was live all along
    assert calls.next() == {str(directory / "real.toml")}


def test_atomic_replace_and_removal(watched: tuple[Path, Calls, PolicyWatcher]) -> None:
    directory, calls, _ = watched
    target = directory / "a.toml"
    temp = directory / "a.toml.tmp"
    temp.write_text(PEER)
    os.replace(temp, target)
    assert calls.next() == {str(target)}
    target.unlink()
    assert calls.next() == {str(target)}
    assert read_policy_file(str(target)) is None


def test_reading_files_does_not_trigger(watched: tuple[Path, Calls, PolicyWatcher]) -> None:
    directory, calls, _ = watched
    (directory / "a.toml").write_text(PEER)
    assert calls.next() == {str(directory / "a.toml")}
    for _ in range(3):
        assert read_policy_file(str(directory / "a.toml")) == PEER.encode()
    assert calls.none_within()


def test_chmod_triggers(watched: tuple[Path, Calls, PolicyWatcher]) -> None:
    directory, calls, _ = watched
    path = directory / "a.toml"
    path.write_text(PEER)
    assert calls.next() == {str(path)}
    path.chmod(0o600)
    assert calls.next() == {str(path)}


def test_a_file_written_without_pause_is_not_starved(tmp_path: Path) -> None:
    calls = Calls()
    with PolicyWatcher(str(tmp_path), calls, quiet=0.3, max_delay=0.6):
        path = tmp_path / "a.toml"
        deadline = time.monotonic() + 2.0
        with path.open("w") as handle:
            while time.monotonic() < deadline:
                handle.write("# more\n")
                handle.flush()
                time.sleep(0.05)
        when, paths = calls.next_timed()
        assert paths == {str(path)}
        assert when < deadline  # reported while the writes still went on


def test_several_files_in_one_batch(watched: tuple[Path, Calls, PolicyWatcher]) -> None:
    directory, calls, _ = watched
    (directory / "a.toml").write_text(PEER)
    (directory / "b.toml").write_text(FLOW)
    seen: set[str] = set()
    while len(seen) < 2:
        seen |= calls.next()
    assert seen == {str(directory / "a.toml"), str(directory / "b.toml")}


def test_a_failing_callback_does_not_stop_the_watcher(tmp_path: Path) -> None:
    calls = Calls()
    failures = []

    def callback(paths: set[str]) -> None:
        if not failures:
            failures.append(paths)
            raise RuntimeError("agent bug")
        calls(paths)

    with PolicyWatcher(str(tmp_path), callback, quiet=0.1):
        (tmp_path / "a.toml").write_text(PEER)
        deadline = time.monotonic() + WAIT
        while not failures and time.monotonic() < deadline:
            time.sleep(0.02)
        assert failures
        (tmp_path / "b.toml").write_text(FLOW)
        assert calls.next() == {str(tmp_path / "b.toml")}


def test_watcher_feeding_a_policy_set(tmp_path: Path) -> None:
    """The agent's loop in small: events -> read -> update_many -> diff."""
    policies = PolicySet()
    diffs: queue.Queue[object] = queue.Queue()

    def on_change(paths: set[str]) -> None:
        diffs.put(policies.update_many({p: read_policy_file(p) for p in paths}))

    with PolicyWatcher(str(tmp_path), on_change, quiet=0.1):
        (tmp_path / "peers.toml").write_text(PEER)
        diffs.get(timeout=WAIT)
        (tmp_path / "flows.toml").write_text(FLOW)
        diff = diffs.get(timeout=WAIT)
        assert [f.name for f in diff.flows_added] == ["telnet"]  # type: ignore[attr-defined]
        (tmp_path / "flows.toml").write_text(FLOW + "mode = \n")  # a syntax error
        diff = diffs.get(timeout=WAIT)
        assert diff.empty and "telnet" in policies.flows  # type: ignore[attr-defined]
        (tmp_path / "flows.toml").unlink()
        diff = diffs.get(timeout=WAIT)
        assert [f.name for f in diff.flows_removed] == ["telnet"]  # type: ignore[attr-defined]


def test_stop_is_prompt(tmp_path: Path) -> None:
    watcher = PolicyWatcher(str(tmp_path), Calls())
    watcher.start()
    start = time.monotonic()
    watcher.stop()
    assert time.monotonic() - start < 3.0
