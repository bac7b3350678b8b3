"""Loss, duplication and delay of every single datagram of an IKE SA's life.

One life, driven by the clock: IKE_SA_INIT + IKE_AUTH with a CHILD SA, a CHILD rekey from
each end, an IKE rekey from each end, a second CHILD SA added and deleted, liveness checks
in the quiet times. The run is repeated once for each datagram the clean run sends, with
that one datagram lost, sent twice, held back past its retransmission, or held back a
little (reordered). Whatever happened, once the retransmissions are over both ends hold
the same single IKE SA and CHILD SA pair, keys matching, and every pair that came up goes
down exactly once when the IKE SA is deleted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .ike_harness import Link, Packet, child, live_pair, peer_config, settle, teardown
from .test_ike_child import _ssh

STEP = 20.0  # seconds between actions: more than a retransmission needs (1 + 2 + 4 + 8)


def _life(link: Link) -> None:
    a, b = link.a, link.b
    start = link.now

    def at(t: float, action: Callable[[], None]) -> None:
        link.advance(start + t - link.now)
        action()

    at(0, lambda: a.manager.initiate("b", [a.manager.configs["b"].child("telnet")], link.now))
    at(STEP, lambda: a.sa().rekey_child(a.child().spi_in, link.now))
    at(2 * STEP, lambda: b.sa().rekey_child(b.child().spi_in, link.now))
    at(3 * STEP, lambda: b.sa().rekey(link.now))
    at(4 * STEP, lambda: a.sa().rekey(link.now))
    at(5 * STEP, lambda: a.manager.initiate("b", [a.manager.configs["b"].child("ssh")], link.now))
    at(6 * STEP, lambda: b.manager.delete_child("a", "ssh", link.now))
    link.advance(start + 10 * STEP - link.now)  # lingering SAs and retransmissions are over


def _link() -> Link:
    return Link(
        peer_config(True, children=(child(), _ssh(True)), dpd=25.0),
        peer_config(False, children=(child(a_side=False), _ssh(False)), dpd=25.0),
    )


def _clean_run_length() -> int:
    link = _link()
    _life(link)
    _check(link)
    return len(link.sent)


def _check(link: Link) -> None:
    settle(link)
    live_pair(link, "telnet")
    for host in link.hosts():
        assert not [e for e in host.live_children().values() if e.child == "ssh"], host.name
        assert len(host.ike_up()) == 3, host.name  # the first, two rekeys
    teardown(link)


CLEAN = _clean_run_length()


def _run(mangle: Callable[[Link, Packet], None], number: int, count: int = 1) -> None:
    link = _link()

    def hook(p: Packet) -> bool:
        if number <= p.number < number + count:
            mangle(link, p)
            return True
        return False

    link.drop = hook
    _life(link)
    try:
        _check(link)
    except AssertionError as exc:
        raise AssertionError(f"datagram #{number}:\n" + "\n".join(link.trace())) from exc


def _lose(link: Link, p: Packet) -> None:
    pass


def _twice(link: Link, p: Packet) -> None:
    link.in_flight += [p, Packet(p.to, p.data, p.src, p.dst)]


def _late(link: Link, p: Packet) -> None:
    link.later.append((link.now + 3.5, p))  # after the first retransmission was answered


def _reordered(link: Link, p: Packet) -> None:
    link.later.append((link.now + 0.5, p))  # before the retransmission, after what follows


def test_the_clean_run_sends_what_it_should() -> None:
    assert 30 <= CLEAN <= 80


@pytest.mark.parametrize("number", range(1, CLEAN + 1))
def test_lost(number: int) -> None:
    _run(_lose, number)


@pytest.mark.parametrize("number", range(1, CLEAN + 1))
def test_duplicated(number: int) -> None:
    _run(_twice, number)


@pytest.mark.parametrize("number", range(1, CLEAN + 1))
def test_delayed_past_the_retransmission(number: int) -> None:
    _run(_late, number)


@pytest.mark.parametrize("number", range(1, CLEAN + 1))
def test_reordered(number: int) -> None:
    _run(_reordered, number)


@pytest.mark.parametrize("number", range(1, CLEAN + 1))
def test_two_in_a_row_lost(number: int) -> None:
    _run(_lose, number, count=2)
