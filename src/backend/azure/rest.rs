//! The plumbing under the DPS, ARM and IoT Hub clients, which have no Rust SDK: one
//! [`RestClient`] per service over azure_core's [`Pipeline`] (so the same retry policy the Key
//! Vault SDK uses: `Retry-After` honoured on 429 and 503, jittered exponential back-off on other
//! 5xx, resets and timeouts), an authorization policy per service (SAS or Entra bearer), and
//! [`Pace`](super::pace::Pace) on every try: the client-side rate (governor's GCRA limiter,
//! lowered after a 429) and a hard bound on requests in flight.
//!
//! The rate counts HTTP requests, retries included: a bulk call of 10 enrollments or 100
//! identities is one, as a throttling service (and serve's `[serve.services]` limiter) counts
//! what arrives at its door.
//!
//! Every answer that is not what the caller expects becomes [`BackendError::Remote`] with the
//! service's own error code and message, the operation and its target.

use crate::backend::{BackendError, Result};
use crate::plan::ClientLimits;
use azure_core::http::policies::Policy;
use azure_core::http::{ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, Url};
use serde_json::Value;
use std::sync::Arc;

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
    /// The JSON body, if any, serialized once: each try of the call sends the same bytes.
    pub body: Option<azure_core::Bytes>,
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

    /// With `body` as its JSON body.
    pub fn json(self, body: impl serde::Serialize) -> Call<'a> {
        self.json_sized(body, 128)
    }

    /// With `body` as its JSON body, written into one buffer of about `bytes` (a bulk body's
    /// size is known ahead: the buffer is not grown and copied as it is written).
    pub fn json_sized(mut self, body: impl serde::Serialize, bytes: usize) -> Call<'a> {
        let mut buffer = Vec::with_capacity(bytes);
        // Serializing certroll's own bodies (strings, numbers, raw JSON read from the service)
        // cannot fail; an empty body would be refused by the service, naming the call.
        if serde_json::to_writer(&mut buffer, &body).is_err() {
            buffer.clear();
        }
        self.body = Some(buffer.into());
        self
    }

    /// With `json` (JSON text already written) as its body.
    pub fn json_bytes(mut self, json: Vec<u8>) -> Call<'a> {
        self.body = Some(json.into());
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
    pub body: azure_core::Bytes,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &'static str) -> Option<&str> {
        // Not `get_optional_str`, which builds (and drops) an error for a missing header, with
        // a backtrace when RUST_BACKTRACE is set: a page without a continuation is no error.
        self.headers
            .get_optional_with(&azure_core::http::headers::HeaderName::from_static(name), |v| {
                Ok::<_, std::convert::Infallible>(v.as_str())
            })
            .ok()
            .flatten()
    }

    /// The body read as `T`, borrowing from it where `T` borrows.
    pub fn typed<'b, T: serde::Deserialize<'b>>(&'b self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
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

/// A [`RestClient`]'s service, host and pacing, for another client to share
/// ([`RestClient::sharing`]).
#[derive(Clone, Debug)]
pub struct Sharable {
    service: &'static str,
    base: Url,
    api_version: &'static str,
    pace: Arc<super::pace::Pace>,
}

/// A client of one service at one host.
pub struct RestClient {
    service: &'static str,
    base: Url,
    api_version: &'static str,
    pipeline: Pipeline,
    pace: Arc<super::pace::Pace>,
    concurrency: usize,
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
    /// `limits.rate` (requests per second, a bulk call counting as one, each retry too;
    /// `spec.default_rate` when the plan sets none) is enforced before each try, with
    /// `spec.burst_secs`, and lowered after a 429; `limits.concurrency` tries are in flight at
    /// most.
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
        let pace = super::pace::Pace::new(
            service,
            Some(limits.rate.unwrap_or(default_rate)),
            burst_secs,
            limits.concurrency,
        );
        Self::with_pace(service, &base, api_version, options, auth, pace)
    }

    /// Another client of the same service and host as `other` that shares its pacing: one
    /// rate, one `Retry-After` hold and one bound on tries in flight for both, so the plan's
    /// `rate` and `concurrency` are what the service sees of this process however many clients
    /// it has (the background deliveries' beside the main ones).
    pub fn sharing(
        other: &Sharable,
        options: ClientOptions,
        auth: Arc<dyn Policy>,
    ) -> std::result::Result<RestClient, SetupError> {
        Self::with_pace(
            other.service,
            other.base.as_str().trim_end_matches('/'),
            other.api_version,
            options,
            auth,
            other.pace.clone(),
        )
    }

    /// What [`sharing`](Self::sharing) needs of this client: its service, host and pacing.
    pub fn sharable(&self) -> Sharable {
        Sharable {
            service: self.service,
            base: self.base.clone(),
            api_version: self.api_version,
            pace: self.pace.clone(),
        }
    }

    fn with_pace(
        service: &'static str,
        base: &str,
        api_version: &'static str,
        options: ClientOptions,
        auth: Arc<dyn Policy>,
        pace: Arc<super::pace::Pace>,
    ) -> std::result::Result<RestClient, SetupError> {
        let base = Url::parse(base).map_err(|e| SetupError::Client(format!("{service} URL {base}: {e}")))?;
        let concurrency = pace.concurrency();
        // Pace before authorization: a try waiting for its turn must not hold a token that
        // could expire meanwhile.
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            vec![pace.clone(), auth],
            None,
        );
        Ok(RestClient {
            service,
            base,
            api_version,
            pipeline,
            pace,
            concurrency,
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

    /// Most requests the client has in flight (the plan's `concurrency`): a batch builds no
    /// more request bodies ahead than this, so what waits for a slot holds no memory.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The rate the client paces its tries at now (lowered by a 429), per second.
    pub fn rate(&self) -> Option<f64> {
        self.pace.rate()
    }

    /// Sends `call`, each try after the rate and the concurrency bound admit it, retrying as
    /// the pipeline does; any HTTP status comes back as an [`Answer`]. Only a failure to get an
    /// answer at all (after the retries) is an error.
    pub async fn send(&self, call: &Call<'_>) -> Result<Answer> {
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
        // The id azure_core's request-id policy would add, added here: the policy looks for it
        // with `get_optional_str`, which costs a captured backtrace per request when
        // RUST_BACKTRACE is set and the header is absent.
        request.insert_header(
            azure_core::http::headers::CLIENT_REQUEST_ID,
            azure_core::Uuid::new_v4().to_string(),
        );
        for (name, value) in &call.headers {
            request.insert_header(*name, value.clone());
        }
        if let Some(body) = &call.body {
            request.insert_header("content-type", "application/json; charset=utf-8");
            request.set_body(body.clone());
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
            body: body.into(),
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

    /// The service's last 409/412 in `answer` after certroll read the record again and
    /// re-applied its change `tries` times ([`kept_changing`]).
    pub fn kept_changing(&self, call: &Call<'_>, answer: &Answer, tries: usize) -> BackendError {
        kept_changing(self.service, call, answer, tries)
    }

    /// An answer with a success status whose body is not what the service sends (`e`: why it
    /// could not be read), as certroll reports it.
    pub fn unreadable(&self, call: &Call<'_>, answer: &Answer, e: &serde_json::Error) -> BackendError {
        BackendError::Remote {
            service: self.service,
            operation: call.operation.to_string(),
            target: call.target.to_string(),
            status: Some(answer.status),
            code: "InvalidResponse".into(),
            message: format!("the answer could not be read: {e}"),
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

/// `service`'s error in `answer`, a 409 or 412 that was still the answer after certroll read
/// the record again and re-applied its change `tries` times: the service's own status, code and
/// message (DPS's `412002`, say), with the give-up said after the message (another client
/// keeps writing the record between certroll's read and its write).
pub fn kept_changing(service: &'static str, call: &Call<'_>, answer: &Answer, tries: usize) -> BackendError {
    let (code, message) = error_parts(answer);
    BackendError::Remote {
        service,
        operation: call.operation.to_string(),
        target: call.target.to_string(),
        status: Some(answer.status),
        code,
        message: format!(
            "{message} (still so after {tries} re-reads and re-applied writes: another client keeps changing it)"
        ),
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
            body: azure_core::Bytes::copy_from_slice(body.as_bytes()),
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
    fn a_write_that_kept_losing_its_race_reports_the_service_s_own_code() {
        let dps = answer(
            412,
            &[],
            r#"{"errorCode":412002,"message":"etag mismatch","trackingId":"t"}"#,
        );
        let call = Call::new(
            Method::Put,
            "/enrollments/dev-1".into(),
            "put enrollment",
            "dev-1",
        );
        let BackendError::Remote {
            service,
            operation,
            target,
            status,
            code,
            message,
        } = kept_changing("DPS", &call, &dps, 5)
        else {
            panic!("not a remote error")
        };
        assert_eq!(
            (
                service,
                operation.as_str(),
                target.as_str(),
                status,
                code.as_str()
            ),
            ("DPS", "put enrollment", "dev-1", Some(412), "412002")
        );
        assert!(
            message.starts_with("etag mismatch (still so after 5 re-reads"),
            "{message}"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("dev:01.a_b"), "dev:01.a_b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
