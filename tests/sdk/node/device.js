// A device with its `certroll export`ed certificate and key: provisions through DPS over mutual
// TLS (azure-iot-provisioning-device-http + azure-iot-security-x509), then sends a message to the
// hub DPS assigned with azure-iot-device-http and the same certificate.
//
// Environment, beyond common.js: ID_SCOPE; REGISTRATION_ID; CERT_PEM (the device's chain, leaf
// first) and KEY_PEM. Prints {"provisioning": {...} | {"error": ...}, "hub": {...}}; a refusal is
// reported, not thrown, because the rehearsal expects some.
'use strict';

const fs = require('fs');
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const ProvisioningHttp = require('azure-iot-provisioning-device-http').Http;
const { Client, Message, X509AuthenticationProvider } = require('azure-iot-device');
const { Http } = require('azure-iot-device-http');
const { env, run, statusOf } = require('./common');

run(async () => {
  const id = env('REGISTRATION_ID');
  const x509 = { cert: fs.readFileSync(env('CERT_PEM'), 'utf8'), key: fs.readFileSync(env('KEY_PEM'), 'utf8') };
  const out = {};
  const transport = new ProvisioningHttp();
  const provisioning = ProvisioningDeviceClient.create(
    'global.azure-devices-provisioning.net', env('ID_SCOPE'), transport, new X509Security(id, x509));
  let assigned;
  try {
    const result = await provisioning.register();
    assigned = result;
    out.provisioning = {
      status: result.status,
      substatus: result.substatus,
      assignedHub: result.assignedHub,
      deviceId: result.deviceId,
      registrationId: result.registrationId,
      etag: result.etag,
      enrollmentGroupId: result.x509 && result.x509.enrollmentGroupId ? result.x509.enrollmentGroupId : null,
    };
  } catch (err) {
    out.provisioning = {
      error: err.constructor.name,
      httpStatus: statusOf(err),
      registrationState: err.result ? err.result.registrationState : null,
      status: err.result ? err.result.status : null,
    };
  }
  // To the hub DPS named, or (refused) to the hub named in HUB_HOST, with the same certificate.
  const hub = assigned ? assigned.assignedHub : process.env.HUB_HOST;
  const deviceId = assigned ? assigned.deviceId : id;
  if (hub) {
    const client = Client.fromAuthenticationProvider(
      X509AuthenticationProvider.fromX509Options(deviceId, hub, x509), Http);
    try {
      await client.sendEvent(new Message(JSON.stringify({ from: deviceId, temperature: 21.5 })));
      out.hub = { sent: true, hub };
    } catch (err) {
      out.hub = { sent: false, hub, error: err.constructor.name, httpStatus: statusOf(err) };
    }
    await client.close().catch(() => {});
  }
  return out;
});
