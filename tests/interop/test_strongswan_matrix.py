"""hostsec against strongSwan 5.9: who initiates x authentication x IKE proposal x ESP
proposal (every pair of them; all 72 combinations with HOSTSEC_INTEROP_FULL=1), each with
1 MB echoed byte-exact over tcp/23 through a tunnel-mode CHILD SA in UDP/4500, and a capture
that shows nothing but ESP in UDP for the session.

One charon and one hostsec agent serve the whole module; each case loads its own
strongSwan connection over vici and its own hostsec policy file, and removes both after.
"""

from __future__ import annotations

import itertools
import os

import pytest

from .checks import check_echo, check_established, check_no_drops, check_wire
from .pair import InteropLab

pytestmark = pytest.mark.interop

IKE_PROPOSALS = [
    "aes128gcm16-prfsha256-ecp256",
    "aes256-sha256-modp2048",
    "aes256gcm16-prfsha384-ecp384",
    "chacha20poly1305-prfsha256-curve25519",
]
ESP_PROPOSALS = ["aes128gcm16", "aes256-sha256", "chacha20poly1305"]
AUTHS = ["psk", "rsa", "ecdsa"]
ROLES = {"hs-initiates": True, "sw-initiates": False}


def _matrix() -> list[object]:
    """Every IKE x ESP proposal both ways with PSK; with RSA and ECDSA certificates every
    IKE proposal both ways (the PRF and the signature hash meet the authentication there),
    the ESP proposals taken in turn (the CHILD SA does not depend on how IKE authenticated).
    40 cases instead of 72, every pair of dimensions covered."""
    if os.environ.get("HOSTSEC_INTEROP_FULL") == "1":
        full = itertools.product(ROLES, AUTHS, IKE_PROPOSALS, ESP_PROPOSALS)
        return [pytest.param(*c, id="-".join(c)) for c in full]
    cases = [
        (role, "psk", ike, esp)
        for role, ike, esp in itertools.product(ROLES, IKE_PROPOSALS, ESP_PROPOSALS)
    ]
    for role, auth, (i, ike) in itertools.product(ROLES, AUTHS[1:], enumerate(IKE_PROPOSALS)):
        esp = ESP_PROPOSALS[(i + AUTHS.index(auth)) % len(ESP_PROPOSALS)]
        cases.append((role, auth, ike, esp))
    return [pytest.param(*c, id="-".join(c)) for c in cases]


MATRIX = _matrix()


@pytest.mark.parametrize(("role", "auth", "ike", "esp"), MATRIX)
def test_matrix(interop: InteropLab, role: str, auth: str, ike: str, esp: str) -> None:
    lab = interop
    with lab.case(auth=auth, ike=ike, esp=esp, hostsec_starts=ROLES[role]) as case:
        cap = lab.capture()
        mark = lab.charon.log_mark()
        status = lab.establish(case)
        check_established(lab, case, status)
        check_echo(lab.echo())
        check_no_drops(lab, case)
        if auth == "rsa":
            # IKE_AUTH with an RSA certificate does not fit in 1280 octets: both ends
            # fragment it (RFC 7383) and reassemble the other's.
            log = lab.charon.log_since(mark)
            assert "reassembled fragmented IKE message" in log, log
            assert "splitting IKE message" in log, log
        counts = check_wire(cap.stop())
        # IKE: IKE_SA_INIT on udp/500, everything after it on udp/4500 (RFC 7296 2.23)
        assert counts["ike500"] == 2, counts
        assert counts["ike4500"] >= 2, counts
        child = next(iter(lab.charon.child_sas()))
        assert int(child["bytes-in"]) >= 1_000_000 and int(child["bytes-out"]) >= 1_000_000
