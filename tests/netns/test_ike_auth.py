"""Authentication failures between two hostsec agents: a wrong pre-shared key, and
certificates from an untrusted CA, expired, or for another identity. Each is refused with
a reason that `hostsec status` shows on both sides, and no SA is left anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from hostsec.agent.lab import AgentLab, peer_toml, psk_peer, telnet_flows
from hostsec.agent.labpki import Authority, install_identity

pytestmark = pytest.mark.netns

IKE: dict[str, Any] = {
    "ike_proposals": ["aes128gcm16-prfsha256-ecp256"],
    "esp_proposals": ["aes128gcm16"],
}


def _flow(status: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in status["flows"] if f["name"] == "telnet")


def _refused(status: dict[str, Any], peer: str) -> bool:
    return peer in status["auth_failures"] and _flow(status)["state"] == "failed"


def _no_sa(status: dict[str, Any]) -> bool:
    return not status["ike_sas"] and not _flow(status)["sas"]


def _attempt(lab: AgentLab) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start both agents, knock on tcp/23 once, and wait for both sides to give up."""
    lab.start_agents()
    lab.serve_echo("b", 23)
    result = lab.echo("a", lab.address("b"), 23, 1000, timeout=1.0)
    assert not result["ok"], "the session must not get through"
    status_a = lab.wait_for("a", lambda s: _refused(s, "b"))
    status_b = lab.wait_for("b", lambda s: _refused(s, "a"))
    # No SA is left (a responder that installed its CHILD SA before the initiator refused
    # the responder's certificate removes it; the inbound half lingers a few seconds for
    # packets in flight), and the status still says why.
    status_a = lab.wait_for("a", _no_sa, timeout=10)
    status_b = lab.wait_for("b", _no_sa, timeout=10)
    return status_a, status_b


def test_wrong_psk_is_refused_on_both_sides() -> None:
    with AgentLab(prefix="hsauth") as lab:
        a, b = lab.address("a"), lab.address("b")
        client, server = telnet_flows("b", "a", esp_proposals=IKE["esp_proposals"])
        ike: dict[str, Any] = {"ike_proposals": IKE["ike_proposals"]}
        peer_a = psk_peer(lab, "a", "b", b, psk="the-right-key-0123456789", local_id=a, **ike)
        peer_b = psk_peer(lab, "b", "a", a, psk="a-wrong-key-9876543210", local_id=b, **ike)
        lab.write_policy("a", peer_a + client)
        lab.write_policy("b", peer_b + server)
        status_a, status_b = _attempt(lab)
        # The responder checked the AUTH payload and says why; the initiator was told.
        assert "AUTH" in status_b["auth_failures"]["a"], status_b["auth_failures"]
        assert "AUTHENTICATION_FAILED" in status_a["auth_failures"]["b"]
        for status in (status_a, status_b):
            assert _flow(status)["error"].startswith("authentication failed: "), _flow(status)
        assert "authentication failed" in lab.log("a")
        assert "authentication failed" in lab.log("b")
        # The key never appears in a log or the status.
        for text in (lab.log("a"), lab.log("b"), str(status_a), str(status_b)):
            assert "the-right-key" not in text and "a-wrong-key" not in text


# ---------------------------------------------------------------------- certificates


CASES = {
    # case: (whose certificate is bad, what the verifying side must say)
    "untrusted-ca": ("a", "untrusted issuer"),
    "expired": ("b", "expired"),
    "identity-mismatch": ("a", "identity mismatch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_certificate_is_refused_with_a_reason(case: str) -> None:
    bad, reason = CASES[case]
    with AgentLab(prefix="hscert") as lab:
        a, b = lab.address("a"), lab.address("b")
        # The CA has been valid for a month: the expired certificate is expired, not early.
        good_ca = Authority.create("hostsec lab CA", days=30, since=30)
        certs = {name: good_ca.issue(f"{name}.lab", [lab.address(name)]) for name in ("a", "b")}
        if case == "untrusted-ca":
            certs[bad] = Authority.create("rogue CA").issue(f"{bad}.lab", [lab.address(bad)])
        elif case == "expired":
            certs[bad] = good_ca.issue(f"{bad}.lab", [lab.address(bad)], expired=True)
        else:  # a valid certificate, but for another address than the identity claimed
            certs[bad] = good_ca.issue(f"{bad}.lab", ["198.51.100.77"])
        for name in ("a", "b"):
            install_identity(lab, name, good_ca.pem, certs[name])
        client, server = telnet_flows("b", "a", esp_proposals=IKE["esp_proposals"])
        ike: dict[str, Any] = {"ike_proposals": IKE["ike_proposals"]}
        lab.write_policy(
            "a", peer_toml("b", b, auth="cert", local_id=a, remote_id=b, **ike) + client
        )
        lab.write_policy(
            "b", peer_toml("a", a, auth="cert", local_id=b, remote_id=a, **ike) + server
        )
        status_a, status_b = _attempt(lab)
        verifier, other = ("b", "a") if bad == "a" else ("a", "b")
        statuses = {"a": status_a, "b": status_b}
        detail = statuses[verifier]["auth_failures"][other]
        assert "certificate refused" in detail and reason in detail, detail
        assert reason in _flow(statuses[verifier])["error"]
        # The side whose certificate was refused learns it from the peer's notify.
        told = statuses[other]["auth_failures"][verifier]
        assert "AUTHENTICATION_FAILED" in told or "refused our AUTH" in told, told
        assert _flow(statuses[other])["error"].startswith("authentication failed")
