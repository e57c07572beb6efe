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
    let name = resolve_name(plan, name)?;
    check_password(password)?;
    let protected = crate::ops::outfile::Protected::of(plan, settings);
    protected.check(out)?;
    let backend = open_verb_backend(plan, "vault", Access::Read, settings)?;
    let (text, mut report) = match backup_blob(&*backend, &name, password)? {
        Some(done) => done,
        None => backup_bytes(&*backend, &name, password)?,
    };
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
    let plain = Zeroizing::new(serde_json::to_vec(&doc)?);
    drop(doc);
    let text = seal(&name, plain, password)?;
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

/// Encrypts a backup's contents under `password` into the envelope's bytes.
fn seal(name: &str, mut plain: Zeroizing<Vec<u8>>, password: &str) -> Result<Vec<u8>> {
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
        Aad::from(aad(name, &kdf).as_bytes()),
        &mut *plain,
    )
    .map_err(|_| anyhow::anyhow!("encrypting the backup failed"))?;
    let envelope = Envelope {
        format: FORMAT.into(),
        version: 1,
        name: name.to_string(),
        kdf,
        cipher: "AES-256-GCM".into(),
        nonce: crate::pki::hex_upper(&nonce),
        ciphertext: crate::pki::hex_upper(&plain),
    };
    Ok(serde_json::to_vec_pretty(&envelope)?)
}

/// The contents of a backup of a vault that backs up by itself (Key Vault's opaque blob, which
/// only Key Vault restores), in the same encrypted envelope as certroll's own backups.
#[derive(Serialize, Deserialize)]
struct BlobDoc {
    name: String,
    /// The vault's blob, base64.
    keyvault_backup: String,
    /// The versions it held when it was made, oldest first.
    versions: Vec<String>,
}

/// `vault backup` of a vault that backs up by itself: its blob, sealed as any backup.
fn backup_blob(
    backend: &dyn crate::backend::Backend,
    name: &str,
    password: &str,
) -> Result<Option<(Vec<u8>, BackupReport)>> {
    check_password(password)?;
    let Some(blob) = backend.backup_blob(name)? else {
        return Ok(None);
    };
    let versions: Vec<String> = backend.versions(name)?.into_iter().map(|v| v.version).collect();
    let doc = BlobDoc {
        name: name.to_string(),
        keyvault_backup: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &blob),
        versions: versions.clone(),
    };
    let text = seal(name, Zeroizing::new(serde_json::to_vec(&doc)?), password)?;
    Ok(Some((
        text,
        BackupReport {
            name: name.to_string(),
            file: Default::default(),
            versions,
            sealed_keys: Vec::new(),
        },
    )))
}

fn not_a_backup(shown: &str, why: &str) -> anyhow::Error {
    input(format!("{shown} is not a certroll vault backup: {why}"))
}

/// A backup file whose header has been read and checked, its contents still encrypted.
pub struct SealedBackup {
    env: Envelope,
    salt: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

/// Reads the clear header of a backup file (format, name, KDF, cipher, nonce, ciphertext)
/// without deriving a key. `shown` names the file in errors, which are input errors (exit 2).
pub fn parse_envelope(shown: &str, bytes: &[u8]) -> Result<SealedBackup> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| {
        // serde's words (`expected struct Envelope`, `EOF while parsing a string`) say nothing
        // to a reader: say what the file looks like instead.
        let why = if e.is_eof() {
            "it ends part-way (truncated or still being copied)".to_string()
        } else if bytes
            .first()
            .is_some_and(|b| *b != b'{' && !b.is_ascii_whitespace())
        {
            "it is not a JSON backup file (a PEM or PKCS#12 file is imported with `vault import`)".to_string()
        } else {
            format!(
                "its header is not a backup header (line {}, column {})",
                e.line(),
                e.column()
            )
        };
        not_a_backup(shown, &why)
    })?;
    if env.format != FORMAT || env.version != 1 {
        return Err(not_a_backup(
            shown,
            &format!("format `{}` version {}", env.format, env.version),
        ));
    }
    if env.kdf.algorithm != "PBKDF2-HMAC-SHA256" || env.cipher != "AES-256-GCM" {
        return Err(not_a_backup(shown, "unknown KDF or cipher"));
    }
    if !(ITERATIONS..=MAX_ITERATIONS).contains(&env.kdf.iterations) {
        return Err(not_a_backup(
            shown,
            &format!("{} PBKDF2 iterations", env.kdf.iterations),
        ));
    }
    let salt = hex_decode(&env.kdf.salt).ok_or_else(|| not_a_backup(shown, "bad salt"))?;
    let nonce = hex_decode(&env.nonce)
        .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
        .ok_or_else(|| not_a_backup(shown, "bad nonce"))?;
    let ciphertext = hex_decode(&env.ciphertext).ok_or_else(|| not_a_backup(shown, "bad ciphertext"))?;
    Ok(SealedBackup {
        env,
        salt,
        nonce,
        ciphertext,
    })
}

impl SealedBackup {
    /// The PBKDF2 salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The PBKDF2 iteration count (checked to lie in 600,000..=10,000,000).
    pub fn iterations(&self) -> u32 {
        self.env.kdf.iterations
    }

    /// Derives the AES-256-GCM key from `password` (PBKDF2-HMAC-SHA256 over the file's salt and
    /// iterations: a fraction of a second by design).
    pub fn derive_key(&self, password: &str) -> Result<LessSafeKey> {
        derive_key(password, &self.salt, self.env.kdf.iterations)
    }

    /// Decrypts the contents with `key` (from [`SealedBackup::derive_key`]) and reads them.
    pub fn open(&self, shown: &str, key: &LessSafeKey) -> Result<CertificateBackup> {
        let plain = self.open_plain(shown, key)?;
        parse_contents(shown, &self.env.name, &plain)
    }

    /// Decrypts the contents with `key`.
    fn open_plain(&self, shown: &str, key: &LessSafeKey) -> Result<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(aad(&self.env.name, &self.env.kdf).as_bytes()),
                buf.as_mut_slice(),
            )
            .map_err(|_| {
                input(format!(
                    "cannot decrypt {shown}: wrong password, or the file was altered"
                ))
            })?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

fn ts(secs: i64, shown: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| not_a_backup(shown, "bad time"))
}

/// Reads the decrypted contents of a backup whose header names `name`: the certificate, its
/// policy and tags, and every version with its key (clear PKCS#8 or still sealed), as
/// [`crate::backend::Vault::restore_certificate`] takes them. Touches nothing.
pub fn parse_contents(shown: &str, name: &str, plain: &[u8]) -> Result<CertificateBackup> {
    let doc: CertificateDoc =
        serde_json::from_slice(plain).map_err(|e| not_a_backup(shown, &e.to_string()))?;
    if doc.name != name {
        return Err(not_a_backup(shown, "the name inside differs from the header"));
    }
    let mut versions = Vec::with_capacity(doc.versions.len());
    for v in &doc.versions {
        let cert_der = hex_decode(&v.cert).ok_or_else(|| not_a_backup(shown, "bad certificate"))?;
        let key = match &v.key {
            KeyDoc::Pkcs8(hex) => BackupKey::Plain(Zeroizing::new(
                hex_decode(&hex.0).ok_or_else(|| not_a_backup(shown, "bad key"))?,
            )),
            KeyDoc::Sealed(hex) => {
                BackupKey::Sealed(hex_decode(hex).ok_or_else(|| not_a_backup(shown, "bad key"))?)
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
                nbf: ts(v.nbf, shown)?,
                exp: ts(v.exp, shown)?,
                created: ts(v.created, shown)?,
                issuer: v.issuer.clone(),
            },
            key,
            updated: ts(v.updated, shown)?,
            tags: v.tags.clone(),
            chain: v
                .chain
                .iter()
                .map(|c| hex_decode(c).ok_or_else(|| not_a_backup(shown, "bad chain")))
                .collect::<Result<_>>()?,
        });
    }
    Ok(CertificateBackup {
        name: doc.name.clone(),
        policy_json: doc.policy.clone(),
        tags: doc.tags.clone(),
        created: ts(doc.created, shown)?,
        updated: ts(doc.updated, shown)?,
        versions,
    })
}

/// What a backup file holds.
enum Opened {
    /// certroll's own backup of a local store.
    Certroll(CertificateBackup),
    /// A vault's own blob (Key Vault's).
    Blob(BlobDoc),
}

/// Decrypts and reads a backup document's bytes (`shown` names it in messages). Touches nothing.
fn open_bytes(bytes: &[u8], password: &str, shown: &str) -> Result<Opened> {
    check_password(password)?;
    let sealed = parse_envelope(shown, bytes)?;
    let plain = sealed.open_plain(shown, &sealed.derive_key(password)?)?;
    if let Ok(doc) = serde_json::from_slice::<BlobDoc>(&plain) {
        if doc.name != sealed.env.name {
            return Err(not_a_backup(shown, "the name inside differs from the header"));
        }
        return Ok(Opened::Blob(doc));
    }
    Ok(Opened::Certroll(parse_contents(shown, &sealed.env.name, &plain)?))
}

/// Restores a vault's own blob through the vault that made it.
/// The refusal of a restore over `name`, which the vault holds in `state` (live, deleted or
/// pending), with the way to free it: one text for certroll's backups and Key Vault's own (the
/// azure one lacked the way, trial az11 F6).
fn name_taken(state: &str, name: &str) -> anyhow::Error {
    input(format!(
        "the vault already has a {state} certificate `{name}`; restore never overwrites one{}",
        match state {
            "deleted" => " (purge it first, or recover it instead)",
            _ => " (delete and purge it first)",
        }
    ))
}

fn restore_blob(
    backend: &mut dyn crate::backend::Backend,
    doc: &BlobDoc,
    shown: &str,
) -> Result<BackupReport> {
    super::check_new_name("certificate", &doc.name)?;
    if let Some(state) = backend.name_state(&doc.name)? {
        return Err(name_taken(state, &doc.name));
    }
    let blob = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &doc.keyvault_backup)
        .map_err(|_| not_a_backup(shown, "bad Key Vault backup"))?;
    match backend.restore_blob(&blob)? {
        Some(_) => Ok(BackupReport {
            name: doc.name.clone(),
            file: Default::default(),
            versions: doc.versions.clone(),
            sealed_keys: Vec::new(),
        }),
        None => Err(input(format!(
            "{shown} holds Key Vault's own backup of `{}`, which restores only into Key Vault \
             (a plan with `[backend] kind = \"azure\"`)",
            doc.name
        ))),
    }
}

/// `vault restore`: puts a backed-up certificate back under its name, which must be free (not
/// live, deleted or pending).
pub fn restore(plan: &Plan, file: &Path, password: &str, settings: &BackendSettings) -> Result<BackupReport> {
    let shown = file.display().to_string();
    let bytes = crate::fsutil::read_bounded(file, crate::fsutil::MAX_INPUT_FILE)
        .map_err(|e| input(format!("cannot read {shown}: {e}")))?;
    // Decrypted and checked before the store is opened for writing.
    let backup = open_bytes(&bytes, password, &shown)?;
    let mut backend = open_verb_backend(plan, "vault", Access::Write, settings)?;
    let mut report = match &backup {
        Opened::Certroll(backup) => restore_backup(&mut *backend, backup)?,
        Opened::Blob(doc) => restore_blob(&mut *backend, doc, &shown)?,
    };
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
    match open_bytes(text, password, file)? {
        Opened::Certroll(backup) => restore_backup(backend, &backup),
        Opened::Blob(doc) => restore_blob(backend, &doc, file),
    }
}

fn restore_backup(
    backend: &mut dyn crate::backend::Backend,
    backup: &CertificateBackup,
) -> Result<BackupReport> {
    super::check_new_name("certificate", &backup.name)?;
    if let Some(state) = backend.name_state(&backup.name)? {
        return Err(name_taken(state, &backup.name));
    }
    backend.restore_certificate(backup).map_err(|e| match e {
        crate::backend::BackendError::Refused(msg) => input(msg),
        other => other.into(),
    })?;
    Ok(BackupReport {
        name: backup.name.clone(),
        file: Default::default(),
        versions: backup
            .versions
            .iter()
            .map(|v| v.version.version.clone())
            .collect(),
        sealed_keys: backup
            .versions
            .iter()
            .filter(|v| matches!(v.key, BackupKey::Sealed(_)))
            .map(|v| v.version.version.clone())
            .collect(),
    })
}
