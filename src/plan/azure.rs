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
