"""CHILD SA records of an IKE SA (RFC 7296 1.3, 2.8).

A CHILD SA here is the pair of unidirectional SAs (inbound and outbound) negotiated
together; it is identified by its inbound SPI, the one we chose.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hostsec.crypto.proposals import Mode, Proposal, Protocol
from hostsec.ike.v2.config import ChildConfig
from hostsec.wire.selectors import TrafficSelector


class ChildState(enum.Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"  # we sent (or queued) a CREATE_CHILD_SA with REKEY_SA for it
    REKEYED = "rekeyed"  # replaced by a newer pair; waits for its DELETE (RFC 7296 2.8)
    DELETING = "deleting"  # we sent a DELETE for it


@dataclass
class ChildSA:
    config: ChildConfig
    protocol: Protocol
    mode: Mode
    proposal: Proposal
    spi_in: int
    spi_out: int
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    created: float
    rekey_at: float | None
    expire_at: float | None
    nonce_i: bytes
    nonce_r: bytes
    initiated: bool  # we were the initiator of the exchange that created it
    state: ChildState = ChildState.INSTALLED
    replaced_by: int | None = None  # inbound SPI of the pair that replaced it
    # A rekey of this pair that the peer started while ours was under way (a collision,
    # RFC 7296 2.8.1): the inbound SPI of the pair we created in answer to it.
    peer_rekey: int | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def lowest_nonce(self) -> bytes:
        return min(self.nonce_i, self.nonce_r)

    @property
    def live(self) -> bool:
        return self.state in (ChildState.INSTALLED, ChildState.REKEYING)
