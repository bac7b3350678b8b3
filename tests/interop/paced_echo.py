"""A paced echo client: NBYTES to the echo service spread over SECONDS, every byte checked.

    python -m tests.interop.paced_echo HOST PORT NBYTES SECONDS [LABEL]

Prints one JSON line like ``hostsec.agent.echo client`` and exits 0 only if the echo was
byte-exact. The rekey tests use it so that a transfer lasts long enough for the rekey to
happen in the middle of it, whatever the load of the machine.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

from hostsec.agent.echo import stream

CHUNK = 16384


def paced(host: str, port: int, nbytes: int, seconds: float, label: str) -> dict[str, object]:
    payload = stream(nbytes, label)
    received = bytearray()
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=30) as sock:

        def send() -> None:
            for offset in range(0, nbytes, CHUNK):
                due = started + seconds * offset / nbytes
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sock.sendall(payload[offset : offset + CHUNK])
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        while len(received) < nbytes:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sender.join(30)
    return {
        "ok": bytes(received) == payload,
        "bytes": len(received),
        "expected": nbytes,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(argv: list[str]) -> int:
    host, port, nbytes, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    label = argv[4] if len(argv) > 4 else "interop"
    try:
        result = paced(host, port, nbytes, seconds, label)
    except OSError as exc:
        result = {"ok": False, "error": str(exc)}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
