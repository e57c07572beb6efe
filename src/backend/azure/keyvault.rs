//! [`AzureVault`]: the [`Vault`] trait over Key Vault, through the official Rust SDK clients for
//! certificates, keys (`sign`) and secrets (the exportable key of a version).
//!
//! How certroll's vault maps onto Key Vault:
//! - A version is a Key Vault certificate version. certroll builds certificates itself (rcgen) and
//!   imports each with its key and the name's policy (PEM or PFX, as the policy's content type
//!   says). The CA version that signed it is kept in the version's tag `certroll-issuer`
//!   (`NAME/VERSION`), hidden from [`Vault::tags`] and kept by [`Vault::set_tags`].
//! - A version made inside a journal step carries the step (`RUN/SEQ`) in the tag
//!   `certroll-step`, set with the import itself: a rerun of a step cut off between the import and
//!   the local commit finds it ([`Vault::versions_marked`]) and adopts it. Both tags are hidden
//!   from [`Vault::tags`] and kept by [`Vault::set_tags`].
//! - Key creations (create, import, restore) are paced at the plan's `vault_rate`
//!   ([`super::KeyCreationRate`]).
//! - A version's `kty` and `exportable` are the name's current policy's.
//! - A key that is not exportable never leaves the vault: [`AzureVault::private_key`] refuses it
//!   and [`Vault::signer`] gives a [`KeyVaultSigningKey`], an `rcgen::SigningKey` whose
//!   signatures the vault makes (keys client `sign`), so certroll builds the certificate (or CRL)
//!   and the vault signs it. An exportable CA key signs in certroll (one secret read, no request
//!   per signature).
//! - Such a key is also made by the vault ([`Vault::makes_own_keys`]): a new version of a CA whose
//!   key is not exportable is Key Vault's create with issuer `Unknown`, then certroll's
//!   certificate over the CSR's key merged with certroll's tags ([`Vault::merge_pending`]). Key
//!   Vault takes no HSM key by import. A pending request's key is disabled (Key Vault refuses
//!   `sign` with it: 403 `KeyDisabled`), so a root's key is first made by a self-signed create,
//!   its key holder ([`Vault::key_holder`], tagged `certroll-key-holder` and skipped by every
//!   listing); the `reuse_key` request then names that key, the holder's completed version
//!   signs the root, the holder is disabled ([`Vault::retire_key_holders`]) and the root merged,
//!   as Microsoft's Industrial-IoT `KeyVaultServiceClient.NewRootCertificateAsync` does.
//! - Stay in the local store beside the plan, because Key Vault has no place for them: CRL numbers
//!   and revocations (`revoke`, `revocations`, `next_crl_number`) and which devices hold a
//!   version (`certificate_users`).
//! - `vault create` and renewals go through Key Vault's own create operation
//!   ([`Vault::create_by_vault`]): the vault makes the key, and for issuer `Self` the version; for
//!   `Unknown` or an issuer object the request (its CSR) waits in Key Vault's pending operation
//!   until `vault merge` hands Key Vault the signed chain. The request's key never leaves the
//!   vault (`pending_key` refuses).
//! - `vault backup` and `vault restore` carry Key Vault's own opaque backup blob
//!   ([`Vault::backup_blob`]), which only Key Vault restores; certroll's backups of a local store
//!   restore only into a local store.
//! - A merged chain stays in the version's secret: no chain is stored beside a version.
//! - Deleted certificates list only their newest version (Key Vault does not list the versions of
//!   a deleted certificate).
//!
//! - What a process read is kept until certroll writes to the name ([`Kept`]; trial az4
//!   F-KV-READS: a breach of a 200-device group made ≈ 24 Key Vault requests per device): a
//!   CA's certificate (`ca-*`: its newest version, its versions, its policy), which within one
//!   run changes only through certroll; any version read by id or imported (a version's
//!   certificate never changes; its attributes change through certroll's writes); and the
//!   listing of a name's versions, so a run decides on one listing per device (its plan's)
//!   and finds a step's marked versions ([`Vault::versions_marked`]) in it: a version made by
//!   another client or by Key Vault itself in between is seen by the next run. Also kept: a
//!   name's key facts (`kty`, `exportable`) from the policy that comes with its newest version,
//!   so a version read by id costs no policy read; a device's newest version read by
//!   [`Vault::current`] (while fewer than `KEPT_NEWEST` names are kept), so `status` and
//!   `check` after a roll read only the version the device presented; and the exportable key of
//!   each version this process imported, so a hook delivery right after builds its PFX without
//!   reading the key back (issue 12 item 6). All dropped, as the rest, when certroll writes to
//!   the name.
//! - What certroll issued is recorded beside the fleet record (store table `issued_versions`,
//!   schema v15): the facts of each device certificate's version (its certificate, creation
//!   time, issuer, key facts), written in the unit that hands it out and filled in by a run that
//!   reads one the record lacks. A run asking for many device certificates' newest versions
//!   ([`Vault::current_many`]: `check`, `status`, `issue`) reads Key Vault's listing of
//!   certificates once instead (25 names a request, each with its newest version's thumbprint,
//!   dates and `enabled`) and takes a recorded version the listing shows newest from the
//!   record; it reads by GET only where the two disagree (another client made or replaced the
//!   newest version, a store of v14) or where certroll wrote since the listing. A vault holding
//!   far more certificates than the plan is not listed ([`AzureVault::listing_pays_for`]); the
//!   same listing serves [`Vault::names`] while certroll writes nothing.
//!
//! Every failure names the operation, the certificate and Key Vault's own status, error code and
//! message ([`BackendError::Remote`]).

use super::SetupError;
use crate::backend::local::LocalBackend;
use crate::backend::types::*;
use crate::backend::{BackendError, Created, Result, Vault};
use crate::pki::PrivateKey;
use crate::plan::AzureConfig;
use azure_core::http::{RequestContent, Response, StatusCode};
use azure_security_keyvault_certificates::models::{
    Certificate, CertificateAttributes, CertificateClientCreateCertificateOptions,
    CertificateClientGetCertificateOptions, CertificateClientListCertificatePropertiesOptions,
    CertificateClientUpdateCertificatePropertiesOptions, CertificateOperation, CertificatePolicy,
    CertificateProperties, Contact, Contacts, CreateCertificateParameters, ImportCertificateParameters,
    IssuerAttributes, IssuerCredentials, MergeCertificateParameters, RestoreCertificateParameters,
    SetIssuerParameters, UpdateCertificatePropertiesParameters,
};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::models::{KeyClientSignOptions, SignParameters, SignatureAlgorithm};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use time::OffsetDateTime;

/// The version tag that records the CA version that signed a version.
const ISSUER_TAG: &str = "certroll-issuer";

/// The version tag that records the journal step (`RUN/SEQ`) that made a version, so the rerun
/// of a step cut off before its local commit adopts it.
const STEP_TAG: &str = "certroll-step";

/// The version tag that marks a root's key holder ([`Vault::key_holder`]): a version Key Vault
/// made self-signed only so that its completed key can sign the root's certificate. Every
/// listing of versions skips it; it is disabled once the root is merged.
const KEY_HOLDER_TAG: &str = "certroll-key-holder";

/// certroll's own tags: hidden from [`Vault::tags`], kept by [`Vault::set_tags`].
const OWN_TAGS: [&str; 3] = [ISSUER_TAG, STEP_TAG, KEY_HOLDER_TAG];

/// Whether a version's tags mark it as a root's key holder ([`KEY_HOLDER_TAG`]).
fn is_key_holder(tags: Option<&HashMap<String, String>>) -> bool {
    tags.is_some_and(|t| t.contains_key(KEY_HOLDER_TAG))
}

/// Tests only: abort the process after this many versions were written to Key Vault, before
/// anything else (a kill between the remote write and the local commit).
pub const FAULT_AFTER_VAULT_WRITES_ENV: &str = "CERTROLL_FAULT_AFTER_VAULT_WRITES";

static VAULT_WRITES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn vault_write_fault_point() {
    let done = VAULT_WRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if let Some(limit) = std::env::var(FAULT_AFTER_VAULT_WRITES_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        && done == limit
    {
        eprintln!(
            "certroll: {FAULT_AFTER_VAULT_WRITES_ENV}={limit}: aborting after a Key Vault write (fault injection)"
        );
        std::process::abort();
    }
}

/// Key Vault as certroll's vault.
pub struct AzureVault {
    rt: tokio::runtime::Runtime,
    certs: Arc<CertificateClient>,
    keys: Arc<KeyClient>,
    secrets: Arc<SecretClient>,
    /// CRL numbers, revocations and the fleet record (see the module doc).
    local: LocalBackend,
    concurrency: usize,
    /// Key creations a second ([`super::KeyCreationRate`]): what the imports' time left is
    /// counted at, past the burst.
    creation_rate: f64,
    vault_url: String,
    /// The mark of the journal step running now (see [`Vault::mark_new_versions`]).
    marker: Option<String>,
    /// What this process read and keeps (see the module doc).
    kept: std::sync::Mutex<Kept>,
    /// Whether listings of versions are kept ([`AzureVault::without_kept_listings`]).
    keeps_listings: bool,
    /// The most certificates the listing of certificates is read for ([`AzureVault::listing_pays_for`]);
    /// 0: never.
    listing_budget: usize,
    /// The policies that pace every try (shared with the clients made by
    /// [`AzureVault::connect_sharing`]).
    pacing: VaultPacing,
}

/// What paces an [`AzureVault`]'s tries: its per-try [`super::pace::Pace`] (all requests) and
/// its [`super::KeyCreationRate`] (the requests that make a key).
#[derive(Clone)]
pub struct VaultPacing {
    pace: Arc<super::pace::Pace>,
    creations: Arc<super::KeyCreationRate>,
}

/// Key Vault's answers this process keeps, by name; a name's entries are dropped when certroll
/// writes to it ([`AzureVault::forget`]). `current`, `versions` and `policy` are kept for CA
/// names only.
#[derive(Default)]
struct Kept {
    /// [`Vault::current`] of a CA.
    current: HashMap<String, Option<VaultVersion>>,
    /// [`Vault::versions`] of a CA.
    versions: HashMap<String, Vec<VaultVersion>>,
    /// The policy of a CA (None: 404).
    policy: HashMap<String, Option<CertificatePolicy>>,
    /// [`Vault::version`] by name and version, and each version this process imported.
    version: HashMap<String, HashMap<String, VaultVersion>>,
    /// The listing of a name's versions.
    listed: HashMap<String, Vec<ListedVersion>>,
    /// `kty` and `exportable` of a name, from the policy Key Vault sent with its newest version
    /// or answered on its own: a version read by id needs no policy read of its own.
    key_facts: HashMap<String, (String, bool)>,
    /// The exportable keys (PKCS#8 DER) of the versions this process imported, by name and
    /// version: a delivery of a version just made builds its PFX without reading the key back
    /// (its secret) from the vault. Never holds a key that is not exportable.
    keys: HashMap<String, HashMap<String, zeroize::Zeroizing<Vec<u8>>>>,
    /// Key Vault's listing of certificates (each name's newest version), read at most once a
    /// process ([`AzureVault::newest_listed`]).
    newest: Option<NewestListing>,
    /// The listing was given up: the vault holds more certificates than it pays to list.
    newest_refused: bool,
    /// Every certificate name, as the last [`Vault::names_page`] from the start listed them
    /// where the listing of certificates above is not kept: the pages after it are cut from
    /// it, so paging through the vault lists it once, not once a page. Listed afresh by each
    /// paging from the start; dropped when certroll writes to any name.
    names: Option<Vec<String>>,
}

/// Key Vault's listing of certificates as read once: what it shows of each name's newest
/// version, which with the recorded facts of the version certroll issued (store table
/// `issued_versions`) tells whether that version is still the newest without reading it.
struct NewestListing {
    /// Name → its newest version as listed.
    by_name: HashMap<String, ListedNewest>,
    /// Every certificate name listed, sorted ([`Vault::names_page`]; a name whose only version is
    /// a root's key holder left out, see [`AzureVault::certificate_names`]).
    names: Vec<String>,
    /// Names certroll wrote to since the listing was read: it no longer tells of them.
    stale: std::collections::HashSet<String>,
}

/// A name's newest version as Key Vault's listing of certificates shows it.
struct ListedNewest {
    /// SHA-1, upper-case hex; None for a name whose first version waits for a merge.
    thumbprint: Option<String>,
    enabled: bool,
    nbf: Option<OffsetDateTime>,
    exp: Option<OffsetDateTime>,
    created: Option<OffsetDateTime>,
    /// A root's key holder ([`KEY_HOLDER_TAG`]): the name's newest other version is not shown.
    holder: bool,
}

/// What the listing of certificates and the recorded facts tell of a name's newest version.
enum Newest {
    /// The answer, read from neither: the recorded version (the listing shows it newest), or
    /// None (the listing shows no certificate of the name).
    Known(Option<VaultVersion>),
    /// Read from the vault; `fill`: record what is read (the record lacks it or disagrees).
    Read { fill: bool },
}

/// How many times the plan's certificates a vault may hold for its listing of certificates to
/// be read in place of each device certificate ([`AzureVault::listing_pays_for`]): at most, a
/// listing then costs a sixth of the reads it replaces.
const LISTING_SLACK: usize = 4;

/// Device certificates asked for at once from which reading the listing of certificates pays
/// ([`AzureVault::newest_listed`]): one page of it.
const LISTING_WORTH: usize = 25;

impl Kept {
    /// The kept version `version` of `name`.
    fn version_at(&self, name: &str, version: &str) -> Option<&VaultVersion> {
        self.version.get(name)?.get(version)
    }

    /// Keeps `v` (a version read or imported).
    fn keep_version(&mut self, v: VaultVersion) {
        self.version
            .entry(v.name.clone())
            .or_default()
            .insert(v.version.clone(), v);
    }
}

/// Kept listings beyond this many names are dropped (memory stays bounded on any fleet; a
/// dropped listing is read again when asked for).
const KEPT_LISTINGS: usize = 100_000;

/// Newest versions read ([`Vault::current`]) are kept only while the versions of fewer names
/// than this are kept: `status` and `check` of a large fleet read every device's, and keeping
/// them all would grow the process by the fleet's certificates.
const KEPT_NEWEST: usize = 10_000;

/// What an import answered: the new version's id, and the version when the answer shows all of
/// it.
type Imported = (String, Option<VaultVersion>);

/// One version as Key Vault's listing of a name's versions shows it: what a [`VersionBrief`]
/// and [`Vault::versions_marked`] need.
#[derive(Clone)]
struct ListedVersion {
    version: String,
    /// SHA-1, upper-case hex; None for a pending request's placeholder.
    thumbprint: Option<String>,
    enabled: bool,
    nbf: Option<OffsetDateTime>,
    exp: Option<OffsetDateTime>,
    created: Option<OffsetDateTime>,
    issuer: Option<(String, String)>,
    /// The journal step that made it ([`STEP_TAG`]).
    step: Option<String>,
    /// A root's key holder ([`KEY_HOLDER_TAG`]), which no listing shows.
    holder: bool,
}

impl ListedVersion {
    fn of(p: &CertificateProperties) -> Option<ListedVersion> {
        let a = p.attributes.as_ref();
        Some(ListedVersion {
            version: version_of(p.id.as_deref()?),
            thumbprint: p.x509_thumbprint.as_deref().map(crate::pki::hex_upper),
            enabled: a.and_then(|a| a.enabled).unwrap_or(true),
            nbf: a.and_then(|a| a.not_before),
            exp: a.and_then(|a| a.expires),
            created: a.and_then(|a| a.created),
            issuer: issuer_of(p.tags.as_ref()),
            step: p.tags.as_ref().and_then(|t| t.get(STEP_TAG)).cloned(),
            holder: is_key_holder(p.tags.as_ref()),
        })
    }
}

/// Whether `name` is a CA's, whose newest version, versions and policy are kept ([`Kept`]).
fn is_ca_name(name: &str) -> bool {
    name.starts_with("ca-")
}

/// A Key Vault answer that is not success, as certroll reports it.
fn remote(operation: &str, target: &str, e: azure_core::Error) -> BackendError {
    use azure_core::error::ErrorKind;
    let (status, code) = match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (Some(u16::from(*status)), error_code.clone()),
        _ => (None, None),
    };
    // No answer: the whole chain, as a transport failure's reason (TLS, refused) sits under
    // the retry policy's "retry policy expired".
    let (code, message) = match status {
        Some(_) => (code.unwrap_or_else(|| format!("{:?}", e.kind())), e.to_string()),
        None => super::observe::no_answer(&e),
    };
    BackendError::Remote {
        service: "Key Vault",
        operation: operation.to_string(),
        target: target.to_string(),
        status,
        code,
        message,
    }
}

fn is_not_found(e: &azure_core::Error) -> bool {
    e.http_status() == Some(StatusCode::NotFound)
}

/// The last path segment of a Key Vault id (`https://v/certificates/NAME/VERSION`).
fn version_of(id: &str) -> String {
    id.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The name in a Key Vault id (`https://v/certificates/NAME[/VERSION]`).
fn name_of(id: &str) -> String {
    let mut parts = id
        .split('/')
        .skip_while(|p| !p.ends_with("certificates") && *p != "issuers");
    parts.next();
    parts.next().unwrap_or_default().to_string()
}

/// `kty` and `exportable` from a policy (`EC`, exportable, when the policy says nothing).
fn key_facts(policy: Option<&CertificatePolicy>) -> (String, bool) {
    let props = policy.and_then(|p| p.key_properties.as_ref());
    let kty = props
        .and_then(|k| k.key_type.as_ref())
        .map(|k| k.to_string())
        .unwrap_or_else(|| "EC".into());
    let exportable = props.and_then(|k| k.exportable).unwrap_or(true) && !kty.ends_with("-HSM");
    (kty, exportable)
}

fn user_tags(tags: Option<&HashMap<String, String>>) -> Tags {
    tags.into_iter()
        .flatten()
        .filter(|(k, _)| !OWN_TAGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A certificate bundle as a [`VaultVersion`].
fn to_version(name: &str, c: &Certificate, key: &(String, bool)) -> Result<VaultVersion> {
    Parts {
        cer: c.cer.as_ref(),
        attributes: c.attributes.as_ref(),
        id: c.id.as_deref(),
        tags: c.tags.as_ref(),
    }
    .version(name, key)
}

/// What a version is made from, in a live or a deleted certificate bundle.
/// The vault name and version of the issuer certroll tagged a version with ([`ISSUER_TAG`]).
fn issuer_of(tags: Option<&HashMap<String, String>>) -> Option<(String, String)> {
    tags.and_then(|t| t.get(ISSUER_TAG))
        .and_then(|v| v.split_once('/'))
        .map(|(n, v)| (n.to_string(), v.to_string()))
}

struct Parts<'a> {
    cer: Option<&'a Vec<u8>>,
    attributes: Option<&'a CertificateAttributes>,
    id: Option<&'a str>,
    tags: Option<&'a HashMap<String, String>>,
}

impl Parts<'_> {
    fn version(&self, name: &str, key: &(String, bool)) -> Result<VaultVersion> {
        let cert_der = self.cer.cloned().ok_or_else(|| {
            BackendError::Refused(format!("Key Vault returned `{name}` without its certificate"))
        })?;
        let info = crate::pki::CertInfo::from_der(&cert_der)?;
        let attrs = self.attributes;
        let issuer = issuer_of(self.tags);
        Ok(VaultVersion {
            name: name.to_string(),
            version: version_of(self.id.unwrap_or_default()),
            kty: key.0.clone(),
            exportable: key.1,
            enabled: attrs.and_then(|a| a.enabled).unwrap_or(true),
            nbf: attrs.and_then(|a| a.not_before).unwrap_or(info.not_before),
            exp: attrs.and_then(|a| a.expires).unwrap_or(info.not_after),
            created: attrs.and_then(|a| a.created).unwrap_or(info.not_before),
            issuer,
            cert_der,
        })
    }
}

impl AzureVault {
    /// Builds the clients for `config.vault_url`. `local` is the store beside the plan, which
    /// keeps what Key Vault cannot (see the module doc).
    pub fn connect(config: &AzureConfig, local: LocalBackend) -> std::result::Result<AzureVault, SetupError> {
        let http = super::http_client(config)?;
        let credential = super::credential(&config.auth, &super::client_options(http, config))?;
        Self::connect_with(config, local, credential)
    }

    /// As [`connect`](Self::connect), with a credential of the caller's instead of the plan's
    /// `auth` (tests, and callers that hold a credential already).
    pub fn connect_with(
        config: &AzureConfig,
        local: LocalBackend,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> std::result::Result<AzureVault, SetupError> {
        Self::connect_pacing(config, local, credential, None)
    }

    /// As [`connect_with`](Self::connect_with), sharing `other`'s pacing: one bound on tries in
    /// flight, one rate after a 429 (and its `Retry-After` hold) and one key creation rate for
    /// both clients, so what Key Vault sees of this process keeps to the plan's
    /// `vault_concurrency` and `vault_rate` however many clients it has (the background
    /// deliveries' and DPS's certificate look-ups beside the main one).
    pub fn connect_sharing(
        config: &AzureConfig,
        local: LocalBackend,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        other: &VaultPacing,
    ) -> std::result::Result<AzureVault, SetupError> {
        Self::connect_pacing(config, local, credential, Some(other.clone()))
    }

    /// The pacing of this client's tries, for [`connect_sharing`](Self::connect_sharing).
    pub fn pacing(&self) -> VaultPacing {
        self.pacing.clone()
    }

    fn connect_pacing(
        config: &AzureConfig,
        local: LocalBackend,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        pacing: Option<VaultPacing>,
    ) -> std::result::Result<AzureVault, SetupError> {
        let rt = super::runtime()?;
        let mut options = super::client_options(super::http_client(config)?, config);
        let pacing = pacing.unwrap_or_else(|| VaultPacing {
            pace: super::pace::Pace::new("Key Vault", None, 0.5, config.vault_limits.concurrency),
            creations: super::KeyCreationRate::new(config.vault_limits.rate),
        });
        // One bound for the three clients of the vault: at most `vault_concurrency` tries on
        // the wire, however batches nest (a version's listing inside a batch of names, signing
        // threads); paced after a 429.
        options.per_try_policies.insert(0, pacing.pace.clone());
        let url = format!("{}/", config.vault_url);
        let client_err =
            |e: azure_core::Error| SetupError::Client(format!("Key Vault client for {url}: {e}"));
        // Only the certificates client makes keys (create, import, restore): it is paced, each
        // try (a retried creation counts at Key Vault too), before it waits for a slot.
        let mut cert_options = options.clone();
        cert_options.per_try_policies.insert(0, pacing.creations.clone());
        // Each client learns Key Vault's challenge on its own, before its first body
        // (`challenge`'s docs: the SDK's retry of a first request loses its body otherwise).
        let warmed = |mut o: azure_core::http::ClientOptions| {
            o.per_call_policies.push(super::challenge::ChallengeWarmUp::new());
            o
        };
        let certs = CertificateClient::new(
            &url,
            credential.clone(),
            Some(CertificateClientOptions {
                client_options: warmed(cert_options),
                ..Default::default()
            }),
        )
        .map_err(client_err)?;
        let keys = KeyClient::new(
            &url,
            credential.clone(),
            Some(KeyClientOptions {
                client_options: warmed(options.clone()),
                ..Default::default()
            }),
        )
        .map_err(client_err)?;
        let secrets = SecretClient::new(
            &url,
            credential,
            Some(SecretClientOptions {
                client_options: warmed(options),
                ..Default::default()
            }),
        )
        .map_err(client_err)?;
        Ok(AzureVault {
            rt,
            certs: Arc::new(certs),
            keys: Arc::new(keys),
            secrets: Arc::new(secrets),
            local,
            concurrency: config.vault_limits.concurrency,
            creation_rate: super::KeyCreationRate::per_second(config.vault_limits.rate),
            vault_url: config.vault_url.clone(),
            marker: None,
            kept: std::sync::Mutex::default(),
            keeps_listings: true,
            listing_budget: 0,
            pacing,
        })
    }

    /// Makes the next notify scan read `name` from Key Vault again (also the step after a verb,
    /// which reads only the names touched since the last scan): certroll is about to write to it
    /// (a version, its policy, which Key Vault's listing does not show, its attributes, its
    /// deletion). Recorded before the remote write, so a stop right after it leaves nothing
    /// unseen.
    fn touch(&self, name: &str) -> Result<()> {
        self.forget(name);
        let conn = self.local.store().conn();
        crate::store::queries_issued::issued_forget(conn, name)
            .and_then(|()| crate::store::queries_notify::touch_remote(conn, name))
            .map_err(BackendError::Store)
    }

    /// Drops what this process kept of `name` ([`Kept`]): certroll is about to write to it.
    fn forget(&self, name: &str) {
        let mut kept = self.kept();
        kept.listed.remove(name);
        kept.version.remove(name);
        kept.key_facts.remove(name);
        kept.keys.remove(name);
        if let Some(listing) = kept.newest.as_mut() {
            listing.stale.insert(name.to_string());
        }
        kept.names = None;
        if is_ca_name(name) {
            kept.current.remove(name);
            kept.versions.remove(name);
            kept.policy.remove(name);
        }
    }

    /// What this process keeps; a poisoned lock (a panic elsewhere) still holds valid answers.
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The policy of `name`, kept for a CA ([`Kept`]); None on 404.
    fn policy_kept(&self, name: &str) -> Result<Option<CertificatePolicy>> {
        if is_ca_name(name)
            && let Some(p) = self.kept().policy.get(name)
        {
            return Ok(p.clone());
        }
        let p = self.rt.block_on(Self::get_policy(&self.certs, name))?;
        if is_ca_name(name) {
            self.kept().policy.insert(name.to_string(), p.clone());
        }
        Ok(p)
    }

    /// This vault, reading every listing of versions afresh: for a second client of the same
    /// vault, which does not see the first one's writes (whose imports must show in its
    /// listings).
    pub fn without_kept_listings(mut self) -> AzureVault {
        self.keeps_listings = false;
        self
    }

    /// This vault, reading Key Vault's listing of certificates (25 a request) in place of each
    /// device certificate's newest version (a request each) while the vault holds no more than
    /// [`LISTING_SLACK`] times `names` certificates (the plan's: its CAs and devices) and a
    /// hundred more: a vault shared with far more certificates costs more to list than the
    /// reads it saves, so its listing is given up there (once a process).
    pub fn listing_pays_for(mut self, names: u64) -> AzureVault {
        self.listing_budget = usize::try_from(names)
            .unwrap_or(usize::MAX / LISTING_SLACK)
            .saturating_mul(LISTING_SLACK)
            .saturating_add(100);
        self
    }

    /// Whether Key Vault's listing of certificates is kept, reading it first when `wanted`
    /// names are asked for at once ([`LISTING_WORTH`] or more) and it was neither read nor
    /// given up in this process. Reading stops, and the listing is given up, past
    /// [`listing_pays_for`](Self::listing_pays_for)'s budget.
    fn newest_listed(&self, wanted: usize) -> Result<bool> {
        {
            let kept = self.kept();
            if kept.newest.is_some() {
                return Ok(true);
            }
            if kept.newest_refused || wanted < LISTING_WORTH || self.listing_budget == 0 {
                return Ok(false);
            }
        }
        let budget = self.listing_budget;
        let read: Option<(HashMap<String, ListedNewest>, Vec<String>)> = self.rt.block_on(async {
            let options = CertificateClientListCertificatePropertiesOptions {
                maxresults: Some(25),
                ..Default::default()
            };
            let mut pager = self
                .certs
                .list_certificate_properties(Some(options))
                .map_err(|e| remote("list certificates", "*", e))?;
            let mut by_name = HashMap::new();
            while let Some(p) = pager.next().await {
                let p = p.map_err(|e| remote("list certificates", "*", e))?;
                if by_name.len() >= budget {
                    return Ok::<_, BackendError>(None);
                }
                let Some(id) = p.id.as_deref() else {
                    continue;
                };
                let a = p.attributes.as_ref();
                by_name.insert(
                    name_of(id),
                    ListedNewest {
                        thumbprint: p.x509_thumbprint.as_deref().map(crate::pki::hex_upper),
                        enabled: a.and_then(|a| a.enabled).unwrap_or(true),
                        nbf: a.and_then(|a| a.not_before),
                        exp: a.and_then(|a| a.expires),
                        created: a.and_then(|a| a.created),
                        holder: is_key_holder(p.tags.as_ref()),
                    },
                );
            }
            let listed = by_name.iter().map(|(n, l)| (n.clone(), l.holder)).collect();
            let names = self.certificate_names(listed).await?;
            Ok(Some((by_name, names)))
        })?;
        let mut kept = self.kept();
        match read {
            Some((by_name, names)) => {
                kept.newest = Some(NewestListing {
                    by_name,
                    names,
                    stale: Default::default(),
                });
                Ok(true)
            }
            None => {
                kept.newest_refused = true;
                Ok(false)
            }
        }
    }

    /// What the kept listing of certificates and the recorded facts (`issued_versions`) tell of
    /// each name's newest version, in the order asked: the recorded version where the listing
    /// shows it newest (same thumbprint and creation time; enabled and dates as listed now),
    /// None where the listing shows no certificate of the name; everything else, CA names and
    /// names certroll wrote to since the listing was read, is read from the vault.
    fn newest_from_listing(&self, names: &[String]) -> Result<Vec<Newest>> {
        let wanted = names.iter().filter(|n| !is_ca_name(n)).count();
        if wanted == 0 || !self.newest_listed(wanted)? {
            return Ok(names.iter().map(|_| Newest::Read { fill: false }).collect());
        }
        let recorded = crate::store::queries_issued::issued_many(self.local.store().conn(), names)
            .map_err(BackendError::Store)?;
        let kept = self.kept();
        let Some(listing) = kept.newest.as_ref() else {
            return Ok(names.iter().map(|_| Newest::Read { fill: false }).collect());
        };
        Ok(names
            .iter()
            .zip(recorded)
            .map(|(name, recorded)| {
                if is_ca_name(name) || listing.stale.contains(name) {
                    return Newest::Read { fill: false };
                }
                let Some(listed) = listing.by_name.get(name) else {
                    return Newest::Known(None);
                };
                let (Some(thumbprint), Some(nbf), Some(exp), Some(created)) =
                    (&listed.thumbprint, listed.nbf, listed.exp, listed.created)
                else {
                    return Newest::Read { fill: false };
                };
                match recorded {
                    Some(r)
                        if !listed.holder
                            && r.created.unix_timestamp() == created.unix_timestamp()
                            && crate::pki::sha1_thumbprint(&r.cert_der).eq_ignore_ascii_case(thumbprint) =>
                    {
                        Newest::Known(Some(r.with(listed.enabled, nbf, exp)))
                    }
                    _ => Newest::Read { fill: !listed.holder },
                }
            })
            .collect())
    }

    /// Records the facts of `read` (device certificates' newest versions just read because the
    /// record lacked or contradicted them), when this process holds the store's writer lock: a
    /// store of v14, or a version another client made, costs one read, not one each run.
    fn fill_issued(&self, read: &[&VaultVersion]) -> Result<()> {
        let store = self.local.store();
        if read.is_empty() || !store.holds_writer_lock() {
            return Ok(());
        }
        let issued: Vec<crate::store::queries_issued::IssuedVersion> = read
            .iter()
            .filter(|v| v.name.starts_with("dev-"))
            .map(|v| crate::store::queries_issued::IssuedVersion::of(v))
            .collect();
        crate::store::queries_issued::issued_fill(store.conn(), &issued).map_err(BackendError::Store)
    }

    /// Records, in the unit under way, the facts of the versions the fleet record now names
    /// (`(vault name, version)`), from what this process kept of them (an import's answer, a
    /// read); a version not kept is left to be read and recorded by a later run.
    pub fn record_issued(&self, installed: &[(String, String)]) -> Result<()> {
        let issued: Vec<crate::store::queries_issued::IssuedVersion> = {
            let kept = self.kept();
            installed
                .iter()
                .filter_map(|(name, version)| kept.version_at(name, version))
                .map(crate::store::queries_issued::IssuedVersion::of)
                .collect()
        };
        if issued.is_empty() {
            return Ok(());
        }
        crate::store::queries_issued::issued_put(self.local.store().conn(), &issued)
            .map_err(BackendError::Store)
    }

    /// The SHA-1 thumbprints (upper-case hex) of versions, by (name, version): of a version this
    /// process keeps ([`Kept`]: one it imported or read) from its certificate, of any other from
    /// one listing of its name's versions. A version neither shows is left out.
    pub fn thumbprints(&self, at: &[(String, String)]) -> Result<HashMap<(String, String), String>> {
        let mut out = HashMap::new();
        let mut names = Vec::new();
        {
            let kept = self.kept();
            for a in at {
                match kept.version_at(&a.0, &a.1) {
                    Some(v) => {
                        out.insert(a.clone(), crate::pki::sha1_thumbprint(&v.cert_der));
                    }
                    None if !names.contains(&a.0) => names.push(a.0.clone()),
                    None => {}
                }
            }
        }
        for b in self.briefs_many(&names)?.into_iter().flatten() {
            out.entry((b.name, b.version)).or_insert(b.thumbprint);
        }
        Ok(out)
    }

    /// The certificate (DER) of one version: the kept one's, else read by id alone (no policy:
    /// the certificate is all a thumbprint look-up needs). None when the version does not exist
    /// or is a pending request's placeholder.
    pub fn certificate_der(&self, name: &str, version: &str) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.kept().version_at(name, version) {
            return Ok(Some(v.cert_der.clone()));
        }
        Ok(self
            .rt
            .block_on(Self::get(&self.certs, name, Some(version)))?
            .and_then(|c| c.cer))
    }

    /// Every version of a name, oldest first, as [`Vault::versions`]: from the kept listing
    /// and the kept versions ([`Kept`]), reading by id (and the name's policy, once, unless its
    /// key facts are kept) only the versions not kept.
    fn versions_kept(&self, name: &str) -> Result<Vec<VaultVersion>> {
        self.rt.block_on(self.versions_kept_async(name))
    }

    /// [`versions_kept`](Self::versions_kept), on the runtime: the versions not kept are read
    /// `concurrency` at a time.
    async fn versions_kept_async(&self, name: &str) -> Result<Vec<VaultVersion>> {
        let listed = self.listed_kept(name).await?;
        let mut found: Vec<Option<VaultVersion>> = {
            let kept = self.kept();
            listed
                .iter()
                .map(|l| kept.version_at(name, &l.version).cloned())
                .collect()
        };
        // A pending request's placeholder (no thumbprint) is no issued version.
        let missing: Vec<usize> = (0..listed.len())
            .filter(|&i| found[i].is_none() && listed[i].thumbprint.is_some() && !listed[i].holder)
            .collect();
        if !missing.is_empty() {
            let read: Vec<Option<Certificate>> = futures::stream::iter(
                missing
                    .iter()
                    .map(|&i| Self::get(&self.certs, name, Some(&listed[i].version))),
            )
            .buffered(self.concurrency)
            .try_collect()
            .await?;
            let key = self.key_facts_kept(name).await?;
            for (i, c) in missing.into_iter().zip(read) {
                let Some(c) = c.filter(|c| c.cer.is_some()) else {
                    continue;
                };
                let v = to_version(name, &c, &key)?;
                self.kept().keep_version(v.clone());
                found[i] = Some(v);
            }
        }
        let mut out: Vec<VaultVersion> = listed
            .iter()
            .zip(found)
            .filter(|(l, _)| l.thumbprint.is_some() && !l.holder)
            .filter_map(|(_, v)| v)
            .collect();
        // As `all_versions`: oldest first, the listed order breaking ties of `created`.
        out.sort_by_key(|v| v.created);
        Ok(out)
    }

    /// `kty` and `exportable` of `name` ([`key_facts`]): kept from the policy Key Vault sent
    /// with its newest version, or read from its policy (then kept).
    async fn key_facts_kept(&self, name: &str) -> Result<(String, bool)> {
        if let Some(k) = self.kept().key_facts.get(name) {
            return Ok(k.clone());
        }
        let key = key_facts(Self::get_policy(&self.certs, name).await?.as_ref());
        self.keep_key_facts(name, &key);
        Ok(key)
    }

    /// Keeps the key facts of `name` (bounded as the listings are).
    fn keep_key_facts(&self, name: &str, key: &(String, bool)) {
        let mut kept = self.kept();
        if kept.key_facts.len() >= KEPT_LISTINGS && !kept.key_facts.contains_key(name) {
            kept.key_facts.clear();
        }
        kept.key_facts.insert(name.to_string(), key.clone());
    }

    /// The newest version of a name that is not a CA's ([`Vault::current`]), read from Key
    /// Vault; the policy's key facts that come with it are kept, and the version too while
    /// fewer than [`KEPT_NEWEST`] names' versions are kept (a later read of it by id, or of the
    /// name's versions, then asks for no more than the other versions).
    async fn newest_kept(&self, name: &str) -> Result<Option<VaultVersion>> {
        let Some((v, _)) = Self::latest_with_policy(&self.certs, name).await? else {
            return Ok(None);
        };
        self.keep_key_facts(name, &(v.kty.clone(), v.exportable));
        let mut kept = self.kept();
        if kept.version.len() < KEPT_NEWEST || kept.version.contains_key(name) {
            kept.keep_version(v.clone());
        }
        Ok(Some(v))
    }

    /// The listing of `name`'s versions, as kept ([`Kept`]) or read (then kept); empty when the
    /// name does not exist.
    async fn listed_kept(&self, name: &str) -> Result<Vec<ListedVersion>> {
        if self.keeps_listings
            && let Some(l) = self.kept().listed.get(name)
        {
            return Ok(l.clone());
        }
        let listed: Vec<ListedVersion> = Self::listed(&self.certs, name)
            .await?
            .iter()
            .filter_map(ListedVersion::of)
            .collect();
        if !self.keeps_listings {
            return Ok(listed);
        }
        let mut kept = self.kept();
        if kept.listed.len() >= KEPT_LISTINGS {
            kept.listed.clear();
        }
        kept.listed.insert(name.to_string(), listed.clone());
        Ok(listed)
    }

    /// The vault's URL.
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    /// The store beside the plan (CRL numbers, the fleet record, the journal).
    pub fn local(&self) -> &LocalBackend {
        &self.local
    }

    /// The store beside the plan, to write.
    pub fn local_mut(&mut self) -> &mut LocalBackend {
        &mut self.local
    }

    /// A certificate (newest version when `version` is None); None when Key Vault answers 404.
    async fn get(
        certs: &CertificateClient,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<Certificate>> {
        let options = CertificateClientGetCertificateOptions {
            certificate_version: version.map(str::to_string),
            ..Default::default()
        };
        match certs.get_certificate(name, Some(options)).await {
            Ok(r) => Ok(Some(model(r, "get certificate", name)?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(remote("get certificate", name, e)),
        }
    }

    /// The newest version of a name with the name's policy (Key Vault sends the policy with the
    /// newest version; asked for apart only when it does not); None on 404.
    async fn latest_with_policy(
        certs: &CertificateClient,
        name: &str,
    ) -> Result<Option<(VaultVersion, Option<CertificatePolicy>)>> {
        let Some(mut c) = Self::get(certs, name, None).await? else {
            return Ok(None);
        };
        if c.cer.is_none() {
            // A certificate whose first version waits for a merge: Key Vault shows it as a
            // disabled version without `cer`; nothing is issued under the name yet.
            return Ok(None);
        }
        let policy = match c.policy.take() {
            Some(p) => Some(p),
            None => Self::get_policy(certs, name).await?,
        };
        let key = key_facts(policy.as_ref());
        if !c.tags.as_ref().is_some_and(|t| t.contains_key(ISSUER_TAG)) {
            // Key Vault answers the newest version's tags here; an emulator that keeps
            // certificate-wide tags apart (certroll serve) needs the version asked for by id.
            let version = version_of(c.id.as_deref().unwrap_or_default());
            if let Some(v) = Self::get(certs, name, Some(&version)).await? {
                c.tags = v.tags;
            }
        }
        if is_key_holder(c.tags.as_ref()) {
            // A root's key holder is newest only while its root is being made (or a run was
            // cut off then): the name's newest version is the newest other one.
            let newest = Self::listed(certs, name)
                .await?
                .iter()
                .filter_map(ListedVersion::of)
                .filter(|l| l.thumbprint.is_some() && !l.holder)
                .max_by_key(|l| l.created);
            let Some(newest) = newest else {
                return Ok(None);
            };
            let Some(found) = Self::get(certs, name, Some(&newest.version)).await? else {
                return Ok(None);
            };
            c = found;
        }
        Ok(Some((to_version(name, &c, &key)?, policy)))
    }

    /// The policy of a name; None on 404.
    async fn get_policy(certs: &CertificateClient, name: &str) -> Result<Option<CertificatePolicy>> {
        match certs.get_certificate_policy(name, None).await {
            Ok(r) => Ok(Some(model(r, "get policy", name)?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(remote("get policy", name, e)),
        }
    }

    /// Every version of a name as Key Vault lists them (a page per 25 versions, in no promised
    /// order); empty when the name does not exist.
    async fn listed(certs: &CertificateClient, name: &str) -> Result<Vec<CertificateProperties>> {
        match certs.list_certificate_properties_versions(name, None) {
            Ok(pager) => match pager.try_collect::<Vec<_>>().await {
                Ok(items) => Ok(items),
                Err(e) if is_not_found(&e) => Ok(Vec::new()),
                Err(e) => Err(remote("list versions", name, e)),
            },
            Err(e) => Err(remote("list versions", name, e)),
        }
    }

    /// The versions of a name as [`VersionBrief`]s, oldest first, from Key Vault's listing of
    /// its versions alone: each listed version carries its x5t (the SHA-1 thumbprint Key Vault
    /// computed from the certificate it holds), its attributes (enabled, notBefore, notAfter,
    /// created) and its tags (the issuer certroll tagged it with at import), which is all a
    /// brief holds. None when an issued version is listed without its dates (then every
    /// version is read by GET, as [`all_versions`](Self::all_versions) does).
    async fn listed_briefs(&self, name: &str) -> Result<Option<Vec<VersionBrief>>> {
        let mut out = Vec::new();
        for p in self.listed_kept(name).await? {
            // A pending request's placeholder has no x5t: no issued version; a root's key
            // holder is none of the name's versions.
            let Some(thumbprint) = p.thumbprint.filter(|_| !p.holder) else {
                continue;
            };
            let (Some(nbf), Some(exp)) = (p.nbf, p.exp) else {
                return Ok(None);
            };
            let brief = VersionBrief {
                name: name.to_string(),
                version: p.version,
                thumbprint,
                enabled: p.enabled,
                nbf,
                exp,
                issuer: p.issuer,
            };
            out.push((p.created.unwrap_or(nbf), brief));
        }
        // As `all_versions`: oldest first, the listed order breaking ties of `created`.
        out.sort_by_key(|(created, _)| *created);
        Ok(Some(out.into_iter().map(|(_, b)| b).collect()))
    }

    /// Every version of a name, oldest first (empty when the name does not exist); with
    /// `key_facts`, the key type and exportability from the name's policy (one more request),
    /// else those fields are empty and false (a [`VersionBrief`] needs neither).
    async fn all_versions(
        certs: Arc<CertificateClient>,
        name: String,
        concurrency: usize,
        key_facts: bool,
    ) -> Result<Vec<VaultVersion>> {
        let ids: Vec<String> = Self::listed(&certs, &name)
            .await?
            .into_iter()
            .filter(|p| !is_key_holder(p.tags.as_ref()))
            .filter_map(|p| p.id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = if key_facts {
            self::key_facts(Self::get_policy(&certs, &name).await?.as_ref())
        } else {
            (String::new(), false)
        };
        let mut out: Vec<VaultVersion> = futures::stream::iter(ids.iter().map(|id| {
            let certs = certs.clone();
            let name = name.clone();
            let version = version_of(id);
            async move { Self::get(&certs, &name, Some(&version)).await }
        }))
        .buffered(concurrency)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .filter(|c| c.cer.is_some()) // a pending request's placeholder is no issued version
        .map(|c| to_version(&name, &c, &key))
        .collect::<Result<_>>()?;
        // Key Vault lists in no promised order; `created` has second precision, so the listed
        // order breaks ties.
        out.sort_by_key(|v| v.created);
        Ok(out)
    }

    /// Imports one new version and records its issuer; returns its version id, and the version
    /// as Key Vault's answer shows it when that answer carries everything a [`VaultVersion`]
    /// holds (its certificate, the name's policy, certroll's tags).
    async fn import(
        certs: &CertificateClient,
        new: OwnedNewVersion,
    ) -> Result<(String, Option<VaultVersion>)> {
        let name = new.name.as_str();
        let mut policy = parse_policy(name, &new.policy_json)?;
        let pfx = policy
            .secret_properties
            .as_ref()
            .and_then(|s| s.content_type.as_deref())
            == Some("application/x-pkcs12");
        let value = if pfx {
            let der =
                crate::pki::pkcs12::write_pfx(name, &new.key_pkcs8, std::slice::from_ref(&new.cert_der), "")?;
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
        } else {
            let mut pem = crate::pki::pem::cert_to_pem(&new.cert_der);
            pem.push_str(&crate::pki::pem::key_to_pem(&new.key_pkcs8));
            pem
        };
        if let Some(k) = policy.key_properties.as_mut() {
            k.exportable = Some(new.exportable);
        }
        // certroll's tags go in with the version, so a version never exists without them.
        let mut tags = HashMap::new();
        if let Some(issuer) = &new.issuer {
            tags.insert(ISSUER_TAG.to_string(), issuer.clone());
        }
        if let Some(marker) = &new.marker {
            tags.insert(STEP_TAG.to_string(), marker.clone());
        }
        let params = ImportCertificateParameters {
            base64_encoded_certificate: Some(value),
            certificate_policy: Some(policy),
            tags: (!tags.is_empty()).then_some(tags),
            ..Default::default()
        };
        let body: RequestContent<ImportCertificateParameters> = params
            .try_into()
            .map_err(|e| remote("import certificate", name, e))?;
        let c = model(
            certs
                .import_certificate(name, body, None)
                .await
                .map_err(|e| remote("import certificate", name, e))?,
            "import certificate",
            name,
        )?;
        vault_write_fault_point();
        let id = version_of(c.id.as_deref().unwrap_or_default());
        let tagged = new.issuer.is_none() || issuer_of(c.tags.as_ref()).is_some();
        let shown = match (&c.cer, &c.policy) {
            (Some(_), Some(p)) if tagged => to_version(name, &c, &key_facts(Some(p))).ok(),
            _ => None,
        };
        let shown = shown.filter(|v| v.version == id);
        Ok((id, shown))
    }

    /// Updates a version's (or the newest's) `enabled` and tags.
    async fn patch(
        certs: &CertificateClient,
        name: &str,
        version: Option<&str>,
        enabled: Option<bool>,
        tags: Option<HashMap<String, String>>,
    ) -> Result<()> {
        let params = UpdateCertificatePropertiesParameters {
            certificate_attributes: enabled.map(|e| CertificateAttributes {
                enabled: Some(e),
                ..Default::default()
            }),
            tags,
            ..Default::default()
        };
        let body: RequestContent<UpdateCertificatePropertiesParameters> = params
            .try_into()
            .map_err(|e| remote("update certificate", name, e))?;
        let options = CertificateClientUpdateCertificatePropertiesOptions {
            certificate_version: version.map(str::to_string),
            ..Default::default()
        };
        certs
            .update_certificate_properties(name, body, Some(options))
            .await
            .map_err(|e| remote("update certificate", name, e))?;
        Ok(())
    }

    /// An `rcgen::SigningKey` for a version whose key stays in the vault: certroll builds the
    /// certificate, Key Vault signs it.
    pub fn signing_key(&self, version: &VaultVersion) -> Result<KeyVaultSigningKey> {
        KeyVaultSigningKey::new(
            self.rt.handle().clone(),
            self.keys.clone(),
            &version.name,
            &version.version,
            &version.cert_der,
            self.concurrency,
        )
    }

    /// The newest version of `name` whose tags carry the step mark `marker` (the listing of
    /// versions carries their tags).
    ///
    /// The kept listing serves ([`Kept`]): a version marked by this step was made either by an
    /// earlier process, before any listing this one made, or by this one, whose import dropped
    /// the name's listing.
    async fn marked(&self, name: &str, marker: &str) -> Result<Option<VaultVersion>> {
        let found = self
            .listed_kept(name)
            .await?
            .into_iter()
            .filter(|p| p.step.as_deref() == Some(marker) && !p.holder)
            .max_by_key(|p| p.created);
        let Some(found) = found else {
            return Ok(None);
        };
        let kept = self.kept().version_at(name, &found.version).cloned();
        if let Some(v) = kept {
            return Ok(Some(v));
        }
        let Some(c) = Self::get(&self.certs, name, Some(&found.version)).await? else {
            return Ok(None);
        };
        let key = self.key_facts_kept(name).await?;
        to_version(name, &c, &key).map(Some)
    }

    /// Key Vault's create under the policy `policy_json` (certroll's Key Vault-shaped JSON),
    /// the new version tagged with `tags`: for issuer `Self` the completed version (the poller
    /// waits for it), else the request with its CSR.
    fn create_op(
        &self,
        name: &str,
        policy_json: &str,
        tags: Option<HashMap<String, String>>,
    ) -> Result<Created> {
        // Key Vault's create writes the name's policy, also when only a request results.
        self.touch(name)?;
        let mut policy = parse_policy(name, policy_json)?;
        if let Some(x509) = policy.x509_certificate_properties.as_mut()
            && x509.validity_in_months.is_none()
        {
            // Key Vault counts validity in months only: the fewest months that cover the days.
            let days = serde_json::from_str::<serde_json::Value>(policy_json)
                .ok()
                .and_then(|p| p["x509_props"]["validity_days"].as_i64())
                .unwrap_or(365);
            x509.validity_in_months = Some(((days * 12 + 364) / 365).clamp(1, 1200) as i32);
        }
        let issuer = policy
            .issuer_parameters
            .as_ref()
            .and_then(|i| i.name.clone())
            .unwrap_or_else(|| "Self".into());
        let key = key_facts(Some(&policy));
        let policy_doc = serde_json::to_string(&policy)
            .map_err(|e| BackendError::Refused(format!("policy of `{name}`: {e}")))?;
        let params = CreateCertificateParameters {
            certificate_policy: Some(policy),
            tags,
            ..Default::default()
        };
        let body: RequestContent<CreateCertificateParameters> = params
            .try_into()
            .map_err(|e| remote("create certificate", name, e))?;
        let options = CertificateClientCreateCertificateOptions {
            method_options: azure_core::http::poller::PollerOptions {
                // Key Vault makes a self-signed version in seconds.
                frequency: time::Duration::seconds(1),
                ..Default::default()
            },
        };
        let certs = self.certs.clone();
        self.rt.block_on(async move {
            let mut poller = certs
                .begin_create_certificate(name, body, Some(options))
                .map_err(|e| remote("create certificate", name, e))?;
            if issuer.eq_ignore_ascii_case("Self") {
                let c: Certificate = model(
                    poller.await.map_err(|e| remote("create certificate", name, e))?,
                    "create certificate",
                    name,
                )?;
                return Ok(Created::Version(version_of(c.id.as_deref().unwrap_or_default())));
            }
            // An outside CA: the first answer carries the CSR, and the operation waits for
            // the merge (the poller would wait for it too).
            let first = poller
                .next()
                .await
                .ok_or_else(|| {
                    BackendError::Refused(format!("Key Vault answered nothing to the create of `{name}`"))
                })?
                .map_err(|e| remote("create certificate", name, e))?;
            let op: CertificateOperation = model(first, "create certificate", name)?;
            vault_write_fault_point();
            match pending_of(name, &op, &policy_doc, key, Some(OffsetDateTime::now_utc()))? {
                Some(p) => Ok(Created::Pending(p)),
                None => Err(BackendError::Refused(format!(
                    "Key Vault's create of `{name}` (issuer {issuer}) answered status {:?} without a CSR",
                    op.status
                ))),
            }
        })
    }

    /// The key holders of a root's name ([`KEY_HOLDER_TAG`]), oldest first, and whether the
    /// newest of them is no older than every other issued version (the holder of the root
    /// being made), from a fresh listing.
    async fn key_holders(&self, name: &str) -> Result<(Vec<ListedVersion>, bool)> {
        let listed: Vec<ListedVersion> = Self::listed(&self.certs, name)
            .await?
            .iter()
            .filter_map(ListedVersion::of)
            .filter(|l| l.thumbprint.is_some())
            .collect();
        let newest_other = listed.iter().filter(|l| !l.holder).map(|l| l.created).max();
        let mut holders: Vec<ListedVersion> = listed.into_iter().filter(|l| l.holder).collect();
        holders.sort_by_key(|l| l.created);
        let current = holders
            .last()
            .is_some_and(|h| newest_other.is_none_or(|other| h.created >= other));
        Ok((holders, current))
    }

    /// The request of a name waiting for a merge (Key Vault's pending certificate operation).
    async fn operation(certs: &CertificateClient, name: &str) -> Result<Option<PendingCertificate>> {
        let op: CertificateOperation = match certs.get_certificate_operation(name, None).await {
            Ok(r) => model(r, "get certificate operation", name)?,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(remote("get certificate operation", name, e)),
        };
        let policy = Self::get_policy(certs, name).await?;
        // Key Vault's operation carries no time; the create wrote the policy (a renewal's too),
        // so the policy's last update is when the request was made. None when not given.
        let created = policy
            .as_ref()
            .and_then(|p| p.attributes.as_ref())
            .and_then(|a| a.updated);
        let policy_json = match &policy {
            Some(p) => serde_json::to_string(p)
                .map_err(|e| BackendError::Refused(format!("policy of `{name}`: {e}")))?,
            None => "{}".to_string(),
        };
        pending_of(name, &op, &policy_json, key_facts(policy.as_ref()), created)
    }

    /// Every certificate name, those whose first version waits for a merge included.
    fn names_including_pending(&self) -> Result<Vec<String>> {
        self.list_names(true)
    }

    fn names(&self) -> Result<Vec<String>> {
        // From the listing of certificates kept (or read now) while certroll wrote to none of
        // them: `vault_only` asks page by page, which would list the whole vault each time.
        if self.newest_listed(usize::MAX)? {
            let kept = self.kept();
            if let Some(listing) = kept.newest.as_ref().filter(|l| l.stale.is_empty()) {
                return Ok(listing.names.clone());
            }
        }
        self.list_names(false)
    }

    /// The certificate names among `listed` (each name with whether the newest version Key
    /// Vault lists of it is a root's key holder), sorted, once each. A name listed with a key
    /// holder as its newest version is a certificate only when it has an issued version besides
    /// its holders: a run cut off right after the holder's create left none (one more request
    /// each, rare). Both listings of names go through this: the one kept beside the newest
    /// versions ([`newest_listed`](Self::newest_listed)) and a fresh one (`list_names`).
    async fn certificate_names(&self, listed: Vec<(String, bool)>) -> Result<Vec<String>> {
        let mut names = Vec::with_capacity(listed.len());
        for (name, holder) in listed {
            if holder
                && !Self::listed(&self.certs, &name)
                    .await?
                    .iter()
                    .filter_map(ListedVersion::of)
                    .any(|l| l.thumbprint.is_some() && !l.holder)
            {
                continue;
            }
            names.push(name);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Every certificate name, sorted, once each; `include_pending` adds the names whose first
    /// version waits for a merge.
    fn list_names(&self, include_pending: bool) -> Result<Vec<String>> {
        self.rt.block_on(async {
            let options = CertificateClientListCertificatePropertiesOptions {
                include_pending: include_pending.then_some(true),
                ..Default::default()
            };
            let pager = self
                .certs
                .list_certificate_properties(Some(options))
                .map_err(|e| remote("list certificates", "*", e))?;
            let items: Vec<CertificateProperties> = pager
                .try_collect()
                .await
                .map_err(|e| remote("list certificates", "*", e))?;
            // A waiting request on a name with only a key holder is listed when asked for.
            let listed = items
                .iter()
                .filter_map(|p| {
                    let name = name_of(p.id.as_deref()?);
                    Some((name, !include_pending && is_key_holder(p.tags.as_ref())))
                })
                .collect();
            self.certificate_names(listed).await
        })
    }
}

/// The owned parts of a [`NewVersion`] an import needs (the batch runs on the runtime).
struct OwnedNewVersion {
    name: String,
    policy_json: String,
    cert_der: Vec<u8>,
    key_pkcs8: zeroize::Zeroizing<Vec<u8>>,
    exportable: bool,
    issuer: Option<String>,
    /// The journal step's mark ([`STEP_TAG`]).
    marker: Option<String>,
}

fn model<T: serde::de::DeserializeOwned>(r: Response<T>, operation: &str, name: &str) -> Result<T> {
    r.into_model().map_err(|e| remote(operation, name, e))
}

impl Vault for AzureVault {
    fn current(&self, name: &str) -> Result<Option<VaultVersion>> {
        if !is_ca_name(name) {
            return Ok(self
                .current_many(std::slice::from_ref(&name.to_string()))?
                .pop()
                .flatten());
        }
        if let Some(v) = self.kept().current.get(name) {
            return Ok(v.clone());
        }
        let found = self.rt.block_on(Self::latest_with_policy(&self.certs, name))?;
        let mut kept = self.kept();
        if let Some((_, p)) = &found {
            kept.policy.insert(name.to_string(), p.clone());
        }
        let v = found.map(|(v, _)| v);
        kept.current.insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn current_many(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        // A device certificate whose recorded version the listing of certificates shows newest
        // is not read; the others one request per name, `concurrency` at a time.
        let newest = self.newest_from_listing(names)?;
        let read: Vec<usize> = (0..names.len())
            .filter(|&i| matches!(newest[i], Newest::Read { .. }))
            .collect();
        let got: Vec<Option<VaultVersion>> = self.rt.block_on(async {
            futures::stream::iter(read.iter().map(|&i| self.newest_kept(&names[i])))
                .buffered(self.concurrency)
                .try_collect()
                .await
        })?;
        let fill: Vec<&VaultVersion> = read
            .iter()
            .zip(&got)
            .filter(|(i, _)| matches!(newest[**i], Newest::Read { fill: true }))
            .filter_map(|(_, v)| v.as_ref())
            .collect();
        self.fill_issued(&fill)?;
        let mut got = got.into_iter();
        Ok(newest
            .into_iter()
            .map(|n| match n {
                Newest::Known(v) => v,
                Newest::Read { .. } => got.next().flatten(),
            })
            .collect())
    }

    fn versions(&self, name: &str) -> Result<Vec<VaultVersion>> {
        if is_ca_name(name)
            && let Some(v) = self.kept().versions.get(name)
        {
            return Ok(v.clone());
        }
        let versions = if is_ca_name(name) {
            self.rt.block_on(Self::all_versions(
                self.certs.clone(),
                name.to_string(),
                self.concurrency,
                true,
            ))?
        } else {
            self.versions_kept(name)?
        };
        if is_ca_name(name) {
            let mut kept = self.kept();
            for v in &versions {
                kept.keep_version(v.clone());
            }
            kept.versions.insert(name.to_string(), versions.clone());
        }
        Ok(versions)
    }

    fn versions_many(&self, names: &[String]) -> Result<Vec<Vec<VaultVersion>>> {
        // A device's versions from its listing, reading by id only the versions not kept (the
        // newest one `current_many` just read, say): `status` and `check` after a roll read the
        // version a device presented, not all of them again with the policy.
        self.rt.block_on(async {
            futures::stream::iter(names.iter().map(|n| async move {
                if is_ca_name(n) {
                    Self::all_versions(self.certs.clone(), n.clone(), self.concurrency, true).await
                } else {
                    self.versions_kept_async(n).await
                }
            }))
            .buffered(self.concurrency)
            .try_collect()
            .await
        })
    }

    fn briefs_many(&self, names: &[String]) -> Result<Vec<Vec<VersionBrief>>> {
        // One listing per name (Key Vault lists no versions across names), not a GET per
        // version: the listing is the vault's own word on every field of a brief, so a version
        // another client imported or disabled shows as it is. Only a listing without dates
        // (not Key Vault's) falls back to reading each version.
        self.rt.block_on(async {
            futures::stream::iter(names.iter().map(|n| async move {
                match self.listed_briefs(n).await? {
                    Some(briefs) => Ok(briefs),
                    None => crate::backend::briefs_of(vec![
                        Self::all_versions(self.certs.clone(), n.clone(), self.concurrency, false).await?,
                    ])
                    .map(|mut b| b.pop().unwrap_or_default()),
                }
            }))
            .buffered(self.concurrency)
            .try_collect()
            .await
        })
    }

    fn current_with_policy_many(
        &self,
        names: &[String],
    ) -> Result<Vec<Option<(VaultVersion, serde_json::Value)>>> {
        // One request per name (Key Vault sends the policy with the newest version),
        // `concurrency` at a time, in the order asked.
        let found: Vec<Option<(VaultVersion, Option<CertificatePolicy>)>> = self.rt.block_on(async {
            futures::stream::iter(names.iter().map(|n| {
                let certs = self.certs.clone();
                let n = n.clone();
                async move { Self::latest_with_policy(&certs, &n).await }
            }))
            .buffered(self.concurrency)
            .try_collect()
            .await
        })?;
        found
            .into_iter()
            .map(|f| match f {
                Some((v, Some(p))) => {
                    let json = serde_json::to_value(&p)
                        .map_err(|e| BackendError::Refused(format!("policy of `{}`: {e}", v.name)))?;
                    Ok(Some((v, json)))
                }
                _ => Ok(None),
            })
            .collect()
    }

    fn version_stamps(&self, name: &str) -> Result<Vec<VersionStamp>> {
        // The listing carries each version's attributes: one request (a page per 25 versions).
        self.rt.block_on(async {
            let items = Self::listed(&self.certs, name).await?;
            let mut out: Vec<VersionStamp> = items
                .into_iter()
                // A pending request's placeholder has no notAfter: no issued version.
                .filter(|p| !is_key_holder(p.tags.as_ref()))
                .filter_map(|p| {
                    let a = p.attributes.as_ref()?;
                    Some(VersionStamp {
                        version: version_of(p.id.as_deref()?),
                        created: a.created?,
                        exp: a.expires?,
                    })
                })
                .collect();
            // As `versions`: oldest first, the listed order breaking ties of `created`.
            out.sort_by_key(|v| v.created);
            Ok(out)
        })
    }

    fn listing(&self) -> Result<Vec<ListedCertificate>> {
        // Key Vault's listing: 25 certificates a page (its largest), each with the newest
        // version's x5t and attributes.
        let items: Vec<_> = self.rt.block_on(async {
            let options = CertificateClientListCertificatePropertiesOptions {
                maxresults: Some(25),
                ..Default::default()
            };
            let pager = self
                .certs
                .list_certificate_properties(Some(options))
                .map_err(|e| remote("list certificates", "*", e))?;
            pager
                .try_collect()
                .await
                .map_err(|e| remote("list certificates", "*", e))
        })?;
        let mut out = Vec::with_capacity(items.len());
        for p in items {
            let Some(id) = p.id.as_deref() else {
                continue;
            };
            let name = name_of(id);
            if is_key_holder(p.tags.as_ref()) {
                // A root's key holder shows as the newest version while its root is made: the
                // name is listed with its newest other version (rare: one more request).
                if let Some((v, _)) = self.rt.block_on(Self::latest_with_policy(&self.certs, &name))? {
                    out.push(ListedCertificate {
                        name,
                        thumbprint: Some(crate::pki::sha1_thumbprint(&v.cert_der)),
                        enabled: Some(v.enabled),
                        nbf: Some(v.nbf),
                        exp: Some(v.exp),
                    });
                }
                continue;
            }
            let a = p.attributes.as_ref();
            out.push(ListedCertificate {
                name,
                thumbprint: p.x509_thumbprint.as_deref().map(crate::pki::hex_upper),
                enabled: a.and_then(|a| a.enabled),
                nbf: a.and_then(|a| a.not_before),
                exp: a.and_then(|a| a.expires),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    fn version(&self, name: &str, version: &str) -> Result<Option<VaultVersion>> {
        if let Some(v) = self.kept().version_at(name, version) {
            return Ok(Some(v.clone()));
        }
        let Some(c) = self.rt.block_on(Self::get(&self.certs, name, Some(version)))? else {
            return Ok(None);
        };
        if c.cer.is_none() {
            return Ok(None); // the pending request's placeholder, not an issued version
        }
        let key = if is_ca_name(name) {
            key_facts(self.policy_kept(name)?.as_ref())
        } else {
            self.rt.block_on(self.key_facts_kept(name))?
        };
        let v = to_version(name, &c, &key)?;
        self.kept().keep_version(v.clone());
        Ok(Some(v))
    }

    fn create_versions(&mut self, batch: &[NewVersion<'_>], _now: OffsetDateTime) -> Result<Vec<String>> {
        // Versions of one name are imported in order (each becomes the newest); names run
        // `concurrency` at a time.
        let mut by_name: BTreeMap<&str, Vec<(usize, OwnedNewVersion)>> = BTreeMap::new();
        for (i, n) in batch.iter().enumerate() {
            if !by_name.contains_key(n.name) {
                self.touch(n.name)?;
            }
            by_name.entry(n.name).or_default().push((
                i,
                OwnedNewVersion {
                    name: n.name.to_string(),
                    policy_json: n.policy_json.to_string(),
                    cert_der: n.cert_der.to_vec(),
                    key_pkcs8: zeroize::Zeroizing::new(n.key_pkcs8.to_vec()),
                    exportable: n.exportable,
                    issuer: n.issuer.map(|(name, v)| format!("{name}/{v}")),
                    marker: self.marker.clone(),
                },
            ));
        }
        let certs = self.certs.clone();
        let stage = crate::progress::paced_stage("Key Vault imports", batch.len() as u64, self.creation_rate);
        let stage = &stage;
        let done: Vec<Vec<(usize, Imported)>> = self.rt.block_on(async {
            futures::stream::iter(by_name.into_values().map(|group| {
                let certs = certs.clone();
                async move {
                    let mut out = Vec::with_capacity(group.len());
                    for (i, new) in group {
                        out.push((i, Self::import(&certs, new).await?));
                        stage.advance(1);
                    }
                    Ok::<_, BackendError>(out)
                }
            }))
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await
        })?;
        let mut ids = vec![String::new(); batch.len()];
        let mut kept = self.kept();
        for (i, (id, shown)) in done.into_iter().flatten() {
            if let Some(v) = shown {
                kept.keep_version(v);
            }
            let new = &batch[i];
            if new.exportable {
                if kept.keys.len() >= KEPT_LISTINGS && !kept.keys.contains_key(new.name) {
                    kept.keys.clear();
                }
                kept.keys
                    .entry(new.name.to_string())
                    .or_default()
                    .insert(id.clone(), zeroize::Zeroizing::new(new.key_pkcs8.to_vec()));
            }
            ids[i] = id;
        }
        Ok(ids)
    }

    fn private_key(&self, version: &VaultVersion) -> Result<PrivateKey> {
        let name = version.name.as_str();
        if !version.exportable {
            return Err(BackendError::Refused(format!(
                "the key of `{name}` is not exportable: it stays in Key Vault, which signs with it"
            )));
        }
        // A version this process imported: the key it imported (a hook delivery right after).
        let imported = self
            .kept()
            .keys
            .get(name)
            .and_then(|k| k.get(&version.version))
            .cloned();
        if let Some(pkcs8) = imported {
            return Ok(PrivateKey::from_der_any(&pkcs8)?.0);
        }
        let secret = self.rt.block_on(async {
            let options = SecretClientGetSecretOptions {
                secret_version: Some(version.version.clone()),
                ..Default::default()
            };
            let r = self
                .secrets
                .get_secret(name, Some(options))
                .await
                .map_err(|e| remote("get secret", name, e))?;
            r.into_model().map_err(|e| remote("get secret", name, e))
        })?;
        let value = zeroize::Zeroizing::new(secret.value.unwrap_or_default());
        let pkcs8 = if secret.content_type.as_deref() == Some("application/x-pkcs12") {
            let der = zeroize::Zeroizing::new(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value.trim())
                    .map_err(|e| BackendError::Refused(format!("secret of `{name}` is not base64: {e}")))?,
            );
            crate::pki::pkcs12::read_pfx(&der, "")?.key
        } else {
            crate::pki::pem::key_from_pem(value.as_bytes())?
        };
        Ok(PrivateKey::from_der_any(&pkcs8)?.0)
    }

    fn signer(&self, version: &VaultVersion) -> Result<crate::pki::cert::CaSigner> {
        use crate::pki::cert::CaSigner;
        if version.exportable {
            // The key is the plan's to hold: sign here, without a request per signature.
            return Ok(CaSigner::Key(self.private_key(version)?));
        }
        Ok(CaSigner::Remote(Box::new(self.signing_key(version)?)))
    }

    fn names_page(&self, after: &str, limit: usize) -> Result<Vec<String>> {
        if self.newest_listed(usize::MAX)? {
            let kept = self.kept();
            if let Some(listing) = kept.newest.as_ref().filter(|l| l.stale.is_empty()) {
                let from = listing.names.partition_point(|n| n.as_str() <= after);
                return Ok(listing.names[from..].iter().take(limit).cloned().collect());
            }
        }
        let page = |names: &[String]| -> Vec<String> {
            let from = names.partition_point(|n| n.as_str() <= after);
            names[from..].iter().take(limit).cloned().collect()
        };
        if !after.is_empty()
            && let Some(names) = self.kept().names.as_deref()
        {
            return Ok(page(names));
        }
        let names = self.names()?;
        let out = page(&names);
        self.kept().names = Some(names);
        Ok(out)
    }

    fn policy(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let p = self.policy_kept(name)?;
        p.map(|p| {
            serde_json::to_value(&p).map_err(|e| BackendError::Refused(format!("policy of `{name}`: {e}")))
        })
        .transpose()
    }

    fn set_policy(&mut self, name: &str, policy_json: &str, _now: OffsetDateTime) -> Result<bool> {
        let policy: CertificatePolicy = serde_json::from_str(policy_json).map_err(|e| {
            BackendError::Refused(format!("policy of `{name}` is not Key Vault-shaped JSON: {e}"))
        })?;
        self.touch(name)?;
        self.rt.block_on(async {
            let body: RequestContent<CertificatePolicy> =
                policy.try_into().map_err(|e| remote("update policy", name, e))?;
            match self.certs.update_certificate_policy(name, body, None).await {
                Ok(_) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(remote("update policy", name, e)),
            }
        })
    }

    fn set_enabled(&mut self, version: &VaultVersion, enabled: bool, _now: OffsetDateTime) -> Result<()> {
        self.touch(&version.name)?;
        self.rt.block_on(Self::patch(
            &self.certs,
            &version.name,
            Some(&version.version),
            Some(enabled),
            None,
        ))
    }

    fn revoke(
        &mut self,
        issuer: (&str, &str),
        serial: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.local.revoke(issuer, serial, reason, now)
    }

    fn revocations(&self, issuer: &str, version: &str) -> Result<(u64, Vec<Revocation>)> {
        self.local.revocations(issuer, version)
    }

    fn next_crl_number(&mut self, issuer: &str) -> Result<u64> {
        self.local.next_crl_number(issuer)
    }

    fn tags(&self, name: &str, version: Option<&str>) -> Result<Option<Tags>> {
        let c = self.rt.block_on(Self::get(&self.certs, name, version))?;
        Ok(c.map(|c| user_tags(c.tags.as_ref())))
    }

    fn set_tags(
        &mut self,
        name: &str,
        version: Option<&str>,
        tags: &Tags,
        _now: OffsetDateTime,
    ) -> Result<()> {
        self.forget(name);
        self.rt.block_on(async {
            // Key Vault replaces all tags: keep certroll's own.
            let current = Self::get(&self.certs, name, version)
                .await?
                .ok_or_else(|| BackendError::NotFound(format!("certificate `{name}`")))?;
            let mut all: HashMap<String, String> = tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for own in OWN_TAGS {
                if let Some(value) = current.tags.as_ref().and_then(|t| t.get(own)) {
                    all.insert(own.to_string(), value.clone());
                }
            }
            Self::patch(&self.certs, name, version, None, Some(all)).await
        })
    }

    fn name_state(&self, name: &str) -> Result<Option<&'static str>> {
        self.rt.block_on(async {
            // A name whose first version waits for a merge answers with the request's
            // placeholder (no `cer`): that name is pending, as on the local vault, not live.
            if Self::get(&self.certs, name, None)
                .await?
                .is_some_and(|c| c.cer.is_some())
            {
                return Ok(Some("live"));
            }
            match self.certs.get_deleted_certificate(name, None).await {
                Ok(_) => return Ok(Some("deleted")),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(remote("get deleted certificate", name, e)),
            }
            match self.certs.get_certificate_operation(name, None).await {
                Ok(_) => Ok(Some("pending")),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(remote("get certificate operation", name, e)),
            }
        })
    }

    fn certificate_users(&self, name: &str) -> Result<CertificateUsers> {
        // The fleet record is local; certificates a version signed would need every version's
        // tags read, so only the devices are answered here.
        self.local.certificate_users(name)
    }

    fn delete_certificate(
        &mut self,
        name: &str,
        _now: OffsetDateTime,
        _purge_at: OffsetDateTime,
    ) -> Result<bool> {
        // Key Vault sets the purge date from the vault's retention, not ours.
        // It shows a deleted certificate's current version only: the others are recorded first
        // (in the unit, so a delete that fails records nothing), so certroll still knows them as
        // its own while the name is in the recycle bin (trial az10 G3).
        let versions = self.versions(name)?;
        crate::store::queries_issued::deleted_put(self.local.store().conn(), &versions)
            .map_err(BackendError::Store)?;
        self.touch(name)?;
        self.rt.block_on(async {
            match self.certs.delete_certificate(name, None).await {
                Ok(_) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(remote("delete certificate", name, e)),
            }
        })
    }

    fn deleted_certificates(&self, name: Option<&str>) -> Result<Vec<DeletedCertificate>> {
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_string()],
            None => self.rt.block_on(async {
                let pager = self
                    .certs
                    .list_deleted_certificate_properties(None)
                    .map_err(|e| remote("list deleted certificates", "*", e))?;
                let items: Vec<_> = pager
                    .try_collect()
                    .await
                    .map_err(|e| remote("list deleted certificates", "*", e))?;
                let mut names: Vec<String> = items
                    .into_iter()
                    .filter_map(|d| d.id)
                    .map(|id| name_of(&id))
                    .collect();
                names.sort();
                Ok::<_, BackendError>(names)
            })?,
        };
        let mut out = Vec::new();
        for n in names {
            let d = self.rt.block_on(async {
                match self.certs.get_deleted_certificate(&n, None).await {
                    Ok(r) => model(r, "get deleted certificate", &n).map(Some),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(remote("get deleted certificate", &n, e)),
                }
            })?;
            let Some(d) = d else { continue };
            let key = key_facts(d.policy.as_ref());
            let version = Parts {
                cer: d.cer.as_ref(),
                attributes: d.attributes.as_ref(),
                id: d.id.as_deref(),
                tags: d.tags.as_ref(),
            }
            .version(&n, &key)?;
            // The versions recorded when certroll deleted it, the one Key Vault shows last.
            let mut versions = crate::store::queries_issued::deleted_of(self.local.store().conn(), &n)
                .map_err(BackendError::Store)?;
            versions.retain(|v| v.version != version.version);
            let (deleted, scheduled_purge) = (
                d.deleted_date.unwrap_or(version.created),
                d.scheduled_purge_date.unwrap_or(version.exp),
            );
            versions.push(version);
            out.push(DeletedCertificate {
                name: n,
                deleted,
                scheduled_purge,
                tags: user_tags(d.tags.as_ref()),
                versions,
            });
        }
        Ok(out)
    }

    fn recover_certificate(&mut self, name: &str) -> Result<bool> {
        self.touch(name)?;
        let conn = self.local.store().conn();
        self.rt.block_on(async {
            match self.certs.recover_deleted_certificate(name, None).await {
                // Back in the vault: neither deleted nor purged (a purge that failed after its
                // record, trial az12 F3).
                Ok(_) => crate::store::queries_issued::purged_unmark(conn, name)
                    .and_then(|()| crate::store::queries_issued::deleted_forget(conn, name))
                    .map(|()| true)
                    .map_err(BackendError::Store),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(remote("recover certificate", name, e)),
            }
        })
    }

    fn purge_certificate(&mut self, name: &str) -> Result<bool> {
        // DPS slots name certificates by thumbprint only, and the devices keep theirs: certroll
        // must still know every purged version as its own (trial az12 F3), so they are recorded
        // before the purge, where a stop right after it cannot lose them.
        let versions: Vec<VaultVersion> = self
            .deleted_certificates(Some(name))?
            .into_iter()
            .flat_map(|d| d.versions)
            .collect();
        let conn = self.local.store().conn();
        crate::store::queries_issued::purged_put(conn, &versions).map_err(BackendError::Store)?;
        self.touch(name)?;
        self.rt.block_on(async {
            match self.certs.purge_deleted_certificate(name, None).await {
                Ok(_) => crate::store::queries_issued::deleted_forget(conn, name)
                    .map(|()| true)
                    .map_err(BackendError::Store),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => {
                    // Still in the recycle bin: not purged after all.
                    if let Err(unmark) = crate::store::queries_issued::purged_unmark(conn, name) {
                        tracing::warn!("cannot unrecord the purge of `{name}`: {unmark}");
                    }
                    Err(remote("purge certificate", name, e))
                }
            }
        })
    }

    fn backup_certificate(&self, name: &str) -> Result<Option<CertificateBackup>> {
        // Key Vault hands out its own opaque blob (`backup_blob`), never the keys.
        Err(BackendError::Refused(format!(
            "`{name}`: Key Vault backs up through its own backup blob only"
        )))
    }

    fn restore_certificate(&mut self, backup: &CertificateBackup) -> Result<()> {
        Err(BackendError::Refused(format!(
            "`{}`: this backup was made from a local store and restores only into one; Key Vault \
             restores only its own backups (`certroll vault import` brings a certificate with its key in)",
            backup.name
        )))
    }

    fn contacts(&self) -> Result<Option<Vec<String>>> {
        self.rt.block_on(async {
            match self.certs.get_contacts(None).await {
                Ok(r) => {
                    let c: Contacts = model(r, "get contacts", "contacts")?;
                    Ok(Some(
                        c.contact_list
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|c| c.email)
                            .collect(),
                    ))
                }
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(remote("get contacts", "contacts", e)),
            }
        })
    }

    fn set_contacts(&mut self, emails: Option<&[String]>) -> Result<()> {
        self.rt.block_on(async {
            match emails {
                Some(emails) => {
                    let contacts = Contacts {
                        contact_list: Some(
                            emails
                                .iter()
                                .map(|e| Contact {
                                    email: Some(e.clone()),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    };
                    let body: RequestContent<Contacts> = contacts
                        .try_into()
                        .map_err(|e| remote("set contacts", "contacts", e))?;
                    self.certs
                        .set_contacts(body, None)
                        .await
                        .map_err(|e| remote("set contacts", "contacts", e))?;
                }
                None => match self.certs.delete_contacts(None).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(remote("delete contacts", "contacts", e)),
                },
            }
            Ok(())
        })
    }

    fn issuers(&self) -> Result<Vec<IssuerConfig>> {
        self.rt.block_on(async {
            let pager = self
                .certs
                .list_issuer_properties(None)
                .map_err(|e| remote("list issuers", "*", e))?;
            let items: Vec<_> = pager
                .try_collect()
                .await
                .map_err(|e| remote("list issuers", "*", e))?;
            let mut names: Vec<String> = items
                .into_iter()
                .filter_map(|i| i.id)
                .map(|id| version_of(&id))
                .collect();
            names.sort();
            let mut out = Vec::new();
            for n in names {
                let i = match self.certs.get_issuer(&n, None).await {
                    Ok(r) => model(r, "get issuer", &n)?,
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(remote("get issuer", &n, e)),
                };
                let attrs = i.attributes.as_ref();
                let now = OffsetDateTime::UNIX_EPOCH;
                out.push(IssuerConfig {
                    name: n,
                    provider: i.provider.clone().unwrap_or_default(),
                    account_id: i.credentials.as_ref().and_then(|c| c.account_id.clone()),
                    enabled: attrs.and_then(|a| a.enabled).unwrap_or(true),
                    created: attrs.and_then(|a| a.created).unwrap_or(now),
                    updated: attrs.and_then(|a| a.updated).unwrap_or(now),
                });
            }
            Ok(out)
        })
    }

    fn put_issuer(&mut self, issuer: &IssuerConfig, _now: OffsetDateTime) -> Result<()> {
        let n = issuer.name.as_str();
        self.rt.block_on(async {
            let params = SetIssuerParameters {
                provider: Some(issuer.provider.clone()),
                credentials: issuer.account_id.as_ref().map(|a| IssuerCredentials {
                    account_id: Some(a.clone()),
                    ..Default::default()
                }),
                attributes: Some(IssuerAttributes {
                    enabled: Some(issuer.enabled),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let body: RequestContent<SetIssuerParameters> =
                params.try_into().map_err(|e| remote("set issuer", n, e))?;
            self.certs
                .set_issuer(n, body, None)
                .await
                .map_err(|e| remote("set issuer", n, e))?;
            Ok(())
        })
    }

    fn delete_issuer(&mut self, name: &str) -> Result<bool> {
        self.rt.block_on(async {
            match self.certs.delete_issuer(name, None).await {
                Ok(_) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(remote("delete issuer", name, e)),
            }
        })
    }

    fn issuer_users(&self, issuer: &str) -> Result<Vec<String>> {
        // Key Vault cannot search policies: read each live name's policy.
        let names = self.names()?;
        let certs = self.certs.clone();
        let policies: Vec<(String, Option<CertificatePolicy>)> = self.rt.block_on(async {
            futures::stream::iter(names.into_iter().map(|n| {
                let certs = certs.clone();
                async move { Self::get_policy(&certs, &n).await.map(|p| (n, p)) }
            }))
            .buffered(self.concurrency)
            .try_collect()
            .await
        })?;
        Ok(policies
            .into_iter()
            .filter(|(_, p)| {
                p.as_ref()
                    .and_then(|p| p.issuer_parameters.as_ref())
                    .and_then(|i| i.name.as_deref())
                    == Some(issuer)
            })
            .map(|(n, _)| n)
            .collect())
    }

    fn pending(&self, name: &str) -> Result<Option<PendingCertificate>> {
        self.rt.block_on(Self::operation(&self.certs, name))
    }

    fn pending_all(&self) -> Result<Vec<PendingCertificate>> {
        // Key Vault lists a name whose first version waits for a merge only when asked to
        // include pending certificates; a name with versions may have a request too.
        let names = self.names_including_pending()?;
        let certs = self.certs.clone();
        let found: Vec<Option<PendingCertificate>> = self.rt.block_on(async {
            futures::stream::iter(names.into_iter().map(|n| {
                let certs = certs.clone();
                async move { Self::operation(&certs, &n).await }
            }))
            .buffered(self.concurrency)
            .try_collect()
            .await
        })?;
        Ok(found.into_iter().flatten().collect())
    }

    fn put_pending(&mut self, pending: &PendingCertificate, _key_pkcs8: &[u8]) -> Result<()> {
        // `create_by_vault` makes requests on Key Vault; a key made outside it never goes in.
        Err(BackendError::Refused(format!(
            "a request for `{}` is made by Key Vault itself (its create operation), never with a key from outside",
            pending.name
        )))
    }

    fn pending_key(&self, name: &str) -> Result<PrivateKey> {
        Err(BackendError::Refused(format!(
            "the key of `{name}`'s request stays in Key Vault, which merges the signed certificate"
        )))
    }

    fn delete_pending(&mut self, name: &str) -> Result<bool> {
        self.forget(name);
        self.rt.block_on(async {
            match self.certs.delete_certificate_operation(name, None).await {
                Ok(_) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(remote("delete certificate operation", name, e)),
            }
        })
    }

    fn stored_chain(&self, _name: &str, _version: &str) -> Result<Vec<Vec<u8>>> {
        // Key Vault keeps a merged chain in the version's secret, not in its certificate: the
        // chain above a version is followed through the issuer tag instead.
        Ok(Vec::new())
    }

    fn set_stored_chain(&mut self, name: &str, _version: &str, chain: &[Vec<u8>]) -> Result<()> {
        if chain.is_empty() {
            return Ok(());
        }
        Err(not_yet("stored chains", name))
    }

    fn create_by_vault(
        &mut self,
        name: &str,
        policy_json: &str,
        _now: OffsetDateTime,
    ) -> Result<Option<Created>> {
        self.create_op(name, policy_json, None).map(Some)
    }

    fn merge_pending(
        &mut self,
        pending: &PendingCertificate,
        leaf: &[u8],
        chain: &[Vec<u8>],
        issuer: Option<(&str, &str)>,
        _now: OffsetDateTime,
    ) -> Result<String> {
        let name = pending.name.as_str();
        // The merged version comes under the policy of the request, which a scan may not have read.
        self.touch(name)?;
        let mut x5c = vec![leaf.to_vec()];
        x5c.extend(chain.iter().cloned());
        // certroll's tags go in with the merge, as with an import: the version never exists
        // without the issuer that signed it or the journal step that made it.
        let mut tags = HashMap::new();
        if let Some((n, v)) = issuer {
            tags.insert(ISSUER_TAG.to_string(), format!("{n}/{v}"));
        }
        if let Some(marker) = &self.marker {
            tags.insert(STEP_TAG.to_string(), marker.clone());
        }
        let params = MergeCertificateParameters {
            x509_certificates: Some(x5c),
            tags: (!tags.is_empty()).then_some(tags),
            ..Default::default()
        };
        self.rt.block_on(async {
            let body: RequestContent<MergeCertificateParameters> = params
                .try_into()
                .map_err(|e| remote("merge certificate", name, e))?;
            let c: Certificate = model(
                self.certs
                    .merge_certificate(name, body, None)
                    .await
                    .map_err(|e| remote("merge certificate", name, e))?,
                "merge certificate",
                name,
            )?;
            vault_write_fault_point();
            Ok(version_of(c.id.as_deref().unwrap_or_default()))
        })
    }

    fn makes_own_keys(&self) -> bool {
        true
    }

    fn key_holder(
        &mut self,
        name: &str,
        make: Option<&str>,
        _now: OffsetDateTime,
    ) -> Result<Option<VaultVersion>> {
        // A holder a cut-off run made (no older than every version of the root) is this
        // root's: a rerun goes on with it rather than making a second key. One the caller
        // cannot use (disabled, no request over its key) gives way to a new one.
        let (holders, current) = self.rt.block_on(self.key_holders(name))?;
        let found = match (holders.last().filter(|_| current), make) {
            (Some(h), None) => h.version.clone(),
            (Some(h), Some(_)) if h.enabled => h.version.clone(),
            (_, None) => return Ok(None),
            (_, Some(policy_json)) => {
                let tags = HashMap::from([(KEY_HOLDER_TAG.to_string(), "true".to_string())]);
                match self.create_op(name, policy_json, Some(tags))? {
                    Created::Version(v) => {
                        vault_write_fault_point();
                        v
                    }
                    Created::Pending(_) => {
                        return Err(BackendError::Refused(format!(
                            "Key Vault's create of `{name}`'s key holder (issuer Self) left a request instead of a version"
                        )));
                    }
                }
            }
        };
        let c = self
            .rt
            .block_on(Self::get(&self.certs, name, Some(&found)))?
            .ok_or_else(|| BackendError::NotFound(format!("certificate `{name}` version {found}")))?;
        // Its key never leaves the vault, whatever the name's policy says by now.
        let policy = match make {
            Some(doc) => Some(parse_policy(name, doc)?),
            None => self.rt.block_on(Self::get_policy(&self.certs, name))?,
        };
        to_version(name, &c, &(key_facts(policy.as_ref()).0, false)).map(Some)
    }

    fn retire_key_holders(&mut self, name: &str, _now: OffsetDateTime) -> Result<()> {
        let (holders, _) = self.rt.block_on(self.key_holders(name))?;
        let enabled: Vec<ListedVersion> = holders.into_iter().filter(|h| h.enabled).collect();
        if enabled.is_empty() {
            return Ok(());
        }
        self.touch(name)?;
        for h in enabled {
            self.rt.block_on(Self::patch(
                &self.certs,
                name,
                Some(&h.version),
                Some(false),
                None,
            ))?;
            vault_write_fault_point();
        }
        Ok(())
    }

    fn is_key_holder_version(&self, name: &str, version: &str) -> Result<bool> {
        // Only a root's name has holders: a device's export reads nothing more.
        if !is_ca_name(name) {
            return Ok(false);
        }
        let (holders, _) = self.rt.block_on(self.key_holders(name))?;
        Ok(holders.iter().any(|h| h.version == version))
    }

    fn mark_new_versions(&mut self, marker: Option<&str>) {
        self.marker = marker.map(str::to_string);
    }

    fn versions_marked(&self, names: &[String]) -> Result<Vec<Option<VaultVersion>>> {
        let Some(marker) = self.marker.clone() else {
            return Ok(vec![None; names.len()]);
        };
        self.rt.block_on(async {
            futures::stream::iter(names.iter().map(|n| {
                let marker = marker.clone();
                async move { self.marked(n, &marker).await }
            }))
            .buffered(self.concurrency)
            .try_collect()
            .await
        })
    }

    fn backup_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.rt.block_on(async {
            match self.certs.backup_certificate(name, None).await {
                Ok(r) => Ok(model(r, "backup certificate", name)?.value),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(remote("backup certificate", name, e)),
            }
        })
    }

    fn restore_blob(&mut self, blob: &[u8]) -> Result<Option<String>> {
        let params = RestoreCertificateParameters {
            certificate_backup: Some(blob.to_vec()),
        };
        self.rt
            .block_on(async {
                let body: RequestContent<RestoreCertificateParameters> = params
                    .try_into()
                    .map_err(|e| remote("restore certificate", "backup", e))?;
                let c: Certificate = model(
                    self.certs
                        .restore_certificate(body, None)
                        .await
                        .map_err(|e| remote("restore certificate", "backup", e))?,
                    "restore certificate",
                    "backup",
                )?;
                Ok::<_, BackendError>(name_of(c.id.as_deref().unwrap_or_default()))
            })
            .and_then(|name| {
                // The restored newest version may be one a scan saw, under another policy.
                self.touch(&name)?;
                Ok(Some(name))
            })
    }
}

/// A policy document (Key Vault's shape, as certroll writes it) as the SDK's model.
fn parse_policy(name: &str, policy_json: &str) -> Result<CertificatePolicy> {
    serde_json::from_str(policy_json)
        .map_err(|e| BackendError::Refused(format!("policy of `{name}` is not Key Vault-shaped JSON: {e}")))
}

/// A Key Vault certificate operation as certroll's request: only while it waits for a merge
/// (status `inProgress` with a CSR).
fn pending_of(
    name: &str,
    op: &CertificateOperation,
    policy_json: &str,
    key: (String, bool),
    created: Option<OffsetDateTime>,
) -> Result<Option<PendingCertificate>> {
    let waiting = op
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("inProgress"));
    let Some(csr) = op.csr.clone().filter(|_| waiting) else {
        return Ok(None);
    };
    Ok(Some(PendingCertificate {
        name: name.to_string(),
        request_id: op.request_id.clone().unwrap_or_default(),
        csr_der: csr,
        kty: key.0,
        exportable: key.1,
        policy_json: policy_json.to_string(),
        issuer: op
            .issuer_parameters
            .as_ref()
            .and_then(|i| i.name.clone())
            .unwrap_or_else(|| "Unknown".into()),
        created,
    }))
}

fn not_yet(what: &str, name: &str) -> BackendError {
    BackendError::Refused(format!(
        "{what} (`{name}`) are not available on the azure backend yet (issue 12)"
    ))
}

// ------------------------------------------------------------------ signing in the vault

/// An `rcgen::SigningKey` whose private half stays in Key Vault: `sign` hashes the message and
/// asks the keys client to sign the digest (ES256/384/512 for EC keys, RS256 for RSA, as certroll
/// signs with a key it holds), then encodes the signature as X.509 wants it (ECDSA: Key Vault's
/// `r || s` as a DER `Ecdsa-Sig-Value`, RFC 3279 2.2.3; RSA: as is).
///
/// `sign` is blocking: it runs the request on the vault's runtime and waits for it, so it may be
/// called from any thread, rayon's included, and never from inside an async task of that runtime.
pub struct KeyVaultSigningKey {
    rt: tokio::runtime::Handle,
    keys: Arc<KeyClient>,
    name: String,
    version: String,
    /// The raw public key (EC point or PKCS#1 RSAPublicKey), from the version's certificate.
    public: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    kv_algorithm: SignatureAlgorithm,
    digest: &'static aws_lc_rs::digest::Algorithm,
    ecdsa: bool,
    /// Requests in flight at most (the plan's Key Vault `concurrency`).
    concurrency: usize,
    /// The first failure not yet reported (rcgen's error carries no reason).
    failure: std::sync::Mutex<Option<String>>,
}

impl KeyVaultSigningKey {
    fn new(
        rt: tokio::runtime::Handle,
        keys: Arc<KeyClient>,
        name: &str,
        version: &str,
        cert_der: &[u8],
        concurrency: usize,
    ) -> Result<KeyVaultSigningKey> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| {
            BackendError::Pki(crate::pki::Error::BadCertificate(crate::pki::x509_parse_error(
                &e,
            )))
        })?;
        Self::from_spki(rt, keys, name, version, cert.public_key().raw, concurrency)
    }

    /// As [`new`](Self::new), for the key a SubjectPublicKeyInfo (DER) names.
    fn from_spki(
        rt: tokio::runtime::Handle,
        keys: Arc<KeyClient>,
        name: &str,
        version: &str,
        spki_der: &[u8],
        concurrency: usize,
    ) -> Result<KeyVaultSigningKey> {
        use x509_parser::prelude::*;
        let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| {
            BackendError::Pki(crate::pki::Error::BadKey(format!(
                "the public key of `{name}` is unreadable: {e}"
            )))
        })?;
        let spki = &spki;
        let public = spki.subject_public_key.data.to_vec();
        let oid = spki.algorithm.algorithm.to_id_string();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        use aws_lc_rs::digest::{SHA256, SHA384, SHA512};
        let (algorithm, kv_algorithm, digest, ecdsa): (&'static rcgen::SignatureAlgorithm, _, _, _) =
            match (oid.as_str(), curve.as_deref()) {
                ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => (
                    &rcgen::PKCS_ECDSA_P256_SHA256,
                    SignatureAlgorithm::Es256,
                    &SHA256,
                    true,
                ),
                ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => (
                    &rcgen::PKCS_ECDSA_P384_SHA384,
                    SignatureAlgorithm::Es384,
                    &SHA384,
                    true,
                ),
                ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => (
                    &rcgen::PKCS_ECDSA_P521_SHA512,
                    SignatureAlgorithm::Es512,
                    &SHA512,
                    true,
                ),
                ("1.2.840.113549.1.1.1", _) => {
                    (&rcgen::PKCS_RSA_SHA256, SignatureAlgorithm::Rs256, &SHA256, false)
                }
                _ => {
                    return Err(BackendError::Refused(format!(
                        "the key of `{name}` ({oid}) cannot sign through Key Vault"
                    )));
                }
            };
        Ok(KeyVaultSigningKey {
            rt,
            keys,
            name: name.to_string(),
            version: version.to_string(),
            public,
            algorithm,
            kv_algorithm,
            digest,
            ecdsa,
            concurrency,
            failure: std::sync::Mutex::new(None),
        })
    }

    /// Keeps the first failure for [`take_failure`](crate::pki::cert::RemoteSigningKey::take_failure).
    fn failed(&self, why: String) -> rcgen::Error {
        if let Ok(mut slot) = self.failure.lock()
            && slot.is_none()
        {
            *slot = Some(why);
        }
        rcgen::Error::RemoteKeyError
    }
}

impl rcgen::PublicKeyData for KeyVaultSigningKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for KeyVaultSigningKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let digest = aws_lc_rs::digest::digest(self.digest, msg);
        let params = SignParameters {
            algorithm: Some(self.kv_algorithm.clone()),
            value: Some(digest.as_ref().to_vec()),
        };
        let keys = self.keys.clone();
        let (name, version) = (self.name.clone(), self.version.clone());
        // Spawned onto the vault's runtime and waited for here: unlike `Handle::block_on`, this
        // never panics when the calling thread is itself inside a runtime.
        let request = self.rt.spawn(async move {
            let body: RequestContent<SignParameters> = params.try_into()?;
            let options = KeyClientSignOptions {
                key_version: Some(version),
                ..Default::default()
            };
            keys.sign(&name, body, Some(options)).await?.into_model()
        });
        let raw = match futures::executor::block_on(request) {
            Ok(Ok(r)) => r.result.unwrap_or_default(),
            Ok(Err(e)) => return Err(self.failed(remote("sign", &self.name, e).to_string())),
            Err(e) => {
                return Err(self.failed(format!(
                    "Key Vault sign `{}` failed: the request did not finish: {e}",
                    self.name
                )));
            }
        };
        if !self.ecdsa {
            return Ok(raw);
        }
        // Key Vault returns r || s, each the size of the curve's order; X.509 carries
        // SEQUENCE { r INTEGER, s INTEGER }.
        if raw.is_empty() || raw.len() % 2 != 0 {
            return Err(self.failed(format!(
                "Key Vault sign `{}` answered a {}-byte ECDSA signature, not r || s",
                self.name,
                raw.len()
            )));
        }
        let (r, s) = raw.split_at(raw.len() / 2);
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_bigint_bytes(r, true);
                w.next().write_bigint_bytes(s, true);
            })
        }))
    }
}

impl crate::pki::cert::RemoteSigningKey for KeyVaultSigningKey {
    fn take_failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|mut slot| slot.take())
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }
}
