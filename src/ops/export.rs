//! `export`: writes a certificate with its chain (and, when allowed, its key) as PEM or PFX.
//!
//! Refuses, with an input error, a disabled version, a version outside its validity window at
//! `now`, and any key the policy marks non-exportable (HSM keys never are).

use super::{
    Access, BackendSettings, Target, ca_cert_name, chain_above, device_cert_name, open_verb_backend,
};
use crate::backend::types::VaultVersion;
use crate::error::input;
use crate::plan::Plan;
use anyhow::Result;
use serde::Serialize;
use std::path::PathBuf;
use time::OffsetDateTime;

/// Output format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The certificate, then its chain up to (not including) the root; with `--with-key`, the key.
    Pem,
    /// PKCS#12 with key and chain (AES-256, HMAC-SHA256).
    Pfx,
}

/// Options of `export`.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// What to export: `ca:NAME`, `device:ID` or `enrollment:NAME`.
    pub target: Target,
    /// PEM or PFX; `None`: see [`super::vault::transfer::default_format`].
    pub format: Option<ExportFormat>,
    /// Where to write.
    pub out: PathBuf,
    /// Add the private key to a PEM export.
    pub with_key: bool,
    /// Export the CA's CRL instead of its certificate (PEM).
    pub crl: bool,
    /// The PFX password (already read from the environment variable).
    pub password: Option<zeroize::Zeroizing<String>>,
    /// How to open the backend.
    pub backend: BackendSettings,
}

/// What `export` wrote.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    /// The target.
    pub target: String,
    /// The vault certificate and version exported.
    pub certificate: String,
    /// The version.
    pub version: String,
    /// The file written.
    pub out: PathBuf,
    /// pem or pfx.
    pub format: &'static str,
    /// Whether the private key is in the file.
    pub includes_key: bool,
    /// How many certificates the file holds.
    pub certificates: usize,
    /// When the plan's policy now asks for another `content_type` than the one the exported
    /// version was made under: Key Vault keeps each version's content type (a policy's applies
    /// from the next version on), so the file follows the version, and this says so.
    pub note: Option<String>,
}

/// Refuses (exit 2) a version that may not leave the vault: disabled, outside its validity at
/// `now`, or, when its key is wanted, a key its policy keeps in (an HSM key never leaves,
/// whatever its flag says). `what` names it in the message.
pub fn may_export(what: &str, version: &VaultVersion, wants_key: bool, now: OffsetDateTime) -> Result<()> {
    if !version.enabled {
        return Err(input(format!(
            "{what} version {} is disabled and cannot be exported",
            version.version
        )));
    }
    if now < version.nbf || now > version.exp {
        return Err(input(format!(
            "{what} version {} is valid only from {} to {}; it cannot be exported at {}",
            version.version,
            crate::clock::rfc3339(version.nbf),
            crate::clock::rfc3339(version.exp),
            crate::clock::rfc3339(now)
        )));
    }
    if wants_key && (!version.exportable || version.kty.ends_with("-HSM")) {
        // The version's own flag, set when its key was made, decides, not the plan's policy
        // now: a policy made exportable later does not open a key made sealed.
        let how = if version.kty.ends_with("-HSM") {
            format!("in an HSM ({})", version.kty)
        } else {
            format!("non-exportable ({})", version.kty)
        };
        return Err(input(format!(
            "the private key of {what} is not exportable: it was created {how} and stays so \
             for its whole life, whatever its policy says now; export the certificate alone \
             (without --with-key, as PEM)"
        )));
    }
    Ok(())
}

/// Refuses (exit 2, before anything is written) an export whose format was not asked for
/// (`--format`) but follows the version's content type, when the name of `out` says the other
/// format: a `.pfx`/`.p12` file holding PEM text (or a `.pem`/`.crt`/`.cer`/`.key` file holding
/// PKCS#12) fails later in whatever reads it, by its name, with no word of why.
pub fn refuse_misnamed(out: &std::path::Path, format: ExportFormat, asked: bool, why: &str) -> Result<()> {
    if asked {
        return Ok(());
    }
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let (named, flag) = match (ext.as_str(), format) {
        ("pfx" | "p12", ExportFormat::Pem) => ("PKCS#12", "--format pfx --password-env VAR"),
        ("pem" | "crt" | "cer" | "key", ExportFormat::Pfx) => ("PEM", "--format pem"),
        _ => return Ok(()),
    };
    let (is, other) = match format {
        ExportFormat::Pem => ("PEM", "pem"),
        ExportFormat::Pfx => ("PKCS#12", "pfx"),
    };
    Err(input(format!(
        "--out {} names a {named} file, but this export is {is} ({why}); pass {flag} to write what the \
         name says, or give the file a .{other} name. Nothing was written",
        out.display()
    )))
}

/// Runs `export`.
pub fn export(plan: &Plan, opts: &ExportOptions, now: OffsetDateTime) -> Result<ExportReport> {
    opts.target.check(plan)?;
    // Before anything is read or numbered: an output may never land on the state.
    let protected = super::outfile::Protected::of(plan, &opts.backend);
    protected.check(&opts.out)?;
    let name = match &opts.target {
        Target::Ca(n) => ca_cert_name(n),
        Target::Device(id) | Target::Enrollment(id) => device_cert_name(id),
        Target::Group(g) => {
            return Err(input(format!(
                "export takes ca:NAME, device:ID or enrollment:NAME; for group `{g}` export its signing CA (ca:{})",
                plan.groups[g].signing_ca
            )));
        }
    };
    let backend = open_verb_backend(plan, "export", Access::Read, &opts.backend)?;
    if opts.crl {
        let Target::Ca(_) = &opts.target else {
            return Err(input(format!(
                "--crl exports the CRL of a CA: ca:NAME, not {}",
                opts.target
            )));
        };
        if opts.format == Some(ExportFormat::Pfx) || opts.with_key {
            return Err(input(
                "--crl writes PEM; it takes neither --format pfx nor --with-key",
            ));
        }
        // One CRL per CA version still in use, newest first: each lists what that version
        // signed and is signed by its key, so `openssl verify -crl_check` finds the right one
        // for old and new leaves alike.
        drop(backend);
        let mut backend = open_verb_backend(plan, "export", Access::Modify, &opts.backend)?;
        let versions = backend.versions(&name)?;
        let usable: Vec<_> = versions
            .iter()
            .rev()
            .filter(|v| v.enabled && v.exp > now)
            .cloned()
            .collect();
        if usable.is_empty() {
            return Err(input(format!(
                "{}: no enabled, unexpired version left to sign a CRL",
                opts.target
            )));
        }
        let mut text = String::new();
        let mut numbers = Vec::new();
        let mut revoked = 0;
        crate::backend::in_one_unit(&mut *backend, |b| {
            for v in &usable {
                let crl = super::revoke::crl_der(b, v, now)?;
                text.push_str(&crate::pki::pem::encode("X509 CRL", &crl.der));
                numbers.push(crl.number.to_string());
                revoked += crl.revoked;
            }
            anyhow::Ok(())
        })?;
        protected.write(&opts.out, text.as_bytes(), false)?;
        return Ok(ExportReport {
            target: opts.target.to_string(),
            certificate: format!(
                "CRL(s) of {} CA version(s) (CRL number {}) listing {revoked} revoked certificate(s)",
                usable.len(),
                numbers.join(", ")
            ),
            version: String::new(),
            out: opts.out.clone(),
            format: "crl",
            includes_key: false,
            certificates: 0,
            note: None,
        });
    }
    let version = backend
        .current(&name)?
        .ok_or_else(|| match backend.name_state(&name) {
            Ok(Some(_)) => super::vault::not_live(&*backend, &name),
            _ => match super::vault::purged_note(&*backend, &name) {
                Some(note) => input(format!(
                    "{}: its certificate `{name}` is gone: {note}",
                    opts.target
                )),
                None => input(format!(
                    "{} has not been issued yet (run `certroll issue {}`)",
                    opts.target, opts.target
                )),
            },
        })?;
    let vault_policy = backend.policy(&name)?;
    let format = match opts.format {
        Some(f) => f,
        None => super::vault::transfer::default_format(vault_policy.as_ref(), &version, opts.with_key),
    };
    // The plan's policy edited since the current version was made (issue 10 item 8's kind): as
    // in Key Vault, the version keeps the content type it was made with.
    let word = match format {
        ExportFormat::Pem => "pem",
        ExportFormat::Pfx => "pfx",
    };
    let note = match (
        opts.format,
        content_type_change(plan, &opts.target, vault_policy.as_ref()),
    ) {
        (None, Some((policy, now_says, made_as))) if word != now_says => Some(format!(
            "the plan's policy `{policy}` now says content_type = \"{now_says}\", but the current version \
             {} was made under \"{made_as}\": Key Vault keeps each version's content type, and a policy's applies \
             from the next version (the next roll), so this export follows the version; --format {now_says} asks for \
             {now_says} now",
            version.version
        )),
        _ => None,
    };
    let why = match (&note, format) {
        (Some(_), _) => format!(
            "the version {} was made under content_type \"{word}\"",
            version.version
        ),
        (None, ExportFormat::Pfx) => "the policy's content_type is pfx".to_string(),
        (None, ExportFormat::Pem) if opts.with_key => "--with-key writes PEM".to_string(),
        (None, ExportFormat::Pem) => {
            "the policy's content_type, or a key that stays in the vault".to_string()
        }
    };
    refuse_misnamed(&opts.out, format, opts.format.is_some(), &why)?;
    let wants_key = opts.with_key || format == ExportFormat::Pfx;
    may_export(&opts.target.to_string(), &version, wants_key, now)?;
    let mut chain = vec![version.cert_der.clone()];
    let above = issuers_above(&*backend, &version)?;
    // Up to, not including, the root (a chain may end below one the vault does not hold).
    let root = match above.last() {
        Some(last) => crate::ops::vault::transfer::is_self_signed(last)?,
        None => false,
    };
    let keep = above.len() - usize::from(root);
    chain.extend(above.iter().take(keep).cloned());

    let bytes: zeroize::Zeroizing<Vec<u8>> = match format {
        ExportFormat::Pem => {
            let mut text = zeroize::Zeroizing::new(String::new());
            for der in &chain {
                text.push_str(&crate::pki::pem::cert_to_pem(der));
            }
            if opts.with_key {
                let key = backend.private_key(&version)?;
                text.push_str(&crate::pki::pem::key_to_pem(key.pkcs8_der()));
            }
            zeroize::Zeroizing::new(text.as_bytes().to_vec())
        }
        ExportFormat::Pfx => {
            let password = opts.password.as_ref().ok_or_else(|| match &note {
                Some(note) => input(format!(
                    "{} is exported as pfx: {note}; a pfx export needs a password (--password-env VAR), or pass \
                     --format pem",
                    opts.target
                )),
                None => input(format!(
                    "the policy of {} asks for pfx (content_type): a pfx export needs a password \
                     (--password-env VAR), or pass --format pem",
                    opts.target
                )),
            })?;
            let key = backend.private_key(&version)?;
            // Carry the whole chain, root included, so the PFX is self-contained.
            let mut full = vec![version.cert_der.clone()];
            full.extend(above);
            chain = full;
            zeroize::Zeroizing::new(crate::pki::pkcs12::write_pfx(
                &name,
                key.pkcs8_der(),
                &chain,
                password,
            )?)
        }
    };
    protected.write(&opts.out, &bytes, wants_key)?;
    Ok(ExportReport {
        target: opts.target.to_string(),
        certificate: name,
        version: version.version.clone(),
        out: opts.out.clone(),
        format: match format {
            ExportFormat::Pem => "pem",
            ExportFormat::Pfx => "pfx",
        },
        includes_key: wants_key,
        certificates: chain.len(),
        note,
    })
}

/// When the plan's policy for `target` asks for another content type than the vault's policy
/// records (the one its current version was made under): (the plan policy's name, what it says
/// now, what the version was made as).
fn content_type_change(
    plan: &Plan,
    target: &Target,
    vault_policy: Option<&serde_json::Value>,
) -> Option<(String, &'static str, &'static str)> {
    let policy = match target {
        Target::Ca(n) => plan.cas.iter().find(|c| &c.name == n).map(|c| &c.policy)?,
        Target::Device(id) | Target::Enrollment(id) => match super::device_owner(plan, id)? {
            super::DeviceOwner::Group(g) => &g.device_policy,
            super::DeviceOwner::Enrollment(e) => &e.policy,
        },
        Target::Group(_) => return None,
    };
    let now_says = match plan.policies.get(policy)?.content_type {
        crate::plan::ContentType::Pem => "pem",
        crate::plan::ContentType::Pfx => "pfx",
    };
    let made_as = match vault_policy?["secret_props"]["contentType"].as_str()? {
        "application/x-pkcs12" => "pfx",
        _ => "pem",
    };
    (now_says != made_as).then(|| (policy.clone(), now_says, made_as))
}

/// The issuers above a version in path order: the vault's own walk, continued where it ends at
/// a CA merged or imported from outside (no recorded issuer, not self-signed) by that CA's
/// stored chain, put in path order (issue 10 item 11).
fn issuers_above(backend: &dyn crate::backend::Backend, version: &VaultVersion) -> Result<Vec<Vec<u8>>> {
    let mut above = chain_above(backend, version)?;
    let mut top = None;
    let mut next = version.issuer.clone();
    // chain_above refuses chains longer than 16; this walk is the same one.
    for _ in 0..=16 {
        let Some((name, ver)) = next else { break };
        let Some(v) = backend.version(&name, &ver)? else {
            break;
        };
        next = v.issuer.clone();
        top = Some(v);
    }
    if let Some(top) = top
        && top.issuer.is_none()
        && !crate::ops::vault::transfer::is_self_signed(&top.cert_der)?
    {
        above.extend(crate::pki::inspect::issuer_path(
            &top.cert_der,
            &backend.stored_chain(&top.name, &top.version)?,
        ));
    }
    Ok(above)
}
