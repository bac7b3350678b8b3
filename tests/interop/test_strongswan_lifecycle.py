"""SA life cycle against strongSwan 5.9: trap, terminate from either side, INITIAL_CONTACT
after a restart of either daemon, dead peer detection, and refusals with a reason."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hostsec.agent.daemon import IDLE_CHECK, LINGER

from .checks import charon_ike, check_echo
from .pair import RETRANSMIT_BUDGET, Case, InteropLab
from .swan import CharonError

pytestmark = pytest.mark.interop


def _gone(
    lab: InteropLab, case: Case, status: dict[str, Any], inbound: bool = False
) -> dict[str, Any] | None:
    """hostsec's status once it has no IKE SA and no outbound SA with the case's peer (with
    ``inbound``, also no inbound SA: those linger 5 s for packets in flight)."""
    flow = lab.flow_status(status, case)
    directions = {"out", "in"} if inbound else {"out"}
    if lab.ike_of(status, case) or flow["state"] == "up":
        return None
    if any(sa["direction"] in directions for sa in flow["sas"]):
        return None
    return status


def _spis(ikes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["spi_i"], i["spi_r"]) for i in ikes]


def _sw_conn(lab: InteropLab, case: Case) -> list[dict[str, Any]]:
    return [s for s in lab.charon.ike_sas() if s["name"] == case.conn]


def test_trap_then_strongswan_terminates_ike(interop: InteropLab) -> None:
    """The first telnet packet brings the SAs up (trap); ``swanctl --terminate --ike``
    makes hostsec remove them; the next packet brings them up again."""
    lab = interop
    with lab.case() as case:
        status = lab.status()
        assert lab.flow_status(status, case)["state"] == "trap"
        check_echo(lab.echo())
        assert len(_sw_conn(lab, case)) == 1
        started = time.monotonic()
        lab.charon.terminate(ike=case.conn)
        status = lab.wait_hs(lambda s: _gone(lab, case, s), timeout=5)
        took = time.monotonic() - started
        assert lab.flow_status(status, case)["state"] == "trap"
        assert took < 2.0, took
        assert "deleted by the peer" in lab.hs_log()
        lab.wait_hs(lambda s: _gone(lab, case, s, inbound=True), timeout=LINGER + 2)
        check_echo(lab.echo())  # trapped again: a new IKE SA
        assert len(_sw_conn(lab, case)) == 1


def test_strongswan_terminates_child(interop: InteropLab) -> None:
    """``swanctl --terminate --child``: hostsec removes the CHILD SA, keeps the IKE SA, and
    its next packet creates a new CHILD SA on it (CREATE_CHILD_SA)."""
    lab = interop
    with lab.case(hostsec_starts=False) as case:
        lab.establish(case)
        ike_before = lab.ike_of(lab.status(), case)
        lab.charon.terminate(child=case.child)
        status = lab.wait_hs(
            lambda s: (
                (f := lab.flow_status(s, case))["state"] != "up"
                and not [sa for sa in f["sas"] if sa["direction"] == "out"]
                and s
            ),
            timeout=5,
        )
        assert _spis(lab.ike_of(status, case)) == _spis(ike_before)
        assert len(charon_ike(lab, case).get("child-sas", {})) == 0
        lab.control("up", name=case.flow)
        lab.wait_hs(lambda s: lab.flow_status(s, case)["state"] == "up")
        check_echo(lab.echo())
        assert _spis(lab.ike_of(lab.status(), case)) == _spis(ike_before)
        sw = charon_ike(lab, case)
        assert len(sw["child-sas"]) == 1
        assert (sw["initiator-spi"], sw["responder-spi"]) == (
            ike_before[0]["spi_i"],
            ike_before[0]["spi_r"],
        )


def test_hostsec_down(interop: InteropLab) -> None:
    """``hostsec down FLOW`` deletes the CHILD SA on strongSwan too; ``down PEER`` the IKE SA."""
    lab = interop
    with lab.case() as case:
        lab.establish(case)
        lab.control("down", name=case.flow)
        lab.charon.wait_for(
            lambda c: (sas := _sw_conn(lab, case)) and not sas[0].get("child-sas"),
            5,
            "CHILD SA deleted",
        )
        lab.control("down", name=case.peer)
        lab.charon.wait_for(lambda c: not _sw_conn(lab, case), 5, "IKE SA deleted")
        lab.wait_hs(lambda s: not lab.ike_of(s, case), timeout=5)


def test_initial_contact_from_restarted_hostsec(interop: InteropLab) -> None:
    """hostsec crashes and comes back: its IKE_AUTH carries INITIAL_CONTACT, and strongSwan
    drops the IKE SA it still had with the old instance (RFC 7296 2.4)."""
    lab = interop
    with lab.case() as case:
        lab.establish(case)
        old = charon_ike(lab, case)
        lab.lab.kill_agent("hs")
        lab.lab.start_agent("hs")
        status = lab.establish(case)
        ike = lab.ike_of(status, case)[0]
        sw = lab.charon.wait_for(
            lambda c: (sas := _sw_conn(lab, case)) and len(sas) == 1 and sas[0],
            5,
            "only the new IKE SA",
        )
        assert (sw["initiator-spi"], sw["responder-spi"]) == (ike["spi_i"], ike["spi_r"])
        assert sw["initiator-spi"] != old["initiator-spi"]
        check_echo(lab.echo())


def test_initial_contact_from_restarted_strongswan(interop: InteropLab) -> None:
    """strongSwan crashes and comes back, then initiates: hostsec drops the stale IKE SA
    (and its CHILD SA) on INITIAL_CONTACT and keeps only the new one."""
    lab = interop
    with lab.case(dpd="1h") as case:
        lab.establish(case)
        old = lab.ike_of(lab.status(), case)[0]
        lab.charon.kill()
        lab.charon.start()
        lab.load_charon_credentials()
        lab.charon.initiate(case.conn, case.child)
        status = lab.wait_hs(
            lambda s: (i := lab.ike_of(s, case)) and len(i) == 1 and i[0]["spi_i"] != old["spi_i"]
        )
        ike = lab.ike_of(status, case)[0]
        sw = charon_ike(lab, case)
        assert (sw["initiator-spi"], sw["responder-spi"]) == (ike["spi_i"], ike["spi_r"])
        assert "INITIAL_CONTACT" in lab.hs_log()
        check_echo(lab.echo())


def test_liveness_checks_answered(interop: InteropLab) -> None:
    """An idle IKE SA: strongSwan's liveness checks (dpd_delay 1 s) get hostsec's answers
    and the SA stays up on both ends."""
    lab = interop
    with lab.case(dpd="1h", sw_extra={"dpd_delay": "1s"}) as case:
        lab.establish(case)
        mark = lab.charon.log_mark()
        time.sleep(2.5)
        log = lab.charon.log_since(mark)
        assert "sending DPD request" in log and "parsed INFORMATIONAL response" in log, log
        assert len(_sw_conn(lab, case)) == 1
        assert lab.ike_of(lab.status(), case)


def test_dead_peer(interop: InteropLab) -> None:
    """hostsec's liveness check (dpd 5 s) is answered while strongSwan lives; once charon
    is killed it goes unanswered and the IKE SA and its CHILD SA are removed within dpd +
    the retransmission budget of hostsec.toml."""
    lab = interop
    dpd = 5.0
    with lab.case(dpd=f"{int(dpd)}s", sw_extra={"dpd_delay": "0"}) as case:
        lab.establish(case)
        check_echo(lab.echo(100_000), 100_000)
        mark = lab.charon.log_mark()
        # Inbound ESP counts as liveness (RFC 7296 2.4); the agent notes it every
        # IDLE_CHECK seconds, so the first liveness check follows dpd after that.
        time.sleep(dpd + IDLE_CHECK + 1.5)
        log = lab.charon.log_since(mark)
        assert "parsed INFORMATIONAL request" in log, log  # hostsec's empty INFORMATIONAL
        assert "generating INFORMATIONAL response" in log, log
        assert lab.ike_of(lab.status(), case) and len(_sw_conn(lab, case)) == 1
        killed = time.monotonic()
        lab.charon.kill()
        status = lab.wait_hs(lambda s: _gone(lab, case, s), timeout=dpd + RETRANSMIT_BUDGET + 5)
        took = time.monotonic() - killed
        print(f"dead peer: SAs removed {took:.1f} s after charon was killed")
        try:
            assert lab.flow_status(status, case)["state"] == "trap"
            assert took <= dpd + RETRANSMIT_BUDGET + 1.5, took
            assert took >= RETRANSMIT_BUDGET - 0.2, took  # it did retransmit first
            assert "peer unreachable: no response to INFORMATIONAL" in lab.hs_log()
        finally:
            lab.charon.start()
            lab.load_charon_credentials()


@pytest.mark.parametrize("hostsec_starts", [True, False], ids=["hs-initiates", "sw-initiates"])
def test_wrong_psk(interop: InteropLab, hostsec_starts: bool) -> None:
    lab = interop
    with lab.case(hostsec_starts=hostsec_starts) as case:
        lab.lab.write_secret("hs", "wrong.psk", "not-the-interop-psk-0123456789")
        policy = lab.hostsec_policy(case).replace("sw.psk", "wrong.psk")
        lab.lab.write_policy("hs", policy, file=f"{case.peer}.toml")
        lab.control("rescan")
        if hostsec_starts:
            lab.control("up", name=case.flow)
        else:
            with pytest.raises(CharonError):
                lab.charon.initiate(case.conn, case.child)
        status = lab.wait_hs(lambda s: case.peer in s["auth_failures"], timeout=10)
        reason = status["auth_failures"][case.peer]
        if hostsec_starts:
            assert "AUTHENTICATION_FAILED" in reason, reason
        else:
            assert "PSK" in reason or "AUTH" in reason.upper(), reason
        assert not lab.ike_of(status, case)
        assert not _sw_conn(lab, case)
