//! `reprovision`: each targeted device runs the registration flow (PRODUCT.md flow 7) with the
//! certificate installed on it. The enrollment service checks disabled enrollments first, then
//! the device's individual enrollment, then the groups' chains, and applies the reprovision
//! policy to the hub identity (migrate and reset swap the hub's thumbprints to the presented
//! certificate; never records the registration and leaves the hub alone).

use super::{Access, BackendSettings, Target, chain_above, open_backend};
use crate::backend::types::{RegistrationRequest, RegistrationState};
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
    /// Say which devices would register, change nothing.
    pub dry_run: bool,
    /// How to open the backend.
    pub backend: BackendSettings,
}

/// One device's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceOutcome {
    /// Device id.
    pub device: String,
    /// assigned, failed, or (dry run / nothing installed) skipped.
    pub status: String,
    /// initialAssignment, deviceDataMigrated, deviceDataReset, reprovisionedToInitialAssignment.
    pub substatus: Option<String>,
    /// The hub it was assigned to.
    pub hub: Option<String>,
    /// Why it was rejected or skipped.
    pub error: Option<String>,
}

/// What `reprovision` did.
#[derive(Debug, Clone, Serialize)]
pub struct ReprovisionReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Devices assigned.
    pub assigned: u64,
    /// Devices rejected (or with no certificate installed).
    pub rejected: u64,
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
        Access::Write
    };
    let mut backend = open_backend(plan, access, &opts.backend)?;
    let mut report = ReprovisionReport {
        dry_run: opts.dry_run,
        assigned: 0,
        rejected: 0,
        devices: Vec::new(),
    };
    let ids = selected(plan, &opts.targets);
    // Issuer chains are shared by many devices: look each up once.
    let mut chains: HashMap<(String, String), Vec<Vec<u8>>> = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let mut requests = Vec::new();
        let mut skipped: HashMap<String, String> = HashMap::new();
        for (id, installed) in chunk.iter().zip(super::installed_many(&backend, chunk)?) {
            let Some(installed) = installed else {
                skipped.insert(
                    id.clone(),
                    "no certificate is installed on the device (run `certroll issue`)".into(),
                );
                continue;
            };
            let above = match &installed.issuer {
                Some(key) => match chains.get(key) {
                    Some(c) => c.clone(),
                    None => {
                        let mut c = chain_above(&backend, &installed)?;
                        c.pop(); // the root is not presented
                        chains.insert(key.clone(), c.clone());
                        c
                    }
                },
                None => Vec::new(),
            };
            let mut chain = vec![installed.cert_der];
            chain.extend(above);
            requests.push(RegistrationRequest {
                registration_id: id.clone(),
                chain,
            });
        }
        let states: HashMap<String, RegistrationState> = if opts.dry_run || requests.is_empty() {
            HashMap::new()
        } else {
            crate::backend::in_one_unit(&mut backend, |b| b.register(&requests, now))?
                .into_iter()
                .map(|s| (s.registration_id.clone(), s))
                .collect()
        };
        for id in chunk {
            let outcome = match (states.get(id), skipped.get(id)) {
                (Some(s), _) => DeviceOutcome {
                    device: id.clone(),
                    status: s.status.clone(),
                    substatus: s.substatus.clone(),
                    hub: s.hub.clone(),
                    error: s.error.clone(),
                },
                (None, reason) => DeviceOutcome {
                    device: id.clone(),
                    status: "skipped".into(),
                    substatus: None,
                    hub: None,
                    error: reason.cloned().or_else(|| Some("dry run: would register".into())),
                },
            };
            match outcome.status.as_str() {
                "assigned" => report.assigned += 1,
                "skipped" if opts.dry_run && !skipped.contains_key(id) => {}
                _ => report.rejected += 1,
            }
            report.devices.push(outcome);
        }
    }
    Ok(report)
}
