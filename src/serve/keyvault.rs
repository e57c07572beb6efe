//! Key Vault's certificates data plane (REST 7.x; any `api-version` is accepted), with the
//! certificate-backed keys and secrets and key signing: the routes of azure-wire.md table 1.5
//! over the vault operations of `ops::vault` and the `Vault` backend.
//!
//! Every request passes the challenge first: without `Authorization` it is answered 401 before
//! its body is read (the SDKs' first request is bodiless on purpose). Every handler then checks
//! the principal's certificate permission and answers Key Vault's shapes: ids carry the host and
//! port the request came to, versions are 32 hex characters, times are Unix seconds, errors are
//! `{"error":{"code","message"}}`. Handlers parse and shape; the rules are the ops'.

use super::ApiError;
use super::auth::{self, Principal};
use super::state::AppState;
use crate::backend::BackendError;
use crate::backend::Vault as _;
use crate::backend::local::LocalBackend;
use crate::backend::types::{PendingCertificate, Tags, VaultVersion};
use crate::ops::vault::{self as vops, lifecycle, pending, settings, transfer};
use crate::plan::CertificatePermission as Perm;
use crate::store::queries_vault as qv;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{StatusCode, header, request::Parts};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// Key Vault's largest page (`maxresults` is capped here).
pub const MAX_PAGE: usize = 25;
/// Days a deleted certificate stays recoverable (Key Vault's default).
const RECOVERABLE_DAYS: u32 = lifecycle::DEFAULT_RECOVERY_DAYS;

type Shared = State<Arc<AppState>>;
type Answer = Result<Json<Value>, ApiError>;
type Params = Query<HashMap<String, String>>;

/// The Key Vault router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/certificates", get(list_certificates))
        .route(
            "/certificates/contacts",
            get(get_contacts).put(set_contacts).delete(delete_contacts),
        )
        .route("/certificates/issuers", get(list_issuers))
        .route(
            "/certificates/issuers/{issuer}",
            get(get_issuer)
                .put(set_issuer)
                .patch(set_issuer)
                .delete(delete_issuer),
        )
        .route("/certificates/restore", post(restore_certificate))
        // Key Vault takes the versionless forms with and without the trailing slash (curl users
        // type `/certificates/NAME`; the SDKs send `/certificates/NAME/`).
        .route(
            "/certificates/{name}",
            get(get_certificate)
                .patch(update_certificate)
                .delete(delete_certificate),
        )
        .route(
            "/certificates/{name}/",
            get(get_certificate).patch(update_certificate),
        )
        .route("/certificates/{name}/create", post(create_certificate))
        .route("/certificates/{name}/import", post(import_certificate))
        .route("/certificates/{name}/backup", post(backup_certificate))
        .route("/certificates/{name}/versions", get(list_versions))
        .route(
            "/certificates/{name}/policy",
            get(get_policy).patch(update_policy),
        )
        .route(
            "/certificates/{name}/pending",
            get(get_operation)
                .patch(cancel_operation)
                .delete(delete_operation),
        )
        .route("/certificates/{name}/pending/merge", post(merge_certificate))
        .route(
            "/certificates/{name}/{version}",
            get(get_certificate).patch(update_certificate),
        )
        .route("/deletedcertificates", get(list_deleted))
        .route(
            "/deletedcertificates/{name}",
            get(get_deleted).delete(purge_deleted),
        )
        .route("/deletedcertificates/{name}/recover", post(recover_deleted))
        .route("/keys/{name}/{version}", get(get_key))
        .route("/keys/{name}/", get(get_key))
        .route("/keys/{name}", get(get_key))
        .route("/keys/{name}/{version}/sign", post(sign))
        .route("/keys/{name}//sign", post(sign))
        .route("/secrets/{name}/{version}", get(get_secret))
        .route("/secrets/{name}/", get(get_secret))
        .route("/secrets/{name}", get(get_secret))
        .fallback(unknown_operation)
        .layer(axum::middleware::from_fn_with_state(state.clone(), challenge))
        .with_state(state)
}

/// The challenge: resolves the bearer principal (401 + `WWW-Authenticate` otherwise) and hands
/// it to the handlers as an extension, before any body is read.
async fn challenge(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let host = host_of(req.headers(), req.uri());
    match auth::bearer(&state, req.headers(), &auth::keyvault_resource(&host)).await {
        Ok(principal) => {
            req.extensions_mut().insert::<Principal>(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn host_of(headers: &http::HeaderMap, uri: &http::Uri) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// `https://{the Host the request came to}`: ids are built on it, so clients follow them back here.
struct Base(String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let host = host_of(&parts.headers, &parts.uri);
        if host.is_empty() || host.contains(['/', ' ', '"', '\\']) {
            return Err(ApiError::bad_request("the request has no usable Host header"));
        }
        Ok(Base(format!("https://{host}")))
    }
}

/// The `{name}` of a path and its `{version}` when the path names one. Key Vault's versionless
/// form ends in a slash (`/certificates/{name}/`, `/keys/{name}//sign`): an empty or absent
/// version is the newest.
#[derive(serde::Deserialize)]
struct At {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

impl At {
    fn version(&self) -> Option<&str> {
        self.version.as_deref().filter(|v| !v.is_empty())
    }
}

async fn unknown_operation(req: Request) -> ApiError {
    ApiError::bad_request(format!(
        "{} {} is not a Key Vault certificates operation this vault serves",
        req.method(),
        req.uri().path()
    ))
}

// ------------------------------------------------------------------ shapes

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "CertificateNotFound",
        format!("A certificate with (name/id) {name} was not found in this key vault."),
    )
}

fn body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(v)
}

fn secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn attributes(v: &VaultVersion) -> Value {
    json!({
        "enabled": v.enabled,
        "nbf": secs(v.nbf),
        "exp": secs(v.exp),
        "created": secs(v.created),
        "updated": secs(v.created),
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": RECOVERABLE_DAYS,
    })
}

/// The stored policy as Key Vault shows it: with its id and attributes, a validity in months.
/// `times` (created, last updated) go into the attributes, as Key Vault's policy carries them.
fn policy_view(
    base: &str,
    name: &str,
    stored: &Value,
    times: Option<(OffsetDateTime, OffsetDateTime)>,
) -> Value {
    let mut p = stored.clone();
    if let Some(obj) = p.as_object_mut() {
        obj.remove("name");
        obj.insert("id".into(), json!(format!("{base}/certificates/{name}/policy")));
        let attributes = obj.entry("attributes").or_insert(json!({ "enabled": true }));
        if let (Some((created, updated)), Some(a)) = (times, attributes.as_object_mut()) {
            a.insert("created".into(), json!(secs(created)));
            a.insert("updated".into(), json!(secs(updated)));
        }
        if let Some(x509) = obj.get_mut("x509_props").and_then(Value::as_object_mut) {
            let days = x509.remove("validity_days").and_then(|d| d.as_u64());
            if x509.get("validity_months").is_none_or(Value::is_null) {
                let months = days.map_or(12, |d| (d * 12).div_ceil(365).max(1));
                x509.insert("validity_months".into(), json!(months));
            }
        }
    }
    p
}

fn content_type(policy: Option<&Value>) -> &str {
    policy
        .and_then(|p| p["secret_props"]["contentType"].as_str())
        .unwrap_or("application/x-pkcs12")
}

fn bundle(base: &str, v: &VaultVersion, tags: &Tags, policy: Option<&Value>, with_policy: bool) -> Value {
    let name = &v.name;
    let mut out = json!({
        "id": format!("{base}/certificates/{name}/{}", v.version),
        "kid": format!("{base}/keys/{name}/{}", v.version),
        "sid": format!("{base}/secrets/{name}/{}", v.version),
        "x5t": URL_SAFE_NO_PAD.encode(sha1(&v.cert_der)),
        "cer": STANDARD.encode(&v.cert_der),
        "contentType": content_type(policy),
        "attributes": attributes(v),
        "tags": tags,
    });
    if with_policy && let Some(p) = policy {
        out["policy"] = policy_view(base, name, p, None);
    }
    out
}

/// A name whose first version waits for a merge, as Key Vault shows it: a disabled version
/// with the policy and a `pending` link, and no `cer`, `x5t`, `kid` or `sid` since nothing is
/// issued yet (a recording of Key Vault, azure-sdk-for-js
/// `recording_can_merge_a_self_signed_certificate.json`).
fn pending_bundle(base: &str, pend: &PendingCertificate) -> Value {
    placeholder_bundle(
        base,
        &pend.name,
        &pending_version(&pend.name, &pend.request_id),
        pend.created,
        Some(&pend.policy_json),
    )
}

/// The version id of the placeholder a waiting request shows (and of its key): an id of its
/// own, as Key Vault's (the recording above: version `5dd466e4…`, request `a4bcd628…`, and the
/// merge made `9f07e39e…`, a third). Derived from the request (SHA-256, 32 hex characters) so
/// that it needs no column of its own and stays the same while the request waits.
fn pending_version(name: &str, request_id: &str) -> String {
    derived_id("pending-version", name, request_id)
}

/// The request id of the operation that made version `version` at once (issuer `Self`): Key
/// Vault's operation has an id of its own, never the version's. Derived from the version so
/// that the create's answer and a later `GET /pending` agree.
fn completed_request_id(name: &str, version: &str) -> String {
    derived_id("completed-request", name, version)
}

/// 32 lowercase hex characters (Key Vault's id shape) from SHA-256 over `what`, `name`, `from`.
fn derived_id(what: &str, name: &str, from: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("certroll/serve/{what}/{name}/{from}").as_bytes(),
    );
    d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The disabled placeholder version of a name that has no issued version yet (its first
/// request waits for a merge, or was cancelled and its operation not yet deleted).
fn placeholder_bundle(
    base: &str,
    name: &str,
    version: &str,
    created: Option<OffsetDateTime>,
    policy_json: Option<&str>,
) -> Value {
    let mut out = json!({
        "id": format!("{base}/certificates/{name}/{version}"),
        "attributes": {
            "enabled": false,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RECOVERABLE_DAYS,
        },
        "tags": {},
        "pending": { "id": format!("{base}/certificates/{name}/pending") },
    });
    if let Some(t) = created {
        out["attributes"]["created"] = json!(secs(t));
        out["attributes"]["updated"] = json!(secs(t));
    }
    if let Some(policy) = policy_json.and_then(|p| serde_json::from_str::<Value>(p).ok()) {
        out["contentType"] = json!(content_type(Some(&policy)));
        out["policy"] = policy_view(base, name, &policy, created.map(|t| (t, t)));
    }
    out
}

fn sha1(der: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .to_vec()
}

fn item(base: &str, v: &VaultVersion, tags: &Tags, versioned: bool) -> Value {
    let id = if versioned {
        format!("{base}/certificates/{}/{}", v.name, v.version)
    } else {
        format!("{base}/certificates/{}", v.name)
    };
    json!({
        "id": id,
        "x5t": URL_SAFE_NO_PAD.encode(sha1(&v.cert_der)),
        "attributes": attributes(v),
        "tags": tags,
    })
}

fn page_size(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("maxresults") {
        None => Ok(MAX_PAGE),
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "maxresults `{m}` is out of range (1 to {MAX_PAGE})"
            ))),
        },
    }
}

fn next_link(base: &str, path: &str, token: Option<String>, size: usize) -> Value {
    match token {
        Some(t) => json!(format!(
            "{base}{path}?api-version=7.5&$skiptoken={}&maxresults={size}",
            percent_encoding::utf8_percent_encode(&t, percent_encoding::NON_ALPHANUMERIC)
        )),
        None => Value::Null,
    }
}

/// The latest (or a named) version of a live certificate, with its tags and the name's policy;
/// 404 `CertificateNotFound` otherwise.
fn load(
    b: &LocalBackend,
    name: &str,
    version: Option<&str>,
) -> Result<(VaultVersion, Tags, Option<Value>), ApiError> {
    let v = match version.filter(|v| !v.is_empty()) {
        Some(ver) => b.version(name, ver)?,
        None => b.current(name)?,
    };
    let v = v.ok_or_else(|| not_found(name))?;
    let tags = match version.filter(|v| !v.is_empty()) {
        Some(_) => b.tags(name, Some(&v.version))?.unwrap_or_default(),
        None => newest_tags(b, name, &v)?,
    };
    Ok((v, tags, b.policy(name)?))
}

/// The tags a versionless read shows. Key Vault keeps tags per version and shows the newest
/// version's; the local vault also has the certificate's own tags (`certroll vault update NAME
/// --tag`, and a version the CLI made has none of its own), which stand in while the newest
/// version has no tags. Serve's writes keep the two equal ([`set_version_tags`]).
fn newest_tags(b: &LocalBackend, name: &str, newest: &VaultVersion) -> Result<Tags, ApiError> {
    let own = b.tags(name, Some(&newest.version))?.unwrap_or_default();
    if !own.is_empty() {
        return Ok(own);
    }
    Ok(b.tags(name, None)?.unwrap_or_default())
}

/// Replaces the tags of one version. When it is the newest, the certificate's own tags (what
/// `certroll vault show` and a deleted certificate's answer carry) are set to the same, so every
/// view of "the certificate's tags" agrees with Key Vault's: the newest version's.
fn set_version_tags(
    b: &mut LocalBackend,
    name: &str,
    version: &str,
    tags: &Tags,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    b.set_tags(name, Some(version), tags, now)?;
    if b.current(name)?.is_some_and(|c| c.version == version) && b.tags(name, None)?.as_ref() != Some(tags) {
        b.set_tags(name, None, tags, now)?;
    }
    Ok(())
}

/// Tags a version just made (create, import, merge): the request's tags, or none, as Key Vault
/// starts every version with the tags its request names.
fn tag_new_version(
    b: &mut LocalBackend,
    name: &str,
    tags: Option<&Tags>,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let v = b.current(name)?.ok_or_else(|| not_found(name))?;
    set_version_tags(b, name, &v.version, tags.unwrap_or(&Tags::new()), now)
}

// ------------------------------------------------------------------ get / list

/// `GET /certificates/{name}/` (the newest version, with the policy) and
/// `GET /certificates/{name}/{version}` (that version, without: azure-wire.md 1.4.3).
async fn get_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(at): Path<At>,
) -> Answer {
    p.require(Perm::Get, &st.config.vault)?;
    st.read(move |b, _| {
        // The waiting request's placeholder, asked for by its version.
        if let Some(asked) = at.version()
            && let Some(pend) = b.pending(&at.name)?
            && asked == pending_version(&at.name, &pend.request_id)
        {
            return Ok(Json(pending_bundle(&base, &pend)));
        }
        if at.version().is_none() && b.current(&at.name)?.is_none() {
            if let Some(pend) = b.pending(&at.name)? {
                return Ok(Json(pending_bundle(&base, &pend)));
            }
            // A cancelled first request shows the same placeholder until its operation is
            // deleted, as Key Vault keeps it.
            if let Some(c) = cancelled(b, &at.name)? {
                let created = c
                    .created
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
                return Ok(Json(placeholder_bundle(
                    &base,
                    &at.name,
                    &pending_version(&at.name, &c.request_id),
                    created,
                    c.policy.as_deref(),
                )));
            }
        }
        let (v, tags, policy) = load(b, &at.name, at.version())?;
        Ok(Json(bundle(
            &base,
            &v,
            &tags,
            policy.as_ref(),
            at.version().is_none(),
        )))
    })
    .await
}

/// `GET /certificates`: the live certificates in name order, `maxresults` (≤ 25) a page, with an
/// absolute `nextLink` while more follow.
async fn list_certificates(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Query(q): Params,
) -> Answer {
    p.require(Perm::List, &st.config.vault)?;
    let size = page_size(&q)?;
    let after = q.get("$skiptoken").cloned().unwrap_or_default();
    let include_pending = q
        .get("includePending")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    st.read(move |b, _| {
        // `includePending=true` adds the names whose first version waits for a merge.
        let waiting: std::collections::BTreeSet<String> = if include_pending {
            b.pending_all()?.into_iter().map(|p| p.name).collect()
        } else {
            Default::default()
        };
        let mut names = b.names_page(&after, size + 1)?;
        names.extend(waiting.iter().filter(|n| n.as_str() > after.as_str()).cloned());
        names.sort();
        names.dedup();
        let more = names.len() > size;
        names.truncate(size);
        let mut value = Vec::new();
        for (name, current) in names.iter().zip(b.current_many(&names)?) {
            match current {
                Some(v) => {
                    let tags = newest_tags(b, name, &v)?;
                    value.push(item(&base, &v, &tags, false));
                }
                None if waiting.contains(name) => {
                    value.push(json!({ "id": format!("{base}/certificates/{name}"), "attributes": {} }));
                }
                None => {}
            }
        }
        let token = more.then(|| names.last().cloned()).flatten();
        Ok(Json(
            json!({ "value": value, "nextLink": next_link(&base, "/certificates", token, size) }),
        ))
    })
    .await
}

/// `GET /certificates/{name}/versions`: every version, oldest first, paged.
async fn list_versions(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
    Query(q): Params,
) -> Answer {
    p.require(Perm::List, &st.config.vault)?;
    let size = page_size(&q)?;
    let skip: usize = match q.get("$skiptoken") {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::bad_request(format!("$skiptoken `{t}` is not valid")))?,
        None => 0,
    };
    st.read(move |b, _| {
        let versions = b.versions(&name)?;
        if versions.is_empty() {
            return Err(not_found(&name));
        }
        let mut value = Vec::new();
        for v in versions.iter().skip(skip).take(size) {
            let tags = b.tags(&name, Some(&v.version))?.unwrap_or_default();
            value.push(item(&base, v, &tags, true));
        }
        let token = (versions.len() > skip + size).then(|| (skip + size).to_string());
        let path = format!("/certificates/{name}/versions");
        Ok(Json(
            json!({ "value": value, "nextLink": next_link(&base, &path, token, size) }),
        ))
    })
    .await
}

// ------------------------------------------------------------------ update

fn tags_from(v: &Value) -> Result<Tags, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("tags must be an object"))?;
    let mut tags = Tags::new();
    for (k, val) in obj {
        let val = val
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("tag `{k}` must be a string")))?;
        vops::check_tag(k, val)?;
        tags.insert(k.clone(), val.to_string());
    }
    if tags.len() > vops::MAX_TAGS {
        return Err(ApiError::bad_request(format!(
            "{} tags given; at most {} are allowed",
            tags.len(),
            vops::MAX_TAGS
        )));
    }
    Ok(tags)
}

/// `PATCH /certificates/{name}/` (the newest version) and `PATCH /certificates/{name}/{version}`:
/// that version's attributes and tags (replaced wholesale), and the name's policy.
async fn update_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(At { name, version }): Path<At>,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::Update, &st.config.vault)?;
    let req = body(&bytes)?;
    let enabled = check_attributes(&req)?;
    let tags = match &req["tags"] {
        Value::Null => None,
        t => Some(tags_from(t)?),
    };
    let policy = req.get("policy").filter(|p| !p.is_null()).cloned();
    st.write(move |b, now| {
        let ver = version.as_deref().filter(|v| !v.is_empty());
        let (v, _, _) = load(b, &name, ver)?;
        if let Some(enabled) = enabled
            && enabled != v.enabled
        {
            b.set_enabled(&v, enabled, now)?;
        }
        if let Some(tags) = &tags {
            set_version_tags(b, &name, &v.version, tags, now)?;
        }
        if let Some(patch) = &policy {
            set_policy(b, &name, patch, now)?;
        }
        let (v, tags, policy) = load(b, &name, ver)?;
        Ok(Json(bundle(&base, &v, &tags, policy.as_ref(), true)))
    })
    .await
}

// ------------------------------------------------------------------ policy

/// Merges `patch` into `into` (objects member by member; `null` members are left alone).
fn merge_json(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    continue;
                }
                match a.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_json(existing, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, patch) => *into = patch.clone(),
    }
}

/// Key Vault's policy update on a live certificate: the patch merged member by member. The key's
/// type and exportability stay what the versions were made with (they are facts of the keys);
/// a patch that would make an HSM key exportable is refused with 400, as Key Vault refuses an
/// exportable HSM key ("Exportable keys must have release policy"), not answered 200 and
/// dropped (trial az14 F7: a client rehearsing it was told it had succeeded).
fn set_policy(
    b: &mut LocalBackend,
    name: &str,
    patch: &Value,
    now: OffsetDateTime,
) -> Result<Value, ApiError> {
    let mut policy = b.policy(name)?.ok_or_else(|| not_found(name))?;
    let kept = policy["key_props"].clone();
    let mut patch = patch.clone();
    if let Some(obj) = patch.as_object_mut() {
        for read_only in ["id", "attributes"] {
            obj.remove(read_only);
        }
    }
    if let Some(ct) = patch["secret_props"]["contentType"].as_str()
        && !matches!(ct, "application/x-pkcs12" | "application/x-pem-file")
    {
        return Err(ApiError::bad_request(format!(
            "secret_props.contentType `{ct}` is not application/x-pkcs12 or application/x-pem-file"
        )));
    }
    if let Some(kty) = kept["kty"].as_str().filter(|k| k.ends_with("-HSM"))
        && patch["key_props"]["exportable"] == Value::Bool(true)
    {
        return Err(ApiError::bad_request(format!(
            "Property policy has invalid value: key_props.exportable cannot be true for certificate `{name}`, \
             whose key type is {kty}: an HSM key never leaves the HSM (exportable keys must have release policy)"
        )));
    }
    merge_json(&mut policy, &patch);
    check_policy(&policy)?;
    for fact in ["kty", "exportable", "crv", "key_size"] {
        if !kept[fact].is_null() {
            policy["key_props"][fact] = kept[fact].clone();
        }
    }
    b.set_policy(name, &policy.to_string(), now)?;
    Ok(policy)
}

/// `GET /certificates/{name}/policy`.
async fn get_policy(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::Get, &st.config.vault)?;
    st.read(move |b, _| {
        if let Some(policy) = b.policy(&name)? {
            // A live name's: a renewal's create replaced it, so `updated` is the request's time.
            let times = qv::policy_times(b.store().conn(), &name).map_err(BackendError::from)?;
            return Ok(Json(policy_view(&base, &name, &policy, times)));
        }
        // A name whose first version waits for a merge has its policy already (Key Vault's),
        // written by the create.
        let pend = b.pending(&name)?.ok_or_else(|| not_found(&name))?;
        let policy = serde_json::from_str(&pend.policy_json).map_err(|_| not_found(&name))?;
        Ok(Json(policy_view(
            &base,
            &name,
            &policy,
            pend.created.map(|t| (t, t)),
        )))
    })
    .await
}

/// `PATCH /certificates/{name}/policy`: the members given replace the stored ones.
async fn update_policy(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::Update, &st.config.vault)?;
    let patch = body(&bytes)?;
    st.write(move |b, now| {
        let policy = set_policy(b, &name, &patch, now)?;
        let times = qv::policy_times(b.store().conn(), &name).map_err(BackendError::from)?;
        Ok(Json(policy_view(&base, &name, &policy, times)))
    })
    .await
}

/// An integer member of a request, or None when absent or null; 400 naming the field otherwise.
fn int_field(v: &Value, field: &str) -> Result<Option<i64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{field} must be a whole number in range, not {n}"))
        }),
        other => Err(ApiError::bad_request(format!(
            "{field} must be a whole number, not {}",
            crate::error::json_snippet(other)
        ))),
    }
}

/// The `attributes` of a create or update: `enabled` a boolean, `nbf` and `exp` whole seconds
/// since 1970 that name a date. Returns `enabled` when given.
fn check_attributes(req: &Value) -> Result<Option<bool>, ApiError> {
    let attrs = &req["attributes"];
    if !attrs.is_null() && !attrs.is_object() {
        return Err(ApiError::bad_request(format!(
            "attributes must be an object, not {}",
            crate::error::json_snippet(attrs)
        )));
    }
    for field in ["nbf", "exp"] {
        if let Some(secs) = int_field(&attrs[field], &format!("attributes.{field}"))?
            && OffsetDateTime::from_unix_timestamp(secs).is_err()
        {
            return Err(ApiError::bad_request(format!(
                "attributes.{field} {secs} is not a date (seconds since 1970)"
            )));
        }
    }
    match &attrs["enabled"] {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(ApiError::bad_request("attributes.enabled must be true or false")),
    }
}

/// Key Vault's checks of a whole policy (a create's, or a stored one after a patch): validity
/// 1 to 1200 months, each lifetime action's one trigger (`lifetime_percentage` 1 to 99, or
/// `days_before_expiry` 1 to `validity_months` × 27, the reference's bound) and SAN e-mail
/// addresses by the one validator the CLI uses.
fn check_policy(policy: &Value) -> Result<(), ApiError> {
    let x509 = &policy["x509_props"];
    // A policy the CLI stored may carry days instead of months (`policy_view` shows them so).
    let stored_days = x509["validity_days"]
        .as_u64()
        .map(|d| (d * 12).div_ceil(365).max(1) as i64);
    let months = int_field(&x509["validity_months"], "x509_props.validity_months")?
        .or(stored_days)
        .unwrap_or(12);
    if !(1..=1200).contains(&months) {
        return Err(ApiError::bad_request(format!(
            "x509_props.validity_months {months} is out of range (1 to 1200)"
        )));
    }
    match &x509["sans"]["emails"] {
        Value::Null => {}
        Value::Array(emails) => {
            for e in emails {
                let text = e.as_str().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "x509_props.sans.emails holds {}, which is not a string",
                        crate::error::json_snippet(e)
                    ))
                })?;
                crate::pki::san::San::email(text)
                    .map_err(|why| ApiError::bad_request(format!("x509_props.sans.emails: {why}")))?;
            }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "x509_props.sans.emails must be a list of e-mail addresses, not {}",
                crate::error::json_snippet(other)
            )));
        }
    }
    let actions = match &policy["lifetime_actions"] {
        Value::Null => return Ok(()),
        Value::Array(a) => a,
        other => {
            return Err(ApiError::bad_request(format!(
                "lifetime_actions must be a list, not {}",
                crate::error::json_snippet(other)
            )));
        }
    };
    for (i, action) in actions.iter().enumerate() {
        let trigger = &action["trigger"];
        let field = |name: &str| format!("lifetime_actions[{i}].trigger.{name}");
        let pct = int_field(&trigger["lifetime_percentage"], &field("lifetime_percentage"))?;
        let days = int_field(&trigger["days_before_expiry"], &field("days_before_expiry"))?;
        if let Some(pct) = pct
            && !(1..=99).contains(&pct)
        {
            return Err(ApiError::bad_request(format!(
                "{} {pct} is out of range (1 to 99)",
                field("lifetime_percentage")
            )));
        }
        if let Some(days) = days
            && !(1..=months * 27).contains(&days)
        {
            return Err(ApiError::bad_request(format!(
                "{} {days} is out of range (1 to {}, 27 days for each of the {months} validity months)",
                field("days_before_expiry"),
                months * 27
            )));
        }
        if pct.is_some() && days.is_some() {
            return Err(ApiError::bad_request(format!(
                "lifetime_actions[{i}].trigger sets both lifetime_percentage and days_before_expiry; set one"
            )));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ create / pending / merge

/// A Key Vault policy as `vault create` options (defaults as Key Vault's: RSA 2048, exportable,
/// 12 months, issuer Self).
fn create_options(policy: &Value) -> Result<pending::CreateOptions, ApiError> {
    use crate::pki::spec::{Curve, KeySpec};
    let kp = &policy["key_props"];
    let x509 = &policy["x509_props"];
    let kty = kp["kty"].as_str().unwrap_or("RSA");
    let hsm = kty.ends_with("-HSM");
    let key = match kty.trim_end_matches("-HSM") {
        "RSA" => KeySpec::Rsa {
            bits: kp["key_size"].as_u64().unwrap_or(2048) as u32,
            hsm,
        },
        "EC" => {
            let crv = kp["crv"].as_str().unwrap_or("P-256");
            KeySpec::Ec {
                curve: Curve::parse(crv).ok_or_else(|| {
                    ApiError::bad_request(format!("key_props.crv `{crv}` is not P-256, P-384 or P-521"))
                })?,
                hsm,
            }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "key_props.kty `{other}` is not RSA, RSA-HSM, EC or EC-HSM"
            )));
        }
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut dns_names = strings(&x509["sans"]["dns_names"]);
    dns_names.extend(strings(&x509["sans"]["ipAddresses"]));
    let subject = match x509["subject"].as_str().filter(|s| !s.is_empty()) {
        Some(s) => s.to_string(),
        None => match dns_names.first() {
            Some(d) => format!("CN={d}"),
            None => {
                return Err(ApiError::bad_request(
                    "the policy needs x509_props.subject or a SAN",
                ));
            }
        },
    };
    check_policy(policy)?;
    let months = x509["validity_months"].as_u64().unwrap_or(12);
    Ok(pending::CreateOptions {
        subject,
        key,
        exportable: kp["exportable"].as_bool().unwrap_or(true),
        dns_names,
        key_usage: strings(&x509["key_usage"]),
        ekus: strings(&x509["ekus"]),
        validity_days: ((months * 365).div_ceil(12)) as u32,
        issuer: policy["issuer"]["name"].as_str().unwrap_or("Self").to_string(),
        reuse_key: kp["reuse_key"].as_bool().unwrap_or(false),
        keep_subject: None,
    })
}

/// The current certificate's subject (DER) when `subject`, a policy's, is its text and
/// certroll's subject syntax would not read it (a renewal of an imported certificate: DC,
/// emailAddress, a lower-case country...): Key Vault renews such a certificate under its
/// policy, so the new version keeps that subject byte for byte.
fn kept_subject(
    b: &mut crate::backend::local::LocalBackend,
    name: &str,
    subject: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    if crate::pki::spec::Subject::parse(subject).is_ok() {
        return Ok(None);
    }
    let Some(current) = crate::backend::Vault::current(b, name)? else {
        return Ok(None);
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&current.cert_der) else {
        return Ok(None);
    };
    let shown = crate::pki::inspect::name_text(cert.subject());
    Ok((subject == shown || subject == cert.subject().to_string()).then(|| cert.subject().as_raw().to_vec()))
}

fn operation(
    base: &str,
    name: &str,
    issuer: &str,
    status: &str,
    csr: Option<&[u8]>,
    request_id: &str,
) -> Value {
    let mut op = json!({
        "id": format!("{base}/certificates/{name}/pending"),
        "issuer": { "name": issuer },
        "cancellation_requested": status == "cancelled",
        "status": status,
        "status_details": match status {
            "completed" => "The certificate was issued.",
            "cancelled" => "The request was cancelled.",
            _ if csr.is_none() => "The certificate is being created.",
            _ => "Pending certificate created. Merge a certificate signed for the CSR.",
        },
        "request_id": request_id,
    });
    if let Some(csr) = csr {
        op["csr"] = json!(STANDARD.encode(csr));
    }
    if status == "completed" {
        op["target"] = json!(format!("{base}/certificates/{name}"));
    }
    op
}

/// `POST /certificates/{name}/create` → 202 with the operation, `inProgress`: for issuer Self
/// the version is made at once (`GET /pending` then answers `completed`); otherwise the
/// operation carries the CSR and waits for a merge.
async fn create_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Perm::Create, &st.config.vault)?;
    let req = body(&bytes)?;
    let policy = req
        .get("policy")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut opts = create_options(&policy)?;
    let tags = match &req["tags"] {
        Value::Null => None,
        t => Some(tags_from(t)?),
    };
    let disabled = check_attributes(&req)? == Some(false);
    st.write(move |b, now| {
        if b.name_state(&name)? == Some("deleted") {
            return Err(ApiError::conflict(format!(
                "Certificate {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the certificate can only be recovered or purged."
            )));
        }
        if b.pending(&name)?.is_some() {
            return Err(ApiError::conflict(format!("Certificate {name} already has a pending operation.")));
        }
        // A new request replaces a cancelled operation, as a new create replaces Key Vault's.
        qv::cancelled_operation_set(b.store().conn(), &name, None).map_err(BackendError::from)?;
        opts.keep_subject = kept_subject(b, &name, &opts.subject)?;
        let report = pending::create_in(b, &name, &opts, now)?;
        if report.status == "completed" {
            // What the options do not carry (content type, lifetime actions, months) comes from
            // the request's policy.
            set_policy(b, &name, &policy, now)?;
            tag_new_version(b, &name, tags.as_ref(), now)?;
            if disabled && let Some(v) = b.current(&name)? {
                b.set_enabled(&v, false, now)?;
            }
            // Answered `inProgress` as Key Vault does, though the version exists already: the
            // Python SDK starts its poller only for an unfinished operation, and its first poll
            // of `/pending` then reads `completed`.
            let request_id = completed_request_id(&name, report.version.as_deref().unwrap_or_default());
            return Ok((StatusCode::ACCEPTED, Json(operation(&base, &name, &report.issuer, "inProgress", None, &request_id))));
        }
        let mut pend = b.pending(&name)?.ok_or_else(|| ApiError::internal("the pending request was not stored"))?;
        // Key Vault keeps the request's policy, members the options leave out too (content
        // type, lifetime actions); the key's facts are the key's, as made. A live name's policy
        // becomes it at once, as Key Vault's create replaces it.
        let mut recorded: Value = serde_json::from_str(&pend.policy_json).unwrap_or_else(|_| json!({}));
        let kept = recorded["key_props"].clone();
        merge_json(&mut recorded, &policy);
        for fact in ["kty", "exportable", "crv", "key_size"] {
            if !kept[fact].is_null() {
                recorded["key_props"][fact] = kept[fact].clone();
            }
        }
        pend.policy_json = recorded.to_string();
        let key = b.pending_key(&name)?;
        b.delete_pending(&name)?;
        b.put_pending(&pend, key.pkcs8_der())?;
        if b.current(&name)?.is_some() {
            set_policy(b, &name, &policy, now)?;
        }
        Ok((
            StatusCode::ACCEPTED,
            Json(operation(&base, &name, &pend.issuer, "inProgress", Some(&pend.csr_der), &pend.request_id)),
        ))
    })
    .await
}

/// What the store keeps of a cancelled operation until it is deleted (its key went at the cancel).
#[derive(serde::Serialize, serde::Deserialize)]
struct Cancelled {
    issuer: String,
    /// The CSR, base64 DER.
    csr: String,
    request_id: String,
    /// The current version when it was cancelled (empty: none; absent in records written
    /// before it was kept).
    #[serde(default)]
    current_at_cancel: Option<String>,
    /// When the request was made, Unix seconds (absent in records written before it was kept).
    #[serde(default)]
    created: Option<i64>,
    /// The request's policy, JSON (absent in records written before it was kept).
    #[serde(default)]
    policy: Option<String>,
}

/// The cancelled operation of `name`, unless a version was made since the cancel: a create that
/// completed at once (a self-signed `certroll vault create`, which cannot clear serve's record
/// through an azure-capable backend) replaces it, as any create replaces Key Vault's operation.
fn cancelled(b: &LocalBackend, name: &str) -> Result<Option<Cancelled>, ApiError> {
    let Some(text) = qv::cancelled_operation_get(b.store().conn(), name).map_err(BackendError::from)? else {
        return Ok(None);
    };
    let c: Cancelled = serde_json::from_str(&text)
        .map_err(|e| ApiError::internal(format!("the stored cancelled operation of {name}: {e}")))?;
    if let Some(then) = &c.current_at_cancel
        && b.current(name)?.is_some_and(|v| &v.version != then)
    {
        return Ok(None);
    }
    Ok(Some(c))
}

fn cancelled_operation(base: &str, name: &str, c: &Cancelled) -> Result<Value, ApiError> {
    let csr = STANDARD
        .decode(&c.csr)
        .map_err(|e| ApiError::internal(format!("the stored CSR of {name}: {e}")))?;
    Ok(operation(
        base,
        name,
        &c.issuer,
        "cancelled",
        Some(&csr),
        &c.request_id,
    ))
}

fn pending_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "PendingCertificateNotFound",
        format!("Pending certificate not found: {name}"),
    )
}

/// The operation of `name`: the waiting request (`inProgress`), else a cancelled one not yet
/// deleted (`cancelled`), else the current version's (`completed`).
fn current_operation(b: &LocalBackend, base: &str, name: &str) -> Result<Value, ApiError> {
    if let Some(pend) = b.pending(name)? {
        return Ok(operation(
            base,
            name,
            &pend.issuer,
            "inProgress",
            Some(&pend.csr_der),
            &pend.request_id,
        ));
    }
    if let Some(c) = cancelled(b, name)? {
        return cancelled_operation(base, name, &c);
    }
    if let Some(v) = b.current(name)? {
        let issuer = b
            .policy(name)?
            .and_then(|p| p["issuer"]["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| "Self".into());
        return Ok(operation(
            base,
            name,
            &issuer,
            "completed",
            None,
            &completed_request_id(name, &v.version),
        ));
    }
    Err(pending_not_found(name))
}

/// `GET /certificates/{name}/pending`.
async fn get_operation(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::Get, &st.config.vault)?;
    st.read(move |b, _| Ok(Json(current_operation(b, &base, &name)?)))
        .await
}

/// `PATCH /certificates/{name}/pending` with `cancellation_requested`: the local vault has no
/// issuer to wait for, so the cancel takes effect at once: the request and its key are discarded
/// (nothing can merge into it any more) and the operation stays, `cancelled`, until it is
/// deleted, as Key Vault keeps it. Cancelling it again answers the same.
async fn cancel_operation(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::Update, &st.config.vault)?;
    let req = body(&bytes)?;
    if req["cancellation_requested"] != json!(true) {
        return Err(ApiError::bad_request("cancellation_requested must be true"));
    }
    st.write(move |b, _| {
        if let Some(c) = cancelled(b, &name)?
            && b.pending(&name)?.is_none()
        {
            return Ok(Json(cancelled_operation(&base, &name, &c)?));
        }
        let pend = b.pending(&name)?.ok_or_else(|| pending_not_found(&name))?;
        let record = Cancelled {
            issuer: pend.issuer.clone(),
            csr: STANDARD.encode(&pend.csr_der),
            request_id: pend.request_id.clone(),
            current_at_cancel: Some(b.current(&name)?.map(|v| v.version).unwrap_or_default()),
            created: pend.created.map(OffsetDateTime::unix_timestamp),
            policy: Some(pend.policy_json.clone()),
        };
        let record = serde_json::to_string(&record).map_err(|e| ApiError::internal(e.to_string()))?;
        qv::cancelled_operation_set(b.store().conn(), &name, Some(&record)).map_err(BackendError::from)?;
        b.delete_pending(&name)?;
        Ok(Json(operation(
            &base,
            &name,
            &pend.issuer,
            "cancelled",
            Some(&pend.csr_der),
            &pend.request_id,
        )))
    })
    .await
}

/// `DELETE /certificates/{name}/pending`: the operation (a waiting request with its key, or a
/// cancelled one) is gone; the answer is the operation as it was.
async fn delete_operation(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::Update, &st.config.vault)?;
    st.write(move |b, _| {
        if let Some(pend) = b.pending(&name)? {
            b.delete_pending(&name)?;
            qv::cancelled_operation_set(b.store().conn(), &name, None).map_err(BackendError::from)?;
            return Ok(Json(operation(
                &base,
                &name,
                &pend.issuer,
                "inProgress",
                Some(&pend.csr_der),
                &pend.request_id,
            )));
        }
        let c = cancelled(b, &name)?.ok_or_else(|| pending_not_found(&name))?;
        qv::cancelled_operation_set(b.store().conn(), &name, None).map_err(BackendError::from)?;
        Ok(Json(cancelled_operation(&base, &name, &c)?))
    })
    .await
}

/// `POST /certificates/{name}/pending/merge` → 201: `x5c` (base64 DER, leaf first) becomes a
/// version with the pending key, once the leaf is shown to certify it.
async fn merge_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Perm::Create, &st.config.vault)?;
    let req = body(&bytes)?;
    let x5c = req["x5c"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::bad_request("x5c (base64 DER certificates, leaf first) is required"))?;
    let mut certs = Vec::new();
    for (i, c) in x5c.iter().enumerate() {
        let der = c
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| ApiError::bad_request(format!("x5c[{i}] is not base64")))?;
        crate::pki::CertInfo::from_der(&der).map_err(|e| ApiError::bad_request(format!("x5c[{i}]: {e}")))?;
        certs.push(der);
    }
    let tags = match &req["tags"] {
        Value::Null => None,
        t => Some(tags_from(t)?),
    };
    st.write(move |b, now| {
        if b.pending(&name)?.is_none() {
            if cancelled(b, &name)?.is_some() {
                return Err(ApiError::conflict(format!(
                    "The certificate operation of {name} was cancelled: nothing can be merged into it. Delete the operation and create the certificate again."
                )));
            }
            return Err(pending_not_found(&name));
        }
        pending::merge_in(b, &name, certs, "x5c", now)?;
        tag_new_version(b, &name, tags.as_ref(), now)?;
        let (v, tags, policy) = load(b, &name, None)?;
        Ok((
            StatusCode::CREATED,
            Json(bundle(&base, &v, &tags, policy.as_ref(), true)),
        ))
    })
    .await
}

// ------------------------------------------------------------------ import

/// `POST /certificates/{name}/import`: `value` is PEM text, base64 of PEM text (what the SDKs
/// send), or base64 of a PFX (`pwd` its password).
async fn import_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::Import, &st.config.vault)?;
    let req = body(&bytes)?;
    let value = req["value"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("value (the certificate with its key) is required"))?;
    let raw = zeroize::Zeroizing::new(if crate::pki::pem::is_pem(value.as_bytes()) {
        value.as_bytes().to_vec()
    } else {
        STANDARD
            .decode(value.trim())
            .map_err(|_| ApiError::bad_request("value is neither PEM nor base64"))?
    });
    let pwd = req["pwd"].as_str().unwrap_or("");
    let material = transfer::material_from_bytes(&raw, Some(pwd), "value")?;
    let policy = req.get("policy").filter(|p| p.is_object()).cloned();
    // Key Vault keeps an HSM key only if it made the key itself (create) or it came wrapped for
    // the HSM (BYOK): a key that arrives in the clear is no HSM key.
    if let Some(kty) = policy
        .as_ref()
        .and_then(|p| p["key_props"]["kty"].as_str())
        .filter(|k| k.ends_with("-HSM"))
    {
        return Err(ApiError::bad_request(format!(
            "key_props.kty {kty}: a certificate's key cannot be imported into an HSM; create the certificate in Key Vault (its key is made in the HSM) or bring the key wrapped for it (BYOK)"
        )));
    }
    let hsm = policy.as_ref().is_some_and(|p| {
        p["key_props"]["exportable"] == json!(false)
            || p["key_props"]["kty"]
                .as_str()
                .is_some_and(|k| k.ends_with("-HSM"))
    });
    let tags = match &req["tags"] {
        Value::Null => None,
        t => Some(tags_from(t)?),
    };
    st.write(move |b, now| {
        if b.name_state(&name)? == Some("deleted") {
            return Err(ApiError::conflict(format!(
                "Certificate {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the certificate can only be recovered or purged."
            )));
        }
        // Key Vault refuses an import while a create waits on the name (409, azure-wire 1.7):
        // the request must be merged or deleted first.
        if b.pending(&name)?.is_some() {
            return Err(ApiError::conflict(format!(
                "Certificate {name} has a pending certificate operation (status inProgress); merge it or delete it (DELETE /certificates/{name}/pending) before importing"
            )));
        }
        let report = transfer::import_in(b, &name, &material, hsm, "value", now)?;
        if report.new_certificate
            && let Some(policy) = &policy
        {
            set_policy(b, &name, policy, now)?;
        }
        tag_new_version(b, &name, tags.as_ref(), now)?;
        let (v, tags, policy) = load(b, &name, None)?;
        Ok(Json(bundle(&base, &v, &tags, policy.as_ref(), true)))
    })
    .await
}

// ------------------------------------------------------------------ delete / recover / purge

fn deleted_bundle(base: &str, d: &crate::backend::types::DeletedCertificate) -> Option<Value> {
    let v = d.versions.last()?;
    let mut out = bundle(base, v, &d.tags, None, false);
    out["recoveryId"] = json!(format!("{base}/deletedcertificates/{}", d.name));
    out["deletedDate"] = json!(secs(d.deleted));
    out["scheduledPurgeDate"] = json!(secs(d.scheduled_purge));
    Some(out)
}

fn deleted_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "CertificateNotFound",
        format!("Deleted Certificate not found: {name}"),
    )
}

/// `DELETE /certificates/{name}`: soft delete; the answer is the deleted certificate.
async fn delete_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::Delete, &st.config.vault)?;
    st.write(move |b, now| {
        let had_cancelled =
            qv::cancelled_operation_set(b.store().conn(), &name, None).map_err(BackendError::from)?;
        if b.current(&name)?.is_none() && b.pending(&name)?.is_none() {
            if had_cancelled {
                // Only a cancelled operation was left: it goes with the certificate.
                return Ok(Json(json!({ "id": format!("{base}/certificates/{name}") })));
            }
            return Err(not_found(&name));
        }
        // Key Vault deletes whatever it is asked to: refusing a certificate a device holds, or
        // one that signed others, is certroll's own guard on the client (`vault delete` without
        // `--force`), not the service's, so every other client may delete here.
        let opts = lifecycle::DeleteOptions {
            force: true,
            ..lifecycle::DeleteOptions::default()
        };
        lifecycle::delete_in(b, &name, &[], &opts, now)?;
        let d = b.deleted_certificates(Some(&name))?.into_iter().next();
        match d.as_ref().and_then(|d| deleted_bundle(&base, d)) {
            Some(out) => Ok(Json(out)),
            // Only a request was waiting; it is cancelled and nothing is recoverable.
            None => Ok(Json(json!({ "id": format!("{base}/certificates/{name}") }))),
        }
    })
    .await
}

/// `GET /deletedcertificates/{name}` (404 while it is not deleted: the delete poller's signal).
async fn get_deleted(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::Get, &st.config.vault)?;
    st.read(move |b, _| {
        let d = b.deleted_certificates(Some(&name))?.into_iter().next();
        d.as_ref()
            .and_then(|d| deleted_bundle(&base, d))
            .map(Json)
            .ok_or_else(|| deleted_not_found(&name))
    })
    .await
}

/// `GET /deletedcertificates`: paged by name.
async fn list_deleted(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Query(q): Params,
) -> Answer {
    p.require(Perm::List, &st.config.vault)?;
    let size = page_size(&q)?;
    let after = q.get("$skiptoken").cloned().unwrap_or_default();
    st.read(move |b, _| {
        let all = b.deleted_certificates(None)?;
        let rest: Vec<_> = all.iter().filter(|d| d.name.as_str() > after.as_str()).collect();
        let mut value = Vec::new();
        for d in rest.iter().take(size) {
            if let Some(v) = d.versions.last() {
                let mut it = item(&base, v, &d.tags, false);
                it["recoveryId"] = json!(format!("{base}/deletedcertificates/{}", d.name));
                it["deletedDate"] = json!(secs(d.deleted));
                it["scheduledPurgeDate"] = json!(secs(d.scheduled_purge));
                value.push(it);
            }
        }
        let token = (rest.len() > size).then(|| rest[size - 1].name.clone());
        Ok(Json(
            json!({ "value": value, "nextLink": next_link(&base, "/deletedcertificates", token, size) }),
        ))
    })
    .await
}

/// `POST /deletedcertificates/{name}/recover`: back as it was; the answer is its latest version.
async fn recover_deleted(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::Recover, &st.config.vault)?;
    st.write(move |b, now| {
        if b.deleted_certificates(Some(&name))?.is_empty() {
            return Err(deleted_not_found(&name));
        }
        lifecycle::recover_in(b, &name, now)?;
        let (v, tags, policy) = load(b, &name, None)?;
        Ok(Json(bundle(&base, &v, &tags, policy.as_ref(), true)))
    })
    .await
}

/// `DELETE /deletedcertificates/{name}` → 204: gone for good.
async fn purge_deleted(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    p.require(Perm::Purge, &st.config.vault)?;
    st.write(move |b, now| {
        if b.deleted_certificates(Some(&name))?.is_empty() {
            return Err(deleted_not_found(&name));
        }
        lifecycle::purge_in(b, &name, now)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ------------------------------------------------------------------ backup / restore

/// `POST /certificates/{name}/backup`: `{"value": base64url blob}` holding every version, the
/// policy and the tags (`vault backup`'s document, encrypted under the store's backup password:
/// it restores into this store; a non-exportable key travels still sealed).
async fn backup_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::Backup, &st.config.vault)?;
    let password = st.backup_password();
    st.read(move |b, _| {
        if b.current(&name)?.is_none() {
            return Err(not_found(&name));
        }
        let (blob, _) = vops::backup::backup_bytes(b, &name, &password)?;
        Ok(Json(json!({ "value": URL_SAFE_NO_PAD.encode(blob) })))
    })
    .await
}

/// `POST /certificates/restore` with `{"value": blob}`: the certificate back under its name,
/// which must be free (409 otherwise).
async fn restore_certificate(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::Restore, &st.config.vault)?;
    let req = body(&bytes)?;
    let blob = req["value"]
        .as_str()
        .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
        .ok_or_else(|| ApiError::bad_request("value (the base64url backup blob) is required"))?;
    let password = st.backup_password();
    st.write(move |b, _| {
        let report = match vops::backup::restore_in(b, &blob, &password, "the backup blob") {
            Ok(r) => r,
            Err(e) if e.to_string().contains("restore never overwrites") => {
                return Err(ApiError::conflict(format!("{e:#}")));
            }
            Err(e) => return Err(e.into()),
        };
        let (v, tags, policy) = load(b, &report.name, None)?;
        Ok(Json(bundle(&base, &v, &tags, policy.as_ref(), true)))
    })
    .await
}

// ------------------------------------------------------------------ contacts

fn contacts_body(base: &str, emails: &[String]) -> Value {
    json!({
        "id": format!("{base}/certificates/contacts"),
        "contacts": emails.iter().map(|e| json!({ "email": e })).collect::<Vec<_>>(),
    })
}

/// `GET /certificates/contacts`: the stored contacts, else the plan's `[contacts]`.
async fn get_contacts(State(st): Shared, Extension(p): Extension<Principal>, Base(base): Base) -> Answer {
    p.require(Perm::ManageContacts, &st.config.vault)?;
    let plan = st.plan.clone();
    st.read(move |b, _| {
        let view = settings::contacts_get_in(b, &plan)?;
        if view.contacts.is_empty() {
            return Err(ApiError::not_found(
                "ContactsNotFound",
                "The vault has no certificate contacts.",
            ));
        }
        Ok(Json(contacts_body(&base, &view.contacts)))
    })
    .await
}

/// `PUT /certificates/contacts`: replaces the contacts (their e-mail addresses are kept).
async fn set_contacts(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::ManageContacts, &st.config.vault)?;
    let req = body(&bytes)?;
    let list = req["contacts"]
        .as_array()
        .ok_or_else(|| ApiError::bad_request("contacts (a list of {email, name, phone}) is required"))?;
    let mut emails = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let e = c["email"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("contacts[{i}] has no email")))?;
        emails.push(e.to_string());
    }
    let plan = st.plan.clone();
    st.write(move |b, _| {
        let view = settings::contacts_set_in(b, &plan, &emails)?;
        Ok(Json(contacts_body(&base, &view.contacts)))
    })
    .await
}

/// `DELETE /certificates/contacts`: answers the removed contacts.
async fn delete_contacts(State(st): Shared, Extension(p): Extension<Principal>, Base(base): Base) -> Answer {
    p.require(Perm::ManageContacts, &st.config.vault)?;
    let plan = st.plan.clone();
    st.write(move |b, _| {
        let view = settings::contacts_delete_in(b, &plan)?;
        Ok(Json(contacts_body(&base, &view.removed.unwrap_or_default())))
    })
    .await
}

// ------------------------------------------------------------------ issuers

fn issuer_body(base: &str, i: &crate::backend::types::IssuerConfig) -> Value {
    let mut out = json!({
        "id": format!("{base}/certificates/issuers/{}", i.name),
        "provider": i.provider,
        "attributes": { "enabled": i.enabled, "created": secs(i.created), "updated": secs(i.updated) },
    });
    if let Some(a) = &i.account_id {
        // The password is never stored, let alone answered.
        out["credentials"] = json!({ "account_id": a });
    }
    out
}

fn issuer_missing(name: &str) -> ApiError {
    ApiError::not_found("CertificateIssuerNotFound", format!("Issuer not found: {name}"))
}

/// `GET /certificates/issuers`.
async fn list_issuers(State(st): Shared, Extension(p): Extension<Principal>, Base(base): Base) -> Answer {
    p.require(Perm::ListIssuers, &st.config.vault)?;
    st.read(move |b, _| {
        let value: Vec<Value> = b
            .issuers()?
            .iter()
            .map(|i| json!({ "id": format!("{base}/certificates/issuers/{}", i.name), "provider": i.provider }))
            .collect();
        Ok(Json(json!({ "value": value, "nextLink": null })))
    })
    .await
}

/// `GET /certificates/issuers/{issuer}`.
async fn get_issuer(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::GetIssuers, &st.config.vault)?;
    st.read(move |b, _| {
        if !b.issuers()?.iter().any(|i| i.name == name) {
            return Err(issuer_missing(&name));
        }
        Ok(Json(issuer_body(&base, &settings::issuer_get_in(b, &name)?)))
    })
    .await
}

/// `PUT /certificates/issuers/{issuer}` creates or replaces it (`provider` required);
/// `PATCH` updates an existing one: the members given replace the stored ones.
async fn set_issuer(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
    method: http::Method,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::SetIssuers, &st.config.vault)?;
    let req = body(&bytes)?;
    let update = method == http::Method::PATCH;
    st.write(move |b, now| {
        let existing = b.issuers()?.into_iter().find(|i| i.name == name);
        if update && existing.is_none() {
            return Err(issuer_missing(&name));
        }
        let provider = match (req["provider"].as_str(), &existing) {
            (Some(p), _) => p.to_string(),
            (None, Some(e)) if update => e.provider.clone(),
            _ => return Err(ApiError::bad_request("provider is required")),
        };
        let account = match (req["credentials"]["account_id"].as_str(), &existing) {
            (Some(a), _) => Some(a.to_string()),
            (None, Some(e)) if update => e.account_id.clone(),
            _ => None,
        };
        let i = settings::issuer_set_in(b, &name, &provider, account.as_deref(), now)?;
        Ok(Json(issuer_body(&base, &i)))
    })
    .await
}

/// `DELETE /certificates/issuers/{issuer}`: refused while a policy names it.
async fn delete_issuer(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(name): Path<String>,
) -> Answer {
    p.require(Perm::DeleteIssuers, &st.config.vault)?;
    st.write(move |b, _| {
        if !b.issuers()?.iter().any(|i| i.name == name) {
            return Err(issuer_missing(&name));
        }
        Ok(Json(issuer_body(&base, &settings::issuer_delete_in(b, &name)?)))
    })
    .await
}

// ------------------------------------------------------------------ keys, secrets, sign

/// A version usable now: enabled and inside its validity window.
fn usable(v: &VaultVersion, now: OffsetDateTime) -> Result<(), ApiError> {
    if !v.enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Operation is not allowed on a disabled certificate version {}/{}.",
                v.name, v.version
            ),
        ));
    }
    if now < v.nbf || now > v.exp {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Certificate version {}/{} is outside its validity period.",
                v.name, v.version
            ),
        ));
    }
    Ok(())
}

/// The key operations of a version: from its key type and its certificate's key usage, by Key
/// Vault's table (the same rule `vault show` uses).
fn key_ops(v: &crate::backend::types::VaultVersion) -> Result<Vec<&'static str>, ApiError> {
    vops::version_key_operations(v).map_err(|e| ApiError::internal(e.to_string()))
}

/// The public part of a key serve holds, as a JWK (RFC 7517/7518 members): made from the key
/// itself, not from a certificate, so what a client reads is the key the vault signs with.
fn jwk(key: &crate::pki::PrivateKey) -> Result<Value, ApiError> {
    use x509_parser::prelude::FromDer as _;
    use x509_parser::public_key::PublicKey;
    let der = key.public_key_der();
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
        .map_err(|e| ApiError::internal(format!("the key's public part cannot be read: {e}")))?;
    match spki
        .parsed()
        .map_err(|_| ApiError::internal("the certificate's public key cannot be read"))?
    {
        PublicKey::RSA(rsa) => {
            let trim = |b: &[u8]| b.iter().skip_while(|x| **x == 0).copied().collect::<Vec<u8>>();
            Ok(
                json!({ "kty": "RSA", "n": URL_SAFE_NO_PAD.encode(trim(rsa.modulus)), "e": URL_SAFE_NO_PAD.encode(trim(rsa.exponent)) }),
            )
        }
        PublicKey::EC(point) => {
            let data = point.data();
            let crv = match data.len() {
                65 => "P-256",
                97 => "P-384",
                133 => "P-521",
                _ => return Err(ApiError::internal("unsupported EC point")),
            };
            let half = (data.len() - 1) / 2;
            Ok(
                json!({ "kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(&data[1..1 + half]), "y": URL_SAFE_NO_PAD.encode(&data[1 + half..]) }),
            )
        }
        _ => Err(ApiError::internal("unsupported public key type")),
    }
}

/// `GET /keys/{name}/{version}` and `GET /keys/{name}/`: the public part of the certificate's key.
async fn get_key(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(At { name, version }): Path<At>,
) -> Answer {
    p.require(Perm::Get, &st.config.vault)?;
    st.read(move |b, _| {
        if let Some((pend, held)) = pending_key_at(b, &name, version.as_deref())? {
            // The request's key, made by the vault's create: its newest key version until the
            // merge makes it a certificate's. Key Vault mirrors a certificate version's
            // attributes onto its key (about-certificates.md), and the pending version is
            // disabled, so this key is too: it signs nothing (`sign` answers 403 KeyDisabled).
            // Unconfirmed: whether Key Vault answers a versionless `GET /keys/{name}` with this
            // disabled key, with 404 for a first version, or with the previous completed key on
            // a renewal. No source shows it; serve answers the disabled key, and certroll's
            // client uses no pending key, whichever it is.
            let mut key = jwk(&held)?;
            if pend.kty.ends_with("-HSM") {
                key["kty"] = json!(pend.kty);
            }
            key["kid"] = json!(format!(
                "{base}/keys/{name}/{}",
                pending_version(&name, &pend.request_id)
            ));
            key["key_ops"] = json!(["sign", "verify"]);
            let mut attrs = json!({
                "enabled": false,
                "exportable": pend.exportable,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": RECOVERABLE_DAYS,
            });
            if let Some(t) = pend.created {
                attrs["created"] = json!(secs(t));
                attrs["updated"] = json!(secs(t));
            }
            return Ok(Json(
                json!({ "key": key, "attributes": attrs, "tags": {}, "managed": true }),
            ));
        }
        let (v, tags, _) = load(b, &name, version.as_deref())?;
        let mut key = jwk(&b.private_key(&v)?)?;
        if v.kty.ends_with("-HSM") {
            // Key Vault names an HSM-protected key's type so (JsonWebKeyType `EC-HSM`, `RSA-HSM`).
            key["kty"] = json!(v.kty);
        }
        key["kid"] = json!(format!("{base}/keys/{name}/{}", v.version));
        key["key_ops"] = json!(key_ops(&v)?);
        let mut attrs = attributes(&v);
        attrs["exportable"] = json!(v.exportable);
        Ok(Json(
            json!({ "key": key, "attributes": attrs, "tags": tags, "managed": true }),
        ))
    })
    .await
}

/// `GET /secrets/{name}/{version}` and `GET /secrets/{name}/`: the certificate with its key (PEM
/// or base64 PFX as the policy says) when the key is exportable; the certificates only when it
/// is not.
async fn get_secret(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(At { name, version }): Path<At>,
) -> Answer {
    p.require(Perm::Get, &st.config.vault)?;
    st.read(move |b, now| {
        let (v, tags, policy) = load(b, &name, version.as_deref())?;
        usable(&v, now)?;
        let mut chain = vec![v.cert_der.clone()];
        chain.extend(b.stored_chain(&name, &v.version)?);
        let ct = content_type(policy.as_ref()).to_string();
        // A non-exportable key never leaves: its secret holds the certificates only.
        let (value, ct) = if !v.exportable {
            let pem: String = chain.iter().map(|c| crate::pki::pem::cert_to_pem(c)).collect();
            (pem, "application/x-pem-file".to_string())
        } else {
            let key = b.private_key(&v)?;
            if ct == "application/x-pem-file" {
                let mut pem = crate::pki::pem::key_to_pem(key.pkcs8_der()).to_string();
                for c in &chain {
                    pem.push_str(&crate::pki::pem::cert_to_pem(c));
                }
                (pem, ct)
            } else {
                let pfx = crate::pki::pkcs12::write_pfx(&name, key.pkcs8_der(), &chain, "")
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                (STANDARD.encode(pfx), ct)
            }
        };
        let mut attrs = attributes(&v);
        attrs["exportable"] = json!(v.exportable);
        Ok(Json(json!({
            "value": value,
            "contentType": ct,
            "id": format!("{base}/secrets/{name}/{}", v.version),
            "kid": format!("{base}/keys/{name}/{}", v.version),
            "managed": true,
            "attributes": attrs,
            "tags": tags,
        })))
    })
    .await
}

/// The key of `name`'s waiting request when `version` names it (its placeholder's version,
/// [`pending_version`]) or names no version: Key Vault's create writes the request's key as the
/// name's newest key version.
fn pending_key_at(
    b: &LocalBackend,
    name: &str,
    version: Option<&str>,
) -> Result<Option<(PendingCertificate, crate::pki::PrivateKey)>, ApiError> {
    let Some(pend) = b.pending(name)? else {
        return Ok(None);
    };
    match version.filter(|v| !v.is_empty()) {
        Some(v) if v != pending_version(name, &pend.request_id) => Ok(None),
        _ => {
            let key = b.pending_key(name)?;
            Ok(Some((pend, key)))
        }
    }
}

/// Key Vault's answer to a key operation on a disabled key (a disabled or pending certificate
/// version's): 403 `Forbidden`, inner code `KeyDisabled`.
fn key_disabled(operation: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("Operation {operation} is not allowed on a disabled key."),
    )
    .with_inner("KeyDisabled")
}

/// Signs a digest (JWS algorithm names; ECDSA signatures are r‖s as JWS wants them).
fn sign_digest(pkcs8: &[u8], alg: &str, digest: &[u8]) -> Result<Vec<u8>, ApiError> {
    use aws_lc_rs::digest::{Digest, SHA256, SHA384, SHA512};
    use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, RsaKeyPair};
    let bad = |m: String| ApiError::bad_request(m);
    let (hash, ec): (
        &'static aws_lc_rs::digest::Algorithm,
        Option<&'static sig::EcdsaSigningAlgorithm>,
    ) = match alg {
        "ES256" => (&SHA256, Some(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)),
        "ES384" => (&SHA384, Some(&sig::ECDSA_P384_SHA384_FIXED_SIGNING)),
        "ES512" => (&SHA512, Some(&sig::ECDSA_P521_SHA512_FIXED_SIGNING)),
        "RS256" | "PS256" => (&SHA256, None),
        "RS384" => (&SHA384, None),
        "RS512" => (&SHA512, None),
        other => {
            return Err(bad(format!(
                "alg `{other}` is not ES256, ES384, ES512, RS256, RS384, RS512 or PS256"
            )));
        }
    };
    if digest.len() != hash.output_len() {
        return Err(bad(format!(
            "value must be a {}-byte digest for {alg}",
            hash.output_len()
        )));
    }
    let digest = Digest::import_less_safe(digest, hash).map_err(|_| bad("bad digest".into()))?;
    match ec {
        Some(algorithm) => {
            let pair = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8)
                .map_err(|_| bad(format!("alg {alg} does not fit this certificate's key")))?;
            let s = pair
                .sign_digest(&digest)
                .map_err(|_| ApiError::internal("signing failed"))?;
            Ok(s.as_ref().to_vec())
        }
        None => {
            let pair = RsaKeyPair::from_pkcs8(pkcs8)
                .map_err(|_| bad(format!("alg {alg} does not fit this certificate's key")))?;
            let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match alg {
                "RS256" => &sig::RSA_PKCS1_SHA256,
                "RS384" => &sig::RSA_PKCS1_SHA384,
                "RS512" => &sig::RSA_PKCS1_SHA512,
                _ => &sig::RSA_PSS_SHA256,
            };
            let mut out = vec![0u8; pair.public_modulus_len()];
            pair.sign_digest(padding, &digest, &mut out)
                .map_err(|_| ApiError::internal("signing failed"))?;
            Ok(out)
        }
    }
}

/// `POST /keys/{name}/{version}/sign` and `POST /keys/{name}//sign` (the newest version, as the
/// Rust SDK sends it): `{"alg","value"}` (value = base64url digest) → the signature, base64url;
/// the key never leaves the vault.
async fn sign(
    State(st): Shared,
    Extension(p): Extension<Principal>,
    Base(base): Base,
    Path(At { name, version }): Path<At>,
    bytes: Bytes,
) -> Answer {
    p.require(Perm::Get, &st.config.vault)?;
    let req = body(&bytes)?;
    let alg = req["alg"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("alg is required"))?
        .to_string();
    let value = req["value"]
        .as_str()
        .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
        .ok_or_else(|| ApiError::bad_request("value (base64url digest) is required"))?;
    st.read(move |b, now| {
        if pending_key_at(b, &name, version.as_deref())?.is_some() {
            // A pending request's key belongs to a disabled certificate version: Key Vault
            // refuses to sign with it (research R-pending; azure-sdk-for-python #45342 shows
            // the answer for a disabled key). A root is signed by a completed version's key.
            return Err(key_disabled("sign"));
        }
        let (v, _, _) = load(b, &name, version.as_deref())?;
        if !v.enabled {
            return Err(key_disabled("sign"));
        }
        usable(&v, now)?;
        if !key_ops(&v)?.contains(&"sign") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "Operation sign is not permitted on key {name}: its key usage does not allow signing."
                ),
            ));
        }
        // The key is used inside the vault; it is not exported, so exportability does not matter.
        let key = b.private_key(&v)?;
        let signature = sign_digest(key.pkcs8_der(), &alg, &value)?;
        Ok(Json(json!({
            "kid": format!("{base}/keys/{name}/{}", v.version),
            "value": URL_SAFE_NO_PAD.encode(signature),
        })))
    })
    .await
}
