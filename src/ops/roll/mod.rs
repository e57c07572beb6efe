//! `roll-secondary` / `roll-primary`: expiry rolls with zero downtime (PRODUCT.md flow 1) and,
//! with `--breach`, breach rolls (flows 2-4).
//!
//! A roll is planned as journaled steps (see [`crate::ops::journal`]): renewing CAs (a root is
//! uploaded to the enrollment service and proven), putting the new CA certificate into groups'
//! slots, and rolling devices a chunk at a time. An expiry roll leaves the other slot alone, so
//! devices keep working with either certificate; an expired certificate there leaves with the
//! roll.
//!
//! Whether a roll is done is read from the state, never from which run came last nor from which
//! slot holds what, so any number of reruns and any order of different targets and slots (a CA,
//! then its group; a device into the primary slot, then its root into the secondary) redo
//! nothing. Each step stands on its own: a CA is renewed only when it has not been renewed since
//! `issue`, its current version is not signed by its issuer's current version (or this run renews
//! its issuer), or its `auto-renew` action has fired; a group's slot is filled only when this run
//! renews its CA or the group holds its CA's current certificate in neither slot; a device gets a
//! new certificate only when its newest one was not made by a roll under the CA version the roll
//! targets (for a device target: its CA's current version), is due for renewal, or is held by
//! neither slot of its individual enrollment. A renewal that could not end later than the
//! certificate held now (its issuer's notAfter caps it) never happens: the CA or device is
//! reported `capped`, with the CA to renew first. The hub's thumbprints are not consulted:
//! `reprovision` rewrites them.
//!
//! With `--due`, only devices whose `auto-renew` action has fired are rolled, and the new
//! certificate goes into whichever slot holds the older certificate (or is empty), so a cron job
//! can run `certroll roll-secondary --due` every night without knowing which slot is free.
//!
//! A breach roll takes the compromised certificate out at once (the enrollment's slot, the
//! group's slot, the service's CA certificates), revokes it, issues replacements with new keys
//! and re-provisions the devices so the hub holds only the new thumbprints. Its rerun is a no-op:
//! the journal remembers which certificate replaced the compromised one (a rerun with nothing to
//! do records it again, so the record outlives any number of reruns), and a breach is redone
//! only for a new `--incident`.

mod cas;

pub(crate) use cas::{
    RunMakes, ca_scope, expired_held, foreign_remedy, refuse_unaccepted, tainted, unaccepted_groups,
};
mod devices;

use super::journal::{self, CutOff, Planned, StepReport};
use super::{Access, BackendSettings, Target, open_verb_backend};
use crate::backend::{Backend, EnrollmentService as _, Fleet as _, Journal as _, Vault as _};
use crate::error::input;
use crate::plan::Plan;
use anyhow::{Context as _, Result};
use devices::{Assessed, Issuers, Mode};
use serde::Serialize;
use time::OffsetDateTime;

/// Up to how many devices a run lists each device's steps.
pub const DEVICE_STEPS_LISTED: usize = 1000;

/// How many devices one journaled step rolls (one unit of work).
const CHUNK: usize = 2048;

/// Which attestation slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    /// The primary slot.
    Primary,
    /// The secondary slot.
    Secondary,
}

impl SlotName {
    fn other(self) -> SlotName {
        match self {
            SlotName::Primary => SlotName::Secondary,
            SlotName::Secondary => SlotName::Primary,
        }
    }

    /// `primary` or `secondary`.
    pub fn word(self) -> &'static str {
        match self {
            SlotName::Primary => "primary",
            SlotName::Secondary => "secondary",
        }
    }

    fn parse(s: &str) -> SlotName {
        if s == "secondary" {
            SlotName::Secondary
        } else {
            SlotName::Primary
        }
    }
}

/// The options of a breach roll.
#[derive(Debug, Clone, Default)]
pub struct Breach {
    /// Both slots are compromised.
    pub both: bool,
    /// Delete the hub identity (the device provisions afresh) instead of re-provisioning it.
    pub remove_hub_identity: bool,
    /// A label for the incident: a rerun with the same label does nothing, a new label treats
    /// the replacement of an earlier breach as compromised too.
    pub incident: Option<String>,
}

/// Options of a roll.
#[derive(Debug, Clone)]
pub struct RollOptions {
    /// `ca:NAME`, `group:NAME`, `device:ID` or `enrollment:NAME` targets.
    pub targets: Vec<Target>,
    /// The slot named by the verb.
    pub slot: SlotName,
    /// Only what an `auto-renew` lifetime action says is due; the slot holding the older
    /// certificate is used.
    pub due: bool,
    /// A breach roll.
    pub breach: Option<Breach>,
    /// Print the steps, change nothing.
    pub dry_run: bool,
    /// How to open the backend.
    pub backend: BackendSettings,
}

/// What happened to one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRoll {
    /// `device:ID`.
    pub target: String,
    /// `rolled`, `would-roll`, `already-rolled`, `pruned` (only an expired certificate left the
    /// other slot), `not-due`, `capped` (its CA's expiry caps a renewal; see
    /// [`RollReport::renew_ca_first`]), `not-issued` (with `--due`: named by the plan, never
    /// issued; the run exits 1), `held-back` (with `--due`: its CA or group holds it back, as its
    /// one step says; the run exits 1), `revoked`, `replaced`, `would-replace`,
    /// `already-replaced`, or `foreign` (another client put a certificate certroll did not issue
    /// into its individual enrollment: left alone, its steps say why and what to do; the run
    /// stays open and exits 1, and its rerun finishes the device once the operator has acted),
    /// `disabled` (another client of DPS disabled its individual enrollment, or the enrollment
    /// group of a device without one, or another client of the hub its hub identity; the run
    /// exits 1: with `new_thumbprint` set, this run wrote the device's new certificate and found
    /// it cut off at or after its write, and DPS or the hub refuses it until the other client's
    /// change is undone; the first step says which and how) or `deleted` (another client deleted its individual
    /// enrollment; the run exits 1).
    pub outcome: &'static str,
    /// The slot the new certificate went into. For `already-rolled`: where the certificate the
    /// device holds is after this roll: the slot of its individual enrollment that holds it, or
    /// for a device of a group (which has no slot of its own) the slot of the group that holds
    /// the CA certificate that signed it. Never read from the hub's thumbprints, which a device
    /// registering again rewrites (it then holds its certificate as the primary), so both
    /// backends report the same.
    pub slot: SlotName,
    /// The steps, in order (listed when the run covers at most 1,000 devices; the run's own
    /// steps describe the rest).
    pub steps: Vec<String>,
    /// The new certificate's SHA-1 thumbprint (after a real roll).
    pub new_thumbprint: Option<String>,
    /// The thumbprint removed from the other slot because its certificate expired.
    pub pruned_thumbprint: Option<String>,
    /// In a breach: the thumbprints of the compromised certificates.
    pub compromised: Vec<String>,
    /// On azure, when this run's delivery of the device's new certificate did not reach it:
    /// `owed: WHY` (a hook that failed, a device a direct method did not reach). The
    /// certificate stays owed and the next `issue` or roll delivers it; the run exits 1. None
    /// when delivered, and with `delivery = "none"` (the operator's choice).
    pub delivery: Option<String>,
}

/// The report of device `id` left alone because another client's certificate holds a slot of
/// its individual enrollment `enrollment` (outcome `foreign`): its steps name each such
/// certificate, then the remedy. `slot` is the one the run writes. Rolls and `issue` report it
/// alike.
pub(crate) fn foreign_left_alone(
    id: &str,
    enrollment: &crate::backend::types::IndividualEnrollment,
    slot: SlotName,
) -> DeviceRoll {
    let mut steps: Vec<String> = enrollment.foreign.iter().map(|f| f.describe(id)).collect();
    steps.push(crate::backend::types::ForeignCertificate::remedy(id));
    DeviceRoll {
        delivery: None,
        target: format!("device:{id}"),
        outcome: "foreign",
        slot,
        steps,
        new_thumbprint: None,
        pruned_thumbprint: None,
        compromised: vec![],
    }
}

/// What happened to a group's slot.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRoll {
    /// `group:NAME`.
    pub target: String,
    /// `rolled`, `would-roll`, `already-rolled`, `replaced`, `would-replace` or
    /// `already-replaced`.
    pub outcome: &'static str,
    /// The slot the new CA certificate went into (`already-rolled`: the slot that holds the
    /// group's CA certificate).
    pub slot: SlotName,
    /// The steps.
    pub steps: Vec<String>,
}

/// What a roll did.
#[derive(Debug, Clone, Serialize)]
pub struct RollReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The journal's number of this run (None when nothing was to be done, and for a dry run
    /// unless it would resume an open run: then that run's).
    pub run: Option<i64>,
    /// Whether this run finished one that had been killed or had failed (a dry run: would
    /// resume it from its journal, as its rerun does, not plan anew).
    pub resumed: bool,
    /// The steps in order, each with the devices it cuts off.
    pub steps: Vec<StepReport>,
    /// Devices that cannot connect with the certificate they hold now once the run is done,
    /// until they receive their new one.
    pub devices_cut_off: CutOff,
    /// One entry per group whose slot the roll changes.
    pub groups: Vec<GroupRoll>,
    /// One entry per device rolled.
    pub devices: Vec<DeviceRoll>,
    /// The CAs whose own expiry caps the renewals of devices (outcome `capped`) or of CAs this
    /// roll would renew, each with what to do; they must be renewed first.
    pub renew_ca_first: Vec<CappedBy>,
    /// Warnings about what the run did that an operator may not have meant: a CA renewed because
    /// its current version is not valid yet at the run's time (`--now` behind a later run's),
    /// whose renewal ends before that version does.
    pub warnings: Vec<String>,
    /// Devices still owed the delivery of a new certificate after this run (this run's or an
    /// earlier one's delivery failed): the next `issue` or roll delivers them; the run exits 1.
    pub deliveries_owed: u64,
    /// Owed deliveries this run held back (see [`crate::ops::issue::IssueReport`]'s field of
    /// that name): not counted in [`deliveries_owed`](Self::deliveries_owed), and no reason to
    /// exit 1.
    pub held_back_deliveries: Vec<crate::ops::issue::HeldDelivery>,
    /// The run this roll keeps open in the journal because it left a device alone (another
    /// client's certificate in its individual enrollment, or, in a breach, the enrollment
    /// disabled or deleted): its rerun, once an operator has dealt with that, finishes it. None
    /// when the run finished, and for a dry run.
    pub left_open: Option<LeftOpenRun>,
    /// Open expiry rolls this breach finished: their only unfinished work was devices this
    /// breach has now replaced (see [`finish_replaced`]).
    pub finished_open_runs: Vec<i64>,
}

/// A run a roll keeps open (see [`RollReport::left_open`]).
#[derive(Debug, Clone, Serialize)]
pub struct LeftOpenRun {
    /// The run's number in the journal.
    pub run: i64,
    /// The command that resumes it and finishes it.
    pub resume: String,
    /// The same in words, as a roll that stops part-way says it.
    pub message: String,
}

/// A CA whose notAfter caps the renewals of devices or CAs below it: a new certificate would end
/// no later than the one they hold, so none is made until the CA is renewed.
#[derive(Debug, Clone, Serialize)]
pub struct CappedBy {
    /// `ca:NAME`.
    pub target: String,
    /// The CA's notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// How many devices it holds back.
    pub devices: usize,
    /// The CAs (`ca:NAME`) of this roll whose renewal it holds back: a new certificate of theirs
    /// would end no later than the one they hold, so none is made.
    pub cas: Vec<String>,
    /// What to do, in words.
    pub message: String,
}

/// `step N (KIND) of TARGET`, as every journal step's error is named.
fn step_context(steps: &[crate::backend::types::JournalStep], seq: u32) -> String {
    match steps.iter().find(|s| s.seq == seq) {
        Some(s) => format!("step {} ({}) of {}", s.seq, s.kind, s.target),
        None => format!("step {seq} of the run"),
    }
}

/// The canonical text of a roll command: the journal's key for resuming it.
fn command_key(opts: &RollOptions, targets: &[Target]) -> String {
    let mut key = format!("roll-{}", opts.slot.word());
    if opts.due {
        key.push_str(" --due");
    }
    if let Some(b) = &opts.breach {
        key.push_str(" --breach");
        if b.both {
            key.push_str(" --both");
        }
        if b.remove_hub_identity {
            key.push_str(" --remove-hub-identity");
        }
        if let Some(i) = &b.incident {
            key.push_str(&format!(" --incident {i}"));
        }
    }
    for t in targets {
        key.push_str(&format!(" {t}"));
    }
    key
}

/// What a CA-level target still has to do.
enum Decision<'p> {
    /// An expiry roll: what is not in place yet.
    Expiry(cas::Pending<'p>),
    /// A breach roll: whether it is in place already.
    Breach(bool),
}

/// A CA-level target and what it covers.
struct ScopeTarget<'p> {
    target: Target,
    scope: cas::Scope<'p>,
}

/// On azure, `--remove-hub-identity` deletes the device's hub identity before the new
/// certificate reaches it, so a direct method (which needs that identity) could never deliver it
/// and the device would be left waiting: refused up front (exit 2, nothing changed) unless every
/// channel the targets use is a hook or none. A group's device or a CA counts every group's and
/// enrollment's channel, as the cheap and safe side.
fn refuse_unreachable_identity_removal(plan: &Plan, opts: &RollOptions, targets: &[Target]) -> Result<()> {
    if plan.azure.is_none() || !opts.breach.as_ref().is_some_and(|b| b.remove_hub_identity) {
        return Ok(());
    }
    let d = &plan.delivery;
    let direct = |c: &crate::plan::Delivery| matches!(c, crate::plan::Delivery::DirectMethod { .. });
    let any_direct = || {
        plan.groups.keys().any(|g| direct(d.channel(Some(g), None)))
            || plan.enrollments.keys().any(|e| direct(d.channel(None, Some(e))))
    };
    let hit = targets.iter().any(|t| match t {
        Target::Enrollment(e) => direct(d.channel(None, Some(e))),
        Target::Device(id) if plan.enrollments.contains_key(id) => direct(d.channel(None, Some(id))),
        Target::Group(g) => direct(d.channel(Some(g), None)),
        _ => any_direct(),
    }) || (targets.is_empty() && any_direct());
    if hit {
        return Err(input(format!(
            "{}: --remove-hub-identity deletes the hub identity a `direct-method` delivery needs, \
             so the new certificate could not reach the device; deliver through a `hook` for \
             these targets, or run the breach roll without --remove-hub-identity (the hub update \
             already shuts out the compromised certificate)",
            plan.path.display()
        )));
    }
    Ok(())
}

/// How a device's delivery step begins in a roll's report (see [`azure_device_step`]).
pub(crate) fn install_step(id: &str) -> String {
    format!("install the new certificate on device `{id}`")
}

/// A device's delivery step in the words of an azure plan, where certroll does not hold the
/// devices: how the new certificate travels by the delivery channel of the device's group or
/// enrollment (a direct method, the hook, or the operator with `certroll export`). `None` for a
/// local plan or another step. Human output only: `-o json` keeps one wording on both backends.
pub fn azure_device_step(plan: &Plan, device_id: &str, step: &str) -> Option<String> {
    plan.azure.as_ref()?;
    let rest = step.strip_prefix(&install_step(device_id))?;
    let (group, enrollment) = match super::device_owner(plan, device_id)? {
        super::DeviceOwner::Group(g) => (Some(g.name.as_str()), None),
        super::DeviceOwner::Enrollment(e) => (None, Some(e.name.as_str())),
    };
    let how = match plan.delivery.channel(group, enrollment) {
        crate::plan::Delivery::DirectMethod { method } => {
            format!(
                "deliver the new certificate to device `{device_id}` by the IoT Hub direct method `{method}`"
            )
        }
        crate::plan::Delivery::Hook(_) => {
            format!("deliver the new certificate to device `{device_id}` through the delivery hook")
        }
        crate::plan::Delivery::None => format!(
            "leave the new certificate of device `{device_id}` for the operator to hand out \
             (delivery = \"none\": `certroll export device:{device_id} --with-key`)"
        ),
    };
    Some(format!("{how}{rest}"))
}

/// Rewrites the delivery steps of every device in `report` by [`azure_device_step`].
pub fn azure_words(plan: &Plan, report: &mut RollReport) {
    for d in &mut report.devices {
        let id = d.target.strip_prefix("device:").unwrap_or(&d.target).to_string();
        for step in &mut d.steps {
            if let Some(words) = azure_device_step(plan, &id, step) {
                *step = words;
            }
        }
    }
}

/// Runs a roll.
pub fn roll(plan: &Plan, opts: &RollOptions, now: OffsetDateTime) -> Result<RollReport> {
    let mut targets: Vec<Target> = Vec::new();
    for t in &opts.targets {
        if !targets.contains(t) {
            targets.push(t.clone());
        }
    }
    if targets.is_empty() && !opts.due {
        return Err(input(
            "name what to roll: ca:NAME, group:NAME, device:ID or enrollment:NAME (or every device with --due)",
        ));
    }
    for t in &targets {
        t.check(plan)?;
    }
    refuse_unreachable_identity_removal(plan, opts, &targets)?;
    let (device_ids, mut scopes) = if opts.due {
        (due_devices(plan, &targets), Vec::new())
    } else {
        expand(plan, opts, &targets)?
    };
    let access = if opts.dry_run {
        Access::Preview
    } else {
        Access::Modify
    };
    // The verb as the azure backend knows it (`roll-secondary`, `roll-primary --breach`, ...).
    let verb = format!(
        "roll-{}{}{}",
        opts.slot.word(),
        if opts.due { " --due" } else { "" },
        if opts.breach.is_some() { " --breach" } else { "" }
    );
    let mut backend = open_verb_backend(plan, &verb, access, &opts.backend)?;
    // A CA whose own auto-renew is due is renewed by `--due` as by `roll-* ca:NAME` (the CA,
    // the slots of its groups, then the devices that need it): the devices it caps wait for it.
    // CAs whose auto-renew fired but whose issuer's notAfter caps a renewal (reported in
    // `renew_ca_first` with the CA to renew first).
    let mut due_capped: Vec<String> = Vec::new();
    let device_ids = if opts.due && opts.breach.is_none() {
        (scopes, due_capped) = due_ca_scopes(plan, &backend, &targets, now)?;
        let covered: std::collections::HashSet<&str> = scopes
            .iter()
            .flat_map(|s| s.scope.device_ids.iter().map(String::as_str))
            .collect();
        device_ids
            .into_iter()
            .filter(|id| !covered.contains(id.as_str()))
            .collect()
    } else {
        device_ids
    };
    // A cron `--due` run rolls what is due even when the plan names a device not issued yet: that
    // one is reported (`not-issued`, exit 1) rather than stopping the whole fleet's renewals.
    let all_due = device_ids.clone();
    let mut not_issued = Vec::new();
    if opts.due && opts.breach.is_none() {
        // A device under a due CA that was never issued is reported like any other (a cron run
        // renews the CA and rolls the rest); the CA's step has nothing to roll for it.
        for st in &mut scopes {
            let mut issued = Vec::with_capacity(st.scope.device_ids.len());
            for chunk in st.scope.device_ids.chunks(CHUNK) {
                for (id, record) in chunk.iter().zip(backend.device_many(chunk)?) {
                    if record.and_then(|r| r.installed_version).is_some() {
                        issued.push(id.clone());
                    } else {
                        not_issued.push(id.clone());
                    }
                }
            }
            st.scope.device_ids = issued;
        }
    }
    // Likewise a device below a due CA whose own certificate is deleted or purged is held back
    // (reported, exit 1) rather than stopping the run.
    let mut scope_held = Vec::new();
    if opts.due && opts.breach.is_none() && !scopes.is_empty() {
        let deleted: std::collections::HashSet<String> = backend
            .deleted_certificates(None)?
            .into_iter()
            .map(|d| d.name)
            .collect();
        for st in &mut scopes {
            let ids = std::mem::take(&mut st.scope.device_ids);
            let (kept, held) = own_certificate_gone(&backend, ids, &deleted, opts.slot)?;
            st.scope.device_ids = kept;
            scope_held.extend(held);
        }
    }
    let device_ids = if opts.due && opts.breach.is_none() {
        let mut issued = Vec::with_capacity(device_ids.len());
        for chunk in device_ids.chunks(CHUNK) {
            for (id, record) in chunk.iter().zip(backend.device_many(chunk)?) {
                if record.and_then(|r| r.installed_version).is_some() {
                    issued.push(id.clone());
                } else {
                    not_issued.push(id.clone());
                }
            }
        }
        issued
    } else {
        device_ids
    };
    // The same run leaves out, and reports, the devices a problem of their CA or group holds
    // back (an expired, disabled or purged CA, a group the service lacks or that is revoked):
    // one bad corner must not stop the renewals of the rest of the fleet.
    let (device_ids, held_back) = if opts.due && opts.breach.is_none() {
        due_held_back(plan, &backend, device_ids, opts.slot, now)?
    } else {
        (device_ids, Vec::new())
    };
    refuse_unissued(&backend, &device_ids, &scopes)?;
    // A soft-deleted certificate (a device's or a CA's) stops a named run before it is recorded;
    // `--due` has already held such devices back (reported, exit 1), so the cron run goes on.
    let mut issuers = std::collections::BTreeSet::new();
    let deleted_candidates = scopes
        .iter()
        .flat_map(|s| s.scope.cas.iter().map(|c| Target::Ca(c.name.clone())))
        .chain(
            device_ids
                .iter()
                .chain(scopes.iter().flat_map(|s| s.scope.device_ids.iter()))
                .flat_map(|id| {
                    let issuer = devices::issuer_of(plan, id)
                        .ok()
                        .filter(|i| issuers.insert(i.to_string()))
                        .map(|i| Target::Ca(i.to_string()));
                    std::iter::once(Target::Device(id.clone())).chain(issuer)
                }),
        );
    super::issue::refuse_deleted(&backend, deleted_candidates)?;
    super::issue::refuse_purged(
        &backend,
        device_ids
            .iter()
            .chain(scopes.iter().flat_map(|s| s.scope.device_ids.iter())),
    )?;

    let command = command_key(opts, &targets);
    let mut report = RollReport {
        dry_run: opts.dry_run,
        run: None,
        resumed: false,
        deliveries_owed: 0,
        held_back_deliveries: Vec::new(),
        steps: Vec::new(),
        devices_cut_off: CutOff::none(),
        groups: Vec::new(),
        devices: Vec::new(),
        renew_ca_first: Vec::new(),
        warnings: Vec::new(),
        left_open: None,
        finished_open_runs: Vec::new(),
    };
    for id in &not_issued {
        report.devices.push(DeviceRoll {
            delivery: None,
            target: format!("device:{id}"),
            outcome: "not-issued",
            slot: opts.slot,
            steps: vec![format!(
                "not issued yet: `certroll issue device:{id}` issues it (enrollment included)"
            )],
            new_thumbprint: None,
            pruned_thumbprint: None,
            compromised: Vec::new(),
        });
    }
    report.devices.extend(held_back);
    report.devices.extend(scope_held);
    let mut planned = Vec::new();
    // CAs whose renewal their issuer's notAfter caps: not renewed, reported with what to renew.
    let mut capped_cas: Vec<String> = due_capped;
    // A run of this command that was killed or failed is resumed from its journal as recorded;
    // planning again from the half-changed state would decide differently. A dry run shows
    // that resumption, as its rerun would carry it out.
    let open = backend.open_run(&command)?;
    let resuming = open.is_some();
    // The incidents of the other breach runs left open, read once per run (a list breach has a
    // step per device): what its planning and its device steps count as handled (trial az10 N1).
    let open_incidents = match &opts.breach {
        Some(_) => devices::open_incidents(&backend, open.as_ref().map(|o| o.id))?,
        None => devices::OpenIncidents::new(),
    };
    if !resuming {
        refuse_disabled(plan, &backend, &scopes, &device_ids, opts)?;
    }
    if !resuming {
        // Every group slot this run fills, and every group whose devices it signs for, must hold
        // a certificate the enrollment service accepts devices under (issue 10 items 9 and 10).
        let renewed: Vec<std::collections::BTreeSet<String>> = scopes
            .iter()
            .map(|s| s.scope.cas.iter().map(|c| c.name.clone()).collect())
            .collect();
        let makes: Vec<RunMakes<'_>> = renewed
            .iter()
            .map(|r| RunMakes {
                renewed: r,
                uploads_roots: r,
            })
            .collect();
        let nothing = std::collections::BTreeSet::new();
        let as_is = RunMakes {
            renewed: &nothing,
            uploads_roots: &nothing,
        };
        let mut groups: Vec<(&crate::plan::GroupSpec, &RunMakes<'_>)> = Vec::new();
        for (s, m) in scopes.iter().zip(&makes) {
            groups.extend(s.scope.groups.iter().map(|g| (*g, m)));
        }
        // One pass over each group's ids (a file-listed group's look-up by id is linear).
        let wanted: std::collections::HashSet<&str> = device_ids.iter().map(String::as_str).collect();
        if !wanted.is_empty() {
            for g in plan.groups.values() {
                if !groups.iter().any(|(s, _)| s.name == g.name)
                    && g.device_ids().any(|id| wanted.contains(id.as_str()))
                {
                    groups.push((g, &as_is));
                }
            }
        }
        refuse_unaccepted(plan, &backend, &groups)?;
    }
    if !resuming && scopes.is_empty() {
        // Device rolls sign with the CAs as they are: one that cannot sign is reported now,
        // before a run is recorded that could never finish (and by its dry run too).
        let mut checked: Vec<&str> = Vec::new();
        let mut groups: Vec<&str> = Vec::new();
        for id in &device_ids {
            let ca = match super::device_owner(plan, id).context("device not in the plan")? {
                super::DeviceOwner::Group(g) => {
                    if !groups.contains(&g.name.as_str()) {
                        groups.push(&g.name);
                    }
                    g.signing_ca.as_str()
                }
                super::DeviceOwner::Enrollment(e) => e.issuer.as_str(),
            };
            if opts.dry_run || checked.contains(&ca) {
                continue;
            }
            checked.push(ca);
            let issuer = super::load_issuer(&backend, ca)?;
            if issuer.not_after <= now {
                anyhow::bail!(
                    "CA `{ca}` expired at {}; roll it first (`certroll roll-secondary ca:{ca}`)",
                    crate::clock::rfc3339(issuer.not_after)
                );
            }
        }
        // A group member's new certificate is signed by its CA's current version: a group that
        // holds that version in neither slot (a CA roll stopped before it reached the group)
        // would refuse it.
        for name in groups {
            let g = &plan.groups[name];
            let current = backend.current(&super::ca_cert_name(&g.signing_ca))?;
            let state = backend.group(name)?;
            let accepts = match (&current, &state) {
                (Some(c), Some(state)) => [&state.primary, &state.secondary]
                    .into_iter()
                    .flatten()
                    .any(|s| s.cert_der == c.cert_der),
                _ => false,
            };
            if !accepts && let Some(f) = state.iter().flat_map(|s| &s.foreign).next() {
                anyhow::bail!(
                    "group `{name}` holds the current version of its CA `{}` in neither slot, so it would refuse the new certificates: {}; {}",
                    g.signing_ca,
                    f.describe_in_group(name),
                    cas::foreign_remedy(plan, g)
                );
            }
            if !accepts {
                anyhow::bail!(
                    "group `{name}` holds the current version of its CA `{}` in neither slot, so it would refuse the new certificates; finish the CA roll first (rerun the interrupted `roll-*` command, or `certroll roll-secondary group:{name}`)",
                    g.signing_ca
                );
            }
        }
    }
    // What each CA-level target still has to do, read from the state before anything is planned.
    let mut decisions: Vec<Decision<'_>> = Vec::new();
    // Per scope, what its breach does with the certificates other clients put into its groups.
    let mut foreign: Vec<cas::ForeignUnder> = Vec::new();
    if !resuming {
        for st in &scopes {
            let under = match (&opts.breach, &st.target) {
                // The breach of a group named explicitly takes it back from another client.
                (Some(_), Target::Group(name)) => cas::ForeignUnder {
                    take_back: backend
                        .group(name)?
                        .filter(|g| !g.foreign.is_empty())
                        .map(|g| (name.clone(), g.foreign))
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
                // A CA's breach takes back every group of it trusting a certificate under it.
                (Some(_), Target::Ca(top)) => cas::foreign_under(&backend, &st.scope, top)?,
                _ => cas::ForeignUnder::default(),
            };
            report
                .warnings
                .extend(under.left.iter().map(|l| l.warning.clone()));
            decisions.push(match &opts.breach {
                Some(breach) => {
                    // A target breached before that holds another client's certificate now is
                    // breached again: that is how its group is taken back.
                    let taken = !under.take_back.is_empty();
                    Decision::Breach(!taken && breach_in_place(&backend, &st.target.to_string(), breach)?)
                }
                None => Decision::Expiry(cas::pending(plan, &backend, &st.scope, now)?),
            });
            foreign.push(under);
        }
        // No roll writes a group holding another client's certificate but one its breach takes
        // back or leaves beside the new CA (see `refuse_foreign_groups` for why it is refused,
        // not rolled around).
        let written: Vec<&crate::plan::GroupSpec> = scopes
            .iter()
            .zip(&decisions)
            .flat_map(|(st, d)| match d {
                Decision::Expiry(p) => p.place.clone(),
                Decision::Breach(false) => st.scope.groups.clone(),
                Decision::Breach(true) => Vec::new(),
            })
            .collect();
        cas::refuse_foreign_groups(plan, &backend, &written, &foreign)?;
    }
    if !resuming && opts.breach.is_none() {
        // What has expired leaves the service with every roll (`--due` included); a group this
        // run puts a new CA into is left to its own step, which says so.
        let skip: Vec<&str> = decisions
            .iter()
            .flat_map(|d| match d {
                Decision::Expiry(p) => p.place.iter().map(|g| g.name.as_str()).collect(),
                Decision::Breach(_) => Vec::new(),
            })
            .collect();
        let expired = cas::expired_held(&backend, now, &skip)?;
        if !expired.is_empty() {
            let mut what: Vec<String> = expired
                .slots
                .iter()
                .map(|(g, s, at)| {
                    format!(
                        "the {} slot of group `{g}` (expired {})",
                        s.word(),
                        crate::clock::rfc3339(*at)
                    )
                })
                .collect();
            what.extend(expired.service_cas.iter().map(|(n, at)| {
                format!(
                    "CA certificate `{n}` of the enrollment service (expired {})",
                    crate::clock::rfc3339(*at)
                )
            }));
            planned.push(Planned {
                target: "service".into(),
                kind: "prune-expired",
                description: format!("remove expired CA certificates: {}", what.join(", ")),
                detail: serde_json::json!({}),
                cut_off: CutOff::none(),
            });
        }
    }
    if !resuming {
        for ((st, decided), under) in scopes.iter().zip(&decisions).zip(&foreign) {
            plan_scope(
                plan,
                &backend,
                opts,
                st,
                decided,
                under,
                now,
                &mut planned,
                &mut report,
            )?;
            if let Decision::Expiry(p) = decided {
                capped_cas.extend(p.capped.iter().map(|c| c.name.clone()));
                for (ca, nbf, exp, renewed_end) in &p.ends_earlier {
                    report.warnings.push(format!(
                        "ca:{name}: its current version is not valid until {} (made by a run at a later --now), so \
                         it was renewed, and the renewal ends at {}, before that version's {}: a run whose --now is \
                         behind the store's own work replaces the later versions with shorter ones",
                        crate::clock::rfc3339(*nbf),
                        crate::clock::rfc3339(*renewed_end),
                        crate::clock::rfc3339(*exp),
                        name = ca.name
                    ));
                }
            }
        }
        if opts.due && opts.breach.is_none() {
            // Only the devices that may be due are planned: a nightly cron run over a fleet
            // with nothing due records no run at all (issue 13 item 3).
            let mut maybe = Vec::new();
            for chunk in device_ids.chunks(CHUNK) {
                for (id, due) in chunk.iter().zip(devices::not_due(plan, &backend, chunk, now)?) {
                    let (outcome, why) = match due {
                        devices::Due::Not => ("not-due", None),
                        devices::Due::Capped => ("capped", None),
                        devices::Due::Revoked => ("revoked", None),
                        devices::Due::CutOff(outcome, why) => (outcome, Some(why)),
                        devices::Due::Maybe => ("", None),
                    };
                    if !outcome.is_empty() {
                        report.devices.push(DeviceRoll {
                            delivery: None,
                            target: format!("device:{id}"),
                            outcome,
                            slot: opts.slot,
                            steps: why.into_iter().collect(),
                            new_thumbprint: None,
                            pruned_thumbprint: None,
                            compromised: Vec::new(),
                        });
                    } else {
                        maybe.push(id.clone());
                    }
                }
            }
            plan_devices(opts, &maybe, &[], super::unit_devices(plan), &mut planned);
        } else {
            let replaced = match &opts.breach {
                Some(breach) => devices::replaced_already(&backend, &device_ids, breach, &open_incidents)?,
                None => Vec::new(),
            };
            plan_devices(
                opts,
                &device_ids,
                &replaced,
                super::unit_devices(plan),
                &mut planned,
            );
        }
    }

    if !opts.dry_run {
        // Certificates an earlier run left undelivered (killed after a unit's commit, or a
        // channel that failed) reach their devices before this run's own work (after every
        // refusal: a refused run changes nothing): a rerun with nothing else to do still owes them.
        backend.deliver_owed(now)?;
    }
    let run = journal::begin_from(&mut backend, &command, &planned, opts.dry_run, now, open)?;
    report.run = run.number();
    report.resumed = run.resumed;
    let superseded = match &opts.breach {
        Some(_) => superseded_by(&backend, &run)?,
        None => None,
    };
    if resuming {
        for step in run.steps.iter().filter(|s| s.kind == "group-slot") {
            report.groups.push(GroupRoll {
                target: step.target.clone(),
                outcome: if superseded.is_some() {
                    "already-replaced"
                } else {
                    "would-roll"
                },
                slot: SlotName::parse(step.detail["slot"].as_str().unwrap_or_default()),
                steps: vec![step.description.clone()],
            });
        }
    }
    let resumed = Resumed {
        open_incidents: &open_incidents,
        superseded: superseded.as_deref(),
    };
    if let Err(e) = execute(plan, opts, &run, &resumed, &mut backend, now, &mut report) {
        return Err(run.stopped(&mut backend, now, e, &command));
    }
    // The last units' deliveries may still be under way beside them.
    backend.finish_deliveries()?;
    // A device left alone for another client's certificate (or, in a breach, its enrollment
    // another client disabled or deleted) leaves the run open: its rerun, once the operator has
    // acted, finishes it (a breach's later steps are not redone).
    let breach = opts.breach.is_some();
    if !report.devices.iter().any(|d| leaves_open(d.outcome, breach)) {
        run.finish(&mut backend, now)?;
        if breach && !opts.dry_run {
            report.finished_open_runs = finish_replaced(&mut *backend, &run, &report.devices, now)?;
        }
    } else if let Some(id) = run.number().filter(|_| !opts.dry_run) {
        report.left_open = Some(LeftOpenRun {
            run: id,
            resume: journal::command_resuming(&command),
            message: journal::left_open(id, &command),
        });
    }
    if !opts.dry_run {
        disabled_during_run(plan, &backend, &mut report.devices)?;
    }
    if opts.due && !report.devices.is_empty() {
        // The devices found not due were reported before the others: back to plan order.
        let order: std::collections::HashMap<&str, usize> = all_due
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let at = |d: &DeviceRoll| {
            order
                .get(d.target.strip_prefix("device:").unwrap_or_default())
                .copied()
                .unwrap_or(usize::MAX)
        };
        report.devices.sort_by_key(at);
    }
    report.steps = journal::reports(&run, &planned, opts.dry_run);
    if let Some(later) = &superseded {
        for (step, journal_step) in report.steps.iter_mut().zip(&run.steps) {
            if skipped_when_superseded(&journal_step.kind) && !run.done_before(journal_step.seq) {
                step.description.push_str(&format!(
                    ": not done, a later breach (incident `{later}`) has replaced the CA since"
                ));
            }
        }
    }
    if !opts.dry_run {
        // A step that left a device alone for another client's certificate stays open in the
        // journal (its rerun finishes it): the report says so, as `check` does.
        let left: std::collections::HashSet<&str> = report
            .devices
            .iter()
            // One found cut off after its new certificate was written has its step done.
            .filter(|d| leaves_open(d.outcome, breach) && d.new_thumbprint.is_none())
            .filter_map(|d| d.target.strip_prefix("device:"))
            .collect();
        for (step, journal_step) in report.steps.iter_mut().zip(&run.steps) {
            if !left.is_empty()
                && step.state == "done"
                && journal_step.detail["ids"].as_array().is_some_and(|ids| {
                    ids.iter()
                        .any(|id| id.as_str().is_some_and(|id| left.contains(id)))
                })
            {
                step.state = "unfinished";
            }
        }
    }
    tally_device_steps(&run, &mut report);
    if run.resumed {
        resumed_cut_off(&run, &mut report);
    }
    let cut: Vec<&CutOff> = if run.resumed {
        report.steps.iter().map(|s| &s.devices_cut_off).collect()
    } else {
        planned.iter().map(|p| &p.cut_off).collect()
    };
    report.devices_cut_off = CutOff {
        count: cut.iter().map(|c| c.count).sum(),
        first: cut
            .iter()
            .flat_map(|c| c.first.iter().cloned())
            .take(journal::CUT_OFF_SHOWN)
            .collect(),
    };
    report.renew_ca_first = capped_by(plan, &backend, &report.devices, &capped_cas)?;
    if !opts.dry_run {
        // A failed delivery does not undo the roll, but a rerun (or any later run) finishes it.
        for d in &mut report.devices {
            let id = d.target.strip_prefix("device:").unwrap_or(&d.target);
            d.delivery = backend.delivery_failure(id).map(|why| format!("owed: {why}"));
        }
        report.deliveries_owed = backend.owed_devices()?.len() as u64;
        report.held_back_deliveries = crate::ops::issue::held_deliveries(&backend)?;
    }
    for g in &mut report.groups {
        if !opts.dry_run && g.outcome.starts_with("would-") {
            g.outcome = if opts.breach.is_some() {
                "replaced"
            } else {
                "rolled"
            };
        }
    }
    Ok(report)
}

/// Devices another client cut off while this run went on, after their chunk was assessed: their
/// new certificate is stored (and delivered), but a service refuses them, so they are reported
/// `disabled`, with the way back first among their steps, and the run exits 1 (`check` says the
/// same). Their individual enrollment, or their hub identity, was found disabled by this run's
/// own writes, which keep a status another client set (trial az11 F3 and F4): no request is
/// made for them. Their group was disabled (az8 F4): a device with an individual enrollment of
/// its own (which DPS matches first) is not cut off; each group is read once. Nothing is written.
fn disabled_during_run(plan: &Plan, backend: &dyn Backend, devices: &mut [DeviceRoll]) -> Result<()> {
    use std::collections::HashMap;
    let written: Vec<usize> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.outcome, "rolled" | "replaced") && d.new_thumbprint.is_some())
        .map(|(at, _)| at)
        .collect();
    let ids: Vec<String> = written
        .iter()
        .map(|at| devices[*at].target.trim_start_matches("device:").to_string())
        .collect();
    let enrollments = backend.individuals_kept_disabled(&ids);
    let identities = backend.identities_seen_disabled(&ids);
    for (((at, id), enrollment), hub) in written.iter().zip(&ids).zip(enrollments).zip(identities) {
        let d = &mut devices[*at];
        let tp = d.new_thumbprint.clone().unwrap_or_default();
        let why = if enrollment {
            crate::ops::held::enrollment_disabled_by_another(id, &tp)
        } else if let Some(hub) = hub {
            crate::ops::held::identity_disabled_by_another(id, &hub)
        } else {
            continue;
        };
        d.outcome = "disabled";
        d.steps.insert(0, why);
    }
    let mut why: HashMap<&str, Option<String>> = HashMap::new();
    let mut cut: Vec<(usize, String)> = Vec::new();
    for (at, d) in devices.iter().enumerate() {
        if !matches!(d.outcome, "rolled" | "replaced") {
            continue;
        }
        let id = d.target.strip_prefix("device:").unwrap_or(&d.target);
        let Some(super::DeviceOwner::Group(g)) = super::device_owner(plan, id) else {
            continue;
        };
        if !why.contains_key(g.name.as_str()) {
            let found = match backend.group(&g.name)? {
                Some(state) => crate::ops::held::group_disabled_by_another(backend, &g.name, state.status)?,
                None => None,
            };
            why.insert(&g.name, found);
        }
        if let Some(Some(why)) = why.get(g.name.as_str()) {
            cut.push((at, why.clone()));
        }
    }
    let ids: Vec<String> = cut
        .iter()
        .map(|(at, _)| devices[*at].target.trim_start_matches("device:").to_string())
        .collect();
    for chunk in cut.chunks(CHUNK).zip(ids.chunks(CHUNK)) {
        for ((at, why), own) in chunk.0.iter().zip(backend.individual_many(chunk.1)?) {
            if own.is_none() {
                let d = &mut devices[*at];
                d.outcome = "disabled";
                d.steps.insert(0, why.clone());
            }
        }
    }
    Ok(())
}

/// The CAs that hold back the devices whose outcome is `capped`, and the CAs in `capped_cas`
/// (whose renewal their issuer's notAfter caps), in plan order.
fn capped_by(
    plan: &Plan,
    backend: &dyn Backend,
    devices: &[DeviceRoll],
    capped_cas: &[String],
) -> Result<Vec<CappedBy>> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for d in devices.iter().filter(|d| d.outcome == "capped") {
        let id = d.target.trim_start_matches("device:");
        *counts.entry(devices::issuer_of(plan, id)?).or_default() += 1;
    }
    if counts.is_empty() && capped_cas.is_empty() {
        return Ok(Vec::new());
    }
    let mut not_after = std::collections::BTreeMap::new();
    for ca in &plan.cas {
        if let Some(v) = backend.current(&super::ca_cert_name(&ca.name))? {
            not_after.insert(ca.name.as_str(), v.exp);
        }
    }
    // An issuer capped by its own issuer cannot move the cap: name the CA that can.
    // By capping CA, the devices' own CAs with their counts: a CA capped by its issuer passes its
    // devices up, and the message names each device's own CA so none is counted as another's.
    let mut capping: std::collections::BTreeMap<&str, Vec<(&str, usize)>> = Default::default();
    for (ca, n) in counts {
        capping
            .entry(super::capping_ca(plan, &not_after, ca))
            .or_default()
            .push((ca, n));
    }
    let counts = capping;
    // A capped CA waits for the CA whose notAfter caps its issuer's.
    let mut held_cas: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for name in capped_cas {
        let Some(issuer) = plan
            .cas
            .iter()
            .find(|c| &c.name == name)
            .and_then(|c| c.issuer.as_deref())
        else {
            continue;
        };
        held_cas
            .entry(super::capping_ca(plan, &not_after, issuer))
            .or_default()
            .push(format!("ca:{name}"));
    }
    let mut out = Vec::new();
    let named: Vec<&crate::plan::CaSpec> = plan
        .cas
        .iter()
        .filter(|c| counts.contains_key(c.name.as_str()) || held_cas.contains_key(c.name.as_str()))
        .collect();
    for ca in named {
        let Some(current) = backend.current(&super::ca_cert_name(&ca.name))? else {
            continue;
        };
        let by_issuer = counts.get(ca.name.as_str()).cloned().unwrap_or_default();
        let n = by_issuer.iter().map(|(_, n)| n).sum();
        let cas = held_cas.remove(ca.name.as_str()).unwrap_or_default();
        let mut what = Vec::new();
        if !cas.is_empty() {
            let names: Vec<String> = cas.iter().map(|c| format!("`{c}`")).collect();
            what.push(format!("a renewal of {}", names.join(", ")));
        }
        for (issuer, n) in by_issuer {
            what.push(format!("a renewal of {n} device(s) under `{issuer}`"));
        }
        out.push(CappedBy {
            target: format!("ca:{}", ca.name),
            not_after: current.exp,
            devices: n,
            cas,
            message: format!(
                "CA `{}` expires at {}, so {} would end no later than the certificate held now, so none is made: renew the issuing CA first (`certroll roll-secondary ca:{}`), then rerun",
                ca.name,
                crate::clock::rfc3339(current.exp),
                what.join(" and "),
                ca.name
            ),
        });
    }
    Ok(out)
}

/// With `--due`: the `ca:NAME` scopes of the CAs (among those the targets cover; every CA of the
/// plan when none is named) whose current version's `auto-renew` action has fired and that a
/// renewal can move later (not capped by their issuer), topmost first; a CA below another such
/// CA is renewed within that one's scope. A CA that is disabled, missing, or whose scope holds a
/// group the service lacks is left out (its devices are reported held back). Also returns the
/// CAs whose `auto-renew` fired but whose renewal their issuer's notAfter caps.
fn due_ca_scopes<'p>(
    plan: &'p Plan,
    backend: &dyn Backend,
    targets: &[Target],
    now: OffsetDateTime,
) -> Result<(Vec<ScopeTarget<'p>>, Vec<String>)> {
    let mut capped: Vec<String> = Vec::new();
    let covered: Vec<&str> = if targets.is_empty() {
        plan.cas.iter().map(|c| c.name.as_str()).collect()
    } else {
        targets
            .iter()
            .filter_map(|t| match t {
                Target::Ca(name) => Some(cas::ca_scope(plan, name).cas),
                _ => None,
            })
            .flatten()
            .map(|c| c.name.as_str())
            .collect()
    };
    let mut chosen: Vec<&str> = Vec::new();
    for ca in plan.cas.iter().filter(|c| covered.contains(&c.name.as_str())) {
        let policy = &plan.policies[&ca.policy];
        let Some(current) = backend.current(&super::ca_cert_name(&ca.name))? else {
            continue;
        };
        let fired = policy
            .lifetime_actions
            .iter()
            .filter(|a| a.action == crate::plan::ActionKind::AutoRenew)
            .any(|a| crate::ops::lifetime::fires_at(a.trigger, current.nbf, current.exp) <= now)
            || current.nbf > now.saturating_add(plan.not_before_skew);
        if !fired || !current.enabled {
            continue;
        }
        // Under a CA already chosen: renewed within its scope.
        let mut up = ca.issuer.as_deref();
        let mut under = false;
        for _ in 0..=plan.cas.len() {
            let Some(name) = up else { break };
            if chosen.contains(&name) {
                under = true;
                break;
            }
            up = plan
                .cas
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.issuer.as_deref());
        }
        if under {
            continue;
        }
        let scope = cas::ca_scope(plan, &ca.name);
        let mut issued = true;
        for g in &scope.groups {
            issued &= backend.group(&g.name)?.is_some();
        }
        if !issued {
            continue;
        }
        let pending = cas::pending(plan, backend, &scope, now)?;
        if pending.renew.first().is_some_and(|c| c.name == ca.name) {
            chosen.push(&ca.name);
        } else if pending.capped.iter().any(|c| c.name == ca.name) {
            capped.push(ca.name.clone());
        }
    }
    let scopes = chosen
        .into_iter()
        .map(|name| ScopeTarget {
            target: Target::Ca(name.to_string()),
            scope: cas::ca_scope(plan, name),
        })
        .collect();
    Ok((scopes, capped))
}

/// With `--due`: splits the devices into those a roll can renew and the reports of those their
/// CA, group or enrollment holds back: outcome `revoked` for a device of a group, or with an
/// individual enrollment, that certroll revoked (disabled); `disabled` (the run exits 1) for
/// one another client of DPS disabled, `deleted` for an individual enrollment another client
/// deleted; and
/// `held-back` (the run exits 1) for one whose signing CA is expired, disabled or missing from the
/// vault, or whose group the enrollment service lacks (a renamed `[groups.NAME]` table) or holds
/// without the CA's current version. Each report's one step says what holds it back and what to
/// do.
fn due_held_back(
    plan: &Plan,
    backend: &dyn Backend,
    device_ids: Vec<String>,
    slot: SlotName,
    now: OffsetDateTime,
) -> Result<(Vec<String>, Vec<DeviceRoll>)> {
    use std::collections::HashMap;
    // Per CA and per group: None when fine, else (outcome, why).
    let mut ca_problem: HashMap<String, Option<String>> = HashMap::new();
    let mut group_problem: HashMap<String, Option<(&'static str, String)>> = HashMap::new();
    let mut service = None;
    // Individual enrollments (never a group's devices) read in chunks, judged as a roll judges
    // them: disabled by certroll's revoke, disabled by another client, or deleted by one (the
    // devices here are issued, so their enrollment was made).
    let enrollment_ids: Vec<String> = device_ids
        .iter()
        .filter(|id| plan.enrollments.contains_key(id.as_str()))
        .cloned()
        .collect();
    let mut enrollment_problem: HashMap<String, (&'static str, String)> = HashMap::new();
    for chunk in enrollment_ids.chunks(CHUNK) {
        for (id, e) in chunk.iter().zip(backend.individual_many(chunk)?) {
            let found = match e {
                None => Some(("deleted", crate::ops::held::deleted_by_another(id))),
                Some(e) if e.status == crate::backend::types::Status::Disabled => {
                    // The CRL is read only for a disabled enrollment.
                    let issued = match backend.device(id)?.and_then(|r| r.installed_version) {
                        Some(v) => backend.version(&super::device_cert_name(id), &v)?,
                        None => None,
                    };
                    Some(
                        if crate::ops::held::revoked_by_certroll(backend, issued.as_ref())? {
                            (
                                "revoked",
                                "its enrollment is disabled (revoked); a revoked device gets nothing"
                                    .to_string(),
                            )
                        } else {
                            (
                                "disabled",
                                crate::ops::held::disabled_by_another(id, issued.as_ref()),
                            )
                        },
                    )
                }
                Some(_) => None,
            };
            if let Some(found) = found {
                enrollment_problem.insert(id.clone(), found);
            }
        }
    }
    // Soft-deleted certificates (a device's, or a CA's anywhere up its chain): read once.
    let deleted: std::collections::HashSet<String> = backend
        .deleted_certificates(None)?
        .into_iter()
        .map(|d| d.name)
        .collect();
    // Every individual enrollment's registration id, listed once if a group another client
    // disabled needs them.
    let mut individuals: Option<std::collections::HashSet<String>> = None;
    let own_enrollment = |backend: &dyn Backend,
                          individuals: &mut Option<std::collections::HashSet<String>>,
                          id: &str|
     -> Result<bool> {
        if individuals.is_none() {
            *individuals = Some(
                backend
                    .individuals()?
                    .into_iter()
                    .map(|e| e.registration_id)
                    .collect(),
            );
        }
        Ok(individuals.as_ref().is_some_and(|s| s.contains(id)))
    };
    let mut ok = Vec::with_capacity(device_ids.len());
    let mut held = Vec::new();
    // Each device's group, read once (a file-listed group's look-up by id is linear).
    let mut group_of: HashMap<String, &crate::plan::GroupSpec> = HashMap::new();
    for g in plan.groups.values() {
        for gid in g.device_ids() {
            group_of.entry(gid).or_insert(g);
        }
    }
    for id in device_ids {
        let (ca, group) = match (plan.enrollments.get(&id), group_of.get(&id)) {
            (Some(e), _) => (e.issuer.as_str(), None),
            (None, Some(g)) => (g.signing_ca.as_str(), Some(*g)),
            (None, None) => anyhow::bail!("device:{id} is not in the plan"),
        };
        let mut problem: Option<(&'static str, String)> = None;
        let own = super::device_cert_name(&id);
        if deleted.contains(&own) {
            problem = Some((
                "held-back",
                format!(
                    "its certificate `{own}` is deleted in the vault; bring it back with `certroll vault recover {own}`"
                ),
            ));
        }
        if group.is_none()
            && let Some(found) = enrollment_problem.get(id.as_str())
        {
            problem = Some(found.clone());
        }
        if let Some(g) = group {
            if !group_problem.contains_key(&g.name) {
                let state = backend.group(&g.name)?;
                let found = match state {
                    None => Some((
                        "held-back",
                        match crate::ops::issue::renamed_from(plan, backend, &g.name, &mut service)? {
                            Some((old, count)) => format!(
                                "its group `{name}` is not in the enrollment service, which holds group `{old}` \
                                 ({count} registered device(s)) with the same signing CA `{ca}` and the plan no longer \
                                 declares it: was `[groups.{old}]` renamed to `[groups.{name}]`? A group's name cannot \
                                 change: rename the table back to `[groups.{old}]` (or give `[groups.{name}]` a signing \
                                 CA of its own and `certroll issue group:{name}`)",
                                name = g.name,
                            ),
                            None => format!(
                                "its group `{name}` is not in the enrollment service yet; `certroll issue group:{name}` \
                                 issues it",
                                name = g.name
                            ),
                        },
                    )),
                    Some(state) if state.status == crate::backend::types::Status::Disabled => Some(
                        match crate::ops::held::group_disabled_by_another(backend, &g.name, state.status)? {
                            Some(why) => ("disabled", why),
                            None => (
                                "revoked",
                                format!(
                                    "its group `{}` is disabled (revoked); a revoked device gets nothing",
                                    g.name
                                ),
                            ),
                        },
                    ),
                    Some(state) => {
                        let current = backend.current(&super::ca_cert_name(&g.signing_ca))?;
                        let accepts = current.is_some_and(|c| {
                            [&state.primary, &state.secondary]
                                .into_iter()
                                .flatten()
                                .any(|s| s.cert_der == c.cert_der)
                        });
                        // A CA the service would accept no device under (signed outside the
                        // plan's verified roots) is refused for the whole run, before anything
                        // is written, as without `--due` (issue 10 item 9).
                        if !accepts {
                            let nothing = std::collections::BTreeSet::new();
                            let as_is = RunMakes {
                                renewed: &nothing,
                                uploads_roots: &nothing,
                            };
                            refuse_unaccepted(plan, backend, &[(g, &as_is)])?;
                        }
                        // A missing CA is told by the CA's own check below.
                        (!accepts && backend.current(&super::ca_cert_name(&g.signing_ca))?.is_some()).then(|| {
                            (
                                "held-back",
                                format!(
                                    "its group `{name}` holds the current version of its CA `{ca}` in neither slot, so it \
                                     would refuse the new certificate; finish the CA roll first (rerun the interrupted \
                                     `roll-*` command, or `certroll roll-secondary ca:{ca}`)",
                                    name = g.name,
                                    ca = g.signing_ca
                                ),
                            )
                        })
                    }
                };
                group_problem.insert(g.name.clone(), found);
            }
            // DPS matches a device's own individual enrollment (a breach of the device gives it
            // one) before its group's: a group another client disabled does not cut that off.
            if let Some(found) = &group_problem[&g.name]
                && (found.0 != "disabled" || !own_enrollment(backend, &mut individuals, &id)?)
            {
                problem = Some(found.clone());
            }
        }
        // A device that cannot connect at all is told so, not held back for its CA.
        if problem
            .as_ref()
            .is_none_or(|(o, _)| !matches!(*o, "revoked" | "disabled" | "deleted"))
        {
            if !ca_problem.contains_key(ca) {
                // The CA and every CA above it in the plan, the first deleted one named.
                let mut lineage = vec![ca];
                while let Some(up) = plan
                    .cas
                    .iter()
                    .find(|c| c.name == *lineage[lineage.len() - 1])
                    .and_then(|c| c.issuer.as_deref())
                    .filter(|up| !lineage.contains(up))
                {
                    lineage.push(up);
                }
                let gone = lineage
                    .iter()
                    .map(|c| (*c, super::ca_cert_name(c)))
                    .find(|(_, n)| deleted.contains(n));
                let found = match backend.current(&super::ca_cert_name(ca))? {
                    _ if gone.is_some() => {
                        let (c, n) = gone.expect("checked");
                        Some(format!(
                            "its CA `{c}`'s certificate `{n}` is deleted in the vault; bring it back with \
                             `certroll vault recover {n}`"
                        ))
                    }
                    None => Some(format!(
                        "its CA `{ca}` has no certificate in the vault (purged, or never issued); `certroll issue \
                         ca:{ca}` issues one"
                    )),
                    Some(v) if !v.enabled => Some(format!(
                        "its CA `{ca}`'s current version is disabled (revoked or disabled); a disabled CA is replaced, \
                         not renewed: `certroll roll-primary --breach ca:{ca}`"
                    )),
                    Some(v) if v.exp <= now => Some(format!(
                        "its CA `{ca}` expired at {}; renew it first (`certroll roll-secondary ca:{ca}`)",
                        crate::clock::rfc3339(v.exp)
                    )),
                    Some(_) => None,
                };
                // A CA above it disabled holds its devices back as its own would: what the chain
                // holds is refused as a whole, and the breach roll of that CA replaces them.
                let found = match found {
                    Some(why) => Some(why),
                    None => {
                        let mut above = None;
                        for up in &lineage[1..] {
                            if backend
                                .current(&super::ca_cert_name(up))?
                                .is_some_and(|v| !v.enabled)
                            {
                                above = Some(*up);
                            }
                        }
                        above.map(|up| {
                            format!(
                                "its CA `{up}`'s current version is disabled (revoked or disabled; `{up}` is above \
                                 `{ca}` in its chain); a disabled CA is replaced, not renewed: `certroll roll-primary \
                                 --breach ca:{up}`"
                            )
                        })
                    }
                };
                ca_problem.insert(ca.to_string(), found);
            }
            if let Some(why) = &ca_problem[ca] {
                problem = Some(("held-back", why.clone()));
            }
        }
        match problem {
            None => ok.push(id),
            Some((outcome, why)) => held.push(DeviceRoll {
                delivery: None,
                target: format!("device:{id}"),
                outcome,
                slot,
                steps: vec![why],
                new_thumbprint: None,
                pruned_thumbprint: None,
                compromised: Vec::new(),
            }),
        }
    }
    // A device whose certificate was purged is reported with what to do, not the whole run (the
    // deleted ones were told above, beside the other problems).
    let (kept, purged) = own_certificate_gone(backend, ok, &Default::default(), slot)?;
    held.extend(purged);
    Ok((kept, held))
}

/// With `--due`: splits devices into those whose own certificate is live and the `held-back`
/// reports of those whose certificate is soft-deleted (`vault recover`) or purged (`issue`).
/// `deleted` holds the vault's soft-deleted certificate names.
fn own_certificate_gone(
    backend: &dyn Backend,
    ids: Vec<String>,
    deleted: &std::collections::HashSet<String>,
    slot: SlotName,
) -> Result<(Vec<String>, Vec<DeviceRoll>)> {
    let held_back = |id: &str, why: String| DeviceRoll {
        delivery: None,
        target: format!("device:{id}"),
        outcome: "held-back",
        slot,
        steps: vec![why],
        new_thumbprint: None,
        pruned_thumbprint: None,
        compromised: Vec::new(),
    };
    let mut held = Vec::new();
    let mut live = Vec::with_capacity(ids.len());
    for id in ids {
        let own = super::device_cert_name(&id);
        if deleted.contains(&own) {
            held.push(held_back(
                &id,
                format!("its certificate `{own}` is deleted in the vault; bring it back with `certroll vault recover {own}`"),
            ));
        } else {
            live.push(id);
        }
    }
    let mut kept = Vec::with_capacity(live.len());
    for chunk in live.chunks(CHUNK) {
        let mut rest: Vec<String> = chunk.to_vec();
        while let Some(id) = backend.first_purged(&rest)? {
            let name = super::device_cert_name(&id);
            let Some(note) = (backend.name_state(&name)?.is_none())
                .then(|| crate::ops::vault::purged_note(backend, &name))
                .flatten()
            else {
                break;
            };
            rest.retain(|r| *r != id);
            held.push(held_back(
                &id,
                format!("its certificate `{name}` is gone from the vault: {note}"),
            ));
        }
        kept.extend(rest);
    }
    Ok((kept, held))
}

/// With `--due`: every device the targets cover (every device of the plan when none is named);
/// no CA is renewed.
fn due_devices(plan: &Plan, targets: &[Target]) -> Vec<String> {
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |id: String| {
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    };
    if targets.is_empty() {
        plan.groups
            .values()
            .flat_map(|g| g.device_ids())
            .for_each(&mut add);
        plan.enrollments.keys().cloned().for_each(&mut add);
    }
    for t in targets {
        match t {
            Target::Device(id) | Target::Enrollment(id) => add(id.clone()),
            Target::Group(name) => plan.groups[name].device_ids().for_each(&mut add),
            Target::Ca(name) => cas::ca_scope(plan, name)
                .device_ids
                .into_iter()
                .for_each(&mut add),
        }
    }
    ids
}

/// Splits the targets into device ids and CA-level scopes. Scopes must not overlap (a CA would
/// be renewed twice); a device a scope already covers is rolled once, with the scope.
fn expand<'p>(
    plan: &'p Plan,
    opts: &RollOptions,
    targets: &[Target],
) -> Result<(Vec<String>, Vec<ScopeTarget<'p>>)> {
    let mut scopes: Vec<ScopeTarget<'_>> = Vec::new();
    for t in targets {
        let scope = match t {
            Target::Group(name) => {
                let g = &plan.groups[name];
                let ca = plan
                    .cas
                    .iter()
                    .find(|c| c.name == g.signing_ca)
                    .expect("validated plan");
                if ca.issuer.is_none() {
                    return Err(input(format!(
                        "group:{name} is signed by root CA `{}` directly; a root is rolled as ca:{}",
                        ca.name, ca.name
                    )));
                }
                if opts.breach.is_some() {
                    let others: Vec<String> = plan
                        .groups
                        .values()
                        .filter(|o| o.name != g.name && o.signing_ca == g.signing_ca)
                        .map(|o| format!("group:{}", o.name))
                        .collect();
                    if !others.is_empty() {
                        return Err(input(format!(
                            "group:{name}: its CA `{}` also signs for {}; a compromised CA is replaced everywhere with `roll-primary --breach ca:{}`",
                            g.signing_ca,
                            others.join(", "),
                            g.signing_ca
                        )));
                    }
                }
                let mut scope = cas::group_scope(plan, g);
                if opts.breach.is_some() {
                    // The CAs below the compromised one have their chains through it: each is
                    // re-issued under the new version, its groups' slots refilled and its devices
                    // replaced with it (issue 10 item 5's kind).
                    let below = cas::ca_scope(plan, &g.signing_ca);
                    scope
                        .cas
                        .extend(below.cas.into_iter().filter(|c| c.name != g.signing_ca));
                    let under: Vec<&str> = scope.cas.iter().skip(1).map(|c| c.name.as_str()).collect();
                    for other in plan
                        .groups
                        .values()
                        .filter(|o| under.contains(&o.signing_ca.as_str()))
                    {
                        scope.groups.push(other);
                        scope.device_ids.extend(other.device_ids());
                    }
                    scope.device_ids.extend(
                        plan.enrollments
                            .values()
                            .filter(|e| under.contains(&e.issuer.as_str()))
                            .map(|e| e.name.clone()),
                    );
                }
                scope
            }
            Target::Ca(name) => cas::ca_scope(plan, name),
            _ => continue,
        };
        if let Some(other) = scopes.iter().find(|o| {
            o.scope
                .cas
                .iter()
                .any(|c| scope.cas.iter().any(|d| d.name == c.name))
        }) {
            return Err(input(format!(
                "{t} and {} overlap (both renew CA `{}`); name one of them",
                other.target, scope.cas[0].name
            )));
        }
        scopes.push(ScopeTarget {
            target: t.clone(),
            scope,
        });
    }
    let covered: std::collections::HashSet<&str> = scopes
        .iter()
        .flat_map(|s| s.scope.device_ids.iter().map(String::as_str))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let device_ids = targets
        .iter()
        .filter_map(|t| match t {
            Target::Device(id) | Target::Enrollment(id) => Some(id.clone()),
            _ => None,
        })
        .filter(|id| !covered.contains(id.as_str()) && seen.insert(id.clone()))
        .collect();
    Ok((device_ids, scopes))
}

/// Refuses, before a run is recorded, an expiry roll under a CA whose current version is
/// disabled (revoked, or disabled by hand): a CA of a target's scope, the CA that signs a device
/// target, or one above them. A disabled CA is never renewed or signed under again, only replaced
/// by a breach roll of the topmost disabled CA, which the message names. Exit 2, nothing written.
fn refuse_disabled(
    plan: &Plan,
    backend: &dyn Backend,
    scopes: &[ScopeTarget<'_>],
    device_ids: &[String],
    opts: &RollOptions,
) -> Result<()> {
    if opts.breach.is_some() {
        return Ok(());
    }
    // (what the message names, the CAs to look at from there up)
    let mut starts: Vec<(String, Vec<&str>)> = scopes
        .iter()
        .map(|st| {
            (
                st.target.to_string(),
                st.scope.cas.iter().map(|c| c.name.as_str()).collect(),
            )
        })
        .collect();
    let mut issuers: Vec<&str> = Vec::new();
    // A cron `--due` run's devices are many; a disabled CA among their issuers stops the devices
    // under it when they are assessed, as before.
    let named = if opts.due { &[][..] } else { device_ids };
    for id in named {
        let issuer = devices::issuer_of(plan, id)?;
        if !issuers.contains(&issuer) {
            issuers.push(issuer);
            starts.push((format!("device:{id}"), vec![issuer]));
        }
    }
    let mut disabled: std::collections::HashMap<&str, bool> = Default::default();
    for (target, cas) in starts {
        let mut topmost = None;
        for start in cas {
            let mut at = Some(start);
            // Bounded by the plan's CAs in case a chain in the plan ever loops.
            for _ in 0..=plan.cas.len() {
                let Some(name) = at else { break };
                let off = match disabled.get(name) {
                    Some(off) => *off,
                    None => {
                        let off = backend
                            .current(&super::ca_cert_name(name))?
                            .is_some_and(|v| !v.enabled);
                        disabled.insert(name, off);
                        off
                    }
                };
                if off {
                    topmost = Some(name);
                }
                at = plan
                    .cas
                    .iter()
                    .find(|c| c.name == name)
                    .and_then(|c| c.issuer.as_deref());
            }
            if topmost.is_some() {
                break;
            }
        }
        if let Some(name) = topmost {
            return Err(input(format!(
                "{target}: CA `{name}`'s current version is disabled in the vault (revoked or disabled), so an \
                 expiry roll can neither renew it nor sign under it; a disabled CA is replaced, not renewed: \
                 `certroll roll-primary --breach ca:{name}` issues a new CA and moves everything below it. Nothing \
                 was changed"
            )));
        }
    }
    Ok(())
}

/// Refuses, before any write, a target that was never issued.
fn refuse_unissued(backend: &dyn Backend, device_ids: &[String], scopes: &[ScopeTarget<'_>]) -> Result<()> {
    for st in scopes {
        for g in &st.scope.groups {
            if backend.group(&g.name)?.is_none() {
                return Err(input(format!(
                    "group:{} has not been issued yet (run `certroll issue group:{}`)",
                    g.name, g.name
                )));
            }
        }
    }
    let all = device_ids
        .iter()
        .chain(scopes.iter().flat_map(|s| s.scope.device_ids.iter()));
    let mut chunk = Vec::with_capacity(CHUNK);
    let check = |chunk: &mut Vec<String>| -> Result<()> {
        if let Some(id) = backend.first_unissued(chunk)? {
            return Err(input(format!(
                "device:{id} has not been issued yet (run `certroll issue device:{id}`)"
            )));
        }
        chunk.clear();
        Ok(())
    };
    for id in all {
        chunk.push(id.clone());
        if chunk.len() == CHUNK {
            check(&mut chunk)?;
        }
    }
    check(&mut chunk)
}

/// Whether a breach of a `ca:` or `group:` target is in place, from the journal's record of the
/// last one (a run with nothing to do records none, so it never erases that record): a breach of
/// this target (of the same incident, or one after it, when one is named) took out CA versions
/// of which none is current any more. An incident the last breach counted as handled before it
/// is in place too: its command run again from the shell history must not take the later
/// incident's CA for compromised (trial az12 F1).
fn breach_in_place(backend: &dyn Backend, target: &str, breach: &Breach) -> Result<bool> {
    let Some(step) = backend.last_done_step(target, "remove-compromised")? else {
        return Ok(false);
    };
    if let Some(incident) = &breach.incident
        && !devices::incidents_of(&step.detail).contains(incident)
    {
        return Ok(false);
    }
    for (name, version) in pairs(&step.detail["compromised"]) {
        if backend.current(&name)?.is_some_and(|c| c.version == version) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The devices each breach step left to a resumed run shuts out, from what the rerun decided
/// per device: a device breach's enrollment write refuses the compromised certificate they still
/// hold until they receive the replacement (trial az12 F6); a CA or group breach's devices hold
/// certificates the compromised CA signed, which its `remove-compromised` step took (or takes)
/// out of their group, until their `replace-devices` step replaces them (trial az13 N2). A
/// resumed run is not planned again, so its steps carry no blast radius of their own.
fn resumed_cut_off(run: &journal::Run, report: &mut RollReport) {
    let replacing: std::collections::HashSet<&str> = report
        .devices
        .iter()
        .filter(|d| matches!(d.outcome, "replaced" | "would-replace"))
        .filter_map(|d| d.target.strip_prefix("device:"))
        .collect();
    let mut cut: Vec<CutOff> = Vec::with_capacity(report.steps.len());
    for step in &report.steps {
        let journal_step = run.steps.iter().find(|s| s.seq == step.seq);
        cut.push(match journal_step {
            Some(s)
                if matches!(s.kind.as_str(), "breach-device" | "replace-devices")
                    && !run.done_before(s.seq) =>
            {
                CutOff::of(
                    s.detail["ids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|id| id.as_str())
                        .filter(|id| replacing.contains(id))
                        .map(str::to_string),
                )
            }
            _ => step.devices_cut_off.clone(),
        });
    }
    for (step, cut) in report.steps.iter_mut().zip(cut) {
        step.devices_cut_off = cut;
    }
}

/// Adds to each device step of this run that left some of its devices alone how many it rolled
/// and why the others were not: a step is planned before its devices are read, so its words
/// ("roll 2 device(s)") say what it set out to do, not what it did (a revoked one gets nothing).
fn tally_device_steps(run: &journal::Run, report: &mut RollReport) {
    let outcomes: std::collections::HashMap<&str, &'static str> = report
        .devices
        .iter()
        .map(|d| (d.target.strip_prefix("device:").unwrap_or(&d.target), d.outcome))
        .collect();
    let mut tallies = Vec::with_capacity(report.steps.len());
    for step in &report.steps {
        let journal_step = run.steps.iter().find(|s| s.seq == step.seq);
        let ids = journal_step.and_then(|s| s.detail["ids"].as_array());
        let Some(ids) = ids.filter(|_| matches!(step.state, "done" | "unfinished")) else {
            tallies.push(None);
            continue;
        };
        // Planned as nothing to do (an earlier breach's replacement in force): its words say so.
        let planned_as_done = journal_step.is_some_and(|s| !s.detail["in_force"].is_null());
        let (mut done, mut skipped) = (0usize, std::collections::BTreeMap::<&str, usize>::new());
        for outcome in ids
            .iter()
            .filter_map(|id| outcomes.get(id.as_str().unwrap_or_default()))
        {
            match *outcome {
                "rolled" | "replaced" | "pruned" => done += 1,
                other => *skipped.entry(other).or_default() += 1,
            }
        }
        let all_replaced = done == 0 && skipped.keys().all(|o| *o == "already-replaced");
        if all_replaced && !planned_as_done && run.resumed && !skipped.is_empty() {
            // A resumed breach step whose devices a later breach replaced since: nothing to
            // replace, as a step planned so says (trial az12 F9), not a tally of devices skipped.
            let n: usize = skipped.values().sum();
            tallies.push(Some(format!(
                ": nothing to replace: a later breach replaced {} since",
                if n == 1 { "it" } else { "them" }
            )));
            continue;
        }
        let as_planned = planned_as_done && all_replaced;
        tallies.push((!skipped.is_empty() && !as_planned).then(|| {
            let why: Vec<String> = skipped
                .iter()
                .map(|(o, n)| format!("{n} {}", o.replace('-', " ")))
                .collect();
            format!(
                ": {done} of them rolled, {} not ({})",
                skipped.values().sum::<usize>(),
                why.join(", ")
            )
        }));
    }
    for (step, tally) in report.steps.iter_mut().zip(tallies) {
        if let Some(tally) = tally {
            step.description.push_str(&tally);
        }
    }
}

fn chunk_steps(
    kind: &'static str,
    scope: &str,
    slot: SlotName,
    ids: &[String],
    what: &str,
    unit: usize,
    planned: &mut Vec<Planned>,
) {
    for chunk in ids.chunks(unit) {
        let range = if chunk.len() == 1 {
            chunk[0].clone()
        } else {
            format!("{} .. {}", chunk[0], chunk[chunk.len() - 1])
        };
        planned.push(Planned {
            target: scope.to_string(),
            kind,
            description: format!(
                "{what} {} device(s) ({range}) into the {} slot",
                chunk.len(),
                slot.word()
            ),
            detail: serde_json::json!({ "ids": chunk, "slot": slot.word() }),
            cut_off: CutOff::none(),
        });
    }
}

/// The steps of explicit device targets. A breach's device that an earlier breach already
/// replaced for its incident (`replaced`, by device, from `devices::replaced_already`; empty
/// otherwise) gets a step that says so and cuts nobody off (az8 F8, trial az10 N3): the step is
/// still recorded, and its rerun check stays where the device steps decide.
fn plan_devices(
    opts: &RollOptions,
    ids: &[String],
    replaced: &[Option<serde_json::Value>],
    unit: usize,
    planned: &mut Vec<Planned>,
) {
    match &opts.breach {
        None if opts.due => {
            for chunk in ids.chunks(unit) {
                planned.push(Planned {
                    target: "devices".into(),
                    kind: "roll-devices",
                    description: format!(
                        "roll those of {} device(s) ({} .. {}) whose auto-renew action is due, each into the slot holding its older certificate",
                        chunk.len(),
                        chunk[0],
                        chunk[chunk.len() - 1]
                    ),
                    detail: serde_json::json!({ "ids": chunk, "slot": opts.slot.word() }),
                    cut_off: CutOff::none(),
                });
            }
        }
        None => chunk_steps("roll-devices", "devices", opts.slot, ids, "roll", unit, planned),
        Some(_) => {
            for (at, id) in ids.iter().enumerate() {
                let in_force = replaced.get(at).cloned().flatten();
                let (description, cut_off) = match &in_force {
                    Some(f) => (
                        format!(
                            "nothing to replace: `{id}` holds the replacement {} that an earlier breach made{}",
                            f["replacement"].as_str().unwrap_or("?"),
                            f["incident"]
                                .as_str()
                                .map(|i| format!(" (incident `{i}`)"))
                                .unwrap_or_default()
                        ),
                        CutOff::none(),
                    ),
                    None => (
                        format!(
                            "replace the compromised certificate of `{id}` (new key) in the {} slot; refuse the old one everywhere",
                            opts.slot.word()
                        ),
                        CutOff::of([id.clone()]),
                    ),
                };
                planned.push(Planned {
                    target: format!("device:{id}"),
                    kind: "breach-device",
                    description,
                    // The incident, for a later breach of the device to read while this run is
                    // open (`devices::assess`).
                    detail: serde_json::json!({
                        "ids": [id],
                        "slot": opts.slot.word(),
                        "incident": opts.breach.as_ref().and_then(|b| b.incident.clone()),
                        "in_force": in_force,
                    }),
                    cut_off,
                });
            }
        }
    }
}

/// The steps of a `ca:` or `group:` target.
#[allow(clippy::too_many_arguments)]
fn plan_scope<'p>(
    plan: &Plan,
    backend: &dyn Backend,
    opts: &RollOptions,
    st: &ScopeTarget<'p>,
    decided: &Decision<'p>,
    foreign: &cas::ForeignUnder,
    now: OffsetDateTime,
    planned: &mut Vec<Planned>,
    report: &mut RollReport,
) -> Result<()> {
    let target = st.target.to_string();
    let scope = &st.scope;
    let slot = opts.slot;
    let group_names: Vec<String> = scope.groups.iter().map(|g| g.name.clone()).collect();
    let already = match decided {
        Decision::Breach(already) => *already,
        Decision::Expiry(pending) => pending.is_empty(),
    };
    let mut device_ids = scope.device_ids.clone();
    let taken_back = &foreign.take_back;
    // A compromised primary beside another client's certificate left in the secondary slot can
    // leave only in the write that puts the new CA in its place: the CAs are renewed first, so
    // remove-compromised makes that write and the group never trusts the compromised CA past it.
    let at_once = foreign.primary_replaced_at_once();
    let renew_first = opts.breach.is_some() && !already && !at_once.is_empty();
    if renew_first {
        renew_steps(&scope.cas, planned);
    }
    if let Some(breach) = &opts.breach {
        if already {
            for g in &scope.groups {
                report.groups.push(GroupRoll {
                    target: format!("group:{}", g.name),
                    outcome: "already-replaced",
                    slot,
                    steps: vec![],
                });
            }
            return Ok(());
        }
        let compromised = compromised_cas(plan, backend, st, slot, breach.both)?;
        let tainted = cas::tainted(backend, scope, &compromised)?;
        let names: Vec<String> = compromised.iter().map(|(n, v)| format!("{n}/{v}")).collect();
        // A group's breach cuts off that group's devices; a CA's, every device below it.
        let only = matches!(st.target, Target::Group(_)).then_some(group_names.as_slice());
        let (mut count, mut first) = backend.devices_under(&tainted, only, journal::CUT_OFF_SHOWN)?;
        // A group's breach also replaces every individual enrollment whose current certificate
        // chains through a tainted CA version: the revoked CA would otherwise stay in its chain.
        if only.is_some() {
            for e in enrollments_under(plan, backend, &tainted)? {
                if !device_ids.contains(&e) {
                    count += 1;
                    if first.len() < journal::CUT_OFF_SHOWN {
                        first.push(e.clone());
                    }
                    device_ids.push(e);
                }
            }
        }
        // The incidents handled before this one, carried into its record (the journal keeps only
        // the target's newest step of a kind): the last breach's and those of the breaches of
        // the target left open, which this one replaces what they set out to replace.
        let mut earlier: Vec<String> = match backend.last_done_step(&target, "remove-compromised")? {
            Some(last) => devices::incidents_of(&last.detail),
            None => Vec::new(),
        };
        for i in devices::open_target_incidents(backend, &target)? {
            if !earlier.contains(&i) {
                earlier.push(i);
            }
        }
        earlier.retain(|i| Some(i) != breach.incident.as_ref());
        let detail = serde_json::json!({
            "groups": group_names,
            "compromised": compromised,
            "tainted": tainted,
            "incident": breach.incident,
            "earlier_incidents": earlier,
            "take_back": taken_back.iter().map(|(g, _)| g).collect::<Vec<_>>(),
        });
        let mut taking = taken_back
            .iter()
            .map(|(g, foreign)| {
                format!(
                    "; {}; disable the hub identities of devices the plan does not name that registered through group `{g}`",
                    take_back_words(g, foreign)
                )
            })
            .collect::<String>();
        for g in scope.groups.iter().filter(|g| at_once.contains(&g.name.as_str())) {
            taking.push_str(&format!(
                "; put the new certificate of CA `{}` into the primary slot of group `{}` in the same write (another client's certificate stays in its secondary slot, and the enrollment service requires a primary)",
                g.signing_ca, g.name
            ));
        }
        planned.push(Planned {
            target: target.clone(),
            kind: "remove-compromised",
            description: format!(
                "delete the compromised CA certificate(s) {} (and what they signed) from the groups' slots and the enrollment service's CA certificates{taking}",
                if names.is_empty() { "(none: the group holds no certificate of its CA)".to_string() } else { names.join(", ") }
            ),
            detail: detail.clone(),
            cut_off: CutOff { count, first },
        });
        planned.push(Planned {
            target: target.clone(),
            kind: "revoke-ca",
            description: format!(
                "add the compromised CA certificate(s) to their issuer's CRL (ca-compromise) and disable them and the CA versions they signed in the vault ({} version(s))",
                tainted.len()
            ),
            detail,
            cut_off: CutOff::none(),
        });
    }
    let (renew, place): (&[&crate::plan::CaSpec], &[&crate::plan::GroupSpec]) = match decided {
        Decision::Expiry(pending) => (&pending.renew, &pending.place),
        Decision::Breach(_) => (&scope.cas, &scope.groups),
    };
    // A group whose slot is in place already is left as it is, and reported in the slot that
    // holds its CA (an earlier roll may have used the other slot).
    for g in scope
        .groups
        .iter()
        .filter(|g| !place.iter().any(|p| p.name == g.name))
    {
        report.groups.push(GroupRoll {
            target: format!("group:{}", g.name),
            outcome: "already-rolled",
            slot: cas::slot_holding_ca(backend, g)?.unwrap_or(slot),
            steps: vec![],
        });
    }
    // CAs whose renewal their issuer caps keep their current version: the devices this roll
    // targets under it are done unless due (README's roll rule), recorded in the steps so a
    // resumed run decides the same.
    let capped: Vec<&str> = match decided {
        Decision::Expiry(pending) => pending.capped.iter().map(|c| c.name.as_str()).collect(),
        Decision::Breach(_) => Vec::new(),
    };
    let mark_capped = |planned: &mut Vec<Planned>, from: usize| {
        if !capped.is_empty() {
            for p in &mut planned[from..] {
                p.detail["capped_cas"] = serde_json::json!(capped);
            }
        }
    };
    if opts.breach.is_none() && already {
        let from = planned.len();
        chunk_steps(
            "roll-devices",
            &target,
            slot,
            &scope.device_ids,
            "roll",
            super::unit_devices(plan),
            planned,
        );
        mark_capped(planned, from);
        return Ok(());
    }
    if !renew_first {
        renew_steps(renew, planned);
    }
    for g in place {
        let clear_other = opts.breach.is_some();
        // Another client's certificate a CA breach leaves in place keeps its slot; the new CA
        // goes into the other one, decided here so the step and the report say where it goes.
        let beside = foreign.left_in(&g.name);
        let slot = beside.map_or(slot, |l| l.slot.other());
        let mut steps = vec![format!(
            "put the new certificate of CA `{}` into the {} slot of group `{}`",
            g.signing_ca,
            slot.word(),
            g.name
        )];
        let mut detail =
            serde_json::json!({ "group": g.name, "slot": slot.word(), "clear_other": clear_other });
        let mut cut_off = CutOff::none();
        if let Some(l) = beside {
            steps.push(format!(
                "leave another client's certificate {} in the {} slot of group `{}` as it is",
                l.thumbprint,
                l.slot.word(),
                g.name
            ));
        } else if clear_other && slot == SlotName::Secondary {
            // DPS holds no group with a secondary and no primary: a lone certificate is the primary.
            steps[0] = format!(
                "put the new certificate of CA `{}` into group `{}` as its only signing certificate: the primary slot, since the enrollment service requires a primary (the secondary slot is left empty)",
                g.signing_ca, g.name
            );
        } else if clear_other {
            steps.push(format!(
                "leave the {} slot of group `{}` empty",
                slot.other().word(),
                g.name
            ));
        } else {
            let expired = cas::other_expired(backend, &g.name, slot, now)?;
            let decided = cas::keep_other(backend, g, slot, now)?;
            if expired {
                steps.push(format!(
                    "remove the expired CA certificate from the {} slot",
                    slot.other().word()
                ));
            }
            if decided.moves {
                steps.push(format!(
                    "move the CA certificate the {} slot held to the {} slot, so devices not yet rolled keep working",
                    slot.word(),
                    slot.other().word()
                ));
            }
            if let Some(tp) = &decided.leaves {
                steps.push(format!(
                    "the CA certificate {tp} leaves group `{}` ({} of its devices hold certificates under it until they get their new one)",
                    g.name, decided.cut_off.count
                ));
            }
            detail["keep"] = serde_json::json!(decided.keep);
            cut_off = decided.cut_off;
        }
        if let Some((_, foreign)) = taken_back.iter().find(|(t, _)| *t == g.name) {
            detail["take_back"] = serde_json::json!(true);
            steps.insert(0, take_back_words(&g.name, foreign));
        }
        planned.push(Planned {
            target: format!("group:{}", g.name),
            kind: "group-slot",
            description: steps.join("; "),
            detail,
            cut_off,
        });
        report.groups.push(GroupRoll {
            target: format!("group:{}", g.name),
            outcome: if opts.breach.is_some() {
                "would-replace"
            } else {
                "would-roll"
            },
            slot,
            steps,
        });
    }
    if opts.breach.is_some() {
        chunk_steps(
            "replace-devices",
            &target,
            slot,
            &device_ids,
            "re-issue (new keys) and re-provision",
            super::unit_devices(plan),
            planned,
        );
    } else {
        let from = planned.len();
        chunk_steps(
            "roll-devices",
            &target,
            slot,
            &scope.device_ids,
            "roll",
            super::unit_devices(plan),
            planned,
        );
        mark_capped(planned, from);
    }
    Ok(())
}

/// The renew-ca steps of `cas`, parents first.
fn renew_steps(cas: &[&crate::plan::CaSpec], planned: &mut Vec<Planned>) {
    for ca in cas {
        let description = match &ca.issuer {
            Some(i) => format!("renew CA `{}` (new key) signed by `{i}`", ca.name),
            None => format!(
                "renew root CA `{}` (new key, self-signed), upload it to the enrollment service and prove possession",
                ca.name
            ),
        };
        planned.push(Planned {
            target: format!("ca:{}", ca.name),
            kind: "renew-ca",
            description,
            detail: serde_json::json!({ "ca": ca.name }),
            cut_off: CutOff::none(),
        });
    }
}

/// The individual enrollments whose current certificate chains through one of the `tainted` CA
/// versions (name, version): signed by one, or by a CA version below one (the CA tree is walked
/// through each version's recorded issuer), in plan order. The enrollments' versions are read
/// in one batch.
fn enrollments_under(
    plan: &Plan,
    backend: &dyn Backend,
    tainted: &[(String, String)],
) -> Result<Vec<String>> {
    let names: Vec<String> = plan
        .enrollments
        .values()
        .map(|e| crate::backend::types::device_cert_name(&e.name))
        .collect();
    let briefs = backend.briefs_many(&names)?;
    // Whether a CA version's chain passes through a tainted one, remembered per version.
    let mut through: std::collections::HashMap<(String, String), bool> = Default::default();
    let mut out = Vec::new();
    for (e, versions) in plan.enrollments.values().zip(briefs) {
        let Some(mut at) = versions.last().and_then(|v| v.issuer.clone()) else {
            continue;
        };
        let mut walked = Vec::new();
        // Bounded: a chain is no longer than the plan's CAs (a loop in the records stops here).
        let hit = loop {
            if let Some(known) = through.get(&at) {
                break *known;
            }
            if tainted.contains(&at) {
                break true;
            }
            walked.push(at.clone());
            match backend.version(&at.0, &at.1)?.and_then(|v| v.issuer) {
                Some(up) if walked.len() <= plan.cas.len() => at = up,
                _ => break false,
            }
        };
        for w in walked {
            through.insert(w, hit);
        }
        if hit {
            out.push(e.name.clone());
        }
    }
    Ok(out)
}

/// What a breach says it does to the certificates another client put into group `group` when
/// it takes the group back.
fn take_back_words(group: &str, foreign: &[crate::backend::types::ForeignCertificate]) -> String {
    let what: Vec<String> = foreign
        .iter()
        .map(|f| {
            format!(
                "{} (issuer {}, subject {}) from its {} slot",
                f.thumbprint,
                if f.issuer.is_empty() {
                    "not given"
                } else {
                    &f.issuer
                },
                if f.subject.is_empty() {
                    "not given"
                } else {
                    &f.subject
                },
                f.slot
            )
        })
        .collect();
    format!(
        "enrollment group `{group}`: takes back another client's certificate {}",
        what.join(" and another client's certificate ")
    )
}

/// The versions of a group's CA that another client's certificate in the group's slot may have
/// displaced, which DPS no longer shows: the enabled versions (of `versions`, the CA's, oldest
/// first) that signed the certificates the fleet record says the group's devices (`device_ids`)
/// hold; when none of them holds a certificate of the CA, its current version (the one certroll
/// put into the group). A version already disabled (an earlier breach, or a CA the group shares
/// with a breached group) is left out: declaring the current version in its place would take a
/// CA another group holds.
fn displaced_versions(
    backend: &dyn Backend,
    device_ids: &[String],
    versions: &[crate::backend::types::VaultVersion],
) -> Result<Vec<(String, String)>> {
    // Pages as `devices_under` reads the fleet: one batch of vault reads per page.
    const PAGE: usize = 500;
    let Some(current) = versions.last() else {
        return Ok(Vec::new());
    };
    let ca = current.name.as_str();
    let mut signed = std::collections::BTreeSet::new();
    let mut any_under_ca = false;
    let mut note = |issuer: Option<(String, String)>| {
        if let Some((_, version)) = issuer.filter(|(name, _)| name == ca) {
            any_under_ca = true;
            signed.insert(version);
        }
    };
    for page in device_ids.chunks(PAGE) {
        let records: Vec<_> = backend
            .device_many(page)?
            .into_iter()
            .flatten()
            .filter(|d| d.installed_version.is_some())
            .collect();
        let names: Vec<String> = records.iter().map(|d| d.cert_name.clone()).collect();
        // Each name's newest version, as `check` and `status` read it: on azure from one listing
        // of the vault and what certroll recorded issuing (store v15), so a device whose record
        // names that version costs no request of its own. Only the others' versions are listed.
        let mut older = Vec::new();
        for (d, newest) in records.iter().zip(backend.current_many(&names)?) {
            match newest.filter(|v| d.installed_version.as_deref() == Some(v.version.as_str())) {
                Some(v) => note(v.issuer),
                None => older.push(d),
            }
        }
        let names: Vec<String> = older.iter().map(|d| d.cert_name.clone()).collect();
        for (d, briefs) in older.iter().zip(backend.briefs_many(&names)?) {
            note(
                briefs
                    .iter()
                    .find(|b| d.installed_version.as_deref() == Some(b.version.as_str()))
                    .and_then(|b| b.issuer.clone()),
            );
        }
    }
    let mut out: Vec<(String, String)> = versions
        .iter()
        .filter(|v| v.enabled && signed.contains(&v.version))
        .map(|v| (v.name.clone(), v.version.clone()))
        .collect();
    if !any_under_ca && current.enabled {
        out.push((current.name.clone(), current.version.clone()));
    }
    Ok(out)
}

/// The compromised CA versions of a breach target: for `group:` the CA certificate in the named
/// slot (both slots with `--both`) and, when another client's certificate is in the group (the
/// breach takes it back), whatever certificate of its CA the group still holds and the versions
/// that certificate displaced ([`displaced_versions`]), as a group that still shows them would
/// declare; for `ca:` the CA's current version (every version with `--both`).
fn compromised_cas(
    plan: &Plan,
    backend: &dyn Backend,
    st: &ScopeTarget<'_>,
    slot: SlotName,
    both: bool,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    match &st.target {
        Target::Group(name) => {
            let g = &plan.groups[name];
            let state = backend
                .group(name)?
                .context("group missing from the enrollment service")?;
            let versions = backend.versions(&super::ca_cert_name(&g.signing_ca))?;
            let (named, other) = match slot {
                SlotName::Primary => (&state.primary, &state.secondary),
                SlotName::Secondary => (&state.secondary, &state.primary),
            };
            // Taking the group back from another client, the breach declares compromised
            // whatever certificate of its CA the group still holds, and what the other client's
            // certificate displaced (below).
            let taking_back = !state.foreign.is_empty();
            let mut slots = vec![named];
            if both || taking_back {
                slots.push(other);
            }
            for s in slots.into_iter().flatten() {
                if let Some(v) = versions.iter().find(|v| v.cert_der == s.cert_der) {
                    out.push((v.name.clone(), v.version.clone()));
                }
            }
            if taking_back {
                for v in displaced_versions(backend, &st.scope.device_ids, &versions)? {
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
            }
            if out.is_empty() && !taking_back {
                return Err(input(format!(
                    "group:{name}: the {} slot holds no certificate of CA `{}`; nothing to declare compromised",
                    slot.word(),
                    g.signing_ca
                )));
            }
        }
        Target::Ca(name) => {
            let versions = backend.versions(&super::ca_cert_name(name))?;
            let current = versions.last().with_context(|| {
                format!("CA `{name}` is not in the vault (run `certroll issue ca:{name}`)")
            })?;
            if both {
                out.extend(versions.iter().map(|v| (v.name.clone(), v.version.clone())));
            } else {
                out.push((current.name.clone(), current.version.clone()));
            }
        }
        _ => unreachable!("scopes are ca: and group: targets"),
    }
    Ok(out)
}

fn pairs(v: &serde_json::Value) -> Vec<(String, String)> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

/// What a run reads of the other breach runs before it carries out its steps.
struct Resumed<'a> {
    /// The incidents of the other device breach runs left open.
    open_incidents: &'a devices::OpenIncidents,
    /// A resumed `ca:`/`group:` breach that a later breach has superseded (see
    /// [`superseded_by`]): that breach's incident label.
    superseded: Option<&'a str>,
}

/// For a resumed (or would-be resumed) `ca:`/`group:` breach run: the incident label of the
/// later finished breach of its target that counted this run's incident as handled, having
/// replaced the CA this run set out to replace. This run then renews no CA and replaces no device
/// again (that would leave the later breach's CA version and device certificates enabled with
/// nobody using them); it only finishes its own leftovers (trial az12 F2). Only a labelled
/// incident is recognised, and only when every target of the run was superseded.
fn superseded_by(backend: &dyn Backend, run: &journal::Run) -> Result<Option<String>> {
    if !run.resumed {
        return Ok(None);
    }
    let mut later = None;
    for step in run.steps.iter().filter(|s| s.kind == "remove-compromised") {
        let Some(incident) = step.detail["incident"].as_str() else {
            return Ok(None);
        };
        let Some(last) = backend.last_done_step(&step.target, "remove-compromised")? else {
            return Ok(None);
        };
        if !devices::incidents_of(&last.detail).iter().any(|i| i == incident) {
            return Ok(None);
        }
        later = Some(last.detail["incident"].as_str().unwrap_or(incident).to_string());
    }
    Ok(later)
}

/// The steps a superseded breach run (see [`superseded_by`]) leaves undone: the later breach
/// renewed the CA and put it into the groups.
fn skipped_when_superseded(kind: &str) -> bool {
    matches!(kind, "renew-ca" | "group-slot")
}

/// Carries out the run's steps that are not done yet, in order.
fn execute(
    plan: &Plan,
    opts: &RollOptions,
    run: &journal::Run,
    resumed: &Resumed<'_>,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
    report: &mut RollReport,
) -> Result<()> {
    let mut issuers = Issuers::default();
    let steps = &run.steps;
    let mut i = 0;
    while i < steps.len() {
        let step = &steps[i];
        if is_device_step(&step.kind) {
            // Consecutive device steps run as one pipeline.
            let mut j = i;
            while j < steps.len() && is_device_step(&steps[j].kind) {
                j += 1;
            }
            roll_device_steps(
                plan,
                opts,
                run,
                resumed,
                &steps[i..j],
                backend,
                &mut issuers,
                now,
                report,
            )?;
            i = j;
            continue;
        }
        i += 1;
        if opts.dry_run || run.done_before(step.seq) {
            continue;
        }
        let context = format!("step {} ({}) of {}", step.seq, step.kind, step.target);
        if let Some(later) = resumed.superseded
            && skipped_when_superseded(&step.kind)
        {
            run.step(backend, step.seq, now, |_| {
                Ok(((), serde_json::json!({ "superseded_by": later })))
            })
            .context(context)?;
            continue;
        }
        match step.kind.as_str() {
            "renew-ca" => {
                let name = step.detail["ca"].as_str().unwrap_or_default();
                let ca = plan
                    .cas
                    .iter()
                    .find(|c| c.name == name)
                    .with_context(|| format!("the plan no longer declares CA `{name}`"))?;
                run.step(backend, step.seq, now, |b| {
                    let v = cas::renew(plan, ca, b, now)?;
                    Ok(((), serde_json::json!({ "version": v.version })))
                })
                .context(context)?;
                issuers.forget();
            }
            "group-slot" => {
                let name = step.detail["group"].as_str().unwrap_or_default();
                let g = plan
                    .groups
                    .get(name)
                    .with_context(|| format!("the plan no longer declares group `{name}`"))?;
                let slot = SlotName::parse(step.detail["slot"].as_str().unwrap_or_default());
                let clear = step.detail["clear_other"].as_bool().unwrap_or(false);
                let keep = step.detail.get("keep").map(|k| k.as_str());
                let take_back = step.detail["take_back"].as_bool().unwrap_or(false);
                run.step(backend, step.seq, now, |b| {
                    cas::place(plan, g, slot, clear, keep, take_back, b, now)?;
                    Ok(((), serde_json::json!({})))
                })
                .context(context)?;
            }
            "remove-compromised" => {
                let groups: Vec<String> =
                    serde_json::from_value(step.detail["groups"].clone()).unwrap_or_default();
                let tainted = pairs(&step.detail["tainted"]);
                let take_back: Vec<String> =
                    serde_json::from_value(step.detail["take_back"].clone()).unwrap_or_default();
                let result = run
                    .step(backend, step.seq, now, |b| {
                        let result = cas::remove_tainted(plan, &groups, &tainted, &take_back, b, now)?;
                        Ok((result.clone(), result))
                    })
                    .context(context)?;
                let shut: Vec<String> =
                    serde_json::from_value(result["shut_out"].clone()).unwrap_or_default();
                if !shut.is_empty() {
                    report.warnings.push(format!(
                        "{}: disabled the hub identities of {} device(s) the plan does not name that registered \
                         through the group(s) taken back, under the certificates taken back with them: {}; enable \
                         one again only once its device holds a certificate outside the compromised CA (Azure \
                         portal, or IoT Hub's API)",
                        step.target,
                        shut.len(),
                        shut.join(", ")
                    ));
                }
            }
            "prune-expired" => {
                run.step(backend, step.seq, now, |b| Ok(((), cas::prune_expired(b, now)?)))
                    .context(context)?;
            }
            "revoke-ca" => {
                let compromised = pairs(&step.detail["compromised"]);
                let tainted = pairs(&step.detail["tainted"]);
                run.step(backend, step.seq, now, |b| {
                    Ok(((), cas::revoke_tainted(&compromised, &tainted, b, now)?))
                })
                .context(context)?;
            }
            other => anyhow::bail!("the journal holds a step of unknown kind `{other}`"),
        }
    }
    Ok(())
}

/// A chunk as decided, and with its keys and certificates made.
type Decided<'a, 'p> = (u32, Mode<'a>, Assessed<'p>);
type Made<'a, 'p> = (u32, Mode<'a>, Assessed<'p>, devices::Fresh);

/// Makes the keys and certificates of a decided chunk (on every core; no backend).
fn make<'a, 'p>(
    chunk: Option<Decided<'a, 'p>>,
    issuers: &Issuers,
    now: OffsetDateTime,
    skew: time::Duration,
    steps: &[crate::backend::types::JournalStep],
) -> Result<Option<Made<'a, 'p>>> {
    Ok(match chunk {
        Some((seq, mode, assessed)) => {
            // Making a chunk's certificates reads and writes the vault too: its errors name
            // the step as the chunk's writes do.
            let fresh = if assessed.any() {
                devices::generate(&assessed, issuers, now, skew).with_context(|| step_context(steps, seq))?
            } else {
                Vec::new()
            };
            Some((seq, mode, assessed, fresh))
        }
        None => None,
    })
}

fn is_device_step(kind: &str) -> bool {
    matches!(kind, "roll-devices" | "replace-devices" | "breach-device")
}

/// Whether a device reported `outcome` keeps its step, and the run, open for a rerun: left alone
/// for another client's certificate in its enrollment (`foreign`), or, in a breach, for an
/// enrollment another client disabled or deleted. A breach finished without such a device would
/// leave its compromised certificate to be admitted again once the enrollment is back, and
/// its rerun would find nothing to do.
fn leaves_open(outcome: &str, breach: bool) -> bool {
    outcome == "foreign" || (breach && matches!(outcome, "disabled" | "deleted"))
}

/// Finishes the open expiry rolls whose only unfinished work was devices this breach has now
/// replaced (`devices` reported `replaced`), and returns their numbers. Such a run was left
/// open for a device another client's certificate held (see [`leaves_open`]), and the take-back
/// breach its output names gave the device a new certificate: its resume would find the device
/// `already-rolled` and change nothing, while `check` warned about it until then (trial az16
/// 1a). A run that made a version of its own for such a device before it was cut off (found by
/// its step's mark) stays open: its resume disables that version, which the breach superseded.
/// A breach run stays open too: its resume recognises what a later breach superseded (see
/// [`superseded_by`] and `held::open_device_breaches`) and finishes its own leftovers.
fn finish_replaced(
    backend: &mut dyn Backend,
    run: &journal::Run,
    devices: &[DeviceRoll],
    now: OffsetDateTime,
) -> Result<Vec<i64>> {
    let replaced: std::collections::HashSet<&str> = devices
        .iter()
        .filter(|d| d.outcome == "replaced")
        .filter_map(|d| d.target.strip_prefix("device:"))
        .collect();
    if replaced.is_empty() {
        return Ok(Vec::new());
    }
    let mut finished = Vec::new();
    'runs: for other in backend.open_runs()? {
        if Some(other.id) == run.number() {
            continue;
        }
        let undone: Vec<_> = other.steps.iter().filter(|s| s.result.is_none()).collect();
        if undone.is_empty() {
            continue;
        }
        for step in undone {
            let ids: Vec<String> = serde_json::from_value(step.detail["ids"].clone()).unwrap_or_default();
            if step.kind != "roll-devices"
                || ids.is_empty()
                || !ids.iter().all(|id| replaced.contains(id.as_str()))
            {
                continue 'runs;
            }
            let names: Vec<String> = ids.iter().map(|id| super::device_cert_name(id)).collect();
            backend.mark_new_versions(Some(&format!("{}/{}", other.id, step.seq)));
            let own = backend.versions_marked(&names);
            backend.mark_new_versions(None);
            if own?.iter().any(Option::is_some) {
                continue 'runs;
            }
        }
        crate::backend::in_one_unit(backend, |b| b.finish_run(other.id, now))?;
        finished.push(other.id);
    }
    Ok(finished)
}

/// Device steps as a pipeline on two lanes: the backend lane writes chunk k and then reads and
/// decides chunk k+2, while the crypto lane makes the keys and certificates of chunk k+1 on the
/// other cores.
#[allow(clippy::too_many_arguments)]
fn roll_device_steps(
    plan: &Plan,
    opts: &RollOptions,
    run: &journal::Run,
    resumed: &Resumed<'_>,
    steps: &[crate::backend::types::JournalStep],
    backend: &mut dyn Backend,
    issuers: &mut Issuers,
    now: OffsetDateTime,
    report: &mut RollReport,
) -> Result<()> {
    let default_breach = Breach::default();
    let open_incidents = resumed.open_incidents;
    // The CA versions this run's CA breaches disabled, and those a CA breach left open had
    // revoked before it was cut off: what they signed for a device goes out of use once the
    // device is replaced.
    let mut tainted: Vec<(String, String)> = run
        .steps
        .iter()
        .filter(|s| s.kind == "revoke-ca")
        .flat_map(|s| pairs(&s.detail["tainted"]))
        .collect();
    if steps.iter().any(|s| s.kind == "replace-devices") {
        for t in devices::open_tainted(&*backend, run.number())? {
            if !tainted.contains(&t) {
                tainted.push(t);
            }
        }
    }
    let mode_of = |step: &crate::backend::types::JournalStep| {
        let slot = SlotName::parse(step.detail["slot"].as_str().unwrap_or_default());
        match step.kind.as_str() {
            "replace-devices" => Mode::Replace {
                slot,
                remove_identity: opts.breach.as_ref().is_some_and(|b| b.remove_hub_identity),
                tainted: &tainted,
                superseded: resumed.superseded,
            },
            "breach-device" => Mode::Breach {
                slot,
                breach: opts.breach.as_ref().unwrap_or(&default_breach),
            },
            _ => Mode::Expiry { slot, due: opts.due },
        }
    };
    let todo: Vec<_> = steps.iter().filter(|s| !run.done_before(s.seq)).collect();
    let total_devices: usize = run
        .steps
        .iter()
        .filter(|s| is_device_step(&s.kind))
        .map(|s| s.detail["ids"].as_array().map_or(0, Vec::len))
        .sum();
    // The CAs these steps sign with are loaded once, before the lanes start.
    let mut needed: Vec<&str> = Vec::new();
    for s in &todo {
        for id in s.detail["ids"].as_array().into_iter().flatten() {
            let issuer = devices::issuer_of(plan, id.as_str().unwrap_or_default())?;
            if !needed.contains(&issuer) {
                needed.push(issuer);
            }
        }
    }
    if !opts.dry_run {
        issuers.load_all(&*backend, &needed, now);
    }
    // The CA versions the devices are rolled under: a dry run's CA steps were not carried out,
    // so a CA it would renew has no target version yet.
    let renewed: Vec<&str> = if opts.dry_run {
        run.steps
            .iter()
            .filter(|s| s.kind == "renew-ca" && !run.done_before(s.seq))
            .filter_map(|s| s.detail["ca"].as_str())
            .collect()
    } else {
        Vec::new()
    };
    let mut cas = devices::CaTargets::load(&*backend, &needed, &renewed)?;
    for s in &todo {
        for ca in s.detail["capped_cas"].as_array().into_iter().flatten() {
            cas.mark_capped(ca.as_str().unwrap_or_default());
        }
    }
    // A large run's devices all share the steps of their chunk: listing them per device would
    // hold (and print) hundreds of megabytes.
    let describe = total_devices <= DEVICE_STEPS_LISTED;
    let ids_of = |step: &crate::backend::types::JournalStep| -> Vec<String> {
        serde_json::from_value(step.detail["ids"].clone()).unwrap_or_default()
    };
    let decide = |backend: &mut dyn Backend,
                  step: Option<&&crate::backend::types::JournalStep>|
     -> Result<Option<Decided<'_, '_>>> {
        let Some(s) = step else {
            return Ok(None);
        };
        let ids = ids_of(s);
        let mode = mode_of(s);
        // Only a resumed run's step can have written anything before: its journal mark.
        let mark = run
            .number()
            .filter(|_| run.resumed)
            .map(|id| format!("{id}/{}", s.seq));
        let assessed = devices::assess(
            plan,
            backend,
            &cas,
            &ids,
            mode,
            opts.dry_run,
            describe,
            mark.as_deref(),
            open_incidents,
            now,
        )
        .with_context(|| format!("step {} ({}) of {}", s.seq, s.kind, s.target))?;
        Ok(Some((s.seq, mode, assessed)))
    };
    let issuers = &*issuers;
    // The chunk decided after `seq`'s writes may be read beside them: a backend over a network
    // then spends no time of the lane on its reads. Not when the two chunks share a device
    // (steps of one breach may): its read must see the write.
    let read_ahead = |b: &mut dyn Backend, seq: u32, next: Option<&&crate::backend::types::JournalStep>| {
        let Some(next) = next else {
            return;
        };
        let ids = ids_of(next);
        let written: std::collections::HashSet<String> = run
            .steps
            .iter()
            .filter(|s| s.seq == seq)
            .flat_map(ids_of)
            .collect();
        if ids.iter().any(|id| written.contains(id)) {
            return;
        }
        let names: Vec<String> = ids.iter().map(|id| super::device_cert_name(id)).collect();
        b.read_ahead(Some((&names, &ids)));
    };
    if !opts.dry_run {
        backend.bulk_writes(true);
    }
    let outcome = (|| -> Result<()> {
        let mut next = todo.iter();
        let mut decided = decide(&mut *backend, next.next())?;
        let mut made: Option<Made<'_, '_>> = None;
        loop {
            if decided.is_none() && made.is_none() {
                break;
            }
            let upcoming = next.next();
            let b = &mut *backend;
            let (lane, crypto) = rayon::join(
                move || -> Result<_> {
                    let stored = match made {
                        Some((seq, mode, mut assessed, fresh)) => {
                            if !opts.dry_run {
                                read_ahead(b, seq, upcoming);
                                // A device left alone (see `leaves_open`) keeps the step open
                                // for the rerun that finishes it.
                                let breach = matches!(mode, Mode::Breach { .. } | Mode::Replace { .. });
                                let left = assessed.reports.iter().any(|r| leaves_open(r.outcome, breach));
                                run.step_leaving(b, seq, now, |b| {
                                    let result = devices::store(&mut assessed, fresh, issuers, b, mode, now)?;
                                    Ok(((), (!left).then_some(result)))
                                })
                                .with_context(|| step_context(&run.steps, seq))?;
                            }
                            Some(assessed)
                        }
                        None => None,
                    };
                    Ok((stored, decide(b, upcoming)?))
                },
                || make(decided, issuers, now, plan.not_before_skew, &run.steps),
            );
            let (stored, following) = lane?;
            if let Some(done) = stored {
                report.devices.extend(done.reports);
            }
            made = crypto?;
            decided = following;
        }
        Ok(())
    })();
    if !opts.dry_run {
        backend.bulk_writes(false);
        backend.read_ahead(None);
    }
    outcome
}
