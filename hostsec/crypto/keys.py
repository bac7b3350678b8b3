"""Key derivation for IKEv2 (RFC 7296 2.13-2.18) and IKEv1 (RFC 2409 5, Appendix B).

IKEv2:
- SKEYSEED = prf(Ni | Nr, g^ir) (2.14; only the first 64 bits of each nonce when the PRF
  is AES-XCBC-PRF-128 or AES-CMAC-PRF-128, whose key is fixed at 128 bits);
- {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr);
- CHILD_SA KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), split into encryption and
  integrity keys for initiator-to-responder, then responder-to-initiator (2.17);
- rekeyed SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) with the old SA's PRF (2.18).
Key lengths come from the negotiated transforms; combined-mode ciphers take their salt
from the same keying material (RFC 5282 7.1, RFC 4106 8.1, RFC 4309 7.1, RFC 7634 2), and
then SK_ai/SK_ar are empty.

IKEv1:
- SKEYID = prf(pre-shared-key, Ni_b | Nr_b) or prf(Ni_b | Nr_b, g^xy) (signatures);
- SKEYID_d/a/e (5); the encryption key expansion of Appendix B;
- Quick Mode KEYMAT = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b), expanded
  K1 | K2 | ... with Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b) (5.5).

Key material is held in frozen dataclasses whose ``repr`` shows lengths, never bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from hostsec.crypto.prf import Prf, prf_plus
from hostsec.crypto.proposals import Encryption, Proposal
from hostsec.crypto.transforms import INTEGRITY, IntegId, PrfId

_FIXED_KEY_PRFS = (PrfId.AES128_XCBC, PrfId.AES128_CMAC)
_HALF_FIXED_KEY = 8  # RFC 7296 2.14: the first 64 bits of Ni and of Nr


class _Secret:
    """repr with lengths only: key material must never reach a log line."""

    __slots__ = ()

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{f.name}=<{len(getattr(self, f.name))} octets>"
            for f in fields(self)  # type: ignore[arg-type]
        )
        return f"{type(self).__name__}({parts})"


def _prf(prf: Prf | PrfId | int) -> Prf:
    return prf if isinstance(prf, Prf) else Prf(prf)


def _encr_len(encr: Encryption | None) -> int:
    if encr is None:
        return 0
    return encr.algorithm.key_material_len(encr.effective_key_bits)


def _integ_len(encr: Encryption | None, integ: IntegId) -> int:
    if integ == IntegId.NONE:
        return 0
    if encr is not None and encr.aead:
        raise ValueError(f"{encr.algorithm.name} is a combined-mode cipher: no integrity transform")
    return INTEGRITY[integ].key_len


# ---------------------------------------------------------------- IKEv2


@dataclass(frozen=True, slots=True)
class IkeKeyLengths:
    """Octets of each IKE SA key (RFC 7296 2.14): SK_d/SK_pi/SK_pr take the PRF's preferred
    key length, SK_ai/SK_ar the integrity key, SK_ei/SK_er the cipher key plus salt."""

    sk_d: int
    sk_a: int
    sk_e: int
    sk_p: int

    @property
    def total(self) -> int:
        return self.sk_d + 2 * (self.sk_a + self.sk_e + self.sk_p)


def ike_key_lengths(prf: Prf | PrfId | int, encr: Encryption, integ: IntegId) -> IkeKeyLengths:
    p = _prf(prf)
    if integ == IntegId.NONE and not encr.aead:
        raise ValueError(f"IKE SA with {encr.algorithm.name} needs an integrity transform")
    return IkeKeyLengths(p.key_len, _integ_len(encr, integ), _encr_len(encr), p.key_len)


@dataclass(frozen=True, slots=True, repr=False)
class IkeSaKeys(_Secret):
    """The seven IKE SA keys of RFC 7296 2.14."""

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes


@dataclass(frozen=True, slots=True, repr=False)
class ChildSaKeys(_Secret):
    """The keys of one CHILD_SA pair (RFC 7296 2.17): ``_i`` protects traffic from the
    initiator to the responder, ``_r`` the other direction. For AEAD ciphers the encryption
    key carries its salt and the integrity keys are empty; for AH the encryption keys are."""

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes


def skeyseed(prf: Prf | PrfId | int, ni: bytes, nr: bytes, g_ir: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 2.14)."""
    p = _prf(prf)
    if p.id in _FIXED_KEY_PRFS:
        return p(ni[:_HALF_FIXED_KEY] + nr[:_HALF_FIXED_KEY], g_ir)
    return p(ni + nr, g_ir)


def rekey_skeyseed(
    old_prf: Prf | PrfId | int, sk_d_old: bytes, g_ir_new: bytes, ni: bytes, nr: bytes
) -> bytes:
    """SKEYSEED of an IKE SA rekeyed with CREATE_CHILD_SA (RFC 7296 2.18): the PRF is the
    old IKE SA's; ``ni``/``nr`` are the nonces of the rekeying exchange."""
    return _prf(old_prf)(sk_d_old, g_ir_new + ni + nr)


def derive_ike_sa_keys(
    prf: Prf | PrfId | int,
    skeyseed_: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr: Encryption,
    integ: IntegId,
) -> IkeSaKeys:
    """Split prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) into the seven keys (RFC 7296 2.14)."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("IKE SPIs are 8 octets")
    p = _prf(prf)
    lens = ike_key_lengths(p, encr, integ)
    dkm = prf_plus(p, skeyseed_, ni + nr + spi_i + spi_r, lens.total)
    sizes = (lens.sk_d, lens.sk_a, lens.sk_a, lens.sk_e, lens.sk_e, lens.sk_p, lens.sk_p)
    parts: list[bytes] = []
    pos = 0
    for n in sizes:
        parts.append(dkm[pos : pos + n])
        pos += n
    return IkeSaKeys(*parts)


def derive_ike_sa(
    prf: Prf | PrfId | int,
    g_ir: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr: Encryption,
    integ: IntegId,
) -> IkeSaKeys:
    """The keys of a new IKE SA from IKE_SA_INIT: SKEYSEED, then its split."""
    p = _prf(prf)
    return derive_ike_sa_keys(p, skeyseed(p, ni, nr, g_ir), ni, nr, spi_i, spi_r, encr, integ)


def derive_rekeyed_ike_sa(
    old_prf: Prf | PrfId | int,
    sk_d_old: bytes,
    prf: Prf | PrfId | int,
    g_ir_new: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
    encr: Encryption,
    integ: IntegId,
) -> IkeSaKeys:
    """The keys of an IKE SA rekeyed with CREATE_CHILD_SA (RFC 7296 2.18): SKEYSEED from the
    old SA's SK_d and PRF, then prf+ with the new SA's PRF, nonces and SPIs."""
    seed = rekey_skeyseed(old_prf, sk_d_old, g_ir_new, ni, nr)
    return derive_ike_sa_keys(prf, seed, ni, nr, spi_i, spi_r, encr, integ)


def child_keymat(
    prf: Prf | PrfId | int,
    sk_d: bytes,
    ni: bytes,
    nr: bytes,
    length: int,
    g_ir: bytes | None = None,
) -> bytes:
    """KEYMAT = prf+(SK_d, Ni | Nr), or prf+(SK_d, g^ir (new) | Ni | Nr) with PFS (2.17)."""
    seed = (g_ir or b"") + ni + nr
    return prf_plus(prf, sk_d, seed, length)


def derive_child_sa_keys(
    prf: Prf | PrfId | int,
    sk_d: bytes,
    ni: bytes,
    nr: bytes,
    encr: Encryption | None,
    integ: IntegId,
    g_ir: bytes | None = None,
) -> ChildSaKeys:
    """The keys of a CHILD_SA pair (RFC 7296 2.17): encryption key (with salt) then
    integrity key, initiator-to-responder first. ``encr`` is None for AH; ``g_ir`` is the
    shared secret of the CREATE_CHILD_SA KE payloads (PFS), None without."""
    e = _encr_len(encr)
    a = _integ_len(encr, integ)
    if e == 0 and a == 0:
        raise ValueError("a CHILD_SA needs an encryption or an integrity transform")
    km = child_keymat(prf, sk_d, ni, nr, 2 * (e + a), g_ir)
    return ChildSaKeys(km[:e], km[e : e + a], km[e + a : 2 * e + a], km[2 * e + a :])


def _chosen(proposal: Proposal) -> tuple[Encryption | None, IntegId]:
    """The encryption and integrity transforms of a chosen (single-transform) proposal."""
    if len(proposal.encryption) > 1 or len(proposal.integrity) > 1 or len(proposal.prf) > 1:
        raise ValueError("key derivation needs a chosen proposal: one transform of each type")
    encr = proposal.encryption[0] if proposal.encryption else None
    integ = proposal.integrity[0] if proposal.integrity else IntegId.NONE
    return encr, integ


def derive_ike_sa_for(
    proposal: Proposal, g_ir: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes
) -> IkeSaKeys:
    """:func:`derive_ike_sa` with the transforms of the chosen IKE proposal."""
    encr, integ = _chosen(proposal)
    if encr is None or not proposal.prf:
        raise ValueError("an IKE proposal needs an encryption transform and a PRF")
    return derive_ike_sa(proposal.prf[0], g_ir, ni, nr, spi_i, spi_r, encr, integ)


def derive_rekeyed_ike_sa_for(
    old_prf: Prf | PrfId | int,
    sk_d_old: bytes,
    proposal: Proposal,
    g_ir_new: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeSaKeys:
    """:func:`derive_rekeyed_ike_sa` with the transforms of the new SA's chosen proposal."""
    encr, integ = _chosen(proposal)
    if encr is None or not proposal.prf:
        raise ValueError("an IKE proposal needs an encryption transform and a PRF")
    return derive_rekeyed_ike_sa(
        old_prf, sk_d_old, proposal.prf[0], g_ir_new, ni, nr, spi_i, spi_r, encr, integ
    )


def derive_child_sa_for(
    ike_prf: Prf | PrfId | int,
    sk_d: bytes,
    proposal: Proposal,
    ni: bytes,
    nr: bytes,
    g_ir: bytes | None = None,
) -> ChildSaKeys:
    """:func:`derive_child_sa_keys` with the transforms of the chosen ESP or AH proposal;
    ``ike_prf`` is the IKE SA's PRF."""
    encr, integ = _chosen(proposal)
    return derive_child_sa_keys(ike_prf, sk_d, ni, nr, encr, integ, g_ir)


# ---------------------------------------------------------------- IKEv1


@dataclass(frozen=True, slots=True, repr=False)
class Ikev1Keys(_Secret):
    """SKEYID and its three derivatives (RFC 2409 5)."""

    skeyid: bytes
    skeyid_d: bytes
    skeyid_a: bytes
    skeyid_e: bytes


def ikev1_skeyid_psk(prf: Prf | PrfId | int, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    """SKEYID = prf(pre-shared-key, Ni_b | Nr_b) (RFC 2409 5)."""
    return _prf(prf)(psk, ni_b + nr_b)


def ikev1_skeyid_sig(prf: Prf | PrfId | int, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
    """SKEYID = prf(Ni_b | Nr_b, g^xy) for signature authentication (RFC 2409 5)."""
    return _prf(prf)(ni_b + nr_b, g_xy)


def ikev1_derive(
    prf: Prf | PrfId | int, skeyid: bytes, g_xy: bytes, cky_i: bytes, cky_r: bytes
) -> Ikev1Keys:
    """SKEYID_d, SKEYID_a, SKEYID_e (RFC 2409 5)."""
    f = _prf(prf).keyed(skeyid)
    tail = g_xy + cky_i + cky_r
    d = f(tail + b"\x00")
    a = f(d + tail + b"\x01")
    e = f(a + tail + b"\x02")
    return Ikev1Keys(skeyid, d, a, e)


def ikev1_encryption_key(prf: Prf | PrfId | int, skeyid_e: bytes, length: int) -> bytes:
    """The phase 1 cipher key from SKEYID_e (RFC 2409 Appendix B): its first octets, or
    K1 | K2 | ... with K1 = prf(SKEYID_e, 0) and Kn = prf(SKEYID_e, Kn-1) when too short."""
    if len(skeyid_e) >= length:
        return skeyid_e[:length]
    f = _prf(prf).keyed(skeyid_e)
    out = bytearray()
    block = b"\x00"
    while len(out) < length:
        block = f(block)
        out += block
    return bytes(out[:length])


def ikev1_quick_mode_keymat(
    prf: Prf | PrfId | int,
    skeyid_d: bytes,
    protocol: int,
    spi: bytes,
    ni_b: bytes,
    nr_b: bytes,
    length: int,
    g_qm_xy: bytes | None = None,
) -> bytes:
    """Quick Mode KEYMAT for one SA (RFC 2409 5.5); ``spi`` is the receiving side's SPI."""
    f = _prf(prf).keyed(skeyid_d)
    tail = (g_qm_xy or b"") + bytes((protocol,)) + spi + ni_b + nr_b
    out = bytearray()
    block = b""
    while len(out) < length:
        block = f(block + tail)
        out += block
    return bytes(out[:length])


def ikev1_quick_mode_keys(
    prf: Prf | PrfId | int,
    skeyid_d: bytes,
    protocol: int,
    spi_i: bytes,
    spi_r: bytes,
    ni_b: bytes,
    nr_b: bytes,
    encr: Encryption | None,
    integ: IntegId,
    g_qm_xy: bytes | None = None,
) -> ChildSaKeys:
    """The keys of a Quick Mode SA pair. ``spi_i`` is the SPI the initiator chose (it
    receives with it), ``spi_r`` the responder's; initiator-to-responder traffic is keyed
    with the responder's SPI. Encryption key first, then authentication key (5.5)."""
    e = _encr_len(encr)
    a = _integ_len(encr, integ)
    to_r = ikev1_quick_mode_keymat(prf, skeyid_d, protocol, spi_r, ni_b, nr_b, e + a, g_qm_xy)
    to_i = ikev1_quick_mode_keymat(prf, skeyid_d, protocol, spi_i, ni_b, nr_b, e + a, g_qm_xy)
    return ChildSaKeys(to_r[:e], to_r[e:], to_i[:e], to_i[e:])
