//! DPS CA certificates with proof of possession on the ARM management paths of `certroll serve`
//! (azure-wire.md section 2.9; `Microsoft.Devices/provisioningServices/{dps}/certificates`,
//! api-version 2022-02-05): upload, get, list, generateVerificationCode, verify and delete, each
//! with etags.
//!
//! The rules are the enrollment service's (`EnrollmentService::upload_ca`,
//! `verification_code`, `verify_ca`, `delete_ca`): re-uploading a CA makes it unverified again,
//! the verification certificate must carry the code as CN and be signed by the CA's key. This
//! module owns only the ARM shapes (RFC 1123 dates, `{"error": {"code", "message"}}`).

use super::ApiError;
use super::state::AppState;
use crate::backend::local::LocalBackend;
use crate::backend::types::ServiceCa;
use crate::backend::{BackendError, EnrollmentService};
use crate::store::queries_dps::{self as qd, Meta};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;

/// The resource ARM's bearer challenge names.
const ARM_RESOURCE: &str = "https://management.azure.com/";

const BASE: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Devices/provisioningServices/{dps}/certificates";

/// The ARM routes for the DPS's CA certificates.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(BASE, get(list_certificates))
        .route(
            &format!("{BASE}/{{name}}"),
            get(get_certificate)
                .put(create_or_update_certificate)
                .delete(delete_certificate),
        )
        .route(
            &format!("{BASE}/{{name}}/generateVerificationCode"),
            post(generate_verification_code),
        )
        .route(&format!("{BASE}/{{name}}/verify"), post(verify_certificate))
        .with_state(state)
}

/// The path parameters of one certificate.
type CertPath = Path<(String, String, String, String)>;

/// An error as ARM renders it: `{"error": {"code", "message"}}`.
pub struct ArmError(pub ApiError);

impl From<ApiError> for ArmError {
    fn from(e: ApiError) -> ArmError {
        ArmError(e)
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = json!({"error": {"code": e.code, "message": e.message}});
        (e.status, e.headers(), axum::Json(body)).into_response()
    }
}

fn arm_error(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn backend_error(e: BackendError) -> ApiError {
    match e {
        BackendError::NotFound(what) => {
            arm_error(StatusCode::NOT_FOUND, "NotFound", format!("{what} not found"))
        }
        BackendError::Refused(why) => arm_error(StatusCode::BAD_REQUEST, "InvalidCertificate", why),
        BackendError::Pki(e) => arm_error(StatusCode::BAD_REQUEST, "InvalidCertificate", e.to_string()),
        other => arm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            other.to_string(),
        ),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    arm_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        e.to_string(),
    )
}

/// The ARM actions of a DPS's CA certificates, as Azure's role definitions name them.
mod action {
    pub const READ: &str = "Microsoft.Devices/provisioningServices/certificates/read";
    pub const WRITE: &str = "Microsoft.Devices/provisioningServices/certificates/write";
    pub const DELETE: &str = "Microsoft.Devices/provisioningServices/certificates/delete";
    pub const GENERATE_CODE: &str =
        "Microsoft.Devices/provisioningServices/certificates/generateVerificationCode/action";
    pub const VERIFY: &str = "Microsoft.Devices/provisioningServices/certificates/verify/action";
}

/// The resource id of the certificates collection (`name` None) or of one certificate.
fn scope(sub: &str, rg: &str, dps: &str, name: Option<&str>) -> String {
    let base = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Devices/provisioningServices/{dps}/certificates"
    );
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

/// The caller's bearer token (401 with ARM's challenge otherwise), then its ARM role for
/// `action` over `scope` (403 `AuthorizationFailed`).
async fn authorize(state: &AppState, headers: &HeaderMap, action: &str, scope: &str) -> Result<(), ApiError> {
    let principal = super::auth::bearer(state, headers, ARM_RESOURCE)
        .await
        .map_err(|e| arm_unauthorized(e, headers))?;
    principal.require_arm(action, scope)
}

/// [`authorize`] for a request on one certificate.
/// A refused bearer token in ARM's words (the shared check speaks Key Vault's): a missing or
/// non-bearer header is `AuthenticationFailed`, a token nobody holds `InvalidAuthenticationToken`.
/// The challenge header is kept.
fn arm_unauthorized(mut e: ApiError, headers: &HeaderMap) -> ApiError {
    if e.status != StatusCode::UNAUTHORIZED {
        return e;
    }
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let is_bearer = value
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, rest)| scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty());
    let (code, message) = match value {
        None => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ),
        Some(_) if !is_bearer => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is not a Bearer token.",
        ),
        Some(_) => ("InvalidAuthenticationToken", "The access token is invalid."),
    };
    e.code = code.to_string();
    e.message = message.to_string();
    e
}

async fn authorize_on(
    state: &AppState,
    headers: &HeaderMap,
    action: &str,
    path: &(String, String, String, String),
) -> Result<(), ApiError> {
    let (sub, rg, dps, name) = path;
    authorize(state, headers, action, &scope(sub, rg, dps, Some(name))).await
}

fn check_dps(state: &AppState, dps: &str) -> Result<(), ApiError> {
    if dps.eq_ignore_ascii_case(&state.config.dps) {
        Ok(())
    } else {
        Err(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("provisioning service `{dps}` is not served here"),
        ))
    }
}

/// RFC 1123, as ARM writes these dates.
fn rfc1123(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

fn arm_etag(meta: &Meta) -> String {
    format!("\"{}\"", meta.etag)
}

/// A `CertificateResponse`.
fn certificate_json(path: &(String, String, String, String), ca: &ServiceCa, meta: &Meta) -> Value {
    use base64::Engine as _;
    let (sub, rg, dps, _) = path;
    let info = crate::pki::CertInfo::from_der(&ca.cert_der).ok();
    json!({
        "properties": {
            "subject": info.as_ref().map(|i| i.subject.clone()),
            "expiry": info.as_ref().map(|i| rfc1123(i.not_after)),
            "thumbprint": ca.thumbprint,
            "isVerified": ca.verified,
            "certificate": base64::engine::general_purpose::STANDARD.encode(&ca.cert_der),
            "created": rfc1123(meta.created),
            "updated": rfc1123(meta.updated),
        },
        "id": format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Devices/provisioningServices/{dps}/certificates/{}",
            ca.name
        ),
        "name": ca.name,
        "type": "Microsoft.Devices/provisioningServices/certificates",
        "etag": arm_etag(meta),
    })
}

fn read(b: &LocalBackend, name: &str) -> Result<(ServiceCa, Meta), ApiError> {
    let ca = b.ca(name).map_err(backend_error)?.ok_or_else(|| {
        arm_error(
            StatusCode::NOT_FOUND,
            "CertificateNotFound",
            format!("certificate `{name}` not found"),
        )
    })?;
    let meta = qd::ca_meta(b.store().conn(), name)
        .map_err(internal)?
        .ok_or_else(|| internal("certificate vanished"))?;
    Ok((ca, meta))
}

/// The etag rule of the steps that demand one (generateVerificationCode, verify, delete): the
/// If-Match header is required and must be the current etag (`*` matches any).
fn require_match(headers: &HeaderMap, meta: &Meta, name: &str) -> Result<(), ApiError> {
    match super::dps::if_match(headers)? {
        None => Err(arm_error(
            StatusCode::BAD_REQUEST,
            "PreconditionRequired",
            format!("If-Match with the etag of certificate `{name}` is required"),
        )),
        Some(Some(tag)) if tag != meta.etag => Err(arm_error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            format!("the etag in If-Match is not the current etag of certificate `{name}`"),
        )),
        Some(_) => Ok(()),
    }
}

fn certificate_of(body: &Bytes, field: &str) -> Result<Vec<u8>, ApiError> {
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    let text = parsed.pointer(field).and_then(Value::as_str).ok_or_else(|| {
        arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("{} is required", &field[1..].replace('/', ".")),
        )
    })?;
    super::dps::certificate_der(text, &field[1..].replace('/', "."))
        .map_err(|e| arm_error(StatusCode::BAD_REQUEST, "InvalidCertificate", e.message))
}

fn ok_with_etag(body: Value) -> Response {
    let etag = body.get("etag").and_then(Value::as_str).map(str::to_string);
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert("etag", v);
    }
    response
}

/// `GET .../certificates`: `{"value": [CertificateResponse]}`.
async fn list_certificates(
    State(state): State<Arc<AppState>>,
    Path((sub, rg, dps)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ArmError> {
    authorize(&state, &headers, action::READ, &scope(&sub, &rg, &dps, None)).await?;
    check_dps(&state, &dps)?;
    let value = state
        .read(move |b, _| {
            let mut out = Vec::new();
            for ca in b.cas().map_err(backend_error)? {
                let (ca, meta) = read(b, &ca.name)?;
                let path = (sub.clone(), rg.clone(), dps.clone(), ca.name.clone());
                out.push(certificate_json(&path, &ca, &meta));
            }
            Ok(out)
        })
        .await?;
    Ok(axum::Json(json!({"value": value})))
}

/// `GET .../certificates/{name}`.
async fn get_certificate(
    State(state): State<Arc<AppState>>,
    Path(path): CertPath,
    headers: HeaderMap,
) -> Result<Response, ArmError> {
    authorize_on(&state, &headers, action::READ, &path).await?;
    check_dps(&state, &path.2)?;
    let out = state
        .read(move |b, _| {
            let (ca, meta) = read(b, &path.3)?;
            Ok(certificate_json(&path, &ca, &meta))
        })
        .await?;
    Ok(ok_with_etag(out))
}

/// `PUT .../certificates/{name}`: uploads a CA certificate (unverified until proof of
/// possession). Creating needs no If-Match; replacing one that exists needs If-Match with its
/// etag (412 without it, or with another). A replaced certificate must be verified again.
async fn create_or_update_certificate(
    State(state): State<Arc<AppState>>,
    Path(path): CertPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ArmError> {
    authorize_on(&state, &headers, action::WRITE, &path).await?;
    check_dps(&state, &path.2)?;
    let der = certificate_of(&body, "/properties/certificate")?;
    let wanted = super::dps::if_match(&headers)?;
    let out = state
        .write(move |b, now| {
            let name = path.3.clone();
            let current = qd::ca_meta(b.store().conn(), &name).map_err(internal)?;
            if let (Some(Some(tag)), Some(meta)) = (&wanted, &current)
                && *tag != meta.etag
            {
                return Err(arm_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    format!("the etag in If-Match is not the current etag of certificate `{name}`"),
                ));
            }
            if wanted.is_none() && current.is_some() {
                // Azure: "If-Match ... Required to update an existing certificate"; a blind PUT
                // would reset a verified certificate's proof of possession.
                return Err(arm_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    format!("certificate `{name}` exists: If-Match with its etag is required to replace it"),
                ));
            }
            if wanted.is_some() && current.is_none() {
                return Err(arm_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    format!("certificate `{name}` does not exist, so If-Match cannot match"),
                ));
            }
            b.upload_ca(&name, &der, now).map_err(backend_error)?;
            let (ca, meta) = read(b, &name)?;
            Ok(certificate_json(&path, &ca, &meta))
        })
        .await?;
    Ok(ok_with_etag(out))
}

/// `POST .../certificates/{name}/generateVerificationCode` (If-Match required): a fresh nonce
/// for proof of possession, in `properties.verificationCode`.
async fn generate_verification_code(
    State(state): State<Arc<AppState>>,
    Path(path): CertPath,
    headers: HeaderMap,
) -> Result<Response, ArmError> {
    authorize_on(&state, &headers, action::GENERATE_CODE, &path).await?;
    check_dps(&state, &path.2)?;
    let out = state
        .write(move |b, now| {
            let (_, meta) = read(b, &path.3)?;
            require_match(&headers, &meta, &path.3)?;
            let code = b.verification_code(&path.3, now).map_err(backend_error)?;
            let (ca, meta) = read(b, &path.3)?;
            let mut body = certificate_json(&path, &ca, &meta);
            body["properties"]["verificationCode"] = json!(code);
            Ok(body)
        })
        .await?;
    Ok(ok_with_etag(out))
}

/// `POST .../certificates/{name}/verify` (If-Match required): checks the verification
/// certificate (CN = the code, signed by the CA's key) and marks the CA verified.
async fn verify_certificate(
    State(state): State<Arc<AppState>>,
    Path(path): CertPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ArmError> {
    authorize_on(&state, &headers, action::VERIFY, &path).await?;
    check_dps(&state, &path.2)?;
    let der = certificate_of(&body, "/certificate")?;
    let out = state
        .write(move |b, now| {
            let (_, meta) = read(b, &path.3)?;
            require_match(&headers, &meta, &path.3)?;
            b.verify_ca(&path.3, &der, now).map_err(backend_error)?;
            let (ca, meta) = read(b, &path.3)?;
            Ok(certificate_json(&path, &ca, &meta))
        })
        .await?;
    Ok(ok_with_etag(out))
}

/// `DELETE .../certificates/{name}` (If-Match required): 200. Groups referring to it no longer
/// accept what chains to it.
async fn delete_certificate(
    State(state): State<Arc<AppState>>,
    Path(path): CertPath,
    headers: HeaderMap,
) -> Result<StatusCode, ArmError> {
    authorize_on(&state, &headers, action::DELETE, &path).await?;
    check_dps(&state, &path.2)?;
    state
        .write(move |b, _| {
            let (_, meta) = read(b, &path.3)?;
            require_match(&headers, &meta, &path.3)?;
            b.delete_ca(&path.3).map_err(backend_error)
        })
        .await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc_1123() {
        let t = time::macros::datetime!(2017-10-12 19:23:50 UTC);
        assert_eq!(rfc1123(t), "Thu, 12 Oct 2017 19:23:50 GMT");
    }
}
