"""The IKEv2 parse failures that the state machine answers rather than just drops.

Both are :class:`MalformedPacket` subclasses, so code that only wants "drop bad input"
can catch that one class; code that answers catches these first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hostsec.wire.errors import MalformedPacket

if TYPE_CHECKING:
    from hostsec.wire.ikev2.header import IKEHeader


class InvalidMajorVersion(MalformedPacket):
    """The IKE header's major version is not 2 (RFC 7296 2.5, 3.1).

    ``header`` is the header as read (its ``major_version`` is the peer's). For a major
    version above 2 the responder SHOULD answer with an unauthenticated
    INVALID_MAJOR_VERSION notify (RFC 7296 2.5); major version 1 is IKEv1.
    """

    def __init__(self, header: IKEHeader) -> None:
        super().__init__(f"IKE major version {header.major_version} is not 2")
        self.header = header


class UnsupportedCriticalPayload(MalformedPacket):
    """A payload of a type this codec does not know, with the critical bit set.

    RFC 7296 2.5: the message MUST be rejected, and the response to a request holding it
    MUST carry UNSUPPORTED_CRITICAL_PAYLOAD with the one-octet payload type as data.
    ``payload_type`` is the first such type in the chain (after the whole chain was checked
    for well-formedness); ``header`` is the IKE header, or None for an inner (decrypted)
    payload chain.
    """

    def __init__(self, payload_type: int, header: IKEHeader | None = None) -> None:
        super().__init__(f"unsupported critical payload type {payload_type}")
        self.payload_type = payload_type
        self.header = header
