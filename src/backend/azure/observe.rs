//! What an operator sees of the HTTP traffic of every Azure client (Key Vault SDK, DPS, ARM, IoT
//! Hub and the credentials): [`Observe`] is the last per-try policy of every azure_core
//! pipeline, just before the transport, so it sees each attempt the retry policy makes.
//!
//! - Each attempt is logged at debug (`-vv`): method, host, path, status, attempt, elapsed.
//!   Never the query (a SAS token can travel there), a header or a body: the `Authorization`
//!   header carries the bearer token or the SharedAccessSignature. A transport error names the
//!   URL it failed to reach (reqwest's words): [`strip_query`] drops its query before the
//!   error is logged or handed on, so no message or log line shows one.
//! - A throttled or failing answer (429, 503, other 5xx) and a transport failure are logged at
//!   info (`-v`) on each attempt, so a slow run shows why.
//! - A TLS certificate the client does not trust is not transient: the policy turns it into a
//!   non-retryable error that names the host, the reason rustls gives (unknown issuer, name
//!   mismatch, expired) and the fix. A refused connection names the address refused and, when
//!   the plan's `resolve` sent the host there, the host too; it is still retried (a service
//!   restarting refuses for a moment).
//! - A host name that does not resolve on the first request of this process to it (a misspelt
//!   `dps.host` or `vault_url`) is bad input, not a failure part-way: no rerun can succeed, so
//!   it is not retried, and the message names the plan key and its place. Once the host has
//!   answered in this run, or when the resolver says its failure is temporary, a DNS failure is
//!   an outage and is retried like a reset.
//! - Whether any request that changes something remote has succeeded in this process
//!   ([`remote_written`]): a credential rejected before that is bad input (exit 2, nothing
//!   changed), after it a failure part-way (exit 1).

use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult, RetryPolicyCount};
use azure_core::http::{Context, Method, Request};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How the message of a certificate verification failure begins (see [`is_setup_failure`]).
pub const TLS_UNTRUSTED: &str = "TLS: the certificate of ";

/// The error code certroll gives a request that met a server certificate it does not trust
/// (see [`no_answer`]).
pub const TLS_CODE: &str = "TLS";

/// The error code certroll gives a request whose host name does not resolve on first contact
/// (see [`no_answer`]).
pub const DNS_CODE: &str = "DNS";

/// How this policy's message about a host that does not resolve begins.
const DNS_UNRESOLVED: &str = "DNS: ";

/// The tracing target of the per-attempt log lines.
pub const LOG_TARGET: &str = "certroll::azure::http";

static WRITTEN: AtomicBool = AtomicBool::new(false);

/// The hosts (lowercase) that have answered a request in this process: a DNS failure for one of
/// them is an outage, not a misspelt name.
static ANSWERED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn has_answered(host: &str) -> bool {
    ANSWERED
        .lock()
        .map(|hosts| hosts.contains(&host.to_ascii_lowercase()))
        .unwrap_or(true)
}

fn answered(host: &str) {
    if let Ok(mut hosts) = ANSWERED.lock()
        && !hosts.contains(host)
    {
        hosts.insert(host.to_ascii_lowercase());
    }
}

/// Whether a request that changes remote state (PUT, PATCH, DELETE, or a POST that is not a
/// query or a signature) has been answered 2xx in this process.
pub fn remote_written() -> bool {
    WRITTEN.load(Ordering::Relaxed)
}

/// Whether `error` says the setup is wrong rather than the run failed part-way: the service
/// rejected the credential (401, 403), its TLS certificate is not trusted or its host name does
/// not resolve, and no request of this process has changed anything remote yet. Such a failure exits 2 (nothing changed).
pub fn is_setup_failure(error: &crate::backend::BackendError) -> bool {
    let crate::backend::BackendError::Remote { status, message, .. } = error else {
        return false;
    };
    let setup = matches!(status, Some(401 | 403))
        || is_untrusted(error)
        || message.contains(TLS_UNTRUSTED)
        || matches!(error, crate::backend::BackendError::Remote { status: None, code, .. } if code == DNS_CODE);
    setup && !remote_written()
}

/// Whether `error` is a request that met a server certificate certroll does not trust.
fn is_untrusted(error: &crate::backend::BackendError) -> bool {
    matches!(error, crate::backend::BackendError::Remote { status: None, code, .. } if code == TLS_CODE)
}

/// The code and message of a request that got no answer (after the retries): the failure kind
/// and the whole cause chain, except that a server certificate certroll does not trust is told
/// as [`TLS_CODE`] and this policy's own words, without the retry policy's "non-transport error
/// occurred which will not be retried:" and azure_core's kind in front (the words already name
/// the cause, the host and the fix); a host that does not resolve likewise, as [`DNS_CODE`].
pub fn no_answer(error: &azure_core::Error) -> (String, String) {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(rest) = e.to_string().strip_prefix(DNS_UNRESOLVED) {
            return (DNS_CODE.to_string(), rest.to_string());
        }
        cause = e.source();
    }
    let text = chain_text(error);
    match text.find(TLS_UNTRUSTED) {
        // `TLS: the certificate of HOST ...` becomes code `TLS`, message `the certificate of ...`.
        Some(at) => (TLS_CODE.to_string(), text[at + TLS_CODE.len() + 2..].to_string()),
        None => (format!("{:?}", error.kind()), text),
    }
}

/// Drops the query and fragment from the URL a transport error carries (reqwest's "error
/// sending request for url (...)"), so no message or log line made from `error` shows the
/// query (`api-version`, and a SAS token could travel there one day).
pub fn strip_query(error: &mut azure_core::Error) {
    if let Some(url) = error
        .downcast_mut::<reqwest::Error>()
        .and_then(reqwest::Error::url_mut)
    {
        url.set_query(None);
        url.set_fragment(None);
    }
}

/// The per-try policy described in the module docs.
#[derive(Debug, Default)]
pub struct Observe {
    /// The plan's `resolve` table (host name → address), as the transport was given it: a
    /// refused connection names the address actually refused.
    resolve: BTreeMap<String, SocketAddr>,
    /// The plan key naming each service host and its place (`plan.toml:7:8: dps.host`), by
    /// host (lowercase): a host that does not resolve is told by the key that names it.
    hosts: BTreeMap<String, String>,
}

impl Observe {
    /// The policy for clients whose transport resolves the hosts of `resolve` to its addresses.
    pub fn new(resolve: &BTreeMap<String, SocketAddr>) -> Observe {
        Observe {
            resolve: resolve.clone(),
            hosts: BTreeMap::new(),
        }
    }

    /// The policy for the clients of `config`: its `resolve`, and its host keys' places.
    pub fn for_config(config: &crate::plan::AzureConfig) -> Observe {
        let hosts = config
            .host_keys()
            .into_iter()
            .map(|(host, key)| (host, config.key_at(&key)))
            .collect();
        Observe {
            resolve: config.resolve.clone(),
            hosts,
        }
    }

    /// The address a request to `host` on `url_port` (the URL's own port, if it names one)
    /// connects to when `resolve` names the host: reqwest takes the overriding address's IP, and
    /// the URL's port, else the address's (0: the scheme's, `default_port`).
    fn resolved(&self, host: &str, url_port: Option<u16>, default_port: u16) -> Option<SocketAddr> {
        let addr = self
            .resolve
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, a)| *a)?;
        let port = url_port.unwrap_or(match addr.port() {
            0 => default_port,
            p => p,
        });
        Some(SocketAddr::new(addr.ip(), port))
    }
}

/// Whether `method path` changes something: reads and the read-only POSTs (registry and
/// enrollment queries, Key Vault's sign) do not.
fn changes(method: Method, path: &str) -> bool {
    match method {
        Method::Get | Method::Head => false,
        Method::Post => {
            let path = path.trim_end_matches('/');
            !(path.ends_with("/query") || path.ends_with("/sign") || path.contains("/oauth2/"))
        }
        _ => true,
    }
}

#[async_trait::async_trait]
impl Policy for Observe {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let attempt = ctx.value::<RetryPolicyCount>().map_or(0, |c| **c) + 1;
        let method = request.method();
        let url = request.url();
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let resolved = self.resolved(&host, url.port(), port);
        let path = url.path().to_string();
        let started = Instant::now();
        let result = next[0].send(ctx, request, &next[1..]).await;
        let ms = started.elapsed().as_millis();
        match result {
            Ok(response) => {
                answered(&host);
                let status = u16::from(response.status());
                tracing::debug!(
                    target: LOG_TARGET,
                    "{method} {host}{path} -> {status} (attempt {attempt}, {ms} ms)"
                );
                match status {
                    429 | 503 => {
                        let after = response
                            .headers()
                            .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                            .map(|s| format!(", Retry-After {s} s"))
                            .unwrap_or_default();
                        tracing::info!(
                            target: LOG_TARGET,
                            "{host} throttled {method} {path}: {status}{after} (attempt {attempt}); waiting"
                        );
                    }
                    500..=599 => tracing::info!(
                        target: LOG_TARGET,
                        "{host} answered {status} to {method} {path} (attempt {attempt})"
                    ),
                    200..=299 if changes(method, &path) => WRITTEN.store(true, Ordering::Relaxed),
                    _ => {}
                }
                Ok(response)
            }
            Err(mut error) => {
                strip_query(&mut error);
                let reason = transport_reason(&error, &host, port, resolved);
                match reason {
                    Some(Reason::Tls(why)) => {
                        let message = format!(
                            "{TLS_UNTRUSTED}{host} is not trusted: {why}; not retried. \
                             certroll trusts the system's roots and the plan's `ca_file` \
                             (against `certroll serve`: the file its --ca-out wrote); check \
                             `ca_file`, the host name and `resolve`"
                        );
                        tracing::warn!(target: LOG_TARGET, "{method} {host}{path}: {message}");
                        Err(azure_core::Error::with_message(ErrorKind::Other, message))
                    }
                    // A name `resolve` maps never reaches the resolver; one that has answered in
                    // this run, or whose failure the resolver calls temporary, is an outage.
                    Some(Reason::Unresolved(detail)) if !has_answered(&host) && !is_temporary(&detail) => {
                        let key = self.hosts.get(&host).cloned().unwrap_or_else(|| "host".into());
                        let message = format!(
                            "{DNS_UNRESOLVED}{key} `{host}` does not resolve (DNS: {detail}); not \
                             retried: check the host name, or map it to an address in the plan's \
                             `resolve`"
                        );
                        tracing::warn!(target: LOG_TARGET, "{method} {host}{path}: {message}");
                        Err(azure_core::Error::with_message(ErrorKind::Other, message))
                    }
                    Some(Reason::Refused(text)) => {
                        tracing::info!(target: LOG_TARGET, "{method} {host}{path}: {text} (attempt {attempt}); retrying");
                        Err(azure_core::Error::with_error(ErrorKind::Connection, error, text))
                    }
                    Some(Reason::Unresolved(_)) | None => {
                        tracing::info!(
                            target: LOG_TARGET,
                            "{method} {host}{path}: {} (attempt {attempt}, {ms} ms)",
                            chain_text(&error)
                        );
                        Err(error)
                    }
                }
            }
        }
    }
}

/// Why a request got no answer, when the cause is one an operator must fix.
#[derive(Debug, PartialEq, Eq)]
pub enum Reason {
    /// The server's certificate failed verification: the reason in words.
    Tls(String),
    /// Nothing listens at the address: `connection refused by host:port`, or, when the plan's
    /// `resolve` sent the host elsewhere, `connection refused by ADDRESS (the address the plan's
    /// `resolve` gives host)`.
    Refused(String),
    /// The host name did not resolve: the resolver's words.
    Unresolved(String),
}

/// Whether the resolver's words say its failure is temporary (glibc's and musl's
/// `EAI_AGAIN`, "Temporary failure in name resolution"). Only the message carries it: std
/// turns every `getaddrinfo` failure into an `io::Error` of one uncategorised kind.
fn is_temporary(detail: &str) -> bool {
    detail.contains("Temporary failure")
}

/// Walks `error`'s source chain (azure_core → reqwest → hyper → io → rustls) for a certificate
/// verification failure, a host name that did not resolve (reqwest's `is_dns`) or a refused
/// connection to `host` on `port` (`resolved`: the address the plan's `resolve` sent it to, if
/// it did).
pub fn transport_reason(
    error: &(dyn std::error::Error + 'static),
    host: &str,
    port: u16,
    resolved: Option<SocketAddr>,
) -> Option<Reason> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(Reason::Tls(tls_words(tls)));
        }
        if e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_dns)
        {
            // The resolver's own words are the innermost cause.
            let mut inner = e;
            while let Some(next) = inner.source() {
                inner = next;
            }
            return Some(Reason::Unresolved(inner.to_string()));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some(Reason::Refused(match resolved {
                    Some(addr) => format!(
                        "connection refused by {addr} (the address the plan's `resolve` gives {host})"
                    ),
                    None => format!("connection refused by {host}:{port}"),
                }));
            }
            // rustls's error travels inside an io::Error as its payload.
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(Reason::Tls(tls_words(tls)));
            }
        }
        // Some layers hand on the text of rustls's error rather than the error itself.
        if let Some((_, rest)) = e.to_string().split_once("invalid peer certificate: ") {
            return Some(Reason::Tls(tls_text_words(rest)));
        }
        cause = e.source();
    }
    None
}

/// [`tls_words`] for rustls's `Debug` of a `CertificateError` as its message carries it.
fn tls_text_words(debug: &str) -> String {
    let name = debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default();
    match name {
        "UnknownIssuer" => "unknown issuer (no trusted root signed it)".into(),
        "NotValidForName" | "NotValidForNameContext" => {
            "name mismatch (the certificate is not for this host name)".into()
        }
        "Expired" | "ExpiredContext" => "expired".into(),
        "NotValidYet" | "NotValidYetContext" => "not valid yet".into(),
        "Revoked" => "revoked".into(),
        _ => debug.trim().to_string(),
    }
}

fn tls_words(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "unknown issuer (no trusted root signed it)".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "name mismatch (the certificate is not for this host name)".into()
            }
            C::Expired | C::ExpiredContext { .. } => "expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
            C::Revoked => "revoked".into(),
            C::BadSignature => "bad signature".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

/// An error and its causes as one line, each told once.
pub fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_failure_inside_io_and_azure_errors_is_named() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let wrapped = azure_core::Error::with_error(ErrorKind::Io, io, "failed to execute `reqwest` request");
        let reason = transport_reason(&wrapped, "x.vault.azure.net", 443, None);
        assert_eq!(
            reason,
            Some(Reason::Tls("unknown issuer (no trusted root signed it)".into()))
        );
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let reason = transport_reason(&name, "h", 443, None).unwrap();
        assert!(
            matches!(reason, Reason::Tls(ref w) if w.starts_with("name mismatch")),
            "{reason:?}"
        );
        let told = std::io::Error::other(
            "client error (Connect): invalid peer certificate: NotValidForNameContext { expected: x }",
        );
        let reason = transport_reason(&told, "h", 443, None).unwrap();
        assert!(
            matches!(reason, Reason::Tls(ref w) if w.starts_with("name mismatch")),
            "{reason:?}"
        );
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(
            transport_reason(&expired, "h", 443, None),
            Some(Reason::Tls("expired".into()))
        );
    }

    #[test]
    fn an_untrusted_certificate_is_told_without_the_retry_policy_s_words_and_counts_as_setup() {
        let ours = azure_core::Error::with_message(
            ErrorKind::Other,
            format!("{TLS_UNTRUSTED}management.azure.com is not trusted: unknown issuer; not retried"),
        );
        // What azure_core's retry policy makes of an error it does not retry.
        let wrapped = azure_core::Error::with_error(
            ErrorKind::Other,
            ours,
            "non-transport error occurred which will not be retried",
        );
        assert!(
            chain_text(&wrapped).starts_with("non-transport error"),
            "{}",
            chain_text(&wrapped)
        );
        let (code, message) = no_answer(&wrapped);
        assert_eq!(code, TLS_CODE);
        assert_eq!(
            message,
            "the certificate of management.azure.com is not trusted: unknown issuer; not retried"
        );
        let error = crate::backend::BackendError::Remote {
            service: "ARM",
            operation: "read".into(),
            target: "x".into(),
            status: None,
            code,
            message,
        };
        assert!(
            error.to_string().ends_with("failed: TLS: the certificate of management.azure.com is not trusted: unknown issuer; not retried"),
            "{error}"
        );
        assert!(is_setup_failure(&error) || remote_written());
        // Anything else keeps its kind and whole chain.
        let reset = azure_core::Error::with_message(ErrorKind::Io, "connection reset");
        assert_eq!(
            no_answer(&reset),
            ("Io".to_string(), "connection reset".to_string())
        );
    }

    #[test]
    fn a_refused_connection_names_host_and_port_and_others_are_not_classified() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let wrapped = azure_core::Error::with_error(ErrorKind::Connection, io, "connect");
        assert_eq!(
            transport_reason(&wrapped, "dps.example", 8443, None),
            Some(Reason::Refused("connection refused by dps.example:8443".into()))
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(transport_reason(&reset, "h", 1, None), None);
    }

    /// Trial az6: a host the plan's `resolve` sends to an address where nothing listens is
    /// refused at that address, and the message names it beside the host (it named
    /// `host:443`, an address never tried). Through a real reqwest client, as `http_client`
    /// builds it, and this policy in front of azure_core's transport.
    #[test]
    fn a_refused_connection_to_a_resolved_host_names_the_address_it_was_sent_to() {
        use azure_core::http::policies::TransportPolicy;
        use azure_core::http::{Transport, Url};
        // A port nothing listens on: bound for a moment, then let go.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let host = "example-hub.azure-devices.net";
        let resolve = BTreeMap::from([(host.to_string(), closed)]);
        let mut builder = reqwest::Client::builder();
        for (h, a) in &resolve {
            builder = builder.resolve(h, *a);
        }
        let transport: Arc<dyn Policy> = Arc::new(TransportPolicy::new(Transport::new(Arc::new(
            builder.build().unwrap(),
        ))));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sent = |observe: Observe| {
            let url = Url::parse(&format!("https://{host}/devices/query")).unwrap();
            let mut request = Request::new(url, Method::Get);
            let answer =
                rt.block_on(observe.send(&Context::new(), &mut request, std::slice::from_ref(&transport)));
            chain_text(&answer.expect_err("nothing listens there"))
        };
        let told = sent(Observe::new(&resolve));
        assert!(
            told.contains(&format!(
                "connection refused by {closed} (the address the plan's `resolve` gives {host})"
            )),
            "{told}"
        );
        assert!(!told.contains(":443"), "{told}");
        // Port 0 in `resolve` is the scheme's port; a URL's own port wins over the address's.
        let observe = Observe::new(&BTreeMap::from([(
            host.to_string(),
            "127.0.0.1:0".parse().unwrap(),
        )]));
        assert_eq!(
            observe.resolved(host, None, 443),
            Some("127.0.0.1:443".parse().unwrap())
        );
        let observe = Observe::new(&resolve);
        assert_eq!(
            observe.resolved("EXAMPLE-HUB.azure-devices.net", Some(8443), 443),
            Some(SocketAddr::new(closed.ip(), 8443))
        );
        assert_eq!(observe.resolved("other.example", None, 443), None);
    }

    /// Trial az7: errors and `-v` lines showed `?api-version=...`. A server that takes the
    /// connection and hangs up gives a transport error naming the URL: through this policy, the
    /// error (and the `-v` line, made from the same error) names the path without the query.
    #[test]
    fn a_transport_error_names_the_path_without_the_query() {
        use azure_core::http::policies::TransportPolicy;
        use azure_core::http::{Transport, Url};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hang_up = std::thread::spawn(move || {
            // The try is let in and dropped at once.
            for stream in listener.incoming().take(1) {
                drop(stream);
            }
        });
        let host = "certroll-dps.azure-devices-provisioning.net";
        let resolve = BTreeMap::from([(host.to_string(), addr)]);
        let client = reqwest::Client::builder().resolve(host, addr).build().unwrap();
        let transport: Arc<dyn Policy> = Arc::new(TransportPolicy::new(Transport::new(Arc::new(client))));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = Url::parse(&format!(
            "https://{host}/enrollmentGroups/ga?api-version=2021-10-01&sig=x"
        ))
        .unwrap();
        let mut request = Request::new(url, Method::Get);
        let answer = rt.block_on(Observe::new(&resolve).send(
            &Context::new(),
            &mut request,
            std::slice::from_ref(&transport),
        ));
        let error = answer.expect_err("the server hangs up");
        let told = chain_text(&error);
        assert!(
            told.contains(&format!("https://{host}/enrollmentGroups/ga")),
            "{told}"
        );
        assert!(!told.contains('?'), "{told}");
        assert!(!told.contains("api-version"), "{told}");
        assert!(!told.contains("sig="), "{told}");
        hang_up.join().unwrap();
    }

    #[test]
    fn reads_and_queries_do_not_count_as_writes() {
        assert!(!changes(Method::Get, "/certificates/a"));
        assert!(!changes(Method::Post, "/devices/query"));
        assert!(!changes(Method::Post, "/enrollments/query"));
        assert!(!changes(Method::Post, "/keys/ca/abc/sign"));
        assert!(changes(Method::Put, "/enrollments/dev-1"));
        assert!(changes(Method::Post, "/certificates/dev-1/import"));
        assert!(changes(Method::Delete, "/certificates/dev-1"));
    }
}
