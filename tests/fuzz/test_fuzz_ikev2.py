"""Fuzz the IKEv2 codec: only MalformedPacket (or its subclasses) may come out.

Raw bytes, bytes behind a valid IKE header, and mutations of valid messages (the strongSwan
captures and generated messages). Whatever parses must re-encode to something that parses
to the same message. Bounded: a few seconds per test.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2 import (
    IKE_HEADER_LEN,
    IKEHeader,
    Message,
    Payload,
    encode_message,
    encode_payloads,
    encrypted_prefix_of,
    parse_header,
    parse_message,
    parse_payloads,
    sk_unpad,
)
from hostsec.wire.ikev2.payloads import ENCRYPTED_TYPES, PAYLOAD_CLASSES

from ..unit.ikev2_strategies import clear_payloads, encrypted_payloads, headers
from ..unit.ikev2_vectors import all_datagrams, inner_chains

pytestmark = pytest.mark.fuzz

#: HOSTSEC_FUZZ_EXAMPLES scales a deeper run (e.g. 100000); the default keeps CI quick.
EXAMPLES = int(os.environ.get("HOSTSEC_FUZZ_EXAMPLES", "1500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEEDS = [datagram for _mode, _index, datagram in all_datagrams()]
INNER_SEEDS = inner_chains()  # decrypted strongSwan payload chains: SA for ESP, TS, CERT, ...


def _check_message(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except MalformedPacket:
        pass
    else:
        # Reserved fields are normalised, nothing is dropped or invented: same length.
        encoded = msg.encode()
        assert len(encoded) == len(data)
        assert parse_message(encoded) == msg
    for call in (parse_header, encrypted_prefix_of, sk_unpad):
        with contextlib.suppress(MalformedPacket):
            call(data)


def _check_chain(first: int, data: bytes) -> None:
    try:
        payloads = parse_payloads(first, data)
    except MalformedPacket:
        return
    first_again, encoded = encode_payloads(payloads)
    assert len(encoded) == len(data)
    assert parse_payloads(first_again, encoded) == payloads


def _fix_length(data: bytes) -> bytes:
    if len(data) < IKE_HEADER_LEN:
        return data
    return data[:24] + len(data).to_bytes(4, "big") + data[28:]


@FUZZ
@given(st.binary(max_size=600))
def test_raw_bytes(data: bytes) -> None:
    _check_message(data)
    _check_message(_fix_length(data))
    _check_chain(data[0] if data else 0, data[1:])


@FUZZ
@given(headers, st.integers(0, 255), st.binary(max_size=400))
def test_valid_header_random_chain(header: IKEHeader, first: int, chain: bytes) -> None:
    data = header.encode(first, IKE_HEADER_LEN + len(chain)) + chain
    _check_message(data)
    _check_chain(first, chain)


_mutation = st.tuples(
    st.sampled_from(["flip", "set", "cut", "insert", "delete", "small"]),
    st.integers(0, 2000),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=8),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, where, value, extra in mutations:
        if not buf:
            break
        pos = where % len(buf)
        if op == "flip":
            buf[pos] ^= 1 << (value % 8)
        elif op == "set":
            buf[pos] = value
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = extra
        elif op == "delete":
            del buf[pos : pos + 1 + value % 16]
        else:  # a length-ish field nudged by a small amount
            buf[pos] = (buf[pos] + (value % 9) - 4) & 0xFF
    return bytes(buf)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(_mutation, min_size=1, max_size=4), st.booleans())
def test_mutated_strongswan_messages(
    seed: bytes, mutations: list[tuple[str, int, int, bytes]], fix: bool
) -> None:
    data = _mutate(seed, mutations)
    _check_message(_fix_length(data) if fix else data)


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 1))
@given(
    headers,
    st.lists(clear_payloads, min_size=1, max_size=6),
    st.none() | encrypted_payloads,
    st.lists(_mutation, min_size=1, max_size=3),
)
def test_mutated_generated_messages(
    header: IKEHeader,
    payloads: list,
    encrypted: object,
    mutations: list[tuple[str, int, int, bytes]],
) -> None:
    chain = payloads + ([encrypted] if encrypted is not None else [])
    datagram = encode_message(header, chain)
    assert parse_message(datagram) == Message(header, tuple(chain))
    _check_message(_fix_length(_mutate(datagram, mutations)))
    first, inner = encode_payloads(payloads)
    _check_chain(first, _mutate(inner, mutations))


@FUZZ
@given(st.sampled_from(INNER_SEEDS), st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_strongswan_inner_chains(
    seed: tuple[int, bytes], mutations: list[tuple[str, int, int, bytes]]
) -> None:
    first, octets = seed
    _check_chain(first, _mutate(octets, mutations))


KNOWN_TYPES = sorted(set(PAYLOAD_CLASSES) | set(ENCRYPTED_TYPES))


def _wrap(payload_type: int, body: bytes) -> bytes:
    """A one-payload message around ``body`` (lengths right, so the body parser is reached)."""
    chain = bytes((0, 0)) + (4 + len(body)).to_bytes(2, "big") + body
    header = IKEHeader(bytes(8), bytes(8), 35, 1)
    return header.encode(payload_type, IKE_HEADER_LEN + len(chain)) + chain


@FUZZ
@given(st.sampled_from(KNOWN_TYPES), st.binary(max_size=300))
def test_random_payload_bodies(payload_type: int, body: bytes) -> None:
    _check_message(_wrap(payload_type, body))


@FUZZ
@given(st.one_of(clear_payloads, encrypted_payloads), st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_payload_bodies(
    payload: Payload, mutations: list[tuple[str, int, int, bytes]]
) -> None:
    body = encode_message(IKEHeader(bytes(8), bytes(8), 35, 1), [payload])[IKE_HEADER_LEN + 4 :]
    _check_message(_wrap(payload.payload_type, _mutate(body, mutations)))
