"""IKEv2 and IKEv1 key derivation: NIST CAVP vectors byte-exact, splits and lengths."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from hostsec.crypto import keys
from hostsec.crypto.prf import Prf
from hostsec.crypto.proposals import Encryption, Protocol, parse_proposal
from hostsec.crypto.transforms import EncrId, IntegId, PrfId

from ..conftest import VECTORS

IKEV2 = json.loads((VECTORS / "ikev2_kdf.json").read_text())
IKEV1 = json.loads((VECTORS / "ikev1_kdf.json").read_text())
CAVP = next(c for c in IKEV2["cases"] if c["id"] == "CAVP-IKEv2-SHA1-COUNT0")

h = bytes.fromhex
_PRF = {
    "hmac-sha1": PrfId.HMAC_SHA1,
    "hmac-sha256": PrfId.HMAC_SHA2_256,
    "hmac-sha384": PrfId.HMAC_SHA2_384,
    "hmac-sha512": PrfId.HMAC_SHA2_512,
}
AES128_CBC = Encryption(EncrId.AES_CBC, 128)


# ---------------------------------------------------------------- IKEv2, CAVP chain


def _cavp_ike_keys() -> keys.IkeSaKeys:
    c = CAVP
    return keys.derive_ike_sa(
        PrfId.HMAC_SHA1,
        h(c["g_ir"]),
        h(c["ni"]),
        h(c["nr"]),
        h(c["spi_i"]),
        h(c["spi_r"]),
        AES128_CBC,
        IntegId.HMAC_SHA1_96,
    )


def test_cavp_skeyseed() -> None:
    c = CAVP
    got = keys.skeyseed(PrfId.HMAC_SHA1, h(c["ni"]), h(c["nr"]), h(c["g_ir"]))
    assert got == h(c["skeyseed"])


def test_cavp_dkm_split_in_rfc_order() -> None:
    k = _cavp_ike_keys()
    dkm = h(CAVP["dkm"])
    # The example split of the vector file: 20+20+20+16+16+20+20 = 132 octets.
    assert [len(x) for x in (k.sk_d, k.sk_ai, k.sk_ar, k.sk_ei, k.sk_er, k.sk_pi, k.sk_pr)] == [
        20,
        20,
        20,
        16,
        16,
        20,
        20,
    ]
    assert k.sk_d + k.sk_ai + k.sk_ar + k.sk_ei + k.sk_er + k.sk_pi + k.sk_pr == dkm
    assert k.sk_d == dkm[:20]
    assert k.sk_er == dkm[76:92]
    assert k.sk_pr == dkm[112:]


def test_cavp_child_sa_keymat_without_and_with_pfs() -> None:
    c = CAVP
    k = _cavp_ike_keys()
    ni, nr = h(c["ni"]), h(c["nr"])
    assert keys.child_keymat(PrfId.HMAC_SHA1, k.sk_d, ni, nr, 132) == h(c["dkm_child_sa"])
    pfs = keys.child_keymat(PrfId.HMAC_SHA1, k.sk_d, ni, nr, 132, h(c["g_ir_new"]))
    assert pfs == h(c["dkm_child_sa_dh"])


@pytest.mark.parametrize("pfs", [False, True])
def test_cavp_child_sa_split(pfs: bool) -> None:
    c = CAVP
    k = _cavp_ike_keys()
    g = h(c["g_ir_new"]) if pfs else None
    km = h(c["dkm_child_sa_dh"] if pfs else c["dkm_child_sa"])
    # AES-CBC-128 + HMAC-SHA1-96: encr_i, integ_i, encr_r, integ_r (RFC 7296 2.17).
    cs = keys.derive_child_sa_keys(
        PrfId.HMAC_SHA1, k.sk_d, h(c["ni"]), h(c["nr"]), AES128_CBC, IntegId.HMAC_SHA1_96, g
    )
    assert (cs.encr_i, cs.integ_i, cs.encr_r, cs.integ_r) == (
        km[0:16],
        km[16:36],
        km[36:52],
        km[52:72],
    )
    # AES-GCM-16 with a 256-bit key: 32 octets of key and 4 of salt each way, no integrity.
    gcm = keys.derive_child_sa_keys(
        PrfId.HMAC_SHA1,
        k.sk_d,
        h(c["ni"]),
        h(c["nr"]),
        Encryption(EncrId.AES_GCM_16, 256),
        IntegId.NONE,
        g,
    )
    assert (gcm.encr_i, gcm.integ_i, gcm.encr_r, gcm.integ_r) == (km[:36], b"", km[36:72], b"")
    # AH with HMAC-SHA2-256-128: no encryption key, 32 octets of integrity key each way.
    ah = keys.derive_child_sa_keys(
        PrfId.HMAC_SHA1, k.sk_d, h(c["ni"]), h(c["nr"]), None, IntegId.HMAC_SHA2_256_128, g
    )
    assert (ah.encr_i, ah.integ_i, ah.encr_r, ah.integ_r) == (b"", km[:32], b"", km[32:64])


def test_cavp_rekey_skeyseed() -> None:
    c = CAVP
    k = _cavp_ike_keys()
    got = keys.rekey_skeyseed(PrfId.HMAC_SHA1, k.sk_d, h(c["g_ir_new"]), h(c["ni"]), h(c["nr"]))
    assert got == h(c["skeyseed_rekey"])
    # The rekeyed SA's keys are prf+ of that SKEYSEED with the new SA's nonces and SPIs.
    new_spi_i, new_spi_r = b"\x11" * 8, b"\x22" * 8
    rekeyed = keys.derive_rekeyed_ike_sa(
        PrfId.HMAC_SHA1,
        k.sk_d,
        PrfId.HMAC_SHA2_256,
        h(c["g_ir_new"]),
        h(c["ni"]),
        h(c["nr"]),
        new_spi_i,
        new_spi_r,
        Encryption(EncrId.AES_GCM_16, 128),
        IntegId.NONE,
    )
    direct = keys.derive_ike_sa_keys(
        PrfId.HMAC_SHA2_256,
        got,
        h(c["ni"]),
        h(c["nr"]),
        new_spi_i,
        new_spi_r,
        Encryption(EncrId.AES_GCM_16, 128),
        IntegId.NONE,
    )
    assert rekeyed == direct
    assert len(rekeyed.sk_d) == 32 and rekeyed.sk_ai == b"" and len(rekeyed.sk_ei) == 20


@pytest.mark.parametrize("case", [c for c in IKEV2["cases"] if "ni_nr" in c], ids=lambda c: c["id"])
def test_strongswan_cavp_skeyseed(case: dict[str, str]) -> None:
    ni_nr = h(case["ni_nr"])
    half = len(ni_nr) // 2
    got = keys.skeyseed(_PRF[case["prf"]], ni_nr[:half], ni_nr[half:], h(case["g_ir"]))
    assert got == h(case["skeyseed"])


def test_xcbc_and_cmac_skeyseed_use_64_bits_of_each_nonce() -> None:
    # RFC 7296 2.14: the fixed-key PRFs take the first 64 bits of Ni and of Nr as key.
    ni, nr, g = bytes(range(32)), bytes(range(100, 132)), b"\x42" * 256
    for prf_id in (PrfId.AES128_XCBC, PrfId.AES128_CMAC):
        prf = Prf(prf_id)
        assert keys.skeyseed(prf_id, ni, nr, g) == prf(ni[:8] + nr[:8], g)
        assert keys.skeyseed(prf_id, ni, nr, g) != prf(ni + nr, g)
        assert len(keys.skeyseed(prf_id, ni, nr, g)) == 16
    # Others take the whole nonces.
    assert keys.skeyseed(PrfId.HMAC_SHA2_256, ni, nr, g) == Prf(PrfId.HMAC_SHA2_256)(ni + nr, g)


# ---------------------------------------------------------------- lengths and proposals


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("aes128-sha256-prfsha256-modp2048", (32, 32, 16, 32)),
        ("aes256-sha384-modp2048", (48, 48, 32, 48)),
        ("aes128gcm16-prfsha256-ecp256", (32, 0, 20, 32)),
        ("aes256gcm16-prfsha384-ecp384", (48, 0, 36, 48)),
        ("chacha20poly1305-prfsha256-curve25519", (32, 0, 36, 32)),
        ("aes128ccm16-prfsha256-ecp256", (32, 0, 19, 32)),
        ("aes128-aesxcbc-prfaesxcbc-modp2048", (16, 16, 16, 16)),
        ("3des-sha1-modp1024", (20, 20, 24, 20)),
    ],
)
def test_ike_key_lengths(text: str, lengths: tuple[int, int, int, int]) -> None:
    p = parse_proposal(text, Protocol.IKE)
    integ = p.integrity[0] if p.integrity else IntegId.NONE
    got = keys.ike_key_lengths(p.prf[0], p.encryption[0], integ)
    assert (got.sk_d, got.sk_a, got.sk_e, got.sk_p) == lengths
    k = keys.derive_ike_sa_for(p, b"g" * 32, b"i" * 32, b"r" * 32, b"I" * 8, b"R" * 8)
    assert (len(k.sk_d), len(k.sk_ai), len(k.sk_ei), len(k.sk_pr)) == lengths


def test_proposal_helpers_match_the_explicit_calls() -> None:
    ike = parse_proposal("aes256gcm16-prfsha384-ecp384", Protocol.IKE)
    args = (b"g" * 48, b"i" * 32, b"r" * 32, b"I" * 8, b"R" * 8)
    explicit = keys.derive_ike_sa(
        PrfId.HMAC_SHA2_384, *args, Encryption(EncrId.AES_GCM_16, 256), IntegId.NONE
    )
    assert keys.derive_ike_sa_for(ike, *args) == explicit
    esp = parse_proposal("aes128-sha256", Protocol.ESP)
    child = keys.derive_child_sa_for(PrfId.HMAC_SHA2_384, explicit.sk_d, esp, b"n" * 32, b"m" * 32)
    assert child == keys.derive_child_sa_keys(
        PrfId.HMAC_SHA2_384,
        explicit.sk_d,
        b"n" * 32,
        b"m" * 32,
        Encryption(EncrId.AES_CBC, 128),
        IntegId.HMAC_SHA2_256_128,
    )
    ah = parse_proposal("sha256", Protocol.AH)
    ah_keys = keys.derive_child_sa_for(PrfId.HMAC_SHA2_384, explicit.sk_d, ah, b"n", b"m")
    assert ah_keys.encr_i == b"" and len(ah_keys.integ_r) == 32
    rekeyed = keys.derive_rekeyed_ike_sa_for(
        PrfId.HMAC_SHA2_384, explicit.sk_d, ike, b"h" * 48, b"a" * 32, b"b" * 32, *args[3:]
    )
    assert rekeyed != explicit and len(rekeyed.sk_ei) == 36
    with pytest.raises(ValueError, match="chosen proposal"):
        keys.derive_ike_sa_for(parse_proposal("aes128-aes256-sha256-ecp256", Protocol.IKE), *args)


def test_inconsistent_transforms_are_refused() -> None:
    with pytest.raises(ValueError, match="combined-mode"):
        keys.ike_key_lengths(
            PrfId.HMAC_SHA2_256, Encryption(EncrId.AES_GCM_16, 128), IntegId.HMAC_SHA2_256_128
        )
    with pytest.raises(ValueError, match="needs an integrity"):
        keys.ike_key_lengths(PrfId.HMAC_SHA2_256, AES128_CBC, IntegId.NONE)
    with pytest.raises(ValueError, match="SPIs"):
        keys.derive_ike_sa_keys(
            PrfId.HMAC_SHA1,
            b"s",
            b"n",
            b"n",
            b"short",
            b"\x00" * 8,
            AES128_CBC,
            IntegId.HMAC_SHA1_96,
        )
    with pytest.raises(ValueError, match="needs an encryption or an integrity"):
        keys.derive_child_sa_keys(
            PrfId.HMAC_SHA1, b"d", b"n", b"n", Encryption(EncrId.NULL), IntegId.NONE
        )


def test_key_material_never_in_repr() -> None:
    k = _cavp_ike_keys()
    text = repr(k) + str(k)
    assert "sk_ei=<16 octets>" in text
    for value in (k.sk_d, k.sk_ai, k.sk_ar, k.sk_ei, k.sk_er, k.sk_pi, k.sk_pr):
        assert value.hex() not in text
        assert repr(value) not in text
    c = keys.derive_child_sa_keys(
        PrfId.HMAC_SHA1, k.sk_d, b"n", b"m", AES128_CBC, IntegId.HMAC_SHA1_96
    )
    assert c.encr_i.hex() not in repr(c) and "encr_i=<16 octets>" in repr(c)


# ---------------------------------------------------------------- IKEv1


@pytest.mark.parametrize("case", IKEV1["cases"], ids=lambda c: c["id"])
def test_ikev1_cavp(case: dict[str, str]) -> None:
    prf = _PRF[case["prf"]]
    ni, nr, g = h(case["ni"]), h(case["nr"]), h(case["g_xy"])
    if case["auth"] == "psk":
        skeyid = keys.ikev1_skeyid_psk(prf, h(case["pre_shared_key"]), ni, nr)
    else:
        skeyid = keys.ikev1_skeyid_sig(prf, ni, nr, g)
    assert skeyid == h(case["skeyid"])
    k = keys.ikev1_derive(prf, skeyid, g, h(case["cky_i"]), h(case["cky_r"]))
    assert k.skeyid == h(case["skeyid"])
    assert k.skeyid_d == h(case["skeyid_d"])
    assert k.skeyid_a == h(case["skeyid_a"])
    assert k.skeyid_e == h(case["skeyid_e"])
    assert case["skeyid_e"] not in repr(k)


def _hmac_sha1(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def test_ikev1_appendix_b_key_expansion() -> None:
    skeyid_e = h(IKEV1["cases"][0]["skeyid_e"])  # 20 octets
    # Long enough: the first octets of SKEYID_e.
    assert keys.ikev1_encryption_key(PrfId.HMAC_SHA1, skeyid_e, 16) == skeyid_e[:16]
    # Too short for AES-256: K1 = prf(SKEYID_e, 0), K2 = prf(SKEYID_e, K1).
    k1 = _hmac_sha1(skeyid_e, b"\x00")
    k2 = _hmac_sha1(skeyid_e, k1)
    assert keys.ikev1_encryption_key(PrfId.HMAC_SHA1, skeyid_e, 32) == (k1 + k2)[:32]


def test_ikev1_quick_mode_keymat() -> None:
    d = h(IKEV1["cases"][0]["skeyid_d"])
    ni, nr, spi = b"\x01" * 16, b"\x02" * 16, b"\xc0\xff\xee\x01"
    base = bytes((3,)) + spi + ni + nr  # protocol ESP (3) | SPI | Ni_b | Nr_b
    k1 = _hmac_sha1(d, base)
    k2 = _hmac_sha1(d, k1 + base)
    assert keys.ikev1_quick_mode_keymat(PrfId.HMAC_SHA1, d, 3, spi, ni, nr, 36) == (k1 + k2)[:36]
    g = b"\x77" * 128  # with PFS, g(qm)^xy comes first
    p1 = _hmac_sha1(d, g + base)
    p2 = _hmac_sha1(d, p1 + g + base)
    assert keys.ikev1_quick_mode_keymat(PrfId.HMAC_SHA1, d, 3, spi, ni, nr, 40, g) == p1 + p2


def test_ikev1_quick_mode_keys_per_direction() -> None:
    d = b"\x05" * 20
    ni, nr, spi_i, spi_r = b"n" * 16, b"m" * 16, b"\x00\x00\x10\x01", b"\x00\x00\x20\x02"
    got = keys.ikev1_quick_mode_keys(
        PrfId.HMAC_SHA1, d, 3, spi_i, spi_r, ni, nr, AES128_CBC, IntegId.HMAC_SHA1_96
    )
    # Initiator-to-responder traffic is received by the responder: keyed with its SPI.
    to_r = keys.ikev1_quick_mode_keymat(PrfId.HMAC_SHA1, d, 3, spi_r, ni, nr, 36)
    to_i = keys.ikev1_quick_mode_keymat(PrfId.HMAC_SHA1, d, 3, spi_i, ni, nr, 36)
    assert (got.encr_i, got.integ_i, got.encr_r, got.integ_r) == (
        to_r[:16],
        to_r[16:],
        to_i[:16],
        to_i[16:],
    )
    gcm = keys.ikev1_quick_mode_keys(
        PrfId.HMAC_SHA2_256, d, 3, spi_i, spi_r, ni, nr, Encryption(EncrId.AES_GCM_16, 128),
        IntegId.NONE,
    )  # fmt: skip
    assert len(gcm.encr_i) == 20 and gcm.integ_i == b""  # key and 4-octet salt (RFC 4106 8.1)
