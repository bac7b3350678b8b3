"""The strongSwan captures of tests/vectors/ikev2/ and how to open their SK payloads.

Decryption is done here, in the tests, with ``cryptography`` directly: the codec does no
crypto. Used by test_ikev2_wire_vectors.py and as seeds by the fuzz tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hostsec.wire.ikev2 import (
    SKF,
    FragmentReassembler,
    FragmentStatus,
    encrypted_message_prefix,
    encrypted_prefix_of,
    parse_message,
    sk_unpad,
)

from ..conftest import VECTORS


@cache
def document() -> dict[str, Any]:
    with (VECTORS / "ikev2" / "strongswan.json").open() as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def datagrams(mode: str) -> list[bytes]:
    return [bytes.fromhex(g["hex"]) for g in document()["modes"][mode]["datagrams"]]


def all_datagrams() -> list[tuple[str, int, bytes]]:
    return [(m, i, d) for m in document()["modes"] for i, d in enumerate(datagrams(m))]


def keys_of(mode: str, datagram: bytes) -> dict[str, str]:
    for keys in document()["modes"][mode]["keys"]:
        if datagram[:16].hex() == keys["spi_i"] + keys["spi_r"]:
            return dict(keys)
    raise AssertionError("no keys for this IKE SA")


def decrypt(mode: str, datagram: bytes) -> bytes:
    """Check and decrypt the SK/SKF payload; the payload octets inside (unpadded).

    Also checks that the codec's associated-data helpers give the real octets.
    """
    msg = parse_message(datagram)
    sk = msg.encrypted
    assert sk is not None
    keys = keys_of(mode, datagram)
    side = "i" if msg.header.initiator else "r"
    sk_e = bytes.fromhex(keys[f"sk_e{side}"])
    aad = encrypted_prefix_of(datagram)
    fragment = (sk.fragment_number, sk.total_fragments) if isinstance(sk, SKF) else None
    built = encrypted_message_prefix(
        msg.header, sk.first_payload_type, len(sk.data), fragment=fragment
    )
    assert built == aad == datagram[: len(datagram) - len(sk.data)]
    if f"sk_a{side}" in keys:  # AES-CBC + HMAC-SHA2-256-128 (RFC 7296 3.14)
        icv = hmac.new(bytes.fromhex(keys[f"sk_a{side}"]), datagram[:-16], hashlib.sha256)
        assert hmac.compare_digest(icv.digest()[:16], sk.data[-16:])
        iv, ciphertext = sk.data[:16], sk.data[16:-16]
        decryptor = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).decryptor()
        plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    else:  # AES-GCM-16 (RFC 5282): 4-octet salt after the key, 8-octet IV, AAD = prefix
        iv = sk.data[:8]
        plaintext = AESGCM(sk_e[:-4]).decrypt(sk_e[-4:] + iv, sk.data[8:], aad)
    return sk_unpad(plaintext)


@cache
def inner_chains() -> list[tuple[int, bytes]]:
    """(first payload type, payload octets) inside every encrypted message (SKF reassembled)."""
    chains: list[tuple[int, bytes]] = []
    for mode in document()["modes"]:
        reassembler = FragmentReassembler()
        for datagram in datagrams(mode):
            msg = parse_message(datagram)
            sk = msg.encrypted
            if sk is None:
                continue
            octets = decrypt(mode, datagram)
            if isinstance(sk, SKF):
                result = reassembler.add_skf(msg.header, sk, octets)
                if result.status is FragmentStatus.COMPLETE:
                    chains.append((result.first_payload_type, result.data))
            else:
                chains.append((sk.first_payload_type, octets))
    return chains
