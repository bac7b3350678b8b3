"""Interop tests against strongSwan 5.9 (charon-systemd + kernel-libipsec, driven by vici).

Tests marked ``@pytest.mark.interop`` are skipped when not root, or when charon, tcpdump,
nft or the ``vici`` package are missing, unless ``HOSTSEC_REQUIRE_ROOT_TESTS=1``: then they
fail, so that CI never passes by skipping them.

One lab (namespaces, a hostsec agent, one charon) per test module: cases reload their
configuration over vici and the agent's control socket instead of restarting daemons.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostsec.agent.swanlab import CHARON
from hostsec.platform.netns import lab_namespaces, remove_stale

REQUIRED_TOOLS = ("ip", "nft", "tcpdump")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "interop tests need root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"interop tests need {', '.join(missing)} (scripts/setup-debian.sh)"
    if not Path(CHARON).exists():
        return "interop tests need strongSwan's charon-systemd (scripts/setup-debian.sh)"
    if not Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so").exists():
        return "interop tests need libcharon-extra-plugins (kernel-libipsec)"
    try:
        import vici  # noqa: F401
    except ImportError:
        return "interop tests need the vici package (pip install 'vici>=5.9,<7')"
    if not Path("/dev/net/tun").exists():
        return "interop tests need /dev/net/tun"
    return None


def _require() -> None:
    why = _unavailable()
    if why is None:
        return
    if os.environ.get("HOSTSEC_REQUIRE_ROOT_TESTS") == "1":
        pytest.fail(f"{why} (HOSTSEC_REQUIRE_ROOT_TESTS=1)")
    pytest.skip(why)


@pytest.fixture(autouse=True)
def _interop_requirements(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("interop") is not None:
        _require()


@pytest.fixture(scope="session", autouse=True)
def _stale_labs() -> None:
    """Remove lab namespaces that crashed runs of earlier test sessions left behind."""
    if os.geteuid() == 0:
        for prefix in ("hsio", "hsnat"):
            remove_stale(prefix)


def _lab(nat: str | None, version: int = 4) -> Iterator[object]:
    _require()
    from .pair import InteropLab

    lab = InteropLab(nat, version)
    try:
        lab.start()
        yield lab
    finally:
        tag = lab.lab.lab.tag
        keep = os.environ.get("HOSTSEC_INTEROP_KEEP")
        if keep:  # leave the logs for a post-mortem (namespaces are removed regardless)
            shutil.copytree(
                lab.root,
                Path(keep) / tag,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("*.sock", "*.vici"),
            )
        lab.close()
        left = [n for n, _ in lab_namespaces(lab.lab.lab.prefix) if n.startswith(tag + "-")]
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def interop() -> Iterator[object]:
    """hostsec (hs, 198.51.100.1) and strongSwan (sw, 198.51.100.2) on one link."""
    yield from _lab(None)


@pytest.fixture(scope="module")
def interop6() -> Iterator[object]:
    """hostsec (hs, 2001:db8::1) and strongSwan (sw, 2001:db8::2) on one link, over IPv6."""
    yield from _lab(None, 6)


@pytest.fixture(scope="module", params=["keep", "random"])
def interop_nat(request: pytest.FixtureRequest) -> Iterator[object]:
    """hostsec behind a masquerading router (plain, then ``masquerade random``)."""
    yield from _lab(request.param)
