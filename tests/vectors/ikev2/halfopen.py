"""Leave one half-open IKE_SA on the responder (used by capture.sh cookie).

Replays a recorded IKE_SA_INIT request (hex file) with a fresh random SPIi from another
UDP port and waits for the response; the responder then holds one half-open IKE_SA, so
that with cookie_threshold = 1 its next IKE_SA_INIT is answered with a COOKIE notify.
"""

import os
import socket
import sys

peer, hex_file = sys.argv[1], sys.argv[2]
with open(hex_file) as f:
    request = bytes.fromhex(f.read().split()[0])
request = os.urandom(8) + request[8:]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(2.0)
    s.bind(("", 5500))
    s.sendto(request, (peer, 500))
    try:
        reply, _ = s.recvfrom(4096)
        print(f"  half-open: got a {len(reply)}-byte IKE_SA_INIT response")
    except TimeoutError:
        print("  half-open: no response")
