"""IPv6 end to end: hosts 2001:db8::1 and ::2, IKEv2 (PSK) and manual keys, ESP transport.

The agent opens its IKE and NAT-T sockets for IPv6 when the host has IPv6, the workers
their raw IPv6 ESP/AH sockets; flows to an IPv6 peer are routed, firewalled and protected
like IPv4 ones. A capture shows tcp/23 only as ESP and the session's bytes nowhere.
"""

from __future__ import annotations

import os

import pytest

from hostsec.agent.echo import stream
from hostsec.agent.lab import AgentLab

pytestmark = pytest.mark.netns

PSK = "ipv6-test-pre-shared-key-0123456789"

IKE_POLICY = """\
[[peer]]
name = "{peer}"
address = "{address}"
auth = "psk"
psk_file = "../secrets/peer.psk"
local_id = "{local}"
remote_id = "{address}"
ike_proposals = ["aes128gcm16-prfsha256-ecp256"]

[[flow]]
name = "telnet6"
peer = "{peer}"
protocol = "tcp"
{port}
protection = "esp"
mode = "transport"
esp_proposals = ["aes128gcm16"]
"""

MANUAL_POLICY = """\
[[peer]]
name = "{peer}"
address = "{address}"

[[flow]]
name = "telnet6"
peer = "{peer}"
protocol = "tcp"
{port}
protection = "esp"
mode = "transport"
keying = "manual"
manual_keys = "../secrets/telnet6.keys"
"""


def _keys(a: str, b: str) -> str:
    return "".join(
        f'[[sa]]\nsrc = "{src}"\ndst = "{dst}"\nspi = {spi}\nprotocol = "esp"\n'
        f'proposal = "aes128gcm16"\nencryption_key = "{os.urandom(20).hex()}"\n\n'
        for src, dst, spi in ((a, b, 0x6001), (b, a, 0x6002))
    )


@pytest.mark.parametrize("keying", ["ike", "manual"])
def test_ipv6_flow_is_protected(keying: str) -> None:
    with AgentLab(prefix="hsv6", ipv6=True) as lab:
        a6, b6 = lab.address("a", 6), lab.address("b", 6)
        sides = {"a": ("b", b6, a6, "remote_port = 23"), "b": ("a", a6, b6, "local_port = 23")}
        keys = _keys(a6, b6)  # the same file on both hosts
        for name, (peer, address, local, port) in sides.items():
            if keying == "ike":
                lab.write_secret(name, "peer.psk", PSK)
                text = IKE_POLICY.format(peer=peer, address=address, local=local, port=port)
            else:
                lab.write_secret(name, "telnet6.keys", keys)
                text = MANUAL_POLICY.format(peer=peer, address=address, port=port)
            lab.write_policy(name, text)
        lab.start_agents()
        lab.serve_echo("b", 23, version=6)
        cap = lab.capture("b")
        result = lab.echo("a", b6, 23, 300_000, label="v6")
        frames = cap.stop()
        assert result["ok"], (result, lab.log("a"), lab.log("b"))
        status = lab.status("a")
        (flow,) = status["flows"]
        assert flow["state"] == "up" and flow["packets_out"] > 0, (flow, lab.log("a"))
        if keying == "ike":
            (ike,) = status["ike_sas"]
            assert ike["remote"].startswith("2001:db8::2")
        esp = [f for f in frames if f.is_esp]
        assert esp and all(f.version == 6 for f in esp)
        assert not [f for f in frames if f.uses_port(6, 23)], "cleartext tcp/23 on the wire"
        payload = stream(300_000, "v6")
        probes = {payload[i : i + 24] for i in range(0, len(payload) - 24, 4999)}
        assert not [f for f in frames if any(p in f.packet for p in probes)]
