"""hostsec behind a NAT to hostsec (RFC 7296 2.23, RFC 3948): three namespaces, a router
doing nftables masquerade (also with random port remapping) between them.

    a 198.51.100.2 --- 198.51.100.1 r 203.0.113.1 --- 203.0.113.2 b

``a`` initiates in transport mode; ``b`` sees only the router's address, so its policy's
peer address is 203.0.113.1. Both detect the NAT, IKE floats to UDP 4500, ESP travels in
UDP, ``a`` sends NAT keepalives, and the inner TCP checksums are fixed up (RFC 3948 3.1.2)
so that the session's bytes arrive intact.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from hostsec.agent.echo import stream
from hostsec.agent.lab import NatAgentLab, agent_toml, psk_peer, telnet_flows
from hostsec.wire.udpencap import NON_ESP_MARKER

pytestmark = pytest.mark.netns

NBYTES = 1_000_000
KEEPALIVE = 1  # seconds ([ike] nat_keepalive in a's hostsec.toml)
UDP_TIMEOUT = 3  # seconds the router keeps an idle UDP mapping (conntrack)
IKE: dict[str, Any] = {"ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "dpd": "off"}


def _flow(status: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == "telnet")


@pytest.mark.parametrize("random_ports", [False, True], ids=["masquerade", "random"])
def test_transport_mode_through_nat(random_ports: bool) -> None:
    with NatAgentLab(random_ports=random_ports, udp_timeout=UDP_TIMEOUT) as lab:
        a, b = lab.address("a"), lab.address("b")
        public_a = lab.public_address("a")
        assert public_a == "203.0.113.1"
        client, server = telnet_flows("b", "a", esp_proposals=["aes128gcm16"])
        # Identities are names: b cannot know a's inside address, a not its public one.
        lab.write_policy(
            "a", psk_peer(lab, "a", "b", b, local_id="a.test", remote_id="b.test", **IKE) + client
        )
        lab.write_policy(
            "b",
            psk_peer(lab, "b", "a", public_a, local_id="b.test", remote_id="a.test", **IKE)
            + server,
        )
        lab.write_file("a", "hostsec.toml", agent_toml(nat_keepalive=KEEPALIVE))
        lab.start_agents()
        lab.serve_echo("b", 23)
        outside = lab.capture_outside()
        inside = lab.capture("a")

        result = lab.echo("a", b, 23, NBYTES, timeout=20, label="nat")
        assert result["ok"], (result, lab.log("a"), lab.log("b"))
        status_a, status_b = lab.status("a"), lab.status("b")
        # Idle for longer than the router keeps an idle mapping: only the keepalives keep it.
        time.sleep(UDP_TIMEOUT + 1.5)
        frames = outside.stop()
        inside.stop()

        # NAT detected, on the right side, and shown in the status.
        (ike_a,) = status_a["ike_sas"]
        (ike_b,) = status_b["ike_sas"]
        assert ike_a["nat"] == "local", ike_a
        assert ike_b["nat"] == "remote", ike_b
        assert ike_a["local"] == f"{a}:4500" and ike_a["remote"] == f"{b}:4500", ike_a
        host, port = ike_b["remote"].rsplit(":", 1)
        assert host == public_a, ike_b
        if random_ports:
            assert port != "4500", "masquerade random should have remapped 4500"
        for status in (status_a, status_b):
            flow = _flow(status)
            assert flow["state"] == "up", flow
            assert {sa["direction"] for sa in flow["sas"]} == {"in", "out"}
            assert all(sa["udp_encapsulation"] and sa["mode"] == "transport" for sa in flow["sas"])
            assert all(sa["drops"] == {} for sa in flow["sas"]), flow["sas"]

        # The outside link: only UDP (500 for IKE_SA_INIT, 4500 after the float), no raw
        # ESP, no inside address, no cleartext session.
        inner = a.encode()
        assert frames, "nothing captured outside"
        assert all(f.protocol == 17 for f in frames if f.version == 4), [
            str(f) for f in frames if f.protocol != 17
        ][:5]
        assert all(a not in (f.src, f.dst) for f in frames)
        assert not any(f.uses_port(6, 23) for f in frames)
        ike500 = [f for f in frames if 500 in (f.sport, f.dport)]
        assert len(ike500) == 2, [str(f) for f in ike500]  # IKE_SA_INIT request + response
        nat_t = [f for f in frames if f.dport == 4500 or f.sport == 4500]
        assert len(nat_t) + len(ike500) == len(frames), [str(f) for f in frames][:10]
        ike4500 = [f for f in nat_t if f.payload[:4] == NON_ESP_MARKER]
        assert ike4500, "IKE_AUTH should be on 4500 with the non-ESP marker"
        assert min(f.time for f in ike4500) > max(f.time for f in ike500)
        esp = [f for f in nat_t if f.is_esp]
        assert len(esp) > 700
        # a's side of the ESP goes out with the router's address, to b's 4500.
        assert all(f.src == public_a for f in esp if f.dport == 4500 and f.dst == b)
        # The session is not readable (the inner address and the bytes do not leak).
        payload = stream(NBYTES, "nat")
        probes = {payload[i : i + 24] for i in range(0, NBYTES - 24, 4999)}
        assert not any(p in f.packet for f in frames for p in probes)
        assert not any(inner in f.payload for f in esp[:50])  # encrypted, no inner header

        # NAT keepalives (RFC 3948 2.3): one 0xFF octet from a, at the configured interval,
        # once the ESP traffic stopped; b counts them; b sends none.
        keepalives = [f for f in frames if f.protocol == 17 and f.payload == b"\xff"]
        assert len(keepalives) >= 2, [str(f) for f in frames[-10:]]
        assert all(f.src == public_a and f.dst == b and f.dport == 4500 for f in keepalives)
        gaps = [y.time - x.time for x, y in itertools.pairwise(keepalives)]
        assert all(KEEPALIVE - 0.5 <= g <= KEEPALIVE + 1.5 for g in gaps), gaps
        assert lab.status("b")["keepalives_received"] >= len(keepalives)

        # The mapping held: a second session after the idle period still works (with
        # random ports, a new mapping would have a new port that b does not know).
        again = lab.echo("a", b, 23, 100_000, timeout=20, label="nat-again")
        assert again["ok"], again
