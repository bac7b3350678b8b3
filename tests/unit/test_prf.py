"""IKE PRFs (HMAC, AES-XCBC-PRF-128, AES-CMAC-PRF-128) and prf+ against published vectors."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from hostsec.crypto.prf import Prf, cmac_prf_key, prf_plus, xcbc_prf_key
from hostsec.crypto.transforms import PRF, PrfId

from ..conftest import VECTORS

RFC4868 = json.loads((VECTORS / "rfc4868_hmac_sha2.json").read_text())
OTHER = json.loads((VECTORS / "ike_prf_aes_hmac.json").read_text())
IKEV2 = json.loads((VECTORS / "ikev2_kdf.json").read_text())

h = bytes.fromhex
_BY_HASH = {
    "sha256": PrfId.HMAC_SHA2_256,
    "sha384": PrfId.HMAC_SHA2_384,
    "sha512": PrfId.HMAC_SHA2_512,
}
_BY_NAME = {
    "aes128-xcbc": PrfId.AES128_XCBC,
    "aes128-cmac": PrfId.AES128_CMAC,
    "hmac-md5": PrfId.HMAC_MD5,
    "hmac-sha1": PrfId.HMAC_SHA1,
    "hmac-sha256": PrfId.HMAC_SHA2_256,
    "hmac-sha384": PrfId.HMAC_SHA2_384,
    "hmac-sha512": PrfId.HMAC_SHA2_512,
}


@pytest.mark.parametrize(
    "case", [c for c in RFC4868["cases"] if c["kind"] == "prf"], ids=lambda c: c["id"]
)
def test_rfc4868_prf(case: dict[str, str]) -> None:
    prf = Prf(_BY_HASH[case["hash"]])
    assert prf(h(case["key"]), h(case["data"])) == h(case["prf_output"])


@pytest.mark.parametrize("case", OTHER["cases"], ids=lambda c: c["id"])
def test_aes_and_legacy_hmac_prfs(case: dict[str, str]) -> None:
    prf = Prf(_BY_NAME[case["prf"]])
    assert prf(h(case["key"]), h(case["data"])) == h(case["output"])
    assert len(h(case["output"])) == prf.output_len


def test_rfc4434_key_rule() -> None:
    # Short keys are zero-padded on the right; long keys are reduced under the zero key.
    assert xcbc_prf_key(h("00010203040506070809")) == h("00010203040506070809") + bytes(6)
    long_key = h("000102030405060708090a0b0c0d0e0fedcb")
    reduced = Prf(PrfId.AES128_XCBC)(bytes(16), long_key)
    assert xcbc_prf_key(long_key) == reduced
    data = b"rule"
    assert Prf(PrfId.AES128_XCBC)(long_key, data) == Prf(PrfId.AES128_XCBC)(reduced, data)


def test_rfc4615_key_rule() -> None:
    prf = Prf(PrfId.AES128_CMAC)
    for key in (h("00010203040506070809"), h("000102030405060708090a0b0c0d0e0fedcb")):
        assert cmac_prf_key(key) == prf(bytes(16), key)
    assert cmac_prf_key(bytes(range(16))) == bytes(range(16))


@pytest.mark.parametrize("prf_id", list(PRF))
def test_keyed_form_matches_the_call(prf_id: PrfId) -> None:
    prf = Prf(prf_id)
    f = prf.keyed(b"k" * 20)
    assert f(b"one") == prf(b"k" * 20, b"one")
    assert f(b"two") == prf(b"k" * 20, b"two")  # the keyed state is reused, not consumed
    assert f(b"one") != f(b"two")
    assert prf.key_len == PRF[prf_id].key_len


@pytest.mark.parametrize(
    "case",
    [c for c in IKEV2["cases"] if c.get("kind", "").startswith(("prf+", "DKM"))],
    ids=lambda c: c["id"],
)
def test_prf_plus_vectors(case: dict[str, str]) -> None:
    out = h(case["output"])
    assert prf_plus(_BY_NAME[case["prf"]], h(case["key"]), h(case["seed"]), len(out)) == out


def test_prf_plus_definition() -> None:
    # RFC 7296 2.13, computed independently with the standard library.
    key, seed = b"K" * 32, b"S" * 40
    t1 = hmac.new(key, seed + b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(key, t1 + seed + b"\x02", hashlib.sha256).digest()
    t3 = hmac.new(key, t2 + seed + b"\x03", hashlib.sha256).digest()
    assert prf_plus(PrfId.HMAC_SHA2_256, key, seed, 80) == (t1 + t2 + t3)[:80]
    assert prf_plus(PrfId.HMAC_SHA2_256, key, seed, 0) == b""
    assert prf_plus(Prf(PrfId.HMAC_SHA2_256), key, seed, 33) == (t1 + t2)[:33]


def test_prf_plus_stops_at_255_blocks() -> None:
    prf = Prf(PrfId.HMAC_SHA1)
    out = prf_plus(prf, b"k", b"s", 255 * prf.output_len)
    assert len(out) == 255 * 20
    with pytest.raises(ValueError, match="at most"):
        prf_plus(prf, b"k", b"s", 255 * prf.output_len + 1)
    with pytest.raises(ValueError):
        prf_plus(prf, b"k", b"s", -1)


def test_unknown_prf() -> None:
    with pytest.raises(ValueError, match="unsupported PRF 3"):
        Prf(3)  # PRF_HMAC_TIGER
    assert "sha2-256" in repr(Prf(PrfId.HMAC_SHA2_256))
