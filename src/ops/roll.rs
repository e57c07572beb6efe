//! `roll-secondary` / `roll-primary`: expiry rolls with zero downtime (PRODUCT.md flow 1).
//!
//! For each targeted device: a new vault version of its certificate (same CN; a new key unless
//! the policy says `reuse_key`), signed by the current CA; for an individual enrollment, written
//! into the named slot; the hub identity's matching thumbprint set to it; then installed on the
//! device. The other slot keeps working, except a certificate there that has expired, which the
//! roll removes. A rerun finds the newest version already in the slot and does nothing.
//!
//! With `--due`, only devices whose `auto-renew` action has fired are rolled, and the new
//! certificate goes into whichever slot holds the older certificate (or is empty), so a cron job
//! can run `certroll roll-secondary --due` every night without knowing which slot is free.

use super::{
    Access, BackendSettings, DeviceOwner, Target, device_cert_name, device_owner, effective_key_usage,
    exportable, load_issuer, open_backend, policy_json,
};
use crate::backend::types::*;
use crate::backend::{Backend, Fleet as _};
use crate::error::input;
use crate::pki::cert::{CertProfile, sign_public_key};
use crate::pki::spec::Subject;
use crate::pki::{CertInfo, SubjectKey};
use crate::plan::{ActionKind, Plan, Policy};
use anyhow::{Context as _, Result};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

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
}

/// Options of a roll.
#[derive(Debug, Clone)]
pub struct RollOptions {
    /// `device:ID` or `enrollment:NAME` targets.
    pub targets: Vec<Target>,
    /// The slot named by the verb.
    pub slot: SlotName,
    /// Only what an `auto-renew` lifetime action says is due; the slot holding the older
    /// certificate is used.
    pub due: bool,
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
    /// other slot) or `not-due`.
    pub outcome: &'static str,
    /// The slot the new certificate went into.
    pub slot: SlotName,
    /// The steps, in order.
    pub steps: Vec<String>,
    /// The new certificate's SHA-1 thumbprint (after a real roll).
    pub new_thumbprint: Option<String>,
    /// The thumbprint removed from the other slot because its certificate expired.
    pub pruned_thumbprint: Option<String>,
}

/// What a roll did.
#[derive(Debug, Clone, Serialize)]
pub struct RollReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// One entry per targeted group (its signing CA).
    pub groups: Vec<GroupRoll>,
    /// One entry per targeted device.
    pub devices: Vec<DeviceRoll>,
}

/// What happened to a group's signing CA.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRoll {
    /// `group:NAME`.
    pub target: String,
    /// `rolled`, `would-roll` or `already-rolled`.
    pub outcome: &'static str,
    /// The slot the new CA certificate went into.
    pub slot: SlotName,
    /// The steps.
    pub steps: Vec<String>,
}

/// Runs a roll.
pub fn roll(plan: &Plan, opts: &RollOptions, now: OffsetDateTime) -> Result<RollReport> {
    let mut ids = Vec::new();
    let mut groups = Vec::new();
    for t in &opts.targets {
        t.check(plan)?;
        match t {
            Target::Device(id) | Target::Enrollment(id) => ids.push(id.clone()),
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
                if opts.due {
                    return Err(input(
                        "--due rolls devices; name device:ID or enrollment:NAME targets",
                    ));
                }
                groups.push(name.clone());
                ids.extend(g.device_ids());
            }
            other => {
                return Err(input(format!(
                    "{other}: expiry rolls take device:ID, enrollment:NAME or group:NAME targets in this version"
                )));
            }
        }
    }
    if ids.is_empty() {
        return Err(input(
            "name what to roll: device:ID, enrollment:NAME or group:NAME",
        ));
    }
    let access = if opts.dry_run {
        Access::Preview
    } else {
        Access::Write
    };
    let mut backend = open_backend(plan, access, &opts.backend)?;
    let mut report = RollReport {
        dry_run: opts.dry_run,
        groups: Vec::new(),
        devices: Vec::new(),
    };
    // Refuse before the first write, so exit 2 still means nothing changed.
    for id in &ids {
        if backend.device(id)?.and_then(|d| d.installed_version).is_none() {
            return Err(input(format!(
                "device:{id} has not been issued yet (run `certroll issue device:{id}`)"
            )));
        }
    }
    for name in &groups {
        let r = crate::backend::in_one_unit(&mut backend, |b| {
            roll_group_ca(plan, &plan.groups[name], opts, b, now)
        })
        .with_context(|| format!("rolling the CA of group:{name}"))?;
        report.groups.push(r);
    }
    for id in ids {
        let owner = device_owner(plan, &id).expect("checked above");
        let r = crate::backend::in_one_unit(&mut backend, |b| roll_device(plan, owner, &id, opts, b, now))
            .with_context(|| format!("rolling device:{id}"))?;
        report.devices.push(r);
    }
    Ok(report)
}

/// The field of the named slot.
fn slot_of<'a, T>(primary: &'a mut T, secondary: &'a mut T, slot: SlotName) -> &'a mut T {
    match slot {
        SlotName::Primary => primary,
        SlotName::Secondary => secondary,
    }
}

fn thumbprint(der: &[u8]) -> String {
    crate::pki::sha1_thumbprint(der)
}

fn roll_device(
    plan: &Plan,
    owner: DeviceOwner<'_>,
    id: &str,
    opts: &RollOptions,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<DeviceRoll> {
    let (policy, issuer_ca): (&Policy, &str) = match owner {
        DeviceOwner::Group(g) => (&plan.policies[&g.device_policy], &g.signing_ca),
        DeviceOwner::Enrollment(e) => (&plan.policies[&e.policy], &e.issuer),
    };
    let name = device_cert_name(id);
    let not_issued = || {
        input(format!(
            "device:{id} has not been issued yet (run `certroll issue device:{id}`)"
        ))
    };
    let newest = backend.current(&name)?.ok_or_else(not_issued)?;
    let record = backend.device(id)?.ok_or_else(not_issued)?;
    let installed_version = record.installed_version.clone().ok_or_else(not_issued)?;
    let installed = backend
        .version(&name, &installed_version)?
        .ok_or_else(not_issued)?;
    let registration = backend.registration(id)?.filter(|r| r.status == "assigned");
    let hub_identity = match registration.as_ref().and_then(|r| r.hub.clone()) {
        Some(hub) => backend.identity(&hub, id)?,
        None => None,
    };
    let individual = match owner {
        DeviceOwner::Enrollment(_) => Some(backend.individual(id)?.ok_or_else(not_issued)?),
        DeviceOwner::Group(_) => None,
    };

    // What each slot holds now: the enrollment's slots, or the hub identity's thumbprints.
    let slot_thumbprint = |slot: SlotName| -> Option<String> {
        match (&individual, &hub_identity) {
            (Some(ind), _) => match slot {
                SlotName::Primary => ind.primary.as_deref().map(thumbprint),
                SlotName::Secondary => ind.secondary.as_deref().map(thumbprint),
            },
            (None, Some(h)) => match slot {
                SlotName::Primary => h.primary_thumbprint.clone(),
                SlotName::Secondary => h.secondary_thumbprint.clone(),
            },
            (None, None) => None,
        }
    };
    let versions = backend.versions(&name)?;
    let created_of = |tp: &Option<String>| {
        tp.as_ref()
            .and_then(|tp| versions.iter().position(|v| thumbprint(&v.cert_der) == *tp))
    };

    let mut slot = opts.slot;
    let target = format!("device:{id}");
    if opts.due {
        let fired = policy
            .lifetime_actions
            .iter()
            .filter(|a| a.action == ActionKind::AutoRenew)
            .any(|a| super::lifetime::fires_at(a.trigger, installed.nbf, installed.exp) <= now);
        if !fired {
            return Ok(DeviceRoll {
                target,
                outcome: "not-due",
                slot,
                steps: vec![],
                new_thumbprint: None,
                pruned_thumbprint: None,
            });
        }
        // The slot with the older certificate; an empty slot, or one holding a certificate
        // the vault does not know, counts as oldest.
        let age = |slot| {
            slot_thumbprint(slot)
                .as_ref()
                .map_or(-1, |tp| created_of(&Some(tp.clone())).map_or(-1, |i| i as i64))
        };
        slot = if age(SlotName::Secondary) < age(SlotName::Primary) {
            SlotName::Secondary
        } else {
            SlotName::Primary
        };
    }

    let newest_tp = thumbprint(&newest.cert_der);
    let in_slot = slot_thumbprint(slot);
    // Rolled already: the named slot holds the newest version, which is installed and came from
    // a roll (a lone first version is what `issue` made; rolling it is what was asked).
    let already = !opts.due
        && versions.len() > 1
        && in_slot.as_deref() == Some(newest_tp.as_str())
        && installed.version == newest.version;

    // An expired certificate in the other slot leaves with this roll (or with a rerun).
    let other = slot.other();
    let pruned = slot_thumbprint(other).filter(|tp| {
        versions
            .iter()
            .find(|v| thumbprint(&v.cert_der) == *tp)
            .is_some_and(|v| v.exp < now)
    });
    if already && pruned.is_none() {
        return Ok(DeviceRoll {
            target,
            outcome: "already-rolled",
            slot,
            steps: vec![],
            new_thumbprint: None,
            pruned_thumbprint: None,
        });
    }

    let slot_word = |s: SlotName| {
        if s == SlotName::Primary {
            "primary"
        } else {
            "secondary"
        }
    };
    let mut steps = Vec::new();
    if !already {
        steps.push(format!(
            "issue a new certificate for `{id}` from policy `{}` ({}) signed by CA `{issuer_ca}`",
            policy.name,
            if policy.reuse_key { "same key" } else { "new key" }
        ));
        if individual.is_some() {
            steps.push(format!(
                "put it into the {} slot of individual enrollment `{id}`",
                slot_word(slot)
            ));
        }
    }
    if let Some(tp) = &pruned {
        steps.push(format!(
            "remove the expired certificate {tp} from the {} slot",
            slot_word(other)
        ));
    }
    if !already && let Some(h) = &hub_identity {
        steps.push(format!(
            "set the {} thumbprint of `{id}` in hub `{}`",
            slot_word(slot),
            h.hub
        ));
    }
    if !already {
        steps.push(format!("install the new certificate on device `{id}`"));
    }
    if opts.dry_run {
        return Ok(DeviceRoll {
            target,
            outcome: "would-roll",
            slot,
            steps,
            new_thumbprint: None,
            pruned_thumbprint: pruned,
        });
    }
    if already {
        // Only the expired certificate leaves.
        if let Some(mut ind) = individual {
            *slot_of(&mut ind.primary, &mut ind.secondary, other) = None;
            backend.put_individuals(&[ind], now)?;
        }
        if let Some(mut h) = hub_identity {
            *slot_of(&mut h.primary_thumbprint, &mut h.secondary_thumbprint, other) = None;
            backend.update_identity(&h, now)?;
        }
        return Ok(DeviceRoll {
            target,
            outcome: "pruned",
            slot,
            steps,
            new_thumbprint: None,
            pruned_thumbprint: pruned,
        });
    }

    let reuse = if policy.reuse_key { Some(&newest) } else { None };
    let (version, der, new_tp) = issue_leaf(backend, policy, issuer_ca, id, reuse, now)?;

    if let Some(mut ind) = individual {
        let (named, other_slot) = match slot {
            SlotName::Primary => (&mut ind.primary, &mut ind.secondary),
            SlotName::Secondary => (&mut ind.secondary, &mut ind.primary),
        };
        *named = Some(der.clone());
        if pruned.is_some() {
            *other_slot = None;
        }
        backend.put_individuals(&[ind], now)?;
    }
    if let Some(mut h) = hub_identity {
        let (named, other_slot) = match slot {
            SlotName::Primary => (&mut h.primary_thumbprint, &mut h.secondary_thumbprint),
            SlotName::Secondary => (&mut h.secondary_thumbprint, &mut h.primary_thumbprint),
        };
        *named = Some(new_tp.clone());
        if pruned.is_some() {
            *other_slot = None;
        }
        backend.update_identity(&h, now)?;
    }
    backend.install(&[DeviceRecord {
        installed_version: Some(version),
        ..record
    }])?;
    Ok(DeviceRoll {
        target,
        outcome: "rolled",
        slot,
        steps,
        new_thumbprint: Some(new_tp),
        pruned_thumbprint: pruned,
    })
}

/// Issues a new vault version of a device's certificate, signed by the CA's current version;
/// with `reuse`, the key of that version is kept. Returns the version id, the DER and the
/// thumbprint.
pub(super) fn issue_leaf(
    backend: &mut dyn Backend,
    policy: &Policy,
    issuer_ca: &str,
    id: &str,
    reuse: Option<&VaultVersion>,
    now: OffsetDateTime,
) -> Result<(String, Vec<u8>, String)> {
    let issuer = load_issuer(backend, issuer_ca)?;
    if issuer.not_after <= now {
        anyhow::bail!(
            "CA `{issuer_ca}` expired at {}; roll the CA first",
            crate::clock::rfc3339(issuer.not_after)
        );
    }
    let key = match reuse {
        Some(v) => SubjectKey::reuse(&backend.private_key(v)?)?,
        None => SubjectKey::generate(&policy.key)?,
    };
    let profile = CertProfile {
        subject: Subject::common_name(id),
        dns_names: policy.dns_names.clone(),
        key_usage: effective_key_usage(policy, false),
        extended_key_usage: policy.extended_key_usage.clone(),
        not_before: now,
        not_after: (now + Duration::days(policy.validity_days as i64)).min(issuer.not_after),
        ca: None,
    };
    let der = sign_public_key(&profile, key.public_key(), &issuer.key)?;
    let name = device_cert_name(id);
    let policy_doc = policy_json(policy, "CN=<device id>", Some(issuer_ca));
    let version = backend
        .create_versions(
            &[NewVersion {
                name: &name,
                policy_json: &policy_doc,
                cert_der: &der,
                key_pkcs8: key.pkcs8_der(),
                kty: policy.key.kty(),
                exportable: exportable(policy),
                issuer: Some((issuer.cert_name.as_str(), issuer.version.as_str())),
            }],
            now,
        )?
        .pop()
        .context("the vault stored no version")?;
    let thumbprint = CertInfo::from_der(&der)?.thumbprint;
    Ok((version, der, thumbprint))
}

/// Renews a group's signing intermediate into the named slot of the group: a new CA version
/// (new key) signed by its issuer's current version. The other slot keeps the old CA, so devices
/// that still hold leaves under it keep registering; an expired CA there leaves.
fn roll_group_ca(
    plan: &Plan,
    group: &crate::plan::GroupSpec,
    opts: &RollOptions,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<GroupRoll> {
    let target = format!("group:{}", group.name);
    let ca = plan
        .cas
        .iter()
        .find(|c| c.name == group.signing_ca)
        .expect("validated plan");
    let ca_name = super::ca_cert_name(&ca.name);
    let mut state = backend.group(&group.name)?.ok_or_else(|| {
        input(format!(
            "{target} has not been issued yet (run `certroll issue {target}`)"
        ))
    })?;
    let current = backend
        .current(&ca_name)?
        .context("the group's CA is missing from the vault")?;
    let slot = opts.slot;
    let (named, other) = match slot {
        SlotName::Primary => (&state.primary, &state.secondary),
        SlotName::Secondary => (&state.secondary, &state.primary),
    };
    let other_expired = other
        .as_ref()
        .is_some_and(|o| CertInfo::from_der(&o.cert_der).is_ok_and(|i| i.not_after < now));
    let word = if slot == SlotName::Primary {
        "primary"
    } else {
        "secondary"
    };
    // Resume: the newest CA version is already in the named slot (the devices may still need
    // their leaves, which the device rolls that follow take care of).
    // Rolled already: the named slot holds the newest CA version, and that version came from a
    // roll (the first version is what `issue` made, which a roll must replace).
    let rolled_versions = backend.versions(&ca_name)?.len() > 1;
    let newest_in_slot = rolled_versions && named.as_ref().is_some_and(|n| n.cert_der == current.cert_der);
    if newest_in_slot && !other_expired {
        return Ok(GroupRoll {
            target,
            outcome: "already-rolled",
            slot,
            steps: vec![],
        });
    }
    let mut steps = Vec::new();
    if !newest_in_slot {
        steps.push(format!(
            "renew CA `{}` (new key) signed by `{}`",
            ca.name,
            ca.issuer.as_deref().unwrap_or("")
        ));
        steps.push(format!("put it into the {word} slot of group `{}`", group.name));
    }
    if other_expired {
        steps.push(format!(
            "remove the expired CA certificate from the other slot of group `{}`",
            group.name
        ));
    }
    if opts.dry_run {
        return Ok(GroupRoll {
            target,
            outcome: "would-roll",
            slot,
            steps,
        });
    }
    let cert_der = if newest_in_slot {
        current.cert_der.clone()
    } else {
        super::new_ca_version(plan, ca, backend, now)?
    };
    let new_slot = Some(Slot {
        cert_der,
        ca_reference: None,
    });
    match slot {
        SlotName::Primary => {
            state.primary = new_slot;
            if other_expired {
                state.secondary = None;
            }
        }
        SlotName::Secondary => {
            state.secondary = new_slot;
            if other_expired {
                state.primary = None;
            }
        }
    }
    backend.put_group(&state, now)?;
    Ok(GroupRoll {
        target,
        outcome: "rolled",
        slot,
        steps,
    })
}
