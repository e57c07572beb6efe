"""Every CertificateClient operation of azure-keyvault-certificates 4.12.0 against `certroll serve`.

Run by tests/it/serve_keyvault.rs with:
  CERTROLL_VAULT_URL   https://NAME.vault.azure.net:PORT (the production host name)
  CERTROLL_TOKEN       a bearer token of a principal with every permission
  REQUESTS_CA_BUNDLE   the emulator CA (`certroll serve --ca-out`)
  CERTROLL_WORK        a scratch folder for openssl files

The vault host is resolved to 127.0.0.1 by patching urllib3's connect (Python cannot be given a
resolve table); the Host header, SNI, certificate check and the SDK's challenge-resource check
stay the production ones (verify_challenge_resource is left at its default, True).
Assertions check values against the emulator's answers and against openssl.
"""

import base64
import hashlib
import os
import re
import subprocess
import sys
import time
import urllib.parse

import urllib3.util.connection as urllib3_connection

VAULT_URL = os.environ["CERTROLL_VAULT_URL"]
TOKEN = os.environ["CERTROLL_TOKEN"]
WORK = os.environ["CERTROLL_WORK"]
VAULT_HOST = urllib.parse.urlsplit(VAULT_URL).hostname

_connect = urllib3_connection.create_connection


def _loopback(address, *args, **kwargs):
    host, port = address
    if host.endswith(".vault.azure.net"):
        host = "127.0.0.1"
    return _connect((host, port), *args, **kwargs)


urllib3_connection.create_connection = _loopback

import requests  # noqa: E402
from azure.core.credentials import AccessToken  # noqa: E402
from azure.core.exceptions import ResourceNotFoundError, HttpResponseError  # noqa: E402
from azure.keyvault.certificates import (  # noqa: E402
    CertificateClient,
    CertificateContact,
    CertificateContentType,
    CertificatePolicy,
    KeyCurveName,
    KeyType,
    WellKnownIssuerNames,
)


class StaticToken:
    """A credential that hands out one fixed token (no AAD)."""

    def get_token(self, *scopes, **kwargs):
        assert scopes and scopes[0].startswith("https://vault.azure.net"), scopes
        return AccessToken(TOKEN, int(time.time()) + 3600)


client = CertificateClient(VAULT_URL, StaticToken())
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def openssl(*args, input=None):
    out = subprocess.run(["openssl", *args], cwd=WORK, input=input, capture_output=True)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {out.stderr.decode()}")
    return out.stdout


def x5t_of(der):
    return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()


def ec_policy(subject, **kw):
    return CertificatePolicy(
        issuer_name=kw.pop("issuer_name", WellKnownIssuerNames.self),
        subject=subject,
        key_type=KeyType.ec,
        key_curve_name=KeyCurveName.p_256,
        **kw,
    )


# ---------------------------------------------------------------- create, get, versions
policy = ec_policy(
    "CN=sdk-self",
    san_dns_names=["sdk-self.example.com"],
    exportable=True,
    content_type=CertificateContentType.pem,
    validity_in_months=12,
    key_usage=["digitalSignature"],
)
# An EC key does not encipher (RFC 8813): a policy asking for keyEncipherment is refused.
try:
    client.begin_create_certificate(
        "sdk-ec-encipher", ec_policy("CN=x", key_usage=["digitalSignature", "keyEncipherment"])
    ).result()
    check(False, "an EC policy with keyEncipherment was accepted")
except HttpResponseError as e:
    check(e.status_code == 400 and "keyEncipherment" in str(e), f"EC keyEncipherment refused: {e}")
cert = client.begin_create_certificate("sdk-self", policy, tags={"env": "test"}).result()
check(cert.name == "sdk-self", "created name")
check(re.fullmatch(r"[0-9a-f]{32}", cert.properties.version or ""), f"32-hex version {cert.properties.version}")
check(cert.id.startswith(VAULT_URL + "/certificates/sdk-self/"), f"id on the vault host: {cert.id}")
check(cert.policy.subject == "CN=sdk-self", f"policy subject {cert.policy.subject}")
check(cert.policy.san_dns_names == ["sdk-self.example.com"], f"SANs {cert.policy.san_dns_names}")
check(cert.policy.key_type == KeyType.ec and cert.policy.key_curve_name == KeyCurveName.p_256, "EC P-256")
check(cert.policy.content_type == CertificateContentType.pem, f"content type {cert.policy.content_type}")
check(cert.properties.tags == {"env": "test"}, f"tags {cert.properties.tags}")
check(cert.properties.x509_thumbprint == hashlib.sha1(cert.cer).digest(), "x5t is SHA-1 of cer")
open(os.path.join(WORK, "sdk-self.der"), "wb").write(cert.cer)
text = openssl("x509", "-inform", "DER", "-in", "sdk-self.der", "-noout", "-subject", "-ext", "subjectAltName").decode()
check("CN = sdk-self" in text or "CN=sdk-self" in text, f"openssl subject: {text}")
check("DNS:sdk-self.example.com" in text, f"openssl SAN: {text}")

got = client.get_certificate("sdk-self")
check(got.cer == cert.cer and got.policy is not None, "get_certificate returns the latest with policy")
# The operation that made it has a request id of its own, never the version's.
done = client.get_certificate_operation("sdk-self")
check(
    done.status.lower() == "completed" and done.request_id and done.request_id != cert.properties.version,
    f"a completed operation's request id is not the version: {done.status} {done.request_id}",
)
second = client.begin_create_certificate("sdk-self", policy).result()
check(second.properties.version != cert.properties.version, "second version")
old = client.get_certificate_version("sdk-self", cert.properties.version)
check(old.cer == cert.cer and old.properties.version == cert.properties.version, "get_certificate_version")
versions = [v.version for v in client.list_properties_of_certificate_versions("sdk-self")]
check(sorted(versions) == sorted([cert.properties.version, second.properties.version]), f"versions {versions}")
# Tags are per version (Key Vault): the second version was made without tags, and a
# versionless read shows the newest version's, not the first one's.
latest_tags = client.get_certificate("sdk-self").properties.tags
check(not latest_tags, f"newest version made without tags shows none: {latest_tags}")
check(client.get_certificate_version("sdk-self", cert.properties.version).properties.tags == {"env": "test"},
      "the first version keeps its own tags")

# ---------------------------------------------------------------- update properties and tags
updated = client.update_certificate_properties("sdk-self", tags={"owner": "ops", "tier": "1"})
check(updated.properties.tags == {"owner": "ops", "tier": "1"}, f"tags replaced: {updated.properties.tags}")
check(client.get_certificate("sdk-self").properties.tags == {"owner": "ops", "tier": "1"}, "tags read back")
check(client.get_certificate_version("sdk-self", second.properties.version).properties.tags == {"owner": "ops", "tier": "1"},
      "a versionless update tags the newest version")
check(client.get_certificate_version("sdk-self", cert.properties.version).properties.tags == {"env": "test"},
      "a versionless update leaves older versions' tags alone")
by_version = client.update_certificate_properties("sdk-self", version=cert.properties.version, tags={"old": "yes"})
check(by_version.properties.tags == {"old": "yes"}, f"versioned update answers that version's tags: {by_version.properties.tags}")
check(client.get_certificate("sdk-self").properties.tags == {"owner": "ops", "tier": "1"},
      "tagging an older version leaves the newest's alone")
for kind in ("secrets", "keys"):
    answer = requests.get(f"{VAULT_URL}/{kind}/sdk-self/?api-version=7.5", headers=HEADERS).json()
    check(answer.get("tags") == {"owner": "ops", "tier": "1"}, f"versionless {kind} GET carries the newest version's tags: {answer.get('tags')}")
off = client.update_certificate_properties("sdk-self", version=cert.properties.version, enabled=False)
check(off.properties.enabled is False, "old version disabled")
check(client.get_certificate_version("sdk-self", cert.properties.version).properties.enabled is False, "disabled read back")
check(client.get_certificate("sdk-self").properties.enabled is True, "latest still enabled")

# ---------------------------------------------------------------- policy
got_policy = client.get_certificate_policy("sdk-self")
check(got_policy.subject == "CN=sdk-self" and got_policy.validity_in_months == 12, "get policy")
new_policy = CertificatePolicy(content_type=CertificateContentType.pkcs12, lifetime_actions=None)
changed = client.update_certificate_policy("sdk-self", new_policy)
check(changed.content_type == CertificateContentType.pkcs12, f"policy updated: {changed.content_type}")
check(changed.subject == "CN=sdk-self", "policy members not given are kept")
check(client.get_certificate_policy("sdk-self").content_type == CertificateContentType.pkcs12, "policy read back")

# ---------------------------------------------------------------- list with paging over 25
for i in range(26):
    client.begin_create_certificate(f"page-{i:02}", ec_policy(f"CN=page-{i:02}")).result()
names = [p.name for p in client.list_properties_of_certificates()]
check(len(names) == len(set(names)), "no certificate listed twice")
check(set(f"page-{i:02}" for i in range(26)) | {"sdk-self"} <= set(names), f"all listed: {len(names)}")
listed_tags = {p.name: p.tags for p in client.list_properties_of_certificates()}
check(listed_tags["sdk-self"] == {"owner": "ops", "tier": "1"}, f"a list item carries the newest version's tags: {listed_tags['sdk-self']}")
first = requests.get(f"{VAULT_URL}/certificates?api-version=7.5", headers=HEADERS).json()
check(len(first["value"]) == 25, f"a page holds 25: {len(first['value'])}")
check(first["nextLink"].startswith(VAULT_URL + "/certificates?"), f"absolute nextLink {first['nextLink']}")
small = requests.get(f"{VAULT_URL}/certificates?api-version=7.5&maxresults=5", headers=HEADERS).json()
check(len(small["value"]) == 5 and "maxresults=5" in small["nextLink"], "maxresults honoured")
too_big = requests.get(f"{VAULT_URL}/certificates?api-version=7.5&maxresults=26", headers=HEADERS)
check(too_big.status_code == 400 and too_big.json()["error"]["code"] == "BadParameter", "maxresults > 25 refused")

# ---------------------------------------------------------------- import PEM and PFX
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "imp.key",
        "-out", "imp.crt", "-subj", "/CN=imported-pem", "-days", "30")
pem_bytes = open(os.path.join(WORK, "imp.key"), "rb").read() + open(os.path.join(WORK, "imp.crt"), "rb").read()
imp_der = openssl("x509", "-in", "imp.crt", "-outform", "DER")
imported = client.import_certificate(
    "imported-pem", pem_bytes, policy=CertificatePolicy(content_type=CertificateContentType.pem)
)
check(imported.cer == imp_der, "imported PEM certificate is the one openssl made")
check(imported.policy.issuer_name == "Self", f"imported self-signed → issuer Self: {imported.policy.issuer_name}")
openssl("pkcs12", "-export", "-inkey", "imp.key", "-in", "imp.crt", "-out", "imp.pfx", "-passout", "pass:pfx-pw")
pfx = open(os.path.join(WORK, "imp.pfx"), "rb").read()
imported_pfx = client.import_certificate("imported-pfx", pfx, password="pfx-pw")
check(imported_pfx.cer == imp_der, "imported PFX certificate")
try:
    client.import_certificate("imported-bad", pfx, password="wrong")
    check(False, "a wrong PFX password is refused")
except HttpResponseError as e:
    check(e.status_code == 400, f"wrong password → 400: {e.status_code}")

# ---------------------------------------------------------------- secrets and keys (raw HTTPS)
secret = requests.get(f"{VAULT_URL}/secrets/imported-pem/{imported.properties.version}?api-version=7.5", headers=HEADERS)
check(secret.status_code == 200, f"secret GET {secret.status_code}")
sj = secret.json()
check(sj["contentType"] == "application/x-pem-file" and "PRIVATE KEY" in sj["value"], "exportable secret holds the key")
openssl("pkey", "-noout", input=sj["value"].encode())
key = requests.get(f"{VAULT_URL}/keys/imported-pem/{imported.properties.version}?api-version=7.5", headers=HEADERS).json()
check(key["key"]["kty"] == "EC" and key["key"]["crv"] == "P-256", f"JWK {key['key'].get('kty')}")
check(key["key"]["kid"] == f"{VAULT_URL}/keys/imported-pem/{imported.properties.version}", "kid")

hsm = client.begin_create_certificate("hsm-ca", ec_policy("CN=hsm-ca", exportable=False, key_usage=["digitalSignature"])).result()
hsm_secret = requests.get(f"{VAULT_URL}/secrets/hsm-ca/{hsm.properties.version}?api-version=7.5", headers=HEADERS).json()
check("PRIVATE KEY" not in hsm_secret["value"] and "CERTIFICATE" in hsm_secret["value"], "non-exportable secret holds no key")
message = b"signed inside the vault"
digest = hashlib.sha256(message).digest()
signed = requests.post(
    f"{VAULT_URL}/keys/hsm-ca/{hsm.properties.version}/sign?api-version=7.5",
    headers=HEADERS,
    json={"alg": "ES256", "value": base64.urlsafe_b64encode(digest).rstrip(b"=").decode()},
)
check(signed.status_code == 200, f"sign {signed.status_code} {signed.text}")
raw = base64.urlsafe_b64decode(signed.json()["value"] + "==")
check(len(raw) == 64, "ES256 signature is r||s")


def der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b


seq = der_int(raw[:32]) + der_int(raw[32:])
open(os.path.join(WORK, "sig.der"), "wb").write(b"\x30" + bytes([len(seq)]) + seq)
open(os.path.join(WORK, "msg.bin"), "wb").write(message)
open(os.path.join(WORK, "hsm.der"), "wb").write(hsm.cer)
openssl("x509", "-inform", "DER", "-in", "hsm.der", "-pubkey", "-noout", "-out", "hsm-pub.pem")
verified = openssl("dgst", "-sha256", "-verify", "hsm-pub.pem", "-signature", "sig.der", "msg.bin").decode()
check("Verified OK" in verified, f"openssl verifies the vault's signature: {verified}")

# ---------------------------------------------------------------- delete, deleted, recover, purge
deleted = client.begin_delete_certificate("page-00", _polling_interval=0.2).result()
check(deleted.recovery_id == f"{VAULT_URL}/deletedcertificates/page-00", f"recovery id {deleted.recovery_id}")
check(deleted.deleted_on is not None and deleted.scheduled_purge_date > deleted.deleted_on, "deletion dates")
try:
    client.get_certificate("page-00")
    check(False, "a deleted certificate is gone")
except ResourceNotFoundError:
    check(True, "")
check(client.get_deleted_certificate("page-00").name == "page-00", "get_deleted_certificate")
check("page-00" in [d.name for d in client.list_deleted_certificates()], "list_deleted_certificates")
recovered = client.begin_recover_deleted_certificate("page-00", _polling_interval=0.2).result()
check(recovered.name == "page-00" and client.get_certificate("page-00").name == "page-00", "recovered")
client.begin_delete_certificate("page-01", _polling_interval=0.2).wait()
client.purge_deleted_certificate("page-01")
try:
    client.get_deleted_certificate("page-01")
    check(False, "purged is gone")
except ResourceNotFoundError:
    check(True, "")

# ---------------------------------------------------------------- backup and restore
blob = client.backup_certificate("page-02")
check(isinstance(blob, bytes) and len(blob) > 100, "backup blob")
check(b"PRIVATE KEY" not in blob, "the blob holds no key in clear")
original = client.get_certificate("page-02")
client.begin_delete_certificate("page-02", _polling_interval=0.2).wait()
try:
    client.restore_certificate_backup(blob)
    check(False, "restore over a deleted name is refused")
except HttpResponseError as e:
    check(e.status_code == 409, f"restore conflict → 409: {e.status_code}")
client.purge_deleted_certificate("page-02")
restored = client.restore_certificate_backup(blob)
check(restored.name == "page-02" and restored.cer == original.cer, "restored as it was")
check(restored.properties.version == original.properties.version, "same version id")

# ---------------------------------------------------------------- contacts
contacts = [CertificateContact(email="pki@example.com", name="PKI", phone="1"),
            CertificateContact(email="oncall@example.com")]
set_back = client.set_contacts(contacts)
check([c.email for c in set_back] == ["pki@example.com", "oncall@example.com"], "set_contacts")
check([c.email for c in client.get_contacts()] == ["pki@example.com", "oncall@example.com"], "get_contacts")
removed = client.delete_contacts()
check([c.email for c in removed] == ["pki@example.com", "oncall@example.com"], "delete_contacts returns them")

# ---------------------------------------------------------------- issuers
iss = client.create_issuer("issuer01", "Test", account_id="keyvaultuser", password="secret-pw")
check(iss.name == "issuer01" and iss.provider == "Test" and iss.account_id == "keyvaultuser", "create_issuer")
check(iss.password is None, "the issuer password is never answered")
check(client.get_issuer("issuer01").provider == "Test", "get_issuer")
check([i.name for i in client.list_properties_of_issuers()] == ["issuer01"], "list issuers")
upd = client.update_issuer("issuer01", account_id="other")
check(upd.account_id == "other" and upd.provider == "Test", "update_issuer keeps what is not given")
check(client.delete_issuer("issuer01").name == "issuer01", "delete_issuer")
try:
    client.get_issuer("issuer01")
    check(False, "deleted issuer is gone")
except ResourceNotFoundError:
    check(True, "")

# ---------------------------------------------------------------- Unknown issuer: CSR, merge
op = client.begin_create_certificate("merge-me", ec_policy("CN=merge-me", issuer_name=WellKnownIssuerNames.unknown)).result()
check(op.status.lower() == "inprogress" and op.csr, f"pending with a CSR: {op.status}")
op2 = client.get_certificate_operation("merge-me")
check(op2.csr == op.csr, "get_certificate_operation")
# While the create waits, Key Vault shows the certificate: a disabled version, no cer, the policy.
waiting = client.get_certificate("merge-me")
check(
    waiting.name == "merge-me" and waiting.properties.enabled is False and waiting.cer is None
    and waiting.properties.version and waiting.policy is not None
    and waiting.policy.issuer_name == WellKnownIssuerNames.unknown,
    f"get_certificate while pending: {waiting.properties.enabled} {waiting.cer!r} {waiting.policy}",
)
# Key Vault's policy carries its times; the create wrote it, so it dates the request (the
# operation has no time of its own). certroll shows a pending request's time from it.
waiting_policy = client.get_certificate_policy("merge-me")
check(
    waiting_policy.created_on is not None and waiting_policy.updated_on == waiting.properties.created_on,
    f"the policy of a pending request dates it: {waiting_policy.created_on} {waiting_policy.updated_on} "
    f"{waiting.properties.created_on}",
)
# Key Vault's pending version names no key or secret (a recording of Key Vault, azure-sdk-for-js
# recording_can_merge_a_self_signed_certificate.json: no kid, sid, cer or x5t), and its version
# id is its own, not the operation's request id.
check(waiting.key_id is None and waiting.secret_id is None, f"no kid or sid while pending: {waiting.key_id}")
check(
    op.request_id and waiting.properties.version != op.request_id,
    f"the pending version has an id of its own: {waiting.properties.version} {op.request_id}",
)
by_version = client.get_certificate_version("merge-me", waiting.properties.version)
check(
    by_version.properties.enabled is False and by_version.cer is None,
    f"the pending version by its id: {by_version.properties.enabled} {by_version.cer!r}",
)
# serve's choice (unconfirmed at Key Vault): the request's key is the name's newest key, under
# the pending version's id, disabled.
pending_key = requests.get(f"{VAULT_URL}/keys/merge-me/?api-version=7.5", headers=HEADERS).json()
check(
    pending_key["key"]["kid"].rsplit("/", 1)[-1] == waiting.properties.version
    and pending_key["attributes"]["enabled"] is False,
    f"the pending key is the waiting version's, disabled: {pending_key}",
)
open(os.path.join(WORK, "merge.csr.der"), "wb").write(op.csr)
openssl("req", "-inform", "DER", "-in", "merge.csr.der", "-verify", "-noout")
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-subj", "/CN=outside CA", "-days", "30")
openssl("x509", "-req", "-inform", "PEM", "-in", "/dev/stdin", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "10", "-out", "merge.crt",
        input=openssl("req", "-inform", "DER", "-in", "merge.csr.der"))
leaf = openssl("x509", "-in", "merge.crt", "-outform", "DER")
ca = openssl("x509", "-in", "ca.crt", "-outform", "DER")
merged = client.merge_certificate("merge-me", [leaf, ca])
check(merged.cer == leaf and merged.name == "merge-me", "merge_certificate")
# As in the recording, the merge makes a version with an id of its own (neither the request's
# nor the placeholder's), whose key and secret carry that id; it is the name's one version.
check(
    merged.properties.version not in (op.request_id, waiting.properties.version)
    and merged.key_id.endswith("/keys/merge-me/" + merged.properties.version)
    and merged.secret_id.endswith("/secrets/merge-me/" + merged.properties.version),
    f"the merge makes a version of its own: {merged.properties.version} (request {op.request_id}, "
    f"placeholder {waiting.properties.version}) {merged.key_id} {merged.secret_id}",
)
listed = [p.version for p in client.list_properties_of_certificate_versions("merge-me")]
newest = client.get_certificate("merge-me")
check(
    listed == [merged.properties.version] and newest.properties.version == merged.properties.version
    and newest.cer == leaf,
    f"the merged version is the name's only version: {listed} {newest.properties.version}",
)
try:
    client.get_certificate_operation("nothing-pending")
    check(False, "no operation")
except ResourceNotFoundError:
    check(True, "")

client.begin_create_certificate("cancel-me", ec_policy("CN=cancel-me", issuer_name=WellKnownIssuerNames.unknown)).result()
gone = client.delete_certificate_operation("cancel-me")
check(gone.csr, "delete_certificate_operation returns the operation")
try:
    client.get_certificate_operation("cancel-me")
    check(False, "deleted operation is gone")
except ResourceNotFoundError:
    check(True, "")
client.begin_create_certificate("cancel-2", ec_policy("CN=cancel-2", issuer_name=WellKnownIssuerNames.unknown)).result()
cancelled = client.cancel_certificate_operation("cancel-2")
check(cancelled.cancellation_requested is True and cancelled.status.lower() == "cancelled",
      f"cancel_certificate_operation: {cancelled.status}")
# Key Vault keeps a cancelled operation until it is deleted; nothing merges into it meanwhile.
kept = client.get_certificate_operation("cancel-2")
check(kept.status.lower() == "cancelled" and kept.cancellation_requested is True and kept.csr,
      f"a cancelled operation stays until deleted: {kept.status}")
try:
    client.merge_certificate("cancel-2", [leaf])
    check(False, "merge into a cancelled operation")
except HttpResponseError as e:
    check(e.status_code == 409 and "cancelled" in str(e), f"merge into a cancelled operation → 409: {e}")
again = client.cancel_certificate_operation("cancel-2")
check(again.status.lower() == "cancelled", "a second cancel answers the same")
gone = client.delete_certificate_operation("cancel-2")
check(gone.status.lower() == "cancelled", f"delete_certificate_operation returns the cancelled operation: {gone.status}")
try:
    client.get_certificate_operation("cancel-2")
    check(False, "a deleted cancelled operation is gone")
except ResourceNotFoundError:
    check(True, "")

# ---------------------------------------------------------------- malformed requests
bad = requests.post(f"{VAULT_URL}/certificates/bad/create?api-version=7.5", headers=HEADERS, data=b"{not json")
check(bad.status_code == 400 and bad.json()["error"]["code"] == "BadParameter", f"bad JSON → 400: {bad.status_code}")
bad = requests.post(f"{VAULT_URL}/certificates/bad/create?api-version=7.5", headers=HEADERS,
                    json={"policy": {"key_props": {"kty": "DSA"}, "x509_props": {"subject": "CN=x"}}})
check(bad.status_code == 400 and "DSA" in bad.json()["error"]["message"], "unknown kty → 400 naming it")
bad = requests.post(f"{VAULT_URL}/certificates/bad/import?api-version=7.5", headers=HEADERS, json={"value": "%%%"})
check(bad.status_code == 400, f"import of garbage → 400: {bad.status_code}")
big = requests.put(f"{VAULT_URL}/certificates/contacts?api-version=7.5", headers=HEADERS, data=b"x" * (5 << 20))
check(big.status_code == 413, f"a body over 4 MiB → 413: {big.status_code}")
bad = requests.get(f"{VAULT_URL}/nothing/here?api-version=7.5", headers=HEADERS)
check(bad.status_code == 400 and bad.json()["error"]["code"] == "BadParameter", "unknown operation → 400")
bad = requests.post(f"{VAULT_URL}/certificates/bad/create?api-version=7.5", headers={**HEADERS, "Content-Type": "text/plain"},
                    data=b'{"policy": {}}')
check(bad.status_code == 400 and "text/plain" in bad.json()["error"]["message"], f"wrong content type → 400: {bad.text}")
bad = requests.get(f"{VAULT_URL}/certificates/%FF%FE/?api-version=7.5", headers=HEADERS)
check(bad.status_code == 400 and bad.text, f"a path escape that is not UTF-8 → 400 with a message: {bad.status_code}")
for version in ("%27%3Bdrop", "x" * 5000, "7.5.", "v1!"):
    bad = requests.get(f"{VAULT_URL}/certificates?api-version={version}", headers=HEADERS)
    check(bad.status_code == 400 and "api-version" in bad.json()["error"]["message"], f"api-version {version[:20]} → 400: {bad.text[:200]}")
for version in ("7.0", "2016-10-01", "2026-04-01", "7.6-preview.2", "2099-01-01-preview"):
    ok = requests.get(f"{VAULT_URL}/certificates?api-version={version}", headers=HEADERS)
    check(ok.status_code == 200, f"api-version {version} accepted: {ok.status_code}")
check(requests.get(f"{VAULT_URL}/certificates/missing/?api-version=2099-01-01", headers=HEADERS).json()["error"]["code"]
      == "CertificateNotFound", "any api-version; missing → CertificateNotFound")

print(f"OK {checks} checks")
