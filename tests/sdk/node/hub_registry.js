// azure-iothub against `certroll serve`: registry CRUD with X.509 thumbprints, bulk, and direct
// methods on the store's simulated devices.
//
// Environment, beyond common.js: HUB_CONNECTION_STRING; TP1 and TP2 (two SHA-1 thumbprints);
// SIM_DEVICE (a device of the plan that `certroll issue` provisioned into this hub).
'use strict';

const { Registry, Client } = require('azure-iothub');
const { NoRetry } = require('azure-iot-common');
const { env, run, failure } = require('./common');

run(async () => {
  const cs = env('HUB_CONNECTION_STRING');
  const registry = Registry.fromConnectionString(cs);
  const out = {};
  const device = {
    deviceId: 'node-hub-1',
    status: 'enabled',
    authentication: { x509Thumbprint: { primaryThumbprint: env('TP1'), secondaryThumbprint: env('TP2') } },
  };
  const created = (await registry.create(device)).responseBody;
  out.created = {
    deviceId: created.deviceId,
    etag: created.etag,
    type: created.authentication.type,
    primary: created.authentication.x509Thumbprint.primaryThumbprint,
    secondary: created.authentication.x509Thumbprint.secondaryThumbprint,
    status: created.status,
  };
  out.createAgain = await failure(registry.create(device));
  const got = (await registry.get('node-hub-1')).responseBody;
  out.getEtag = got.etag;
  const updated = (await registry.update({
    deviceId: 'node-hub-1',
    status: 'disabled',
    authentication: { x509Thumbprint: { primaryThumbprint: env('TP2') } },
  })).responseBody;
  out.updated = {
    status: updated.status,
    primary: updated.authentication.x509Thumbprint.primaryThumbprint,
    secondary: updated.authentication.x509Thumbprint.secondaryThumbprint,
    etagChanged: updated.etag !== got.etag,
  };
  out.updateMissing = await failure(registry.update({ deviceId: 'node-hub-missing', status: 'enabled' }));
  const ca = (await registry.create({
    deviceId: 'node-hub-ca', status: 'enabled', authentication: { type: 'certificateAuthority' },
  })).responseBody;
  out.ca = { type: ca.authentication.type, primary: ca.authentication.x509Thumbprint.primaryThumbprint };

  // ---- bulk: two new devices and one that exists
  const bulkDevice = (id) => ({
    deviceId: id, status: 'enabled',
    authentication: { x509Thumbprint: { primaryThumbprint: env('TP1') } },
  });
  out.bulkCreate = (await registry.addDevices([bulkDevice('node-bulk-a'), bulkDevice('node-bulk-b')])).responseBody;
  try {
    out.bulkConflict = (await registry.addDevices([bulkDevice('node-bulk-c'), bulkDevice('node-bulk-a')])).responseBody;
  } catch (err) {
    out.bulkConflict = { status: err.response && err.response.statusCode, body: JSON.parse(err.responseBody) };
  }
  // A stale etag is refused: deleteIfMatchETag.
  try {
    out.bulkStaleDelete = (await registry.removeDevices([{ deviceId: 'node-bulk-b', etag: 'stale' }], false)).responseBody;
  } catch (err) {
    out.bulkStaleDelete = { status: err.response && err.response.statusCode, body: JSON.parse(err.responseBody) };
  }
  const listed = (await registry.list()).responseBody;
  out.listed = listed.map((d) => d.deviceId).sort();

  await registry.delete('node-hub-1');
  out.deletedGet = await failure(registry.get('node-hub-1'));
  out.deleteMissing = await failure(registry.delete('node-hub-1'));

  // ---- direct methods
  const client = Client.fromConnectionString(cs);
  client.setRetryPolicy(new NoRetry());
  const invoke = async (id, methodName) => {
    try {
      const r = await client.invokeDeviceMethod(id, { methodName, payload: { why: 'test' }, responseTimeoutInSeconds: 10 });
      return { ok: r.result };
    } catch (err) {
      return { status: err.response && err.response.statusCode, body: err.responseBody };
    }
  };
  out.methodReprovision = await invoke(env('SIM_DEVICE'), 'reprovision');
  out.methodUnknown = await invoke(env('SIM_DEVICE'), 'reboot');
  out.methodNotOnline = await invoke('node-bulk-a', 'reprovision');
  out.methodNoDevice = await invoke('no-such-device', 'reprovision');
  return out;
});
