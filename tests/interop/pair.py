"""hostsec in one network namespace, a strongSwan charon in another (and, for NAT, a
masquerading router between them).

    direct:  hs 198.51.100.1 ==veth== sw 198.51.100.2   (IPv6: 2001:db8::1, 2001:db8::2)
    nat:     hs 198.51.100.1 ==veth== rt 198.51.100.2 | 203.0.113.1 ==veth== sw 203.0.113.2
             (rt: ip_forward, nftables masquerade of 198.51.100.0/24 leaving towards sw)

hostsec is always the telnet client (tcp/23 to sw); strongSwan runs the echo service.
Every case uses fresh names (peer, flow, strongSwan conn) so that one case never sees
another's SAs; :meth:`InteropLab.case` hands them out and cleans up afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostsec.agent.control import ControlError, request
from hostsec.agent.lab import AgentLab
from hostsec.platform.capture import Capture, Frame
from hostsec.platform.netns import Host

from .pki import Authority, Issued
from .swan import PSK, Charon, child, conn

REPO = Path(__file__).resolve().parents[2]
HS_FQDN = "hs.test"
SW_FQDN = "sw.test"
ECHO_BYTES = 1_000_000

# hostsec's own retransmission and liveness settings in these tests (hostsec.toml [ike]):
# a dead peer is declared after DPD + the retransmit budget (0.5+0.9+1.6 s).
HOSTSEC_TOML = """\
[agent]
log_level = "info"

[ike]
retransmit_timeout = 0.5
retransmit_base = 1.8
retransmit_tries = 2
nat_keepalive = 1.0
"""
RETRANSMIT_BUDGET = 0.5 * (1 + 1.8 + 1.8**2)
NAT_KEEPALIVE = 1.0
CONNTRACK_UDP_TIMEOUT = 3  # seconds, in the router (NAT tests)


@dataclass
class Case:
    """One negotiation: the names both sides use for it."""

    n: int
    auth: str = "psk"  # psk | rsa | ecdsa
    ike: str = "aes128gcm16-prfsha256-ecp256"
    esp: str = "aes128gcm16"
    hostsec_starts: bool = True
    dpd: str = "30s"
    encapsulation: str = "auto"
    sw_extra: dict[str, Any] = field(default_factory=dict)
    child_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peer(self) -> str:
        return f"sw{self.n}"

    @property
    def flow(self) -> str:
        return f"telnet{self.n}"

    @property
    def conn(self) -> str:
        return f"hs{self.n}"

    @property
    def child(self) -> str:
        return f"hs{self.n}-t23"


class InteropLab:
    def __init__(self, nat: str | None = None, version: int = 4) -> None:
        """``nat``: None (one link), "keep" (plain masquerade) or "random" (masquerade
        random: the outer source ports are remapped). ``version``: the IP version of the
        addresses both sides use (6: one link only)."""
        if version == 6 and nat is not None:
            raise ValueError("the NAT lab is IPv4")
        self.nat = nat
        self.version = version
        self.prefix_len = 128 if version == 6 else 32
        self.lab = AgentLab(
            prefix="hsio" if nat is None else "hsnat",
            hosts=("hs", "rt" if nat else "sw"),
            ipv6=version == 6,
        )
        self.root = self.lab.root
        try:
            self._build(nat)
        except BaseException:
            self.lab.close()
            raise
        self.hs_addr = str(self.hs.address(version))
        self.sw_addr = str(self.sw.address(version))
        self.charon = Charon(self.sw, self.root / "sw" / "charon", keep_alive="2s")
        self._numbers = itertools.count(1)
        self._pki: dict[str, Authority] = {}
        self._issued: dict[tuple[str, str], Issued] = {}
        self._echo: subprocess.Popen[bytes] | None = None

    def _build(self, nat: str | None) -> None:
        if nat is None:
            self.hs = self.lab.hosts["hs"]
            self.sw = self.lab.hosts["sw"]
            self.capture_host, self.capture_if = self.sw, self.lab.interface("sw")
        else:
            self.hs = self.lab.hosts["hs"]
            self.rt = self.lab.hosts["rt"]
            self.sw = self.lab.lab.add_host("sw", ipv6=False)
            self.lab.hosts["sw"] = self.sw
            outer = self.lab.lab.connect(self.rt, self.sw, subnet="203.0.113.0/24")
            self.capture_host, self.capture_if = self.rt, outer.interface_of(self.rt)
            self._router(nat, outer.interface_of(self.rt))

    # ------------------------------------------------------------------ set-up

    def _router(self, nat: str, outer_if: str) -> None:
        rt = self.rt
        rt.sysctl("net/ipv4/ip_forward", 1)
        self.hs.run(["ip", "route", "add", "default", "via", str(rt.address(4, "tohs"))])
        flags = " random" if nat == "random" else ""
        ruleset = (
            "table ip nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr 198.51.100.0/24 oifname "{outer_if}" counter masquerade{flags}\n'
            "  }\n"
            "}\n"
        )
        path = self.root / "rt-nft.conf"
        path.write_text(ruleset)
        rt.run(["nft", "-f", str(path)])
        # Short UDP mapping timeouts (30 s / 120 s by default): without keepalives the
        # mapping would be gone after a few idle seconds.
        for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
            rt.sysctl(f"net/netfilter/{key}", CONNTRACK_UDP_TIMEOUT)

    def conntrack_udp(self) -> list[str]:
        """The router's UDP mappings (``/proc/net/nf_conntrack``), one line each."""
        text = self.rt.run(["cat", "/proc/net/nf_conntrack"]).stdout
        return [" ".join(line.split()) for line in text.splitlines() if " udp " in line]

    def start(self) -> None:
        for kind in ("rsa", "ecdsa"):
            self._pki[kind] = Authority.create(kind)
        self.lab.write_file("hs", "hostsec.toml", HOSTSEC_TOML)
        for kind, ca in self._pki.items():
            self.lab.write_file("hs", f"cacerts/{kind}.pem", ca.cert_pem)
        self.lab.start_agent("hs")
        self.charon.start()
        self.load_charon_credentials()
        self._echo = self.lab.serve_echo("sw", 23, self.version)
        if self.nat is None:
            # Recipe pitfall 4: libipsec routes the whole peer address into its TUN; only
            # the telnet replies may go there (ICMP and the rest stay in the clear).
            ip = ["ip", f"-{self.version}", "rule", "add"]
            self.sw.run(
                [*ip, "pref", "100", "to", self.hs_addr, "ipproto", "tcp", "sport", "23",
                 "lookup", "220"]
            )  # fmt: skip
            self.sw.run([*ip, "pref", "101", "to", self.hs_addr, "lookup", "main"])

    def load_charon_credentials(self) -> None:
        """PSK, CAs, and strongSwan's own certificates and keys (again after a restart)."""
        self.charon.load_psk("hs-sw", PSK, [HS_FQDN, SW_FQDN, self.hs_addr, self.sw_addr])
        for kind, ca in self._pki.items():
            self.charon.load_cert(ca.cert_pem, ca=True)
            issued = self.issued(kind, "sw")
            self.charon.load_cert(issued.cert_pem)
            self.charon.load_key(kind, issued.key_pem)

    def issued(self, kind: str, host: str) -> Issued:
        key = (kind, host)
        if key not in self._issued:
            fqdn = HS_FQDN if host == "hs" else SW_FQDN
            address = self.hs_addr if host == "hs" else self.sw_addr
            self._issued[key] = self._pki[kind].issue(fqdn, address)
        return self._issued[key]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.charon.stop()
        self.lab.close()

    # ------------------------------------------------------------------ hostsec

    def control(self, command: str, **args: Any) -> Any:
        return request(self.lab.run_dir("hs"), command, args, timeout=10.0)

    def status(self) -> dict[str, Any]:
        return self.lab.status("hs")

    def wait_hs(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        return self.lab.wait_for("hs", predicate, timeout)

    def flow_status(self, status: dict[str, Any], case: Case) -> dict[str, Any]:
        return next(f for f in status["flows"] if f["name"] == case.flow)

    def ike_of(self, status: dict[str, Any], case: Case) -> list[dict[str, Any]]:
        return [s for s in status["ike_sas"] if s["peer"] == case.peer]

    def hs_log(self) -> str:
        return self.lab.log("hs")

    # ------------------------------------------------------------------ one case

    def new_case(self, **kw: Any) -> Case:
        return Case(next(self._numbers), **kw)

    def ids(self, case: Case) -> tuple[str, str]:
        """(hostsec's, strongSwan's) identity: FQDN with PSK, the subject DN with RSA
        certificates, the IPv4 address with ECDSA ones (three ID types)."""
        if case.auth == "rsa":
            return self.issued("rsa", "hs").dn, self.issued("rsa", "sw").dn
        if case.auth == "ecdsa":
            return self.hs_addr, self.sw_addr
        return HS_FQDN, SW_FQDN

    def hostsec_policy(self, case: Case) -> str:
        hs_id, sw_id = self.ids(case)
        if case.auth == "psk":
            self.lab.write_secret("hs", "sw.psk", PSK)
            credentials = 'auth = "psk"\npsk_file = "../secrets/sw.psk"'
        else:
            issued = self.issued(case.auth, "hs")
            cert = self.lab.write_file("hs", f"certs/hs-{case.auth}.pem", issued.cert_pem)
            key = self.lab.write_file("hs", f"secrets/hs-{case.auth}.key", issued.key_pem, 0o600)
            credentials = f'auth = "cert"\ncert = "{cert}"\nkey = "{key}"'
        return f"""\
[[peer]]
name = "{case.peer}"
address = "{self.sw_addr}"
{credentials}
local_id = "{hs_id}"
remote_id = "{sw_id}"
ike_proposals = ["{case.ike}"]
dpd = "{case.dpd}"
encapsulation = "{case.encapsulation}"

[[flow]]
name = "{case.flow}"
peer = "{case.peer}"
protocol = "tcp"
remote_port = 23
protection = "esp"
mode = "tunnel"
esp_proposals = ["{case.esp}"]
start = "{"trap" if case.hostsec_starts else "manual"}"
"""

    def charon_conn(self, case: Case) -> dict[str, Any]:
        hs_id, sw_id = self.ids(case)
        if case.auth == "psk":
            local: dict[str, Any] = {"auth": "psk", "id": sw_id}
            remote: dict[str, Any] = {"auth": "psk", "id": hs_id}
        else:
            local = {
                "auth": "pubkey",
                "id": sw_id,
                "certs": [self.issued(case.auth, "sw").cert_pem],
            }
            remote = {"auth": "pubkey", "id": hs_id}
        # Behind a NAT hostsec's inner address is not the IKE peer's (recipe NAT pitfall 1).
        plen = self.prefix_len
        remote_ts = f"{self.hs_addr}/{plen}[tcp]" if self.nat is None else "198.51.100.0/24[tcp]"
        children = {
            case.child: child(
                f"{self.sw_addr}/{plen}[tcp/23]", remote_ts, [case.esp], **case.child_extra
            )
        }
        return conn(
            local=self.sw_addr,
            remote=self.hs_addr if self.nat is None else "%any",
            proposals=[case.ike],
            local_auth=local,
            remote_auth=remote,
            children=children,
            extra={"dpd_delay": "2s", **case.sw_extra},
        )

    def load(self, case: Case) -> None:
        """Both sides configured for ``case`` (hostsec's flow ready: trap or down)."""
        self.charon.load_conn(case.conn, self.charon_conn(case))
        self.lab.write_policy("hs", self.hostsec_policy(case), file=f"{case.peer}.toml")
        self.control("rescan")
        self.wait_hs(lambda s: any(f["name"] == case.flow for f in s["flows"]))

    def establish(self, case: Case) -> dict[str, Any]:
        """Bring the CHILD SA up from the side the case says; hostsec's status once up."""
        if case.hostsec_starts:
            self.control("up", name=case.flow)
        else:
            self.charon.initiate(case.conn, case.child)
        return self.wait_hs(lambda s: self._up(s, case))

    def _up(self, status: dict[str, Any], case: Case) -> bool:
        flow = self.flow_status(status, case)
        return flow["state"] == "up" and bool(self.ike_of(status, case))

    def unload(self, case: Case) -> None:
        """Tear the case down: SAs terminated on both sides, configs removed."""
        with contextlib.suppress(Exception):
            self.charon.terminate(ike=case.conn)
        path = self.lab.config_dir("hs") / "policies.d" / f"{case.peer}.toml"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(ControlError):
            self.control("rescan")
        with contextlib.suppress(Exception):
            self.charon.unload_conn(case.conn)

    @contextlib.contextmanager
    def case(self, **kw: Any) -> Iterator[Case]:
        c = self.new_case(**kw)
        self.load(c)
        try:
            yield c
        finally:
            self.unload(c)

    # ------------------------------------------------------------------ traffic and wire

    def echo(self, nbytes: int = ECHO_BYTES, label: str = "interop") -> dict[str, Any]:
        return self.lab.echo("hs", self.sw_addr, 23, nbytes, timeout=60.0, label=label)

    def echo_async(
        self, nbytes: int, seconds: float = 2.5, label: str = "interop"
    ) -> subprocess.Popen[str]:
        """The verifying echo client, paced over ``seconds`` and left running (for
        rekeys in the middle of a transfer); ``communicate()`` gives its JSON line."""
        argv = [
            "ip", "netns", "exec", self.hs.netns, sys.executable, "-m", "hostsec.agent.echo",
            "client", self.sw_addr, "23", str(nbytes), "30", label, str(nbytes / seconds),
        ]  # fmt: skip
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
        )

    def capture(self, host: Host | None = None, interface: str | None = None) -> Captures:
        """Two tcpdumps on the wire: everything (which may drop frames when 1 MB goes by
        in a tenth of a second), and everything but IKE and ESP in UDP (a trickle, so
        that a single cleartext or raw ESP frame cannot hide among the dropped ones)."""
        host = host or self.capture_host
        iface = interface or self.capture_if
        return Captures(
            host.capture(iface),
            host.capture(iface, bpf="not (udp port 4500 or udp port 500)"),
        )


@dataclass
class Captures:
    full: Capture
    other: Capture

    def stop(self) -> tuple[list[Frame], list[Frame]]:
        return self.full.stop(), self.other.stop()


def wire_summary(frames: list[Frame], payload: bytes) -> dict[str, int]:
    """What crossed the wire: ESP-in-UDP, raw ESP, clear tcp/23, IKE, and in how many frames
    24-octet probes of the session's bytes are visible on the wire."""
    counts = {"esp_in_udp": 0, "raw_esp": 0, "clear_tcp23": 0, "ike500": 0, "ike4500": 0}
    counts["keepalive"] = 0
    counts["ip_fragments"] = sum(
        1 for f in frames if f.version == 4 and int.from_bytes(f.packet[6:8], "big") & 0x3FFF
    )
    for f in frames:
        if f.protocol == 50:
            counts["raw_esp"] += 1
        elif f.is_esp:
            counts["esp_in_udp"] += 1
        elif f.uses_port(6, 23):
            counts["clear_tcp23"] += 1
        elif f.protocol == 17 and 500 in (f.sport, f.dport):
            counts["ike500"] += 1
        elif f.protocol == 17 and f.payload == b"\xff":
            counts["keepalive"] += 1
        elif f.protocol == 17 and 4500 in (f.sport, f.dport):
            counts["ike4500"] += 1
    # One blob with a separator no probe spans: a few hundred memmem scans, not one per frame
    blob = b"\x00<frame>\x00".join(f.packet for f in frames)
    probes = [payload[i : i + 24] for i in range(0, len(payload) - 24, 4093)]
    counts["payload_visible"] = sum(1 for p in probes if p in blob)
    return counts


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
