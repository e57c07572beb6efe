//! The plan as written: serde structs that mirror the TOML one to one.
//!
//! Only the shape is checked here (known keys, value types, required keys), by serde and `toml`,
//! which report their errors with a span. Every value a later check may need to point at is a
//! [`Spanned`]; `validate` turns a `RawPlan` into a [`super::Plan`].

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A table of named sections (`[policies.NAME]`), keyed by the name with its span.
pub(super) type Named<T> = BTreeMap<Spanned<String>, T>;

/// The whole plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    /// Format version; optional here so that its absence gets a clear message.
    pub(super) version: Option<Spanned<i64>>,
    pub(super) not_before_skew_minutes: Option<Spanned<i64>>,
    pub(super) backend: Option<RawBackend>,
    pub(super) contacts: Option<RawContacts>,
    #[serde(default)]
    pub(super) policies: Named<RawPolicy>,
    #[serde(default)]
    pub(super) ca: Named<RawCa>,
    #[serde(default)]
    pub(super) groups: Named<RawGroup>,
    #[serde(default)]
    pub(super) enrollments: Named<RawEnrollment>,
    pub(super) mail: Option<Spanned<RawMail>>,
    pub(super) hooks: Option<Spanned<RawHooks>>,
    pub(super) serve: Option<Spanned<RawServe>>,
}

/// `[backend]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    // `kind = "azure"` only (see `validate_azure.rs`).
    pub(super) vault_url: Option<Spanned<String>>,
    pub(super) vault_rate: Option<Spanned<f64>>,
    pub(super) vault_concurrency: Option<Spanned<i64>>,
    pub(super) notify_listing_hours: Option<Spanned<i64>>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) token_env: Option<Spanned<String>>,
    pub(super) tenant_id: Option<Spanned<String>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) client_secret_env: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) resolve: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub(super) dps: Option<Spanned<RawAzureDps>>,
    #[serde(default)]
    pub(super) hubs: Named<Spanned<RawAzureHub>>,
    // Device delivery, the plan-wide default (see `validate_delivery.rs`); groups and
    // enrollments take the same three keys.
    pub(super) delivery: Option<Spanned<String>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) hook: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) hook_timeout_secs: Option<Spanned<i64>>,
    pub(super) reprovision_method: Option<Spanned<String>>,
    pub(super) delivery_concurrency: Option<Spanned<i64>>,
}

/// `[backend] dps = { ... }` (azure).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzureDps {
    pub(super) host: Spanned<String>,
    pub(super) id_scope: Spanned<String>,
    pub(super) resource_id: Option<Spanned<String>>,
    pub(super) sas_policy: Spanned<String>,
    pub(super) sas_key_env: Spanned<String>,
    pub(super) rate: Option<Spanned<f64>>,
    pub(super) concurrency: Option<Spanned<i64>>,
}

/// `[backend.hubs.NAME]` (azure).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzureHub {
    pub(super) host: Spanned<String>,
    pub(super) sas_policy: Spanned<String>,
    pub(super) sas_key_env: Spanned<String>,
    pub(super) rate: Option<Spanned<f64>>,
    pub(super) concurrency: Option<Spanned<i64>>,
}

/// `[contacts]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContacts {
    #[serde(default)]
    pub(super) emails: Vec<Spanned<String>>,
}

/// `[policies.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) key: Spanned<RawKey>,
    pub(super) validity_days: Spanned<i64>,
    #[serde(default)]
    pub(super) key_usage: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) extended_key_usage: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) dns_names: Vec<Spanned<String>>,
    pub(super) content_type: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) lifetime_actions: Vec<Spanned<RawLifetimeAction>>,
}

/// `key = { type = ..., size = ..., curve = ..., exportable = ..., reuse_key = ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    #[serde(rename = "type")]
    pub(super) kty: Spanned<String>,
    pub(super) size: Option<Spanned<i64>>,
    pub(super) curve: Option<Spanned<String>>,
    pub(super) exportable: Option<Spanned<bool>>,
    pub(super) reuse_key: Option<bool>,
}

/// One entry of `lifetime_actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifetimeAction {
    pub(super) days_before_expiry: Option<Spanned<i64>>,
    pub(super) lifetime_percentage: Option<Spanned<i64>>,
    pub(super) action: Spanned<String>,
}

/// `[ca.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    pub(super) subject: Spanned<String>,
    pub(super) issuer: Option<Spanned<String>>,
    pub(super) path_len: Option<Spanned<i64>>,
    pub(super) policy: Spanned<String>,
}

/// `[groups.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) signing_ca: Spanned<String>,
    pub(super) hub: Spanned<String>,
    pub(super) reprovision: Option<Spanned<String>>,
    pub(super) device_policy: Spanned<String>,
    pub(super) devices: Spanned<RawDevices>,
    pub(super) delivery: Option<Spanned<String>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) hook: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `devices = { prefix = ..., count = ... }` or `devices = { file = ... }`; which keys go
/// together is checked in `validate`, so the message can say what is expected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevices {
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) count: Option<Spanned<i64>>,
    pub(super) file: Option<Spanned<String>>,
}

/// `[enrollments.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnrollment {
    pub(super) issuer: Spanned<String>,
    pub(super) policy: Spanned<String>,
    pub(super) hub: Spanned<String>,
    pub(super) reprovision: Option<Spanned<String>>,
    pub(super) delivery: Option<Spanned<String>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) hook: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[mail]`: the SMTP server that mails the contacts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMail {
    pub(super) smtp_host: Option<Spanned<String>>,
    pub(super) smtp_port: Option<Spanned<i64>>,
    pub(super) tls: Option<Spanned<String>>,
    pub(super) allow_plaintext: Option<bool>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password_env: Option<Spanned<String>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
}

/// `[hooks]`: a command run with the events as JSON on stdin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) command: Spanned<Vec<Spanned<String>>>,
    pub(super) timeout_secs: Option<Spanned<i64>>,
}

/// `[serve]`: what `certroll serve` emulates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServe {
    pub(super) vault: Option<Spanned<String>>,
    pub(super) dps: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) principals: Named<Spanned<RawPrincipal>>,
    #[serde(default)]
    pub(super) services: Named<Spanned<RawServiceLimits>>,
}

/// `[serve.services.SERVICE]`: throttling and injected faults of one emulated service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServiceLimits {
    pub(super) rate_per_second: Option<Spanned<i64>>,
    pub(super) burst: Option<Spanned<i64>>,
    pub(super) error_percent: Option<Spanned<f64>>,
    pub(super) error_status: Option<Spanned<i64>>,
    pub(super) drop_percent: Option<Spanned<f64>>,
    pub(super) drop_first: Option<Spanned<i64>>,
    pub(super) delay_ms: Option<Spanned<i64>>,
    pub(super) throttle_secs: Option<Spanned<i64>>,
}

/// `[serve.principals.NAME]`: a bearer token and what it may do in the vault.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrincipal {
    pub(super) token_env: Spanned<String>,
    pub(super) permissions: Spanned<Vec<Spanned<String>>>,
    pub(super) arm_role: Option<Spanned<String>>,
}
