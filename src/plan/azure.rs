//! `[backend] kind = "azure"`, validated: where the remote services are, how certroll
//! authenticates to them, which extra roots it trusts and where their host names resolve.
//!
//! `vault_url` is Key Vault's; `dps` the Device Provisioning Service's and its CA certificates'
//! (ARM); `hubs` the IoT hubs' (`backend::azure`). Secrets never appear here: only the names of
//! the environment variables that hold them.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// How certroll gets Entra ID tokens (azure_identity 1.0 has no default chain, so the plan
/// names one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// `developer-tools`: `DeveloperToolsCredential` (Azure CLI, then Azure Developer CLI).
    DeveloperTools,
    /// `azure-cli`: `AzureCliCredential` (`az login`).
    AzureCli,
    /// `managed-identity`: `ManagedIdentityCredential`; a user-assigned identity by its client id.
    ManagedIdentity {
        /// The user-assigned identity's client id; `None` for the system-assigned identity.
        client_id: Option<String>,
    },
    /// `workload-identity`: `WorkloadIdentityCredential`, configured by `AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID` and `AZURE_FEDERATED_TOKEN_FILE` as Kubernetes sets them.
    WorkloadIdentity,
    /// `client-secret`: `ClientSecretCredential`; the secret comes only from the environment.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The environment variable holding the client secret.
        secret_env: String,
    },
    /// `token-env`: a bearer token a pipeline already holds (and the emulator's principals).
    TokenEnv {
        /// The environment variable holding the token.
        var: String,
    },
}

impl AzureAuth {
    /// The plan's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            AzureAuth::DeveloperTools => "developer-tools",
            AzureAuth::AzureCli => "azure-cli",
            AzureAuth::ManagedIdentity { .. } => "managed-identity",
            AzureAuth::WorkloadIdentity => "workload-identity",
            AzureAuth::ClientSecret { .. } => "client-secret",
            AzureAuth::TokenEnv { .. } => "token-env",
        }
    }
}

/// How hard certroll may drive one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientLimits {
    /// Requests per second at most (client side); `None`: no client-side rate.
    pub rate: Option<f64>,
    /// Requests in flight at most.
    pub concurrency: usize,
}

/// `dps = { ... }`: the Device Provisioning Service.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureDps {
    /// Service host (`NAME.azure-devices-provisioning.net`).
    pub host: String,
    /// The ID scope devices register under.
    pub id_scope: String,
    /// The ARM resource id (`/subscriptions/.../provisioningServices/NAME`) for CA certificates.
    pub resource_id: Option<String>,
    /// SAS policy name.
    pub sas_policy: String,
    /// The environment variable holding the policy's key.
    pub sas_key_env: String,
    /// Rate and concurrency.
    pub limits: ClientLimits,
}

/// `[backend.hubs.NAME]`: one IoT Hub the plan assigns devices to.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureHub {
    /// Hub host (`NAME.azure-devices.net`).
    pub host: String,
    /// SAS policy name.
    pub sas_policy: String,
    /// The environment variable holding the policy's key.
    pub sas_key_env: String,
    /// Rate and concurrency.
    pub limits: ClientLimits,
}

/// The validated `[backend] kind = "azure"` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureConfig {
    /// The vault, `https://NAME.vault.azure.net` (no path, no trailing slash).
    pub vault_url: String,
    /// Key Vault rate and concurrency.
    pub vault_limits: ClientLimits,
    /// The notify step after a verb reads Key Vault's whole listing at most once per this many
    /// hours (0: every time); in between it reads only the certificates certroll wrote to.
    pub notify_listing_hours: u32,
    /// How tokens are obtained.
    pub auth: AzureAuth,
    /// Extra trusted roots (PEM), absolute; the system roots are trusted as well.
    pub ca_file: Option<PathBuf>,
    /// Host name → socket address overrides, as curl's `--resolve`.
    pub resolve: BTreeMap<String, std::net::SocketAddr>,
    /// The Device Provisioning Service.
    pub dps: Option<AzureDps>,
    /// IoT Hubs by the name the plan's groups and enrollments use.
    pub hubs: BTreeMap<String, AzureHub>,
    /// Where the plan writes the keys an error met after loading names (a file that cannot be
    /// read, a variable not set, a host that does not resolve, a hub table missing), by dotted
    /// key: `vault_url`, `ca_file`, `token_env`, `client_secret_env`, `dps.host`,
    /// `dps.sas_key_env`, `hubs.NAME.host`, `hubs.NAME.sas_key_env`, `groups.NAME.hub`,
    /// `enrollments.NAME.hub`.
    pub places: BTreeMap<String, PlanPlace>,
}

/// Where a key's value is written in the plan: the plan file as given, 1-based line and column
/// (in characters). Displays as `path:line:column`, as a [`PlanError`](super::PlanError) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPlace {
    /// The plan file as given on the command line.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column in characters.
    pub column: usize,
}

impl std::fmt::Display for PlanPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

impl AzureConfig {
    /// `PLACE: KEY` for a key of [`places`](Self::places), or `KEY` alone when the plan has no
    /// place for it (a config built without a plan file).
    pub fn key_at(&self, key: &str) -> String {
        match self.places.get(key) {
            Some(place) => format!("{place}: {key}"),
            None => key.to_string(),
        }
    }

    /// The keys naming service hosts, by host (lowercase): the vault's host → `vault_url`,
    /// DPS's → `dps.host`, each hub's → `hubs.NAME.host`.
    pub fn host_keys(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(host) = self
            .vault_url
            .strip_prefix("https://")
            .map(|h| h.split(['/', ':']).next().unwrap_or_default())
        {
            out.insert(host.to_ascii_lowercase(), "vault_url".to_string());
        }
        if let Some(dps) = &self.dps {
            out.insert(dps.host.to_ascii_lowercase(), "dps.host".to_string());
        }
        for (name, hub) in &self.hubs {
            out.insert(hub.host.to_ascii_lowercase(), format!("hubs.{name}.host"));
        }
        out
    }

    /// The key that names environment variable `var` (`token_env`, `client_secret_env`,
    /// `dps.sas_key_env`, `hubs.NAME.sas_key_env`), the first in that order.
    pub fn env_key(&self, var: &str) -> Option<String> {
        match &self.auth {
            AzureAuth::TokenEnv { var: v } if v == var => return Some("token_env".into()),
            AzureAuth::ClientSecret { secret_env, .. } if secret_env == var => {
                return Some("client_secret_env".into());
            }
            _ => {}
        }
        if self.dps.as_ref().is_some_and(|d| d.sas_key_env == var) {
            return Some("dps.sas_key_env".into());
        }
        self.hubs
            .iter()
            .find(|(_, h)| h.sas_key_env == var)
            .map(|(name, _)| format!("hubs.{name}.sas_key_env"))
    }
}

/// Hours between the full listings of Key Vault by the notify step after a verb: a day, as the
/// `notify` cron run the README suggests.
pub const DEFAULT_NOTIFY_LISTING_HOURS: u32 = 24;
/// Most hours a plan may set between them: a year.
pub const MAX_NOTIFY_LISTING_HOURS: u32 = 8760;

/// Key Vault's documented limit is about 20 software-key creations per 10 s per vault; 8 in
/// flight keeps a batch inside it without serialising.
pub const DEFAULT_VAULT_CONCURRENCY: usize = 8;
/// DPS and IoT Hub requests in flight by default.
pub const DEFAULT_SERVICE_CONCURRENCY: usize = 16;
/// Most requests in flight a plan may ask for per service.
pub const MAX_CONCURRENCY: i64 = 256;
