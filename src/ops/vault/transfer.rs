//! `vault import`: an existing certificate with its private key, from PEM (certificate chain +
//! PKCS#8, SEC1 or PKCS#1 key) or PKCS#12, becomes a vault version.
//!
//! A new name gets a policy read from the certificate, as Key Vault makes one: subject, SANs,
//! key type and size or curve, key usage, EKUs, validity, issuer `Self` for a self-signed
//! certificate and `Unknown` otherwise, an `EmailContacts` action at 80 % of the lifetime,
//! exportable unless `--hsm`. An existing name gets a new version and keeps its policy; a
//! version imported into a name whose policy is non-exportable is non-exportable too. The
//! other certificates in the file are kept with the version as its chain (Key Vault's x5c), and
//! `vault export` writes them after it.

use super::not_live;
use crate::backend::types::NewVersion;
use crate::error::input;
use crate::ops::{Access, BackendSettings, open_verb_backend, policy_json};
use crate::pki::cert::spki_of;
use crate::pki::spec::{ExtendedKeyUsage, KeySpec};
use crate::plan::{ActionKind, ContentType, LifetimeAction, Plan, Policy, Trigger};
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Options of `vault import`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The PEM or PKCS#12 file.
    pub file: PathBuf,
    /// The PKCS#12 password.
    pub password: Option<Zeroizing<String>>,
    /// Keep the key as an HSM key: never exportable by any path.
    pub hsm: bool,
}

/// What `vault import` did.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    /// The certificate name.
    pub name: String,
    /// The new version.
    pub version: String,
    /// Whether the name was new (and got a policy read from the certificate).
    pub new_certificate: bool,
    /// Key type.
    pub kty: String,
    /// Whether the key may be exported.
    pub exportable: bool,
    /// The certificate.
    pub cert: crate::pki::CertInfo,
    /// Certificates in the file other than the imported one: kept as its chain.
    pub other_certificates: usize,
}

/// What an import file holds: certificates (DER, in file order), the private key (PKCS#8) and
/// the file's form.
pub struct Material {
    /// The certificates.
    pub certs: Vec<Vec<u8>>,
    /// The private key, PKCS#8.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// PEM or PKCS#12.
    pub content_type: ContentType,
}

fn read_material(file: &Path, password: Option<&str>) -> Result<Material> {
    let bytes = Zeroizing::new(
        crate::fsutil::read_bounded(file, crate::fsutil::MAX_INPUT_FILE)
            .map_err(|e| input(format!("cannot read {}: {e}", file.display())))?,
    );
    material_from_bytes(&bytes, password, &file.display().to_string())
}

/// Reads import material from the bytes of a PEM or PKCS#12 file (`shown` names it in messages).
pub fn material_from_bytes(bytes: &[u8], password: Option<&str>, shown: &str) -> Result<Material> {
    if bytes.trim_ascii().is_empty() {
        return Err(input(format!(
            "{shown} is empty: expected a PEM file (certificate and key) or a PKCS#12 (.pfx) file"
        )));
    }
    if crate::pki::pem::is_pem(bytes) {
        if bytes.windows(21).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
            return Err(input(format!("{shown}: {}", crate::pki::pem::ENCRYPTED_KEY)));
        }
        if crate::pki::pem::has_legacy_encrypted_key(bytes) {
            return Err(input(format!(
                "{shown}: {} (a legacy PEM key: `Proc-Type: 4,ENCRYPTED`)",
                crate::pki::pem::ENCRYPTED_KEY
            )));
        }
        let certs = crate::pki::pem::certs_from_pem(bytes).map_err(|e| input(format!("{shown}: {e}")))?;
        let key = crate::pki::pem::private_key_from_pem(bytes).map_err(|e| match e {
            crate::pki::Error::BadPem(m) if m.starts_with("no PRIVATE KEY") => input(format!(
                "{shown} holds {} certificate(s) but no private key (PKCS#8, SEC1 or PKCS#1 PEM block): \
                 `vault import` needs the certificate with its key, as PEM (both blocks in one file) or PKCS#12 (.pfx)",
                certs.len()
            )),
            other => input(format!("{shown}: {}", other)),
        })?;
        let key_pkcs8 = crate::pki::keys::to_pkcs8(&key).map_err(|e| input(format!("{shown}: {e}")))?;
        return Ok(Material {
            certs,
            key_pkcs8,
            content_type: ContentType::Pem,
        });
    }
    // A DER certificate is neither PEM nor PKCS#12: name it for what it is, not a damaged PFX.
    if let Ok(info) = crate::pki::CertInfo::from_der(bytes) {
        return Err(input(format!(
            "{shown} is a DER certificate (`{}`) without a private key: `vault import` needs the \
             certificate with its key, as PEM (certificate and key blocks in one file, e.g. from \
             `openssl x509 -inform DER`) or PKCS#12 (.pfx)",
            crate::error::snippet(&info.subject)
        )));
    }
    let password = password.ok_or_else(|| {
        input(format!(
            "{shown} is not PEM, so it is read as PKCS#12, which needs --password-env VAR"
        ))
    })?;
    let pfx = crate::pki::pkcs12::read_pfx(bytes, password)
        .map_err(|e| input(format!("cannot read {shown} as PKCS#12: {e}")))?;
    Ok(Material {
        certs: pfx.chain,
        key_pkcs8: pfx.key,
        content_type: ContentType::Pfx,
    })
}

/// Whether a certificate is self-signed: issuer = subject, and its own key verifies it.
pub fn is_self_signed(der: &[u8]) -> Result<bool> {
    let (_, cert) = crate::pki::inspect::parse(der)?;
    Ok(cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok())
}

/// The policy Key Vault makes for an imported certificate: everything read from it.
pub fn policy_from_certificate(
    name: &str,
    der: &[u8],
    key: KeySpec,
    exportable: bool,
    content_type: ContentType,
) -> Result<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = crate::pki::inspect::parse(der)?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            // A Key Vault policy has DNS names (and e-mails, UPNs), no IP addresses: an IP SAN
            // written as a DNS name would come back wrong in a renewal, so it is not carried over.
            if let GeneralName::DNSName(d) = n {
                dns_names.push(d.to_string());
            }
        }
    }
    let key_usage = crate::pki::inspect::key_usage(der)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut ekus = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = eku.value;
        for (set, usage) in [
            (e.server_auth, ExtendedKeyUsage::ServerAuth),
            (e.client_auth, ExtendedKeyUsage::ClientAuth),
            (e.code_signing, ExtendedKeyUsage::CodeSigning),
            (e.email_protection, ExtendedKeyUsage::EmailProtection),
            (e.time_stamping, ExtendedKeyUsage::TimeStamping),
            (e.ocsp_signing, ExtendedKeyUsage::OcspSigning),
        ] {
            if set {
                ekus.push(usage);
            }
        }
        ekus.extend(
            e.other
                .iter()
                .filter_map(|oid| ExtendedKeyUsage::parse(&oid.to_id_string())),
        );
    }
    let validity = cert.validity();
    let secs = (validity.not_after.to_datetime() - validity.not_before.to_datetime()).whole_seconds();
    let validity_days = ((secs + 43_200) / 86_400).clamp(1, u32::MAX as i64) as u32;
    let self_signed = is_self_signed(der)?;
    let policy = Policy {
        name: name.to_string(),
        key,
        exportable,
        reuse_key: false,
        validity_days,
        key_usage,
        extended_key_usage: ekus,
        dns_names,
        content_type,
        lifetime_actions: vec![LifetimeAction {
            trigger: Trigger::LifetimePercentage(80),
            action: ActionKind::EmailContacts,
        }],
    };
    Ok(policy_json(
        &policy,
        // Escaped (RFC 4514), so that `O=x+y` and `O=x + CN=y` read apart; a renewal keeps
        // the certificate's subject itself (`renew::renewal_subject`).
        &crate::pki::inspect::name_text(cert.subject()),
        Some(if self_signed { "Self" } else { "Unknown" }),
    ))
}

/// Makes a key type an HSM one.
pub fn with_hsm(spec: KeySpec) -> KeySpec {
    match spec {
        KeySpec::Rsa { bits, .. } => KeySpec::Rsa { bits, hsm: true },
        KeySpec::Ec { curve, .. } => KeySpec::Ec { curve, hsm: true },
    }
}

/// `vault import`.
pub fn import(
    plan: &Plan,
    name: &str,
    opts: &ImportOptions,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<ImportReport> {
    super::check_new_name("certificate", name)?;
    let material = read_material(&opts.file, opts.password.as_deref().map(|p| p.as_str()))?;
    let shown = opts.file.display().to_string();
    // Refused before the store is opened: a key without its certificate.
    find_leaf(&material, &shown)?;
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    import_in(&mut *backend, name, &material, opts.hsm, &shown, now)
}

/// What an import file holds once checked: every certificate (DER, file order), which one the
/// key belongs to, the key's type and the file's form.
pub struct ImportMaterial {
    /// Every certificate in the file, in file order.
    pub certs: Vec<Vec<u8>>,
    /// The index in `certs` of the certificate the key belongs to.
    pub leaf: usize,
    /// The key's type, read from the key.
    pub spec: KeySpec,
    /// PEM or PKCS#12, as the file was.
    pub content_type: ContentType,
}

/// Reads the bytes of a `vault import` file (PEM in any order, or PKCS#12 with `password`) and
/// finds the certificate its key belongs to: everything import checks before it touches the
/// vault. `shown` names the file in errors, which are input errors (exit 2).
pub fn parse_import(shown: &str, bytes: &[u8], password: Option<&str>) -> Result<ImportMaterial> {
    let material = material_from_bytes(bytes, password, shown)?;
    let leaf = find_leaf(&material, shown)?;
    let (_, spec) = crate::pki::PrivateKey::from_der_any(&material.key_pkcs8)
        .map_err(|e| input(format!("{shown}: {e}")))?;
    Ok(ImportMaterial {
        certs: material.certs,
        leaf,
        spec,
        content_type: material.content_type,
    })
}

fn find_leaf(material: &Material, shown: &str) -> Result<usize> {
    let (key, _) = crate::pki::PrivateKey::from_der_any(&material.key_pkcs8)
        .map_err(|e| input(format!("{shown}: {e}")))?;
    let public = key.public_key_der();
    for (i, der) in material.certs.iter().enumerate() {
        if spki_of(der).map_err(|e| input(format!("{shown}: {e}")))? == public {
            return Ok(i);
        }
    }
    Err(input(format!(
        "{shown}: the private key does not belong to {} in the file",
        if material.certs.len() == 1 {
            "the certificate"
        } else {
            "any certificate"
        }
    )))
}

/// `vault import` on an open backend (`hsm`: keep the key non-exportable by any path).
pub fn import_in(
    backend: &mut dyn crate::backend::Backend,
    name: &str,
    material: &Material,
    hsm: bool,
    shown: &str,
    now: OffsetDateTime,
) -> Result<ImportReport> {
    super::check_new_name("certificate", name)?;
    let (key, mut spec) = crate::pki::PrivateKey::from_der_any(&material.key_pkcs8)
        .map_err(|e| input(format!("{shown}: {e}")))?;
    let public = key.public_key_der();
    let mut leaf = None;
    for (i, der) in material.certs.iter().enumerate() {
        if spki_of(der).map_err(|e| input(format!("{shown}: {e}")))? == public {
            leaf = Some(i);
            break;
        }
    }
    let Some(leaf) = leaf else {
        return Err(input(format!(
            "{shown}: the private key does not belong to {} in the file",
            if material.certs.len() == 1 {
                "the certificate"
            } else {
                "any certificate"
            }
        )));
    };
    let cert_der = &material.certs[leaf];
    let cert = crate::pki::CertInfo::from_der(cert_der).map_err(|e| input(format!("{shown}: {e}")))?;

    let existing = match backend.name_state(name)? {
        Some("live") => backend.policy(name)?,
        Some("deleted") | Some("pending") => return Err(not_live(backend, name)),
        _ => None,
    };
    let mut exportable = !hsm;
    let mut hsm = hsm;
    let policy_doc = match &existing {
        Some(policy) => {
            let key_props = &policy["key_props"];
            if key_props["exportable"] == serde_json::Value::Bool(false) {
                exportable = false;
            }
            if key_props["kty"].as_str().is_some_and(|k| k.ends_with("-HSM")) {
                hsm = true;
                exportable = false;
            }
            policy.to_string()
        }
        None => policy_from_certificate(
            name,
            cert_der,
            if hsm { with_hsm(spec) } else { spec },
            exportable,
            material.content_type,
        )?,
    };
    if hsm {
        spec = with_hsm(spec);
    }
    // The other certificates of the file are the leaf's chain, kept with the version in path
    // order (issuer first), whatever order the file had.
    let others: Vec<Vec<u8>> = material
        .certs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leaf)
        .map(|(_, c)| c.clone())
        .collect();
    let mut chain = crate::pki::inspect::issuer_path(cert_der, &others);
    // Certificates off the path are kept after it, so nothing the file held is lost.
    for c in others {
        if !chain.contains(&c) {
            chain.push(c);
        }
    }
    let version = crate::backend::in_one_unit(backend, |b| -> Result<Vec<String>> {
        let version = b.create_versions(
            &[NewVersion {
                name,
                policy_json: &policy_doc,
                cert_der,
                key_pkcs8: key.pkcs8_der(),
                kty: spec.kty(),
                exportable,
                issuer: None,
                facts: None,
                new_key: false,
            }],
            now,
        )?;
        if let Some(v) = version.first()
            && !chain.is_empty()
        {
            b.set_stored_chain(name, v, &chain)?;
        }
        Ok(version)
    })
    .map_err(refused_as_asked)?;
    Ok(ImportReport {
        name: name.to_string(),
        version: version.into_iter().next().unwrap_or_default(),
        new_certificate: existing.is_none(),
        kty: spec.kty().to_string(),
        exportable,
        cert,
        other_certificates: material.certs.len() - 1,
    })
}

/// A remote vault that answers an import with HTTP 400 refuses the request as asked (Key Vault
/// takes no key in the clear as an HSM key: `--hsm`): nothing was imported and the same
/// command can never succeed, so it is bad input (exit 2), not a failure a rerun resumes.
fn refused_as_asked(e: anyhow::Error) -> anyhow::Error {
    let bad_request = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::backend::BackendError>(),
            Some(crate::backend::BackendError::Remote {
                status: Some(400),
                ..
            })
        )
    });
    if bad_request {
        input(format!(
            "{e:#} (nothing was imported; the vault refuses this import as asked)"
        ))
    } else {
        e
    }
}

/// The certificates above a version that the vault holds: its issuer first. Unlike
/// [`crate::ops::chain_above`] it stops where an issuer is not in this vault (a certificate
/// restored from another store, or whose CA was deleted with `--force`).
fn chain_in_vault(
    backend: &dyn crate::backend::Backend,
    version: &crate::backend::types::VaultVersion,
) -> Result<Vec<Vec<u8>>> {
    let mut chain = Vec::new();
    let mut next = version.issuer.clone();
    while let Some((name, ver)) = next {
        if chain.len() > 16 {
            break;
        }
        match backend.version(&name, &ver)? {
            Some(v) => {
                chain.push(v.cert_der.clone());
                next = v.issuer.clone();
            }
            None => break,
        }
    }
    Ok(chain)
}

/// Options of `vault export`.
#[derive(Debug, Clone)]
pub struct VaultExportOptions {
    /// The version (default: the current one).
    pub version: Option<String>,
    /// PEM or PFX; `None`: see [`default_format`].
    pub format: Option<crate::ops::ExportFormat>,
    /// Where to write.
    pub out: PathBuf,
    /// Add the private key to a PEM export.
    pub with_key: bool,
    /// The PFX password.
    pub password: Option<Zeroizing<String>>,
}

/// `vault export`: one version of any vault certificate (imported, created, merged, restored,
/// or the plan's), by the same rules as `export`: a disabled version, a version outside its
/// validity at `now`, and the key of a non-exportable version are refused.
pub fn export(
    plan: &Plan,
    name: &str,
    opts: &VaultExportOptions,
    settings: &BackendSettings,
    now: OffsetDateTime,
) -> Result<crate::ops::export::ExportReport> {
    use crate::ops::ExportFormat;
    let name = super::resolve_name(plan, name)?;
    let protected = crate::ops::outfile::Protected::of(plan, settings);
    protected.check(&opts.out)?;
    let backend = open_verb_backend(plan, "vault", Access::Read, settings)?;
    let version = match &opts.version {
        Some(v) => backend.version(&name, v)?,
        None => backend.current(&name)?,
    };
    let version = match (version, &opts.version) {
        (Some(v), _) => v,
        (None, Some(v)) if backend.current(&name)?.is_some() => {
            return Err(input(format!(
                "the vault certificate `{name}` has no version {v}"
            )));
        }
        (None, _) => return Err(not_live(&*backend, &name)),
    };
    if let Some(v) = &opts.version {
        super::refuse_key_holder(&*backend, &name, v, "exported")?;
    }
    let format = match opts.format {
        Some(f) => f,
        None => default_format(backend.policy(&name)?.as_ref(), &version, opts.with_key),
    };
    crate::ops::export::refuse_misnamed(
        &opts.out,
        format,
        opts.format.is_some(),
        &format!(
            "the default for version {} of `{name}`: PKCS#12 only when its policy's content type is \
             application/x-pkcs12, the key may leave the vault and --with-key is not given",
            version.version
        ),
    )?;
    let wants_key = opts.with_key || format == ExportFormat::Pfx;
    crate::ops::export::may_export(&format!("`{name}`"), &version, wants_key, now)?;
    // A stored chain is kept as the file had it; the export is in path order whatever that was.
    let above = match version.issuer {
        Some(_) => chain_in_vault(&*backend, &version)?,
        None => crate::pki::inspect::issuer_path(
            &version.cert_der,
            &backend.stored_chain(&name, &version.version)?,
        ),
    };
    let mut chain = vec![version.cert_der.clone()];
    let bytes: Zeroizing<Vec<u8>> = match format {
        ExportFormat::Pem => {
            // Up to, not including, the root.
            let root = match above.last() {
                Some(last) => is_self_signed(last)?,
                None => false,
            };
            let keep = above.len() - usize::from(root);
            chain.extend(above.into_iter().take(keep));
            let mut text = Zeroizing::new(String::new());
            for der in &chain {
                text.push_str(&crate::pki::pem::cert_to_pem(der));
            }
            if opts.with_key {
                let key = backend.private_key(&version)?;
                text.push_str(&crate::pki::pem::key_to_pem(key.pkcs8_der()));
            }
            Zeroizing::new(text.as_bytes().to_vec())
        }
        ExportFormat::Pfx => {
            let password = opts.password.as_ref().ok_or_else(|| {
                input(format!(
                    "the policy of `{name}` asks for PKCS#12 (application/x-pkcs12): a pfx export \
                     needs a password (--password-env VAR), or pass --format pem"
                ))
            })?;
            let key = backend.private_key(&version)?;
            chain.extend(above);
            Zeroizing::new(crate::pki::pkcs12::write_pfx(
                &name,
                key.pkcs8_der(),
                &chain,
                password,
            )?)
        }
    };
    protected.write(&opts.out, &bytes, wants_key)?;
    Ok(crate::ops::export::ExportReport {
        target: name.clone(),
        certificate: name,
        version: version.version,
        out: opts.out.clone(),
        format: match format {
            ExportFormat::Pem => "pem",
            ExportFormat::Pfx => "pfx",
        },
        includes_key: wants_key,
        certificates: chain.len(),
        note: None,
    })
}

/// The export format when none is asked for: what the policy's `secret_props.contentType` says
/// (PFX for `application/x-pkcs12`, PEM otherwise and without a policy). `--with-key` adds the
/// key to a PEM export, so it means PEM; and a version whose key may not leave the vault gives
/// its public certificate as PEM, as Key Vault still gives the CER of a non-exportable one.
pub fn default_format(
    policy: Option<&serde_json::Value>,
    version: &crate::backend::types::VaultVersion,
    with_key: bool,
) -> crate::ops::ExportFormat {
    let pfx = policy.and_then(|p| p["secret_props"]["contentType"].as_str()) == Some("application/x-pkcs12");
    let key_leaves = version.exportable && !version.kty.ends_with("-HSM");
    if pfx && !with_key && key_leaves {
        crate::ops::ExportFormat::Pfx
    } else {
        crate::ops::ExportFormat::Pem
    }
}
