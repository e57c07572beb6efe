//! SharedAccessSignature tokens for the DPS and IoT Hub service APIs (azure-wire.md §2.2): a
//! policy's key, the token it signs, and the azure_core pipeline policy that puts a fresh token
//! on every request.
//!
//! The HMAC is aws-lc-rs's; the key is held zeroized and never printed.

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::sync::{Arc, Mutex};

/// What `quote(s, safe="")` leaves alone: RFC 3986 unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How long a token is valid: an hour, as the Azure SDKs sign them.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;
/// A token is replaced when less than this is left of it, so none expires in flight.
const REFRESH_MARGIN_SECS: i64 = 600;

/// A shared access policy's name and its (decoded) key.
pub struct SasKey {
    policy: String,
    key: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SasKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SasKey")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SasKey {
    /// A policy's key as the portal shows it (base64). The error names the policy, never the key.
    pub fn new(policy: &str, key_base64: &str) -> Result<SasKey, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_base64.trim())
            .map_err(|_| format!("the key of shared access policy `{policy}` is not base64"))?;
        if key.is_empty() {
            return Err(format!("the key of shared access policy `{policy}` is empty"));
        }
        Ok(SasKey {
            policy: policy.to_string(),
            key: zeroize::Zeroizing::new(key),
        })
    }

    /// Reads the key from the environment variable `var`, through `env` (the process
    /// environment is `|v| std::env::var(v).ok()`).
    pub fn from_env(
        policy: &str,
        var: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SasKey, super::SetupError> {
        let value = env(var)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| super::SetupError::MissingEnv(var.to_string()))?;
        SasKey::new(policy, &value).map_err(|e| super::SetupError::BadEnv {
            var: var.to_string(),
            message: format!("{e} (from {var})"),
        })
    }

    /// The policy's name (`skn`).
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// The token for `resource` (the host name for the service APIs) expiring at `expiry` (Unix
    /// seconds): `SharedAccessSignature sr=..&sig=..&se=..&skn=..`, signed over the URL-encoded
    /// `sr` exactly as placed in the token, a newline and `se`.
    pub fn token(&self, resource: &str, expiry: i64) -> String {
        let sr = utf8_percent_encode(resource, ENCODE).to_string();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.key);
        let tag = aws_lc_rs::hmac::sign(&key, format!("{sr}\n{expiry}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        format!(
            "SharedAccessSignature sr={sr}&sig={}&se={expiry}&skn={}",
            utf8_percent_encode(&sig, ENCODE),
            utf8_percent_encode(&self.policy, ENCODE)
        )
    }
}

/// The pipeline policy that authorizes every try with a SAS token for `resource`, reused until
/// it is close to expiry.
pub struct SasPolicy {
    resource: String,
    key: SasKey,
    /// The current token and its expiry.
    current: Mutex<Option<(String, i64)>>,
}

impl std::fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasPolicy")
            .field("resource", &self.resource)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SasPolicy {
    /// Tokens for `resource` signed with `key`.
    pub fn new(resource: &str, key: SasKey) -> Arc<SasPolicy> {
        Arc::new(SasPolicy {
            resource: resource.to_string(),
            key,
            current: Mutex::new(None),
        })
    }

    /// A token valid for at least [`REFRESH_MARGIN_SECS`] more.
    fn token(&self, now: i64) -> String {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some((token, expiry)) if expiry - now > REFRESH_MARGIN_SECS => token.clone(),
            _ => {
                let expiry = now + TOKEN_LIFETIME_SECS;
                let token = self.key.token(&self.resource, expiry);
                *current = Some((token.clone(), expiry));
                token
            }
        }
    }
}

#[async_trait::async_trait]
impl Policy for SasPolicy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let token = self.token(time::OffsetDateTime::now_utc().unix_timestamp());
        request.insert_header("authorization", token);
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

    fn sig_of(token: &str) -> String {
        let sig = token.split('&').find_map(|p| p.strip_prefix("sig=")).unwrap();
        percent_encoding::percent_decode_str(sig)
            .decode_utf8()
            .unwrap()
            .into_owned()
    }

    #[test]
    fn tokens_match_the_reference_vectors_of_iot_hub_and_dps() {
        // azure-wire.md §2.2: the Python SDK's tokens for the same key, resource and expiry.
        let hub = SasKey::new("iothubowner", KEY)
            .unwrap()
            .token("myhub.azure-devices.net", 1_700_000_000);
        assert!(
            hub.starts_with("SharedAccessSignature sr=myhub.azure-devices.net&sig="),
            "{hub}"
        );
        assert!(hub.ends_with("&se=1700000000&skn=iothubowner"), "{hub}");
        assert_eq!(sig_of(&hub), "DJJNz5hQmFmOthz+wKhv3o6niIIimcoQ8isd/DD0Liw=");
        let dps = SasKey::new("provisioningserviceowner", KEY)
            .unwrap()
            .token("mydps.azure-devices-provisioning.net", 1_700_000_000);
        assert_eq!(sig_of(&dps), "8yJCRJCZZ+VrFAJEkzlztR3Kqap5w7sJ+kV1QqvZn3c=");
    }

    #[test]
    fn a_token_is_reused_until_close_to_expiry_then_replaced() {
        let policy = SasPolicy::new("h.azure-devices.net", SasKey::new("p", KEY).unwrap());
        let first = policy.token(1_000_000);
        assert_eq!(policy.token(1_000_000 + 60), first);
        let later = policy.token(1_000_000 + TOKEN_LIFETIME_SECS - REFRESH_MARGIN_SECS + 1);
        assert_ne!(later, first);
        assert!(later.contains(&format!(
            "se={}",
            1_000_000 + 2 * TOKEN_LIFETIME_SECS - REFRESH_MARGIN_SECS + 1
        )));
    }

    #[test]
    fn the_key_never_shows_in_debug_output_or_errors() {
        let key = SasKey::new("owner", KEY).unwrap();
        let shown = format!(
            "{key:?} {:?}",
            SasPolicy::new("h", SasKey::new("owner", KEY).unwrap())
        );
        assert!(!shown.contains(KEY) && !shown.contains("ZW11"), "{shown}");
        let err = SasKey::new("owner", "not base64 !!").unwrap_err();
        assert!(err.contains("owner") && !err.contains("!!"), "{err}");
        drop(key);
    }
}
