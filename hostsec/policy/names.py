"""Which file names in policies.d are policy files (editors' temp and swap files are not)."""

from __future__ import annotations

import os

POLICY_SUFFIX = ".toml"


def is_policy_file_name(name: str) -> bool:
    """True for ``*.toml``, except hidden files and editors' leftovers.

    Ignored: hidden files (``.x.toml``, vim's ``.x.toml.swp``, emacs' ``.#x.toml``), emacs
    autosaves (``#x.toml#``), backups (``x.toml~``), vim's probe file ``4913``, ``*.tmp``,
    ``*.swp``, ``*.bak``, and anything else that does not end in ``.toml``.
    """
    base = os.path.basename(name)
    return (
        base.endswith(POLICY_SUFFIX)
        and len(base) > len(POLICY_SUFFIX)
        and not base.startswith((".", "#", "~"))
    )
