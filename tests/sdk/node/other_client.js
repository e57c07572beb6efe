// Another client of DPS and IoT Hub, as operators and their tools are (the fourth azure trial's
// `client2`): through the official service SDKs it replaces a device's hub identity thumbprints
// and disables an individual enrollment, each read first and written back with its etag.
//
// Environment, beyond common.js: HUB_CONNECTION_STRING, DPS_CONNECTION_STRING;
// THUMBPRINT_DEVICE with TP1 and TP2 (its new primary and secondary thumbprints);
// DISABLE_ENROLLMENT (a registration id) with LEAF_PEM (its certificate, as DPS holds it).
'use strict';

const fs = require('fs');
const { Registry } = require('azure-iothub');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { env, run } = require('./common');

run(async () => {
  const out = {};
  const registry = Registry.fromConnectionString(env('HUB_CONNECTION_STRING'));
  const device = (await registry.get(env('THUMBPRINT_DEVICE'))).responseBody;
  const changed = (await registry.update({
    deviceId: device.deviceId,
    etag: device.etag,
    status: device.status,
    authentication: {
      type: 'selfSigned',
      x509Thumbprint: { primaryThumbprint: env('TP1'), secondaryThumbprint: env('TP2') },
    },
  })).responseBody;
  out.identity = {
    status: changed.status,
    primary: changed.authentication.x509Thumbprint.primaryThumbprint,
    secondary: changed.authentication.x509Thumbprint.secondaryThumbprint,
  };

  const dps = ProvisioningServiceClient.fromConnectionString(env('DPS_CONNECTION_STRING'));
  const got = (await dps.getIndividualEnrollment(env('DISABLE_ENROLLMENT'))).responseBody;
  const disabled = (await dps.createOrUpdateIndividualEnrollment({
    registrationId: got.registrationId,
    deviceId: got.deviceId,
    etag: got.etag,
    attestation: { type: 'x509', x509: { clientCertificates: {
      primary: { certificate: fs.readFileSync(env('LEAF_PEM'), 'utf8') } } } },
    provisioningStatus: 'disabled',
    reprovisionPolicy: got.reprovisionPolicy,
    iotHubs: got.iotHubs,
    iotHubHostName: got.iotHubHostName,
  })).responseBody;
  out.enrollment = { provisioningStatus: disabled.provisioningStatus };
  return out;
});
