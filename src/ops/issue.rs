//! `issue`: creates whatever the plan declares and the state lacks, in dependency order: CA
//! chains in the vault, root CAs uploaded to the enrollment service and verified by proof of
//! possession, enrollment groups, device certificates installed on devices, individual
//! enrollments, and finally each device's registration (which creates its hub identity).
//!
//! Every step first checks the state, so a rerun (or a run after a crash) does only what is
//! left. Devices are handled in chunks: keys and signatures in parallel, store writes batched.

use super::{
    Access, BackendSettings, LoadedIssuer, Target, ca_cert_name, device_cert_name, device_owner,
    effective_key_usage, exportable, load_issuer, open_verb_backend, policy_json,
};
use crate::backend::Backend;
use crate::backend::types::*;
use crate::pki::cert::{CertProfile, sign_public_key, sign_public_key_with_facts};
use crate::pki::spec::Subject;
use crate::pki::{PrivateKey, SubjectKey};
use crate::plan::{CaSpec, EnrollmentSpec, GroupSpec, Plan, Policy};
use anyhow::{Context as _, Result, bail};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// Devices per batch: large enough to amortise a transaction, small enough to stream.
const CHUNK: usize = 2048;

/// Options of `issue`.
#[derive(Debug, Clone, Default)]
pub struct IssueOptions {
    /// Only these targets (and what they depend on); empty = everything.
    pub targets: Vec<Target>,
    /// Print the steps, change nothing.
    pub dry_run: bool,
    /// How to open the backend.
    pub backend: BackendSettings,
}

/// One step `issue` took (or, in a dry run, would take).
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What kind of step: create-ca, upload-ca, verify-ca, create-group, issue-device-certs,
    /// create-enrollments, register-devices.
    pub action: &'static str,
    /// What it acts on (`ca:root`, `group:sensors`, ...).
    pub target: String,
    /// How many objects (devices for the device steps, 1 otherwise).
    pub count: u64,
    /// A human description.
    pub detail: String,
}

/// A device the enrollment service refused.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// Device id.
    pub device: String,
    /// Why.
    pub reason: String,
    /// The service refused nothing: the device has not registered (yet) with the certificate
    /// (registration status `waiting`: its delivery or the request to register did not get
    /// through).
    #[serde(skip)]
    pub waiting: bool,
}

/// What `issue` did.
#[derive(Debug, Clone, Serialize)]
pub struct IssueReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Devices whose registration was refused (none in a healthy plan).
    pub rejected: Vec<Rejection>,
    /// Devices still owed the delivery of a new certificate after this run (on azure: this
    /// run's or an earlier one's delivery failed): the next `issue` or roll delivers them; the
    /// run exits 1.
    pub deliveries_owed: u64,
    /// Owed deliveries this run held back: DPS would refuse the certificate, since another
    /// client's certificate holds its place in the device's individual enrollment. Not counted
    /// in [`deliveries_owed`](Self::deliveries_owed), nor a reason to exit 1: the device is
    /// `check`'s critical problem, whose remedy lets the delivery go on.
    pub held_back_deliveries: Vec<HeldDelivery>,
    /// Devices this run left alone, each as a roll reports it (see
    /// [`crate::ops::roll::DeviceRoll`]): outcome `foreign`, another client's certificate in its
    /// individual enrollment, its steps naming that certificate and the remedy. The run issued
    /// everything else; it exits 1, and its rerun finishes the device once the operator has
    /// acted. The devices it issued are counted in [`steps`](Self::steps), not listed here.
    pub devices: Vec<crate::ops::roll::DeviceRoll>,
}

/// An owed delivery a run held back ([`crate::backend::Backend::held_back_deliveries`]).
#[derive(Debug, Clone, Serialize)]
pub struct HeldDelivery {
    /// `device:ID`.
    pub target: String,
    /// Why, with the way on.
    pub reason: String,
}

/// The owed deliveries `backend` held back in this process, as reports list them.
pub(crate) fn held_deliveries(backend: &dyn Backend) -> Result<Vec<HeldDelivery>> {
    Ok(backend
        .held_back_deliveries()?
        .into_iter()
        .map(|(id, reason)| HeldDelivery {
            target: format!("device:{id}"),
            reason,
        })
        .collect())
}

impl IssueReport {
    /// Whether there was nothing to do (and no device left alone).
    pub fn nothing_to_do(&self) -> bool {
        self.steps.is_empty() && self.devices.is_empty()
    }
}

/// The human wording of a device step on the azure backend, where certroll holds no device:
/// it delivers through the unit's channel (or leaves it to the operator), and each device
/// registers with DPS itself. `None` for other steps and on the local backend. The report's
/// `detail` (and so `-o json`) keeps one wording on both backends, which the conformance suite
/// compares.
pub fn azure_detail(plan: &Plan, step: &Step) -> Option<String> {
    plan.azure.as_ref()?;
    let (kind, name) = step.target.split_once(':')?;
    let (group, enrollment) = match kind {
        "group" => (Some(name), None),
        "enrollment" => (None, Some(name)),
        _ => return None,
    };
    let n = step.count;
    match step.action {
        "install-device-certs" => Some(match plan.delivery.channel(group, enrollment) {
            crate::plan::Delivery::DirectMethod { method } => {
                format!(
                    "deliver the new certificate to {n} device(s) by the IoT Hub direct method `{method}`"
                )
            }
            crate::plan::Delivery::Hook(_) => {
                format!("deliver the new certificate to {n} device(s) through the delivery hook")
            }
            _ => format!(
                "leave the new certificate of {n} device(s) for the operator to hand out \
                 (delivery = \"none\": `certroll export device:ID --with-key`)"
            ),
        }),
        "register-devices" => {
            let hub = step
                .detail
                .rsplit_once("onto hub ")
                .map(|(_, h)| h)
                .unwrap_or_default();
            Some(format!(
                "wait for {n} device(s) to register with DPS themselves, each with its new certificate, onto hub {hub}"
            ))
        }
        _ => None,
    }
}

/// Progress of the device loop, for a progress bar.
pub trait Progress {
    /// Called once with the number of devices to look at.
    fn start(&self, total: u64);
    /// Called as devices are done.
    fn advance(&self, n: u64);
    /// Called at the end.
    fn finish(&self);
}

/// No progress display.
pub struct NoProgress;
impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What the selection of targets includes.
struct Selection {
    cas: BTreeSet<String>,
    groups: BTreeSet<String>,
    enrollments: BTreeSet<String>,
    /// `Some` = only these devices of the selected groups.
    devices: Option<BTreeSet<String>>,
}

fn select(plan: &Plan, targets: &[Target]) -> Result<Selection> {
    if targets.is_empty() {
        return Ok(Selection {
            cas: plan.cas.iter().map(|c| c.name.clone()).collect(),
            groups: plan.groups.keys().cloned().collect(),
            enrollments: plan.enrollments.keys().cloned().collect(),
            devices: None,
        });
    }
    let mut sel = Selection {
        cas: BTreeSet::new(),
        groups: BTreeSet::new(),
        enrollments: BTreeSet::new(),
        devices: None,
    };
    let mut whole_groups = BTreeSet::new();
    let mut some_devices = BTreeSet::new();
    for target in targets {
        target.check(plan)?;
        match target {
            Target::Ca(name) => add_ca_chain(plan, name, &mut sel.cas),
            Target::Group(name) => {
                add_ca_chain(plan, &plan.groups[name].signing_ca, &mut sel.cas);
                sel.groups.insert(name.clone());
                whole_groups.insert(name.clone());
            }
            Target::Enrollment(name) => {
                add_ca_chain(plan, &plan.enrollments[name].issuer, &mut sel.cas);
                sel.enrollments.insert(name.clone());
            }
            Target::Device(id) => match device_owner(plan, id) {
                Some(super::DeviceOwner::Enrollment(e)) => {
                    add_ca_chain(plan, &e.issuer, &mut sel.cas);
                    sel.enrollments.insert(e.name.clone());
                }
                Some(super::DeviceOwner::Group(g)) => {
                    add_ca_chain(plan, &g.signing_ca, &mut sel.cas);
                    sel.groups.insert(g.name.clone());
                    some_devices.insert(id.clone());
                }
                None => unreachable!("checked above"),
            },
        }
    }
    if !some_devices.is_empty() {
        // Whole groups named as targets include all their devices; add those ids lazily by
        // treating a device filter as "these ids, plus every id of a whole group".
        if whole_groups.is_empty() {
            sel.devices = Some(some_devices);
        } else {
            for g in &whole_groups {
                some_devices.extend(plan.groups[g].device_ids());
            }
            sel.devices = Some(some_devices);
        }
    }
    Ok(sel)
}

fn add_ca_chain(plan: &Plan, name: &str, out: &mut BTreeSet<String>) {
    let mut next = Some(name.to_string());
    while let Some(n) = next {
        next = plan
            .cas
            .iter()
            .find(|c| c.name == n)
            .and_then(|c| c.issuer.clone());
        out.insert(n);
    }
}

/// Refuses, before anything is written, targets whose certificate is soft-deleted in the vault
/// (`vault delete`): a deleted name can be neither used nor created again until it is recovered
/// or purged, as in Key Vault. `targets` are `ca:NAME` and `device:ID`; the first one found is
/// named, with both ways out.
pub(crate) fn refuse_deleted(backend: &dyn Backend, targets: impl Iterator<Item = Target>) -> Result<()> {
    let deleted = backend.deleted_certificates(None)?;
    if deleted.is_empty() {
        return Ok(());
    }
    for target in targets {
        let name = match &target {
            Target::Ca(ca) => ca_cert_name(ca),
            Target::Device(id) | Target::Enrollment(id) => device_cert_name(id),
            Target::Group(_) => continue,
        };
        if let Some(d) = deleted.iter().find(|d| d.name == name) {
            let again = match &target {
                Target::Ca(ca) => format!("`certroll issue ca:{ca}`"),
                _ => format!("`certroll issue {target}`"),
            };
            return Err(crate::error::input(format!(
                "{target}: its certificate `{name}` is deleted in the vault (deleted {}, purged for good on {}); \
                 bring it back with `certroll vault recover {name}`, or purge it with `certroll vault purge {name}` \
                 and run {again} for a new one. Nothing was changed",
                crate::clock::rfc3339(d.deleted),
                crate::clock::rfc3339(d.scheduled_purge)
            )));
        }
    }
    Ok(())
}

/// Refuses, before anything is written, devices that hold a certificate certroll issued which the
/// vault no longer has: it was purged (`vault purge`), so nothing can renew it; the message says
/// so, and that `issue` makes a new one (a soft-deleted certificate is named by
/// [`refuse_deleted`]).
pub(crate) fn refuse_purged<'a>(backend: &dyn Backend, ids: impl Iterator<Item = &'a String>) -> Result<()> {
    let mut chunk: Vec<String> = Vec::with_capacity(CHUNK);
    let check = |chunk: &mut Vec<String>| -> Result<()> {
        if let Some(id) = backend.first_purged(chunk)? {
            let name = device_cert_name(&id);
            if backend.name_state(&name)?.is_none()
                && let Some(note) = super::vault::purged_note(backend, &name)
            {
                return Err(crate::error::input(format!(
                    "device:{id}: its certificate `{name}` is gone from the vault: {note}. Nothing was changed"
                )));
            }
        }
        chunk.clear();
        Ok(())
    };
    for id in ids {
        chunk.push(id.clone());
        if chunk.len() == CHUNK {
            check(&mut chunk)?;
        }
    }
    check(&mut chunk)
}

/// Refuses, before anything is written, an individual enrollment this run would create with the
/// device's current certificate when that certificate must not be enrolled: an open breach has
/// yet to replace it (another client deleted the enrollment, and the breach left
/// the device for later), or the CA version that signed it is disabled (revoked, or replaced by
/// a breach). DPS would admit it: the enrollment is what refuses a compromised certificate. The
/// message names the breach that replaces it.
fn refuse_compromised(plan: &Plan, backend: &dyn Backend, enrollments: &BTreeSet<String>) -> Result<()> {
    if enrollments.is_empty() {
        return Ok(());
    }
    let breaches = super::held::open_breaches(backend)?;
    let ids: Vec<String> = enrollments.iter().cloned().collect();
    for chunk in ids.chunks(CHUNK) {
        for (id, existing) in chunk.iter().zip(backend.individual_many(chunk)?) {
            // Only an enrollment `issue` creates is written with the current certificate: one
            // that exists already holds it, or (disabled) is left alone. The vault is read only
            // for those, so a run with nothing to do reads no device certificate.
            if existing.is_some() {
                continue;
            }
            let Some(cert) = backend.current(&device_cert_name(id))? else {
                continue;
            };
            let tp = crate::pki::sha1_thumbprint(&cert.cert_der);
            if let Some(rerun) = breaches.get(id) {
                return Err(crate::error::input(format!(
                    "enrollment:{id}: an open breach has yet to replace its certificate {tp}, which is compromised: \
                     enrolling it would let DPS admit it. Finish the breach instead (`{rerun}`; after creating the \
                     enrollment again in DPS, or enabling it, it replaces the certificate; `certroll check` says \
                     what it waits for). Nothing was changed"
                )));
            }
            let ca = plan
                .enrollments
                .get(id)
                .map(|e| e.issuer.as_str())
                .unwrap_or_default();
            if let Some((name, version)) = &cert.issuer
                && backend.version(name, version)?.is_some_and(|v| !v.enabled)
            {
                return Err(crate::error::input(format!(
                    "enrollment:{id}: its certificate {tp} was signed by version {version} of CA `{ca}`, which is \
                     disabled (revoked, or replaced by a breach): enrolling it would let DPS admit a certificate of \
                     a compromised CA. Replace it instead: `certroll roll-primary --breach enrollment:{id} --yes` \
                     (its run waits, open, until the enrollment is back in DPS), or revoke the device (`certroll \
                     revoke device:{id}`). Nothing was changed"
                )));
            }
        }
    }
    Ok(())
}

/// Refuses, before anything is written, a group of the plan that the service lacks while the
/// service holds a group the plan no longer declares with a certificate of the same signing CA:
/// that is a renamed `[groups.NAME]` table. Creating the new group beside the old one would put
/// one CA certificate into two enabled groups, which DPS refuses, and leave the devices
/// registered through the old one.
fn refuse_renamed_groups(plan: &Plan, backend: &dyn Backend, selected: &BTreeSet<String>) -> Result<()> {
    let mut service: Option<Vec<EnrollmentGroup>> = None;
    for name in selected {
        if backend.group(name)?.is_some() {
            continue;
        }
        if let Some((old, count)) = renamed_from(plan, backend, name, &mut service)? {
            return Err(crate::error::input(format!(
                "group:{name} is new in the plan, but the enrollment service holds group `{old}`, which the plan no \
                 longer declares, with a certificate of the same signing CA `{ca}`: was `[groups.{old}]` renamed to \
                 `[groups.{name}]`? An enrollment group's name cannot change, and the service keeps a CA certificate \
                 in one group only. To keep the group and its {count} registered device(s), rename the table back to \
                 `[groups.{old}]`; to replace it, give `[groups.{name}]` a signing CA of its own. Nothing was changed",
                ca = plan.groups[name].signing_ca,
            )));
        }
    }
    Ok(())
}

/// For a plan group `name` the service lacks: the group the service holds, and the plan no longer
/// declares, with a certificate of the same signing CA (the old name of a renamed
/// `[groups.NAME]` table), with how many devices are registered through it. `service` caches
/// the service's groups between calls.
pub(crate) fn renamed_from(
    plan: &Plan,
    backend: &dyn Backend,
    name: &str,
    service: &mut Option<Vec<EnrollmentGroup>>,
) -> Result<Option<(String, usize)>> {
    let g = &plan.groups[name];
    let groups = match service {
        Some(groups) => groups,
        None => service.insert(backend.groups()?),
    };
    let versions = backend.versions(&ca_cert_name(&g.signing_ca))?;
    let old = groups.iter().find(|s| {
        !plan.groups.contains_key(&s.name)
            && [&s.primary, &s.secondary]
                .into_iter()
                .flatten()
                .any(|slot| versions.iter().any(|v| v.cert_der == slot.cert_der))
    });
    match old {
        Some(old) => Ok(Some((
            old.name.clone(),
            backend.devices_page(Some(&old.name), "", usize::MAX >> 1)?.len(),
        ))),
        None => Ok(None),
    }
}

/// Runs `issue`.
pub fn issue(
    plan: &Plan,
    opts: &IssueOptions,
    now: OffsetDateTime,
    progress: &dyn Progress,
) -> Result<IssueReport> {
    let sel = select(plan, &opts.targets)?;
    let access = if opts.dry_run {
        Access::Preview
    } else {
        Access::Write
    };
    let mut backend = open_verb_backend(plan, "issue", access, &opts.backend)?;
    {
        let selected_cas = sel.cas.iter().map(|c| Target::Ca(c.clone()));
        let selected_devices = plan
            .groups
            .values()
            .filter(|g| sel.groups.contains(&g.name))
            .flat_map(|g| g.device_ids())
            .filter(|id| sel.devices.as_ref().is_none_or(|s| s.contains(id)))
            .chain(sel.enrollments.iter().cloned())
            .map(Target::Device);
        refuse_deleted(&backend, selected_cas.chain(selected_devices))?;
    }
    refuse_renamed_groups(plan, &backend, &sel.groups)?;
    refuse_compromised(plan, &backend, &sel.enrollments)?;
    {
        // The roots this run covers are uploaded and verified by it; every selected group's
        // signing certificate must then reach one of them or another verified CA.
        let uploads_roots: BTreeSet<String> = plan
            .cas
            .iter()
            .filter(|c| c.issuer.is_none() && sel.cas.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        let renewed = BTreeSet::new();
        let makes = super::roll::RunMakes {
            renewed: &renewed,
            uploads_roots: &uploads_roots,
        };
        let groups: Vec<(&GroupSpec, &super::roll::RunMakes<'_>)> = plan
            .groups
            .values()
            .filter(|g| sel.groups.contains(&g.name))
            .map(|g| (g, &makes))
            .collect();
        super::roll::refuse_unaccepted(plan, &backend, &groups)?;
    }
    if !opts.dry_run {
        // Certificates an earlier run left undelivered (killed after a unit's commit, or a
        // channel that failed) reach their devices before this run's own work (after every
        // refusal: a refused run changes nothing): a rerun with nothing else to do still owes them.
        backend.deliver_owed(now)?;
    }
    let mut report = IssueReport {
        dry_run: opts.dry_run,
        steps: Vec::new(),
        rejected: Vec::new(),
        deliveries_owed: 0,
        held_back_deliveries: Vec::new(),
        devices: Vec::new(),
    };

    for ca in plan.cas.iter().filter(|c| sel.cas.contains(&c.name)) {
        issue_ca(plan, ca, &mut backend, now, opts.dry_run, &mut report)
            .with_context(|| format!("issuing CA `{}`", ca.name))?;
    }
    for group in plan.groups.values().filter(|g| sel.groups.contains(&g.name)) {
        create_group(plan, group, &mut backend, now, opts.dry_run, &mut report)
            .with_context(|| format!("creating enrollment group `{}`", group.name))?;
    }

    let total: u64 = plan
        .groups
        .values()
        .filter(|g| sel.groups.contains(&g.name))
        .map(|g| match &sel.devices {
            Some(ids) => g.device_ids().filter(|id| ids.contains(id)).count() as u64,
            None => g.device_count(),
        })
        .sum::<u64>()
        + sel.enrollments.len() as u64;
    progress.start(total);
    for group in plan.groups.values().filter(|g| sel.groups.contains(&g.name)) {
        let ids = group
            .device_ids()
            .filter(|id| sel.devices.as_ref().is_none_or(|s| s.contains(id)));
        let unit = Unit::Group(group);
        issue_devices(
            plan,
            &unit,
            ids,
            &mut backend,
            now,
            opts.dry_run,
            &mut report,
            progress,
        )
        .with_context(|| format!("issuing the devices of group `{}`", group.name))?;
    }
    let enrollments: Vec<&EnrollmentSpec> = plan
        .enrollments
        .values()
        .filter(|e| sel.enrollments.contains(&e.name))
        .collect();
    for e in enrollments {
        let unit = Unit::Enrollment(e);
        issue_devices(
            plan,
            &unit,
            std::iter::once(e.name.clone()),
            &mut backend,
            now,
            opts.dry_run,
            &mut report,
            progress,
        )
        .with_context(|| format!("issuing individual enrollment `{}`", e.name))?;
    }
    progress.finish();
    if !opts.dry_run {
        // The last units' deliveries may still be under way beside them.
        backend.finish_deliveries()?;
        report.deliveries_owed = backend.owed_devices()?.len() as u64;
        report.held_back_deliveries = held_deliveries(&backend)?;
    }
    Ok(report)
}

fn validity(
    policy: &Policy,
    now: OffsetDateTime,
    skew: time::Duration,
    cap: Option<OffsetDateTime>,
) -> (OffsetDateTime, OffsetDateTime) {
    // Backdated by the plan's skew: a device whose clock is a little slow accepts it at once.
    let not_before = now.saturating_sub(skew);
    let mut not_after = crate::clock::add_days(now, policy.validity_days as i64);
    if let Some(cap) = cap {
        not_after = not_after.min(cap);
    }
    (not_before, not_after)
}

fn issue_ca(
    plan: &Plan,
    ca: &CaSpec,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
    dry_run: bool,
    report: &mut IssueReport,
) -> Result<()> {
    let policy = &plan.policies[&ca.policy];
    let cert_name = ca_cert_name(&ca.name);
    let target = format!("ca:{}", ca.name);
    let mut current = backend.current(&cert_name)?;
    if current.is_none() {
        let detail = format!(
            "create CA `{}` ({}, {} key, {} days{})",
            ca.subject,
            match &ca.issuer {
                Some(i) => format!("issued by `{i}`"),
                None => "self-signed root".into(),
            },
            policy.key,
            policy.validity_days,
            match ca.path_len {
                Some(n) => format!(", path length {n}"),
                None => String::new(),
            }
        );
        report.steps.push(Step {
            action: "create-ca",
            target: target.clone(),
            count: 1,
            detail,
        });
        if dry_run {
            if let Some(issuer) = &ca.issuer {
                super::check_can_sign(backend, issuer)?;
            }
            if ca.issuer.is_none() {
                report.steps.push(Step {
                    action: "upload-ca",
                    target: target.clone(),
                    count: 1,
                    detail: format!("upload CA `{}` to the enrollment service", ca.name),
                });
                report.steps.push(Step {
                    action: "verify-ca",
                    target: target.clone(),
                    count: 1,
                    detail: format!("prove possession of the key of CA `{}`", ca.name),
                });
            }
            return Ok(());
        }
        super::new_ca_version(plan, ca, backend, now)?;
        current = backend.current(&cert_name)?;
    }
    let current = current.context("the vault lost the CA version it just stored")?;
    if !current.enabled {
        // A disabled CA was revoked, breached or switched off: uploading or verifying it would
        // make the service trust it again.
        return Err(crate::error::input(format!(
            "{target}: version {} of CA `{}` is disabled in the vault (revoked or disabled); a disabled CA is \
             never uploaded to the enrollment service, verified or used to sign. `certroll roll-primary --breach \
             {target}` replaces it with a new CA. Nothing was changed",
            current.version, ca.name
        )));
    }

    // Roots go to the enrollment service's CA certificates and are verified there.
    if ca.issuer.is_none() {
        let thumbprint = crate::pki::sha1_thumbprint(&current.cert_der);
        let service_name = super::service_ca_name(&ca.name, backend.versions(&cert_name)?.len());
        let in_service = backend.ca(&service_name)?;
        if in_service.as_ref().is_none_or(|c| c.thumbprint != thumbprint) {
            report.steps.push(Step {
                action: "upload-ca",
                target: target.clone(),
                count: 1,
                detail: format!("upload CA `{}` ({thumbprint}) to the enrollment service", ca.name),
            });
            if !dry_run {
                backend.upload_ca(&service_name, &current.cert_der, now)?;
            }
        }
        if in_service
            .as_ref()
            .is_none_or(|c| !c.verified || c.thumbprint != thumbprint)
        {
            report.steps.push(Step {
                action: "verify-ca",
                target,
                count: 1,
                detail: format!("prove possession of the key of CA `{}`", ca.name),
            });
            if dry_run {
                // Planned only if it can run: the vault must hand out what signs for the key.
                backend.signer(&current)?;
            } else {
                prove_possession(backend, &service_name, &current, now)?;
            }
        }
    }
    Ok(())
}

/// Proof of possession: the service hands out a nonce, we sign a certificate whose CN is that
/// nonce with the CA key, and the service checks it.
pub(crate) fn prove_possession(
    backend: &mut dyn Backend,
    name: &str,
    ca: &VaultVersion,
    now: OffsetDateTime,
) -> Result<()> {
    let nonce = backend.verification_code(name, now)?;
    let issuer = crate::pki::cert::IssuerKey::with_signer(ca.cert_der.clone(), backend.signer(ca)?)?;
    let holder = PrivateKey::generate(&crate::pki::spec::KeySpec::Ec {
        curve: crate::pki::spec::Curve::P256,
        hsm: false,
    })?;
    let profile = CertProfile {
        subject: Subject::common_name(&nonce),
        dns_names: vec![],
        key_usage: vec![crate::pki::spec::KeyUsage::DigitalSignature],
        extended_key_usage: vec![],
        not_before: now,
        not_after: crate::clock::add_days(now, 1).min(ca.exp),
        ca: None,
    };
    let der = sign_public_key(&profile, holder.pair(), &issuer)?;
    backend.verify_ca(name, &der, now)?;
    Ok(())
}

fn create_group(
    plan: &Plan,
    group: &GroupSpec,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
    dry_run: bool,
    report: &mut IssueReport,
) -> Result<()> {
    if backend.group(&group.name)?.is_some() {
        return Ok(());
    }
    let signing = plan
        .cas
        .iter()
        .find(|c| c.name == group.signing_ca)
        .context("signing CA not in plan")?;
    report.steps.push(Step {
        action: "create-group",
        target: format!("group:{}", group.name),
        count: 1,
        detail: format!(
            "create enrollment group `{}` with CA `{}` in the primary slot, assigning to hub `{}` (reprovision: {})",
            group.name,
            group.signing_ca,
            group.hub,
            group.reprovision.as_str()
        ),
    });
    if dry_run {
        return Ok(());
    }
    let ca_versions = backend.versions(&ca_cert_name(&group.signing_ca))?.len();
    let ca_cert = backend
        .current(&ca_cert_name(&group.signing_ca))?
        .context("signing CA missing from the vault")?;
    let slot = Slot {
        cert_der: ca_cert.cert_der,
        // A root is referenced as a verified service CA; an intermediate is uploaded to the group.
        ca_reference: signing
            .issuer
            .is_none()
            .then(|| super::service_ca_name(&group.signing_ca, ca_versions)),
    };
    backend.put_group(
        &EnrollmentGroup {
            name: group.name.clone(),
            primary: Some(slot),
            secondary: None,
            status: Status::Enabled,
            reprovision: group.reprovision.as_str().into(),
            hub: group.hub.clone(),
            foreign: Vec::new(),
            take_back: false,
        },
        now,
    )?;
    Ok(())
}

/// Where a batch of devices comes from.
enum Unit<'p> {
    Group(&'p GroupSpec),
    Enrollment(&'p EnrollmentSpec),
}

impl Unit<'_> {
    fn target(&self) -> String {
        match self {
            Unit::Group(g) => format!("group:{}", g.name),
            Unit::Enrollment(e) => format!("enrollment:{}", e.name),
        }
    }
    fn issuer(&self) -> &str {
        match self {
            Unit::Group(g) => &g.signing_ca,
            Unit::Enrollment(e) => &e.issuer,
        }
    }
    fn policy<'a>(&self, plan: &'a Plan) -> &'a Policy {
        match self {
            Unit::Group(g) => &plan.policies[&g.device_policy],
            Unit::Enrollment(e) => &plan.policies[&e.policy],
        }
    }
}

/// What one device still needs.
struct Need {
    id: String,
    cert: Option<VaultVersion>,
    install: bool,
    enroll: bool,
    register: bool,
}

/// Running totals of the device steps of one unit, turned into report steps at the end.
#[derive(Default)]
struct Tally {
    certs: Vec<String>,
    certs_n: u64,
    installs: u64,
    enrollments: u64,
    registrations: u64,
}

impl Need {
    fn any(&self) -> bool {
        self.cert.is_none() || self.install || self.enroll || self.register
    }
}

impl Tally {
    fn add(&mut self, needs: &[Need]) {
        for n in needs {
            if n.cert.is_none() {
                self.note_cert(&n.id);
            }
            self.installs += n.install as u64;
            self.enrollments += n.enroll as u64;
            self.registrations += n.register as u64;
        }
    }

    fn note_cert(&mut self, id: &str) {
        self.certs_n += 1;
        if self.certs.len() < 3 {
            self.certs.push(id.to_string());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn issue_devices(
    plan: &Plan,
    unit: &Unit<'_>,
    ids: impl Iterator<Item = String>,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
    dry_run: bool,
    report: &mut IssueReport,
    progress: &dyn Progress,
) -> Result<()> {
    if !dry_run {
        backend.bulk_writes(true);
    }
    let outcome = issue_device_chunks(plan, unit, ids, backend, now, dry_run, report, progress);
    if !dry_run {
        backend.bulk_writes(false);
    }
    outcome
}

/// [`issue_devices`], a chunk at a time.
#[allow(clippy::too_many_arguments)]
fn issue_device_chunks(
    plan: &Plan,
    unit: &Unit<'_>,
    ids: impl Iterator<Item = String>,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
    dry_run: bool,
    report: &mut IssueReport,
    progress: &dyn Progress,
) -> Result<()> {
    let policy = unit.policy(plan);
    let mut issuer: Option<LoadedIssuer> = None;
    // A dry run plans signatures only from a CA that can make them.
    let mut checked = false;
    let mut tally = Tally::default();
    let mut ids = ids.peekable();
    // A pipeline: while chunk k is written to the backend (sequential), the keys and
    // certificates of chunk k+1 are made on the other cores.
    let mut pending: Option<(Vec<Need>, Fresh)> = None;
    let unit_len = super::unit_devices(plan);
    loop {
        let chunk: Vec<String> = ids.by_ref().take(unit_len).collect();
        let mut left_n = 0;
        let needs = if chunk.is_empty() {
            Vec::new()
        } else {
            let (needs, left_alone) = assess(plan, backend, unit, &chunk)?;
            left_n = left_alone.len() as u64;
            report.devices.extend(left_alone);
            needs
        };
        tally.add(&needs);
        let work = !dry_run && needs.iter().any(Need::any);
        if dry_run && !checked && needs.iter().any(|n| n.cert.is_none()) {
            super::check_can_sign(backend, unit.issuer())?;
            checked = true;
        }
        if work && issuer.is_none() {
            let loaded = load_issuer(backend, unit.issuer())?;
            if loaded.not_after <= now {
                bail!(
                    "CA `{}` expired at {}; roll it before issuing",
                    unit.issuer(),
                    crate::clock::rfc3339(loaded.not_after)
                );
            }
            issuer = Some(loaded);
        }
        let next = |needs: Vec<Need>| -> Result<Option<(Vec<Need>, Fresh)>> {
            if !work {
                return Ok(None);
            }
            let fresh = generate(
                policy,
                issuer.as_ref().expect("loaded above"),
                &needs,
                now,
                plan.not_before_skew,
            )?;
            Ok(Some((needs, fresh)))
        };
        let (stored, generated) = match pending.take() {
            Some((done_needs, fresh)) => {
                let iss = issuer.as_ref().expect("loaded for the pending chunk");
                let n = done_needs.len() as u64;
                let (stored, generated) = rayon::join(
                    || store_in_one_unit(unit, policy, iss, done_needs, fresh, &mut *backend, now),
                    || next(needs),
                );
                progress.advance(n);
                (Some(stored?), generated?)
            }
            None => (None, next(needs)?),
        };
        if let Some(rejected) = stored {
            // `delivery = "none"` leaves the certificate to the operator, so a device that has
            // not registered with it (the first run, or a rerun before the operator handed it
            // out) was not rejected (no exit 1), as for a roll; the backend's one warning line
            // says what to do. A refusal by DPS still is one.
            let (group, enrollment) = match unit {
                Unit::Group(g) => (Some(g.name.as_str()), None),
                Unit::Enrollment(e) => (None, Some(e.name.as_str())),
            };
            let to_the_operator = *plan.delivery.channel(group, enrollment) == crate::plan::Delivery::None;
            report
                .rejected
                .extend(rejected.into_iter().filter(|r| !(to_the_operator && r.waiting)));
        }
        if !work {
            progress.advance(chunk.len() as u64);
        } else {
            // The devices left alone are done with: the pending chunk counts only its needs.
            progress.advance(left_n);
        }
        pending = generated;
        if chunk.is_empty() && pending.is_none() {
            break;
        }
    }
    let target = unit.target();
    if tally.certs_n > 0 {
        let more = if tally.certs_n > tally.certs.len() as u64 {
            ", ..."
        } else {
            ""
        };
        report.steps.push(Step {
            action: "issue-device-certs",
            target: target.clone(),
            count: tally.certs_n,
            detail: format!(
                "issue {} device certificate(s) from policy `{}` ({} key) signed by CA `{}`: {}{more}",
                tally.certs_n,
                policy.name,
                policy.key,
                unit.issuer(),
                tally.certs.join(", ")
            ),
        });
    }
    if tally.enrollments > 0 {
        report.steps.push(Step {
            action: "create-enrollments",
            target: target.clone(),
            count: tally.enrollments,
            detail: format!(
                "create {} individual enrollment(s) with the device certificate in the primary slot",
                tally.enrollments
            ),
        });
    }
    // Delivered once the unit committed, so after its enrollments exist (a device registers
    // with the certificate it is handed): listed in that order, in a dry run too (az8 F10).
    if tally.installs > 0 {
        report.steps.push(Step {
            action: "install-device-certs",
            target: target.clone(),
            count: tally.installs,
            detail: format!("install the new certificate on {} device(s)", tally.installs),
        });
    }
    if tally.registrations > 0 {
        let hub = match unit {
            Unit::Group(g) => &g.hub,
            Unit::Enrollment(e) => &e.hub,
        };
        report.steps.push(Step {
            action: "register-devices",
            target,
            count: tally.registrations,
            detail: format!(
                "provision {} device(s) through the enrollment service onto hub `{hub}`",
                tally.registrations
            ),
        });
    }
    Ok(())
}

/// What each device of `chunk` still needs, and the devices left alone: another client's
/// certificate holds a slot of its individual enrollment, which only the explicit breach of the
/// device takes back (as a roll leaves it, outcome `foreign`).
fn assess(
    plan: &Plan,
    backend: &dyn Backend,
    unit: &Unit<'_>,
    chunk: &[String],
) -> Result<(Vec<Need>, Vec<crate::ops::roll::DeviceRoll>)> {
    // Where devices register themselves (azure) and `delivery = "none"` leaves their
    // certificates to the operator, a device that holds its certificate and enrollment already
    // registers when the operator hands it out: waiting for that is not this command's work
    // (`check` warns of each), so a rerun of finished work has nothing to do, as on local.
    let to_the_operator = !backend.installs_on_devices() && {
        let (group, enrollment) = match unit {
            Unit::Group(g) => (Some(g.name.as_str()), None),
            Unit::Enrollment(e) => (None, Some(e.name.as_str())),
        };
        *plan.delivery.channel(group, enrollment) == crate::plan::Delivery::None
    };
    let names: Vec<String> = chunk.iter().map(|id| device_cert_name(id)).collect();
    let certs = backend.current_many(&names)?;
    let devices = backend.device_many(chunk)?;
    // Also for group devices: a disabled individual enrollment is how one of them is revoked.
    let individuals = backend.individual_many(chunk)?;
    // Registered: assigned, and its identity exists in the hub it was assigned to.
    let identities = backend.assigned_identities(chunk)?;
    let mut needs = Vec::with_capacity(chunk.len());
    let mut left_alone = Vec::new();
    for ((((id, cert), device), identity), individual) in chunk
        .iter()
        .zip(certs)
        .zip(devices)
        .zip(identities)
        .zip(individuals)
    {
        let install = match (&cert, &device) {
            (Some(c), Some(d)) => d.installed_version.as_deref() != Some(c.version.as_str()),
            _ => true,
        };
        // An enrollment is written when missing, and also when neither of its slots holds the
        // certificate the device ends up with (a purged certificate replaced by a fresh one):
        // else the device gets a certificate the enrollment service refuses.
        let enroll = matches!(unit, Unit::Enrollment(_))
            && match (&individual, &cert) {
                (None, _) | (Some(_), None) => true,
                (Some(e), Some(c)) => ![&e.primary, &e.secondary]
                    .into_iter()
                    .any(|s| s.as_deref() == Some(c.cert_der.as_slice())),
            };
        // A revoked device is left alone: registering it would only be refused again.
        if individual.as_ref().is_some_and(|e| e.status == Status::Disabled) {
            needs.push(Need {
                id: id.clone(),
                cert,
                install: false,
                enroll: false,
                register: false,
            });
            continue;
        }
        // Writing the enrollment would replace the other client's certificate (DPS refuses the
        // write certroll makes without the take-back), and a delivery or registration would hand
        // the device a certificate DPS refuses: nothing is done for it, in a dry run neither.
        if let Some(e) = individual.as_ref().filter(|e| !e.foreign.is_empty()) {
            left_alone.push(super::roll::foreign_left_alone(
                id,
                e,
                super::roll::SlotName::Primary,
            ));
            continue;
        }
        let registered = identity.is_some();
        needs.push(Need {
            id: id.clone(),
            cert,
            install,
            enroll,
            register: (!registered && !to_the_operator) || install || enroll,
        });
    }
    Ok((needs, left_alone))
}

/// New keys and certificates for the devices that lack one: `(index in needs, key, cert DER)`.
type Fresh = Vec<(usize, SubjectKey, Vec<u8>, crate::pki::CertFacts)>;

/// Keys and signatures: the expensive part, on every core (or, for a CA whose vault signs, on
/// as many threads as the vault takes requests at once). Touches no backend but that vault.
fn generate(
    policy: &Policy,
    issuer: &LoadedIssuer,
    needs: &[Need],
    now: OffsetDateTime,
    skew: time::Duration,
) -> Result<Fresh> {
    issuer
        .key
        .install(|| generate_here(policy, issuer, needs, now, skew))
}

fn generate_here(
    policy: &Policy,
    issuer: &LoadedIssuer,
    needs: &[Need],
    now: OffsetDateTime,
    skew: time::Duration,
) -> Result<Fresh> {
    let (not_before, not_after) = validity(policy, now, skew, Some(issuer.not_after));
    let key_usage = effective_key_usage(policy, false);
    let fresh: Fresh = needs
        .par_iter()
        // Small pieces: the core that comes free from the store's writes finds some left to take.
        .with_max_len(crate::ops::SIGNING_PIECE)
        .enumerate()
        .filter(|(_, n)| n.cert.is_none())
        .map(|(i, n)| {
            let key = SubjectKey::generate(&policy.key)?;
            let profile = CertProfile {
                subject: Subject::common_name(&n.id),
                dns_names: policy.dns_names.clone(),
                key_usage: key_usage.clone(),
                extended_key_usage: policy.extended_key_usage.clone(),
                not_before,
                not_after,
                ca: None,
            };
            // What the vault indexes it by comes with it, worked out on the signing cores.
            let (der, facts) = sign_public_key_with_facts(&profile, key.public_key(), &issuer.key)?;
            if n.register {
                // The registration's path validation, here beside the store's writes.
                crate::backend::registration::prevalidate(&der, &issuer.chain, issuer.key.cert_der(), now);
            }
            Ok((i, key, der, facts))
        })
        .collect::<Result<_, crate::pki::Error>>()?;
    Ok(fresh)
}

/// Stores one chunk as one unit of work: a crash leaves it wholly done or wholly not. The
/// devices register once it committed ([`Backend::commit_then_register`]): on azure their new
/// certificates are delivered first, and a kill in between leaves them owed to the next run.
fn store_in_one_unit(
    unit: &Unit<'_>,
    policy: &Policy,
    issuer: &LoadedIssuer,
    needs: Vec<Need>,
    fresh: Fresh,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<Vec<Rejection>> {
    if backend.in_unit() {
        // Already inside a unit (a serve request's): the outer unit commits or abandons all.
        let requests = store_chunk(unit, policy, issuer, needs, fresh, backend, now)?;
        let states = if requests.is_empty() {
            Vec::new()
        } else {
            backend.register(&requests, now)?
        };
        return Ok(rejections(&requests, states));
    }
    backend.begin()?;
    let stored = store_chunk(unit, policy, issuer, needs, fresh, backend, now)
        .and_then(|requests| Ok((backend.commit_then_register(&requests, now)?, requests)));
    match stored {
        Ok((states, requests)) => Ok(rejections(&requests, states)),
        Err(e) => {
            backend.rollback();
            Err(e)
        }
    }
}

/// The devices DPS did not assign, each with why.
fn rejections(requests: &[RegistrationRequest], states: Vec<RegistrationState>) -> Vec<Rejection> {
    requests
        .iter()
        .zip(states)
        .filter(|(_, state)| state.status != "assigned")
        .map(|(req, state)| Rejection {
            waiting: state.status == "waiting",
            device: req.registration_id.clone(),
            reason: state.error.unwrap_or_else(|| "refused".into()),
        })
        .collect()
}

/// Writes a chunk: vault versions, installs, enrollments. Returns the registrations the
/// chunk's devices make next.
fn store_chunk(
    unit: &Unit<'_>,
    policy: &Policy,
    issuer: &LoadedIssuer,
    needs: Vec<Need>,
    fresh: Fresh,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<Vec<RegistrationRequest>> {
    let names: Vec<String> = fresh
        .iter()
        .map(|(i, _, _, _)| device_cert_name(&needs[*i].id))
        .collect();
    let policy_doc = policy_json(policy, "CN=<device id>", Some(unit.issuer()));
    let batch: Vec<NewVersion<'_>> = fresh
        .iter()
        .zip(&names)
        .map(|((_, key, der, facts), name)| NewVersion {
            name,
            policy_json: &policy_doc,
            cert_der: der,
            key_pkcs8: key.pkcs8_der(),
            kty: policy.key.kty(),
            exportable: exportable(policy),
            issuer: Some((issuer.cert_name.as_str(), issuer.version.as_str())),
            facts: Some(facts),
            // `issue` generates every key it stores.
            new_key: true,
        })
        .collect();
    let versions = backend.create_versions(&batch, now)?;
    drop(batch);

    // The certificate each device ends up with: the fresh one or the one the vault had.
    let mut certs: Vec<Option<(String, Vec<u8>)>> = needs
        .iter()
        .map(|n| n.cert.as_ref().map(|c| (c.version.clone(), c.cert_der.clone())))
        .collect();
    for ((i, _, der, _), version) in fresh.into_iter().zip(versions) {
        certs[i] = Some((version, der));
    }

    let (group, enrollment) = match unit {
        Unit::Group(g) => (Some(g.name.clone()), None),
        Unit::Enrollment(e) => (None, Some(e.name.clone())),
    };
    let installs: Vec<DeviceRecord> = needs
        .iter()
        .zip(&certs)
        .filter(|(n, _)| n.install)
        .map(|(n, c)| DeviceRecord {
            id: n.id.clone(),
            group: group.clone(),
            enrollment: enrollment.clone(),
            cert_name: device_cert_name(&n.id),
            installed_version: c.as_ref().map(|(v, _)| v.clone()),
        })
        .collect();
    if !installs.is_empty() {
        backend.install(&installs)?;
    }

    if let Unit::Enrollment(e) = unit {
        let new: Vec<IndividualEnrollment> = needs
            .iter()
            .zip(&certs)
            .filter(|(n, _)| n.enroll)
            .map(|(n, c)| IndividualEnrollment {
                registration_id: n.id.clone(),
                primary: c.as_ref().map(|(_, der)| der.clone()),
                secondary: None,
                status: Status::Enabled,
                reprovision: e.reprovision.as_str().into(),
                hub: e.hub.clone(),
                foreign: Vec::new(),
                take_back: false,
            })
            .collect();
        if !new.is_empty() {
            backend.put_individuals(&new, now)?;
        }
    }

    let requests: Vec<RegistrationRequest> = needs
        .iter()
        .zip(&certs)
        .filter(|(n, _)| n.register)
        .filter_map(|(n, c)| {
            let (_, der) = c.as_ref()?;
            let mut chain = vec![der.clone()];
            chain.extend(issuer.chain.iter().cloned());
            Some(RegistrationRequest {
                registration_id: n.id.clone(),
                chain,
            })
        })
        .collect();
    Ok(requests)
}
