"""What the agent netns tests (``tests/netns/test_agent_*.py``) share: manually keyed
policies for the two hosts of an :class:`~hostsec.agent.lab.AgentLab`, searching a
capture for a byte stream, and snapshots of what an agent installed in its namespace.

Host ``a`` (198.51.100.1) is always the client of a flow, ``b`` (198.51.100.2) its
server: ``a`` says ``remote_port``, ``b`` says ``local_port``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from hostsec.agent.echo import stream
from hostsec.agent.lab import AgentLab
from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY
from hostsec.ipsec.sa import Direction, SAConfig
from hostsec.platform.capture import Frame
from hostsec.platform.netns import Host, lab_namespaces, remove_stale
from hostsec.policy.schema import Mode

CLIENT, SERVER = "a", "b"
PREFIX = "hsag"


@contextlib.contextmanager
def agent_lab() -> Iterator[AgentLab]:
    """A fresh :class:`AgentLab`; afterwards none of its namespaces may be left. Labs
    that crashed runs left behind (their PID gone) are removed first."""
    remove_stale(PREFIX)
    with AgentLab(prefix=PREFIX) as lab:
        yield lab
    left = [n for n, _ in lab_namespaces(PREFIX) if n.startswith(lab.lab.tag + "-")]
    assert not left, f"namespaces left behind: {left}"


@dataclass(frozen=True)
class ManualFlow:
    """One manually keyed flow between a (client) and b (server) on TCP ``port``."""

    name: str = "telnet"
    port: int = 23
    protection: str = "esp"  # "esp" | "ah" | "esp+ah"
    mode: str = "transport"
    esp: str = "aes128gcm16"
    ah: str = "sha256"
    spi: int = 0x1000  # SPIs spi+1, spi+2, ... in the keys file
    replay_window: int | None = None  # None: not written (manual SAs then have none)

    @property
    def keys_file(self) -> str:
        return f"{self.name}.keys"


def _key_lengths(proposal: str, protocol: Protocol) -> tuple[int, int]:
    """(encryption key octets incl. salt, integrity key octets) of a proposal."""
    parsed = parse_proposal(proposal, protocol)
    enc = 0
    if parsed.encryption:
        e = parsed.encryption[0]
        enc = ENCRYPTION[e.id].key_material_len(e.key_bits)
    integ = INTEGRITY[parsed.integrity[0]].key_len if parsed.integrity else 0
    return enc, integ


@dataclass(frozen=True)
class KeyedSA:
    """One SA of a keys file, as the test needs it to build packets of its own."""

    src: str
    dst: str
    protocol: str
    spi: int
    proposal: str
    encryption_key: bytes
    integrity_key: bytes

    def config(self, mode: str, direction: Direction = Direction.OUTBOUND) -> SAConfig:
        protocol = Protocol.ESP if self.protocol == "esp" else Protocol.AH
        parsed = parse_proposal(self.proposal, protocol)
        return SAConfig(
            spi=self.spi,
            protocol=protocol,
            direction=direction,
            mode=Mode(mode),
            src=ipaddress.ip_address(self.src),
            dst=ipaddress.ip_address(self.dst),
            encryption=parsed.encryption[0] if parsed.encryption else None,
            integrity=parsed.integrity[0] if parsed.integrity else None,
            encryption_key=self.encryption_key,
            integrity_key=self.integrity_key,
        )


def manual_sas(flow: ManualFlow, a: str, b: str) -> list[KeyedSA]:
    """Fresh random SAs for ``flow``: ESP and/or AH, a -> b and b -> a."""
    sas = []
    spi = flow.spi
    for src, dst in ((a, b), (b, a)):
        for protocol, proposal in (("esp", flow.esp), ("ah", flow.ah)):
            if protocol not in flow.protection.split("+"):
                continue
            spi += 1
            enc, integ = _key_lengths(proposal, Protocol.ESP if protocol == "esp" else Protocol.AH)
            sas.append(
                KeyedSA(src, dst, protocol, spi, proposal, os.urandom(enc), os.urandom(integ))
            )
    return sas


def keys_text(sas: Iterable[KeyedSA]) -> str:
    out = []
    for sa in sas:
        lines = [
            "[[sa]]",
            f'src = "{sa.src}"',
            f'dst = "{sa.dst}"',
            f'protocol = "{sa.protocol}"',
            f"spi = 0x{sa.spi:08x}",
            f'proposal = "{sa.proposal}"',
        ]
        if sa.encryption_key:
            lines.append(f'encryption_key = "0x{sa.encryption_key.hex()}"')
        if sa.integrity_key:
            lines.append(f'integrity_key = "0x{sa.integrity_key.hex()}"')
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def peer_text(peer: str, address: str, encapsulation: str | None = None) -> str:
    text = f'[[peer]]\nname = "{peer}"\naddress = "{address}"\n'
    if encapsulation:
        text += f'encapsulation = "{encapsulation}"\n'
    return text


def flow_text(flow: ManualFlow, peer: str, side: str) -> str:
    port = f"remote_port = {flow.port}" if side == CLIENT else f"local_port = {flow.port}"
    text = (
        f'\n[[flow]]\nname = "{flow.name}"\npeer = "{peer}"\nprotocol = "tcp"\n{port}\n'
        f'protection = "{flow.protection}"\nmode = "{flow.mode}"\nkeying = "manual"\n'
        f'manual_keys = "../secrets/{flow.keys_file}"\n'
    )
    if flow.replay_window is not None:
        text += f"replay_window = {flow.replay_window}\n"
    return text


def policy_text(lab: AgentLab, side: str, flows: Iterable[ManualFlow], **peer: Any) -> str:
    """A whole policy file of host ``side``: the other host as peer, then ``flows``."""
    other = SERVER if side == CLIENT else CLIENT
    text = peer_text(other, lab.address(other), **peer)
    return text + "".join(flow_text(f, other, side) for f in flows)


def write_keys(lab: AgentLab, flow: ManualFlow) -> list[KeyedSA]:
    """New keys for ``flow`` in both hosts' secrets directories."""
    sas = manual_sas(flow, lab.address(CLIENT), lab.address(SERVER))
    for side in (CLIENT, SERVER):
        lab.write_secret(side, flow.keys_file, keys_text(sas))
    return sas


def configure(
    lab: AgentLab,
    flows: Iterable[ManualFlow] = (ManualFlow(),),
    file: str = "policy.toml",
    **peer: Any,
) -> dict[str, list[KeyedSA]]:
    """Keys and one policy file on both hosts; the SAs by flow name."""
    flows = list(flows)
    sas = {f.name: write_keys(lab, f) for f in flows}
    for side in (CLIENT, SERVER):
        lab.write_policy(side, policy_text(lab, side, flows, **peer), file)
    return sas


# -- the wire ---------------------------------------------------------------------------


def cleartext(frames: Iterable[Frame], port: int) -> list[Frame]:
    """Cleartext TCP frames from or to ``port``."""
    return [f for f in frames if f.uses_port(6, port)]


def leaks(frames: Iterable[Frame], payload: bytes, chunk: int = 16) -> list[Frame]:
    """Frames that carry any part of ``payload`` in the clear.

    Every ``chunk``-aligned piece of the payload is a probe, and every offset of every
    frame is looked up: a frame holding 2 * ``chunk`` - 1 consecutive payload octets
    anywhere (a TCP segment of the stream, or the same bytes inside AH) is found.
    """
    probes = {payload[i : i + chunk] for i in range(0, len(payload) - chunk + 1, chunk)}
    found = []
    for f in frames:
        data = f.packet
        if any(data[i : i + chunk] in probes for i in range(len(data) - chunk + 1)):
            found.append(f)
    return found


def sa_stats(status: dict[str, Any], flow: str, direction: str) -> list[dict[str, Any]]:
    """The SAs of ``flow`` in ``direction`` ("in"/"out") from a status."""
    for f in status["flows"]:
        if f["name"] == flow:
            return [sa for sa in f["sas"] if sa["direction"] == direction]
    raise KeyError(f"no flow {flow} in status")


def flow_status(status: dict[str, Any], flow: str) -> dict[str, Any]:
    for f in status["flows"]:
        if f["name"] == flow:
            found: dict[str, Any] = f
            return found
    raise KeyError(f"no flow {flow} in status")


# -- what an agent leaves in its namespace ---------------------------------------------


def ns_state(host: Host) -> dict[str, Any]:
    """Rules, routes of every table, nftables ruleset and links of a host (JSON, as
    ``ip``/``nft`` print them; counters and link statistics left out)."""

    def j(argv: list[str]) -> Any:
        out = host.run(argv).stdout
        return json.loads(out) if out.strip() else []

    links = [
        {"ifname": link["ifname"], "flags": link.get("flags")} for link in j(["ip", "-j", "link"])
    ]
    return {
        "rules4": j(["ip", "-j", "-4", "rule", "show"]),
        "rules6": j(["ip", "-j", "-6", "rule", "show"]),
        "routes4": j(["ip", "-j", "-4", "route", "show", "table", "all"]),
        "routes6": j(["ip", "-j", "-6", "route", "show", "table", "all"]),
        "nft": [
            item
            for item in j(["nft", "-j", "list", "ruleset"]).get("nftables", [])
            if "metainfo" not in item
        ],
        "links": links,
    }


# -- a long-lived session ---------------------------------------------------------------


def steady_session(conn: Any, address: str, port: int, label: str, chunk: int = 4096) -> int:
    """A telnet-like session run in a host (``Host.spawn``): one TCP connection to an echo
    server, ``chunk`` octets at a time, each checked when it comes back, until "stop"
    arrives on ``conn``. Says "ready" after the first round trip; its result (the
    ``Child.result``) is the number of octets echoed, or an exception if the session broke
    (a timeout, a reset, a byte that came back wrong)."""
    data = stream(1 << 20, label)
    total = 0
    with socket.create_connection((address, port), timeout=5.0) as sock:
        while True:
            offset = total % len(data)
            piece = data[offset : offset + chunk]
            sock.sendall(piece)
            back = bytearray()
            while len(back) < len(piece):
                got = sock.recv(len(piece) - len(back))
                if not got:
                    raise ConnectionError(f"closed by the server after {total} octets")
                back += got
            if back != piece:
                raise ValueError(f"wrong octets came back at {total}")
            total += len(piece)
            if total == len(piece):
                conn.send("ready")
            if conn.poll(0):
                conn.recv()
                return total
            time.sleep(0.005)
