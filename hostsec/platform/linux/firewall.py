"""Inbound enforcement with nftables: plaintext of a protected flow is dropped unless it
came out of the TUN device (DESIGN.md 6, ``require = true``).

The agent owns one table (``inet hostsec`` by default; one name per agent instance)
with one chain on the prerouting hook at priority ``raw``, so plaintext is dropped
before connection tracking, for local delivery and forwarding alike. Per flow, the
mirror image of its outbound packets:

    iifname != "hostsec0" ip saddr PEER meta l4proto tcp th dport 23 counter drop
        comment "hostsec flow telnet"     (the server of telnet; the client: th sport 23)

A flow of every protocol must not drop the protected traffic itself nor what the
network needs, so it becomes: every protocol but UDP, ESP, AH (and ICMPv6); UDP except
the local IKE/NAT-T ports; ICMPv6 except neighbour discovery.

A second chain on the output hook drops the flow's outbound packets that would leave
by any interface but the TUN device (defence in depth: if the policy rule that steers
them into the TUN is missing - not installed, or flushed by hand - they are dropped, not
sent in the clear). The agent's own packets (ESP, AH, IKE) carry the routing bypass mark
and are accepted first:

    meta mark & 0x01000000 == 0x01000000 accept
    oifname != "hostsec0" ip daddr PEER meta l4proto tcp th dport 23 counter drop

The whole table is written in one ``nft -j -f -`` transaction on every change (JSON:
nothing a flow name contains can be read as syntax): "add table; delete table; add
table ...". That replaces a crashed run's table atomically and works whether it exists
or not, so there is never a moment with no rule. ``start`` leaves a previous table in
place (it keeps failing closed) until the agent's first change or ``drop_leftovers``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from hostsec.platform.api import FlowMatch, PortRange

ICMPV6_ND_TYPES = (133, 134, 135, 136, 137)  # RFC 4861: RS, RA, NS, NA, redirect
_COMMENT_PREFIX = "hostsec flow "
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_IFNAME = re.compile(r"^[^\s/\"'\\]{1,15}$")


class NftError(RuntimeError):
    """``nft`` refused a command; carries its error output."""


@dataclass(frozen=True, slots=True)
class FirewallConfig:
    table: str = "hostsec"
    tun: str = "hostsec0"
    priority: int = -300  # NF_IP_PRI_RAW: before conntrack
    ike_ports: tuple[int, ...] = (500, 4500)  # local UDP ports never dropped (IKE, NAT-T)
    nft: str = "nft"
    bypass_mark: int = 0x0100_0000  # SO_MARK of the agent's own sockets (routing.BYPASS_MARK)

    def __post_init__(self) -> None:
        if not _TABLE_NAME.match(self.table):
            raise ValueError(f"bad nftables table name {self.table!r}")
        if not _IFNAME.match(self.tun):
            raise ValueError(f"bad interface name {self.tun!r}")


def _match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def _ports(ports: PortRange) -> Any:
    return ports.first if ports.first == ports.last else {"range": [ports.first, ports.last]}


def _set(values: list[int]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


class NftablesFirewall:
    """The :class:`hostsec.platform.api.Firewall` of Linux, in this thread's namespace."""

    def __init__(self, config: FirewallConfig = FirewallConfig()) -> None:
        self.config = config
        self._flows: dict[str, FlowMatch] = {}
        self._written = False  # the table on the kernel is this run's

    # -- nft ------------------------------------------------------------------------

    def _nft(self, *args: str, stdin: str | None = None) -> str:
        exe = shutil.which(self.config.nft) or self.config.nft
        # No shell; the ruleset goes in as JSON on stdin, never as command-line syntax.
        proc = subprocess.run(  # noqa: S603
            [exe, *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
        if proc.returncode != 0:
            raise NftError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def _table(self) -> dict[str, str]:
        return {"family": "inet", "name": self.config.table}

    def exists(self) -> bool:
        out = self._nft("-j", "list", "tables", "inet")
        for item in json.loads(out).get("nftables", []):
            if item.get("table", {}).get("name") == self.config.table:
                return True
        return False

    def ruleset(self) -> list[dict[str, Any]]:
        """The agent's table as nft JSON objects (empty if there is none)."""
        if not self.exists():
            return []
        out = self._nft("-j", "list", "table", "inet", self.config.table)
        items: list[dict[str, Any]] = json.loads(out).get("nftables", [])
        return items

    # -- rules ------------------------------------------------------------------------

    def _rules_of(self, flow: FlowMatch) -> list[list[dict[str, Any]]]:
        """The match expressions of the drop rules for ``flow``'s inbound plaintext."""
        ip = "ip" if flow.version == 4 else "ip6"
        base = [_match(_meta("iifname"), self.config.tun, "!=")]
        base.append(_match(_payload(ip, "saddr"), _prefix(flow.remote)))
        if flow.local is not None:
            base.append(_match(_payload(ip, "daddr"), _prefix(flow.local)))
        ike = sorted(set(self.config.ike_ports))
        icmp6 = 58
        proto = flow.protocol
        if proto == 0:
            exempt = [17, 50, 51] + ([icmp6] if flow.version == 6 else [])
            rules = [
                [*base, _match(_meta("l4proto"), {"set": exempt}, "!=")],
                [
                    *base,
                    _match(_meta("l4proto"), 17),
                    _match(_payload("th", "dport"), _set(ike), "!="),
                ],
            ]
            if flow.version == 6:
                rules.append(_icmp6_rule(base))
            return rules
        if proto == icmp6 and flow.version == 6:
            return [_icmp6_rule(base)]
        rule = [*base, _match(_meta("l4proto"), proto)]
        # Inbound mirror image: the peer's ports are the source, ours the destination.
        if flow.remote_ports is not None and not flow.remote_ports.is_any:
            rule.append(_match(_payload("th", "sport"), _ports(flow.remote_ports)))
        if flow.local_ports is not None and not flow.local_ports.is_any:
            rule.append(_match(_payload("th", "dport"), _ports(flow.local_ports)))
        if proto == 17:
            local = flow.local_ports or PortRange(0, 0xFFFF)
            covered = [p for p in ike if p in local]
            if covered:
                rule.append(_match(_payload("th", "dport"), _set(covered), "!="))
        return [rule]

    def _outbound_rules_of(self, flow: FlowMatch) -> list[list[dict[str, Any]]]:
        """The match expressions of the drop rules for ``flow``'s outbound plaintext that
        would leave by another interface than the TUN device."""
        ip = "ip" if flow.version == 4 else "ip6"
        base = [_match(_meta("oifname"), self.config.tun, "!=")]
        base.append(_match(_payload(ip, "daddr"), _prefix(flow.remote)))
        if flow.local is not None:
            base.append(_match(_payload(ip, "saddr"), _prefix(flow.local)))
        if flow.protocol == 0:
            if flow.version == 6:  # neighbour discovery must reach the peer
                return [
                    [*base, _match(_meta("l4proto"), 58, "!=")],
                    _icmp6_rule(base),
                ]
            return [base]
        rule = [*base, _match(_meta("l4proto"), flow.protocol)]
        if flow.remote_ports is not None and not flow.remote_ports.is_any:
            rule.append(_match(_payload("th", "dport"), _ports(flow.remote_ports)))
        if flow.local_ports is not None and not flow.local_ports.is_any:
            rule.append(_match(_payload("th", "sport"), _ports(flow.local_ports)))
        return [rule]

    def _document(self) -> dict[str, Any]:
        table = self._table()
        family_table = {"family": "inet", "table": self.config.table}
        inbound = {
            **family_table,
            **{"name": "inbound", "type": "filter", "hook": "prerouting"},
            **{"prio": self.config.priority, "policy": "accept"},
        }
        outbound = {
            **family_table,
            **{"name": "outbound", "type": "filter", "hook": "output", "prio": 0},
            "policy": "accept",
        }
        mark = self.config.bypass_mark
        commands: list[dict[str, Any]] = [
            {"add": {"table": table}},
            {"delete": {"table": table}},
            {"add": {"table": table}},
            {"add": {"chain": inbound}},
            {"add": {"chain": outbound}},
            {
                "add": {
                    "rule": {
                        **family_table,
                        "chain": "outbound",
                        "expr": [
                            _match({"&": [_meta("mark"), mark]}, mark),
                            {"accept": None},
                        ],
                    }
                }
            },
        ]
        # Rewriting the table must not reset what ``dropped`` reports: each flow's count
        # so far goes on its first rule again.
        carried = self._counters() if self._written else {}
        for name, flow in sorted(self._flows.items()):
            packets, octets = carried.get(name, (0, 0))
            for chain, rules in (
                ("inbound", self._rules_of(flow)),
                ("outbound", self._outbound_rules_of(flow)),
            ):
                for exprs in rules:
                    counter = {"packets": packets, "bytes": octets}
                    packets = octets = 0
                    rule = {
                        **family_table,
                        "chain": chain,
                        "comment": _COMMENT_PREFIX + name,
                        "expr": [*exprs, {"counter": counter}, {"drop": None}],
                    }
                    commands.append({"add": {"rule": rule}})
        return {"nftables": commands}

    def _write(self) -> None:
        self._nft("-j", "-f", "-", stdin=json.dumps(self._document()))
        self._written = True

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Check that nft works; a previous run's table stays until the first change."""
        self._nft("--version")

    def add_flow(self, flow: FlowMatch) -> None:
        self.add_flows([flow])

    def add_flows(self, flows: list[FlowMatch]) -> None:
        """Enforce ``flows`` in one transaction (an agent starting with hundreds of flows
        writes its table once, not once per flow); all or none."""
        names = [f.name for f in flows]
        for name in names:
            if name in self._flows or names.count(name) > 1:
                raise ValueError(f"flow {name} is already enforced")
        self._flows.update((f.name, f) for f in flows)
        try:
            self._write()
        except BaseException:
            for name in names:
                del self._flows[name]
            raise

    def remove_flow(self, name: str) -> None:
        self.remove_flows([name])

    def remove_flows(self, names: list[str]) -> None:
        """Stop enforcing ``names`` in one transaction."""
        if [name for name in names if self._flows.pop(name, None) is not None]:
            self._write()

    def drop_leftovers(self) -> None:
        """Write the table with exactly the current flows (replacing any leftover)."""
        self._write()

    def dropped(self) -> dict[str, int]:
        """Plaintext packets dropped so far, per flow (this run's table)."""
        return {name: packets for name, (packets, _octets) in self._counters().items()}

    def _counters(self) -> dict[str, tuple[int, int]]:
        """(packets, bytes) dropped so far per flow, from the table on the kernel."""
        counts: dict[str, tuple[int, int]] = {}
        for item in self.ruleset():
            rule = item.get("rule")
            if not rule or not str(rule.get("comment", "")).startswith(_COMMENT_PREFIX):
                continue
            name = rule["comment"][len(_COMMENT_PREFIX) :]
            for expr in rule.get("expr", []):
                if "counter" in expr and isinstance(expr["counter"], dict):
                    packets, octets = counts.get(name, (0, 0))
                    counts[name] = (
                        packets + int(expr["counter"].get("packets", 0)),
                        octets + int(expr["counter"].get("bytes", 0)),
                    )
        return counts

    def stop(self) -> None:
        """Remove the agent's table (whether or not it exists)."""
        table = self._table()
        doc = {"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]}
        self._nft("-j", "-f", "-", stdin=json.dumps(doc))
        self._flows.clear()
        self._written = False


def _prefix(net: Any) -> Any:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _icmp6_rule(base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        *base,
        _match(_meta("l4proto"), 58),
        _match(_payload("icmpv6", "type"), {"set": list(ICMPV6_ND_TYPES)}, "!="),
    ]
