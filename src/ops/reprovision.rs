//! `reprovision`: each targeted device runs the registration flow (PRODUCT.md flow 7) with the
//! certificate installed on it. The enrollment service checks disabled enrollments first, then
//! the device's individual enrollment, then the groups' chains, and applies the reprovision
//! policy to the hub identity (migrate and reset swap the hub's thumbprints to the presented
//! certificate; never records the registration and leaves the hub alone).

use super::journal::{self, CutOff, Planned, StepReport};
use super::{Access, BackendSettings, Target, chain_above, open_verb_backend};
use crate::backend::types::RegistrationRequest;
use crate::error::input;
use crate::plan::Plan;
use anyhow::Result;
use serde::Serialize;
use std::collections::HashMap;
use time::OffsetDateTime;

/// Devices registered per batch.
const CHUNK: usize = 2048;

/// Options of `reprovision`.
#[derive(Debug, Clone, Default)]
pub struct ReprovisionOptions {
    /// device:ID, enrollment:NAME or group:NAME; empty = every device.
    pub targets: Vec<Target>,
    /// Say which devices would be assigned and which refused; change nothing.
    pub dry_run: bool,
    /// Register devices again even where the service already has them assigned with the
    /// certificate they hold (under `reset` this resets their twins again).
    pub force: bool,
    /// How to open the backend.
    pub backend: BackendSettings,
}

/// One device's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceOutcome {
    /// Device id.
    pub device: String,
    /// `assigned`, `failed`, `unchanged` (already assigned with the certificate it holds),
    /// `would-assign`, `would-fail`, or `skipped` (nothing installed).
    pub status: String,
    /// initialAssignment, deviceDataMigrated, deviceDataReset, reprovisionedToInitialAssignment.
    pub substatus: Option<String>,
    /// The hub it was (or would be) assigned to.
    pub hub: Option<String>,
    /// Why it was (or would be) rejected or skipped.
    pub error: Option<String>,
    /// A device `waiting` on a remote backend (the direct method did not reach it) whose
    /// certificate the enrollment service refuses (a revoked device): it cannot connect once the
    /// run is done, so it is cut off as the local store's refused device is. Not in the JSON.
    #[serde(skip)]
    pub refused: bool,
}

/// What `reprovision` did.
#[derive(Debug, Clone, Serialize)]
pub struct ReprovisionReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The journal's number of this run (for a dry run, of the open run it would resume; else
    /// None).
    pub run: Option<i64>,
    /// Whether this run finished one that had been killed or had failed (a dry run: would
    /// finish it).
    pub resumed: bool,
    /// The steps (a chunk of devices each).
    pub steps: Vec<StepReport>,
    /// Devices assigned (or, in a dry run, that would be).
    pub assigned: u64,
    /// Devices already assigned with the certificate they hold, left alone.
    pub unchanged: u64,
    /// Devices rejected (or with no certificate installed).
    pub rejected: u64,
    /// Devices that cannot connect once the run is done: the ones rejected.
    pub devices_cut_off: CutOff,
    /// Every device, in plan order.
    pub devices: Vec<DeviceOutcome>,
}

/// The devices the targets select, in plan order.
fn selected(plan: &Plan, targets: &[Target]) -> Vec<String> {
    let mut out = Vec::new();
    for g in plan.groups.values() {
        if targets.is_empty() || targets.contains(&Target::Group(g.name.clone())) {
            out.extend(g.device_ids());
        } else {
            out.extend(
                targets
                    .iter()
                    .filter_map(|t| {
                        if let Target::Device(id) = t {
                            Some(id)
                        } else {
                            None
                        }
                    })
                    .filter(|id| super::group_has_device(g, id))
                    .cloned(),
            );
        }
    }
    for e in plan.enrollments.values() {
        if targets.is_empty()
            || targets.contains(&Target::Enrollment(e.name.clone()))
            || targets.contains(&Target::Device(e.name.clone()))
        {
            out.push(e.name.clone());
        }
    }
    out
}

/// The canonical text of the command: the journal's key for resuming it.
fn command_key(opts: &ReprovisionOptions) -> String {
    let mut key = String::from("reprovision");
    if opts.force {
        key.push_str(" --force");
    }
    for t in &opts.targets {
        key.push_str(&format!(" {t}"));
    }
    key
}

/// Runs `reprovision`.
pub fn reprovision(plan: &Plan, opts: &ReprovisionOptions, now: OffsetDateTime) -> Result<ReprovisionReport> {
    for t in &opts.targets {
        t.check(plan)?;
        if let Target::Ca(_) = t {
            return Err(input(format!(
                "{t}: reprovision takes device:ID, enrollment:NAME or group:NAME"
            )));
        }
    }
    let access = if opts.dry_run {
        Access::Preview
    } else {
        Access::Modify
    };
    let mut backend = open_verb_backend(plan, "reprovision", access, &opts.backend)?;
    let mut ids = selected(plan, &opts.targets);
    // Devices already assigned with the certificate they hold are settled before a run is
    // planned, so a reprovision with nothing to do records nothing (issue 13). A run being
    // resumed is taken as recorded, and so is its dry run: it shows what the rerun does.
    // settled[i] is the outcome of report_order[i] when it was settled here (None: left to
    // the run). Kept by position, not in a map keyed by id: a no-op of a large fleet settles
    // every device, and hashing and re-ordering 100k ids was a third of its time.
    let mut settled: Vec<Option<DeviceOutcome>> = Vec::new();
    let mut report_order: Vec<String> = Vec::new();
    let mut chains: HashMap<(String, String), Vec<Vec<u8>>> = HashMap::new();
    if !opts.force && crate::backend::Journal::open_run(&backend, &command_key(opts))?.is_none() {
        settled.reserve_exact(ids.len());
        let mut todo = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            // What the backend settles from recorded decisions first; the rest the long way.
            let mut rest = Vec::new();
            let mut rest_at = Vec::new();
            for (id, unchanged) in chunk.iter().zip(crate::backend::Backend::unchanged_registrations(
                &backend, chunk, now,
            )?) {
                let outcome = unchanged.map(|u| DeviceOutcome {
                    device: id.clone(),
                    status: "unchanged".into(),
                    substatus: u.substatus,
                    hub: Some(u.hub),
                    error: None,
                    refused: false,
                });
                if outcome.is_none() {
                    rest_at.push(settled.len());
                    rest.push(id.clone());
                }
                settled.push(outcome);
            }
            if rest.is_empty() {
                continue;
            }
            let at: HashMap<&str, usize> = rest.iter().map(String::as_str).zip(rest_at).collect();
            for outcome in register_chunk(&mut backend, &rest, opts, &mut chains, true, now)? {
                if outcome.status == "unchanged"
                    && let Some(&i) = at.get(outcome.device.as_str())
                {
                    settled[i] = Some(outcome);
                } else {
                    todo.push(outcome.device);
                }
            }
        }
        report_order = std::mem::replace(&mut ids, todo);
    }
    refuse_deleted_ca(plan, &backend, &ids)?;
    let planned: Vec<Planned> = ids
        .chunks(CHUNK)
        .map(|chunk| Planned {
            target: "devices".into(),
            kind: "reprovision",
            description: format!(
                "register {} device(s) ({} .. {}) again with the certificate each holds",
                chunk.len(),
                chunk[0],
                chunk[chunk.len() - 1]
            ),
            detail: serde_json::json!({ "ids": chunk }),
            cut_off: CutOff::none(),
        })
        .collect();
    let run = journal::begin(&mut backend, &command_key(opts), &planned, opts.dry_run, now)?;
    let mut report = ReprovisionReport {
        dry_run: opts.dry_run,
        run: run.number(),
        resumed: run.resumed,
        steps: Vec::new(),
        assigned: 0,
        unchanged: 0,
        rejected: 0,
        devices_cut_off: CutOff::none(),
        devices: Vec::new(),
    };
    let mut cut_off = Vec::new();
    let mut cut_per_step = Vec::new();
    for step in run.steps.clone() {
        let chunk: Vec<String> = serde_json::from_value(step.detail["ids"].clone()).unwrap_or_default();
        if run.done_before(step.seq) {
            cut_per_step.push(CutOff::none());
            continue;
        }
        let outcomes = run.step(&mut backend, step.seq, now, |b| {
            let outcomes = register_chunk(b, &chunk, opts, &mut chains, false, now)?;
            Ok((outcomes, serde_json::json!({})))
        })?;
        let step_cut: Vec<String> = outcomes
            .iter()
            .filter(|o| {
                matches!(
                    o.status.as_str(),
                    "failed" | "disabled" | "would-fail" | "skipped"
                ) || o.refused
            })
            .map(|o| o.device.clone())
            .collect();
        cut_off.extend(step_cut.iter().cloned());
        cut_per_step.push(CutOff::of(step_cut));
        for outcome in outcomes {
            match outcome.status.as_str() {
                "assigned" | "would-assign" => report.assigned += 1,
                "unchanged" => report.unchanged += 1,
                _ => report.rejected += 1,
            }
            report.devices.push(outcome);
        }
    }
    run.finish(&mut backend, now)?;
    if !settled.is_empty() {
        // The settled devices join the others in plan order.
        report.unchanged += settled.iter().flatten().count() as u64;
        let mut done: HashMap<String, DeviceOutcome> =
            report.devices.drain(..).map(|o| (o.device.clone(), o)).collect();
        report.devices = report_order
            .iter()
            .zip(settled)
            .filter_map(|(id, settled)| settled.or_else(|| done.remove(id)))
            .collect();
    }
    let planned: Vec<Planned> = planned
        .into_iter()
        .zip(cut_per_step)
        .map(|(p, cut_off)| Planned { cut_off, ..p })
        .collect();
    report.steps = journal::reports(&run, &planned, opts.dry_run);
    report.devices_cut_off = CutOff::of(cut_off);
    Ok(report)
}

/// Whether the hub lets the device in with its leaf ([`crate::backend::HubRegistry::authenticate`]),
/// decided from the identity already read where that is plain (enabled, the leaf's SHA-1
/// thumbprint in a slot, inside the leaf's validity period); anything else asks the hub.
fn lets_in(
    backend: &dyn crate::backend::Backend,
    identity: Option<crate::backend::types::HubIdentity>,
    leaf: &[u8],
    leaf_tp: &str,
    (nbf, exp): (OffsetDateTime, OffsetDateTime),
    now: OffsetDateTime,
) -> Result<bool> {
    if let Some(identity) = &identity
        && identity.status == crate::backend::types::Status::Enabled
        && [&identity.primary_thumbprint, &identity.secondary_thumbprint]
            .into_iter()
            .flatten()
            .any(|tp| tp.eq_ignore_ascii_case(leaf_tp))
        && nbf <= now
        && now <= exp
    {
        return Ok(true);
    }
    let Some(identity) = identity else {
        return Ok(false);
    };
    Ok(backend
        .authenticate(&identity.hub, &identity.device_id, leaf, now)?
        .is_ok())
}

/// Registers one chunk of devices (or, in a dry run, asks what the service would decide).
/// With `settle_only`, only finds the devices already assigned with the certificate they hold
/// (`unchanged`); every other device is returned as `todo`, untouched.
/// Why a device has no certificate to present: never issued, or (cold path) the one it still
/// holds was deleted or purged from the vault, which the device does not know.
fn not_installed(backend: &dyn crate::backend::Backend, id: &str) -> Result<String> {
    let Some(version) = backend.device(id)?.and_then(|d| d.installed_version) else {
        return Ok("no certificate is installed on the device (run `certroll issue`)".into());
    };
    let name = super::device_cert_name(id);
    if backend.name_state(&name)? == Some("deleted") {
        return Ok(format!(
            "the device still holds version {version} of `{name}`, which is deleted in the vault: bring it back \
             with `certroll vault recover {name}`, or purge it and run `certroll issue device:{id}` for a new one"
        ));
    }
    Ok(match super::vault::purged_note(backend, &name) {
        Some(note) => format!(
            "the device still holds version {version} of `{name}`, which is gone from the vault: {note}"
        ),
        None => format!(
            "the device still holds version {version} of `{name}`, which the vault no longer has (run `certroll issue device:{id}`)"
        ),
    })
}

fn register_chunk(
    backend: &mut dyn crate::backend::Backend,
    chunk: &[String],
    opts: &ReprovisionOptions,
    chains: &mut HashMap<(String, String), Vec<Vec<u8>>>,
    settle_only: bool,
    now: OffsetDateTime,
) -> Result<Vec<DeviceOutcome>> {
    let mut requests = Vec::new();
    // The validity period of each request's leaf, as the vault recorded it.
    let mut validity = Vec::new();
    let mut outcomes: HashMap<String, DeviceOutcome> = HashMap::new();
    for (id, installed) in chunk.iter().zip(super::installed_many(backend, chunk)?) {
        let Some(installed) = installed else {
            outcomes.insert(
                id.clone(),
                DeviceOutcome {
                    device: id.clone(),
                    status: "skipped".into(),
                    substatus: None,
                    hub: None,
                    error: Some(not_installed(backend, id)?),
                    refused: false,
                },
            );
            continue;
        };
        let above = match &installed.issuer {
            Some(key) => match chains.get(key) {
                Some(c) => c.clone(),
                None => {
                    let mut c = chain_above(backend, &installed)?;
                    c.pop(); // the root is not presented
                    chains.insert(key.clone(), c.clone());
                    c
                }
            },
            None => Vec::new(),
        };
        validity.push((installed.nbf, installed.exp));
        let mut chain = vec![installed.cert_der];
        chain.extend(above);
        requests.push(RegistrationRequest {
            registration_id: id.clone(),
            chain,
        });
    }
    // Already assigned with the certificate it holds, the service would assign it there again
    // and the hub lets it in: nothing to do.
    if !opts.force && !requests.is_empty() {
        // Read only here: `--force` registers every device again whatever DPS shows, and on
        // Azure each registration state is a DPS read paced at DPS's rate.
        let registrations = backend.registration_many(chunk)?;
        let decisions = backend.preview_register(&requests, now)?;
        let previous: HashMap<String, crate::backend::types::RegistrationState> = registrations
            .into_iter()
            .flatten()
            .map(|r| (r.registration_id.clone(), r))
            .collect();
        // The hub identities the devices would be assigned to, read in one batch.
        let wanted: Vec<(String, String)> = requests
            .iter()
            .zip(&decisions)
            .filter_map(|(req, d)| {
                d.as_ref()
                    .ok()
                    .map(|to| (to.hub.clone(), req.registration_id.clone()))
            })
            .collect();
        let mut identities: HashMap<(String, String), crate::backend::types::HubIdentity> = backend
            .identity_many(&wanted)?
            .into_iter()
            .flatten()
            .map(|h| ((h.hub.clone(), h.device_id.clone()), h))
            .collect();
        let mut still = Vec::new();
        for ((req, decision), valid) in requests.into_iter().zip(decisions).zip(validity) {
            let id = &req.registration_id;
            let leaf_tp = crate::pki::sha1_thumbprint(&req.chain[0]);
            let unchanged = match (previous.get(id), &decision) {
                (Some(prev), Ok(to)) => {
                    // Under `never` the hub keeps what it had; assigned with this certificate
                    // is all there is to it.
                    prev.status == "assigned"
                        && prev.hub.as_ref() == Some(&to.hub)
                        && prev.cert_thumbprint.as_deref() == Some(leaf_tp.as_str())
                        && (to.reprovision == "never"
                            || lets_in(
                                backend,
                                identities.remove(&(to.hub.clone(), id.clone())),
                                &req.chain[0],
                                &leaf_tp,
                                valid,
                                now,
                            )?)
                }
                _ => false,
            };
            if unchanged {
                let prev = &previous[id];
                outcomes.insert(
                    id.clone(),
                    DeviceOutcome {
                        device: id.clone(),
                        status: "unchanged".into(),
                        substatus: prev.substatus.clone(),
                        hub: prev.hub.clone(),
                        error: None,
                        refused: false,
                    },
                );
            } else {
                still.push(req);
            }
        }
        requests = still;
    }
    if settle_only {
        for req in requests {
            outcomes.insert(
                req.registration_id.clone(),
                DeviceOutcome {
                    device: req.registration_id,
                    status: "todo".into(),
                    substatus: None,
                    hub: None,
                    error: None,
                    refused: false,
                },
            );
        }
        return Ok(chunk.iter().filter_map(|id| outcomes.remove(id)).collect());
    }
    if !requests.is_empty() {
        if opts.dry_run {
            for (req, decision) in requests.iter().zip(backend.preview_register(&requests, now)?) {
                let (status, hub, error) = match decision {
                    Ok(to) => ("would-assign", Some(to.hub), None),
                    Err(reason) => ("would-fail", None, Some(reason)),
                };
                outcomes.insert(
                    req.registration_id.clone(),
                    DeviceOutcome {
                        device: req.registration_id.clone(),
                        status: status.into(),
                        substatus: None,
                        hub,
                        error,
                        refused: false,
                    },
                );
            }
        } else {
            for s in backend.register(&requests, now)? {
                outcomes.insert(
                    s.registration_id.clone(),
                    DeviceOutcome {
                        device: s.registration_id.clone(),
                        status: s.status.clone(),
                        substatus: s.substatus.clone(),
                        hub: s.hub.clone(),
                        error: s.error.clone(),
                        refused: false,
                    },
                );
            }
            // A device the direct method did not reach may still be shut out: the enrollment
            // service's own decision on the certificate it holds says whether it is.
            let waiting: Vec<RegistrationRequest> = requests
                .iter()
                .filter(|r| {
                    outcomes
                        .get(&r.registration_id)
                        .is_some_and(|o| o.status == "waiting")
                })
                .cloned()
                .collect();
            if !waiting.is_empty() {
                for (req, decision) in waiting.iter().zip(backend.preview_register(&waiting, now)?) {
                    if decision.is_err()
                        && let Some(o) = outcomes.get_mut(&req.registration_id)
                    {
                        o.refused = true;
                    }
                }
            }
        }
    }
    Ok(chunk.iter().filter_map(|id| outcomes.remove(id)).collect())
}

/// Refuses, before a run is recorded, devices whose chain goes through a CA certificate that is
/// soft-deleted in the vault (a deleted root above a live intermediate): named with the command
/// that brings it back, exit 2, nothing changed.
fn refuse_deleted_ca(plan: &Plan, backend: &dyn crate::backend::Backend, ids: &[String]) -> Result<()> {
    let deleted: Vec<crate::backend::types::DeletedCertificate> = backend
        .deleted_certificates(None)?
        .into_iter()
        .filter(|d| plan.cas.iter().any(|c| super::ca_cert_name(&c.name) == d.name))
        .collect();
    if deleted.is_empty() || ids.is_empty() {
        return Ok(());
    }
    // The first deleted CA certificate in the lineage of `ca` (itself, then its issuers).
    let gone = |ca: &str| {
        let mut at = Some(ca.to_string());
        let mut seen = 0;
        while let Some(name) = at {
            if let Some(d) = deleted.iter().find(|d| d.name == super::ca_cert_name(&name)) {
                return Some(d);
            }
            seen += 1;
            at = plan
                .cas
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.issuer.clone())
                .filter(|_| seen <= plan.cas.len());
        }
        None
    };
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut hit = None;
    for e in plan.enrollments.values() {
        if wanted.contains(e.name.as_str())
            && let Some(d) = gone(&e.issuer)
        {
            hit = Some((e.name.clone(), d));
            break;
        }
    }
    if hit.is_none() {
        for g in plan.groups.values() {
            if let Some(d) = gone(&g.signing_ca)
                && let Some(id) = g.device_ids().find(|id| wanted.contains(id.as_str()))
            {
                hit = Some((id, d));
                break;
            }
        }
    }
    match hit {
        Some((id, d)) => Err(crate::error::input(format!(
            "device:{id}: the CA certificate `{name}` in its chain is deleted in the vault (deleted {}, purged \
             for good on {}); bring it back with `certroll vault recover {name}`. Nothing was changed",
            crate::clock::rfc3339(d.deleted),
            crate::clock::rfc3339(d.scheduled_purge),
            name = d.name
        ))),
        None => Ok(()),
    }
}
