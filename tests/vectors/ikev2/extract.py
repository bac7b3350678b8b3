"""Turn the captures of capture.sh into strongswan.json (datagrams as hex, IKE SA keys).

usage: python3 extract.py CAP_DIR [MODE ...]   (needs tshark; writes strongswan.json here)

For each mode: every IKE datagram on udp/500 and udp/4500 (the 4-octet non-ESP marker of
RFC 3948 removed), in capture order, with its direction; and the IKE SA keys that charon A
logged at ike level 4 ("Sk_ai secret => ..."), one set per IKE SA in the order they were
derived, with the SPIs of that IKE SA (the n-th distinct SPI pair of the encrypted
messages). Keys of throw-away test SAs, printed by a test-only log level. Also the test CA
certificate (whose key hash the CERTREQ payloads carry).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEY_LINE = re.compile(r"\[IKE\] (Sk_[a-z]{1,2}) secret => (\d+) bytes")
DUMP_LINE = re.compile(r"\[IKE\]\s+\d+: ((?:[0-9A-F]{2} ?){1,16})")


def datagrams(pcap: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-Y",
            "udp.port == 500 || udp.port == 4500",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "udp.payload",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: list[dict[str, object]] = []
    for line in out.splitlines():
        frame, src, sport, dst, dport, payload = line.split("\t")
        data = bytes.fromhex(payload)
        if "4500" in (sport, dport):
            if len(data) < 4 or data[:4] != b"\0\0\0\0":
                continue  # ESP in UDP or a NAT keepalive
            data = data[4:]
        result.append(
            {
                "frame": int(frame),
                "src": f"{src}:{sport}",
                "dst": f"{dst}:{dport}",
                "hex": data.hex(),
            }
        )
    return result


def key_sets(log: Path) -> list[dict[str, str]]:
    sets: list[dict[str, str]] = []
    current: dict[str, str] = {}
    name, want, acc = "", 0, b""
    for line in log.read_text().splitlines():
        m = KEY_LINE.search(line)
        if m:
            name, want, acc = m.group(1).lower(), int(m.group(2)), b""
            continue
        m = DUMP_LINE.search(line)
        if m and name:
            acc += bytes.fromhex(m.group(1).replace(" ", ""))
            if len(acc) == want:
                if name == "sk_d" and current:
                    sets.append(current)
                    current = {}
                current[name] = acc.hex()
                name = ""
    if current:
        sets.append(current)
    return sets


def main() -> None:
    cap = Path(sys.argv[1])
    modes = sys.argv[2:] or ["psk", "cert", "invalidke", "cookie"]
    doc: dict[str, object] = {
        "about": (
            "IKEv2 datagrams between two strongSwan 5.9.8 charons (Debian 12) in network "
            "namespaces, recorded by capture.sh and extracted by extract.py (see README.md). "
            "A = 198.51.100.1 initiator, B = 198.51.100.2 responder. keys: the IKE SA keys A "
            "logged, for the SA with those SPIs."
        ),
        "ca_cert_pem": (cap / "pki" / "ca.crt").read_text(),
        "modes": {},
    }
    for mode in modes:
        grams = datagrams(cap / f"{mode}.pcapng")
        pairs: list[tuple[str, str]] = []
        for g in grams:
            raw = bytes.fromhex(str(g["hex"]))
            if raw[18] != 34 and (raw[:8].hex(), raw[8:16].hex()) not in pairs:
                pairs.append((raw[:8].hex(), raw[8:16].hex()))
        keys = key_sets(cap / f"{mode}.A.log")
        if len(keys) != len(pairs):
            raise SystemExit(f"{mode}: {len(keys)} key sets for {len(pairs)} IKE SAs")
        for (spi_i, spi_r), ks in zip(pairs, keys, strict=True):
            ks["spi_i"], ks["spi_r"] = spi_i, spi_r
        doc["modes"][mode] = {"datagrams": grams, "keys": keys}  # type: ignore[index]
    (HERE / "strongswan.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
