//! The validated plan: what `plan::load` returns once every check has passed.
//!
//! Everything here is already checked (names, references, key sizes, path lengths, device ids),
//! so the verbs never re-validate. Paths are absolute (resolved against the plan's folder).

use crate::pki::spec::{ExtendedKeyUsage, KeySpec, KeyUsage, Subject};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A validated plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan file as given on the command line.
    pub path: PathBuf,
    /// Where state lives: the local store, which keeps the fleet record and the journal even
    /// when the services are remote.
    pub backend: BackendConfig,
    /// `[backend] kind = "azure"`: the remote services; `None` for the local backend.
    pub azure: Option<crate::plan::AzureConfig>,
    /// Vault-wide contacts emailed on lifetime events.
    pub contacts: Vec<String>,
    /// Certificate policies by name.
    pub policies: BTreeMap<String, Policy>,
    /// Certificate authorities in dependency order: every CA comes after its issuer.
    pub cas: Vec<CaSpec>,
    /// Enrollment groups by name.
    pub groups: BTreeMap<String, GroupSpec>,
    /// Individual enrollments by name (the name is the registration id and device id).
    pub enrollments: BTreeMap<String, EnrollmentSpec>,
    /// `[mail]`: how contacts are mailed; `None` when the plan has no `[mail]`.
    pub mail: Option<MailConfig>,
    /// `[hooks]`: the command run with each run's events; `None` when the plan has none.
    pub hooks: Option<HookConfig>,
    /// `[serve]`: what `certroll serve` emulates; the defaults when the plan has no `[serve]`.
    pub serve: ServeConfig,
    /// `not_before_skew_minutes`: how far before the moment of issue every certificate certroll
    /// makes starts (its notBefore), so a device whose clock is a little slow does not refuse a
    /// fresh one. [`Plan::DEFAULT_SKEW_MINUTES`] when the plan does not say.
    pub not_before_skew: time::Duration,
    /// How new device certificates reach devices on a backend that does not hold them.
    pub delivery: crate::plan::DeliveryPlan,
}

impl Plan {
    /// The default `not_before_skew_minutes`.
    pub const DEFAULT_SKEW_MINUTES: i64 = 5;
    /// The most `not_before_skew_minutes` may be (a day): more would make a certificate valid
    /// before it was thought of.
    pub const MAX_SKEW_MINUTES: i64 = 1440;

    /// The notBefore of a certificate made at `now`: `now` less the plan's skew.
    pub fn not_before(&self, now: time::OffsetDateTime) -> time::OffsetDateTime {
        now.saturating_sub(self.not_before_skew)
    }
}

/// `[serve]`: the names `certroll serve` answers to and the principals it admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The Key Vault name: the vault answers at `https://{vault}.vault.azure.net`.
    pub vault: String,
    /// The Device Provisioning Service name: `https://{dps}.azure-devices-provisioning.net`.
    pub dps: String,
    /// Bearer-token principals by name. Empty when the plan names none: serve then admits one
    /// principal `owner` with every permission (see [`ServeConfig::DEFAULT_TOKEN_ENV`]).
    pub principals: BTreeMap<String, PrincipalSpec>,
    /// Throttling and injected faults by service (`keyvault`, `dps`, `dps_device`, `hub`,
    /// `arm`); a service not named has none.
    pub services: BTreeMap<String, ServiceLimits>,
}

/// `[serve.services.SERVICE]`: how one emulated service misbehaves on purpose, so clients'
/// handling of Azure's limits and failures can be tested.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceLimits {
    /// Requests per second the service admits before answering 429 with `Retry-After`.
    pub rate_per_second: Option<u32>,
    /// Requests admitted at once above the rate (default: one second's worth).
    pub burst: Option<u32>,
    /// Share of requests (0 to 100) answered with `error_status` instead.
    pub error_percent: f64,
    /// The status of injected errors: 500 or 503.
    pub error_status: u16,
    /// Share of requests (0 to 100) whose connection is dropped without an answer.
    pub drop_percent: f64,
    /// How many of the service's first requests have their connection dropped without an
    /// answer, whatever else applies (0: none).
    pub drop_first: u32,
    /// Milliseconds every answer is held back.
    pub delay_ms: u32,
    /// Seconds `rate_per_second` applies, counted from the service's first request; after
    /// them the service admits every request (None: for as long as serve runs).
    pub throttle_secs: Option<u32>,
}

impl Eq for ServiceLimits {}

/// The services `[serve.services.SERVICE]` may name.
pub const SERVE_SERVICES: [&str; 5] = ["keyvault", "dps", "dps_device", "hub", "arm"];

impl ServeConfig {
    /// The vault name when the plan names none.
    pub const DEFAULT_VAULT: &'static str = "certroll";
    /// The DPS name when the plan names none.
    pub const DEFAULT_DPS: &'static str = "certroll-dps";
    /// The variable holding the default principal's token when the plan names no principals.
    pub const DEFAULT_TOKEN_ENV: &'static str = "CERTROLL_SERVE_TOKEN";
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            vault: Self::DEFAULT_VAULT.into(),
            dps: Self::DEFAULT_DPS.into(),
            principals: BTreeMap::new(),
            services: BTreeMap::new(),
        }
    }
}

/// `[serve.principals.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalSpec {
    /// The environment variable holding the principal's bearer token (never the token itself).
    pub token_env: String,
    /// What the principal may do with the vault's certificates.
    pub permissions: Vec<CertificatePermission>,
    /// Its Azure role over the DPS's ARM resource (`management.azure.com`); `None`: no ARM
    /// access at all.
    pub arm_role: Option<ArmRole>,
}

/// An Azure built-in role a `[serve]` principal holds over the emulated DPS's ARM resource
/// (`Microsoft.Devices/provisioningServices/{dps}`). Azure's Owner role acts as
/// [`ArmRole::Contributor`] here: serve has no role assignments to manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArmRole {
    /// Reader: GET and list the DPS's CA certificates (`.../certificates/read`).
    Reader,
    /// Contributor: also upload, generateVerificationCode, verify and delete them.
    Contributor,
}

impl ArmRole {
    /// The plan's spelling (`reader`, `contributor`).
    pub fn name(self) -> &'static str {
        match self {
            ArmRole::Reader => "reader",
            ArmRole::Contributor => "contributor",
        }
    }

    /// The role the plan names (case-insensitive, as Azure's role names are), if any.
    pub fn parse(text: &str) -> Option<ArmRole> {
        [ArmRole::Reader, ArmRole::Contributor]
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(text))
    }
}

/// Key Vault's sixteen certificate permissions (access policy names, lower case as Azure spells
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertificatePermission {
    /// Read a certificate, its versions, policy, pending request, key and secret.
    Get,
    /// List certificates, versions and deleted certificates.
    List,
    /// Change attributes, tags and policy; cancel or delete a pending request.
    Update,
    /// Create certificates (and merge pending ones).
    Create,
    /// Import certificates.
    Import,
    /// Soft-delete certificates.
    Delete,
    /// Recover deleted certificates.
    Recover,
    /// Back certificates up.
    Backup,
    /// Restore backups.
    Restore,
    /// Read, set and delete the vault's contacts.
    ManageContacts,
    /// Manage issuers (implies the four issuer permissions below).
    ManageIssuers,
    /// Read an issuer.
    GetIssuers,
    /// List issuers.
    ListIssuers,
    /// Create or update issuers.
    SetIssuers,
    /// Delete issuers.
    DeleteIssuers,
    /// Purge deleted certificates.
    Purge,
}

impl CertificatePermission {
    /// All sixteen, in Key Vault's order.
    pub const ALL: [CertificatePermission; 16] = [
        Self::Get,
        Self::List,
        Self::Update,
        Self::Create,
        Self::Import,
        Self::Delete,
        Self::Recover,
        Self::Backup,
        Self::Restore,
        Self::ManageContacts,
        Self::ManageIssuers,
        Self::GetIssuers,
        Self::ListIssuers,
        Self::SetIssuers,
        Self::DeleteIssuers,
        Self::Purge,
    ];

    /// Azure's name (`managecontacts`, `getissuers`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Update => "update",
            Self::Create => "create",
            Self::Import => "import",
            Self::Delete => "delete",
            Self::Recover => "recover",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::ManageContacts => "managecontacts",
            Self::ManageIssuers => "manageissuers",
            Self::GetIssuers => "getissuers",
            Self::ListIssuers => "listissuers",
            Self::SetIssuers => "setissuers",
            Self::DeleteIssuers => "deleteissuers",
            Self::Purge => "purge",
        }
    }

    /// Parses Azure's name, in any case.
    pub fn parse(text: &str) -> Option<CertificatePermission> {
        let lower = text.to_ascii_lowercase();
        Self::ALL.into_iter().find(|p| p.name() == lower)
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    StartTls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No TLS at all: for a relay on loopback (or with `allow_plaintext = true`).
    None,
}

impl SmtpTls {
    /// The plan spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }

    /// Parses the plan spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "starttls" => Some(Self::StartTls),
            "tls" => Some(Self::Tls),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// The port used when none is given: 465 for `tls`, else 587.
    pub fn default_port(&self) -> u16 {
        match self {
            SmtpTls::Tls => 465,
            _ => 587,
        }
    }
}

/// `[mail]` as the plan writes it. Every value may be overridden from the environment
/// (`CERTROLL_SMTP_*`) when mail is sent, so values the plan leaves out are `None` here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailConfig {
    /// The SMTP server's host name or address.
    pub smtp_host: Option<String>,
    /// The SMTP port; default by TLS mode.
    pub smtp_port: Option<u16>,
    /// How the connection is protected; default STARTTLS.
    pub tls: Option<SmtpTls>,
    /// Whether `tls = "none"` may be used with a host that is not loopback.
    pub allow_plaintext: bool,
    /// The SMTP user name, if the server wants a login.
    pub username: Option<String>,
    /// The name of the environment variable holding the SMTP password (never the password).
    pub password_env: Option<String>,
    /// The sender address (`certroll@example.com` or `certroll <certroll@example.com>`).
    pub from: Option<String>,
    /// PEM file of CA certificates trusted for the SMTP server besides the system's (absolute).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `[hooks]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// The program and its arguments (no shell). A program named with a `/` is resolved against
    /// the plan's folder; a bare name is looked up in `PATH`.
    pub command: Vec<String>,
    /// How long the command may run before it is killed and the delivery counts as failed.
    pub timeout_secs: u32,
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// The embedded store: one SQLite file.
    Local {
        /// The store file (absolute).
        path: PathBuf,
        /// The file holding the store key, if the plan names one (absolute).
        key_file: Option<PathBuf>,
    },
}

/// How the secret of a vault certificate is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// `application/x-pem-file`
    #[default]
    Pem,
    /// `application/x-pkcs12`
    Pfx,
}

/// What a lifetime action does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// A new version is issued (Key Vault `AutoRenew`).
    AutoRenew,
    /// The vault's contacts are emailed (Key Vault `EmailContacts`).
    EmailContacts,
}

/// When a lifetime action fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// This many days before the certificate's notAfter (1..=validity).
    DaysBeforeExpiry(u32),
    /// When this share of the lifetime has passed (1..=99).
    LifetimePercentage(u8),
}

/// One lifetime action of a policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifetimeAction {
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub action: ActionKind,
}

/// A named certificate policy (Key Vault's certificate policy).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The policy's name in the plan.
    pub name: String,
    /// Key type and size.
    pub key: KeySpec,
    /// Whether the private key may leave the vault. Always false for HSM keys.
    pub exportable: bool,
    /// Whether a renewal keeps the key.
    pub reuse_key: bool,
    /// Validity in days.
    pub validity_days: u32,
    /// Key usage bits; empty means the default (digitalSignature, keyEncipherment for leaves;
    /// keyCertSign, cRLSign, digitalSignature for CAs).
    pub key_usage: Vec<KeyUsage>,
    /// Extended key usages.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// DNS names (and IP addresses) to put in the subjectAltName.
    pub dns_names: Vec<String>,
    /// How the secret is encoded.
    pub content_type: ContentType,
    /// Lifetime actions, in plan order.
    pub lifetime_actions: Vec<LifetimeAction>,
}

/// A certificate authority of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CaSpec {
    /// The CA's name (also its vault certificate name).
    pub name: String,
    /// Subject of the CA certificate.
    pub subject: Subject,
    /// The issuing CA's name; `None` for a self-signed root.
    pub issuer: Option<String>,
    /// Basic constraints path length; `None` = unlimited.
    pub path_len: Option<u8>,
    /// The policy's name.
    pub policy: String,
}

/// Which devices belong to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSource {
    /// `prefix` followed by 1..=count, zero-padded to the width of count.
    Generated {
        /// The prefix, e.g. `sensor-`.
        prefix: String,
        /// How many devices.
        count: u64,
    },
    /// One registration id per line of a file; blank lines and `#` comments skipped.
    /// The ids are read (and checked) when the plan is loaded.
    File {
        /// The file (absolute).
        path: PathBuf,
        /// The ids, in file order.
        ids: Vec<String>,
    },
}

/// How the enrollment service treats a device that provisions again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReprovisionPolicy {
    /// Re-assign and keep device data.
    Migrate,
    /// Re-assign and reset the device's twin to the initial state.
    Reset,
    /// Keep the hub assignment.
    Never,
}

impl ReprovisionPolicy {
    /// The plan spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReprovisionPolicy::Migrate => "migrate",
            ReprovisionPolicy::Reset => "reset",
            ReprovisionPolicy::Never => "never",
        }
    }

    /// Parses the plan spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "migrate" => Some(Self::Migrate),
            "reset" => Some(Self::Reset),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

/// An enrollment group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// The group's name (its enrollment group id).
    pub name: String,
    /// The CA whose certificate goes into the group's primary slot and signs its devices.
    pub signing_ca: String,
    /// The IoT hub devices are assigned to.
    pub hub: String,
    /// Reprovision policy.
    pub reprovision: ReprovisionPolicy,
    /// The policy of the devices' leaf certificates.
    pub device_policy: String,
    /// Which devices belong to it.
    pub devices: DeviceSource,
}

impl GroupSpec {
    /// The group's device ids, in order (generated ones are zero-padded to the width of `count`).
    pub fn device_ids(&self) -> Box<dyn Iterator<Item = String> + '_> {
        match &self.devices {
            DeviceSource::Generated { prefix, count } => {
                let width = count.to_string().len();
                Box::new((1..=*count).map(move |i| format!("{prefix}{i:0width$}")))
            }
            DeviceSource::File { ids, .. } => Box::new(ids.iter().cloned()),
        }
    }

    /// How many devices the group declares.
    pub fn device_count(&self) -> u64 {
        match &self.devices {
            DeviceSource::Generated { count, .. } => *count,
            DeviceSource::File { ids, .. } => ids.len() as u64,
        }
    }
}

/// An individual enrollment (one device).
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentSpec {
    /// Registration id = device id = the leaf's CN.
    pub name: String,
    /// The CA that signs the device certificate.
    pub issuer: String,
    /// The policy of the device certificate.
    pub policy: String,
    /// The IoT hub the device is assigned to.
    pub hub: String,
    /// Reprovision policy.
    pub reprovision: ReprovisionPolicy,
}

/// Whether an SMTP host is this machine: `localhost` or a loopback address (`127.0.0.0/8`,
/// `::1`). Only such hosts may be sent mail without TLS unless the plan allows plaintext.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
