"""Proposals between their structured form and the IKEv2 SA payload (RFC 7296 3.3).

A :class:`Proposal` lists the algorithms of each transform type; on the wire a proposal
lists transforms, one per algorithm (an ENCR algorithm offered with two key lengths is two
transforms with the same ID and different Key Length attributes). Wire order of the
transforms: ENCR, INTEG, PRF, DH, ESN (as strongSwan sends them).

Reading a received proposal follows RFC 7296 3.3.6: an unknown Transform Type, a Protocol
ID other than IKE/AH/ESP or a missing mandatory type (3.3.3) make the whole proposal
unacceptable (:class:`UnsupportedProposal`); an unknown Transform ID, an unknown attribute,
or a key length the algorithm does not have make only that transform unacceptable, and the
proposal stays usable if each of its transform types keeps at least one transform. A
missing ESN transform in an ESP or AH proposal is read as "no ESN" (lenient), and an
INTEG NONE next to AEAD encryption as no integrity transform (RFC 5282 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from hostsec.crypto.proposals import Encryption, Proposal, Protocol
from hostsec.crypto.transforms import (
    DH_GROUPS,
    ENCRYPTION,
    INTEGRITY,
    PRF,
    DhId,
    EncrId,
    EsnId,
    IntegId,
    PrfId,
    TransformType,
)
from hostsec.wire.ikev2 import SA, SAProposal, Transform

_Id = TypeVar("_Id", IntegId, PrfId, DhId, EsnId)


class UnsupportedProposal(ValueError):
    """A received proposal that cannot be accepted; the message says why."""


def to_sa_proposal(proposal: Proposal, number: int = 1, spi: bytes = b"") -> SAProposal:
    """The wire form of ``proposal`` with Proposal Num ``number`` and ``spi``."""
    transforms: list[Transform] = []
    for enc in proposal.encryption:
        algo = ENCRYPTION[enc.id]
        bits = enc.effective_key_bits if algo.variable_key else None
        transforms.append(Transform.make(TransformType.ENCR, enc.id, bits))
    transforms += [Transform.make(TransformType.INTEG, i) for i in proposal.integrity]
    transforms += [Transform.make(TransformType.PRF, p) for p in proposal.prf]
    transforms += [Transform.make(TransformType.DH, g) for g in proposal.dh]
    transforms += [Transform.make(TransformType.ESN, e) for e in proposal.esn]
    return SAProposal(number, proposal.protocol, spi, tuple(transforms))


def to_sa_payload(proposals: Sequence[Proposal], spi: bytes = b"") -> SA:
    """An SA payload offering ``proposals`` in order (numbered from 1, RFC 7296 3.3.1)."""
    return SA(tuple(to_sa_proposal(p, i + 1, spi) for i, p in enumerate(proposals)))


def from_sa_proposal(wire: SAProposal) -> tuple[Proposal, bytes]:
    """(proposal, SPI) of a received proposal, keeping only the transforms hostsec knows."""
    try:
        protocol = Protocol(wire.protocol)
    except ValueError:
        raise UnsupportedProposal(f"protocol ID {wire.protocol}") from None
    present: set[TransformType] = set()
    encryption: list[Encryption] = []
    integrity: list[IntegId] = []
    prf: list[PrfId] = []
    dh: list[DhId] = []
    esn: list[EsnId] = []
    for transform in wire.transforms:
        try:
            kind = TransformType(transform.transform_type)
        except ValueError:
            raise UnsupportedProposal(f"transform type {transform.transform_type}") from None
        present.add(kind)
        if transform.unknown_attributes:
            continue
        tid, bits = transform.transform_id, transform.key_length
        if kind is TransformType.ENCR:
            enc = _encryption(tid, bits)
            if enc is not None and enc not in encryption:
                encryption.append(enc)
        elif bits is not None:
            continue  # Key Length belongs to ENCR only
        elif kind is TransformType.INTEG:
            _add(integrity, IntegId, tid, tid == IntegId.NONE or tid in INTEGRITY)
        elif kind is TransformType.PRF:
            _add(prf, PrfId, tid, tid in PRF)
        elif kind is TransformType.DH:
            _add(dh, DhId, tid, tid == DhId.NONE or tid in DH_GROUPS)
        else:
            _add(esn, EsnId, tid, True)
    for kind in present:
        held = {
            TransformType.ENCR: encryption,
            TransformType.INTEG: integrity,
            TransformType.PRF: prf,
            TransformType.DH: dh,
            TransformType.ESN: esn,
        }[kind]
        if not held:
            raise UnsupportedProposal(f"no supported {kind.name} transform")
    _check_mandatory(protocol, present, encryption)
    if encryption and all(e.aead for e in encryption) and integrity == [IntegId.NONE]:
        # RFC 5282 8: with AEAD the integrity transform is omitted or NONE; both read as
        # "no integrity transform", as a proposal string writes it.
        integrity = []
    if protocol is not Protocol.IKE and not esn:
        esn = [EsnId.NO]
    result = Proposal(
        protocol, tuple(encryption), tuple(integrity), tuple(prf), tuple(dh), tuple(esn)
    )
    return result, wire.spi


def from_sa_payload(sa: SA) -> list[tuple[int, Proposal, bytes]]:
    """(Proposal Num, proposal, SPI) of each acceptable proposal of ``sa``, in order."""
    result: list[tuple[int, Proposal, bytes]] = []
    for wire in sa.proposals:
        try:
            proposal, spi = from_sa_proposal(wire)
        except UnsupportedProposal:
            continue
        result.append((wire.number, proposal, spi))
    return result


def _encryption(tid: int, bits: int | None) -> Encryption | None:
    try:
        algo = ENCRYPTION[EncrId(tid)]
    except (ValueError, KeyError):
        return None
    if algo.variable_key:
        # RFC 7296 3.3.5: the Key Length attribute is required for these (e.g. AES).
        if bits is None or bits not in algo.key_sizes:
            return None
        return Encryption(algo.id, bits)
    if bits is not None and (bits,) != algo.key_sizes:
        return None
    return Encryption(algo.id)


def _add(items: list[_Id], kind: type[_Id], tid: int, known: bool) -> None:
    if not known:
        return
    try:
        value = kind(tid)
    except ValueError:
        return
    if value not in items:
        items.append(value)


def _check_mandatory(
    protocol: Protocol, present: set[TransformType], encryption: list[Encryption]
) -> None:
    # RFC 7296 3.3.3: mandatory transform types per protocol.
    if protocol is Protocol.IKE:
        needed = {TransformType.ENCR, TransformType.PRF, TransformType.DH}
        if not (encryption and all(e.aead for e in encryption)):
            needed.add(TransformType.INTEG)
    elif protocol is Protocol.ESP:
        needed = {TransformType.ENCR}
    else:
        needed = {TransformType.INTEG}
    missing = needed - present
    if missing:
        names = ", ".join(sorted(t.name for t in missing))
        raise UnsupportedProposal(f"{protocol.name} proposal without {names}")
