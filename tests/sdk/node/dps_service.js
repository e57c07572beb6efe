// azure-iot-provisioning-service against `certroll serve`: individual enrollments and groups
// (create, get, etag rules, update, delete), bulk, paged queries and registration states.
//
// Environment, beyond common.js: DPS_CONNECTION_STRING; LEAF_PEM and LEAF2_PEM (two device
// certificates, CN node-ind-1); CA_PEM (a CA certificate for a group); EXISTING_GROUP and
// EXISTING_DEVICE (a group of the plan and one of its devices that `certroll issue` registered);
// BULK_DIR holding node-bulk-1.pem to node-bulk-3.pem (certificates with those CNs).
'use strict';

const fs = require('fs');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { env, run, failure } = require('./common');

async function drain(query) {
  const pages = [];
  const items = [];
  while (query.hasMoreResults) {
    // Query.next() without an argument starts over: the token has to be passed back.
    const page = await query.next(query.continuationToken);
    pages.push(page.responseBody.length);
    items.push(...page.responseBody);
  }
  return { pages, items };
}

run(async () => {
  const client = ProvisioningServiceClient.fromConnectionString(env('DPS_CONNECTION_STRING'));
  const leaf = fs.readFileSync(env('LEAF_PEM'), 'utf8');
  const leaf2 = fs.readFileSync(env('LEAF2_PEM'), 'utf8');
  const ca = fs.readFileSync(env('CA_PEM'), 'utf8');
  const out = {};

  // ---- individual enrollment
  const enrollment = {
    registrationId: 'node-ind-1',
    deviceId: 'node-ind-1',
    attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: leaf } } } },
    provisioningStatus: 'enabled',
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: true },
    iotHubs: [env('HUB_HOST')],
    initialTwin: { tags: { site: 'lab' }, properties: { desired: { interval: 30 } } },
  };
  const created = (await client.createOrUpdateIndividualEnrollment(enrollment)).responseBody;
  out.created = {
    etag: created.etag,
    primaryInfo: created.attestation.x509.clientCertificates.primary.info,
    primaryCertificateEchoed: 'certificate' in created.attestation.x509.clientCertificates.primary &&
      created.attestation.x509.clientCertificates.primary.certificate != null,
    provisioningStatus: created.provisioningStatus,
    initialTwin: created.initialTwin,
    createdDateTimeUtc: created.createdDateTimeUtc,
  };
  // Without an etag a PUT only creates.
  out.createAgain = await failure(client.createOrUpdateIndividualEnrollment(enrollment));
  const got = (await client.getIndividualEnrollment('node-ind-1')).responseBody;
  out.getEtag = got.etag;
  // A stale etag is refused; the current one and `*` update.
  out.stale = await failure(client.createOrUpdateIndividualEnrollment(
    Object.assign({}, enrollment, { etag: '"stale"', provisioningStatus: 'disabled' })));
  const secondSlot = Object.assign({}, enrollment, {
    etag: got.etag,
    attestation: { type: 'x509', x509: { clientCertificates: {
      primary: { certificate: leaf }, secondary: { certificate: leaf2 } } } },
  });
  const updated = (await client.createOrUpdateIndividualEnrollment(secondSlot)).responseBody;
  out.updated = {
    etag: updated.etag,
    secondaryThumbprint: updated.attestation.x509.clientCertificates.secondary.info.sha1Thumbprint,
  };
  const disabled = (await client.createOrUpdateIndividualEnrollment(
    Object.assign({}, secondSlot, { etag: '*', provisioningStatus: 'disabled' }))).responseBody;
  out.wildcard = { etag: disabled.etag, provisioningStatus: disabled.provisioningStatus };

  // ---- enrollment group
  const group = {
    enrollmentGroupId: 'node-group-1',
    attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: ca } } } },
    provisioningStatus: 'enabled',
    iotHubs: [env('HUB_HOST')],
  };
  const g = (await client.createOrUpdateEnrollmentGroup(group)).responseBody;
  out.group = {
    etag: g.etag,
    signingInfo: g.attestation.x509.signingCertificates.primary.info,
  };
  out.groupCreateAgain = await failure(client.createOrUpdateEnrollmentGroup(group));
  const gDisabled = (await client.createOrUpdateEnrollmentGroup(
    Object.assign({}, group, { etag: g.etag, provisioningStatus: 'disabled' }))).responseBody;
  out.groupUpdated = { provisioningStatus: gDisabled.provisioningStatus, etagChanged: gDisabled.etag !== g.etag };
  out.groupDeleteStale = await failure(client.deleteEnrollmentGroup('node-group-1', g.etag));
  await client.deleteEnrollmentGroup('node-group-1', gDisabled.etag);
  out.groupGone = await failure(client.getEnrollmentGroup('node-group-1'));

  // ---- bulk
  const bulkItem = (id) => ({
    registrationId: id,
    attestation: { type: 'x509', x509: { clientCertificates: { primary: {
      certificate: fs.readFileSync(`${env('BULK_DIR')}/${id}.pem`, 'utf8') } } } },
    provisioningStatus: 'disabled',
  });
  // runBulkEnrollmentOperation 1.11 settles its promise only when given a callback.
  const runBulk = (operation) => new Promise((resolve, reject) => {
    client.runBulkEnrollmentOperation(operation, (err, result) => (err ? reject(err) : resolve(result)));
  });
  const bulk = await runBulk({
    mode: 'create', enrollments: [bulkItem('node-bulk-1'), bulkItem('node-bulk-2')],
  });
  const bulkAgain = await runBulk({
    mode: 'create', enrollments: [bulkItem('node-bulk-2'), bulkItem('node-bulk-3')],
  });
  out.bulk = { first: bulk, second: bulkAgain };

  // ---- queries, two to a page
  const individuals = await drain(client.createIndividualEnrollmentQuery({ query: '*' }, 2));
  out.individualQuery = { pages: individuals.pages, ids: individuals.items.map((e) => e.registrationId) };
  const groups = await drain(client.createEnrollmentGroupQuery({ query: '*' }, 2));
  out.groupQuery = { ids: groups.items.map((e) => e.enrollmentGroupId) };
  // The spelling DPS's documentation and portal use asks for the same records.
  const selectIndividuals = await drain(client.createIndividualEnrollmentQuery({ query: 'SELECT * FROM enrollments' }, 2));
  out.individualSelect = { ids: selectIndividuals.items.map((e) => e.registrationId) };
  const selectGroups = await drain(client.createEnrollmentGroupQuery({ query: 'SELECT * FROM enrollmentGroups' }, 2));
  out.groupSelect = { ids: selectGroups.items.map((e) => e.enrollmentGroupId) };

  // ---- registration states
  const state = (await client.getDeviceRegistrationState(env('EXISTING_DEVICE'))).responseBody;
  out.registration = {
    registrationId: state.registrationId,
    status: state.status,
    substatus: state.substatus,
    assignedHub: state.assignedHub,
    deviceId: state.deviceId,
    etag: state.etag,
  };
  const perGroup = await drain(
    client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, env('EXISTING_GROUP'), 2));
  out.groupRegistrations = perGroup.items.map((s) => s.registrationId);
  out.registrationDeleteStale = await failure(
    client.deleteDeviceRegistrationState(env('EXISTING_DEVICE'), '"stale"'));
  await client.deleteDeviceRegistrationState(env('EXISTING_DEVICE'), state.etag);
  out.registrationGone = await failure(client.getDeviceRegistrationState(env('EXISTING_DEVICE')));

  // ---- delete
  out.deleteStale = await failure(client.deleteIndividualEnrollment('node-ind-1', '"stale"'));
  await client.deleteIndividualEnrollment('node-ind-1', disabled.etag);
  out.deletedGet = await failure(client.getIndividualEnrollment('node-ind-1'));
  out.deleteMissing = await failure(client.deleteIndividualEnrollment('node-ind-1'));
  return out;
});
