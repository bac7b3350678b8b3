"""IKE message fragmentation (RFC 7383): splitting and a sans-I/O reassembler.

The sender (2.5.1) splits the payload octets that would go into one SK payload into
chunks, and encrypts each chunk separately into an SKF payload of its own message, all with
the same Message ID; only fragment 1 carries the type of the first inner payload. The
receiver (2.6) authenticates and decrypts each fragment on its own, then hands the
plaintext (padding removed) to :class:`FragmentReassembler`; once all fragments are in it
returns the whole payload chain for :func:`parse_payloads`.

Rules of 2.6 implemented here: a duplicate fragment is ignored; fragments may come in any
order; a fragment whose Total Fragments is larger than that of the fragments held means
the sender re-fragmented the message (e.g. a smaller PMTU), so everything held for that
message is dropped and reassembly restarts; a fragment with a smaller Total Fragments is
discarded. Memory is bounded by the number of fragments per message, the octets held and
the number of messages in progress.

The reassembler does not know the message ID window: the state machine passes only
fragments of messages it would accept (and answers a retransmitted request only when its
fragment 1 arrives, 2.6.1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hostsec.wire.ikev2.constants import PayloadType
from hostsec.wire.ikev2.header import IKEHeader
from hostsec.wire.ikev2.payloads import SKF


def split_fragments(payload_octets: bytes, max_chunk: int) -> list[bytes]:
    """Cut the inner payload octets into chunks of at most ``max_chunk`` (RFC 7383 2.5.1).

    ``max_chunk`` is what fits into one fragment after the IP, UDP, IKE and SKF headers,
    the IV, the padding and the ICV. An empty input still makes one (empty) fragment.
    """
    if max_chunk < 1:
        raise ValueError("fragments must carry at least one octet")
    if not payload_octets:
        return [b""]
    return [payload_octets[i : i + max_chunk] for i in range(0, len(payload_octets), max_chunk)]


class FragmentStatus(enum.Enum):
    STORED = "stored"  # kept; more fragments are needed
    COMPLETE = "complete"  # the message is whole (first_payload_type, data)
    DUPLICATE = "duplicate"  # that fragment is already held: ignored
    DISCARDED = "discarded"  # refused, see reason


@dataclass(frozen=True, slots=True)
class FragmentResult:
    status: FragmentStatus
    reason: str = ""
    first_payload_type: int = PayloadType.NONE
    data: bytes = b""


@dataclass(slots=True)
class _Pending:
    total: int
    parts: dict[int, bytes] = field(default_factory=dict)
    first_payload_type: int = PayloadType.NONE
    size: int = 0


class FragmentReassembler:
    """Collect the decrypted fragments of IKE messages until each is whole.

    One per IKE SA. Messages are keyed by (Message ID, is_response), so a request from the
    peer and a response to our own request with the same ID do not mix.
    """

    def __init__(self, max_fragments: int = 64, max_bytes: int = 65536, max_messages: int = 2):
        if max_fragments < 1 or max_bytes < 1 or max_messages < 1:
            raise ValueError("reassembly limits must be positive")
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._pending: dict[tuple[int, bool], _Pending] = {}

    @property
    def held_bytes(self) -> int:
        return sum(p.size for p in self._pending.values())

    def in_progress(self) -> list[tuple[int, bool, int, int]]:
        """(message ID, is_response, fragments held, Total Fragments) of each message."""
        return [(mid, resp, len(p.parts), p.total) for (mid, resp), p in self._pending.items()]

    def discard(self, message_id: int, is_response: bool = False) -> None:
        """Forget the fragments held for one message (e.g. its exchange was abandoned)."""
        self._pending.pop((message_id, is_response), None)

    def clear(self) -> None:
        self._pending.clear()

    def add_skf(self, header: IKEHeader, skf: SKF, plaintext: bytes) -> FragmentResult:
        """:meth:`add` for a received SKF payload, keyed by its header's Message ID and R flag."""
        return self.add(
            header.message_id,
            skf.fragment_number,
            skf.total_fragments,
            skf.first_payload_type,
            plaintext,
            header.response,
        )

    def add(
        self,
        message_id: int,
        fragment_number: int,
        total_fragments: int,
        first_payload_type: int,
        plaintext: bytes,
        is_response: bool = False,
    ) -> FragmentResult:
        """Add one authenticated, decrypted fragment (its padding removed)."""
        if not 1 <= fragment_number <= total_fragments:
            return _discarded(f"fragment number {fragment_number} of {total_fragments}")
        if total_fragments > self.max_fragments:
            return _discarded(f"{total_fragments} fragments exceed the limit {self.max_fragments}")
        key = (message_id, is_response)
        pending = self._pending.get(key)
        reason = ""
        if pending is not None and total_fragments < pending.total:
            return _discarded(
                f"Total Fragments {total_fragments} below the {pending.total} being reassembled"
            )
        if pending is not None and total_fragments > pending.total:
            reason = f"restarted: Total Fragments grew from {pending.total} to {total_fragments}"
            del self._pending[key]
            pending = None
        if pending is not None and fragment_number in pending.parts:
            return FragmentResult(FragmentStatus.DUPLICATE, f"fragment {fragment_number} again")
        if self.held_bytes + len(plaintext) > self.max_bytes:
            return _discarded(f"reassembly memory limit of {self.max_bytes} octets reached")
        if pending is None:
            while len(self._pending) >= self.max_messages:
                # Drop the oldest message in progress (dicts keep insertion order).
                del self._pending[next(iter(self._pending))]
            pending = self._pending[key] = _Pending(total_fragments)
        pending.parts[fragment_number] = plaintext
        pending.size += len(plaintext)
        if fragment_number == 1:
            pending.first_payload_type = first_payload_type
        if len(pending.parts) < pending.total:
            return FragmentResult(FragmentStatus.STORED, reason)
        del self._pending[key]
        data = b"".join(pending.parts[n] for n in range(1, pending.total + 1))
        return FragmentResult(FragmentStatus.COMPLETE, reason, pending.first_payload_type, data)


def _discarded(reason: str) -> FragmentResult:
    return FragmentResult(FragmentStatus.DISCARDED, reason)
