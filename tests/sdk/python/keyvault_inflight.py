"""A request still in flight when serve gets SIGTERM must be answered.

Sends the headers and half the body of a PUT /certificates/contacts, prints SENT (the test then
sends SIGTERM to serve), waits, sends the rest and prints the status it gets back.
Environment: CERTROLL_PORT, CERTROLL_TOKEN, CERTROLL_CA.
"""

import http.client
import json
import os
import ssl
import time

port = int(os.environ["CERTROLL_PORT"])
ctx = ssl.create_default_context(cafile=os.environ["CERTROLL_CA"])
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
# TLS to 127.0.0.1 (an IP SAN of the server certificate); the Host header names the vault, so
# the Host routing answers as Key Vault.
body = json.dumps({"contacts": [{"email": "inflight@example.com"}]}).encode()
conn.putrequest("PUT", "/certificates/contacts?api-version=7.5", skip_host=True)
conn.putheader("Host", f"certroll.vault.azure.net:{port}")
conn.putheader("Authorization", f"Bearer {os.environ['CERTROLL_TOKEN']}")
conn.putheader("Content-Type", "application/json")
conn.putheader("Content-Length", str(len(body)))
conn.endheaders()
half = len(body) // 2
conn.send(body[:half])
print("SENT", flush=True)
time.sleep(1.5)
conn.send(body[half:])
resp = conn.getresponse()
print("STATUS", resp.status, resp.read().decode(), flush=True)
