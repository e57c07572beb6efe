//! Key Vault's certificates data plane (REST 7.x; any `api-version` is accepted), with the
//! certificate-backed keys and secrets: the routes of azure-wire.md table 1.5 over the vault
//! operations of `ops::vault` and the `Vault` backend.
//!
//! Every request passes the challenge first: without `Authorization` it is answered 401 before
//! its body is read (the SDKs' first request is bodiless on purpose). Every handler then checks
//! the principal's certificate permission and answers Key Vault's shapes: ids carry the host and
//! port the request came to, versions are 32 hex characters, times are Unix seconds, errors are
//! `{"error":{"code","message"}}`.

use super::ApiError;
use super::auth::{self, Principal};
use super::state::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use std::sync::Arc;

/// The Key Vault router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .fallback(unknown_operation)
        .layer(axum::middleware::from_fn_with_state(state.clone(), challenge))
        .with_state(state)
}

/// The challenge: resolves the bearer principal (401 + `WWW-Authenticate` otherwise) and hands
/// it to the handlers as an extension, before any body is read.
async fn challenge(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let host = request_host(&req);
    match auth::bearer(&state, req.headers(), &auth::keyvault_resource(&host)).await {
        Ok(principal) => {
            req.extensions_mut().insert::<Principal>(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The Host the request came to (ids are built on it, so clients follow them back here).
fn request_host(req: &Request) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

async fn unknown_operation(req: Request) -> ApiError {
    ApiError::bad_request(format!(
        "{} {} is not a Key Vault certificates operation this vault serves",
        req.method(),
        req.uri().path()
    ))
}
