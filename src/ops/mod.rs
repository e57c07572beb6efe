//! One module per verb. An op takes the validated plan, a backend and the time, and returns a
//! report; it never prints and never reads the clock itself.

pub mod check;
pub mod export;
pub mod held;
pub mod init;
pub mod issue;
pub mod journal;
pub mod lifetime;
pub mod outfile;
pub mod rekey;
pub mod reprovision;
pub mod revoke;
pub mod roll;
pub mod status;
pub mod vault;

use crate::backend::Backend;
use crate::backend::local::LocalBackend;
use crate::error::input;
use crate::pki::cert::IssuerKey;
use crate::pki::spec::{KeySpec, KeyUsage};
use crate::plan::{BackendConfig, Plan, Policy};
use crate::store::{OpenOptions, Store};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::time::Duration;

pub use export::{ExportFormat, ExportOptions, export};
pub use held::{Held, held_many};
pub use issue::{IssueOptions, IssueReport, issue};

/// What a verb acts on: `ca:NAME`, `group:NAME`, `enrollment:NAME` or `device:ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A certificate authority of the plan.
    Ca(String),
    /// An enrollment group.
    Group(String),
    /// An individual enrollment.
    Enrollment(String),
    /// One device.
    Device(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ca(n) => write!(f, "ca:{n}"),
            Target::Group(n) => write!(f, "group:{n}"),
            Target::Enrollment(n) => write!(f, "enrollment:{n}"),
            Target::Device(n) => write!(f, "device:{n}"),
        }
    }
}

impl Target {
    /// Parses `kind:name`.
    pub fn parse(text: &str) -> std::result::Result<Target, String> {
        let shown = crate::error::snippet(text);
        let (kind, name) = text.split_once(':').ok_or_else(|| {
            format!("target `{shown}` must be ca:NAME, group:NAME, enrollment:NAME or device:ID")
        })?;
        if name.is_empty() {
            return Err(format!("target `{shown}` has an empty name"));
        }
        Ok(match kind {
            "ca" => Target::Ca(name.into()),
            "group" => Target::Group(name.into()),
            "enrollment" => Target::Enrollment(name.into()),
            "device" => Target::Device(name.into()),
            other => {
                return Err(format!(
                    "target kind `{}` in `{shown}` is not one of ca, group, enrollment, device",
                    crate::error::snippet(other)
                ));
            }
        })
    }

    /// Checks that the target names something the plan declares.
    pub fn check(&self, plan: &Plan) -> Result<()> {
        let known = match self {
            Target::Ca(n) => plan.cas.iter().any(|c| &c.name == n),
            Target::Group(n) => plan.groups.contains_key(n),
            Target::Enrollment(n) => plan.enrollments.contains_key(n),
            Target::Device(id) => device_owner(plan, id).is_some(),
        };
        if known {
            Ok(())
        } else {
            Err(input(format!(
                "{}: target `{}` is not declared in the plan{}",
                plan.path.display(),
                crate::error::snippet(&self.to_string()),
                self.hint(plan)
            )))
        }
    }

    /// What an undeclared target may have meant: a generated device id written without its
    /// zero padding (`sensor-3` for `sensor-03`: ids take the width of the group's count), or
    /// the names the plan declares of that kind, when there are few enough to read.
    fn hint(&self, plan: &Plan) -> String {
        let names: Vec<&str> = match self {
            Target::Device(id) => {
                return plan
                    .groups
                    .values()
                    .find_map(|g| match &g.devices {
                        crate::plan::DeviceSource::Generated { prefix, count } => id
                            .strip_prefix(prefix.as_str())
                            .and_then(|digits| digits.parse::<u64>().ok())
                            .filter(|n| (1..=*count).contains(n))
                            .map(|n| {
                                let width = count.to_string().len();
                                format!(
                                    "; did you mean `device:{prefix}{n:0width$}`? (group `{}` numbers its \
                                     devices to the width of its count)",
                                    g.name
                                )
                            }),
                        crate::plan::DeviceSource::File { .. } => None,
                    })
                    .unwrap_or_default();
            }
            Target::Ca(_) => plan.cas.iter().map(|c| c.name.as_str()).collect(),
            Target::Group(_) => plan.groups.keys().map(String::as_str).collect(),
            Target::Enrollment(_) => plan.enrollments.keys().map(String::as_str).collect(),
        };
        let kind = self.to_string();
        let kind = kind.split(':').next().unwrap_or_default();
        match names.len() {
            0 => format!("; it declares no {kind} target"),
            1..=12 => format!(
                "; it declares {}",
                names
                    .iter()
                    .map(|n| format!("`{kind}:{}`", crate::error::snippet(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        }
    }
}

/// Which group or enrollment declares a device id.
pub fn device_owner<'p>(plan: &'p Plan, id: &str) -> Option<DeviceOwner<'p>> {
    if let Some(e) = plan.enrollments.get(id) {
        return Some(DeviceOwner::Enrollment(e));
    }
    plan.groups
        .values()
        .find(|g| group_has_device(g, id))
        .map(DeviceOwner::Group)
}

pub(crate) fn group_has_device(group: &crate::plan::GroupSpec, id: &str) -> bool {
    match &group.devices {
        crate::plan::DeviceSource::Generated { prefix, count } => {
            let width = count.to_string().len();
            id.strip_prefix(prefix.as_str())
                .filter(|digits| digits.len() == width && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok())
                .is_some_and(|n| n >= 1 && n <= *count)
        }
        crate::plan::DeviceSource::File { ids, .. } => ids.iter().any(|i| i == id),
    }
}

/// The declaration a device comes from.
#[derive(Debug, Clone, Copy)]
pub enum DeviceOwner<'p> {
    /// A member of an enrollment group.
    Group(&'p crate::plan::GroupSpec),
    /// An individual enrollment.
    Enrollment(&'p crate::plan::EnrollmentSpec),
}

/// The vault certificate names of CAs and devices: the rule lives in [`crate::backend::types`],
/// below the verbs, because the azure backend and serve use it too.
pub use crate::backend::types::{ca_cert_name, device_cert_name};

/// The name under which the enrollment service holds version `index` (from 1) of a root CA: the
/// first under the CA's own name, later ones with `-vN`, so a rolled root sits next to the old
/// one until that expires.
pub fn service_ca_name(ca: &str, index: usize) -> String {
    if index <= 1 {
        ca.to_string()
    } else {
        format!("{ca}-v{index}")
    }
}

/// How a verb opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; the store must exist.
    Read,
    /// Create if missing, take the writer lock.
    Write,
    /// Take the writer lock; the store must exist (a verb that changes what `issue` made).
    Modify,
    /// A dry run: read the store if it exists, else an empty in-memory one.
    Preview,
}

/// Settings from the command line that decide how the backend is opened.
#[derive(Debug, Clone, Default)]
pub struct BackendSettings {
    /// Overrides the plan's store key file.
    pub key_file: Option<PathBuf>,
    /// How long to wait for another writer.
    pub lock_timeout: Option<Duration>,
}

/// The most devices one signing task takes at a time (key generation, signature and path
/// validation: about 3 ms for 32 EC P-256 devices). A chunk is signed on every core while one
/// core also writes the previous chunk; pieces this small leave that core something to take
/// when its writes end, instead of waiting while the other core finishes a quarter of the chunk.
pub const SIGNING_PIECE: usize = 32;

/// Devices per unit of work (one transaction of the store, one journal step of a roll) on the
/// local backend: large enough to amortise a transaction, small enough to stream.
pub const UNIT_DEVICES: usize = 2048;

/// About how many seconds of Key Vault key creations (at the plan's `vault_rate`) one unit of
/// devices holds on azure, above [`AZURE_UNIT_MIN`].
pub const AZURE_UNIT_SECS: f64 = 10.0;

/// The fewest devices in a unit on azure: a unit's reads of DPS and the hub stay page reads
/// (the DPS client reads 50 enrollments or more by its listing and fewer one GET each; a hub
/// registry query takes 100 ids), so smaller units would cost requests per device.
pub const AZURE_UNIT_MIN: usize = 100;

/// Devices per unit of work for `plan`: [`UNIT_DEVICES`] on the local backend. On azure a
/// unit's deliveries start when its imports are done (the services then hold everything its
/// devices need), and Key Vault paces imports at `vault_rate` (2 a second by default): 2,048
/// devices would deliver nothing for 17 minutes. So a unit holds [`AZURE_UNIT_SECS`] of imports
/// at that rate, at least [`AZURE_UNIT_MIN`] and at most [`UNIT_DEVICES`] devices (100 at 2 a
/// second: the first deliveries after about 40 s, while the later units' imports go on).
pub fn unit_devices(plan: &Plan) -> usize {
    let Some(azure) = &plan.azure else {
        return UNIT_DEVICES;
    };
    let rate = azure
        .vault_limits
        .rate
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(crate::backend::azure::DEFAULT_VAULT_RATE);
    let n = (rate * AZURE_UNIT_SECS).ceil().min(UNIT_DEVICES as f64) as usize;
    n.clamp(AZURE_UNIT_MIN, UNIT_DEVICES)
}

/// The verbs that run on `kind = "azure"` today, each proven end to end against `certroll serve`
/// by the verb conformance suite (tests/it/azure_verbs.rs, tests/it/azure_verbs2.rs,
/// tests/it/azure_notify.rs).
pub const AZURE_VERBS: &[&str] = &[
    "vault",
    "export",
    "status",
    "check",
    "issue",
    "roll-secondary",
    "roll-secondary --due",
    "roll-secondary --breach",
    "roll-primary",
    "roll-primary --due",
    "roll-primary --breach",
    "revoke",
    "reprovision",
    "notify",
];

/// Refuses a plan with `kind = "azure"` for a verb that does not run on it yet (exit 2): a verb
/// that reached Key Vault but not DPS or the hub would leave the fleet half-rolled.
pub fn refuse_azure(plan: &Plan) -> Result<()> {
    refuse_azure_verb(plan, "this verb")
}

fn refuse_azure_verb(plan: &Plan, verb: &str) -> Result<()> {
    if plan.azure.is_some() {
        return Err(crate::error::input(format!(
            "{}: `{verb}` does not run on backend kind `azure` yet: what it needs on Azure (the \
             Device Provisioning Service and IoT Hub clients, remote delivery and resume of its \
             steps) is not proven end to end yet; on azure today: {}; use `kind = \"local\"`, or \
             rehearse against `certroll serve`",
            plan.path.display(),
            AZURE_VERBS
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Refuses (exit 2) an azure plan that cannot carry out `verb` on its devices: groups or
/// enrollments but no `dps`, or a hub named by a group or enrollment without its
/// `[backend.hubs.NAME]` (at the `hub = "..."` that names it). Checked before anything is
/// touched, and by `validate` (trial az12 F8), since every verb but `vault` and `export`
/// needs them. Ok for a local plan.
pub fn azure_services_named(plan: &Plan, verb: &str) -> Result<()> {
    if let Some(config) = &plan.azure {
        let who = match verb {
            "validate" => "every verb but `vault` and `export`".to_string(),
            verb => format!("`{verb}`"),
        };
        // Checked before anything is touched: a verb that reached Key Vault and then found no
        // DPS or hub to go on with would leave its work half done.
        let has_devices = !plan.groups.is_empty() || !plan.enrollments.is_empty();
        if has_devices && config.dps.is_none() {
            return Err(input(format!(
                "{}: {who} on backend kind `azure` needs `dps = {{ host, id_scope, resource_id, \
                 sas_policy, sas_key_env }}` in [backend]: the plan has groups or enrollments",
                plan.path.display()
            )));
        }
        let hubs = plan
            .groups
            .iter()
            .map(|(name, g)| (format!("groups.{name}.hub"), &g.hub))
            .chain(
                plan.enrollments
                    .iter()
                    .map(|(name, e)| (format!("enrollments.{name}.hub"), &e.hub)),
            );
        for (key, hub) in hubs {
            if !config.hubs.contains_key(hub) {
                // At the `hub = "..."` that names it: the table is missing, or the name misspelt.
                let at = match config.places.get(&key) {
                    Some(place) => place.to_string(),
                    None => plan.path.display().to_string(),
                };
                return Err(input(format!(
                    "{at}: {who} on backend kind `azure` needs `[backend.hubs.{hub}]` (host, \
                     sas_policy, sas_key_env): the plan assigns devices to hub `{hub}` ({key})"
                )));
            }
        }
    }
    Ok(())
}

/// Opens the backend a verb works against: the local store, or for `kind = "azure"` the Azure
/// services with the fleet record and journal in the local store beside the plan
/// ([`AzureBackend`](crate::backend::azure::AzureBackend)). `verb` must be in [`AZURE_VERBS`]
/// for an azure plan; any other is refused (exit 2) naming what is missing.
pub fn open_verb_backend(
    plan: &Plan,
    verb: &str,
    access: Access,
    settings: &BackendSettings,
) -> Result<Box<dyn Backend>> {
    if plan.azure.is_none() {
        return Ok(Box::new(open_backend(plan, access, settings)?));
    }
    if !AZURE_VERBS.contains(&verb) {
        refuse_azure_verb(plan, verb)?;
    }
    if verb != "vault" && verb != "export" {
        azure_services_named(plan, verb)?;
    }
    let local = LocalBackend::new(open_local_store(plan, access, settings)?);
    let backend = crate::backend::azure::AzureBackend::connect(plan, local).map_err(|e| {
        let text = match &plan.azure {
            Some(config) => e.told(&plan.path, config),
            None => format!("{}: {e}", plan.path.display()),
        };
        if e.is_input() {
            crate::error::input(text)
        } else {
            anyhow::anyhow!(text)
        }
    })?;
    Ok(Box::new(backend))
}

/// How the plan's store is opened for `access`.
pub fn store_options(plan: &Plan, access: Access, settings: &BackendSettings) -> OpenOptions {
    let BackendConfig::Local { path, key_file } = &plan.backend;
    OpenOptions {
        path: path.clone(),
        key_file: settings.key_file.clone().or_else(|| key_file.clone()),
        create: access == Access::Write,
        write: matches!(access, Access::Write | Access::Modify),
        lock_timeout: settings.lock_timeout.unwrap_or(Duration::from_secs(30)),
    }
}

/// Opens the plan's store.
pub fn open_store(plan: &Plan, access: Access, settings: &BackendSettings) -> Result<Store> {
    refuse_azure(plan)?;
    open_local_store(plan, access, settings)
}

/// Opens the store beside the plan, whatever the backend kind (on azure it keeps the fleet
/// record, the journal and CRL numbers).
fn open_local_store(plan: &Plan, access: Access, settings: &BackendSettings) -> Result<Store> {
    let BackendConfig::Local { path, .. } = &plan.backend;
    if access == Access::Preview && !path.exists() {
        return Ok(Store::open_empty()?);
    }
    let opts = store_options(plan, access, settings);
    Store::open(&opts).with_context(|| format!("opening the store of {}", plan.path.display()))
}

/// Opens the plan's backend.
pub fn open_backend(plan: &Plan, access: Access, settings: &BackendSettings) -> Result<LocalBackend> {
    Ok(LocalBackend::new(open_store(plan, access, settings)?))
}

/// A CA ready to sign, with the chain that goes with what it signs.
pub struct LoadedIssuer {
    /// The vault certificate name of the CA.
    pub cert_name: String,
    /// The CA version.
    pub version: String,
    /// The signing key and certificate.
    pub key: IssuerKey,
    /// Certificates to present after a leaf: this CA and its issuers, excluding the root.
    pub chain: Vec<Vec<u8>>,
    /// The CA's notAfter (leaves are clamped to it).
    pub not_after: time::OffsetDateTime,
}

/// Loads the current version of a CA with its key, for signing.
pub fn load_issuer(backend: &dyn Backend, ca: &str) -> Result<LoadedIssuer> {
    let cert_name = ca_cert_name(ca);
    let Some(current) = backend.current(&cert_name)? else {
        anyhow::bail!(
            "CA `{ca}` has no certificate in the vault (purged, or never issued); `certroll issue ca:{ca}` issues one"
        );
    };
    if !current.enabled {
        // Not an input error: earlier steps of the run may have been done; a rerun resumes.
        // Never advise re-enabling it: `revoke ca:` and breaches disable a CA because it must not
        // be trusted again; a new version (a breach roll) is the way on.
        anyhow::bail!(
            "CA `{ca}` version {} is disabled in the vault (revoked or disabled) and signs nothing; \
             `certroll roll-primary --breach ca:{ca}` replaces it with a new CA",
            current.version
        );
    }
    let key = backend.signer(&current)?;
    let chain = chain_above(backend, &current)?;
    let mut full = vec![current.cert_der.clone()];
    full.extend(chain);
    // Drop the self-signed root: devices present their chain up to, not including, the root.
    if full.len() > 1 || current.issuer.is_some() {
        full.pop();
    } else {
        full.clear();
    }
    Ok(LoadedIssuer {
        cert_name,
        version: current.version.clone(),
        key: IssuerKey::with_signer(current.cert_der.clone(), key)?,
        chain: full,
        not_after: current.exp,
    })
}

/// For a dry run: fails as [`load_issuer`] would when the CA's current version cannot sign
/// (disabled, or its vault hands out nothing that signs with its key); Ok when the CA has no
/// version yet, which the run itself makes before it signs.
pub fn check_can_sign(backend: &dyn Backend, ca: &str) -> Result<()> {
    if backend.current(&ca_cert_name(ca))?.is_none() {
        return Ok(());
    }
    load_issuer(backend, ca).map(drop)
}

/// The certificates above a version, following the issuer links: its issuer first, the root last.
pub fn chain_above(
    backend: &dyn Backend,
    version: &crate::backend::types::VaultVersion,
) -> Result<Vec<Vec<u8>>> {
    let mut chain = Vec::new();
    let mut next = version.issuer.clone();
    while let Some((name, ver)) = next {
        if chain.len() > 16 {
            anyhow::bail!(
                "issuer chain of `{}` is longer than 16 certificates",
                version.name
            );
        }
        let v = backend.version(&name, &ver)?.map(Ok).unwrap_or_else(|| {
            let deleted = backend.deleted_certificates(Some(&name))?;
            Err(crate::backend::missing_issuer(&name, &ver, deleted.first()))
        })?;
        chain.push(v.cert_der.clone());
        next = v.issuer.clone();
    }
    Ok(chain)
}

/// The key usage a policy puts into certificates, with Key Vault's default (for an EC key,
/// digitalSignature alone: RFC 8813 keeps keyEncipherment for RSA).
pub fn effective_key_usage(policy: &Policy, is_ca: bool) -> Vec<KeyUsage> {
    let mut usage = if policy.key_usage.is_empty() {
        if is_ca {
            vec![
                KeyUsage::DigitalSignature,
                KeyUsage::KeyCertSign,
                KeyUsage::CrlSign,
            ]
        } else if matches!(policy.key, KeySpec::Ec { .. }) {
            // RFC 8813: an EC key signs or agrees on keys; it never enciphers a key.
            vec![KeyUsage::DigitalSignature]
        } else {
            vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
        }
    } else {
        policy.key_usage.clone()
    };
    if is_ca {
        for needed in [KeyUsage::KeyCertSign, KeyUsage::CrlSign] {
            if !usage.contains(&needed) {
                usage.push(needed);
            }
        }
    }
    usage.sort();
    usage.dedup();
    usage
}

/// Whether a policy's keys may leave the vault.
pub fn exportable(policy: &Policy) -> bool {
    policy.exportable && !policy.key.is_hsm()
}

/// The policy as the vault records it (Key Vault's certificate policy shape, trimmed).
pub fn policy_json(policy: &Policy, subject: &str, issuer: Option<&str>) -> String {
    use crate::plan::{ActionKind, ContentType, Trigger};
    let key_props = match policy.key {
        KeySpec::Rsa { bits, .. } => serde_json::json!({
            "kty": policy.key.kty(), "key_size": bits, "exportable": exportable(policy), "reuse_key": policy.reuse_key }),
        KeySpec::Ec { curve, .. } => serde_json::json!({
            "kty": policy.key.kty(), "crv": curve.to_string(), "exportable": exportable(policy), "reuse_key": policy.reuse_key }),
    };
    let actions: Vec<_> = policy
        .lifetime_actions
        .iter()
        .map(|a| {
            let trigger = match a.trigger {
                Trigger::DaysBeforeExpiry(d) => serde_json::json!({ "days_before_expiry": d }),
                Trigger::LifetimePercentage(p) => serde_json::json!({ "lifetime_percentage": p }),
            };
            let action = match a.action {
                ActionKind::AutoRenew => "AutoRenew",
                ActionKind::EmailContacts => "EmailContacts",
            };
            serde_json::json!({ "trigger": trigger, "action": { "action_type": action } })
        })
        .collect();
    serde_json::json!({
        "name": policy.name,
        "key_props": key_props,
        "secret_props": { "contentType": match policy.content_type {
            ContentType::Pem => "application/x-pem-file", ContentType::Pfx => "application/x-pkcs12" } },
        "x509_props": {
            "subject": subject,
            "sans": { "dns_names": policy.dns_names },
            "key_usage": policy.key_usage.iter().map(|u| u.name()).collect::<Vec<_>>(),
            "ekus": policy.extended_key_usage.iter().map(|e| e.oid()).collect::<Vec<_>>(),
            "validity_months": null,
            "validity_days": policy.validity_days,
        },
        "issuer": { "name": issuer.unwrap_or("Self") },
        "lifetime_actions": actions,
    })
    .to_string()
}

/// Makes a new version of a plan CA in the vault (a new key; self-signed for a root, else signed
/// by its issuer's current version, clamped to the issuer's notAfter). Returns the DER. certroll
/// makes the key, unless the key is not exportable and the vault makes such keys itself (Key
/// Vault: [`Vault::makes_own_keys`](crate::backend::Vault::makes_own_keys)), when the vault's
/// create makes it and certroll certifies the request's key.
pub fn new_ca_version(
    plan: &Plan,
    ca: &crate::plan::CaSpec,
    backend: &mut dyn Backend,
    now: time::OffsetDateTime,
) -> Result<Vec<u8>> {
    use crate::backend::types::NewVersion;
    use crate::pki::cert::{CertProfile, sign_leaf, sign_self};
    let policy = &plan.policies[&ca.policy];
    let name = ca_cert_name(&ca.name);
    // A remote vault's version that this journal step made before it was cut off (a kill
    // between the vault's write and the local commit) is the step's version: a rerun adopts it
    // rather than making a second one. The local store commits a version with its step.
    if let Some(Some(made)) = backend
        .versions_marked(std::slice::from_ref(&name))?
        .into_iter()
        .next()
    {
        return Ok(made.cert_der);
    }
    let issuer = match &ca.issuer {
        Some(i) => Some(load_issuer(backend, i)?),
        None => None,
    };
    if let Some(iss) = &issuer
        && iss.not_after <= now
    {
        anyhow::bail!(
            "issuing CA `{}` expired at {}",
            ca.issuer.as_deref().unwrap_or(""),
            crate::clock::rfc3339(iss.not_after)
        );
    }
    let mut not_after = crate::clock::add_days(now, policy.validity_days as i64);
    if let Some(iss) = &issuer {
        not_after = not_after.min(iss.not_after);
    }
    let profile = CertProfile {
        subject: ca.subject.clone(),
        dns_names: policy.dns_names.clone(),
        key_usage: effective_key_usage(policy, true),
        extended_key_usage: policy.extended_key_usage.clone(),
        not_before: plan.not_before(now),
        not_after,
        ca: Some(ca.path_len),
    };
    if backend.makes_own_keys() {
        if !exportable(policy) {
            return ca_version_from_vault_key(ca, policy, &name, &profile, issuer.as_ref(), backend, now);
        }
        // A request the vault's create left waiting on the CA's name (a run cut off before its
        // merge, the plan since edited to make the key exportable) is no longer this version's
        // way in: it goes before the import, so the name is never left pending and no stale
        // request's key becomes the CA's later. The name is the plan's (`ca-NAME`).
        if backend.pending(&name)?.is_some() {
            backend.delete_pending(&name)?;
            // A root's key holder from that run signs nothing more.
            backend.retire_key_holders(&name, now)?;
        }
    }
    let key = crate::pki::PrivateKey::generate(&policy.key)?;
    let der = match &issuer {
        Some(iss) => sign_leaf(&profile, &key, &iss.key)?,
        None => sign_self(&profile, &key)?,
    };
    let policy_doc = policy_json(policy, &ca.subject.to_string(), ca.issuer.as_deref());
    backend.create_versions(
        &[NewVersion {
            name: &name,
            policy_json: &policy_doc,
            cert_der: &der,
            key_pkcs8: key.pkcs8_der(),
            kty: policy.key.kty(),
            exportable: exportable(policy),
            issuer: issuer
                .as_ref()
                .map(|i| (i.cert_name.as_str(), i.version.as_str())),
            facts: None,
            new_key: false,
        }],
        now,
    )?;
    Ok(der)
}

/// [`new_ca_version`] for a CA whose key is not exportable, on a vault that makes such keys
/// itself (Key Vault): the vault's create operation (issuer `Unknown`) makes the key and a CSR;
/// certroll builds the certificate it builds for any CA over the CSR's public key, signed by
/// the issuer's signer or, for a root, by the same key through the vault (see
/// [`root_from_key_holder`]); the merge makes it the CA's version. The key never exists
/// outside the vault.
///
/// A request already waiting on the name (a run cut off between the create and the merge) is
/// finished when it is one this would have made (a key of the policy's type that is not
/// exportable, a CSR whose signature holds); any other is deleted and a new one made, so a
/// rerun never leaves the name pending and never makes a second version.
fn ca_version_from_vault_key(
    ca: &crate::plan::CaSpec,
    policy: &crate::plan::Policy,
    name: &str,
    profile: &crate::pki::CertProfile,
    issuer: Option<&LoadedIssuer>,
    backend: &mut dyn Backend,
    now: time::OffsetDateTime,
) -> Result<Vec<u8>> {
    use crate::backend::Created;
    let Some(issuer) = issuer else {
        return root_from_key_holder(ca, policy, name, profile, backend, now);
    };
    let pending = match backend.pending(name)? {
        Some(p) if request_fits(&p, policy) => p,
        other => {
            if other.is_some() {
                backend.delete_pending(name)?;
            }
            // The request's policy: the vault makes a new key that never leaves it, and no
            // Key Vault issuer signs (certroll does).
            let mut doc: serde_json::Value =
                serde_json::from_str(&policy_json(policy, &ca.subject.to_string(), Some("Unknown")))?;
            doc["key_props"]["exportable"] = serde_json::Value::Bool(false);
            doc["key_props"]["reuse_key"] = serde_json::Value::Bool(false);
            match backend.create_by_vault(name, &doc.to_string(), now)? {
                Some(Created::Pending(p)) => p,
                Some(Created::Version(v)) => anyhow::bail!(
                    "the vault made version {v} of `{name}` itself instead of a request for certroll to sign"
                ),
                None => anyhow::bail!("the vault made no request for `{name}`"),
            }
        }
    };
    let spki = vault::pending::csr_spki(&pending.csr_der)?;
    let public = rcgen::SubjectPublicKeyInfo::from_der(&spki)
        .map_err(|e| anyhow::anyhow!("the request of `{name}` names an unusable key: {e}"))?;
    let der = crate::pki::cert::sign_public_key(profile, &public, &issuer.key)?;
    backend.merge_pending(
        &pending,
        &der,
        &issuer.chain,
        Some((issuer.cert_name.as_str(), issuer.version.as_str())),
        now,
    )?;
    plan_policy_back(ca, policy, name, backend, now)?;
    Ok(der)
}

/// A root whose key is not exportable, on a vault that makes such keys itself (Key Vault),
/// which never signs with a pending request's key (its version is disabled): as Microsoft's
/// Industrial-IoT `KeyVaultServiceClient.NewRootCertificateAsync` does,
/// 1. the vault makes a self-signed version, the key holder ([`Vault::key_holder`]);
/// 2. a `reuse_key` request (issuer `Unknown`) over the holder's key gives the CSR;
/// 3. certroll builds the root over the CSR's key, signed by the holder's completed version,
///    and disables the holder;
/// 4. the merge makes it the root's version.
///
/// The holder is disabled before the merge: once merged, the root exists and a rerun has no
/// step left to run. A rerun goes on where a run was cut off: the holder is found (step 2); a
/// waiting request over its key is finished (step 3; a holder already disabled is enabled
/// again to sign once more); a merged version is adopted by its step mark
/// ([`new_ca_version`]). Any other request on the name is deleted and a new one made.
///
/// [`Vault::key_holder`]: crate::backend::Vault::key_holder
fn root_from_key_holder(
    ca: &crate::plan::CaSpec,
    policy: &crate::plan::Policy,
    name: &str,
    profile: &crate::pki::CertProfile,
    backend: &mut dyn Backend,
    now: time::OffsetDateTime,
) -> Result<Vec<u8>> {
    use crate::backend::Created;
    let request = |issuer: &str, reuse_key: bool| -> Result<String> {
        let mut doc: serde_json::Value =
            serde_json::from_str(&policy_json(policy, &ca.subject.to_string(), Some(issuer)))?;
        doc["key_props"]["exportable"] = serde_json::Value::Bool(false);
        doc["key_props"]["reuse_key"] = serde_json::Value::Bool(reuse_key);
        if issuer == "Self" {
            // The holder's key signs certificates and CRLs: Key Vault allows a key the
            // operations its certificate's key usage names.
            doc["x509_props"]["key_usage"] = effective_key_usage(policy, true)
                .iter()
                .map(|u| u.name())
                .collect::<Vec<_>>()
                .into();
        }
        Ok(doc.to_string())
    };
    // A waiting request goes on only over the key of the holder a cut-off run made; any other
    // goes first (Key Vault makes no version while a request waits on the name).
    let found = backend.key_holder(name, None, now)?;
    let waiting = match (backend.pending(name)?, &found) {
        (Some(p), Some(h))
            if request_fits(&p, policy)
                && vault::pending::csr_spki(&p.csr_der)? == crate::pki::cert::spki_of(&h.cert_der)? =>
        {
            Some(p)
        }
        (Some(_), _) => {
            backend.delete_pending(name)?;
            None
        }
        (None, _) => None,
    };
    let mut holder = match found {
        Some(h) if h.enabled || waiting.is_some() => h,
        _ => backend
            .key_holder(name, Some(&request("Self", false)?), now)?
            .ok_or_else(|| anyhow::anyhow!("the vault made no key holder for `{name}`"))?,
    };
    let key = crate::pki::cert::spki_of(&holder.cert_der)?;
    let pending = match waiting {
        Some(p) => p,
        None => match backend.create_by_vault(name, &request("Unknown", true)?, now)? {
            Some(Created::Pending(p)) => p,
            Some(Created::Version(v)) => anyhow::bail!(
                "the vault made version {v} of `{name}` itself instead of a request for certroll to sign"
            ),
            None => anyhow::bail!("the vault made no request for `{name}`"),
        },
    };
    if vault::pending::csr_spki(&pending.csr_der)? != key {
        anyhow::bail!(
            "the vault's request for `{name}` (reuse_key) is not over the key of its key holder \
             (version {}); nothing was signed",
            holder.version
        );
    }
    if !holder.enabled {
        // Cut off after the holder was disabled, before the merge: the signed root was lost.
        backend.set_enabled(&holder, true, now)?;
        holder.enabled = true;
    }
    let der = crate::pki::cert::sign_self_with(profile, &backend.signer(&holder)?)?;
    backend.retire_key_holders(name, now)?;
    backend.merge_pending(&pending, &der, &[], None, now)?;
    plan_policy_back(ca, policy, name, backend, now)?;
    Ok(der)
}

/// Puts the plan's policy of `ca` back on its vault name after a merge. The vault's create
/// left the request's own policy there (issuer `Unknown`; for a root also `reuse_key` over its
/// key holder's key): how certroll reaches the key, not the CA the plan declares, which `vault
/// show` and Key Vault's own renewal read. The local store keeps the plan's policy from the
/// start (az8 F7 for roots, az11 F2 for intermediates).
fn plan_policy_back(
    ca: &crate::plan::CaSpec,
    policy: &crate::plan::Policy,
    name: &str,
    backend: &mut dyn Backend,
    now: time::OffsetDateTime,
) -> Result<()> {
    let plan_policy = policy_json(policy, &ca.subject.to_string(), ca.issuer.as_deref());
    backend.set_policy(name, &plan_policy, now)?;
    Ok(())
}

/// Whether a request waiting on a CA's name is one [`ca_version_from_vault_key`] makes for
/// `policy`: a key that is not exportable, of the policy's type, size and curve, named by a CSR
/// whose signature holds (the vault made it with that key).
fn request_fits(pending: &crate::backend::types::PendingCertificate, policy: &crate::plan::Policy) -> bool {
    use x509_parser::prelude::FromDer as _;
    if pending.exportable || pending.kty != policy.key.kty() {
        return false;
    }
    let Ok((_, csr)) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pending.csr_der)
    else {
        return false;
    };
    if csr.verify_signature().is_err() {
        return false;
    }
    let spki = &csr.certification_request_info.subject_pki;
    let Ok(parsed) = spki.parsed() else {
        return false;
    };
    use x509_parser::public_key::PublicKey;
    match (policy.key, parsed) {
        (KeySpec::Ec { curve, .. }, PublicKey::EC(point)) => {
            // The curve is the one the key's algorithm parameters name: a point's length alone
            // does not tell P-256 from Key Vault's P-256K (secp256k1), which no plan asks for.
            let (oid, size) = match curve {
                crate::pki::spec::Curve::P256 => ("1.2.840.10045.3.1.7", 32),
                crate::pki::spec::Curve::P384 => ("1.3.132.0.34", 48),
                crate::pki::spec::Curve::P521 => ("1.3.132.0.35", 66),
            };
            let named = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            named.as_deref() == Some(oid) && point.data().len() == 1 + 2 * size
        }
        (KeySpec::Rsa { bits, .. }, PublicKey::RSA(rsa)) => rsa.key_size() == bits as usize,
        _ => false,
    }
}

/// The vault versions installed on several devices, in the order asked (None where a device
/// holds nothing). What counts is what the device holds, not the newest version in the vault.
pub fn installed_many(
    backend: &dyn Backend,
    ids: &[String],
) -> Result<Vec<Option<crate::backend::types::VaultVersion>>> {
    Ok(installed_and_newest_many(backend, ids)?
        .into_iter()
        .map(|(installed, _)| installed)
        .collect())
}

/// [`installed_many`], each beside the newest version in the vault (read for it anyway): a
/// device that holds nothing though the vault has its certificate is one an `issue` cut off
/// part-way did not reach yet.
pub fn installed_and_newest_many(
    backend: &dyn Backend,
    ids: &[String],
) -> Result<
    Vec<(
        Option<crate::backend::types::VaultVersion>,
        Option<crate::backend::types::VaultVersion>,
    )>,
> {
    let names: Vec<String> = ids.iter().map(|id| device_cert_name(id)).collect();
    let currents = backend.current_many(&names)?;
    let devices = backend.device_many(ids)?;
    let mut out = Vec::with_capacity(ids.len());
    for ((name, current), device) in names.iter().zip(currents).zip(devices) {
        out.push(match (device.and_then(|d| d.installed_version), current) {
            (Some(v), Some(cur)) if cur.version == v => (Some(cur.clone()), Some(cur)),
            (Some(v), cur) => (backend.version(name, &v)?, cur),
            (None, cur) => (None, cur),
        });
    }
    Ok(out)
}

/// Whether a CA certificate made at `created` and ending at `exp` is not the length its policy's
/// `validity_days` gives (more than a day off either way): its issuer cut it short, or it was
/// made under a longer validity since edited. Either way a renewal its issuer's notAfter caps
/// ends no later, so none is made (issue 10 item 15). Only a CA that got its policy's full
/// length and ends with its issuer by the order they were made in (seconds apart, same
/// validity) is renewed to rotate its key.
pub(crate) fn not_policy_length(
    created: time::OffsetDateTime,
    exp: time::OffsetDateTime,
    validity_days: u32,
) -> bool {
    let full = crate::clock::add_days(created, validity_days as i64);
    crate::clock::add_days(exp, 1) < full || exp > crate::clock::add_days(full, 1)
}

/// The CA to renew first when `ca`'s notAfter caps what it signs: `ca` itself, unless its own
/// notAfter was capped by its issuer's (it ends no earlier than its issuer), in which case
/// renewing it cannot move it later and the question moves up the chain. `not_after` holds each
/// CA's current notAfter by name.
pub(crate) fn capping_ca<'a>(
    plan: &'a Plan,
    not_after: &std::collections::BTreeMap<&str, time::OffsetDateTime>,
    ca: &'a str,
) -> &'a str {
    let mut at = ca;
    // Bounded by the plan's CAs in case a chain in the plan ever loops.
    for _ in 0..plan.cas.len() {
        let Some(issuer) = plan
            .cas
            .iter()
            .find(|c| c.name == at)
            .and_then(|c| c.issuer.as_deref())
        else {
            break;
        };
        match (not_after.get(at), not_after.get(issuer)) {
            (Some(own), Some(up)) if own >= up => at = issuer,
            _ => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER PKCS#10 request for a new EC key on `curve` (openssl's name), made by openssl.
    fn csr_on(curve: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("req.der");
        let run = std::process::Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .arg(format!("ec_paramgen_curve:{curve}"))
            .args(["-nodes", "-subj", "/CN=ca-root", "-outform", "DER", "-keyout"])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(&out)
            .output()
            .expect("openssl runs");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        std::fs::read(out).unwrap()
    }

    /// A unit holds 2,048 devices on the local store; on azure ten seconds of Key Vault imports
    /// at the plan's `vault_rate`, at least 100 (page reads) and at most 2,048.
    #[test]
    fn a_unit_on_azure_holds_a_few_seconds_of_imports_at_the_vault_rate() {
        let plan = |backend: &str| {
            crate::plan::parse(
                std::path::Path::new("plan.toml"),
                &format!("version = 1\n{backend}"),
            )
            .unwrap()
        };
        assert_eq!(unit_devices(&plan("")), UNIT_DEVICES);
        let azure = |extra: &str| {
            plan(&format!(
                "[backend]\nkind = \"azure\"\nvault_url = \"https://v.vault.azure.net\"\nauth = \"azure-cli\"\n{extra}"
            ))
        };
        assert_eq!(unit_devices(&azure("")), 100);
        assert_eq!(unit_devices(&azure("vault_rate = 25\n")), 250);
        assert_eq!(unit_devices(&azure("vault_rate = 0.1\n")), 100);
        assert_eq!(unit_devices(&azure("vault_rate = 100000\n")), UNIT_DEVICES);
    }

    /// A request waiting on a CA's name is finished only when its key is the policy's: the
    /// curve named in the key's parameters counts, not the point's length, so a secp256k1 key
    /// (Key Vault's `P-256K`, 65-byte points as P-256's) is not certified for a P-256 CA.
    #[test]
    fn a_waiting_request_fits_only_a_key_on_the_policys_curve() {
        let plan = crate::plan::parse(
            std::path::Path::new("plan.toml"),
            "version = 1\n[policies.hsm]\nkey = { type = \"EC-HSM\", curve = \"P-256\" }\nvalidity_days = 30\n",
        )
        .unwrap();
        let policy = &plan.policies["hsm"];
        let pending = |csr_der: Vec<u8>| crate::backend::types::PendingCertificate {
            name: "ca-root".into(),
            request_id: "r".into(),
            csr_der,
            kty: "EC-HSM".into(),
            exportable: false,
            policy_json: "{}".into(),
            issuer: "Unknown".into(),
            created: None,
        };
        assert!(request_fits(&pending(csr_on("prime256v1")), policy));
        assert!(!request_fits(&pending(csr_on("secp256k1")), policy));
        assert!(!request_fits(&pending(csr_on("secp384r1")), policy));
    }
}
