//! `Box<dyn Backend>` is a backend too: every method forwards to the boxed one (the batched
//! and overridden ones included), so a verb can hold whichever backend the plan opens and pass
//! `&backend` wherever a `&dyn Backend` is taken.

use super::types::*;
use super::*;

impl Vault for Box<dyn Backend> {
    fn current(&self, name: &str) -> Result<Option<VaultVersion>> {
        (**self).current(name)
    }

    fn current_many(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        (**self).current_many(names)
    }

    fn versions(&self, name: &str) -> Result<Vec<VaultVersion>> {
        (**self).versions(name)
    }

    fn briefs_many(&self, names: &[String]) -> Result<Vec<Vec<VersionBrief>>> {
        (**self).briefs_many(names)
    }

    fn versions_many(&self, names: &[String]) -> Result<Vec<Vec<VaultVersion>>> {
        (**self).versions_many(names)
    }

    fn version(&self, name: &str, version: &str) -> Result<Option<VaultVersion>> {
        (**self).version(name, version)
    }

    fn current_with_policy_many(
        &self,
        names: &[String],
    ) -> Result<Vec<Option<(VaultVersion, serde_json::Value)>>> {
        (**self).current_with_policy_many(names)
    }

    fn version_stamps(&self, name: &str) -> Result<Vec<VersionStamp>> {
        (**self).version_stamps(name)
    }

    fn listing(&self) -> Result<Vec<ListedCertificate>> {
        (**self).listing()
    }

    fn create_versions(&mut self, batch: &[NewVersion<'_>], now: OffsetDateTime) -> Result<Vec<String>> {
        (**self).create_versions(batch, now)
    }

    fn private_key(&self, version: &VaultVersion) -> Result<PrivateKey> {
        (**self).private_key(version)
    }

    fn signer(&self, version: &VaultVersion) -> Result<crate::pki::cert::CaSigner> {
        (**self).signer(version)
    }

    fn names_page(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        (**self).names_page(after, limit)
    }

    fn policy(&self, name: &str) -> Result<Option<serde_json::Value>> {
        (**self).policy(name)
    }

    fn set_policy(&mut self, name: &str, policy_json: &str, now: OffsetDateTime) -> Result<bool> {
        (**self).set_policy(name, policy_json, now)
    }

    fn set_enabled(&mut self, version: &VaultVersion, enabled: bool, now: OffsetDateTime) -> Result<()> {
        (**self).set_enabled(version, enabled, now)
    }

    fn revoke(
        &mut self,
        issuer: (&str, &str),
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        (**self).revoke(issuer, serial, reason, now)
    }

    fn revocations(&self, issuer: &str, version: &str) -> Result<(u64, Vec<Revocation>)> {
        (**self).revocations(issuer, version)
    }

    fn is_revoked(&self, issuer: (&str, &str), serial: &str) -> Result<bool> {
        (**self).is_revoked(issuer, serial)
    }

    fn next_crl_number(&mut self, issuer: &str) -> Result<u64> {
        (**self).next_crl_number(issuer)
    }

    fn tags(&self, name: &str, version: Option<&str>) -> Result<Option<Tags>> {
        (**self).tags(name, version)
    }

    fn set_tags(
        &mut self,
        name: &str,
        version: Option<&str>,
        tags: &Tags,
        now: OffsetDateTime,
    ) -> Result<()> {
        (**self).set_tags(name, version, tags, now)
    }

    fn name_state(&self, name: &str) -> Result<Option<&'static str>> {
        (**self).name_state(name)
    }

    fn certificate_users(&self, name: &str) -> Result<CertificateUsers> {
        (**self).certificate_users(name)
    }

    fn delete_certificate(
        &mut self,
        name: &str,
        now: OffsetDateTime,
        purge_at: OffsetDateTime,
    ) -> Result<bool> {
        (**self).delete_certificate(name, now, purge_at)
    }

    fn deleted_certificates(&self, name: Option<&str>) -> Result<Vec<DeletedCertificate>> {
        (**self).deleted_certificates(name)
    }

    fn recover_certificate(&mut self, name: &str) -> Result<bool> {
        (**self).recover_certificate(name)
    }

    fn purge_certificate(&mut self, name: &str) -> Result<bool> {
        (**self).purge_certificate(name)
    }

    fn backup_certificate(&self, name: &str) -> Result<Option<CertificateBackup>> {
        (**self).backup_certificate(name)
    }

    fn restore_certificate(&mut self, backup: &CertificateBackup) -> Result<()> {
        (**self).restore_certificate(backup)
    }

    fn contacts(&self) -> Result<Option<Vec<String>>> {
        (**self).contacts()
    }

    fn set_contacts(&mut self, emails: Option<&[String]>) -> Result<()> {
        (**self).set_contacts(emails)
    }

    fn issuers(&self) -> Result<Vec<IssuerConfig>> {
        (**self).issuers()
    }

    fn put_issuer(&mut self, issuer: &IssuerConfig, now: OffsetDateTime) -> Result<()> {
        (**self).put_issuer(issuer, now)
    }

    fn delete_issuer(&mut self, name: &str) -> Result<bool> {
        (**self).delete_issuer(name)
    }

    fn issuer_users(&self, issuer: &str) -> Result<Vec<String>> {
        (**self).issuer_users(issuer)
    }

    fn pending(&self, name: &str) -> Result<Option<PendingCertificate>> {
        (**self).pending(name)
    }

    fn pending_all(&self) -> Result<Vec<PendingCertificate>> {
        (**self).pending_all()
    }

    fn put_pending(&mut self, pending: &PendingCertificate, key_pkcs8: &[u8]) -> Result<()> {
        (**self).put_pending(pending, key_pkcs8)
    }

    fn pending_key(&self, name: &str) -> Result<PrivateKey> {
        (**self).pending_key(name)
    }

    fn delete_pending(&mut self, name: &str) -> Result<bool> {
        (**self).delete_pending(name)
    }

    fn stored_chain(&self, name: &str, version: &str) -> Result<Vec<Vec<u8>>> {
        (**self).stored_chain(name, version)
    }

    fn set_stored_chain(&mut self, name: &str, version: &str, chain: &[Vec<u8>]) -> Result<()> {
        (**self).set_stored_chain(name, version, chain)
    }

    fn create_by_vault(
        &mut self,
        name: &str,
        policy_json: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Created>> {
        (**self).create_by_vault(name, policy_json, now)
    }

    fn merge_pending(
        &mut self,
        pending: &PendingCertificate,
        leaf: &[u8],
        chain: &[Vec<u8>],
        issuer: Option<(&str, &str)>,
        now: OffsetDateTime,
    ) -> Result<String> {
        (**self).merge_pending(pending, leaf, chain, issuer, now)
    }

    fn makes_own_keys(&self) -> bool {
        (**self).makes_own_keys()
    }

    fn key_holder(
        &mut self,
        name: &str,
        make: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Option<VaultVersion>> {
        (**self).key_holder(name, make, now)
    }

    fn retire_key_holders(&mut self, name: &str, now: OffsetDateTime) -> Result<()> {
        (**self).retire_key_holders(name, now)
    }

    fn is_key_holder_version(&self, name: &str, version: &str) -> Result<bool> {
        (**self).is_key_holder_version(name, version)
    }

    fn mark_new_versions(&mut self, marker: Option<&str>) {
        (**self).mark_new_versions(marker)
    }

    fn versions_marked(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        (**self).versions_marked(names)
    }

    fn backup_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        (**self).backup_blob(name)
    }

    fn restore_blob(&mut self, blob: &[u8]) -> Result<Option<String>> {
        (**self).restore_blob(blob)
    }
}

impl EnrollmentService for Box<dyn Backend> {
    fn group_registrations_all(&self, group: &str) -> Result<Vec<RegistrationState>> {
        (**self).group_registrations_all(group)
    }

    fn ca(&self, name: &str) -> Result<Option<ServiceCa>> {
        (**self).ca(name)
    }

    fn cas(&self) -> Result<Vec<ServiceCa>> {
        (**self).cas()
    }

    fn upload_ca(&mut self, name: &str, cert_der: &[u8], now: OffsetDateTime) -> Result<()> {
        (**self).upload_ca(name, cert_der, now)
    }

    fn delete_ca(&mut self, name: &str) -> Result<()> {
        (**self).delete_ca(name)
    }

    fn verification_code(&mut self, name: &str, now: OffsetDateTime) -> Result<String> {
        (**self).verification_code(name, now)
    }

    fn verify_ca(&mut self, name: &str, verification_cert_der: &[u8], now: OffsetDateTime) -> Result<()> {
        (**self).verify_ca(name, verification_cert_der, now)
    }

    fn group(&self, name: &str) -> Result<Option<EnrollmentGroup>> {
        (**self).group(name)
    }

    fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        (**self).groups()
    }

    fn put_group(&mut self, group: &EnrollmentGroup, now: OffsetDateTime) -> Result<()> {
        (**self).put_group(group, now)
    }

    fn individual(&self, registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        (**self).individual(registration_id)
    }

    fn individual_many(&self, ids: &[String]) -> Result<Vec<Option<IndividualEnrollment>>> {
        (**self).individual_many(ids)
    }

    fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        (**self).individuals()
    }

    fn put_individuals(&mut self, batch: &[IndividualEnrollment], now: OffsetDateTime) -> Result<()> {
        (**self).put_individuals(batch, now)
    }

    fn put_individuals_reading(
        &mut self,
        batch: &[IndividualEnrollment],
        now: OffsetDateTime,
        ahead: &[String],
    ) -> (Result<()>, Result<Vec<Option<IndividualEnrollment>>>) {
        (**self).put_individuals_reading(batch, now, ahead)
    }

    fn individuals_kept_disabled(&self, ids: &[String]) -> Vec<bool> {
        (**self).individuals_kept_disabled(ids)
    }

    fn register(
        &mut self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        (**self).register(batch, now)
    }

    fn preview_register(
        &self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<std::result::Result<Assignment, String>>> {
        (**self).preview_register(batch, now)
    }

    fn registration(&self, registration_id: &str) -> Result<Option<RegistrationState>> {
        (**self).registration(registration_id)
    }

    fn registration_many(&self, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        (**self).registration_many(ids)
    }
}

impl HubRegistry for Box<dyn Backend> {
    fn identity(&self, hub: &str, device_id: &str) -> Result<Option<HubIdentity>> {
        (**self).identity(hub, device_id)
    }

    fn identity_many(&self, wanted: &[(String, String)]) -> Result<Vec<Option<HubIdentity>>> {
        (**self).identity_many(wanted)
    }

    fn delete_identity(&mut self, hub: &str, device_id: &str) -> Result<()> {
        (**self).delete_identity(hub, device_id)
    }

    fn update_identity(&mut self, identity: &HubIdentity, now: OffsetDateTime) -> Result<()> {
        (**self).update_identity(identity, now)
    }

    fn update_identities(&mut self, batch: &[HubIdentity], now: OffsetDateTime) -> Result<()> {
        (**self).update_identities(batch, now)
    }

    fn update_identities_reading(
        &mut self,
        batch: &[HubIdentity],
        now: OffsetDateTime,
        ahead: &[(String, String)],
    ) -> (Result<()>, Result<Vec<Option<HubIdentity>>>) {
        (**self).update_identities_reading(batch, now, ahead)
    }

    fn identities_seen_disabled(&self, ids: &[String]) -> Vec<Option<String>> {
        (**self).identities_seen_disabled(ids)
    }

    fn invoke_method(
        &mut self,
        hub: &str,
        device_id: &str,
        call: &DirectMethodCall,
        now: OffsetDateTime,
    ) -> Result<DirectMethodResult> {
        (**self).invoke_method(hub, device_id, call, now)
    }

    fn invoke_methods(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        now: OffsetDateTime,
    ) -> Vec<Result<DirectMethodResult>> {
        (**self).invoke_methods(calls, concurrency, now)
    }

    fn invoke_methods_each(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        now: OffsetDateTime,
        each: &mut dyn FnMut(usize, Result<DirectMethodResult>),
    ) {
        (**self).invoke_methods_each(calls, concurrency, now, each)
    }

    fn authenticate(
        &self,
        hub: &str,
        device_id: &str,
        cert_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<std::result::Result<(), String>> {
        (**self).authenticate(hub, device_id, cert_der, now)
    }
}

impl Fleet for Box<dyn Backend> {
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>> {
        (**self).device(id)
    }

    fn device_many(&self, ids: &[String]) -> Result<Vec<Option<DeviceRecord>>> {
        (**self).device_many(ids)
    }

    fn first_unissued(&self, ids: &[String]) -> Result<Option<String>> {
        (**self).first_unissued(ids)
    }
    fn first_purged(&self, ids: &[String]) -> Result<Option<String>> {
        (**self).first_purged(ids)
    }

    fn devices_page(&self, group: Option<&str>, after: &str, limit: usize) -> Result<Vec<DeviceRecord>> {
        (**self).devices_page(group, after, limit)
    }

    fn install(&mut self, batch: &[DeviceRecord]) -> Result<()> {
        (**self).install(batch)
    }

    fn devices_under(
        &self,
        issuers: &[(String, String)],
        groups: Option<&[String]>,
        limit: usize,
    ) -> Result<(u64, Vec<String>)> {
        (**self).devices_under(issuers, groups, limit)
    }
}

impl Journal for Box<dyn Backend> {
    fn open_run(&self, command: &str) -> Result<Option<JournalRun>> {
        (**self).open_run(command)
    }

    fn finished_run(&self, command: &str) -> Result<Option<JournalRun>> {
        (**self).finished_run(command)
    }

    fn open_runs(&self) -> Result<Vec<JournalRun>> {
        (**self).open_runs()
    }

    fn start_run(&mut self, command: &str, steps: &[JournalStep], now: OffsetDateTime) -> Result<i64> {
        (**self).start_run(command, steps, now)
    }

    fn step_done(
        &mut self,
        run: i64,
        seq: u32,
        result: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<()> {
        (**self).step_done(run, seq, result, now)
    }

    fn finish_run(&mut self, run: i64, now: OffsetDateTime) -> Result<()> {
        (**self).finish_run(run, now)
    }

    fn last_done_step(&self, target: &str, kind: &str) -> Result<Option<JournalStep>> {
        (**self).last_done_step(target, kind)
    }

    fn done_steps(&self, kinds: &[&str]) -> Result<Vec<JournalStep>> {
        (**self).done_steps(kinds)
    }
}

impl Backend for Box<dyn Backend> {
    fn installs_on_devices(&self) -> bool {
        (**self).installs_on_devices()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }

    fn begin(&mut self) -> Result<()> {
        (**self).begin()
    }

    fn in_unit(&self) -> bool {
        (**self).in_unit()
    }

    fn commit(&mut self) -> Result<()> {
        (**self).commit()
    }

    fn rollback(&mut self) {
        (**self).rollback()
    }

    fn commit_then_register(
        &mut self,
        requests: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        (**self).commit_then_register(requests, now)
    }

    fn bulk_writes(&mut self, on: bool) {
        (**self).bulk_writes(on)
    }

    fn finish_deliveries(&mut self) -> Result<()> {
        (**self).finish_deliveries()
    }

    fn deliver_owed(&mut self, now: OffsetDateTime) -> Result<(u64, u64)> {
        (**self).deliver_owed(now)
    }

    fn owes_delivery(&self, id: &str, version: &str) -> Result<bool> {
        (**self).owes_delivery(id, version)
    }

    fn owed_devices(&self) -> Result<Vec<String>> {
        (**self).owed_devices()
    }

    fn held_back_deliveries(&self) -> Result<Vec<(String, String)>> {
        (**self).held_back_deliveries()
    }

    fn delivery_failure(&self, id: &str) -> Option<String> {
        (**self).delivery_failure(id)
    }

    fn assigned_identities(&self, ids: &[String]) -> Result<Vec<Option<HubIdentity>>> {
        (**self).assigned_identities(ids)
    }

    fn chunk_reads(&mut self, names: &[String], ids: &[String]) -> Result<crate::backend::ChunkReads> {
        (**self).chunk_reads(names, ids)
    }

    fn read_ahead(&mut self, next: Option<(&[String], &[String])>) {
        (**self).read_ahead(next)
    }

    #[allow(clippy::type_complexity)]
    fn registrations_and_identities(
        &self,
        ids: &[String],
    ) -> Result<(Vec<Option<RegistrationState>>, Vec<Option<HubIdentity>>)> {
        (**self).registrations_and_identities(ids)
    }

    fn put_individuals_and_identities(
        &mut self,
        individuals: &[IndividualEnrollment],
        identities: &[HubIdentity],
        now: OffsetDateTime,
    ) -> Result<()> {
        (**self).put_individuals_and_identities(individuals, identities, now)
    }

    fn unchanged_registrations(&self, ids: &[String], now: OffsetDateTime) -> Result<Vec<Option<Unchanged>>> {
        (**self).unchanged_registrations(ids, now)
    }
}
