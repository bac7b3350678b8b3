"""Fuzz the proposal parser with arbitrary strings: ProposalError or a proposal that
formats back to itself, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostsec.crypto.proposals import (
    ProposalError,
    Protocol,
    format_proposal,
    parse_proposal,
    parse_proposals,
)
from tests.unit.packets import budget

pytestmark = pytest.mark.fuzz

_ALPHABET = st.sampled_from([*"aes128gcm16sha256modp2048-,_ \t", "\x00", "İ", "ß", "-"])
TEXT = st.one_of(st.text(max_size=60), st.text(alphabet=_ALPHABET, max_size=60))


@budget(800)
@given(text=TEXT, protocol=st.sampled_from(list(Protocol)))
def test_parse_proposal(text: str, protocol: Protocol) -> None:
    try:
        proposal = parse_proposal(text, protocol)
    except ProposalError as exc:
        assert str(exc)
        return
    assert parse_proposal(format_proposal(proposal), protocol) == proposal


@budget(200)
@given(texts=st.lists(TEXT, max_size=4), protocol=st.sampled_from(list(Protocol)))
def test_parse_proposals(texts: list[str], protocol: Protocol) -> None:
    try:
        parse_proposals(texts, protocol)
    except ProposalError as exc:
        assert str(exc)
