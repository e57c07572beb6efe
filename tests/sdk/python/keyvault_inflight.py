"""A request still in flight when serve gets SIGTERM must be answered.

Sends the headers of a PUT /certificates/contacts with `Expect: 100-continue`, waits for serve's
100 Continue (sent when the handler starts reading the body: the request is then in flight, not
merely bytes in a socket buffer that a shutdown may close unread, which made this test flaky on a
loaded machine), sends half the body, prints SENT (the test then sends SIGTERM to serve), waits,
sends the rest and prints the status it gets back.
Environment: CERTROLL_PORT, CERTROLL_TOKEN, CERTROLL_CA.
"""

import http.client
import json
import os
import ssl
import time

port = int(os.environ["CERTROLL_PORT"])
ctx = ssl.create_default_context(cafile=os.environ["CERTROLL_CA"])
# No call may hang the test: a minute is far above any answer on a loaded machine.
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
# TLS to 127.0.0.1 (an IP SAN of the server certificate); the Host header names the vault, so
# the Host routing answers as Key Vault.
body = json.dumps({"contacts": [{"email": "inflight@example.com"}]}).encode()
conn.putrequest("PUT", "/certificates/contacts?api-version=7.5", skip_host=True)
conn.putheader("Host", f"certroll.vault.azure.net:{port}")
conn.putheader("Authorization", f"Bearer {os.environ['CERTROLL_TOKEN']}")
conn.putheader("Content-Type", "application/json")
conn.putheader("Content-Length", str(len(body)))
conn.putheader("Expect", "100-continue")
conn.endheaders()
# http.client does not implement 100-continue: read the interim answer off the socket byte by
# byte, so that getresponse() later reads the final answer from the byte after it.
interim = b""
while not interim.endswith(b"\r\n\r\n"):
    byte = conn.sock.recv(1)
    if not byte:
        raise SystemExit(f"connection closed before 100 Continue: {interim!r}")
    interim += byte
if not interim.startswith(b"HTTP/1.1 100"):
    raise SystemExit(f"expected 100 Continue, got {interim!r}")
half = len(body) // 2
conn.send(body[:half])
print("SENT", flush=True)
time.sleep(1.5)
conn.send(body[half:])
resp = conn.getresponse()
print("STATUS", resp.status, resp.read().decode(), flush=True)
