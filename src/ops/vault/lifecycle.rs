//! Soft delete, as Key Vault does it: `vault delete` moves a certificate with all its versions,
//! policy and tags to the deleted certificates, where nothing sees it (list, show, export,
//! signing, rolls) until `vault recover` brings it back exactly as it was or `vault purge`
//! removes it for good. The name stays taken meanwhile.
//!
//! Deleting a certificate that something still relies on (a device holds one of its versions,
//! or it signed another certificate's version) is refused unless forced.

use super::{not_live, resolve_name};
use crate::backend::types::Tags;
use crate::error::input;
use crate::ops::{Access, BackendSettings, open_verb_backend};
use crate::plan::Plan;
use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;

/// Key Vault's default (and largest) recovery period.
pub const DEFAULT_RECOVERY_DAYS: u32 = 90;

/// Options of `vault delete`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Days the certificate can be recovered (7 to 90, as in Key Vault); None: the default,
    /// [`DEFAULT_RECOVERY_DAYS`]. Key Vault sets the period per vault, not per delete, so a
    /// value given for a plan of `kind = "azure"` is refused (trial az12 F5).
    pub recovery_days: Option<u32>,
    /// Delete even what devices hold or what signed other certificates.
    pub force: bool,
    /// Check and report; change nothing.
    pub dry_run: bool,
}

/// A deleted certificate, as `vault delete` and `vault list-deleted` show it.
#[derive(Debug, Serialize)]
pub struct DeletedView {
    /// The name.
    pub name: String,
    /// When it was deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_date: OffsetDateTime,
    /// When it may be purged: deleted + the recovery days.
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled_purge_date: OffsetDateTime,
    /// Whether the scheduled purge date has passed (certroll purges only when told to).
    pub purge_due: bool,
    /// Its versions, oldest first.
    pub versions: Vec<String>,
    /// Its tags.
    pub tags: Tags,
}

/// What `vault delete` did.
#[derive(Debug, Serialize)]
pub struct DeleteReport {
    /// The deleted certificate (None when the name only had a request, which was cancelled).
    pub deleted: Option<DeletedView>,
    /// Whether a request waiting for an outside CA was cancelled (its key is gone).
    pub cancelled_request: bool,
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
}

fn view(d: crate::backend::types::DeletedCertificate, now: OffsetDateTime) -> DeletedView {
    DeletedView {
        purge_due: d.scheduled_purge <= now,
        name: d.name,
        deleted_date: d.deleted,
        scheduled_purge_date: d.scheduled_purge,
        versions: d.versions.into_iter().map(|v| v.version).collect(),
        tags: d.tags,
    }
}

fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Refuses a recovery period Key Vault does not keep (7 to 90 days).
fn check_recovery_days(days: u32) -> Result<()> {
    if !(7..=90).contains(&days) {
        return Err(input(format!(
            "--recovery-days {days} is out of range: Key Vault keeps deleted certificates 7 to 90 days"
        )));
    }
    Ok(())
}

/// `vault delete`.
pub fn delete(
    plan: &Plan,
    name: &str,
    opts: &DeleteOptions,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<DeleteReport> {
    let name = resolve_name(plan, name)?;
    if let Some(days) = opts.recovery_days {
        check_recovery_days(days)?;
    }
    if let (Some(days), Some(_)) = (opts.recovery_days, &plan.azure) {
        // Accepted, it was ignored: the certificate stayed recoverable for the vault's period.
        // The command named keeps the operator's other flags (trial az13 N3: without `--force`
        // it was refused for a certificate a device holds).
        let flags = [(opts.force, " --force"), (opts.dry_run, " --dry-run")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, flag)| *flag)
            .collect::<String>();
        return Err(input(format!(
            "--recovery-days {days}: Key Vault keeps deleted certificates for the vault's own \
             retention period (7 to 90 days, set when the vault is created: `az keyvault create \
             --retention-days`), not one given per delete; run `certroll vault delete {name}{flags}` \
             without it (`certroll vault list-deleted` then shows the purge date). Nothing was \
             deleted"
        )));
    }
    let access = if opts.dry_run { Access::Read } else { Access::Write };
    let mut backend = open_verb_backend(plan, "vault", access, settings)?;
    delete_in(&mut *backend, &name, &signs_in_plan(plan, &name), opts, now)
}

/// What the plan has the CA stored under vault name `name` sign (`group G`, `enrollment E`,
/// `CA C`); empty for a name that is not a plan CA's. A remote vault cannot tell cheaply which
/// versions a CA signed (that needs every version's tags), so the plan answers for it: the
/// same refusal on every backend.
fn signs_in_plan(plan: &Plan, name: &str) -> Vec<String> {
    let Some(ca) = plan
        .cas
        .iter()
        .find(|c| crate::backend::types::ca_cert_name(&c.name) == name)
    else {
        return Vec::new();
    };
    let groups = plan
        .groups
        .values()
        .filter(|g| g.signing_ca == ca.name)
        .map(|g| format!("group {}", g.name));
    let enrollments = plan
        .enrollments
        .values()
        .filter(|e| e.issuer == ca.name)
        .map(|e| format!("enrollment {}", e.name));
    let cas = plan
        .cas
        .iter()
        .filter(|c| c.issuer.as_deref() == Some(ca.name.as_str()))
        .map(|c| format!("CA {}", c.name));
    cas.chain(groups).chain(enrollments).collect()
}

/// `vault delete` on an open backend. `signs` names what the plan has `name` sign (see
/// `signs_in_plan`; empty where no plan speaks, as in serve's Key Vault): unless forced, a
/// live name that signs anything is refused, as one a device holds or whose versions signed
/// others is.
pub fn delete_in(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    signs: &[String],
    opts: &DeleteOptions,
    now: OffsetDateTime,
) -> Result<DeleteReport> {
    let name = name.to_string();
    let recovery_days = opts.recovery_days.unwrap_or(DEFAULT_RECOVERY_DAYS);
    check_recovery_days(recovery_days)?;
    let live = backend.current(&name)?.is_some();
    let pending = backend.pending(&name)?.is_some();
    if !live && !pending {
        return Err(not_live(backend, &name));
    }
    if live && !opts.force {
        let users = backend.certificate_users(&name)?;
        if !users.devices.is_empty() {
            return Err(input(format!(
                "`{name}` is held by device(s) {}; deleting it would leave them with a certificate the vault \
                 no longer has (--force deletes it anyway)",
                list_names(&users.devices)
            )));
        }
        // What the plan has it sign first: every backend knows that, so a CA of the plan is
        // refused in the same words on each (trial az11 F6: the local store named the versions
        // it signed, Key Vault, which cannot tell, the plan's CAs and enrollments).
        if !signs.is_empty() {
            return Err(input(format!(
                "`{name}` is the CA that signs {} in the plan; their chains cannot be built while it is \
                 deleted, and DPS refuses their devices once its certificate is gone (--force deletes it anyway)",
                list_names(signs)
            )));
        }
        if !users.signed.is_empty() {
            return Err(input(format!(
                "`{name}` signed versions of {}; their chains cannot be built while it is deleted \
                 (--force deletes it anyway)",
                list_names(&users.signed)
            )));
        }
    }
    let purge_at = crate::clock::add_days(now, recovery_days as i64);
    if opts.dry_run {
        let deleted = if live {
            Some(DeletedView {
                name: name.clone(),
                deleted_date: now,
                scheduled_purge_date: purge_at,
                purge_due: false,
                versions: backend.versions(&name)?.into_iter().map(|v| v.version).collect(),
                tags: backend.tags(&name, None)?.unwrap_or_default(),
            })
        } else {
            None
        };
        return Ok(DeleteReport {
            deleted,
            cancelled_request: pending,
            dry_run: true,
        });
    }
    crate::backend::in_one_unit(backend, |b| -> Result<()> {
        if pending {
            b.delete_pending(&name)?;
        }
        if live {
            b.delete_certificate(&name, now, purge_at)?;
        }
        Ok(())
    })?;
    let deleted = backend
        .deleted_certificates(Some(&name))?
        .into_iter()
        .next()
        .map(|d| view(d, now));
    Ok(DeleteReport {
        deleted,
        cancelled_request: pending,
        dry_run: false,
    })
}

/// `vault list-deleted`: every deleted certificate, in name order.
pub fn list_deleted(
    plan: &Plan,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<Vec<DeletedView>> {
    let backend = open_verb_backend(plan, "vault", Access::Preview, settings)?;
    Ok(backend
        .deleted_certificates(None)?
        .into_iter()
        .map(|d| view(d, now))
        .collect())
}

/// The deleted certificate `name`, or an input error saying why it is not there.
pub fn deleted_one(
    plan: &Plan,
    name: &str,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<DeletedView> {
    let name = resolve_name(plan, name)?;
    let backend = open_verb_backend(plan, "vault", Access::Read, settings)?;
    find_deleted(&*backend, &name, now)
}

/// The deleted certificate `name` on an open backend, or an input error saying why it is not there.
pub fn find_deleted(
    backend: &dyn crate::backend::Backend,
    name: &str,
    now: OffsetDateTime,
) -> Result<DeletedView> {
    match backend.deleted_certificates(Some(name))?.into_iter().next() {
        Some(d) => Ok(view(d, now)),
        None if backend.current(name)?.is_some() => Err(input(format!(
            "`{name}` is not deleted (`certroll vault delete {name}` deletes it)"
        ))),
        None => Err(input(format!("the vault has no deleted certificate `{name}`"))),
    }
}

/// `vault recover`: brings a deleted certificate back with all its versions, policy and tags.
pub fn recover(
    plan: &Plan,
    name: &str,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<DeletedView> {
    let name = resolve_name(plan, name)?;
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    recover_in(&mut *backend, &name, now)
}

/// `vault recover` on an open backend.
pub fn recover_in(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    now: OffsetDateTime,
) -> Result<DeletedView> {
    let found = find_deleted(backend, name, now)?;
    backend.recover_certificate(name)?;
    Ok(found)
}

/// `vault purge`: removes a deleted certificate for good. Only a deleted one can be purged.
pub fn purge(
    plan: &Plan,
    name: &str,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<DeletedView> {
    let name = resolve_name(plan, name)?;
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    purge_in(&mut *backend, &name, now)
}

/// `vault purge` on an open backend.
pub fn purge_in(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    now: OffsetDateTime,
) -> Result<DeletedView> {
    let found = find_deleted(backend, name, now)?;
    backend.purge_certificate(name)?;
    Ok(found)
}
