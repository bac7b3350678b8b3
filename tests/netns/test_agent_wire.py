"""Two hosts, two agents, manual keys: what crosses the wire.

Each test builds its own pair of namespaces (:class:`AgentLab`) and removes them. The
echo streams have distinct labels so that a capture can be searched for exactly the
bytes of one session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostsec.agent.echo import stream
from hostsec.agent.lab import AgentLab
from tests.netns.agent_support import (
    CLIENT,
    SERVER,
    ManualFlow,
    agent_lab,
    cleartext,
    configure,
    leaks,
    sa_stats,
)

pytestmark = pytest.mark.netns

MB = 1_000_000


@pytest.fixture
def lab() -> Iterator[AgentLab]:
    with agent_lab() as the_lab:
        yield the_lab


# protection, mode, peer encapsulation, all.rp_filter in both hosts
CASES = {
    "esp-transport": ("esp", "transport", None, 0),
    "esp-tunnel-rp_filter": ("esp", "tunnel", None, 1),
    "ah-transport": ("ah", "transport", None, 0),
    "ah+esp-transport": ("esp+ah", "transport", None, 0),
    "esp-in-udp-rp_filter": ("esp", "transport", "force", 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_megabyte_echo_is_protected_and_port_80_stays_clear(lab: AgentLab, case: str) -> None:
    protection, mode, encapsulation, rp_filter = CASES[case]
    for side in (CLIENT, SERVER):
        lab.hosts[side].sysctl("net/ipv4/conf/all/rp_filter", rp_filter)
    flow = ManualFlow(protection=protection, mode=mode)
    configure(lab, [flow], encapsulation=encapsulation)
    lab.start_agents()
    lab.serve_echo(SERVER, 23)
    lab.serve_echo(SERVER, 80)
    server = lab.address(SERVER)
    label, web_label = f"wire-{case}", f"web-{case}"

    cap = lab.capture(SERVER)
    telnet = lab.echo(CLIENT, server, 23, MB, timeout=30, label=label)
    web = lab.echo(CLIENT, server, 80, 50_000, timeout=30, label=web_label)
    frames = cap.stop()

    assert cap.dropped == 0, cap.stderr  # an absence is proven only by a complete capture
    assert telnet == {**telnet, "ok": True, "bytes": MB}, telnet
    assert web["ok"], web
    assert not cleartext(frames, 23), [str(f) for f in cleartext(frames, 23)[:5]]
    # Port 80 went in the clear, and the search below does find a stream sent in the clear.
    assert cleartext(frames, 80)
    assert leaks(cleartext(frames, 80), stream(50_000, web_label)), [
        (f.sport, f.dport, len(f.payload), f.payload[:8]) for f in cleartext(frames, 80)
    ]

    esp = [f for f in frames if f.is_esp]
    ah = [f for f in frames if f.is_ah]
    ours = esp + ah
    assert all({f.src, f.dst} == {lab.address(CLIENT), server} for f in ours)
    # The 1 MB both ways: at least that many full-size packets (MSS 1360 below the MTU).
    assert len(ours) > 2 * MB // 1360
    if encapsulation == "force":
        assert not [f for f in frames if f.protocol == 50]
        assert all(f.protocol == 17 and f.sport == f.dport == 4500 for f in esp)
    if protection == "esp":
        assert esp and not ah
        payload_frames = leaks(frames, stream(MB, label))
        assert not payload_frames, f"payload visible in {len(payload_frames)} frames"
    elif protection == "esp+ah":
        # AH outside, ESP inside (RFC 4301 4.5: the bundle applies ESP first).
        assert ah and not esp
        assert all(f.payload[0] == 50 for f in ah)
        assert not leaks(frames, stream(MB, label))
    else:
        # AH authenticates but does not encrypt: the bytes are there, but only inside AH.
        assert ah and not esp
        assert all(f.payload[0] == (4 if mode == "tunnel" else 6) for f in ah)
        visible = leaks(frames, stream(MB, label))
        assert visible and all(f.is_ah for f in visible)

    for side, direction in ((CLIENT, "out"), (SERVER, "in"), (SERVER, "out"), (CLIENT, "in")):
        status = lab.status(side)
        sas = sa_stats(status, "telnet", direction)
        assert len(sas) == len(protection.split("+"))
        for sa in sas:
            assert sa["mode"] == mode
            assert sa["udp_encapsulation"] is (encapsulation == "force" and sa["protocol"] == "esp")
            assert sa["packets"] > MB // 1400, (side, sa)
            assert not sa["drops"], (side, sa)
        assert status["drops"] == {}, status["drops"]
    # The agent did not get there by turning strict reverse-path filtering off.
    for side in (CLIENT, SERVER):
        assert lab.hosts[side].sysctl("net/ipv4/conf/all/rp_filter") == str(rp_filter)


def _tshark_streams(
    pcap: str, uat_lines: list[str], ports: tuple[int, ...]
) -> tuple[list[tuple[str, str, str, str]], dict[tuple[int, str], bytes]]:
    """Decrypt ``pcap`` with tshark and the esp_sa UAT lines: (SPI, ICV good, ICV bad,
    next header) of every ESP frame, and the TCP byte stream of each server port each way
    ((port, "to_server" or "to_client") -> octets), rebuilt from the decrypted segments by
    relative sequence number."""
    argv = ["tshark", "-n", "-r", pcap, "-o", "esp.enable_encryption_decode:TRUE"]
    argv += ["-o", "esp.enable_authentication_check:TRUE"]
    # The stream is random octets: the TELNET dissector would call some of them malformed
    # and abort the frame before ESP records its ICV verdict.
    argv += ["--disable-protocol", "telnet"]
    for line in uat_lines:
        argv += ["-o", f"uat:esp_sa:{line}"]
    fields = ["esp.spi", "esp.icv_good", "esp.icv_bad", "esp.protocol", "tcp.srcport"]
    fields += ["tcp.dstport", "tcp.seq", "tcp.payload"]
    argv += ["-Y", "esp", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=l"]
    for name in fields:
        argv += ["-e", name]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    esp: list[tuple[str, str, str, str]] = []
    segments: dict[tuple[int, str], dict[int, bytes]] = {
        (port, way): {} for port in ports for way in ("to_server", "to_client")
    }
    for row in out.splitlines():
        spi, good, bad, next_header, sport, dport, seq, payload = (row.split("\t") + [""] * 8)[:8]
        esp.append((spi, good, bad, next_header))
        if not payload:
            continue
        for port in ports:
            if dport == str(port):
                segments[(port, "to_server")][int(seq)] = bytes.fromhex(payload.replace(":", ""))
            elif sport == str(port):
                segments[(port, "to_client")][int(seq)] = bytes.fromhex(payload.replace(":", ""))
    streams = {}
    for key, by_seq in segments.items():
        data = bytearray()
        for number in sorted(by_seq):  # relative numbers: the first data octet is 1
            chunk = by_seq[number]
            if number - 1 < len(data):  # a retransmission overlapping what we have
                chunk = chunk[len(data) - (number - 1) :]
            elif number - 1 > len(data):
                break  # a hole: the stream ends where tshark saw no segment
            data += chunk
        streams[key] = bytes(data)
    return esp, streams


def test_tshark_decrypts_the_esp_with_hostsec_keys(lab: AgentLab, tmp_path: Path) -> None:
    """`hostsec keys --wireshark` lets an independent ESP implementation check ours: tshark
    verifies every ICV and finds the exact echo streams inside (AES-GCM in transport mode,
    AES-CBC with HMAC-SHA-256 in tunnel mode)."""
    if shutil.which("tshark") is None:
        why = "needs tshark (Debian package tshark)"
        if os.environ.get("HOSTSEC_REQUIRE_ROOT_TESTS") == "1":
            pytest.fail(f"{why} (HOSTSEC_REQUIRE_ROOT_TESTS=1)")
        pytest.skip(why)
    gcm = ManualFlow("telnet", 23, esp="aes128gcm16", spi=0x1000)
    cbc = ManualFlow("shell", 24, mode="tunnel", esp="aes256-sha256", spi=0x2000)
    configure(lab, [gcm, cbc])
    lab.start_agents()
    lab.serve_echo(SERVER, 23)
    lab.serve_echo(SERVER, 24)
    cap = lab.capture(SERVER, tmp_path / "wire.pcap")
    n = 100_000
    for flow in (gcm, cbc):
        result = lab.echo(CLIENT, lab.address(SERVER), flow.port, n, label=f"tshark-{flow.name}")
        assert result["ok"], result
    cap.stop()
    assert cap.dropped == 0, cap.stderr

    keys = tmp_path / "esp_sa"
    done = lab.hostsec(CLIENT, "keys", "--wireshark", str(keys))
    assert done.returncode == 0, done.stderr
    assert keys.stat().st_mode & 0o077 == 0  # live keys: owner only
    lines = [line for line in keys.read_text().splitlines() if line.strip()]
    assert len(lines) == 4  # both flows, both directions
    spis = {f"0x{sa:08x}" for sa in (0x1001, 0x1002, 0x2001, 0x2002)}
    assert {line.split(",")[3].strip('"') for line in lines} == spis

    esp, streams = _tshark_streams(str(cap.path), lines, (gcm.port, cbc.port))
    for flow in (gcm, cbc):
        sent = stream(n, f"tshark-{flow.name}")
        for way in ("to_server", "to_client"):
            got = streams[(flow.port, way)]
            assert got == sent, f"{flow.name} {way}: {len(got)} octets"
    assert esp, "tshark saw no ESP"
    assert {spi for spi, *_ in esp} == spis
    assert all(good == "1" and bad == "0" for _, good, bad, _ in esp), [
        e for e in esp if e[1:3] != ("1", "0")
    ]
    # Transport mode carries TCP (6), tunnel mode an IPv4 packet (4) (RFC 4303 2.6).
    next_headers = {(spi, nh) for spi, _, _, nh in esp}
    assert next_headers == {("0x00001001", "0x06"), ("0x00001002", "0x06")} | {
        ("0x00002001", "0x04"),
        ("0x00002002", "0x04"),
    }, next_headers

    # Without the keys tshark sees no TCP at all: the check above is not vacuous.
    esp, streams = _tshark_streams(str(cap.path), [], (gcm.port, cbc.port))
    assert esp and not any(streams.values())
