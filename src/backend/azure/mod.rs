//! The azure backend: certroll's services on Azure.
//!
//! - [`keyvault`]: [`AzureVault`] implements [`super::Vault`] over Key Vault through the official
//!   `azure_security_keyvault_certificates`, `_keys` and `_secrets` crates.
//! - [`dps`] and [`arm`]: [`AzureEnrollmentService`] implements [`super::EnrollmentService`] over
//!   the DPS service API and the DPS CA certificates on ARM; [`hub`]: [`AzureHubRegistry`]
//!   implements [`super::HubRegistry`] over IoT Hub's registry and direct methods. Neither has a
//!   Rust SDK, so they are small typed clients on [`rest`] (azure_core's pipeline) with
//!   SharedAccessSignature tokens from [`sas`]; their answers are read into typed records and
//!   their bodies written from them with [`wire`]'s pieces, never through JSON trees.
//!
//! Composing them into a `Backend` is `backend.rs`'s (until then the verbs refuse a plan with
//! `kind = "azure"`, see `ops::open_backend`).
//!
//! Owned here: the client stack every Azure client shares, built from the plan's
//! [`AzureConfig`]: one `reqwest::Client` (extra roots from `ca_file`,
//! host overrides from `resolve`) given to azure_core as its transport, the credential the plan
//! names, azure_core's exponential retry policy (429/503 honour `Retry-After`), and one tokio
//! runtime: the SDKs are async and the backend traits are sync, so each call `block_on`s, and
//! batch methods run at most the plan's `concurrency` requests at once.

pub mod arm;
pub mod backend;
pub mod challenge;
pub mod delivery;
pub mod dps;
pub mod hub;
pub mod keyvault;
pub mod observe;
pub mod pace;
pub mod rest;
pub mod sas;
pub mod wire;

pub use backend::AzureBackend;
pub use dps::AzureEnrollmentService;
pub use hub::AzureHubRegistry;
pub use keyvault::{AzureVault, KeyVaultSigningKey};

use crate::plan::{AzureAuth, AzureConfig};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use std::sync::Arc;

/// Why the Azure client stack could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The `ca_file` is unreadable or holds no certificate.
    #[error("ca_file {path}: {message}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An environment variable the plan names is unset or empty.
    #[error("environment variable {0} is not set (the plan's `[backend]` takes a secret from it)")]
    MissingEnv(String),
    /// A secret the plan names is set but unusable (a SAS key that is not base64): bad input
    /// from the environment. The message names the variable, never its value.
    #[error("{message}")]
    BadEnv {
        /// The environment variable.
        var: String,
        /// What is wrong with its value (never the value).
        message: String,
    },
    /// The HTTP client or a credential could not be built.
    #[error("{0}")]
    Client(String),
}

impl SetupError {
    /// Whether the operator must fix the plan or the environment (exit 2, nothing changed), as
    /// opposed to a client that could not be built.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            SetupError::MissingEnv(_) | SetupError::CaFile { .. } | SetupError::BadEnv { .. }
        )
    }

    /// The error as the CLI tells it: after the place of the plan key it concerns
    /// (`plan.toml:12:11: ca_file ...`, `plan.toml:9:40: dps.sas_key_env: environment variable
    /// ...`), or after the plan's path (`plan`) when no key's place is known.
    pub fn told(&self, plan: &std::path::Path, config: &AzureConfig) -> String {
        let key = match self {
            SetupError::CaFile { .. } => Some("ca_file".to_string()),
            SetupError::MissingEnv(var) | SetupError::BadEnv { var, .. } => config.env_key(var),
            SetupError::Client(_) => None,
        };
        match key.and_then(|k| config.places.get(&k).map(|place| (k, place))) {
            // `ca_file` names itself in the message; a variable's key is said before it.
            Some((k, place)) if k == "ca_file" => format!("{place}: {self}"),
            Some((k, place)) => format!("{place}: {k}: {self}"),
            None => format!("{}: {self}", plan.display()),
        }
    }
}

/// A bearer token taken from an environment variable once (`auth = "token-env"`): for a
/// pipeline that already holds a token, and for `certroll serve`'s principals.
pub struct EnvTokenCredential {
    token: Secret,
}

impl std::fmt::Debug for EnvTokenCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.write_str("EnvTokenCredential")
    }
}

impl EnvTokenCredential {
    /// A credential that always answers `token`.
    pub fn new(token: String) -> EnvTokenCredential {
        EnvTokenCredential {
            token: Secret::new(token),
        }
    }

    /// Reads the token from `var`.
    pub fn from_env(var: &str) -> Result<EnvTokenCredential, SetupError> {
        match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Ok(EnvTokenCredential {
                token: Secret::new(t.trim().to_string()),
            }),
            _ => Err(SetupError::MissingEnv(var.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for EnvTokenCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        // The token's lifetime is not ours to know; an hour makes the bearer policy reuse it.
        Ok(AccessToken::new(
            self.token.clone(),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

/// The credential the plan's `auth` names.
pub fn credential(auth: &AzureAuth, options: &ClientOptions) -> Result<Arc<dyn TokenCredential>, SetupError> {
    let client = |e: azure_core::Error| SetupError::Client(format!("credential `{}`: {e}", auth.name()));
    Ok(match auth {
        AzureAuth::TokenEnv { var } => Arc::new(EnvTokenCredential::from_env(var)?),
        AzureAuth::DeveloperTools => azure_identity::DeveloperToolsCredential::new(None).map_err(client)?,
        AzureAuth::AzureCli => azure_identity::AzureCliCredential::new(None).map_err(client)?,
        AzureAuth::ManagedIdentity { client_id } => azure_identity::ManagedIdentityCredential::new(Some(
            azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(azure_identity::UserAssignedId::ClientId),
                client_options: options.clone(),
            },
        ))
        .map_err(client)?,
        AzureAuth::WorkloadIdentity => {
            azure_identity::WorkloadIdentityCredential::new(None).map_err(client)?
        }
        AzureAuth::ClientSecret {
            tenant_id,
            client_id,
            secret_env,
        } => {
            let secret = std::env::var(secret_env)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| SetupError::MissingEnv(secret_env.clone()))?;
            azure_identity::ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(secret),
                Some(azure_identity::ClientSecretCredentialOptions {
                    client_options: options.clone(),
                }),
            )
            .map_err(client)?
        }
    })
}

/// The HTTP client every Azure client uses: system roots plus `ca_file`, and `resolve`.
pub fn http_client(config: &AzureConfig) -> Result<reqwest::Client, SetupError> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = &config.ca_file {
        let bad = |message: String| SetupError::CaFile {
            path: path.clone(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    for (host, addr) in &config.resolve {
        builder = builder.resolve(host, *addr);
    }
    // A service that stops answering must not hang certroll: the read timeout outlasts IoT Hub's
    // longest direct-method wait (300 s); a timed-out try is retried like a reset.
    builder = builder
        .connect_timeout(std::time::Duration::from_secs(15))
        .read_timeout(std::time::Duration::from_secs(310));
    builder
        .build()
        .map_err(|e| SetupError::Client(format!("HTTP client: {e}")))
}

/// Client options for every Azure client: our transport, azure_core's exponential retry
/// (it honours `Retry-After` on 429 and 503, and retries 5xx, resets and timeouts with jitter)
/// and [`observe::Observe`] on each try (the `-v`/`-vv` log; a TLS failure, and a host name
/// that does not resolve on first contact, are not retried; a
/// refused connection names the address `config`'s `resolve` gave the host). `http` is
/// [`http_client`]`(config)`.
pub fn client_options(http: reqwest::Client, config: &AzureConfig) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            max_retries: 6,
            ..Default::default()
        }),
        per_try_policies: vec![Arc::new(observe::Observe::for_config(config))],
        ..Default::default()
    }
}

/// Key Vault's documented throttle for software-protected keys: 20 key creations per 10 seconds
/// per vault (<https://learn.microsoft.com/azure/key-vault/general/service-limits>), the default
/// of the plan's `vault_rate`.
pub const DEFAULT_VAULT_RATE: f64 = 2.0;

/// Key Vault counts its limits over 10-second windows: a client may spend a window's worth at
/// once.
const VAULT_WINDOW_SECS: f64 = 10.0;

/// Paces the Key Vault requests that make a key (certificate create, import and restore: each
/// makes a key version, which is what Key Vault throttles soonest) at the plan's `vault_rate`
/// per second, with a burst of one 10-second window; other requests are not paced here (Key
/// Vault admits 2,000 of them per 10 s, and a 429 is retried after `Retry-After`). A per-try
/// policy (governor's GCRA limiter): a retried creation counts against Key Vault's limit too.
#[derive(Debug)]
pub struct KeyCreationRate {
    limiter: governor::DefaultDirectRateLimiter,
}

impl KeyCreationRate {
    /// A limiter of `rate` key creations per second (`None`: [`DEFAULT_VAULT_RATE`]).
    pub fn new(rate: Option<f64>) -> Arc<KeyCreationRate> {
        let rate = Self::per_second(rate);
        let period = std::time::Duration::from_secs_f64(1.0 / rate).max(std::time::Duration::from_nanos(1));
        let burst = (rate * VAULT_WINDOW_SECS).ceil().clamp(1.0, u32::MAX as f64) as u32;
        let quota = governor::Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(std::num::NonZeroU32::new(burst).expect("burst is at least 1"));
        Arc::new(KeyCreationRate {
            limiter: governor::RateLimiter::direct(quota),
        })
    }

    /// The key creations a second a plan's `vault_rate` (`rate`) allows: it, or
    /// [`DEFAULT_VAULT_RATE`] when unset or not a positive number.
    pub fn per_second(rate: Option<f64>) -> f64 {
        rate.filter(|r| r.is_finite() && *r > 0.0)
            .unwrap_or(DEFAULT_VAULT_RATE)
    }

    /// Whether a request makes a key version: `POST .../certificates/{name}/create`,
    /// `.../import`, or `.../certificates/restore`.
    fn makes_key(request: &azure_core::http::Request) -> bool {
        if request.method() != azure_core::http::Method::Post {
            return false;
        }
        let path = request.url().path().trim_end_matches('/');
        path.ends_with("/create") || path.ends_with("/import") || path.ends_with("/certificates/restore")
    }
}

#[async_trait::async_trait]
impl azure_core::http::policies::Policy for KeyCreationRate {
    async fn send(
        &self,
        ctx: &azure_core::http::Context,
        request: &mut azure_core::http::Request,
        next: &[Arc<dyn azure_core::http::policies::Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        if Self::makes_key(request) {
            self.limiter.until_ready().await;
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The runtime an Azure backend drives its SDK clients on (the traits it implements are sync).
pub fn runtime() -> Result<tokio::runtime::Runtime, SetupError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("certroll-azure")
        .build()
        .map_err(|e| SetupError::Client(format!("tokio runtime: {e}")))
}

/// The backend trait object is `Send`; so must each client be.
const _: () = {
    const fn send<T: Send>() {}
    send::<AzureEnrollmentService>();
    send::<AzureHubRegistry>();
};

/// The `provisioningStatus` (DPS) or `status` (IoT Hub) an update of a record writes: the one
/// certroll's change carries (`ours`), except that a record the service holds disabled now
/// (`held`, from the read this write is built on: the first read, or the re-read after 412)
/// stays disabled. No verb's purpose is to enable a record that exists (revoke disables; only
/// a create starts enabled), so a status certroll writes over an existing record is the one it
/// read: a disable another client made since (between the verb's read and its write, or during
/// a 412's re-read) is never undone (issue 12, az7 F-412-ENABLES).
pub(crate) fn kept_status(
    ours: crate::backend::types::Status,
    held: Option<crate::backend::types::Status>,
) -> crate::backend::types::Status {
    use crate::backend::types::Status;
    if held == Some(Status::Disabled) {
        Status::Disabled
    } else {
        ours
    }
}
