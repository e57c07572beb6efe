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
//!   what it owes recorded, then delivers**, settling each delivery its channel takes (outside
//!   a unit: at once). A kill after the commit re-delivers at most what was in flight (taken by
//!   a channel, not yet settled); one cut off before it, or that failed, stays owed and visible
//!   (`status`, `check`, the reports' `deliveries_owed`), and [`Backend::deliver_owed`] (called
//!   by `issue` and the rolls before their own work) delivers it. Hooks run up to
//!   `[backend] delivery_concurrency` at once; direct methods are awaited as many at once.
//! - A unit that ends in registrations (`issue`'s) commits and then registers
//!   ([`Backend::commit_then_register`]): `register` delivers first. A unit without them (an
//!   expiry roll's) delivers after [`Backend::commit`]; during a run of chunked writes
//!   ([`Backend::bulk_writes`]) on a thread of its own (the courier, with its own Key Vault and
//!   IoT Hub clients, which share the main clients' pacing: the plan's rates and bounds are
//!   what each service sees of the run, deliveries included), beside the next unit's imports,
//!   so a throttled Key Vault never idles the delivery channel nor the channel the imports. What the courier delivered is settled
//!   between units (before the next `begin`, after each `commit`), and waited for by
//!   [`Backend::finish_deliveries`] (and on drop).
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
    /// DPS record name (registration id or group name) → the vault names of its certificates.
    hints: HashMap<String, Vec<String>>,
    /// The certificates recorded as issued to the plan's individual enrollments (store table
    /// `issued_versions`), by SHA-1 thumbprint: a certificate is its own proof, so an
    /// enrollment's slot holding one of them needs no read of the vault.
    recorded: ThumbprintDer,
}

/// SHA-1 thumbprint (upper-case hex) → certificate (DER).
type ThumbprintDer = HashMap<String, Vec<u8>>;

/// SHA-1 thumbprint (upper-case hex) → (vault name, version).
type ThumbprintIndex = HashMap<String, (String, String)>;

impl VaultIndex {
    const MAX_BUILDS: usize = 3;

    /// The certificates the store beside the plan records as issued to the plan's individual
    /// enrollments ([`VaultIndex::recorded`]).
    fn recorded(local: &LocalBackend, plan: &Plan) -> std::result::Result<ThumbprintDer, SetupError> {
        let names: Vec<String> = plan
            .enrollments
            .keys()
            .map(|e| crate::backend::types::device_cert_name(e))
            .collect();
        let recorded = crate::store::queries_issued::issued_many(local.store().conn(), &names)
            .map_err(|e| SetupError::Client(format!("reading the store beside the plan: {e}")))?;
        Ok(recorded
            .into_iter()
            .flatten()
            .map(|r| (crate::pki::sha1_thumbprint(&r.cert_der), r.cert_der))
            .collect())
    }

    /// An index over `vault`, with the vault names of the plan's enrollments and groups and the
    /// certificates `recorded` ([`VaultIndex::recorded`]).
    fn new(vault: AzureVault, plan: &Plan, recorded: ThumbprintDer) -> VaultIndex {
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
            hints,
            recorded,
        }
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

    /// The certificate of `sha1_thumbprint`: `Ok(None)` when the vault holds none; the vault's
    /// error when a read it needed failed and the certificate was not found otherwise.
    fn lookup(&self, sha1_thumbprint: &str, whose: Option<&str>) -> Result<Option<Vec<u8>>> {
        let vault = self.vault.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.by_thumbprint.lock().unwrap_or_else(|p| p.into_inner());
        let tp = sha1_thumbprint.to_ascii_uppercase();
        if let Some(der) = self.recorded.get(&tp) {
            return Ok(Some(der.clone()));
        }
        // The first read that failed: the cause when the certificate is not found by other means.
        let mut failure = None;
        if !index.1.contains_key(&tp)
            && let Some(whose) = whose
        {
            // A device's own name when the plan does not know it (a registration id is the
            // device id).
            let names = self
                .hints
                .get(whose)
                .cloned()
                .unwrap_or_else(|| vec![crate::backend::types::device_cert_name(whose)]);
            if let Err(e) = Self::add(&vault, &names, &mut index.1) {
                tracing::warn!("cannot read the vault certificates of `{whose}`: {e}");
                failure = Some(e);
            }
        }
        if !index.1.contains_key(&tp) && index.0 < Self::MAX_BUILDS {
            match Self::build(&vault) {
                Ok(map) => *index = (index.0 + 1, map),
                Err(e) => {
                    tracing::warn!("cannot index the vault's certificates: {e}");
                    failure.get_or_insert(e);
                }
            }
        }
        match index.1.get(&tp) {
            Some((name, version)) => vault.certificate_der(name, version),
            None => failure.map_or(Ok(None), Err),
        }
    }
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
    /// Devices this process found without a fleet record (certroll never issued them a
    /// certificate) and no `register` of this process took up yet (its deliveries and asks
    /// come after its first read): DPS holds no registration of theirs that certroll caused,
    /// so a group listing that lacks one needs no read of its own to say so (see
    /// [`EnrollmentService::group_registration_many`]).
    never_issued: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Whether a committed unit's deliveries go to the [`Courier`] (during a run of chunked
    /// writes, [`Backend::bulk_writes`]) instead of running before the next unit starts.
    background: bool,
    /// The thread delivering beside the next unit's work, once started.
    courier: Option<Courier>,
    /// Makes the courier's own clients (None: deliveries run here, or the courier started).
    courier_clients: Option<CourierClients>,
    /// How many certificates this backend left to the operator (`delivery = "none"`), and the
    /// first device: one warning line says so when the backend is dropped.
    for_the_operator: (u64, Option<String>),
    describe: String,
}

/// Makes the clients a [`Courier`] delivers with: a Key Vault client of its own (the
/// backend's is busy with the next unit's imports) and an IoT Hub client for direct methods,
/// each sharing the pacing of the backend's client of that service.
type CourierClients =
    Box<dyn FnOnce() -> std::result::Result<(AzureVault, Box<dyn HubRegistry + Send>), SetupError> + Send>;

/// A thread running committed units' deliveries ([`deliver`]) one batch after another, beside
/// the next units' work: a throttled Key Vault does not idle the delivery channels, nor slow
/// deliveries the imports. Its batches run up to `delivery_concurrency` deliveries at once, as
/// they would in the foreground. What it delivered is settled by the backend between units.
struct Courier {
    /// Batches to deliver (dropped to end the thread).
    jobs: Option<std::sync::mpsc::Sender<Vec<DeviceRecord>>>,
    /// What became of each batch, in the order sent.
    done: std::sync::mpsc::Receiver<Delivered>,
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
                dps.set_certificate_source(Box::new(VaultIndex::new(index, plan, recorded)));
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
        backend.courier_clients = Some(Box::new(move || {
            let store = crate::store::Store::open_empty()
                .map_err(|e| SetupError::Client(format!("in-memory store: {e}")))?;
            let vault = AzureVault::connect_sharing(
                &config,
                LocalBackend::new(store),
                courier_credential,
                &vault_pacing,
            )?;
            let hubs: Box<dyn HubRegistry + Send> =
                Box::new(AzureHubRegistry::sharing(&config, &hub_pacing)?);
            Ok((vault, hubs))
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
            never_issued: std::sync::Mutex::default(),
            background: false,
            courier: None,
            courier_clients: None,
            for_the_operator: (0, None),
            describe,
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

    /// What a delivery needs of the plan (a copy, for a thread of its own).
    fn routes(&self) -> Routes {
        Routes {
            delivery: self.delivery.clone(),
            group_hubs: self.group_hubs.clone(),
            enrollment_hubs: self.enrollment_hubs.clone(),
            secret_vars: self.secret_vars.clone(),
        }
    }

    /// Runs the queued deliveries here and now (see [`deliver`]), records what became of them
    /// ([`take_delivered`](Self::take_delivered)), then makes the hub updates held back for them.
    fn flush(&mut self, now: OffsetDateTime) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let routes = self.routes();
        let delivered = deliver(&routes, &self.vault, &mut *self.hubs, pending, now, true);
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
            let (vault, mut hubs) = match make() {
                Ok(clients) => clients,
                Err(e) => {
                    tracing::warn!(
                        "deliveries wait for each unit: cannot connect a client to deliver beside it: {e}"
                    );
                    return pending;
                }
            };
            let routes = self.routes();
            let (jobs, queue) = std::sync::mpsc::channel::<Vec<DeviceRecord>>();
            let (finished, done) = std::sync::mpsc::channel::<Delivered>();
            let thread = std::thread::Builder::new()
                .name("certroll-deliveries".into())
                .spawn(move || {
                    for batch in queue {
                        // No progress stage: the unit under way shows its own.
                        let delivered = deliver(
                            &routes,
                            &vault,
                            &mut *hubs,
                            batch,
                            OffsetDateTime::now_utc(),
                            false,
                        );
                        if finished.send(delivered).is_err() {
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

    /// Records what the courier delivered ([`take_delivered`](Self::take_delivered); call
    /// outside a unit, so each settlement lands at once): every batch it finished, or with
    /// `wait`, every batch sent to it. Returns the first error a batch met.
    fn collect_deliveries(&mut self, wait: bool) -> Result<()> {
        let mut first = None;
        while let Some(courier) = self.courier.as_mut().filter(|c| c.in_flight > 0) {
            let got = if wait {
                courier.done.recv().ok()
            } else {
                match courier.done.try_recv() {
                    Ok(delivered) => Some(delivered),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                }
            };
            let Some(delivered) = got else {
                // The thread ended early (it panicked): what it had not delivered stays owed.
                courier.in_flight = 0;
                first = first.or(Some(BackendError::Refused(
                    "the delivery thread stopped; the certificates it had not delivered stay owed".into(),
                )));
                break;
            };
            courier.in_flight -= 1;
            if let Err(e) = self.take_delivered(delivered) {
                first = first.or(Some(e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Records what became of a batch of deliveries: what the channels took is owed no more
    /// (in the unit when one is open: a unit rolled back leaves it owed, and its rerun delivers
    /// it again), each outcome is kept for `register` and the report, and one that did not
    /// reach its device is logged. Returns the error that stopped the batch, if one did.
    fn take_delivered(&mut self, delivered: Delivered) -> Result<()> {
        let Delivered {
            pending,
            outcomes,
            error,
        } = delivered;
        self.vault
            .local_mut()
            .settle_deliveries(&settled(&pending, &outcomes))?;
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
            let under: Vec<String> = page
                .iter()
                .zip(self.vault.briefs_many(&names)?)
                .filter(|(d, briefs)| {
                    briefs.iter().any(|b| {
                        d.installed_version.as_deref() == Some(b.version.as_str())
                            && b.issuer.as_ref().is_some_and(|i| issuers.contains(i))
                    })
                })
                .map(|(d, _)| d.id.clone())
                .collect();
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
}

impl EnrollmentService for AzureBackend {
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
        {
            let mut never_issued = self.never_issued.lock().unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                never_issued.remove(id);
            }
        }
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

/// The certificates above a version (issuer first), following the issuer links in the vault.
fn chain_above(vault: &AzureVault, version: &VaultVersion) -> Result<Vec<Vec<u8>>> {
    let mut chain = Vec::new();
    let mut next = version.issuer.clone();
    while let Some((name, ver)) = next {
        if chain.len() > 16 {
            return Err(BackendError::Refused(format!(
                "issuer chain of `{}` is longer than 16 certificates",
                version.name
            )));
        }
        let v = vault.version(&name, &ver)?.map(Ok).unwrap_or_else(|| {
            let deleted = vault.deleted_certificates(Some(&name))?;
            Err(crate::backend::missing_issuer(&name, &ver, deleted.first()))
        })?;
        chain.push(v.cert_der);
        next = v.issuer;
    }
    Ok(chain)
}

/// Makes a record's delivery ready for its channel: reads the version it names (and for a
/// hook, its key and chain, for the PFX) from the vault. Errors are the vault's; `none` and a
/// record without a version are an outcome at once.
fn prepare(routes: &Routes, vault: &AzureVault, record: &DeviceRecord) -> Result<Prepared> {
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
                let above = chain_above(vault, &version)?;
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

/// Runs the deliveries of `pending` through their channels (see the module doc): hooks up to
/// `[backend] delivery_concurrency` at once while the next ones are made ready (each key is
/// read from the vault only when a hook runner is free to take it, and the runner makes the
/// PFX: its key derivation is the slow part); direct methods go out together after, as many
/// awaited at once. Nothing is recorded here: the caller settles what the channels took
/// (`AzureBackend::take_delivered`). `show_progress`: whether the batch has a progress stage
/// (not beside another stage's work).
fn deliver(
    routes: &Routes,
    vault: &AzureVault,
    hubs: &mut dyn HubRegistry,
    pending: Vec<DeviceRecord>,
    now: OffsetDateTime,
    show_progress: bool,
) -> Delivered {
    let stage = crate::progress::stage("deliveries", if show_progress { pending.len() as u64 } else { 0 });
    let concurrency = routes.delivery.concurrency.max(1);
    let secret_vars = &routes.secret_vars;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; pending.len()];
    let mut methods: Vec<(usize, String)> = Vec::new();
    let mut calls: Vec<(String, String, DirectMethodCall)> = Vec::new();
    let (jobs, queue) = std::sync::mpsc::sync_channel::<HookJob>(concurrency);
    let queue = std::sync::Mutex::new(queue);
    let (done, finished) = std::sync::mpsc::channel::<(usize, Result<Outcome>)>();
    let prepared: Result<()> = std::thread::scope(|s| {
        // Dropped when this closure returns, error or not, so idle hook runners end.
        let jobs = jobs;
        let mut runners = 0;
        for (i, record) in pending.iter().enumerate() {
            match prepare(routes, vault, record)? {
                Prepared::Done(outcome) => {
                    stage.advance(1);
                    outcomes[i] = Some(outcome);
                }
                Prepared::Hook(job) => {
                    if runners < concurrency {
                        runners += 1;
                        let (queue, secret_vars, stage, done) = (&queue, secret_vars, &stage, done.clone());
                        s.spawn(move || {
                            loop {
                                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                                let Ok(HookJob { at, cfg, parcel, pfx }) = next else {
                                    break;
                                };
                                let made = pfx
                                    .map(|(key, chain)| {
                                        crate::pki::pkcs12::write_pfx(&parcel.device_id, &key, &chain, "")
                                            .map(zeroize::Zeroizing::new)
                                    })
                                    .transpose();
                                let outcome = match made {
                                    Err(e) => Err(BackendError::from(e)),
                                    Ok(pfx) => Ok(
                                        match delivery::run_hook(&cfg, &parcel, pfx.as_ref(), secret_vars) {
                                            Ok(()) => {
                                                Outcome::Delivered(format!("hook `{}`", cfg.command[0]))
                                            }
                                            Err(e) => Outcome::Waiting(format!("delivery failed: {e}")),
                                        },
                                    ),
                                };
                                stage.advance(1);
                                if done.send((at, outcome)).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    let job = HookJob { at: i, ..job };
                    if jobs.send(job).is_err() {
                        return Err(BackendError::Refused("the delivery hooks stopped".into()));
                    }
                }
                Prepared::Method { method, parcel } => {
                    calls.push((
                        parcel.hub.clone(),
                        parcel.device_id.clone(),
                        delivery::method_call(&method, &parcel),
                    ));
                    methods.push((i, method));
                }
            }
        }
        Ok(())
    });
    drop(done);
    let mut failed = None;
    for (at, outcome) in finished.try_iter() {
        match outcome {
            Ok(outcome) => outcomes[at] = Some(outcome),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Err(e) = prepared.and(failed.map_or(Ok(()), Err)) {
        // The hooks that ran took their certificates (settled by the caller, so no later
        // run hands them over again); the rest stay owed.
        return Delivered {
            pending,
            outcomes,
            error: Some(e),
        };
    }
    let answers = hubs.invoke_methods(&calls, concurrency, now);
    stage.advance(calls.len() as u64);
    let mut method_failed = None;
    for ((at, method), answer) in methods.into_iter().zip(answers) {
        outcomes[at] = match answer {
            Ok(answer) if answer.status == 200 => {
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
                method_failed = method_failed.or(Some(e));
                None
            }
        };
    }
    Delivered {
        pending,
        outcomes,
        error: method_failed,
    }
}

impl Drop for AzureBackend {
    /// Settles what the courier delivers, then says in one line how many certificates the verb
    /// left to the operator (`delivery = "none"` is the operator's choice, not a fault: one
    /// line however many enrollments and chunks it wrote).
    fn drop(&mut self) {
        self.settle_courier();
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

/// The `(device id, version)` of each delivery the channel took, to settle what it was owed.
fn settled(pending: &[DeviceRecord], outcomes: &[Option<Outcome>]) -> Vec<(String, Option<String>)> {
    pending
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| matches!(o, Some(Outcome::Delivered(_))))
        .map(|(r, _)| (r.id.clone(), r.installed_version.clone()))
        .collect()
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
        if let Err(e) = self.vault.local_mut().commit() {
            self.pending.clear();
            return Err(e);
        }
        if !self.pending.is_empty() {
            delivery::fault_before_delivery();
            // During a run of units the courier delivers them beside the next unit's imports.
            if self.background {
                let pending = std::mem::take(&mut self.pending);
                self.pending = self.hand_over(pending);
            }
            if !self.pending.is_empty() {
                self.flush(OffsetDateTime::now_utc())?;
            }
        }
        self.collect_deliveries(false)
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
            owed.extend(page.due.into_iter().map(|r| r.id));
        }
        Ok(owed)
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
            if due.is_empty() {
                continue;
            }
            let ids: Vec<String> = due.iter().map(|r| r.id.clone()).collect();
            for r in due {
                self.pending.retain(|p| p.id != r.id);
                self.pending.push(r);
            }
            self.flush(now)?;
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
        // A device whose individual enrollment this process read has its state from that read
        // (`status`, `check` read the enrollments first); a group's devices from the group's
        // listing; a GET only for the rest. The states go without `with_certificates`: the
        // caller reads the identities (every thumbprint, not only the primary) in one pass.
        let carried = self.enrollments.carried_registrations(ids);
        let rest: Vec<String> = ids
            .iter()
            .zip(&carried)
            .filter(|(_, c)| c.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut read = self.registration_states(&rest)?.into_iter();
        let registrations: Vec<Option<RegistrationState>> = carried
            .into_iter()
            .map(|c| c.unwrap_or_else(|| read.next().flatten()))
            .collect();
        let hubs = registrations
            .iter()
            .map(|r| r.as_ref().and_then(|r| r.hub.clone()));
        let identities =
            crate::backend::identities_in_hubs(ids, hubs, |wanted| self.hubs.identity_many(wanted))?;
        Ok((registrations, identities))
    }

    fn assigned_identities(&self, ids: &[String]) -> Result<Vec<Option<HubIdentity>>> {
        // The hubs from what DPS's enrollment reads carried (a GET only for the rest), the
        // identities by the hub's registry query.
        crate::backend::identities_in_hubs(ids, self.assigned_hubs(ids)?, |wanted| {
            self.hubs.identity_many(wanted)
        })
    }

    fn chunk_reads(&mut self, names: &[String], ids: &[String]) -> Result<crate::backend::ChunkReads> {
        // Key Vault beside DPS and IoT Hub: each is throttled apart, so a chunk's DPS reads (a
        // GET per individual enrollment) no longer leave Key Vault idle (trial az5: with both
        // throttled, 74% of Key Vault's rate, the phases one after the other).
        let records = self.vault.local().device_many(ids)?;
        let groups = self.groups_of_records(ids, &records);
        // Each client goes to one thread by a mutable borrow (they are `Send`, not `Sync`).
        let never_issued = &self.never_issued;
        let (vault, enrollments, hubs) = (&mut self.vault, &mut self.enrollments, &mut self.hubs);
        let (versions, others) = std::thread::scope(|s| {
            let kv = s.spawn(move || vault.briefs_many(names));
            let others = (|| -> Result<_> {
                let individuals = enrollments.individual_many(ids)?;
                let assigned = assigned_hubs_in(&**enrollments, ids, &groups, never_issued)?;
                let identities =
                    crate::backend::identities_in_hubs(ids, assigned, |wanted| hubs.identity_many(wanted))?;
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
        // DPS and IoT Hub are throttled apart: both pipes stay busy.
        let (enrollments, hubs) = (&mut self.enrollments, &mut self.hubs);
        let (dps, hub) = std::thread::scope(|s| {
            let hub = s.spawn(|| {
                if apply_now.is_empty() {
                    Ok(())
                } else {
                    hubs.update_identities(&apply_now, now)
                }
            });
            let dps = if individuals.is_empty() {
                Ok(())
            } else {
                enrollments.put_individuals(individuals, now)
            };
            (dps, hub.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        dps.and(hub)
    }
}
