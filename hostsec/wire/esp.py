"""ESP header and trailer (RFC 4303 section 2)."""

from __future__ import annotations

import struct

from hostsec.wire.errors import MalformedPacket

#: SPI (4) and sequence number (4).
ESP_HEADER = struct.Struct("!II")
ESP_HEADER_LEN = ESP_HEADER.size
#: Pad Length and Next Header, the last two octets of the encrypted part.
ESP_TRAILER_LEN = 2
#: SPI values 1-255 are reserved by IANA, 0 is for local use only (RFC 4303 2.1).
SPI_MIN = 256


def parse_esp_header(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """The (SPI, low 32 bits of the sequence number) of an ESP packet."""
    if len(data) < ESP_HEADER_LEN:
        raise MalformedPacket("ESP header truncated")
    spi, seq = ESP_HEADER.unpack_from(data)
    return spi, seq


def padding(length: int) -> bytes:
    """The monotonic padding 1, 2, 3, ... of RFC 4303 2.4 (``length`` <= 255)."""
    return bytes(range(1, length + 1))


def pad_length(payload_length: int, alignment: int) -> int:
    """Padding so that payload + padding + 2 trailer octets fill ``alignment`` (RFC 4303 2.4).

    ``alignment`` is the cipher block size, at least 4 (the 32-bit alignment of the
    ciphertext that RFC 4303 requires even for stream and AEAD ciphers).
    """
    return -(payload_length + ESP_TRAILER_LEN) % alignment


def strip_trailer(plaintext: bytes, check_padding: bool = True) -> tuple[int, bytes]:
    """Split a decrypted ESP payload into (next header, payload), validating the padding."""
    if len(plaintext) < ESP_TRAILER_LEN:
        raise MalformedPacket("ESP trailer truncated")
    pad_len = plaintext[-2]
    next_header = plaintext[-1]
    end = len(plaintext) - ESP_TRAILER_LEN - pad_len
    if end < 0:
        raise MalformedPacket("ESP pad length exceeds the payload")
    if check_padding and pad_len and plaintext[end : end + pad_len] != _PADDINGS[pad_len]:
        # RFC 4303 2.4: the receiver SHOULD inspect the padding when it is the default.
        raise MalformedPacket("ESP padding is not the default monotonic sequence")
    return next_header, plaintext[:end]


_PADDINGS = [padding(n) for n in range(256)]
