//! Key Vault's bearer challenge, learned before a client sends anything with a body.
//!
//! The SDK's challenge policy (`KeyVaultAuthorizer::on_request`, the same file in each of
//! `azure_security_keyvault_certificates`, `_keys` and `_secrets` 1.0.1) sends a client's
//! requests without authorization until one has been answered with Key Vault's challenge, and
//! takes the body out of such a request, to put it back once the challenge names the token's
//! scope. It takes it out of the request itself, which the retry policy sends again as it is:
//! when that first try fails (a 5xx, a 429, a dropped connection), no try of it carries the body
//! any more, and Key Vault answers the write that arrives empty with 400 ("alg is required" for
//! a sign, trial az8 F1), or carries out an empty one (contacts set to none). The JS and .NET
//! SDKs fixed the same fault (Azure/azure-sdk-for-js#14590).
//!
//! [`ChallengeWarmUp`] is a per-call policy of each Key Vault client (before the retry policy):
//! until the client has had an answer past the challenge, a request with a body is preceded by
//! a `GET` of one page of the vault's certificates, whose tries lose nothing when retried.

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Method, Request, StatusCode, Url};
use std::sync::Arc;

/// Sends a bodiless `GET` ahead of a Key Vault client's first request with a body, so that the
/// SDK's challenge policy knows the vault's scope before it handles a body (module docs). One
/// per client: each client's challenge policy learns the scope on its own.
#[derive(Debug, Default)]
pub struct ChallengeWarmUp {
    /// Set once a request of the client was answered past the challenge.
    warm: tokio::sync::OnceCell<()>,
}

impl ChallengeWarmUp {
    /// A policy for one client.
    pub fn new() -> Arc<ChallengeWarmUp> {
        Arc::new(ChallengeWarmUp::default())
    }
}

/// Whether an answer shows the client's challenge policy got past the challenge: any answer but
/// the challenge itself (401) and those a try may have got before it (throttled, timed out, a
/// 5xx). A 403 will do: a principal allowed only to sign may not list.
fn past_challenge(status: StatusCode) -> bool {
    let s = u16::from(status);
    !(s == 401 || s == 408 || s == 429 || s >= 500)
}

/// `GET /certificates?maxresults=1` of the vault `url` belongs to, in its API version: the
/// challenge is the vault's, whichever collection a client reads.
fn probe_url(url: &Url) -> Url {
    let mut probe = url.clone();
    probe.set_path("/certificates");
    let version = url
        .query_pairs()
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.into_owned());
    probe.set_query(None);
    {
        let mut q = probe.query_pairs_mut();
        if let Some(v) = version {
            q.append_pair("api-version", &v);
        }
        q.append_pair("maxresults", "1");
    }
    probe
}

#[async_trait::async_trait]
impl Policy for ChallengeWarmUp {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        if !self.warm.initialized() && request.body().is_empty() != Some(true) {
            // Concurrent first writes wait for one probe. One that got no answer past the
            // challenge (none within the retries) leaves the next write to try again.
            let _ = self
                .warm
                .get_or_try_init(|| async {
                    let mut probe = Request::new(probe_url(request.url()), Method::Get);
                    match next[0].send(ctx, &mut probe, &next[1..]).await {
                        Ok(r) if past_challenge(r.status()) => Ok(()),
                        _ => Err(()),
                    }
                })
                .await;
        }
        let response = next[0].send(ctx, request, &next[1..]).await;
        if let Ok(r) = &response
            && past_challenge(r.status())
        {
            let _ = self.warm.set(());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reads_one_page_of_certificates_in_the_requests_api_version() {
        let url = Url::parse("https://v.vault.azure.net:8443/keys/k/abc/sign?api-version=7.6").unwrap();
        assert_eq!(
            probe_url(&url).as_str(),
            "https://v.vault.azure.net:8443/certificates?api-version=7.6&maxresults=1"
        );
    }

    #[test]
    fn only_an_answer_past_the_challenge_warms_the_client() {
        for s in [200, 204, 400, 403, 404, 409] {
            assert!(past_challenge(StatusCode::from(s)), "{s}");
        }
        for s in [401, 408, 429, 500, 503] {
            assert!(!past_challenge(StatusCode::from(s)), "{s}");
        }
    }
}
