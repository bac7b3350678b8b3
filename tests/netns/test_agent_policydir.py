"""The policy directory of a running agent: files added, changed, broken, duplicated and
removed while a session on another flow runs, which never notices."""

from __future__ import annotations

import os
from typing import Any

import pytest

from hostsec.agent.lab import AgentLab
from tests.netns.agent_support import (
    CLIENT,
    SERVER,
    ManualFlow,
    agent_lab,
    configure,
    flow_status,
    flow_text,
    keys_text,
    manual_sas,
    ns_state,
    sa_stats,
    steady_session,
    write_keys,
)
from tests.netns.helpers import wait_ready

pytestmark = pytest.mark.netns

SIDES = (CLIENT, SERVER)


def _peer_of(side: str) -> str:
    return SERVER if side == CLIENT else CLIENT


def _write_flow_file(lab: AgentLab, flow: ManualFlow, file: str) -> None:
    """A file of its own holding only ``flow`` (its peer comes from policy.toml)."""
    for side in SIDES:
        lab.write_policy(side, flow_text(flow, _peer_of(side), side).lstrip(), file)


def _spis(status: dict[str, Any], flow: str) -> set[str]:
    return {sa["spi"] for sa in flow_status(status, flow)["sas"]}


def _has_flow(name: str, spi: int | None = None) -> Any:
    def check(status: dict[str, Any]) -> bool:
        names = {f["name"]: f for f in status["flows"]}
        if name not in names or names[name]["state"] != "up":
            return False
        return spi is None or f"0x{spi + 1:08x}" in _spis(status, name)

    return check


def _problems(status: dict[str, Any], file: str) -> list[dict[str, Any]]:
    return [
        p
        for path, problems in status["policy_errors"].items()
        if os.path.basename(path) == file
        for p in problems
        if p["severity"] == "error"
    ]


def _reported(file: str, line: int) -> Any:
    """A status predicate: ``file`` has an error at ``line``."""
    return lambda s: any(p["line"] == line for p in _problems(s, file))


def _echo_through(lab: AgentLab, flow: ManualFlow, label: str) -> None:
    """An echo on the flow's port that works and went through its inbound SA on b."""
    before = sum(sa["packets"] for sa in sa_stats(lab.status(SERVER), flow.name, "in"))
    result = lab.echo(CLIENT, lab.address(SERVER), flow.port, 20_000, label=label)
    assert result["ok"], result
    after = sum(sa["packets"] for sa in sa_stats(lab.status(SERVER), flow.name, "in"))
    assert after > before, "the echo did not go through the flow's SA"


def test_policy_files_change_under_a_running_session() -> None:
    with agent_lab() as lab:
        telnet = ManualFlow()
        configure(lab, [telnet])
        lab.start_agents()
        for port in (23, 24, 25):
            lab.serve_echo(SERVER, port)
        session = lab.hosts[CLIENT].spawn(
            steady_session, lab.address(SERVER), 23, "policydir-session"
        )
        wait_ready(session)
        telnet_spis = {side: _spis(lab.status(side), "telnet") for side in SIDES}

        # A new file adds a flow.
        shell = ManualFlow("shell", 24, spi=0x2000)
        write_keys(lab, shell)
        _write_flow_file(lab, shell, "shell.toml")
        for side in SIDES:
            lab.wait_for(side, _has_flow("shell", shell.spi))
        _echo_through(lab, shell, "policydir-added")

        # A changed file replaces it: tunnel mode, new keys and SPIs.
        shell2 = ManualFlow("shell", 24, mode="tunnel", spi=0x3000)
        write_keys(lab, shell2)
        _write_flow_file(lab, shell2, "shell.toml")
        for side in SIDES:
            status = lab.wait_for(side, _has_flow("shell", shell2.spi))
            assert {sa["mode"] for sa in flow_status(status, "shell")["sas"]} == {"tunnel"}
        _echo_through(lab, shell2, "policydir-changed")

        # A syntax error: reported at its line, the previous version stays in force.
        broken = flow_text(shell2, SERVER, CLIENT).lstrip().replace('mode = "tunnel"', "mode = ")
        lab.write_policy(CLIENT, broken, "shell.toml")
        line = broken.splitlines().index("mode = ") + 1
        status = lab.wait_for(CLIENT, _reported("shell.toml", line))
        assert _has_flow("shell", shell2.spi)(status)
        _echo_through(lab, shell2, "policydir-syntax")

        # A half-written file (no rename: a writer caught mid-way) is an error too; once
        # complete it is applied: the flow moves to port 25.
        moved = ManualFlow("shell", 25, mode="tunnel", spi=0x3000)
        whole = flow_text(moved, SERVER, CLIENT).lstrip()
        cut = whole.index("protection")
        path = lab.config_dir(CLIENT) / "policies.d" / "shell.toml"
        with open(path, "w") as half:
            half.write(whole[:cut] + 'protection = "es')
        lab.wait_for(CLIENT, _reported("shell.toml", whole[:cut].count("\n") + 1))
        _echo_through(lab, shell2, "policydir-half")
        with open(path, "w") as rest:
            rest.write(whole)
        lab.write_policy(SERVER, flow_text(moved, CLIENT, SERVER).lstrip(), "shell.toml")
        for side in SIDES:
            lab.wait_for(side, lambda s: not _problems(s, "shell.toml"))
            lab.wait_for(side, lambda s: "tcp/25" in flow_status(s, "shell")["selectors"])
        _echo_through(lab, moved, "policydir-moved")

        # A flow name another file already uses: reported at the name, nothing replaced.
        dup = ManualFlow("telnet", 26, spi=0x4000)
        write_keys(lab, dup)
        dup_text = flow_text(dup, SERVER, CLIENT).lstrip()
        lab.write_policy(CLIENT, dup_text, "dup.toml")
        name_line = dup_text.splitlines().index('name = "telnet"') + 1
        status = lab.wait_for(CLIENT, _reported("dup.toml", name_line))
        assert "telnet" in " ".join(p["message"] for p in _problems(status, "dup.toml"))
        assert "tcp/23" in flow_status(status, "telnet")["selectors"]
        text = lab.hostsec(CLIENT, "status").stdout
        assert f"dup.toml:{name_line}: error:" in text, text

        # A flow whose manual-keys file is bad: the problem points into the keys file.
        bad = ManualFlow("bad", 27, spi=0x5000)
        first = manual_sas(bad, lab.address(CLIENT), lab.address(SERVER))[0]
        short = keys_text([first]).replace(first.encryption_key.hex(), "00112233")
        lab.write_secret(CLIENT, bad.keys_file, short)
        lab.write_policy(CLIENT, flow_text(bad, SERVER, CLIENT).lstrip(), "bad.toml")
        key_line = short.splitlines().index('encryption_key = "0x00112233"') + 1
        status = lab.wait_for(
            CLIENT,
            lambda s: any(
                p["file"].endswith("/secrets/bad.keys") and p["line"] == key_line
                for p in _problems(s, "bad.toml")
            ),
        )
        assert "bad" not in {f["name"] for f in status["flows"]}
        os.unlink(lab.config_dir(CLIENT) / "policies.d" / "bad.toml")

        # Removing files: the duplicate's error goes, the shell flow goes (on both hosts,
        # with its routing rule).
        os.unlink(lab.config_dir(CLIENT) / "policies.d" / "dup.toml")
        lab.wait_for(CLIENT, lambda s: not _problems(s, "dup.toml"))
        for side in SIDES:
            os.unlink(lab.config_dir(side) / "policies.d" / "shell.toml")
        for side in SIDES:
            status = lab.wait_for(side, lambda s: {f["name"] for f in s["flows"]} == {"telnet"})
            assert not status["policy_errors"], status["policy_errors"]
        rules = ns_state(lab.hosts[CLIENT])["rules4"]
        assert [r.get("dport") for r in rules if r.get("protocol") == "104"] == [23]

        # All the while, the session on telnet ran on its first SAs, never interrupted.
        assert session.conn is not None
        session.conn.send("stop")
        echoed = session.result(timeout=15)
        assert echoed > 0
        for side in SIDES:
            status = lab.status(side)
            assert _spis(status, "telnet") == telnet_spis[side]
            assert flow_status(status, "telnet")["state"] == "up"
            for sa in flow_status(status, "telnet")["sas"]:
                assert not sa["drops"], sa
