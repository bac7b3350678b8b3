"""``hostsec demo``: two hosts, a telnet-style session through ESP, and what the wire showed.

Host ``a`` (198.51.100.1) and host ``b`` (198.51.100.2) live in network namespaces joined
by a veth pair; each runs a hostsec agent with a policy protecting tcp/23 between them
(IKEv2 with a pre-shared key by default; certificates or manual keys on request). ``b``
runs a TCP echo service on port 23 and another on port 80; ``a`` sends data to both. A
capture on the veth shows that port 23 crossed the wire only as ESP while port 80 crossed
in the clear. Everything is torn down at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter

from hostsec.agent.echo import stream
from hostsec.agent.lab import AgentLab
from hostsec.agent.labpki import Authority, install_identity
from hostsec.agent.status import format_status
from hostsec.platform.capture import Frame

NBYTES = 200_000
PSK = "hostsec-demo-pre-shared-key-0123456789"

_IKE_POLICY = """\
[[peer]]
name = "{peer}"
address = "{address}"
auth = "{auth}"
{credentials}
ike_proposals = ["aes128gcm16-prfsha256-ecp256"]

[[flow]]
name = "telnet"
peer = "{peer}"
protocol = "tcp"
{port}
protection = "esp"
mode = "transport"
esp_proposals = ["aes128gcm16"]
start = "trap"
"""

_MANUAL_POLICY = """\
[[peer]]
name = "{peer}"
address = "{address}"

[[flow]]
name = "telnet"
peer = "{peer}"
protocol = "tcp"
{port}
protection = "esp"
mode = "transport"
keying = "manual"
manual_keys = "../secrets/telnet.keys"
"""


def _manual_keys(a: str, b: str) -> str:
    key_ab, key_ba = os.urandom(20).hex(), os.urandom(20).hex()
    return f"""\
[[sa]]
src = "{a}"
dst = "{b}"
spi = 0x1001
protocol = "esp"
proposal = "aes128gcm16"
encryption_key = "{key_ab}"

[[sa]]
src = "{b}"
dst = "{a}"
spi = 0x1002
protocol = "esp"
proposal = "aes128gcm16"
encryption_key = "{key_ba}"
"""


def _make_pki(lab: AgentLab) -> None:
    """A throw-away CA and one certificate per host (SAN = its address), for --auth cert."""
    ca = Authority.create("hostsec demo CA")
    for name in lab.hosts:
        install_identity(lab, name, ca.pem, ca.issue(f"{name}.demo", [lab.address(name)]))


def configure(lab: AgentLab, keying: str = "ike", auth: str = "psk") -> None:
    """Write both hosts' policies (a is the telnet client, b the server)."""
    a, b = lab.address("a"), lab.address("b")
    sides = {"a": ("b", b, "remote_port = 23"), "b": ("a", a, "local_port = 23")}
    if keying == "manual":
        keys = _manual_keys(a, b)
        for name, (peer, address, port) in sides.items():
            lab.write_secret(name, "telnet.keys", keys)
            lab.write_policy(name, _MANUAL_POLICY.format(peer=peer, address=address, port=port))
        return
    if auth == "cert":
        _make_pki(lab)
    for name, (peer, address, port) in sides.items():
        if auth == "psk":
            lab.write_secret(name, "peer.psk", PSK)
            credentials = (
                f'psk_file = "../secrets/peer.psk"\nlocal_id = "{lab.address(name)}"\n'
                f'remote_id = "{address}"'
            )
        else:
            credentials = f'local_id = "{lab.address(name)}"\nremote_id = "{address}"'
        lab.write_policy(
            name,
            _IKE_POLICY.format(
                peer=peer, address=address, auth=auth, credentials=credentials, port=port
            ),
        )


def summarize_capture(frames: list[Frame], payload: bytes) -> tuple[dict[str, int], list[str]]:
    """Counts per kind of frame, and the lines to show."""
    kinds: Counter[str] = Counter()
    for f in frames:
        if f.is_esp:
            kinds["ESP-in-UDP" if f.protocol == 17 else "ESP"] += 1
        elif f.is_ah:
            kinds["AH"] += 1
        elif f.protocol == 17 and 500 in (f.sport, f.dport):
            kinds["IKE (udp/500)"] += 1
        elif f.protocol == 17 and 4500 in (f.sport, f.dport):
            kinds["IKE (udp/4500)"] += 1
        elif f.uses_port(6, 23):
            kinds["cleartext tcp/23"] += 1
        elif f.uses_port(6, 80):
            kinds["cleartext tcp/80"] += 1
        else:
            kinds["other"] += 1
    # Any 24-octet window of the session's bytes in a frame would be plaintext on the wire.
    probes = {payload[i : i + 24] for i in range(0, len(payload) - 24, 997)}
    leaked = sum(1 for f in frames if any(p in f.packet for p in probes))
    lines = [f"  {kind:18} {count:6} frames" for kind, count in sorted(kinds.items())]
    lines.append(f"  payload of port 23 visible in {leaked} frames")
    counts = dict(kinds)
    counts["payload_visible"] = leaked
    return counts, lines


def run_demo(
    capture: str | None = None, keys: str | None = None, keying: str = "ike", auth: str = "psk"
) -> int:
    if os.geteuid() != 0:
        print("hostsec demo: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    for tool in ("ip", "nft", "tcpdump"):
        if shutil.which(tool) is None:
            print(
                f"hostsec demo: '{tool}' is missing (run scripts/setup-debian.sh)", file=sys.stderr
            )
            return 2
    ok = True
    with AgentLab(prefix="hsdemo") as lab:
        print(
            f"hosts: a {lab.address('a')} and b {lab.address('b')} (network namespaces,"
            f" veth {lab.interface('a')}/{lab.interface('b')})"
        )
        configure(lab, keying, auth)
        lab.start_agents()
        lab.serve_echo("b", 23)
        lab.serve_echo("b", 80)
        cap = lab.capture("b")
        what = "manual keys" if keying == "manual" else f"IKEv2 with {auth.upper()}"
        print(f"policy: tcp/23 between a and b protected by ESP (transport), {what}")
        telnet = lab.echo("a", lab.address("b"), 23, NBYTES)
        web = lab.echo("a", lab.address("b"), 80, 20_000, label="web")
        print(f"telnet session (tcp/23): {NBYTES} bytes echoed: {telnet}")
        print(f"web (tcp/80, in the clear by policy): {web}")
        ok = bool(telnet.get("ok")) and bool(web.get("ok"))
        if keys:
            result = lab.hostsec("a", "keys", "--wireshark", keys)
            print(result.stdout.strip() or result.stderr.strip())
        for name in ("a", "b"):
            print(f"\n=== hostsec status on {name}")
            print(format_status(lab.status(name)))
        frames = cap.stop()
        counts, lines = summarize_capture(frames, stream(NBYTES))
        print(f"\n=== the wire (veth of b, {len(frames)} frames)")
        print("\n".join(lines))
        if cap.dropped != 0:  # a packet tcpdump never saw could have been cleartext
            print(f"  tcpdump lost packets ({cap.dropped}): the capture proves nothing")
        clear23 = counts.get("cleartext tcp/23", 0)
        esp = counts.get("ESP", 0) + counts.get("ESP-in-UDP", 0)
        clear80 = counts.get("cleartext tcp/80", 0)
        verdict = (
            cap.dropped == 0
            and clear23 == 0
            and counts["payload_visible"] == 0
            and esp > 0
            and clear80 > 0
        )
        print(
            "\nRESULT: "
            + (
                "tcp/23 crossed the wire only as ESP; tcp/80 in the clear"
                if verdict
                else "UNEXPECTED: see the counts above"
            )
        )
        ok = ok and verdict
        if capture:
            shutil.copyfile(cap.path, capture)
            print(f"capture kept in {capture}")
            if keys:
                print(
                    f"check it: tshark -r {capture} -o esp.enable_encryption_decode:TRUE"
                    f' -o "uat:esp_sa:$(head -1 {keys})" -Y tcp.port==23'
                )
    return 0 if ok else 1


__all__ = ["configure", "run_demo", "summarize_capture"]
