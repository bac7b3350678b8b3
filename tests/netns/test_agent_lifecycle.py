"""What an agent leaves in its namespace: everything while it runs, nothing after a
clean stop, fail-closed leftovers after a crash that the next start cleans up."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hostsec.agent.lab import AgentLab, psk_peer, telnet_flows
from hostsec.platform.linux.routing import RTPROT_HOSTSEC
from hostsec.platform.netns import Host
from tests.netns.agent_support import (
    CLIENT,
    SERVER,
    ManualFlow,
    agent_lab,
    configure,
    ns_state,
    policy_text,
)
from tests.netns.helpers import try_connect

pytestmark = pytest.mark.netns

OURS = str(RTPROT_HOSTSEC)  # how `ip -j` shows the routing protocol of the agent's objects


def _rules(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in state["rules4"] + state["rules6"] if r.get("protocol") == OURS]


def _routes(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in state["routes4"] + state["routes6"] if r.get("protocol") == OURS]


def _nft_flows(state: dict[str, Any]) -> list[str]:
    """The flows the agent's nftables table enforces (each has an inbound and an outbound
    rule; the outbound chain's first rule accepts the agent's own packets)."""
    return sorted(
        {
            item["rule"]["comment"]
            for item in state["nft"]
            if "rule" in item and str(item["rule"].get("comment", "")).startswith("hostsec flow")
        }
    )


def _wait_tun_gone(host: Host, name: str = "hostsec0", timeout: float = 5.0) -> dict[str, Any]:
    """The host's state once the TUN device is gone (its workers die just after the agent)."""
    deadline = time.monotonic() + timeout
    while True:
        state = ns_state(host)
        if name not in {link["ifname"] for link in state["links"]}:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} outlived the agent: {state['links']}")
        time.sleep(0.05)


def test_clean_stop_removes_everything_and_restart_after_crash_cleans_up() -> None:
    with agent_lab() as lab:
        telnet, shell = ManualFlow(), ManualFlow("shell", 24, spi=0x2000)
        configure(lab, [telnet, shell])
        host = lab.hosts[CLIENT]
        lab.serve_echo(SERVER, 23)
        address = lab.address(SERVER)
        baseline = ns_state(host)
        assert not _rules(baseline) and not _routes(baseline) and not baseline["nft"]

        # Running: per flow one rule, a TUN route and a blackhole in the flow's table, and
        # one firewall rule; the TUN device.
        lab.start_agent(CLIENT)
        running = ns_state(host)
        rules = _rules(running)
        assert sorted(r["dport"] for r in rules) == [23, 24]
        assert all(r["dst"] == address and r["ipproto"] == "tcp" for r in rules)
        tables = {r["table"] for r in rules}
        assert len(tables) == 2
        routes = _routes(running)
        assert {r["table"] for r in routes} == tables
        assert (
            sorted(r.get("type", "unicast") for r in routes) == ["blackhole"] * 2 + ["unicast"] * 2
        )
        assert _nft_flows(running) == ["hostsec flow shell", "hostsec flow telnet"]
        assert "hostsec0" in {link["ifname"] for link in running["links"]}

        # A clean stop (SIGTERM) takes all of it away.
        assert lab.stop_agent(CLIENT) == 0
        assert ns_state(host) == baseline

        # A crash (SIGKILL) leaves the rules, the blackholes and the firewall: fail closed.
        lab.start_agent(CLIENT)
        assert _rules(ns_state(host)) == rules
        lab.kill_agent(CLIENT)
        crashed = _wait_tun_gone(host)
        assert _rules(crashed) == rules
        assert [r.get("type") for r in _routes(crashed)] == ["blackhole", "blackhole"]
        assert _nft_flows(crashed) == _nft_flows(running)
        assert host.call(try_connect, address, 23, 0.5) != "connected"

        # While it is down, the shell flow is taken out of the policy. The next start
        # installs telnet anew and removes every leftover of the crashed run (shell's too).
        lab.write_policy(CLIENT, policy_text(lab, CLIENT, [telnet]))
        lab.start_agent(CLIENT)
        restarted = ns_state(host)
        (rule,) = _rules(restarted)
        assert rule["dport"] == 23
        assert {r["table"] for r in _routes(restarted)} == {rule["table"]}
        assert sorted(r.get("type", "unicast") for r in _routes(restarted)) == [
            "blackhole",
            "unicast",
        ]
        assert _nft_flows(restarted) == ["hostsec flow telnet"]
        lab.start_agent(SERVER)
        assert lab.echo(CLIENT, address, 23, 50_000, label="lifecycle")["ok"]

        assert lab.stop_agent(CLIENT) == 0
        assert ns_state(host) == baseline


def test_an_agent_with_hundreds_of_flows_starts_and_stops_cleanly() -> None:
    """Flows are installed and removed in batches (one firewall transaction, one dump of
    the rules and routes): an agent with 400 flows is ready within the lab's start
    timeout, every flow is in force; removing their file takes them all out at once (the
    agent's loop, which also runs IKE, is never blocked for long); a clean stop removes
    the rest."""
    count = 400
    with AgentLab(prefix="hsmany") as lab:
        a, b = lab.address("a"), lab.address("b")
        lab.write_policy("a", psk_peer(lab, "a", "b", b, local_id=a), file="peer.toml")
        text = "".join(telnet_flows("b", "a", port=2000 + i, name=f"f{i}")[0] for i in range(count))
        flows = lab.write_policy("a", text, file="flows.toml")
        lab.write_policy("a", telnet_flows("b", "a", port=23)[0], file="telnet.toml")
        host = lab.hosts["a"]
        baseline = ns_state(host)
        lab.start_agent("a")  # fails after AGENT_START_TIMEOUT
        status = lab.status("a")
        assert len(status["flows"]) == count + 1
        assert {f["state"] for f in status["flows"]} == {"trap"}
        running = ns_state(host)
        ports = [*range(2000, 2000 + count), 23]
        assert sorted(r["dport"] for r in _rules(running)) == sorted(ports)
        assert len(_nft_flows(running)) == count + 1

        flows.unlink()
        lab.wait_for("a", lambda s: [f["name"] for f in s["flows"]] == ["telnet"], timeout=10)
        left = ns_state(host)
        assert [r["dport"] for r in _rules(left)] == [23]
        assert len(_routes(left)) == 2 and _nft_flows(left) == ["hostsec flow telnet"]

        assert lab.stop_agent("a") == 0
        assert ns_state(host) == baseline
