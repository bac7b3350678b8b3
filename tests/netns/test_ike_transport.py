"""hostsec to hostsec with IKEv2, transport mode, start = "trap": the first telnet packet
triggers IKE, the session completes byte-exact, and the wire carries no cleartext tcp/23.
"""

from __future__ import annotations

from typing import Any

import pytest

from hostsec.agent.echo import stream
from hostsec.agent.lab import AgentLab, psk_peer, telnet_flows

pytestmark = pytest.mark.netns

NBYTES = 1_000_000


def _flow(status: dict[str, Any], name: str = "telnet") -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == name)


@pytest.mark.parametrize(
    ("protection", "proposals"),
    [("esp", {"esp_proposals": ["aes128gcm16"]}), ("ah", {"ah_proposals": ["sha256"]})],
)
def test_first_packet_triggers_ike_and_session_completes(
    protection: str, proposals: dict[str, Any]
) -> None:
    with AgentLab(prefix="hsike") as lab:
        a, b = lab.address("a"), lab.address("b")
        client, server = telnet_flows("b", "a", protection=protection, start="trap", **proposals)
        ids_a: dict[str, Any] = {
            "local_id": a,
            "remote_id": b,
            "ike_proposals": ["aes128gcm16-prfsha256-ecp256"],
        }
        ids_b: dict[str, Any] = {
            "local_id": b,
            "remote_id": a,
            "ike_proposals": ["aes128gcm16-prfsha256-ecp256"],
        }
        lab.write_policy("a", psk_peer(lab, "a", "b", b, **ids_a) + client)
        lab.write_policy("b", psk_peer(lab, "b", "a", a, **ids_b) + server)
        lab.start_agents()
        lab.serve_echo("b", 23)
        before = lab.status("a")
        assert before["ike_sas"] == [], "no IKE before the first packet"
        assert "first packet, starting IKE" not in lab.log("a")
        assert _flow(before)["state"] == "trap"
        cap = lab.capture("b")
        result = lab.echo("a", b, 23, NBYTES, label=f"ike-{protection}")
        frames = cap.stop()
        assert result["ok"], (result, lab.log("a"), lab.log("b"))
        assert "flow telnet: first packet, starting IKE" in lab.log("a")

        status_a, status_b = lab.status("a"), lab.status("b")
        for status, initiator in ((status_a, True), (status_b, False)):
            assert len(status["ike_sas"]) == 1, status
            ike = status["ike_sas"][0]
            assert ike["initiator"] is initiator
            assert ike["proposal"] == "aes128gcm16-prfsha256-ecp256"
            flow = _flow(status)
            assert flow["state"] == "up", flow
            protocols = {(sa["protocol"], sa["direction"], sa["mode"]) for sa in flow["sas"]}
            assert protocols == {(protection, "in", "transport"), (protection, "out", "transport")}
            assert all(sa["keying"] == "ike" for sa in flow["sas"])
            assert all(not sa["udp_encapsulation"] for sa in flow["sas"])
            assert all(sa["packets"] > 0 for sa in flow["sas"]), flow["sas"]
        # The session's bytes went through the SAs, both ways.
        out_a = next(sa for sa in _flow(status_a)["sas"] if sa["direction"] == "out")
        in_b = next(sa for sa in _flow(status_b)["sas"] if sa["direction"] == "in")
        assert out_a["spi"] == in_b["spi"]
        assert in_b["bytes"] >= NBYTES

        # The wire: IKE on udp/500, then only ESP (or AH) for tcp/23; never cleartext.
        ike = [f for f in frames if f.protocol == 17 and 500 in (f.sport, f.dport)]
        assert len(ike) >= 4  # IKE_SA_INIT and IKE_AUTH, both ways
        assert ike[0].time <= min(f.time for f in frames if f.is_esp or f.is_ah)
        clear = [f for f in frames if f.uses_port(6, 23)]
        assert clear == [], [str(f) for f in clear[:5]]
        if protection == "esp":
            assert sum(f.is_esp and f.protocol == 50 for f in frames) > 700
            assert not any(f.is_ah for f in frames)
            # Any 24-octet window of the session would be plaintext on the wire.
            payload = stream(NBYTES, f"ike-{protection}")
            probes = {payload[i : i + 24] for i in range(0, NBYTES - 24, 4999)}
            assert not any(p in f.packet for f in frames for p in probes)
        else:
            ah = [f for f in frames if f.is_ah]
            assert len(ah) > 700
            assert not any(f.is_esp for f in frames)
            # AH authenticates, it does not encrypt: the inner TCP header follows the AH
            # header (next header 6) and is tcp/23.
            assert all(f.payload[0] == 6 for f in ah)
