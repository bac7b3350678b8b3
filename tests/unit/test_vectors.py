"""Published test vectors, byte-exact, through hostsec's own code paths.

- RFC 3602 section 4: AES-CBC cases 1-4 (the cipher) and the ESP packets of cases 5-8,
  rebuilt by an ESP SA given the published IV and decrypted from the published bytes.
- RFC 4106-format AES-GCM ESP packets (draft-mcgrew-gcm-test-01) with and without ESN,
  the RFC 4543 GMAC packet, GCM with 8/12/16-octet ICVs and NIST CAVP cases.
- RFC 7634 Appendix A (ChaCha20-Poly1305 ESP) and the RFC 7539 AEAD cases.
- RFC 4868 HMAC-SHA-256/384/512 (PRF and truncated AUTH), RFC 3566 AES-XCBC-MAC(-96).

The RFC 3602 ESP samples carry no ICV, but hostsec refuses ESP without integrity: the SA
gets HMAC-SHA1-96 and the expected packet is the published one followed by an ICV that
the test computes with the standard library's ``hmac`` (not with hostsec).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import struct
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from hostsec.crypto.cipher import make_aead, make_cipher
from hostsec.crypto.integ import HmacMac, XcbcMac, make_mac
from hostsec.crypto.proposals import Encryption, Protocol
from hostsec.crypto.transforms import EncrId, IntegId
from hostsec.ipsec.errors import AuthenticationFailed, Replayed
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import Direction, Mode, SAConfig
from tests.conftest import VECTORS

from .sa_factory import V4_A, V4_B, single_sa, start_inbound_at


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    assert data["source"] and data["provenance"], f"{name} must say where it comes from"
    return data


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


def _ref_checksum(header: bytes) -> int:
    """RFC 1071, the plain loop (independent of hostsec.wire)."""
    total = 0
    for i in range(0, len(header), 2):
        total += (header[i] << 8) | header[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_fixed(header: bytes, total_length: int, ident: int | None = None) -> bytes:
    """``header`` with a new total length (and identification), checksum recomputed."""
    h = bytearray(header)
    h[2:4] = total_length.to_bytes(2, "big")
    if ident is not None:
        h[4:6] = ident.to_bytes(2, "big")
    h[10:12] = b"\x00\x00"
    h[10:12] = _ref_checksum(bytes(h)).to_bytes(2, "big")
    return bytes(h)


def _ipv4(src: bytes, dst: bytes, protocol: int, payload: bytes, ttl: int = 64) -> bytes:
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, ttl, protocol, 0, src, dst
    )
    return _ipv4_fixed(head, 20 + len(payload)) + payload


def _fixed_iv(iv: bytes) -> Any:
    def source(seq: int, length: int) -> bytes:
        assert length == len(iv)
        return iv

    return source


# ---------------------------------------------------------------------------
# RFC 3602

RFC3602 = _load("rfc3602_aes_cbc.json")
ICV_KEY_SHA1 = bytes(range(0x40, 0x54))  # 20 octets for HMAC-SHA1-96 (the samples have none)


@pytest.mark.parametrize("case", RFC3602["cases"], ids=lambda c: c["id"])
def test_rfc3602_aes_cbc_cipher(case: dict[str, Any]) -> None:
    cipher = make_cipher(EncrId.AES_CBC, _h(case["key"]))
    assert cipher.encrypt(_h(case["iv"]), _h(case["plaintext"])) == _h(case["ciphertext"])
    assert cipher.decrypt(_h(case["iv"]), _h(case["ciphertext"])) == _h(case["plaintext"])


def _rfc3602_sa(case: dict[str, Any], direction: Direction) -> EspSA:
    sa = single_sa(
        "aes128-sha1",
        direction,
        (_h(case["key"]), ICV_KEY_SHA1),
        mode=Mode.TUNNEL if case["mode"] == "tunnel" else Mode.TRANSPORT,
        src=ipaddress.ip_address("192.168.123.3"),
        dst=ipaddress.ip_address(
            "192.168.123.100" if case["id"] in ("RFC3602-case5", "RFC3602-case6")
            else "192.168.123.200"
        ),
        spi=case["spi"],
        iv_source=_fixed_iv(_h(case["iv"])),
    )  # fmt: skip
    assert isinstance(sa, EspSA)
    return sa


def _with_icv(esp: bytes) -> bytes:
    return esp + hmac.new(ICV_KEY_SHA1, esp, hashlib.sha1).digest()[:12]


@pytest.mark.parametrize("case", RFC3602["esp_cases"], ids=lambda c: c["id"])
def test_rfc3602_esp_rebuilt_from_the_iv(case: dict[str, Any]) -> None:
    out = _rfc3602_sa(case, Direction.OUTBOUND)
    out.seq = case["seq"] - 1
    payload = _h(case["payload"])
    expected_esp = _with_icv(_h(case["esp_packet"]))
    if case["mode"] == "tunnel":
        inner = payload
    elif "original_ip_header" in case:
        inner = _h(case["original_ip_header"]) + payload
    else:
        inner = _ipv4(out.config.src.packed, out.config.dst.packed, case["next_header"], payload)
    # ESP alone (what a socket that adds the IP header is given) ...
    assert out.encapsulate(inner) == expected_esp
    # ... and the whole packet where the RFC prints the outer header.
    if "outer_ip_header" in case:
        out.seq = case["seq"] - 1
        wire = out.protect(inner)
        outer = _h(case["outer_ip_header"])
        total = 20 + len(expected_esp)
        if case["mode"] == "transport":
            # Transport mode keeps the original header: only protocol, length, checksum change.
            assert wire == _ipv4_fixed(outer, total) + expected_esp
        else:
            # Tunnel mode: hostsec numbers the outer identification from the sequence
            # number (RFC 6864 leaves it to the tunnel); every other octet is the RFC's.
            assert wire == _ipv4_fixed(outer, total, ident=case["seq"]) + expected_esp


@pytest.mark.parametrize("case", RFC3602["esp_cases"], ids=lambda c: c["id"])
def test_rfc3602_esp_published_packet_decrypts(case: dict[str, Any]) -> None:
    esp = _with_icv(_h(case["esp_packet"]))
    payload = _h(case["payload"])
    inbound = _rfc3602_sa(case, Direction.INBOUND)
    src, dst = inbound.config.src.packed, inbound.config.dst.packed
    if "outer_ip_header" in case:
        wire = _ipv4_fixed(_h(case["outer_ip_header"]), 20 + len(esp)) + esp
        if case["mode"] == "tunnel":
            assert inbound.unprotect(wire) == payload
        else:
            assert inbound.unprotect(wire) == _h(case["original_ip_header"]) + payload
    else:
        inner = inbound.decapsulate(esp, src, dst)
        if case["mode"] == "tunnel":
            assert inner == payload
        else:
            # No outer header to keep: the SA builds one (DF, TTL 64) from the addresses.
            assert inner == _ipv4(src, dst, case["next_header"], payload)
    # The same bytes once more are a replay; one bit off is a forgery.
    with pytest.raises(Replayed):
        inbound.decapsulate(esp, src, dst)
    forged = bytearray(esp)
    forged[30] ^= 0x01
    again = _rfc3602_sa(case, Direction.INBOUND)
    with pytest.raises(AuthenticationFailed):
        again.decapsulate(bytes(forged), src, dst)


# ---------------------------------------------------------------------------
# RFC 4106 / RFC 4543 / GCM

GCM = _load("rfc4106_aes_gcm_esp.json")
_GCM_IDS = {8: EncrId.AES_GCM_8, 12: EncrId.AES_GCM_12, 16: EncrId.AES_GCM_16}
GCM_ESP = [c for c in GCM["cases"] if "esp_packet" in c]
GMAC = [c for c in GCM["cases"] if c.get("rfc4543_gmac")]
GCM_PLAIN = [c for c in GCM["cases"] if not c.get("rfc4543_gmac")]


def test_gcm_vectors_cover_what_they_claim() -> None:
    assert {c["icv_len"] for c in GCM_PLAIN} == {8, 12, 16}
    assert any(c["esn"] for c in GCM_ESP) and any(not c["esn"] for c in GCM_ESP)
    assert len(GMAC) == 1


@pytest.mark.parametrize("case", GCM_PLAIN, ids=lambda c: c["id"])
def test_gcm_through_make_aead(case: dict[str, Any]) -> None:
    aead = make_aead(_GCM_IDS[case["icv_len"]], _h(case["keymat"]))
    assert aead.salt == _h(case["salt"]) and aead.icv_len == case["icv_len"]
    iv, aad, pt = _h(case["iv"]), _h(case["aad"]), _h(case["plaintext"])
    sealed = _h(case["ciphertext"]) + _h(case["icv"])
    assert aead.seal(iv, pt, aad) == sealed
    assert aead.open(iv, sealed, aad) == pt
    bad = bytearray(sealed)
    bad[-1] ^= 0x80
    with pytest.raises(InvalidTag):
        aead.open(iv, bytes(bad), aad)
    with pytest.raises(InvalidTag):
        aead.open(iv, sealed, aad + b"\x00")


def _gcm_full_seq(case: dict[str, Any]) -> int:
    return (case["seq_hi"] << 32 | case["seq_lo"]) if case["esn"] else case["seq"]


def _gcm_payload(case: dict[str, Any]) -> bytes:
    pt = _h(case["plaintext"])
    assert pt[-2] == case["pad_length"] and pt[-1] == case["next_header"]
    return pt[: len(pt) - 2 - pt[-2]]


def _gcm_sa(case: dict[str, Any], direction: Direction) -> EspSA:
    sa = single_sa(
        f"aes{len(_h(case['key'])) * 8}gcm16" + ("-esn" if case["esn"] else ""),
        direction,
        (_h(case["keymat"]), b""),
        spi=case["spi"],
        esn=case["esn"],
        iv_source=_fixed_iv(_h(case["iv"])),
    )
    assert isinstance(sa, EspSA)
    return sa


# The draft's page 9 packet uses SPI 0, which RFC 4303 2.1 reserves: no SA takes it.
GCM_SA_CASES = [c for c in GCM_ESP if c["spi"] >= 256]


def test_gcm_spi_zero_packet_is_refused_by_the_sa_but_decrypts() -> None:
    (case,) = [c for c in GCM_ESP if c["spi"] == 0]
    with pytest.raises(ValueError, match="SPI"):
        SAConfig(0, Protocol.ESP, Direction.INBOUND, Mode.TRANSPORT, V4_A, V4_B,
                 Encryption(EncrId.AES_GCM_16, 128), encryption_key=_h(case["keymat"]))  # fmt: skip
    esp = _h(case["esp_packet"])
    aead = make_aead(EncrId.AES_GCM_16, _h(case["keymat"]))
    assert aead.open(esp[8:16], esp[16:], esp[:8]) == _h(case["plaintext"])


@pytest.mark.parametrize("case", GCM_SA_CASES, ids=lambda c: c["id"])
def test_rfc4106_esp_rebuilt_from_the_iv(case: dict[str, Any]) -> None:
    out = _gcm_sa(case, Direction.OUTBOUND)
    out.seq = _gcm_full_seq(case) - 1
    payload = _gcm_payload(case)
    inner = _ipv4(V4_A.packed, V4_B.packed, case["next_header"], payload)
    assert out.encapsulate(inner) == _h(case["esp_packet"])
    assert out.seq == _gcm_full_seq(case)


@pytest.mark.parametrize("case", GCM_SA_CASES, ids=lambda c: c["id"])
def test_rfc4106_esp_published_packet_decrypts(case: dict[str, Any]) -> None:
    esp = _h(case["esp_packet"])
    payload = _gcm_payload(case)
    full = _gcm_full_seq(case)
    for path in ("unprotect", "decapsulate"):
        inbound = _gcm_sa(case, Direction.INBOUND)
        if case["esn"]:
            # Only the low 32 bits travel: the SA must infer the high ones (RFC 4303 A2).
            start_inbound_at(inbound, full - 1)
        if path == "unprotect":
            wire = _ipv4(V4_A.packed, V4_B.packed, 50, esp)
            assert inbound.unprotect(wire) == _ipv4(
                V4_A.packed, V4_B.packed, case["next_header"], payload
            )
        else:
            inner = inbound.decapsulate(esp, V4_A.packed, V4_B.packed)
            assert inner[9] == case["next_header"] and inner[20:] == payload
        assert inbound.stats.packets == 1
    if case["esn"]:
        # With the window in the wrong 2^32 subspace the ICV cannot verify: the high
        # half of the sequence number is authenticated although it never travels.
        wrong = _gcm_sa(case, Direction.INBOUND)
        start_inbound_at(wrong, full - 1 + (-(1 << 32) if full >> 32 else 1 << 32))
        with pytest.raises(AuthenticationFailed):
            wrong.decapsulate(esp, V4_A.packed, V4_B.packed)


@pytest.mark.parametrize("case", GMAC, ids=lambda c: c["id"])
def test_rfc4543_gmac(case: dict[str, Any]) -> None:
    aad = _h(case["aad"])
    spi_seq, iv, plaintext = aad[:8], aad[8:16], aad[16:]
    assert iv == _h(case["iv"])
    aead = make_aead(EncrId.NULL_AUTH_AES_GMAC, _h(case["keymat"]))
    sealed = aead.seal(iv, plaintext, spi_seq)
    assert sealed == plaintext + _h(case["icv"])  # GMAC does not encrypt
    assert aead.open(iv, sealed, spi_seq) == plaintext
    # The same packet built by an SA: SPI 0x4321, sequence number 7, IV from the vector.
    spi, seq = struct.unpack("!II", spi_seq)
    esp_packet = spi_seq + iv + plaintext + _h(case["icv"])
    keys = (_h(case["keymat"]), b"")
    out = single_sa("aes128gmac", Direction.OUTBOUND, keys, spi=spi, iv_source=_fixed_iv(iv))
    out.seq = seq - 1
    payload = plaintext[: len(plaintext) - 2 - plaintext[-2]]
    assert out.encapsulate(_ipv4(V4_A.packed, V4_B.packed, plaintext[-1], payload)) == esp_packet
    inbound = single_sa("aes128gmac", Direction.INBOUND, keys, spi=spi)
    assert isinstance(inbound, EspSA)
    assert inbound.decapsulate(esp_packet, V4_A.packed, V4_B.packed)[20:] == payload
    tampered = bytearray(esp_packet)
    tampered[20] ^= 0x04  # a payload octet: in the clear, but authenticated
    inbound = single_sa("aes128gmac", Direction.INBOUND, keys, spi=spi)
    assert isinstance(inbound, EspSA)
    with pytest.raises(AuthenticationFailed):
        inbound.decapsulate(bytes(tampered), V4_A.packed, V4_B.packed)


# ---------------------------------------------------------------------------
# RFC 7634 / RFC 7539

CHACHA = _load("rfc7634_chacha20poly1305.json")


@pytest.mark.parametrize("case", CHACHA["cases"], ids=lambda c: c["id"])
def test_chacha20poly1305_through_make_aead(case: dict[str, Any]) -> None:
    aead = make_aead(EncrId.CHACHA20_POLY1305, _h(case["keymat"]))
    assert aead.salt + _h(case["iv"]) == _h(case["nonce"])
    sealed = _h(case["ciphertext"]) + _h(case["icv"])
    assert aead.seal(_h(case["iv"]), _h(case["plaintext"]), _h(case["aad"])) == sealed
    assert aead.open(_h(case["iv"]), sealed, _h(case["aad"])) == _h(case["plaintext"])


def test_rfc7634_appendix_a_esp_packet() -> None:
    (case,) = [c for c in CHACHA["cases"] if c["id"] == "RFC7634-A"]
    keys = (_h(case["keymat"]), b"")
    esp = _h(case["esp_packet"])
    inner = _h(case["inner_packet"])
    out = single_sa("chacha20poly1305", Direction.OUTBOUND, keys, mode=Mode.TUNNEL,
                    spi=case["spi"], iv_source=_fixed_iv(_h(case["iv"])))  # fmt: skip
    out.seq = case["seq"] - 1
    assert out.encapsulate(inner) == esp
    out.seq = case["seq"] - 1
    wire = out.protect(inner)
    assert wire[20:] == esp and wire[9] == 50 and _ref_checksum(wire[:20]) == 0
    inbound = single_sa("chacha20poly1305", Direction.INBOUND, keys, mode=Mode.TUNNEL,
                        spi=case["spi"])  # fmt: skip
    assert inbound.unprotect(wire) == inner
    inbound = single_sa("chacha20poly1305", Direction.INBOUND, keys, mode=Mode.TUNNEL,
                        spi=case["spi"])  # fmt: skip
    assert isinstance(inbound, EspSA)
    assert inbound.decapsulate(esp, V4_A.packed, V4_B.packed) == inner


# ---------------------------------------------------------------------------
# RFC 4868 and RFC 3566 (integrity)

RFC4868 = _load("rfc4868_hmac_sha2.json")
_AUTH_IDS = {
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
}


@pytest.mark.parametrize("case", [c for c in RFC4868["cases"] if c["kind"] == "auth"],
                         ids=lambda c: c["id"])  # fmt: skip
def test_rfc4868_auth_through_make_mac(case: dict[str, Any]) -> None:
    mac = make_mac(_AUTH_IDS[case["hash"]], _h(case["key"]))
    assert mac.icv_len == case["truncated_len"]
    assert mac.icv(_h(case["data"])) == _h(case["icv"])
    assert mac.verify(_h(case["data"]), _h(case["icv"]))
    assert not mac.verify(_h(case["data"]) + b"\x00", _h(case["icv"]))
    assert not mac.verify(_h(case["data"]), bytes(len(_h(case["icv"]))))


@pytest.mark.parametrize("case", [c for c in RFC4868["cases"] if "prf_output" in c],
                         ids=lambda c: c["id"])  # fmt: skip
def test_rfc4868_prf_full_output(case: dict[str, Any]) -> None:
    # The untruncated HMAC is the IKEv2 PRF (RFC 4868 2.1); any key length is allowed.
    full = _h(case["prf_output"])
    prf = HmacMac(case["hash"], _h(case["key"]), len(full))
    assert prf.icv(_h(case["data"])) == full


def test_rfc4868_make_mac_refuses_wrong_key_length() -> None:
    with pytest.raises(ValueError, match="32-octet key"):
        make_mac(IntegId.HMAC_SHA2_256_128, bytes(20))


RFC3566 = _load("rfc3566_aes_xcbc.json")


def _xcbc_message(case: dict[str, Any]) -> bytes:
    return bytes(case["message_zeros"]) if "message_zeros" in case else _h(case["message"])


@pytest.mark.parametrize("case", RFC3566["cases"], ids=lambda c: c["id"])
def test_rfc3566_aes_xcbc(case: dict[str, Any]) -> None:
    message = _xcbc_message(case)
    mac96 = make_mac(IntegId.AES_XCBC_96, _h(case["key"]))
    assert mac96.icv(message) == _h(case["mac96"])
    assert mac96.verify(message, _h(case["mac96"]))
    assert not mac96.verify(message + b"\x00", _h(case["mac96"]))
    assert XcbcMac(_h(case["key"]), 16).mac(message) == _h(case["mac"])
