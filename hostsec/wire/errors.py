"""The one exception the wire layer raises."""

from __future__ import annotations


class MalformedPacket(Exception):
    """Bytes that do not form what they claim to be; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
