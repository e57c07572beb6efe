//! The local backend: vault, enrollment service, hub registry and fleet on the embedded store.

use super::decision_inputs;
use super::registration::{self, Decision};
use super::types::*;
use super::*;
use crate::store::{Store, queries as q, queries_vault as qv};

/// The Key Vault version tag in which the azure backend records the CA version that signed a
/// version (`NAME/VERSION`); serve's simulated devices follow it to build their chains.
const AZURE_ISSUER_TAG: &str = "certroll-issuer";

/// All services on one store file.
pub struct LocalBackend {
    /// Checkpoints the store's write-ahead log during a bulk run ([`Backend::bulk_writes`]).
    /// Declared before `store` so it is dropped first: its connection must not outlive the
    /// store's descriptors (closing one drops the process's POSIX locks on the file).
    checkpointer: Option<crate::store::Checkpointer>,
    store: Store,
}

impl LocalBackend {
    /// Wraps an open store.
    pub fn new(store: Store) -> LocalBackend {
        LocalBackend {
            store,
            checkpointer: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checkpoints the store's write-ahead log on a thread of its own from now on, for a
    /// process that writes under the writer lock one unit of work at a time
    /// ([`Store::start_shared_checkpointer`]); stops when this backend is dropped.
    ///
    /// Errors: the checkpointing connection or thread cannot be started.
    pub fn checkpoint_beside_writes(&mut self) -> std::result::Result<(), crate::store::StoreError> {
        if self.checkpointer.is_none() {
            self.checkpointer = self.store.start_shared_checkpointer()?;
        }
        Ok(())
    }

    fn with_path(&self, e: crate::store::StoreError) -> BackendError {
        use crate::store::StoreError;
        match e {
            StoreError::Sqlite { path, source } if path.as_os_str().is_empty() => {
                BackendError::Store(self.store.err(source))
            }
            other => BackendError::Store(other),
        }
    }
}

macro_rules! read {
    ($self:ident, $e:expr) => {
        $e.map_err(|e| $self.with_path(e))
    };
}

impl LocalBackend {
    /// Gathers what the service knows about a batch (cheap reads) and decides every
    /// registration in parallel (the signature checks are the expensive part). Returns the leaf
    /// thumbprints and the decisions, in order.
    fn decide_batch(
        &self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
        reuse: bool,
    ) -> Result<(Vec<String>, Vec<Decided>)> {
        use rayon::prelude::*;
        let raw_groups = self.groups()?;
        let cas = self.cas()?;
        let service = decision_inputs::service_digest(&raw_groups, &cas);
        let groups = registration::usable_groups(raw_groups, &cas);
        let conn = self.store.conn();
        let ids: Vec<String> = batch.iter().map(|r| r.registration_id.clone()).collect();
        let individuals = self.individual_many(&ids)?;
        let recorded = if reuse {
            read!(self, q::registration_decisions_many(conn, &ids))?
        } else {
            vec![None; ids.len()]
        };
        let any_disabled = read!(self, q::any_disabled_enrollment(conn))?;
        // The validity window of the certificates above each leaf: a batch presents a handful
        // of distinct chains, each parsed once.
        let mut above: std::collections::HashMap<&[Vec<u8>], _> = std::collections::HashMap::new();
        for req in batch {
            if let Some(tail) = req.chain.get(1..) {
                above
                    .entry(tail)
                    .or_insert_with(|| decision_inputs::above_window(tail));
            }
        }
        let mut known = Vec::with_capacity(batch.len());
        let mut thumbprints = Vec::with_capacity(batch.len());
        for ((req, individual), recorded) in batch.iter().zip(individuals).zip(recorded) {
            let leaf_tp = req
                .chain
                .first()
                .map(|c| crate::pki::sha1_thumbprint(c))
                .unwrap_or_default();
            let disabled = if any_disabled {
                read!(self, q::disabled_enrollments_with(conn, &leaf_tp))?
            } else {
                Vec::new()
            };
            thumbprints.push(leaf_tp);
            known.push((disabled, individual, recorded));
        }
        let decisions = batch
            .par_iter()
            .zip(known.par_iter())
            .map(|(req, (disabled, individual, recorded))| {
                let inputs = decision_inputs::fingerprint(req, individual.as_ref(), disabled, &service);
                if let Some(r) = recorded
                    && r.inputs == inputs
                    && let Some(decision) = recorded_decision(r, individual.as_ref(), &groups, now)
                {
                    return Decided {
                        decision,
                        record: Some((inputs, r.from, r.until)),
                    };
                }
                let (decision, leaf_validity) = registration::decide_with_validity(
                    req,
                    &registration::Context {
                        disabled_holding_leaf: disabled,
                        individual: individual.as_ref(),
                        groups: &groups,
                        now,
                    },
                );
                let record = match decision {
                    Decision::Individual { .. } | Decision::Group { .. } => leaf_validity
                        .and_then(|leaf| {
                            let tail = req.chain.get(1..).unwrap_or_default();
                            decision_inputs::validity_window_with(leaf, above.get(tail).copied().flatten())
                        })
                        .map(|(from, until)| (inputs, from.unix_timestamp(), until.unix_timestamp())),
                    Decision::Rejected(_) | Decision::Disabled(_) => None,
                };
                Decided { decision, record }
            })
            .collect();
        Ok((thumbprints, decisions))
    }
}

impl LocalBackend {
    /// The certificates above a leaf signed by `issuer` that a device presents with it: the
    /// issuer and each certificate up the vault's issuer links, the root left out. None when a
    /// link is missing or the chain is longer than 16 (the caller's long way reports that).
    fn presented_above(&self, issuer: &(String, String)) -> Result<Option<Vec<Vec<u8>>>> {
        let mut chain = Vec::new();
        let mut next = Some(issuer.clone());
        while let Some((name, version)) = next {
            if chain.len() > 16 {
                return Ok(None);
            }
            let Some(v) = read!(self, q::vault_version(self.store.conn(), &name, &version))? else {
                return Ok(None);
            };
            chain.push(v.cert_der);
            next = v.issuer;
        }
        chain.pop();
        Ok(Some(chain))
    }
}

/// A decision and, for an assignment, what to record with it: the fingerprint of its inputs and
/// the Unix seconds between which it holds.
struct Decided {
    decision: Decision,
    record: Option<(decision_inputs::Fingerprint, i64, i64)>,
}

/// The recorded assignment again, when `now` is inside the times it holds for and its enrollment
/// is still there (its content is in the fingerprint the caller compared).
fn recorded_decision(
    r: &q::RecordedDecision,
    individual: Option<&IndividualEnrollment>,
    groups: &[registration::ServiceGroup],
    now: OffsetDateTime,
) -> Option<Decision> {
    // Certificate times are whole seconds: now >= from iff its floor is, now <= until iff its
    // ceiling is.
    let floor = now.unix_timestamp();
    let ceil = floor + i64::from(now.nanosecond() > 0);
    if floor < r.from || ceil > r.until {
        return None;
    }
    match r.enrollment_kind.as_str() {
        "group" => groups
            .iter()
            .map(|g| &g.group)
            .find(|g| g.name == r.enrollment_name)
            .map(|g| Decision::Group {
                name: g.name.clone(),
                hub: g.hub.clone(),
                reprovision: g.reprovision.clone(),
            }),
        "individual" => individual
            .filter(|i| i.registration_id == r.enrollment_name)
            .map(|i| Decision::Individual {
                name: i.registration_id.clone(),
                hub: i.hub.clone(),
                reprovision: i.reprovision.clone(),
            }),
        _ => None,
    }
}

impl Vault for LocalBackend {
    fn current_many(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        read!(self, q::vault_current_many(self.store.conn(), names))
    }

    fn current(&self, name: &str) -> Result<Option<VaultVersion>> {
        read!(self, q::vault_current(self.store.conn(), name))
    }

    fn versions_many(&self, names: &[String]) -> Result<Vec<Vec<VaultVersion>>> {
        read!(self, q::vault_versions_many(self.store.conn(), names))
    }

    fn briefs_many(&self, names: &[String]) -> Result<Vec<Vec<VersionBrief>>> {
        read!(self, q::vault_briefs_many(self.store.conn(), names))
    }

    fn versions(&self, name: &str) -> Result<Vec<VaultVersion>> {
        read!(self, q::vault_versions(self.store.conn(), name))
    }

    fn version(&self, name: &str, version: &str) -> Result<Option<VaultVersion>> {
        read!(self, q::vault_version(self.store.conn(), name, version))
    }

    fn create_versions(&mut self, batch: &[NewVersion<'_>], now: OffsetDateTime) -> Result<Vec<String>> {
        let out = self.store.write(|tx, key| {
            // A fleet shares a handful of policies: store and hash each once per batch.
            let mut hashes: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
            batch
                .iter()
                .map(|new| {
                    let hash = match hashes.get(new.policy_json) {
                        Some(h) => h.clone(),
                        None => {
                            let h = q::policy_put(tx, new.policy_json)?;
                            hashes.insert(new.policy_json, h.clone());
                            h
                        }
                    };
                    q::vault_insert_with_policy(tx, key, now, new, &hash)
                })
                .collect::<std::result::Result<Vec<_>, _>>()
        });
        out.map_err(|e| self.with_path(e))
    }

    fn names_page(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        read!(self, q::vault_names_page(self.store.conn(), after, limit))
    }

    fn policy(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let text = read!(self, q::vault_policy(self.store.conn(), name))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                BackendError::Store(crate::store::StoreError::Corrupt {
                    path: self.store.path().to_path_buf(),
                    message: format!("policy of `{name}`: {e}"),
                })
            })
        })
        .transpose()
    }

    fn set_policy(&mut self, name: &str, policy_json: &str, now: OffsetDateTime) -> Result<bool> {
        read!(self, qv::policy_set(self.store.conn(), name, policy_json, now))
    }

    fn set_enabled(&mut self, version: &VaultVersion, enabled: bool, now: OffsetDateTime) -> Result<()> {
        let out = self
            .store
            .write(|tx, _| q::vault_set_enabled(tx, &version.name, &version.version, enabled, now));
        out.map_err(|e| self.with_path(e))
    }

    fn revoke(
        &mut self,
        issuer: (&str, &str),
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let out = self
            .store
            .write(|tx, _| q::crl_add(tx, issuer.0, issuer.1, serial, reason, now));
        out.map_err(|e| self.with_path(e))
    }

    fn revocations(&self, issuer: &str, version: &str) -> Result<(u64, Vec<Revocation>)> {
        read!(self, q::crl_get(self.store.conn(), issuer, version))
    }

    fn is_revoked(&self, issuer: (&str, &str), serial: &str) -> Result<bool> {
        read!(
            self,
            q::crl_contains(self.store.conn(), issuer.0, issuer.1, serial)
        )
    }

    fn next_crl_number(&mut self, issuer: &str) -> Result<u64> {
        let out = self.store.write(|tx, _| q::crl_next_number(tx, issuer));
        out.map_err(|e| self.with_path(e))
    }

    fn private_key(&self, version: &VaultVersion) -> Result<PrivateKey> {
        let der = read!(
            self,
            q::vault_private_key(
                self.store.conn(),
                self.store.key(),
                &version.name,
                &version.version
            )
        )?;
        let (key, _) = PrivateKey::from_der_any(&der)?;
        Ok(key)
    }

    fn signer(&self, version: &VaultVersion) -> Result<crate::pki::cert::CaSigner> {
        // The store unseals every key, HSM or not, and signs in this process.
        Ok(crate::pki::cert::CaSigner::Key(self.private_key(version)?))
    }

    // -------- vault administration (issue 4)

    fn tags(&self, name: &str, version: Option<&str>) -> Result<Option<Tags>> {
        read!(self, qv::tags_get(self.store.conn(), name, version))
    }

    fn set_tags(
        &mut self,
        name: &str,
        version: Option<&str>,
        tags: &Tags,
        now: OffsetDateTime,
    ) -> Result<()> {
        let out = self
            .store
            .write(|tx, _| qv::tags_set(tx, name, version, tags, now));
        out.map_err(|e| self.with_path(e))
    }

    fn name_state(&self, name: &str) -> Result<Option<&'static str>> {
        read!(self, qv::name_in_use(self.store.conn(), name))
    }

    fn certificate_users(&self, name: &str) -> Result<CertificateUsers> {
        read!(self, qv::users(self.store.conn(), name))
    }

    fn delete_certificate(
        &mut self,
        name: &str,
        now: OffsetDateTime,
        purge_at: OffsetDateTime,
    ) -> Result<bool> {
        let out = self.store.write(|tx, _| qv::delete(tx, name, now, purge_at));
        out.map_err(|e| self.with_path(e))
    }

    fn deleted_certificates(&self, name: Option<&str>) -> Result<Vec<DeletedCertificate>> {
        read!(self, qv::deleted(self.store.conn(), name))
    }

    fn recover_certificate(&mut self, name: &str) -> Result<bool> {
        let out = self.store.write(|tx, _| qv::recover(tx, name));
        out.map_err(|e| self.with_path(e))
    }

    fn purge_certificate(&mut self, name: &str) -> Result<bool> {
        let out = self.store.write(|tx, _| qv::purge(tx, name));
        out.map_err(|e| self.with_path(e))
    }

    fn backup_certificate(&self, name: &str) -> Result<Option<CertificateBackup>> {
        read!(self, qv::backup(self.store.conn(), self.store.key(), name))
    }

    fn restore_certificate(&mut self, backup: &CertificateBackup) -> Result<()> {
        let out = self.store.write(|tx, key| {
            // Restored versions are not renewals: when nothing newer was waiting for the renewal
            // scan, the watermark moves past them.
            let before: i64 = tx
                .query_row("SELECT coalesce(max(seq), 0) FROM vault_versions", [], |r| {
                    r.get(0)
                })
                .map_err(|e| crate::store::StoreError::Sqlite {
                    path: Default::default(),
                    source: e,
                })?;
            qv::restore(tx, key, backup)?;
            let mark = crate::store::queries_notify::renewal_watermark(tx)?;
            if mark >= before {
                let after: i64 = tx
                    .query_row("SELECT coalesce(max(seq), 0) FROM vault_versions", [], |r| {
                        r.get(0)
                    })
                    .map_err(|e| crate::store::StoreError::Sqlite {
                        path: Default::default(),
                        source: e,
                    })?;
                crate::store::queries_notify::set_renewal_watermark(tx, after)?;
            }
            Ok(())
        });
        out.map_err(|e| match e {
            crate::store::StoreError::Seal(crate::store::seal::SealError::Open(_)) => BackendError::Refused(format!(
                "`{}` has a non-exportable key sealed under another store key: it can be restored only into a \
                 store that uses the same store key as the one it was backed up from",
                backup.name
            )),
            other => self.with_path(other),
        })
    }

    fn contacts(&self) -> Result<Option<Vec<String>>> {
        read!(self, qv::contacts_get(self.store.conn()))
    }

    fn set_contacts(&mut self, emails: Option<&[String]>) -> Result<()> {
        let out = self.store.write(|tx, _| qv::contacts_set(tx, emails));
        out.map_err(|e| self.with_path(e))
    }

    fn issuers(&self) -> Result<Vec<IssuerConfig>> {
        read!(self, qv::issuers(self.store.conn()))
    }

    fn put_issuer(&mut self, issuer: &IssuerConfig, now: OffsetDateTime) -> Result<()> {
        let out = self.store.write(|tx, _| qv::issuer_put(tx, issuer, now));
        out.map_err(|e| self.with_path(e))
    }

    fn delete_issuer(&mut self, name: &str) -> Result<bool> {
        let out = self.store.write(|tx, _| qv::issuer_delete(tx, name));
        out.map_err(|e| self.with_path(e))
    }

    fn issuer_users(&self, issuer: &str) -> Result<Vec<String>> {
        read!(self, qv::issuer_users(self.store.conn(), issuer))
    }

    fn pending(&self, name: &str) -> Result<Option<PendingCertificate>> {
        read!(self, qv::pending_get(self.store.conn(), name))
    }

    fn pending_all(&self) -> Result<Vec<PendingCertificate>> {
        read!(self, qv::pending_all(self.store.conn()))
    }

    fn put_pending(&mut self, pending: &PendingCertificate, key_pkcs8: &[u8]) -> Result<()> {
        let out = self
            .store
            .write(|tx, key| qv::pending_put(tx, key, pending, key_pkcs8));
        out.map_err(|e| self.with_path(e))
    }

    fn pending_key(&self, name: &str) -> Result<PrivateKey> {
        let der = read!(self, qv::pending_key(self.store.conn(), self.store.key(), name))?;
        let (key, _) = PrivateKey::from_der_any(&der)?;
        Ok(key)
    }

    fn delete_pending(&mut self, name: &str) -> Result<bool> {
        let out = self.store.write(|tx, _| qv::pending_delete(tx, name));
        out.map_err(|e| self.with_path(e))
    }

    fn stored_chain(&self, name: &str, version: &str) -> Result<Vec<Vec<u8>>> {
        read!(self, qv::chain_get(self.store.conn(), name, version))
    }

    fn set_stored_chain(&mut self, name: &str, version: &str, chain: &[Vec<u8>]) -> Result<()> {
        let out = self.store.write(|tx, _| qv::chain_set(tx, name, version, chain));
        out.map_err(|e| self.with_path(e))
    }

    /// The merged version gets an id of its own, as at Key Vault, where it is neither the
    /// request's id nor the id its placeholder showed while it waited (a recording of Key
    /// Vault: azure-sdk-for-js `recording_can_merge_a_self_signed_certificate.json`). One
    /// write: the version, its chain and the end of the request.
    fn merge_pending(
        &mut self,
        pending: &PendingCertificate,
        leaf: &[u8],
        chain: &[Vec<u8>],
        issuer: Option<(&str, &str)>,
        now: OffsetDateTime,
    ) -> Result<String> {
        // The trait's default merges in separate writes; here the version, its chain and the
        // request's removal are one transaction.
        let key = self.pending_key(&pending.name)?;
        let new = pending.merged(leaf, key.pkcs8_der(), issuer);
        let out = self.store.write(|tx, sealing| {
            let hash = q::policy_put(tx, new.policy_json)?;
            let version = q::vault_insert_with_policy(tx, sealing, now, &new, &hash)?;
            if !chain.is_empty() {
                qv::chain_set(tx, &pending.name, &version, chain)?;
            }
            qv::pending_delete(tx, &pending.name)?;
            Ok::<_, crate::store::StoreError>(version)
        });
        out.map_err(|e| self.with_path(e))
    }
}

impl EnrollmentService for LocalBackend {
    fn individual_many(&self, ids: &[String]) -> Result<Vec<Option<IndividualEnrollment>>> {
        read!(self, q::individual_get_many(self.store.conn(), ids))
    }

    fn registration_many(&self, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        read!(self, q::registration_get_many(self.store.conn(), ids))
    }

    fn ca(&self, name: &str) -> Result<Option<ServiceCa>> {
        read!(self, q::ca_get(self.store.conn(), name))
    }

    fn cas(&self) -> Result<Vec<ServiceCa>> {
        read!(self, q::ca_list(self.store.conn()))
    }

    fn upload_ca(&mut self, name: &str, cert_der: &[u8], now: OffsetDateTime) -> Result<()> {
        crate::pki::CertInfo::from_der(cert_der)?;
        let out = self.store.write(|tx, _| q::ca_put(tx, name, cert_der, now));
        out.map_err(|e| self.with_path(e))
    }

    fn delete_ca(&mut self, name: &str) -> Result<()> {
        let out = self.store.write(|tx, _| q::ca_delete(tx, name));
        out.map_err(|e| self.with_path(e))
    }

    fn verification_code(&mut self, name: &str, now: OffsetDateTime) -> Result<String> {
        if self.ca(name)?.is_none() {
            return Err(BackendError::NotFound(format!("CA certificate `{name}`")));
        }
        let mut bytes = [0u8; 16];
        crate::pki::random_bytes(&mut bytes)?;
        let nonce = crate::pki::hex_upper(&bytes);
        let out = self.store.write(|tx, _| q::ca_set_nonce(tx, name, &nonce, now));
        out.map_err(|e| self.with_path(e))?;
        Ok(nonce)
    }

    fn verify_ca(&mut self, name: &str, verification_cert_der: &[u8], now: OffsetDateTime) -> Result<()> {
        let ca = self
            .ca(name)?
            .ok_or_else(|| BackendError::NotFound(format!("CA certificate `{name}`")))?;
        let nonce = read!(self, q::ca_nonce(self.store.conn(), name))?.ok_or_else(|| {
            BackendError::Refused(format!(
                "no verification code was issued for CA certificate `{name}`"
            ))
        })?;
        let cn = crate::pki::inspect::common_name(verification_cert_der)?;
        if cn.as_deref() != Some(nonce.as_str()) {
            let shown = match &cn {
                Some(cn) => format!("CN `{}`", crate::error::snippet(cn)),
                None => "(no CN)".to_string(),
            };
            return Err(BackendError::Refused(format!(
                "the verification certificate's {shown} is not the verification code issued for `{name}`"
            )));
        }
        verify_signed_by(verification_cert_der, &ca.cert_der).map_err(|e| {
            BackendError::Refused(format!(
                "verification certificate for `{name}` is not signed by that CA's key: {e}"
            ))
        })?;
        let out = self.store.write(|tx, _| q::ca_set_verified(tx, name, now));
        out.map_err(|e| self.with_path(e))
    }

    fn group(&self, name: &str) -> Result<Option<EnrollmentGroup>> {
        read!(self, q::group_get(self.store.conn(), name))
    }

    fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        read!(self, q::group_list(self.store.conn()))
    }

    fn put_group(&mut self, group: &EnrollmentGroup, now: OffsetDateTime) -> Result<()> {
        // As DPS: a secondary without a primary is refused, so a flow that would leave one
        // fails here as it does on Azure.
        if let Some(why) = group.slots_refused() {
            return Err(BackendError::Refused(why));
        }
        for slot in [&group.primary, &group.secondary].into_iter().flatten() {
            if let Some(reference) = &slot.ca_reference {
                match self.ca(reference)? {
                    Some(ca) if ca.verified => {}
                    Some(_) => {
                        return Err(BackendError::Refused(format!(
                            "group `{}` refers to CA certificate `{reference}`, which is not verified",
                            group.name
                        )));
                    }
                    None => {
                        return Err(BackendError::NotFound(format!("CA certificate `{reference}`")));
                    }
                }
            }
        }
        let out = self.store.write(|tx, _| q::group_put(tx, group, now));
        out.map_err(|e| self.with_path(e))
    }

    fn individual(&self, registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        read!(self, q::individual_get(self.store.conn(), registration_id))
    }

    fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        read!(self, q::individual_list(self.store.conn()))
    }

    fn put_individuals(&mut self, batch: &[IndividualEnrollment], now: OffsetDateTime) -> Result<()> {
        if let Some(why) = batch.iter().find_map(IndividualEnrollment::slots_refused) {
            return Err(BackendError::Refused(why));
        }
        let out = self
            .store
            .write(|tx, _| batch.iter().try_for_each(|e| q::individual_put(tx, e, now)));
        out.map_err(|e| self.with_path(e))
    }

    fn register(
        &mut self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        // A registration decides afresh (and records what it decided from); only a preview
        // reuses recorded decisions, so `reprovision --force` re-decides every device.
        let (thumbprints, decisions) = self.decide_batch(batch, now, false)?;
        self.record_decisions(batch, &thumbprints, decisions, now)
    }

    fn preview_register(
        &self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<std::result::Result<Assignment, String>>> {
        let (_, decisions) = self.decide_batch(batch, now, true)?;
        Ok(decisions
            .into_iter()
            .map(|d| match d.decision {
                Decision::Rejected(reason) | Decision::Disabled(reason) => Err(reason),
                Decision::Individual { hub, reprovision, .. } | Decision::Group { hub, reprovision, .. } => {
                    Ok(Assignment { hub, reprovision })
                }
            })
            .collect())
    }

    fn registration(&self, registration_id: &str) -> Result<Option<RegistrationState>> {
        read!(self, q::registration_get(self.store.conn(), registration_id))
    }
}

impl LocalBackend {
    /// One device's own registration with the chain it presented (serve's DPS device endpoint;
    /// an MQTT front would call the same): as [`EnrollmentService::register`], except that a
    /// certificate that authenticates the device to no enrollment (attestation failed,
    /// [`Decision::Rejected`]) writes nothing and comes back as `Err(reason)`. DPS answers such
    /// a device 401 and leaves the registration record alone, so the holder of a revoked or
    /// superseded certificate cannot mark a device `failed`. A disabled enrollment that holds the
    /// certificate is recorded (`disabled`), as DPS records it for an authenticated device.
    pub fn register_attested(
        &mut self,
        request: &RegistrationRequest,
        now: OffsetDateTime,
    ) -> Result<std::result::Result<RegistrationState, String>> {
        let batch = std::slice::from_ref(request);
        let (thumbprints, decisions) = self.decide_batch(batch, now, false)?;
        if let Some(Decided {
            decision: Decision::Rejected(reason),
            ..
        }) = decisions.first()
        {
            return Ok(Err(reason.clone()));
        }
        let mut recorded = self.record_decisions(batch, &thumbprints, decisions, now)?;
        Ok(Ok(recorded.remove(0)))
    }

    /// Records decided registrations and carries out their hub assignments, in one write.
    fn record_decisions(
        &mut self,
        batch: &[RegistrationRequest],
        thumbprints: &[String],
        decisions: Vec<Decided>,
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        let conn = self.store.conn();
        let ids: Vec<String> = batch.iter().map(|r| r.registration_id.clone()).collect();
        let mut previous: std::collections::HashMap<String, RegistrationState> = self
            .registration_many(&ids)?
            .into_iter()
            .flatten()
            .map(|r| (r.registration_id.clone(), r))
            .collect();
        let mut identities: std::collections::HashMap<(String, String), HubIdentity> =
            read!(self, q::hub_get_many(conn, &ids))?
                .into_iter()
                .map(|h| ((h.hub.clone(), h.device_id.clone()), h))
                .collect();
        let out = self.store.write(|tx, _| {
            batch
                .iter()
                .zip(thumbprints.iter())
                .zip(decisions)
                .map(|((req, leaf_tp), decision)| {
                    apply(tx, req, leaf_tp, decision, now, &mut previous, &mut identities)
                })
                .collect::<std::result::Result<Vec<_>, _>>()
        });
        out.map_err(|e| self.with_path(e))
    }
}

/// Records the decision and carries out the hub assignment the reprovision policy asks for.
fn apply(
    tx: &rusqlite::Connection,
    req: &RegistrationRequest,
    leaf_tp: &str,
    decided: Decided,
    now: OffsetDateTime,
    previous: &mut std::collections::HashMap<String, RegistrationState>,
    identities: &mut std::collections::HashMap<(String, String), HubIdentity>,
) -> std::result::Result<RegistrationState, crate::store::StoreError> {
    let Decided { decision, record } = decided;
    let (kind, name, hub, reprovision) = match decision {
        Decision::Rejected(ref reason) | Decision::Disabled(ref reason) => {
            // A refused attempt is recorded as DPS records it (status, error code and message,
            // time), while the hub of the last successful assignment stays (issue 10 item 2).
            let status = decision.status();
            let before = previous.get(&req.registration_id);
            let state = RegistrationState {
                registration_id: req.registration_id.clone(),
                status: status.into(),
                substatus: None,
                hub: before.and_then(|p| p.hub.clone()),
                cert_thumbprint: Some(leaf_tp.to_string()),
                error: Some(reason.clone()),
                error_code: registration::error_code(status),
                enrollment_kind: before.and_then(|p| p.enrollment_kind.clone()),
                enrollment_name: before.and_then(|p| p.enrollment_name.clone()),
                created: before.and_then(|p| p.created).or(Some(now)),
                updated: Some(now),
                etag: None,
                device_id: before.and_then(|p| p.device_id.clone()),
            };
            q::registration_put(tx, &state, None, None, leaf_tp, now)?;
            previous.insert(req.registration_id.clone(), state.clone());
            return Ok(state);
        }
        Decision::Individual {
            name,
            hub,
            reprovision,
        } => ("individual", name, hub, reprovision),
        Decision::Group {
            name,
            hub,
            reprovision,
        } => ("group", name, hub, reprovision),
    };
    // Assigned before (even if a refused attempt came since): a reprovisioning, not a first
    // assignment.
    let assigned_before = previous
        .get(&req.registration_id)
        .is_some_and(|p| p.hub.is_some());
    // DPS assigns the device under its individual enrollment's `deviceId` when it has one (only
    // given through serve's DPS API: certroll's own devices are their registration ids).
    let custom_id = if kind == "individual" {
        crate::store::queries_dps::individual_device_id(tx, &name)?.filter(|id| *id != req.registration_id)
    } else {
        None
    };
    let device_id = custom_id.clone().unwrap_or_else(|| req.registration_id.clone());
    let existing = match identities.get(&(hub.clone(), device_id.clone())) {
        Some(found) => Some(found.clone()),
        None if custom_id.is_some() => q::hub_get(tx, &hub, &device_id)?,
        None => None,
    };
    let substatus = match (assigned_before, reprovision.as_str()) {
        (false, _) => "initialAssignment",
        (true, "reset") => "deviceDataReset",
        (true, "never") => "reprovisionedToInitialAssignment",
        (true, _) => "deviceDataMigrated",
    };
    let update_hub = !assigned_before || existing.is_none() || reprovision != "never";
    if update_hub {
        let identity = HubIdentity {
            hub: hub.clone(),
            device_id: device_id.clone(),
            status: existing.as_ref().map(|e| e.status).unwrap_or(Status::Enabled),
            auth_type: "selfSigned".into(),
            primary_thumbprint: Some(leaf_tp.to_string()),
            secondary_thumbprint: None,
        };
        q::hub_put(tx, &identity, reprovision == "reset", now)?;
        // DPS sets the twin to the enrollment's initialTwin when it assigns a device afresh or
        // resets its data (one given through `certroll serve`'s DPS API).
        if matches!(substatus, "initialAssignment" | "deviceDataReset")
            && let Some(twin) = crate::store::queries_dps::initial_twin(tx, kind, &name)?
        {
            crate::store::queries_dps::set_twin(tx, &hub, &device_id, &twin)?;
        }
        identities.insert((hub.clone(), device_id), identity);
    }
    let before = previous.get(&req.registration_id);
    let state = RegistrationState {
        registration_id: req.registration_id.clone(),
        status: "assigned".into(),
        substatus: Some(substatus.into()),
        hub: Some(hub),
        cert_thumbprint: Some(leaf_tp.to_string()),
        error: None,
        error_code: None,
        enrollment_kind: Some(kind.into()),
        enrollment_name: Some(name.clone()),
        created: before.and_then(|p| p.created).or(Some(now)),
        updated: Some(now),
        etag: None,
        device_id: custom_id,
    };
    let record = record
        .as_ref()
        .map(|(inputs, from, until)| (&inputs[..], *from, *until));
    q::registration_put_decided(tx, &state, Some(kind), Some(&name), leaf_tp, now, record)?;
    previous.insert(req.registration_id.clone(), state.clone());
    Ok(state)
}

/// Checks that `cert_der` carries a valid signature by the key of `issuer_der`.
fn verify_signed_by(cert_der: &[u8], issuer_der: &[u8]) -> std::result::Result<(), String> {
    crate::pki::verify_signature(cert_der, issuer_der)
}

impl LocalBackend {
    /// Whether the store's simulated device `id` is online in `hub`, and the chain it holds
    /// (leaf first, the root left out, as a device presents it): a device is online when the
    /// hub admits the certificate installed on it at `now`.
    pub fn online_chain(&self, hub: &str, id: &str, now: OffsetDateTime) -> Result<Option<Vec<Vec<u8>>>> {
        let Some(device) = self.device(id)? else {
            return Ok(None);
        };
        let Some(installed) = device.installed_version.as_deref() else {
            return Ok(None);
        };
        let Some(leaf) = self.version(&device.cert_name, installed)? else {
            return Ok(None);
        };
        if self.authenticate(hub, id, &leaf.cert_der, now)?.is_err() {
            return Ok(None);
        }
        self.presented_chain(leaf).map(Some)
    }

    /// The chain a device holding `leaf` presents: the leaf and its issuers, the root left out.
    /// Issuers are followed through the version's issuer link, or, for a version imported
    /// through `certroll serve`'s Key Vault, through the tag the azure backend records the
    /// signing CA version in (`certroll-issuer` = `NAME/VERSION`).
    fn presented_chain(&self, leaf: VaultVersion) -> Result<Vec<Vec<u8>>> {
        let issuer_of = |v: &VaultVersion| -> Result<Option<(String, String)>> {
            if v.issuer.is_some() {
                return Ok(v.issuer.clone());
            }
            let tags = self.tags(&v.name, Some(&v.version))?.unwrap_or_default();
            Ok(tags
                .get(AZURE_ISSUER_TAG)
                .and_then(|t| t.split_once('/'))
                .map(|(n, v)| (n.to_string(), v.to_string())))
        };
        let mut next = issuer_of(&leaf)?;
        let name = leaf.name.clone();
        let mut chain = vec![leaf.cert_der];
        while let Some((issuer, version)) = next {
            if chain.len() > 16 {
                return Err(BackendError::Refused(format!(
                    "issuer chain of `{name}` is longer than 16 certificates"
                )));
            }
            let v = self.version(&issuer, &version)?.map(Ok).unwrap_or_else(|| {
                let deleted = self.deleted_certificates(Some(&issuer))?;
                Err(crate::backend::missing_issuer(&issuer, &version, deleted.first()))
            })?;
            next = issuer_of(&v)?;
            chain.push(v.cert_der);
        }
        if chain.len() > 1 {
            chain.pop(); // the root is not presented
        }
        Ok(chain)
    }

    /// The version of vault certificate `cert_name` that `leaf_der` is, when simulated device
    /// `id` holds another (None: it holds this one, or the certificate is no version of
    /// `cert_name`), with the device's record.
    fn presented_other(
        &self,
        id: &str,
        cert_name: &str,
        leaf_der: &[u8],
    ) -> Result<Option<(VaultVersion, Option<DeviceRecord>)>> {
        let Some(version) = self
            .versions(cert_name)?
            .into_iter()
            .find(|v| v.cert_der == leaf_der)
        else {
            return Ok(None);
        };
        let before = self.device(id)?;
        if before
            .as_ref()
            .is_some_and(|d| d.installed_version.as_deref() == Some(version.version.as_str()))
        {
            return Ok(None);
        }
        Ok(Some((version, before)))
    }

    /// Whether [`hold_presented`](Self::hold_presented) would change device `id`'s record.
    pub fn holds_other(&self, id: &str, cert_name: &str, leaf_der: &[u8]) -> Result<bool> {
        Ok(self.presented_other(id, cert_name, leaf_der)?.is_some())
    }

    /// A simulated device proved over mutual TLS that it holds a certificate and its key
    /// (`certroll serve`'s DPS device endpoint, whatever DPS decided, or its hub's device
    /// endpoint): from now on it holds that certificate, when it is a version of vault
    /// certificate `cert_name` (a device certroll issued; any other certificate is not
    /// recorded). `kind` and `enrollment` are the registration state's (`group` or
    /// `individual`, and its name; None: the device's record keeps its own). Returns whether
    /// the record changed.
    pub fn hold_presented(
        &mut self,
        id: &str,
        cert_name: &str,
        leaf_der: &[u8],
        kind: Option<&str>,
        enrollment: Option<&str>,
    ) -> Result<bool> {
        let Some((version, before)) = self.presented_other(id, cert_name, leaf_der)? else {
            return Ok(false);
        };
        let (group, individual) = match kind {
            Some("group") => (enrollment.map(str::to_string), None),
            Some(_) => (None, enrollment.map(str::to_string)),
            None => before
                .as_ref()
                .map(|d| (d.group.clone(), d.enrollment.clone()))
                .unwrap_or_default(),
        };
        self.install(&[DeviceRecord {
            id: id.to_string(),
            group,
            enrollment: individual,
            cert_name: cert_name.to_string(),
            installed_version: Some(version.version),
        }])?;
        Ok(true)
    }

    /// Removes an enrollment group from the store (false if there was none). The azure backend
    /// keeps here, beside the plan, a group DPS cannot hold (one left with no CA), and forgets
    /// it once DPS holds the group again.
    pub fn forget_group(&mut self, name: &str) -> Result<bool> {
        let out = self
            .store
            .write(|tx, _| crate::store::queries_dps::group_delete(tx, name));
        out.map_err(|e| self.with_path(e))
    }

    /// Records deliveries devices are owed (see `owed_deliveries` in the store's schema v14):
    /// `(device id, vault certificate name, version)`, in the current unit if one is open.
    pub fn owe_deliveries(&mut self, owed: &[crate::store::queries_journal::OwedDelivery]) -> Result<()> {
        let out = self
            .store
            .write(|tx, _| crate::store::queries_journal::owed_put(tx, owed));
        out.map_err(|e| self.with_path(e))
    }

    /// Settles owed deliveries: `(device id, version)`, None for whatever version it was owed.
    /// Inside a unit the settlement is part of it (a unit rolled back leaves them owed);
    /// outside, it is one small transaction of its own. A shared borrow (see
    /// [`crate::store::Store::write_shared`]): the azure backend settles deliveries while
    /// they still run.
    pub fn settle_deliveries(&self, settled: &[(String, Option<String>)]) -> Result<()> {
        if settled.is_empty() {
            return Ok(());
        }
        let out = self
            .store
            .write_shared(|tx, _| crate::store::queries_journal::owed_settle(tx, settled));
        out.map_err(|e| self.with_path(e))
    }

    /// Whether device `id` is owed the delivery of `version`.
    pub fn owes_delivery(&self, id: &str, version: &str) -> Result<bool> {
        read!(
            self,
            crate::store::queries_journal::owed_has(self.store.conn(), id, version)
        )
    }

    /// Up to `limit` owed deliveries after device id `after`, in id order.
    pub fn owed_deliveries(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<crate::store::queries_journal::OwedDelivery>> {
        read!(
            self,
            crate::store::queries_journal::owed_page(self.store.conn(), after, limit)
        )
    }

    /// The simulated device's answer to a delivery method: it fetches vault version
    /// `payload.name`/`payload.version` (refused when the vault has no such version, it is
    /// disabled, or its thumbprint is not `payload.thumbprint`), installs it, and connects with
    /// it. When the hub does not admit the new certificate (`unauthorized`), the device goes
    /// back to DPS and registers with it, as a real device does (flow 7); when DPS refuses it
    /// too, the device keeps the certificate it had and answers 403 with DPS's error.
    fn deliver_simulated(
        &mut self,
        hub: &str,
        device_id: &str,
        payload: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<DirectMethodResult> {
        let answer = |status: i32, message: String| DirectMethodResult {
            status,
            payload: serde_json::json!({ "message": message }),
        };
        let field = |k: &str| payload.get(k).and_then(serde_json::Value::as_str);
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            return Ok(answer(
                400,
                "the payload names no vault `name` and `version`".into(),
            ));
        };
        let Some(fetched) = self.version(name, version)? else {
            return Ok(answer(404, format!("the vault has no version {name}/{version}")));
        };
        if !fetched.enabled {
            return Ok(answer(403, format!("vault version {name}/{version} is disabled")));
        }
        let tp = crate::pki::sha1_thumbprint(&fetched.cert_der);
        if let Some(want) = field("thumbprint")
            && !want.eq_ignore_ascii_case(&tp)
        {
            return Ok(answer(
                400,
                format!("vault version {name}/{version} has thumbprint {tp}, not {want}"),
            ));
        }
        let before = self
            .device(device_id)?
            .ok_or_else(|| BackendError::NotFound(format!("simulated device `{device_id}`")))?;
        let installed = DeviceRecord {
            cert_name: name.to_string(),
            installed_version: Some(version.to_string()),
            ..before.clone()
        };
        self.install(std::slice::from_ref(&installed))?;
        if self.authenticate(hub, device_id, &fetched.cert_der, now)?.is_ok() {
            return Ok(DirectMethodResult {
                status: 200,
                payload: serde_json::json!({ "installed": { "name": name, "version": version, "thumbprint": tp } }),
            });
        }
        let request = RegistrationRequest {
            registration_id: device_id.to_string(),
            chain: self.presented_chain(fetched)?,
        };
        self.register(std::slice::from_ref(&request), now)?;
        let state = self
            .registration(device_id)?
            .ok_or_else(|| BackendError::NotFound(format!("registration state of `{device_id}`")))?;
        if state.status != "assigned" {
            self.install(std::slice::from_ref(&before))?;
            return Ok(DirectMethodResult {
                status: 403,
                payload: super::wire::registration_json(&state),
            });
        }
        Ok(DirectMethodResult {
            status: 200,
            payload: super::wire::registration_json(&state),
        })
    }
}

impl HubRegistry for LocalBackend {
    fn invoke_method(
        &mut self,
        hub: &str,
        device_id: &str,
        call: &DirectMethodCall,
        now: OffsetDateTime,
    ) -> Result<DirectMethodResult> {
        let remote = |code: &str, message: String| BackendError::Remote {
            service: "IoT Hub",
            operation: format!("invoke direct method `{}`", call.method_name),
            target: device_id.to_string(),
            status: Some(404),
            code: code.to_string(),
            message,
        };
        if self.identity(hub, device_id)?.is_none() {
            return Err(remote("DeviceNotFound", device_id.to_string()));
        }
        let Some(chain) = self.online_chain(hub, device_id, now)? else {
            return Err(remote(
                "DeviceNotOnline",
                format!("device '{device_id}' is not online"),
            ));
        };
        // The simulated device knows two methods: `reprovision` registers again with the
        // certificate it holds (200 and the registration state when assigned, 403 with DPS's
        // error when refused); and a delivery (`certroll-deliver`, or whatever name a plan's
        // `method` gives it: any method whose payload names a vault `name` and `version`)
        // fetches and installs that version (see `deliver_simulated`).
        let is_delivery = call.method_name == crate::plan::DEFAULT_DELIVERY_METHOD
            || (call.payload.get("name").is_some() && call.payload.get("version").is_some());
        if call.method_name != "reprovision" && is_delivery {
            return self.deliver_simulated(hub, device_id, &call.payload, now);
        }
        if call.method_name != "reprovision" {
            return Ok(DirectMethodResult {
                status: 501,
                payload: serde_json::json!({
                    "message": format!("device '{device_id}' has no method '{}'", call.method_name)
                }),
            });
        }
        let request = RegistrationRequest {
            registration_id: device_id.to_string(),
            chain,
        };
        self.register(std::slice::from_ref(&request), now)?;
        let state = self
            .registration(device_id)?
            .ok_or_else(|| BackendError::NotFound(format!("registration state of `{device_id}`")))?;
        Ok(DirectMethodResult {
            status: if state.status == "assigned" { 200 } else { 403 },
            // The device answers with what DPS told it, in DPS's own shape.
            payload: super::wire::registration_json(&state),
        })
    }

    fn delete_identity(&mut self, hub: &str, device_id: &str) -> Result<()> {
        let out = self.store.write(|tx, _| q::hub_delete(tx, hub, device_id));
        out.map_err(|e| self.with_path(e))
    }

    fn update_identity(&mut self, identity: &HubIdentity, now: OffsetDateTime) -> Result<()> {
        if self.identity(&identity.hub, &identity.device_id)?.is_none() {
            return Err(BackendError::NotFound(format!(
                "device `{}` in hub `{}`",
                identity.device_id, identity.hub
            )));
        }
        let out = self.store.write(|tx, _| q::hub_put(tx, identity, false, now));
        out.map_err(|e| self.with_path(e))
    }

    fn update_identities(&mut self, batch: &[HubIdentity], now: OffsetDateTime) -> Result<()> {
        let out = self
            .store
            .write(|tx, _| batch.iter().try_for_each(|h| q::hub_put(tx, h, false, now)));
        out.map_err(|e| self.with_path(e))
    }

    fn identity_many(&self, wanted: &[(String, String)]) -> Result<Vec<Option<HubIdentity>>> {
        read!(self, q::hub_get_pairs(self.store.conn(), wanted))
    }

    fn identity(&self, hub: &str, device_id: &str) -> Result<Option<HubIdentity>> {
        read!(self, q::hub_get(self.store.conn(), hub, device_id))
    }
}

impl Fleet for LocalBackend {
    fn device_many(&self, ids: &[String]) -> Result<Vec<Option<DeviceRecord>>> {
        read!(self, q::device_get_many(self.store.conn(), ids))
    }

    fn first_unissued(&self, ids: &[String]) -> Result<Option<String>> {
        read!(self, q::device_first_unissued(self.store.conn(), ids))
    }

    fn first_purged(&self, ids: &[String]) -> Result<Option<String>> {
        read!(self, q::device_first_purged(self.store.conn(), ids))
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>> {
        read!(self, q::device_get(self.store.conn(), id))
    }

    fn devices_page(&self, group: Option<&str>, after: &str, limit: usize) -> Result<Vec<DeviceRecord>> {
        read!(self, q::device_page(self.store.conn(), group, after, limit))
    }

    fn install(&mut self, batch: &[DeviceRecord]) -> Result<()> {
        let out = self
            .store
            .write(|tx, _| batch.iter().try_for_each(|d| q::device_put(tx, d)));
        out.map_err(|e| self.with_path(e))
    }

    fn devices_under(
        &self,
        issuers: &[(String, String)],
        groups: Option<&[String]>,
        limit: usize,
    ) -> Result<(u64, Vec<String>)> {
        read!(self, q::devices_under(self.store.conn(), issuers, groups, limit))
    }
}

impl Journal for LocalBackend {
    fn open_run(&self, command: &str) -> Result<Option<JournalRun>> {
        read!(
            self,
            crate::store::queries_journal::last_run(self.store.conn(), command, false)
        )
    }

    fn finished_run(&self, command: &str) -> Result<Option<JournalRun>> {
        read!(
            self,
            crate::store::queries_journal::last_run(self.store.conn(), command, true)
        )
    }

    fn open_runs(&self) -> Result<Vec<JournalRun>> {
        read!(self, crate::store::queries_journal::open_runs(self.store.conn()))
    }

    fn start_run(&mut self, command: &str, steps: &[JournalStep], now: OffsetDateTime) -> Result<i64> {
        let out = self
            .store
            .write(|tx, _| crate::store::queries_journal::start(tx, command, steps, now));
        out.map_err(|e| self.with_path(e))
    }

    fn step_done(
        &mut self,
        run: i64,
        seq: u32,
        result: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<()> {
        let out = self
            .store
            .write(|tx, _| crate::store::queries_journal::step_done(tx, run, seq, result, now));
        out.map_err(|e| self.with_path(e))
    }

    fn finish_run(&mut self, run: i64, now: OffsetDateTime) -> Result<()> {
        let out = self
            .store
            .write(|tx, _| crate::store::queries_journal::finish(tx, run, now));
        out.map_err(|e| self.with_path(e))
    }

    fn last_done_step(&self, target: &str, kind: &str) -> Result<Option<JournalStep>> {
        read!(
            self,
            crate::store::queries_journal::last_done_step(self.store.conn(), target, kind)
        )
    }

    fn done_steps(&self, kinds: &[&str]) -> Result<Vec<JournalStep>> {
        read!(
            self,
            crate::store::queries_journal::done_steps(self.store.conn(), kinds)
        )
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        format!("local store {}", self.store.path().display())
    }

    fn assigned_identities(&self, ids: &[String]) -> Result<Vec<Option<HubIdentity>>> {
        read!(self, q::hub_get_assigned(self.store.conn(), ids))
    }

    fn bulk_writes(&mut self, on: bool) {
        match (on, self.checkpointer.take()) {
            (true, None) => match self.store.start_checkpointer() {
                Ok(c) => self.checkpointer = c,
                // The writes checkpoint as they always did.
                Err(e) => tracing::debug!("no checkpoint thread: {e}"),
            },
            (true, running) => self.checkpointer = running,
            (false, Some(c)) => self.store.stop_checkpointer(c),
            (false, None) => {}
        }
    }

    fn unchanged_registrations(&self, ids: &[String], now: OffsetDateTime) -> Result<Vec<Option<Unchanged>>> {
        use rayon::prelude::*;
        let conn = self.store.conn();
        let raw_groups = self.groups()?;
        let cas = self.cas()?;
        let service = decision_inputs::service_digest(&raw_groups, &cas);
        let groups = registration::usable_groups(raw_groups, &cas);
        let any_disabled = read!(self, q::any_disabled_enrollment(conn))?;
        let rows = read!(self, q::settle_rows_many(conn, ids))?;
        // The chain each issuer presents above a leaf (the root left out), read once per issuer;
        // None where it cannot be read, which leaves its devices to the long way.
        let mut above: std::collections::HashMap<(String, String), Option<Vec<Vec<u8>>>> =
            std::collections::HashMap::new();
        // The disabled enrollments holding each leaf, only read when any enrollment is disabled.
        let mut disabled: Vec<Vec<String>> = vec![Vec::new(); ids.len()];
        for (i, row) in rows.iter().enumerate() {
            let Some(row) = row else { continue };
            if let Some(issuer) = &row.issuer
                && !above.contains_key(issuer)
            {
                let chain = self.presented_above(issuer)?;
                above.insert(issuer.clone(), chain);
            }
            if any_disabled {
                let tp = crate::pki::sha1_thumbprint(&row.cert_der);
                disabled[i] = read!(self, q::disabled_enrollments_with(conn, &tp))?;
            }
        }
        Ok(ids
            .par_iter()
            .zip(rows.par_iter())
            .zip(disabled.par_iter())
            .map(|((id, row), disabled)| {
                let row = row.as_ref()?;
                let tail: &[Vec<u8>] = match &row.issuer {
                    Some(issuer) => above.get(issuer)?.as_deref()?,
                    None => &[],
                };
                let inputs = decision_inputs::fingerprint_of(
                    id,
                    std::slice::from_ref(&row.cert_der),
                    tail,
                    row.individual.as_ref(),
                    disabled,
                    &service,
                );
                if row.decision.inputs != inputs {
                    return None;
                }
                let (hub, reprovision) =
                    match recorded_decision(&row.decision, row.individual.as_ref(), &groups, now)? {
                        Decision::Group { hub, reprovision, .. }
                        | Decision::Individual { hub, reprovision, .. } => (hub, reprovision),
                        Decision::Rejected(_) | Decision::Disabled(_) => return None,
                    };
                let leaf_tp = crate::pki::sha1_thumbprint(&row.cert_der);
                if hub != row.decision.hub || row.cert_thumbprint.as_deref() != Some(leaf_tp.as_str()) {
                    return None;
                }
                // As the hub decides it when that is plain (enabled, the leaf's thumbprint in a
                // slot, inside the leaf's validity); anything else goes the long way.
                let lets_in = || {
                    let Some((status, primary, secondary)) = &row.identity else {
                        return false;
                    };
                    *status == Status::Enabled
                        && [primary, secondary]
                            .into_iter()
                            .flatten()
                            .any(|tp| tp.eq_ignore_ascii_case(&leaf_tp))
                        && q::from_ts(row.nbf) <= now
                        && now <= q::from_ts(row.exp)
                };
                (reprovision == "never" || lets_in()).then(|| Unchanged {
                    substatus: row.substatus.clone(),
                    hub,
                })
            })
            .collect())
    }

    fn in_unit(&self) -> bool {
        !self.store.conn().is_autocommit()
    }

    fn begin(&mut self) -> Result<()> {
        self.store.begin_batch().map_err(BackendError::Store)
    }

    fn commit(&mut self) -> Result<()> {
        self.store.commit_batch().map_err(BackendError::Store)
    }

    fn rollback(&mut self) {
        self.store.rollback_batch();
    }
}

#[cfg(test)]
mod tests {
    //! The batched look-ups the rolls use must agree, item for item and in the order asked, with
    //! the one-at-a-time look-ups every backend has (the trait's default batches are built from
    //! those): missing items, duplicates and order included.
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 0:00 UTC);

    fn add_version(b: &mut LocalBackend, name: &str) {
        crate::store::test_support::insert_version(&mut b.store, name, "{}", NOW, 30).unwrap();
    }

    fn identity(hub: &str, id: &str, tp: &str) -> HubIdentity {
        HubIdentity {
            hub: hub.into(),
            device_id: id.into(),
            status: Status::Enabled,
            auth_type: "selfSigned".into(),
            primary_thumbprint: Some(tp.into()),
            secondary_thumbprint: None,
        }
    }

    fn registration(b: &mut LocalBackend, id: &str, status: &str, hub: Option<&str>) {
        let state = RegistrationState {
            registration_id: id.into(),
            status: status.into(),
            substatus: None,
            hub: hub.map(String::from),
            ..Default::default()
        };
        b.store
            .write(|c, _| q::registration_put(c, &state, Some("group"), Some("g"), "AA", NOW))
            .unwrap();
    }

    fn dbg<T: std::fmt::Debug>(v: &T) -> String {
        format!("{v:?}")
    }

    /// As DPS (HTTP 400 400004): no group or individual enrollment with a secondary and no
    /// primary is written; the refusal names it and the store keeps what it held.
    #[test]
    fn a_secondary_without_a_primary_is_refused_and_nothing_is_written() {
        let mut b = LocalBackend::new(Store::open_empty().unwrap());
        let slot = Slot {
            cert_der: vec![1, 2, 3],
            ca_reference: None,
        };
        let mut group = EnrollmentGroup {
            name: "g".into(),
            primary: None,
            secondary: Some(slot),
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: "h".into(),
            foreign: Vec::new(),
            take_back: false,
        };
        let e = b.put_group(&group, NOW).unwrap_err();
        assert!(
            matches!(&e, BackendError::Refused(m) if m.contains("enrollment group `g`") && m.contains("signingCertificates.primary")),
            "{e}"
        );
        assert!(b.group("g").unwrap().is_none(), "nothing written");
        let mut enrollment = IndividualEnrollment {
            registration_id: "d".into(),
            primary: None,
            secondary: Some(vec![4, 5, 6]),
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: "h".into(),
            foreign: Vec::new(),
            take_back: false,
        };
        let e = b.put_individuals(&[enrollment.clone()], NOW).unwrap_err();
        assert!(
            matches!(&e, BackendError::Refused(m) if m.contains("individual enrollment `d`") && m.contains("clientCertificates.primary")),
            "{e}"
        );
        assert!(b.individual("d").unwrap().is_none(), "nothing written");
        // What every writer does first: the lone certificate moves to the primary slot.
        assert!(group.primary_first() && enrollment.primary_first());
        b.put_group(&group, NOW).unwrap();
        b.put_individuals(&[enrollment], NOW).unwrap();
        let held = b.group("g").unwrap().unwrap();
        assert_eq!(held.primary.map(|s| s.cert_der), Some(vec![1, 2, 3]));
        assert!(held.secondary.is_none());
        let held = b.individual("d").unwrap().unwrap();
        assert_eq!(held.primary, Some(vec![4, 5, 6]));
        assert!(held.secondary.is_none());
    }

    #[test]
    fn batched_look_ups_agree_with_single_ones_in_the_order_asked() {
        let mut b = LocalBackend::new(Store::open_empty().unwrap());
        // d0 rolled once (two versions), d2 and d4 issued, d1 known but never issued, d3 unknown.
        add_version(&mut b, "dev-d0");
        add_version(&mut b, "dev-d0");
        add_version(&mut b, "dev-d2");
        add_version(&mut b, "dev-d4");
        let record = |id: &str, installed: bool| DeviceRecord {
            id: id.into(),
            group: Some("g".into()),
            enrollment: None,
            cert_name: format!("dev-{id}"),
            installed_version: installed.then(|| "v".to_string()),
        };
        b.install(&[
            record("d0", true),
            record("d1", false),
            record("d2", true),
            record("d4", true),
        ])
        .unwrap();
        b.put_individuals(
            &[IndividualEnrollment {
                registration_id: "d2".into(),
                primary: None,
                secondary: None,
                status: Status::Disabled,
                reprovision: "migrate".into(),
                hub: "hub-b".into(),
                foreign: Vec::new(),
                take_back: false,
            }],
            NOW,
        )
        .unwrap();
        registration(&mut b, "d0", "assigned", Some("hub-a"));
        registration(&mut b, "d2", "assigned", Some("hub-b"));
        registration(&mut b, "d4", "failed", Some("hub-a"));
        b.update_identities(
            &[
                identity("hub-a", "d0", "A0"),
                identity("hub-b", "d0", "B0"),
                identity("hub-b", "d2", "B2"),
                identity("hub-a", "d4", "A4"),
            ],
            NOW,
        )
        .unwrap();

        let ids: Vec<String> = ["d4", "d3", "d0", "d2", "d1", "d0"].map(String::from).to_vec();
        let one_by_one = |f: &dyn Fn(&str) -> String| ids.iter().map(|id| f(id)).collect::<Vec<_>>();

        assert_eq!(
            b.device_many(&ids).unwrap().iter().map(dbg).collect::<Vec<_>>(),
            one_by_one(&|id| dbg(&b.device(id).unwrap()))
        );
        assert_eq!(
            b.individual_many(&ids)
                .unwrap()
                .iter()
                .map(dbg)
                .collect::<Vec<_>>(),
            one_by_one(&|id| dbg(&b.individual(id).unwrap()))
        );
        assert_eq!(
            b.registration_many(&ids)
                .unwrap()
                .iter()
                .map(dbg)
                .collect::<Vec<_>>(),
            one_by_one(&|id| dbg(&b.registration(id).unwrap()))
        );
        let pairs: Vec<(String, String)> = ["hub-b", "hub-a", "hub-a", "hub-b", "hub-a", "hub-a"]
            .iter()
            .zip(&ids)
            .map(|(h, id)| (h.to_string(), id.clone()))
            .collect();
        assert_eq!(
            b.identity_many(&pairs)
                .unwrap()
                .iter()
                .map(dbg)
                .collect::<Vec<_>>(),
            pairs
                .iter()
                .map(|(h, id)| dbg(&b.identity(h, id).unwrap()))
                .collect::<Vec<_>>()
        );
        // The identity in the hub the registration assigned: d0 in hub-a (not hub-b), d2 in
        // hub-b; d4's last attempt failed but its last success put it in hub-a, where its
        // identity still is; d1 and d3 have none.
        let assigned: Vec<Option<String>> = b
            .assigned_identities(&ids)
            .unwrap()
            .into_iter()
            .map(|h| h.and_then(|h| h.primary_thumbprint))
            .collect();
        let expected = [Some("A4"), None, Some("A0"), Some("B2"), None, Some("A0")];
        assert_eq!(assigned, expected.map(|t| t.map(String::from)));

        let names: Vec<String> = ids.iter().map(|id| format!("dev-{id}")).collect();
        let briefs = b.briefs_many(&names).unwrap();
        let versions = b.versions_many(&names).unwrap();
        for ((name, brief), full) in names.iter().zip(&briefs).zip(&versions) {
            let single: Vec<String> = b.versions(name).unwrap().into_iter().map(|v| v.version).collect();
            assert_eq!(
                brief.iter().map(|v| v.version.clone()).collect::<Vec<_>>(),
                single,
                "{name}"
            );
            assert_eq!(
                full.iter().map(|v| v.version.clone()).collect::<Vec<_>>(),
                single,
                "{name}"
            );
        }
        assert_eq!(briefs[2].len(), 2, "d0 has two versions, oldest first");
        assert_eq!(
            b.current_many(&names)
                .unwrap()
                .iter()
                .map(|v| v.as_ref().map(|v| v.version.clone()))
                .collect::<Vec<_>>(),
            names
                .iter()
                .map(|n| b.current(n).unwrap().map(|v| v.version))
                .collect::<Vec<_>>()
        );

        assert_eq!(b.first_unissued(&ids).unwrap().as_deref(), Some("d3"));
        let issued: Vec<String> = ["d0", "d2", "d4"].map(String::from).to_vec();
        assert_eq!(b.first_unissued(&issued).unwrap(), None);
        assert_eq!(
            b.first_unissued(&["d0".to_string(), "d1".to_string()])
                .unwrap()
                .as_deref(),
            Some("d1")
        );
    }
}
