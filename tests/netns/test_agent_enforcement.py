"""Two agents with manual keys against a hostile or broken world: cleartext injected from
the peer, altered / replayed / foreign packets on the wire, an agent killed mid-transfer.
Each test builds its own namespaces and removes them."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from typing import Any

import pytest

from hostsec.agent.lab import AgentLab
from hostsec.ipsec.sad import create_sa
from hostsec.platform.capture import Frame
from hostsec.platform.linux.routing import BYPASS_MARK
from hostsec.platform.linux.sockets import RawSender
from hostsec.wire.ip import IPPROTO_TCP, transport_checksum
from tests.netns.agent_support import (
    CLIENT,
    SERVER,
    ManualFlow,
    agent_lab,
    cleartext,
    configure,
    flow_status,
    sa_stats,
)
from tests.netns.helpers import ip_packet, messages, tcp_echo_server, try_connect, wait_ready

pytestmark = pytest.mark.netns


def tcp_syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    """An IPv4 TCP SYN with correct checksums."""
    header = struct.pack("!HHIIBBHHH", sport, dport, 0x1234, 0, 5 << 4, 0x02, 65535, 0, 0)
    s, d = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    csum = transport_checksum(s, d, IPPROTO_TCP, header)
    return ip_packet(src, dst, IPPROTO_TCP, header[:16] + struct.pack("!H", csum) + header[18:])


def send_raw(packets: list[bytes]) -> int:
    """Send complete IP packets from a raw socket (with the agent's bypass mark, so the
    sending host's own policy routing is skipped); runs inside a host."""
    sender = RawSender(4, mark=BYPASS_MARK)
    try:
        for packet in packets:
            sender.send(packet)
    finally:
        sender.close()
    return len(packets)


# -- inbound enforcement -------------------------------------------------------------------


def test_injected_cleartext_syn_never_reaches_the_server() -> None:
    with agent_lab() as lab:
        configure(lab)
        lab.start_agents()
        a, b = lab.hosts[CLIENT], lab.hosts[SERVER]
        server = b.spawn(tcp_echo_server, 23)  # reports every accepted connection
        wait_ready(server)
        assert server.conn is not None
        address = lab.address(SERVER)

        # Through the agents the server is reachable (and says so).
        assert lab.echo(CLIENT, address, 23, 20_000, label="enforce-legit")["ok"]
        assert [m for m in messages(server.conn, 0.3) if m[0] == "accepted"]
        before = flow_status(lab.status(SERVER), "telnet")["plaintext_dropped"]

        cap = lab.capture(SERVER)
        # A kernel-made SYN that skips a's flow rule (the bypass mark), and one from a raw
        # socket (a source port outside the ephemeral range): both cross the wire in the clear.
        assert a.call(try_connect, address, 23, 1.5, mark=BYPASS_MARK) != "connected"
        a.call(send_raw, [tcp_syn(lab.address(CLIENT), address, 61234, 23)])
        frames = cap.stop()

        assert cap.dropped == 0, cap.stderr
        syns = [f for f in cleartext(frames, 23) if f.dport == 23 and f.src == lab.address(CLIENT)]
        assert len({f.sport for f in syns}) == 2, [str(f) for f in frames]
        assert not [f for f in cleartext(frames, 23) if f.sport == 23], "b answered in the clear"
        assert not [m for m in messages(server.conn, 0.5) if m[0] == "accepted"]
        after = flow_status(lab.status(SERVER), "telnet")["plaintext_dropped"]
        assert after >= before + len(syns), (before, after, len(syns))
        assert lab.echo(CLIENT, address, 23, 20_000, label="enforce-after")["ok"]


# -- tampering and replay ------------------------------------------------------------------


def _l4(frame: Frame) -> int:
    return (frame.packet[0] & 0x0F) * 4


def _offsets(protocol: str) -> tuple[int, int]:
    """(SPI, sequence number) offsets in an ESP header / AH header (RFC 4303 2, 4302 2)."""
    return (0, 4) if protocol == "esp" else (4, 8)


def _seq(frame: Frame, protocol: str) -> int:
    _, seq = _offsets(protocol)
    value: int = struct.unpack_from("!I", frame.packet, _l4(frame) + seq)[0]
    return value


def _rewrite(frame: Frame, protocol: str, spi: int | None = None, seq: int | None = None) -> bytes:
    packet = bytearray(frame.packet)
    spi_at, seq_at = _offsets(protocol)
    if spi is not None:
        struct.pack_into("!I", packet, _l4(frame) + spi_at, spi)
    if seq is not None:
        struct.pack_into("!I", packet, _l4(frame) + seq_at, seq)
    return bytes(packet)


def _flip(packet: bytes, at: int) -> bytes:
    out = bytearray(packet)
    out[at] ^= 0x55
    return bytes(out)


def _wait_drops(lab: AgentLab, want: dict[str, int], flow: str = "telnet") -> dict[str, Any]:
    """b's status once its inbound SA (and SAD) drop counters reach ``want``."""

    def counts(status: dict[str, Any]) -> dict[str, int]:
        found = dict(status["drops"])
        for sa in sa_stats(status, flow, "in"):
            for reason, n in sa["drops"].items():
                found[reason] = found.get(reason, 0) + n
        return found

    try:
        return lab.wait_for(SERVER, lambda s: counts(s) == want, timeout=5)
    except TimeoutError:
        raise AssertionError(f"drops {counts(lab.status(SERVER))}, expected {want}") from None


STATUS_KEYS = {
    "agent", "ike_sas", "flows", "drops", "ike_drops", "auth_failures", "send_errors",
    "keepalives_received", "policy_errors",
}  # fmt: skip
FLOW_KEYS = {
    "name", "peer", "peer_address", "selectors", "protection", "mode", "keying", "start",
    "require", "state", "error", "packets_out", "bytes_out", "held", "drops_out",
    "plaintext_dropped", "sas",
}  # fmt: skip
SA_KEYS = {
    "protocol", "direction", "spi", "mode", "encryption", "key_bits", "integrity", "esn",
    "replay_window", "udp_encapsulation", "keying", "age", "packets", "bytes", "drops",
}  # fmt: skip


@pytest.mark.parametrize("protection", ["esp", "ah"])
def test_altered_replayed_and_foreign_packets_are_dropped_and_counted(protection: str) -> None:
    with agent_lab() as lab:
        flow = ManualFlow(protection=protection, esp="aes128gcm16", replay_window=64)
        sas = configure(lab, [flow])["telnet"]
        lab.start_agents()
        lab.serve_echo(SERVER, 23)
        a, b = lab.address(CLIENT), lab.address(SERVER)
        cap = lab.capture(SERVER)
        assert lab.echo(CLIENT, b, 23, 200_000, label=f"tamper-{protection}")["ok"]
        time.sleep(0.3)  # the last ACKs and FINs
        frames = cap.stop()
        assert cap.dropped == 0, cap.stderr
        status = lab.status(SERVER)
        (inbound,) = sa_stats(status, "telnet", "in")
        assert inbound["replay_window"] == 64
        assert not inbound["drops"] and not status["drops"]
        sent = [
            f for f in frames if f.src == a and f.protocol == (50 if protection == "esp" else 51)
        ]
        top = max(_seq(f, protection) for f in sent)
        (outbound,) = sa_stats(lab.status(CLIENT), "telnet", "out")
        assert top == outbound["packets"] == len(sent)  # the capture has every packet of a
        assert top > 2 * 64  # the first packet is far behind the window
        first, last = min(sent, key=lambda f: _seq(f, protection)), sent[-1]
        largest = max(sent, key=lambda f: len(f.packet))

        # Replays: the first packet (far behind the window) and recent ones, sent again.
        replays = [first.packet, last.packet, last.packet, sent[-2].packet, sent[-3].packet]
        # Altered: never-seen sequence numbers (so the window lets them through to the ICV
        # check), some with a flipped octet of payload, one with only the number changed.
        altered = [
            _flip(_rewrite(largest, protection, seq=top + 1), len(largest.packet) // 2),
            _flip(_rewrite(largest, protection, seq=top + 2), len(largest.packet) - 1),
            _rewrite(last, protection, seq=top + 3),
        ]
        foreign = [
            _rewrite(last, protection, spi=0xDEADBEEF),
            _rewrite(first, protection, spi=0x999),
        ]

        lab.hosts[CLIENT].call(send_raw, replays)
        _wait_drops(lab, {"replay": 5})
        lab.hosts[CLIENT].call(send_raw, altered)
        _wait_drops(lab, {"replay": 5, "auth_failed": 3})
        lab.hosts[CLIENT].call(send_raw, foreign)
        _wait_drops(lab, {"replay": 5, "auth_failed": 3, "unknown_spi": 2})

        # Correctly protected with the real keys, but for tcp/24, which the SA does not
        # carry: the selector check after decryption drops it (RFC 4301 5.2 step 4).
        (keyed,) = [s for s in sas if s.src == a and s.protocol == protection]
        sa = create_sa(keyed.config(flow.mode), 0.0)
        sa.seq = top
        stray = sa.protect(tcp_syn(a, b, 40000, 24))
        lab.hosts[CLIENT].call(send_raw, [stray])
        status = _wait_drops(
            lab, {"replay": 5, "auth_failed": 3, "unknown_spi": 2, "selector_mismatch": 1}
        )
        (inbound_after,) = sa_stats(status, "telnet", "in")
        assert inbound_after["packets"] == inbound["packets"]  # nothing got through

        # The SA survived all of it: the flow still works.
        assert lab.echo(CLIENT, b, 23, 50_000, label=f"tamper-after-{protection}")["ok"]

        # The same counters in `hostsec status` (text) and `--json` (stable names).
        text = lab.hostsec(SERVER, "status")
        assert text.returncode == 0, text.stderr
        spi_in = f"0x{keyed.spi:08x}"
        (line,) = [
            ln for ln in text.stdout.splitlines() if f"in  {protection.upper()} {spi_in}" in ln
        ]
        for reason, n in (("auth_failed", 3), ("selector_mismatch", 1)):
            assert f"{reason} {n}" in line, line
        assert "replay " in line
        assert "unknown_spi 2" in text.stdout
        raw = lab.hostsec(SERVER, "status", "--json")
        assert raw.returncode == 0, raw.stderr
        data = json.loads(raw.stdout)
        assert set(data) >= STATUS_KEYS, set(data)
        flow_json = flow_status(data, "telnet")
        assert set(flow_json) >= FLOW_KEYS, set(flow_json)
        for sa_json in flow_json["sas"]:
            assert set(sa_json) >= SA_KEYS, set(sa_json)
        (sa_in,) = sa_stats(data, "telnet", "in")
        assert sa_in["spi"] == spi_in and sa_in["protocol"] == protection
        assert sa_in["drops"]["auth_failed"] == 3
        assert sa_in["drops"]["selector_mismatch"] == 1
        assert 5 <= sa_in["drops"]["replay"] <= 6  # + maybe one of a's own, after the stray
        assert data["drops"]["unknown_spi"] == 2


# -- fail closed -------------------------------------------------------------------------


@pytest.mark.parametrize("victim", [CLIENT, SERVER])
def test_sigkill_mid_transfer_fails_closed_and_restart_recovers(victim: str) -> None:
    with agent_lab() as lab:
        configure(lab)
        lab.start_agents()
        lab.serve_echo(SERVER, 23)
        lab.serve_echo(SERVER, 80)
        address = lab.address(SERVER)
        cap = lab.capture(SERVER)
        nbytes, label = 4_000_000, f"killed-{victim}"
        argv = [sys.executable, "-m", "hostsec.agent.echo", "client", address, "23"]
        # Paced (about 2 s at 2 MB/s), so that the kill lands mid-transfer however fast
        # the data path is.
        background = lab.hosts[CLIENT].popen(
            [*argv, str(nbytes), "40", label, str(nbytes / 2)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Mid-transfer: the server's agent has taken in a good part of the stream.
        lab.wait_for(SERVER, lambda s: sa_stats(s, "telnet", "in")[0]["packets"] > 300)
        assert background.poll() is None, "the transfer ended before the kill"
        lab.kill_agent(victim)

        # No agent on one side: the flow is blocked, other traffic is not.
        survivor = SERVER if victim == CLIENT else CLIENT
        client = lab.hosts[CLIENT]
        assert client.call(try_connect, address, 23, 0.5) != "connected"
        received = sa_stats(lab.status(survivor), "telnet", "in")[0]["packets"]
        assert lab.echo(CLIENT, address, 80, 20_000, label=f"web-{victim}")["ok"]
        time.sleep(0.5)  # the interrupted transfer retransmits meanwhile
        assert background.poll() is None
        # Nothing of the flow reached the survivor, protected or not.
        assert sa_stats(lab.status(survivor), "telnet", "in")[0]["packets"] == received

        lab.start_agent(victim)
        after = lab.echo(CLIENT, address, 23, 200_000, timeout=20, label=f"restarted-{victim}")
        assert after["ok"], after
        # Manual SAs come back with the same keys: even the interrupted connection resumes.
        out, err = background.communicate(timeout=40)
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result["ok"], (result, err.decode())
        frames = cap.stop()

        assert cap.dropped == 0, cap.stderr
        assert not cleartext(frames, 23), [str(f) for f in cleartext(frames, 23)[:5]]
        assert cleartext(frames, 80)
        assert lab.agents[victim].poll() is None
