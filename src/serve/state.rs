//! `AppState`: what every handler shares: the store (behind one mutex, worked on in tokio's
//! blocking pool), the clock, the plan's `[serve]` settings, the principals and SAS policies.
//!
//! It owns how a request touches the store: [`AppState::read`] sees committed state;
//! [`AppState::write`] is one unit of work. Writes that arrive while others are being applied
//! are committed together (group commit): one store transaction under one acquisition of the
//! store's writer lock, each request inside its own savepoint, so one request's failure (409,
//! 412, 400) is rolled back alone and every request gets its own answer, only after the
//! transaction holding its work committed. The writer lock is the store's own (the one every
//! mutating CLI verb takes), held for one group at a time, so the verbs keep working while serve
//! runs and their writes serialize with serve's.

use super::ApiError;
use super::auth::{Principal, SasPolicy};
use crate::backend::Backend as _;
use crate::backend::local::LocalBackend;
use crate::clock::Clock;
use crate::plan::{Plan, ServeConfig};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Most write requests one group commit carries: bounds how long reads wait behind a group.
const GROUP_LIMIT: usize = 64;

/// A queued write: given the store (inside the request's savepoint), runs the request's work and
/// returns how it went, with what answers the request once the group's commit is known; given
/// an error instead (the group could not start), answers with it without running.
type Job = Box<dyn FnOnce(Result<&mut LocalBackend, &ApiError>) -> Finish + Send>;

/// Answers a request, given its group's commit error, if any.
type Answer = Box<dyn FnOnce(Option<&ApiError>) + Send>;

/// A request's work done (not yet committed): `ok` keeps its savepoint; `answer` is given the
/// group's commit error, if any.
struct Finish {
    ok: bool,
    answer: Answer,
}

/// Write requests waiting for the next group, and whether a group is being applied (its
/// worker takes the queue's next group when it is done).
#[derive(Default)]
struct WriteQueue {
    jobs: VecDeque<Job>,
    running: bool,
}

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
    /// Writes waiting for the next group commit.
    queue: Arc<Mutex<WriteQueue>>,
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
    /// The DPS certificate info of every certificate serve has read or checked.
    pub cert_infos: super::dps::CertInfos,
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
            queue: Arc::default(),
            config: plan.serve.clone(),
            faults: super::faults::Faults::new(&plan.serve),
            cert_infos: Default::default(),
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

    /// Reads committed state, in one read transaction.
    ///
    /// Errors: `f`'s; 500 when `f` panics.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalBackend, OffsetDateTime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let backend = self.backend.clone();
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || {
            let guard = lock_backend(&backend);
            // One read transaction for all the request's statements: one snapshot, and the
            // store's shared lock taken once rather than per statement (a page of a query reads
            // three rows per record).
            let conn = guard.store().conn();
            let snapshot = conn.is_autocommit() && conn.execute_batch("BEGIN").is_ok();
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&guard, now)));
            if snapshot {
                let _ = guard.store().conn().execute_batch("COMMIT");
            }
            out.unwrap_or_else(|_| Err(ApiError::internal("the request's worker failed")))
        })
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
    }

    /// One unit of work: applied in the next group commit (see the module doc) inside its own
    /// savepoint; Ok is answered once the group committed, Err after the request's own work was
    /// rolled back (the others' is kept).
    ///
    /// Errors: `f`'s; 503 `ServiceUnavailable` with `Retry-After` when another writer holds the
    /// store longer than the lock timeout; 500 when the group's commit fails or `f` panics.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LocalBackend, OffsetDateTime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // The request's time is when it arrived, not when its group ran.
        let now = self.clock.now();
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, ApiError>>();
        let job: Job = Box::new(move |store| {
            let out = match store {
                // A panic fails its own request only; its savepoint is rolled back.
                Ok(b) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(b, now)))
                    .unwrap_or_else(|_| Err(ApiError::internal("the request's worker failed"))),
                Err(e) => Err(e.clone()),
            };
            Finish {
                ok: out.is_ok(),
                answer: Box::new(move |commit: Option<&ApiError>| {
                    let out = match (out, commit) {
                        (Ok(_), Some(e)) => Err(e.clone()),
                        (out, _) => out,
                    };
                    let _ = tx.send(out);
                }),
            }
        });
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let (backend, queue) = (self.backend.clone(), self.queue.clone());
            let (writer, timeout) = (self.writer.clone(), self.lock_timeout);
            tokio::task::spawn_blocking(move || {
                drain(&backend, &queue, writer.as_deref(), timeout);
            });
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::internal("the request's worker failed")))
    }
}

/// Applies queued writes group by group until the queue is empty.
fn drain(
    backend: &Mutex<LocalBackend>,
    queue: &Mutex<WriteQueue>,
    writer: Option<&std::fs::File>,
    timeout: Duration,
) {
    loop {
        let group: Vec<Job> = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.jobs.is_empty() {
                q.running = false;
                return;
            }
            let n = q.jobs.len().min(GROUP_LIMIT);
            q.jobs.drain(..n).collect()
        };
        // A panic outside the requests' own work answers that group 500 (its answers are
        // dropped) but must not stop the queue: later writes would wait forever.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            apply_group(backend, writer, timeout, group);
        }));
        if applied.is_err() {
            lock_backend(backend).rollback();
        }
    }
}

/// One group: the writer lock, one transaction, a savepoint per request, one commit; then
/// every request's answer.
fn apply_group(
    backend: &Mutex<LocalBackend>,
    writer: Option<&std::fs::File>,
    timeout: Duration,
    group: Vec<Job>,
) {
    let refuse = |group: Vec<Job>, e: ApiError| {
        for job in group {
            (job(Err(&e)).answer)(None);
        }
    };
    // The file lock first: while a CLI verb holds the store, reads keep being served.
    let _writer = match writer.map(|file| WriterLock::take(file, timeout)).transpose() {
        Ok(w) => w,
        Err(e) => return refuse(group, e),
    };
    let mut guard = lock_backend(backend);
    if let Err(e) = guard.begin() {
        return refuse(group, ApiError::internal(e.to_string()));
    }
    let mut finished = Vec::with_capacity(group.len());
    for job in group {
        if let Err(e) = guard.store().conn().execute_batch("SAVEPOINT serve_request") {
            finished.push(job(Err(&ApiError::internal(format!("the store: {e}")))));
            continue;
        }
        let done = job(Ok(&mut guard));
        let conn = guard.store().conn();
        let closed = if done.ok {
            conn.execute_batch("RELEASE serve_request")
        } else {
            conn.execute_batch("ROLLBACK TO serve_request; RELEASE serve_request")
        };
        finished.push(done);
        if let Err(e) = closed {
            // The transaction is in an unknown state: abandon the group.
            guard.rollback();
            let e = ApiError::internal(format!("the store: {e}"));
            for done in finished {
                (done.answer)(Some(&e));
            }
            return;
        }
    }
    let commit = guard.commit().err().map(|e| ApiError::internal(e.to_string()));
    if commit.is_some() {
        guard.rollback();
    }
    drop(guard);
    for done in finished {
        (done.answer)(commit.as_ref());
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
