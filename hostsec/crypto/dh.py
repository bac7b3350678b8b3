"""Key exchange (Diffie-Hellman) for IKE: MODP, ECP and Curve25519/Curve448 groups.

- MODP groups 1, 2 (RFC 2409 6.1-6.2) and 5, 14-18 (RFC 3526), generator 2: the KE payload
  data is g^x as a big-endian integer left-padded to the length of the prime, and g^ir is
  padded the same way (RFC 7296 3.4, 2.14). A peer value must satisfy 1 < y < p-1
  (RFC 6989 2.1, safe primes).
- ECP groups 19, 20, 21 (RFC 5903 7, 9): the KE payload data is x | y without the 0x04
  prefix; the shared secret g^ir is the x coordinate only. A peer point must be on the curve.
- Curve25519 (31) and Curve448 (32) (RFC 8031 2): the KE payload data is the public value;
  an all-zero shared secret is refused (RFC 8031 2.1).

Every operation is done by pyca/cryptography; the only arithmetic here is range checks.
"""

from __future__ import annotations

import functools
import warnings
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import constant_time
from cryptography.hazmat.primitives.asymmetric import dh, ec, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

from hostsec.crypto.transforms import DH_GROUPS, DhGroup, DhId

# cryptography >= 46 marks finite-field DH as deprecated. IKE still needs the MODP groups
# (RFC 8247 keeps group 14 as a MUST); silence exactly that warning, only for this module.
warnings.filterwarnings(
    "ignore",
    message="Diffie-Hellman over finite fields",
    category=CryptographyDeprecationWarning,
    module=r"hostsec\.crypto\.dh",
)

_GENERATOR = 2

# RFC 2409 6.1 (group 1), 6.2 (group 2); RFC 3526 2-7 (groups 5, 14-18). All share the
# prefix of the Oakley primes (digits of pi); hex as printed in the RFCs.
_MODP_PRIMES: dict[DhId, str] = {
    DhId.MODP_768: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620"
        "FFFFFFFFFFFFFFFF"
    ),
    DhId.MODP_1024: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
        "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF"
    ),
    DhId.MODP_1536: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
        "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
        "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
        "F1746C08CA237327FFFFFFFFFFFFFFFF"
    ),
    DhId.MODP_2048: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
        "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
        "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
        "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
        "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF"
    ),
    DhId.MODP_3072: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
        "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
        "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
        "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
        "955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64"
        "ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D226"
        "1AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"
    ),
    DhId.MODP_4096: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
        "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
        "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
        "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
        "955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64"
        "ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D226"
        "1AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D788719A10BDBA5B2699C32718"
        "6AF4E23C1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D"
        "99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA993B4EA98"
        "8D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF"
    ),
    DhId.MODP_6144: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
        "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
        "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
        "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
        "955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64"
        "ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D226"
        "1AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D788719A10BDBA5B2699C32718"
        "6AF4E23C1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D"
        "99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA993B4EA98"
        "8D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026C1D4DCB2602646DEC9751E763DBA37BD"
        "F8FF9406AD9E530EE5DB382F413001AEB06A53ED9027D831179727B0865A8918DA3EDBEBCF9B14ED44CE6CBA"
        "CED4BB1BDB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF5983CA01C64B92ECF032EA15D1721D03"
        "F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7"
        "FF585AC54BD407B22B4154AACC8F6D7EBF48E1D814CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76"
        "F550AA3D8A1FBFF0EB19CCB1A313D55CDA56C9EC2EF29632387FE8D76E3C0468043E8F663F4860EE12BF2D5B"
        "0B7474D6E694F91E6DCC4024FFFFFFFFFFFFFFFF"
    ),
    DhId.MODP_8192: (
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
        "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
        "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
        "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
        "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
        "955817183995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64"
        "ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D226"
        "1AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D788719A10BDBA5B2699C32718"
        "6AF4E23C1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D"
        "99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA993B4EA98"
        "8D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026C1D4DCB2602646DEC9751E763DBA37BD"
        "F8FF9406AD9E530EE5DB382F413001AEB06A53ED9027D831179727B0865A8918DA3EDBEBCF9B14ED44CE6CBA"
        "CED4BB1BDB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF5983CA01C64B92ECF032EA15D1721D03"
        "F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7"
        "FF585AC54BD407B22B4154AACC8F6D7EBF48E1D814CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76"
        "F550AA3D8A1FBFF0EB19CCB1A313D55CDA56C9EC2EF29632387FE8D76E3C0468043E8F663F4860EE12BF2D5B"
        "0B7474D6E694F91E6DBE115974A3926F12FEE5E438777CB6A932DF8CD8BEC4D073B931BA3BC832B68D9DD300"
        "741FA7BF8AFC47ED2576F6936BA424663AAB639C5AE4F5683423B4742BF1C978238F16CBE39D652DE3FDB8BE"
        "FC848AD922222E04A4037C0713EB57A81A23F0C73473FC646CEA306B4BCBC8862F8385DDFA9D4B7FA2C087E8"
        "79683303ED5BDD3A062B3CF5B3A278A66D2A13F83F44F82DDF310EE074AB6A364597E899A0255DC164F31CC5"
        "0846851DF9AB48195DED7EA1B1D510BD7EE74D73FAF36BC31ECFA268359046F4EB879F924009438B481C6CD7"
        "889A002ED5EE382BC9190DA6FC026E479558E4475677E9AA9E3050E2765694DFC81F56E880B96E7160C980DD"
        "98EDD3DFFFFFFFFFFFFFFFFF"
    ),
}

_ECP_CURVES: dict[DhId, type[ec.EllipticCurve]] = {
    DhId.ECP_256: ec.SECP256R1,
    DhId.ECP_384: ec.SECP384R1,
    DhId.ECP_521: ec.SECP521R1,
}


class KeyExchangeError(ValueError):
    """A key exchange that cannot go on: bad peer value, unknown group, bad private value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyExchange(Protocol):
    """One side of one Diffie-Hellman exchange (a fresh private value per exchange)."""

    @property
    def group(self) -> DhId: ...

    @property
    def public_value(self) -> bytes:
        """The Key Exchange Data of our KE payload (RFC 7296 3.4)."""
        ...

    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^ir from the peer's KE payload data; raises :class:`KeyExchangeError`."""
        ...


def _group(group: DhId | int) -> DhGroup:
    try:
        return DH_GROUPS[DhId(group)]
    except (ValueError, KeyError):
        raise KeyExchangeError(f"unsupported key exchange group {int(group)}") from None


@functools.cache
def _modp_parameters(group: DhId) -> dh.DHParameters:
    # Parameter loading checks the prime once (slow for groups 1 and 2): cache per process.
    numbers = dh.DHParameterNumbers(int(_MODP_PRIMES[group], 16), _GENERATOR)
    return numbers.parameters()


def modp_prime(group: DhId) -> int:
    """The prime p of MODP group ``group`` (RFC 2409 6, RFC 3526)."""
    return int(_MODP_PRIMES[group], 16)


class _Base:
    __slots__ = ("_group",)

    def __init__(self, group: DhGroup) -> None:
        self._group = group

    @property
    def group(self) -> DhId:
        return self._group.id

    def _check_length(self, peer_public: bytes) -> None:
        if len(peer_public) != self._group.public_len:
            raise KeyExchangeError(
                f"{self._group.name}: peer public value is {len(peer_public)} octets, "
                f"expected {self._group.public_len}"
            )

    def __repr__(self) -> str:  # never the private value
        return f"{type(self).__name__}({self._group.name})"


class ModpKeyExchange(_Base):
    """MODP Diffie-Hellman (RFC 2409, RFC 3526) through cryptography's ``dh`` module."""

    __slots__ = ("_len", "_p", "_private", "_public")

    def __init__(self, group: DhGroup, private_value: int | None = None) -> None:
        super().__init__(group)
        params = _modp_parameters(group.id)
        self._p = params.parameter_numbers().p
        self._len = group.public_len
        if private_value is None:
            self._private = params.generate_private_key()
            y = self._private.public_key().public_numbers().y
            self._public = y.to_bytes(self._len, "big")
        else:
            if not 1 < private_value < self._p - 1:
                raise KeyExchangeError(f"{group.name}: private value out of range")
            # g^x is computed by cryptography: the exchange with the "peer value" g gives g^x.
            placeholder = dh.DHPublicNumbers(_GENERATOR, params.parameter_numbers())
            self._private = dh.DHPrivateNumbers(private_value, placeholder).private_key()
            self._public = self._exchange(_GENERATOR)

    @property
    def public_value(self) -> bytes:
        return self._public

    def _exchange(self, y: int) -> bytes:
        peer = dh.DHPublicNumbers(y, self._private.parameters().parameter_numbers())
        secret = self._private.exchange(peer.public_key())
        # RFC 7296 2.14: g^ir is represented as a big-endian integer padded to len(p).
        return secret.rjust(self._len, b"\x00")

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public)
        y = int.from_bytes(peer_public, "big")
        # RFC 6989 2.1: for a safe-prime MODP group, 1 < y < p-1 rules out the small subgroup.
        if not 1 < y < self._p - 1:
            raise KeyExchangeError(f"{self._group.name}: peer public value out of range")
        try:
            return self._exchange(y)
        except ValueError:
            raise KeyExchangeError(f"{self._group.name}: peer public value refused") from None


class EcpKeyExchange(_Base):
    """ECP groups 19/20/21 (RFC 5903): KE data x | y, shared secret the x coordinate."""

    __slots__ = ("_curve", "_private", "_public")

    def __init__(self, group: DhGroup, private_value: int | None = None) -> None:
        super().__init__(group)
        self._curve = _ECP_CURVES[group.id]()
        try:
            if private_value is None:
                self._private = ec.generate_private_key(self._curve)
            else:
                self._private = ec.derive_private_key(private_value, self._curve)
        except ValueError:
            raise KeyExchangeError(f"{group.name}: private value out of range") from None
        point = self._private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        self._public = point[1:]  # RFC 5903 7: no 0x04 prefix

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public)
        try:
            # from_encoded_point checks that the point lies on the curve.
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_public)
        except ValueError:
            raise KeyExchangeError(f"{self._group.name}: peer point is not on the curve") from None
        try:
            return self._private.exchange(ec.ECDH(), peer)  # x coordinate (RFC 5903 9)
        except ValueError:
            raise KeyExchangeError(f"{self._group.name}: peer point refused") from None


class CurveKeyExchange(_Base):
    """Curve25519 and Curve448 (RFC 8031, RFC 7748)."""

    __slots__ = ("_private", "_public")

    _private: x25519.X25519PrivateKey | x448.X448PrivateKey

    def __init__(self, group: DhGroup, private_value: bytes | None = None) -> None:
        super().__init__(group)
        try:
            if group.id == DhId.CURVE25519:
                self._private = (
                    x25519.X25519PrivateKey.generate()
                    if private_value is None
                    else x25519.X25519PrivateKey.from_private_bytes(private_value)
                )
            else:
                self._private = (
                    x448.X448PrivateKey.generate()
                    if private_value is None
                    else x448.X448PrivateKey.from_private_bytes(private_value)
                )
        except (ValueError, UnsupportedAlgorithm):
            raise KeyExchangeError(f"{group.name}: private value refused") from None
        self._public = self._private.public_key().public_bytes_raw()

    @property
    def public_value(self) -> bytes:
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public)
        try:
            if isinstance(self._private, x25519.X25519PrivateKey):
                secret = self._private.exchange(
                    x25519.X25519PublicKey.from_public_bytes(peer_public)
                )
            else:
                secret = self._private.exchange(x448.X448PublicKey.from_public_bytes(peer_public))
        except ValueError:
            # OpenSSL refuses a low-order peer point (all-zero output) with an error.
            raise KeyExchangeError(f"{self._group.name}: all-zero shared secret") from None
        # RFC 8031 2.1: MUST check that the shared secret is not all zeros.
        if constant_time.bytes_eq(secret, bytes(len(secret))):
            raise KeyExchangeError(f"{self._group.name}: all-zero shared secret")
        return secret


def new_key_exchange(group: DhId | int) -> KeyExchange:
    """A fresh key exchange in ``group`` with a random private value."""
    g = _group(group)
    if g.kind == "modp":
        return ModpKeyExchange(g)
    if g.kind == "ecp":
        return EcpKeyExchange(g)
    return CurveKeyExchange(g)


def key_exchange_from_private(group: DhId | int, private_value: bytes) -> KeyExchange:
    """A key exchange with a fixed private value (big-endian x for MODP/ECP, the raw
    scalar for Curve25519/448): for test vectors only, never for real exchanges."""
    g = _group(group)
    if g.kind == "modp":
        return ModpKeyExchange(g, int.from_bytes(private_value, "big"))
    if g.kind == "ecp":
        return EcpKeyExchange(g, int.from_bytes(private_value, "big"))
    return CurveKeyExchange(g, private_value)
