"""Reading policy and secrets files, with the permission checks (the I/O of this package).

Secrets files (PSKs, private keys, manual keys) are refused when group or others may read
or write them (``mode & 0o077``) or when someone other than root or the agent's user owns
them; policy files are refused when group or others may write them, since whoever edits
a policy decides what is protected. Each file is checked on the open descriptor
(``fstat``), so a file swapped between check and read is not a way around it.
"""

from __future__ import annotations

import errno
import os
import stat

from hostsec.crypto.secretfile import SecretFileRefused, read_secret
from hostsec.policy.names import is_policy_file_name
from hostsec.policy.policyset import Content, Unreadable
from hostsec.policy.problems import SecretFileError

MAX_SECRET_SIZE = 64 * 1024
MAX_POLICY_FILE_SIZE = 1 << 20


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def read_secret_file(path: str) -> bytes:
    """The contents of a secrets file, or :class:`SecretFileError` saying why not (the
    rules: :func:`hostsec.crypto.secretfile.read_secret`).

    ``OSError`` (no such file, permission denied) is raised as is.
    """
    try:
        return read_secret(path, MAX_SECRET_SIZE)
    except SecretFileRefused as exc:
        raise SecretFileError(str(exc)) from None


def read_policy_file(path: str) -> Content:
    """A policy file's bytes; ``None`` if it is gone; :class:`Unreadable` if it cannot or
    must not be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None
        return Unreadable(f"cannot read {path}: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Unreadable(f"{path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            return Unreadable(
                f"{path} is writable by group or others (mode {mode:04o}): whoever can write a "
                f"policy decides what is protected; run: chmod go-w {path}"
            )
        if not _owner_ok(st):
            return Unreadable(
                f"{path} is owned by uid {st.st_uid}: policy files must belong to root or to "
                "the user the agent runs as"
            )
        if st.st_size > MAX_POLICY_FILE_SIZE:
            return Unreadable(f"{path} is too large ({st.st_size} octets)")
        return _read_all(fd, MAX_POLICY_FILE_SIZE)
    except OSError as exc:
        return Unreadable(f"cannot read {path}: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise SecretFileError("file grew too large while being read")
        chunks.append(chunk)


def policy_files(directory: str) -> list[str]:
    """The policy files in ``directory`` (editors' temp files left out), sorted."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if is_policy_file_name(n))


def scan_directory(directory: str, known: tuple[str, ...] = ()) -> dict[str, Content]:
    """A full rescan (start-up, SIGHUP): every policy file's content, and ``None`` for each
    of the ``known`` files of this directory that is gone. Feed the result to
    :meth:`PolicySet.update_many`."""
    found: dict[str, Content] = {path: read_policy_file(path) for path in policy_files(directory)}
    base = os.path.abspath(directory)
    for path in known:
        if os.path.dirname(os.path.abspath(path)) == base and path not in found:
            found[path] = None
    return found
