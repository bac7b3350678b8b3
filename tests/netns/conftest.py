"""Network-namespace tests: root only, everything built in namespaces and always removed.

Tests marked ``@pytest.mark.netns`` are skipped when not root (or when a tool they need
is missing), unless ``HOSTSEC_REQUIRE_ROOT_TESTS=1``: then they fail, so that CI never
passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostsec.platform.netns import Host, Lab, lab_namespaces, remove_stale

REQUIRED_TOOLS = ("ip", "nft", "tcpdump")


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "netns tests need root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return f"netns tests need {', '.join(missing)} (scripts/setup-debian.sh)"
    if not Path("/dev/net/tun").exists():
        return "netns tests need /dev/net/tun"
    return None


@pytest.fixture(autouse=True)
def _netns_requirements(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("netns") is None:
        return
    why = _unavailable()
    if why is None:
        return
    if os.environ.get("HOSTSEC_REQUIRE_ROOT_TESTS") == "1":
        pytest.fail(f"{why} (HOSTSEC_REQUIRE_ROOT_TESTS=1)")
    pytest.skip(why)


@pytest.fixture(scope="session", autouse=True)
def _stale_labs() -> None:
    """Remove lab namespaces that crashed runs of earlier test sessions left behind."""
    if os.geteuid() == 0:
        remove_stale()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """An empty lab; afterwards none of its namespaces may remain."""
    with Lab() as the_lab:
        yield the_lab
    left = [name for name, _ in lab_namespaces() if name.startswith(the_lab.tag + "-")]
    assert not left, f"lab left namespaces behind: {left}"


@pytest.fixture
def pair(lab: Lab) -> tuple[Host, Host]:
    """Hosts a (198.51.100.1, 2001:db8::1) and b (198.51.100.2, 2001:db8::2) on one veth."""
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.connect(a, b, ipv6=True)
    return a, b
