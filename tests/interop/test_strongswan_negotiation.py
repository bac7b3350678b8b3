"""What the two ends agree on when they do not configure the same thing: proposal numbers
and INVALID_KE_PAYLOAD retries (RFC 7296 1.2, 3.3.1), traffic selector narrowing and
strongSwan's ``dynamic`` selectors (RFC 7296 2.9), and the refusals (NO_PROPOSAL_CHOSEN,
TS_UNACCEPTABLE, a transport request to a tunnel flow) with a reason on hostsec's side."""

from __future__ import annotations

from typing import Any

import pytest

from .checks import charon_ike, check_echo
from .pair import Case, InteropLab
from .swan import CharonError

pytestmark = pytest.mark.interop


def _sw_child(lab: InteropLab, case: Case) -> dict[str, Any]:
    children = list(charon_ike(lab, case).get("child-sas", {}).values())
    assert len(children) == 1, children
    child: dict[str, Any] = children[0]
    for key in ("local-ts", "remote-ts"):  # strongSwan names the port: tcp/telnet
        child[key] = [ts.replace("/telnet]", "/23]") for ts in child[key]]
    return child


def _reload(lab: InteropLab, case: Case, policy: str | None = None, **conn: Any) -> None:
    """Replace the case's configuration: strongSwan's conn updated with ``conn`` keys
    (``children`` merged into the case's child), hostsec's policy text with ``policy``."""
    base = lab.charon_conn(case)
    child = conn.pop("child", {})
    base.update(conn)
    base["children"][case.child].update(child)
    lab.charon.load_conn(case.conn, base)
    if policy is not None:
        lab.lab.write_policy("hs", policy, file=f"{case.peer}.toml")
        lab.control("rescan")


def test_strongswan_offers_more_than_hostsec_takes(interop: InteropLab) -> None:
    """strongSwan proposes 2 IKE and 3 ESP proposals; hostsec accepts only the last of
    each: it must ask for the second DH group (INVALID_KE_PAYLOAD) and answer with the
    proposal numbers strongSwan gave (2 and 3)."""
    lab = interop
    with lab.case(
        hostsec_starts=False, ike="aes128gcm16-prfsha256-ecp256", esp="aes256-sha256"
    ) as case:
        _reload(
            lab,
            case,
            proposals=["aes256-sha256-modp2048", "aes128gcm16-prfsha256-ecp256"],
            child={"esp_proposals": ["aes128gcm16", "chacha20poly1305", "aes256-sha256"]},
        )
        mark = lab.charon.log_mark()
        lab.charon.initiate(case.conn, case.child)
        log = lab.charon.log_since(mark)
        assert "peer didn't accept DH group MODP_2048, it requested ECP_256" in log, log
        assert "selected proposal: IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256" in log, log
        assert "selected proposal: ESP:AES_CBC_256/HMAC_SHA2_256_128" in log, log
        assert _sw_child(lab, case)["encr-alg"] == "AES_CBC"
        check_echo(lab.echo())


def test_hostsec_offers_more_than_strongswan_takes(interop: InteropLab) -> None:
    """hostsec proposes 2 IKE and 3 ESP proposals; strongSwan accepts only the last of
    each: hostsec retries IKE_SA_INIT with the group strongSwan asks for."""
    lab = interop
    with lab.case(ike="aes128gcm16-prfsha256-ecp256", esp="aes128gcm16") as case:
        policy = (
            lab.hostsec_policy(case)
            .replace(
                'ike_proposals = ["aes128gcm16-prfsha256-ecp256"]',
                'ike_proposals = ["aes256gcm16-prfsha384-ecp384", "aes128gcm16-prfsha256-ecp256"]',
            )
            .replace(
                'esp_proposals = ["aes128gcm16"]',
                'esp_proposals = ["aes256gcm16", "chacha20poly1305", "aes128gcm16"]',
            )
        )
        _reload(lab, case, policy)
        lab.establish(case)
        assert "responder asked for DH group ECP_256" in lab.hs_log()
        assert lab.ike_of(lab.status(), case)[0]["proposal"] == "aes128gcm16-prfsha256-ecp256"
        child = _sw_child(lab, case)
        assert (child["encr-alg"], child["encr-keysize"]) == ("AES_GCM_16", "128")
        check_echo(lab.echo())


@pytest.mark.parametrize("hostsec_starts", [True, False], ids=["hs-initiates", "sw-initiates"])
def test_strongswan_dynamic_selectors(interop: InteropLab, hostsec_starts: bool) -> None:
    """strongSwan's ``dynamic`` (its own and the peer's IKE address) with a tunnel-mode
    CHILD SA, as most strongSwan host-to-host configurations are written."""
    lab = interop
    with lab.case(hostsec_starts=hostsec_starts) as case:
        _reload(lab, case, child={"local_ts": ["dynamic[tcp/23]"], "remote_ts": ["dynamic[tcp]"]})
        lab.establish(case)
        child = _sw_child(lab, case)
        assert child["local-ts"] == [f"{lab.sw_addr}/32[tcp/23]"], child
        assert child["remote-ts"] == [f"{lab.hs_addr}/32[tcp]"], child
        check_echo(lab.echo())


def test_hostsec_narrows_wide_selectors(interop: InteropLab) -> None:
    """strongSwan asks for everything between the two /24s; hostsec, the responder,
    narrows it to its flow (tcp/23 between the two hosts)."""
    lab = interop
    with lab.case(hostsec_starts=False) as case:
        _reload(
            lab, case, child={"local_ts": ["198.51.100.0/24"], "remote_ts": ["198.51.100.0/24"]}
        )
        lab.establish(case)
        child = _sw_child(lab, case)
        assert child["local-ts"] == [f"{lab.sw_addr}/32[tcp/23]"], child
        assert child["remote-ts"] == [f"{lab.hs_addr}/32[tcp]"], child
        check_echo(lab.echo())


def test_strongswan_narrows_hostsec(interop: InteropLab) -> None:
    """hostsec proposes all of tcp from its address; strongSwan allows only source ports
    1024-65535: hostsec installs the narrowed selectors (and its inbound checks use them)."""
    lab = interop
    with lab.case() as case:
        _reload(lab, case, child={"remote_ts": [f"{lab.hs_addr}/32[tcp/1024-65535]"]})
        lab.establish(case)
        child = _sw_child(lab, case)
        assert child["remote-ts"] == [f"{lab.hs_addr}/32[tcp/1024-65535]"], child
        flow = lab.flow_status(lab.status(), case)
        assert flow["state"] == "up"
        check_echo(lab.echo())


def test_ts_unacceptable(interop: InteropLab) -> None:
    """strongSwan asks for tcp/25, which no hostsec flow covers: TS_UNACCEPTABLE; the IKE
    SA is up, no CHILD SA on either side."""
    lab = interop
    with lab.case(hostsec_starts=False) as case:
        _reload(lab, case, child={"local_ts": [f"{lab.sw_addr}/32[tcp/25]"]})
        mark = lab.charon.log_mark()
        with pytest.raises(CharonError):
            lab.charon.initiate(case.conn, case.child)
        assert "TS_UNACCEPTABLE" in lab.charon.log_since(mark)
        assert not charon_ike(lab, case).get("child-sas")
        status = lab.wait_hs(lambda s: bool(lab.ike_of(s, case)))
        assert not lab.flow_status(status, case)["sas"]
        assert "no CHILD SA configuration matches the peer's traffic selectors" in lab.hs_log()


def test_transport_request_to_a_tunnel_flow(interop: InteropLab) -> None:
    """strongSwan asks for transport mode where hostsec's flow says tunnel: hostsec refuses
    (NO_PROPOSAL_CHOSEN) instead of silently installing another mode."""
    lab = interop
    with lab.case(hostsec_starts=False) as case:
        _reload(lab, case, child={"mode": "transport"})
        mark = lab.charon.log_mark()
        with pytest.raises(CharonError):
            lab.charon.initiate(case.conn, case.child)
        assert "NO_PROPOSAL_CHOSEN" in lab.charon.log_since(mark)
        assert "peer asked for transport mode, configured tunnel" in lab.hs_log()


@pytest.mark.parametrize("hostsec_starts", [True, False], ids=["hs-initiates", "sw-initiates"])
def test_no_common_ike_proposal(interop: InteropLab, hostsec_starts: bool) -> None:
    lab = interop
    with lab.case(hostsec_starts=hostsec_starts, ike="aes256gcm16-prfsha384-ecp384") as case:
        _reload(lab, case, proposals=["aes128-sha256-modp2048"])
        mark = lab.charon.log_mark()
        if hostsec_starts:
            lab.control("up", name=case.flow)
            lab.wait_hs(lambda s: lab.flow_status(s, case)["state"] == "failed", timeout=10)
            assert "NO_PROPOSAL_CHOSEN" in lab.flow_status(lab.status(), case)["error"]
        else:
            with pytest.raises(CharonError):
                lab.charon.initiate(case.conn, case.child)
            assert "IKE_SA_INIT: no acceptable proposal" in lab.hs_log()
        assert "IKE_SA_INIT response 0 [ N(NO_PROP) ]" in lab.charon.log_since(mark)
        assert not lab.ike_of(lab.status(), case)


@pytest.mark.parametrize("hostsec_starts", [True, False], ids=["hs-initiates", "sw-initiates"])
def test_forced_encapsulation(interop: InteropLab, hostsec_starts: bool) -> None:
    """``encapsulation = "force"``: hostsec fakes its NAT_DETECTION_SOURCE_IP too (RFC 7296
    2.23), both ends see the other behind a NAT, and ESP in UDP works as with ``auto``."""
    lab = interop
    with lab.case(hostsec_starts=hostsec_starts, encapsulation="force") as case:
        status = lab.establish(case)
        assert lab.ike_of(status, case)[0]["nat"] == "local"  # forced: as if behind one
        sw = charon_ike(lab, case)
        assert sw.get("nat-remote") == "yes", sw
        assert "udp_encapsulation" in lab.flow_status(status, case)["sas"][0]
        assert all(sa["udp_encapsulation"] for sa in lab.flow_status(status, case)["sas"])
        check_echo(lab.echo())
