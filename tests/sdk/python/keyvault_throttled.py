"""The Key Vault SDK retries through serve's throttling: with `[serve.services.keyvault]
rate_per_second` low, a burst of calls meets 429 answers with Retry-After, and azure-core's
retry policy waits and tries again, so every call still succeeds.

Environment as keyvault_sdk.py (CERTROLL_VAULT_URL, CERTROLL_TOKEN, REQUESTS_CA_BUNDLE).
Prints `OK <n> checks`.
"""

import os
import time
import urllib.parse

import urllib3.util.connection as urllib3_connection

VAULT_URL = os.environ["CERTROLL_VAULT_URL"]
TOKEN = os.environ["CERTROLL_TOKEN"]
_connect = urllib3_connection.create_connection


def _loopback(address, *args, **kwargs):
    host, port = address
    if host.endswith(".vault.azure.net"):
        host = "127.0.0.1"
    return _connect((host, port), *args, **kwargs)


urllib3_connection.create_connection = _loopback

import requests.adapters  # noqa: E402
from azure.core.credentials import AccessToken  # noqa: E402
from azure.keyvault.certificates import CertificateClient  # noqa: E402

# Every answer on the wire, retries included (the SDK shows only the last).
seen = []
_send = requests.adapters.HTTPAdapter.send


def _counting_send(self, request, *args, **kwargs):
    response = _send(self, request, *args, **kwargs)
    seen.append((response.status_code, response.headers.get("Retry-After")))
    return response


requests.adapters.HTTPAdapter.send = _counting_send


class StaticToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(TOKEN, int(time.time()) + 3600)


checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


client = CertificateClient(VAULT_URL, StaticToken())
start = time.monotonic()
for i in range(8):
    listed = list(client.list_properties_of_certificates())
    check(listed == [], f"call {i} succeeded: {listed}")
throttled = [ra for status, ra in seen if status == 429]
check(throttled, f"the burst met 429 answers: {seen}")
check(all(ra is not None and int(ra) >= 1 for ra in throttled), f"each 429 carries Retry-After: {throttled}")
check(time.monotonic() - start >= 1.0, "the SDK waited as Retry-After asked")
print(f"OK {checks} checks ({len(throttled)} throttled answers retried)")
