//! `vault`: the vault's certificates as Key Vault shows them: names, versions with their
//! attributes, the policy, the key operations its key usage allows; enabling and disabling
//! versions.

use super::{Access, BackendSettings, Target, ca_cert_name, device_cert_name, open_backend};
use crate::backend::Vault as _;
use crate::error::input;
use crate::pki::CertInfo;
use crate::pki::spec::KeyUsage;
use crate::plan::Plan;
use anyhow::Result;
use serde::Serialize;
use time::OffsetDateTime;

/// A vault certificate name from `ca:NAME`, `device:ID`, `enrollment:NAME`, or the name itself.
pub fn resolve_name(text: &str) -> Result<String> {
    if !text.contains(':') {
        return Ok(text.to_string());
    }
    match Target::parse(text).map_err(input)? {
        Target::Ca(n) => Ok(ca_cert_name(&n)),
        Target::Device(id) | Target::Enrollment(id) => Ok(device_cert_name(&id)),
        Target::Group(g) => Err(input(format!(
            "group:{g} has no vault certificate of its own; use its CA"
        ))),
    }
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
}

/// A certificate with all its versions, oldest first.
#[derive(Debug, Serialize)]
pub struct CertificateView {
    /// The name.
    pub name: String,
    /// The policy (Key Vault's shape).
    pub policy: Option<serde_json::Value>,
    /// The key operations the policy's key usage allows.
    pub key_operations: Vec<&'static str>,
    /// Versions, oldest first.
    pub versions: Vec<VersionView>,
}

/// Key operations for the key usage names of a policy (Key Vault's table; the default key usage
/// is digitalSignature + keyEncipherment).
pub fn key_operations(usage: &[String]) -> Vec<&'static str> {
    let usages: Vec<KeyUsage> = if usage.is_empty() {
        vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
    } else {
        usage.iter().filter_map(|u| KeyUsage::parse(u)).collect()
    };
    let mut ops: Vec<&'static str> = Vec::new();
    for u in usages {
        for op in u.key_operations() {
            if !ops.contains(op) {
                ops.push(op);
            }
        }
    }
    ops
}

/// `vault show`.
pub fn show(plan: &Plan, name: &str, settings: &BackendSettings) -> Result<CertificateView> {
    let name = resolve_name(name)?;
    let backend = open_backend(plan, Access::Read, settings)?;
    let versions = backend.versions(&name)?;
    if versions.is_empty() {
        return Err(input(format!("the vault has no certificate `{name}`")));
    }
    let policy = backend.policy(&name)?;
    let usage: Vec<String> = policy
        .as_ref()
        .and_then(|p| p["x509_props"]["key_usage"].as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let versions = versions
        .into_iter()
        .map(|v| {
            Ok(VersionView {
                cert: CertInfo::from_der(&v.cert_der)?,
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
        name,
        policy,
        key_operations: key_operations(&usage),
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
}

/// `vault list`: every certificate, in name order, handed to `each`.
pub fn list(
    plan: &Plan,
    settings: &BackendSettings,
    mut each: impl FnMut(ListEntry) -> Result<()>,
) -> Result<()> {
    let backend = open_backend(plan, Access::Preview, settings)?;
    let mut after = String::new();
    loop {
        let names = backend.names_page(&after, 1000)?;
        let Some(last) = names.last().cloned() else {
            return Ok(());
        };
        for (name, current) in names.iter().zip(backend.current_many(&names)?) {
            if let Some(v) = current {
                each(ListEntry {
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

/// `vault update`: enables or disables a version (default: the current one). Returns the version.
pub fn set_enabled(
    plan: &Plan,
    name: &str,
    version: Option<&str>,
    enabled: bool,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<String> {
    let name = resolve_name(name)?;
    let mut backend = open_backend(plan, Access::Write, settings)?;
    let v = match version {
        Some(ver) => backend.version(&name, ver)?,
        None => backend.current(&name)?,
    }
    .ok_or_else(|| {
        input(format!(
            "the vault has no certificate `{name}`{}",
            version.map(|v| format!(" version {v}")).unwrap_or_default()
        ))
    })?;
    if v.enabled != enabled {
        backend.set_enabled(&v, enabled, now)?;
    }
    Ok(v.version)
}
