"""SA bundles: ESP inside AH (RFC 4301 4.5: "AH and ESP ... in a single SA bundle").

Outbound, ESP is applied first and AH outside it, so AH also covers the outer header:
transport mode gives ``IP | AH | ESP | payload``; tunnel mode gives
``outer IP | AH | ESP | inner IP ...`` (ESP builds the tunnel, AH protects it in place).
Inbound is the reverse: AH is verified and removed, then ESP.
"""

from __future__ import annotations

from hostsec.ipsec.ah import AhSA
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.sa import Direction


class Bundle:
    """An ESP SA and an AH SA used together, in the same direction."""

    def __init__(self, esp: EspSA, ah: AhSA) -> None:
        if esp.config.direction is not ah.config.direction:
            raise ValueError("a bundle's SAs share one direction")
        if esp.config.mode is not ah.config.mode:
            raise ValueError("a bundle's SAs share one mode")
        if esp.config.encapsulation is not None:
            raise ValueError("AH cannot cross a NAT: no UDP encapsulation in a bundle")
        self.esp = esp
        self.ah = ah
        self.direction: Direction = esp.config.direction

    def protect(self, packet: bytes) -> bytes:
        return self.ah.protect_transport(self.esp.protect(packet))

    def unprotect(self, packet: bytes) -> bytes:
        # Whatever AH leaves, ESP parses and counts (an empty or short packet is Malformed).
        return self.esp.unprotect(self.ah.unprotect_transport(packet))
