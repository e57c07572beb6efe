//! `vault create`, `vault csr`, `vault merge`: certificates from the vault's own key.
//!
//! With issuer `Self`, `vault create` makes a self-signed version at once. With `Unknown` or a
//! set issuer object, the vault makes the key and a CSR and the name waits (Key Vault's pending
//! certificate operation): `vault csr` writes the CSR for an outside CA, and `vault merge` takes
//! the signed certificate, checks that it certifies the pending key, and makes it a version.
//! The local backend talks to no issuer provider, so a set issuer also waits for a merge. Until
//! then the name has no usable version (an existing name keeps its current one).

use super::not_live;
use crate::backend::Created;
use crate::backend::types::{NewVersion, PendingCertificate};
use crate::error::input;
use crate::ops::{Access, BackendSettings, effective_key_usage, open_verb_backend, policy_json};
use crate::pki::cert::spki_of;
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
    /// Whether the new key is the key of the name's newest version (Key Vault's
    /// `key_props.reuse_key`); a new key when the name has no version yet.
    pub reuse_key: bool,
    /// The subject as DER, written byte for byte instead of parsing `subject` (which then only
    /// names it in the policy); for issuer `Self` only. Serve's Key Vault sets it when a
    /// policy's subject is the one the name's current certificate shows, as a renewal of an
    /// imported certificate sends it: that subject is the CA's, not text a user typed.
    pub keep_subject: Option<Vec<u8>>,
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
    crate::pki::pem::encode("CERTIFICATE REQUEST", der)
}

/// `vault create`.
pub fn create(
    plan: &Plan,
    name: &str,
    opts: &CreateOptions,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<CreateReport> {
    // Bad input is refused before the store is opened (and perhaps created).
    check_create(name, opts)?;
    // A request's usage is only asked for: the CA that signs it decides (certroll's own, for a
    // plan CA whose key Key Vault makes). A self-signed certificate made here would be no CA.
    // (Key Vault itself takes such a policy: serve's create does, see `create_in`.)
    if opts.issuer.eq_ignore_ascii_case("Self")
        && opts
            .key_usage
            .iter()
            .any(|u| KeyUsage::parse(u) == Some(KeyUsage::KeyCertSign))
    {
        return Err(input(
            "--key-usage keyCertSign: vault create makes end-entity certificates; CAs come from the plan",
        ));
    }
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    create_backdated(&mut *backend, name, opts, now, plan.not_before_skew)
}

/// The checked parts of [`CreateOptions`].
type CreateParts = (Subject, Vec<KeyUsage>, Vec<ExtendedKeyUsage>);

/// Checks `vault create`'s input without touching the store.
fn check_create(name: &str, opts: &CreateOptions) -> Result<CreateParts> {
    super::check_new_name("certificate", name)?;
    let subject = match &opts.keep_subject {
        // Only a self-signed certificate can be written with a kept subject (a CSR is not).
        Some(der) if opts.issuer.eq_ignore_ascii_case("Self") => {
            crate::pki::cert::check_name_writable(der).map_err(|e| input(format!("`{name}`: {e}")))?;
            Subject(Vec::new())
        }
        _ => Subject::parse(&opts.subject).map_err(|e| {
            input(format!(
                "--subject `{}`: {e}",
                crate::error::snippet(&opts.subject)
            ))
        })?,
    };
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
    for dns in &opts.dns_names {
        crate::pki::san::San::dns_or_ip(dns).map_err(|e| input(format!("--dns {e}")))?;
    }
    if matches!(opts.key, KeySpec::Ec { .. })
        && let Some(u) = key_usage
            .iter()
            .find(|u| matches!(u, KeyUsage::KeyEncipherment | KeyUsage::DataEncipherment))
    {
        return Err(input(format!(
            "key usage {}: an EC key signs and agrees on keys, it does not encipher (RFC 8813); \
             use digitalSignature or keyAgreement",
            u.name()
        )));
    }
    if matches!(opts.key, KeySpec::Rsa { .. }) && key_usage.contains(&KeyUsage::KeyAgreement) {
        return Err(input(
            "key usage keyAgreement: an RSA key signs and enciphers, it does not agree on keys \
             (RFC 3279 section 2.3.1); use keyEncipherment or digitalSignature, or an EC key",
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
    Ok((subject, key_usage, ekus))
}

/// `vault create` on an open backend (serve's Key Vault create calls this in its request's unit).
/// Unlike `vault create`, a self-signed policy may ask for keyCertSign, as Key Vault's create
/// takes it (certroll's key holder of a root whose key is not exportable asks for the root's
/// usage, so the key signs certificates).
pub fn create_in(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    opts: &CreateOptions,
    now: OffsetDateTime,
) -> Result<CreateReport> {
    create_backdated(backend, name, opts, now, time::Duration::ZERO)
}

/// [`create_in`], with a self-signed certificate's notBefore `skew` before `now` (the plan's
/// `not_before_skew_minutes`, as for every certificate the plan's verbs make).
pub fn create_backdated(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    opts: &CreateOptions,
    now: OffsetDateTime,
    skew: time::Duration,
) -> Result<CreateReport> {
    let (subject, key_usage, ekus) = check_create(name, opts)?;
    let issuer = super::settings::check_policy_issuer(backend, &opts.issuer)?;
    match backend.name_state(name)? {
        Some("deleted") => return Err(not_live(backend, name)),
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
        reuse_key: opts.reuse_key,
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
    let subject_text = match &opts.keep_subject {
        Some(_) if self_signed => opts.subject.clone(),
        _ => subject.to_string(),
    };
    let policy_doc = policy_json(&policy, &subject_text, Some(&issuer));
    let profile = CertProfile {
        subject,
        dns_names: policy.dns_names.clone(),
        key_usage: effective_key_usage(&policy, false),
        extended_key_usage: policy.extended_key_usage.clone(),
        not_before: now.saturating_sub(skew),
        not_after: crate::clock::add_days(now, opts.validity_days as i64),
        ca: None,
    };
    // A vault that makes keys itself (Key Vault) makes the version or the request from the
    // policy; certroll makes them only for one that does not (the local store).
    match backend.create_by_vault(name, &policy_doc, now)? {
        Some(Created::Version(version)) => {
            return Ok(CreateReport {
                name: name.to_string(),
                status: "completed",
                issuer,
                version: Some(version),
                request_id: None,
                csr: None,
            });
        }
        Some(Created::Pending(p)) => {
            return Ok(CreateReport {
                name: name.to_string(),
                status: "inProgress",
                issuer,
                version: None,
                request_id: Some(p.request_id),
                csr: Some(csr_pem(&p.csr_der)),
            });
        }
        None => {}
    }
    let key = match backend.current(name)? {
        Some(current) if opts.reuse_key => reused_key(backend, name, &current, &opts.key)?,
        _ => PrivateKey::generate(&opts.key)?,
    };
    if self_signed {
        let der = match &opts.keep_subject {
            Some(subject_der) => crate::pki::cert::sign_self_keeping_subject(&profile, &key, subject_der),
            None => crate::pki::sign_self(&profile, &key),
        }
        .map_err(|e| input(format!("`{name}`: {e}")))?;
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
                new_key: false,
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
            created: Some(now),
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

/// The key of `current` for a create with `reuse_key`, refused (input) unless it is of the
/// policy's type, size and curve.
fn reused_key(
    backend: &dyn crate::backend::Backend,
    name: &str,
    current: &crate::backend::types::VaultVersion,
    wanted: &KeySpec,
) -> Result<PrivateKey> {
    let key = backend.private_key(current)?;
    let held = key.spec()?;
    let same = match (held, wanted) {
        (KeySpec::Ec { curve: a, .. }, KeySpec::Ec { curve: b, .. }) => a == *b,
        (KeySpec::Rsa { bits: a, .. }, KeySpec::Rsa { bits: b, .. }) => a == *b,
        _ => false,
    };
    if !same {
        return Err(input(format!(
            "`{name}`: reuse_key asks for the key of version {}, a {} key, but the policy names {}",
            current.version,
            held.kty(),
            wanted.kty()
        )));
    }
    Ok(key)
}

fn no_request(backend: &dyn crate::backend::Backend, name: &str) -> anyhow::Error {
    match backend.name_state(name) {
        Ok(Some("live")) => input(format!(
            "`{name}` has no request waiting for a merge (`certroll vault create {name} --issuer Unknown ...` makes one)"
        )),
        _ => not_live(backend, name),
    }
}

/// The SubjectPublicKeyInfo (DER) a CSR asks to certify.
pub(crate) fn csr_spki(csr_der: &[u8]) -> Result<Vec<u8>> {
    crate::pki::cert::csr_spki(csr_der).map_err(|e| anyhow::anyhow!("the stored request: {e}"))
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
    let name = super::resolve_name(plan, name)?;
    let protected = crate::ops::outfile::Protected::of(plan, settings);
    protected.check(out)?;
    let backend = open_verb_backend(plan, "vault", Access::Read, settings)?;
    let pending = backend
        .pending(&name)?
        .ok_or_else(|| no_request(&*backend, &name))?;
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

/// Reads the bytes of a `vault merge` file: PEM, DER, or a PKCS#7 `.p7b` bundle (PEM or DER),
/// every certificate checked to parse, in the file's order (a PKCS#7 set has none). Touches
/// nothing; `shown` names the file in errors, which are input errors (exit 2).
pub fn parse_merge(shown: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let all = crate::pki::bundle::certs_from_bundle(bytes).map_err(|e| input(format!("{shown}: {e}")))?;
    for c in &all {
        crate::pki::CertInfo::from_der(c).map_err(|e| input(format!("{shown}: {e}")))?;
    }
    Ok(all)
}

/// `vault merge`: the signed certificate (PEM, DER, or a PKCS#7 `.p7b` bundle in PEM or DER)
/// becomes a version with the pending key, after checking that it certifies that key. The
/// bundle's other certificates are kept as its chain, in path order.
pub fn merge(
    plan: &Plan,
    name: &str,
    file: &Path,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<MergeReport> {
    let name = super::resolve_name(plan, name)?;
    let shown = file.display().to_string();
    let bytes = crate::fsutil::read_bounded(file, crate::fsutil::MAX_INPUT_FILE)
        .map_err(|e| input(format!("cannot read {shown}: {e}")))?;
    let all = parse_merge(&shown, &bytes)?;
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    merge_in(&mut *backend, &name, all, &shown, now)
}

/// `vault merge` on an open backend: `all` are DER certificates in any order, one of them for
/// the pending key (`shown` names where they came from in messages).
pub fn merge_in(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    all: Vec<Vec<u8>>,
    shown: &str,
    now: OffsetDateTime,
) -> Result<MergeReport> {
    let name = name.to_string();
    if all.is_empty() {
        return Err(input(format!("{shown} holds no certificate")));
    }
    let pending = backend
        .pending(&name)?
        .ok_or_else(|| no_request(backend, &name))?;
    // The leaf is the certificate for the pending key, wherever the bundle puts it (a PKCS#7
    // set has no order); the others are kept as its chain in path order. The key is known by
    // the request's CSR: on Key Vault it never leaves the vault.
    let public = csr_spki(&pending.csr_der)?;
    let mut leaf_at = None;
    for (i, c) in all.iter().enumerate() {
        if spki_of(c)? == public {
            leaf_at = Some(i);
            break;
        }
    }
    let Some(leaf_at) = leaf_at else {
        let first = crate::pki::CertInfo::from_der(&all[0]).map_err(|e| input(format!("{shown}: {e}")))?;
        return Err(input(format!(
            "{shown}: {} the key of `{name}`'s pending request; nothing was merged",
            if all.len() == 1 {
                format!("the certificate ({}) is not for", first.subject)
            } else {
                format!("none of its {} certificates is for", all.len())
            }
        )));
    };
    let leaf = all[leaf_at].clone();
    let cert = crate::pki::CertInfo::from_der(&leaf).map_err(|e| input(format!("{shown}: {e}")))?;
    let others: Vec<Vec<u8>> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leaf_at)
        .map(|(_, c)| c.clone())
        .collect();
    let mut certs = crate::pki::inspect::issuer_path(&leaf, &others);
    for c in others {
        if !certs.contains(&c) {
            certs.push(c);
        }
    }
    let version = crate::backend::in_one_unit(backend, |b| -> Result<String> {
        Ok(b.merge_pending(&pending, &leaf, &certs, None, now)?)
    })?;
    Ok(MergeReport { name, version, cert })
}
