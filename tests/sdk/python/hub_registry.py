"""IoTHubRegistryManager of azure-iot-hub 2.7.0 against `certroll serve`: registry CRUD with
X.509 thumbprints (self-signed and CA auth), etags (`*` and stale), 409 on a duplicate create, and
direct methods on the store's simulated devices.

Run by tests/it/serve_dps_hub.rs with:
  HUB_CONNECTION_STRING  the iothubowner connection string serve printed (HostName=HUB:PORT)
  REQUESTS_CA_BUNDLE     the emulator CA (`certroll serve --ca-out`)
  TP1, TP2               a SHA-1 and a SHA-256 thumbprint (hex)
  SIM_DEVICE             a device of the plan that `certroll issue` provisioned into this hub
  OFFLINE_DEVICE         another provisioned device of the plan; the script changes its hub
                         identity's thumbprints so its certificate no longer gets in

The hub host is resolved to 127.0.0.1 by patching urllib3's connect (Python cannot be given a
resolve table); the Host header, SNI, certificate check and the SAS token's `sr` stay the
production ones. Prints `OK <n> checks`.
"""

import json
import os

import urllib3.util.connection as urllib3_connection

CS = os.environ["HUB_CONNECTION_STRING"]
TP1 = os.environ["TP1"]
TP2 = os.environ["TP2"]
SIM_DEVICE = os.environ["SIM_DEVICE"]
OFFLINE_DEVICE = os.environ["OFFLINE_DEVICE"]

_connect = urllib3_connection.create_connection


def _loopback(address, *args, **kwargs):
    host, port = address
    if host.endswith(".azure-devices.net"):
        host = "127.0.0.1"
    return _connect((host, port), *args, **kwargs)


urllib3_connection.create_connection = _loopback

from azure.iot.hub import IoTHubRegistryManager  # noqa: E402
from azure.iot.hub.models import CloudToDeviceMethod  # noqa: E402
from msrest.exceptions import HttpOperationError  # noqa: E402

registry = IoTHubRegistryManager.from_connection_string(CS)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def refused(call, status, code):
    """Runs `call`; it must raise HttpOperationError with `status` and the hub's error `code`."""
    try:
        call()
    except HttpOperationError as e:
        got = e.response.status_code
        body = e.response.text
        header = e.response.headers.get("iothub-errorcode")
        check(got == status, f"expected {status} {code}, got {got}: {body}")
        check(header == code and code in body, f"expected error code {code}: header {header}, body {body}")
        return
    check(False, f"expected {status} {code}, the call succeeded")


# ---------------------------------------------------------------- self-signed identities
created = registry.create_device_with_x509("py-x509", TP1, TP2, "enabled")
check(created.device_id == "py-x509", f"created id {created.device_id}")
check(created.authentication.type == "selfSigned", f"auth type {created.authentication.type}")
check(created.authentication.x509_thumbprint.primary_thumbprint.upper() == TP1.upper(), "primary thumbprint kept")
check(created.authentication.x509_thumbprint.secondary_thumbprint.upper() == TP2.upper(), "secondary thumbprint kept")
check(created.status == "enabled" and created.etag, f"status {created.status}, etag {created.etag}")
refused(lambda: registry.create_device_with_x509("py-x509", TP1, TP2, "enabled"), 409, "DeviceAlreadyExists")
got = registry.get_device("py-x509")
check(got.etag == created.etag, "get returns the etag create returned")

# Update with the current etag, then with that (now stale) etag again, then with None (`"*"`).
updated = registry.update_device_with_x509("py-x509", got.etag, TP2, None, "disabled")
check(updated.status == "disabled", f"updated status {updated.status}")
check(updated.authentication.x509_thumbprint.primary_thumbprint.upper() == TP2.upper(), "primary replaced")
check(updated.authentication.x509_thumbprint.secondary_thumbprint is None, "secondary removed")
check(updated.etag != got.etag, "an update changes the etag")
refused(lambda: registry.update_device_with_x509("py-x509", got.etag, TP1, None, "enabled"), 412, "PreconditionFailed")
check(registry.get_device("py-x509").status == "disabled", "a stale update changed nothing")
wild = registry.update_device_with_x509("py-x509", None, TP1, TP2, "enabled")
check(wild.status == "enabled", "If-Match \"*\" (the SDK's etag=None) updates whatever the etag")
refused(lambda: registry.update_device_with_x509("py-missing", None, TP1, None, "enabled"), 404, "DeviceNotFound")
refused(lambda: registry.create_device_with_x509("py-bad", "not-hex", None, "enabled"), 400, "ArgumentInvalid")

# ---------------------------------------------------------------- CA-signed identities
ca = registry.create_device_with_certificate_authority("py-ca", "enabled")
check(ca.authentication.type == "certificateAuthority", f"CA auth type {ca.authentication.type}")
check(ca.authentication.x509_thumbprint is None or ca.authentication.x509_thumbprint.primary_thumbprint is None,
      "a CA identity has no thumbprint")
refused(lambda: registry.create_device_with_certificate_authority("py-ca", "enabled"), 409, "DeviceAlreadyExists")
ca2 = registry.update_device_with_certificate_authority("py-ca", ca.etag, "disabled")
check(ca2.status == "disabled" and ca2.authentication.type == "certificateAuthority", "CA identity updated")

# ---------------------------------------------------------------- list and delete
ids = sorted(d.device_id for d in registry.get_devices())
for wanted in ("py-x509", "py-ca", SIM_DEVICE):
    check(wanted in ids, f"{wanted} listed: {ids}")
check(len(registry.get_devices(max_number_of_devices=1)) == 1, "max_number_of_devices honoured")
refused(lambda: registry.delete_device("py-ca", etag="stale"), 412, "PreconditionFailed")
registry.delete_device("py-ca", etag=ca2.etag)
refused(lambda: registry.get_device("py-ca"), 404, "DeviceNotFound")
registry.delete_device("py-x509")  # etag None: If-Match "*"
refused(lambda: registry.delete_device("py-x509"), 404, "DeviceNotFound")

# ---------------------------------------------------------------- concurrent etag updates
# Writers race to count up a thumbprint (as hex), each reading the etag, then updating with it and
# retrying on 412: no update may be lost, so the count ends at writers x rounds.
import threading  # noqa: E402

registry.create_device_with_x509("py-race", "0" * 40, None, "enabled")
WRITERS, ROUNDS = 4, 5
errors = []


def writer():
    own = IoTHubRegistryManager.from_connection_string(CS)
    try:
        for _ in range(ROUNDS):
            while True:
                device = own.get_device("py-race")
                n = int(device.authentication.x509_thumbprint.primary_thumbprint, 16)
                try:
                    own.update_device_with_x509("py-race", device.etag, f"{n + 1:040X}", None, "enabled")
                    break
                except HttpOperationError as e:
                    if e.response.status_code != 412:
                        raise
    except Exception as e:  # noqa: BLE001 - reported by the main thread
        errors.append(repr(e))


threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
check(not errors, f"writers failed: {errors}")
final = int(registry.get_device("py-race").authentication.x509_thumbprint.primary_thumbprint, 16)
check(final == WRITERS * ROUNDS, f"no lost update: {final} of {WRITERS * ROUNDS}")

# ---------------------------------------------------------------- direct methods
result = registry.invoke_device_method(
    SIM_DEVICE, CloudToDeviceMethod(method_name="reprovision", payload={"why": "test"}, response_timeout_in_seconds=10)
)
check(result.status == 200, f"reprovision answered {result.status}: {result.payload}")
check(result.payload["status"] == "assigned", f"registered again: {result.payload}")
unknown = registry.invoke_device_method(SIM_DEVICE, CloudToDeviceMethod(method_name="reboot", payload=None))
check(unknown.status == 501, f"an unknown method is the device's 501 (HTTP 200): {unknown.status}")
check(SIM_DEVICE in json.dumps(unknown.payload), f"the 501 names the device: {unknown.payload}")
registry.create_device_with_x509("py-never-connected", TP1, None, "enabled")
refused(lambda: registry.invoke_device_method("py-never-connected", CloudToDeviceMethod(method_name="reprovision")),
        404, "DeviceNotOnline")
# A device whose identity no longer names its certificate cannot hold a connection.
registry.update_device_with_x509(OFFLINE_DEVICE, None, TP1, None, "enabled")
refused(lambda: registry.invoke_device_method(OFFLINE_DEVICE, CloudToDeviceMethod(method_name="reprovision")),
        404, "DeviceNotOnline")
refused(lambda: registry.invoke_device_method("py-no-such-device", CloudToDeviceMethod(method_name="reprovision")),
        404, "DeviceNotFound")

print(f"OK {checks} checks")
