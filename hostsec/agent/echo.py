"""A TCP echo service and a verifying client: the "telnet session" of the demo and tests.

    python -m hostsec.agent.echo serve ADDRESS PORT            # echo every byte back
    python -m hostsec.agent.echo client ADDRESS PORT NBYTES [TIMEOUT [LABEL [RATE]]]
                                                              # send NBYTES, expect them back

The client sends a deterministic pseudo-random stream and checks every byte that comes
back; it prints one JSON line ({"ok": ..., "bytes": ..., "seconds": ...}) and exits 0 only
if the echo was byte-exact.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import sys
import threading
import time


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            data = sock.recv(65536)
            if not data:
                return
            sock.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    _Server.address_family = family
    with _Server((address, port), _Echo) as server:
        print(json.dumps({"listening": f"{address}:{port}"}), flush=True)
        server.serve_forever()


def stream(nbytes: int, label: str = "hostsec-demo") -> bytes:
    """A deterministic, incompressible byte stream (so the capture can be searched for it);
    different labels give unrelated streams."""
    out = bytearray()
    counter = 0
    while len(out) < nbytes:
        out += hashlib.sha256(b"%s-%d" % (label.encode(), counter)).digest()
        counter += 1
    return bytes(out[:nbytes])


def client(
    address: str,
    port: int,
    nbytes: int,
    timeout: float = 30.0,
    label: str = "hostsec-demo",
    rate: float | None = None,
) -> dict[str, object]:
    """Send ``nbytes`` of the ``label`` stream (paced at ``rate`` octets per second if
    given: a transfer that lasts long enough for something to happen in the middle of it,
    however fast the path) and check that exactly they come back."""
    payload = stream(nbytes, label)
    started = time.monotonic()
    received = bytearray()
    with socket.create_connection((address, port), timeout=timeout) as sock:

        def send() -> None:
            view = memoryview(payload)
            for offset in range(0, len(view), 16384):
                if rate:  # on schedule from the start, whatever each sendall took
                    delay = started + offset / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sock.sendall(view[offset : offset + 16384])
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        while len(received) < nbytes:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sender.join(timeout)
    seconds = time.monotonic() - started
    return {
        "ok": bytes(received) == payload,
        "bytes": len(received),
        "expected": nbytes,
        "seconds": round(seconds, 3),
    }


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "serve":
        serve(argv[1], int(argv[2]))
        return 0
    if len(argv) >= 4 and argv[0] == "client":
        timeout = float(argv[4]) if len(argv) > 4 else 30.0
        label = argv[5] if len(argv) > 5 else "hostsec-demo"
        rate = float(argv[6]) if len(argv) > 6 else None
        try:
            result = client(argv[1], int(argv[2]), int(argv[3]), timeout, label, rate)
        except OSError as exc:
            result = {"ok": False, "error": str(exc)}
        print(json.dumps(result), flush=True)
        return 0 if result["ok"] else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
