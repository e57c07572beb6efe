//! `AppState`: what every handler shares: the store (behind one mutex, worked on in tokio's
//! blocking pool), the clock, the plan's `[serve]` settings, the principals and SAS policies.
//!
//! It owns how a request touches the store: [`AppState::read`] sees committed state;
//! [`AppState::write`] and [`AppState::write_checked`] are one unit of work each. Writes that
//! arrive while others are being applied are committed together (group commit): one store
//! transaction under one acquisition of the store's writer lock, and every request gets its own
//! answer only after the transaction holding its work committed. A request's failure (409,
//! 412, 400) changes nothing of its own while the others' work is kept: a [`AppState::write`]
//! runs inside its own savepoint, rolled back on failure; a [`AppState::write_checked`], whose
//! work refuses before it writes anything, runs straight in the group's transaction (a
//! savepoint per request would copy every page it touches into SQLite's sub-journal). Should a
//! checked request fail having written something after all (the store failing under it, a
//! panic), the group is rolled back and run again request by request in savepoints. A checked
//! request's writes set their own etags: the store's etag triggers are off while its group runs. The writer
//! lock is the store's own (the one every mutating CLI verb takes), held for one group at a
//! time, so the verbs keep working while serve runs and their writes serialize with serve's.

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

/// A queued write.
struct Job {
    /// Whether the work runs inside its own savepoint ([`AppState::write`]) or straight in the
    /// group's transaction ([`AppState::write_checked`]).
    savepoint: bool,
    /// Given the store, runs the request's work and returns how it went, with what answers the
    /// request once the group's commit is known; given an error instead (the group could not
    /// start), answers with it without running. A checked job's work may run again (its group
    /// redone); only the last run's answer is sent.
    run: Work,
}

/// A request's work, run (again, for a checked request whose group is redone) on the store or,
/// given an error instead, answering with it.
type Work = Box<dyn FnMut(Result<&mut LocalBackend, &ApiError>) -> Finish + Send>;

/// Answers a request, given its group's commit error, if any.
type Answer = Box<dyn FnOnce(Option<&ApiError>) + Send>;

/// A request's work done (not yet committed): `ok` keeps its work; `answer` is given the
/// group's commit error, if any; `panicked` when the work panicked part-way.
struct Finish {
    ok: bool,
    panicked: bool,
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
        let mut f = Some(f);
        self.enqueue(true, move |b, now| match f.take() {
            Some(f) => f(b, now),
            // A savepointed job's group is never redone.
            None => Err(ApiError::internal("the request's work was run twice")),
        })
        .await
    }

    /// [`write`](Self::write) for work that checks everything that can refuse it (etags,
    /// validation) before it writes anything, so that it either fails having written nothing
    /// or succeeds: it runs straight in the group's transaction, without a savepoint of its
    /// own. The store's triggers do not fire for it: a row it writes that has an etag gets
    /// its new etag from the writing statement itself. `f` may be run more than once (its group redone, see the module doc), each time on
    /// the store as it was before its first run; only the last run's answer is sent.
    ///
    /// Errors: as [`write`](Self::write).
    pub async fn write_checked<T: Send + 'static>(
        &self,
        f: impl Fn(&mut LocalBackend, OffsetDateTime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.enqueue(false, f).await
    }

    /// Queues `f` for the next group commit (in a savepoint of its own when `savepoint`) and
    /// waits for its answer.
    async fn enqueue<T: Send + 'static>(
        &self,
        savepoint: bool,
        mut f: impl FnMut(&mut LocalBackend, OffsetDateTime) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // The request's time is when it arrived, not when its group ran.
        let now = self.clock.now();
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, ApiError>>();
        // Shared by every run's answer: whichever is given the commit's outcome sends.
        let tx = Arc::new(Mutex::new(Some(tx)));
        let run = move |store: Result<&mut LocalBackend, &ApiError>| {
            let (out, panicked) = match store {
                // A panic fails its own request only; its work is rolled back.
                Ok(b) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(b, now))) {
                    Ok(out) => (out, false),
                    Err(_) => (Err(ApiError::internal("the request's worker failed")), true),
                },
                Err(e) => (Err(e.clone()), false),
            };
            let tx = tx.clone();
            Finish {
                ok: out.is_ok(),
                panicked,
                answer: Box::new(move |commit: Option<&ApiError>| {
                    let out = match (out, commit) {
                        (Ok(_), Some(e)) => Err(e.clone()),
                        (out, _) => out,
                    };
                    if let Some(tx) = tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = tx.send(out);
                    }
                }),
            }
        };
        let job = Job {
            savepoint,
            run: Box::new(run),
        };
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

/// Applies queued writes group by group until the queue is empty. A group is the queue's
/// longest prefix (at most [`GROUP_LIMIT`]) of jobs of one kind, savepointed or checked, so a
/// checked group can be redone whole.
fn drain(
    backend: &Mutex<LocalBackend>,
    queue: &Mutex<WriteQueue>,
    writer: Option<&std::fs::File>,
    timeout: Duration,
) {
    loop {
        let mut group: Vec<Job> = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            let Some(kind) = q.jobs.front().map(|j| j.savepoint) else {
                q.running = false;
                return;
            };
            let n = q
                .jobs
                .iter()
                .take(GROUP_LIMIT)
                .take_while(|j| j.savepoint == kind)
                .count();
            q.jobs.drain(..n).collect()
        };
        // A panic outside the requests' own work answers that group 500 (its answers are
        // dropped) but must not stop the queue: later writes would wait forever.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            apply_group(backend, writer, timeout, &mut group);
        }));
        if applied.is_err() {
            lock_backend(backend).rollback();
        }
        dispose(group);
    }
}

/// Drops a group's answered jobs off the queue's thread: each holds its request's body (a
/// thousand parsed records for a bulk operation), and freeing them here was about a tenth of
/// this thread's time in a bulk roll, time the next group waited for.
fn dispose(group: Vec<Job>) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(group))),
        Err(_) => drop(group),
    }
}

/// One group: the writer lock, one transaction, one commit; then every request's answer. A
/// checked group runs straight; one whose request failed having written something is rolled
/// back and run again with a savepoint per request.
fn apply_group(
    backend: &Mutex<LocalBackend>,
    writer: Option<&std::fs::File>,
    timeout: Duration,
    group: &mut [Job],
) {
    let refuse = |group: &mut [Job], e: ApiError| {
        for job in group {
            ((job.run)(Err(&e)).answer)(None);
        }
    };
    // The file lock first: while a CLI verb holds the store, reads keep being served.
    let _writer = match writer.map(|file| WriterLock::take(file, timeout)).transpose() {
        Ok(w) => w,
        Err(e) => return refuse(group, e),
    };
    let mut guard = lock_backend(backend);
    let checked = group.first().is_some_and(|j| !j.savepoint);
    // The store's etag triggers are off while a checked group runs: its writes set their etags
    // themselves, and while a table has a trigger (whose body calls a function) SQLite copies
    // every page a statement on it touches into a statement journal first. They are on for
    // every other group, whose writes may count on them.
    let triggers = guard.store().conn().set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
        !checked,
    );
    if let Err(e) = triggers.map_err(|e| ApiError::internal(format!("the store: {e}")))
        && !checked
    {
        return refuse(group, e);
    }
    if checked {
        match run_straight(&mut guard, group) {
            Ok(Some(finished)) => return commit_and_answer(guard, finished),
            Ok(None) => {
                // Every run's answer so far was dropped unsent: the redo answers.
                guard.rollback();
                tracing::warn!(
                    "a write failed part-way in a group of {} requests: running them again one by one",
                    group.len()
                );
            }
            Err(e) => return refuse(group, e),
        }
    }
    if let Err(e) = guard.begin() {
        return refuse(group, ApiError::internal(e.to_string()));
    }
    let mut finished = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        if let Err(e) = guard.store().conn().execute_batch("SAVEPOINT serve_request") {
            finished.push((job.run)(Err(&ApiError::internal(format!("the store: {e}")))));
            continue;
        }
        let done = (job.run)(Ok(&mut guard));
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
    commit_and_answer(guard, finished);
}

/// Runs a checked group's work straight in one transaction. None when a request failed having
/// written something (or panicked, or the transaction ended under it): the transaction is left
/// for the caller to roll back.
///
/// Errors: the transaction could not start (500).
fn run_straight(
    guard: &mut std::sync::MutexGuard<'_, LocalBackend>,
    group: &mut [Job],
) -> Result<Option<Vec<Finish>>, ApiError> {
    guard.begin().map_err(|e| ApiError::internal(e.to_string()))?;
    let mut finished = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        let before = guard.store().conn().total_changes();
        let done = (job.run)(Ok(&mut **guard));
        let conn = guard.store().conn();
        // A refusal that changed rows, or a transaction SQLite ended itself (it rolls back on
        // some errors), leaves nothing to keep of the group as it ran.
        let dirty = done.panicked || conn.is_autocommit() || (!done.ok && conn.total_changes() != before);
        if dirty {
            return Ok(None);
        }
        finished.push(done);
    }
    Ok(Some(finished))
}

/// Commits the group's transaction, then answers every request of it.
fn commit_and_answer(mut guard: std::sync::MutexGuard<'_, LocalBackend>, finished: Vec<Finish>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::types::HubIdentity;
    use crate::store::queries as q;

    const PLAN: &str = "version = 1\n[policies.device]\nkey = { type = \"EC\", curve = \"P-256\" }\n\
        validity_days = 365\n[policies.ca]\nkey = { type = \"EC\", curve = \"P-256\" }\n\
        validity_days = 3650\n[ca.root]\nsubject = \"CN=Root\"\npolicy = \"ca\"\n\
        [enrollments.d]\nissuer = \"root\"\npolicy = \"device\"\nhub = \"h\"\n";

    fn state() -> Arc<AppState> {
        let dir = std::env::temp_dir();
        let plan = crate::plan::parse(&dir.join("plan.toml"), PLAN).expect("the test plan");
        let backend = LocalBackend::new(crate::store::Store::open_empty().unwrap());
        let clock = Arc::new(crate::clock::FixedClock(
            time::macros::datetime!(2026-12-01 0:00 UTC),
        ));
        Arc::new(AppState::new(
            backend,
            clock,
            Arc::new(plan),
            Duration::from_secs(1),
            Vec::new(),
            Default::default(),
        ))
    }

    /// A request's work in these tests.
    type TestWork = Box<dyn Fn(&mut LocalBackend) -> Result<(), ApiError> + Send + Sync>;

    fn identity(id: &str) -> HubIdentity {
        HubIdentity {
            hub: "h".into(),
            device_id: id.into(),
            status: crate::backend::types::Status::Enabled,
            auth_type: "selfSigned".into(),
            primary_thumbprint: Some("AA".repeat(20)),
            secondary_thumbprint: None,
        }
    }

    /// Queues `writes` as one group (no worker runs until all are queued), applies it, and
    /// returns each request's answer, in order.
    fn one_group(state: &Arc<AppState>, writes: Vec<(bool, TestWork)>) -> Vec<Result<(), ApiError>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Marked running: the writes queue up without starting a worker.
            state.queue.lock().unwrap().running = true;
            let n = writes.len();
            let tasks: Vec<_> = writes
                .into_iter()
                .map(|(checked, f)| {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if checked {
                            state.write_checked(move |b, _| f(b)).await
                        } else {
                            state.write(move |b, _| f(b)).await
                        }
                    })
                })
                .collect();
            while state.queue.lock().unwrap().jobs.len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (backend, queue) = (state.backend.clone(), state.queue.clone());
            tokio::task::spawn_blocking(move || drain(&backend, &queue, None, Duration::from_secs(1)))
                .await
                .unwrap();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    }

    fn stored(state: &AppState, id: &str) -> bool {
        let b = state.backend.lock().unwrap();
        q::hub_get(b.store().conn(), "h", id).unwrap().is_some()
    }

    fn put(id: &'static str) -> TestWork {
        Box::new(move |b| {
            q::hub_put(b.store().conn(), &identity(id), false, OffsetDateTime::UNIX_EPOCH)
                .map_err(|e| ApiError::internal(e.to_string()))
        })
    }

    #[test]
    fn a_checked_request_refused_before_writing_leaves_the_others_of_its_group_and_runs_once() {
        let state = state();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        let refused: TestWork = Box::new(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(ApiError::conflict("refused before writing"))
        });
        let answers = one_group(&state, vec![(true, put("a")), (true, refused), (true, put("b"))]);
        assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert_eq!(
            answers[1].as_ref().unwrap_err().status,
            http::StatusCode::CONFLICT
        );
        assert!(stored(&state, "a") && stored(&state, "b"));
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a clean refusal does not redo its group"
        );
    }

    #[test]
    fn a_checked_request_that_fails_having_written_is_undone_alone_by_redoing_its_group() {
        let state = state();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        // A request that breaks its promise: it writes, then refuses.
        let dirty: TestWork = Box::new(move |b| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            q::hub_put(
                b.store().conn(),
                &identity("dirty"),
                false,
                OffsetDateTime::UNIX_EPOCH,
            )
            .map_err(|e| ApiError::internal(e.to_string()))?;
            Err(ApiError::bad_request("refused after writing"))
        });
        let panics: TestWork = Box::new(|b| {
            q::hub_put(
                b.store().conn(),
                &identity("panicked"),
                false,
                OffsetDateTime::UNIX_EPOCH,
            )
            .unwrap();
            panic!("a bug in a request's work");
        });
        let answers = one_group(
            &state,
            vec![
                (true, put("a")),
                (true, dirty),
                (true, put("b")),
                (true, panics),
                (true, put("c")),
            ],
        );
        for i in [0, 2, 4] {
            assert!(answers[i].is_ok(), "request {i}: {answers:?}");
        }
        assert_eq!(
            answers[1].as_ref().unwrap_err().status,
            http::StatusCode::BAD_REQUEST
        );
        assert_eq!(
            answers[3].as_ref().unwrap_err().status,
            http::StatusCode::INTERNAL_SERVER_ERROR
        );
        for id in ["a", "b", "c"] {
            assert!(stored(&state, id), "{id} landed");
        }
        assert!(!stored(&state, "dirty"), "the refused request's write was undone");
        assert!(
            !stored(&state, "panicked"),
            "the panicked request's write was undone"
        );
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the group was redone once, in savepoints"
        );
    }

    #[test]
    fn a_write_that_counts_on_the_etag_trigger_after_a_checked_group_still_gets_a_new_etag() {
        let state = state();
        let etag = |state: &AppState| {
            let b = state.backend.lock().unwrap();
            crate::store::queries_dps::hub_meta(b.store().conn(), "h", "a")
                .unwrap()
                .unwrap()
                .etag
        };
        let answers = one_group(&state, vec![(true, put("a"))]);
        assert!(answers[0].is_ok(), "{answers:?}");
        let first = etag(&state);
        assert_eq!(first.len(), 16, "the checked write set its own etag");
        // A writer that sets no etag, as the CLI's and the other requests' writers.
        let twin: TestWork = Box::new(|b| {
            crate::store::queries_dps::set_twin(b.store().conn(), "h", "a", r#"{"tags":{}}"#)
                .map_err(|e| ApiError::internal(e.to_string()))
        });
        let answers = one_group(&state, vec![(false, twin)]);
        assert!(answers[0].is_ok(), "{answers:?}");
        let second = etag(&state);
        assert_eq!(second.len(), 16);
        assert_ne!(second, first, "the trigger gave the row a new etag");
    }

    #[test]
    fn savepointed_and_checked_requests_queue_in_order_and_each_kind_keeps_its_rules() {
        let state = state();
        let failing: TestWork = Box::new(|b| {
            q::hub_put(
                b.store().conn(),
                &identity("undone"),
                false,
                OffsetDateTime::UNIX_EPOCH,
            )
            .map_err(|e| ApiError::internal(e.to_string()))?;
            Err(ApiError::bad_request("refused after writing, in its savepoint"))
        });
        let answers = one_group(
            &state,
            vec![
                (true, put("a")),
                (false, failing),
                (false, put("b")),
                (true, put("c")),
            ],
        );
        assert!(
            answers[0].is_ok() && answers[2].is_ok() && answers[3].is_ok(),
            "{answers:?}"
        );
        assert!(answers[1].is_err());
        for id in ["a", "b", "c"] {
            assert!(stored(&state, id), "{id} landed");
        }
        assert!(!stored(&state, "undone"));
    }
}
