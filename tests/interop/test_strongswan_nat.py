"""hostsec behind an nftables masquerading router, strongSwan 5.9 outside (RFC 7296 2.23,
RFC 3948): NAT detected, IKE floats to udp/4500, ESP in UDP through the mapping, NAT
keepalives hold the mapping over idle periods longer than the router's UDP timeout, and
rekeys started from outside reach hostsec through it. Run with plain ``masquerade``
(ports kept while free) and with ``masquerade random`` (outer ports remapped).

    hs 198.51.100.1 -- rt 198.51.100.2 | 203.0.113.1 (masquerade) -- sw 203.0.113.2
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from hostsec.platform.capture import Frame

from .checks import charon_ike, check_echo, check_established, check_wire
from .pair import CONNTRACK_UDP_TIMEOUT, NAT_KEEPALIVE, InteropLab, wait_until

pytestmark = pytest.mark.interop

OUTER = "203.0.113.1"  # the router's outside address: what strongSwan sees of hostsec
INNER = "198.51.100.1"


def _outer_ports(frames: list[Frame]) -> set[int]:
    return {f.sport for f in frames if f.src == OUTER and f.protocol == 17 and f.sport}


def _mapping(lab: InteropLab, port: int) -> list[str]:
    """Conntrack lines of the router for hostsec's UDP source ``port``."""
    return [
        line for line in lab.conntrack_udp() if f"src={INNER} " in line and f"sport={port} " in line
    ]


def test_nat_traversal(interop_nat: InteropLab) -> None:
    lab = interop_nat
    # No liveness checks from either side: over the idle period only hostsec's NAT
    # keepalives may cross the router.
    with lab.case(dpd="off", sw_extra={"dpd_delay": "0"}) as case:
        outer = lab.capture()
        inner = lab.capture(host=lab.rt, interface="tohs")
        status = lab.establish(case)
        check_established(lab, case, status)
        assert "this host is behind a NAT" in lab.hs_log()
        check_echo(lab.echo())

        sw = charon_ike(lab, case)
        assert sw["remote-host"] == OUTER, sw
        assert sw.get("nat-remote") == "yes" and sw.get("nat-local") != "yes", sw
        port = int(sw["remote-port"])
        if lab.nat == "random":
            assert port != 4500, sw  # the router remapped hostsec's udp/4500
        else:
            assert port == 4500, sw

        # Idle for longer than the router's UDP timeout: the keepalives hold the mapping.
        idle = CONNTRACK_UDP_TIMEOUT + 2.5
        time.sleep(idle)
        assert _mapping(lab, 4500), lab.conntrack_udp()
        # ... while the udp/500 mapping of IKE_SA_INIT, idle since the float, expired
        wait_until(lambda: not _mapping(lab, 500), 5, "the udp/500 mapping did not expire")
        check_echo(lab.echo(label="after-idle"), 1_000_000)
        assert int(charon_ike(lab, case)["remote-port"]) == port

        frames, others = outer.stop()
        inner_frames, _ = inner.stop()
        check_wire((frames, others))
        # Outside the router: only the router's address, IKE_SA_INIT to udp/500 and the
        # rest to udp/4500 (non-ESP marker), ESP in UDP both ways, keepalives from hostsec.
        assert all(INNER not in (f.src, f.dst) for f in frames), "inner address leaked"
        to500 = [f for f in frames if f.src == OUTER and f.dport == 500]
        assert len(to500) == 1 and to500[0].payload[:4] != b"\0\0\0\0", to500
        ike4500 = [
            f for f in frames if f.src == OUTER and f.dport == 4500 and f.payload[:4] == b"\0" * 4
        ]
        assert ike4500, "no IKE on udp/4500"
        esp_in = [f for f in frames if f.is_esp and f.src == OUTER]
        esp_out = [f for f in frames if f.is_esp and f.dst == OUTER]
        assert len(esp_in) > 300 and len(esp_out) > 300, (len(esp_in), len(esp_out))
        assert {f.dport for f in esp_out} == {port}, {f.dport for f in esp_out}
        keepalives = [f for f in frames if f.src == OUTER and f.payload == b"\xff"]
        assert keepalives and {f.dport for f in keepalives} == {4500}
        idle_keepalives = _longest_gap_keepalives(frames, keepalives)
        assert idle_keepalives >= int(idle / NAT_KEEPALIVE) - 2, idle_keepalives
        # Inside: the same flow from hostsec's own udp/4500.
        assert any(f.is_esp and f.src == INNER and f.sport == 4500 for f in inner_frames)
        assert _outer_ports(frames) <= {port, *(f.sport for f in to500)}


def _longest_gap_keepalives(frames: list[Frame], keepalives: list[Frame]) -> int:
    """Keepalives sent during the idle period: between the two bursts of ESP."""
    esp_times = sorted(f.time for f in frames if f.is_esp)
    gaps = list(itertools.pairwise(esp_times))
    start, end = max(gaps, key=lambda g: g[1] - g[0])
    return sum(1 for k in keepalives if start < k.time < end)


def test_rekeys_through_the_nat(interop_nat: InteropLab) -> None:
    """strongSwan starts CREATE_CHILD_SA exchanges towards the NAT mapping (CHILD SA and IKE
    SA rekeys) and hostsec answers from behind it; then hostsec rekeys both from behind
    it, and its new IKE SA keeps sending the keepalives that hold the mapping."""
    lab = interop_nat
    with lab.case(esp="aes256-sha256-modp2048", dpd="off", sw_extra={"dpd_delay": "0"}) as case:
        lab.establish(case)
        old: dict[str, Any] = charon_ike(lab, case)
        old_child = next(iter(old["child-sas"].values()))
        lab.charon.rekey(child=case.child)
        lab.charon.wait_for(
            lambda c: any(
                ch["state"] == "INSTALLED" and ch["spi-in"] != old_child["spi-in"]
                for ch in charon_ike(lab, case)["child-sas"].values()
            ),
            10,
            "CHILD SA rekeyed",
        )
        check_echo(lab.echo())
        lab.charon.rekey(ike=case.conn)
        lab.charon.wait_for(
            lambda c: [
                s
                for s in c.ike_sas()
                if s["name"] == case.conn and s["initiator-spi"] != old["initiator-spi"]
            ],
            10,
            "IKE SA rekeyed",
        )
        check_echo(lab.echo())
        ike = lab.wait_hs(lambda s: len(lab.ike_of(s, case)) == 1 and lab.ike_of(s, case)[0])
        ike_sa = lab.ike_of(ike, case)[0]
        assert ike_sa["nat"] == "local" and ike_sa["spi_i"] != old["initiator-spi"]

        # hostsec rekeys from behind the NAT
        port = int(charon_ike(lab, case)["remote-port"])
        before = (ike_sa["spi_i"], ike_sa["spi_r"])
        lab.control("rekey", name=case.peer)
        status = lab.wait_hs(
            lambda s: (
                (i := lab.ike_of(s, case))
                and len(i) == 1
                and (i[0]["spi_i"], i[0]["spi_r"]) != before
                and s
            )
        )
        assert lab.ike_of(status, case)[0]["nat"] == "local"
        child_before = next(iter(charon_ike(lab, case)["child-sas"].values()))["spi-in"]
        lab.control("rekey", name=case.flow)
        lab.charon.wait_for(
            lambda c: [
                ch
                for ch in charon_ike(lab, case)["child-sas"].values()
                if ch["state"] == "INSTALLED" and ch["spi-in"] != child_before
            ],
            10,
            "CHILD SA rekeyed by hostsec",
        )
        time.sleep(CONNTRACK_UDP_TIMEOUT + 1.5)  # idle: only the new IKE SA's keepalives
        check_echo(lab.echo(label="after-hostsec-rekeys"))
        assert int(charon_ike(lab, case)["remote-port"]) == port
