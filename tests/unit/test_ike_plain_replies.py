"""Unencrypted IKE_SA_INIT replies (INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, COOKIE) go back
to the initiator, from the address and port the request came to. Found against strongSwan
(tests/interop): they were addressed to the agent itself, so strongSwan never saw them."""

from __future__ import annotations

import ipaddress

from hostsec.crypto.certs import Identity
from hostsec.crypto.dh import new_key_exchange
from hostsec.crypto.ikev2_proposals import to_sa_payload
from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import DhId
from hostsec.ike.v2.config import IkeConfig, PskAuth
from hostsec.ike.v2.manager import IkeManager
from hostsec.wire.ikev2 import (
    KE,
    ExchangeType,
    HeaderFlags,
    IKEHeader,
    Nonce,
    NotifyType,
    encode_message,
    find_notify,
    parse_message,
)

US = (ipaddress.ip_address("198.51.100.1"), 500)
PEER = (ipaddress.ip_address("198.51.100.2"), 500)


def _manager(proposal: str, cookie_threshold: int = 10) -> IkeManager:
    config = IkeConfig(
        name="peer",
        remote=PEER[0],
        local=US[0],
        proposals=(parse_proposal(proposal, Protocol.IKE),),
        local_id=Identity.from_string("us.test"),
        auth=PskAuth(b"k" * 32),
    )
    return IkeManager([config], cookie_threshold=cookie_threshold)


def _init(proposals: list[str], group: DhId) -> bytes:
    kex = new_key_exchange(group)
    header = IKEHeader(b"\x11" * 8, b"\x00" * 8, ExchangeType.IKE_SA_INIT, 0, HeaderFlags.INITIATOR)
    sa = to_sa_payload([parse_proposal(p, Protocol.IKE) for p in proposals])
    return encode_message(header, [sa, KE(kex.group, kex.public_value), Nonce(b"n" * 32)])


def _reply(manager: IkeManager, request: bytes) -> NotifyType:
    manager.handle_datagram(request, PEER, US, 0.0)
    out, _ = manager.poll()
    assert len(out) == 1
    assert (out[0].local, out[0].remote) == (US, PEER)
    msg = parse_message(out[0].data)
    assert msg.header.response
    for kind in (NotifyType.INVALID_KE_PAYLOAD, NotifyType.NO_PROPOSAL_CHOSEN, NotifyType.COOKIE):
        if find_notify(msg.payloads, kind) is not None:
            return kind
    raise AssertionError(msg)


def test_invalid_ke_goes_to_the_initiator() -> None:
    request = _init(["aes256-sha256-modp2048", "aes128gcm16-prfsha256-ecp256"], DhId.MODP_2048)
    reply = _reply(_manager("aes128gcm16-prfsha256-ecp256"), request)
    assert reply is NotifyType.INVALID_KE_PAYLOAD


def test_no_proposal_chosen_goes_to_the_initiator() -> None:
    request = _init(["aes128-sha256-modp2048"], DhId.MODP_2048)
    reply = _reply(_manager("aes256gcm16-prfsha384-ecp384"), request)
    assert reply is NotifyType.NO_PROPOSAL_CHOSEN


def test_cookie_goes_to_the_initiator() -> None:
    request = _init(["aes128gcm16-prfsha256-ecp256"], DhId.ECP_256)
    reply = _reply(_manager("aes128gcm16-prfsha256-ecp256", cookie_threshold=0), request)
    assert reply is NotifyType.COOKIE
