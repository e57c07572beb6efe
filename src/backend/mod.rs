//! The services certroll keeps consistent, behind traits: the vault, the enrollment service and
//! the hub registry, plus the fleet (what each device holds).
//!
//! `local` implements all four on the embedded store. Remote backends (Azure REST, OpenBao)
//! implement the same traits; the methods take batches so a remote backend can pipeline and the
//! local one can commit many rows per transaction.

pub mod azure;
mod boxed;
pub mod decision_inputs;
pub mod local;
pub mod registration;
pub mod types;
pub mod wire;

use crate::pki::PrivateKey;
use crate::pki::cert::CaSigner;
use time::OffsetDateTime;
use types::*;

/// Errors any backend can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The embedded store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A stored certificate or key is unusable.
    #[error(transparent)]
    Pki(#[from] crate::pki::Error),
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The service refused the request.
    #[error("{0}")]
    Refused(String),
    /// A certificate the request needs (an issuer in a chain) is soft-deleted in the vault: the
    /// message names it and `certroll vault recover`; nothing was changed (exit 2).
    #[error("{0}")]
    Deleted(String),
    /// A remote service answered with an error (or could not be reached): the service's own
    /// status, code and message, with the operation and what it was about.
    #[error("{service} {operation} `{target}` failed: {}{code}: {message}", status.map(|s| format!("HTTP {s} ")).unwrap_or_default())]
    Remote {
        /// `Key Vault`, `DPS`, `IoT Hub`.
        service: &'static str,
        /// What certroll asked for (`import certificate`).
        operation: String,
        /// The certificate, enrollment or device it was about.
        target: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// The service's error code (`Forbidden`, `Conflict`, ...), or the failure kind.
        code: String,
        /// The service's message.
        message: String,
    },
}

/// The briefs of versions read in full (per name, in order).
pub fn briefs_of(names: Vec<Vec<VaultVersion>>) -> Result<Vec<Vec<VersionBrief>>> {
    let mut out = Vec::with_capacity(names.len());
    for versions in names {
        let mut briefs = Vec::with_capacity(versions.len());
        for v in versions {
            let info = crate::pki::CertInfo::from_der(&v.cert_der)?;
            briefs.push(VersionBrief {
                name: v.name,
                version: v.version,
                thumbprint: info.thumbprint,
                enabled: v.enabled,
                nbf: v.nbf,
                exp: v.exp,
                issuer: v.issuer,
            });
        }
        out.push(briefs);
    }
    Ok(out)
}

/// Result of backend calls.
pub type Result<T> = std::result::Result<T, BackendError>;

/// The certificate vault (Key Vault certificates).
pub trait Vault {
    /// The newest version of a certificate, if the name exists.
    fn current(&self, name: &str) -> Result<Option<VaultVersion>>;
    /// The newest versions of several certificates, in the order asked (None where absent).
    fn current_many(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        names.iter().map(|n| self.current(n)).collect()
    }
    /// All versions of a certificate, oldest first.
    fn versions(&self, name: &str) -> Result<Vec<VaultVersion>>;
    /// The versions of several certificates without certificates and keys, oldest first, in
    /// the order asked.
    fn briefs_many(&self, names: &[String]) -> Result<Vec<Vec<VersionBrief>>> {
        briefs_of(self.versions_many(names)?)
    }
    /// All versions of several certificates, oldest first, in the order asked.
    fn versions_many(&self, names: &[String]) -> Result<Vec<Vec<VaultVersion>>> {
        names.iter().map(|n| self.versions(n)).collect()
    }
    /// One version.
    fn version(&self, name: &str, version: &str) -> Result<Option<VaultVersion>>;
    /// The newest versions of several certificates, each with its policy (Key Vault-shaped
    /// JSON, as [`policy`](Self::policy) answers), in the order asked (None where the name has
    /// no issued version or no policy). Key Vault answers both in one request per name.
    fn current_with_policy_many(
        &self,
        names: &[String],
    ) -> Result<Vec<Option<(VaultVersion, serde_json::Value)>>> {
        let mut out = Vec::with_capacity(names.len());
        for (name, current) in names.iter().zip(self.current_many(names)?) {
            out.push(match current {
                Some(v) => self.policy(name)?.map(|p| (v, p)),
                None => None,
            });
        }
        Ok(out)
    }

    /// The versions of a certificate as a listing shows them (no certificates), oldest first;
    /// empty when the name does not exist.
    fn version_stamps(&self, name: &str) -> Result<Vec<VersionStamp>> {
        Ok(self
            .versions(name)?
            .into_iter()
            .map(|v| VersionStamp {
                version: v.version,
                created: v.created,
                exp: v.exp,
            })
            .collect())
    }
    /// Every certificate with an issued version, as the vault's listing shows it, sorted by name.
    /// Key Vault answers 25 a request; the default reads every newest version.
    fn listing(&self) -> Result<Vec<ListedCertificate>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let names = self.names_page(&after, 500)?;
            let Some(last) = names.last().cloned() else {
                return Ok(out);
            };
            for (name, current) in names.iter().zip(self.current_many(&names)?) {
                if let Some(v) = current {
                    out.push(ListedCertificate {
                        name: name.clone(),
                        thumbprint: Some(crate::pki::sha1_thumbprint(&v.cert_der)),
                        enabled: Some(v.enabled),
                        nbf: Some(v.nbf),
                        exp: Some(v.exp),
                    });
                }
            }
            after = last;
        }
    }

    /// Stores new versions in one batch; returns their version ids in order.
    fn create_versions(&mut self, batch: &[NewVersion<'_>], now: OffsetDateTime) -> Result<Vec<String>>;
    /// The private key of a version, for signing inside certroll (CA keys) or for export. The
    /// caller enforces exportability for anything that leaves the process.
    fn private_key(&self, version: &VaultVersion) -> Result<PrivateKey>;
    /// What signs with a CA version's key: the key itself where this vault hands it out, else a
    /// signer whose signatures the vault makes, the key never leaving it (a non-exportable key
    /// in Key Vault). Every path that signs with a CA takes this, never [`private_key`](Self::private_key).
    fn signer(&self, version: &VaultVersion) -> Result<CaSigner>;
    /// Certificate names in order after `after` (a page of at most `limit`).
    fn names_page(&self, after: &str, limit: usize) -> Result<Vec<String>>;
    /// The policy recorded for a certificate name, as Key Vault-shaped JSON.
    fn policy(&self, name: &str) -> Result<Option<serde_json::Value>>;
    /// Replaces the policy of a live certificate (false if the name is not live).
    fn set_policy(&mut self, name: &str, policy_json: &str, now: OffsetDateTime) -> Result<bool>;
    /// Enables or disables a version (a disabled version is not exported and does not sign).
    fn set_enabled(&mut self, version: &VaultVersion, enabled: bool, now: OffsetDateTime) -> Result<()>;
    /// Puts a certificate on the CRL of the CA version that signed it (`issuer` = its vault
    /// name and version); returns false if it was already there.
    fn revoke(
        &mut self,
        issuer: (&str, &str),
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// The number of a CA's last CRL, and what one of its versions has revoked.
    fn revocations(&self, issuer: &str, version: &str) -> Result<(u64, Vec<Revocation>)>;
    /// Whether a serial is on the CRL of a CA version.
    fn is_revoked(&self, issuer: (&str, &str), serial: &str) -> Result<bool> {
        Ok(self
            .revocations(issuer.0, issuer.1)?
            .1
            .iter()
            .any(|r| r.serial == serial))
    }
    /// Takes the next CRL number of a CA (each CRL issued gets its own).
    fn next_crl_number(&mut self, issuer: &str) -> Result<u64>;

    // -------- vault administration (issue 4): tags, soft delete, backup, contacts, issuers,
    // requests for outside CAs. Deleted certificates are invisible to every method above.

    /// Tags of a live certificate (`version` None) or of one version; None if it does not exist.
    fn tags(&self, name: &str, version: Option<&str>) -> Result<Option<Tags>>;
    /// Replaces those tags.
    fn set_tags(&mut self, name: &str, version: Option<&str>, tags: &Tags, now: OffsetDateTime)
    -> Result<()>;
    /// Whether a name is `live`, `deleted` or `pending` (None: free).
    fn name_state(&self, name: &str) -> Result<Option<&'static str>>;
    /// Devices holding a certificate's versions, and certificates it signed.
    fn certificate_users(&self, name: &str) -> Result<CertificateUsers>;
    /// Soft-deletes a live certificate with all its versions (false if it is not live).
    fn delete_certificate(
        &mut self,
        name: &str,
        now: OffsetDateTime,
        purge_at: OffsetDateTime,
    ) -> Result<bool>;
    /// Deleted certificates in name order, or only `name`.
    fn deleted_certificates(&self, name: Option<&str>) -> Result<Vec<DeletedCertificate>>;
    /// Brings a deleted certificate back as it was (false if it is not deleted).
    fn recover_certificate(&mut self, name: &str) -> Result<bool>;
    /// Removes a deleted certificate for good (false if it is not deleted).
    fn purge_certificate(&mut self, name: &str) -> Result<bool>;
    /// Everything about a live certificate, for `vault backup` (None if it is not live).
    fn backup_certificate(&self, name: &str) -> Result<Option<CertificateBackup>>;
    /// Restores a backup under its name, which must be free; a sealed key must belong to this store.
    fn restore_certificate(&mut self, backup: &CertificateBackup) -> Result<()>;
    /// The vault's contacts, if they were ever set.
    fn contacts(&self) -> Result<Option<Vec<String>>>;
    /// Sets the contacts, or (None) removes them.
    fn set_contacts(&mut self, emails: Option<&[String]>) -> Result<()>;
    /// Every issuer object, in name order.
    fn issuers(&self) -> Result<Vec<IssuerConfig>>;
    /// Creates or replaces an issuer object.
    fn put_issuer(&mut self, issuer: &IssuerConfig, now: OffsetDateTime) -> Result<()>;
    /// Removes an issuer object (false if there was none).
    fn delete_issuer(&mut self, name: &str) -> Result<bool>;
    /// Certificates (live, deleted or pending) whose policy names an issuer.
    fn issuer_users(&self, issuer: &str) -> Result<Vec<String>>;
    /// The request of a name waiting for an outside CA.
    fn pending(&self, name: &str) -> Result<Option<PendingCertificate>>;
    /// Every request waiting for an outside CA, in name order.
    fn pending_all(&self) -> Result<Vec<PendingCertificate>>;
    /// Records a request with its key.
    fn put_pending(&mut self, pending: &PendingCertificate, key_pkcs8: &[u8]) -> Result<()>;
    /// The key of a request, for merging. Never leaves the process.
    fn pending_key(&self, name: &str) -> Result<PrivateKey>;
    /// Removes a request (false if there was none).
    fn delete_pending(&mut self, name: &str) -> Result<bool>;
    /// The chain stored with a version (imports and merges; issuer first, may be empty).
    fn stored_chain(&self, name: &str, version: &str) -> Result<Vec<Vec<u8>>>;
    /// Stores the chain that came with a version.
    fn set_stored_chain(&mut self, name: &str, version: &str, chain: &[Vec<u8>]) -> Result<()>;

    // -------- Key Vault's own create operation (issue 12): a vault that makes keys itself.

    /// Key Vault's create: the vault makes the key from the policy (Key Vault-shaped JSON) and,
    /// for issuer `Self`, the self-signed version at once; for `Unknown` or an issuer object, a
    /// request that waits for [`merge_pending`](Self::merge_pending). `Ok(None)`: this vault
    /// leaves the key and certificate to certroll (the local store), which then calls
    /// [`create_versions`](Self::create_versions) or [`put_pending`](Self::put_pending).
    fn create_by_vault(
        &mut self,
        _name: &str,
        _policy_json: &str,
        _now: OffsetDateTime,
    ) -> Result<Option<Created>> {
        Ok(None)
    }

    /// Makes the signed certificate `leaf` (already checked to certify the request's key) a
    /// version of `pending`'s name with the request's key, keeps `chain` (issuer first) beside
    /// it and ends the request; returns the version id. `issuer` is the vault name and version
    /// of the CA version that signed it when that is a plan CA (None for an outside CA),
    /// recorded with the version in the same write.
    fn merge_pending(
        &mut self,
        pending: &PendingCertificate,
        leaf: &[u8],
        chain: &[Vec<u8>],
        issuer: Option<(&str, &str)>,
        now: OffsetDateTime,
    ) -> Result<String> {
        let key = self.pending_key(&pending.name)?;
        let v = self
            .create_versions(&[pending.merged(leaf, key.pkcs8_der(), issuer)], now)?
            .into_iter()
            .next()
            .unwrap_or_default();
        if !chain.is_empty() {
            self.set_stored_chain(&pending.name, &v, chain)?;
        }
        self.delete_pending(&pending.name)?;
        Ok(v)
    }

    /// Whether a new version of a plan CA whose key is not exportable takes its key from the
    /// vault's own create operation ([`create_by_vault`](Self::create_by_vault), issuer
    /// `Unknown`): certroll builds the certificate over the request's CSR and merges it, so the
    /// key never exists outside the vault (Key Vault, where an HSM key comes only from the vault).
    /// False: certroll makes the key and the vault keeps it ([`create_versions`](Self::create_versions);
    /// the local store, which seals every key).
    fn makes_own_keys(&self) -> bool {
        false
    }

    /// The key holder of a root whose key is not exportable, on a vault that makes such keys
    /// itself ([`makes_own_keys`](Self::makes_own_keys)): a completed self-signed version the
    /// vault made under the policy `make` (issuer `Self`, key not exportable, the root's key usage),
    /// marked so that no listing of versions shows it, whose key then signs the root's
    /// certificate over the same key (a `reuse_key` request). Key Vault refuses to sign with a
    /// pending request's key (403 `KeyDisabled`), so a root cannot certify its key otherwise.
    /// A holder no older than every version of the name (a run cut off after making it) is
    /// returned instead of making another when it is enabled; with `make` None, such a holder
    /// enabled or not (the caller enables it again to finish a request over its key), None when
    /// there is none. `Ok(None)`: this vault makes no key holders.
    fn key_holder(
        &mut self,
        _name: &str,
        _make: Option<&str>,
        _now: OffsetDateTime,
    ) -> Result<Option<VaultVersion>> {
        Ok(None)
    }

    /// Disables every enabled key holder of `name` ([`key_holder`](Self::key_holder)): its root
    /// is signed, and the holder's key signs nothing more under the holder's version.
    fn retire_key_holders(&mut self, _name: &str, _now: OffsetDateTime) -> Result<()> {
        Ok(())
    }

    /// Whether `version` of `name` is one of its key holders ([`key_holder`](Self::key_holder)):
    /// not a version of the CA (its certificate is not a CA's), so no verb enables or exports it.
    fn is_key_holder_version(&self, _name: &str, _version: &str) -> Result<bool> {
        Ok(false)
    }

    /// Marks every version created from now on with `marker` (the journal's run and step,
    /// `RUN/SEQ`; None: no mark), so that the rerun of a step cut off between a remote write
    /// and the local commit finds the versions it made ([`versions_marked`](Self::versions_marked))
    /// instead of making more. The local store commits a version with its step: no mark needed.
    fn mark_new_versions(&mut self, _marker: Option<&str>) {}

    /// The newest version of each name that carries the current mark, in the order asked (None
    /// where none does, or no mark is set).
    fn versions_marked(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        Ok(vec![None; names.len()])
    }

    /// Key Vault's backup of a certificate with all its versions: an opaque blob only the
    /// same vault service restores (`Ok(None)`: this vault backs up through
    /// [`backup_certificate`](Self::backup_certificate) instead; also None when the name is not live).
    fn backup_blob(&self, _name: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Restores a [`backup_blob`](Self::backup_blob) under its name, which must be free; returns
    /// the name (`Ok(None)`: this vault takes no blobs).
    fn restore_blob(&mut self, _blob: &[u8]) -> Result<Option<String>> {
        Ok(None)
    }
}

/// What [`Vault::create_by_vault`] made.
#[derive(Debug, Clone)]
pub enum Created {
    /// A version (issuer `Self`), by id.
    Version(String),
    /// A request waiting for an outside CA.
    Pending(PendingCertificate),
}

/// The enrollment service (Device Provisioning Service).
pub trait EnrollmentService {
    /// A CA certificate held by the service.
    fn ca(&self, name: &str) -> Result<Option<ServiceCa>>;
    /// All CA certificates held by the service.
    fn cas(&self) -> Result<Vec<ServiceCa>>;
    /// Uploads a CA certificate (unverified until proof of possession).
    fn upload_ca(&mut self, name: &str, cert_der: &[u8], now: OffsetDateTime) -> Result<()>;
    /// Removes a CA certificate from the service (groups referring to it no longer accept what
    /// chains to it).
    fn delete_ca(&mut self, name: &str) -> Result<()>;
    /// Hands out a proof-of-possession nonce for a CA.
    fn verification_code(&mut self, name: &str, now: OffsetDateTime) -> Result<String>;
    /// Checks a verification certificate (CN = nonce, signed by the CA key) and marks the CA verified.
    fn verify_ca(&mut self, name: &str, verification_cert_der: &[u8], now: OffsetDateTime) -> Result<()>;
    /// One enrollment group.
    fn group(&self, name: &str) -> Result<Option<EnrollmentGroup>>;
    /// All enrollment groups.
    fn groups(&self) -> Result<Vec<EnrollmentGroup>>;
    /// Creates or replaces an enrollment group.
    fn put_group(&mut self, group: &EnrollmentGroup, now: OffsetDateTime) -> Result<()>;
    /// One individual enrollment.
    fn individual(&self, registration_id: &str) -> Result<Option<IndividualEnrollment>>;
    /// Several individual enrollments, in the order asked (None where absent).
    fn individual_many(&self, ids: &[String]) -> Result<Vec<Option<IndividualEnrollment>>> {
        ids.iter().map(|id| self.individual(id)).collect()
    }
    /// All individual enrollments.
    fn individuals(&self) -> Result<Vec<IndividualEnrollment>>;
    /// Creates or replaces individual enrollments in one batch.
    fn put_individuals(&mut self, batch: &[IndividualEnrollment], now: OffsetDateTime) -> Result<()>;
    /// [`put_individuals`](Self::put_individuals) of `batch` and, beside it,
    /// [`individual_many`](Self::individual_many) of `ahead`: the enrollments of a later chunk
    /// of the same roll, none of them in `batch` (the caller sees to that), so neither depends
    /// on the other. A roll reads its next chunk while it writes this one: over a network the
    /// reads then cost no time of their own. Returns (the write's result, the read's). The
    /// default writes, then reads.
    fn put_individuals_reading(
        &mut self,
        batch: &[IndividualEnrollment],
        now: OffsetDateTime,
        ahead: &[String],
    ) -> (Result<()>, Result<Vec<Option<IndividualEnrollment>>>) {
        let written = self.put_individuals(batch, now);
        (written, self.individual_many(ahead))
    }
    /// For each of `ids`, whether this process's last write of its individual enrollment, made
    /// enabled, kept it disabled because another client of the service had disabled it meanwhile
    /// (a write keeps a status another client set; DPS: the bulk write's etag or the re-read
    /// after its 412 showed it): the write carries what a roll needs to know, with no read of its
    /// own. The default finds none: the local store has no other client, so nothing it holds
    /// changes between a roll's read and its write.
    fn individuals_kept_disabled(&self, ids: &[String]) -> Vec<bool> {
        vec![false; ids.len()]
    }
    /// Devices present their certificates; the service decides, records the registration state
    /// and assigns each accepted device to its hub (creating or updating the hub identity).
    fn register(
        &mut self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>>;
    /// What `register` would decide for each request, without recording anything: the hub it
    /// would assign to, or why it would refuse.
    fn preview_register(
        &self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<std::result::Result<Assignment, String>>>;
    /// The registration state of a device.
    fn registration(&self, registration_id: &str) -> Result<Option<RegistrationState>>;
    /// The registration states of several devices, in the order asked (None where absent).
    fn registration_many(&self, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        ids.iter().map(|id| self.registration(id)).collect()
    }
    /// The registration states of several devices the plan puts in enrollment group `group`, in
    /// the order asked (None where absent): as [`registration_many`](Self::registration_many),
    /// for a service that lists a group's registrations (DPS: a query, in pages) cheaper than it
    /// reads one device at a time. `never_registered[i]` says the caller knows device `ids[i]`
    /// holds no registration certroll could have caused (it never issued the device a
    /// certificate): a device the listing lacks is then absent without a read of its own.
    fn group_registration_many(
        &self,
        _group: &str,
        ids: &[String],
        _never_registered: &[bool],
    ) -> Result<Vec<Option<RegistrationState>>> {
        self.registration_many(ids)
    }
    /// Every registration enrollment group `group` holds (the last assignment through it of
    /// each device, whoever issued the device its certificate), in registration id order: DPS
    /// lists them with its registration query, in pages; empty when the group is gone. The
    /// default lists none: a service only certroll writes holds no device the plan does not name.
    fn group_registrations_all(&self, _group: &str) -> Result<Vec<RegistrationState>> {
        Ok(Vec::new())
    }
    /// The registration state each device's individual enrollment carried when this process
    /// last read it (a GET of an enrollment sends its device's `registrationState`, the record
    /// `GET /registrations/ID` answers), in the order asked; `None` where no read of this
    /// process showed one (the device is read on its own: DPS's enrollment query leaves the
    /// state out even for a registered device, Azure/azure-iot-sdk-csharp#3478, so a record
    /// without one proves nothing; the default: a service whose enrollments carry no state).
    fn carried_registrations(&self, ids: &[String]) -> Vec<Option<RegistrationState>> {
        vec![None; ids.len()]
    }
    /// The hub each device's last successful registration assigned it to (None: never
    /// assigned), in the order asked: the `hub` of [`registration_many`](Self::registration_many)
    /// unless the service knows it from what it read already (DPS: the registration state an
    /// individual enrollment just read carries).
    fn assigned_hubs(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
        Ok(self
            .registration_many(ids)?
            .into_iter()
            .map(|r| r.and_then(|r| r.hub))
            .collect())
    }
    /// The hub each of several devices the plan puts in enrollment group `group` was last
    /// assigned to (None: never assigned), in the order asked: the `hub` of
    /// [`group_registration_many`](Self::group_registration_many) (`never_registered` as there),
    /// unless the service can tell from what it read already that a device the group's listing
    /// lacks was assigned by no enrollment (DPS: the group's listing was read, and a read of this
    /// process found no individual enrollment of the device). Only the hub: a device refused on
    /// its first attempt, which no listing shows, was assigned nowhere either.
    fn group_assigned_hubs(
        &self,
        group: &str,
        ids: &[String],
        never_registered: &[bool],
    ) -> Result<Vec<Option<String>>> {
        Ok(self
            .group_registration_many(group, ids, never_registered)?
            .into_iter()
            .map(|r| r.and_then(|r| r.hub))
            .collect())
    }
}

/// The hub registry (IoT Hub device identities).
pub trait HubRegistry {
    /// A device identity.
    fn identity(&self, hub: &str, device_id: &str) -> Result<Option<HubIdentity>>;
    /// The identities of several devices, each in the hub given with it (None where absent).
    fn identity_many(&self, wanted: &[(String, String)]) -> Result<Vec<Option<HubIdentity>>> {
        wanted.iter().map(|(hub, id)| self.identity(hub, id)).collect()
    }
    /// Removes a device identity.
    fn delete_identity(&mut self, hub: &str, device_id: &str) -> Result<()>;
    /// Updates a device identity's thumbprints or status (the identity must exist).
    fn update_identity(&mut self, identity: &HubIdentity, now: OffsetDateTime) -> Result<()>;
    /// Updates several identities in one batch.
    fn update_identities(&mut self, batch: &[HubIdentity], now: OffsetDateTime) -> Result<()> {
        batch.iter().try_for_each(|i| self.update_identity(i, now))
    }
    /// [`update_identities`](Self::update_identities) of `batch` and, beside it,
    /// [`identity_many`](Self::identity_many) of `ahead` (hub, device id): identities of a later
    /// chunk of the same roll, none of them in `batch`, as
    /// [`EnrollmentService::put_individuals_reading`]. Returns (the write's result, the read's).
    /// The default writes, then reads.
    fn update_identities_reading(
        &mut self,
        batch: &[HubIdentity],
        now: OffsetDateTime,
        ahead: &[(String, String)],
    ) -> (Result<()>, Result<Vec<Option<HubIdentity>>>) {
        let written = self.update_identities(batch, now);
        (written, self.identity_many(ahead))
    }
    /// For each of `ids`, the hub whose identity of the device this process last read or wrote
    /// disabled (None: enabled, or not read): an update keeps a status another client of the
    /// hub set, so what a roll wrote tells it, with no request of its own, which of its devices
    /// the hub refuses. The default finds none: the local store has no other client, and the
    /// identity it holds disabled is certroll's revoke, whose device no roll writes.
    fn identities_seen_disabled(&self, ids: &[String]) -> Vec<Option<String>> {
        vec![None; ids.len()]
    }
    /// Invokes a direct method on a device through `hub` and returns the device's answer. A
    /// device the hub does not know fails with `BackendError::Remote` code `DeviceNotFound`, one
    /// that is not connected with `DeviceNotOnline` (both HTTP 404, as IoT Hub answers); the
    /// device's own refusal is an `Ok` answer with its status. `now` is the time the local
    /// backend's simulated devices act at (a real hub uses its own clock).
    fn invoke_method(
        &mut self,
        hub: &str,
        device_id: &str,
        call: &DirectMethodCall,
        now: OffsetDateTime,
    ) -> Result<DirectMethodResult>;
    /// Invokes several direct methods, each `(hub, device id, call)`, up to `concurrency` awaited
    /// at once; one answer per call, in the order given, each as
    /// [`invoke_method`](Self::invoke_method) gives it. A remote hub keeps a device's answer
    /// waiting up to the call's `response_timeout_secs`, so a fleet's calls one after another
    /// would add those waits up. The default invokes them one at a time.
    fn invoke_methods(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        now: OffsetDateTime,
    ) -> Vec<Result<DirectMethodResult>> {
        let _ = concurrency;
        calls
            .iter()
            .map(|(hub, id, call)| self.invoke_method(hub, id, call, now))
            .collect()
    }
    /// As [`invoke_methods`](Self::invoke_methods), handing each answer to `each` with its
    /// call's place in `calls` as soon as it is in, in whichever order they come: a caller can
    /// act on the first answers (settle what a device took) while later calls still wait for
    /// their devices. The default invokes them one at a time, in order.
    fn invoke_methods_each(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        now: OffsetDateTime,
        each: &mut dyn FnMut(usize, Result<DirectMethodResult>),
    ) {
        let _ = concurrency;
        for (i, (hub, id, call)) in calls.iter().enumerate() {
            each(i, self.invoke_method(hub, id, call, now));
        }
    }
    /// Whether the hub lets a device in with this certificate: the identity exists, is enabled,
    /// and one of its thumbprints (SHA-1 or SHA-256) is the certificate's; and the certificate is
    /// valid at `now`.
    /// `Err(reason)` is the hub's `unauthorized`.
    fn authenticate(
        &self,
        hub: &str,
        device_id: &str,
        cert_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<std::result::Result<(), String>> {
        let Some(identity) = self.identity(hub, device_id)? else {
            return Ok(Err(format!(
                "device `{device_id}` has no identity in hub `{hub}`"
            )));
        };
        if identity.status != Status::Enabled {
            return Ok(Err(format!("device `{device_id}` is disabled in hub `{hub}`")));
        }
        let info = crate::pki::CertInfo::from_der(cert_der)?;
        if let Some(problem) = info.validity_problem(now) {
            return Ok(Err(problem));
        }
        let known = [&identity.primary_thumbprint, &identity.secondary_thumbprint]
            .into_iter()
            .flatten()
            // IoT Hub takes a SHA-1 or a SHA-256 thumbprint, without regard to case.
            .any(|tp| tp.eq_ignore_ascii_case(&info.thumbprint) || tp.eq_ignore_ascii_case(&info.sha256));
        Ok(if known {
            Ok(())
        } else {
            Err(format!(
                "thumbprint {} is not registered for `{device_id}`",
                info.thumbprint
            ))
        })
    }
}

/// What each device holds. For the local backend the devices are simulated in the store; for a
/// real fleet this is the record of what certroll delivered.
pub trait Fleet {
    /// One device.
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>>;
    /// Several devices, in the order asked (None where absent).
    fn device_many(&self, ids: &[String]) -> Result<Vec<Option<DeviceRecord>>> {
        ids.iter().map(|id| self.device(id)).collect()
    }
    /// The first of these devices that has no certificate installed (never issued), if any.
    fn first_unissued(&self, ids: &[String]) -> Result<Option<String>> {
        Ok(ids
            .iter()
            .zip(self.device_many(ids)?)
            .find(|(_, d)| d.as_ref().and_then(|d| d.installed_version.as_ref()).is_none())
            .map(|(id, _)| id.clone()))
    }
    /// The first of these devices that has a certificate installed whose vault certificate has
    /// no version (purged, or soft-deleted), if any. A backend that cannot tell without reading
    /// every certificate remotely answers `None`, and the roll finds the device in its step.
    fn first_purged(&self, _ids: &[String]) -> Result<Option<String>> {
        Ok(None)
    }
    /// Devices in id order after `after`, optionally of one group.
    fn devices_page(&self, group: Option<&str>, after: &str, limit: usize) -> Result<Vec<DeviceRecord>>;
    /// Records devices and the versions installed on them, in one batch.
    fn install(&mut self, batch: &[DeviceRecord]) -> Result<()>;
    /// The devices holding a certificate signed by any of these CA versions (`(vault name,
    /// version)` pairs), revoked devices left out: how many, and the first `limit` ids in id
    /// order.
    fn devices_under(
        &self,
        issuers: &[(String, String)],
        groups: Option<&[String]>,
        limit: usize,
    ) -> Result<(u64, Vec<String>)>;
}

/// The journal of mutating runs: steps are recorded before they are carried out, and each is
/// marked done in the same unit of work as its changes.
pub trait Journal {
    /// The newest run of `command` that is still open (killed or failed part-way).
    fn open_run(&self, command: &str) -> Result<Option<JournalRun>>;
    /// The newest finished run of `command`.
    fn finished_run(&self, command: &str) -> Result<Option<JournalRun>>;
    /// Every run still open (killed or failed part-way), oldest first, with its steps: what
    /// `check` reports as unfinished.
    fn open_runs(&self) -> Result<Vec<JournalRun>>;
    /// Records a run and its planned steps; returns the run's number.
    fn start_run(&mut self, command: &str, steps: &[JournalStep], now: OffsetDateTime) -> Result<i64>;
    /// Marks a step done (call inside the step's unit of work).
    fn step_done(
        &mut self,
        run: i64,
        seq: u32,
        result: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<()>;
    /// Closes a run.
    fn finish_run(&mut self, run: i64, now: OffsetDateTime) -> Result<()>;
    /// The newest done step of `kind` for `target` in a finished run.
    fn last_done_step(&self, target: &str, kind: &str) -> Result<Option<JournalStep>>;
    /// Every done step of `kinds` in a finished run, oldest run first, in one read.
    fn done_steps(&self, kinds: &[&str]) -> Result<Vec<JournalStep>>;
}

/// Runs `f` as one unit of work on `backend`: committed if it succeeds, abandoned if it fails,
/// so a crash or an error leaves the unit wholly done or wholly not.
pub fn in_one_unit<T, E: From<BackendError>>(
    backend: &mut dyn Backend,
    f: impl FnOnce(&mut dyn Backend) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    if backend.in_unit() {
        // Already inside a unit (a serve request's): the outer unit commits or abandons all.
        return f(backend);
    }
    backend.begin()?;
    match f(backend) {
        Ok(out) => {
            backend.commit()?;
            Ok(out)
        }
        Err(e) => {
            backend.rollback();
            Err(e)
        }
    }
}

/// Everything a verb works against.
pub trait Backend: Vault + EnrollmentService + HubRegistry + Fleet + Journal + Send {
    /// A short name for messages (`local /path/state.db`).
    fn describe(&self) -> String;

    /// Starts a unit of work: the calls until [`commit`](Self::commit) are applied together (one
    /// transaction in the local store). Remote backends apply each call as it comes.
    fn begin(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether a unit of work is open (units do not nest; [`in_one_unit`] joins an open one).
    fn in_unit(&self) -> bool {
        false
    }

    /// Applies the unit of work.
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }

    /// Commits the open unit, then registers `requests` ([`EnrollmentService::register`]),
    /// returning one state per request. Where the registration is data of the unit (the local
    /// backend: the default) it is made inside the unit and lands with it. Where the new
    /// certificates first have to reach the devices (azure), the unit commits with each
    /// delivery recorded as owed, and the registration delivers them, settling each one the
    /// channel takes, then asks the devices to register: a kill between the commit and the
    /// deliveries leaves them owed, and the next run delivers them
    /// ([`deliver_owed`](Self::deliver_owed)); one before the commit redelivers nothing.
    /// An error before the commit leaves the unit open for the caller to roll back.
    fn commit_then_register(
        &mut self,
        requests: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        let states = if requests.is_empty() {
            Vec::new()
        } else {
            self.register(requests, now)?
        };
        self.commit()?;
        Ok(states)
    }

    /// Abandons the unit of work (what a remote backend already applied stays applied; every
    /// verb is written so that a rerun finishes it).
    fn rollback(&mut self) {}

    /// A long run of chunked writes starts (`true`) or has ended (`false`). A backend may move
    /// its housekeeping off the writing thread meanwhile: the local store checkpoints its
    /// write-ahead log on a thread of its own, so the writes never wait for a disk flush. The
    /// default does nothing.
    fn bulk_writes(&mut self, _on: bool) {}

    /// Whether each device holds the version its fleet record names once
    /// [`Fleet::install`] recorded it. True where the backend installs certificates on its
    /// devices itself (the local backend's simulated devices); false where a certificate reaches
    /// a device through a delivery channel that may not have run (`delivery = "none"`) or
    /// reached it: there what a device holds is read back from what the services saw it
    /// present (see `ops::held_many`).
    fn installs_on_devices(&self) -> bool {
        true
    }

    /// What the services saw of each device, in the order asked: its registration state, and
    /// its identity in the hub that registration assigned it to (see `ops::held_many`). Read as
    /// cheaply as the backend can: on azure, a state the device's individual enrollment read
    /// just carried is not asked for again, and each identity is read once.
    #[allow(clippy::type_complexity)]
    fn registrations_and_identities(
        &self,
        ids: &[String],
    ) -> Result<(Vec<Option<RegistrationState>>, Vec<Option<HubIdentity>>)> {
        let registrations = self.registration_many(ids)?;
        let hubs = registrations
            .iter()
            .map(|r| r.as_ref().and_then(|r| r.hub.clone()));
        let identities = identities_in_hubs(ids, hubs, |wanted| self.identity_many(wanted))?;
        Ok((registrations, identities))
    }

    /// The hub identity of each device in the hub its last successful registration assigned it
    /// to (a later refused attempt keeps that hub), in the order asked (None for a device never
    /// assigned, or without an identity there). A backend whose registration reads are dear may
    /// look in the hub the device's enrollment names first (azure does, and says where that can
    /// differ).
    fn assigned_identities(&self, ids: &[String]) -> Result<Vec<Option<HubIdentity>>> {
        let hubs = self
            .registration_many(ids)?
            .into_iter()
            .map(|r| r.and_then(|r| r.hub));
        identities_in_hubs(ids, hubs, |wanted| self.identity_many(wanted))
    }

    /// What a roll reads of one chunk of devices before it decides: the briefs of each device
    /// certificate's versions (`names`, in order), and of each device (`ids`, in order) its fleet
    /// record, its individual enrollment and the hub identity it is assigned. The reads touch
    /// different services and none depends on another, so a backend may run them at once (the
    /// azure backend reads Key Vault beside DPS and IoT Hub, which are throttled apart: a chunk
    /// whose devices cost DPS a request each no longer idles Key Vault meanwhile). The default
    /// reads them one after the other. `&mut`: so a backend can hand each service's client to a
    /// thread of its own.
    fn chunk_reads(&mut self, names: &[String], ids: &[String]) -> Result<ChunkReads> {
        Ok(ChunkReads {
            versions: self.briefs_many(names)?,
            records: self.device_many(ids)?,
            individuals: self.individual_many(ids)?,
            identities: self.assigned_identities(ids)?,
        })
    }

    /// Names the chunk a later [`chunk_reads`](Self::chunk_reads) will ask for (`names`, `ids`
    /// as it will take them), so a backend may read its remote part beside the writes of the
    /// chunk before it ([`put_individuals_and_identities`](Self::put_individuals_and_identities)):
    /// a roll writes chunk k, then reads chunk k+2, and over a network the reads would otherwise
    /// wait for the writes. A backend that reads ahead hands the answer to `chunk_reads` only
    /// for the same names and ids, and only if no write in between touched one of them; any
    /// other call, and any failure, reads afresh. Replaces an earlier call's names; `None`
    /// forgets them. The default ignores it: a local store reads as fast as it writes.
    fn read_ahead(&mut self, _next: Option<(&[String], &[String])>) {}

    /// Writes individual enrollments ([`EnrollmentService::put_individuals`]) and hub identities
    /// ([`HubRegistry::update_identities`]) of one step, either batch possibly empty. The two
    /// touch different services and neither reads what the other writes, so a backend may run
    /// them at once (the azure backend does: DPS and IoT Hub are throttled apart). The default
    /// writes the enrollments, then the identities.
    fn put_individuals_and_identities(
        &mut self,
        individuals: &[IndividualEnrollment],
        identities: &[HubIdentity],
        now: OffsetDateTime,
    ) -> Result<()> {
        if !individuals.is_empty() {
            self.put_individuals(individuals, now)?;
        }
        if !identities.is_empty() {
            self.update_identities(identities, now)?;
        }
        Ok(())
    }

    /// Waits for the deliveries a backend runs beside the next units' work (azure, during
    /// [`bulk_writes`](Self::bulk_writes)) and records what became of them; call before
    /// reading [`delivery_failure`](Self::delivery_failure) or
    /// [`owed_devices`](Self::owed_devices). Returns the first error a delivery batch met
    /// (what it did not deliver stays owed). The default has none running.
    fn finish_deliveries(&mut self) -> Result<()> {
        Ok(())
    }

    /// Delivers what earlier runs still owe devices through their delivery channel: the new
    /// certificates whose unit committed but whose delivery never ran (the process was killed in
    /// between) or did not reach the device (a hook failed, a device was offline). Each is
    /// delivered once more; one the channel takes is settled, the others stay owed for the next
    /// run. Returns (delivered now, still owed). The default owes nothing: a backend that installs
    /// on its devices itself ([`installs_on_devices`](Self::installs_on_devices)) has no channel.
    fn deliver_owed(&mut self, _now: OffsetDateTime) -> Result<(u64, u64)> {
        Ok((0, 0))
    }

    /// Whether the delivery of vault version `version` to device `id` is still owed (see
    /// [`deliver_owed`](Self::deliver_owed)): recorded when the version was handed out, not yet
    /// taken by the channel. The default owes nothing.
    fn owes_delivery(&self, _id: &str, _version: &str) -> Result<bool> {
        Ok(false)
    }

    /// Every device still owed a delivery (see [`deliver_owed`](Self::deliver_owed)), in id
    /// order: owed the version its fleet record names, through a channel the plan still sets
    /// (not `none`). Read only; what `deliver_owed` would settle as stale is left out. The
    /// default owes nothing.
    fn owed_devices(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The owed deliveries this process's [`deliver_owed`](Self::deliver_owed) held back, each
    /// `(device id, why)`: the device's individual enrollment holds another client's certificate
    /// in place of the one owed, so DPS would refuse it, and still owed now (a breach of the
    /// enrollment in the same run settles it). They stay owed (the delivery resumes once the
    /// operator deals with that certificate) but are not counted by
    /// [`owed_devices`](Self::owed_devices) in this process. The default holds none back.
    fn held_back_deliveries(&self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Why this process's delivery to device `id` did not reach it (a hook that failed, a device
    /// a direct method did not reach): the certificate stays owed. None when it was delivered,
    /// when none was tried, or with `delivery = "none"` (the operator's choice, not a fault).
    fn delivery_failure(&self, _id: &str) -> Option<String> {
        None
    }

    /// The devices a `reprovision` would leave alone, found without deciding anything again:
    /// Some for a device whose registration was assigned with the certificate it holds, from
    /// decision inputs that have not changed since (the fingerprint recorded with the
    /// registration, at a time inside the window it holds for), and whose identity in that hub
    /// plainly lets it in (or whose policy is `never`); None for every other device, which the
    /// caller decides the long way. In the order asked. The default settles none.
    fn unchanged_registrations(
        &self,
        ids: &[String],
        _now: OffsetDateTime,
    ) -> Result<Vec<Option<Unchanged>>> {
        Ok(vec![None; ids.len()])
    }
}

/// A device [`Backend::unchanged_registrations`] settled: what its registration state says.
#[derive(Debug, Clone)]
pub struct Unchanged {
    /// The registration's substatus (initialAssignment, deviceDataMigrated, ...).
    pub substatus: Option<String>,
    /// The hub it is assigned to.
    pub hub: String,
}

/// The error for issuer version `name`/`version` missing from the vault: [`BackendError::Deleted`]
/// naming the certificate and `vault recover` when `deleted` (the vault's deleted certificate of
/// that name) is given, else [`BackendError::NotFound`].
pub fn missing_issuer(
    name: &str,
    version: &str,
    deleted: Option<&types::DeletedCertificate>,
) -> BackendError {
    match deleted {
        Some(d) => BackendError::Deleted(format!(
            "the CA certificate `{name}` in the chain is deleted in the vault (deleted {}, purged for good on {}); \
             bring it back with `certroll vault recover {name}`. Nothing was changed",
            crate::clock::rfc3339(d.deleted),
            crate::clock::rfc3339(d.scheduled_purge)
        )),
        None => BackendError::NotFound(format!("issuer version {name}/{version}")),
    }
}

/// What [`Backend::chunk_reads`] read of a chunk of devices, each in the order asked.
#[derive(Debug)]
pub struct ChunkReads {
    /// The briefs of each device certificate's versions, oldest first.
    pub versions: Vec<Vec<VersionBrief>>,
    /// Each device's fleet record (None: never issued).
    pub records: Vec<Option<DeviceRecord>>,
    /// Each device's individual enrollment (None: none).
    pub individuals: Vec<Option<IndividualEnrollment>>,
    /// Each device's identity in the hub it is assigned to (None: not assigned, or none there).
    pub identities: Vec<Option<HubIdentity>>,
}

/// The registration state of each of `ids`, in the order asked: the one `enrollments`' reads
/// carried ([`EnrollmentService::carried_registrations`]), else the one a single `read` of the
/// devices without one returns (in the order it is given them).
pub(crate) fn carried_or_read<E: EnrollmentService + ?Sized>(
    enrollments: &E,
    ids: &[String],
    read: impl FnOnce(&[String]) -> Result<Vec<Option<RegistrationState>>>,
) -> Result<Vec<Option<RegistrationState>>> {
    let carried = enrollments
        .carried_registrations(ids)
        .into_iter()
        .map(|c| c.map(Some))
        .collect();
    known_or_read(ids, carried, read)
}

/// What each of `ids` has, in the order asked: what `known` already holds for it (`Some`), else
/// what a single `read` of the devices without it returns (in the order it is given them; the
/// default where it returns too few).
pub(crate) fn known_or_read<T: Default>(
    ids: &[String],
    known: Vec<Option<T>>,
    read: impl FnOnce(&[String]) -> Result<Vec<T>>,
) -> Result<Vec<T>> {
    let rest: Vec<String> = ids
        .iter()
        .zip(&known)
        .filter(|(_, k)| k.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let mut read = read(&rest)?.into_iter();
    Ok(known
        .into_iter()
        .map(|k| k.unwrap_or_else(|| read.next().unwrap_or_default()))
        .collect())
}

/// The hub identity of each device in the hub given beside it (`hubs`, in the order of `ids`;
/// None: no hub, so no identity), read with one `read` of the (hub, device id) pairs that have
/// a hub, in the order asked.
pub(crate) fn identities_in_hubs(
    ids: &[String],
    hubs: impl IntoIterator<Item = Option<String>>,
    read: impl FnOnce(&[(String, String)]) -> Result<Vec<Option<HubIdentity>>>,
) -> Result<Vec<Option<HubIdentity>>> {
    let (at, wanted): (Vec<usize>, Vec<(String, String)>) = ids
        .iter()
        .zip(hubs)
        .enumerate()
        .filter_map(|(i, (id, hub))| hub.map(|hub| (i, (hub, id.clone()))))
        .unzip();
    let mut out: Vec<Option<HubIdentity>> = vec![None; ids.len()];
    for (i, identity) in at.into_iter().zip(read(&wanted)?) {
        out[i] = identity;
    }
    Ok(out)
}
