//! Lifetime actions of vault-only certificates (made with `vault create`, `vault import` or
//! `vault merge`, not by the plan): reading them from the vault policy, finding the ones due, and
//! Key Vault's `AutoRenew` of a self-issued certificate: a new version under its policy (a new
//! key unless `reuse_key`), as Key Vault makes it when the trigger fires.
//!
//! certroll has no daemon, so `check` reports these actions, `roll-* --due` calls [`renew_due`],
//! and `notify` mails the renewal (and `EmailContacts`) like any other.

use crate::backend::Backend;
use crate::backend::types::{NewVersion, VaultVersion};
use crate::ops::lifetime::{self, Scheduled};
use crate::pki::spec::{Curve, ExtendedKeyUsage, KeySpec, KeyUsage, Subject};
use crate::plan::{ActionKind, LifetimeAction, Plan, Trigger};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashSet;
use time::OffsetDateTime;

/// The lifetime actions of a vault policy document (Key Vault's shape, as
/// [`crate::ops::policy_json`] writes it). Unreadable entries contribute nothing.
pub fn policy_actions(policy: &serde_json::Value) -> Vec<LifetimeAction> {
    let Some(actions) = policy["lifetime_actions"].as_array() else {
        return Vec::new();
    };
    actions
        .iter()
        .filter_map(|a| {
            let action = match a["action"]["action_type"].as_str()? {
                "AutoRenew" => ActionKind::AutoRenew,
                "EmailContacts" => ActionKind::EmailContacts,
                _ => return None,
            };
            let t = &a["trigger"];
            let trigger = if let Some(d) = t["days_before_expiry"].as_u64() {
                Trigger::DaysBeforeExpiry(u32::try_from(d).ok()?)
            } else {
                Trigger::LifetimePercentage(u8::try_from(t["lifetime_percentage"].as_u64()?).ok()?)
            };
            Some(LifetimeAction { trigger, action })
        })
        .collect()
}

/// A vault-only certificate's current version with its policy.
pub struct VaultOnly {
    /// The vault name.
    pub name: String,
    /// Its current version.
    pub current: VaultVersion,
    /// Its policy document.
    pub policy: serde_json::Value,
}

impl VaultOnly {
    /// Its lifetime actions.
    pub fn actions(&self) -> Vec<LifetimeAction> {
        policy_actions(&self.policy)
    }

    /// The actions that have fired at `now` for the current version.
    pub fn due(&self, now: OffsetDateTime) -> Vec<Scheduled> {
        lifetime::due(&self.actions(), self.current.nbf, self.current.exp, now)
    }

    /// Whether certroll can renew it itself: a self-issued certificate (issuer `Self`). Others
    /// need their outside CA (a new `vault create` and `vault merge`).
    pub fn self_issued(&self) -> bool {
        self.policy["issuer"]["name"].as_str() == Some("Self")
    }
}

/// Every vault certificate with a current version that the plan does not own (not a plan CA,
/// nor a device or enrollment of the plan), in name order.
pub fn vault_only(plan: &Plan, backend: &dyn Backend) -> Result<Vec<VaultOnly>> {
    let mut owned: HashSet<String> = plan
        .cas
        .iter()
        .map(|c| crate::ops::ca_cert_name(&c.name))
        .collect();
    for g in plan.groups.values() {
        owned.extend(g.device_ids().map(|id| crate::ops::device_cert_name(&id)));
    }
    owned.extend(plan.enrollments.keys().map(|e| crate::ops::device_cert_name(e)));
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let names: Vec<String> = backend.names_page(&after, 1000)?;
        let Some(last) = names.last().cloned() else {
            return Ok(out);
        };
        let mine: Vec<String> = names.into_iter().filter(|n| !owned.contains(n)).collect();
        for (name, current) in mine.iter().zip(backend.current_many(&mine)?) {
            if let (Some(current), Some(policy)) = (current, backend.policy(name)?) {
                out.push(VaultOnly {
                    name: name.clone(),
                    current,
                    policy,
                });
            }
        }
        after = last;
    }
}

/// One vault-only certificate renewed (or, in a dry run, to be renewed) by its `AutoRenew`.
#[derive(Debug, Clone, Serialize)]
pub struct AutoRenewed {
    /// The vault name.
    pub name: String,
    /// The version renewed.
    pub from_version: String,
    /// The new version (None in a dry run).
    pub version: Option<String>,
    /// The trigger that fired, e.g. `lifetime_percentage = 80`.
    pub trigger: String,
    /// Whether the new version keeps the key (`reuse_key`).
    pub same_key: bool,
    /// Why it was not renewed although due (its subject cannot be written as it is, or its
    /// policy's subject is unreadable); None when it was (or, in a dry run, would be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The subject a renewal writes.
enum RenewalSubject {
    /// The current certificate's subject, DER, byte for byte: the policy's subject is the one
    /// the certificate shows (always so for `vault import`, which records it from the
    /// certificate, and for `vault create`).
    Kept(Vec<u8>),
    /// The policy's subject, parsed as user input: one that no longer matches the certificate.
    Parsed(Subject),
}

/// What subject renewing `v` writes. An imported certificate's subject is whatever its CA
/// wrote (DC, emailAddress, `O=x+y`, a lower-case country, a repeated OU...), which certroll's
/// own subject syntax, strict for what users type, refuses; the renewal keeps it as it is
/// rather than reading it back from text.
fn renewal_subject(v: &VaultOnly) -> Result<RenewalSubject> {
    let text = v.policy["x509_props"]["subject"].as_str().unwrap_or_default();
    let (_, cert) = crate::pki::inspect::parse(&v.current.cert_der)
        .with_context(|| format!("`{}` version {}", v.name, v.current.version))?;
    // Stores written before subjects were recorded escaped hold x509-parser's unescaped text.
    if text == crate::pki::inspect::name_text(cert.subject()) || text == cert.subject().to_string() {
        return Ok(RenewalSubject::Kept(cert.subject().as_raw().to_vec()));
    }
    Subject::parse(text)
        .map(RenewalSubject::Parsed)
        .map_err(|e| anyhow::anyhow!("`{}`: the policy's subject {e}", v.name))
}

/// Renews every vault-only, self-issued, enabled certificate whose `AutoRenew` action has fired
/// at `now`: a new version under its policy. A rerun finds the new version not due and does
/// nothing. With `dry_run`, reports what it would renew and changes nothing.
pub fn renew_due(
    plan: &Plan,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Vec<AutoRenewed>> {
    let mut out = Vec::new();
    for v in vault_only(plan, backend)? {
        let Some(fired) = v.due(now).into_iter().find(|s| s.action == ActionKind::AutoRenew) else {
            continue;
        };
        if !v.self_issued() || !v.current.enabled {
            continue;
        }
        let same_key = v.policy["key_props"]["reuse_key"].as_bool() == Some(true);
        let trigger = crate::notify::events::trigger_text(fired.trigger);
        // A subject the certificate builder cannot write as it is holds back this certificate
        // alone, before anything is written: the rest of the run renews.
        let held_back = match renewal_subject(&v) {
            Ok(RenewalSubject::Kept(der)) => crate::pki::cert::check_name_writable(&der).err().map(|e| {
                format!(
                    "{e}; renewed, it would get another subject, so it is not renewed: make \
                         its next version with `certroll vault create` (a subject certroll \
                         writes) or import one made elsewhere"
                )
            }),
            Ok(RenewalSubject::Parsed(_)) => None,
            Err(e) => Some(format!("{e:#}")),
        };
        if let Some(why) = held_back {
            out.push(AutoRenewed {
                name: v.name,
                from_version: v.current.version,
                version: None,
                trigger,
                same_key,
                refused: Some(why),
            });
            continue;
        }
        let version = if dry_run {
            None
        } else {
            Some(
                renew_one(backend, &v, now, plan.not_before_skew)
                    .with_context(|| format!("auto-renew of `{}`", v.name))?,
            )
        };
        out.push(AutoRenewed {
            name: v.name,
            from_version: v.current.version,
            version,
            trigger,
            same_key,
            refused: None,
        });
    }
    Ok(out)
}

/// [`renew_due`] on the plan's store: what `roll-primary --due` and `roll-secondary --due`
/// run (with no target) after the plan's own rolls.
pub fn run_due(
    plan: &Plan,
    settings: &crate::ops::BackendSettings,
    now: OffsetDateTime,
    dry_run: bool,
) -> Result<Vec<AutoRenewed>> {
    let access = if dry_run {
        crate::ops::Access::Preview
    } else {
        crate::ops::Access::Modify
    };
    let mut backend = crate::ops::open_verb_backend(plan, "vault", access, settings)?;
    if dry_run {
        return renew_due(plan, &mut *backend, now, true);
    }
    // All or nothing: a failure part-way leaves what was due still due for the rerun.
    crate::backend::in_one_unit(&mut *backend, |b| renew_due(plan, b, now, false))
}

/// Renews `v` under its policy; the new certificate starts `skew` before `now` (the plan's
/// `not_before_skew_minutes`).
fn renew_one(
    backend: &mut dyn Backend,
    v: &VaultOnly,
    now: OffsetDateTime,
    skew: time::Duration,
) -> Result<String> {
    let p = &v.policy;
    // Key Vault renews under the name's policy itself (its key, `reuse_key` honoured).
    if let Some(created) = backend.create_by_vault(&v.name, &p.to_string(), now)? {
        return match created {
            crate::backend::Created::Version(version) => Ok(version),
            crate::backend::Created::Pending(_) => anyhow::bail!(
                "`{}`: the vault made a request for an outside CA instead of renewing",
                v.name
            ),
        };
    }
    let key_props = &p["key_props"];
    let hsm = v.current.kty.ends_with("-HSM");
    let spec = match key_props["kty"].as_str().unwrap_or_default() {
        k if k.starts_with("EC") => KeySpec::Ec {
            curve: key_props["crv"]
                .as_str()
                .and_then(Curve::parse)
                .context("the policy's curve is unreadable")?,
            hsm,
        },
        _ => KeySpec::Rsa {
            bits: key_props["key_size"]
                .as_u64()
                .and_then(|b| u32::try_from(b).ok())
                .context("the policy's key size is unreadable")?,
            hsm,
        },
    };
    let x509 = &p["x509_props"];
    let (subject, kept) = match renewal_subject(v)? {
        RenewalSubject::Kept(der) => (Subject(Vec::new()), Some(der)),
        RenewalSubject::Parsed(subject) => (subject, None),
    };
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut key_usage: Vec<KeyUsage> = strings(&x509["key_usage"])
        .iter()
        .filter_map(|u| KeyUsage::parse(u))
        .collect();
    if key_usage.is_empty() {
        key_usage = match spec {
            KeySpec::Ec { .. } => vec![KeyUsage::DigitalSignature],
            KeySpec::Rsa { .. } => vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
        };
    }
    let validity_days = x509["validity_days"]
        .as_u64()
        .filter(|d| (1..=36_500).contains(d))
        .context("the policy's validity_days is unreadable")?;
    let profile = crate::pki::CertProfile {
        subject,
        dns_names: strings(&x509["sans"]["dns_names"]),
        key_usage,
        extended_key_usage: strings(&x509["ekus"])
            .iter()
            .filter_map(|e| ExtendedKeyUsage::parse(e))
            .collect(),
        not_before: now.saturating_sub(skew),
        not_after: crate::clock::add_days(now, validity_days as i64),
        ca: None,
    };
    let key = if key_props["reuse_key"].as_bool() == Some(true) {
        backend.private_key(&v.current)?
    } else {
        crate::pki::PrivateKey::generate(&spec)?
    };
    let der = match &kept {
        Some(subject_der) => crate::pki::cert::sign_self_keeping_subject(&profile, &key, subject_der)?,
        None => crate::pki::sign_self(&profile, &key)?,
    };
    let policy_json = p.to_string();
    let version = backend.create_versions(
        &[NewVersion {
            name: &v.name,
            policy_json: &policy_json,
            cert_der: &der,
            key_pkcs8: key.pkcs8_der(),
            kty: &v.current.kty,
            // The store keeps a reused non-exportable key non-exportable whatever this says.
            exportable: key_props["exportable"].as_bool() == Some(true) && !hsm,
            issuer: None,
            facts: None,
            new_key: false,
        }],
        now,
    )?;
    version
        .into_iter()
        .next()
        .context("the store returned no version")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_read_from_the_vault_policy() {
        let doc = serde_json::json!({ "lifetime_actions": [
            { "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": "AutoRenew" } },
            { "trigger": { "days_before_expiry": 30 }, "action": { "action_type": "EmailContacts" } },
            { "trigger": {}, "action": { "action_type": "AutoRenew" } },
        ]});
        assert_eq!(
            policy_actions(&doc),
            vec![
                LifetimeAction {
                    trigger: Trigger::LifetimePercentage(80),
                    action: ActionKind::AutoRenew
                },
                LifetimeAction {
                    trigger: Trigger::DaysBeforeExpiry(30),
                    action: ActionKind::EmailContacts
                },
            ]
        );
    }
}
