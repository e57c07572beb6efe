//! `revoke`: disallow (PRODUCT.md flow 6). For a device with an individual enrollment, the
//! enrollment is disabled; for a device of a group, a *disabled individual enrollment* holding its
//! certificate is added (a certificate in a disabled enrollment fails every registration, even
//! where a group would accept it); `group:NAME` disables the group. The device's vault version
//! is disabled, its serial goes onto the issuing CA's CRL, and the hub identity is disabled (or
//! deleted, or kept, as asked). `ca:NAME` deletes a CA: out of the enrollment service and out of
//! every group's slot, every version disabled and put on its issuer's CRL. Every target is one
//! journaled step; reruns find everything done and change nothing.

use super::journal::{self, CutOff, Planned, StepReport};
use super::{
    Access, BackendSettings, Target, ca_cert_name, device_cert_name, device_owner, open_verb_backend,
};
use crate::backend::Backend;
use crate::backend::types::*;
use crate::error::input;
use crate::pki::CertInfo;
use crate::plan::Plan;
use anyhow::{Context as _, Result};
use serde::Serialize;
use time::OffsetDateTime;

/// RFC 5280 revocation reasons certroll records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// keyCompromise (1)
    KeyCompromise,
    /// cACompromise (2)
    CaCompromise,
    /// affiliationChanged (3)
    AffiliationChanged,
    /// superseded (4)
    Superseded,
    /// cessationOfOperation (5)
    CessationOfOperation,
    /// unspecified (0)
    Unspecified,
}

impl Reason {
    /// The kebab-case name stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            Reason::KeyCompromise => "key-compromise",
            Reason::CaCompromise => "ca-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::Unspecified => "unspecified",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Reason> {
        use clap::ValueEnum;
        Reason::value_variants().iter().copied().find(|r| r.name() == s)
    }

    /// The rcgen CRL reason code.
    pub fn crl_reason(self) -> rcgen::RevocationReason {
        match self {
            Reason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Reason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            Reason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Reason::Superseded => rcgen::RevocationReason::Superseded,
            Reason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Reason::Unspecified => rcgen::RevocationReason::Unspecified,
        }
    }
}

/// What happens to the hub identity of a revoked device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HubAction {
    /// Disable it: the device cannot connect.
    Disable,
    /// Delete it.
    Delete,
    /// Leave it as it is.
    Keep,
}

/// Options of `revoke`.
#[derive(Debug, Clone)]
pub struct RevokeOptions {
    /// device:ID, enrollment:NAME or group:NAME.
    pub targets: Vec<Target>,
    /// Why.
    pub reason: Reason,
    /// What happens to hub identities.
    pub hub: HubAction,
    /// Print the steps, change nothing.
    pub dry_run: bool,
    /// How to open the backend.
    pub backend: BackendSettings,
    /// What a preview of the same command found moments before, one per target in order (the
    /// CLI's own preview, when no confirmation waited between; empty: none): a target it found
    /// revoked already is taken as it is rather than read again. A revoke only adds to what is
    /// revoked, so nothing since can have given it work.
    pub previewed: Vec<Revoked>,
}

/// One target's steps.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// The target.
    pub target: String,
    /// The steps taken (or, in a dry run, to take); empty when it was already revoked.
    pub steps: Vec<String>,
    /// Devices that can no longer connect or register afterwards.
    pub devices_cut_off: CutOff,
}

/// What `revoke` did.
#[derive(Debug, Clone, Serialize)]
pub struct RevokeReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The reason.
    pub reason: Reason,
    /// The journal's number of this run (for a dry run, of the open run it would resume; else
    /// None).
    pub run: Option<i64>,
    /// Whether this run finished one that had been killed or had failed (a dry run: would
    /// finish it).
    pub resumed: bool,
    /// The steps (one per target).
    pub steps: Vec<StepReport>,
    /// Per target.
    pub targets: Vec<Revoked>,
}

/// The canonical text of the command: the journal's key for resuming it.
fn command_key(opts: &RevokeOptions) -> String {
    let mut key = format!(
        "revoke --reason {} --hub-identity {}",
        opts.reason.name(),
        match opts.hub {
            HubAction::Disable => "disable",
            HubAction::Delete => "delete",
            HubAction::Keep => "keep",
        }
    );
    for t in &opts.targets {
        key.push_str(&format!(" {t}"));
    }
    key
}

fn revoke_target(
    plan: &Plan,
    t: &Target,
    opts: &RevokeOptions,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<Revoked> {
    match t {
        Target::Group(name) => revoke_group(plan, name, opts, backend, now),
        Target::Device(id) | Target::Enrollment(id) => revoke_device(plan, id, opts, backend, now),
        Target::Ca(name) => revoke_ca(plan, name, opts, backend, now),
    }
}

/// Runs `revoke`.
pub fn revoke(plan: &Plan, opts: &RevokeOptions, now: OffsetDateTime) -> Result<RevokeReport> {
    if opts.targets.is_empty() {
        return Err(input(
            "name what to revoke: device:ID, enrollment:NAME, group:NAME or ca:NAME",
        ));
    }
    for t in &opts.targets {
        t.check(plan)?;
    }
    let access = if opts.dry_run {
        Access::Preview
    } else {
        Access::Modify
    };
    let mut backend = open_verb_backend(plan, "revoke", access, &opts.backend)?;
    // The preview is the plan: what each target needs, and whom it cuts off.
    let preview_opts = RevokeOptions {
        dry_run: true,
        ..opts.clone()
    };
    let mut previews = Vec::new();
    // The earlier preview's answers, one per target in the same order.
    let previewed = (opts.previewed.len() == opts.targets.len()).then_some(&opts.previewed);
    for (i, t) in opts.targets.iter().enumerate() {
        if let Some(done) = previewed.map(|p| &p[i]).filter(|p| p.steps.is_empty()) {
            previews.push(done.clone());
            continue;
        }
        previews.push(
            revoke_target(plan, t, &preview_opts, &mut backend, now)
                .with_context(|| format!("revoking {t}"))?,
        );
    }
    let planned: Vec<Planned> = previews
        .iter()
        .map(|p| Planned {
            target: p.target.clone(),
            kind: "revoke",
            description: if p.steps.is_empty() {
                "already revoked; nothing to do".into()
            } else {
                p.steps.join("; ")
            },
            detail: serde_json::json!({}),
            cut_off: p.devices_cut_off.clone(),
        })
        .collect();
    let run = journal::begin(&mut backend, &command_key(opts), &planned, opts.dry_run, now)?;
    let mut report = RevokeReport {
        dry_run: opts.dry_run,
        reason: opts.reason,
        run: run.number(),
        resumed: run.resumed,
        steps: journal::reports(&run, &planned, opts.dry_run),
        targets: Vec::new(),
    };
    for ((step, t), preview) in run.steps.clone().iter().zip(&opts.targets).zip(previews) {
        if opts.dry_run {
            report.targets.push(preview);
            continue;
        }
        if run.done_before(step.seq) {
            report.targets.push(Revoked {
                target: t.to_string(),
                steps: vec![],
                devices_cut_off: CutOff::none(),
            });
            continue;
        }
        // A target the preview found revoked already is not read again: a revoke only ever
        // adds to what is revoked, so no step before it can have given it work (a rerun of a
        // finished revoke read every target three times on azure).
        let done = if preview.steps.is_empty() {
            run.step(&mut backend, step.seq, now, |_| {
                Ok((preview, serde_json::json!({})))
            })
        } else {
            run.step(&mut backend, step.seq, now, |b| {
                Ok((revoke_target(plan, t, opts, b, now)?, serde_json::json!({})))
            })
        }
        .with_context(|| format!("revoking {t}"))?;
        report.targets.push(done);
    }
    run.finish(&mut backend, now)?;
    Ok(report)
}

/// Deletes a CA: out of the service's CA certificates and every group's slots; every version
/// disabled and on its issuer's CRL.
fn revoke_ca(
    plan: &Plan,
    name: &str,
    opts: &RevokeOptions,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<Revoked> {
    let target = format!("ca:{name}");
    let versions = backend.versions(&ca_cert_name(name))?;
    if versions.is_empty() {
        return Err(input(format!("{target} has not been issued yet")));
    }
    // What the CA signed below it goes too: a CA certificate chaining to a revoked one opens
    // no door. The same walk a CA breach takes.
    let own: Vec<(String, String)> = versions
        .iter()
        .map(|v| (v.name.clone(), v.version.clone()))
        .collect();
    let scope = super::roll::ca_scope(plan, name);
    let mut tainted: Vec<VaultVersion> = versions.clone();
    for (n, v) in super::roll::tainted(backend, &scope, &own)?
        .iter()
        .skip(own.len())
    {
        tainted.extend(backend.version(n, v)?);
    }
    let ders: Vec<&Vec<u8>> = tainted.iter().map(|v| &v.cert_der).collect();
    let mut steps = Vec::new();
    let service: Vec<ServiceCa> = backend
        .cas()?
        .into_iter()
        .filter(|c| ders.contains(&&c.cert_der))
        .collect();
    for c in &service {
        steps.push(format!(
            "delete CA certificate `{}` from the enrollment service",
            c.name
        ));
    }
    let mut groups = Vec::new();
    for mut g in backend.groups()? {
        let mut changed = false;
        for slot in [&mut g.primary, &mut g.secondary] {
            if slot.as_ref().is_some_and(|s| ders.contains(&&s.cert_der)) {
                *slot = None;
                changed = true;
            }
        }
        if changed {
            steps.push(format!(
                "remove CA `{name}` (or a CA it signed) from the slots of group `{}`",
                g.name
            ));
            // What remains is the group's primary, as DPS requires.
            g.primary_first();
            groups.push(g);
        }
    }
    let mut crl = Vec::new();
    for v in &tainted {
        if v.enabled {
            steps.push(format!("disable vault version {}/{}", v.name, v.version));
        }
    }
    for v in &versions {
        if let Some((issuer, issuer_version)) = &v.issuer {
            let serial = CertInfo::from_der(&v.cert_der)?.serial;
            if !backend.is_revoked((issuer, issuer_version), &serial)? {
                steps.push(format!(
                    "add serial {serial} to the CRL of `{issuer}` ({})",
                    opts.reason.name()
                ));
                crl.push((issuer.clone(), issuer_version.clone(), serial));
            }
        }
    }
    let pairs: Vec<(String, String)> = tainted
        .iter()
        .map(|v| (v.name.clone(), v.version.clone()))
        .collect();
    let (count, first) = backend.devices_under(&pairs, None, journal::CUT_OFF_SHOWN)?;
    let cut_off = if steps.is_empty() {
        CutOff::none()
    } else {
        CutOff { count, first }
    };
    if opts.dry_run || steps.is_empty() {
        return Ok(Revoked {
            target,
            steps,
            devices_cut_off: cut_off,
        });
    }
    for c in &service {
        backend.delete_ca(&c.name)?;
    }
    for g in &groups {
        backend.put_group(g, now)?;
    }
    for v in tainted.iter().filter(|v| v.enabled) {
        backend.set_enabled(v, false, now)?;
    }
    for (issuer, issuer_version, serial) in &crl {
        backend.revoke((issuer, issuer_version), serial, opts.reason.name(), now)?;
    }
    Ok(Revoked {
        target,
        steps,
        devices_cut_off: cut_off,
    })
}

fn revoke_group(
    plan: &Plan,
    name: &str,
    opts: &RevokeOptions,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<Revoked> {
    let target = format!("group:{name}");
    let mut group = backend.group(name)?.ok_or_else(|| {
        input(format!(
            "{target} has not been issued yet (run `certroll issue {target}`)"
        ))
    })?;
    if group.status == Status::Disabled {
        return Ok(Revoked {
            target,
            steps: vec![],
            devices_cut_off: CutOff::none(),
        });
    }
    let count = plan.groups[name].device_count();
    let cut_off = CutOff {
        count,
        first: plan.groups[name]
            .device_ids()
            .take(journal::CUT_OFF_SHOWN)
            .collect(),
    };
    let mut steps = vec![format!(
        "disable enrollment group `{name}`: its {count} device(s) can no longer register"
    )];
    // Disabling overwrites nothing: another client's certificate stays where it is, and the
    // disabled group refuses devices under it too.
    for f in &group.foreign {
        steps.push(format!(
            "keep CA certificate {} that another client put into its {} slot (certroll did not issue it): \
             the disabled group refuses devices under it too",
            f.thumbprint, f.slot
        ));
    }
    if !opts.dry_run {
        group.status = Status::Disabled;
        backend.put_group(&group, now)?;
    }
    Ok(Revoked {
        target,
        steps,
        devices_cut_off: cut_off,
    })
}

fn revoke_device(
    plan: &Plan,
    id: &str,
    opts: &RevokeOptions,
    backend: &mut dyn Backend,
    now: OffsetDateTime,
) -> Result<Revoked> {
    let target = format!("device:{id}");
    let not_issued = || input(format!("{target} has not been issued yet"));
    let owner = device_owner(plan, id).expect("checked by the caller");
    let name = device_cert_name(id);
    let record = backend.device(id)?.ok_or_else(not_issued)?;
    let version_id = record.installed_version.clone().ok_or_else(not_issued)?;
    // A certificate deleted from the vault may still be installed on the device: it is revoked
    // all the same, from the deleted versions (which stay readable until they are purged).
    let (version, versions, deleted) = match backend.version(&name, &version_id)? {
        Some(v) => (v, backend.versions(&name)?, false),
        None => match backend.deleted_certificates(Some(&name))?.into_iter().next() {
            Some(d) => {
                let v = d
                    .versions
                    .iter()
                    .find(|v| v.version == version_id)
                    .cloned()
                    .ok_or_else(not_issued)?;
                (v, d.versions, true)
            }
            None => {
                // Purged: the serial the CRL needs went with it.
                let note =
                    super::vault::purged_note(backend, &name).unwrap_or_else(|| "it was purged".into());
                return Err(input(format!(
                    "{target}: the device still holds version {version_id} of `{name}`, but that certificate is gone \
                     from the vault ({note}), so its serial is no longer known and it cannot be put on a CRL. \
                     Cut it off through the CA that signed it instead: `certroll roll-primary --breach \
                     ca:{issuer}`. Nothing was changed",
                    issuer = match &owner {
                        super::DeviceOwner::Group(g) => &g.signing_ca,
                        super::DeviceOwner::Enrollment(e) => &e.issuer,
                    }
                )));
            }
        },
    };
    let info = CertInfo::from_der(&version.cert_der)?;
    let mut steps = Vec::new();

    // The enrollment service: disabled enrollments reject before anything else accepts.
    let existing = backend.individual(id)?;
    let disabled = match (&owner, existing) {
        (_, Some(e)) if e.status == Status::Disabled => None,
        (super::DeviceOwner::Enrollment(_), Some(mut e)) => {
            steps.push(format!("disable individual enrollment `{id}`"));
            // Disabling overwrites nothing: another client's certificate stays where it is,
            // refused with the enrollment.
            for f in &e.foreign {
                steps.push(format!(
                    "keep certificate {} that another client put into its {} slot (certroll did not issue it): \
                     the disabled enrollment refuses it too",
                    f.thumbprint, f.slot
                ));
            }
            e.status = Status::Disabled;
            Some(e)
        }
        (_, existing) => {
            steps.push(format!(
                "add a disabled individual enrollment `{id}` holding certificate {}",
                info.thumbprint
            ));
            let hub = existing
                .as_ref()
                .map(|e| e.hub.clone())
                .unwrap_or_else(|| match owner {
                    super::DeviceOwner::Group(g) => g.hub.clone(),
                    super::DeviceOwner::Enrollment(e) => e.hub.clone(),
                });
            Some(IndividualEnrollment {
                registration_id: id.to_string(),
                primary: Some(version.cert_der.clone()),
                secondary: None,
                status: Status::Disabled,
                reprovision: "never".into(),
                hub,
                foreign: Vec::new(),
                take_back: false,
            })
        }
    };
    // Every version still valid goes, not only the installed one: after a roll the other slot's
    // certificate would otherwise still open doors.
    let mut to_disable = Vec::new();
    let mut to_list = Vec::new();
    for v in versions {
        if v.version != version.version && v.exp <= now {
            continue;
        }
        // A deleted version is used by nothing and cannot be updated until it is recovered.
        if v.enabled && !deleted {
            steps.push(format!("disable vault version {name}/{}", v.version));
            to_disable.push(v.clone());
        }
        let (issuer, issuer_version) = v
            .issuer
            .clone()
            .context("the device certificate has no recorded issuer")?;
        let serial = CertInfo::from_der(&v.cert_der)?.serial;
        if !backend.is_revoked((&issuer, &issuer_version), &serial)? {
            steps.push(format!(
                "add serial {serial} to the CRL of `{issuer}` ({})",
                opts.reason.name()
            ));
            to_list.push((issuer, issuer_version, serial));
        }
    }
    // In the hub its last assignment named: on azure from the enrollment read above (which
    // carries the registration state) and one registry query, not a GET of each.
    let hub_identity = backend.assigned_identities(&[id.to_string()])?.pop().flatten();
    let hub_step = match (&hub_identity, opts.hub) {
        (Some(h), HubAction::Disable) if h.status == Status::Enabled => {
            Some(format!("disable device `{id}` in hub `{}`", h.hub))
        }
        (Some(h), HubAction::Delete) => Some(format!("delete device `{id}` from hub `{}`", h.hub)),
        _ => None,
    };
    steps.extend(hub_step.clone());
    if steps.is_empty() {
        return Ok(Revoked {
            target,
            steps,
            devices_cut_off: CutOff::none(),
        });
    }
    if opts.dry_run {
        return Ok(Revoked {
            target,
            steps,
            devices_cut_off: CutOff::of([id.to_string()]),
        });
    }
    if let Some(e) = disabled {
        backend.put_individuals(&[e], now)?;
    }
    for v in &to_disable {
        backend.set_enabled(v, false, now)?;
    }
    for (issuer, issuer_version, serial) in &to_list {
        backend.revoke((issuer, issuer_version), serial, opts.reason.name(), now)?;
    }
    if let (Some(mut h), Some(_)) = (hub_identity, hub_step) {
        match opts.hub {
            HubAction::Disable => {
                h.status = Status::Disabled;
                backend.update_identity(&h, now)?;
            }
            HubAction::Delete => backend.delete_identity(&h.hub, id)?,
            HubAction::Keep => {}
        }
    }
    Ok(Revoked {
        target,
        steps,
        devices_cut_off: CutOff::of([id.to_string()]),
    })
}

/// A CRL of one CA version, signed by that version's key, with the next CRL number of the CA.
pub struct Crl {
    /// DER.
    pub der: Vec<u8>,
    /// Its CRL number.
    pub number: u64,
    /// How many certificates it lists.
    pub revoked: usize,
}

/// Issues the CRL of one CA version (which must be enabled: a disabled, compromised CA key
/// signs nothing).
pub fn crl_der(backend: &mut dyn Backend, version: &VaultVersion, now: OffsetDateTime) -> Result<Crl> {
    if !version.enabled {
        anyhow::bail!(
            "CA version {}/{} is disabled and signs no CRL",
            version.name,
            version.version
        );
    }
    let key = crate::pki::cert::IssuerKey::with_signer(version.cert_der.clone(), backend.signer(version)?)?;
    let (_, entries) = backend.revocations(&version.name, &version.version)?;
    let number = backend.next_crl_number(&version.name)?;
    let revoked_certs = entries
        .iter()
        .map(|e| {
            let serial = (0..e.serial.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&e.serial[i..i + 2], 16))
                .collect::<std::result::Result<Vec<u8>, _>>()
                .context("a stored serial is not hex")?;
            Ok(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&serial),
                revocation_time: e.revoked_at,
                reason_code: Reason::parse(&e.reason).map(Reason::crl_reason),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: crate::clock::add_days(now, 7),
        // Each CRL issued takes the next number of its CA (RFC 5280 5.2.3).
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    Ok(Crl {
        der: params
            .signed_by(key.issuer())
            .map_err(|e| key.failure(e))?
            .der()
            .to_vec(),
        number,
        revoked: entries.len(),
    })
}
