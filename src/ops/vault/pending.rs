//! `vault create`, `vault csr`, `vault merge`: certificates from the vault's own key.
//!
//! With issuer `Self`, `vault create` makes a self-signed version at once. With `Unknown` or a
//! set issuer object, the vault makes the key and a CSR and the name waits (Key Vault's pending
//! certificate operation): `vault csr` writes the CSR for an outside CA, and `vault merge` takes
//! the signed certificate, checks that it certifies the pending key, and makes it a version.
//! The local backend talks to no issuer provider, so a set issuer also waits for a merge. Until
//! then the name has no usable version (an existing name keeps its current one).

use super::{not_live, spki_of};
use crate::backend::Vault as _;
use crate::backend::types::{NewVersion, PendingCertificate};
use crate::error::input;
use crate::ops::{Access, BackendSettings, effective_key_usage, open_backend, policy_json};
use crate::pki::spec::{ExtendedKeyUsage, KeySpec, KeyUsage, RSA_SIZES, Subject};
use crate::pki::{CertProfile, PrivateKey};
use crate::plan::{ActionKind, ContentType, LifetimeAction, Plan, Policy, Trigger};
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Options of `vault create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The subject, `CN=..., O=...`.
    pub subject: String,
    /// Key type and size or curve.
    pub key: KeySpec,
    /// Whether the key may be exported (never for HSM keys).
    pub exportable: bool,
    /// DNS names or IP addresses for the subjectAltName.
    pub dns_names: Vec<String>,
    /// Key usage names (empty: digitalSignature + keyEncipherment).
    pub key_usage: Vec<String>,
    /// Extended key usages (names or OIDs).
    pub ekus: Vec<String>,
    /// Validity of the certificate, in days.
    pub validity_days: u32,
    /// `Self`, `Unknown` or a set issuer object.
    pub issuer: String,
}

/// What `vault create` did.
#[derive(Debug, Serialize)]
pub struct CreateReport {
    /// The certificate name.
    pub name: String,
    /// `completed` (a version exists) or `inProgress` (waiting for `vault merge`).
    pub status: &'static str,
    /// The issuer the policy names.
    pub issuer: String,
    /// The new version, when completed.
    pub version: Option<String>,
    /// The request id, when waiting.
    pub request_id: Option<String>,
    /// The CSR (PEM), when waiting.
    pub csr: Option<String>,
}

fn csr_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.to_vec()))
}

/// `vault create`.
pub fn create(
    plan: &Plan,
    name: &str,
    opts: &CreateOptions,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<CreateReport> {
    super::check_new_name("certificate", name)?;
    let subject =
        Subject::parse(&opts.subject).map_err(|e| input(format!("--subject `{}`: {e}", opts.subject)))?;
    if !(1..=36_500).contains(&opts.validity_days) {
        return Err(input(format!(
            "--validity-days {} is out of range (1 to 36500)",
            opts.validity_days
        )));
    }
    if let KeySpec::Rsa { bits, .. } = opts.key
        && !RSA_SIZES.contains(&bits)
    {
        return Err(input(format!(
            "RSA key size {bits} is not supported (allowed: 2048, 3072, 4096)"
        )));
    }
    let key_usage = opts
        .key_usage
        .iter()
        .map(|u| {
            KeyUsage::parse(u).ok_or_else(|| input(format!("--key-usage `{u}` is not a key usage name")))
        })
        .collect::<Result<Vec<_>>>()?;
    if key_usage.contains(&KeyUsage::KeyCertSign) {
        return Err(input(
            "--key-usage keyCertSign: vault create makes end-entity certificates; CAs come from the plan",
        ));
    }
    let ekus = opts
        .ekus
        .iter()
        .map(|e| {
            ExtendedKeyUsage::parse(e)
                .ok_or_else(|| input(format!("--eku `{e}` is not an EKU name or dotted OID")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut backend = open_backend(plan, Access::Write, settings)?;
    let issuer = super::settings::check_policy_issuer(&backend, &opts.issuer)?;
    match backend.name_state(name)? {
        Some("deleted") => return Err(not_live(&backend, name)),
        Some(_) if backend.pending(name)?.is_some() => {
            return Err(input(format!(
                "`{name}` already has a request waiting for `certroll vault merge {name}` \
                 (`certroll vault delete {name}` cancels it)"
            )));
        }
        _ => {}
    }
    let self_signed = issuer == "Self";
    let policy = Policy {
        name: name.to_string(),
        key: opts.key,
        exportable: opts.exportable && !opts.key.is_hsm(),
        reuse_key: false,
        validity_days: opts.validity_days,
        key_usage,
        extended_key_usage: ekus,
        dns_names: opts.dns_names.clone(),
        content_type: ContentType::Pem,
        lifetime_actions: vec![LifetimeAction {
            trigger: Trigger::LifetimePercentage(80),
            // Without a CA to ask, only people can renew a certificate signed outside.
            action: if self_signed {
                ActionKind::AutoRenew
            } else {
                ActionKind::EmailContacts
            },
        }],
    };
    let policy_doc = policy_json(&policy, &subject.to_string(), Some(&issuer));
    let profile = CertProfile {
        subject,
        dns_names: policy.dns_names.clone(),
        key_usage: effective_key_usage(&policy, false),
        extended_key_usage: policy.extended_key_usage.clone(),
        not_before: now,
        not_after: crate::clock::add_days(now, opts.validity_days as i64),
        ca: None,
    };
    let key = PrivateKey::generate(&opts.key)?;
    if self_signed {
        let der = crate::pki::sign_self(&profile, &key).map_err(|e| input(format!("`{name}`: {e}")))?;
        let version = backend.create_versions(
            &[NewVersion {
                name,
                policy_json: &policy_doc,
                cert_der: &der,
                key_pkcs8: key.pkcs8_der(),
                kty: opts.key.kty(),
                exportable: crate::ops::exportable(&policy),
                issuer: None,
                facts: None,
            }],
            now,
        )?;
        return Ok(CreateReport {
            name: name.to_string(),
            status: "completed",
            issuer,
            version: version.into_iter().next(),
            request_id: None,
            csr: None,
        });
    }
    let csr = crate::pki::cert::csr_der(&profile, &key).map_err(|e| input(format!("`{name}`: {e}")))?;
    let request_id = crate::store::queries::new_version_id()?;
    backend.put_pending(
        &PendingCertificate {
            name: name.to_string(),
            request_id: request_id.clone(),
            csr_der: csr.clone(),
            kty: opts.key.kty().to_string(),
            exportable: crate::ops::exportable(&policy),
            policy_json: policy_doc,
            issuer: issuer.clone(),
            created: now,
        },
        key.pkcs8_der(),
    )?;
    Ok(CreateReport {
        name: name.to_string(),
        status: "inProgress",
        issuer,
        version: None,
        request_id: Some(request_id),
        csr: Some(csr_pem(&csr)),
    })
}

fn no_request(backend: &crate::backend::local::LocalBackend, name: &str) -> anyhow::Error {
    match backend.name_state(name) {
        Ok(Some("live")) => input(format!(
            "`{name}` has no request waiting for a merge (`certroll vault create {name} --issuer Unknown ...` makes one)"
        )),
        _ => not_live(backend, name),
    }
}

/// What `vault csr` wrote.
#[derive(Debug, Serialize)]
pub struct CsrReport {
    /// The certificate name.
    pub name: String,
    /// The request id.
    pub request_id: String,
    /// The file written.
    pub out: PathBuf,
}

/// `vault csr`: writes the pending request's CSR as PEM.
pub fn csr(plan: &Plan, name: &str, out: &Path, settings: &BackendSettings) -> Result<CsrReport> {
    let name = super::resolve_name(name)?;
    let protected = crate::ops::outfile::Protected::of(plan, settings);
    protected.check(out)?;
    let backend = open_backend(plan, Access::Read, settings)?;
    let pending = backend
        .pending(&name)?
        .ok_or_else(|| no_request(&backend, &name))?;
    protected.write(out, csr_pem(&pending.csr_der).as_bytes(), false)?;
    Ok(CsrReport {
        name,
        request_id: pending.request_id,
        out: out.to_path_buf(),
    })
}

/// What `vault merge` did.
#[derive(Debug, Serialize)]
pub struct MergeReport {
    /// The certificate name.
    pub name: String,
    /// The new version.
    pub version: String,
    /// The merged certificate.
    pub cert: crate::pki::CertInfo,
}

/// What a `vault merge` file holds: the signed certificate and the chain after it.
#[derive(Debug)]
pub struct MergeMaterial {
    /// The signed certificate (DER): the first in the file.
    pub leaf: Vec<u8>,
    /// The certificates after it (DER), kept as its chain.
    pub chain: Vec<Vec<u8>>,
    /// The signed certificate, parsed.
    pub cert: crate::pki::CertInfo,
}

/// Reads the bytes of a `vault merge` file: PEM (leaf first, then its chain) or one DER
/// certificate. Touches nothing; `shown` names the file in errors, which are input errors.
pub fn parse_merge(shown: &str, bytes: &[u8]) -> Result<MergeMaterial> {
    let mut certs = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        crate::pki::pem::certs_from_pem(bytes).map_err(|e| input(format!("{shown}: {e}")))?
    } else {
        vec![bytes.to_vec()]
    };
    // Leaf first, then its chain (kept with the version).
    let leaf = certs.remove(0);
    for c in &certs {
        crate::pki::CertInfo::from_der(c).map_err(|e| input(format!("{shown}: {e}")))?;
    }
    let cert = crate::pki::CertInfo::from_der(&leaf).map_err(|e| input(format!("{shown}: {e}")))?;
    Ok(MergeMaterial {
        leaf,
        chain: certs,
        cert,
    })
}

/// `vault merge`: the signed certificate (PEM, leaf first, or DER) becomes a version with the
/// pending key, after checking that it certifies that key. Further certificates in a PEM file
/// are kept as its chain.
pub fn merge(
    plan: &Plan,
    name: &str,
    file: &Path,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<MergeReport> {
    let name = super::resolve_name(name)?;
    let shown = file.display().to_string();
    let bytes = crate::fsutil::read_bounded(file, crate::fsutil::MAX_INPUT_FILE)
        .map_err(|e| input(format!("cannot read {shown}: {e}")))?;
    let MergeMaterial {
        leaf,
        chain: certs,
        cert,
    } = parse_merge(&shown, &bytes)?;
    let mut backend = open_backend(plan, Access::Write, settings)?;
    let pending = backend
        .pending(&name)?
        .ok_or_else(|| no_request(&backend, &name))?;
    let key = backend.pending_key(&name)?;
    if spki_of(&leaf)? != key.public_key_der() {
        return Err(input(format!(
            "{shown}: the certificate ({}) is not for the key of `{name}`'s pending request; nothing was merged",
            cert.subject
        )));
    }
    let version = crate::backend::in_one_unit(&mut backend, |b| -> Result<String> {
        let v = b.create_versions(
            &[NewVersion {
                name: &name,
                policy_json: &pending.policy_json,
                cert_der: &leaf,
                key_pkcs8: key.pkcs8_der(),
                kty: &pending.kty,
                exportable: pending.exportable,
                issuer: None,
                facts: None,
            }],
            now,
        )?;
        let v = v.into_iter().next().unwrap_or_default();
        if !certs.is_empty() {
            b.set_stored_chain(&name, &v, &certs)?;
        }
        b.delete_pending(&name)?;
        Ok(v)
    })?;
    Ok(MergeReport { name, version, cert })
}
