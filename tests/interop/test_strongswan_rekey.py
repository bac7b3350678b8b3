"""Rekeying against strongSwan 5.9 during a transfer (RFC 7296 1.3.2, 1.3.3, 2.8, 2.18).

The CHILD SA and the IKE SA are rekeyed by either end while the echo client pushes 4 MB
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

NBYTES = 4_000_000  # over 2.5 s (paced): the rekeys happen in the middle of it
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


CROSSING = {
    # id: (what strongSwan starts, what hostsec starts, what strongSwan then logs)
    "child-rekeys": (
        "rekey-child",
        "rekey-child",
        "detected CHILD_REKEY collision with CHILD_REKEY",
    ),
    "ike-rekeys": ("rekey-ike", "rekey-ike", "detected IKE_REKEY collision with IKE_REKEY"),
    "sw-deletes-child-hs-rekeys-it": ("delete-child", "rekey-child", "N(TEMP_FAIL)"),
    "sw-rekeys-ike-hs-rekeys-child": ("rekey-ike", "rekey-child", "N(TEMP_FAIL)"),
    "sw-rekeys-child-hs-rekeys-ike": ("rekey-child", "rekey-ike", "N(TEMP_FAIL)"),
}


def _sw_start(lab: InteropLab, case: Case, what: str) -> None:
    if what == "delete-child":
        lab.charon.terminate(child=case.child, timeout_ms=-1)  # do not wait for it
    elif what == "rekey-child":
        lab.charon.rekey(child=case.child)
    else:
        lab.charon.rekey(ike=case.conn)


def _consistent(lab: InteropLab, case: Case) -> bool:
    """One IKE SA and one CHILD SA on each side, the same ones."""
    sw = [i for i in lab.charon.ike_sas() if i["name"] == case.conn]
    status = lab.status()
    ikes = lab.ike_of(status, case)
    if len(sw) != 1 or len(ikes) != 1:
        return False
    if (ikes[0]["spi_i"], ikes[0]["spi_r"]) != (sw[0]["initiator-spi"], sw[0]["responder-spi"]):
        return False
    children = [c for c in sw[0].get("child-sas", {}).values() if c["state"] == "INSTALLED"]
    flow = lab.flow_status(status, case)
    out = [sa["spi"] for sa in flow["sas"] if sa["direction"] == "out"]
    inbound = {sa["spi"] for sa in flow["sas"] if sa["direction"] == "in"}
    return (
        len(children) == 1
        and out == [f"0x{children[0]['spi-in']}"]
        and f"0x{children[0]['spi-out']}" in inbound
        and flow["state"] == "up"
    )


@pytest.mark.parametrize("crossing", list(CROSSING))
def test_crossing_exchanges(interop: InteropLab, crossing: str) -> None:
    """Both ends start an exchange on the same SAs at once, during a transfer: rekey and
    rekey (RFC 7296 2.8.1, the nonce rule picks one new SA on both sides), delete and
    rekey, IKE and CHILD rekeys (2.25: TEMPORARY_FAILURE, retried later). The session
    comes back byte-exact and both ends end up with the same IKE SA and CHILD SA.

    To make the requests cross every time, hostsec reads nothing while strongSwan's
    request is sent and its own goes out; strongSwan sees the crossing first."""
    lab = interop
    sw_what, hs_what, sw_log = CROSSING[crossing]
    with lab.case(esp="aes128gcm16") as case:
        lab.establish(case)
        client = lab.echo_async(NBYTES)
        try:
            wait_until(lambda: _moving(lab, case, 300_000), 20, "transfer did not start")
            mark = lab.charon.log_mark()
            with _hostsec_deaf(lab):
                _sw_start(lab, case, sw_what)
                wait_until(
                    lambda: "sending packet" in lab.charon.log_since(mark),
                    5,
                    "strongSwan sent nothing",
                )
                target = case.flow if hs_what == "rekey-child" else case.peer
                lab.control("rekey", name=target)
                wait_until(
                    lambda: "parsed CREATE_CHILD_SA request" in lab.charon.log_since(mark),
                    5,
                    "hostsec's request did not reach strongSwan",
                )
            out, err = client.communicate(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        assert client.returncode == 0 and '"ok": true' in out, (out, err)
        assert sw_log in lab.charon.log_since(mark)
        if sw_what == hs_what:
            log = lab.hs_log()
            assert "rekey collision" in log[log.index(f"CHILD SA {case.flow} up") :]
        wait_until(lambda: _consistent(lab, case), 10, "both ends agree on their SAs")
        check_echo(lab.echo(label="after-crossing"))
