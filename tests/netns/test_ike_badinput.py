"""Bad input at UDP 500 and 4500 (RFC 7296 2.5, 2.6, 2.21): truncated messages, wrong
lengths, garbage, and a flood of IKE_SA_INIT requests from many source ports, sent from the
peer's namespace while an SA carries a session. The agent stays up, drops and counts what
does not parse, answers the flood with cookies past its half-open threshold (keeping no
state for them), the session completes intact, and a legitimate peer still gets in.
"""

from __future__ import annotations

import os
import random
import select
import socket
import time
from typing import Any

import pytest

from hostsec.agent.lab import AgentLab, paced_echo, psk_peer, telnet_flows
from hostsec.crypto.dh import new_key_exchange
from hostsec.crypto.ikev2_proposals import to_sa_payload
from hostsec.crypto.proposals import Protocol, parse_proposals
from hostsec.crypto.transforms import DhId
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2 import (
    KE,
    SA,
    ExchangeType,
    HeaderFlags,
    IKEHeader,
    Nonce,
    Notify,
    NotifyType,
    encode_message,
    find_notify,
    parse_message,
)
from hostsec.wire.udpencap import NON_ESP_MARKER

pytestmark = pytest.mark.netns

PROPOSAL = "aes128gcm16-prfsha256-ecp256"
FLOOD = 200  # IKE_SA_INIT requests, each from its own source port
COOKIE_THRESHOLD = 10  # IkeManager's default: half-open SAs before cookies are required
SESSION = 5.0  # seconds of the paced session that runs meanwhile


def ike_sa_init(spi_i: bytes, ke_value: bytes, major: int = 2, with_ke: bool = True) -> bytes:
    header = IKEHeader(
        spi_i, b"\x00" * 8, ExchangeType.IKE_SA_INIT, 0, HeaderFlags.INITIATOR, major_version=major
    )
    payloads: list[Any] = [to_sa_payload(parse_proposals([PROPOSAL], Protocol.IKE))]
    if with_ke:
        payloads.append(KE(DhId.ECP_256, ke_value))
    payloads.append(Nonce(os.urandom(32)))
    return encode_message(header, payloads)


def garbage(ke_value: bytes) -> list[bytes]:
    """Datagrams no IKE implementation should choke on."""
    rng = random.Random(7296)
    good = ike_sa_init(os.urandom(8), ke_value)
    out = [
        b"",
        b"\x00",
        b"\x00\x00\x00",
        good[:20],  # truncated header
        good[:27],
        good[:40],  # truncated payload
        good[:-1],
        good[:24] + (10_000).to_bytes(4, "big") + good[28:],  # length beyond the datagram
        good[:24] + (20).to_bytes(4, "big") + good[28:],  # length below a header
        good[:24] + (len(good) - 5).to_bytes(4, "big") + good[28:],  # inconsistent length
        good[:28] + b"\x00\x00\xff\xff" + good[32:],  # first payload claims 64 KiB
        good + b"\x00" * 13,  # trailing junk
        ike_sa_init(os.urandom(8), ke_value, major=3),  # a later major version
        ike_sa_init(os.urandom(8), ke_value, with_ke=False),  # no KE payload
        ike_sa_init(os.urandom(8), b"\x01" * 64),  # a KE value off the curve
        os.urandom(8) + os.urandom(8) + good[16:],  # an unknown IKE SA, not IKE_SA_INIT
        bytes(4000),
    ]
    out += [rng.randbytes(rng.randrange(1, 1500)) for _ in range(60)]
    return out


def hammer(target: str) -> dict[str, int]:
    """Run in the peer's namespace: garbage to 500 and 4500, then the IKE_SA_INIT flood.
    Counts the answers to the flood: real IKE_SA_INIT responses and COOKIE requests."""
    ke_value = new_key_exchange(DhId.ECP_256).public_value
    junk = garbage(ke_value)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in junk:
            sock.sendto(data, (target, 500))
            sock.sendto(NON_ESP_MARKER + data, (target, 4500))  # IKE on the NAT-T port
            sock.sendto(data, (target, 4500))  # "ESP" with whatever SPI the junk starts with
            time.sleep(0.001)
    sockets = []
    started = time.monotonic()
    for _ in range(FLOOD):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))  # a source port of its own
        s.sendto(ike_sa_init(os.urandom(8), ke_value), (target, 500))
        sockets.append(s)
    sent_in = time.monotonic() - started
    counts = {"sent": FLOOD, "answered": 0, "cookies": 0, "responses": 0, "junk": len(junk)}
    deadline = time.monotonic() + 3.0
    pending = {s.fileno(): s for s in sockets}
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], 0.2)
        for fd in ready:
            data = pending.pop(fd).recv(65535)
            counts["answered"] += 1
            try:
                msg = parse_message(data)
            except MalformedPacket:
                continue
            if find_notify(msg.payloads, NotifyType.COOKIE) is not None:
                counts["cookies"] += 1
            elif msg.find(SA) is not None and not any(
                isinstance(p, Notify) and p.is_error for p in msg.payloads
            ):
                counts["responses"] += 1
    for s in sockets:
        s.close()
    counts["flood_ms"] = int(sent_in * 1000)
    return counts


def _flow(status: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == "telnet")


def _up(status: dict[str, Any]) -> bool:
    return len(status["ike_sas"]) == 1 and _flow(status)["state"] == "up"


def test_bad_input_and_flood_at_udp_500_and_4500() -> None:
    with AgentLab(prefix="hsbad") as lab:
        a, b = lab.address("a"), lab.address("b")
        client, server = telnet_flows("b", "a", esp_proposals=["aes128gcm16"])
        ike: dict[str, Any] = {"ike_proposals": [PROPOSAL]}
        lab.write_policy("a", psk_peer(lab, "a", "b", b, local_id=a, **ike) + client)
        lab.write_policy("b", psk_peer(lab, "b", "a", a, local_id=b, **ike) + server)
        lab.start_agents()
        lab.serve_echo("b", 23)
        assert lab.echo("a", b, 23, 10_000)["ok"]
        pid_b = lab.status("b")["agent"]["pid"]
        sa_before = lab.status("b")["ike_sas"][0]

        session = lab.hosts["a"].spawn(paced_echo, b, 23, SESSION)
        assert session.conn is not None and session.conn.poll(10)
        assert session.conn.recv() == "started"
        time.sleep(0.5)
        counts = lab.hosts["a"].call(hammer, b, timeout=30)
        assert session.alive(), "the session ended before the flood did: lengthen SESSION"

        # The established SA kept working all along.
        result = session.result(SESSION + 30)
        assert result["ok"] and result["stalls"] == [], result
        status = lab.status("b")
        assert lab.agents["b"].poll() is None and status["agent"]["pid"] == pid_b
        (sa_after,) = status["ike_sas"]
        stable = ("spi_i", "spi_r", "local", "remote", "remote_id")
        assert {k: sa_after[k] for k in stable} == {k: sa_before[k] for k in stable}
        drops = status["ike_drops"]
        # Every kind of junk was dropped and counted, none crashed the agent.
        assert drops.get("malformed", 0) >= 10, drops
        assert drops.get("invalid major version", 0) >= 1, drops
        assert drops.get("unknown IKE SA", 0) >= 1, drops
        assert not any(reason.startswith("internal error") for reason in drops), drops
        assert status["drops"], "the junk sent as ESP to 4500 is counted by the data path"
        # Past the threshold the flood got cookies, not state (RFC 7296 2.6).
        assert drops.get("cookie required", 0) >= FLOOD // 2, (drops, counts)
        assert counts["cookies"] >= FLOOD // 2, counts
        assert counts["responses"] <= COOKIE_THRESHOLD, counts
        assert "Traceback" not in lab.log("b")

        # A legitimate peer still gets in: a's new IKE SA is asked for a cookie (the
        # flood's half-open SAs are still there), retries with it, and is established.
        assert lab.hostsec("a", "down", "b").returncode == 0
        lab.wait_for("b", lambda s: s["ike_sas"] == [], timeout=10)
        assert lab.hostsec("a", "up", "b").returncode == 0
        status_a = lab.wait_for("a", _up, timeout=15)
        lab.wait_for("b", _up, timeout=10)
        assert "asked for a cookie" in lab.log("a")
        assert status_a["ike_sas"][0]["spi_i"] != sa_before["spi_i"]
        assert lab.echo("a", b, 23, 200_000, timeout=20, label="after-flood")["ok"]
