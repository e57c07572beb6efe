//! IoT Hub in `certroll serve` (azure-wire.md section 4): the registry (device identities with
//! X.509 thumbprints or CA auth, etags, bulk), direct methods answered by the store's simulated
//! devices, and the device-facing HTTPS endpoint (device-to-cloud messages) over mutual TLS.
//!
//! The registry query (`POST /devices/query`) answers device twins in pages with
//! `x-ms-continuation`, for `SELECT * FROM devices` and its `WHERE deviceId = '...'` and
//! `WHERE deviceId IN ['...', ...]` forms (what a client reading many identities at once asks);
//! other queries are refused with 400 naming what is served.
//!
//! One hub per name the plan gives, each at `{hub}.azure-devices.net`. Who gets in on the device
//! endpoint is the hub registry's rule (`HubRegistry::authenticate`: identity enabled, the
//! presented certificate's thumbprint registered, inside its validity; for CA auth, a chain to a
//! verified CA of the enrollment service with CN = device id). A direct method `reprovision`
//! runs the enrollment service's registration with the certificate the device holds.
//!
//! A simulated device is *online* when the store holds a certificate for it and the hub would
//! let it in with that certificate: a device the hub refuses cannot hold a connection, so it
//! cannot take a method (it goes back to DPS on its own, PRODUCT.md flow 7). A device admitted
//! on the device endpoint with another version of its certificate holds that one from then on
//! (`admit_device`): that is how serve's device follows what a delivery hook handed it.

use super::state::AppState;
use super::tls::ClientChain;
use super::{ApiError, Origin};
use crate::backend::local::LocalBackend;
use crate::backend::types::{DirectMethodCall, HubIdentity, Status};
use crate::backend::wire::{HUB_SUFFIX, hub_host, wire_time};
use crate::backend::{BackendError, EnrollmentService, HubRegistry};
use crate::store::queries_dps as qd;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use time::OffsetDateTime;

/// Most identities one bulk registry operation may carry (IoT Hub's limit).
pub const BULK_LIMIT: usize = 100;

/// The store's hub name of a hub host name (any port dropped), if it is a hub of this plan.
pub fn hub_name_of_host(state: &AppState, host: &str) -> Option<String> {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let name = host.to_ascii_lowercase().strip_suffix(HUB_SUFFIX)?.to_string();
    state.hubs.iter().find(|h| h.eq_ignore_ascii_case(&name)).cloned()
}

/// The hub a DPS record goes to when it names none: the plan's first hub.
pub fn default_hub(state: &AppState) -> Option<String> {
    state.hubs.first().cloned()
}

/// The routes of every hub of the plan; each handler serves the hub the request's Host names
/// ([`Origin::Hub`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/devices", get(get_devices).post(bulk_registry_operation))
        // The Node registry lists with `/devices/` (an empty device id).
        .route("/devices/", get(get_devices))
        .route("/devices/query", post(query_devices))
        .route(
            "/devices/{id}",
            get(get_identity)
                .put(create_or_update_identity)
                .delete(delete_identity),
        )
        .route("/twins/{id}", get(get_twin))
        .route("/twins/{id}/methods", post(invoke_device_method))
        .route("/devices/{id}/messages/events", post(send_device_event))
        .route("/devices/{id}/messages/devicebound", get(receive_device_bound))
        // IoT Hub's paths are case-insensitive; its REST reference spells this one `deviceBound`.
        .route("/devices/{id}/messages/deviceBound", get(receive_device_bound))
        .layer(axum::middleware::from_fn(super::auth::scope_path))
        .with_state(state)
}

/// The hub a request is for.
struct Hub(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Hub {
    type Rejection = HubError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Hub, HubError> {
        match parts.extensions.get::<Origin>() {
            Some(Origin::Hub(name)) => Ok(Hub(name.clone())),
            _ => Err(HubError(hub_error(
                StatusCode::NOT_FOUND,
                "IotHubNotFound",
                "this listener serves no IoT hub; use {hub}.azure-devices.net",
            ))),
        }
    }
}

// ---------------------------------------------------------------- errors

/// An error as IoT Hub renders it: `{"Message": "ErrorCode:Name;text", "ExceptionMessage": ...}`
/// with the `iothub-errorcode` header. `code` of the inner [`ApiError`] is the error code name.
pub struct HubError(pub ApiError);

impl From<ApiError> for HubError {
    fn from(e: ApiError) -> HubError {
        HubError(e)
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let e = self.0;
        // Errors from the shared layers (auth, the store lock) carry their own names; the
        // hub's name for a refused token is IotHubUnauthorizedAccess.
        let code = if e.status == StatusCode::UNAUTHORIZED {
            "IotHubUnauthorizedAccess".to_string()
        } else {
            e.code.clone()
        };
        let body = json!({
            "Message": format!("ErrorCode:{code};{}", e.message),
            "ExceptionMessage": format!("Tracking ID:{}-TimeStamp:{}", tracking_id(), wire_time(OffsetDateTime::now_utc())),
        });
        let mut response = (e.status, e.headers(), axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&code) {
            response.headers_mut().insert("iothub-errorcode", v);
        }
        response
    }
}

fn hub_error(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn bad_request(message: impl Into<String>) -> ApiError {
    hub_error(StatusCode::BAD_REQUEST, "ArgumentInvalid", message)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    hub_error(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", e.to_string())
}

fn not_found(id: &str) -> ApiError {
    hub_error(StatusCode::NOT_FOUND, "DeviceNotFound", id.to_string())
}

fn tracking_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = crate::pki::random_bytes(&mut bytes);
    crate::pki::hex_upper(&bytes).to_ascii_lowercase()
}

/// Checks the request's SAS token against the policies of `hub` (its canonical host).
fn auth(
    state: &AppState,
    hub: &str,
    headers: &HeaderMap,
    right: super::auth::SasRight,
) -> Result<(), ApiError> {
    super::auth::sas(state, headers, &hub_host(hub), right).map(|_| ())
}

// ---------------------------------------------------------------- registry

/// A `Device` as IoT Hub answers it.
fn device_json(identity: &HubIdentity, meta: &qd::Meta) -> Value {
    let ca = identity.auth_type == "certificateAuthority";
    let kept: Map<String, Value> = meta
        .hub_extra
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    json!({
        "deviceId": identity.device_id,
        "moduleId": null,
        "generationId": meta.created.unix_timestamp().to_string(),
        "etag": meta.etag,
        "connectionState": "Disconnected",
        "status": identity.status.as_str(),
        "statusReason": kept.get("statusReason").unwrap_or(&Value::Null),
        "connectionStateUpdatedTime": "0001-01-01T00:00:00Z",
        "statusUpdatedTime": wire_time(meta.updated),
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": {"primaryKey": null, "secondaryKey": null},
            "x509Thumbprint": {
                "primaryThumbprint": if ca { Value::Null } else { json!(identity.primary_thumbprint) },
                "secondaryThumbprint": if ca { Value::Null } else { json!(identity.secondary_thumbprint) },
            },
            "type": identity.auth_type,
        },
        "capabilities": kept.get("capabilities").cloned().unwrap_or_else(|| json!({"iotEdge": false})),
        "deviceScope": null,
        "parentScopes": [],
    })
}

/// The members of a `Device` certroll keeps as sent and does not act on (`capabilities`,
/// `statusReason`), as the JSON text of an object; None when they are IoT Hub's defaults
/// (`{"iotEdge": false}`, no reason), so the identities of a fleet that never set them keep
/// nothing. 400 `ArgumentInvalid` for a shape IoT Hub refuses.
fn hub_extra_of(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let mut kept: std::collections::BTreeMap<&str, &Value> = std::collections::BTreeMap::new();
    match body.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) => {
            match c.get("iotEdge") {
                None | Some(Value::Bool(_)) => {}
                Some(other) => {
                    return Err(bad_request(format!(
                        "capabilities.iotEdge must be true or false, not {}",
                        crate::error::snippet(&other.to_string())
                    )));
                }
            }
            let default = c.iter().all(|(k, v)| k == "iotEdge" && *v == Value::Bool(false));
            if !default {
                kept.insert("capabilities", &body["capabilities"]);
            }
        }
        Some(other) => {
            return Err(bad_request(format!(
                "capabilities must be an object ({{\"iotEdge\": true}}), not {}",
                crate::error::snippet(&other.to_string())
            )));
        }
    }
    match body.get("statusReason") {
        None | Some(Value::Null) => {}
        Some(reason @ Value::String(_)) => {
            kept.insert("statusReason", reason);
        }
        Some(other) => {
            return Err(bad_request(format!(
                "statusReason must be text, not {}",
                crate::error::snippet(&other.to_string())
            )));
        }
    }
    Ok((!kept.is_empty()).then(|| serde_json::to_string(&kept).unwrap_or_default()))
}

/// A device identity with its etag, times and twin (one statement).
fn read_identity(b: &LocalBackend, hub: &str, id: &str) -> Result<Option<(HubIdentity, qd::Meta)>, ApiError> {
    qd::hub_wire(b.store().conn(), hub, id).map_err(internal)
}

/// A thumbprint as the hub takes it: 40 (SHA-1) or 64 (SHA-256) hex digits, kept uppercase.
fn thumbprint(value: Option<&Value>, field: &str) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if matches!(s.len(), 40 | 64) && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(Some(s.to_ascii_uppercase()))
        }
        Some(other) => Err(bad_request(format!(
            "{field} must be 40 or 64 hex digits (a SHA-1 or SHA-256 thumbprint), not {other}"
        ))),
    }
}

/// IoT Hub's device id rule: 1 to 128 ASCII letters and digits and ``- : . + % _ # * ? ! ( ) ,
/// = @ ; $ '`` (Microsoft's `deviceId` documentation); 400 `ArgumentInvalid` naming the id.
fn check_device_id(id: &str) -> Result<(), ApiError> {
    const SPECIAL: &str = "-:.+%_#*?!(),=@;$'";
    if id.is_empty() {
        return Err(bad_request(
            "the device id is empty; IoT Hub takes 1 to 128 characters",
        ));
    }
    if id.chars().count() > 128 {
        return Err(bad_request(format!(
            "device id `{}` is longer than the 128 characters IoT Hub takes",
            crate::error::snippet(id)
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !SPECIAL.contains(c))
    {
        return Err(bad_request(format!(
            "device id `{}` holds {c:?}; IoT Hub takes ASCII letters, digits and {SPECIAL}",
            crate::error::snippet(id)
        )));
    }
    Ok(())
}

/// The identity a registry request describes (`deviceId` or bulk `id`). An update (`current`
/// given) without `authentication` keeps the identity's current authentication: IoT Hub would
/// put SAS keys of its own there, which certroll does not serve, and dropping the X.509
/// thumbprints of a device because a client changed only its status would lock it out.
fn identity_from(
    hub: &str,
    id: &str,
    body: &Map<String, Value>,
    current: Option<&HubIdentity>,
) -> Result<HubIdentity, ApiError> {
    check_device_id(id)?;
    let status = match body.get("status") {
        None | Some(Value::Null) => Status::Enabled,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("enabled") => Status::Enabled,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("disabled") => Status::Disabled,
        Some(other) => {
            return Err(bad_request(format!(
                "status must be `enabled` or `disabled`, not {other}"
            )));
        }
    };
    let auth = match (body.get("authentication").filter(|a| !a.is_null()), current) {
        (Some(a), _) if a.is_object() => a,
        (Some(other), _) => {
            return Err(bad_request(format!(
                "authentication must be an object, not {}",
                crate::error::snippet(&other.to_string())
            )));
        }
        (None, Some(current)) => {
            return Ok(HubIdentity {
                status,
                ..current.clone()
            });
        }
        (None, None) => {
            return Err(bad_request(
                "authentication is required when a device identity is created: certroll serves \
                 X.509 identities (selfSigned with thumbprints, or certificateAuthority)",
            ));
        }
    };
    let tps = auth.get("x509Thumbprint");
    let primary = thumbprint(tps.and_then(|t| t.get("primaryThumbprint")), "primaryThumbprint")?;
    let secondary = thumbprint(
        tps.and_then(|t| t.get("secondaryThumbprint")),
        "secondaryThumbprint",
    )?;
    let kind =
        auth.get("type")
            .and_then(Value::as_str)
            .unwrap_or(if primary.is_some() || secondary.is_some() {
                "selfSigned"
            } else {
                "sas"
            });
    let (auth_type, primary, secondary) = match kind {
        k if k.eq_ignore_ascii_case("selfSigned") => {
            if primary.is_none() && secondary.is_none() {
                return Err(bad_request(
                    "a selfSigned identity needs a primaryThumbprint or secondaryThumbprint",
                ));
            }
            ("selfSigned", primary, secondary)
        }
        k if k.eq_ignore_ascii_case("certificateAuthority") => ("certificateAuthority", None, None),
        other => {
            return Err(bad_request(format!(
                "authentication type `{other}` is not served by certroll: only selfSigned and certificateAuthority"
            )));
        }
    };
    Ok(HubIdentity {
        hub: hub.to_string(),
        device_id: id.to_string(),
        status,
        auth_type: auth_type.into(),
        primary_thumbprint: primary,
        secondary_thumbprint: secondary,
    })
}

/// Writes one identity under the hub's etag rules: no If-Match only creates (409
/// `DeviceAlreadyExists`); with If-Match the identity must exist (404) and match (412; `*` and
/// `"*"` match any).
fn put_identity(
    b: &mut LocalBackend,
    hub: &str,
    id: &str,
    body: &Map<String, Value>,
    wanted: &Option<Option<String>>,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    write_identity(b, hub, id, body, wanted, now)?;
    let (identity, meta) = read_identity(b, hub, id)?.ok_or_else(|| not_found(id))?;
    Ok(device_json(&identity, &meta))
}

/// [`put_identity`] without reading the identity back (a bulk import answers with errors only).
fn write_identity(
    b: &mut LocalBackend,
    hub: &str,
    id: &str,
    body: &Map<String, Value>,
    wanted: &Option<Option<String>>,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let current = read_identity(b, hub, id)?;
    write_identity_over(b, hub, id, body, wanted, current, now)
}

/// [`write_identity`] over `current`, the identity and its etag just read (None: no such device).
fn write_identity_over(
    b: &mut LocalBackend,
    hub: &str,
    id: &str,
    body: &Map<String, Value>,
    wanted: &Option<Option<String>>,
    current: Option<(HubIdentity, qd::Meta)>,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    match (wanted, &current) {
        (None, Some(_)) => {
            return Err(hub_error(
                StatusCode::CONFLICT,
                "DeviceAlreadyExists",
                format!("A device with ID '{id}' is already registered."),
            ));
        }
        (Some(_), None) => return Err(not_found(id)),
        (Some(Some(tag)), Some((_, meta))) if *tag != meta.etag => {
            return Err(hub_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                format!("the etag in If-Match is not the current etag of device '{id}'"),
            ));
        }
        _ => {}
    }
    let identity = identity_from(hub, id, body, current.as_ref().map(|(i, _)| i))?;
    // A write replaces the identity, these members included (IoT Hub's PUT): a client keeps
    // them by sending back what it read.
    let extra = hub_extra_of(body)?;
    qd::hub_put_wire(b.store().conn(), &identity, extra.as_deref(), now).map_err(internal)?;
    Ok(())
}

fn delete_identity_checked(
    b: &mut LocalBackend,
    hub: &str,
    id: &str,
    wanted: &Option<Option<String>>,
) -> Result<(), ApiError> {
    let Some((_, meta)) = read_identity(b, hub, id)? else {
        return Err(not_found(id));
    };
    if let Some(Some(tag)) = wanted
        && *tag != meta.etag
    {
        return Err(hub_error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            format!("the etag in If-Match is not the current etag of device '{id}'"),
        ));
    }
    b.delete_identity(hub, id).map_err(internal)
}

fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("the request body must be a JSON object")),
        Err(e) => Err(bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

fn with_etag(body: Value) -> Response {
    let etag = body
        .get("etag")
        .and_then(Value::as_str)
        .map(|e| format!("\"{e}\""));
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert("etag", v);
    }
    response
}

/// `GET /devices/{id}`: the identity; 404 `DeviceNotFound`.
async fn get_identity(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    auth(&state, &hub, &headers, super::auth::SasRight::RegistryRead)?;
    let found = state
        .read(move |b, _| {
            read_identity(b, &hub, &id)?
                .map(|(i, m)| device_json(&i, &m))
                .ok_or_else(|| not_found(&id))
        })
        .await?;
    Ok(with_etag(found))
}

/// `PUT /devices/{id}`: creates (no If-Match; 409 if it exists) or updates (If-Match).
async fn create_or_update_identity(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    auth(&state, &hub, &headers, super::auth::SasRight::RegistryWrite)?;
    let wanted = super::dps::if_match(&headers)?;
    let body = json_object(&body)?;
    match body.get("deviceId").and_then(Value::as_str) {
        Some(given) if given == id => {}
        Some(given) => {
            return Err(bad_request(format!(
                "deviceId `{given}` in the body is not `{id}` of the path"
            ))
            .into());
        }
        None => return Err(bad_request("deviceId is required").into()),
    }
    let out = state
        .write_checked(move |b, now| put_identity(b, &hub, &id, &body, &wanted, now))
        .await?;
    Ok(with_etag(out))
}

/// `DELETE /devices/{id}`: 204; 404 `DeviceNotFound`; 412 on a stale If-Match.
async fn delete_identity(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, HubError> {
    auth(&state, &hub, &headers, super::auth::SasRight::RegistryWrite)?;
    let wanted = super::dps::if_match(&headers)?;
    state
        .write_checked(move |b, _| delete_identity_checked(b, &hub, &id, &wanted))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `top` of a device list.
#[derive(serde::Deserialize)]
struct ListQuery {
    top: Option<usize>,
}

/// `GET /devices?top=N`: the hub's identities in id order (at most 1000, as IoT Hub).
async fn get_devices(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, HubError> {
    auth(&state, &hub, &headers, super::auth::SasRight::RegistryRead)?;
    let top = q.top.unwrap_or(1000).clamp(1, 1000);
    let out = state
        .read(move |b, _| {
            let page = qd::hub_devices_page(b.store().conn(), &hub, "", top).map_err(internal)?;
            let mut out = Vec::with_capacity(page.len());
            for listed in page {
                if let Some((identity, meta)) = read_identity(b, &hub, &listed.device_id)? {
                    out.push(device_json(&identity, &meta));
                }
            }
            Ok(Value::Array(out))
        })
        .await?;
    Ok(axum::Json(out))
}

/// Which devices a registry query asks for: None for all, else the ids named. Served:
/// `SELECT * FROM devices` optionally followed by `WHERE deviceId = 'id'` or
/// `WHERE deviceId IN ['a', 'b']`; keywords in any case, literals in single quotes.
fn parse_device_query(query: &str) -> Result<Option<Vec<String>>, String> {
    let refuse = || {
        format!(
            "query `{query}` is not served: certroll answers SELECT * FROM devices, optionally \
             WHERE deviceId = '...' or WHERE deviceId IN ['...', ...]"
        )
    };
    /// Takes `word` (any case) off the front of `rest`, after spaces.
    fn keyword(word: &str, rest: &mut &str) -> bool {
        let r = rest.trim_start();
        match r.get(..word.len()) {
            Some(head) if head.eq_ignore_ascii_case(word) => {
                *rest = &r[word.len()..];
                true
            }
            _ => false,
        }
    }
    /// Takes a single-quoted literal off the front of `rest`, after spaces.
    fn literal(rest: &mut &str) -> Option<String> {
        let r = rest.trim_start().strip_prefix('\'')?;
        let end = r.find('\'')?;
        let out = r[..end].to_string();
        *rest = &r[end + 1..];
        Some(out)
    }
    let mut rest = query.trim();
    for word in ["SELECT", "*", "FROM", "devices"] {
        if !keyword(word, &mut rest) {
            return Err(refuse());
        }
    }
    if rest.trim().is_empty() {
        return Ok(None);
    }
    if !keyword("WHERE", &mut rest) || !keyword("deviceId", &mut rest) {
        return Err(refuse());
    }
    let ids = if keyword("=", &mut rest) {
        vec![literal(&mut rest).ok_or_else(refuse)?]
    } else if keyword("IN", &mut rest) && keyword("[", &mut rest) {
        let mut ids = Vec::new();
        loop {
            ids.push(literal(&mut rest).ok_or_else(refuse)?);
            if keyword(",", &mut rest) {
                continue;
            }
            if keyword("]", &mut rest) {
                break;
            }
            return Err(refuse());
        }
        ids
    } else {
        return Err(refuse());
    };
    if !rest.trim().is_empty() {
        return Err(refuse());
    }
    Ok(Some(ids))
}

/// `POST /devices/query`: the device twins a query asks for, in id order, in pages of
/// `x-ms-max-item-count` (default 100, at most 1000) continued by `x-ms-continuation`.
async fn query_devices(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    auth(&state, &hub, &headers, super::auth::SasRight::RegistryRead)?;
    let spec = json_object(&body)?;
    let query = spec
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("query is required"))?;
    let wanted = parse_device_query(query).map_err(bad_request)?;
    let size = match headers.get("x-ms-max-item-count") {
        None => 100,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| bad_request("x-ms-max-item-count must be a positive integer"))?
            .min(1000),
    };
    let after = match headers.get("x-ms-continuation") {
        None => String::new(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(super::dps::continuation_decode)
            .ok_or_else(|| bad_request("x-ms-continuation is not a token this hub handed out"))?,
    };
    let (twins, next) = state
        .read(move |b, _| {
            let conn = b.store().conn();
            // One more than the page, to know whether another follows.
            let ids: Vec<String> = match wanted {
                None => qd::hub_devices_page(conn, &hub, &after, size + 1)
                    .map_err(internal)?
                    .into_iter()
                    .map(|i| i.device_id)
                    .collect(),
                Some(mut ids) => {
                    ids.sort();
                    ids.dedup();
                    ids.into_iter().filter(|id| *id > after).collect()
                }
            };
            // The identities only: the page is rendered after the store is released.
            let mut found: Vec<(HubIdentity, qd::Meta)> = Vec::new();
            let mut next = None;
            for id in ids {
                if let Some(one) = read_identity(b, &hub, &id)? {
                    if found.len() == size {
                        next = found.last().map(|(i, _)| i.device_id.clone());
                        break;
                    }
                    found.push(one);
                }
            }
            Ok((found, next))
        })
        .await?;
    let empty = json!({});
    let twins: Vec<TwinWire<'_>> = twins
        .iter()
        .map(|(identity, meta)| TwinWire::of(identity, meta, &empty))
        .collect();
    let body = serde_json::to_vec(&twins).map_err(internal)?;
    let mut response = (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    let h = response.headers_mut();
    h.insert("x-ms-item-type", HeaderValue::from_static("twin"));
    if let Some(token) = next.and_then(|t| HeaderValue::from_str(&super::dps::continuation(&t)).ok()) {
        h.insert("x-ms-continuation", token);
    }
    Ok(response)
}

/// `POST /devices`: bulk registry operation (`ExportImportDevice` array, at most 100); each
/// entry on its own. 200 when all succeeded, 400 otherwise, with `BulkRegistryOperationResult`.
async fn bulk_registry_operation(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    auth(&state, &hub, &headers, super::auth::SasRight::RegistryWrite)?;
    let items: Vec<Value> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => items,
        Ok(_) => return Err(bad_request("the request body must be a JSON array of devices").into()),
        Err(e) => return Err(bad_request(format!("the request body is not valid JSON: {e}")).into()),
    };
    if items.is_empty() || items.len() > BULK_LIMIT {
        return Err(bad_request(format!(
            "a bulk operation takes 1 to {BULK_LIMIT} devices; this one has {}",
            items.len()
        ))
        .into());
    }
    let result = state
        .write_checked(move |b, now| {
            // Every entry's shape is checked before anything is written: a refused request
            // wrote nothing (it runs without a savepoint of its own).
            let mut entries = Vec::with_capacity(items.len());
            for item in &items {
                let Some(record) = item.as_object() else {
                    return Err(bad_request("each device must be a JSON object"));
                };
                let id = record
                    .get("id")
                    .or_else(|| record.get("deviceId"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_request("each device needs its id"))?
                    .to_string();
                entries.push((record, id));
            }
            let mut errors = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (record, id) in entries {
                let mode = record
                    .get("importMode")
                    .and_then(Value::as_str)
                    .unwrap_or("createOrUpdate");
                let etag = record
                    .get("eTag")
                    .or_else(|| record.get("etag"))
                    .and_then(Value::as_str)
                    .map(|e| e.trim_matches('"').to_string());
                let outcome = if !seen.insert(id.clone()) {
                    Err(hub_error(
                        StatusCode::BAD_REQUEST,
                        "DeviceDefinedMultipleTimes",
                        format!("device '{id}' appears more than once"),
                    ))
                } else {
                    let current = read_identity(b, &hub, &id)?;
                    // The SDKs differ in case (`deleteIfMatchETag`, `DeleteIfMatchETag`).
                    match mode.to_ascii_lowercase().as_str() {
                        "create" => write_identity_over(b, &hub, &id, record, &None, current, now),
                        "update" | "createorupdate" => {
                            let wanted = if current.is_some() { Some(None) } else { None };
                            write_identity_over(b, &hub, &id, record, &wanted, current, now)
                        }
                        "updateifmatchetag" => {
                            let wanted = Some(Some(etag.unwrap_or_default()));
                            write_identity_over(b, &hub, &id, record, &wanted, current, now)
                        }
                        "delete" => delete_identity_checked(b, &hub, &id, &None),
                        "deleteifmatchetag" => {
                            delete_identity_checked(b, &hub, &id, &Some(Some(etag.unwrap_or_default())))
                        }
                        other => Err(bad_request(format!("importMode `{other}` is not served"))),
                    }
                };
                if let Err(e) = outcome {
                    if e.status.is_server_error() {
                        return Err(e);
                    }
                    errors.push(json!({
                        "deviceId": id,
                        "errorCode": e.code,
                        "errorStatus": e.message,
                        "moduleId": null,
                        "operation": mode,
                    }));
                }
            }
            Ok(errors)
        })
        .await?;
    let status = if result.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = json!({"isSuccessful": result.is_empty(), "errors": result, "warnings": []});
    Ok((status, axum::Json(body)).into_response())
}

/// `GET /twins/{id}`: the device's twin (the tags and desired properties it holds; reset to
/// empty by a `reset` reprovisioning).
async fn get_twin(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Path(id): Path<String>,
    headers: HeaderMap,
    chain: Option<axum::Extension<ClientChain>>,
) -> Result<axum::Json<Value>, HubError> {
    // A device reads its own twin with the certificate of its TLS handshake and no token (the
    // HTTP device SDK has no twin call, so this is IoT Hub's REST form); with a token it is
    // the service's read.
    let device_chain = match chain {
        Some(axum::Extension(ClientChain(c)))
            if !c.is_empty() && !headers.contains_key(axum::http::header::AUTHORIZATION) =>
        {
            Some(c)
        }
        _ => {
            auth(&state, &hub, &headers, super::auth::SasRight::RegistryRead)?;
            None
        }
    };
    if let Some(chain) = device_chain {
        admit_device(&state, hub.clone(), id.clone(), chain).await?;
    }
    let twin = state
        .read(move |b, _| {
            let (identity, meta) = read_identity(b, &hub, &id)?.ok_or_else(|| not_found(&id))?;
            Ok(twin_json(&identity, &meta))
        })
        .await?;
    Ok(axum::Json(twin))
}

/// A device twin as IoT Hub answers it. Its members are declared in the order a JSON tree
/// (whose map is sorted) writes them, so its text is the text the tree it replaced rendered;
/// a query page is written straight from these, without a tree per twin.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TwinWire<'a> {
    authentication_type: &'a str,
    #[serde(serialize_with = "capabilities_or_default")]
    capabilities: Option<&'a RawValue>,
    cloud_to_device_message_count: u32,
    connection_state: &'static str,
    device_etag: &'a str,
    device_id: &'a str,
    etag: &'a str,
    last_activity_time: &'static str,
    properties: PropertiesWire<'a>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<&'a RawValue>,
    status_update_time: String,
    tags: &'a Value,
    version: u32,
    x509_thumbprint: ThumbprintsWire<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CapabilitiesWire {
    iot_edge: bool,
}

/// Kept `capabilities` as sent, IoT Hub's default (`{"iotEdge": false}`) where none are kept.
fn capabilities_or_default<S: serde::Serializer>(kept: &Option<&RawValue>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match kept {
        Some(raw) => raw.serialize(s),
        None => CapabilitiesWire { iot_edge: false }.serialize(s),
    }
}

/// The members of a device identity kept as sent ([`qd::Meta::hub_extra`]), borrowed from their
/// text: only an identity that has them pays for reading them.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HubExtraRead<'a> {
    #[serde(default, borrow)]
    capabilities: Option<&'a RawValue>,
    #[serde(default, borrow)]
    status_reason: Option<&'a RawValue>,
}

#[derive(serde::Serialize)]
struct PropertiesWire<'a> {
    desired: &'a Value,
    reported: &'a Value,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ThumbprintsWire<'a> {
    primary_thumbprint: Option<&'a str>,
    secondary_thumbprint: Option<&'a str>,
}

impl<'a> TwinWire<'a> {
    /// The twin of `identity`, its tags and properties from the stored twin (`meta.extra`);
    /// `empty` (an empty JSON object) stands for each one it lacks.
    fn of(identity: &'a HubIdentity, meta: &'a qd::Meta, empty: &'a Value) -> TwinWire<'a> {
        let stored = meta.extra.as_ref();
        let at = |pointer: &str| stored.and_then(|s| s.pointer(pointer)).unwrap_or(empty);
        let kept: HubExtraRead<'a> = meta
            .hub_extra
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        TwinWire {
            authentication_type: &identity.auth_type,
            capabilities: kept.capabilities,
            cloud_to_device_message_count: 0,
            connection_state: "Disconnected",
            device_etag: &meta.etag,
            device_id: &identity.device_id,
            etag: &meta.etag,
            last_activity_time: "0001-01-01T00:00:00Z",
            properties: PropertiesWire {
                desired: at("/properties/desired"),
                reported: at("/properties/reported"),
            },
            status: identity.status.as_str(),
            status_reason: kept.status_reason,
            status_update_time: wire_time(meta.updated),
            tags: stored.and_then(|s| s.get("tags")).unwrap_or(empty),
            version: 1,
            x509_thumbprint: ThumbprintsWire {
                primary_thumbprint: identity.primary_thumbprint.as_deref(),
                secondary_thumbprint: identity.secondary_thumbprint.as_deref(),
            },
        }
    }
}

fn twin_json(identity: &HubIdentity, meta: &qd::Meta) -> Value {
    let empty = json!({});
    serde_json::to_value(TwinWire::of(identity, meta, &empty)).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- direct methods

/// IoT Hub's answer to a failed method call: the backend's own code (`DeviceNotFound`,
/// `DeviceNotOnline`) and status where it has them.
fn method_error(e: BackendError) -> ApiError {
    match e {
        BackendError::Remote {
            status: Some(status),
            code,
            message,
            ..
        } => hub_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &code,
            message,
        ),
        other => internal(other),
    }
}

/// `POST /twins/{id}/methods`: invokes a direct method. HTTP 200 with the device's own status
/// and payload; 404 `DeviceNotFound` for an id the hub does not know, 404 `DeviceNotOnline` for
/// a device that is not connected (see the module comment).
async fn invoke_device_method(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, HubError> {
    auth(&state, &hub, &headers, super::auth::SasRight::ServiceConnect)?;
    let body = json_object(&body)?;
    let method = body
        .get("methodName")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad_request("methodName is required"))?
        .to_string();
    for field in ["responseTimeoutInSeconds", "connectTimeoutInSeconds"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null())
            && v.as_u64().is_none_or(|n| n > 300)
        {
            return Err(bad_request(format!("{field} must be a whole number of seconds up to 300")).into());
        }
    }
    let call = DirectMethodCall {
        method_name: method,
        payload: body.get("payload").cloned().unwrap_or(Value::Null),
        response_timeout_secs: body
            .get("responseTimeoutInSeconds")
            .and_then(Value::as_u64)
            .map_or(30, |n| n as u32),
    };
    let answer = state
        .write(move |b, now| b.invoke_method(&hub, &id, &call, now).map_err(method_error))
        .await?;
    Ok(axum::Json(
        json!({"status": answer.status, "payload": answer.payload}),
    ))
}

// ---------------------------------------------------------------- device-facing endpoint

/// Admits a device on the device endpoint exactly as the hub would, with the chain from its TLS
/// handshake; 401 `IotHubUnauthorizedAccess` otherwise.
fn admit(
    b: &LocalBackend,
    hub: &str,
    id: &str,
    chain: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let unauthorized = |why: String| hub_error(StatusCode::UNAUTHORIZED, "IotHubUnauthorizedAccess", why);
    let Some(leaf) = chain.first() else {
        return Err(unauthorized("no client certificate was presented".into()));
    };
    let identity = b.identity(hub, id).map_err(internal)?;
    if identity
        .as_ref()
        .is_some_and(|i| i.auth_type == "certificateAuthority")
    {
        if identity.as_ref().is_some_and(|i| i.status != Status::Enabled) {
            return Err(unauthorized(format!("device `{id}` is disabled in hub `{hub}`")));
        }
        let cn = crate::pki::inspect::common_name(leaf).ok().flatten();
        if cn.as_deref() != Some(id) {
            let shown = match &cn {
                Some(cn) => format!("CN `{}`", crate::error::snippet(cn)),
                None => "subject (no CN)".to_string(),
            };
            return Err(unauthorized(format!(
                "the certificate's {shown} is not the device id `{id}`"
            )));
        }
        let cas = b.cas().map_err(internal)?;
        let chained = cas
            .iter()
            .filter(|c| c.verified)
            .any(|c| crate::backend::registration::chains_to(chain, &c.cert_der, now).is_ok());
        return if chained {
            Ok(())
        } else {
            Err(unauthorized(
                "the certificate does not chain to a verified CA".into(),
            ))
        };
    }
    b.authenticate(hub, id, leaf, now)
        .map_err(internal)?
        .map_err(unauthorized)
}

/// `POST /devices/{id}/messages/events`: a device-to-cloud message from a device the hub admits
/// with the certificate of its TLS handshake; 204.
async fn send_device_event(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Path(id): Path<String>,
    chain: Option<axum::Extension<ClientChain>>,
    _body: Bytes,
) -> Result<StatusCode, HubError> {
    let chain = chain.map(|axum::Extension(ClientChain(c))| c).unwrap_or_default();
    admit_device(&state, hub, id, chain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /devices/{id}/messages/devicebound`: no cloud-to-device message is ever waiting; 204
/// for an admitted device.
async fn receive_device_bound(
    State(state): State<Arc<AppState>>,
    Hub(hub): Hub,
    Path(id): Path<String>,
    chain: Option<axum::Extension<ClientChain>>,
) -> Result<StatusCode, HubError> {
    let chain = chain.map(|axum::Extension(ClientChain(c))| c).unwrap_or_default();
    admit_device(&state, hub, id, chain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Admits a device on the device endpoint ([`admit`]). One admitted with another version of its
/// certificate than serve's simulated device holds holds that one from now on: the handshake
/// proved it holds the key, so a delivery hook that connects the device to its hub with its new
/// certificate is how serve's device learns what the hook delivered (trial az8 F5: it kept the
/// old one, and `reprovision` registered with that).
async fn admit_device(
    state: &AppState,
    hub: String,
    id: String,
    chain: Vec<Vec<u8>>,
) -> Result<(), ApiError> {
    let leaf = chain.first().cloned().unwrap_or_default();
    let cert_name = crate::backend::types::device_cert_name(&id);
    let (name, device) = (cert_name.clone(), id.clone());
    let other = state
        .read(move |b, now| {
            admit(b, &hub, &device, &chain, now)?;
            b.holds_other(&device, &name, &leaf)
                .map_err(internal)
                .map(|o| o.then_some(leaf))
        })
        .await?;
    if let Some(leaf) = other {
        state
            .write(move |b, _| {
                b.hold_presented(&id, &cert_name, &leaf, None, None)
                    .map_err(internal)
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_device_query;

    #[test]
    fn the_registry_query_forms_a_client_sends_are_read_and_others_refused() {
        assert_eq!(parse_device_query("SELECT * FROM devices"), Ok(None));
        assert_eq!(parse_device_query("select * from Devices "), Ok(None));
        assert_eq!(
            parse_device_query("SELECT * FROM devices WHERE deviceId = 'd-1'"),
            Ok(Some(vec!["d-1".to_string()]))
        );
        assert_eq!(
            parse_device_query("SELECT * FROM devices WHERE deviceId IN ['a', 'b.c:d','e']"),
            Ok(Some(vec!["a".into(), "b.c:d".into(), "e".into()]))
        );
        for refused in [
            "SELECT * FROM devices WHERE tags.site = 'x'",
            "SELECT * FROM devices.modules",
            "SELECT deviceId FROM devices",
            "SELECT * FROM devices WHERE deviceId IN ['a' 'b']",
            "SELECT * FROM devices WHERE deviceId IN []",
            "SELECT * FROM devices WHERE deviceId = 'a' AND status = 'enabled'",
        ] {
            let e = parse_device_query(refused).unwrap_err();
            assert!(e.contains("is not served"), "{refused}: {e}");
        }
    }

    /// The twin as serve wrote it from a JSON tree before it was typed: the same text, member
    /// order included, with and without a stored twin (tags, desired and reported properties).
    #[test]
    fn a_twin_is_written_as_the_json_tree_it_replaced_wrote_it() {
        use super::{HubIdentity, TwinWire, qd, wire_time};
        use crate::backend::types::Status;
        use serde_json::{Value, json};
        let tree = |identity: &HubIdentity, meta: &qd::Meta| {
            let stored = meta.extra.clone().unwrap_or_else(|| json!({}));
            let kept: Value = meta
                .hub_extra
                .as_deref()
                .map_or_else(|| json!({}), |t| serde_json::from_str(t).unwrap());
            let mut tree = json!({
                "deviceId": identity.device_id,
                "etag": meta.etag,
                "deviceEtag": meta.etag,
                "version": 1,
                "status": identity.status.as_str(),
                "statusUpdateTime": wire_time(meta.updated),
                "connectionState": "Disconnected",
                "lastActivityTime": "0001-01-01T00:00:00Z",
                "cloudToDeviceMessageCount": 0,
                "capabilities": kept.get("capabilities").cloned().unwrap_or_else(|| json!({"iotEdge": false})),
                "authenticationType": identity.auth_type,
                "x509Thumbprint": {
                    "primaryThumbprint": identity.primary_thumbprint,
                    "secondaryThumbprint": identity.secondary_thumbprint,
                },
                "tags": stored.get("tags").cloned().unwrap_or_else(|| json!({})),
                "properties": {
                    "desired": stored.pointer("/properties/desired").cloned().unwrap_or_else(|| json!({})),
                    "reported": stored.pointer("/properties/reported").cloned().unwrap_or_else(|| json!({})),
                },
            });
            if let Some(reason) = kept.get("statusReason") {
                tree["statusReason"] = reason.clone();
            }
            tree
        };
        let at = time::macros::datetime!(2026-12-01 10:20:30.123 UTC);
        let identity = HubIdentity {
            hub: "h".into(),
            device_id: "d-1\"quoted\"".into(),
            status: Status::Disabled,
            auth_type: "selfSigned".into(),
            primary_thumbprint: Some("AA".repeat(20)),
            secondary_thumbprint: None,
        };
        let stored = [
            None,
            Some(json!({"tags": {"site": "x", "a": [1, 2]}, "properties": {"desired": {"b": 1, "a": null}}})),
            Some(json!({"properties": {"reported": {"r": "é\u{1}"}}})),
            Some(json!(["not", "an object"])),
        ];
        let empty = json!({});
        let kept = [
            None,
            Some(r#"{"capabilities":{"iotEdge":true},"statusReason":"retired \"x\""}"#),
            Some(r#"{"statusReason":"é"}"#),
        ];
        for (extra, hub_extra) in stored.into_iter().flat_map(|s| kept.map(move |k| (s.clone(), k))) {
            let meta = qd::Meta {
                etag: "\"0a1b\"".into(),
                created: at,
                updated: at,
                extra,
                hub_extra: hub_extra.map(str::to_string),
            };
            let typed = serde_json::to_string(&TwinWire::of(&identity, &meta, &empty)).unwrap();
            let expected = serde_json::to_string(&tree(&identity, &meta)).unwrap();
            assert_eq!(typed, expected);
            assert_eq!(super::twin_json(&identity, &meta), tree(&identity, &meta));
            let _: Value = serde_json::from_str(&typed).unwrap();
        }
    }
}
