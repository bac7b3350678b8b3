"""The NAT in front of a forgets its mapping (RFC 7296 2.23, RFC 3948): b follows.

    a 198.51.100.2 --- 198.51.100.1 r 203.0.113.1 --- 203.0.113.2 b

a (behind the masquerading router) brings a transport-mode ESP-in-UDP session up with b.
Then the router loses its conntrack entries (flushed over netlink, as ``conntrack -F``
does) and masquerades into another port range: a's packets now leave from a new public
port. b receives them (ESP is accepted from any port) but its answers still go to the old
port, which the router no longer maps, until a's next liveness check (DPD, an
integrity-protected INFORMATIONAL request) arrives from the new port: b moves the IKE SA
and the ESP-in-UDP of the CHILD SA there, on the same SAs, and the session works again.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyroute2 import Conntrack

from hostsec.agent.lab import NatAgentLab, agent_toml, psk_peer, telnet_flows

pytestmark = pytest.mark.netns

DPD = 5  # seconds: a's liveness check when idle (its [[peer]] dpd; 5 s is the least)
IKE: dict[str, Any] = {"ike_proposals": ["aes128gcm16-prfsha256-ecp256"]}
RANGES = ((20000, 29999), (30000, 39999))  # masquerade port ranges: the new one excludes the old


def _nat_t_mappings() -> list[int]:
    """The router's public ports for a's UDP 4500 (in the router's namespace)."""
    with Conntrack() as ct:
        return [
            int(e.tuple_reply.dport)
            for e in ct.dump_entries()
            if e.tuple_orig.proto == 17 and e.tuple_orig.sport == 4500
        ]


def _flush_conntrack() -> int:
    """``conntrack -F`` in the router's namespace; returns how many entries there were."""
    with Conntrack() as ct:
        count = int(ct.count())
        ct.flush()
    return count


def _masquerade(lab: NatAgentLab, ports: tuple[int, int]) -> None:
    """The router's masquerade rule, UDP mapped into ``ports`` (new mappings only)."""
    match = ["ip", "saddr", lab.INSIDE, "oifname", lab.outside.interface_of(lab.router)]
    chain = ["ip", "hostsec_lab_nat", "postrouting"]
    lab.router.run(["nft", "flush", "chain", *chain])
    udp = ["meta", "l4proto", "udp", "masquerade", "to", f":{ports[0]}-{ports[1]}"]
    lab.router.run(["nft", "add", "rule", *chain, *match, *udp])
    lab.router.run(["nft", "add", "rule", *chain, *match, "masquerade"])


def _telnet(status: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == "telnet")


def _spis(status: dict[str, Any]) -> set[tuple[str, str]]:
    return {(sa["direction"], sa["spi"]) for sa in _telnet(status)["sas"]}


def test_new_nat_mapping_is_followed() -> None:
    with NatAgentLab(prefix="hsnm") as lab:
        b = lab.address("b")
        public_a = lab.public_address("a")
        client, server = telnet_flows("b", "a", esp_proposals=["aes128gcm16"])
        lab.write_policy(
            "a",
            psk_peer(lab, "a", "b", b, local_id="a.test", remote_id="b.test", dpd=f"{DPD}s", **IKE)
            + client,
        )
        lab.write_policy(
            "b",
            psk_peer(
                lab, "b", "a", public_a, local_id="b.test", remote_id="a.test", dpd="off", **IKE
            )
            + server,
        )
        lab.write_file("a", "hostsec.toml", agent_toml(nat_keepalive=1))
        _masquerade(lab, RANGES[0])
        lab.start_agents()
        lab.serve_echo("b", 23)

        first = lab.echo("a", b, 23, 200_000, timeout=20, label="before")
        assert first["ok"], (first, lab.log("a"), lab.log("b"))
        (old_port,) = lab.router.call(_nat_t_mappings)
        assert RANGES[0][0] <= old_port <= RANGES[0][1]
        status_b = lab.status("b")
        (ike_b,) = status_b["ike_sas"]
        assert ike_b["nat"] == "remote" and ike_b["remote"] == f"{public_a}:{old_port}", ike_b
        spis_b = _spis(status_b)
        out_before = next(sa for sa in _telnet(status_b)["sas"] if sa["direction"] == "out")

        # The router forgets: a's next packet gets a port from the other range.
        _masquerade(lab, RANGES[1])
        assert lab.router.call(_flush_conntrack) >= 1
        assert lab.router.call(_nat_t_mappings) == []

        # a's liveness check (every DPD seconds when idle) comes from the new port.
        moved = lab.wait_for(
            "b", lambda s: s["ike_sas"] and s["ike_sas"][0]["remote"] != ike_b["remote"], 3 * DPD
        )
        (new_port,) = lab.router.call(_nat_t_mappings)
        assert RANGES[1][0] <= new_port <= RANGES[1][1]
        (ike_moved,) = moved["ike_sas"]
        assert ike_moved["remote"] == f"{public_a}:{new_port}", ike_moved
        # The same IKE SA and the same CHILD SA pair: nothing was renegotiated.
        assert (ike_moved["spi_i"], ike_moved["spi_r"]) == (ike_b["spi_i"], ike_b["spi_r"])
        assert _spis(moved) == spis_b
        assert f"to {public_a}:{new_port}; 1 outbound SA(s) follow" in lab.log("b")

        # b -> a works again (the echo comes back), on b's same outbound SA, whose
        # sequence numbers went on (a's anti-replay window accepts them: no drops).
        again = lab.echo("a", b, 23, 200_000, timeout=20, label="after")
        assert again["ok"], (again, lab.log("a")[-2000:], lab.log("b")[-2000:])
        status_a, status_b = lab.status("a"), lab.status("b")
        out_after = next(sa for sa in _telnet(status_b)["sas"] if sa["direction"] == "out")
        assert out_after["spi"] == out_before["spi"]
        assert out_after["packets"] > out_before["packets"]
        in_a = [sa for sa in _telnet(status_a)["sas"] if sa["direction"] == "in"]
        assert [sa["spi"] for sa in in_a] == [out_after["spi"]]
        assert in_a[0]["drops"] == {}, in_a[0]["drops"]
        assert _telnet(status_a)["state"] == _telnet(status_b)["state"] == "up"
        # a, behind the NAT, never moved: it still talks to b's 4500.
        (ike_a,) = status_a["ike_sas"]
        assert ike_a["remote"] == f"{b}:4500", ike_a
