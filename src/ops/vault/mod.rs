//! `vault`: the vault's certificates as Key Vault shows them: names, versions with their
//! attributes and tags, the policy, the key operations its key usage allows; enabling,
//! disabling and tagging. The submodules hold the rest of Key Vault's certificate operations.
//!
//! Like every op, these take the time as an argument and never read the clock.

pub mod backup;
pub mod lifecycle;
pub mod pending;
pub mod renew;
pub mod settings;
pub mod transfer;

use super::{Access, BackendSettings, Target, ca_cert_name, device_cert_name, open_verb_backend};
use crate::backend::types::{PendingCertificate, Tags};
use crate::error::input;
use crate::pki::CertInfo;
use crate::pki::spec::KeyUsage;
use crate::plan::Plan;
use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;

/// A vault certificate name from `ca:NAME`, `device:ID`, `enrollment:NAME`, or the name itself.
///
/// A `ca:`/`device:`/`enrollment:` target names what the plan declares, as in every other verb:
/// one the plan does not declare is refused with what it may have meant (trial az15 N6:
/// `device:sensor-3` for `device:sensor-03`), where "the vault has no certificate
/// `dev-sensor-3`" left the operator guessing. A plain vault name is taken as it is, so the
/// certificates of a device no longer declared, and the vault's own, stay reachable by name.
pub fn resolve_name(plan: &Plan, text: &str) -> Result<String> {
    if !text.contains(':') {
        return Ok(text.to_string());
    }
    let target = Target::parse(text).map_err(input)?;
    if !matches!(target, Target::Group(_)) {
        target.check(plan)?;
    }
    match target {
        Target::Ca(n) => Ok(ca_cert_name(&n)),
        Target::Device(id) | Target::Enrollment(id) => Ok(device_cert_name(&id)),
        Target::Group(g) => Err(input(format!(
            "group:{g} has no vault certificate of its own; use its CA"
        ))),
    }
}

/// Checks a name for a new certificate or issuer by Key Vault's rule: 1 to 127 ASCII letters,
/// digits and `-`.
pub fn check_new_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 127 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(input(format!(
            "{what} name `{}` is not valid: use 1 to 127 letters, digits and `-`",
            crate::error::snippet(name)
        )));
    }
    Ok(())
}

/// The input error for a name that has no live certificate, saying whether it is deleted or
/// still waiting for a merge.
pub(crate) fn not_live(backend: &dyn crate::backend::Backend, name: &str) -> anyhow::Error {
    match backend.name_state(name) {
        Ok(Some("deleted")) => input(format!(
            "the vault certificate `{name}` is deleted (`certroll vault recover {name}` brings it back)"
        )),
        Ok(Some("pending")) => input(format!(
            "the vault certificate `{name}` has no version yet: its request waits for \
             `certroll vault merge {name} --file SIGNED.pem`"
        )),
        _ => match purged_note(backend, name) {
            Some(note) => input(format!("the vault has no certificate `{name}`: {note}")),
            None => input(format!(
                "the vault has no certificate `{}`",
                crate::error::snippet(name)
            )),
        },
    }
}

/// Refuses `version` of `name` when it is a root's key holder
/// ([`Vault::key_holder`](crate::backend::Vault::key_holder)): a self-signed end-entity
/// certificate over the root's key that Key Vault needed to make that key, not a version of the
/// CA. Enabled, it would be a second "root" that no listing shows (trial az14 F6). `refused`
/// says what is not done with it.
pub(crate) fn refuse_key_holder(
    backend: &dyn crate::backend::Backend,
    name: &str,
    version: &str,
    refused: &str,
) -> Result<()> {
    if backend.is_key_holder_version(name, version)? {
        return Err(input(format!(
            "version {version} of `{name}` is the key holder Key Vault made the root's key with, not a version \
             of the CA (its certificate is not a CA certificate); certroll keeps it disabled, and it is not {refused}. \
             `certroll vault show {name}` lists the CA's versions"
        )));
    }
    Ok(())
}

/// For a plan certificate name the vault no longer has though certroll issued it (a device still
/// holds `dev-ID`, or the enrollment service still holds root `ca-NAME`): that it was purged, and
/// how to get a new one. `None` for a name certroll never issued.
pub(crate) fn purged_note(backend: &dyn crate::backend::Backend, name: &str) -> Option<String> {
    let (holder, target) = if let Some(id) = name.strip_prefix("dev-") {
        let device = backend.device(id).ok()??;
        device.installed_version.as_ref()?;
        (
            format!("device `{id}` still holds the certificate"),
            format!("device:{id}"),
        )
    } else if let Some(ca) = name.strip_prefix("ca-") {
        backend.ca(ca).ok()??;
        (
            format!("the enrollment service still holds CA certificate `{ca}`"),
            format!("ca:{ca}"),
        )
    } else {
        return None;
    };
    Some(format!(
        "it was purged (`certroll vault purge`) and cannot be recovered, exported or renewed, though {holder}; \
         `certroll issue {target}` issues a new one"
    ))
}

/// One version, as `vault show` lists it.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// Version id.
    pub version: String,
    /// Attributes.
    pub enabled: bool,
    /// notBefore.
    #[serde(with = "time::serde::rfc3339")]
    pub nbf: OffsetDateTime,
    /// notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub exp: OffsetDateTime,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Key type.
    pub kty: String,
    /// Whether the key may be exported.
    pub exportable: bool,
    /// The certificate.
    pub cert: CertInfo,
    /// The version's own tags.
    pub tags: Tags,
}

/// A request waiting for an outside CA, as `vault show` lists it.
#[derive(Debug, Serialize)]
pub struct PendingView {
    /// The request id.
    pub request_id: String,
    /// The issuer named in the policy.
    pub issuer: String,
    /// When it was requested; null when the vault does not say.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    /// The CSR, PEM.
    pub csr: String,
}

impl From<&PendingCertificate> for PendingView {
    fn from(p: &PendingCertificate) -> Self {
        PendingView {
            request_id: p.request_id.clone(),
            issuer: p.issuer.clone(),
            created: p.created,
            csr: crate::pki::pem::encode("CERTIFICATE REQUEST", &p.csr_der),
        }
    }
}

/// A certificate with all its versions, oldest first.
#[derive(Debug, Serialize)]
pub struct CertificateView {
    /// The name.
    pub name: String,
    /// The policy (Key Vault's shape).
    pub policy: Option<serde_json::Value>,
    /// The key operations the key allows: its type and its certificate's key usage.
    pub key_operations: Vec<&'static str>,
    /// Versions, oldest first.
    pub versions: Vec<VersionView>,
    /// The certificate's tags.
    pub tags: Tags,
    /// A request waiting for an outside CA (`vault create`, `vault merge`), if any.
    pub pending: Option<PendingView>,
}

/// The key operations Key Vault gives a key of type `kty` (`EC`, `RSA-HSM`, ...) whose
/// certificate asserts `usage` (`None`: no keyUsage extension, so every operation of the type).
/// An EC key only signs and verifies, whatever its usage says: Key Vault has no EC wrapKey,
/// unwrapKey, encrypt or decrypt.
pub fn key_operations_of(kty: &str, usage: Option<&[KeyUsage]>) -> Vec<&'static str> {
    let ec = kty.starts_with("EC");
    let all: &[&'static str] = if ec {
        &["sign", "verify"]
    } else {
        &["sign", "verify", "wrapKey", "unwrapKey", "encrypt", "decrypt"]
    };
    let Some(usage) = usage else {
        return all.to_vec();
    };
    let mut ops: Vec<&'static str> = Vec::new();
    for u in usage {
        for op in u.key_operations() {
            if all.contains(op) && !ops.contains(op) {
                ops.push(op);
            }
        }
    }
    ops
}

/// The key operations of a version: its key type and its certificate's own key usage.
pub fn version_key_operations(version: &crate::backend::types::VaultVersion) -> Result<Vec<&'static str>> {
    let usage = crate::pki::inspect::key_usage(&version.cert_der)?;
    Ok(key_operations_of(&version.kty, usage.as_deref()))
}

/// Key operations for the key usage names of a policy alone, for a key whose type is not known
/// (RSA's table; the default key usage is digitalSignature + keyEncipherment). Prefer
/// [`version_key_operations`], which knows the key type.
pub fn key_operations(usage: &[String]) -> Vec<&'static str> {
    let mut usages: Vec<KeyUsage> = usage.iter().filter_map(|u| KeyUsage::parse(u)).collect();
    if usages.is_empty() {
        usages = vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment];
    }
    key_operations_of("RSA", Some(&usages))
}

/// The key usage a policy document names, with the default for its key type when it names none
/// (as [`crate::ops::effective_key_usage`] signs it).
fn policy_key_usage(policy: &serde_json::Value) -> Vec<KeyUsage> {
    let named: Vec<KeyUsage> = policy["x509_props"]["key_usage"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(KeyUsage::parse))
                .collect()
        })
        .unwrap_or_default();
    if !named.is_empty() {
        return named;
    }
    if policy["key_props"]["kty"]
        .as_str()
        .is_some_and(|k| k.starts_with("EC"))
    {
        vec![KeyUsage::DigitalSignature]
    } else {
        vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
    }
}

/// `vault show`.
pub fn show(plan: &Plan, name: &str, settings: &BackendSettings) -> Result<CertificateView> {
    let name = resolve_name(plan, name)?;
    let backend = open_verb_backend(plan, "vault", Access::Read, settings)?;
    let versions = backend.versions(&name)?;
    let pending = backend.pending(&name)?;
    if versions.is_empty() && pending.is_none() {
        return Err(not_live(&*backend, &name));
    }
    let policy = match (backend.policy(&name)?, &pending) {
        (Some(p), _) => Some(p),
        (None, Some(p)) => Some(serde_json::from_str(&p.policy_json)?),
        (None, None) => None,
    };
    // What the key may do follows the newest certificate's own key usage and the key's type;
    // a request not yet merged has only its policy.
    let key_ops = match (versions.last(), &policy) {
        (Some(v), _) => version_key_operations(v)?,
        (None, Some(p)) => key_operations_of(
            p["key_props"]["kty"].as_str().unwrap_or("RSA"),
            Some(&policy_key_usage(p)),
        ),
        (None, None) => Vec::new(),
    };
    let versions = versions
        .into_iter()
        .map(|v| {
            Ok(VersionView {
                cert: CertInfo::from_der(&v.cert_der)?,
                tags: backend.tags(&name, Some(&v.version))?.unwrap_or_default(),
                version: v.version,
                enabled: v.enabled,
                nbf: v.nbf,
                exp: v.exp,
                created: v.created,
                kty: v.kty,
                exportable: v.exportable,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CertificateView {
        tags: backend.tags(&name, None)?.unwrap_or_default(),
        pending: pending.as_ref().map(PendingView::from),
        name,
        policy,
        key_operations: key_ops,
        versions,
    })
}

/// One line of `vault list`.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    /// The name.
    pub name: String,
    /// The current version.
    pub current: String,
    /// Its `enabled` attribute.
    pub enabled: bool,
    /// Its notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub exp: OffsetDateTime,
    /// The certificate's tags.
    pub tags: Tags,
}

/// `vault list`: every certificate, in name order, handed to `each`.
pub fn list(
    plan: &Plan,
    settings: &BackendSettings,
    mut each: impl FnMut(ListEntry) -> Result<()>,
) -> Result<()> {
    let backend = open_verb_backend(plan, "vault", Access::Preview, settings)?;
    let mut after = String::new();
    loop {
        let names = backend.names_page(&after, 1000)?;
        let Some(last) = names.last().cloned() else {
            return Ok(());
        };
        for (name, current) in names.iter().zip(backend.current_many(&names)?) {
            if let Some(v) = current {
                each(ListEntry {
                    tags: backend.tags(name, None)?.unwrap_or_default(),
                    name: name.clone(),
                    current: v.version,
                    enabled: v.enabled,
                    exp: v.exp,
                })?;
            }
        }
        after = last;
    }
}

/// What `vault update` changes.
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    /// The version (default: the current one). Tags then go on this version.
    pub version: Option<String>,
    /// Enable (true) or disable (false) the version.
    pub enabled: Option<bool>,
    /// Tags to set (name, value).
    pub tag: Vec<(String, String)>,
    /// Tag names to remove.
    pub untag: Vec<String>,
}

/// What `vault update` did.
#[derive(Debug, Serialize)]
pub struct UpdateReport {
    /// The certificate.
    pub name: String,
    /// The version whose attributes were read or changed.
    pub version: String,
    /// Its `enabled` attribute now.
    pub enabled: bool,
    /// `certificate` or `version`: where the tags below live.
    pub tags_on: &'static str,
    /// The tags there now.
    pub tags: Tags,
}

/// Most tags a certificate or a version may have (Key Vault's limit).
pub const MAX_TAGS: usize = 15;

/// Checks one tag: a name of 1 to 256 characters, a value of at most 256.
pub fn check_tag(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > 256 {
        return Err(input(format!("tag name `{key}` must have 1 to 256 characters")));
    }
    if value.chars().count() > 256 {
        return Err(input(format!(
            "the value of tag `{key}` is longer than 256 characters"
        )));
    }
    Ok(())
}

/// A request waiting for an outside CA, as `vault list` shows it.
#[derive(Debug, Serialize)]
pub struct PendingEntry {
    /// The certificate name.
    pub name: String,
    /// The request id.
    pub request_id: String,
    /// The issuer the policy names.
    pub issuer: String,
    /// When it was requested; null when the vault does not say.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
}

/// The requests waiting for an outside CA (`vault merge`), in name order.
pub fn pending_list(plan: &Plan, settings: &BackendSettings) -> Result<Vec<PendingEntry>> {
    let backend = open_verb_backend(plan, "vault", Access::Preview, settings)?;
    Ok(backend
        .pending_all()?
        .into_iter()
        .map(|p| PendingEntry {
            name: p.name,
            request_id: p.request_id,
            issuer: p.issuer,
            created: p.created,
        })
        .collect())
}

/// `vault update`: enables or disables a version (default: the current one) and sets or removes
/// tags: on the certificate, or on the version when one is named.
pub fn update(
    plan: &Plan,
    name: &str,
    opts: &UpdateOptions,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<UpdateReport> {
    let name = resolve_name(plan, name)?;
    for (k, v) in &opts.tag {
        check_tag(k, v)?;
    }
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    let v = match &opts.version {
        Some(ver) => backend.version(&name, ver)?,
        None => backend.current(&name)?,
    };
    let v = match (v, &opts.version) {
        (Some(v), _) => v,
        (None, Some(ver)) if backend.current(&name)?.is_some() => {
            return Err(input(format!(
                "the vault certificate `{name}` has no version {ver}"
            )));
        }
        (None, _) => return Err(not_live(&*backend, &name)),
    };
    // Disabling it again is how an operator undoes an enable made before this was refused.
    if let Some(ver) = &opts.version
        && (opts.enabled != Some(false) || !opts.tag.is_empty() || !opts.untag.is_empty())
    {
        refuse_key_holder(
            &*backend,
            &name,
            ver,
            "enabled, tagged or shown (`--disable` alone is taken)",
        )?;
    }
    let tag_version = opts.version.as_ref().map(|_| v.version.as_str());
    let mut tags = backend.tags(&name, tag_version)?.unwrap_or_default();
    let before = tags.clone();
    for k in &opts.untag {
        tags.remove(k);
    }
    for (k, val) in &opts.tag {
        tags.insert(k.clone(), val.clone());
    }
    if tags.len() > MAX_TAGS {
        return Err(input(format!(
            "`{name}` would have {} tags; at most {MAX_TAGS} are allowed",
            tags.len()
        )));
    }
    let enabled = opts.enabled.unwrap_or(v.enabled);
    crate::backend::in_one_unit(&mut *backend, |b| -> Result<()> {
        if enabled != v.enabled {
            b.set_enabled(&v, enabled, now)?;
        }
        if tags != before {
            b.set_tags(&name, tag_version, &tags, now)?;
        }
        Ok(())
    })?;
    let tags_on = if tag_version.is_some() {
        "version"
    } else {
        "certificate"
    };
    Ok(UpdateReport {
        name,
        version: v.version,
        enabled,
        tags_on,
        tags,
    })
}
