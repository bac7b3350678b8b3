"""``hostsec up --wait``: the control request answers once the flows are up or failed, with
the time the agent measured (what scripts/bench_ike.py times)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hostsec.agent.control import request
from hostsec.agent.demo import configure
from hostsec.agent.lab import AgentLab

pytestmark = pytest.mark.netns


@pytest.fixture
def agents() -> Iterator[AgentLab]:
    with AgentLab(prefix="hsupw") as lab:
        configure(lab)  # IKEv2 PSK, flow "telnet" a -> b tcp/23, peer "b" on a
        yield lab


def _up(lab: AgentLab, name: str, timeout: float) -> dict[str, object]:
    result = request(
        lab.run_dir("a"), "up", {"name": name, "wait": True, "timeout": timeout}, timeout=30
    )
    assert isinstance(result, dict)
    return result


def test_up_wait_answers_when_the_sas_are_up(agents: AgentLab) -> None:
    agents.start_agents()
    before = time.monotonic()
    result = _up(agents, "telnet", 10.0)
    after = time.monotonic()
    assert result["ok"] is True and result["timed_out"] is False
    assert result["flows"] == {"telnet": {"state": "up", "error": ""}}
    elapsed = result["elapsed"]
    assert isinstance(elapsed, float)
    # Measured inside the agent: within the client's own round trip, and not zero.
    assert 0 < elapsed <= after - before
    assert before <= result["started"] <= result["finished"] <= after  # type: ignore[operator]
    status = agents.status("a")
    assert [s["peer"] for s in status["ike_sas"]] == ["b"]
    assert [f["state"] for f in status["flows"]] == ["up"]
    # Already up: nothing to negotiate, the answer comes at once.
    again = _up(agents, "b", 10.0)
    assert again["ok"] is True and again["elapsed"] == 0
    assert len(agents.status("a")["ike_sas"]) == 1
    # The command line: a line per flow, exit status 0.
    agents.hostsec("a", "down", "b")
    agents.wait_for("a", lambda s: not s["ike_sas"])
    cli = agents.hostsec("a", "up", "b", "--wait", "--timeout", "10")
    assert cli.returncode == 0, cli.stderr
    assert "telnet: up" in cli.stdout and "b: up after" in cli.stdout


def test_up_wait_reports_an_authentication_failure_at_once(agents: AgentLab) -> None:
    agents.write_secret("b", "peer.psk", "a-different-pre-shared-key-0123456789")
    agents.start_agents()
    result = _up(agents, "b", 20.0)
    assert result["ok"] is False and result["timed_out"] is False
    flow = result["flows"]["telnet"]  # type: ignore[index]
    assert flow["state"] == "failed" and "authentication" in flow["error"]
    assert result["elapsed"] < 10  # type: ignore[operator]
    cli = agents.hostsec("a", "up", "telnet", "--wait", "--timeout", "20")
    assert cli.returncode == 1
    assert "telnet: failed" in cli.stdout


def test_up_wait_times_out_without_a_peer(agents: AgentLab) -> None:
    agents.start_agent("a")  # b never starts: IKE_SA_INIT goes unanswered
    start = time.monotonic()
    result = _up(agents, "telnet", 0.5)
    assert time.monotonic() - start < 5
    assert result["ok"] is False and result["timed_out"] is True
    assert result["flows"] == {"telnet": {"state": "acquiring", "error": ""}}
    # The agent still answers, and an unknown name is refused before any waiting.
    assert request(agents.run_dir("a"), "status", timeout=5)["flows"][0]["name"] == "telnet"
    with pytest.raises(Exception, match="no flow or peer named 'nobody'"):
        request(agents.run_dir("a"), "up", {"name": "nobody", "wait": True}, timeout=5)
