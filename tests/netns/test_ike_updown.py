"""`hostsec up` / `hostsec down` with IKEv2: a flow with start = "start" comes up with the
agent, one with start = "manual" only on `hostsec up` (its packets never trigger IKE), and
`hostsec down` deletes a flow's CHILD SA or a peer's IKE SA on both sides.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from hostsec.agent.lab import AgentLab, agent_toml, paced_echo, psk_peer, telnet_flows

pytestmark = pytest.mark.netns

IKE: dict[str, Any] = {"ike_proposals": ["aes128gcm16-prfsha256-ecp256"]}


def _start_pair(lab: AgentLab, flows_a: str, flows_b: str) -> None:
    """Each host's PSK peer and flows, both agents started, echo services on b's 23, 80."""
    a, b = lab.address("a"), lab.address("b")
    lab.write_policy("a", psk_peer(lab, "a", "b", b, local_id=a, **IKE) + flows_a)
    lab.write_policy("b", psk_peer(lab, "b", "a", a, local_id=b, **IKE) + flows_b)
    lab.start_agents()
    lab.serve_echo("b", 23)
    lab.serve_echo("b", 80)


def _flow(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == name)


def _up(name: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        flow = _flow(status, name)
        return flow["state"] == "up" and {sa["direction"] for sa in flow["sas"]} == {"in", "out"}

    return check


def _gone(name: str) -> Any:
    """The flow's outbound SA is gone (its inbound half lingers a few seconds for packets
    in flight, by design) and the flow is no longer up."""

    def check(status: dict[str, Any]) -> bool:
        flow = _flow(status, name)
        return flow["state"] != "up" and all(sa["direction"] == "in" for sa in flow["sas"])

    return check


def test_start_manual_up_and_down() -> None:
    with AgentLab(prefix="hsupdn") as lab:
        b = lab.address("b")
        telnet_a, telnet_b = telnet_flows("b", "a", port=23, name="telnet", start="manual")
        web_a, web_b = telnet_flows("b", "a", port=80, name="web", start="start")
        _, web_b = telnet_flows("b", "a", port=80, name="web", start="trap")
        _start_pair(lab, telnet_a + web_a, telnet_b + web_b)

        # start = "start": up without any traffic; start = "manual": not.
        status = lab.wait_for("a", _up("web"))
        assert len(status["ike_sas"]) == 1 and status["ike_sas"][0]["initiator"]
        assert _flow(status, "telnet")["sas"] == []
        lab.wait_for("b", _up("web"))
        # A manual flow's packets are held, never start IKE, never leave in the clear.
        knock = lab.echo("a", b, 23, 1000, timeout=1.0)
        assert not knock["ok"]
        status = lab.status("a")
        assert _flow(status, "telnet")["sas"] == [] and len(status["ike_sas"]) == 1
        assert "flow telnet: first packet" not in lab.log("a")

        # hostsec up FLOW: a CHILD SA on the existing IKE SA.
        done = lab.hostsec("a", "up", "telnet")
        assert done.returncode == 0 and "initiating telnet" in done.stdout, done
        status_a = lab.wait_for("a", _up("telnet"))
        status_b = lab.wait_for("b", _up("telnet"))
        assert len(status_a["ike_sas"]) == 1 and len(status_b["ike_sas"]) == 1
        assert lab.echo("a", b, 23, 200_000)["ok"]
        assert lab.echo("a", b, 80, 200_000, label="web")["ok"]

        # hostsec down FLOW: that CHILD SA goes on both sides; the IKE SA and web stay.
        done = lab.hostsec("a", "down", "telnet")
        assert done.returncode == 0, done
        for name in ("a", "b"):
            status = lab.wait_for(name, _gone("telnet"), timeout=10)
            assert len(status["ike_sas"]) == 1
            assert _up("web")(status)
        assert not lab.echo("a", b, 23, 1000, timeout=1.0)["ok"]
        assert lab.echo("a", b, 80, 50_000, label="web")["ok"]

        # hostsec down PEER: the IKE SA and every CHILD SA go, on both sides.
        done = lab.hostsec("a", "down", "b")
        assert done.returncode == 0 and "deleting the IKE SA with b" in done.stdout, done
        for name in ("a", "b"):
            status = lab.wait_for(
                name, lambda s: s["ike_sas"] == [] and _gone("web")(s), timeout=10
            )
            assert _flow(status, "web")["state"] == "trap"

        # hostsec up PEER: a new IKE SA with all of the peer's flows, manual ones included.
        assert lab.hostsec("a", "up", "b").returncode == 0
        status = lab.wait_for("a", lambda s: _up("telnet")(s) and _up("web")(s))
        assert len(status["ike_sas"]) == 1
        assert lab.echo("a", b, 23, 100_000)["ok"]

        # hostsec rekey FLOW: new CHILD SAs (new SPIs) on both sides, the old ones go.
        def spis(status: dict[str, Any], name: str) -> set[str]:
            return {sa["spi"] for sa in _flow(status, name)["sas"]}

        old = spis(lab.status("a"), "telnet")
        done = lab.hostsec("b", "rekey", "telnet")
        assert done.returncode == 0 and "rekeying the CHILD SAs of telnet" in done.stdout, done
        for name in ("a", "b"):
            lab.wait_for(name, lambda s: _up("telnet")(s) and not spis(s, "telnet") & old)
        # hostsec rekey PEER: a new IKE SA (new SPIs) carries the CHILD SAs on.
        ike = lab.status("a")["ike_sas"][0]["spi_i"]
        done = lab.hostsec("a", "rekey", "b")
        assert done.returncode == 0 and "rekeying the IKE SA with b" in done.stdout, done
        for name in ("a", "b"):
            lab.wait_for(name, lambda s: len(s["ike_sas"]) == 1 and s["ike_sas"][0]["spi_i"] != ike)
        assert lab.echo("a", b, 23, 100_000)["ok"]

        # Errors are reported, not ignored.
        wrong = lab.hostsec("a", "up", "nosuchflow")
        assert wrong.returncode == 1 and "no flow or peer named" in wrong.stderr
        wrong = lab.hostsec("a", "rekey", "nosuchflow")
        assert wrong.returncode == 1 and "no flow or peer named" in wrong.stderr


def test_both_ends_start_at_once_and_keep_one_ike_sa() -> None:
    """Both agents bring the same flows up at start while IKE cannot cross yet: each one's
    IKE_SA_INIT (retransmitted) then gets an answer, two IKE SAs come up, and the redundant
    one (RFC 7296 2.8.1's nonce rule) is closed by its initiator once the other carries
    its flows. Traffic crosses the whole time."""
    with AgentLab(prefix="hsboth") as lab:
        a, b = lab.address("a"), lab.address("b")
        telnet_a, telnet_b = telnet_flows("b", "a", port=23, name="telnet", start="start")
        web_a, web_b = telnet_flows("b", "a", port=80, name="web", start="start")
        fast = {"retransmit_timeout": 0.5, "retransmit_base": 1.0, "retransmit_tries": 20}
        for host in ("a", "b"):
            lab.write_file(host, "hostsec.toml", agent_toml(**fast))
        lab.write_policy("a", psk_peer(lab, "a", "b", b, local_id=a, **IKE) + telnet_a + web_a)
        lab.write_policy("b", psk_peer(lab, "b", "a", a, local_id=b, **IKE) + telnet_b + web_b)
        lab.drop_sent("udp dport { 500, 4500 }")  # IKE cannot cross yet
        lab.start_agents()
        lab.serve_echo("b", 23)
        lab.serve_echo("b", 80)
        lab.drop_sent(None)

        def settled(status: dict[str, Any]) -> bool:
            return len(status["ike_sas"]) == 1 and _up("telnet")(status) and _up("web")(status)

        deadline = time.monotonic() + 20
        while not all(len(re.findall(r"IKE SA \w+ up:", lab.log(h))) == 2 for h in ("a", "b")):
            assert time.monotonic() < deadline, lab.log("a") + lab.log("b")
            time.sleep(0.1)
        for host in ("a", "b"):
            lab.wait_for(host, settled, timeout=20)
        # Two IKE SAs did come up; exactly one end closed the redundant one.
        logs = {host: lab.log(host) for host in ("a", "b")}
        both = "\n".join(f"--- {host}\n{log}" for host, log in logs.items())
        assert all(len(re.findall(r"IKE SA \w+ up:", log)) == 2 for log in logs.values()), both
        closing = [h for h, log in logs.items() if "the other carries its CHILD SAs" in log]
        assert len(closing) == 1, both
        status = {host: lab.status(host) for host in ("a", "b")}
        assert status["a"]["ike_sas"][0]["spi_i"] == status["b"]["ike_sas"][0]["spi_i"]
        for flow in ("telnet", "web"):
            out_a = {
                sa["spi"] for sa in _flow(status["a"], flow)["sas"] if sa["direction"] == "out"
            }
            in_b = {sa["spi"] for sa in _flow(status["b"], flow)["sas"]}
            assert out_a <= in_b
        assert lab.echo("a", b, 23, 200_000)["ok"]
        assert lab.echo("a", b, 80, 200_000, label="web")["ok"]


def test_an_idle_child_sa_is_deleted_and_the_next_packet_brings_it_back() -> None:
    """idle_timeout: a flow that carried nothing for that long loses its CHILD SA on both
    sides and falls back to its trap (DESIGN.md 1.5); a busy flow with the same timeout
    keeps its SA; the idle flow's next packet negotiates a new one."""
    seconds = 22.0  # the busy session outlasts the idle window (10 s, checked every 5 s)
    with AgentLab(prefix="hsidle") as lab:
        b = lab.address("b")
        telnet_a, telnet_b = telnet_flows("b", "a", port=23, name="telnet", idle_timeout="10s")
        web_a, web_b = telnet_flows("b", "a", port=80, name="web", idle_timeout="10s")
        _start_pair(lab, telnet_a + web_a, telnet_b + web_b)
        assert lab.echo("a", b, 23, 20_000)["ok"]
        assert lab.echo("a", b, 80, 20_000, label="web")["ok"]
        web_before = {sa["spi"] for sa in _flow(lab.status("a"), "web")["sas"]}
        busy = lab.hosts["a"].spawn(paced_echo, b, 80, seconds)
        assert busy.conn is not None and busy.conn.poll(10) and busy.conn.recv() == "started"

        # Both ends count idleness; the first to see it deletes, the other is told.
        lab.wait_for("a", _gone("telnet"), timeout=25)
        lab.wait_for("b", _gone("telnet"), timeout=10)
        logs = lab.log("a") + lab.log("b")
        assert "flow telnet idle for 10s: deleting its SAs" in logs
        assert "flow web idle" not in logs
        assert busy.alive(), "the busy session ended before the idle flow went"
        status = lab.status("a")
        assert _flow(status, "telnet")["state"] == "trap"
        assert _up("web")(status) and {sa["spi"] for sa in _flow(status, "web")["sas"]} == (
            web_before
        )
        result = busy.result(seconds + 30)
        assert result["ok"] and result["stalls"] == [], result

        # The trap is armed again: the next telnet packet brings a new CHILD SA up.
        assert lab.echo("a", b, 23, 50_000)["ok"]
        lab.wait_for("a", _up("telnet"))
