#!/usr/bin/env python3
"""Per-packet cost of hostsec's ESP/AH engine next to the bare cryptography call.

For 64, 512 and 1400-byte IP packets and each transform: microseconds per protect and
per unprotect, and the bare pyca/cryptography operation that does the same encryption
(same key size, same plaintext length as the ESP payload) measured in the same run,
interleaved round by round, so that the ratio is meaningful on a noisy machine. Each
figure is the best of many rounds; a round runs one operation on each packet of a ring
of RING distinct packets (fresh sequence numbers, as on the wire: the inbound SA is
created anew, outside the timing, before every round). Both sides are timed the same
way: a plain loop calling the operation, no lambda or wrapper in between.

Besides protect/unprotect (complete IP packets, as a TUN device gives and takes them),
"encap" rows time the data-path entry points encapsulate/decapsulate (ESP without the
outer IP/UDP header, for UDP sockets), and "batch" rows the per-packet cost of
protect_many/unprotect_many over the whole ring in one call (as a data path reading
UDP_GRO or TUN TSO batches would call them).

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
from hostsec.ipsec.sa import Direction, Mode, SAConfig, UdpEncapsulation
from hostsec.wire.ip import IPv4Header

A = ipaddress.ip_address("198.51.100.1")
B = ipaddress.ip_address("198.51.100.2")
RING = 256  # distinct packets per round (fresh sequence numbers, as on the wire)
WINDOW = 4096  # inbound replay window: the largest allowed (its cost does not depend on it)

Runner = Callable[[], object]  # runs one operation on each of RING packets


@dataclass
class Case:
    name: str
    proposal: str
    protocol: Protocol
    mode: Mode
    udp: bool = False
    api: str = "packet"  # "packet": protect/unprotect; "encap": encapsulate/decapsulate;
    # "batch": protect_many/unprotect_many


CASES = [
    Case("esp aes128gcm16 tunnel", "aes128gcm16", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes128gcm16 transport", "aes128gcm16", Protocol.ESP, Mode.TRANSPORT),
    Case("esp aes128gcm16 tunnel udp", "aes128gcm16", Protocol.ESP, Mode.TUNNEL, udp=True),
    Case("esp aes128gcm16 tunnel encap", "aes128gcm16", Protocol.ESP, Mode.TUNNEL, True, "encap"),
    Case("esp aes128gcm16 tunnel batch", "aes128gcm16", Protocol.ESP, Mode.TUNNEL, api="batch"),
    Case("esp aes256gcm16 tunnel", "aes256gcm16", Protocol.ESP, Mode.TUNNEL),
    Case("esp chacha20poly1305 tunnel", "chacha20poly1305", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes128-sha256 tunnel", "aes128-sha256", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes256-sha1 tunnel", "aes256-sha1", Protocol.ESP, Mode.TUNNEL),
    Case("esp aes128ctr-sha256 tunnel", "aes128ctr-sha256", Protocol.ESP, Mode.TUNNEL),
    Case("esp null-sha256 transport", "null-sha256", Protocol.ESP, Mode.TRANSPORT),
    Case("ah sha256 transport", "sha256", Protocol.AH, Mode.TRANSPORT),
]


def make_configs(case: Case) -> tuple[SAConfig, SAConfig]:
    """(outbound, inbound) configurations sharing fresh keys."""
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
            replay_window=WINDOW if direction is Direction.INBOUND else 64,
            encapsulation=encap,
        )

    return config(Direction.OUTBOUND), config(Direction.INBOUND)


def make_sa(case: Case, config: SAConfig) -> EspSA | AhSA:
    return AhSA(config, 0.0) if case.protocol is Protocol.AH else EspSA(config, 0.0)


def esp_payload_len(case: Case, size: int) -> int:
    """Octets the cipher processes for a packet of ``size``: payload, padding, trailer."""
    payload = size if case.mode is Mode.TUNNEL else size - 20
    name = case.proposal.split("-")[0]
    block = 16 if name.startswith("aes") and "gcm" not in name and "ctr" not in name else 4
    return payload + 2 + (-(payload + 2) % block)


def bare_ops(case: Case, size: int) -> tuple[Runner, Runner, str]:
    """Runners of RING bare cryptography calls that do this case's work for ``size``."""
    plain = os.urandom(esp_payload_len(case, size))
    aad = os.urandom(8)
    name = case.proposal.split("-")[0]
    n = range(RING)
    if name.endswith("gcm16") or name == "chacha20poly1305":
        prim = (
            ChaCha20Poly1305(os.urandom(32))
            if name == "chacha20poly1305"
            else AESGCM(os.urandom(int(name[3:6]) // 8))
        )
        nonce = os.urandom(12)
        sealed = prim.encrypt(nonce, plain, aad)
        encrypt, decrypt = prim.encrypt, prim.decrypt

        def bare_seal() -> None:
            for _ in n:
                encrypt(nonce, plain, aad)

        def bare_open() -> None:
            for _ in n:
                decrypt(nonce, sealed, aad)

        return bare_seal, bare_open, f"{type(prim).__name__}.encrypt/decrypt"
    if case.protocol is Protocol.AH or name == "null":
        keyed = hmac.HMAC(os.urandom(32), hashes.SHA256())
        data = os.urandom(size + 24)

        def mac() -> None:
            for _ in n:
                h = keyed.copy()
                h.update(data)
                h.finalize()

        return mac, mac, "HMAC-SHA256"
    # CBC / CTR + HMAC: a new cipher context per packet, as ESP needs one per IV.
    key = algorithms.AES(os.urandom(int(name[3:6]) // 8))
    iv = os.urandom(16)
    keyed = hmac.HMAC(
        os.urandom(32), hashes.SHA256() if "sha256" in case.proposal else hashes.SHA1()
    )
    mode_for: Callable[[bytes], modes.Mode] = modes.CTR if "ctr" in name else modes.CBC

    def seal() -> None:
        for _ in n:
            enc = Cipher(key, mode_for(iv)).encryptor()
            ct = enc.update(plain) + enc.finalize()
            h = keyed.copy()
            h.update(ct)
            h.finalize()

    def open_() -> None:
        for _ in n:
            h = keyed.copy()
            h.update(plain)
            h.finalize()
            dec = Cipher(key, mode_for(iv)).decryptor()
            dec.update(plain) + dec.finalize()

    return seal, open_, f"AES-{'CTR' if 'ctr' in name else 'CBC'} + HMAC"


def runners(case: Case, size: int) -> tuple[Runner, Callable[[], Runner]]:
    """(protect runner, factory of an unprotect runner with a fresh inbound SA)."""
    out_config, in_config = make_configs(case)
    out_sa = make_sa(case, out_config)
    packet = IPv4Header(A.packed, B.packed, 6).pack(size - 20) + os.urandom(size - 20)
    packets = [packet] * RING
    n = range(RING)
    if case.api == "encap":
        assert isinstance(out_sa, EspSA)
        encapsulate = out_sa.encapsulate
        wire = [encapsulate(packet) for _ in n]
        src, dst = A.packed, B.packed

        def seal() -> None:
            for _ in n:
                encapsulate(packet)

        def opener() -> Runner:
            decapsulate = make_sa(case, in_config).decapsulate  # type: ignore[union-attr]

            def run() -> None:
                for esp in wire:
                    decapsulate(esp, src, dst)

            return run

        assert opener_check(opener, make_sa(case, in_config), wire, packet)
        return seal, opener
    protect = out_sa.protect
    wire = [protect(packet) for _ in n]
    if case.api == "batch":
        assert isinstance(out_sa, EspSA)
        protect_many = out_sa.protect_many

        def seal_many() -> None:
            protect_many(packets)

        def opener_many() -> Runner:
            unprotect_many = make_sa(case, in_config).unprotect_many  # type: ignore[union-attr]

            def run() -> None:
                unprotect_many(wire)

            return run

        assert make_sa(case, in_config).unprotect_many(wire) == packets  # type: ignore[union-attr]
        return seal_many, opener_many

    def seal_one() -> None:
        for _ in n:
            protect(packet)

    def opener_one() -> Runner:
        unprotect = make_sa(case, in_config).unprotect

        def run() -> None:
            for p in wire:
                unprotect(p)

        return run

    assert make_sa(case, in_config).unprotect(wire[0]) == packet
    return seal_one, opener_one


def opener_check(
    opener: Callable[[], Runner], sa: EspSA | AhSA, wire: list[bytes], packet: bytes
) -> bool:
    assert isinstance(sa, EspSA)
    return sa.decapsulate(wire[0], A.packed, B.packed) == packet and callable(opener)


def timed(run: Runner) -> float:
    """Microseconds per packet of one round."""
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / RING * 1e6


def measure(case: Case, size: int, rounds: int) -> dict[str, object]:
    bare_seal, bare_open, bare_label = bare_ops(case, size)
    seal, opener = runners(case, size)
    best = {"protect": 1e9, "unprotect": 1e9, "bare_seal": 1e9, "bare_open": 1e9}
    for _ in range(rounds):
        best["bare_seal"] = min(best["bare_seal"], timed(bare_seal))
        best["protect"] = min(best["protect"], timed(seal))
        best["bare_open"] = min(best["bare_open"], timed(bare_open))
        best["unprotect"] = min(best["unprotect"], timed(opener()))
    ops = {"packet": ("protect", "unprotect"), "encap": ("encapsulate", "decapsulate")}
    ops["batch"] = ("protect_many", "unprotect_many")
    return {
        "case": case.name,
        "size": size,
        "api": case.api,
        "ops": ops[case.api],
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
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 60, quick 3)")
    parser.add_argument("--sizes", default="64,512,1400")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 60)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [
        measure(case, size, rounds) for case in CASES if args.only in case.name for size in sizes
    ]
    report: dict[str, object] = {
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "ring": RING,
        "replay_window": WINDOW,
        "command": " ".join(["scripts/bench_packet.py", *sys.argv[1:]]),
        "results": results,
    }
    targets = {}
    for r in results:
        if r["case"] == "esp aes128gcm16 tunnel" and r["size"] == 1400:
            targets["aes128gcm16 1400B protect <= 2.5x AESGCM.encrypt"] = {
                "ratio": r["protect_ratio"],
                "met": float(r["protect_ratio"]) <= 2.5,  # type: ignore[arg-type]
            }
            targets["aes128gcm16 1400B unprotect <= 2.0x AESGCM.decrypt"] = {
                "ratio": r["unprotect_ratio"],
                "met": float(r["unprotect_ratio"]) <= 2.0,  # type: ignore[arg-type]
            }
    if targets:
        report["targets"] = targets
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
    for name, value in targets.items():
        print(f"target: {name}: {value['ratio']} ({'met' if value['met'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
