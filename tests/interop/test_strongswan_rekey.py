"""Rekeying against strongSwan 5.9 during a transfer (RFC 7296 1.3.2, 1.3.3, 2.8, 2.18).

The CHILD SA and the IKE SA are rekeyed by either end while the echo client pushes 8 MB
through tcp/23: the session must come back byte-exact, the new SAs must carry the rest of
it, and the old ones must be gone on both sides. strongSwan rekeys through vici
(``swanctl --rekey``), hostsec through its control socket (``rekey`` command). The side
that rekeys is never the one that set the IKE SA up, so responders start rekeys too.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from .checks import charon_ike, check_echo
from .pair import Case, InteropLab, wait_until

pytestmark = pytest.mark.interop

NBYTES = 8_000_000
PFS = {"aes256-sha256-modp2048": "MODP_2048", "chacha20poly1305-curve25519": "CURVE_25519"}


def _hs_out_spi(lab: InteropLab, case: Case) -> str | None:
    flow = lab.flow_status(lab.status(), case)
    spis = [sa["spi"] for sa in flow["sas"] if sa["direction"] == "out"]
    return spis[0] if len(spis) == 1 else None


def _hs_ike(lab: InteropLab, case: Case) -> tuple[str, str] | None:
    ikes = lab.ike_of(lab.status(), case)
    return (ikes[0]["spi_i"], ikes[0]["spi_r"]) if len(ikes) == 1 else None


def _sw_children(lab: InteropLab, case: Case) -> list[dict[str, Any]]:
    return [c for c in lab.charon.child_sas() if c["ike"] == case.conn]


def _installed(lab: InteropLab, case: Case) -> list[dict[str, Any]]:
    return [c for c in _sw_children(lab, case) if c["state"] == "INSTALLED"]


def _moving(lab: InteropLab, case: Case, at_least: int) -> bool:
    return any(int(c["bytes-in"]) >= at_least for c in _sw_children(lab, case))


@pytest.mark.parametrize(
    ("who", "what", "esp"),
    [
        pytest.param("sw", "child", "aes128gcm16", id="sw-rekeys-child"),
        pytest.param("hs", "child", "aes128gcm16", id="hs-rekeys-child"),
        pytest.param("sw", "child", "aes256-sha256-modp2048", id="sw-rekeys-child-pfs"),
        pytest.param("hs", "child", "chacha20poly1305-curve25519", id="hs-rekeys-child-pfs"),
        pytest.param("sw", "ike", "aes128gcm16", id="sw-rekeys-ike"),
        pytest.param("hs", "ike", "aes256-sha256", id="hs-rekeys-ike"),
    ],
)
def test_rekey_during_transfer(interop: InteropLab, who: str, what: str, esp: str) -> None:
    lab = interop
    with lab.case(esp=esp, hostsec_starts=who == "sw") as case:
        lab.establish(case)
        old_out = _hs_out_spi(lab, case)
        old_ike = _hs_ike(lab, case)
        sw_old_ike = charon_ike(lab, case)
        sw_old_spis = (sw_old_ike["initiator-spi"], sw_old_ike["responder-spi"])
        assert old_out is not None and old_ike is not None
        assert {old_ike} == {sw_old_spis}

        client = lab.echo_async(NBYTES)
        try:
            wait_until(lambda: _moving(lab, case, 300_000), 20, "transfer did not start")
            if who == "sw":
                lab.charon.rekey(**{what: case.child if what == "child" else case.conn})
            else:
                lab.control("rekey", name=case.flow if what == "child" else case.peer)
            if what == "child":
                new_out = wait_until(
                    lambda: (spi := _hs_out_spi(lab, case)) not in (None, old_out) and spi,
                    10,
                    "hostsec did not switch to the new CHILD SA",
                )
            else:
                new_ike = wait_until(
                    lambda: (spis := _hs_ike(lab, case)) not in (None, old_ike) and spis,
                    10,
                    "hostsec did not switch to the new IKE SA",
                )
            still_running = client.poll() is None
            out, err = client.communicate(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 0, (out, err)
        assert '"ok": true' in out, out
        assert still_running, "the transfer ended before the rekey: make NBYTES larger"

        if what == "child":
            # strongSwan keeps only the new pair, the one hostsec now sends on, and it
            # carried the rest of the transfer.
            # (strongSwan lists a rekeyed pair a few seconds more: delete_rekeyed_delay)
            children = lab.charon.wait_for(
                lambda c: (ch := _installed(lab, case)) and len(ch) == 1 and ch,
                10,
                "the old CHILD SA is deleted",
            )
            assert f"0x{children[0]['spi-in']}" == new_out, (children, new_out)
            assert int(children[0]["bytes-in"]) > 0 and int(children[0]["bytes-out"]) > 0
            if esp in PFS:  # the rekey made a fresh DH exchange
                assert children[0].get("dh-group") == PFS[esp], children[0]
            assert _hs_ike(lab, case) == old_ike
        else:
            # One IKE SA on each side, the new one, which now holds the CHILD SA.
            sw_new = lab.charon.wait_for(
                lambda c: (
                    (sas := [s for s in c.ike_sas() if s["name"] == case.conn])
                    and len(sas) == 1
                    and (sas[0]["initiator-spi"], sas[0]["responder-spi"]) != sw_old_spis
                    and sas[0]
                ),
                10,
                "the old IKE SA is deleted",
            )
            assert (sw_new["initiator-spi"], sw_new["responder-spi"]) == new_ike
            assert len(sw_new.get("child-sas", {})) == 1
            assert _hs_out_spi(lab, case) == old_out
        flow = lab.flow_status(lab.status(), case)
        assert flow["state"] == "up", flow


@contextlib.contextmanager
def _hostsec_deaf(lab: InteropLab) -> Iterator[None]:
    """hostsec's inbound worker (it reads udp/4500) stopped for the block: what strongSwan
    sends waits in the socket while hostsec's own requests still leave."""
    inbound = lab.status()["agent"]["workers"][1]
    os.kill(inbound, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(inbound, signal.SIGCONT)


@pytest.mark.parametrize("what", ["child", "ike"])
def test_simultaneous_rekey(interop: InteropLab, what: str) -> None:
    """Both ends rekey the same SA at once, during a transfer (RFC 7296 2.8.1): the
    requests cross, the nonce rule picks one new SA on both sides, the redundant one and
    the old one are deleted, and the session goes on byte-exact on the survivor.

    To make the requests cross every time, hostsec reads nothing while strongSwan's
    request is sent and its own goes out; strongSwan then sees the collision first."""
    lab = interop
    with lab.case(esp="aes128gcm16", hostsec_starts=what == "child") as case:
        lab.establish(case)
        old_ike = _hs_ike(lab, case)
        client = lab.echo_async(NBYTES)
        try:
            wait_until(lambda: _moving(lab, case, 300_000), 20, "transfer did not start")
            mark = lab.charon.log_mark()
            kind = "CHILD_REKEY" if what == "child" else "IKE_REKEY"
            with _hostsec_deaf(lab):
                lab.charon.rekey(**{what: case.child if what == "child" else case.conn})
                wait_until(
                    lambda: "generating CREATE_CHILD_SA request" in lab.charon.log_since(mark),
                    5,
                    "strongSwan did not send its rekey",
                )
                lab.control("rekey", name=case.flow if what == "child" else case.peer)
                wait_until(
                    lambda: f"detected {kind} collision with {kind}" in lab.charon.log_since(mark),
                    5,
                    "strongSwan saw no collision",
                )
            out, err = client.communicate(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 0 and '"ok": true' in out, (out, err)
        log = lab.hs_log()
        assert "rekey collision" in log[log.index(f"CHILD SA {case.flow} up") :]

        # One CHILD SA, the same on both ends, and one IKE SA each, the same.
        sw_child = lab.charon.wait_for(
            lambda c: (ch := _installed(lab, case)) and len(ch) == 1 and ch[0],
            10,
            "one CHILD SA left",
        )
        lab.wait_hs(lambda s: _hs_out_spi(lab, case) == f"0x{sw_child['spi-in']}", timeout=10)
        flow = lab.flow_status(lab.status(), case)
        assert flow["state"] == "up"
        assert f"0x{sw_child['spi-out']}" in {sa["spi"] for sa in flow["sas"]}
        sw = lab.charon.wait_for(
            lambda c: (
                (s := [i for i in c.ike_sas() if i["name"] == case.conn]) and len(s) == 1 and s
            ),
            10,
            "one IKE SA left",
        )
        hs_ike = lab.wait_hs(lambda s: len(lab.ike_of(s, case)) == 1 and s)
        ike = lab.ike_of(hs_ike, case)[0]
        assert (ike["spi_i"], ike["spi_r"]) == (sw[0]["initiator-spi"], sw[0]["responder-spi"])
        if what == "ike":
            assert (ike["spi_i"], ike["spi_r"]) != old_ike
        check_echo(lab.echo(label="after-collision"))
