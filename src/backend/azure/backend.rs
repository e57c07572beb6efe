//! [`AzureBackend`]: every service a verb works against, on Azure, by composition.
//!
//! On Azure certroll does not hold the devices. Who holds what:
//! - **Vault** = [`AzureVault`] (Key Vault). **EnrollmentService** = the DPS client
//!   ([`AzureEnrollmentService`]), **HubRegistry** = the IoT Hub client ([`AzureHubRegistry`]).
//!   Each call goes to the service as it comes; only Key Vault's answers are kept within a
//!   process, until certroll writes to the name (see [`super::keyvault`]).
//! - **Fleet** and **Journal** stay in the local store beside the plan (the same store
//!   [`AzureVault`] keeps CRL numbers in). The fleet record says which vault version certroll
//!   *handed out* to each device; the journal records each run's steps exactly as on the local
//!   backend, and a unit of work ([`Backend::begin`]..[`Backend::commit`]) is one transaction of
//!   that store, so a step and its "done" mark land together. Remote calls of a unit are applied
//!   as they are made; every verb is written so that its rerun finishes a unit cut off halfway.
//! - **What a device holds** is read back from what the services saw, never assumed: the hub
//!   identity DPS wrote when it last assigned the device names the certificate the device
//!   presented (counted only for a version that existed then: certroll writes hub thumbprints
//!   too), so [`Backend::installs_on_devices`] is false here and `status`/`check` read it
//!   (module `ops::held`); the fleet record's version is the one *issued*.
//!
//! Delivery. The local backend installs a new certificate on its simulated device directly; here
//! it has to reach a real device through the channel the plan names for the device's group or
//! enrollment ([`crate::plan::DeliveryPlan`], module [`super::delivery`]): `direct-method`, `hook`
//! or `none`. The verbs call [`Fleet::install`] and then, when the device must present the new
//! certificate, [`EnrollmentService::register`]; on Azure:
//! - `install` records the fleet record in the local unit and queues a delivery for each device
//!   whose handed-out version changed, recording it as *owed* in the same unit (store table
//!   `owed_deliveries`; `none` owes nothing). One rule on every path: **a unit commits with
//!   what it owes recorded, then delivers**, settling each delivery its channel takes as it
//!   finishes (inside an open unit the settlement is part of the unit, so a unit rolled back
//!   leaves it owed; outside, a small write of its own; those finishing within
//!   [`SETTLE_EVERY`] of each other share one write). A kill after the commit re-delivers at
//!   most what was in flight (taken by a channel, not yet finished, or finished within the last
//!   [`SETTLE_EVERY`]; for the courier's deliveries during a run of units, everything it
//!   finished since the unit being written began, since they settle with that unit's commit,
//!   and a failed commit of that unit leaves them owed too); one cut off before it, or that failed, stays owed and visible
//!   (`status`, `check`, the reports' `deliveries_owed`), and [`Backend::deliver_owed`] (called
//!   by `issue` and the rolls before their own work) delivers it. Hooks run up to
//!   `[backend] delivery_concurrency` at once; direct methods are awaited as many at once. A
//!   unit's own deliveries are made ready on the calling thread (its client keeps what it
//!   imported); owed ones and the courier's read their versions and keys in the pool, each
//!   runner with a Key Vault client of its own ([`Reads`]).
//! - A unit that ends in registrations (`issue`'s) commits and then registers
//!   ([`Backend::commit_then_register`]): `register` delivers first. A unit without them (an
//!   expiry roll's) delivers after [`Backend::commit`]; during a run of chunked writes
//!   ([`Backend::bulk_writes`]) on a thread of its own (the courier, with its own IoT Hub
//!   client and its runners' Key Vault clients, which share the main clients' pacing: the
//!   plan's rates and bounds are what each service sees of the run, deliveries included),
//!   beside the next unit's imports, so a throttled Key Vault never idles the delivery channel
//!   nor the channel the imports. What
//!   the courier delivered is told to the backend as each finishes and settled at the next
//!   unit's edge (the store has one writer, the unit under way): at `begin` on its own, before
//!   a `commit` inside that unit; and as each comes while [`Backend::finish_deliveries`] (or
//!   the drop) waits for the rest.
//! - `register` becomes: deliver what is queued, ask each device to register again (direct method
//!   `[backend] reprovision_method`, up to `delivery_concurrency` awaited at once; a device the
//!   hub does not know or that is offline registers by itself when it next starts), then read the
//!   registration states back from DPS. A device
//!   counts as registered only when its state is `assigned` *with the new certificate*; otherwise
//!   the answer is a state `waiting` whose error says what happened (the delivery's outcome, the
//!   device's own answer, or the state DPS shows), which the verbs report per device.
//!   A device counts as registered with its new certificate only on fresh evidence: DPS's
//!   record changed in this call, or the device answered the reprovision method with 200.
//! - **The exception: units that re-provision devices inside a roll** (a device's breach, a
//!   CA breach's replacements) deliver, register and update the hub *before* they commit. A hub
//!   identity update that would shut out the certificate a device connects with now (a breach
//!   drops the compromised thumbprint) is held back until the unit's deliveries ran, so the
//!   direct method still reaches the device; then the hub holds only the new thumbprint, and
//!   after the registration the roll takes the compromised thumbprint out of a hub the `never`
//!   policy left alone. Nothing but the journal step itself records that these hub updates are
//!   still to come: a step marked done before them would lose a leaked key's removal to a kill
//!   after the commit. So the step stays open until they landed, and a kill re-runs it, which
//!   re-delivers at most that unit (one device for a device's breach).
//! - A delivery that does not happen (a hook failing, a device refusing or unreachable, `none`)
//!   never undoes the unit: the certificate is in the vault and the enrollment, the old one keeps
//!   working, and the outcome is logged (`tracing` warn) and reported by `register`. `none`
//!   waits for the operator: `certroll export device:ID` hands out the vault's current version.
//! - `preview_register` is the DPS client's (the registration decision over what DPS holds).

use super::delivery::{self, Parcel};
use super::{AzureEnrollmentService, AzureHubRegistry, AzureVault, SetupError};
use crate::backend::local::LocalBackend;
use crate::backend::types::*;
use crate::backend::{Backend, BackendError, EnrollmentService, Fleet, HubRegistry, Journal, Result, Vault};
use crate::pki::PrivateKey;
use crate::plan::{Delivery, DeliveryPlan, Plan};
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// What became of one device's delivery in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handed over (how).
    Delivered(String),
    /// Not handed over (why): the certificate waits.
    Waiting(String),
}

/// How the outcome of a device whose channel is `none` begins: the operator's choice, not a
/// failed delivery.
const LEFT_TO_THE_OPERATOR: &str = "delivery = \"none\"";

/// A delivery made ready by `AzureBackend::prepare`.
enum Prepared {
    /// Nothing leaves certroll (`none`, or no version): the outcome as it stands.
    Done(Outcome),
    /// A hook to run.
    Hook(HookJob),
    /// A direct method to invoke on the device.
    Method {
        /// The method's name.
        method: String,
        /// What the device is told to fetch.
        parcel: Parcel,
    },
}

/// One hook run, for a hook runner thread.
struct HookJob {
    /// The record's place in the batch being flushed.
    at: usize,
    cfg: crate::plan::HookConfig,
    parcel: Parcel,
    /// What goes into the PFX (made by the runner: its key derivation is the slow part): the
    /// key (PKCS#8 DER) and the chain, leaf first. None when the key is not exportable.
    pfx: Option<PfxParts>,
}

/// A PFX's key (PKCS#8 DER) and chain (leaf first), before the PFX is made.
type PfxParts = (zeroize::Zeroizing<Vec<u8>>, Vec<Vec<u8>>);

/// Finds the certificates DPS names only by SHA-1 thumbprint in Key Vault. DPS says whose
/// certificate it is (the enrollment's registration id or the group's name), and certroll keeps
/// what it made under names it knows from the plan (`dev-ID` for a device, `ca-NAME` for a
/// group's signing CA), so those few names are read first; only a certificate certroll did not
/// make needs the index of every version's thumbprint, built on such a miss (one listing of the
/// vault) and rebuilt on a later miss at most [`VaultIndex::MAX_BUILDS`] times per process (a
/// certificate made by another process since).
struct VaultIndex {
    vault: std::sync::Mutex<AzureVault>,
    /// How many times the index was built, and thumbprint → (name, version).
    by_thumbprint: std::sync::Mutex<(usize, ThumbprintIndex)>,
    /// Thumbprints a build of the index did not find: another client's certificate, which every
    /// read of its enrollment or group meets again. Not built for again in this process (a
    /// group holding one cost a listing of every version in the vault at each read).
    missed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// DPS record name (registration id or group name) → the vault names of its certificates.
    hints: HashMap<String, Vec<String>>,
    /// The certificates recorded as issued to the plan's individual enrollments (store table
    /// `issued_versions`) and as purged under the plan's names (`purged_versions`), by SHA-1
    /// thumbprint: a certificate is its own proof, so a slot holding one of them needs no read
    /// of the vault.
    recorded: ThumbprintDer,
    /// The soft-deleted (recoverable) certificates among the hinted names, read once each by
    /// [`VaultIndex::deleted_of`]: name → its versions Key Vault still shows, by thumbprint.
    deleted: std::sync::Mutex<HashMap<String, ThumbprintDer>>,
    /// The versions the store beside the plan recorded of the hinted names when certroll
    /// soft-deleted them (store table `deleted_versions`): name → versions by thumbprint. Key
    /// Vault shows only a deleted certificate's current version; these are the older ones.
    deleted_recorded: HashMap<String, ThumbprintDer>,
}

/// SHA-1 thumbprint (upper-case hex) → certificate (DER).
type ThumbprintDer = HashMap<String, Vec<u8>>;

/// SHA-1 thumbprint (upper-case hex) → (vault name, version).
type ThumbprintIndex = HashMap<String, (String, String)>;

impl VaultIndex {
    const MAX_BUILDS: usize = 3;

    /// The certificates the store beside the plan records as issued to the plan's individual
    /// enrollments, and as purged from the vault under the plan's CA and enrollment names
    /// ([`VaultIndex::recorded`]).
    fn recorded(local: &LocalBackend, plan: &Plan) -> std::result::Result<ThumbprintDer, SetupError> {
        let names: Vec<String> = plan
            .enrollments
            .keys()
            .map(|e| crate::backend::types::device_cert_name(e))
            .collect();
        let conn = local.store().conn();
        let store_error = |e| SetupError::Client(format!("reading the store beside the plan: {e}"));
        let recorded = crate::store::queries_issued::issued_many(conn, &names).map_err(store_error)?;
        // A purged version is still certroll's: the slots and the device may hold it, and the
        // vault can no longer say so (trial az12 F3).
        let purged_names: Vec<String> = plan
            .cas
            .iter()
            .map(|c| crate::backend::types::ca_cert_name(&c.name))
            .chain(names)
            .collect();
        let purged = crate::store::queries_issued::purged_of(conn, &purged_names).map_err(store_error)?;
        Ok(recorded
            .into_iter()
            .flatten()
            .map(|r| r.cert_der)
            .chain(purged)
            .map(|der| (crate::pki::sha1_thumbprint(&der), der))
            .collect())
    }

    /// The versions the store beside the plan recorded of the plan's CA and enrollment
    /// certificates when certroll soft-deleted them ([`VaultIndex::deleted_recorded`]).
    fn deleted_recorded(
        local: &LocalBackend,
        plan: &Plan,
    ) -> std::result::Result<HashMap<String, ThumbprintDer>, SetupError> {
        let names = plan
            .cas
            .iter()
            .map(|c| crate::backend::types::ca_cert_name(&c.name))
            .chain(
                plan.enrollments
                    .keys()
                    .map(|e| crate::backend::types::device_cert_name(e)),
            );
        let mut out = HashMap::new();
        for name in names {
            let versions = crate::store::queries_issued::deleted_of(local.store().conn(), &name)
                .map_err(|e| SetupError::Client(format!("reading the store beside the plan: {e}")))?;
            if !versions.is_empty() {
                let by_thumbprint = versions
                    .into_iter()
                    .map(|v| (crate::pki::sha1_thumbprint(&v.cert_der), v.cert_der))
                    .collect();
                out.insert(name, by_thumbprint);
            }
        }
        Ok(out)
    }

    /// An index over `vault`, with the vault names of the plan's enrollments and groups and the
    /// certificates `recorded` ([`VaultIndex::recorded`]) and `deleted_recorded`
    /// ([`VaultIndex::deleted_recorded`]).
    fn new(
        vault: AzureVault,
        plan: &Plan,
        recorded: ThumbprintDer,
        deleted_recorded: HashMap<String, ThumbprintDer>,
    ) -> VaultIndex {
        // The names `ops` gives what it makes (a layering exception: the index serves DPS
        // reads, which know only DPS's record names).
        let mut hints: HashMap<String, Vec<String>> = HashMap::new();
        for e in plan.enrollments.values() {
            hints.insert(
                e.name.clone(),
                vec![crate::backend::types::device_cert_name(&e.name)],
            );
        }
        for g in plan.groups.values() {
            hints.insert(
                g.name.clone(),
                vec![crate::backend::types::ca_cert_name(&g.signing_ca)],
            );
        }
        VaultIndex {
            vault: std::sync::Mutex::new(vault),
            by_thumbprint: std::sync::Mutex::new((0, HashMap::new())),
            missed: Default::default(),
            hints,
            recorded,
            deleted: Default::default(),
            deleted_recorded,
        }
    }

    /// The certificate of `tp` among the soft-deleted certificates of `names`: certroll's own
    /// (a CA or device certificate `vault delete --force` put in the recycle bin), which
    /// `vault recover` brings back, not another client's (trial az9 G3). Key Vault shows a
    /// deleted certificate's current version only; the older ones are those the store recorded
    /// when certroll deleted it (trial az10), counted while Key Vault shows the name deleted.
    /// Each name is read once a process.
    fn deleted_of(&self, vault: &AzureVault, names: &[String], tp: &str) -> Result<Option<Vec<u8>>> {
        let mut deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        for name in names {
            if !deleted.contains_key(name) {
                let shown = vault.deleted_certificates(Some(name))?;
                let mut versions: ThumbprintDer = shown
                    .iter()
                    .flat_map(|d| &d.versions)
                    .map(|v| (crate::pki::sha1_thumbprint(&v.cert_der), v.cert_der.clone()))
                    .collect();
                if !shown.is_empty()
                    && let Some(recorded) = self.deleted_recorded.get(name)
                {
                    versions.extend(recorded.iter().map(|(tp, der)| (tp.clone(), der.clone())));
                }
                deleted.insert(name.clone(), versions);
            }
            if let Some(der) = deleted[name].get(tp) {
                return Ok(Some(der.clone()));
            }
        }
        Ok(None)
    }

    fn build(vault: &AzureVault) -> Result<ThumbprintIndex> {
        let mut names = Vec::new();
        loop {
            let page = vault.names_page(names.last().map(String::as_str).unwrap_or(""), 500)?;
            if page.is_empty() {
                break;
            }
            names.extend(page);
        }
        let mut out = HashMap::new();
        Self::add(vault, &names, &mut out)?;
        Ok(out)
    }

    /// Adds every version of `names` to `index`.
    fn add(vault: &AzureVault, names: &[String], index: &mut ThumbprintIndex) -> Result<()> {
        for briefs in vault.briefs_many(names)? {
            for b in briefs {
                index.insert(b.thumbprint.to_ascii_uppercase(), (b.name, b.version));
            }
        }
        Ok(())
    }

    /// The certificate of `sha1_thumbprint`: `Ok(None)` when the vault holds none, or when an
    /// earlier build of the index this run did not find it (`missed`: each thumbprint is looked
    /// for among all versions once a run); the vault's error when a read it needed failed and
    /// the certificate was not found otherwise.
    fn lookup(&self, sha1_thumbprint: &str, whose: Option<&str>) -> Result<Option<Vec<u8>>> {
        // The record is fixed at connect: it needs neither lock.
        let tp = sha1_thumbprint.to_ascii_uppercase();
        if let Some(der) = self.recorded.get(&tp) {
            return Ok(Some(der.clone()));
        }
        let vault = self.vault.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.by_thumbprint.lock().unwrap_or_else(|p| p.into_inner());
        // The first read that failed: the cause when the certificate is not found by other means.
        let mut failure = None;
        // A device's own name when the plan does not know it (a registration id is the device
        // id).
        let names = whose.map(|whose| {
            self.hints
                .get(whose)
                .cloned()
                .unwrap_or_else(|| vec![crate::backend::types::device_cert_name(whose)])
        });
        if !index.1.contains_key(&tp)
            && let (Some(whose), Some(names)) = (whose, &names)
            && let Err(e) = Self::add(&vault, names, &mut index.1)
        {
            // A rejected credential (or an untrusted vault) fails every other read the same
            // way: stop at it with one error instead of warning of each read tried next (trial
            // az11 F8: three WARN lines of the same 401 before the error).
            if stops_lookup(&e) {
                return Err(e);
            }
            tracing::warn!("cannot read the vault certificates of `{whose}`: {e}");
            failure = Some(e);
        }
        let mut missed = self.missed.lock().unwrap_or_else(|p| p.into_inner());
        if !index.1.contains_key(&tp) && index.0 < Self::MAX_BUILDS && !missed.contains(&tp) {
            match Self::build(&vault) {
                Ok(map) => {
                    if !map.contains_key(&tp) {
                        missed.insert(tp.clone());
                    }
                    *index = (index.0 + 1, map);
                }
                Err(e) => {
                    if stops_lookup(&e) {
                        return Err(e);
                    }
                    tracing::warn!("cannot index the vault's certificates: {e}");
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some((name, version)) = index.1.get(&tp) {
            return vault.certificate_der(name, version);
        }
        if let Some(names) = &names {
            match self.deleted_of(&vault, names, &tp) {
                Ok(Some(der)) => return Ok(Some(der)),
                Ok(None) => {}
                Err(e) => {
                    if stops_lookup(&e) {
                        return Err(e);
                    }
                    tracing::warn!(
                        "cannot read the vault's deleted certificates of `{}`: {e}",
                        names.join(", ")
                    );
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(None), Err)
    }
}

/// Whether a failed read of the vault fails every other read the same way: Key Vault rejected
/// the credential (401), or the setup is wrong otherwise ([`super::observe::is_setup_failure`]).
fn stops_lookup(error: &BackendError) -> bool {
    matches!(
        error,
        BackendError::Remote {
            status: Some(401),
            ..
        }
    ) || super::observe::is_setup_failure(error)
}

impl super::dps::CertificateSource for VaultIndex {
    fn certificate(&self, sha1_thumbprint: &str) -> Result<Option<Vec<u8>>> {
        self.lookup(sha1_thumbprint, None)
    }

    fn certificate_of(&self, sha1_thumbprint: &str, whose: &str) -> Result<Option<Vec<u8>>> {
        self.lookup(sha1_thumbprint, Some(whose))
    }
}

/// The enrollment service of a plan whose `[backend]` names no `dps` (a vault-only plan): it
/// holds nothing, so every read finds nothing, and every change is refused naming the setting.
struct NoDps;

impl NoDps {
    fn refuse(&self) -> BackendError {
        BackendError::Refused(
            "the plan's [backend] names no `dps = { host, id_scope, ... }`: certroll has no \
             Device Provisioning Service to work with"
                .into(),
        )
    }
}

impl EnrollmentService for NoDps {
    fn ca(&self, _name: &str) -> Result<Option<ServiceCa>> {
        Ok(None)
    }
    fn cas(&self) -> Result<Vec<ServiceCa>> {
        Ok(Vec::new())
    }
    fn upload_ca(&mut self, _name: &str, _cert_der: &[u8], _now: OffsetDateTime) -> Result<()> {
        Err(self.refuse())
    }
    fn delete_ca(&mut self, _name: &str) -> Result<()> {
        Err(self.refuse())
    }
    fn verification_code(&mut self, _name: &str, _now: OffsetDateTime) -> Result<String> {
        Err(self.refuse())
    }
    fn verify_ca(&mut self, _name: &str, _cert: &[u8], _now: OffsetDateTime) -> Result<()> {
        Err(self.refuse())
    }
    fn group(&self, _name: &str) -> Result<Option<EnrollmentGroup>> {
        Ok(None)
    }
    fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        Ok(Vec::new())
    }
    fn put_group(&mut self, _group: &EnrollmentGroup, _now: OffsetDateTime) -> Result<()> {
        Err(self.refuse())
    }
    fn individual(&self, _registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        Ok(None)
    }
    fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        Ok(Vec::new())
    }
    fn put_individuals(&mut self, _batch: &[IndividualEnrollment], _now: OffsetDateTime) -> Result<()> {
        Err(self.refuse())
    }
    fn register(
        &mut self,
        _batch: &[RegistrationRequest],
        _now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        Err(self.refuse())
    }
    fn preview_register(
        &self,
        _batch: &[RegistrationRequest],
        _now: OffsetDateTime,
    ) -> Result<Vec<std::result::Result<Assignment, String>>> {
        Err(self.refuse())
    }
    fn registration(&self, _registration_id: &str) -> Result<Option<RegistrationState>> {
        Ok(None)
    }
}

/// The Azure services, the local fleet record and journal, and the delivery channels.
pub struct AzureBackend {
    vault: AzureVault,
    enrollments: Box<dyn EnrollmentService + Send>,
    hubs: Box<dyn HubRegistry + Send>,
    delivery: DeliveryPlan,
    /// The hub of each group and enrollment, as the plan names it.
    group_hubs: BTreeMap<String, String>,
    /// Which devices the plan puts in each group.
    members: Vec<(String, Members)>,
    enrollment_hubs: BTreeMap<String, String>,
    /// Environment variables a hook must not see.
    secret_vars: Vec<String>,
    /// Installs whose delivery is owed (see the module doc).
    pending: Vec<DeviceRecord>,
    /// Hub identity updates that would shut out the certificate a device connects with now,
    /// held back until the unit's deliveries ran (see the module doc).
    held_cuts: Vec<HubIdentity>,
    /// The last delivery outcome per device, for `register` to report.
    outcomes: HashMap<String, Outcome>,
    /// Owed deliveries this process held back: device id to (version, why)
    /// ([`Backend::held_back_deliveries`]).
    held_owed: BTreeMap<String, (String, String)>,
    /// Devices this process found without a fleet record (certroll never issued them a
    /// certificate) and has neither delivered a certificate to nor asked to register since
    /// ([`reached`](Self::reached)): DPS holds no registration of theirs that certroll caused,
    /// so a group listing that lacks one needs no read of its own to say so (see
    /// [`EnrollmentService::group_registration_many`]).
    never_issued: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Whether a committed unit's deliveries go to the [`Courier`] (during a run of chunked
    /// writes, [`Backend::bulk_writes`]) instead of running before the next unit starts.
    background: bool,
    /// The thread delivering beside the next unit's work, once started.
    courier: Option<Courier>,
    /// Makes the courier's IoT Hub client (None: deliveries run here, or the courier started).
    courier_clients: Option<CourierClients>,
    /// Makes Key Vault clients for the threads that deliver ([`Reads::InPool`]); None: every
    /// delivery reads with the backend's own client (a backend made by
    /// [`from_parts`](Self::from_parts)).
    vault_clients: Option<std::sync::Arc<VaultClients>>,
    /// How many certificates this backend left to the operator (`delivery = "none"`), and the
    /// first device: one warning line says so when the backend is dropped.
    for_the_operator: (u64, Option<String>),
    describe: String,
    /// The chunk [`Backend::read_ahead`] named, and once the writes before it ran, what they
    /// read of it.
    ahead: Option<Ahead>,
}

/// A later chunk's reads, made beside the writes of the chunk before it
/// ([`Backend::read_ahead`]), for [`Backend::chunk_reads`] of the same names and ids.
struct Ahead {
    names: Vec<String>,
    ids: Vec<String>,
    read: Option<ReadAhead>,
}

/// What was read ahead of a chunk: the parts of [`crate::backend::ChunkReads`] that go over the
/// network. The fleet records are read again when the chunk is taken (they are local), and the
/// hubs the identities were looked in must be those the records name then.
struct ReadAhead {
    named: Vec<Option<String>>,
    versions: Vec<Vec<VersionBrief>>,
    individuals: Vec<Option<IndividualEnrollment>>,
    found: Vec<Option<HubIdentity>>,
}

/// Writes of settled deliveries this process made ([`settle_in`]), for measurements.
static SETTLE_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Settles delivered `(device id, version)` rows in the store beside the plan: in the unit when
/// one is open, else a small write of its own (none for no rows).
fn settle_in(local: &LocalBackend, rows: &[(String, Option<String>)]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    SETTLE_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    local.settle_deliveries(rows)
}

/// Makes the IoT Hub client a [`Courier`] invokes direct methods with, sharing the pacing of
/// the backend's hub client (its Key Vault clients are the runners' own, [`Reads::InPool`]:
/// the backend's is busy with the next unit's imports).
type CourierClients =
    Box<dyn FnOnce() -> std::result::Result<Box<dyn HubRegistry + Send>, SetupError> + Send>;

/// What the [`Courier`] tells the backend, in the order it happens.
enum CourierNews {
    /// Deliveries its channels took: `(device id, version)` to settle.
    Settle(Vec<(String, Option<String>)>),
    /// A batch is done: every outcome, for the report (what it took was in `Settle` before).
    Batch(Delivered),
}

/// A thread running committed units' deliveries ([`deliver`]) one batch after another, beside
/// the next units' work: a throttled Key Vault does not idle the delivery channels, nor slow
/// deliveries the imports. Its batches run up to `delivery_concurrency` deliveries at once, as
/// they would in the foreground. What it delivered is settled by the backend as the backend
/// next passes a unit's edge: into the unit under way before its commit (the store holds one
/// writer, the unit, until then), or on its own outside a unit (at the next `begin`, and while
/// [`Backend::finish_deliveries`] waits, as each settlement comes).
struct Courier {
    /// Batches to deliver (dropped to end the thread).
    jobs: Option<std::sync::mpsc::Sender<Vec<DeviceRecord>>>,
    /// What became of the batches, in the order it happened.
    done: std::sync::mpsc::Receiver<CourierNews>,
    /// Batches sent and not yet taken back from `done`.
    in_flight: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AzureBackend {
    /// Connects every client the plan's `[backend] kind = "azure"` names; `local` is the store
    /// beside the plan.
    pub fn connect(plan: &Plan, local: LocalBackend) -> std::result::Result<AzureBackend, SetupError> {
        let config = plan
            .azure
            .as_ref()
            .ok_or_else(|| SetupError::Client("the plan's backend is not `azure`".into()))?;
        let http = super::http_client(config)?;
        let credential = super::credential(&config.auth, &super::client_options(http, config))?;
        Self::connect_with(plan, local, credential)
    }

    /// As [`connect`](Self::connect), with a credential of the caller's.
    pub fn connect_with(
        plan: &Plan,
        local: LocalBackend,
        credential: std::sync::Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> std::result::Result<AzureBackend, SetupError> {
        let config = plan
            .azure
            .as_ref()
            .ok_or_else(|| SetupError::Client("the plan's backend is not `azure`".into()))?;
        let recorded = VaultIndex::recorded(&local, plan)?;
        let deleted_recorded = VaultIndex::deleted_recorded(&local, plan)?;
        // The plan's certificates: what listing the vault's certificates is weighed against.
        let names = plan.cas.len() as u64
            + plan.enrollments.len() as u64
            + plan.groups.values().map(|g| g.device_count()).sum::<u64>();
        let vault = AzureVault::connect_with(config, local, credential.clone())?.listing_pays_for(names);
        let courier_credential = credential.clone();
        let enrollments: Box<dyn EnrollmentService + Send> = match config.dps {
            Some(_) => {
                let mut dps = AzureEnrollmentService::new(config, credential.clone())?;
                // DPS names enrollment certificates only by thumbprint; the vault has them.
                let store = crate::store::Store::open_empty()
                    .map_err(|e| SetupError::Client(format!("in-memory store: {e}")))?;
                // Its own client: it reads every listing afresh, since it does not see the
                // versions `vault` imports.
                let index = AzureVault::connect_sharing(
                    config,
                    LocalBackend::new(store),
                    credential,
                    &vault.pacing(),
                )?
                .without_kept_listings();
                dps.set_certificate_source(Box::new(VaultIndex::new(
                    index,
                    plan,
                    recorded,
                    deleted_recorded,
                )));
                Box::new(dps)
            }
            None => Box::new(NoDps),
        };
        let hubs = AzureHubRegistry::new(config)?;
        // The courier's clients pace with these: the plan's rates are what each service sees
        // of this process, deliveries included.
        let (vault_pacing, hub_pacing) = (vault.pacing(), hubs.pacing());
        let mut backend = Self::from_parts(plan, vault, enrollments, Box::new(hubs));
        let config = config.clone();
        let hub_config = config.clone();
        backend.courier_clients = Some(Box::new(move || {
            let hubs: Box<dyn HubRegistry + Send> =
                Box::new(AzureHubRegistry::sharing(&hub_config, &hub_pacing)?);
            Ok(hubs)
        }));
        backend.vault_clients = Some(std::sync::Arc::new(VaultClients {
            make: Box::new(move || {
                let store = crate::store::Store::open_empty()
                    .map_err(|e| SetupError::Client(format!("in-memory store: {e}")))?;
                AzureVault::connect_sharing(
                    &config,
                    LocalBackend::new(store),
                    courier_credential.clone(),
                    &vault_pacing,
                )
            }),
            idle: std::sync::Mutex::default(),
            cas: CaVersions::default(),
        }));
        Ok(backend)
    }

    /// Composes a backend from its parts (the DPS and hub clients as trait objects, so a caller
    /// may put its own in front of them).
    pub fn from_parts(
        plan: &Plan,
        vault: AzureVault,
        enrollments: Box<dyn EnrollmentService + Send>,
        hubs: Box<dyn HubRegistry + Send>,
    ) -> AzureBackend {
        let secret_vars = plan.azure.as_ref().map(delivery::secret_vars).unwrap_or_default();
        let describe = format!(
            "azure: Key Vault {}{}, fleet record and journal in the local store {}",
            vault.vault_url(),
            plan.azure
                .as_ref()
                .and_then(|a| a.dps.as_ref())
                .map(|d| format!(", DPS {}", d.host))
                .unwrap_or_default(),
            vault.local().store().path().display()
        );
        AzureBackend {
            vault,
            enrollments,
            hubs,
            delivery: plan.delivery.clone(),
            group_hubs: plan
                .groups
                .values()
                .map(|g| (g.name.clone(), g.hub.clone()))
                .collect(),
            enrollment_hubs: plan
                .enrollments
                .values()
                .map(|e| (e.name.clone(), e.hub.clone()))
                .collect(),
            members: plan
                .groups
                .values()
                .map(|g| (g.name.clone(), Members::of(&g.devices)))
                .collect(),
            secret_vars,
            pending: Vec::new(),
            held_cuts: Vec::new(),
            outcomes: HashMap::new(),
            held_owed: BTreeMap::new(),
            never_issued: std::sync::Mutex::default(),
            background: false,
            courier: None,
            courier_clients: None,
            vault_clients: None,
            for_the_operator: (0, None),
            describe,
            ahead: None,
        }
    }

    /// The enrollment group of each device, in the order asked (None: not a group's): the
    /// group its fleet record names (where it was issued), else the plan's.
    fn groups_of(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
        let records = self.vault.local().device_many(ids)?;
        Ok(self.groups_of_records(ids, &records))
    }

    /// As [`groups_of`](Self::groups_of), from the devices' fleet records already read. A
    /// device without a fleet record is kept in `never_issued`.
    fn groups_of_records(&self, ids: &[String], records: &[Option<DeviceRecord>]) -> Vec<Option<String>> {
        let mut never_issued = self.never_issued.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .zip(records)
            .map(|(id, record)| match record {
                Some(r) => r.group.clone(),
                None => {
                    never_issued.insert(id.clone());
                    self.members
                        .iter()
                        .find(|(_, m)| m.has(id))
                        .map(|(g, _)| g.clone())
                }
            })
            .collect()
    }

    /// Devices certroll now reaches (a delivery leaves for them, or they are asked to register):
    /// from here DPS may hold a registration of theirs that certroll caused, so they leave
    /// `never_issued`. Not when their fleet record is written: until a delivery leaves, the
    /// device holds nothing new, and `register` reads DPS's record of it before delivering.
    fn reached<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut never_issued = self.never_issued.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            never_issued.remove(id);
        }
    }

    /// Takes the queued deliveries, which leave now ([`reached`](Self::reached)).
    fn take_pending(&mut self) -> Vec<DeviceRecord> {
        let pending = std::mem::take(&mut self.pending);
        self.reached(pending.iter().map(|r| &r.id));
        pending
    }

    /// DPS's registration states of `ids` (without the certificates, see
    /// [`with_certificates`](Self::with_certificates)): a group's devices from the group's
    /// listing, in pages, the others one by one.
    fn registration_states(&self, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        registration_states_in(&*self.enrollments, ids, &self.groups_of(ids)?, &self.never_issued)
    }

    /// The delivery outcome of a device in this process, if one was attempted.
    pub fn outcome(&self, device_id: &str) -> Option<&Outcome> {
        self.outcomes.get(device_id)
    }

    /// The hub the plan assigns a device's group or enrollment to.
    fn plan_hub(&self, record: &DeviceRecord) -> Option<String> {
        hub_of(&self.group_hubs, &self.enrollment_hubs, record)
    }

    /// The hub the plan names for each of `ids` (whose fleet records are `records` and whose
    /// groups are `groups`, as [`groups_of_records`](Self::groups_of_records) gives them): the
    /// hub certroll writes into the device's enrollment (`iotHubs: [host]`, static allocation),
    /// where DPS assigns the device when it registers. A device without a fleet record takes
    /// its own individual enrollment's hub, else its group's (DPS prefers the individual
    /// enrollment).
    fn named_hubs(
        &self,
        ids: &[String],
        records: &[Option<DeviceRecord>],
        groups: &[Option<String>],
    ) -> Vec<Option<String>> {
        ids.iter()
            .zip(records)
            .zip(groups)
            .map(|((id, record), group)| match record {
                Some(r) => self.plan_hub(r),
                None => self
                    .enrollment_hubs
                    .get(id)
                    .or_else(|| group.as_ref().and_then(|g| self.group_hubs.get(g)))
                    .cloned(),
            })
            .collect()
    }

    /// Of each of `ids`, in order: its fleet record, its group
    /// ([`groups_of_records`](Self::groups_of_records)) and the hub its identity is looked for
    /// in first ([`named_hubs`](Self::named_hubs)); all read from the store beside the plan.
    #[allow(clippy::type_complexity)]
    fn where_found(
        &self,
        ids: &[String],
    ) -> Result<(
        Vec<Option<DeviceRecord>>,
        Vec<Option<String>>,
        Vec<Option<String>>,
    )> {
        let records = self.vault.local().device_many(ids)?;
        let groups = self.groups_of_records(ids, &records);
        let named = self.named_hubs(ids, &records, &groups);
        Ok((records, groups, named))
    }

    /// What a delivery needs of the plan (a copy, for a thread of its own).
    fn routes(&self) -> Routes {
        Routes {
            delivery: self.delivery.clone(),
            group_hubs: self.group_hubs.clone(),
            enrollment_hubs: self.enrollment_hubs.clone(),
            secret_vars: self.secret_vars.clone(),
        }
    }

    /// Runs the queued deliveries here and now (see [`deliver`]), settling each the channel
    /// takes as it finishes (in the unit when one is open: a unit rolled back leaves it owed;
    /// else a small write of its own), records what became of them
    /// ([`take_delivered`](Self::take_delivered)), then makes the hub updates held back for them.
    fn flush(&mut self, now: OffsetDateTime) -> Result<()> {
        self.flush_reading(now, false)
    }

    /// As [`flush`](Self::flush); `in_pool`: the deliveries read their versions and keys in
    /// the pool ([`Reads::InPool`]), for deliveries of what this process did not import (owed
    /// ones), when the backend can make clients for it.
    fn flush_reading(&mut self, now: OffsetDateTime, in_pool: bool) -> Result<()> {
        let pending = self.take_pending();
        let routes = self.routes();
        let reads = match (&self.vault_clients, in_pool) {
            (Some(make), true) => Reads::InPool(make),
            _ => Reads::Here(&self.vault),
        };
        let local = self.vault.local();
        let delivered = deliver(&routes, reads, &mut *self.hubs, pending, now, true, &mut |rows| {
            settle_in(local, rows)
        });
        self.take_delivered(delivered)?;
        self.make_held_cuts(now)
    }

    /// Hands a committed unit's deliveries to the courier (started on first use); gives them
    /// back when no courier can take them (its clients could not be made: they run here).
    fn hand_over(&mut self, pending: Vec<DeviceRecord>) -> Vec<DeviceRecord> {
        if self.courier.is_none() {
            let Some(make) = self.courier_clients.take() else {
                return pending;
            };
            let Some(vault_clients) = self.vault_clients.clone() else {
                return pending;
            };
            let mut hubs = match make() {
                Ok(hubs) => hubs,
                Err(e) => {
                    tracing::warn!(
                        "deliveries wait for each unit: cannot connect a client to deliver beside it: {e}"
                    );
                    return pending;
                }
            };
            let routes = self.routes();
            let (jobs, queue) = std::sync::mpsc::channel::<Vec<DeviceRecord>>();
            let (finished, done) = std::sync::mpsc::channel::<CourierNews>();
            let thread = std::thread::Builder::new()
                .name("certroll-deliveries".into())
                .spawn(move || {
                    for batch in queue {
                        // No progress stage: the unit under way shows its own. Each settlement
                        // goes to the backend as it comes (the backend holds the store).
                        let delivered = deliver(
                            &routes,
                            Reads::InPool(&vault_clients),
                            &mut *hubs,
                            batch,
                            OffsetDateTime::now_utc(),
                            false,
                            &mut |rows| {
                                finished.send(CourierNews::Settle(rows.to_vec())).map_err(|_| {
                                    BackendError::Refused(
                                        "the backend stopped taking what was delivered".into(),
                                    )
                                })
                            },
                        );
                        if finished.send(CourierNews::Batch(delivered)).is_err() {
                            break;
                        }
                    }
                });
            match thread {
                Ok(thread) => {
                    self.courier = Some(Courier {
                        jobs: Some(jobs),
                        done,
                        in_flight: 0,
                        thread: Some(thread),
                    })
                }
                Err(e) => {
                    tracing::warn!(
                        "deliveries wait for each unit: cannot start a thread to deliver beside it: {e}"
                    );
                    return pending;
                }
            }
        }
        let Some(courier) = self.courier.as_mut() else {
            return pending;
        };
        match courier.jobs.as_ref().map(|jobs| jobs.send(pending)) {
            Some(Ok(())) => {
                courier.in_flight += 1;
                Vec::new()
            }
            Some(Err(std::sync::mpsc::SendError(back))) => back,
            None => Vec::new(),
        }
    }

    /// Settles what the courier delivered and records what became of its batches
    /// ([`take_delivered`](Self::take_delivered)): what it told so far, in one write (in the
    /// unit when one is open, so it commits with it; else a small write of its own), or with
    /// `wait`, everything until every batch sent to it is done, each settlement written as it
    /// comes (they come at most every [`SETTLE_EVERY`]). Returns the first error met.
    fn collect_deliveries(&mut self, wait: bool) -> Result<()> {
        let mut first = None;
        let mut rows: Vec<(String, Option<String>)> = Vec::new();
        while let Some(courier) = self.courier.as_mut().filter(|c| c.in_flight > 0) {
            let got = if wait {
                courier.done.recv().ok()
            } else {
                match courier.done.try_recv() {
                    Ok(news) => Some(news),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                }
            };
            let Some(news) = got else {
                // The thread ended early (it panicked): what it had not delivered stays owed.
                courier.in_flight = 0;
                first = first.or(Some(BackendError::Refused(
                    "the delivery thread stopped; the certificates it had not delivered stay owed".into(),
                )));
                break;
            };
            match news {
                CourierNews::Settle(took) => {
                    rows.extend(took);
                    if wait && let Err(e) = settle_in(self.vault.local(), &std::mem::take(&mut rows)) {
                        first = first.or(Some(e));
                    }
                }
                CourierNews::Batch(delivered) => {
                    courier.in_flight -= 1;
                    if let Err(e) = self.take_delivered(delivered) {
                        first = first.or(Some(e));
                    }
                }
            }
        }
        if let Err(e) = settle_in(self.vault.local(), &rows) {
            first = first.or(Some(e));
        }
        first.map_or(Ok(()), Err)
    }

    /// Records what became of a batch of deliveries, once [`deliver`] settled what the
    /// channels took as each finished: each outcome is kept for `register` and the report,
    /// and one that did not reach its device is logged. Returns the error that stopped the
    /// batch, if one did.
    fn take_delivered(&mut self, delivered: Delivered) -> Result<()> {
        let Delivered {
            pending,
            outcomes,
            error,
        } = delivered;
        // `delivery = "none"` is the operator's choice, not a fault: one line for all of them.
        let mut for_the_operator: Vec<String> = Vec::new();
        for (record, outcome) in pending.into_iter().zip(outcomes) {
            let Some(outcome) = outcome else { continue };
            if let Outcome::Waiting(why) = &outcome {
                let channel = self
                    .delivery
                    .channel(record.group.as_deref(), record.enrollment.as_deref());
                if *channel == Delivery::None {
                    tracing::debug!(device = %record.id, "certificate not delivered: {why}");
                    for_the_operator.push(record.id.clone());
                } else {
                    tracing::warn!(device = %record.id, "certificate not delivered: {why}");
                }
            }
            self.outcomes.insert(record.id.clone(), outcome);
        }
        // Told once, when the backend is done (a verb flushes per enrollment and per chunk).
        if let Some(first) = for_the_operator.first() {
            self.for_the_operator.1.get_or_insert_with(|| first.clone());
            self.for_the_operator.0 += for_the_operator.len() as u64;
        }
        error.map_or(Ok(()), Err)
    }

    /// Makes the hub identity updates held back until the unit's deliveries ran.
    fn make_held_cuts(&mut self, now: OffsetDateTime) -> Result<()> {
        let cuts = std::mem::take(&mut self.held_cuts);
        if !cuts.is_empty() {
            // A device the deliveries reached registers again, and DPS rewrites its identity
            // (the certificate it registered with, alone): read the identities now (a registry
            // query per hub), so each write carries the etag in force and one DPS already made
            // as the cut wants it is not written again.
            let wanted: Vec<(String, String)> = cuts
                .iter()
                .map(|c| (c.hub.clone(), c.device_id.clone()))
                .collect();
            let held = self.hubs.identity_many(&wanted)?;
            let cuts: Vec<HubIdentity> = cuts
                .into_iter()
                .zip(held)
                .filter(|(cut, held)| !held.as_ref().is_some_and(|h| same_access(h, cut)))
                .map(|(cut, _)| cut)
                .collect();
            if !cuts.is_empty() {
                self.hubs.update_identities(&cuts, now)?;
            }
        }
        Ok(())
    }

    /// Splits identity updates into those applied now and those that would shut out the
    /// certificate the device connects with now (the update drops the thumbprint of the
    /// certificate the fleet record says the device holds: a breach). Inside a unit those wait until the unit's deliveries ran: a
    /// device cut off from the hub first could not be reached by a direct method any more.
    fn hold_cuts(&mut self, batch: &[HubIdentity]) -> Result<Vec<HubIdentity>> {
        if !self.in_unit() {
            return Ok(batch.to_vec());
        }
        // What each device holds is read from the fleet record and Key Vault (not from the hub,
        // whose registry operations are metered at 100 a minute per unit).
        let ids: Vec<String> = batch.iter().map(|i| i.device_id.clone()).collect();
        let records = self.vault.local().device_many(&ids)?;
        let installed: Vec<(String, String)> = records
            .iter()
            .flatten()
            .filter_map(|r| Some((r.cert_name.clone(), r.installed_version.clone()?)))
            .collect();
        let held = self.vault.thumbprints(&installed)?;
        let mut apply_now = Vec::new();
        for (new, record) in batch.iter().zip(&records) {
            let held = record.as_ref().and_then(|r| {
                let version = r.installed_version.clone()?;
                held.get(&(r.cert_name.clone(), version)).cloned()
            });
            let kept = |t: &str| {
                [&new.primary_thumbprint, &new.secondary_thumbprint]
                    .into_iter()
                    .flatten()
                    .any(|n| n.eq_ignore_ascii_case(t))
            };
            let cuts = new.status == Status::Enabled && held.as_deref().is_some_and(|t| !kept(t));
            if cuts {
                self.held_cuts
                    .retain(|h| !(h.hub == new.hub && h.device_id == new.device_id));
                self.held_cuts.push(new.clone());
            } else {
                apply_now.push(new.clone());
            }
        }
        Ok(apply_now)
    }

    /// The next page of the store's owed deliveries after device id `after` (advanced past
    /// it), split into the fleet records still due and the rows owed nothing any more; None
    /// once every row was read. A row is due while its device's fleet record names the owed
    /// version and the plan gives the device a channel; a device that now holds another
    /// version (or is gone), or whose channel the plan now sets to `none`, is owed nothing.
    fn owed_page(&self, after: &mut String) -> Result<Option<OwedPage>> {
        // A page of devices at a time, as a unit's deliveries go.
        const PAGE: usize = 2048;
        let page = self.vault.local().owed_deliveries(after, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        *after = last.0.clone();
        let ids: Vec<String> = page.iter().map(|o| o.0.clone()).collect();
        let records = self.vault.local().device_many(&ids)?;
        let mut out = OwedPage {
            due: Vec::new(),
            stale: Vec::new(),
        };
        for ((id, name, version), record) in page.into_iter().zip(records) {
            match record {
                Some(r)
                    if r.installed_version.as_deref() == Some(version.as_str())
                        && r.cert_name == name
                        && *self.delivery.channel(r.group.as_deref(), r.enrollment.as_deref())
                            != Delivery::None =>
                {
                    out.due.push(r)
                }
                _ => out.stale.push((id, Some(version))),
            }
        }
        Ok(Some(out))
    }

    /// The owed deliveries among `due` that would hand a device a certificate DPS no longer
    /// accepts: its individual enrollment holds another client's certificate, and neither slot
    /// holds the owed version (the other client replaced it; trial az14 F2). Delivering it
    /// cannot succeed and hands out a key DPS refuses, so it waits, still owed, until the
    /// operator takes the enrollment back (the breach replaces the version: the row goes stale)
    /// or puts certroll's certificate back (the next run delivers). `(device id, (version, why))`.
    fn held_by_foreign(&self, due: &[DeviceRecord]) -> Result<Vec<(String, (String, String))>> {
        let enrolled: Vec<&DeviceRecord> = due.iter().filter(|r| r.enrollment.is_some()).collect();
        if enrolled.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = enrolled.iter().map(|r| r.id.clone()).collect();
        let read = self.enrollments.individual_many(&ids)?;
        let mut held = Vec::new();
        for (r, e) in enrolled.into_iter().zip(read) {
            let Some(e) = e.filter(|e| !e.foreign.is_empty()) else {
                continue;
            };
            let Some(version) = r.installed_version.as_deref() else {
                continue;
            };
            let Some(owed) = self.vault.version(&r.cert_name, version)? else {
                continue;
            };
            if [&e.primary, &e.secondary]
                .into_iter()
                .flatten()
                .any(|der| *der == owed.cert_der)
            {
                continue;
            }
            let f = &e.foreign[0];
            held.push((
                r.id.clone(),
                (
                    version.to_string(),
                    format!(
                        "its new certificate {} is not delivered: DPS would refuse it, since {}. {}",
                        crate::pki::sha1_thumbprint(&owed.cert_der),
                        f.describe(&r.id),
                        crate::backend::types::ForeignCertificate::remedy(&r.id)
                    ),
                ),
            ));
        }
        Ok(held)
    }

    /// Fills in the certificate of assigned registration states: DPS's registration state does
    /// not carry it, but the hub identity DPS wrote when it assigned the device does (its
    /// primary thumbprint; a secondary one is certroll's own, added by an expiry roll).
    fn with_certificates(&self, states: &mut [Option<RegistrationState>]) -> Result<()> {
        let (at, wanted): (Vec<usize>, Vec<(String, String)>) = states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s
                    .as_ref()
                    .filter(|s| s.status == "assigned" && s.cert_thumbprint.is_none())?;
                Some((i, (s.hub.clone()?, s.registration_id.clone())))
            })
            .unzip();
        if wanted.is_empty() {
            return Ok(());
        }
        for (i, identity) in at.into_iter().zip(self.hubs.identity_many(&wanted)?) {
            if let (Some(state), Some(identity)) = (states[i].as_mut(), identity) {
                state.cert_thumbprint = identity.primary_thumbprint.map(|t| t.to_ascii_uppercase());
            }
        }
        Ok(())
    }

    /// A registration state that is not (yet) `assigned` with the new certificate.
    fn waiting(req: &RegistrationRequest, seen: Option<RegistrationState>, why: String) -> RegistrationState {
        let seen = seen.unwrap_or_else(|| RegistrationState {
            registration_id: req.registration_id.clone(),
            status: String::new(),
            substatus: None,
            hub: None,
            cert_thumbprint: None,
            error: None,
            error_code: None,
            enrollment_kind: None,
            enrollment_name: None,
            created: None,
            updated: None,
            etag: None,
            device_id: None,
        });
        RegistrationState {
            status: "waiting".into(),
            error: Some(why),
            ..seen
        }
    }
}
impl Vault for AzureBackend {
    fn current(&self, name: &str) -> Result<Option<VaultVersion>> {
        self.vault.current(name)
    }

    fn current_many(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        self.vault.current_many(names)
    }

    fn versions(&self, name: &str) -> Result<Vec<VaultVersion>> {
        self.vault.versions(name)
    }

    fn briefs_many(&self, names: &[String]) -> Result<Vec<Vec<VersionBrief>>> {
        self.vault.briefs_many(names)
    }

    fn versions_many(&self, names: &[String]) -> Result<Vec<Vec<VaultVersion>>> {
        self.vault.versions_many(names)
    }

    fn version(&self, name: &str, version: &str) -> Result<Option<VaultVersion>> {
        self.vault.version(name, version)
    }

    fn current_with_policy_many(
        &self,
        names: &[String],
    ) -> Result<Vec<Option<(VaultVersion, serde_json::Value)>>> {
        self.vault.current_with_policy_many(names)
    }

    fn version_stamps(&self, name: &str) -> Result<Vec<VersionStamp>> {
        self.vault.version_stamps(name)
    }

    fn listing(&self) -> Result<Vec<ListedCertificate>> {
        self.vault.listing()
    }

    fn create_versions(&mut self, batch: &[NewVersion<'_>], now: OffsetDateTime) -> Result<Vec<String>> {
        self.vault.create_versions(batch, now)
    }

    fn private_key(&self, version: &VaultVersion) -> Result<PrivateKey> {
        self.vault.private_key(version)
    }

    fn signer(&self, version: &VaultVersion) -> Result<crate::pki::cert::CaSigner> {
        self.vault.signer(version)
    }

    fn names_page(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        self.vault.names_page(after, limit)
    }

    fn policy(&self, name: &str) -> Result<Option<serde_json::Value>> {
        self.vault.policy(name)
    }

    fn set_policy(&mut self, name: &str, policy_json: &str, now: OffsetDateTime) -> Result<bool> {
        self.vault.set_policy(name, policy_json, now)
    }

    fn set_enabled(&mut self, version: &VaultVersion, enabled: bool, now: OffsetDateTime) -> Result<()> {
        self.vault.set_enabled(version, enabled, now)
    }

    fn revoke(
        &mut self,
        issuer: (&str, &str),
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.vault.revoke(issuer, serial, reason, now)
    }

    fn revocations(&self, issuer: &str, version: &str) -> Result<(u64, Vec<Revocation>)> {
        self.vault.revocations(issuer, version)
    }

    fn is_revoked(&self, issuer: (&str, &str), serial: &str) -> Result<bool> {
        self.vault.is_revoked(issuer, serial)
    }

    fn next_crl_number(&mut self, issuer: &str) -> Result<u64> {
        self.vault.next_crl_number(issuer)
    }

    fn tags(&self, name: &str, version: Option<&str>) -> Result<Option<Tags>> {
        self.vault.tags(name, version)
    }

    fn set_tags(
        &mut self,
        name: &str,
        version: Option<&str>,
        tags: &Tags,
        now: OffsetDateTime,
    ) -> Result<()> {
        self.vault.set_tags(name, version, tags, now)
    }

    fn name_state(&self, name: &str) -> Result<Option<&'static str>> {
        self.vault.name_state(name)
    }

    fn certificate_users(&self, name: &str) -> Result<CertificateUsers> {
        self.vault.certificate_users(name)
    }

    fn delete_certificate(
        &mut self,
        name: &str,
        now: OffsetDateTime,
        purge_at: OffsetDateTime,
    ) -> Result<bool> {
        self.vault.delete_certificate(name, now, purge_at)
    }

    fn deleted_certificates(&self, name: Option<&str>) -> Result<Vec<DeletedCertificate>> {
        self.vault.deleted_certificates(name)
    }

    fn recover_certificate(&mut self, name: &str) -> Result<bool> {
        self.vault.recover_certificate(name)
    }

    fn purge_certificate(&mut self, name: &str) -> Result<bool> {
        self.vault.purge_certificate(name)
    }

    fn backup_certificate(&self, name: &str) -> Result<Option<CertificateBackup>> {
        self.vault.backup_certificate(name)
    }

    fn restore_certificate(&mut self, backup: &CertificateBackup) -> Result<()> {
        self.vault.restore_certificate(backup)
    }

    fn contacts(&self) -> Result<Option<Vec<String>>> {
        self.vault.contacts()
    }

    fn set_contacts(&mut self, emails: Option<&[String]>) -> Result<()> {
        self.vault.set_contacts(emails)
    }

    fn issuers(&self) -> Result<Vec<IssuerConfig>> {
        self.vault.issuers()
    }

    fn put_issuer(&mut self, issuer: &IssuerConfig, now: OffsetDateTime) -> Result<()> {
        self.vault.put_issuer(issuer, now)
    }

    fn delete_issuer(&mut self, name: &str) -> Result<bool> {
        self.vault.delete_issuer(name)
    }

    fn issuer_users(&self, issuer: &str) -> Result<Vec<String>> {
        self.vault.issuer_users(issuer)
    }

    fn pending(&self, name: &str) -> Result<Option<PendingCertificate>> {
        self.vault.pending(name)
    }

    fn pending_all(&self) -> Result<Vec<PendingCertificate>> {
        self.vault.pending_all()
    }

    fn put_pending(&mut self, pending: &PendingCertificate, key_pkcs8: &[u8]) -> Result<()> {
        self.vault.put_pending(pending, key_pkcs8)
    }

    fn pending_key(&self, name: &str) -> Result<PrivateKey> {
        self.vault.pending_key(name)
    }

    fn delete_pending(&mut self, name: &str) -> Result<bool> {
        self.vault.delete_pending(name)
    }

    fn stored_chain(&self, name: &str, version: &str) -> Result<Vec<Vec<u8>>> {
        self.vault.stored_chain(name, version)
    }

    fn set_stored_chain(&mut self, name: &str, version: &str, chain: &[Vec<u8>]) -> Result<()> {
        self.vault.set_stored_chain(name, version, chain)
    }

    fn create_by_vault(
        &mut self,
        name: &str,
        policy_json: &str,
        now: OffsetDateTime,
    ) -> Result<Option<crate::backend::Created>> {
        self.vault.create_by_vault(name, policy_json, now)
    }

    fn merge_pending(
        &mut self,
        pending: &PendingCertificate,
        leaf: &[u8],
        chain: &[Vec<u8>],
        issuer: Option<(&str, &str)>,
        now: OffsetDateTime,
    ) -> Result<String> {
        self.vault.merge_pending(pending, leaf, chain, issuer, now)
    }

    fn makes_own_keys(&self) -> bool {
        self.vault.makes_own_keys()
    }

    fn key_holder(
        &mut self,
        name: &str,
        make: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Option<VaultVersion>> {
        self.vault.key_holder(name, make, now)
    }

    fn retire_key_holders(&mut self, name: &str, now: OffsetDateTime) -> Result<()> {
        self.vault.retire_key_holders(name, now)
    }

    fn is_key_holder_version(&self, name: &str, version: &str) -> Result<bool> {
        self.vault.is_key_holder_version(name, version)
    }

    fn mark_new_versions(&mut self, marker: Option<&str>) {
        self.vault.mark_new_versions(marker)
    }

    fn versions_marked(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        self.vault.versions_marked(names)
    }

    fn backup_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.vault.backup_blob(name)
    }

    fn restore_blob(&mut self, blob: &[u8]) -> Result<Option<String>> {
        self.vault.restore_blob(blob)
    }
}

impl HubRegistry for AzureBackend {
    fn identity(&self, hub: &str, device_id: &str) -> Result<Option<HubIdentity>> {
        self.hubs.identity(hub, device_id)
    }

    fn identity_many(&self, wanted: &[(String, String)]) -> Result<Vec<Option<HubIdentity>>> {
        self.hubs.identity_many(wanted)
    }

    fn delete_identity(&mut self, hub: &str, device_id: &str) -> Result<()> {
        self.hubs.delete_identity(hub, device_id)
    }

    fn update_identity(&mut self, identity: &HubIdentity, now: OffsetDateTime) -> Result<()> {
        self.update_identities(std::slice::from_ref(identity), now)
    }

    fn update_identities(&mut self, batch: &[HubIdentity], now: OffsetDateTime) -> Result<()> {
        let apply_now = self.hold_cuts(batch)?;
        if apply_now.is_empty() {
            return Ok(());
        }
        self.hubs.update_identities(&apply_now, now)
    }

    fn identities_seen_disabled(&self, ids: &[String]) -> Vec<Option<String>> {
        self.hubs.identities_seen_disabled(ids)
    }

    fn invoke_method(
        &mut self,
        hub: &str,
        device_id: &str,
        call: &DirectMethodCall,
        now: OffsetDateTime,
    ) -> Result<DirectMethodResult> {
        self.hubs.invoke_method(hub, device_id, call, now)
    }

    fn invoke_methods(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        now: OffsetDateTime,
    ) -> Vec<Result<DirectMethodResult>> {
        self.hubs.invoke_methods(calls, concurrency, now)
    }

    fn invoke_methods_each(
        &mut self,
        calls: &[(String, String, DirectMethodCall)],
        concurrency: usize,
        now: OffsetDateTime,
        each: &mut dyn FnMut(usize, Result<DirectMethodResult>),
    ) {
        self.hubs.invoke_methods_each(calls, concurrency, now, each)
    }

    fn authenticate(
        &self,
        hub: &str,
        device_id: &str,
        cert_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<std::result::Result<(), String>> {
        self.hubs.authenticate(hub, device_id, cert_der, now)
    }
}

impl Fleet for AzureBackend {
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>> {
        self.vault.local().device(id)
    }

    fn device_many(&self, ids: &[String]) -> Result<Vec<Option<DeviceRecord>>> {
        self.vault.local().device_many(ids)
    }

    fn first_unissued(&self, ids: &[String]) -> Result<Option<String>> {
        self.vault.local().first_unissued(ids)
    }

    fn first_purged(&self, ids: &[String]) -> Result<Option<String>> {
        // What certroll purged is recorded beside the fleet record: no request to Key Vault. A
        // purge by another client is found by the roll's own read of the device.
        crate::store::queries_issued::purged_first_device(self.vault.local().store().conn(), ids)
            .map_err(BackendError::Store)
    }

    fn devices_page(&self, group: Option<&str>, after: &str, limit: usize) -> Result<Vec<DeviceRecord>> {
        self.vault.local().devices_page(group, after, limit)
    }

    fn devices_under(
        &self,
        issuers: &[(String, String)],
        groups: Option<&[String]>,
        limit: usize,
    ) -> Result<(u64, Vec<String>)> {
        // The fleet record names each device's version; who signed that version is in Key
        // Vault (the version's issuer tag), and whether the device was revoked (a disabled
        // individual enrollment) is in DPS. Pages in id order, so the first ids come out sorted.
        const PAGE: usize = 500;
        let mut after = String::new();
        let mut hits = Vec::new();
        loop {
            let page = self.vault.local().devices_page(None, &after, PAGE)?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id.clone();
            let page: Vec<DeviceRecord> = page
                .into_iter()
                .filter(|d| d.installed_version.is_some())
                .filter(|d| groups.is_none_or(|gs| d.group.as_ref().is_some_and(|g| gs.contains(g))))
                .collect();
            let names: Vec<String> = page.iter().map(|d| d.cert_name.clone()).collect();
            // The newest version of each, from one listing of the vault and what certroll
            // recorded issuing (store v15): only a device whose record names an older version
            // has its versions listed.
            let mut under = Vec::new();
            let mut older = Vec::new();
            for (d, newest) in page.iter().zip(self.vault.current_many(&names)?) {
                match newest.filter(|v| d.installed_version.as_deref() == Some(v.version.as_str())) {
                    Some(v) if v.issuer.as_ref().is_some_and(|i| issuers.contains(i)) => {
                        under.push(d.id.clone())
                    }
                    Some(_) => {}
                    None => older.push(d),
                }
            }
            let names: Vec<String> = older.iter().map(|d| d.cert_name.clone()).collect();
            for (d, briefs) in older.into_iter().zip(self.vault.briefs_many(&names)?) {
                if briefs.iter().any(|b| {
                    d.installed_version.as_deref() == Some(b.version.as_str())
                        && b.issuer.as_ref().is_some_and(|i| issuers.contains(i))
                }) {
                    under.push(d.id.clone());
                }
            }
            // In id order, as the first ids are shown.
            under.sort();
            let enrollments = self.enrollments.individual_many(&under)?;
            hits.extend(
                under
                    .into_iter()
                    .zip(enrollments)
                    .filter(|(_, e)| !e.as_ref().is_some_and(|e| e.status == Status::Disabled))
                    .map(|(id, _)| id),
            );
        }
        let count = hits.len() as u64;
        hits.truncate(limit);
        Ok((count, hits))
    }

    fn install(&mut self, batch: &[DeviceRecord]) -> Result<()> {
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        let before = self.vault.local().device_many(&ids)?;
        // What each changed device is owed goes into the store with its fleet record, in one
        // unit: a kill after it leaves the delivery owed, never forgotten.
        let mut owed = Vec::new();
        let mut owes_nothing = Vec::new();
        let mut queued = Vec::new();
        // The facts of each version handed out, recorded with the fleet record (store v15).
        let mut issued = Vec::new();
        for (record, before) in batch.iter().zip(before) {
            let Some(version) = record.installed_version.clone() else {
                continue;
            };
            if before.and_then(|b| b.installed_version).as_ref() == Some(&version) {
                continue;
            }
            issued.push((record.cert_name.clone(), version.clone()));
            let channel = self
                .delivery
                .channel(record.group.as_deref(), record.enrollment.as_deref());
            if *channel == Delivery::None {
                // The operator hands it out: nothing is owed to a channel (nor an older one).
                owes_nothing.push((record.id.clone(), None));
            } else {
                owed.push((record.id.clone(), record.cert_name.clone(), version));
            }
            queued.push(record.clone());
        }
        let own_unit = !self.in_unit();
        if own_unit {
            self.vault.local_mut().begin()?;
        }
        let written = self
            .vault
            .local_mut()
            .install(batch)
            .and_then(|()| self.vault.record_issued(&issued))
            .and_then(|()| self.vault.local_mut().owe_deliveries(&owed))
            .and_then(|()| self.vault.local_mut().settle_deliveries(&owes_nothing));
        if own_unit {
            match written {
                Ok(()) => self.vault.local_mut().commit()?,
                Err(e) => {
                    self.vault.local_mut().rollback();
                    return Err(e);
                }
            }
        } else {
            written?;
        }
        for record in queued {
            self.pending.retain(|p| p.id != record.id);
            self.pending.push(record);
        }
        if own_unit {
            self.flush(OffsetDateTime::now_utc())?;
        }
        Ok(())
    }
}

impl Journal for AzureBackend {
    fn open_run(&self, command: &str) -> Result<Option<JournalRun>> {
        self.vault.local().open_run(command)
    }

    fn finished_run(&self, command: &str) -> Result<Option<JournalRun>> {
        self.vault.local().finished_run(command)
    }

    fn open_runs(&self) -> Result<Vec<JournalRun>> {
        self.vault.local().open_runs()
    }

    fn start_run(&mut self, command: &str, steps: &[JournalStep], now: OffsetDateTime) -> Result<i64> {
        self.vault.local_mut().start_run(command, steps, now)
    }

    fn step_done(
        &mut self,
        run: i64,
        seq: u32,
        result: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<()> {
        self.vault.local_mut().step_done(run, seq, result, now)
    }

    fn finish_run(&mut self, run: i64, now: OffsetDateTime) -> Result<()> {
        self.vault.local_mut().finish_run(run, now)
    }

    fn last_done_step(&self, target: &str, kind: &str) -> Result<Option<JournalStep>> {
        self.vault.local().last_done_step(target, kind)
    }

    fn done_steps(&self, kinds: &[&str]) -> Result<Vec<JournalStep>> {
        self.vault.local().done_steps(kinds)
    }
}

impl EnrollmentService for AzureBackend {
    fn group_registrations_all(&self, group: &str) -> Result<Vec<RegistrationState>> {
        self.enrollments.group_registrations_all(group)
    }

    fn ca(&self, name: &str) -> Result<Option<ServiceCa>> {
        self.enrollments.ca(name)
    }

    fn cas(&self) -> Result<Vec<ServiceCa>> {
        self.enrollments.cas()
    }

    fn upload_ca(&mut self, name: &str, cert_der: &[u8], now: OffsetDateTime) -> Result<()> {
        self.enrollments.upload_ca(name, cert_der, now)
    }

    fn delete_ca(&mut self, name: &str) -> Result<()> {
        self.enrollments.delete_ca(name)
    }

    fn verification_code(&mut self, name: &str, now: OffsetDateTime) -> Result<String> {
        self.enrollments.verification_code(name, now)
    }

    fn verify_ca(&mut self, name: &str, verification_cert_der: &[u8], now: OffsetDateTime) -> Result<()> {
        self.enrollments.verify_ca(name, verification_cert_der, now)
    }

    fn group(&self, name: &str) -> Result<Option<EnrollmentGroup>> {
        match self.enrollments.group(name)? {
            Some(g) => Ok(Some(g)),
            // A group DPS cannot hold (no CA left in it) is kept beside the plan.
            None => self.vault.local().group(name),
        }
    }

    fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        let mut all = self.enrollments.groups()?;
        for held in self.vault.local().groups()? {
            if !all.iter().any(|g| g.name == held.name) {
                all.push(held);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn put_group(&mut self, group: &EnrollmentGroup, now: OffsetDateTime) -> Result<()> {
        // Another client's certificate a write keeps stays in its slot (a primary it holds is
        // the group's primary); it is not certroll's to move.
        let keeps_foreign = !group.foreign.is_empty() && !group.take_back;
        let foreign_primary = keeps_foreign && group.foreign.iter().any(|f| f.slot == "primary");
        // Refused before any request, in the local backend's words (DPS answers 400 too).
        if let Some(why) = group.slots_refused().filter(|_| !foreign_primary) {
            return Err(BackendError::Refused(why));
        }
        // DPS has no X.509 group without a signing certificate: a group whose CAs were all
        // taken out (a breach between removing the old CA and placing the new one, or a CA
        // revoked) is deleted there, accepting no device, and kept in the local store until a
        // CA is placed in it again, in the same unit as the journal step.
        self.enrollments.put_group(group, now)?;
        if group.primary.is_none() && group.secondary.is_none() && !keeps_foreign {
            self.vault.local_mut().put_group(group, now)
        } else {
            self.vault.local_mut().forget_group(&group.name).map(|_| ())
        }
    }

    fn individual(&self, registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        self.enrollments.individual(registration_id)
    }

    fn individual_many(&self, ids: &[String]) -> Result<Vec<Option<IndividualEnrollment>>> {
        self.enrollments.individual_many(ids)
    }

    fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        self.enrollments.individuals()
    }

    fn put_individuals(&mut self, batch: &[IndividualEnrollment], now: OffsetDateTime) -> Result<()> {
        if let Some(why) = batch.iter().find_map(IndividualEnrollment::slots_refused) {
            return Err(BackendError::Refused(why));
        }
        self.enrollments.put_individuals(batch, now)
    }

    fn individuals_kept_disabled(&self, ids: &[String]) -> Vec<bool> {
        self.enrollments.individuals_kept_disabled(ids)
    }

    fn preview_register(
        &self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<std::result::Result<Assignment, String>>> {
        self.enrollments.preview_register(batch, now)
    }

    fn registration(&self, registration_id: &str) -> Result<Option<RegistrationState>> {
        Ok(self
            .registration_many(&[registration_id.to_string()])?
            .pop()
            .flatten())
    }

    fn assigned_hubs(&self, ids: &[String]) -> Result<Vec<Option<String>>> {
        assigned_hubs_in(&*self.enrollments, ids, &self.groups_of(ids)?, &self.never_issued)
    }

    fn registration_many(&self, ids: &[String]) -> Result<Vec<Option<RegistrationState>>> {
        let mut states = self.registration_states(ids)?;
        self.with_certificates(&mut states)?;
        Ok(states)
    }

    fn register(
        &mut self,
        batch: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        let ids: Vec<String> = batch.iter().map(|r| r.registration_id.clone()).collect();
        // DPS's record of each device before anything happens here: a registration in this call
        // (when a delivery reaches the device, or when it is asked) changes it. An older record
        // proves nothing about the new certificate (certroll writes hub thumbprints itself).
        let seen = |states: &[Option<RegistrationState>]| -> Vec<Seen> {
            states
                .iter()
                .map(|s| s.as_ref().map(|s| (s.etag.clone(), s.updated, s.status.clone())))
                .collect()
        };
        let had_deliveries = !self.pending.is_empty();
        // Without a delivery in this process, a device counts as registered only when it
        // answers the ask with 200, fresh evidence by itself: DPS's record from before would
        // only notice one that registered by itself meanwhile (a rerun finds it). Not reading it
        // spares `reprovision` a DPS read per device, each paced at DPS's rate.
        let delivered = had_deliveries || ids.iter().any(|id| self.outcomes.contains_key(id));
        let at_start = if delivered {
            Some(seen(&self.registration_states(&ids)?))
        } else {
            None
        };
        // From here each device may register, and DPS may refuse it: its state is read.
        self.reached(&ids);
        self.flush(now)?;
        let after_delivery = match &at_start {
            Some(_) if had_deliveries => Some(seen(&self.registration_states(&ids)?)),
            other => other.clone(),
        };
        let records = self.vault.local().device_many(&ids)?;
        let method = self.delivery.reprovision_method.clone();
        // Why a device is not (yet) registered with its new certificate, per device.
        let mut answers: HashMap<String, String> = HashMap::new();
        // Devices that registered when asked (status 200), and those DPS refused.
        let mut asked_ok: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut refused: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut asks: Vec<(String, String, DirectMethodCall)> = Vec::new();
        for (i, (req, record)) in batch.iter().zip(&records).enumerate() {
            let id = &req.registration_id;
            // A device the delivery did not reach does not hold the certificate: asking it to
            // register would only register the old one.
            if matches!(self.outcomes.get(id), Some(Outcome::Waiting(_))) {
                continue;
            }
            // A device that registered by itself when its delivery reached it (a hook that
            // restarts it) is not asked again: that would turn its initial assignment into a
            // reprovisioning.
            if let (Some(at_start), Some(after_delivery)) = (&at_start, &after_delivery)
                && after_delivery[i] != at_start[i]
                && after_delivery[i].as_ref().is_some_and(|s| s.2 == "assigned")
            {
                continue;
            }
            let Some(hub) = record.as_ref().and_then(|r| self.plan_hub(r)) else {
                continue;
            };
            asks.push((hub, id.clone(), delivery::reprovision_call(&method)));
        }
        // Each device answers once it registered again; a fleet's devices are asked together.
        let answered = self
            .hubs
            .invoke_methods(&asks, self.delivery.concurrency.max(1), now);
        for ((_, id, _), answer) in asks.iter().zip(answered) {
            match answer {
                Ok(answer) if answer.status == 200 => {
                    asked_ok.insert(id.clone());
                }
                Ok(answer) => {
                    refused.insert(id.clone());
                    answers.insert(
                        id.clone(),
                        format!(
                            "the device answered direct method `{method}` with status {}: {}",
                            answer.status, answer.payload
                        ),
                    );
                }
                Err(e @ BackendError::Remote { .. }) if matches!(&e, BackendError::Remote { code, .. } if code == "DeviceNotFound" || code == "DeviceNotOnline") =>
                {
                    answers.insert(
                        id.clone(),
                        format!(
                            "direct method `{method}` did not reach the device ({e}): it registers by itself when it next connects"
                        ),
                    );
                }
                Err(e) => {
                    answers.insert(id.clone(), e.to_string());
                }
            }
        }
        let mut states = self.registration_states(&ids)?;
        let fresh: Vec<bool> = seen(&states)
            .iter()
            .enumerate()
            .zip(&ids)
            .map(|((i, now), id)| {
                asked_ok.contains(id) || at_start.as_ref().is_some_and(|then| *now != then[i])
            })
            .collect();
        // DPS's registration state does not name the certificate a device presented; the hub
        // identity DPS wrote when it assigned the device does (its thumbprint).
        self.with_certificates(&mut states)?;
        Ok(batch
            .iter()
            .zip(states)
            .zip(fresh)
            .map(|((req, state), fresh)| {
                let id = &req.registration_id;
                let tp = req
                    .chain
                    .first()
                    .map(|c| crate::pki::sha1_thumbprint(c))
                    .unwrap_or_default();
                if let Some(s) = state.as_ref().filter(|s| {
                    fresh
                        && s.status == "assigned"
                        && s.cert_thumbprint
                            .as_deref()
                            .is_some_and(|t| t.eq_ignore_ascii_case(&tp))
                }) {
                    return s.clone();
                }
                // The device registered when asked and DPS refused it: DPS's answer is the
                // outcome, as the local enrollment service gives it.
                if refused.contains(id)
                    && let Some(s) = state
                        .as_ref()
                        .filter(|s| matches!(s.status.as_str(), "failed" | "disabled"))
                {
                    return s.clone();
                }
                let mut why = Vec::new();
                if let Some(Outcome::Waiting(w)) = self.outcomes.get(id) {
                    why.push(w.clone());
                }
                if let Some(a) = answers.get(id) {
                    why.push(a.clone());
                }
                why.push(match &state {
                    None => "the device has not registered yet".to_string(),
                    // DPS's record names this certificate, but from a registration before this
                    // one was asked for: the device did not register now.
                    Some(s)
                        if s.status == "assigned"
                            && s.cert_thumbprint
                                .as_deref()
                                .is_some_and(|t| t.eq_ignore_ascii_case(&tp)) =>
                    {
                        format!(
                            "the device did not register now (DPS's record of it assigned with certificate {tp} is from an earlier registration)"
                        )
                    }
                    Some(s) => format!(
                        "the device has not registered with certificate {tp} (DPS shows status {}{}{})",
                        s.status,
                        s.cert_thumbprint
                            .as_deref()
                            .map(|t| format!(" with {t}"))
                            .unwrap_or_default(),
                        s.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                });
                Self::waiting(req, state, why.join("; "))
            })
            .collect())
    }
}

/// The plan's delivery channels and hubs: what a delivery needs beside the clients.
#[derive(Clone)]
struct Routes {
    delivery: DeliveryPlan,
    group_hubs: BTreeMap<String, String>,
    enrollment_hubs: BTreeMap<String, String>,
    /// Environment variables a hook must not see.
    secret_vars: Vec<String>,
}

/// What became of a batch of deliveries ([`deliver`]).
struct Delivered {
    /// The records delivered, in the order given.
    pending: Vec<DeviceRecord>,
    /// One outcome per record; None where none came (the batch stopped first, or a direct
    /// method failed inside certroll).
    outcomes: Vec<Option<Outcome>>,
    /// The first error that stopped the batch or a delivery in it (the vault's, the hub
    /// client's): what was not delivered stays owed.
    error: Option<BackendError>,
}

/// The hub the plan assigns a device's group or enrollment to.
fn hub_of(
    group_hubs: &BTreeMap<String, String>,
    enrollment_hubs: &BTreeMap<String, String>,
    record: &DeviceRecord,
) -> Option<String> {
    record
        .group
        .as_ref()
        .and_then(|g| group_hubs.get(g))
        .or_else(|| record.enrollment.as_ref().and_then(|e| enrollment_hubs.get(e)))
        .cloned()
}

/// The certificates above a version (issuer first), following the issuer links in the vault;
/// through `shared` when the delivery runs in the pool (each CA version read once a process,
/// not once a pool client).
fn chain_above(
    vault: &AzureVault,
    version: &VaultVersion,
    shared: Option<&CaVersions>,
) -> Result<Vec<Vec<u8>>> {
    let mut chain = Vec::new();
    let mut next = version.issuer.clone();
    while let Some((name, ver)) = next {
        if chain.len() > 16 {
            return Err(BackendError::Refused(format!(
                "issuer chain of `{}` is longer than 16 certificates",
                version.name
            )));
        }
        let read = || {
            let v = vault.version(&name, &ver)?.map(Ok).unwrap_or_else(|| {
                let deleted = vault.deleted_certificates(Some(&name))?;
                Err(crate::backend::missing_issuer(&name, &ver, deleted.first()))
            })?;
            Ok((v.cert_der, v.issuer))
        };
        let (cert_der, issuer) = match shared {
            Some(cas) => cas.get_or_read(&name, &ver, read)?,
            None => read()?,
        };
        chain.push(cert_der);
        next = issuer;
    }
    Ok(chain)
}

/// Makes a record's delivery ready for its channel: reads the version it names (and for a
/// hook, its key and chain, for the PFX) from the vault. Errors are the vault's; `none` and a
/// record without a version are an outcome at once.
fn prepare(
    routes: &Routes,
    vault: &AzureVault,
    record: &DeviceRecord,
    shared: Option<&CaVersions>,
) -> Result<Prepared> {
    let Some(version_id) = record.installed_version.as_deref() else {
        return Ok(Prepared::Done(Outcome::Waiting("no version to deliver".into())));
    };
    let channel = routes
        .delivery
        .channel(record.group.as_deref(), record.enrollment.as_deref());
    if *channel == Delivery::None {
        return Ok(Prepared::Done(Outcome::Waiting(format!(
            "{LEFT_TO_THE_OPERATOR}: waiting for the operator (`certroll export device:{}`)",
            record.id
        ))));
    }
    let version = vault
        .version(&record.cert_name, version_id)?
        .ok_or_else(|| BackendError::NotFound(format!("vault version {}/{version_id}", record.cert_name)))?;
    let parcel = Parcel {
        device_id: record.id.clone(),
        hub: hub_of(&routes.group_hubs, &routes.enrollment_hubs, record).unwrap_or_default(),
        vault_url: vault.vault_url().to_string(),
        name: record.cert_name.clone(),
        version: version_id.to_string(),
        thumbprint: crate::pki::sha1_thumbprint(&version.cert_der),
    };
    if let Some(why) = version.never_delivered() {
        return Ok(Prepared::Done(Outcome::Waiting(why)));
    }
    Ok(match channel {
        Delivery::None => unreachable!("handled above"),
        Delivery::Hook(cfg) => {
            let pfx = if version.exportable {
                let key = vault.private_key(&version)?;
                let mut chain = vec![version.cert_der.clone()];
                let above = chain_above(vault, &version, shared)?;
                // Devices present their chain up to, not including, the root.
                let keep = above.len().saturating_sub(1);
                chain.extend(above.into_iter().take(keep));
                Some((zeroize::Zeroizing::new(key.pkcs8_der().to_vec()), chain))
            } else {
                None
            };
            Prepared::Hook(HookJob {
                at: 0,
                cfg: cfg.clone(),
                parcel,
                pfx,
            })
        }
        Delivery::DirectMethod { method } => Prepared::Method {
            method: method.clone(),
            parcel,
        },
    })
}

/// Finished deliveries wait at most this long for their settlement in the store: those that
/// finish closer together share one write (one commit outside a unit), so a fleet's deliveries
/// are not a commit each, and a kill re-delivers at most what was on its way plus what finished
/// in the last this-long.
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The most finished deliveries one settlement waits for before it is written.
const SETTLE_AT_MOST: usize = 512;

/// Key Vault clients for the threads that deliver ([`Reads::InPool`]), each sharing the pacing
/// of the backend's client (the plan's bounds are what Key Vault sees of the process), made as
/// needed and kept between batches; the CA versions above the devices' certificates are
/// shared among them ([`CaVersions`]).
struct VaultClients {
    make: Box<dyn Fn() -> std::result::Result<AzureVault, SetupError> + Send + Sync>,
    idle: std::sync::Mutex<Vec<AzureVault>>,
    cas: CaVersions,
}

/// A CA version's certificate (DER) and the (name, version) of its issuer, if any.
type CaCert = (Vec<u8>, Option<(String, String)>);

/// One CA version's place in [`CaVersions`]: empty until its first read answers.
type CaSlot = std::sync::Arc<std::sync::Mutex<Option<CaCert>>>;

/// The CA versions the pool's deliveries put into their PFX chains, by (name, version), read
/// once a process: each runner's client kept its own, so `delivery_concurrency` runners read
/// the same root's version and policy that many times at once (trial az15 N5: 8 times in
/// 0.2 s). A version's certificate and issuer never change, so nothing here goes stale; a
/// read that fails is not kept and the next delivery tries again.
#[derive(Default)]
struct CaVersions(std::sync::Mutex<HashMap<(String, String), CaSlot>>);

impl CaVersions {
    /// The kept certificate of CA version (`name`, `version`), or what `read` answers: one read
    /// at a time per version, so runners asking at once wait for the first one's answer.
    fn get_or_read(
        &self,
        name: &str,
        version: &str,
        read: impl FnOnce() -> Result<CaCert>,
    ) -> Result<CaCert> {
        let slot = {
            let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
            all.entry((name.to_string(), version.to_string()))
                .or_default()
                .clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = slot.as_ref() {
            return Ok(kept.clone());
        }
        let got = read()?;
        *slot = Some(got.clone());
        Ok(got)
    }
}

impl VaultClients {
    /// An idle client, or a new one.
    fn take(&self) -> std::result::Result<AzureVault, SetupError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        idle.map_or_else(|| (self.make)(), Ok)
    }

    /// A client back for the next batch.
    fn give_back(&self, vault: AzureVault) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(vault);
    }
}

/// Where a batch's deliveries read what they need from the vault (the version, and for a hook
/// the key and chain of its PFX).
#[derive(Clone, Copy)]
enum Reads<'a> {
    /// On the calling thread, one delivery after another, with this client: the backend's own,
    /// which keeps what this process imported, so a unit's deliveries read nothing again.
    Here(&'a AzureVault),
    /// In the pool, by the runner that makes each delivery, with a client of its own: the
    /// deliveries of what another process imported (owed ones, the courier's) read a version
    /// and a key each, up to `delivery_concurrency` at once instead of one after another.
    InPool(&'a VaultClients),
}

/// Work for a delivery runner.
enum Job {
    /// A hook made ready on the calling thread.
    Hook(HookJob),
    /// A record to make ready and deliver (its place in the batch, the record).
    Record(usize, DeviceRecord),
}

/// What a delivery runner reports, once per job.
enum Event {
    /// A delivery's outcome at its place in the batch (Err: it could not be made ready or
    /// its PFX could not be made: the batch stops there).
    Done(usize, Result<Outcome>),
    /// A direct-method delivery made ready (place, method, parcel): methods go out after.
    Method(usize, String, Parcel),
}

/// Writes `(device id, version)` rows of deliveries a channel took as settled, or hands them
/// to whoever writes them ([`deliver`]'s caller).
type SettleWrite<'a> = dyn FnMut(&[(String, Option<String>)]) -> Result<()> + 'a;

/// The settlements of a batch's deliveries as they finish: each delivery a channel took is
/// written at once when the last write is [`SETTLE_EVERY`] old, else with the others that
/// finished since, at most [`SETTLE_EVERY`] later (or once [`SETTLE_AT_MOST`] wait).
struct Settling<'s> {
    /// Writes `(device id, version)` rows as settled (or hands them to whoever writes them).
    write: &'s mut SettleWrite<'s>,
    /// Finished and not yet written.
    due: Vec<(String, Option<String>)>,
    /// When the last write was made (None: none yet, the next finish is written at once).
    last: Option<std::time::Instant>,
    /// The first write that failed (what it settled stays owed).
    error: Option<BackendError>,
}

impl Settling<'_> {
    /// A delivery the channel took.
    fn took(&mut self, record: &DeviceRecord) {
        self.due
            .push((record.id.clone(), record.installed_version.clone()));
        self.tick();
    }

    /// Writes what is due when it has waited long enough.
    fn tick(&mut self) {
        let waited = self.last.is_none_or(|t| t.elapsed() >= SETTLE_EVERY);
        if !self.due.is_empty() && (waited || self.due.len() >= SETTLE_AT_MOST) {
            self.write_now();
        }
    }

    /// Writes what is due.
    fn write_now(&mut self) {
        if self.due.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.due);
        if let Err(e) = (self.write)(&rows) {
            self.error.get_or_insert(e);
        }
        self.last = Some(std::time::Instant::now());
    }

    /// How long the caller may wait for the next finish before [`tick`](Self::tick) is due.
    fn patience(&self) -> std::time::Duration {
        match (self.due.is_empty(), self.last) {
            (true, _) | (false, None) => std::time::Duration::from_secs(1),
            (false, Some(t)) => SETTLE_EVERY.saturating_sub(t.elapsed()),
        }
    }
}

/// Runs one hook job: makes its PFX (the key derivation is the slow part, so a runner does
/// it) and runs the hook.
fn run_hook_job(job: HookJob, secret_vars: &[String]) -> Result<Outcome> {
    let HookJob { cfg, parcel, pfx, .. } = job;
    let pfx = pfx
        .map(|(key, chain)| {
            crate::pki::pkcs12::write_pfx(&parcel.device_id, &key, &chain, "").map(zeroize::Zeroizing::new)
        })
        .transpose()
        .map_err(BackendError::from)?;
    Ok(
        match delivery::run_hook(&cfg, &parcel, pfx.as_ref(), secret_vars) {
            Ok(()) => Outcome::Delivered(format!("hook `{}`", cfg.command[0])),
            Err(e) => Outcome::Waiting(format!("delivery failed: {e}")),
        },
    )
}

/// A delivery runner: takes jobs from `queue` until it is closed, reports each one's
/// [`Event`]. With `clients` it makes a record ready itself, with a Key Vault client of its
/// own (made on its first record, kept for the next).
fn run_deliveries(
    routes: &Routes,
    clients: Option<&VaultClients>,
    queue: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>,
    events: std::sync::mpsc::Sender<Event>,
    stage: &crate::progress::Stage,
) {
    let mut own: Option<AzureVault> = None;
    loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let event = match next {
            Err(_) => break,
            Ok(Job::Hook(job)) => Event::Done(job.at, run_hook_job(job, &routes.secret_vars)),
            Ok(Job::Record(at, record)) => {
                let vault = match (&own, clients) {
                    (Some(vault), _) => Ok(vault),
                    (None, Some(pool)) => match pool.take() {
                        Ok(vault) => Ok(&*own.insert(vault)),
                        Err(e) => Err(BackendError::Refused(format!(
                            "cannot connect a Key Vault client to deliver with: {e}"
                        ))),
                    },
                    (None, None) => Err(BackendError::Refused(
                        "no Key Vault client to make deliveries ready with".into(),
                    )),
                };
                let shared = clients.map(|pool| &pool.cas);
                match vault.and_then(|vault| prepare(routes, vault, &record, shared)) {
                    Err(e) => Event::Done(at, Err(e)),
                    Ok(Prepared::Done(outcome)) => Event::Done(at, Ok(outcome)),
                    Ok(Prepared::Hook(job)) => Event::Done(at, run_hook_job(job, &routes.secret_vars)),
                    Ok(Prepared::Method { method, parcel }) => Event::Method(at, method, parcel),
                }
            }
        };
        if !matches!(event, Event::Method(..)) {
            stage.advance(1);
        }
        if events.send(event).is_err() {
            break;
        }
    }
    if let (Some(vault), Some(pool)) = (own, clients) {
        pool.give_back(vault);
    }
}

/// Runs the deliveries of `pending` through their channels (see the module doc): hooks up to
/// `[backend] delivery_concurrency` at once, direct methods after them, as many awaited at
/// once. With [`Reads::Here`] each delivery is made ready on the calling thread while the
/// runners run the hooks made ready before (a key is read only when a runner is free to take
/// it; the runner makes the PFX); with [`Reads::InPool`] each runner makes its own ready.
///
/// Each delivery a channel takes is handed to `settle` as `(device id, version)` as it
/// finishes, those that finish close together in one call ([`Settling`]), always on the
/// calling thread: the caller writes them (in the unit when one is open) or passes them on.
/// The returned [`Delivered`] holds every outcome, for the caller's report. `show_progress`:
/// whether the batch has a progress stage (not beside another stage's work).
fn deliver(
    routes: &Routes,
    reads: Reads<'_>,
    hubs: &mut (dyn HubRegistry + Send),
    pending: Vec<DeviceRecord>,
    now: OffsetDateTime,
    show_progress: bool,
    settle: &mut SettleWrite<'_>,
) -> Delivered {
    use std::sync::mpsc::{RecvTimeoutError, TrySendError};
    let stage = crate::progress::stage("deliveries", if show_progress { pending.len() as u64 } else { 0 });
    let concurrency = routes.delivery.concurrency.max(1);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; pending.len()];
    let mut methods: Vec<(usize, String, Parcel)> = Vec::new();
    let mut settling = Settling {
        write: settle,
        due: Vec::new(),
        last: None,
        error: None,
    };
    let mut failed: Option<BackendError> = None;
    let clients = match reads {
        Reads::InPool(make) => Some(make),
        Reads::Here(_) => None,
    };
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(concurrency);
    let queue = std::sync::Mutex::new(queue);
    let (report, events) = std::sync::mpsc::channel::<Event>();
    std::thread::scope(|s| {
        let mut report = Some(report);
        let (mut runners, mut out) = (0usize, 0usize);
        // What a runner reported: an outcome (settled at once when the channel took it) or
        // a direct method made ready.
        let take = |event: Event,
                    outcomes: &mut Vec<Option<Outcome>>,
                    methods: &mut Vec<(usize, String, Parcel)>,
                    settling: &mut Settling<'_>,
                    failed: &mut Option<BackendError>| match event {
            Event::Done(at, Ok(outcome)) => {
                if matches!(outcome, Outcome::Delivered(_)) {
                    settling.took(&pending[at]);
                }
                outcomes[at] = Some(outcome);
            }
            Event::Done(_, Err(e)) => {
                failed.get_or_insert(e);
            }
            Event::Method(at, method, parcel) => methods.push((at, method, parcel)),
        };
        'records: for (i, record) in pending.iter().enumerate() {
            // A failed delivery or settlement stops the batch: the rest stays owed.
            if failed.is_some() || settling.error.is_some() {
                break;
            }
            let mut job = match reads {
                Reads::Here(vault) => match prepare(routes, vault, record, None) {
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                    Ok(Prepared::Done(outcome)) => {
                        stage.advance(1);
                        outcomes[i] = Some(outcome);
                        continue;
                    }
                    Ok(Prepared::Method { method, parcel }) => {
                        methods.push((i, method, parcel));
                        continue;
                    }
                    Ok(Prepared::Hook(job)) => Job::Hook(HookJob { at: i, ..job }),
                },
                Reads::InPool(_) => Job::Record(i, record.clone()),
            };
            if runners < concurrency
                && let Some(report) = &report
            {
                runners += 1;
                let (queue, stage, report) = (&queue, &stage, report.clone());
                s.spawn(move || run_deliveries(routes, clients, queue, report, stage));
            }
            // Every runner busy and the queue full: wait for one to finish (settling meanwhile).
            loop {
                match jobs.try_send(job) {
                    Ok(()) => {
                        out += 1;
                        break;
                    }
                    Err(TrySendError::Full(back)) => {
                        job = back;
                        match events.recv_timeout(settling.patience()) {
                            Ok(event) => {
                                out -= 1;
                                take(event, &mut outcomes, &mut methods, &mut settling, &mut failed);
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => {
                                failed.get_or_insert(BackendError::Refused(
                                    "the delivery runners stopped".into(),
                                ));
                                break 'records;
                            }
                        }
                        settling.tick();
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        failed.get_or_insert(BackendError::Refused("the delivery runners stopped".into()));
                        break 'records;
                    }
                }
            }
            while let Ok(event) = events.try_recv() {
                out -= 1;
                take(event, &mut outcomes, &mut methods, &mut settling, &mut failed);
            }
            settling.tick();
        }
        // No more jobs: the runners end once the queue is empty, and with them the reports.
        drop(jobs);
        report.take();
        while out > 0 {
            match events.recv_timeout(settling.patience()) {
                Ok(event) => {
                    out -= 1;
                    take(event, &mut outcomes, &mut methods, &mut settling, &mut failed);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            settling.tick();
        }
    });
    if failed.is_none() && settling.error.is_none() && !methods.is_empty() {
        let calls: Vec<(String, String, DirectMethodCall)> = methods
            .iter()
            .map(|(_, method, parcel)| {
                (
                    parcel.hub.clone(),
                    parcel.device_id.clone(),
                    delivery::method_call(method, parcel),
                )
            })
            .collect();
        std::thread::scope(|s| {
            let (answer, answers) = std::sync::mpsc::channel();
            let calls = &calls;
            s.spawn(move || {
                hubs.invoke_methods_each(calls, concurrency, now, &mut |i, a| {
                    let _ = answer.send((i, a));
                })
            });
            loop {
                match answers.recv_timeout(settling.patience()) {
                    Ok((i, answer)) => {
                        stage.advance(1);
                        let (at, method) = (methods[i].0, &methods[i].1);
                        outcomes[at] = match answer {
                            Ok(answer) if answer.status == 200 => {
                                settling.took(&pending[at]);
                                Some(Outcome::Delivered(format!("direct method `{method}`")))
                            }
                            Ok(answer) => Some(Outcome::Waiting(format!(
                                "the device answered direct method `{method}` with status {}: {}",
                                answer.status, answer.payload
                            ))),
                            Err(e @ BackendError::Remote { .. }) => Some(Outcome::Waiting(format!(
                                "direct method `{method}` did not reach the device: {e}"
                            ))),
                            Err(e) => {
                                failed.get_or_insert(e);
                                None
                            }
                        };
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                settling.tick();
            }
        });
    }
    settling.write_now();
    Delivered {
        pending,
        outcomes,
        // The hooks and methods that ran took their certificates (settled above, so no later
        // run hands them over again); the rest stay owed.
        error: failed.or(settling.error),
    }
}

impl Drop for AzureBackend {
    /// Settles what the courier delivers, then says in one line how many certificates the verb
    /// left to the operator (`delivery = "none"` is the operator's choice, not a fault: one
    /// line however many enrollments and chunks it wrote).
    fn drop(&mut self) {
        self.settle_courier();
        tracing::debug!(
            target: "certroll::store",
            "{} write transaction(s) committed to the store in this process; {} settlement write(s) of deliveries",
            crate::store::Store::commits(),
            SETTLE_WRITES.load(std::sync::atomic::Ordering::Relaxed)
        );
        if let (count, Some(first)) = &self.for_the_operator {
            tracing::warn!(
                "{count} certificate(s) not delivered: delivery = \"none\" leaves them to the operator; \
                 hand each out with `certroll export device:ID` (first: `certroll export device:{first}`)"
            );
        }
    }
}

impl AzureBackend {
    /// At drop: a verb that ends early (an error) still settles what the courier delivered.
    fn settle_courier(&mut self) {
        let Some(mut courier) = self.courier.take() else {
            return;
        };
        // A verb that ends early (an error) still settles what the courier delivers: a unit
        // left open is abandoned first, so each settlement lands.
        courier.jobs.take();
        let thread = courier.thread.take();
        self.courier = Some(courier);
        if self.in_unit() {
            self.vault.local_mut().rollback();
        }
        if let Err(e) = self.collect_deliveries(true) {
            tracing::warn!("{e}");
        }
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Which devices a group of the plan declares.
enum Members {
    /// `prefix` and 1..=count, zero-padded to the width of count.
    Generated { prefix: String, count: u64 },
    /// The ids of a file.
    Listed(std::collections::HashSet<String>),
}

impl Members {
    fn of(source: &crate::plan::DeviceSource) -> Members {
        match source {
            crate::plan::DeviceSource::Generated { prefix, count } => Members::Generated {
                prefix: prefix.clone(),
                count: *count,
            },
            crate::plan::DeviceSource::File { ids, .. } => Members::Listed(ids.iter().cloned().collect()),
        }
    }

    fn has(&self, id: &str) -> bool {
        match self {
            Members::Generated { prefix, count } => {
                let width = count.to_string().len();
                id.strip_prefix(prefix.as_str())
                    .filter(|d| d.len() == width && d.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|d| d.parse::<u64>().ok())
                    .is_some_and(|n| n >= 1 && n <= *count)
            }
            Members::Listed(ids) => ids.contains(id),
        }
    }
}

/// DPS's registration states of `ids` whose enrollment groups are `groups` (without the
/// certificates): a group's devices from the group's listing, in pages, the others one by one.
fn registration_states_in(
    enrollments: &dyn EnrollmentService,
    ids: &[String],
    groups: &[Option<String>],
    never_issued: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<Vec<Option<RegistrationState>>> {
    let mut by_group: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by_group.entry(g.as_deref()).or_default().push(i);
    }
    let mut out: Vec<Option<RegistrationState>> = vec![None; ids.len()];
    for (group, at) in by_group {
        let wanted: Vec<String> = at.iter().map(|&i| ids[i].clone()).collect();
        let states = match group {
            Some(g) => {
                let never: Vec<bool> = {
                    let never_issued = never_issued.lock().unwrap_or_else(|p| p.into_inner());
                    wanted.iter().map(|id| never_issued.contains(id)).collect()
                };
                enrollments.group_registration_many(g, &wanted, &never)?
            }
            None => enrollments.registration_many(&wanted)?,
        };
        for (i, state) in at.into_iter().zip(states) {
            out[i] = state;
        }
    }
    Ok(out)
}

/// The hub DPS assigned each of `ids` (whose enrollment groups are `groups`) to.
fn assigned_hubs_in(
    enrollments: &dyn EnrollmentService,
    ids: &[String],
    groups: &[Option<String>],
    never_issued: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<Vec<Option<String>>> {
    // A group's devices from the group's listing; the others from what DPS's enrollment
    // reads carried (a GET only for the rest).
    let mut out: Vec<Option<String>> = vec![None; ids.len()];
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut single = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        match g {
            Some(g) => by_group.entry(g.as_str()).or_default().push(i),
            None => single.push(i),
        }
    }
    for (group, at) in by_group {
        let wanted: Vec<String> = at.iter().map(|&i| ids[i].clone()).collect();
        let never: Vec<bool> = {
            let never_issued = never_issued.lock().unwrap_or_else(|p| p.into_inner());
            wanted.iter().map(|id| never_issued.contains(id)).collect()
        };
        for (i, hub) in at
            .into_iter()
            .zip(enrollments.group_assigned_hubs(group, &wanted, &never)?)
        {
            out[i] = hub;
        }
    }
    if !single.is_empty() {
        let wanted: Vec<String> = single.iter().map(|&i| ids[i].clone()).collect();
        for (i, hub) in single.into_iter().zip(enrollments.assigned_hubs(&wanted)?) {
            out[i] = hub;
        }
    }
    Ok(out)
}

/// The hub identity of each of `ids` (whose enrollment groups are `groups`) in the hub its last
/// successful registration assigned it to, found hub first: each device is looked up in the hub
/// its enrollment names (`named`, the plan's; one registry query per hub for the lot), and only
/// a device not there has its assigned hub read from DPS ([`assigned_hubs_in`]: a group's
/// listing, or a GET of its registration) and is looked up in that hub, if another. DPS's
/// enrollment query carries no registration state (Azure/azure-iot-sdk-csharp#3478), so
/// without this a roll of N individual enrollments made N registration GETs at DPS's rate
/// (1,000 operations a minute a unit: 100 minutes for 100,000 devices) before its first write.
///
/// Where it can differ from DPS's record: a device still registered to an earlier hub that also
/// has an identity left over in the hub its enrollment names now (it was registered there
/// before; DPS does not delete an identity when it moves a device) gets the leftover identity,
/// not the one it connects to. That is acceptable: the identity it connects to keeps the
/// certificates it held, so the device keeps working with the certificate it has; once it
/// presents the new one, that hub refuses it, and a device its hub refuses goes back to DPS,
/// which assigns it the enrollment's hub, whose identity already holds the new certificate.
/// (A breach roll leaves the compromised certificate in one of the two identities either way:
/// read through DPS, the leftover kept it.) A device that never registered is read from DPS as before; one with an identity in the named
/// hub that no registration made (another client created it) is reported with it.
fn assigned_identities_in(
    enrollments: &dyn EnrollmentService,
    hubs: &dyn HubRegistry,
    ids: &[String],
    groups: &[Option<String>],
    named: &[Option<String>],
    never_issued: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<Vec<Option<HubIdentity>>> {
    let out = named_identities(hubs, ids, named)?;
    assigned_identities_after(enrollments, hubs, ids, groups, named, never_issued, out)
}

/// The first read of [`assigned_identities_in`]: each of `ids` in the hub its enrollment names
/// (`named`), one registry query per hub. It reads no DPS state, so it can run beside DPS reads.
fn named_identities(
    hubs: &dyn HubRegistry,
    ids: &[String],
    named: &[Option<String>],
) -> Result<Vec<Option<HubIdentity>>> {
    crate::backend::identities_in_hubs(ids, named.iter().cloned(), |wanted| hubs.identity_many(wanted))
}

/// The rest of [`assigned_identities_in`], given `out` from [`named_identities`]: the devices
/// not found in their named hub are looked up in the hub DPS assigned them.
fn assigned_identities_after(
    enrollments: &dyn EnrollmentService,
    hubs: &dyn HubRegistry,
    ids: &[String],
    groups: &[Option<String>],
    named: &[Option<String>],
    never_issued: &std::sync::Mutex<std::collections::HashSet<String>>,
    mut out: Vec<Option<HubIdentity>>,
) -> Result<Vec<Option<HubIdentity>>> {
    let rest: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
    if rest.is_empty() {
        return Ok(out);
    }
    let rest_ids: Vec<String> = rest.iter().map(|&i| ids[i].clone()).collect();
    let rest_groups: Vec<Option<String>> = rest.iter().map(|&i| groups[i].clone()).collect();
    let assigned = assigned_hubs_in(enrollments, &rest_ids, &rest_groups, never_issued)?;
    // The named hub was looked in already and holds no identity of the device.
    let elsewhere = rest
        .iter()
        .zip(assigned)
        .map(|(&i, hub)| hub.filter(|h| named[i].as_ref() != Some(h)));
    let found =
        crate::backend::identities_in_hubs(&rest_ids, elsewhere, |wanted| hubs.identity_many(wanted))?;
    for (&i, identity) in rest.iter().zip(found) {
        out[i] = identity;
    }
    Ok(out)
}

/// Whether two hub identities admit the same certificates the same way (status and
/// thumbprints, which certroll manages; a thumbprint's case is not significant).
fn same_access(a: &HubIdentity, b: &HubIdentity) -> bool {
    let same = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        (None, None) => true,
        _ => false,
    };
    a.status == b.status
        && same(&a.primary_thumbprint, &b.primary_thumbprint)
        && same(&a.secondary_thumbprint, &b.secondary_thumbprint)
}

/// One page of owed deliveries (see `AzureBackend::owed_page`).
struct OwedPage {
    /// The fleet records whose delivery is still due.
    due: Vec<DeviceRecord>,
    /// `(device id, version)` of the rows owed nothing any more, to settle.
    stale: Vec<(String, Option<String>)>,
}

/// What DPS showed of a registration: etag, last update, status (None: no registration).
type Seen = Option<(Option<String>, Option<OffsetDateTime>, String)>;

impl Backend for AzureBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn installs_on_devices(&self) -> bool {
        // A device gets its certificate through the plan's delivery channel, if at all.
        false
    }

    fn begin(&mut self) -> Result<()> {
        // What the courier delivered meanwhile is settled before the unit: a kill during the
        // unit does not undo it.
        self.collect_deliveries(false)?;
        self.vault.local_mut().begin()
    }

    fn in_unit(&self) -> bool {
        self.vault.local().in_unit()
    }

    fn commit(&mut self) -> Result<()> {
        // Deliveries owed by this unit go once the services hold everything they need (see the
        // module doc). A hub update held back for them (a breach) must not outlive a kill, so
        // that unit delivers and cuts first and commits after: a kill in between leaves the
        // unit to its rerun, which delivers again. Any other unit commits first, with what it
        // owes recorded, then delivers, settling each delivery the channel takes: a kill in
        // between leaves them owed, and the next run delivers them (`deliver_owed`).
        if !self.held_cuts.is_empty() {
            if let Err(e) = self.flush(OffsetDateTime::now_utc()) {
                self.vault.local_mut().rollback();
                return Err(e);
            }
            return self.vault.local_mut().commit();
        }
        // What the courier delivered during the unit commits with it (the unit holds the
        // store's one writer until then); an error there is reported after the commit, as
        // before.
        let collected = self.collect_deliveries(false);
        if let Err(e) = self.vault.local_mut().commit() {
            self.pending.clear();
            return Err(e);
        }
        if !self.pending.is_empty() {
            delivery::fault_before_delivery();
            // During a run of units the courier delivers them beside the next unit's imports.
            if self.background {
                let pending = self.take_pending();
                self.pending = self.hand_over(pending);
            }
            if !self.pending.is_empty() {
                self.flush(OffsetDateTime::now_utc())?;
            }
        }
        collected.and(self.collect_deliveries(false))
    }

    fn bulk_writes(&mut self, on: bool) {
        self.background = on;
    }

    fn finish_deliveries(&mut self) -> Result<()> {
        self.collect_deliveries(true)
    }

    fn commit_then_register(
        &mut self,
        requests: &[RegistrationRequest],
        now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        if !self.held_cuts.is_empty() || requests.is_empty() {
            // A held hub update delivers before the commit (see `commit`); with nothing to
            // register, `commit` delivers after it.
            self.commit()?;
            return if requests.is_empty() {
                Ok(Vec::new())
            } else {
                self.register(requests, now)
            };
        }
        // The unit lands with what it owes; `register` then delivers (settling what each
        // channel takes) and asks the devices to register, as after any commit.
        if let Err(e) = self.vault.local_mut().commit() {
            self.pending.clear();
            return Err(e);
        }
        if !self.pending.is_empty() {
            delivery::fault_before_delivery();
        }
        self.register(requests, now)
    }

    fn owes_delivery(&self, id: &str, version: &str) -> Result<bool> {
        self.vault.local().owes_delivery(id, version)
    }

    fn owed_devices(&self) -> Result<Vec<String>> {
        let mut owed = Vec::new();
        let mut after = String::new();
        while let Some(page) = self.owed_page(&mut after)? {
            // Held back for the version it is owed still (a later one of this run is owed).
            owed.extend(
                page.due
                    .into_iter()
                    .filter(|r| {
                        self.held_owed
                            .get(&r.id)
                            .is_none_or(|(v, _)| r.installed_version.as_ref() != Some(v))
                    })
                    .map(|r| r.id),
            );
        }
        Ok(owed)
    }

    fn held_back_deliveries(&self) -> Result<Vec<(String, String)>> {
        // A run that took the enrollment back (its breach) replaced the version: owed no more.
        let mut held = Vec::new();
        for (id, (version, why)) in &self.held_owed {
            if self.vault.local().owes_delivery(id, version)? {
                held.push((id.clone(), why.clone()));
            }
        }
        Ok(held)
    }

    fn delivery_failure(&self, id: &str) -> Option<String> {
        match self.outcomes.get(id) {
            Some(Outcome::Waiting(why)) if !why.starts_with(LEFT_TO_THE_OPERATOR) => {
                Some(why.strip_prefix("delivery failed: ").unwrap_or(why).to_string())
            }
            _ => None,
        }
    }

    fn deliver_owed(&mut self, now: OffsetDateTime) -> Result<(u64, u64)> {
        let (mut delivered, mut waiting) = (0u64, 0u64);
        let mut after = String::new();
        while let Some(OwedPage { due, stale }) = self.owed_page(&mut after)? {
            self.vault.local_mut().settle_deliveries(&stale)?;
            let held = self.held_by_foreign(&due)?;
            let due: Vec<DeviceRecord> = due
                .into_iter()
                .filter(|r| !held.iter().any(|(id, _)| *id == r.id))
                .collect();
            self.held_owed.extend(held);
            if due.is_empty() {
                continue;
            }
            let ids: Vec<String> = due.iter().map(|r| r.id.clone()).collect();
            for r in due {
                self.pending.retain(|p| p.id != r.id);
                self.pending.push(r);
            }
            // What an earlier process imported: each delivery reads its version (and a hook's
            // key) in the pool, `delivery_concurrency` at once, settled as it finishes.
            self.flush_reading(now, true)?;
            for id in &ids {
                match self.outcomes.get(id) {
                    Some(Outcome::Delivered(_)) => delivered += 1,
                    _ => waiting += 1,
                }
            }
        }
        if delivered + waiting > 0 {
            tracing::warn!(
                "{} new certificate(s) an earlier run issued had not reached their devices (the run \
                 was stopped before its deliveries, or a delivery failed): {delivered} delivered now, \
                 {waiting} still owed (the next run tries again)",
                delivered + waiting
            );
        }
        Ok((delivered, waiting))
    }

    fn rollback(&mut self) {
        // What the unit queued is undone with its fleet records.
        self.pending.clear();
        self.held_cuts.clear();
        self.vault.local_mut().rollback();
    }

    fn registrations_and_identities(
        &self,
        ids: &[String],
    ) -> Result<(Vec<Option<RegistrationState>>, Vec<Option<HubIdentity>>)> {
        // A device whose individual enrollment this process read with a state has it from that read
        // (`status`, `check` read the enrollments first); a group's devices from the group's
        // listing; a GET only for the rest. The states go without `with_certificates`: the
        // caller reads the identities (every thumbprint, not only the primary) in one pass.
        let registrations =
            crate::backend::carried_or_read(&*self.enrollments, ids, |rest| self.registration_states(rest))?;
        let hubs = registrations
            .iter()
            .map(|r| r.as_ref().and_then(|r| r.hub.clone()));
        let identities =
            crate::backend::identities_in_hubs(ids, hubs, |wanted| self.hubs.identity_many(wanted))?;
        Ok((registrations, identities))
    }

    /// As [`Backend::assigned_identities`], found hub first (see [`assigned_identities_in`]):
    /// a device with an identity in the hub its enrollment names gets that one, with no DPS
    /// read. It can differ from the identity in the hub DPS last assigned for a device still
    /// registered to an earlier hub that has a leftover identity in the enrollment's hub;
    /// [`assigned_identities_in`] says why that is acceptable.
    fn assigned_identities(&self, ids: &[String]) -> Result<Vec<Option<HubIdentity>>> {
        let (_, groups, named) = self.where_found(ids)?;
        assigned_identities_in(
            &*self.enrollments,
            &*self.hubs,
            ids,
            &groups,
            &named,
            &self.never_issued,
        )
    }

    fn read_ahead(&mut self, next: Option<(&[String], &[String])>) {
        self.ahead = next.map(|(names, ids)| Ahead {
            names: names.to_vec(),
            ids: ids.to_vec(),
            read: None,
        });
    }

    fn chunk_reads(&mut self, names: &[String], ids: &[String]) -> Result<crate::backend::ChunkReads> {
        let ahead = self.ahead.take();
        // Key Vault beside DPS and IoT Hub: each is throttled apart, so a chunk's DPS reads (a
        // GET per individual enrollment) no longer leave Key Vault idle (trial az5: with both
        // throttled, 74% of Key Vault's rate, the phases one after the other).
        let (records, groups, named) = self.where_found(ids)?;
        if let Some(Ahead {
            names: read_names,
            ids: read_ids,
            read: Some(read),
        }) = ahead
            && read_names == names
            && read_ids == ids
            && read.named == named
        {
            let identities = assigned_identities_after(
                &*self.enrollments,
                &*self.hubs,
                ids,
                &groups,
                &named,
                &self.never_issued,
                read.found,
            )?;
            return Ok(crate::backend::ChunkReads {
                versions: read.versions,
                records,
                individuals: read.individuals,
                identities,
            });
        }
        // Each client goes to one thread by a mutable borrow (they are `Send`, not `Sync`).
        let never_issued = &self.never_issued;
        let (vault, enrollments, hubs) = (&mut self.vault, &mut self.enrollments, &mut self.hubs);
        let (versions, others) = std::thread::scope(|s| {
            let kv = s.spawn(move || vault.briefs_many(names));
            // The named hubs' identities beside the enrollments: neither read needs the other,
            // and each is a round trip to its own service.
            let (individuals, found) = std::thread::scope(|s| {
                let (hubs, named) = (&mut *hubs, &named);
                let named_read = s.spawn(move || named_identities(&**hubs, ids, named));
                let individuals = enrollments.individual_many(ids);
                (
                    individuals,
                    named_read.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                )
            });
            let others = (|| -> Result<_> {
                let individuals = individuals?;
                let identities = assigned_identities_after(
                    &**enrollments,
                    &**hubs,
                    ids,
                    &groups,
                    &named,
                    never_issued,
                    found?,
                )?;
                Ok((individuals, identities))
            })();
            (kv.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), others)
        });
        let (individuals, identities) = others?;
        Ok(crate::backend::ChunkReads {
            versions: versions?,
            records,
            individuals,
            identities,
        })
    }

    fn put_individuals_and_identities(
        &mut self,
        individuals: &[IndividualEnrollment],
        identities: &[HubIdentity],
        now: OffsetDateTime,
    ) -> Result<()> {
        if let Some(why) = individuals.iter().find_map(IndividualEnrollment::slots_refused) {
            return Err(BackendError::Refused(why));
        }
        let apply_now = if identities.is_empty() {
            Vec::new()
        } else {
            self.hold_cuts(identities)?
        };
        // The chunk named ahead is read beside these writes, unless they touch one of its
        // devices (then its reads wait for them, as without it).
        let ahead = self.ahead.take().filter(|a| {
            let next: std::collections::HashSet<&str> = a.ids.iter().map(String::as_str).collect();
            a.read.is_none()
                && !individuals
                    .iter()
                    .any(|e| next.contains(e.registration_id.as_str()))
                && !identities.iter().any(|i| next.contains(i.device_id.as_str()))
        });
        let ahead = match ahead {
            Some(a) => {
                let (_, _, named) = self.where_found(&a.ids)?;
                Some((a, named))
            }
            None => None,
        };
        // DPS and IoT Hub are throttled apart: both pipes stay busy.
        let (vault, enrollments, hubs) = (&mut self.vault, &mut self.enrollments, &mut self.hubs);
        let (dps, hub, read) = std::thread::scope(|s| {
            let ahead = ahead.as_ref();
            let versions = ahead.map(move |(a, _)| s.spawn(move || vault.briefs_many(&a.names)));
            let hub = s.spawn(move || match ahead {
                None if apply_now.is_empty() => (Ok(()), None),
                None => (hubs.update_identities(&apply_now, now), None),
                Some((a, named)) => {
                    let mut wrote = Ok(());
                    let found = crate::backend::identities_in_hubs(&a.ids, named.iter().cloned(), |wanted| {
                        let (w, read) = hubs.update_identities_reading(&apply_now, now, wanted);
                        wrote = w;
                        read
                    });
                    (wrote, Some(found))
                }
            });
            let (dps, individuals) = match ahead {
                None if individuals.is_empty() => (Ok(()), None),
                None => (enrollments.put_individuals(individuals, now), None),
                Some((a, _)) => {
                    let (w, read) = enrollments.put_individuals_reading(individuals, now, &a.ids);
                    (w, Some(read))
                }
            };
            let (hub, found) = hub.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            let versions = versions.map(|v| v.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (dps, hub, (versions, individuals, found))
        });
        // A read that failed is made again when the chunk is taken: only the writes' failures
        // are this call's.
        if let (Some((a, named)), (Some(Ok(versions)), Some(Ok(individuals)), Some(Ok(found)))) =
            (ahead, read)
        {
            self.ahead = Some(Ahead {
                read: Some(ReadAhead {
                    named,
                    versions,
                    individuals,
                    found,
                }),
                ..a
            });
        }
        dps.and(hub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend over an azure plan with group `meters` (`m-1`, `m-2`, delivery `none`), its
    /// enrollment service and hub registry an in-memory local store: nothing here reaches a
    /// network (a `none` delivery reads no vault).
    fn offline_backend() -> AzureBackend {
        let text = "version = 1\n\
            [backend]\nkind = \"azure\"\nvault_url = \"https://certroll.vault.azure.net\"\n\
            auth = \"token-env\"\ntoken_env = \"CERTROLL_UNIT_TOKEN\"\n\
            [policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 365\n\
            [policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\nvalidity_days = 3650\n\
            key_usage = [\"keyCertSign\", \"cRLSign\", \"digitalSignature\"]\n\
            [ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
            [groups.meters]\nsigning_ca = \"root\"\nhub = \"h\"\ndevice_policy = \"device\"\n\
            devices = { prefix = \"m-\", count = 2 }\n";
        let plan = crate::plan::parse(&std::env::temp_dir().join("plan.toml"), text).expect("the test plan");
        let local = || LocalBackend::new(crate::store::Store::open_empty().unwrap());
        let credential = std::sync::Arc::new(super::super::EnvTokenCredential::new("t".into()));
        let vault = AzureVault::connect_with(plan.azure.as_ref().unwrap(), local(), credential).unwrap();
        AzureBackend::from_parts(&plan, vault, Box::new(local()), Box::new(local()))
    }

    fn never_issued(backend: &AzureBackend, id: &str) -> bool {
        backend.never_issued.lock().unwrap().contains(id)
    }

    /// A device read before certroll issued it is taken as holding no registration certroll
    /// caused only until a delivery leaves for it: one delivered from `install` (or `commit`)
    /// and read again in the same process may have registered since, and is read on its own
    /// when its group's listing lacks it (the group gone), not reported as never registered.
    /// No verb reads a device again between such a delivery and its `register` (which also
    /// clears it), so this is checked here.
    #[test]
    fn a_delivery_ends_a_device_s_never_issued_mark() {
        let mut backend = offline_backend();
        let ids = vec!["m-1".to_string(), "m-2".to_string()];
        backend.registration_many(&ids).unwrap();
        assert!(never_issued(&backend, "m-1") && never_issued(&backend, "m-2"));
        let record = DeviceRecord {
            id: "m-1".into(),
            group: Some("meters".into()),
            enrollment: None,
            cert_name: "dev-m-1".into(),
            installed_version: Some("v1".into()),
        };
        // Outside a unit, `install` commits and delivers at once.
        backend.install(std::slice::from_ref(&record)).unwrap();
        assert!(
            matches!(backend.outcome("m-1"), Some(Outcome::Waiting(_))),
            "the delivery ran: {:?}",
            backend.outcome("m-1")
        );
        assert!(
            !never_issued(&backend, "m-1"),
            "delivered: DPS may hold its registration"
        );
        assert!(never_issued(&backend, "m-2"), "m-2 got nothing");
        // A unit's deliveries leave after its commit.
        backend.begin().unwrap();
        backend
            .install(&[DeviceRecord {
                id: "m-2".into(),
                cert_name: "dev-m-2".into(),
                ..record
            }])
            .unwrap();
        assert!(never_issued(&backend, "m-2"), "nothing left before the commit");
        backend.commit().unwrap();
        assert!(!never_issued(&backend, "m-2"), "delivered after the commit");
    }

    /// A chunk read beside the writes of another ([`Backend::read_ahead`]) is handed to the
    /// chunk's read only when those writes held none of its devices, and only to a read of the
    /// same devices; anything else reads afresh. (No names: the offline vault reads nothing.)
    #[test]
    fn a_chunk_read_ahead_is_taken_only_when_no_write_touched_its_devices() {
        let mut backend = offline_backend();
        let enrollment = |id: &str| IndividualEnrollment {
            registration_id: id.into(),
            primary: Some(vec![1, 2, 3]),
            secondary: None,
            status: Status::Enabled,
            reprovision: "migrate".into(),
            hub: "h".into(),
            foreign: Vec::new(),
            take_back: false,
        };
        let (m1, m2) = (vec!["m-1".to_string()], vec!["m-2".to_string()]);
        let now = OffsetDateTime::UNIX_EPOCH;
        // Of each device read ahead, whether it has an enrollment.
        let read_of = |b: &AzureBackend| {
            b.ahead
                .as_ref()
                .and_then(|a| a.read.as_ref())
                .map(|r| r.individuals.iter().map(Option::is_some).collect::<Vec<_>>())
        };

        // Written beside the read ahead of another device: taken.
        backend.read_ahead(Some((&[], &m2)));
        backend
            .put_individuals_and_identities(&[enrollment("m-1")], &[], now)
            .unwrap();
        assert_eq!(
            read_of(&backend),
            Some(vec![false]),
            "m-2 was read beside m-1's write"
        );
        let reads = backend.chunk_reads(&[], &m2).unwrap();
        assert!(backend.ahead.is_none(), "taken");
        assert!(reads.individuals.len() == 1 && reads.individuals[0].is_none());

        // A write of the device read ahead: no read beside it.
        backend.read_ahead(Some((&[], &m1)));
        let mut changed = enrollment("m-1");
        changed.secondary = Some(vec![4, 5, 6]);
        backend
            .put_individuals_and_identities(std::slice::from_ref(&changed), &[], now)
            .unwrap();
        assert!(
            backend.ahead.is_none(),
            "nothing read beside a write of the same device"
        );
        let reads = backend.chunk_reads(&[], &m1).unwrap();
        assert_eq!(
            reads.individuals[0].as_ref().unwrap().secondary,
            changed.secondary
        );

        // Read ahead, then asked for other devices: read afresh, the read ahead dropped.
        backend.read_ahead(Some((&[], &m2)));
        backend.put_individuals_and_identities(&[], &[], now).unwrap();
        assert!(read_of(&backend).is_some());
        let reads = backend.chunk_reads(&[], &m1).unwrap();
        assert_eq!(
            reads.individuals[0].as_ref().unwrap().secondary,
            changed.secondary
        );
        assert!(backend.ahead.is_none(), "a read ahead serves one read at most");
    }
}
