"""Assertions shared by the interop tests: both sides agree on an SA, the wire shows only
ESP in UDP, the session's bytes came back intact."""

from __future__ import annotations

from typing import Any

from hostsec.agent.echo import stream
from hostsec.platform.capture import Frame

from .pair import ECHO_BYTES, Case, InteropLab, wire_summary

# strongSwan's names for what the proposals choose (list-sas fields)
ENCR = {
    "aes128gcm16": ("AES_GCM_16", "128"),
    "aes256gcm16": ("AES_GCM_16", "256"),
    "aes256": ("AES_CBC", "256"),
    "chacha20poly1305": ("CHACHA20_POLY1305", None),
}
DH = {
    "ecp256": "ECP_256",
    "ecp384": "ECP_384",
    "modp2048": "MODP_2048",
    "curve25519": "CURVE_25519",
}


def _encr_of(proposal: str) -> str:
    return proposal.split("-", maxsplit=1)[0]


def charon_ike(lab: InteropLab, case: Case) -> dict[str, Any]:
    sas = [s for s in lab.charon.ike_sas() if s["name"] == case.conn]
    assert len(sas) == 1, f"strongSwan has {len(sas)} IKE SAs for {case.conn}: {sas}"
    return sas[0]


def check_established(lab: InteropLab, case: Case, status: dict[str, Any]) -> None:
    """Both ends show one IKE SA and one tunnel-mode CHILD SA in UDP with what was asked."""
    ikes = lab.ike_of(status, case)
    assert len(ikes) == 1, ikes
    ike = ikes[0]
    assert ike["initiator"] is case.hostsec_starts
    assert ike["proposal"] == case.ike
    assert ike["local"].endswith(":4500") and ike["remote"].endswith(":4500"), ike
    # libipsec fakes its NAT_DETECTION_SOURCE_IP (recipe pitfall 11): hostsec sees the peer
    # as NATed; behind the masquerading router it also sees itself behind a NAT.
    assert ike["nat"] == ("remote" if lab.nat is None else "local"), ike
    flow = lab.flow_status(status, case)
    assert flow["state"] == "up", flow
    sas = flow["sas"]
    assert {sa["direction"] for sa in sas} == {"in", "out"}, sas
    for sa in sas:
        assert sa["mode"] == "tunnel" and sa["udp_encapsulation"] and sa["keying"] == "ike", sa
    hs_in = {sa["spi"] for sa in sas if sa["direction"] == "in"}
    hs_out = {sa["spi"] for sa in sas if sa["direction"] == "out"}

    sw = charon_ike(lab, case)
    assert sw["state"] == "ESTABLISHED", sw
    assert sw.get("initiator", "no") == ("no" if case.hostsec_starts else "yes"), sw
    encr, bits = ENCR[_encr_of(case.ike)]
    assert sw["encr-alg"] == encr and (bits is None or sw.get("encr-keysize") == bits), sw
    assert sw["dh-group"] == DH[case.ike.rsplit("-", 1)[1]], sw
    assert sw.get("nat-remote") == "yes" or sw.get("nat-any") == "yes", sw
    children = list(sw.get("child-sas", {}).values())
    assert len(children) == 1, children
    ch = children[0]
    assert ch["state"] == "INSTALLED" and ch["mode"] == "TUNNEL" and ch["encap"] == "yes", ch
    assert ch["protocol"] == "ESP", ch
    esp_encr, esp_bits = ENCR[_encr_of(case.esp)]
    assert ch["encr-alg"] == esp_encr and (esp_bits is None or ch.get("encr-keysize") == esp_bits)
    # The SPIs agree: strongSwan's inbound is hostsec's outbound and vice versa.
    assert {f"0x{ch['spi-in']}"} == hs_out and {f"0x{ch['spi-out']}"} == hs_in, (ch, sas)


def check_echo(result: dict[str, Any], nbytes: int = ECHO_BYTES) -> None:
    assert result.get("ok") is True, result
    assert result["bytes"] == nbytes, result


def check_wire(
    captured: tuple[list[Frame], list[Frame]], nbytes: int = ECHO_BYTES, label: str = "interop"
) -> dict[str, int]:
    """Only ESP in UDP carried the session: no raw ESP, no cleartext tcp/23, the payload
    nowhere visible (``captured``: all frames, and all but udp/500 and udp/4500)."""
    frames, other = captured
    payload = stream(nbytes, label)
    counts = wire_summary(frames, payload)
    others = wire_summary(other, payload)
    for c in (counts, others):
        assert c["raw_esp"] == 0, c
        assert c["ip_fragments"] == 0, c  # the TUN MTU leaves room for ESP in UDP
        assert c["clear_tcp23"] == 0, c
        assert c["payload_visible"] == 0, c
    assert others["esp_in_udp"] == 0, others
    # 1 MB each way in ~1400-octet packets (tcpdump may miss some at this rate; the peer's
    # counters say how much it carried)
    assert counts["esp_in_udp"] >= nbytes // 1500, counts
    return counts


def check_no_drops(lab: InteropLab, case: Case) -> None:
    """Nothing that hostsec received or sent for the case was dropped (no ICV failure,
    replay, malformed packet, unknown SPI, selector mismatch) and no IKE message either."""
    status = lab.status()
    flow = lab.flow_status(status, case)
    for sa in flow["sas"]:
        assert not sa["drops"], sa
    assert not flow["drops_out"], flow
    assert not status["drops"], status["drops"]
    assert not status["ike_drops"], status["ike_drops"]
