"""The Encrypted payload: protecting IKE messages after IKE_SA_INIT (RFC 7296 3.14).

Combined-mode ciphers (AES-GCM per RFC 5282, ChaCha20-Poly1305 per RFC 7634) take the
octets before the IV as associated data; other ciphers encrypt (IV || padded payloads) and
an integrity transform covers the whole message up to the ICV. Large messages are split
into Encrypted Fragment payloads (RFC 7383 2.5), each protected on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from hostsec.crypto.cipher import Aead, PlainCipher, make_aead, make_cipher
from hostsec.crypto.integ import Mac, make_mac
from hostsec.crypto.keys import IkeSaKeys
from hostsec.crypto.proposals import Proposal
from hostsec.crypto.transforms import IntegId
from hostsec.wire.errors import MalformedPacket
from hostsec.wire.ikev2 import (
    SK,
    SKF,
    IKEHeader,
    Payload,
    encode_payloads,
    encrypted_message_prefix,
    sk_pad,
    sk_unpad,
    split_fragments,
)


class DecryptionFailed(Exception):
    """The ICV of an Encrypted payload did not verify, or its plaintext is malformed:
    the message MUST be dropped silently (RFC 7296 2.21)."""


@dataclass(frozen=True)
class Opened:
    """A decrypted SK/SKF payload: the plaintext of its payload chain (padding removed)."""

    first_payload_type: int
    octets: bytes
    fragment: tuple[int, int] | None = None  # (number, total) for SKF


class Protector:
    """Seals our messages and opens the peer's for one IKE SA."""

    def __init__(
        self,
        proposal: Proposal,
        keys: IkeSaKeys,
        initiator: bool,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        enc = proposal.encryption[0]
        integ = proposal.integrity[0] if proposal.integrity else IntegId.NONE
        out_e, in_e = (keys.sk_ei, keys.sk_er) if initiator else (keys.sk_er, keys.sk_ei)
        out_a, in_a = (keys.sk_ai, keys.sk_ar) if initiator else (keys.sk_ar, keys.sk_ai)
        self._random = random
        self._aead_out: Aead | None = None
        self._aead_in: Aead | None = None
        self._cipher_out: PlainCipher | None = None
        self._cipher_in: PlainCipher | None = None
        self._mac_out: Mac | None = None
        self._mac_in: Mac | None = None
        if enc.aead:
            self._aead_out = make_aead(enc.id, out_e)
            self._aead_in = make_aead(enc.id, in_e)
            self.iv_len = self._aead_out.iv_len
            self.icv_len = self._aead_out.icv_len
            self.block_size = 1  # RFC 5282 3: no alignment needed; Pad Length stays
        else:
            self._cipher_out = make_cipher(enc.id, out_e)
            self._cipher_in = make_cipher(enc.id, in_e)
            self._mac_out = make_mac(integ, out_a)
            self._mac_in = make_mac(integ, in_a)
            self.iv_len = self._cipher_out.iv_len
            self.icv_len = self._mac_out.icv_len
            self.block_size = max(self._cipher_out.block_size, 1)

    def overhead(self, payload_octets: int) -> int:
        """Octets an SK payload adds around ``payload_octets``: IV, padding, ICV."""
        padded = len(sk_pad(bytes(payload_octets), self.block_size))
        return self.iv_len + padded - payload_octets + self.icv_len

    def _seal_one(
        self,
        header: IKEHeader,
        first_type: int,
        octets: bytes,
        fragment: tuple[int, int] | None,
    ) -> bytes:
        plaintext = sk_pad(octets, self.block_size)
        iv = self._random(self.iv_len)
        if self._aead_out is not None:
            enc_len = self.iv_len + len(plaintext) + self.icv_len
            prefix = encrypted_message_prefix(header, first_type, enc_len, fragment=fragment)
            return prefix + iv + self._aead_out.seal(iv, plaintext, prefix)
        assert self._cipher_out is not None and self._mac_out is not None
        ciphertext = self._cipher_out.encrypt(iv, plaintext)
        enc_len = self.iv_len + len(ciphertext) + self.icv_len
        prefix = encrypted_message_prefix(header, first_type, enc_len, fragment=fragment)
        body = prefix + iv + ciphertext
        return body + self._mac_out.icv(body)

    def seal(
        self,
        header: IKEHeader,
        payloads: Sequence[Payload],
        fragment_size: int | None = None,
    ) -> list[bytes]:
        """The datagrams of one message: a single SK payload, or SKF fragments when the
        message would exceed ``fragment_size`` octets (and fragmentation was agreed)."""
        first_type, octets = encode_payloads(payloads)
        whole = self._seal_one(header, first_type, octets, None)
        if fragment_size is None or len(whole) <= fragment_size:
            return [whole]
        # RFC 7383 2.5.1: header + SKF header (8) + IV + ICV + padding around each chunk.
        room = fragment_size - 28 - 8 - self.iv_len - self.icv_len - self.block_size
        if room < 64:
            raise ValueError("fragment size too small for the cipher")
        chunks = split_fragments(octets, room)
        total = len(chunks)
        return [
            self._seal_one(header, first_type if n == 1 else 0, chunk, (n, total))
            for n, chunk in enumerate(chunks, start=1)
        ]

    def open(self, datagram: bytes, encrypted: SK | SKF) -> Opened:
        """Verify and decrypt the SK or SKF payload of a received ``datagram``."""
        data = encrypted.data
        if len(data) < self.iv_len + self.icv_len + 1:
            raise DecryptionFailed("Encrypted payload too short")
        iv = data[: self.iv_len]
        fragment = None
        if isinstance(encrypted, SKF):
            fragment = (encrypted.fragment_number, encrypted.total_fragments)
        prefix_len = len(datagram) - len(data)
        if self._aead_in is not None:
            try:
                plaintext = self._aead_in.open(iv, data[self.iv_len :], datagram[:prefix_len])
            except InvalidTag:
                raise DecryptionFailed("ICV mismatch") from None
        else:
            assert self._cipher_in is not None and self._mac_in is not None
            body, icv = datagram[: -self.icv_len], datagram[-self.icv_len :]
            if not self._mac_in.verify(body, icv):
                raise DecryptionFailed("ICV mismatch")
            ciphertext = data[self.iv_len : -self.icv_len]
            if not ciphertext or len(ciphertext) % self.block_size:
                raise DecryptionFailed("ciphertext is not a multiple of the block size")
            plaintext = self._cipher_in.decrypt(iv, ciphertext)
        try:
            octets = sk_unpad(plaintext)
        except MalformedPacket as exc:
            raise DecryptionFailed(exc.reason) from None
        return Opened(encrypted.first_payload_type, octets, fragment)
