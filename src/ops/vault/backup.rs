//! `vault backup` / `vault restore`: one file that carries a certificate with all its versions
//! (certificates, keys, attributes, tags, stored chains), its policy and its tags, and restores it byte for byte
//! (same version ids) into this or another store.
//!
//! The file is JSON: a clear header (format, name, KDF parameters) and the contents encrypted
//! with AES-256-GCM under a key derived from a password by PBKDF2-HMAC-SHA256 (600,000
//! iterations, 16-byte random salt); the header is the associated data, so it cannot be altered
//! either. Exportable keys travel inside that encryption and restore into a store with any store
//! key. A non-exportable (HSM) key travels still sealed under the store key, so nobody holding
//! the file and the password sees it in clear, and it restores only into a store that uses the
//! same store key (Key Vault: HSM backups restore only inside the same security domain).

use super::not_live;
use super::resolve_name;
use crate::backend::types::*;
use crate::error::input;
use crate::ops::{Access, BackendSettings, open_verb_backend};
use crate::plan::Plan;
use anyhow::{Context as _, Result};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::path::Path;
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

/// The `format` field of a backup file.
pub const FORMAT: &str = "certroll-vault-backup";
/// PBKDF2 iterations for new backups (OWASP's figure for PBKDF2-HMAC-SHA256).
pub const ITERATIONS: u32 = 600_000;
/// The most iterations a backup may ask for (so a crafted file cannot stall restore).
const MAX_ITERATIONS: u32 = 10_000_000;

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    version: u32,
    name: String,
    kdf: Kdf,
    cipher: String,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize, Clone)]
struct Kdf {
    algorithm: String,
    iterations: u32,
    salt: String,
}

/// Hex text of a clear key, wiped when dropped.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct SecretHex(String);

impl Drop for SecretHex {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeyDoc {
    /// PKCS#8 DER, hex.
    Pkcs8(SecretHex),
    /// Sealed under the store key, hex.
    Sealed(String),
}

#[derive(Serialize, Deserialize)]
struct VersionDoc {
    version: String,
    cert: String,
    key: KeyDoc,
    kty: String,
    exportable: bool,
    enabled: bool,
    nbf: i64,
    exp: i64,
    created: i64,
    updated: i64,
    tags: Tags,
    issuer: Option<(String, String)>,
    #[serde(default)]
    chain: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct CertificateDoc {
    name: String,
    policy: String,
    tags: Tags,
    created: i64,
    updated: i64,
    versions: Vec<VersionDoc>,
}

/// What `vault backup` and `vault restore` did.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    /// The certificate.
    pub name: String,
    /// The file written or read.
    pub file: std::path::PathBuf,
    /// Its versions, oldest first.
    pub versions: Vec<String>,
    /// Versions whose key is non-exportable (restorable only with the same store key).
    pub sealed_keys: Vec<String>,
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn derive_key(password: &str, salt: &[u8], iterations: u32) -> Result<LessSafeKey> {
    let iterations = NonZeroU32::new(iterations).context("zero PBKDF2 iterations")?;
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        key.as_mut(),
    );
    let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| anyhow::anyhow!("AES key"))?;
    Ok(LessSafeKey::new(unbound))
}

/// The associated data: the header, so that name and KDF parameters cannot be swapped.
fn aad(name: &str, kdf: &Kdf) -> String {
    format!(
        "{FORMAT}/1/{name}/{}/{}/{}",
        kdf.algorithm, kdf.iterations, kdf.salt
    )
}

fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(input("the backup password is empty"));
    }
    Ok(())
}

/// `vault backup`: writes `name` with everything it has to `out` (created 0600).
pub fn backup(
    plan: &Plan,
    name: &str,
    out: &Path,
    password: &str,
    settings: &BackendSettings,
) -> Result<BackupReport> {
    let name = resolve_name(name)?;
    check_password(password)?;
    let protected = crate::ops::outfile::Protected::of(plan, settings);
    protected.check(out)?;
    let backend = open_verb_backend(plan, "vault backup", Access::Read, settings)?;
    let (text, mut report) = backup_bytes(&*backend, &name, password)?;
    protected.write(out, &text, true)?;
    report.file = out.to_path_buf();
    Ok(report)
}

/// `vault backup` on an open backend: the backup document's bytes (the report's `file` is
/// empty). Serve's Key Vault backup hands these out as its opaque blob.
pub fn backup_bytes(
    backend: &dyn crate::backend::Backend,
    name: &str,
    password: &str,
) -> Result<(Vec<u8>, BackupReport)> {
    let name = name.to_string();
    check_password(password)?;
    let b = backend
        .backup_certificate(&name)?
        .ok_or_else(|| not_live(backend, &name))?;
    let mut sealed_keys = Vec::new();
    let doc = CertificateDoc {
        name: b.name.clone(),
        policy: b.policy_json.clone(),
        tags: b.tags.clone(),
        created: b.created.unix_timestamp(),
        updated: b.updated.unix_timestamp(),
        versions: b
            .versions
            .iter()
            .map(|v| VersionDoc {
                version: v.version.version.clone(),
                cert: crate::pki::hex_upper(&v.version.cert_der),
                key: match &v.key {
                    BackupKey::Plain(der) => KeyDoc::Pkcs8(SecretHex(crate::pki::hex_upper(der))),
                    BackupKey::Sealed(sealed) => {
                        sealed_keys.push(v.version.version.clone());
                        KeyDoc::Sealed(crate::pki::hex_upper(sealed))
                    }
                },
                kty: v.version.kty.clone(),
                exportable: v.version.exportable,
                enabled: v.version.enabled,
                nbf: v.version.nbf.unix_timestamp(),
                exp: v.version.exp.unix_timestamp(),
                created: v.version.created.unix_timestamp(),
                updated: v.updated.unix_timestamp(),
                tags: v.tags.clone(),
                issuer: v.version.issuer.clone(),
                chain: v.chain.iter().map(|c| crate::pki::hex_upper(c)).collect(),
            })
            .collect(),
    };
    let mut plain = Zeroizing::new(serde_json::to_vec(&doc)?);
    drop(doc);
    let mut salt = [0u8; 16];
    crate::pki::random_bytes(&mut salt)?;
    let mut nonce = [0u8; NONCE_LEN];
    crate::pki::random_bytes(&mut nonce)?;
    let kdf = Kdf {
        algorithm: "PBKDF2-HMAC-SHA256".into(),
        iterations: ITERATIONS,
        salt: crate::pki::hex_upper(&salt),
    };
    let key = derive_key(password, &salt, ITERATIONS)?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(&name, &kdf).as_bytes()),
        &mut *plain,
    )
    .map_err(|_| anyhow::anyhow!("encrypting the backup failed"))?;
    let envelope = Envelope {
        format: FORMAT.into(),
        version: 1,
        name: name.clone(),
        kdf,
        cipher: "AES-256-GCM".into(),
        nonce: crate::pki::hex_upper(&nonce),
        ciphertext: crate::pki::hex_upper(&plain),
    };
    let text = serde_json::to_vec_pretty(&envelope)?;
    Ok((
        text,
        BackupReport {
            name,
            file: Default::default(),
            versions: b.versions.iter().map(|v| v.version.version.clone()).collect(),
            sealed_keys,
        },
    ))
}

fn not_a_backup(file: &str, why: &str) -> anyhow::Error {
    input(format!("{file} is not a certroll vault backup: {why}"))
}

/// Decrypts a backup document (`file` names it in messages).
fn open_bytes(text: &[u8], password: &str, file: &str) -> Result<CertificateDoc> {
    let env: Envelope = serde_json::from_slice(text).map_err(|e| not_a_backup(file, &e.to_string()))?;
    if env.format != FORMAT || env.version != 1 {
        return Err(not_a_backup(
            file,
            &format!("format `{}` version {}", env.format, env.version),
        ));
    }
    if env.kdf.algorithm != "PBKDF2-HMAC-SHA256" || env.cipher != "AES-256-GCM" {
        return Err(not_a_backup(file, "unknown KDF or cipher"));
    }
    if !(ITERATIONS..=MAX_ITERATIONS).contains(&env.kdf.iterations) {
        return Err(not_a_backup(
            file,
            &format!("{} PBKDF2 iterations", env.kdf.iterations),
        ));
    }
    let salt = hex_decode(&env.kdf.salt).ok_or_else(|| not_a_backup(file, "bad salt"))?;
    let nonce = hex_decode(&env.nonce).ok_or_else(|| not_a_backup(file, "bad nonce"))?;
    let nonce = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| not_a_backup(file, "bad nonce"))?;
    let mut buf =
        Zeroizing::new(hex_decode(&env.ciphertext).ok_or_else(|| not_a_backup(file, "bad ciphertext"))?);
    let key = derive_key(password, &salt, env.kdf.iterations)?;
    let plain_len = key
        .open_in_place(
            nonce,
            Aad::from(aad(&env.name, &env.kdf).as_bytes()),
            buf.as_mut_slice(),
        )
        .map_err(|_| {
            input(format!(
                "cannot decrypt {file}: wrong password, or the file was altered"
            ))
        })?
        .len();
    buf.truncate(plain_len);
    let doc: CertificateDoc = serde_json::from_slice(&buf).map_err(|e| not_a_backup(file, &e.to_string()))?;
    if doc.name != env.name {
        return Err(not_a_backup(file, "the name inside differs from the header"));
    }
    Ok(doc)
}

fn ts(secs: i64, file: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| not_a_backup(file, "bad time"))
}

/// `vault restore`: puts a backed-up certificate back under its name, which must be free (not
/// live, deleted or pending).
pub fn restore(plan: &Plan, file: &Path, password: &str, settings: &BackendSettings) -> Result<BackupReport> {
    check_password(password)?;
    let text = crate::fsutil::read_bounded(file, crate::fsutil::MAX_INPUT_FILE)
        .map_err(|e| input(format!("cannot read {}: {e}", file.display())))?;
    let shown = file.display().to_string();
    // Decrypted and checked before the store is opened for writing.
    open_bytes(&text, password, &shown)?;
    let mut backend = open_verb_backend(plan, "vault restore", Access::Write, settings)?;
    let mut report = restore_in(&mut *backend, &text, password, &shown)?;
    report.file = file.to_path_buf();
    Ok(report)
}

/// `vault restore` on an open backend, from a backup document's bytes (`file` names it in
/// messages; the report's `file` is empty).
pub fn restore_in(
    backend: &mut dyn crate::backend::Backend,
    text: &[u8],
    password: &str,
    file: &str,
) -> Result<BackupReport> {
    check_password(password)?;
    let doc = open_bytes(text, password, file)?;
    super::check_new_name("certificate", &doc.name)?;
    let mut versions = Vec::with_capacity(doc.versions.len());
    let mut sealed_keys = Vec::new();
    for v in &doc.versions {
        let cert_der = hex_decode(&v.cert).ok_or_else(|| not_a_backup(file, "bad certificate"))?;
        let key = match &v.key {
            KeyDoc::Pkcs8(hex) => BackupKey::Plain(Zeroizing::new(
                hex_decode(&hex.0).ok_or_else(|| not_a_backup(file, "bad key"))?,
            )),
            KeyDoc::Sealed(hex) => {
                sealed_keys.push(v.version.clone());
                BackupKey::Sealed(hex_decode(hex).ok_or_else(|| not_a_backup(file, "bad key"))?)
            }
        };
        versions.push(VersionBackup {
            version: VaultVersion {
                name: doc.name.clone(),
                version: v.version.clone(),
                cert_der,
                kty: v.kty.clone(),
                // The file cannot make a key exportable: a key backed up sealed (non-exportable)
                // or of an HSM type stays non-exportable whatever the file says.
                exportable: v.exportable && matches!(v.key, KeyDoc::Pkcs8(_)) && !v.kty.ends_with("-HSM"),
                enabled: v.enabled,
                nbf: ts(v.nbf, file)?,
                exp: ts(v.exp, file)?,
                created: ts(v.created, file)?,
                issuer: v.issuer.clone(),
            },
            key,
            updated: ts(v.updated, file)?,
            tags: v.tags.clone(),
            chain: v
                .chain
                .iter()
                .map(|c| hex_decode(c).ok_or_else(|| not_a_backup(file, "bad chain")))
                .collect::<Result<_>>()?,
        });
    }
    let backup = CertificateBackup {
        name: doc.name.clone(),
        policy_json: doc.policy.clone(),
        tags: doc.tags.clone(),
        created: ts(doc.created, file)?,
        updated: ts(doc.updated, file)?,
        versions,
    };
    if let Some(state) = backend.name_state(&doc.name)? {
        return Err(input(format!(
            "the vault already has a {state} certificate `{}`; restore never overwrites one{}",
            doc.name,
            match state {
                "deleted" => " (purge it first, or recover it instead)",
                _ => " (delete and purge it first)",
            }
        )));
    }
    backend.restore_certificate(&backup).map_err(|e| match e {
        crate::backend::BackendError::Refused(msg) => input(msg),
        other => other.into(),
    })?;
    Ok(BackupReport {
        name: doc.name.clone(),
        file: Default::default(),
        versions: doc.versions.iter().map(|v| v.version.clone()).collect(),
        sealed_keys,
    })
}
