"""Key exchange groups: published vectors, round trips, and refusal of bad peer values."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostsec.crypto.dh import (
    KeyExchange,
    KeyExchangeError,
    key_exchange_from_private,
    modp_prime,
    new_key_exchange,
)
from hostsec.crypto.transforms import DH_GROUPS, DhId

from ..conftest import VECTORS

MODP = json.loads((VECTORS / "modp_groups.json").read_text())
ECP = json.loads((VECTORS / "rfc5903_ecp_groups.json").read_text())
X25519 = json.loads((VECTORS / "rfc8031_curve25519.json").read_text())
X448 = json.loads((VECTORS / "rfc7748_x448.json").read_text())

# hostsec.crypto.dh silences cryptography's FFDH deprecation when it is imported; pytest
# imports it inside its own warnings context, so the tests say it again.
pytestmark = pytest.mark.filterwarnings("ignore:Diffie-Hellman over finite fields")

h = bytes.fromhex
_FUZZ_PEERS: dict[DhId, KeyExchange] = {}


@pytest.mark.parametrize("case", MODP["cases"], ids=lambda c: f"group{c['group']}")
def test_modp_primes_are_the_rfc_primes(case: dict[str, str]) -> None:
    assert modp_prime(DhId(int(case["group"]))) == int(case["prime"], 16)


@pytest.mark.parametrize("case", MODP["dh_exchanges"], ids=lambda c: f"group{c['group']}")
def test_modp_exchange_vectors(case: dict[str, str]) -> None:
    group = DhId(int(case["group"]))
    i = key_exchange_from_private(group, h(case["priv_i"]))
    r = key_exchange_from_private(group, h(case["priv_r"]))
    assert i.public_value == h(case["pub_i"])
    assert r.public_value == h(case["pub_r"])
    assert len(i.public_value) == DH_GROUPS[group].public_len
    assert i.shared_secret(r.public_value) == h(case["shared"])
    assert r.shared_secret(i.public_value) == h(case["shared"])


@pytest.mark.parametrize("case", ECP["cases"], ids=lambda c: f"group{c['group']}")
def test_ecp_rfc5903_vectors(case: dict[str, str]) -> None:
    group = DhId(int(case["group"]))
    i = key_exchange_from_private(group, h(case["i"]))
    r = key_exchange_from_private(group, h(case["r"]))
    # RFC 5903 7: the KE payload carries x | y without the 0x04 prefix.
    assert i.public_value == h(case["ke_payload_i"]) == h(case["gix"] + case["giy"])
    assert r.public_value == h(case["ke_payload_r"])
    # RFC 5903 9: the shared secret is the x coordinate only.
    assert i.shared_secret(r.public_value) == h(case["shared_secret"]) == h(case["girx"])
    assert r.shared_secret(i.public_value) == h(case["shared_secret"])


@pytest.mark.parametrize(
    "case",
    [*X25519["cases"], *X448["cases"]],
    ids=lambda c: c["id"],
)
def test_curve_vectors(case: dict[str, str]) -> None:
    group = DhId(int(case["group"]))
    i = key_exchange_from_private(group, h(case["priv_i"]))
    r = key_exchange_from_private(group, h(case["priv_r"]))
    assert i.public_value == h(case["pub_i"])
    assert r.public_value == h(case["pub_r"])
    assert i.shared_secret(h(case["pub_r"])) == h(case["shared"])
    assert r.shared_secret(h(case["pub_i"])) == h(case["shared"])


@pytest.mark.parametrize("group", list(DH_GROUPS), ids=lambda g: DH_GROUPS[g].name)
def test_every_group_round_trip(group: DhId) -> None:
    a = new_key_exchange(group)
    b = new_key_exchange(group)
    assert a.group == group
    assert len(a.public_value) == DH_GROUPS[group].public_len
    assert a.public_value != b.public_value
    secret = a.shared_secret(b.public_value)
    assert secret == b.shared_secret(a.public_value)
    expected_len = DH_GROUPS[group].public_len // (2 if DH_GROUPS[group].kind == "ecp" else 1)
    assert len(secret) == expected_len


def test_unknown_groups_are_refused() -> None:
    for bad in (DhId.NONE, 3, 22, 999):
        with pytest.raises(KeyExchangeError, match="unsupported key exchange group"):
            new_key_exchange(bad)


@pytest.mark.parametrize("group", [DhId.MODP_1024, DhId.MODP_2048])
def test_modp_peer_values_out_of_range(group: DhId) -> None:
    ke = new_key_exchange(group)
    p = modp_prime(group)
    n = DH_GROUPS[group].public_len
    for y in (0, 1, p - 1, p, (1 << (8 * n)) - 1):
        with pytest.raises(KeyExchangeError, match="out of range"):
            ke.shared_secret(y.to_bytes(n, "big"))
    for length in (0, n - 1, n + 1):
        with pytest.raises(KeyExchangeError, match="octets"):
            ke.shared_secret(b"\x02" * length)
    # 2 and p-2 are legal values and give a result of the right length.
    assert len(ke.shared_secret((2).to_bytes(n, "big"))) == n
    assert len(ke.shared_secret((p - 2).to_bytes(n, "big"))) == n


@pytest.mark.parametrize("group", [DhId.ECP_256, DhId.ECP_384, DhId.ECP_521])
def test_ecp_points_off_the_curve_are_refused(group: DhId) -> None:
    ke = new_key_exchange(group)
    other = new_key_exchange(group).public_value
    half = len(other) // 2
    bad_y = other[:half] + bytes([other[half] ^ 1]) + other[half + 1 :]
    for point in (bad_y, bytes(len(other)), b"\xff" * len(other)):
        with pytest.raises(KeyExchangeError, match="not on the curve"):
            ke.shared_secret(point)
    with pytest.raises(KeyExchangeError, match="octets"):
        ke.shared_secret(b"\x04" + other)  # with the X9.62 prefix: wrong length


@pytest.mark.parametrize(("group", "size"), [(DhId.CURVE25519, 32), (DhId.CURVE448, 56)])
def test_curve_low_order_points_give_all_zero_and_are_refused(group: DhId, size: int) -> None:
    ke = new_key_exchange(group)
    for u in (0, 1):  # low-order u-coordinates: X25519/X448 output all zeros
        with pytest.raises(KeyExchangeError, match="all-zero"):
            ke.shared_secret(u.to_bytes(size, "little"))
    with pytest.raises(KeyExchangeError, match="octets"):
        ke.shared_secret(bytes(size - 1))


def test_fixed_private_values_are_checked() -> None:
    with pytest.raises(KeyExchangeError):
        key_exchange_from_private(DhId.MODP_2048, b"\x01")
    with pytest.raises(KeyExchangeError):
        key_exchange_from_private(DhId.ECP_256, bytes(32))
    with pytest.raises(KeyExchangeError):
        key_exchange_from_private(DhId.CURVE25519, bytes(31))


def test_repr_does_not_show_the_private_value() -> None:
    priv = h(X25519["cases"][0]["priv_i"])
    ke = key_exchange_from_private(DhId.CURVE25519, priv)
    assert "curve25519" in repr(ke)
    assert priv.hex() not in repr(ke)
    ke2 = key_exchange_from_private(DhId.ECP_256, h(ECP["cases"][0]["i"]))
    assert ECP["cases"][0]["i"] not in repr(ke2).lower()


@pytest.mark.parametrize(
    "group", [DhId.MODP_2048, DhId.ECP_256, DhId.ECP_521, DhId.CURVE25519, DhId.CURVE448]
)
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_peer_values_only_raise_key_exchange_error(group: DhId, data: bytes) -> None:
    ke = _FUZZ_PEERS.setdefault(group, new_key_exchange(group))
    try:
        secret = ke.shared_secret(data)
    except KeyExchangeError:
        return
    assert len(data) == DH_GROUPS[group].public_len
    assert secret
