#!/usr/bin/env python3
"""Per-packet cost of hostsec's ESP/AH engine next to the bare cryptography call.

For 64, 512 and 1400-byte IP packets and each transform: microseconds per protect and
per unprotect, and the bare pyca/cryptography operation that does the same encryption
(same key size, same plaintext length) measured in the same run, interleaved, so that
the ratio is meaningful on a noisy machine. Reports the best of many short rounds.

    scripts/bench_packet.py            a table
    scripts/bench_packet.py --json     one JSON object
    scripts/bench_packet.py --quick    fewer rounds (a smoke run)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import cryptography
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from hostsec.crypto.proposals import Protocol, parse_proposal
from hostsec.crypto.transforms import ENCRYPTION, INTEGRITY
from hostsec.ipsec.ah import AhSA
from hostsec.ipsec.esp import EspSA
from hostsec.ipsec.replay import ReplayWindow
from hostsec.ipsec.sa import Direction, Mode, SAConfig, SecurityAssociation, UdpEncapsulation
from hostsec.wire.ip import IPv4Header

A = ipaddress.ip_address("198.51.100.1")
B = ipaddress.ip_address("198.51.100.2")
RING = 256  # distinct packets per round (fresh sequence numbers, as on the wire)


@dataclass
class Case:
    name: str
    proposal: str
    protocol: Protocol
    mode: Mode
    udp: bool = False


CASES = [
    Case("esp aes128gcm16 tunnel", "aes128gcm16", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes128gcm16 transport", "aes128gcm16", Protocol.ESP, Mode.TRANSPORT),
    Case("esp aes128gcm16 tunnel udp", "aes128gcm16", Protocol.ESP, Mode.TUNNEL, udp=True),
    Case("esp aes256gcm16 tunnel", "aes256gcm16", Protocol.ESP, Mode.TUNNEL),
    Case("esp chacha20poly1305 tunnel", "chacha20poly1305", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes128-sha256 tunnel", "aes128-sha256", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes256-sha1 tunnel", "aes256-sha1", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes128ctr-sha256 tunnel", "aes128ctr-sha256", Protocol.ESP, Mode.TUNNEL),
    Case("esp null-sha256 transport", "null-sha256", Protocol.ESP, Mode.TRANSPORT),
    Case("ah sha256 transport", "sha256", Protocol.AH, Mode.TRANSPORT),
]


def make_pair(case: Case, window: int) -> tuple[SecurityAssociation, SecurityAssociation]:
    proposal = parse_proposal(case.proposal, case.protocol)
    enc = proposal.encryption[0] if proposal.encryption else None
    integ = proposal.integrity[0] if proposal.integrity else None
    enc_key = os.urandom(ENCRYPTION[enc.id].key_material_len(enc.key_bits)) if enc else b""
    integ_key = os.urandom(INTEGRITY[integ].key_len) if integ else b""
    encap = UdpEncapsulation(4500, 4500) if case.udp else None

    def config(direction: Direction) -> SAConfig:
        return SAConfig(
            spi=0x1000,
            protocol=case.protocol,
            direction=direction,
            mode=case.mode,
            src=A,
            dst=B,
            encryption=enc,
            integrity=integ,
            encryption_key=enc_key,
            integrity_key=integ_key,
            replay_window=window if direction is Direction.INBOUND else 64,
            encapsulation=encap,
        )

    if case.protocol is Protocol.AH:
        return AhSA(config(Direction.OUTBOUND), 0.0), AhSA(config(Direction.INBOUND), 0.0)
    return EspSA(config(Direction.OUTBOUND), 0.0), EspSA(config(Direction.INBOUND), 0.0)


def bare_ops(case: Case, size: int) -> tuple[Callable[[], object], Callable[[], object], str]:
    """The bare cryptography calls that do this case's encryption of ``size`` octets."""
    payload = os.urandom(size + 2)  # an ESP payload carries at least the two trailer octets
    aad = os.urandom(8)
    name = case.proposal.split("-")[0]
    if name.endswith("gcm16") or name == "chacha20poly1305":
        prim = (
            ChaCha20Poly1305(os.urandom(32))
            if name == "chacha20poly1305"
            else AESGCM(os.urandom(int(name[3:6]) // 8))
        )
        nonce = os.urandom(12)
        sealed = prim.encrypt(nonce, payload, aad)
        label = f"{type(prim).__name__}.encrypt/decrypt"
        return (
            lambda: prim.encrypt(nonce, payload, aad),
            lambda: prim.decrypt(nonce, sealed, aad),
            label,
        )
    if case.protocol is Protocol.AH or name == "null":
        digest = hashes.SHA256()
        key = os.urandom(32)
        data = os.urandom(size + 24)

        def mac() -> bytes:
            h = hmac.HMAC(key, digest)
            h.update(data)
            return h.finalize()

        return mac, mac, "HMAC-SHA256"
    # CBC / CTR + HMAC
    key = os.urandom(int(name[3:6]) // 8)
    block = b"\x00" * (-(size + 2) % 16)
    plain = payload + block
    iv = os.urandom(16)
    integ = hashes.SHA256() if case.proposal.endswith("sha256") else hashes.SHA1()
    mac_key = os.urandom(32)
    mode_for: Callable[[bytes], modes.Mode] = modes.CTR if "ctr" in name else modes.CBC

    def seal() -> bytes:
        enc = Cipher(algorithms.AES(key), mode_for(iv)).encryptor()
        ct = enc.update(plain) + enc.finalize()
        h = hmac.HMAC(mac_key, integ)
        h.update(ct)
        return h.finalize()

    def open_() -> bytes:
        h = hmac.HMAC(mac_key, integ)
        h.update(plain)
        h.finalize()
        dec = Cipher(algorithms.AES(key), mode_for(iv)).decryptor()
        return dec.update(plain) + dec.finalize()

    return seal, open_, f"AES-{'CTR' if 'ctr' in name else 'CBC'} + HMAC"


def per_op(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def measure(case: Case, size: int, rounds: int) -> dict[str, object]:
    window = 4096
    out_sa, in_sa = make_pair(case, window)
    packet = IPv4Header(A.packed, B.packed, 6).pack(size - 20) + os.urandom(size - 20)
    bare_seal, bare_open, bare_label = bare_ops(case, size)
    # One ring of distinct protected packets for the inbound side; the replay window is
    # reset between rounds (outside the timing) so every round unprotects fresh packets.
    wire = [out_sa.protect(packet) for _ in range(RING)]
    unprotect = in_sa.unprotect
    protect = out_sa.protect
    assert unprotect(wire[0]) == packet

    best = {"protect": 1e9, "unprotect": 1e9, "bare_seal": 1e9, "bare_open": 1e9}
    for _ in range(rounds):
        best["bare_seal"] = min(best["bare_seal"], per_op(bare_seal, RING))
        best["protect"] = min(best["protect"], per_op(lambda: protect(packet), RING))
        best["bare_open"] = min(best["bare_open"], per_op(bare_open, RING))
        window_obj = ReplayWindow(window, False)
        in_sa._window = window_obj  # type: ignore[attr-defined]  # fresh window per round
        start = time.perf_counter()
        for p in wire:
            unprotect(p)
        best["unprotect"] = min(best["unprotect"], (time.perf_counter() - start) / RING * 1e6)
    return {
        "case": case.name,
        "size": size,
        "protect_us": round(best["protect"], 3),
        "unprotect_us": round(best["unprotect"], 3),
        "bare": bare_label,
        "bare_seal_us": round(best["bare_seal"], 3),
        "bare_open_us": round(best["bare_open"], 3),
        "protect_ratio": round(best["protect"] / best["bare_seal"], 2),
        "unprotect_ratio": round(best["unprotect"] / best["bare_open"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument("--sizes", default="64,512,1400")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    rounds = 3 if args.quick else 40
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [
        measure(case, size, rounds) for case in CASES if args.only in case.name for size in sizes
    ]
    gcm = next(
        (r for r in results if r["case"] == "esp aes128gcm16 tunnel" and r["size"] == 1400), None
    )
    report: dict[str, object] = {
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "ring": RING,
        "results": results,
    }
    if gcm is not None:
        report["targets"] = {
            "aes128gcm16 1400B protect <= 2.5x AESGCM.encrypt": gcm["protect_ratio"],
            "aes128gcm16 1400B unprotect <= 2.0x AESGCM.decrypt": gcm["unprotect_ratio"],
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Python {report['python']}, cryptography {report['cryptography']}, best of {rounds}")
    head = f"{'case':32} {'size':>5} {'protect':>8} {'bare':>7} {'ratio':>6}"
    head += f" {'unprot':>8} {'bare':>7} {'ratio':>6}  bare call"
    print(head)
    for r in results:
        print(
            f"{r['case']:32} {r['size']:>5} {r['protect_us']:>8.2f} {r['bare_seal_us']:>7.2f}"
            f" {r['protect_ratio']:>6.2f} {r['unprotect_us']:>8.2f} {r['bare_open_us']:>7.2f}"
            f" {r['unprotect_ratio']:>6.2f}  {r['bare']}"
        )
    if gcm is not None:
        for name, value in report["targets"].items():  # type: ignore[union-attr]
            print(f"target: {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
