"""hostsec against strongSwan 5.9 over IPv6: IKEv2 over UDP/500 and 4500 between
2001:db8::1 and 2001:db8::2, a tunnel-mode CHILD SA in UDP/4500 (what strongSwan's
userspace backend carries), 1 MB echoed byte-exact over tcp/23 both ways, and a capture
that shows nothing but IKE and ESP in UDP for the session, all over IPv6."""

from __future__ import annotations

import pytest

from .checks import check_echo, check_established, check_no_drops, check_wire
from .pair import InteropLab

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(
    ("hostsec_starts", "auth"),
    [(True, "psk"), (False, "psk"), (True, "ecdsa")],
    ids=["hs-initiates-psk", "sw-initiates-psk", "hs-initiates-ecdsa"],
)
def test_ipv6_tunnel(interop6: InteropLab, hostsec_starts: bool, auth: str) -> None:
    lab = interop6
    assert ":" in lab.hs_addr and ":" in lab.sw_addr
    with lab.case(auth=auth, hostsec_starts=hostsec_starts) as case:
        cap = lab.capture()
        status = lab.establish(case)
        check_established(lab, case, status)
        (ike,) = lab.ike_of(status, case)
        assert ike["remote"].startswith(lab.sw_addr), ike
        check_echo(lab.echo())
        check_no_drops(lab, case)
        full, _other = cap.stop()
        counts = check_wire((full, _other))
        assert counts["ike500"] == 2 and counts["ike4500"] >= 2, counts
        assert all(f.version == 6 for f in full if f.is_esp), "ESP outside IPv6"
        child = next(iter(lab.charon.child_sas()))
        assert int(child["bytes-in"]) >= 1_000_000 and int(child["bytes-out"]) >= 1_000_000
