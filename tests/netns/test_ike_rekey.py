"""Rekeying during a transfer (RFC 7296 1.3.2, 1.3.3, 2.8): CHILD SA and IKE SA rekeys
started from either side, then a simultaneous CHILD SA rekey whose requests cross on the
wire (RFC 7296 2.8.1), while a paced telnet session runs: the session's bytes arrive intact,
it never stalls on an ordinary rekey, and afterwards only the new SAs exist, the same on
both sides.

The policy's lifetimes cannot go below 60 s (the policy schema), so the rekeys are started
with the agent's `rekey` control command (like `swanctl --rekey`): the same state-machine
rekey that a lifetime starts.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from hostsec.agent.lab import (
    CHUNK,
    INTERVAL,
    AgentLab,
    agent_toml,
    paced_echo,
    psk_peer,
    telnet_flows,
)
from hostsec.platform.nsenter import ChildFailed

pytestmark = pytest.mark.netns

SECONDS = 10.0  # of the paced session (about 800 KB/s)
# Short, steady retransmissions, so that held IKE messages go out soon after release.
RETRANSMIT = {"retransmit_timeout": 0.3, "retransmit_base": 1.0, "retransmit_tries": 20}


def hold_ike(lab: AgentLab, what: str | None) -> None:
    """Make both hosts drop the CREATE_CHILD_SA "requests" or "responses" they send (None:
    none). IKE header: exchange type at octet 18, flags at 19 (R = 0x20), after 8 of UDP."""
    flag = "0x20" if what == "responses" else "0x00"
    lab.drop_sent(f"udp dport 500 @th,208,8 36 @th,216,8 & 0x20 == {flag}" if what else None)


def _session_result(lab: AgentLab, transfer: Any, seconds: float) -> dict[str, Any]:
    """The paced session's result, checked complete and byte-exact (with both agents'
    logs when it is not)."""
    try:
        result: dict[str, Any] = transfer.result(seconds + 30)
    except ChildFailed as exc:
        pytest.fail(f"session broken: {exc}\n=== a\n{lab.log('a')}\n=== b\n{lab.log('b')}")
    assert result["ok"], (result, lab.log("a"), lab.log("b"))
    assert result["bytes"] == CHUNK * int(seconds / INTERVAL)
    return result


def _flow(status: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == "telnet")


def _spis(status: dict[str, Any]) -> tuple[tuple[str, str], dict[str, str]]:
    (ike,) = status["ike_sas"]
    child = {sa["direction"]: sa["spi"] for sa in _flow(status)["sas"]}
    return (ike["spi_i"], ike["spi_r"]), child


def _settled(status: dict[str, Any]) -> bool:
    """One IKE SA, one CHILD SA pair (the replaced inbound SAs have lingered out)."""
    sas = _flow(status)["sas"]
    return len(status["ike_sas"]) == 1 and sorted(sa["direction"] for sa in sas) == ["in", "out"]


def _changed(status: dict[str, Any], old: tuple[tuple[str, str], dict[str, str]]) -> bool:
    """The rekey is done: the IKE SPIs changed (IKE rekey) or a new outbound SA is in use
    (CHILD rekey), and exactly one IKE SA remains."""
    if len(status["ike_sas"]) != 1:
        return False
    ike, child = _spis(status)
    return ike != old[0] or child.get("out") != old[1].get("out")


def test_rekeys_from_both_sides_during_a_transfer() -> None:
    with AgentLab(prefix="hsrekey") as lab:
        a, b = lab.address("a"), lab.address("b")
        client, server = telnet_flows("b", "a", esp_proposals=["aes128gcm16"])
        ike: dict[str, Any] = {"ike_proposals": ["aes128gcm16-prfsha256-ecp256"]}
        lab.write_policy("a", psk_peer(lab, "a", "b", b, local_id=a, **ike) + client)
        lab.write_policy("b", psk_peer(lab, "b", "a", a, local_id=b, **ike) + server)
        for host in ("a", "b"):
            lab.write_file(host, "hostsec.toml", agent_toml(**RETRANSMIT))
        lab.start_agents()
        lab.serve_echo("b", 23)
        assert lab.echo("a", b, 23, 10_000)["ok"]
        first_ike, first_child = _spis(lab.status("a"))

        transfer = lab.hosts["a"].spawn(paced_echo, b, 23, SECONDS)
        assert transfer.conn is not None and transfer.conn.poll(10)
        assert transfer.conn.recv() == "started"
        steps = [
            ("a", "telnet"),  # CHILD SA rekey, a initiates
            ("b", "a"),  # IKE SA rekey, b initiates
            ("b", "telnet"),  # CHILD SA rekey, b initiates (on the new IKE SA)
            ("a", "b"),  # IKE SA rekey, a initiates
        ]
        seen: list[tuple[str, str]] = []
        for host, name in steps:
            time.sleep(0.8)
            before = _spis(lab.status(host))
            assert "rekeying" in lab.request(host, "rekey", name=name)
            changed = lab.wait_for(host, lambda s, old=before: _changed(s, old), timeout=5)
            seen.append(_spis(changed)[0])

        # Both ends rekey the CHILD SA at once. Both requests are held until both are out,
        # then delivered while both responses are held: each end gets the other's request
        # while its own is outstanding, the classic collision. The nonce rule keeps exactly
        # one new pair, and each agent must end up sending on that one.
        time.sleep(1.0)
        collision_start = time.monotonic()
        hold_ike(lab, "requests")
        lab.request("a", "rekey", name="telnet")
        lab.request("b", "rekey", name="telnet")
        time.sleep(0.1)
        hold_ike(lab, "responses")
        time.sleep(3 * RETRANSMIT["retransmit_timeout"])
        hold_ike(lab, None)
        collision_end = time.monotonic()
        assert transfer.alive(), "the session ended before the rekeys: lengthen SECONDS"

        result = _session_result(lab, transfer, SECONDS)
        # No stall outside the collision, whose held responses cost what a slow link would
        # (each end sends on the pair it answered for before the other end installed it).
        stalls = [
            s for s in result["stalls"] if not collision_start < s[0] - s[1] < collision_end + 1
        ]
        assert stalls == [], result["stalls"]

        status_a = lab.wait_for("a", _settled, timeout=15)
        status_b = lab.wait_for("b", _settled, timeout=15)
        ike_a, child_a = _spis(status_a)
        ike_b, child_b = _spis(status_b)
        # The IKE SPIs after each step: CHILD rekeys keep the IKE SA, IKE rekeys replace it.
        assert seen[0] == first_ike and seen[1] != seen[0], seen
        assert seen[2] == seen[1] and seen[3] != seen[2], seen
        assert ike_a == ike_b == seen[3]
        assert child_a["out"] == child_b["in"] and child_a["in"] == child_b["out"]
        assert set(child_a.values()).isdisjoint(first_child.values())
        logs = lab.log("a") + lab.log("b")
        assert "rekey collision" in logs, logs
        for status in (status_a, status_b):
            assert _flow(status)["state"] == "up"
        # The surviving SAs carry traffic, and nothing is dropped on them.
        assert lab.echo("a", b, 23, 200_000, timeout=20, label="after")["ok"]
        for status in (lab.status("a"), lab.status("b")):
            drops = {sa["spi"]: sa["drops"] for sa in _flow(status)["sas"] if sa["drops"]}
            assert drops == {}, (drops, lab.log("a"), lab.log("b"))


def test_volume_lifetime_rekeys_the_child_sa_during_a_transfer() -> None:
    """lifetime_bytes = "1M": every SA is rekeyed after 0.8 to 0.9 MB (RFC 4301 4.4.2.1,
    counted by the data path) while a paced session of about 4 MB each way runs; the bytes
    arrive intact, and no SA ever reaches its hard limit."""
    seconds = 5.0
    with AgentLab(prefix="hsvolume") as lab:
        a, b = lab.address("a"), lab.address("b")
        client, server = telnet_flows("b", "a", esp_proposals=["aes128gcm16"], lifetime_bytes="1M")
        ike: dict[str, Any] = {"ike_proposals": ["aes128gcm16-prfsha256-ecp256"]}
        lab.write_policy("a", psk_peer(lab, "a", "b", b, local_id=a, **ike) + client)
        lab.write_policy("b", psk_peer(lab, "b", "a", a, local_id=b, **ike) + server)
        lab.start_agents()
        lab.serve_echo("b", 23)
        transfer = lab.hosts["a"].spawn(paced_echo, b, 23, seconds)
        _session_result(lab, transfer, seconds)
        logs = lab.log("a") + lab.log("b")
        rekeys = logs.count("(rekey of 0x")
        assert rekeys >= 3, logs  # about 4 MB each way over 1 MB lifetimes
        assert "reached its hard" not in logs and "hard bytes lifetime" not in logs, logs
        status = lab.wait_for("a", _settled, timeout=15)
        assert all(sa["bytes"] < 1 << 20 for sa in _flow(status)["sas"]), _flow(status)
