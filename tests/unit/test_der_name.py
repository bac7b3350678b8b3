"""ID_DER_ASN1_DN compared by value: strongSwan's PrintableString DN matches a certificate
subject in UTF8String (found against strongSwan 5.9, tests/interop)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hostsec.crypto.certs import Identity, IdType, der_to_name

# C=XX, O=hostsec-interop, CN=sw.test as strongSwan 5.9.8 sends it: all PrintableString
STRONGSWAN_DN = bytes.fromhex(
    "3039310b300906035504061302585831183016060355040a130f686f73747365632d696e7465726f70"
    "3110300e0603550403130773772e74657374"
)


def test_printable_dn_equals_utf8_dn() -> None:
    received = Identity.from_payload(IdType.DER_ASN1_DN, STRONGSWAN_DN)
    configured = Identity.from_string("C=XX, O=hostsec-interop, CN=sw.test")
    assert configured.data != STRONGSWAN_DN  # cryptography writes UTF8String for O and CN
    assert received == configured
    assert str(received) == "C=XX, O=hostsec-interop, CN=sw.test"


def test_different_dn_differs() -> None:
    received = Identity.from_payload(IdType.DER_ASN1_DN, STRONGSWAN_DN)
    assert received != Identity.from_string("C=XX, O=hostsec-interop, CN=hs.test")


def test_not_a_name_is_kept_raw() -> None:
    for data in (b"\x30\x00\x00", b"\x04\x01x", b"\x30\x05\x31\x03\x30\x01\x00"):
        assert der_to_name(data) is None
        assert Identity.from_payload(IdType.DER_ASN1_DN, data).data == data


@given(st.binary(max_size=200))
def test_fuzz_der_to_name(data: bytes) -> None:
    name = der_to_name(data)
    if name is not None:
        assert der_to_name(name.public_bytes()) == name


@given(st.binary(max_size=64))
def test_fuzz_prefixed(data: bytes) -> None:
    der_to_name(STRONGSWAN_DN[:10] + data)
    der_to_name(b"\x30" + bytes([len(data)]) + data)
