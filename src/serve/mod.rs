//! `certroll serve`: the plan's local store exposed through Azure's own wire APIs over HTTPS, so
//! the official SDKs (and the coming azure backend) run their production code against it.
//!
//! This module owns the server: the listeners and TLS ([`tls`]), routing by the Host header to
//! one service per origin (the Key Vault SDKs drop any path prefix when they poll, so every
//! service sits at the root of its own host), bounded bodies and connections, the access log,
//! graceful shutdown and the start line. The services' rules are the ones in `backend` and
//! `ops`; handlers call them and never keep a second copy.

pub mod arm;
pub mod auth;
pub mod body_timeout;
pub mod dps;
pub mod dps_device;
pub mod faults;
pub mod head_limit;
pub mod hub;
pub mod keyvault;
pub mod state;
pub mod tls;

use crate::backend::local::LocalBackend;
use crate::clock::Clock;
use crate::error::input;
use crate::ops::{Access, BackendSettings, open_backend};
use crate::plan::{Plan, ServeConfig};
use anyhow::{Context as _, Result};
use auth::{Principal, SasPolicy};
use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderValue, Request, StatusCode, header};
use serde::Serialize;
use state::AppState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt as _;

/// Largest request body any route reads (4 MiB; a PFX or a bulk request fits many times over).
pub const MAX_BODY: usize = 4 << 20;
/// Most threads serve runs store work on (tokio's blocking pool; the store has one connection,
/// so the rest would only wait for it or for the CLI's writer lock).
pub const MAX_BLOCKING_THREADS: usize = 16;
/// Most connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take for its TLS handshake or its request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may go without a byte before it is refused (408) and its
/// connection closed.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request target (path and query) served; longer ones get 414 with a body.
pub const MAX_URI: usize = 16 << 10;
/// Largest header block (names, values and separators) served; larger ones get 431 with a body.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// hyper's read buffer for a request head: above [`MAX_HEADER_BYTES`], which
/// [`head_limit::HeadLimit`] applies as the head arrives (a request target over the `http`
/// crate's 64 KiB still gets hyper's 414 without a body).
const HEAD_BUFFER: usize = 512 << 10;
/// Most header fields a request may have (hyper's default is 100); more get 431 with a body.
pub const MAX_HEADER_FIELDS: usize = 256;

/// An error answer. Each service renders it in its own body shape (the router decides); the
/// default ([`IntoResponse`]) is Key Vault's and ARM's `{"error":{"code","message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The service's error code (`CertificateNotFound`, `BadParameter`, ...).
    pub code: String,
    /// A message a user can act on. Never holds a secret.
    pub message: String,
    /// A `WWW-Authenticate` challenge to send (401 of Key Vault and ARM).
    pub challenge: Option<String>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
    /// Key Vault's `innererror.code` (`KeyDisabled`, ...), when the service names one.
    pub inner: Option<String>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            challenge: None,
            retry_after: None,
            inner: None,
        }
    }

    /// The same error with Key Vault's `innererror` `{"code": inner}`.
    pub fn with_inner(mut self, inner: impl Into<String>) -> ApiError {
        self.inner = Some(inner.into());
        self
    }

    /// 400 `BadParameter`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// 404 with a service-specific code.
    pub fn not_found(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409 `Conflict`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "Conflict", message)
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The headers that go with the error (challenge, Retry-After), for any body shape.
    pub fn headers(&self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(c) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        headers
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(inner) = &self.inner {
            body["error"]["innererror"] = serde_json::json!({ "code": inner });
        }
        (self.status, self.headers(), axum::Json(body)).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    /// An input error is the client's (400); a missing thing is 404; anything else 500.
    fn from(err: anyhow::Error) -> ApiError {
        let message = format!("{err:#}");
        if crate::error::classify(&err) == crate::error::Failure::Input {
            return ApiError::bad_request(message);
        }
        if err
            .chain()
            .any(|c| matches!(c.downcast_ref(), Some(crate::backend::BackendError::NotFound(_))))
        {
            return ApiError::not_found("NotFound", message);
        }
        ApiError::internal(message)
    }
}

impl From<crate::backend::BackendError> for ApiError {
    fn from(err: crate::backend::BackendError) -> ApiError {
        ApiError::from(anyhow::Error::new(err))
    }
}

/// The service a request is for, decided by its Host header (or by the listener it came to).
/// Handlers may read it as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `{vault}.vault.azure.net`.
    KeyVault,
    /// `{dps}.azure-devices-provisioning.net`: the DPS service API.
    DpsService,
    /// `global.azure-devices-provisioning.net`: the DPS device API.
    DpsDevice,
    /// `{hub}.azure-devices.net`, with the hub's name.
    Hub(String),
    /// `management.azure.com`.
    Arm,
}

impl Origin {
    /// The service's name in `[serve.services.SERVICE]` and the start line's `listeners`.
    pub fn service(&self) -> &'static str {
        match self {
            Origin::KeyVault => "keyvault",
            Origin::DpsService => "dps",
            Origin::DpsDevice => "dps_device",
            Origin::Hub(_) => "hub",
            Origin::Arm => "arm",
        }
    }

    /// The origin `host` (a Host header value, port allowed) names, if serve answers there.
    pub fn of(host: &str, config: &ServeConfig, hubs: &[String]) -> Option<Origin> {
        let name = auth::split_port(host).0.to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if let Some(vault) = name.strip_suffix(".vault.azure.net") {
            return (vault == config.vault).then_some(Origin::KeyVault);
        }
        if name == "global.azure-devices-provisioning.net" {
            return Some(Origin::DpsDevice);
        }
        if let Some(dps) = name.strip_suffix(".azure-devices-provisioning.net") {
            return (dps == config.dps).then_some(Origin::DpsService);
        }
        if let Some(hub) = name.strip_suffix(".azure-devices.net") {
            return hubs
                .iter()
                .find(|h| h.as_str() == hub)
                .map(|h| Origin::Hub(h.clone()));
        }
        (name == "management.azure.com").then_some(Origin::Arm)
    }
}

/// An error in the body shape of the service answering: DPS's `ProvisioningServiceErrorDetails`,
/// IoT Hub's `{"Message":"ErrorCode:...","ExceptionMessage":...}`, otherwise (Key Vault, ARM, or
/// no service at all) `{"error":{"code","message"}}`. `e.code` is taken as the service's own
/// code when it has the service's form (a number for DPS); otherwise the service's code for the
/// status is used ([`generic_code`]).
pub fn error_response(origin: Option<&Origin>, mut e: ApiError) -> Response {
    match origin {
        Some(Origin::DpsService | Origin::DpsDevice) => {
            if e.code.parse::<i64>().is_err() {
                e.code = generic_code(origin, e.status);
            }
            dps::DpsError(e).into_response()
        }
        Some(Origin::Hub(_)) => hub::HubError(e).into_response(),
        _ => e.into_response(),
    }
}

/// The service's error code for an HTTP status when nothing more specific is known (a request
/// refused before any handler: size limits, unknown routes and methods, throttling, faults).
pub fn generic_code(origin: Option<&Origin>, status: StatusCode) -> String {
    let n = status.as_u16();
    match origin {
        // DPS: status x 1000 + a sub-code (1 for these refusals of the whole request).
        Some(Origin::DpsService | Origin::DpsDevice) => (u32::from(n) * 1000 + 1).to_string(),
        Some(Origin::Hub(_)) => match n {
            400 => "ArgumentInvalid",
            401 => "IotHubUnauthorizedAccess",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            408 => "RequestTimeout",
            413 => "MessageTooLarge",
            414 => "RequestUriTooLong",
            429 => "ThrottlingException",
            431 => "RequestHeaderFieldsTooLarge",
            503 => "ServiceUnavailable",
            _ if n >= 500 => "ServerError",
            _ => "ArgumentInvalid",
        }
        .to_string(),
        _ => match n {
            400 => "BadParameter",
            401 => "Unauthorized",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            408 => "RequestTimeout",
            413 => "RequestEntityTooLarge",
            414 => "RequestUriTooLong",
            429 => "Throttled",
            431 => "RequestHeaderFieldsTooLarge",
            503 => "ServiceUnavailable",
            _ if n >= 500 => "InternalServerError",
            _ => "BadParameter",
        }
        .to_string(),
    }
}

/// An error answer that is not JSON (axum's rejections: 405 with an empty body, 413 and 400 in
/// plain text, an unrouted 404) rewritten in the service's shape with a message saying what was
/// refused; its headers (`Allow`) kept. JSON answers pass unchanged.
async fn in_service_shape(
    origin: &Origin,
    method: &http::Method,
    path: &str,
    response: Response,
) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // axum's rejection texts are short; a longer body is not read.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let shown: String = path.chars().take(200).collect();
    // A body that stopped arriving (axum's extractors refuse it with 400).
    let status = if text.contains(body_timeout::STALLED) {
        StatusCode::REQUEST_TIMEOUT
    } else {
        status
    };
    let message = match status.as_u16() {
        405 => {
            let allow = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("{method} is not allowed on {shown} (allowed: {allow})")
        }
        413 => format!("the request body is over the {} MiB limit", MAX_BODY >> 20),
        408 => format!(
            "{}: no byte for {} s; the connection is closed",
            body_timeout::STALLED,
            BODY_STALL_TIMEOUT.as_secs()
        ),
        404 if text.is_empty() => format!("{method} {shown} is not an operation of this service"),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("refused").to_string(),
        _ => text.chars().take(300).collect(),
    };
    let e = ApiError::new(status, generic_code(Some(origin), status), message);
    let mut out = error_response(Some(origin), e);
    for (name, value) in &parts.headers {
        if name == header::ALLOW || name == header::RETRY_AFTER || name == header::WWW_AUTHENTICATE {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The per-service routers. A service not built is `None`: its hosts answer 404 and it gets
/// no listener and no line in the start line.
pub struct Routers {
    /// Key Vault certificates data plane.
    pub keyvault: Router,
    /// DPS service API.
    pub dps: Option<Router>,
    /// DPS device API.
    pub dps_device: Option<Router>,
    /// IoT Hub (every hub of the plan; handlers read the hub from [`Origin::Hub`]).
    pub hub: Option<Router>,
    /// ARM (DPS CA certificates).
    pub arm: Option<Router>,
}

impl Routers {
    /// Every service's router over `state`, each with the body limit.
    pub fn build(state: Arc<AppState>) -> Routers {
        let limit = |r: Router| r.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
        Routers {
            keyvault: limit(keyvault::router(state.clone())),
            dps: Some(limit(dps::router(state.clone()))),
            dps_device: Some(limit(dps_device::router(state.clone()))),
            hub: Some(limit(hub::router(state.clone()))),
            arm: Some(limit(arm::router(state))),
        }
    }

    fn for_origin(&self, origin: &Origin) -> Option<&Router> {
        match origin {
            Origin::KeyVault => Some(&self.keyvault),
            Origin::DpsService => self.dps.as_ref(),
            Origin::DpsDevice => self.dps_device.as_ref().or(self.dps.as_ref()),
            Origin::Hub(_) => self.hub.as_ref(),
            Origin::Arm => self.arm.as_ref(),
        }
    }
}

/// How to run the emulator.
pub struct ServeOptions {
    /// The validated plan (its `[serve]` section and its local store).
    pub plan: Plan,
    /// Where the Host-routed listener binds.
    pub listen: SocketAddr,
    /// Where to write the emulator CA's certificate (PEM), if anywhere.
    pub ca_out: Option<PathBuf>,
    /// How the store is opened (key file, lock timeout).
    pub settings: BackendSettings,
    /// The clock decisions are made with (`--now`).
    pub clock: Arc<dyn Clock>,
}

/// What the start line tells clients: one JSON object with `-o json`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StartInfo {
    /// `https://{vault}.vault.azure.net[:port]`.
    pub vault_url: String,
    /// The DPS service API's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dps_url: Option<String>,
    /// The DPS device API's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dps_device_url: Option<String>,
    /// The DPS ID scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_scope: Option<String>,
    /// The first hub's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_url: Option<String>,
    /// ARM's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm_url: Option<String>,
    /// Connection strings by service name, then SAS policy name (only of services served).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub connection_strings: BTreeMap<String, BTreeMap<String, String>>,
    /// Where the CA certificate was written (`--ca-out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The Host-routed listener's address.
    pub listen: String,
    /// One loopback listener per service, for clients that can only use `127.0.0.1:PORT`
    /// (no Host routing there): service name (`keyvault`, `dps`, `dps_device`, `arm`, `hub` for
    /// the first hub, `hub:NAME` for any other) → `https://127.0.0.1:PORT`.
    pub listeners: BTreeMap<String, String>,
    /// The bearer token serve generated for the default principal `owner` (only when the plan
    /// names no principals and `CERTROLL_SERVE_TOKEN` is unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Random bytes as base64 (keys and tokens).
fn random_base64(len: usize) -> Result<String> {
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; len]);
    crate::pki::random_bytes(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(&*bytes))
}

/// The SAS policies of every service host, made on the first start and kept sealed in the
/// store. Call inside a unit of work holding the writer lock.
fn load_or_create_sas(backend: &LocalBackend, plan: &Plan) -> Result<BTreeMap<String, Vec<SasPolicy>>> {
    let mut hosts: Vec<(String, auth::PolicyRights)> = vec![(
        format!("{}.azure-devices-provisioning.net", plan.serve.dps),
        auth::default_dps_policies(),
    )];
    let mut hubs: Vec<&String> = plan
        .groups
        .values()
        .map(|g| &g.hub)
        .chain(plan.enrollments.values().map(|e| &e.hub))
        .collect();
    hubs.sort();
    hubs.dedup();
    for hub in hubs {
        hosts.push((format!("{hub}.azure-devices.net"), auth::default_hub_policies()));
    }
    let mut out = BTreeMap::new();
    for (host, policies) in hosts {
        let mut list = Vec::new();
        for (name, rights) in policies {
            let meta = format!("serve/sas/{host}/{name}");
            let identity = format!("certroll/{meta}");
            let key = match tls::meta_get(backend, &meta)? {
                Some(sealed) => String::from_utf8(backend.store().key().open(&identity, &sealed)?.to_vec())
                    .context("a stored SAS key is not text")?,
                None => {
                    let key = random_base64(32)?;
                    let sealed = backend.store().key().seal(&identity, key.as_bytes())?;
                    tls::meta_put(backend, &meta, &sealed)?;
                    key
                }
            };
            list.push(SasPolicy::new(name, key, rights));
        }
        out.insert(host, list);
    }
    Ok(out)
}

/// The password of Key Vault backup blobs, made on the first start and kept sealed in the store.
fn load_or_create_backup_password(backend: &LocalBackend) -> Result<zeroize::Zeroizing<String>> {
    const META: &str = "serve/backup_password";
    const IDENTITY: &str = "certroll/serve/backup_password";
    if let Some(sealed) = tls::meta_get(backend, META)? {
        let plain = backend.store().key().open(IDENTITY, &sealed)?;
        return Ok(zeroize::Zeroizing::new(
            String::from_utf8(plain.to_vec()).context("the stored backup password is not text")?,
        ));
    }
    let password = zeroize::Zeroizing::new(random_base64(32)?);
    let sealed = backend.store().key().seal(IDENTITY, password.as_bytes())?;
    tls::meta_put(backend, META, &sealed)?;
    Ok(password)
}

/// The principals of `[serve.principals]`, tokens read from their variables; without any, one
/// `owner` with every permission and the contributor role over ARM, its token from
/// `CERTROLL_SERVE_TOKEN` or generated (returned so the start line can print it).
fn principals(config: &ServeConfig) -> Result<(Vec<Principal>, Option<String>)> {
    use crate::plan::{ArmRole, CertificatePermission};
    if config.principals.is_empty() {
        let var = ServeConfig::DEFAULT_TOKEN_ENV;
        return Ok(match std::env::var(var).ok().filter(|t| !t.is_empty()) {
            Some(token) => (
                vec![Principal::new(
                    "owner",
                    token,
                    CertificatePermission::ALL.to_vec(),
                    Some(ArmRole::Contributor),
                )],
                None,
            ),
            None => {
                let token = random_base64(24)?.replace(['+', '/', '='], "");
                let owner = Principal::new(
                    "owner",
                    token.clone(),
                    CertificatePermission::ALL.to_vec(),
                    Some(ArmRole::Contributor),
                );
                (vec![owner], Some(token))
            }
        });
    }
    let mut out: Vec<Principal> = Vec::new();
    for (name, spec) in &config.principals {
        let token = std::env::var(&spec.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                input(format!(
                    "principal `{name}`: environment variable {} (its token_env) is not set",
                    spec.token_env
                ))
            })?;
        if out.iter().any(|p| auth::same_token(p, &token)) {
            return Err(input(format!(
                "principal `{name}`: its token ({}) is the same as another principal's",
                spec.token_env
            )));
        }
        out.push(Principal::new(
            name.clone(),
            token,
            spec.permissions.clone(),
            spec.arm_role,
        ));
    }
    Ok((out, None))
}

/// The URL of a host as clients reach it through the Host-routed listener.
fn url_of(host: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// Runs the emulator until SIGINT or SIGTERM, then finishes the requests in flight. Calls
/// `on_start` once every listener is bound.
///
/// Errors: the store cannot be opened; a principal's token variable is unset; an address cannot
/// be bound; the CA file cannot be written.
pub async fn run(opts: ServeOptions, on_start: impl FnOnce(&StartInfo) -> Result<()>) -> Result<()> {
    let plan = Arc::new(opts.plan);
    // TLS certificates follow the real clock: clients check them with theirs.
    let real_now = time::OffsetDateTime::now_utc();
    let (principals, generated_token) = principals(&plan.serve)?;
    let (ca, sas, backup_password) = {
        use crate::backend::Backend as _;
        let mut backend = open_backend(&plan, Access::Write, &opts.settings)?;
        backend.begin()?;
        let made = tls::load_or_create_ca(&backend, real_now).and_then(|ca| {
            Ok((
                ca,
                load_or_create_sas(&backend, &plan)?,
                load_or_create_backup_password(&backend)?,
            ))
        });
        match made {
            Ok(made) => {
                backend.commit()?;
                made
            }
            Err(e) => {
                backend.rollback();
                return Err(e);
            }
        }
    };
    let mut backend = open_backend(&plan, Access::Read, &opts.settings)?;
    // Group commits append to the write-ahead log; copying it into the store (and the flushes
    // that takes) happens on a thread of its own instead of inside a commit every request of
    // the group waits for.
    if let Err(e) = backend.checkpoint_beside_writes() {
        tracing::debug!("no checkpoint thread: {e}");
    }
    let lock_timeout = opts.settings.lock_timeout.unwrap_or(Duration::from_secs(30));
    let state = Arc::new(
        AppState::new(
            backend,
            opts.clock.clone(),
            plan.clone(),
            lock_timeout,
            principals,
            sas,
        )
        .with_backup_password(backup_password),
    );
    let tls_config = tls::server_config(&ca, &tls::server_names(), real_now)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let routers = Arc::new(Routers::build(state.clone()));

    let main = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| input(format!("--listen {}: cannot listen there: {e}", opts.listen)))?;
    let port = main.local_addr()?.port();
    let direct_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut direct: Vec<(Origin, String, tokio::net::TcpListener)> = Vec::new();
    let mut services = vec![
        (Origin::KeyVault, "keyvault".to_string()),
        (Origin::DpsService, "dps".into()),
        (Origin::DpsDevice, "dps_device".into()),
        (Origin::Arm, "arm".into()),
    ];
    // One per hub: `hub` is the first hub's (the one `hub_url` names), `hub:NAME` any other's.
    for (i, hub) in state.hubs.iter().enumerate() {
        let name = if i == 0 {
            "hub".to_string()
        } else {
            format!("hub:{hub}")
        };
        services.push((Origin::Hub(hub.clone()), name));
    }
    for (origin, name) in services {
        if routers.for_origin(&origin).is_some()
            && !(origin == Origin::DpsDevice && routers.dps_device.is_none())
        {
            direct.push((origin, name, tokio::net::TcpListener::bind(direct_addr).await?));
        }
    }

    if let Some(path) = opts.ca_out.as_ref().filter(|p| crate::ops::outfile::is_stdout(p)) {
        // `--ca-out -` is standard output, as every `--out -` (a certificate: a terminal is fine).
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(ca.pem().as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| anyhow::anyhow!("--ca-out {}: writing to standard output: {e}", path.display()))?;
    } else if let Some(path) = &opts.ca_out {
        std::fs::write(path, ca.pem()).map_err(|e| {
            input(format!(
                "--ca-out {}: cannot write the CA certificate: {e}",
                path.display()
            ))
        })?;
    }
    let mut info = StartInfo {
        vault_url: url_of(&format!("{}.vault.azure.net", plan.serve.vault), port),
        ca_file: opts.ca_out.as_ref().map(|p| p.display().to_string()),
        listen: main.local_addr()?.to_string(),
        token: generated_token,
        ..StartInfo::default()
    };
    if routers.dps.is_some() {
        info.dps_url = Some(url_of(
            &format!("{}.azure-devices-provisioning.net", plan.serve.dps),
            port,
        ));
        info.dps_device_url = Some(url_of("global.azure-devices-provisioning.net", port));
        info.id_scope = Some(dps_device::id_scope(&plan.serve.dps));
    }
    if routers.hub.is_some() {
        info.hub_url = state
            .hubs
            .first()
            .map(|h| url_of(&crate::backend::wire::hub_host(h), port));
    }
    if routers.arm.is_some() {
        info.arm_url = Some(url_of("management.azure.com", port));
    }
    for (_, name, listener) in &direct {
        info.listeners
            .insert(name.clone(), format!("https://{}", listener.local_addr()?));
    }
    for (host, policies) in &state.sas_policies {
        let served = match Origin::of(host, &plan.serve, &state.hubs) {
            Some(o) => routers.for_origin(&o).is_some(),
            None => false,
        };
        if served {
            let service = host.split('.').next().unwrap_or(host).to_string();
            let host_port = if port == 443 {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            info.connection_strings.insert(
                service,
                policies
                    .iter()
                    .map(|p| (p.name.clone(), p.connection_string(&host_port)))
                    .collect(),
            );
        }
    }
    on_start(&info)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(accept_loop(
        main,
        acceptor.clone(),
        None,
        routers.clone(),
        state.clone(),
        stop_rx.clone(),
        connections.clone(),
    ));
    for (origin, _, listener) in direct {
        loops.spawn(accept_loop(
            listener,
            acceptor.clone(),
            Some(origin),
            routers.clone(),
            state.clone(),
            stop_rx.clone(),
            connections.clone(),
        ));
    }
    wait_for_signal().await?;
    tracing::info!("shutting down: finishing the requests in flight");
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Accepts connections until told to stop, then waits (up to [`DRAIN_TIMEOUT`]) for the
/// requests in flight. `fixed` is the service of a per-service listener (no Host routing).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    fixed: Option<Origin>,
    routers: Arc<Routers>,
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    connections: Arc<tokio::sync::Semaphore>,
) {
    // Every connection task holds a sender; once they are all gone, `drained` yields None.
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, routers, state, fixed, stop, alive) = (
            acceptor.clone(),
            routers.clone(),
            state.clone(),
            fixed.clone(),
            stop.clone(),
            alive.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let _alive = alive;
            serve_connection(tcp, peer, acceptor, fixed, routers, state, stop).await;
        });
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(DRAIN_TIMEOUT, drained.recv()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// How long a connection whose answers are all out is given, once serve stops, to flush the
/// last one and close before it is dropped.
const FLUSH_GRACE: Duration = Duration::from_millis(200);

/// Serves one connection until it ends, or until `stop` and its requests in flight are done.
///
/// On stop, hyper's graceful shutdown closes a keep-alive connection that is idle between
/// requests and lets one with a request in flight finish it. It keeps open one that is still in
/// its TLS handshake or has sent part of a request head, until the client sends the rest or the
/// header timeout ends, which would hold up serve's exit by [`HANDSHAKE_TIMEOUT`]: such a
/// connection has no request in flight (no handler has seen one), so it is dropped at once.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    fixed: Option<Origin>,
    routers: Arc<Routers>,
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        _ = stopped(&mut stop) => return,
        done = handshake => match done {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake with {peer} failed: {e}");
                return;
            }
            Err(_) => return,
        },
    };
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| tls::ClientChain(certs.iter().map(|c| c.to_vec()).collect()));
    // Requests whose handler has been called and whose answer has not been sent in full.
    let (busy, mut in_flight) = tokio::sync::watch::channel(0usize);
    let busy = Arc::new(busy);
    let head = Arc::new(head_limit::HeadState::default());
    let io = head_limit::HeadLimit::new(tls, head.clone());
    let svc = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut req = req.map(|b| {
            Body::new(body_timeout::StallTimeout::new(
                b,
                BODY_STALL_TIMEOUT,
                stalled.clone(),
            ))
        });
        if let Some(chain) = &chain {
            req.extensions_mut().insert(chain.clone());
        }
        let cut = head.take_cut();
        if let Some(cut) = cut {
            req.extensions_mut().insert(cut);
        }
        let (routers, state, fixed) = (routers.clone(), state.clone(), fixed.clone());
        let guard = InFlight::new(busy.clone(), head.clone());
        async move {
            // No answer: an injected dropped connection (hyper closes it on an error).
            let mut response = dispatch(req, fixed, &routers, &state).await.ok_or_else(|| {
                std::io::Error::other("connection dropped on purpose ([serve.services] drop_percent)")
            })?;
            if cut.is_some() || stalled.load(std::sync::atomic::Ordering::Relaxed) {
                // The rest of that head or body was never read: the connection cannot go on.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, std::io::Error>(response.map(|body| Body::new(GuardedBody { body, _guard: guard })))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_buf_size(HEAD_BUFFER)
        .max_headers(MAX_HEADER_FIELDS)
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(
            hyper_util::rt::TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(svc),
        );
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                biased;
                ended = conn.as_mut() => ended,
                _ = async { drop(in_flight.wait_for(|n| *n == 0).await) } => {
                    // Nothing under way: what hyper still holds is a connection waiting for a
                    // request. An answer that has just gone out gets a moment to be flushed.
                    match tokio::time::timeout(FLUSH_GRACE, conn.as_mut()).await {
                        Ok(ended) => ended,
                        Err(_) => Ok(()),
                    }
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection from {peer}: {e}");
    }
}

/// Resolves once `stop` holds true (at once if it already does, or if serve is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, not held across an await.
    drop(stop.wait_for(|stopped| *stopped).await);
}

/// Counts one request in flight on its connection from its handler's call until its answer's
/// body is dropped (sent in full, or the connection gone); the last one out tells the head
/// watch that the next bytes begin a new head.
struct InFlight(Arc<tokio::sync::watch::Sender<usize>>, Arc<head_limit::HeadState>);

impl InFlight {
    fn new(counter: Arc<tokio::sync::watch::Sender<usize>>, head: Arc<head_limit::HeadState>) -> InFlight {
        counter.send_modify(|n| *n += 1);
        InFlight(counter, head)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut idle = false;
        self.0.send_modify(|n| {
            *n = n.saturating_sub(1);
            idle = *n == 0;
        });
        if idle {
            self.1.answer_sent();
        }
    }
}

/// An answer's body that keeps its request counted in flight until hyper has taken all of it.
struct GuardedBody {
    body: Body,
    _guard: InFlight,
}

impl hyper::body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        hyper::body::Body::poll_frame(std::pin::Pin::new(&mut self.body), cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

/// Whether an `api-version` value has the shape of one: a date (`2021-10-01`) or a dotted
/// number (`7.5`), at most 32 characters, optionally with a suffix such as `-preview`. Any such value is accepted (the
/// SDKs' versions move faster than any emulator); only nonsense is refused.
fn plausible_api_version(v: &str) -> bool {
    if v.is_empty() || v.len() > 32 {
        return false;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let b = v.as_bytes();
    let (core, rest) = if b.len() >= 10
        && digits(&v[..4])
        && b[4] == b'-'
        && digits(&v[5..7])
        && b[7] == b'-'
        && digits(&v[8..10])
    {
        (true, &v[10..])
    } else {
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(v.len());
        let core = &v[..end];
        (core.contains('.') && core.split('.').all(digits), &v[end..])
    };
    core && (rest.is_empty()
        || rest.strip_prefix('-').is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }))
}

/// Refuses, before any service sees it, a request no Azure service would take: an `api-version`
/// that is not a version, a query string that does not decode, or a body whose Content-Type
/// is not JSON (device-to-cloud messages excepted: their body is the device's own): 400 with a
/// message naming what is wrong. A request target over [`MAX_URI`] gets 414, a header block over
/// [`MAX_HEADER_BYTES`] 431.
fn screen(req: &Request<Body>, origin: &Origin) -> Result<(), ApiError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            generic_code(Some(origin), StatusCode::URI_TOO_LONG),
            format!("the request target is {target} bytes, over the {MAX_URI}-byte limit"),
        ));
    }
    let too_large = |message: String| {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            generic_code(Some(origin), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            message,
        )
    };
    match req.extensions().get::<head_limit::HeadCut>() {
        Some(head_limit::HeadCut::Bytes(received)) => {
            return Err(too_large(format!(
                "the request's headers are over the {MAX_HEADER_BYTES}-byte limit (refused after {received} bytes)"
            )));
        }
        Some(head_limit::HeadCut::Fields) => {
            return Err(too_large(format!(
                "the request has more than {MAX_HEADER_FIELDS} header fields"
            )));
        }
        None => {}
    }
    let head: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if head > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            generic_code(Some(origin), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            format!("the request's headers are {head} bytes, over the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    if let Some(query) = req.uri().query() {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if value.contains('\u{FFFD}') || key.contains('\u{FFFD}') {
                return Err(ApiError::bad_request(
                    "the query string holds a percent-escape that is not UTF-8",
                ));
            }
            if key == "api-version" && !plausible_api_version(&value) {
                let shown: String = value.chars().take(40).collect();
                return Err(ApiError::bad_request(format!(
                    "api-version `{}` is not a version (a date such as 2021-10-01, or 7.5)",
                    shown.escape_debug()
                )));
            }
        }
    }
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|l| l.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let device_message = matches!(origin, Origin::Hub(_)) && req.uri().path().contains("/messages/");
    if has_body
        && !device_message
        && let Some(ct) = req.headers().get(header::CONTENT_TYPE)
    {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::bad_request(format!(
                "Content-Type `{}` is not application/json: the body must be JSON",
                String::from_utf8_lossy(ct.as_bytes()).escape_debug()
            )));
        }
    }
    Ok(())
}

/// Sends a request to its service (by Host, unless the listener is a service's own), after the
/// service's throttling and injected faults, and logs it. None: drop the connection.
async fn dispatch(
    mut req: Request<Body>,
    fixed: Option<Origin>,
    routers: &Routers,
    state: &AppState,
) -> Option<Response> {
    let start = Instant::now();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let method = req.method().clone();
    // The path only: a query string may carry a signature.
    let path = req.uri().path().to_string();
    let origin = fixed.or_else(|| Origin::of(&host, &state.config, &state.hubs));
    let response = match origin.and_then(|o| routers.for_origin(&o).map(|r| (o, r))) {
        Some((origin, _)) if let Err(e) = screen(&req, &origin) => error_response(Some(&origin), e),
        Some((origin, router)) => match state.faults.judge(origin.service()) {
            faults::Verdict::Drop => {
                tracing::info!(target: "certroll::serve::access", "{method} {host}{path} dropped (injected)");
                return None;
            }
            faults::Verdict::Throttle { retry_after } => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Throttled",
                    format!(
                        "Request was not processed because too many requests were received. Retry after {retry_after} seconds."
                    ),
                );
                e.code = generic_code(Some(&origin), e.status);
                e.retry_after = Some(retry_after);
                error_response(Some(&origin), e)
            }
            faults::Verdict::Fail { status } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let mut e = ApiError::new(
                    status,
                    "ServiceUnavailable",
                    "an injected fault ([serve.services] error_percent)",
                );
                e.code = generic_code(Some(&origin), status);
                if status != StatusCode::INTERNAL_SERVER_ERROR {
                    e.retry_after = Some(1);
                }
                error_response(Some(&origin), e)
            }
            faults::Verdict::Serve { delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                req.extensions_mut().insert(origin.clone());
                let response = match router.clone().oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                in_service_shape(&origin, &method, &path, response).await
            }
        },
        None => {
            let mut names = vec![
                format!("{}.vault.azure.net", state.config.vault),
                format!("{}.azure-devices-provisioning.net", state.config.dps),
                "global.azure-devices-provisioning.net".to_string(),
            ];
            names.extend(state.hubs.iter().map(|h| crate::backend::wire::hub_host(h)));
            names.push("management.azure.com".into());
            let shown: String = host.chars().take(200).collect();
            ApiError::not_found(
                "HostNotFound",
                format!(
                    "no service answers at host `{}`: this emulator serves {}",
                    shown.escape_debug(),
                    names.join(", ")
                ),
            )
            .into_response()
        }
    };
    // One line per request: never the query (a SAS `sig` may ride in it) nor any header but
    // Host; a long target is cut so one request cannot flood the log.
    let shown: String = path.chars().take(200).collect();
    let cut = if shown.len() < path.len() { "..." } else { "" };
    let host: String = host.chars().take(200).collect();
    tracing::info!(
        target: "certroll::serve::access",
        "{method} {host}{shown}{cut} {} {}ms",
        response.status().as_u16(),
        start.elapsed().as_millis()
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::plausible_api_version;

    #[test]
    fn api_versions_of_every_shape_azure_uses_are_accepted_and_nonsense_is_not() {
        for v in [
            "7.5",
            "7.0",
            "2016-10-01",
            "2026-04-01",
            "2021-10-01",
            "7.6-preview.2",
            "2023-03-01-preview",
        ] {
            assert!(plausible_api_version(v), "{v}");
        }
        for v in [
            "",
            "x",
            "7.5.",
            ".7",
            "'; drop",
            "2021-1-01",
            "7.5-",
            &"9".repeat(40),
        ] {
            assert!(!plausible_api_version(v), "{v}");
        }
    }
}
