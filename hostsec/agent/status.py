"""`hostsec status` as text: IKE SAs above their CHILD SAs, like `swanctl --list-sas`."""

from __future__ import annotations

from typing import Any


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


def _drops(drops: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(drops.items()) if v) or "none"


def format_status(status: dict[str, Any]) -> str:
    lines: list[str] = []
    agent = status.get("agent", {})
    lines.append(
        f"hostsec {agent.get('version', '?')}, pid {agent.get('pid')}, up {agent.get('uptime')}s,"
        f" interface {agent.get('interface')}"
    )
    by_peer: dict[str, list[dict[str, Any]]] = {}
    for flow in status.get("flows", []):
        by_peer.setdefault(flow["peer"], []).append(flow)
    ike_by_peer: dict[str, list[dict[str, Any]]] = {}
    for ike in status.get("ike_sas", []):
        ike_by_peer.setdefault(ike["peer"], []).append(ike)
    for peer in sorted(set(by_peer) | set(ike_by_peer)):
        lines.append("")
        for ike in ike_by_peer.get(peer, []):
            role = "initiator" if ike["initiator"] else "responder"
            lines.append(f"{peer}: ESTABLISHED IKEv2, {ike['spi_i']}_i {ike['spi_r']}_r ({role})")
            lines.append(f"  local  '{ike['local_id']}' @ {ike['local']}")
            lines.append(f"  remote '{ike['remote_id']}' @ {ike['remote']}")
            nat = f", NAT: {ike['nat']}" if ike.get("nat") else ""
            rekey = f", rekeying in {ike['rekey_in']}s" if ike.get("rekey_in") is not None else ""
            lines.append(f"  {ike['proposal']}, established {ike['age']}s ago{rekey}{nat}")
        if not ike_by_peer.get(peer):
            failure = status.get("auth_failures", {}).get(peer)
            tail = f" (authentication failed: {failure})" if failure else ""
            lines.append(f"{peer}: no IKE SA{tail}")
        for flow in by_peer.get(peer, []):
            lines.append(
                f"  {flow['name']}: {flow['state'].upper()}, {flow['protection']} {flow['mode']},"
                f" {flow['keying']} keying, {flow['selectors']}"
            )
            if flow.get("error"):
                lines.append(f"    error: {flow['error']}")
            for sa in flow.get("sas", []):
                algo = sa.get("encryption") or ""
                if sa.get("key_bits"):
                    algo += f"-{sa['key_bits']}"
                if sa.get("integrity"):
                    algo += f"/{sa['integrity']}"
                if sa.get("replay_window") == 0:
                    algo += ", no anti-replay"
                encap = " in UDP" if sa.get("udp_encapsulation") else ""
                head = f"{sa['direction']:3} {sa['protocol'].upper()} {sa['spi']}"
                lines.append(
                    f"    {head} {sa['mode']}{encap} {algo}: {sa['packets']} packets,"
                    f" {_fmt_bytes(sa['bytes'])},"
                    f" drops: {_drops(sa.get('drops', {}))}"
                )
            lines.append(
                f"    out: {flow['packets_out']} packets, {_fmt_bytes(flow['bytes_out'])},"
                f" held {flow['held']}, dropped: {_drops(flow.get('drops_out', {}))};"
                f" plaintext dropped by firewall: {flow['plaintext_dropped']}"
            )
    drops = status.get("drops", {})
    lines.append("")
    lines.append(f"data path drops: {_drops(drops)}")
    if status.get("ike_drops"):
        lines.append(f"IKE drops: {_drops(status['ike_drops'])}")
    errors = status.get("policy_errors", {})
    if errors:
        lines.append("policy problems:")
        for path, problems in sorted(errors.items()):
            for p in problems:
                where = p.get("file") or path
                if p["line"]:
                    where += f":{p['line']}"
                lines.append(f"  {where}: {p['severity']}: {p['message']}")
    return "\n".join(lines)
