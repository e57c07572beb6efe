//! `AppState`: what every handler shares: the store (behind one mutex, worked on in tokio's
//! blocking pool), the clock, the plan's `[serve]` settings, the principals and SAS policies.
//!
//! It owns how a request touches the store: [`AppState::read`] sees committed state;
//! [`AppState::write`] is one unit of work that takes the store's writer lock for this request
//! only, so the CLI verbs keep working while serve runs and writes serialize with them.

use super::ApiError;
use super::auth::{Principal, SasPolicy};
use crate::backend::Backend as _;
use crate::backend::local::LocalBackend;
use crate::clock::Clock;
use crate::plan::{Plan, ServeConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// What every handler shares.
pub struct AppState {
    backend: Arc<Mutex<LocalBackend>>,
    clock: Arc<dyn Clock>,
    /// A descriptor on the store file carrying the store's writer lock (an OS lock on the store
    /// itself, as every mutating verb takes it), locked per write request and never closed
    /// while the store is open. None for an in-memory store.
    writer: Option<Arc<std::fs::File>>,
    /// How long a write waits for another writer (a CLI verb) before answering 503.
    lock_timeout: Duration,
    /// The validated plan.
    pub plan: Arc<Plan>,
    /// `[serve]`.
    pub config: ServeConfig,
    /// Bearer tokens and the principals they stand for (Key Vault, ARM).
    pub principals: Vec<Principal>,
    /// SAS policies by the canonical service host they sign for (`{dps}.azure-devices-provisioning.net`,
    /// `{hub}.azure-devices.net`).
    pub sas_policies: std::collections::BTreeMap<String, Vec<SasPolicy>>,
    /// The hub names the plan assigns devices to.
    pub hubs: Vec<String>,
    /// Throttling and injected faults (`[serve.services]`).
    pub faults: super::faults::Faults,
    /// The password of Key Vault backup blobs: made once per store and kept sealed in it, so a
    /// blob restores into the store (the "security domain") it came from.
    backup_password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens and keys stay out of debug output.
        f.debug_struct("AppState")
            .field(
                "store",
                &self.backend.lock().map(|b| b.store().path().to_path_buf()).ok(),
            )
            .field("config.vault", &self.config.vault)
            .field("principals", &self.principals.len())
            .finish()
    }
}

impl AppState {
    /// Wraps an open backend (opened without the writer lock).
    pub fn new(
        backend: LocalBackend,
        clock: Arc<dyn Clock>,
        plan: Arc<Plan>,
        lock_timeout: Duration,
        principals: Vec<Principal>,
        sas_policies: std::collections::BTreeMap<String, Vec<SasPolicy>>,
    ) -> AppState {
        let writer = backend.store().writer_lock_handle().ok().map(Arc::new);
        let mut hubs: Vec<String> = plan
            .groups
            .values()
            .map(|g| g.hub.clone())
            .chain(plan.enrollments.values().map(|e| e.hub.clone()))
            .collect();
        hubs.sort();
        hubs.dedup();
        AppState {
            backend: Arc::new(Mutex::new(backend)),
            clock,
            writer,
            lock_timeout,
            config: plan.serve.clone(),
            faults: super::faults::Faults::new(&plan.serve),
            plan,
            principals,
            sas_policies,
            hubs,
            backup_password: zeroize::Zeroizing::new(String::new()),
        }
    }

    /// Sets the password of Key Vault backup blobs.
    pub fn with_backup_password(mut self, password: zeroize::Zeroizing<String>) -> AppState {
        self.backup_password = password;
        self
    }

    /// The password of Key Vault backup blobs (empty until set: backups are then refused).
    pub fn backup_password(&self) -> zeroize::Zeroizing<String> {
        self.backup_password.clone()
    }

    /// The time decisions are made at (the `--now` clock in tests).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Reads committed state.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalBackend, OffsetDateTime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let backend = self.backend.clone();
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || {
            let guard = lock_backend(&backend);
            f(&guard, now)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
    }

    /// One unit of work: takes the store's writer lock for this request only (so CLI verbs keep
    /// working while serve runs; writes serialize), begin, commit on Ok, rollback on Err.
    ///
    /// Errors: 503 `ServiceUnavailable` with `Retry-After` when another writer holds the store
    /// longer than the lock timeout.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LocalBackend, OffsetDateTime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let backend = self.backend.clone();
        let now = self.clock.now();
        let (writer, timeout) = (self.writer.clone(), self.lock_timeout);
        tokio::task::spawn_blocking(move || {
            // The file lock first: while a CLI verb holds the store, reads keep being served.
            let _writer = match &writer {
                Some(file) => Some(WriterLock::take(file, timeout)?),
                None => None,
            };
            let mut guard = lock_backend(&backend);
            guard.begin().map_err(|e| ApiError::internal(e.to_string()))?;
            match f(&mut guard, now) {
                Ok(out) => {
                    guard.commit().map_err(|e| ApiError::internal(e.to_string()))?;
                    Ok(out)
                }
                Err(e) => {
                    guard.rollback();
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
    }
}

/// Locks the backend; a handler that panicked mid-transaction leaves its transaction open, so
/// it is abandoned here before anyone else uses the connection.
fn lock_backend(backend: &Mutex<LocalBackend>) -> std::sync::MutexGuard<'_, LocalBackend> {
    match backend.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            let mut guard = poisoned.into_inner();
            guard.rollback();
            guard
        }
    }
}

/// The store's writer lock held for one request; released when dropped (the descriptor stays
/// open: closing it would drop SQLite's own locks on the store file).
struct WriterLock<'a>(&'a std::fs::File);

impl<'a> WriterLock<'a> {
    /// Takes the lock, polling up to `timeout`.
    ///
    /// Errors: 503 `ServiceUnavailable` with `Retry-After` while a CLI verb holds the store.
    fn take(file: &'a std::fs::File, timeout: Duration) -> Result<WriterLock<'a>, ApiError> {
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WriterLock(file)),
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut e = ApiError::new(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "another certroll process is writing to the store; try again shortly",
                    );
                    e.retry_after = Some(1);
                    return Err(e);
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(ApiError::internal(format!("the store's writer lock: {e}")));
                }
            }
        }
    }
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
