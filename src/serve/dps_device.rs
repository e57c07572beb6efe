//! DPS device registration over mutual TLS (azure-wire.md section 3.1; swagger `device.json`):
//! a device presents its certificate chain in the TLS handshake, `PUT`s its registration and
//! polls the operation until it is `assigned`, `failed` or `disabled`.
//!
//! The decision is the enrollment service's own (`LocalBackend::register_attested`, which runs
//! `backend::registration::decide`: disabled enrollments first, then the individual enrollment's
//! slots, then the groups' chains, and the reprovision policies), and it records every attempt of
//! an authenticated device in the registration state (`assigned`, or `disabled` by a disabled
//! enrollment that holds its certificate). A certificate no enrollment accepts fails attestation:
//! 401 at once, nothing recorded, as DPS does. This module only carries the chain from TLS to that call and the
//! result back in DPS's shapes, so another front (MQTT) can reuse [`register`] as is.
//!
//! The decision is taken when the device `PUT`s; the operation id names the registration record
//! that attempt wrote (its etag), so polling needs no memory in the server and survives a
//! restart. A later attempt supersedes the operation (404).

use super::ApiError;
use super::dps::{DpsError, certificate_info, dps_error};
use super::state::AppState;
use super::tls::ClientChain;
use crate::backend::EnrollmentService;
use crate::backend::local::LocalBackend;
use crate::backend::types::{RegistrationRequest, RegistrationState};
use crate::backend::wire::registration_json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;

/// Seconds a device is told to wait before polling its operation.
const RETRY_AFTER_SECONDS: u32 = 1;

/// The device registration routes (on `global.azure-devices-provisioning.net` and on the DPS
/// host).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/{scope}/registrations/{id}/register", put(register_device))
        .route(
            "/{scope}/registrations/{id}/operations/{operation}",
            get(operation_status_lookup),
        )
        .with_state(state)
}

/// Runs one registration with the chain the device presented (leaf first) and returns the
/// registration state it recorded (with its etag). The enrollment service decides. A chain that
/// authenticates the device to no enrollment (attestation failed) is DPS's 401 (`errorCode`
/// 401002, the reason as message) and records nothing: the registration record belongs to the
/// device, and whoever holds a revoked or superseded certificate is not that device.
pub fn register(
    b: &mut LocalBackend,
    registration_id: &str,
    chain: Vec<Vec<u8>>,
    now: OffsetDateTime,
) -> Result<RegistrationState, ApiError> {
    let request = RegistrationRequest {
        registration_id: registration_id.to_string(),
        chain,
    };
    let leaf = request.chain.first().cloned().unwrap_or_default();
    b.register_attested(&request, now)
        .map_err(|e| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()))?
        .map_err(|reason| dps_error(StatusCode::UNAUTHORIZED, 2, reason))?;
    // Read back: the answer carries the record's etag (the operation id), as stored.
    let state = b
        .registration(registration_id)
        .map_err(|e| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()))?
        .ok_or_else(|| {
            dps_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                1,
                "the registration was not recorded",
            )
        })?;
    // The device holds what it presented, assigned or refused by a disabled enrollment (the
    // handshake proved it holds the key): serve's simulated device answers direct methods
    // (delivery, reprovision) with it from here on. A refused attempt counts too: a device
    // a hook handed its new certificate keeps it, and registers with it when asked again
    // (trial az8 F5: it went back to the old one, so `reprovision` registered that again).
    b.hold_presented(
        registration_id,
        &crate::backend::types::device_cert_name(registration_id),
        &leaf,
        state.enrollment_kind.as_deref(),
        state.enrollment_name.as_deref(),
    )
    .map_err(|e| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()))?;
    Ok(state)
}

/// The ID scope of a DPS: `0ne` and eight hex digits, as DPS writes them, derived from its name
/// so that it stays the same across restarts.
pub fn id_scope(dps: &str) -> String {
    let digest = crate::pki::sha256_thumbprint(dps.as_bytes());
    format!("0ne{}", &digest[..8])
}

fn operation_id(state: &RegistrationState) -> String {
    format!("4.{}", state.etag.as_deref().unwrap_or_default())
}

fn check_scope(state: &AppState, scope: &str) -> Result<(), ApiError> {
    if scope.eq_ignore_ascii_case(&id_scope(&state.config.dps)) {
        Ok(())
    } else {
        Err(dps_error(
            StatusCode::NOT_FOUND,
            1,
            format!("`{scope}` is not the ID scope of this DPS"),
        ))
    }
}

fn client_chain(chain: Option<axum::Extension<ClientChain>>) -> Result<Vec<Vec<u8>>, ApiError> {
    match chain {
        Some(axum::Extension(ClientChain(c))) if !c.is_empty() => Ok(c),
        _ => Err(dps_error(
            StatusCode::UNAUTHORIZED,
            2,
            "X.509 attestation needs the device's certificate in the TLS handshake; none was presented",
        )),
    }
}

/// `RegistrationOperationStatus` of a finished attempt, as the device sees it.
fn operation_json(state: &RegistrationState, leaf: Option<&[u8]>) -> Value {
    let mut registration = registration_json(state);
    if state.status != "assigned"
        && let Some(r) = registration.as_object_mut()
    {
        // The device is told where it stands now, not where it was assigned before.
        r.remove("assignedHub");
        r.remove("deviceId");
    }
    let mut x509 = serde_json::Map::new();
    if let Some(leaf) = leaf {
        x509.insert("certificateInfo".into(), certificate_info(leaf));
    }
    if state.status == "assigned" && state.enrollment_kind.as_deref() == Some("group") {
        x509.insert("enrollmentGroupId".into(), json!(state.enrollment_name));
    }
    if let Some(r) = registration.as_object_mut() {
        r.insert("x509".into(), Value::Object(x509));
    }
    json!({
        "operationId": operation_id(state),
        "status": state.status,
        "registrationState": registration,
    })
}

/// `PUT /{idScope}/registrations/{registrationId}/register`: the device's registration with the
/// chain from its TLS handshake. 202 `assigning` with the operation id and `retry-after`; the
/// outcome is read by polling. 401 when no client certificate was presented.
async fn register_device(
    State(state): State<Arc<AppState>>,
    Path((scope, id)): Path<(String, String)>,
    chain: Option<axum::Extension<ClientChain>>,
    body: Bytes,
) -> Result<Response, DpsError> {
    check_scope(&state, &scope)?;
    let chain = client_chain(chain)?;
    if !body.is_empty() {
        let parsed: Value = serde_json::from_slice(&body).map_err(|e| {
            dps_error(
                StatusCode::BAD_REQUEST,
                4,
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        match parsed.get("registrationId").and_then(Value::as_str) {
            Some(given) if given != id => {
                return Err(dps_error(
                    StatusCode::BAD_REQUEST,
                    4,
                    format!("registrationId `{given}` in the body is not `{id}` of the path"),
                )
                .into());
            }
            _ => {}
        }
    }
    // A device authenticates as the registration id its certificate names (X.509 attestation:
    // the leaf's CN). Presenting another device's certificate is refused at the door, before
    // anything is recorded, so no device can touch another's registration state.
    let cn = chain
        .first()
        .and_then(|leaf| crate::pki::inspect::common_name(leaf).ok().flatten());
    if cn.as_deref() != Some(id.as_str()) {
        return Err(dps_error(
            StatusCode::UNAUTHORIZED,
            2,
            format!(
                "the client certificate's CN {} is not registration id `{}`",
                cn.map_or("(none)".to_string(), |cn| format!(
                    "`{}`",
                    crate::error::snippet(&cn)
                )),
                crate::error::snippet(&id)
            ),
        )
        .into());
    }
    let recorded = state.write(move |b, now| register(b, &id, chain, now)).await?;
    let body = json!({"operationId": operation_id(&recorded), "status": "assigning"});
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(RETRY_AFTER_SECONDS));
    Ok(response)
}

/// `GET /{idScope}/registrations/{registrationId}/operations/{operationId}`: 200 with the
/// attempt's outcome (`assigned` with the registration state, or `failed`/`disabled` with DPS's
/// error code and message); 404 for an operation this service did not hand out or that a later
/// attempt superseded.
async fn operation_status_lookup(
    State(state): State<Arc<AppState>>,
    Path((scope, id, operation)): Path<(String, String, String)>,
    chain: Option<axum::Extension<ClientChain>>,
    _headers: HeaderMap,
) -> Result<Response, DpsError> {
    check_scope(&state, &scope)?;
    let chain = client_chain(chain)?;
    let found = state
        .read(move |b, _| {
            b.registration(&id)
                .map_err(|e| dps_error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()))
        })
        .await?;
    match found {
        Some(r) if operation_id(&r) == operation => Ok((
            StatusCode::OK,
            axum::Json(operation_json(&r, chain.first().map(Vec::as_slice))),
        )
            .into_response()),
        _ => Err(dps_error(
            StatusCode::NOT_FOUND,
            1,
            format!("operation `{operation}` not found"),
        )
        .into()),
    }
}
