"""Hypothesis strategies building every IKEv2 payload (shared by unit and fuzz tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from hostsec.wire.ikev2 import (
    ATTRIBUTE_KEY_LENGTH,
    AUTH,
    CERT,
    CERTREQ,
    CP,
    EAP,
    KE,
    SA,
    SK,
    SKF,
    ConfigAttribute,
    Delete,
    IDi,
    IDr,
    IKEHeader,
    Nonce,
    Notify,
    Payload,
    SAProposal,
    Transform,
    TransformAttribute,
    TSAddressRange,
    TSi,
    TSr,
    UnknownPayload,
    UnknownTrafficSelector,
    VendorID,
)
from hostsec.wire.ikev2.payloads import ENCRYPTED_TYPES, PAYLOAD_CLASSES

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
blob = st.binary(max_size=48)
critical = st.booleans()

_other_attr_type = st.integers(0, 0x7FFF).filter(lambda t: t != ATTRIBUTE_KEY_LENGTH)
other_attribute = st.one_of(
    st.builds(TransformAttribute, _other_attr_type, u16),
    st.builds(TransformAttribute, _other_attr_type, blob),
)


@st.composite
def transforms(draw: st.DrawFn) -> Transform:
    attrs = draw(st.lists(other_attribute, max_size=2))
    key = draw(st.none() | u16)
    if key is not None:
        attrs.insert(
            draw(st.integers(0, len(attrs))), TransformAttribute(ATTRIBUTE_KEY_LENGTH, key)
        )
    return Transform(draw(u8), draw(u16), tuple(attrs))


proposals = st.builds(
    SAProposal,
    u8,
    u8,
    st.binary(max_size=9),
    st.lists(transforms(), max_size=6).map(tuple),
)


@st.composite
def identities(draw: st.DrawFn) -> tuple[int, bytes]:
    kind = draw(u8)
    if kind == 1:
        return kind, draw(st.binary(min_size=4, max_size=4))
    if kind == 5:
        return kind, draw(st.binary(min_size=16, max_size=16))
    return kind, draw(blob)


@st.composite
def selectors(draw: st.DrawFn) -> TSAddressRange | UnknownTrafficSelector:
    if draw(st.booleans()):
        size = draw(st.sampled_from([4, 16]))
        addr = st.binary(min_size=size, max_size=size)
        return TSAddressRange(draw(addr), draw(addr), draw(u8), draw(u16), draw(u16))
    return UnknownTrafficSelector(draw(u8.filter(lambda t: t not in (7, 8))), draw(u8), draw(blob))


@st.composite
def certs(draw: st.DrawFn) -> CERT:
    encoding = draw(u8)
    data = draw(st.binary(min_size=20, max_size=60) if encoding in (12, 13) else blob)
    return CERT(encoding, data, critical=draw(critical))


@st.composite
def certreqs(draw: st.DrawFn) -> CERTREQ:
    encoding = draw(u8)
    if encoding == 4:
        hashes = draw(st.lists(st.binary(min_size=20, max_size=20), max_size=3))
        return CERTREQ.from_ca_hashes(hashes)
    return CERTREQ(encoding, draw(blob), critical=draw(critical))


@st.composite
def auths(draw: st.DrawFn) -> AUTH:
    method = draw(u8)
    if method == 14:
        return AUTH.digital_signature(draw(st.binary(max_size=30)), draw(blob))
    return AUTH(method, draw(blob), critical=draw(critical))


@st.composite
def deletes(draw: st.DrawFn) -> Delete:
    protocol = draw(u8)
    size = draw(st.integers(0, 16))
    if size == 0:
        return Delete(protocol, critical=draw(critical))
    spis = draw(st.lists(st.binary(min_size=size, max_size=size), max_size=4))
    return Delete(protocol, size, tuple(spis))


@st.composite
def eaps(draw: st.DrawFn) -> EAP:
    rest = draw(blob)
    return EAP(bytes((draw(u8), draw(u8))) + (len(rest) + 4).to_bytes(2, "big") + rest)


_known = set(PAYLOAD_CLASSES) | set(ENCRYPTED_TYPES) | {0}
unknown_payloads = st.builds(UnknownPayload, u8.filter(lambda t: t not in _known), blob)

clear_payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(SA, st.lists(proposals, min_size=1, max_size=3).map(tuple), critical=critical),
    st.builds(KE, u16, blob, critical=critical),
    identities().map(lambda i: IDi(*i)),
    identities().map(lambda i: IDr(*i)),
    certs(),
    certreqs(),
    auths(),
    st.builds(Nonce, st.binary(min_size=16, max_size=256)),
    st.builds(Notify, u16, blob, u8, st.binary(max_size=8), critical=critical),
    deletes(),
    st.builds(VendorID, blob),
    st.builds(TSi, st.lists(selectors(), max_size=3).map(tuple)),
    st.builds(TSr, st.lists(selectors(), max_size=3).map(tuple)),
    st.builds(
        CP, u8, st.lists(st.builds(ConfigAttribute, st.integers(0, 0x7FFF), blob)).map(tuple)
    ),
    eaps(),
    unknown_payloads,
)


@st.composite
def fragments(draw: st.DrawFn) -> SKF:
    total = draw(st.integers(1, 0xFFFF))
    number = draw(st.integers(1, total))
    return SKF(draw(u8) if number == 1 else 0, number, total, draw(blob))


encrypted_payloads = st.one_of(st.builds(SK, u8, blob), fragments())

headers = st.builds(
    IKEHeader,
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
    u8,
    st.integers(0, 0xFFFFFFFF),
    u8,
    st.just(2),
    st.integers(0, 15),
)
