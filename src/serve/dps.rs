//! The DPS service API of `certroll serve` (azure-wire.md section 2; swagger
//! `stable/2021-10-01/service.json`): individual enrollments and enrollment groups with If-Match
//! etags, bulk operations, paged queries and registration states, over the local store.
//!
//! Owns the wire shapes (`IndividualEnrollment`, `EnrollmentGroup`, `X509CertificateWithInfo`,
//! `DeviceRegistrationState`, `ProvisioningServiceErrorDetails`) and their mapping to the
//! backend's records. It decides nothing about registrations: the enrollment service's rules are
//! the backend's (`EnrollmentService::put_group` refuses an unverified CA reference, the
//! registration decision lives in `backend::registration`). Only X.509 attestation is served;
//! TPM and symmetric-key enrollments are refused with 400.

use super::ApiError;
use super::state::AppState;
use crate::backend::EnrollmentService;
use crate::backend::local::LocalBackend;
use crate::backend::types::{EnrollmentGroup, IndividualEnrollment, RegistrationState, Slot, Status};
use crate::backend::wire::{hub_host, registration_json, wire_etag, wire_time};
use crate::store::queries_dps::{self as qd, Meta};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use time::OffsetDateTime;

/// Most records one bulk operation may carry (DPS's limit).
pub const BULK_LIMIT: usize = 10;
/// Page size of a query when the client sends no `x-ms-max-item-count`.
const DEFAULT_PAGE: usize = 100;
/// Largest page a query returns whatever the client asks.
const MAX_PAGE: usize = 1000;

/// The DPS service routes (and, since the DPS host also takes the device API, the device
/// registration routes of [`super::dps_device`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        // The Node client posts bulk operations to `/enrollments/` (trailing slash).
        .route("/enrollments", post(run_bulk_individual_operation))
        .route("/enrollments/", post(run_bulk_individual_operation))
        .route("/enrollments/query", post(query_individual_enrollments))
        .route(
            "/enrollments/{id}",
            axum::routing::get(get_individual_enrollment)
                .put(create_or_update_individual_enrollment)
                .delete(delete_individual_enrollment),
        )
        .route(
            "/enrollments/{id}/attestationmechanism",
            post(get_individual_attestation_mechanism),
        )
        // The Node client writes `enrollmentGroups` for CRUD and `enrollmentgroups` for the
        // attestation mechanism; DPS takes both.
        .route("/enrollmentGroups", post(run_bulk_group_operation))
        .route("/enrollmentgroups", post(run_bulk_group_operation))
        .route("/enrollmentGroups/", post(run_bulk_group_operation))
        .route("/enrollmentGroups/query", post(query_enrollment_groups))
        .route("/enrollmentgroups/query", post(query_enrollment_groups))
        .route(
            "/enrollmentGroups/{id}",
            axum::routing::get(get_enrollment_group)
                .put(create_or_update_enrollment_group)
                .delete(delete_enrollment_group),
        )
        .route(
            "/enrollmentgroups/{id}",
            axum::routing::get(get_enrollment_group)
                .put(create_or_update_enrollment_group)
                .delete(delete_enrollment_group),
        )
        .route(
            "/enrollmentGroups/{id}/attestationmechanism",
            post(get_group_attestation_mechanism),
        )
        .route(
            "/enrollmentgroups/{id}/attestationmechanism",
            post(get_group_attestation_mechanism),
        )
        .route(
            "/registrations/{id}",
            axum::routing::get(get_device_registration_state).delete(delete_device_registration_state),
        )
        .route(
            "/registrations/{id}/query",
            post(query_group_device_registration_states),
        )
        .layer(axum::middleware::from_fn(super::auth::scope_path))
        .with_state(state.clone())
        .merge(super::dps_device::router(state))
}

// ---------------------------------------------------------------- errors

/// An error as DPS renders it: `ProvisioningServiceErrorDetails` with the `x-ms-error-code`
/// header. `code` of the inner [`ApiError`] is DPS's integer error code as text.
pub struct DpsError(pub ApiError);

impl From<ApiError> for DpsError {
    fn from(e: ApiError) -> DpsError {
        DpsError(e)
    }
}

impl IntoResponse for DpsError {
    fn into_response(self) -> Response {
        let e = self.0;
        // Errors from the shared layers (auth, the store lock) carry a name, not DPS's number.
        let code: i64 = e.code.parse().unwrap_or(i64::from(e.status.as_u16()) * 1000);
        let body = json!({
            "errorCode": code,
            "trackingId": tracking_id(),
            "message": e.message,
            "info": {},
            "timestampUtc": wire_time(OffsetDateTime::now_utc()),
        });
        let mut response = (e.status, e.headers(), axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&code.to_string()) {
            response.headers_mut().insert("x-ms-error-code", v);
        }
        response
    }
}

/// A DPS error: `sub` is the sub-code appended to the HTTP status (DPS's convention is HTTP
/// status x 1000 + sub-code; the sub-codes are certroll's).
pub(crate) fn dps_error(status: StatusCode, sub: u16, message: impl Into<String>) -> ApiError {
    ApiError::new(
        status,
        (u32::from(status.as_u16()) * 1000 + u32::from(sub)).to_string(),
        message,
    )
}

fn bad_request(message: impl Into<String>) -> ApiError {
    dps_error(StatusCode::BAD_REQUEST, 4, message)
}

fn backend_error(e: crate::backend::BackendError) -> ApiError {
    use crate::backend::BackendError;
    match e {
        BackendError::NotFound(what) => bad_request(format!("{what} does not exist")),
        BackendError::Refused(why) => bad_request(why),
        BackendError::Pki(e) => bad_request(e.to_string()),
        other => dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, other.to_string()),
    }
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string())
}

fn tracking_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = crate::pki::random_bytes(&mut bytes);
    crate::pki::hex_upper(&bytes).to_ascii_lowercase()
}

/// What `If-Match` asks for: None (absent), `Some(None)` (`*` or `"*"`, any existing record), or
/// `Some(Some(etag))` with the quotes stripped.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Option<String>>, ApiError> {
    let Some(v) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| bad_request("the If-Match header is not text"))?
        .trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    Ok(Some(if bare == "*" { None } else { Some(bare.to_string()) }))
}

/// The etag rules of a PUT: without If-Match it only creates (409 on an existing record, as DPS
/// answers); with one, the record must exist and match (412 otherwise; `*` matches any).
fn check_put(what: &str, wanted: &Option<Option<String>>, current: Option<&Meta>) -> Result<(), ApiError> {
    match (wanted, current) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(dps_error(
            StatusCode::CONFLICT,
            1,
            format!("{what} already exists; send its etag in If-Match (or `*`) to update it"),
        )),
        (Some(_), None) => Err(dps_error(
            StatusCode::PRECONDITION_FAILED,
            2,
            format!("{what} does not exist, so If-Match cannot match"),
        )),
        (Some(want), Some(meta)) => check_match(what, want, meta),
    }
}

/// The etag rule of a DELETE: 404 if missing, 412 if If-Match is given and does not match.
fn check_delete(what: &str, wanted: &Option<Option<String>>, current: Option<&Meta>) -> Result<(), ApiError> {
    let Some(meta) = current else {
        return Err(dps_error(StatusCode::NOT_FOUND, 1, format!("{what} not found")));
    };
    match wanted {
        Some(want) => check_match(what, want, meta),
        None => Ok(()),
    }
}

fn check_match(what: &str, want: &Option<String>, meta: &Meta) -> Result<(), ApiError> {
    match want {
        Some(tag) if *tag != meta.etag => Err(dps_error(
            StatusCode::PRECONDITION_FAILED,
            2,
            format!("the etag in If-Match is not the current etag of {what}"),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------- requests

/// Checks the request's SAS token against the DPS's policies (its canonical host).
fn auth(state: &AppState, headers: &HeaderMap, right: super::auth::SasRight) -> Result<(), ApiError> {
    let host = format!("{}.azure-devices-provisioning.net", state.config.dps);
    super::auth::sas(state, headers, &host, right).map(|_| ())
}

fn json_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_request("the request body must be a JSON object")),
        Err(e) => Err(bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

/// Reads a certificate as DPS and ARM take it: PEM text, base64 of the PEM text (what the
/// portal and `az iot dps certificate create` send), or base64 of the DER bytes. The first
/// certificate of a PEM bundle is the one read.
pub(crate) fn certificate_der(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    let der = certificate_bytes(text, field)?;
    check_certificate(&der, field)?;
    Ok(der)
}

/// The bytes [`certificate_der`] reads, not yet checked to be a certificate.
fn certificate_bytes(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine as _;
    let from_pem = |pem: &[u8], what: &str| -> Result<Vec<u8>, ApiError> {
        crate::pki::pem::certs_from_pem(pem)
            .map(|mut certs| certs.remove(0))
            .map_err(|e| {
                let why = match e {
                    crate::pki::Error::BadPem(why) => why,
                    other => other.to_string(),
                };
                bad_request(format!("{field} is {what}, but not a readable one: {why}"))
            })
    };
    let der = if text.contains("-----BEGIN") {
        from_pem(text.as_bytes(), "PEM text")?
    } else {
        // Most certificates come without line breaks: decoded as they are, not copied first.
        // Looked for byte by byte (a text with a byte past ASCII may hold Unicode whitespace
        // and goes the long way): char by char, the look was most of this function's time in a
        // bulk roll, two certificates a record.
        let spaced = text
            .bytes()
            .any(|b| matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ') || !b.is_ascii());
        let compact: std::borrow::Cow<'_, str> = if spaced {
            text.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .into()
        } else {
            text.into()
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| {
                bad_request(format!(
                    "{field} is neither PEM text nor base64 (of PEM text or of DER bytes)"
                ))
            })?;
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            from_pem(&bytes, "base64 of PEM text")?
        } else {
            bytes
        }
    };
    Ok(der)
}

/// 400 naming `field` unless `der` is a readable X.509 certificate.
fn check_certificate(der: &[u8], field: &str) -> Result<(), ApiError> {
    crate::pki::CertInfo::from_der(der)
        .map(|_| ())
        .map_err(|e| unreadable(field, e))
}

/// 400 naming `field`, whose bytes the certificate parser refused for `e`.
fn unreadable(field: &str, e: crate::pki::Error) -> ApiError {
    let why = match e {
        crate::pki::Error::BadCertificate(why) => why,
        other => other.to_string(),
    };
    bad_request(format!("{field} is not a readable X.509 certificate: {why}"))
}

/// Most certificates [`CertInfos`] keeps (about 0.5 KiB each); past it, it starts over.
const CERT_INFOS_LIMIT: usize = 200_000;

/// `X509CertificateInfo` of the certificates serve holds, by SHA-1 thumbprint (upper-case hex),
/// rendered as JSON once, when a certificate is first read, rather than by parsing the
/// certificate again for every enrollment every query answers. Only readable certificates are
/// kept, so a thumbprint found here is also a certificate known to be readable. A certificate
/// a write checked is kept as readable and its info rendered by the first read that shows it:
/// a write answers without it, and a roll writes ten thousand new certificates at once (their
/// names, times and SHA-256 were a third of the check's time).
#[derive(Default)]
pub struct CertInfos(std::sync::Mutex<std::collections::HashMap<String, Known>>);

/// What [`CertInfos`] knows of a certificate.
#[derive(Clone)]
enum Known {
    /// Checked readable, its info not rendered yet.
    Readable,
    /// Its info, rendered.
    Info(Arc<Box<RawValue>>),
}

impl CertInfos {
    fn known(&self, thumbprint: &str) -> Option<Known> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(thumbprint)
            .cloned()
    }

    fn keep(&self, thumbprint: &str, known: Known) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CERT_INFOS_LIMIT {
            map.clear();
        }
        map.insert(thumbprint.to_string(), known);
    }

    /// Parses `der` and keeps its info; the parser's reason when it is not a certificate.
    fn parse(&self, thumbprint: &str, der: &[u8]) -> Result<Arc<Box<RawValue>>, crate::pki::Error> {
        let info = crate::pki::CertInfo::from_der(der)?;
        let rendered = serde_json::value::to_raw_value(&CertInfoWire::of(&info))
            .map(Arc::new)
            .map_err(|e| crate::pki::Error::BadCertificate(e.to_string()))?;
        self.keep(thumbprint, Known::Info(rendered.clone()));
        Ok(rendered)
    }

    /// The info of `der`, whose SHA-1 thumbprint is `thumbprint`: JSON `null` when it is not a
    /// readable certificate (as DPS would never hold one).
    fn info(&self, thumbprint: &str, der: &[u8]) -> Option<Arc<Box<RawValue>>> {
        match self.known(thumbprint) {
            Some(Known::Info(info)) => Some(info),
            _ => self.parse(thumbprint, der).ok(),
        }
    }

    /// Ok when `der` is a readable X.509 certificate, else the parser's reason.
    fn check(&self, der: &[u8]) -> Result<(), crate::pki::Error> {
        let thumbprint = crate::pki::sha1_thumbprint(der);
        if self.known(&thumbprint).is_none() {
            crate::pki::inspect::check_whole(der)?;
            self.keep(&thumbprint, Known::Readable);
        }
        Ok(())
    }
}

/// `X509CertificateInfo` as DPS answers it. Its members are declared in the order a JSON tree
/// (whose map is sorted) writes them, so the text rendered straight from it is the text
/// rendered from the tree.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertInfoWire<'a> {
    issuer_name: &'a str,
    not_after_utc: String,
    not_before_utc: String,
    serial_number: &'a str,
    sha1_thumbprint: &'a str,
    sha256_thumbprint: &'a str,
    subject_name: &'a str,
    version: u8,
}

impl CertInfoWire<'_> {
    fn of(info: &crate::pki::CertInfo) -> CertInfoWire<'_> {
        CertInfoWire {
            issuer_name: &info.issuer,
            not_after_utc: wire_time(info.not_after),
            not_before_utc: wire_time(info.not_before),
            serial_number: &info.serial,
            sha1_thumbprint: &info.thumbprint,
            sha256_thumbprint: &info.sha256,
            subject_name: &info.subject,
            version: 3,
        }
    }
}

/// `X509CertificateInfo` of a parsed certificate.
fn certificate_info_of(info: &crate::pki::CertInfo) -> Value {
    serde_json::to_value(CertInfoWire::of(info)).unwrap_or(Value::Null)
}

/// `X509CertificateInfo` of a certificate (every field DPS requires in responses).
pub(crate) fn certificate_info(der: &[u8]) -> Value {
    match crate::pki::CertInfo::from_der(der) {
        Ok(info) => certificate_info_of(&info),
        Err(_) => Value::Null,
    }
}

/// DPS's `ReprovisionPolicy`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReprovisionPolicy {
    update_hub_assignment: bool,
    migrate_device_data: bool,
}

/// `reprovisionPolicy` of certroll's policy name.
fn reprovision_wire(policy: &str) -> ReprovisionPolicy {
    let (update, migrate) = match policy {
        "reset" => (true, false),
        "never" => (false, true),
        _ => (true, true),
    };
    ReprovisionPolicy {
        update_hub_assignment: update,
        migrate_device_data: migrate,
    }
}

/// `reprovisionPolicy` of certroll's policy name, as a JSON value.
fn reprovision_policy(policy: &str) -> Value {
    serde_json::to_value(reprovision_wire(policy)).unwrap_or(Value::Null)
}

/// certroll's policy name of a `reprovisionPolicy` (absent: DPS's default, migrate).
fn reprovision_of(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(p) = body.get("reprovisionPolicy").filter(|p| !p.is_null()) else {
        return Ok(None);
    };
    let flag = |name: &str| -> Result<bool, ApiError> {
        match p.get(name) {
            Some(Value::Bool(b)) => Ok(*b),
            None | Some(Value::Null) => Ok(true),
            Some(other) => Err(bad_request(format!(
                "reprovisionPolicy.{name} must be true or false, not {other}"
            ))),
        }
    };
    Ok(Some(
        match (flag("updateHubAssignment")?, flag("migrateDeviceData")?) {
            (false, _) => "never",
            (true, false) => "reset",
            (true, true) => "migrate",
        }
        .into(),
    ))
}

fn status_of(body: &Map<String, Value>) -> Result<Option<Status>, ApiError> {
    match body.get("provisioningStatus") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("enabled") => Ok(Some(Status::Enabled)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("disabled") => Ok(Some(Status::Disabled)),
        Some(other) => Err(bad_request(format!(
            "provisioningStatus must be `enabled` or `disabled`, not {other}"
        ))),
    }
}

/// The hub a record names (`iotHubs[0]` or the legacy `iotHubHostName`), as the store's hub
/// name; None when it names none.
fn hub_of(state: &AppState, body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let host = match (body.get("iotHubs"), body.get("iotHubHostName")) {
        (Some(Value::Array(hubs)), _) if !hubs.is_empty() => hubs[0].as_str().map(str::to_string),
        (_, Some(Value::String(h))) => Some(h.clone()),
        _ => None,
    };
    let Some(host) = host else { return Ok(None) };
    super::hub::hub_name_of_host(state, &host)
        .map(Some)
        .ok_or_else(|| bad_request(format!("`{host}` is not an IoT hub linked to this DPS")))
}

/// The fields of a record that certroll keeps as sent and does not act on, as the JSON text of
/// an object (None when there are none). Written straight from the body's members: the text of
/// a tree of copies of them, which this was, is the same (both maps are sorted by key), and a
/// roll's bulk write copied each record's members only to write them out.
fn extra_of(body: &Map<String, Value>) -> Option<String> {
    const KEPT: [&str; 7] = [
        "deviceId",
        "initialTwin",
        "capabilities",
        "iotHubs",
        "allocationPolicy",
        "optionalDeviceInformation",
        "customAllocationDefinition",
    ];
    let kept: std::collections::BTreeMap<&str, &Value> = KEPT
        .iter()
        .filter_map(|k| body.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
        .collect();
    (!kept.is_empty()).then(|| serde_json::to_string(&kept).unwrap_or_default())
}

/// One attestation slot from a request: a certificate, or (when the client sends back what a GET
/// gave it, `info` without `certificate`) the slot it already holds with that thumbprint.
fn slot_der(
    infos: &CertInfos,
    x509: &Value,
    kind: &str,
    which: &str,
    existing: Option<&Vec<u8>>,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(slot) = x509.get(kind).and_then(|s| s.get(which)).filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let thumbprint = slot
        .get("info")
        .and_then(|i| i.get("sha1Thumbprint"))
        .and_then(Value::as_str);
    slot_of(
        infos,
        &format!("attestation.x509.{kind}.{which}"),
        slot.get("certificate").and_then(Value::as_str),
        thumbprint,
        existing,
    )
}

/// [`slot_der`] of a slot's `certificate` text and `info.sha1Thumbprint`, `field` naming it.
fn slot_of(
    infos: &CertInfos,
    field: &str,
    certificate: Option<&str>,
    thumbprint: Option<&str>,
    existing: Option<&Vec<u8>>,
) -> Result<Option<Vec<u8>>, ApiError> {
    slot_decoded(infos, field, certificate, None, thumbprint, existing)
}

/// A slot's `certificate` decoded and checked before its request joins the write queue
/// ([`decode_ahead`]): what [`slot_of`] would find, worked out without holding the store.
#[derive(Clone)]
struct Decoded {
    /// The certificate's bytes, or the answer to text that is not a certificate's encoding.
    der: Result<Vec<u8>, ApiError>,
    /// Whether those bytes are a readable certificate (400 naming the field if not).
    readable: Result<(), ApiError>,
}

impl Decoded {
    /// `text` of the slot `field` (`attestation.x509.clientCertificates.secondary`) decoded and
    /// checked as [`slot_of`] does.
    fn of(infos: &CertInfos, field: &str, text: &str) -> Decoded {
        let field = format!("{field}.certificate");
        let der = certificate_bytes(text, &field);
        let readable = match &der {
            Ok(der) => infos.check(der).map_err(|e| unreadable(&field, e)),
            Err(e) => Err(e.clone()),
        };
        Decoded { der, readable }
    }
}

/// [`slot_of`], with the slot's certificate already decoded and checked when `decoded` is given
/// (the same answers: the same checks, taken in the same order).
fn slot_decoded(
    infos: &CertInfos,
    field: &str,
    certificate: Option<&str>,
    decoded: Option<&Decoded>,
    thumbprint: Option<&str>,
    existing: Option<&Vec<u8>>,
) -> Result<Option<Vec<u8>>, ApiError> {
    if let Some(text) = certificate {
        let decoded = match decoded {
            Some(d) => d,
            None => {
                let field = format!("{field}.certificate");
                let der = certificate_bytes(text, &field)?;
                // The certificate this slot holds already was checked when it was written (a
                // roll sends the primary back unchanged with the new secondary).
                if existing != Some(&der) {
                    infos.check(&der).map_err(|e| unreadable(&field, e))?;
                }
                return Ok(Some(der));
            }
        };
        let der = decoded.der.as_ref().map_err(ApiError::clone)?;
        // As above: a slot's own certificate passes (it was checked when it was written).
        if existing != Some(der) {
            decoded.readable.clone()?;
        }
        return Ok(Some(der.clone()));
    }
    match (thumbprint, existing) {
        (Some(tp), Some(der)) if tp.eq_ignore_ascii_case(&crate::pki::sha1_thumbprint(der)) => {
            Ok(Some(der.clone()))
        }
        _ => Err(bad_request(format!("{field} has no certificate"))),
    }
}

fn x509_of(body: &Map<String, Value>) -> Result<&Value, ApiError> {
    let attestation = body
        .get("attestation")
        .filter(|a| !a.is_null())
        .ok_or_else(|| bad_request("attestation is required"))?;
    match attestation.get("type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("x509") => {}
        Some(other) => {
            return Err(bad_request(format!(
                "attestation type `{other}` is not served by certroll: only `x509`"
            )));
        }
        None => return Err(bad_request("attestation.type is required")),
    }
    attestation
        .get("x509")
        .filter(|x| x.is_object())
        .ok_or_else(|| bad_request("attestation.x509 is required for X.509 attestation"))
}

/// The id in a body must be the id in the path (compared as DPS does, without regard to case).
fn check_id(body: &Map<String, Value>, field: &str, id: &str) -> Result<(), ApiError> {
    match body.get(field).and_then(Value::as_str) {
        Some(given) if given.eq_ignore_ascii_case(id) => Ok(()),
        Some(given) => Err(bad_request(format!(
            "{field} `{given}` in the body is not `{id}` of the path"
        ))),
        None => Err(bad_request(format!("{field} is required"))),
    }
}

/// Registration ids and group ids: alphanumerics and `- . _ :`, at most 128 characters, no
/// special character at either end.
fn check_id_syntax(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(bad_request(format!(
            "`{id}` is not a valid id: up to 128 letters, digits and - . _ :, starting and ending with a letter or digit"
        )))
    }
}

// ---------------------------------------------------------------- rendering

fn merge_extra(out: &mut Map<String, Value>, meta: &Meta) {
    if let Some(Value::Object(extra)) = &meta.extra {
        for (k, v) in extra {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

fn slot_json(der: Option<&[u8]>) -> Value {
    match der {
        Some(der) => json!({"info": certificate_info(der)}),
        None => Value::Null,
    }
}

/// An `X509CertificateWithInfo` as DPS answers it: the info, never the certificate.
#[derive(Serialize)]
struct SlotWire {
    #[serde(serialize_with = "shared_raw")]
    info: Option<Arc<Box<RawValue>>>,
}

/// Writes shared JSON text as it is (`null` for none).
fn shared_raw<S: serde::Serializer>(v: &Option<Arc<Box<RawValue>>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(raw) => raw.as_ref().serialize(s),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientCertificatesWire {
    primary: Option<SlotWire>,
    secondary: Option<SlotWire>,
}

/// `X509Attestation` of an individual enrollment (`null`s are DPS's: no signing certificates,
/// no CA references).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct X509Wire {
    client_certificates: ClientCertificatesWire,
    signing_certificates: (),
    ca_references: (),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttestationWire {
    #[serde(rename = "type")]
    kind: &'static str,
    x509: X509Wire,
    tpm: (),
    symmetric_key: (),
}

/// An `IndividualEnrollment` as DPS answers it (the certificates' info, never the certificates),
/// with the DPS fields certroll keeps as sent (`extra`) after its own.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndividualWire<'a> {
    registration_id: &'a str,
    attestation: AttestationWire,
    provisioning_status: &'static str,
    reprovision_policy: ReprovisionPolicy,
    iot_hub_host_name: String,
    etag: String,
    created_date_time_utc: String,
    last_updated_date_time_utc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_state: Option<Value>,
    #[serde(flatten)]
    extra: std::collections::BTreeMap<String, Box<RawValue>>,
}

/// The members of [`IndividualWire`] that kept DPS fields never replace.
const INDIVIDUAL_OWN: [&str; 9] = [
    "registrationId",
    "attestation",
    "provisioningStatus",
    "reprovisionPolicy",
    "iotHubHostName",
    "etag",
    "createdDateTimeUtc",
    "lastUpdatedDateTimeUtc",
    "registrationState",
];

/// JSON text of a value certroll builds (never fails for these).
fn raw(v: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(v)
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// An individual enrollment as DPS answers it, certificates' info from `infos`.
fn individual_wire<'a>(
    infos: &CertInfos,
    row: &'a qd::IndividualWireRow,
    registration: Option<&RegistrationState>,
) -> IndividualWire<'a> {
    let e = &row.enrollment;
    let slot = |der: &Option<Vec<u8>>, tp: &Option<String>| {
        der.as_deref().map(|der| {
            let tp = tp.clone().unwrap_or_else(|| crate::pki::sha1_thumbprint(der));
            SlotWire {
                info: infos.info(&tp, der),
            }
        })
    };
    let mut extra: std::collections::BTreeMap<String, Box<RawValue>> = row
        .extra_text
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    extra.retain(|k, _| !INDIVIDUAL_OWN.contains(&k.as_str()));
    extra
        .entry("deviceId".into())
        .or_insert_with(|| raw(&e.registration_id));
    extra
        .entry("iotHubs".into())
        .or_insert_with(|| raw(&[hub_host(&e.hub)]));
    extra
        .entry("capabilities".into())
        .or_insert_with(|| raw(&json!({"iotEdge": false})));
    IndividualWire {
        registration_id: &e.registration_id,
        attestation: AttestationWire {
            kind: "x509",
            x509: X509Wire {
                client_certificates: ClientCertificatesWire {
                    primary: slot(&e.primary, &row.primary_thumbprint),
                    secondary: slot(&e.secondary, &row.secondary_thumbprint),
                },
                signing_certificates: (),
                ca_references: (),
            },
            tpm: (),
            symmetric_key: (),
        },
        provisioning_status: e.status.as_str(),
        reprovision_policy: reprovision_wire(&e.reprovision),
        iot_hub_host_name: hub_host(&e.hub),
        etag: wire_etag(&row.meta.etag),
        created_date_time_utc: wire_time(row.meta.created),
        last_updated_date_time_utc: wire_time(row.meta.updated),
        registration_state: registration.map(registration_json),
        extra,
    }
}

/// An `EnrollmentGroup` as DPS answers it.
fn group_json(g: &EnrollmentGroup, meta: &Meta) -> Value {
    let references = [&g.primary, &g.secondary]
        .iter()
        .any(|s| s.as_ref().is_some_and(|s| s.ca_reference.is_some()));
    let x509 = if references {
        let name = |s: &Option<Slot>| s.as_ref().and_then(|s| s.ca_reference.clone());
        json!({
            "clientCertificates": null,
            "signingCertificates": null,
            "caReferences": {"primary": name(&g.primary), "secondary": name(&g.secondary)},
        })
    } else {
        let der = |s: &Option<Slot>| s.as_ref().map(|s| s.cert_der.clone());
        json!({
            "clientCertificates": null,
            "signingCertificates": {
                "primary": slot_json(der(&g.primary).as_deref()),
                "secondary": slot_json(der(&g.secondary).as_deref()),
            },
            "caReferences": null,
        })
    };
    let mut out = Map::new();
    out.insert("enrollmentGroupId".into(), json!(g.name));
    out.insert(
        "attestation".into(),
        json!({"type": "x509", "x509": x509, "tpm": null, "symmetricKey": null}),
    );
    out.insert("provisioningStatus".into(), json!(g.status.as_str()));
    out.insert("reprovisionPolicy".into(), reprovision_policy(&g.reprovision));
    out.insert("iotHubHostName".into(), json!(hub_host(&g.hub)));
    out.insert("etag".into(), json!(wire_etag(&meta.etag)));
    out.insert("createdDateTimeUtc".into(), json!(wire_time(meta.created)));
    out.insert("lastUpdatedDateTimeUtc".into(), json!(wire_time(meta.updated)));
    merge_extra(&mut out, meta);
    out.remove("deviceId");
    out.entry("iotHubs").or_insert_with(|| json!([hub_host(&g.hub)]));
    out.entry("capabilities")
        .or_insert_with(|| json!({"iotEdge": false}));
    Value::Object(out)
}

fn with_etag(body: Value) -> Response {
    let etag = body.get("etag").and_then(Value::as_str).map(str::to_string);
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert("etag", v);
    }
    response
}

// ---------------------------------------------------------------- individual enrollments

fn read_individual(state: &AppState, b: &LocalBackend, id: &str) -> Result<Option<Value>, ApiError> {
    let Some(row) = qd::individual_wire(b.store().conn(), id).map_err(store_error)? else {
        return Ok(None);
    };
    let registration = b.registration(id).map_err(backend_error)?;
    let wire = individual_wire(&state.cert_infos, &row, registration.as_ref());
    serde_json::to_value(wire)
        .map(Some)
        .map_err(|e| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()))
}

/// An individual enrollment's certificates: primary, secondary (DER).
type ClientSlots = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The client certificate slots (primary, secondary) of `body`'s attestation, checked as
/// [`individual_from`] says.
fn client_slots(
    state: &AppState,
    body: &Map<String, Value>,
    existing: Option<&IndividualEnrollment>,
) -> Result<ClientSlots, ApiError> {
    let x509 = x509_of(body)?;
    if x509.get("signingCertificates").is_some_and(|v| !v.is_null())
        || x509.get("caReferences").is_some_and(|v| !v.is_null())
    {
        return Err(signing_refused());
    }
    let primary = slot_der(
        &state.cert_infos,
        x509,
        "clientCertificates",
        "primary",
        existing.and_then(|e| e.primary.as_ref()),
    )?;
    let secondary = slot_der(
        &state.cert_infos,
        x509,
        "clientCertificates",
        "secondary",
        existing.and_then(|e| e.secondary.as_ref()),
    )?;
    Ok((primary, secondary))
}

/// [`client_slots`] of an attestation read as [`AttestationRead`]: the same checks in the same
/// order, so the same answers.
fn client_slots_read(
    state: &AppState,
    attestation: Option<&AttestationRead>,
    existing: Option<&IndividualEnrollment>,
) -> Result<ClientSlots, ApiError> {
    let attestation = attestation.ok_or_else(|| bad_request("attestation is required"))?;
    match attestation.kind.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("x509") => {}
        Some(other) => {
            return Err(bad_request(format!(
                "attestation type `{other}` is not served by certroll: only `x509`"
            )));
        }
        None => return Err(bad_request("attestation.type is required")),
    }
    let Some(Obj(x509)) = &attestation.x509 else {
        return Err(bad_request("attestation.x509 is required for X.509 attestation"));
    };
    if x509.signing_certificates.is_some() || x509.ca_references.is_some() {
        return Err(signing_refused());
    }
    let slots = x509.client_certificates.as_ref().map(|Obj(s)| s);
    let slot = |which: &str, slot: Option<&Option<Obj<SlotRead>>>, existing: Option<&Vec<u8>>| {
        let Some(Some(Obj(slot))) = slot else {
            return Ok(None);
        };
        slot_decoded(
            &state.cert_infos,
            &format!("attestation.x509.clientCertificates.{which}"),
            slot.certificate.as_deref(),
            slot.decoded.as_ref(),
            slot.info.as_ref().and_then(|Obj(i)| i.sha1_thumbprint.as_deref()),
            existing,
        )
    };
    let primary = slot(
        "primary",
        slots.map(|s| &s.primary),
        existing.and_then(|e| e.primary.as_ref()),
    )?;
    let secondary = slot(
        "secondary",
        slots.map(|s| &s.secondary),
        existing.and_then(|e| e.secondary.as_ref()),
    )?;
    Ok((primary, secondary))
}

fn signing_refused() -> ApiError {
    bad_request(
        "an individual enrollment takes attestation.x509.clientCertificates, not signing certificates or CA references",
    )
}

/// What one PUT of an individual enrollment writes, checked against the record it replaces.
fn individual_from(
    state: &AppState,
    id: &str,
    body: &Map<String, Value>,
    attestation: Attestation<'_>,
    existing: Option<&IndividualEnrollment>,
) -> Result<IndividualEnrollment, ApiError> {
    check_id_syntax(id)?;
    check_id(body, "registrationId", id)?;
    let (primary, secondary) = match attestation {
        Attestation::InBody => client_slots(state, body, existing)?,
        Attestation::Read(read) => client_slots_read(state, read, existing)?,
    };
    if primary.is_none() {
        return Err(bad_request(
            "attestation.x509.clientCertificates.primary is required",
        ));
    }
    // A certificate whose CN is not the registration id is taken, as DPS takes it (an enrollment
    // with a custom registration id is accepted: Azure/azure-iot-sdk-java#277); the device is
    // refused when it registers with it (`dps_device`: its CN must be the registration id).
    let common = Common::of(state, body, existing.map(|e| e.hub.as_str()))?;
    Ok(IndividualEnrollment {
        registration_id: id.to_string(),
        primary,
        secondary,
        status: common.status,
        reprovision: common.reprovision,
        hub: common.hub,
        foreign: Vec::new(),
        take_back: false,
    })
}

/// What individual enrollments and groups take alike from a PUT's body.
struct Common {
    status: Status,
    reprovision: String,
    hub: String,
}

/// The JSON kinds of a record's members that DPS types: a member of another kind is refused
/// (400) rather than dropped, so a client's mistake does not turn into a silent default.
const SHAPES: [(&str, &str); 7] = [
    ("reprovisionPolicy", "an object"),
    ("initialTwin", "an object"),
    ("capabilities", "an object"),
    ("optionalDeviceInformation", "an object"),
    ("customAllocationDefinition", "an object"),
    ("iotHubHostName", "a string"),
    ("iotHubs", "a list of host names"),
];

/// 400 naming the first member of `body` whose JSON kind is not the one [`SHAPES`] gives.
fn check_shapes(body: &Map<String, Value>) -> Result<(), ApiError> {
    for (field, kind) in SHAPES {
        let Some(v) = body.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let fits = match kind {
            "an object" => v.is_object(),
            "a string" => v.is_string(),
            _ => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        };
        if !fits {
            return Err(bad_request(format!(
                "{field} must be {kind}, not {}",
                crate::error::json_snippet(v)
            )));
        }
    }
    Ok(())
}

impl Common {
    /// `provisioningStatus` (default enabled), the reprovision policy (default migrate) and the
    /// hub: the body's, else the record's (`existing_hub`), else the plan's first hub.
    fn of(
        state: &AppState,
        body: &Map<String, Value>,
        existing_hub: Option<&str>,
    ) -> Result<Common, ApiError> {
        check_shapes(body)?;
        let hub = match (hub_of(state, body)?, existing_hub) {
            (Some(h), _) => h,
            (None, Some(h)) => h.to_string(),
            (None, None) => super::hub::default_hub(state)
                .ok_or_else(|| bad_request("iotHubs is required: this DPS links no hub by default"))?,
        };
        Ok(Common {
            status: status_of(body)?.unwrap_or(Status::Enabled),
            reprovision: reprovision_of(body)?.unwrap_or_else(|| "migrate".into()),
            hub,
        })
    }
}

/// Writes one individual enrollment under the PUT etag rules; returns it as DPS answers.
fn put_individual(
    state: &AppState,
    b: &mut LocalBackend,
    id: &str,
    body: &Map<String, Value>,
    wanted: &Option<Option<String>>,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    write_individual(state, b, id, body, wanted, now)?;
    read_individual(state, b, id)?
        .ok_or_else(|| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, "enrollment vanished"))
}

/// [`put_individual`] without reading the record back (a bulk operation answers with errors
/// only, so reading and rendering each record again would be wasted).
fn write_individual(
    state: &AppState,
    b: &mut LocalBackend,
    id: &str,
    body: &Map<String, Value>,
    wanted: &Option<Option<String>>,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let current = qd::individual_wire(b.store().conn(), id).map_err(store_error)?;
    write_individual_over(state, b, id, (body, Attestation::InBody), wanted, current, now)
}

/// [`write_individual`] over `current`, the record with its etag, times and DPS fields just
/// read (None: no such record). The record, its DPS fields and a new etag are written in one
/// statement. The record comes as its members and where its attestation is ([`Attestation`]).
fn write_individual_over(
    state: &AppState,
    b: &mut LocalBackend,
    id: &str,
    (body, attestation): (&Map<String, Value>, Attestation<'_>),
    wanted: &Option<Option<String>>,
    current: Option<qd::IndividualWireRow>,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    check_put(
        &format!("enrollment `{id}`"),
        wanted,
        current.as_ref().map(|r| &r.meta),
    )?;
    let existing = current.map(|r| r.enrollment);
    let record = individual_from(state, id, body, attestation, existing.as_ref())?;
    // As the enrollment service's own write refuses it (a secondary without a primary).
    if let Some(why) = record.slots_refused() {
        return Err(bad_request(why));
    }
    let extra = extra_of(body);
    qd::individual_put_wire(b.store().conn(), &record, extra.as_deref(), now).map_err(store_error)
}

fn delete_individual(
    b: &mut LocalBackend,
    id: &str,
    wanted: &Option<Option<String>>,
) -> Result<(), ApiError> {
    let meta = qd::individual_meta(b.store().conn(), id).map_err(store_error)?;
    check_delete(&format!("enrollment `{id}`"), wanted, meta.as_ref())?;
    qd::individual_delete(b.store().conn(), id).map_err(store_error)?;
    Ok(())
}

/// `GET /enrollments/{id}`: the enrollment, 404 if none.
async fn get_individual_enrollment(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let st = state.clone();
    let found = state
        .read(move |b, _| read_individual(&st, b, &id)?.ok_or_else(|| not_found("enrollment", &id)))
        .await?;
    Ok(with_etag(found))
}

fn not_found(what: &str, id: &str) -> ApiError {
    dps_error(StatusCode::NOT_FOUND, 1, format!("{what} `{id}` not found"))
}

/// `PUT /enrollments/{id}`: creates (no If-Match; 409 if it exists) or updates (If-Match with
/// its etag or `*`; 412 otherwise). 200 with the enrollment.
async fn create_or_update_individual_enrollment(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentWrite)?;
    let wanted = if_match(&headers)?;
    let body = json_body(&body)?;
    let st = state.clone();
    let out = state
        .write_checked(move |b, now| put_individual(&st, b, &id, &body, &wanted, now))
        .await?;
    Ok(with_etag(out))
}

/// `DELETE /enrollments/{id}`: 204; 404 if none; 412 on a stale If-Match. The registration
/// state and the hub identity stay, as in DPS.
async fn delete_individual_enrollment(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentWrite)?;
    let wanted = if_match(&headers)?;
    state
        .write_checked(move |b, _| delete_individual(b, &id, &wanted))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /enrollments/{id}/attestationmechanism`: the attestation of the enrollment.
async fn get_individual_attestation_mechanism(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let st = state.clone();
    let found = state
        .read(move |b, _| read_individual(&st, b, &id)?.ok_or_else(|| not_found("enrollment", &id)))
        .await?;
    Ok(axum::Json(found["attestation"].clone()))
}

// ---------------------------------------------------------------- enrollment groups

fn read_group(b: &LocalBackend, id: &str) -> Result<Option<Value>, ApiError> {
    let Some(g) = b.group(id).map_err(backend_error)? else {
        return Ok(None);
    };
    let meta = qd::group_meta(b.store().conn(), id)
        .map_err(store_error)?
        .ok_or_else(|| not_found("enrollment group", id))?;
    Ok(Some(group_json(&g, &meta)))
}

fn group_from(
    state: &AppState,
    b: &LocalBackend,
    id: &str,
    body: &Map<String, Value>,
    existing: Option<&EnrollmentGroup>,
) -> Result<EnrollmentGroup, ApiError> {
    check_id_syntax(id)?;
    check_id(body, "enrollmentGroupId", id)?;
    let x509 = x509_of(body)?;
    if x509.get("clientCertificates").is_some_and(|v| !v.is_null()) {
        return Err(bad_request(
            "an enrollment group takes attestation.x509.signingCertificates or caReferences, not client certificates",
        ));
    }
    let old = |s: &Option<Slot>| {
        s.as_ref()
            .filter(|s| s.ca_reference.is_none())
            .map(|s| s.cert_der.clone())
    };
    let (primary, secondary) = match x509.get("caReferences").filter(|v| !v.is_null()) {
        Some(refs) => {
            let slot = |which: &str| -> Result<Option<Slot>, ApiError> {
                let Some(name) = refs.get(which).and_then(Value::as_str) else {
                    return Ok(None);
                };
                let ca = b.ca(name).map_err(backend_error)?.ok_or_else(|| {
                    bad_request(format!(
                        "caReferences.{which}: no CA certificate `{name}` in this DPS"
                    ))
                })?;
                Ok(Some(Slot {
                    cert_der: ca.cert_der,
                    ca_reference: Some(name.to_string()),
                }))
            };
            (slot("primary")?, slot("secondary")?)
        }
        None => {
            let primary = slot_der(
                &state.cert_infos,
                x509,
                "signingCertificates",
                "primary",
                existing.and_then(|g| old(&g.primary)).as_ref(),
            )?;
            let secondary = slot_der(
                &state.cert_infos,
                x509,
                "signingCertificates",
                "secondary",
                existing.and_then(|g| old(&g.secondary)).as_ref(),
            )?;
            let plain = |der: Option<Vec<u8>>| {
                der.map(|cert_der| Slot {
                    cert_der,
                    ca_reference: None,
                })
            };
            (plain(primary), plain(secondary))
        }
    };
    if primary.is_none() {
        return Err(bad_request(
            "attestation.x509.signingCertificates.primary (or caReferences.primary) is required",
        ));
    }
    let common = Common::of(state, body, existing.map(|g| g.hub.as_str()))?;
    Ok(EnrollmentGroup {
        name: id.to_string(),
        primary,
        secondary,
        status: common.status,
        reprovision: common.reprovision,
        hub: common.hub,
        foreign: Vec::new(),
        take_back: false,
    })
}

fn put_group(
    state: &AppState,
    b: &mut LocalBackend,
    id: &str,
    body: &Map<String, Value>,
    wanted: &Option<Option<String>>,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let what = format!("enrollment group `{id}`");
    let existing = b.group(id).map_err(backend_error)?;
    let meta = qd::group_meta(b.store().conn(), id).map_err(store_error)?;
    check_put(&what, wanted, meta.as_ref())?;
    let record = group_from(state, b, id, body, existing.as_ref())?;
    b.put_group(&record, now).map_err(backend_error)?;
    let extra = extra_of(body);
    qd::set_group_extra(b.store().conn(), id, extra.as_deref()).map_err(store_error)?;
    read_group(b, id)?.ok_or_else(|| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, "group vanished"))
}

fn delete_group(b: &mut LocalBackend, id: &str, wanted: &Option<Option<String>>) -> Result<(), ApiError> {
    let meta = qd::group_meta(b.store().conn(), id).map_err(store_error)?;
    check_delete(&format!("enrollment group `{id}`"), wanted, meta.as_ref())?;
    qd::group_delete(b.store().conn(), id).map_err(store_error)?;
    Ok(())
}

/// `GET /enrollmentGroups/{id}`.
async fn get_enrollment_group(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let found = state
        .read(move |b, _| read_group(b, &id)?.ok_or_else(|| not_found("enrollment group", &id)))
        .await?;
    Ok(with_etag(found))
}

/// `PUT /enrollmentGroups/{id}`: the same etag rules as individual enrollments; a CA reference
/// must name a verified CA certificate of this DPS.
async fn create_or_update_enrollment_group(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentWrite)?;
    let wanted = if_match(&headers)?;
    let body = json_body(&body)?;
    let st = state.clone();
    let out = state
        .write(move |b, now| put_group(&st, b, &id, &body, &wanted, now))
        .await?;
    Ok(with_etag(out))
}

/// `DELETE /enrollmentGroups/{id}`: 204; 404 if none; 412 on a stale If-Match.
async fn delete_enrollment_group(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentWrite)?;
    let wanted = if_match(&headers)?;
    state.write(move |b, _| delete_group(b, &id, &wanted)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /enrollmentGroups/{id}/attestationmechanism`.
async fn get_group_attestation_mechanism(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let found = state
        .read(move |b, _| read_group(b, &id)?.ok_or_else(|| not_found("enrollment group", &id)))
        .await?;
    Ok(axum::Json(found["attestation"].clone()))
}

// ---------------------------------------------------------------- bulk

#[derive(Clone, Copy)]
enum Kind {
    Individual,
    Group,
}

impl Kind {
    fn id_field(self) -> &'static str {
        match self {
            Kind::Individual => "registrationId",
            Kind::Group => "enrollmentGroupId",
        }
    }
    fn list_field(self) -> &'static str {
        match self {
            Kind::Individual => "enrollments",
            Kind::Group => "enrollmentGroups",
        }
    }
}

/// Where a record's attestation is: among its members, or read apart ([`BulkRead`]).
#[derive(Clone, Copy)]
enum Attestation<'r> {
    InBody,
    Read(Option<&'r AttestationRead>),
}

/// A JSON object read as `T` (serde's derived structs take JSON arrays too, which DPS refuses
/// and the record trees of [`json_body`] never held).
struct Obj<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Obj<T>, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(Only(std::marker::PhantomData))
    }
}

/// A bulk operation on individual enrollments as a roll sends it, read without a JSON tree of
/// its certificates (most of its bytes). Read only when every member this certroll acts on has
/// the JSON kind it takes (anything else, a duplicate member too, fails the read and the body
/// goes through [`json_body`] and [`run_bulk`], which answer it as they always did); the
/// records' other members are kept as a tree each, to be checked and kept as [`run_bulk`]
/// does.
#[derive(serde::Deserialize)]
struct BulkRead {
    mode: String,
    enrollments: Vec<RecordRead>,
}

/// One record of a [`BulkRead`]: its `attestation` read apart, every other member kept as a
/// tree (the last of a repeated member, as [`json_body`] keeps it; a repeated `attestation`
/// fails the read). Read by hand rather than with serde's `flatten`, which buffers each member
/// it does not know in a value of its own first and then builds the tree from that copy.
struct RecordRead {
    attestation: Option<Obj<AttestationRead>>,
    members: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for RecordRead {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RecordRead, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RecordRead;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RecordRead, A::Error> {
                let mut attestation = None;
                let mut members = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "attestation" {
                        if attestation.is_some() {
                            return Err(serde::de::Error::duplicate_field("attestation"));
                        }
                        attestation = Some(map.next_value::<Option<Obj<AttestationRead>>>()?);
                    } else {
                        members.insert(key, map.next_value()?);
                    }
                }
                Ok(RecordRead {
                    attestation: attestation.flatten(),
                    members,
                })
            }
        }
        d.deserialize_map(Members)
    }
}

/// A record's `attestation`, as far as [`client_slots_read`] reads it.
#[derive(serde::Deserialize)]
struct AttestationRead {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    x509: Option<Obj<X509Read>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct X509Read {
    #[serde(default)]
    client_certificates: Option<Obj<SlotsRead>>,
    /// Present and not null: refused.
    #[serde(default)]
    signing_certificates: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    ca_references: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct SlotsRead {
    #[serde(default)]
    primary: Option<Obj<SlotRead>>,
    #[serde(default)]
    secondary: Option<Obj<SlotRead>>,
}

#[derive(serde::Deserialize)]
struct SlotRead {
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    info: Option<Obj<InfoRead>>,
    /// `certificate` decoded and checked ahead ([`decode_ahead`]); never read from the body.
    #[serde(skip)]
    decoded: Option<Decoded>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct InfoRead {
    #[serde(default)]
    sha1_thumbprint: Option<String>,
}

/// A bulk operation's body, as read.
enum BulkBody {
    Tree(Map<String, Value>),
    Read(BulkRead),
}

/// Reads a bulk operation on individual enrollments: as a [`BulkRead`] when it reads as one,
/// else as [`json_body`] does (with its answers to what is not a JSON object).
fn bulk_body(body: &Bytes) -> Result<BulkBody, ApiError> {
    match serde_json::from_slice::<Obj<BulkRead>>(body) {
        Ok(Obj(read)) => Ok(BulkBody::Read(read)),
        Err(_) => json_body(body).map(BulkBody::Tree),
    }
}

/// Decodes and checks every client certificate `body` carries before its request joins the
/// write queue: the store is held by one group of writes at a time, so work done there is work
/// no other request can overlap (the certificates' decoding and parsing was about a third of a
/// roll's bulk write time in it). The answers stay those of [`slot_of`]: each result is only
/// looked at where [`slot_of`] would have worked it out. Past [`BULK_LIMIT`] records nothing is
/// decoded (the request is refused for its size).
fn decode_ahead(infos: &CertInfos, body: &mut BulkRead) {
    if body.enrollments.len() > BULK_LIMIT {
        return;
    }
    for record in &mut body.enrollments {
        let Some(Obj(attestation)) = &mut record.attestation else {
            continue;
        };
        let Some(Obj(x509)) = &mut attestation.x509 else {
            continue;
        };
        let Some(Obj(slots)) = &mut x509.client_certificates else {
            continue;
        };
        for (which, slot) in [
            ("primary", &mut slots.primary),
            ("secondary", &mut slots.secondary),
        ] {
            if let Some(Obj(slot)) = slot
                && let Some(text) = &slot.certificate
            {
                let field = format!("attestation.x509.clientCertificates.{which}");
                slot.decoded = Some(Decoded::of(infos, &field, text));
            }
        }
    }
}

/// 400 when a bulk operation carries more than [`BULK_LIMIT`] records.
fn check_bulk_size(n: usize) -> Result<(), ApiError> {
    if n > BULK_LIMIT {
        return Err(bad_request(format!(
            "a bulk operation takes at most {BULK_LIMIT} records; this one has {n}"
        )));
    }
    Ok(())
}

/// A record's id and what its etag asks for under `mode`.
fn bulk_target(
    kind: Kind,
    mode: &str,
    record: &Map<String, Value>,
) -> Result<(String, Option<Option<String>>), ApiError> {
    let id = record
        .get(kind.id_field())
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request(format!("each record needs {}", kind.id_field())))?
        .to_string();
    let etag = record
        .get("etag")
        .and_then(Value::as_str)
        .map(|e| e.trim_matches('"').to_string());
    let wanted = match mode {
        "create" => None,
        "update" => Some(None),
        "updateIfMatchETag" => Some(Some(etag.unwrap_or_default())),
        "delete" => etag.map(Some),
        other => {
            return Err(bad_request(format!(
                "mode `{other}` is not one of create, update, updateIfMatchETag, delete"
            )));
        }
    };
    Ok((id, wanted))
}

/// Runs a `BulkEnrollmentOperation`: each record on its own (one failing does not stop the
/// others), all in one unit of work; 200 with `BulkEnrollmentOperationResult`.
fn run_bulk(
    state: &AppState,
    b: &mut LocalBackend,
    kind: Kind,
    body: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let mode = body
        .get("mode")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("mode is required (create, update, updateIfMatchETag or delete)"))?;
    let items = body
        .get(kind.list_field())
        .and_then(Value::as_array)
        .ok_or_else(|| bad_request(format!("{} is required (an array)", kind.list_field())))?;
    check_bulk_size(items.len())?;
    // Every record's shape is checked before anything is written: a refused request wrote
    // nothing (it runs without a savepoint of its own, `AppState::write_checked`).
    let mut records = Vec::with_capacity(items.len());
    for item in items {
        let Some(record) = item.as_object() else {
            return Err(bad_request(format!(
                "each of {} must be an object",
                kind.list_field()
            )));
        };
        let (id, wanted) = bulk_target(kind, mode, record)?;
        records.push((record, Attestation::InBody, id, wanted));
    }
    run_records(state, b, kind, mode, records, now)
}

/// [`run_bulk`] of a [`BulkRead`].
fn run_bulk_read(
    state: &AppState,
    b: &mut LocalBackend,
    body: &BulkRead,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    check_bulk_size(body.enrollments.len())?;
    let mut records = Vec::with_capacity(body.enrollments.len());
    for record in &body.enrollments {
        let (id, wanted) = bulk_target(Kind::Individual, &body.mode, &record.members)?;
        let attestation = Attestation::Read(record.attestation.as_ref().map(|Obj(a)| a));
        records.push((&record.members, attestation, id, wanted));
    }
    run_records(state, b, Kind::Individual, &body.mode, records, now)
}

/// A bulk record: its members, its attestation, its id and what its etag asks for.
type BulkRecord<'r> = (
    &'r Map<String, Value>,
    Attestation<'r>,
    String,
    Option<Option<String>>,
);

/// The records of a bulk operation, each on its own, after all were checked.
fn run_records(
    state: &AppState,
    b: &mut LocalBackend,
    kind: Kind,
    mode: &str,
    records: Vec<BulkRecord<'_>>,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let mut errors = Vec::new();
    for (record, attestation, id, wanted) in records {
        // `update` creates a missing record too (an upsert), as DPS's bulk update does.
        let (exists, current) = match kind {
            Kind::Individual => {
                let current = qd::individual_wire(b.store().conn(), &id).map_err(store_error)?;
                (current.is_some(), current)
            }
            Kind::Group => (
                qd::group_meta(b.store().conn(), &id)
                    .map_err(store_error)?
                    .is_some(),
                None,
            ),
        };
        let wanted = if mode == "update" && !exists { None } else { wanted };
        let result = match (mode, kind) {
            ("delete", Kind::Individual) => delete_individual(b, &id, &wanted),
            ("delete", Kind::Group) => delete_group(b, &id, &wanted),
            (_, Kind::Individual) => {
                write_individual_over(state, b, &id, (record, attestation), &wanted, current, now)
            }
            (_, Kind::Group) => put_group(state, b, &id, record, &wanted, now).map(|_| ()),
        };
        if let Err(e) = result {
            if e.status.is_server_error() {
                return Err(e);
            }
            errors.push(json!({
                kind.id_field(): id,
                "errorCode": e.code.parse::<i64>().unwrap_or(i64::from(e.status.as_u16()) * 1000),
                "errorStatus": e.message,
            }));
        }
    }
    Ok(json!({"isSuccessful": errors.is_empty(), "errors": errors}))
}

/// `POST /enrollments`: bulk operation on individual enrollments.
async fn run_bulk_individual_operation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentWrite)?;
    let mut body = bulk_body(&body)?;
    if let BulkBody::Read(read) = &mut body {
        decode_ahead(&state.cert_infos, read);
    }
    let st = state.clone();
    let out = state
        .write_checked(move |b, now| match &body {
            BulkBody::Read(read) => run_bulk_read(&st, b, read, now),
            BulkBody::Tree(tree) => run_bulk(&st, b, Kind::Individual, tree, now),
        })
        .await?;
    Ok(axum::Json(out))
}

/// `POST /enrollmentGroups`: bulk operation on enrollment groups.
async fn run_bulk_group_operation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentWrite)?;
    let body = json_body(&body)?;
    let st = state.clone();
    let out = state
        .write(move |b, now| run_bulk(&st, b, Kind::Group, &body, now))
        .await?;
    Ok(axum::Json(out))
}

// ---------------------------------------------------------------- queries

/// The page a query asks for: (size, the id after which it starts).
fn page_of(headers: &HeaderMap, body: &Bytes, collection: Option<&str>) -> Result<(usize, String), ApiError> {
    if let Some(collection) = collection {
        let spec = json_body(body)?;
        match spec.get("query").and_then(Value::as_str) {
            Some(q) if whole_collection(q, collection) => {}
            Some(other) => {
                return Err(bad_request(format!(
                    "query `{other}` is not served: certroll answers `*` and `SELECT * FROM {collection}` \
                     (all records)"
                )));
            }
            None => return Err(bad_request("query is required")),
        }
    }
    let size = match headers.get("x-ms-max-item-count") {
        None => DEFAULT_PAGE,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| bad_request("x-ms-max-item-count must be a positive integer"))?
            .min(MAX_PAGE),
    };
    let after = match headers.get("x-ms-continuation") {
        None => String::new(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(continuation_decode)
            .ok_or_else(|| bad_request("x-ms-continuation is not a token this service handed out"))?,
    };
    Ok((size, after))
}

/// Whether a query asks for every record of `collection`: `*` (what the SDK samples send) or
/// `SELECT * FROM {collection}` (what DPS's documentation and portal write), keywords and the
/// collection's name in any case, any spacing.
fn whole_collection(query: &str, collection: &str) -> bool {
    let words: Vec<&str> = query.split_whitespace().collect();
    match words.as_slice() {
        ["*"] => true,
        [select, "*", from, name] => {
            select.eq_ignore_ascii_case("select")
                && from.eq_ignore_ascii_case("from")
                && name.eq_ignore_ascii_case(collection)
        }
        _ => false,
    }
}

/// The continuation token after `last`: opaque to clients (hex of the last id seen).
pub(crate) fn continuation(last: &str) -> String {
    format!("c1{}", crate::pki::hex_upper(last.as_bytes()))
}

pub(crate) fn continuation_decode(token: &str) -> Option<String> {
    let hex = token.trim().strip_prefix("c1")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn page_response(items: Vec<Value>, next: Option<String>, size: usize, item_type: &str) -> Response {
    let mut response = (StatusCode::OK, axum::Json(Value::Array(items))).into_response();
    page_headers(&mut response, next, size, item_type);
    response
}

/// The headers of a query page: the continuation token after `next`, the page size, the type
/// of its items.
fn page_headers(response: &mut Response, next: Option<String>, size: usize, item_type: &str) {
    let h = response.headers_mut();
    if let Some(token) = next.and_then(|t| HeaderValue::from_str(&continuation(&t)).ok()) {
        h.insert("x-ms-continuation", token);
    }
    if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
        h.insert("x-ms-max-item-count", v);
    }
    h.insert(
        "x-ms-item-type",
        HeaderValue::from_static(match item_type {
            "Enrollment" => "Enrollment",
            "EnrollmentGroup" => "EnrollmentGroup",
            _ => "DeviceRegistration",
        }),
    );
}

/// One page of ids (one more asked, to know whether another page follows).
fn split_page<T>(mut found: Vec<T>, size: usize, id: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let more = found.len() > size;
    found.truncate(size);
    let next = if more { found.last().map(&id) } else { None };
    (found, next)
}

/// A query of every record of one kind, in pages: `page` lists ids after a token, `read`
/// renders one record (gone meanwhile: left out), `item_type` names them (`x-ms-item-type`).
async fn query_records(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    page: fn(&rusqlite::Connection, &str, usize) -> Result<Vec<String>, crate::store::StoreError>,
    read: fn(&LocalBackend, &str) -> Result<Option<Value>, ApiError>,
    item_type: &'static str,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let collection = if item_type == "Enrollment" {
        "enrollments"
    } else {
        "enrollmentGroups"
    };
    let (size, after) = page_of(&headers, &body, Some(collection))?;
    let (items, next) = state
        .read(move |b, _| {
            let ids = page(b.store().conn(), &after, size + 1).map_err(store_error)?;
            let (ids, next) = split_page(ids, size, String::clone);
            let items = ids
                .iter()
                .filter_map(|id| read(b, id).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, next))
        })
        .await?;
    Ok(page_response(items, next, size, item_type))
}

/// `POST /enrollments/query`: all individual enrollments, in pages, each without its
/// `registrationState`: DPS's query leaves it out even for a device that registered (only a GET
/// of the enrollment carries it; Azure/azure-iot-sdk-csharp#3478), so a client may not take a
/// record without one for a device that never registered. The store is released before the page
/// is rendered.
async fn query_individual_enrollments(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let (size, after) = page_of(&headers, &body, Some("enrollments"))?;
    let (rows, next) = state
        .read(move |b, _| {
            let conn = b.store().conn();
            let rows = qd::individuals_wire_page(conn, &after, size + 1).map_err(store_error)?;
            Ok(split_page(rows, size, |r| r.enrollment.registration_id.clone()))
        })
        .await?;
    let items: Vec<IndividualWire<'_>> = rows
        .iter()
        .map(|row| individual_wire(&state.cert_infos, row, None))
        .collect();
    let body = serde_json::to_vec(&items)
        .map_err(|e| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()))?;
    let mut response = (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    page_headers(&mut response, next, size, "Enrollment");
    Ok(response)
}

/// `POST /enrollmentGroups/query`: all enrollment groups, in pages.
async fn query_enrollment_groups(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DpsError> {
    query_records(
        state,
        headers,
        body,
        qd::group_names_page,
        read_group,
        "EnrollmentGroup",
    )
    .await
}

// ---------------------------------------------------------------- registration states

/// `GET /registrations/{id}`: the device's registration state, 404 if it never registered (or
/// it was deleted).
async fn get_device_registration_state(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let found = state
        .read(move |b, _| {
            b.registration(&id)
                .map_err(backend_error)?
                .map(|r| registration_json(&r))
                .ok_or_else(|| not_found("registration", &id))
        })
        .await?;
    Ok(with_etag(found))
}

/// `DELETE /registrations/{id}`: 204; the enrollment and the hub identity stay, and the
/// device's next registration is a first assignment.
async fn delete_device_registration_state(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentWrite)?;
    let wanted = if_match(&headers)?;
    state
        .write(move |b, _| {
            let current = b.registration(&id).map_err(backend_error)?;
            let meta = current.as_ref().map(|r| Meta {
                etag: r.etag.clone().unwrap_or_default(),
                created: r.created.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                updated: r.updated.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                extra: None,
                hub_extra: None,
            });
            check_delete(&format!("registration `{id}`"), &wanted, meta.as_ref())?;
            qd::registration_delete(b.store().conn(), &id).map_err(store_error)?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /registrations/{groupId}/query`: the registration states of a group's devices (those
/// whose last assignment was by the group), in pages; 404 if the group does not exist.
async fn query_group_device_registration_states(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DpsError> {
    auth(&state, &headers, super::auth::SasRight::EnrollmentRead)?;
    let (size, after) = page_of(&headers, &body, None)?;
    let (items, next) = state
        .read(move |b, _| {
            if b.group(&group).map_err(backend_error)?.is_none() {
                return Err(not_found("enrollment group", &group));
            }
            let found = qd::group_registrations_page(b.store().conn(), &group, &after, size + 1)
                .map_err(store_error)?;
            let (found, next) = split_page(found, size, |r| r.registration_id.clone());
            Ok((found.iter().map(registration_json).collect(), next))
        })
        .await?;
    Ok(page_response(items, next, size, "DeviceRegistration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_individual_enrollment_renders_with_its_certificate_info_kept_fields_and_registration() {
        let now = time::macros::datetime!(2026-11-23 0:00 UTC);
        let (der, _) = crate::store::test_support::self_signed(now, 30);
        let tp = crate::pki::sha1_thumbprint(&der);
        let row = qd::IndividualWireRow {
            enrollment: IndividualEnrollment {
                registration_id: "dev-1".into(),
                primary: Some(der.clone()),
                secondary: None,
                status: Status::Enabled,
                reprovision: "reset".into(),
                hub: "h1".into(),
                foreign: Vec::new(),
                take_back: false,
            },
            primary_thumbprint: Some(tp.clone()),
            secondary_thumbprint: None,
            meta: Meta {
                etag: "abc".into(),
                created: now,
                updated: now + time::Duration::hours(1),
                extra: None,
                hub_extra: None,
            },
            extra_text: Some(r#"{"initialTwin":{"tags":{"a":1}},"iotHubs":["h2.azure-devices.net"]}"#.into()),
        };
        let registration = RegistrationState {
            registration_id: "dev-1".into(),
            status: "assigned".into(),
            hub: Some("h1".into()),
            ..Default::default()
        };
        let infos = CertInfos::default();
        let got = serde_json::to_value(individual_wire(&infos, &row, Some(&registration))).unwrap();
        let expected = json!({
            "registrationId": "dev-1",
            "attestation": {"type": "x509", "x509": {
                "clientCertificates": {"primary": {"info": certificate_info(&der)}, "secondary": null},
                "signingCertificates": null, "caReferences": null},
                "tpm": null, "symmetricKey": null},
            "provisioningStatus": "enabled",
            "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false},
            "iotHubHostName": "h1.azure-devices.net",
            "etag": "\"abc\"",
            "createdDateTimeUtc": "2026-11-23T00:00:00.000Z",
            "lastUpdatedDateTimeUtc": "2026-11-23T01:00:00.000Z",
            "registrationState": registration_json(&registration),
            "initialTwin": {"tags": {"a": 1}},
            "iotHubs": ["h2.azure-devices.net"],
            "deviceId": "dev-1",
            "capabilities": {"iotEdge": false},
        });
        assert_eq!(got, expected);
        let info = &got["attestation"]["x509"]["clientCertificates"]["primary"]["info"];
        assert_eq!(info["sha1Thumbprint"], json!(tp));
        assert_eq!(info["subjectName"], json!("CN=t"));
        // Rendered again from what was kept, the same.
        let again = serde_json::to_value(individual_wire(&infos, &row, None)).unwrap();
        assert_eq!(again["attestation"], expected["attestation"]);
        assert!(again.get("registrationState").is_none());
    }

    /// A state over an empty store whose plan links hub `h`.
    fn bulk_state() -> AppState {
        const PLAN: &str = "version = 1\n[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\n\
            validity_days = 365\n[policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\n\
            validity_days = 3650\n[ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
            [enrollments.d]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"h\"\n";
        let plan = crate::plan::parse(&std::env::temp_dir().join("plan.toml"), PLAN).unwrap();
        AppState::new(
            LocalBackend::new(crate::store::Store::open_empty().unwrap()),
            Arc::new(crate::clock::FixedClock(
                time::macros::datetime!(2026-12-01 0:00 UTC),
            )),
            Arc::new(plan),
            std::time::Duration::from_secs(1),
            Vec::new(),
            Default::default(),
        )
    }

    /// A bulk operation's answer, or its error's status and message.
    type BulkAnswer = Result<Value, (u16, String)>;

    /// Runs `bodies` in turn as bulk operations, read as `typed` says (the typed read when it
    /// takes the body, its certificates decoded ahead when `ahead`, else the tree), and returns
    /// each answer and the stored records after.
    fn run_bodies(bodies: &[Value], typed: bool, ahead: bool) -> (Vec<BulkAnswer>, Vec<String>) {
        let state = bulk_state();
        let mut b = LocalBackend::new(crate::store::Store::open_empty().unwrap());
        let now = time::macros::datetime!(2026-12-01 0:00 UTC);
        let answers = bodies
            .iter()
            .map(|body| {
                let bytes = Bytes::from(serde_json::to_vec(body).unwrap());
                let out = match (typed, bulk_body(&bytes)) {
                    (_, Err(e)) => Err(e),
                    (true, Ok(BulkBody::Read(mut read))) => {
                        if ahead {
                            decode_ahead(&state.cert_infos, &mut read);
                        }
                        run_bulk_read(&state, &mut b, &read, now)
                    }
                    (_, Ok(_)) => {
                        run_bulk(&state, &mut b, Kind::Individual, &json_body(&bytes).unwrap(), now)
                    }
                };
                out.map_err(|e| (e.status.as_u16(), e.message))
            })
            .collect();
        let stored = qd::individuals_wire_page(b.store().conn(), "", 100)
            .unwrap()
            .iter()
            .map(|r| format!("{:?} {:?}", r.enrollment, r.extra_text))
            .collect();
        (answers, stored)
    }

    #[test]
    fn a_bulk_body_read_typed_is_answered_and_stored_as_its_json_tree_would_be() {
        use base64::Engine as _;
        let now = time::macros::datetime!(2026-11-23 0:00 UTC);
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        let (first, _) = crate::store::test_support::self_signed(now, 30);
        let (next, _) = crate::store::test_support::self_signed(now, 60);
        let record = |id: &str, x509: Value| {
            json!({"registrationId": id, "deviceId": id, "attestation": {"type": "x509", "x509": x509},
                   "provisioningStatus": "enabled", "iotHubs": ["h.azure-devices.net"],
                   "allocationPolicy": "static", "capabilities": {"iotEdge": false},
                   "initialTwin": {"tags": {"b": 1, "a": [2, "x"]}}})
        };
        let certs = |p: &[u8], s: Option<&[u8]>| {
            json!({"clientCertificates": {"primary": {"certificate": b64(p)},
                   "secondary": s.map(|s| json!({"certificate": b64(s)}))}})
        };
        let mut bad_status = record("e3", certs(&first, None));
        bad_status["provisioningStatus"] = json!("paused");
        let mut tpm = record("e4", certs(&first, None));
        tpm["attestation"]["type"] = json!("tpm");
        let mut signing = record("e5", certs(&first, None));
        signing["attestation"]["x509"]["signingCertificates"] = json!({"primary": null});
        let mut garbage = record("e6", certs(&first, None));
        garbage["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"] = json!("@@@");
        let mut by_info = record("e1", certs(&first, None));
        by_info["attestation"]["x509"]["clientCertificates"]["primary"] =
            json!({"info": {"sha1Thumbprint": crate::pki::sha1_thumbprint(&first)}});
        let mut no_attestation = record("e7", Value::Null);
        no_attestation["attestation"] = Value::Null;
        // Base64 that decodes, of bytes that are no certificate.
        let not_a_certificate = record("e2", certs(&first, Some(&b"not a certificate"[..])));
        let bodies = vec![
            json!({"mode": "create", "enrollments": [record("e1", certs(&first, None)), record("e2", certs(&first, None))]}),
            json!({"mode": "update", "enrollments": [record("e1", certs(&first, Some(&next))), bad_status, tpm, not_a_certificate]}),
            json!({"mode": "update", "enrollments": [signing, garbage, by_info, no_attestation]}),
            json!({"mode": "create", "enrollments": [record("e1", certs(&first, None))]}),
            json!({"mode": "nonsense", "enrollments": []}),
            json!({"mode": "nonsense", "enrollments": [record("e8", certs(&first, None))]}),
        ];
        for body in &bodies {
            let bytes = Bytes::from(serde_json::to_vec(body).unwrap());
            assert!(
                matches!(bulk_body(&bytes), Ok(BulkBody::Read(_))),
                "read typed: {body}"
            );
        }
        let (typed, typed_stored) = run_bodies(&bodies, true, false);
        let (tree, tree_stored) = run_bodies(&bodies, false, false);
        assert_eq!(typed, tree);
        assert_eq!(typed_stored, tree_stored);
        // Decoded and checked before the write queue: the same answers, the same records.
        let (ahead, ahead_stored) = run_bodies(&bodies, true, true);
        assert_eq!(ahead, tree);
        assert_eq!(ahead_stored, tree_stored);
        assert!(
            tree.iter()
                .any(|a| format!("{a:?}").contains("secondary.certificate is not a readable X.509")),
            "{tree:?}"
        );
        assert_eq!(typed_stored.len(), 2, "{typed_stored:?}");
        let errors = typed[1].as_ref().unwrap()["errors"].as_array().unwrap().len();
        assert_eq!(errors, 3, "{:?}", typed[1]);

        // Shapes the typed read does not take go to the tree, which answers them as before.
        let mut as_array = record("e9", certs(&first, None));
        as_array["attestation"] = json!(["x509", {}]);
        for odd in [
            r#"{"mode": 5, "enrollments": []}"#.to_string(),
            format!(r#"{{"mode": "create", "enrollments": [{as_array}]}}"#),
            r#"{"mode": "create", "mode": "update", "enrollments": []}"#.to_string(),
            r#"{"mode": "create", "enrollments": [{"registrationId": "a", "attestation": null, "attestation": null}]}"#.to_string(),
            r#"["mode", []]"#.to_string(),
        ] {
            let bytes = Bytes::from(odd.clone());
            assert!(!matches!(bulk_body(&bytes), Ok(BulkBody::Read(_))), "{odd}");
        }
    }

    /// The DPS fields an enrollment keeps are stored as the text the tree of their copies gave
    /// (sorted members, nested values and escapes as they were), and none is no text.
    #[test]
    fn kept_dps_fields_are_written_as_the_tree_of_their_copies_wrote_them() {
        let body = json!({
            "registrationId": "d-1",
            "iotHubs": ["h.azure-devices.net"],
            "initialTwin": {"tags": {"site": "Zürich \"A\"", "n": 1.5e3}, "properties": {"desired": {}}},
            "capabilities": {"iotEdge": false},
            "deviceId": "d-1",
            "allocationPolicy": null,
            "provisioningStatus": "enabled",
        });
        let body = body.as_object().unwrap();
        let copies: Map<String, Value> = body
            .iter()
            .filter(|(k, v)| {
                !v.is_null() && ["deviceId", "initialTwin", "capabilities", "iotHubs"].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(extra_of(body), Some(Value::Object(copies).to_string()));
        assert_eq!(
            extra_of(json!({"registrationId": "d"}).as_object().unwrap()),
            None
        );
    }

    /// A certificate's info as serve wrote it from a JSON tree before it was typed: the same
    /// text, member order included, in the cache and in a tree.
    #[test]
    fn a_certificate_info_is_written_as_the_json_tree_it_replaced_wrote_it() {
        let (der, _) =
            crate::store::test_support::self_signed(time::macros::datetime!(2026-11-23 0:00 UTC), 1);
        let info = crate::pki::CertInfo::from_der(&der).unwrap();
        let tree = json!({
            "subjectName": info.subject,
            "sha1Thumbprint": info.thumbprint,
            "sha256Thumbprint": info.sha256,
            "issuerName": info.issuer,
            "notBeforeUtc": wire_time(info.not_before),
            "notAfterUtc": wire_time(info.not_after),
            "serialNumber": info.serial,
            "version": 3,
        });
        let infos = CertInfos::default();
        let cached = infos.info(&info.thumbprint, &der).unwrap();
        assert_eq!(cached.get(), serde_json::to_string(&tree).unwrap());
        assert_eq!(certificate_info(&der), tree);
    }

    #[test]
    fn the_certificate_check_refuses_what_is_not_a_certificate_and_keeps_what_is() {
        let infos = CertInfos::default();
        let refused = infos.check(b"not a certificate").unwrap_err();
        assert_eq!(
            refused.to_string(),
            crate::pki::CertInfo::from_der(b"not a certificate")
                .unwrap_err()
                .to_string(),
            "the check refuses as the full read does"
        );
        assert!(
            infos
                .known(&crate::pki::sha1_thumbprint(b"not a certificate"))
                .is_none()
        );
        let (der, _) =
            crate::store::test_support::self_signed(time::macros::datetime!(2026-11-23 0:00 UTC), 1);
        infos.check(&der).unwrap();
        let thumbprint = crate::pki::sha1_thumbprint(&der);
        assert!(matches!(infos.known(&thumbprint), Some(Known::Readable)));
        // The first read renders the info, as it would have been rendered by the check.
        let info = infos.info(&thumbprint, &der).unwrap();
        assert_eq!(info.get(), certificate_info(&der).to_string());
        assert!(matches!(infos.known(&thumbprint), Some(Known::Info(_))));
    }

    /// Base64 of DER is read the same with or without whitespace inside it, ASCII or not
    /// (the byte-wise look for it sends both kinds the long way), and text that is not base64
    /// is refused naming the field.
    #[test]
    fn a_base64_certificate_reads_the_same_with_any_whitespace_inside() {
        use base64::Engine as _;
        let (der, _) =
            crate::store::test_support::self_signed(time::macros::datetime!(2026-11-23 0:00 UTC), 1);
        let text = base64::engine::general_purpose::STANDARD.encode(&der);
        let (head, tail) = text.split_at(40);
        for spaced in [
            text.clone(),
            format!("{head}\r\n{tail}\n"),
            format!("{head}\t\u{0B}\u{0C} {tail}"),
            format!("{head}\u{A0}{tail}\u{2003}"),
        ] {
            assert_eq!(certificate_der(&spaced, "f").unwrap(), der, "{spaced:?}");
        }
        let refused = certificate_bytes(&format!("{head}é{tail}"), "a.b").unwrap_err();
        assert!(
            refused.message.contains("a.b is neither PEM text nor base64"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_query_for_the_whole_collection_is_served_in_both_spellings() {
        for q in [
            "*",
            " * ",
            "SELECT * FROM enrollments",
            "select  *  from Enrollments",
        ] {
            assert!(whole_collection(q, "enrollments"), "{q}");
        }
        for q in [
            "SELECT * FROM enrollmentGroups",
            "SELECT * FROM enrollments WHERE x = 1",
            "SELECT deviceId FROM enrollments",
            "",
        ] {
            assert!(!whole_collection(q, "enrollments"), "{q}");
        }
        assert!(whole_collection(
            "SELECT * FROM enrollmentGroups",
            "enrollmentGroups"
        ));
    }

    #[test]
    fn continuation_tokens_round_trip_any_id_and_refuse_garbage() {
        for id in ["", "a", "dev:01.x_y-z", "Zürich"] {
            assert_eq!(continuation_decode(&continuation(id)).as_deref(), Some(id));
        }
        assert_eq!(continuation_decode("nonsense"), None);
        assert_eq!(continuation_decode("c1ABC"), None);
    }

    #[test]
    fn if_match_takes_star_and_quoted_star_as_wildcards_and_strips_quotes() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        for star in ["*", "\"*\""] {
            h.insert("if-match", HeaderValue::from_static(star));
            assert_eq!(if_match(&h).unwrap(), Some(None));
        }
        h.insert("if-match", HeaderValue::from_static("\"abc\""));
        assert_eq!(if_match(&h).unwrap(), Some(Some("abc".into())));
    }

    #[test]
    fn reprovision_policies_map_both_ways() {
        for policy in ["migrate", "reset", "never"] {
            let body: Map<String, Value> =
                serde_json::from_value(json!({"reprovisionPolicy": reprovision_policy(policy)})).unwrap();
            assert_eq!(reprovision_of(&body).unwrap().as_deref(), Some(policy));
        }
    }

    #[test]
    fn ids_follow_dps_syntax() {
        for ok in ["a", "dev-01", "a:b.c_d"] {
            check_id_syntax(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "a b", "a/b", &"x".repeat(129)] {
            assert!(check_id_syntax(bad).is_err(), "{bad}");
        }
    }
}
