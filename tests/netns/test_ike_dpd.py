"""Dead peer detection (RFC 7296 2.4): the peer's agent is killed (SIGKILL, no DELETE);
the survivor's liveness check goes unanswered, the IKE SA and its CHILD SA are removed
within the DPD budget, and the flow is back to "trap": its next packet starts IKE again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from hostsec.agent.daemon import IDLE_CHECK
from hostsec.agent.lab import AgentLab, agent_toml, psk_peer, telnet_flows

pytestmark = pytest.mark.netns

DPD = 5  # seconds (the policy's minimum)
RETRANSMIT = {"retransmit_timeout": 0.5, "retransmit_base": 1.5, "retransmit_tries": 2}
# Silence for DPD seconds (the agent notes the peer's ESP as liveness every IDLE_CHECK
# seconds, so the last traffic may be seen that much late), then the liveness check and its
# retransmissions go unanswered.
BUDGET = DPD + IDLE_CHECK + sum(0.5 * 1.5**n for n in range(2 + 1))
SLACK = 1.5  # the agent's timer tick (1 s) and status polling


def _flow(status: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == "telnet")


def test_killed_peer_is_detected_and_the_flow_goes_back_to_trap() -> None:
    with AgentLab(prefix="hsdpd") as lab:
        a, b = lab.address("a"), lab.address("b")
        client, server = telnet_flows("b", "a", esp_proposals=["aes128gcm16"])
        ike: dict[str, Any] = {"ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "dpd": f"{DPD}s"}
        lab.write_policy("a", psk_peer(lab, "a", "b", b, local_id=a, **ike) + client)
        lab.write_policy("b", psk_peer(lab, "b", "a", a, local_id=b, **ike) + server)
        lab.write_file("a", "hostsec.toml", agent_toml(**RETRANSMIT))
        lab.start_agents()
        lab.serve_echo("b", 23)
        assert lab.echo("a", b, 23, 100_000, timeout=20)["ok"]
        up = lab.status("a")
        assert len(up["ike_sas"]) == 1 and _flow(up)["state"] == "up"
        first_spis = (up["ike_sas"][0]["spi_i"], up["ike_sas"][0]["spi_r"])

        lab.kill_agent("b")
        killed = time.monotonic()
        status = lab.wait_for("a", lambda s: s["ike_sas"] == [], timeout=BUDGET + SLACK + 5)
        detected = time.monotonic() - killed
        assert detected <= BUDGET + SLACK, (detected, BUDGET)
        assert detected >= 1.0, "too fast for a liveness check with retransmissions"
        flow = _flow(status)
        assert flow["state"] == "trap", flow
        assert all(sa["direction"] == "in" for sa in flow["sas"]), flow["sas"]
        assert "peer unreachable: no response to INFORMATIONAL" in lab.log("a")
        # The inbound half lingers for packets in flight, then goes too.
        status = lab.wait_for("a", lambda s: _flow(s)["sas"] == [], timeout=10)
        assert status["ike_sas"] == [] and _flow(status)["state"] == "trap"

        # Trap: once the peer is back, the next packet brings a new IKE SA up.
        lab.start_agent("b")
        result = lab.echo("a", b, 23, 100_000, timeout=20)
        assert result["ok"], (result, lab.log("a"))
        again = lab.status("a")
        assert len(again["ike_sas"]) == 1 and _flow(again)["state"] == "up"
        assert (again["ike_sas"][0]["spi_i"], again["ike_sas"][0]["spi_r"]) != first_spis
