"""Reading secret files (pre-shared keys, private keys, manual keys): one rule for all.

A secret is only read from a regular file owned by root or by the agent's user that
neither the group nor others can access (mode 0600 or 0400), and not larger than a limit.
The file is opened once and checked through its descriptor (no check-then-open race).
Messages name the file and the fix, never its contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET_SIZE = 64 * 1024


class SecretFileRefused(ValueError):
    """A secret file that must not be used; the message says why and how to fix it."""


def read_secret(path: str | Path, max_size: int = MAX_SECRET_SIZE) -> bytes:
    """The contents of the secret file ``path``; :class:`SecretFileRefused` if it must not
    be used. ``OSError`` (no such file, permission denied) propagates as is."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileRefused(f"{path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SecretFileRefused(
                f"{path} is accessible by group or others (mode {mode:04o}): secret files "
                f"must be mode 0600 or 0400; run: chmod 600 {path}"
            )
        if st.st_uid not in (0, os.geteuid()):
            raise SecretFileRefused(
                f"{path} is owned by uid {st.st_uid}: secret files must belong to root or to "
                "the user the agent runs as"
            )
        if st.st_size > max_size:
            raise SecretFileRefused(f"{path} is larger than {max_size} octets")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > max_size:
                raise SecretFileRefused(f"{path} grew larger than {max_size} octets")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
