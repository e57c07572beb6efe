"""Who may call the Key Vault emulator: the challenge, unknown tokens, and one principal per
certificate permission that lacks exactly that permission (tokens `TOKEN_NO_<PERMISSION>`).

Environment as keyvault_sdk.py, plus CERTROLL_OWNER_TOKEN (every permission).
"""

import base64
import hashlib
import os
import sys
import time
import urllib.parse

import urllib3.util.connection as urllib3_connection

VAULT_URL = os.environ["CERTROLL_VAULT_URL"]
OWNER = os.environ["CERTROLL_OWNER_TOKEN"]
PORT = urllib.parse.urlsplit(VAULT_URL).port
_connect = urllib3_connection.create_connection


def _loopback(address, *args, **kwargs):
    host, port = address
    if host.endswith(".vault.azure.net"):
        host = "127.0.0.1"
    return _connect((host, port), *args, **kwargs)


urllib3_connection.create_connection = _loopback

import requests  # noqa: E402
from azure.core.credentials import AccessToken  # noqa: E402
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError  # noqa: E402
from azure.keyvault.certificates import CertificateClient, CertificatePolicy  # noqa: E402

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def url(path):
    return f"{VAULT_URL}{path}?api-version=7.5"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# No token: 401 with the challenge, before the body is looked at (a body that is not JSON).
r = requests.post(url("/certificates/x/create"), data=b"not json")
check(r.status_code == 401, f"no token → 401, got {r.status_code}")
challenge = r.headers.get("WWW-Authenticate", "")
check(challenge.startswith("Bearer authorization=\"https://login.microsoftonline.com/"), f"challenge {challenge}")
check(f'resource="https://vault.azure.net:{PORT}"' in challenge, f"resource keeps the port: {challenge}")
check(r.json()["error"]["code"] == "Unauthorized", "Key Vault error shape")

r = requests.get(url("/certificates"), headers=bearer("forged-token"))
check(r.status_code == 401 and "WWW-Authenticate" in r.headers, f"unknown token → 401, got {r.status_code}")
check("forged-token" not in r.text, "a presented token is not echoed")
r = requests.get(url("/certificates"), headers={"Authorization": "Basic b3duZXI6eA=="})
check(r.status_code == 401, "not a bearer token → 401")


class Static:
    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


try:
    list(CertificateClient(VAULT_URL, Static("forged-token")).list_properties_of_certificates())
    check(False, "the SDK must refuse a forged token")
except ClientAuthenticationError as e:
    check(e.status_code == 401, "SDK raises ClientAuthenticationError")

# Material the table works on, made by the owner.
owner = CertificateClient(VAULT_URL, Static(OWNER))
pol = CertificatePolicy(issuer_name="Self", subject="CN=auth-target")
cert = owner.begin_create_certificate("auth-target", pol).result()
owner.begin_create_certificate("auth-deleted", pol).result()
owner.begin_delete_certificate("auth-deleted", _polling_interval=0.2).wait()
owner.create_issuer("auth-issuer", "Test")
v = cert.properties.version
digest = base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).rstrip(b"=").decode()

# Each route with the permission it needs. The principal lacking it gets 403 naming it; the
# request then changes nothing (the table is ordered so nothing depends on a refused call).
table = [
    ("get", "GET", f"/certificates/auth-target/", None),
    ("get", "GET", f"/certificates/auth-target/{v}", None),
    ("get", "GET", "/certificates/auth-target/policy", None),
    ("get", "GET", "/certificates/auth-target/pending", None),
    ("get", "GET", f"/secrets/auth-target/{v}", None),
    ("get", "GET", f"/keys/auth-target/{v}", None),
    ("get", "POST", f"/keys/auth-target/{v}/sign", {"alg": "RS256", "value": digest}),
    ("get", "GET", "/deletedcertificates/auth-deleted", None),
    ("list", "GET", "/certificates", None),
    ("list", "GET", "/certificates/auth-target/versions", None),
    ("list", "GET", "/deletedcertificates", None),
    ("update", "PATCH", "/certificates/auth-target/", {"tags": {"a": "b"}}),
    ("update", "PATCH", "/certificates/auth-target/policy", {"secret_props": {"contentType": "application/x-pem-file"}}),
    ("create", "POST", "/certificates/auth-new/create", {"policy": {"x509_props": {"subject": "CN=n"}, "issuer": {"name": "Self"}}}),
    ("import", "POST", "/certificates/auth-imp/import", {"value": "-----BEGIN CERTIFICATE-----"}),
    ("delete", "DELETE", "/certificates/auth-target", None),
    ("recover", "POST", "/deletedcertificates/auth-deleted/recover", None),
    ("purge", "DELETE", "/deletedcertificates/auth-deleted", None),
    ("backup", "POST", "/certificates/auth-target/backup", None),
    ("restore", "POST", "/certificates/restore", {"value": "AAAA"}),
    ("managecontacts", "GET", "/certificates/contacts", None),
    ("managecontacts", "PUT", "/certificates/contacts", {"contacts": [{"email": "a@example.com"}]}),
    ("managecontacts", "DELETE", "/certificates/contacts", None),
    ("getissuers", "GET", "/certificates/issuers/auth-issuer", None),
    ("listissuers", "GET", "/certificates/issuers", None),
    ("setissuers", "PUT", "/certificates/issuers/auth-other", {"provider": "Test"}),
    ("setissuers", "PATCH", "/certificates/issuers/auth-issuer", {"provider": "Test2"}),
    ("deleteissuers", "DELETE", "/certificates/issuers/auth-issuer", None),
]
for perm, method, path, body in table:
    token = os.environ[f"TOKEN_NO_{perm.upper()}"]
    r = requests.request(method, url(path), headers=bearer(token), json=body)
    check(r.status_code == 403, f"{method} {path} without {perm}: expected 403, got {r.status_code} {r.text}")
    err = r.json()["error"]
    check(err["code"] == "Forbidden" and f"certificates {perm} permission" in err["message"],
          f"{method} {path}: 403 names `{perm}`: {err}")

# Nothing refused changed anything.
check(owner.get_certificate("auth-target").properties.tags in ({}, None), "refused update changed nothing")
check(owner.get_deleted_certificate("auth-deleted").name == "auth-deleted", "refused recover/purge changed nothing")

# The SDK surfaces the 403 with the permission named.
try:
    CertificateClient(VAULT_URL, Static(os.environ["TOKEN_NO_DELETE"])).begin_delete_certificate("auth-target")
    check(False, "delete without permission must fail")
except HttpResponseError as e:
    check(e.status_code == 403 and "delete" in str(e.message), f"SDK 403: {e.message}")

# manageissuers alone grants the four issuer permissions.
r = requests.get(url("/certificates/issuers"), headers=bearer(os.environ["TOKEN_ISSUERS_ONLY"]))
check(r.status_code == 200, f"manageissuers implies listissuers: {r.status_code}")
r = requests.get(url("/certificates"), headers=bearer(os.environ["TOKEN_ISSUERS_ONLY"]))
check(r.status_code == 403 and "certificates list permission" in r.json()["error"]["message"], "but not list")

print(f"OK {checks} checks")
