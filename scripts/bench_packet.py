#!/usr/bin/env python3
"""Per-packet cost of hostsec's ESP/AH engine next to the bare cryptography call.

For 64, 512 and 1400-byte IP packets and each transform: microseconds per packet out
(protect) and in (unprotect), and the bare pyca/cryptography operation that does the
same cryptographic work (same key size, same plaintext length as the ESP payload) measured
in the same run, interleaved round by round, so that the ratio is meaningful on a noisy
machine. Each figure is the best of many rounds; a round runs one operation on each
packet of a ring of RING distinct packets (fresh sequence numbers, as on the wire: the
inbound SA is created anew, outside the timing, before every round). Both sides are
timed the same way: a plain loop calling the operation, no lambda or wrapper around
either (a batch row times one call over the whole ring).

Rows name the entry points they time (see OPS): protect/unprotect (IP packets, as a TUN
device gives and takes them), [encap] encapsulate/decapsulate (ESP without the outer
header, for sockets), [sad] the inbound side through the SAD's SPI lookup, [batch] the
*_many forms over the whole ring in one call, per packet.

    scripts/bench_packet.py            a table
    scripts/bench_packet.py --json     one JSON object
    scripts/bench_packet.py --quick    fewer rounds (a smoke run)
    scripts/bench_packet.py --floor    what the ESP format alone costs around the cipher
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import struct
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
from hostsec.ipsec.sad import SAD
from hostsec.ipsec.selectors import Selectors, TrafficSelector
from hostsec.wire.ip import IPv4Header, IPv6Header

A = ipaddress.ip_address("198.51.100.1")
B = ipaddress.ip_address("198.51.100.2")
A6 = ipaddress.ip_address("2001:db8::1")
B6 = ipaddress.ip_address("2001:db8::2")
RING = 256  # distinct packets per round (fresh sequence numbers, as on the wire)
WINDOW = 4096  # inbound replay window: the largest allowed (its cost does not depend on it)
# TCP between A and B (as a flow's SA has them): source remote, destination local inbound.
SELECTORS = Selectors(
    (TrafficSelector.from_network(f"{B}/32", 6),), (TrafficSelector.from_network(f"{A}/32", 6),)
)

Runner = Callable[[], object]  # runs one operation on each of RING packets


@dataclass
class Case:
    name: str
    proposal: str
    protocol: Protocol
    mode: Mode
    udp: bool = False
    api: str = "packet"  # a key of OPS
    selectors: bool = False  # the inbound SA checks its traffic selectors (as the agent's do)
    v6: bool = False  # IPv6 outer addresses and IPv6 packets (inner ones too in tunnel mode)


#: The outbound and inbound operations timed for each api.
OPS = {
    "packet": ("protect", "unprotect"),
    "encap": ("encapsulate", "decapsulate"),
    "sad": ("protect", "SAD.unprotect"),
    "encap sad": ("encapsulate", "SAD.decapsulate"),
    "batch": ("protect_many", "unprotect_many"),
    "encap batch": ("encapsulate_many", "SAD.decapsulate_many"),
}

GCM, ESP, AH = "aes128gcm16", Protocol.ESP, Protocol.AH
TUNNEL, TRANSPORT = Mode.TUNNEL, Mode.TRANSPORT
CASES = [
    Case("esp aes128gcm16 tunnel", GCM, ESP, TUNNEL),
    Case("esp aes128gcm16 transport", GCM, ESP, TRANSPORT),
    Case("esp aes128gcm16 tunnel udp", GCM, ESP, TUNNEL, udp=True),
    Case("esp aes128gcm16 tunnel v6", GCM, ESP, TUNNEL, v6=True),
    Case("esp aes128gcm16 transport v6", GCM, ESP, TRANSPORT, v6=True),
    Case("esp aes128gcm16 tunnel udp v6", GCM, ESP, TUNNEL, udp=True, v6=True),
    Case("esp aes128gcm16 transport udp v6", GCM, ESP, TRANSPORT, udp=True, v6=True),
    Case("esp aes128gcm16 transport v6 [encap]", GCM, ESP, TRANSPORT, True, "encap", v6=True),
    Case("esp aes128gcm16 transport udp", GCM, ESP, TRANSPORT, udp=True),
    Case("esp aes128gcm16 tunnel [encap]", GCM, ESP, TUNNEL, True, "encap"),
    Case("esp aes128gcm16 transport [encap]", GCM, ESP, TRANSPORT, True, "encap"),
    Case("esp aes128gcm16 tunnel [sad]", GCM, ESP, TUNNEL, api="sad"),
    Case("esp aes128gcm16 tunnel [encap sad]", GCM, ESP, TUNNEL, True, "encap sad"),
    Case("esp aes128gcm16 transport [sad, selectors]", GCM, ESP, TRANSPORT, False, "sad", True),
    Case(
        "esp aes128gcm16 transport udp [encap sad, sel.]",
        GCM,
        ESP,
        TRANSPORT,
        True,
        "encap sad",
        True,
    ),
    Case("esp aes128gcm16 tunnel [batch]", GCM, ESP, TUNNEL, api="batch"),
    Case("esp aes128gcm16 tunnel [encap batch]", GCM, ESP, TUNNEL, True, "encap batch"),
    Case("esp aes256gcm16 tunnel", "aes256gcm16", ESP, TUNNEL),
    Case("esp chacha20poly1305 tunnel", "chacha20poly1305", ESP, TUNNEL),
    Case("esp aes128-sha256 tunnel", "aes128-sha256", ESP, TUNNEL),
    Case("esp aes256-sha1 tunnel", "aes256-sha1", ESP, TUNNEL),
    Case("esp aes128ctr-sha256 tunnel", "aes128ctr-sha256", ESP, TUNNEL),
    Case("esp null-sha256 transport", "null-sha256", ESP, TRANSPORT),
    Case("ah sha256 transport", "sha256", AH, TRANSPORT),
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
            src=A6 if case.v6 else A,
            dst=B6 if case.v6 else B,
            encryption=enc,
            integrity=integ,
            encryption_key=enc_key,
            integrity_key=integ_key,
            replay_window=WINDOW if direction is Direction.INBOUND else 64,
            encapsulation=encap,
            selectors=SELECTORS if case.selectors and direction is Direction.INBOUND else None,
        )

    return config(Direction.OUTBOUND), config(Direction.INBOUND)


def make_sa(case: Case, config: SAConfig) -> EspSA | AhSA:
    return AhSA(config, 0.0) if case.protocol is Protocol.AH else EspSA(config, 0.0)


def ip_packet(size: int, v6: bool = False) -> bytes:
    if v6:
        return IPv6Header(A6.packed, B6.packed, 6).pack(size - 40) + os.urandom(size - 40)
    return IPv4Header(A.packed, B.packed, 6).pack(size - 20) + os.urandom(size - 20)


def esp_payload_len(case: Case, size: int) -> int:
    """Octets the cipher processes for a packet of ``size``: payload, padding, trailer."""
    payload = size if case.mode is Mode.TUNNEL else size - (40 if case.v6 else 20)
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
    digest = hashes.SHA256() if "sha256" in case.proposal else hashes.SHA1()
    keyed = hmac.HMAC(os.urandom(32), digest)
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
    """(outbound runner, factory of an inbound runner with a fresh inbound SA)."""
    out_config, in_config = make_configs(case)
    out_sa = make_sa(case, out_config)
    packet = ip_packet(size, case.v6)
    packets = [packet] * RING
    src, dst = (A6.packed, B6.packed) if case.v6 else (A.packed, B.packed)
    n = range(RING)
    out_op, in_op = OPS[case.api]
    single = getattr(out_sa, out_op.removesuffix("_many"))
    wire = [single(packet) for _ in n]

    if out_op.endswith("_many"):
        many = getattr(out_sa, out_op)

        def seal() -> None:
            many(packets)

    else:

        def seal() -> None:
            for _ in n:
                single(packet)

    def fresh_inbound() -> Callable[..., object]:
        sa = make_sa(case, in_config)
        if not in_op.startswith("SAD."):
            return getattr(sa, in_op)  # type: ignore[no-any-return]
        sad = SAD()
        sad.add(sa)
        return getattr(sad, in_op.removeprefix("SAD."))  # type: ignore[no-any-return]

    def opener() -> Runner:
        op = fresh_inbound()
        if in_op.endswith("decapsulate_many"):
            return lambda: op(wire, src, dst)
        if in_op.endswith("_many"):
            return lambda: op(wire)
        if in_op.endswith("decapsulate"):

            def run_esp() -> None:
                for esp in wire:
                    op(esp, src, dst)

            return run_esp

        def run() -> None:
            for p in wire:
                op(p)

        return run

    # The inbound side gives every packet back.
    check = fresh_inbound()
    if in_op.endswith("decapsulate_many"):
        back = check(wire, src, dst)
    elif in_op.endswith("_many"):
        back = check(wire)
    elif in_op.endswith("decapsulate"):
        back = [check(esp, src, dst) for esp in wire]
    else:
        back = [check(p) for p in wire]
    assert back == packets, f"{case.name}: round trip failed"
    return seal, opener


def timed(run: Runner) -> float:
    """Microseconds per packet of one round."""
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / RING * 1e6


def measure(case: Case, size: int, rounds: int) -> dict[str, object]:
    bare_seal, bare_open, bare_label = bare_ops(case, size)
    seal, opener = runners(case, size)
    best = {"out": 1e9, "in": 1e9, "bare_seal": 1e9, "bare_open": 1e9}
    for _ in range(rounds):
        best["bare_seal"] = min(best["bare_seal"], timed(bare_seal))
        best["out"] = min(best["out"], timed(seal))
        best["bare_open"] = min(best["bare_open"], timed(bare_open))
        best["in"] = min(best["in"], timed(opener()))
    return {
        "case": case.name,
        "size": size,
        "api": case.api,
        "ops": OPS[case.api],
        "protect_us": round(best["out"], 3),
        "unprotect_us": round(best["in"], 3),
        "bare": bare_label,
        "bare_seal_us": round(best["bare_seal"], 3),
        "bare_open_us": round(best["bare_open"], 3),
        "protect_ratio": round(best["out"] / best["bare_seal"], 2),
        "unprotect_ratio": round(best["in"] / best["bare_open"], 2),
    }


def floor(size: int, rounds: int) -> list[dict[str, object]]:
    """What ESP tunnel mode with AES-128-GCM costs around the cipher before any check.

    Layer by layer, each on the same ring of packets as hostsec's own path:
    the bare call on fixed arguments; the call with the per-packet values the ESP format
    forces (nonce = salt || IV, ciphertext and AAD cut from the packet, trailer appended,
    nonce and AAD from the sequence number); that plus the copies it forces (inner packet
    cut before the trailer, outer header in front); then hostsec.
    """
    case = CASES[0]
    out_config, in_config = make_configs(case)
    out_sa = make_sa(case, out_config)
    key, salt = out_config.encryption_key[:-4], out_config.encryption_key[-4:]
    aead = AESGCM(key)
    encrypt, decrypt = aead.encrypt, aead.decrypt
    packet = ip_packet(size)
    wire = [out_sa.protect(packet) for _ in range(RING)]
    n = range(RING)
    trailer = bytes(range(1, -(size + 2) % 4 + 1)) + bytes((-(size + 2) % 4, 4))
    plain = packet + trailer
    nonce, aad = salt + bytes(8), bytes(8)
    sealed = encrypt(nonce, plain, aad)
    salt_int = int.from_bytes(salt, "big") << 64
    header = struct.Struct("!BBHHHBBH8sIIQ")
    addrs = A.packed + B.packed

    def bare_seal() -> None:
        for _ in n:
            encrypt(nonce, plain, aad)

    def seal_esp() -> None:  # nonce and AAD per packet, trailer appended
        for seq in n:
            encrypt(
                (salt_int | seq).to_bytes(12, "big"),
                packet + trailer,
                (0x100000000000 | seq).to_bytes(8, "big"),
            )

    def seal_copies() -> None:  # ... and the outer IPv4 and ESP headers in front
        for seq in n:
            header.pack(0x45, 0, 1460, seq, 0, 64, 50, 0, addrs, 0x1000, seq, seq) + encrypt(
                (salt_int | seq).to_bytes(12, "big"),
                packet + trailer,
                (0x100000000000 | seq).to_bytes(8, "big"),
            )

    protect = make_sa(case, out_config).protect

    def seal_hostsec() -> None:
        for _ in n:
            protect(packet)

    def bare_open() -> None:
        for _ in n:
            decrypt(nonce, sealed, aad)

    def open_esp() -> None:  # nonce, ciphertext and AAD cut from the packet
        for p in wire:
            decrypt(salt + p[28:36], p[36:], p[20:28])

    def open_copies() -> None:  # ... and the inner packet cut before the trailer
        for p in wire:
            decrypt(salt + p[28:36], p[36:], p[20:28])[:size]

    def open_hostsec() -> Runner:
        unprotect = make_sa(case, in_config).unprotect

        def run() -> None:
            for p in wire:
                unprotect(p)

        return run

    steps: list[tuple[str, Callable[[], Runner]]] = [
        ("encrypt: bare call, fixed arguments", lambda: bare_seal),
        ("encrypt: + per-packet nonce, AAD, trailer", lambda: seal_esp),
        ("encrypt: + outer header in front", lambda: seal_copies),
        ("protect (hostsec)", lambda: seal_hostsec),
        ("decrypt: bare call, fixed arguments", lambda: bare_open),
        ("decrypt: + nonce, ciphertext, AAD cut from the packet", lambda: open_esp),
        ("decrypt: + inner packet cut before the trailer", lambda: open_copies),
        ("unprotect (hostsec)", open_hostsec),
    ]
    best = [1e9] * len(steps)
    for _ in range(rounds):
        for i, (_label, make) in enumerate(steps):
            best[i] = min(best[i], timed(make()))
    out = []
    for i, (label, _make) in enumerate(steps):
        base = best[0] if i < 4 else best[4]
        out.append({"step": label, "us": round(best[i], 3), "ratio": round(best[i] / base, 2)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 60, quick 3)")
    parser.add_argument("--sizes", default="64,512,1400")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--floor", action="store_true", help="the floor experiment only")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 60)
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict[str, object] = {
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "ring": RING,
        "replay_window": WINDOW,
        "command": " ".join(["scripts/bench_packet.py", *sys.argv[1:]]),
    }
    if args.floor:
        report["floor"] = {str(size): floor(size, rounds) for size in sizes}
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        print(f"Python {report['python']}, cryptography {report['cryptography']}, best of {rounds}")
        for size, steps in report["floor"].items():  # type: ignore[attr-defined]
            print(f"ESP tunnel AES-128-GCM, {size}-byte packets")
            for step in steps:
                print(f"  {step['step']:56} {step['us']:6.2f} us  {step['ratio']:5.2f}x")
        return 0
    results = [
        measure(case, size, rounds) for case in CASES if args.only in case.name for size in sizes
    ]
    report["results"] = results
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
    head = f"{'case':40} {'size':>5} {'out':>7} {'bare':>6} {'ratio':>6}"
    head += f" {'in':>7} {'bare':>6} {'ratio':>6}  out / in / bare"
    print(head)
    for r in results:
        ops = " / ".join(r["ops"])  # type: ignore[arg-type]
        print(
            f"{r['case']:40} {r['size']:>5} {r['protect_us']:>7.2f} {r['bare_seal_us']:>6.2f}"
            f" {r['protect_ratio']:>6.2f} {r['unprotect_us']:>7.2f} {r['bare_open_us']:>6.2f}"
            f" {r['unprotect_ratio']:>6.2f}  {ops} / {r['bare']}"
        )
    for name, value in targets.items():
        print(f"target: {name}: {value['ratio']} ({'met' if value['met'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
