//! The plumbing under the DPS, ARM and IoT Hub clients, which have no Rust SDK: one
//! [`RestClient`] per service over azure_core's [`Pipeline`] (so the same retry policy the Key
//! Vault SDK uses: `Retry-After` honoured on 429 and 503, jittered exponential back-off on other
//! 5xx, resets and timeouts), an authorization policy per service (SAS or Entra bearer), a
//! client-side rate (governor's GCRA limiter) and a bound on requests in flight.
//!
//! The rate counts HTTP requests: a bulk call of 10 enrollments or 100 identities is one, as a
//! throttling service (and serve's `[serve.services]` limiter) counts what arrives at its door.
//!
//! Every answer that is not what the caller expects becomes [`BackendError::Remote`] with the
//! service's own error code and message, the operation and its target.

use crate::backend::{BackendError, Result};
use crate::plan::ClientLimits;
use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, Url};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use super::SetupError;

/// One HTTP call: what certroll asks for, about what, and the request.
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// The path, its segments already percent-encoded (see [`segment`]).
    pub path: String,
    /// Query parameters besides `api-version`.
    pub query: Vec<(&'static str, String)>,
    /// Extra headers (`If-Match`, `x-ms-continuation`, ...).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// What certroll is doing, for errors (`update enrollment`).
    pub operation: &'a str,
    /// What it is about, for errors (the enrollment, device or certificate).
    pub target: &'a str,
}

impl<'a> Call<'a> {
    /// A call without query, extra headers or body.
    pub fn new(method: Method, path: String, operation: &'a str, target: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            operation,
            target,
        }
    }

    /// With a JSON body.
    pub fn json(mut self, body: Value) -> Call<'a> {
        self.body = Some(body);
        self
    }

    /// With a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name, value.into()));
        self
    }
}

/// A path segment, percent-encoded (ids may hold `:` and `.`; nothing else passes through).
pub fn segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b':');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The service's answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: azure_core::http::headers::Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &'static str) -> Option<&str> {
        self.headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
    }

    /// The body as JSON (`null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a [`RestClient`] talks to.
pub struct ServiceSpec {
    /// The service's name for errors: `DPS`, `IoT Hub`, `ARM`.
    pub service: &'static str,
    /// `https://host`.
    pub base: String,
    /// The `api-version` every call carries.
    pub api_version: &'static str,
    /// Requests per second when the plan sets no `rate` (the service's documented limit).
    pub default_rate: f64,
    /// How far ahead of its even pace the client may get after a pause, in seconds of its rate
    /// (at least one request). Half a second for a metered registry: a pause (the other
    /// service's reads) is caught up, and the other half of a service's usual allowance of a
    /// second's worth stays slack for network jitter, so a client set to the service's limit
    /// is not throttled.
    pub burst_secs: f64,
}

/// A client of one service at one host.
pub struct RestClient {
    service: &'static str,
    base: Url,
    api_version: &'static str,
    pipeline: Pipeline,
    limiter: Option<DefaultDirectRateLimiter>,
    in_flight: tokio::sync::Semaphore,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("service", &self.service)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// A client of `spec.service` at `spec.base`, authorized by `auth` on every try.
    /// `limits.rate` (requests per second, a bulk call counting as one; `spec.default_rate` when
    /// the plan sets none) is enforced before each call, with `spec.burst_secs`;
    /// `limits.concurrency` calls run at once at most.
    pub fn new(
        spec: ServiceSpec,
        options: ClientOptions,
        auth: Arc<dyn Policy>,
        limits: ClientLimits,
    ) -> std::result::Result<RestClient, SetupError> {
        let ServiceSpec {
            service,
            base,
            api_version,
            default_rate,
            burst_secs,
        } = spec;
        let base = Url::parse(&base).map_err(|e| SetupError::Client(format!("{service} URL {base}: {e}")))?;
        let rate = limits.rate.unwrap_or(default_rate);
        let burst = (rate * burst_secs).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        let limiter = (rate.is_finite() && rate > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"));
            RateLimiter::direct(quota)
        });
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            vec![auth],
            None,
        );
        Ok(RestClient {
            service,
            base,
            api_version,
            pipeline,
            limiter,
            in_flight: tokio::sync::Semaphore::new(limits.concurrency.max(1)),
        })
    }

    /// The service's name, for errors.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The host the client talks to.
    pub fn host(&self) -> &str {
        self.base.host_str().unwrap_or_default()
    }

    /// Sends `call` after the rate and the concurrency bound admit it, retrying as the pipeline
    /// does; any HTTP status comes back as an [`Answer`]. Only a failure to get an answer at
    /// all (after the retries) is an error.
    pub async fn send(&self, call: &Call<'_>) -> Result<Answer> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| self.transport(call, e.to_string(), "Closed"))?;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let mut url = self.base.clone();
        url.set_path(&call.path);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", self.api_version);
            for (k, v) in &call.query {
                q.append_pair(k, v);
            }
        }
        let mut request = Request::new(url, call.method);
        request.insert_header("accept", "application/json");
        for (name, value) in &call.headers {
            request.insert_header(*name, value.clone());
        }
        if let Some(body) = &call.body {
            request.insert_header("content-type", "application/json; charset=utf-8");
            request.set_body(serde_json::to_vec(body).unwrap_or_default());
        }
        let response = self
            .pipeline
            .send(
                &Context::new(),
                &mut request,
                Some(PipelineSendOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| {
                let (code, message) = super::observe::no_answer(&e);
                self.transport(call, message, &code)
            })?;
        let (status, headers, body) = response.deconstruct();
        Ok(Answer {
            status: u16::from(status),
            headers,
            body: body.to_vec(),
        })
    }

    /// Sends `call` and accepts only the statuses in `ok`; anything else is the service's error.
    pub async fn expect(&self, call: &Call<'_>, ok: &[u16]) -> Result<Answer> {
        let answer = self.send(call).await?;
        if ok.contains(&answer.status) {
            Ok(answer)
        } else {
            Err(self.error(call, &answer))
        }
    }

    /// The service's error in `answer`, as certroll reports it.
    pub fn error(&self, call: &Call<'_>, answer: &Answer) -> BackendError {
        let (code, message) = error_parts(answer);
        BackendError::Remote {
            service: self.service,
            operation: call.operation.to_string(),
            target: call.target.to_string(),
            status: Some(answer.status),
            code,
            message,
        }
    }

    fn transport(&self, call: &Call<'_>, message: String, kind: &str) -> BackendError {
        BackendError::Remote {
            service: self.service,
            operation: call.operation.to_string(),
            target: call.target.to_string(),
            status: None,
            code: kind.to_string(),
            message,
        }
    }
}

/// The error code and message of a failed answer, wherever the service puts them: IoT Hub's
/// `iothub-errorcode` header and `{"Message": "ErrorCode:Name;text"}`, DPS's `x-ms-error-code`
/// and `{"errorCode": 404201, "message"}`, ARM's `{"error": {"code", "message"}}`.
pub fn error_parts(answer: &Answer) -> (String, String) {
    let body = answer.json();
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let mut code = answer
        .header("iothub-errorcode")
        .or_else(|| answer.header("x-ms-error-code"))
        .map(str::to_string);
    let mut message = None;
    if let Some(e) = body.get("error").filter(|e| e.is_object()) {
        code = code.or_else(|| e.get("code").and_then(text));
        message = e.get("message").and_then(text);
    }
    if message.is_none()
        && let Some(m) = body.get("Message").and_then(Value::as_str)
    {
        // `ErrorCode:DeviceNotFound;device-01`
        match m.strip_prefix("ErrorCode:").and_then(|r| r.split_once(';')) {
            Some((c, rest)) => {
                code = code.or_else(|| Some(c.to_string()));
                message = Some(rest.to_string());
            }
            None => message = Some(m.to_string()),
        }
    }
    if message.is_none() {
        message = body.get("message").and_then(text);
    }
    code = code
        .or_else(|| body.get("errorCode").and_then(text))
        .or_else(|| body.get("code").and_then(text));
    let message = message.unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(&answer.body);
        let raw = raw.trim();
        if raw.is_empty() {
            "(no message)".to_string()
        } else {
            raw.chars().take(300).collect()
        }
    });
    let code = code.unwrap_or_else(|| format!("HTTP{}", answer.status));
    (code, message)
}

/// An etag as `If-Match` carries it: quoted, as the SDKs send it.
pub fn if_match(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::headers::Headers;

    fn answer(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Answer {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        Answer {
            status,
            headers: h,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn each_service_s_error_shape_gives_its_code_and_message() {
        let hub = answer(
            404,
            &[("iothub-errorcode", "DeviceNotFound")],
            r#"{"Message":"ErrorCode:DeviceNotFound;dev-1","ExceptionMessage":"Tracking ID:x"}"#,
        );
        assert_eq!(error_parts(&hub), ("DeviceNotFound".into(), "dev-1".into()));
        let dps = answer(
            412,
            &[],
            r#"{"errorCode":412002,"message":"etag mismatch","trackingId":"t"}"#,
        );
        assert_eq!(error_parts(&dps), ("412002".into(), "etag mismatch".into()));
        let arm = answer(409, &[], r#"{"error":{"code":"Conflict","message":"in use"}}"#);
        assert_eq!(error_parts(&arm), ("Conflict".into(), "in use".into()));
        let bare = answer(502, &[], "");
        assert_eq!(error_parts(&bare), ("HTTP502".into(), "(no message)".into()));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("dev:01.a_b"), "dev:01.a_b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
