"""RFC 7383 fragmentation: splitting and the reassembler."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hostsec.wire.ikev2 import (
    FragmentReassembler,
    FragmentStatus,
    PayloadType,
    split_fragments,
)

IDI = PayloadType.IDi


def _feed(r: FragmentReassembler, parts: list[bytes], order: list[int], mid: int = 1) -> bytes:
    total = len(parts)
    result = None
    for i in order:
        result = r.add(mid, i + 1, total, IDI if i == 0 else 0, parts[i])
    assert result is not None and result.status is FragmentStatus.COMPLETE
    assert result.first_payload_type == IDI
    return result.data


def test_split_and_reassemble_in_order() -> None:
    data = bytes(range(256)) * 5
    parts = split_fragments(data, 300)
    assert [len(p) for p in parts] == [300, 300, 300, 300, 80]
    assert _feed(FragmentReassembler(), parts, list(range(5))) == data
    assert split_fragments(b"", 10) == [b""]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(1, 700), st.randoms())
def test_any_order_with_duplicates(data: bytes, chunk: int, rnd: object) -> None:
    parts = split_fragments(data, chunk)
    if len(parts) > 64:
        return
    order = list(range(len(parts)))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    r = FragmentReassembler()
    results = []
    for i in order[:-1]:
        results.append(r.add(9, i + 1, len(parts), IDI if i == 0 else 0, parts[i]).status)
        again = r.add(9, i + 1, len(parts), IDI if i == 0 else 0, parts[i])
        assert again.status is FragmentStatus.DUPLICATE
    assert results == [FragmentStatus.STORED] * (len(parts) - 1)
    last = order[-1]
    done = r.add(9, last + 1, len(parts), IDI if last == 0 else 0, parts[last])
    assert done.status is FragmentStatus.COMPLETE and done.data == data
    assert done.first_payload_type == IDI
    assert r.in_progress() == [] and r.held_bytes == 0


def test_larger_total_restarts_and_smaller_total_is_discarded() -> None:
    r = FragmentReassembler()
    assert r.add(1, 1, 2, IDI, b"old-1").status is FragmentStatus.STORED
    # The sender re-fragmented into 3 (RFC 7383 2.6): start anew.
    restarted = r.add(1, 2, 3, 0, b"B")
    assert restarted.status is FragmentStatus.STORED and "restarted" in restarted.reason
    assert r.in_progress() == [(1, False, 1, 3)]
    # A straggler of the 2-fragment version is discarded.
    assert r.add(1, 2, 2, 0, b"old-2").status is FragmentStatus.DISCARDED
    assert r.add(1, 1, 3, IDI, b"A").status is FragmentStatus.STORED
    done = r.add(1, 3, 3, 0, b"C")
    assert done.status is FragmentStatus.COMPLETE and done.data == b"ABC"


def test_requests_and_responses_with_one_message_id_do_not_mix() -> None:
    r = FragmentReassembler()
    r.add(4, 1, 2, IDI, b"req-1", is_response=False)
    r.add(4, 1, 2, PayloadType.IDr, b"resp-1", is_response=True)
    done = r.add(4, 2, 2, 0, b"|resp-2", is_response=True)
    assert done.data == b"resp-1|resp-2" and done.first_payload_type == PayloadType.IDr
    assert r.add(4, 2, 2, 0, b"|req-2").data == b"req-1|req-2"


def test_bounds() -> None:
    r = FragmentReassembler(max_fragments=4, max_bytes=10, max_messages=2)
    assert r.add(1, 1, 5, IDI, b"x").status is FragmentStatus.DISCARDED  # too many fragments
    assert r.add(1, 0, 2, IDI, b"x").status is FragmentStatus.DISCARDED
    assert r.add(1, 3, 2, IDI, b"x").status is FragmentStatus.DISCARDED
    assert r.add(1, 1, 2, IDI, b"12345678").status is FragmentStatus.STORED
    full = r.add(1, 2, 2, 0, b"abc")
    assert full.status is FragmentStatus.DISCARDED and "memory" in full.reason
    assert r.held_bytes == 8
    # A third message evicts the oldest.
    r.add(2, 1, 2, IDI, b"a")
    r.add(3, 1, 2, IDI, b"b")
    assert [m[0] for m in r.in_progress()] == [2, 3]
    r.discard(2)
    assert [m[0] for m in r.in_progress()] == [3]
    r.clear()
    assert r.in_progress() == [] and r.held_bytes == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 10),
            st.integers(0, 10),
            st.integers(0, 255),
            st.binary(max_size=40),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_random_input_stays_within_bounds(
    calls: list[tuple[int, int, int, int, bytes, bool]],
) -> None:
    r = FragmentReassembler(max_fragments=8, max_bytes=200, max_messages=3)
    for mid, number, total, first, data, response in calls:
        result = r.add(mid, number, total, first, data, response)
        assert result.status in FragmentStatus
        assert r.held_bytes <= 200
        assert len(r.in_progress()) <= 3
        assert all(held <= total <= 8 for _m, _r, held, total in r.in_progress())
