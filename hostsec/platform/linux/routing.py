"""Policy routing of protected flows into the TUN device, fail closed (pyroute2, Linux).

Per flow (DESIGN.md 6), in its own routing table T:

    ip rule add priority P to PEER ipproto tcp dport 23 fwmark 0/M lookup T proto H
    ip route add default dev hostsec0 src SOURCE metric 1 table T proto H [mtu N]
    ip route add blackhole default metric 4294967295 table T proto H

(``sport`` instead of ``dport`` on the side that owns the port.) When the TUN device
goes away with the agent, the kernel deletes its routes and the blackhole catches the
flow: its packets are dropped, never sent in the clear. ``fwmark 0/M`` lets the agent's
own sockets (marked with M, see :mod:`hostsec.platform.linux.sockets`) bypass the flow
rules, so ESP, ESP-in-UDP and IKE to the peer never loop back into the TUN, even for a
flow that covers every protocol.

Everything installed carries the marker: the table number is in the configured range
and rules and routes carry the routing protocol :data:`RTPROT_HOSTSEC`. A restart finds
the leftovers of a crashed run by that marker and removes them only after the new
flows are in place (make-before-break: in between the old blackholes keep dropping).

pyroute2 pitfall (pyroute2 0.9.7, checked): rule keywords are ``ip_proto``,
``dport_range``/``sport_range``; a misspelled keyword (``ipproto=``, ``dport=``) is
silently ignored and the rule then catches every packet to the peer. The rules built
here are read back and compared after installation (:class:`RuleMismatch`).

Reverse-path filtering: a packet the agent writes into the TUN (decrypted, its source
is the peer) passes even strict ``rp_filter`` because the kernel's reverse lookup swaps
the ports and so matches the flow's own rule, whose table routes via the TUN. That is
one more reason the rules must mirror the SA's selectors exactly.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hostsec.platform.api import FlowMatch, IPAddress, PortRange

#: rtm_protocol / FRA_PROTOCOL of every route and rule the agent installs ('h').
RTPROT_HOSTSEC = 0x68
TABLE_BASE = 0x6873_0000  # "hs" << 16
TABLE_SPAN = 0x1_0000
RULE_PRIORITY = 1000
BYPASS_MARK = 0x0100_0000  # SO_MARK of the agent's sockets; flow rules skip marked packets
TUN_METRIC = 1
BLACKHOLE_METRIC = 0xFFFF_FFFF
_ENOENT = 2
_EEXIST = 17
_ENODEV = 19


class RuleMismatch(RuntimeError):
    """The kernel's copy of a rule differs from what was asked (a pyroute2 keyword slip)."""


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The marker: table range, rule priority, protocol, and the bypass mark."""

    tun: str = "hostsec0"
    table_base: int = TABLE_BASE
    table_span: int = TABLE_SPAN
    priority: int = RULE_PRIORITY
    protocol: int = RTPROT_HOSTSEC
    bypass_mark: int = BYPASS_MARK

    def __post_init__(self) -> None:
        if self.table_span < 1 or self.table_base < 256:
            raise ValueError("the table range must be non-empty and above 255")
        if self.table_base + self.table_span > 0xFFFF_FFFF:
            raise ValueError("routing tables must lie below 2^32-1")
        if not 1 <= self.priority < 32766:
            raise ValueError("rule priority must be 1 .. 32765 (before the main table)")
        if not 1 <= self.protocol <= 255 or self.protocol in (1, 2, 3, 4):
            raise ValueError("protocol must be 5 .. 255 (not redirect/kernel/boot/static)")
        if not self.bypass_mark:
            raise ValueError("the bypass mark needs at least one bit")

    def owns_table(self, table: int) -> bool:
        return self.table_base <= table < self.table_base + self.table_span


@dataclass(slots=True)
class _Installed:
    flow: FlowMatch
    source: IPAddress
    mtu: int | None
    table: int
    tun_route: bool = False


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _default(version: int) -> str:
    return "0.0.0.0/0" if version == 4 else "::/0"


def _port_range(ports: PortRange) -> str:
    return f"{ports.first}:{ports.last}"


class LinuxPolicyRouter:
    """The :class:`hostsec.platform.api.FlowRouter` of Linux, in this thread's namespace."""

    def __init__(self, config: RoutingConfig = RoutingConfig()) -> None:
        self.config = config
        self._flows: dict[str, _Installed] = {}
        self._leftover_rules: list[dict[str, Any]] = []
        self._leftover_tables: set[tuple[int, int]] = set()  # (family, table)
        self._ipr = IPRoute()

    # -- queries ------------------------------------------------------------------------

    def flows(self) -> dict[str, int]:
        """Installed flows and their routing tables."""
        return {name: inst.table for name, inst in self._flows.items()}

    def _tun_index(self) -> int | None:
        found = self._ipr.link_lookup(ifname=self.config.tun)
        return int(found[0]) if found else None

    def _marked_rules(self, families: tuple[int, ...] = _FAMILIES) -> list[dict[str, Any]]:
        """Every rule that carries our marker (table range and protocol)."""
        out = []
        for family in families:
            for msg in self._ipr.get_rules(family=family):
                table = msg.get("FRA_TABLE") or msg["table"]
                if (
                    self.config.owns_table(table)
                    and msg.get("FRA_PROTOCOL") == self.config.protocol
                ):
                    out.append(_rule_fields(msg, family))
        return out

    def _marked_routes(self) -> list[tuple[int, int, dict[str, Any]]]:
        """(family, table, route) of every route in our tables with our protocol."""
        out: list[tuple[int, int, dict[str, Any]]] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self._ipr.get_routes(family=family):
                table = msg.get("RTA_TABLE") or msg["table"]
                if self.config.owns_table(table) and msg["proto"] == self.config.protocol:
                    out.append((int(family), int(table), _route_fields(msg, family, table)))
        return out

    def installed(self) -> tuple[list[dict[str, Any]], list[tuple[int, int, dict[str, Any]]]]:
        """(rules, routes) in the kernel that carry the marker; for status and tests."""
        return self._marked_rules(), self._marked_routes()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Note what a previous run left; it stays (fail closed) until drop_leftovers()."""
        self._leftover_rules = self._marked_rules()
        self._leftover_tables = {(f, t) for f, t, _ in self._marked_routes()}
        self._leftover_tables |= {(r["family"], r["table"]) for r in self._leftover_rules}

    def drop_leftovers(self) -> None:
        """Remove the rules and routes of a previous run that no current flow uses."""
        ours = {(_family(i.flow.version), i.table) for i in self._flows.values()}
        for rule in self._leftover_rules:
            if (rule["family"], rule["table"]) not in ours:
                self._delete_rule(rule)
        for family, table in self._leftover_tables - ours:
            self._flush_table(family, table)
        self._leftover_rules = []
        self._leftover_tables = set()

    def purge(self) -> None:
        """Remove everything with the marker now (rules first, then routes)."""
        for rule in self._marked_rules():
            self._delete_rule(rule)
        for _f, _t, route in self._marked_routes():
            self._delete_route(route)
        self._flows.clear()
        self._leftover_rules = []
        self._leftover_tables = set()

    def stop(self) -> None:
        """A clean stop: remove every flow's rule and routes, and any leftover."""
        self.purge()

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> LinuxPolicyRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- flows ------------------------------------------------------------------------

    def _allocate_table(self, family: int) -> int:
        # Tables of this run and of the leftovers start() found: no dump needed (a dump
        # per flow made adding the 50th flow take 0.1 s).
        used = {i.table for i in self._flows.values()}
        used |= {t for _f, t in self._leftover_tables}
        for offset in range(self.config.table_span):
            table = self.config.table_base + offset
            if table not in used:
                return table
        raise RuntimeError("no free routing table left in the configured range")

    def add_flow(
        self, flow: FlowMatch, source: IPAddress, mtu: int | None = None, verify: bool = True
    ) -> int:
        """Route ``flow`` into the TUN (source address ``source``); the table used.

        Order: blackhole, TUN route, then the rule, so that the rule never points to an
        empty table (which would fall through to the main table: cleartext). The rule is
        read back from the kernel and compared with the flow (``RuleMismatch``); with
        ``verify=False`` the caller does that for many flows at once (:meth:`verify`).
        """
        if flow.name in self._flows:
            raise ValueError(f"flow {flow.name} is already routed")
        if source.version != flow.version:
            raise ValueError(f"flow {flow.name}: source {source} is not IPv{flow.version}")
        family = _family(flow.version)
        while True:
            table = self._allocate_table(family)
            try:
                self._ipr.route(
                    "add",
                    family=family,
                    dst=_default(flow.version),
                    type="blackhole",
                    table=table,
                    proto=self.config.protocol,
                    priority=BLACKHOLE_METRIC,
                )
                break
            except NetlinkError as exc:
                if exc.code != _EEXIST:
                    raise
                # A leftover start() did not see (start() not called): never reuse it.
                self._leftover_tables.add((family, table))
        inst = _Installed(flow, source, mtu, table)
        self._flows[flow.name] = inst
        try:
            self._add_tun_route(inst)
            self._add_rule(inst, verify)
        except BaseException:
            self.remove_flow(flow.name)
            raise
        return table

    def _add_tun_route(self, inst: _Installed) -> None:
        index = self._tun_index()
        if index is None:
            inst.tun_route = False
            return  # no TUN yet: the blackhole holds the flow until attach()
        kw: dict[str, Any] = {}
        if inst.mtu is not None:
            kw["metrics"] = {"RTAX_MTU": inst.mtu}
        try:
            self._ipr.route(
                "add",
                family=_family(inst.flow.version),
                dst=_default(inst.flow.version),
                oif=index,
                prefsrc=str(inst.source),
                table=inst.table,
                proto=self.config.protocol,
                priority=TUN_METRIC,
                **kw,
            )
        except NetlinkError as exc:
            if exc.code != _EEXIST:
                raise
        inst.tun_route = True

    def _rule_request(self, inst: _Installed) -> dict[str, Any]:
        flow = inst.flow
        kw: dict[str, Any] = {
            "family": _family(flow.version),
            "table": inst.table,
            "priority": self.config.priority,
            "dst": str(flow.remote.network_address),
            "dst_len": flow.remote.prefixlen,
            "fwmark": 0,
            "fwmask": self.config.bypass_mark,
            "protocol": self.config.protocol,
        }
        if flow.local is not None:
            kw["src"] = str(flow.local.network_address)
            kw["src_len"] = flow.local.prefixlen
        if flow.protocol:
            kw["ip_proto"] = flow.protocol
        if flow.remote_ports is not None and not flow.remote_ports.is_any:
            kw["dport_range"] = _port_range(flow.remote_ports)
        if flow.local_ports is not None and not flow.local_ports.is_any:
            kw["sport_range"] = _port_range(flow.local_ports)
        return kw

    def _expected_rule(self, inst: _Installed) -> dict[str, Any]:
        """The rule the kernel must hold for ``inst``, from the flow itself (not from the
        request, so that a keyword slip in the request cannot hide)."""
        flow = inst.flow
        ports = (flow.remote_ports, flow.local_ports)
        dport, sport = (None if p is None or p.is_any else _port_range(p) for p in ports)
        return {
            "family": _family(flow.version),
            "table": inst.table,
            "priority": self.config.priority,
            "dst": str(flow.remote.network_address),
            "dst_len": flow.remote.prefixlen,
            "src": None if flow.local is None else str(flow.local.network_address),
            "src_len": None if flow.local is None else flow.local.prefixlen,
            "fwmask": self.config.bypass_mark,
            "protocol": self.config.protocol,
            "ip_proto": flow.protocol or None,
            "dport_range": dport,
            "sport_range": sport,
        }

    def _add_rule(self, inst: _Installed, verify: bool = True) -> None:
        self._ipr.rule("add", **self._rule_request(inst))
        if verify:
            problem = self.verify([inst.flow.name]).get(inst.flow.name)
            if problem is not None:
                raise RuleMismatch(problem)

    def verify(self, names: list[str]) -> dict[str, str]:
        """Compare the kernel's rules of flows ``names`` with the flows (one dump per
        address family, whatever the number of flows): the mismatches, by flow name."""
        installed = [self._flows[n] for n in names if n in self._flows]
        families = tuple(sorted({_family(i.flow.version) for i in installed}))
        by_table: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for rule in self._marked_rules(families) if families else []:
            by_table.setdefault((rule["family"], rule["table"]), []).append(rule)
        problems: dict[str, str] = {}
        for inst in installed:
            want = self._expected_rule(inst)
            found = by_table.get((want["family"], inst.table), [])
            if found != [want]:
                problems[inst.flow.name] = (
                    f"flow {inst.flow.name}: kernel has {found}, wanted {want}"
                )
        return problems

    def remove_flow(self, name: str) -> None:
        """Remove the flow's rule first, then its routes (never a rule without a table)."""
        self.remove_flows([name])

    def remove_flows(self, names: list[str]) -> None:
        """Remove several flows: every rule first, then every route (never a rule without
        a table), with one dump of each per address family, whatever their number."""
        insts = [inst for n in names if (inst := self._flows.pop(n, None)) is not None]
        if not insts:
            return
        tables = {(_family(i.flow.version), i.table) for i in insts}
        families = tuple(sorted({family for family, _table in tables}))
        for rule in self._marked_rules(families):
            if (rule["family"], rule["table"]) in tables:
                self._delete_rule(rule)
        for family, table, route in self._marked_routes():
            if (family, table) in tables:
                self._delete_route(route)

    def attach(self) -> None:
        """(Re)install the TUN routes of all flows, e.g. after the TUN was reopened."""
        for inst in self._flows.values():
            self._add_tun_route(inst)

    # -- deletion helpers ---------------------------------------------------------------

    def _delete_rule(self, rule: dict[str, Any]) -> None:
        try:
            self._ipr.rule("del", **{k: v for k, v in rule.items() if v is not None})
        except NetlinkError as exc:
            if exc.code != _ENOENT:
                raise

    def _flush_table(self, family: int, table: int) -> None:
        for msg in self._ipr.get_routes(family=family, table=table):
            got = msg.get("RTA_TABLE") or msg["table"]
            if got != table or msg["proto"] != self.config.protocol:
                continue
            self._delete_route(_route_fields(msg, family, table))

    def _delete_route(self, route: dict[str, Any]) -> None:
        try:
            self._ipr.route("del", **route)
        except NetlinkError as exc:
            if exc.code not in (_ENOENT, _ENODEV):
                raise


def _rule_fields(msg: Any, family: int) -> dict[str, Any]:
    """The identifying fields of a dumped rule, in the keywords rule('del') takes.
    (The kernel reports no FRA_FWMARK for mark 0; port ranges come back as "lo:hi".)"""
    fields: dict[str, Any] = {
        "family": family,
        "table": msg.get("FRA_TABLE") or msg["table"],
        "priority": msg.get("FRA_PRIORITY", 0),
        "dst": msg.get("FRA_DST"),
        "dst_len": msg["dst_len"] if msg.get("FRA_DST") else None,
        "src": msg.get("FRA_SRC"),
        "src_len": msg["src_len"] if msg.get("FRA_SRC") else None,
        "fwmask": msg.get("FRA_FWMASK"),
        "protocol": msg.get("FRA_PROTOCOL"),
        "ip_proto": msg.get("FRA_IP_PROTO"),
        "dport_range": _range_text(msg.get("FRA_DPORT_RANGE")),
        "sport_range": _range_text(msg.get("FRA_SPORT_RANGE")),
    }
    return fields


def _range_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # other pyroute2 versions decode to {"start", "end"}
        return f"{value['start']}:{value['end']}"
    return str(value)


def _route_fields(msg: Any, family: int, table: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "family": family,
        "table": table,
        "dst": msg.get("RTA_DST") or _default(4 if family == socket.AF_INET else 6),
        "dst_len": msg["dst_len"],
        "type": msg["type"],
        "proto": msg["proto"],
        "priority": msg.get("RTA_PRIORITY", 0),
    }
    oif = msg.get("RTA_OIF")
    if oif is not None:
        fields["oif"] = oif
    if fields["dst"].endswith("/0"):
        fields["dst"] = fields["dst"].split("/")[0]
    return fields
