//! The embedded store: one SQLite file holding the vault, the enrollment service, the hub
//! registry and the devices, for the local backend (and, later, the emulator).
//!
//! Owns the schema and its migrations, the single-writer lock, and sealing of private keys.
//! It knows nothing of plans or verbs: callers pass in the time and the rows.

pub mod queries;
pub mod queries_dps;
pub mod queries_issued;
pub mod queries_journal;
pub mod queries_notify;
pub mod queries_vault;
pub mod rekey;
pub mod seal;
#[cfg(test)]
pub(crate) mod test_support;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use seal::{SealError, StoreKey};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What SQLite said, in words where its own are cryptic. A busy or locked database here is
/// another program's transaction (another certroll waits on the writer lock and says so).
fn sqlite_words(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            "another program (not certroll) holds a transaction on the store file and kept it locked; \
             try again when it has finished"
                .to_string()
        }
        _ => e.to_string(),
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {}", sqlite_words(source))]
    Sqlite {
        /// The store file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The store file does not exist (and the command does not create one).
    #[error("no store at {0} (run `certroll issue` first)")]
    Missing(PathBuf),
    /// Another certroll holds the store.
    #[error(
        "another certroll process is writing to {path}; gave up after {:.1} s (try again when it has finished)",
        waited.as_secs_f64()
    )]
    Busy {
        /// The store file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The store was written by a newer certroll.
    #[error("store {path} has schema version {found}; this certroll knows up to {known}: upgrade certroll")]
    TooNew {
        /// The store file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// The store key is missing or wrong.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The store key is needed but none is available.
    #[error("store {store} exists but its key file {key} is missing (set --key-file or CERTROLL_STORE_KEY)")]
    NoKey {
        /// The store file.
        store: PathBuf,
        /// Where the key was looked for.
        key: PathBuf,
    },
    /// A file next to the store could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The store key opens nothing in this store.
    #[error("the store key does not belong to {0} (wrong --key-file or CERTROLL_STORE_KEY?)")]
    WrongKey(PathBuf),
    /// The store path is a directory, device or other non-file.
    #[error("store {0} is not a regular file (check `path` in the plan's [backend])")]
    NotAFile(PathBuf),
    /// The store file is empty: truncated, or made by hand. certroll never builds a new fleet
    /// into it.
    #[error(
        "store {store} is empty (0 bytes). If it held a fleet, restore it from a backup; if it is a store that was \
         never used, remove it and its key file {key} and run `certroll issue` again"
    )]
    Empty {
        /// The store file.
        store: PathBuf,
        /// Its key file.
        key: PathBuf,
    },
    /// The key file is empty although the store has sealed keys with the key it held.
    #[error(
        "the store key file {key} is empty, but {store} holds {sealed} private key(s) sealed with the lost key: \
         restore the key file from a backup (or set CERTROLL_STORE_KEY); certroll will not replace it"
    )]
    EmptyKey {
        /// The store file.
        store: PathBuf,
        /// The key file.
        key: PathBuf,
        /// How many sealed keys the store holds.
        sealed: u64,
    },
    /// The store file is not a SQLite database, or SQLite found it damaged.
    #[error("store {path} is damaged or not a certroll store ({message}); restore it from a backup")]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// A stored record is inconsistent.
    #[error("store {path}: {message}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The identity and plaintext of the check value sealed into every store, which proves a key is
/// the store's.
const KEY_CHECK_IDENTITY: &str = "certroll/store-check";
const KEY_CHECK_VALUE: &[u8] = b"certroll store";

/// Schema migrations, in order. The store's `user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2_vault.sql"),
    include_str!("schema_v3_notify.sql"),
    include_str!("schema_v4_journal.sql"),
    include_str!("schema_v5_crl.sql"),
    include_str!("schema_v6_seq.sql"),
    include_str!("schema_v7_dps_hub.sql"),
    include_str!("schema_v8_decision_inputs.sql"),
    include_str!("schema_v9_version_tags.sql"),
    include_str!("schema_v10_notify_remote.sql"),
    include_str!("schema_v11_notify_touched.sql"),
    include_str!("schema_v12_etag_writers.sql"),
    include_str!("schema_v13_dps_etag_writers.sql"),
    include_str!("schema_v14_owed_deliveries.sql"),
    include_str!("schema_v15_issued_versions.sql"),
    include_str!("schema_v16_deleted_versions.sql"),
    include_str!("schema_v17_disabled_thumbprints.sql"),
    include_str!("schema_v18_hub_extra.sql"),
    include_str!("schema_v19_registration_device_id.sql"),
    include_str!("schema_v20_purged_versions.sql"),
];

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The store file.
    pub path: PathBuf,
    /// The store key file; default `<store>.key`.
    pub key_file: Option<PathBuf>,
    /// Create the store (and its key) when missing; for mutating commands.
    pub create: bool,
    /// Take the single-writer lock; for mutating commands.
    pub write: bool,
    /// How long to wait for another writer.
    pub lock_timeout: Duration,
}

/// How often a [`Checkpointer`] checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Write transactions committed by the stores of this process ([`Store::commits`]).
static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// SQLite's default `wal_autocheckpoint` (pages), restored after a [`Checkpointer`].
const DEFAULT_AUTOCHECKPOINT: i64 = 1000;

/// A thread checkpointing a store's write-ahead log ([`Store::start_checkpointer`]); dropping it
/// stops the thread and waits for a checkpoint in progress.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An open store.
pub struct Store {
    // Declared before `lock` so it is dropped first: closing the lock's descriptor while SQLite
    // still has the file open would drop SQLite's own POSIX locks on it.
    conn: Connection,
    path: PathBuf,
    key: StoreKey,
    /// A descriptor on the store file itself, kept for the store's life; the single-writer lock
    /// is an OS lock (flock) on it, so no file that can be deleted decides who writes.
    lock: Option<File>,
    locked: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

fn default_key_file(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".key");
    path.with_file_name(name)
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let p = p.to_path_buf();
    move |source| StoreError::Io { path: p, source }
}

fn sql_err(p: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError + use<> {
    let p = p.to_path_buf();
    move |source| StoreError::Sqlite { path: p, source }
}

/// Whether a key file exists and holds nothing but whitespace.
fn key_file_is_empty(key_file: &Path) -> bool {
    std::fs::metadata(key_file).is_ok_and(|m| m.is_file() && m.len() <= 2)
        && std::fs::read(key_file).is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace))
}

/// Whether a store's write-ahead log holds data (a store file of 0 bytes with a WAL is a new
/// store whose first transactions were not yet checkpointed, not an empty one).
fn wal_has_data(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_os_string();
    wal.push("-wal");
    std::fs::metadata(wal).is_ok_and(|m| m.len() > 0)
}

impl Store {
    /// Opens (and with `create`, creates) a store, migrating its schema.
    ///
    /// A new store is built under a temporary name and linked into place whole, after its key
    /// file was written crash-atomically, so a kill at any point leaves either no store or a
    /// complete empty one. A store path that is not a regular file, an empty (0-byte) store, and
    /// a key file that is empty while the store holds sealed keys are refused as bad input.
    pub fn open(opts: &OpenOptions) -> Result<Store, StoreError> {
        let path = opts.path.clone();
        match std::fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(StoreError::NotAFile(path));
            }
            Ok(meta) if meta.len() == 0 && !wal_has_data(&path) => {
                return Err(StoreError::Empty {
                    key: opts.key_file.clone().unwrap_or_else(|| default_key_file(&path)),
                    store: path,
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !opts.create {
                    return Err(StoreError::Missing(path));
                }
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
        let key_file = opts.key_file.clone().unwrap_or_else(|| default_key_file(&path));
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
            let key = Self::key_for_new_store(&path, &key_file)?;
            Self::create_file(&path, key)?;
        }

        let lock = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(io_err(&path))?;
        let env_key = StoreKey::from_env()?;
        let from_env = env_key.is_some();
        let key = match env_key {
            Some(k) => k,
            None => match Self::read_key_file(&path, &key_file, opts.write)? {
                Some(k) => k,
                None => {
                    return Err(StoreError::NoKey {
                        store: path,
                        key: key_file,
                    });
                }
            },
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(sql_err(&path))?;
        let mut store = Store {
            conn,
            path,
            key,
            lock: Some(lock),
            locked: false,
        };
        if opts.write {
            store.lock_writer(opts.lock_timeout)?;
        }
        store.configure(opts.lock_timeout)?;
        if !store.locked && store.needs_migration()? {
            // A reader upgrades the schema only holding the writer lock, so it never races a
            // writer; the data is not touched.
            store.lock_writer(opts.lock_timeout)?;
            store.migrate()?;
            store.unlock_writer();
        } else {
            store.migrate()?;
        }
        match store.check_key(opts.write) {
            Err(StoreError::WrongKey(_)) if !from_env => store.finish_rekey(&key_file)?,
            other => other?,
        }
        if !from_env && store.locked {
            // A rekey cut off before its transaction left a key that sealed nothing: drop it.
            let _ = std::fs::remove_file(rekey::pending_key_file(&key_file));
        }
        if store.locked {
            // Temporary files of a store or key creation (or a rekey) that a kill cut off.
            for file in [&store.path, &key_file, &rekey::pending_key_file(&key_file)] {
                crate::fsutil::remove_stale_temps(file, Duration::from_secs(60));
            }
        }
        Ok(store)
    }

    /// The key file does not open this store: if a rekey was cut off after re-sealing the store
    /// but before renaming its new key into place, the new key waits beside the key file; use it,
    /// and (a writer) finish the rename.
    fn finish_rekey(&mut self, key_file: &Path) -> Result<(), StoreError> {
        let pending = rekey::pending_key_file(key_file);
        let Ok(Some(new)) = StoreKey::from_file(&pending, false) else {
            return Err(StoreError::WrongKey(self.path.clone()));
        };
        let old = std::mem::replace(&mut self.key, new);
        if self.check_key(false).is_err() {
            self.key = old;
            return Err(StoreError::WrongKey(self.path.clone()));
        }
        if self.locked {
            tracing::warn!(
                "finishing a rekey that was cut off: {} becomes the store key",
                pending.display()
            );
            std::fs::rename(&pending, key_file).map_err(io_err(key_file))?;
            let dir = key_file.parent().unwrap_or(Path::new("."));
            crate::fsutil::sync_dir(dir).map_err(io_err(dir))?;
        }
        Ok(())
    }

    /// Connection settings every open applies (none of them writes to the file).
    fn configure(&mut self, busy: Duration) -> Result<(), StoreError> {
        let sql = sql_err(&self.path);
        self.conn.busy_timeout(busy).map_err(sql)?;
        // Every query is a cached statement; keep them all prepared.
        self.conn.set_prepared_statement_cache_capacity(64);
        // The bundled SQLite has STAT4, which re-prepares a statement whenever a parameter is
        // bound anew; our queries have one obvious plan, so keep it (query planner stability).
        self.conn
            .set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(sql_err(&self.path))?;
        self.conn
            .execute_batch(
                // A 16 MiB page cache keeps a chunk's B-tree pages in memory across statements;
                // temporary structures stay in memory too. journal_mode is WAL from creation
                // (it is kept in the file); older stores are switched here.
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
                 PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
            )
            .map_err(|source| self.classify_sqlite(source))
    }

    /// The store key for a store about to be created: the environment's, or the key file's, or
    /// (when the key file is absent) a new one written crash-atomically. An empty key file, which
    /// only an older certroll killed while creating its store could leave, is replaced.
    fn key_for_new_store(path: &Path, key_file: &Path) -> Result<StoreKey, StoreError> {
        if let Some(k) = StoreKey::from_env()? {
            return Ok(k);
        }
        if key_file_is_empty(key_file) {
            tracing::warn!(
                "the key file {} is empty and there is no store {}: making a new key",
                key_file.display(),
                path.display()
            );
            std::fs::remove_file(key_file).map_err(io_err(key_file))?;
        }
        Ok(StoreKey::from_file(key_file, true)?.expect("created when absent"))
    }

    /// Reads the key file of an existing store. An empty key file (an older certroll killed
    /// while creating the store) is replaced by a writer when the store holds no sealed key yet;
    /// otherwise it is refused with what to do.
    fn read_key_file(path: &Path, key_file: &Path, write: bool) -> Result<Option<StoreKey>, StoreError> {
        if key_file_is_empty(key_file) {
            let sealed = Self::sealed_key_count(path)?;
            if sealed > 0 || !write {
                return Err(StoreError::EmptyKey {
                    store: path.to_path_buf(),
                    key: key_file.to_path_buf(),
                    sealed,
                });
            }
            std::fs::remove_file(key_file).map_err(io_err(key_file))?;
            let key = StoreKey::from_file(key_file, true)?.expect("created when absent");
            // The check value was sealed under the lost key; the new key seals a new one.
            let conn = Connection::open(path).map_err(sql_err(path))?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(sql_err(path))?;
            conn.execute("DELETE FROM store_meta WHERE key = 'key_check'", [])
                .map_err(sql_err(path))?;
            return Ok(Some(key));
        }
        if let Some(meta) = std::fs::metadata(key_file).ok().filter(|m| m.is_file()) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "the store key file {} is readable by others (mode {mode:04o}); `chmod 600 {}`",
                    key_file.display(),
                    key_file.display()
                );
            }
        }
        StoreKey::from_file(key_file, false).map_err(StoreError::from)
    }

    /// How many sealed private keys a store file holds (vault versions, deleted versions,
    /// requests waiting for an outside CA), read without the store key.
    fn sealed_key_count(path: &Path) -> Result<u64, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql_err(path))?;
        let mut total = 0u64;
        for table in ["vault_versions", "vault_deleted_versions", "vault_pending"] {
            let exists: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                    [table],
                    |r| r.get(0),
                )
                .map_err(sql_err(path))?;
            if exists {
                let n: i64 = conn
                    .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .map_err(sql_err(path))?;
                total += n as u64;
            }
        }
        Ok(total)
    }

    /// Builds a new, empty store (schema, page size, WAL mode, the key check) under a temporary
    /// name and links it into place, so no one ever sees a half-made store. If another process
    /// linked its store first, that one is kept.
    fn create_file(path: &Path, key: StoreKey) -> Result<(), StoreError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.certroll-new-{}", std::process::id()));
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        let built = (|| {
            // Create the file 0600 before SQLite does, so it never exists with looser bits.
            drop(crate::fsutil::create_private(&tmp).map_err(io_err(&tmp))?);
            let conn = Connection::open(&tmp).map_err(sql_err(&tmp))?;
            // Rows are mostly certificate and key blobs of about a kilobyte: 16 KiB pages halve
            // the pages (and WAL frames) a batch of them writes.
            conn.execute_batch("PRAGMA page_size = 16384; PRAGMA journal_mode = DELETE;")
                .map_err(sql_err(&tmp))?;
            let mut store = Store {
                conn,
                path: tmp.clone(),
                key,
                lock: None,
                locked: true,
            };
            store.migrate()?;
            store.check_key(true)?;
            store
                .conn
                .execute_batch("PRAGMA journal_mode = WAL;")
                .map_err(sql_err(&tmp))?;
            let Store { conn, .. } = store;
            conn.close().map_err(|(_, e)| sql_err(&tmp)(e))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&tmp))?;
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(path)(e)),
            }
            crate::fsutil::sync_dir(dir).map_err(io_err(dir))
        })();
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        built
    }

    /// Takes the single-writer lock: an OS lock on the store file, polling up to `timeout`.
    /// Serve takes it per request and releases it with [`unlock_writer`](Self::unlock_writer);
    /// verbs hold it for their whole run.
    pub fn lock_writer(&mut self, timeout: Duration) -> Result<(), StoreError> {
        if self.locked {
            return Ok(());
        }
        let Some(file) = &self.lock else {
            return Ok(());
        };
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => {
                    self.locked = true;
                    return Ok(());
                }
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy {
                        path: self.path.clone(),
                        waited: start.elapsed(),
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(StoreError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Releases the writer lock (the descriptor stays open, so SQLite's locks are untouched).
    pub fn unlock_writer(&mut self) {
        if self.locked {
            if let Some(file) = &self.lock {
                let _ = file.unlock();
            }
            self.locked = false;
        }
    }

    /// A second descriptor on the store file that takes the same writer lock (a flock on the
    /// same open file), for a server that waits for the lock without holding the store: lock
    /// and unlock it per write, and keep it open as long as the store is (closing a descriptor
    /// on the store file while SQLite has it open would drop SQLite's own locks).
    pub fn writer_lock_handle(&self) -> std::io::Result<File> {
        match &self.lock {
            Some(file) => file.try_clone(),
            None => Err(std::io::Error::other("an in-memory store has no writer lock")),
        }
    }

    /// Whether this store holds the writer lock.
    pub fn holds_writer_lock(&self) -> bool {
        self.locked
    }

    /// A SQLite error on this store, with a file that is not a database, or is damaged, told
    /// apart as [`StoreError::Damaged`].
    fn classify_sqlite(&self, source: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match source.sqlite_error_code() {
            Some(NotADatabase | DatabaseCorrupt) => StoreError::Damaged {
                path: self.path.clone(),
                message: source.to_string(),
            },
            _ => self.err(source),
        }
    }

    fn needs_migration(&self) -> Result<bool, StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.classify_sqlite(e))?;
        Ok(version < MIGRATIONS.len() as i64)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.classify_sqlite(e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            tx.execute_batch(migration).map_err(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        Ok(())
    }

    /// Proves the store key is this store's: opens the check value, or seals one into a store
    /// that has none yet (only a writer does).
    fn check_key(&mut self, write: bool) -> Result<(), StoreError> {
        const IDENTITY: &str = KEY_CHECK_IDENTITY;
        let sealed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM store_meta WHERE key = 'key_check'", [], |r| {
                r.get(0)
            })
            .map(Some)
            .or_else(|e| {
                if e == rusqlite::Error::QueryReturnedNoRows {
                    Ok(None)
                } else {
                    Err(e)
                }
            })
            .map_err(|e| self.err(e))?;
        match sealed {
            Some(sealed) => match self.key.open(IDENTITY, &sealed) {
                Ok(_) => Ok(()),
                Err(_) => Err(StoreError::WrongKey(self.path.clone())),
            },
            None if write => {
                let sealed = self.key.seal(IDENTITY, KEY_CHECK_VALUE)?;
                self.conn
                    .execute(
                        "INSERT INTO store_meta (key, value) VALUES ('key_check', ?1)",
                        [sealed],
                    )
                    .map_err(|e| self.err(e))?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key that seals private keys.
    pub fn key(&self) -> &StoreKey {
        &self.key
    }

    /// A read connection.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// How many write transactions the stores of this process committed ([`write`](Self::write)
    /// outside a batch, and [`commit_batch`](Self::commit_batch)): what a run costs the disk,
    /// for measurements (`CERTROLL_LOG=certroll::store=debug` shows it when an azure backend
    /// ends).
    pub fn commits() -> u64 {
        COMMITS.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` in one write transaction and commits if it returns Ok. Inside a batch
    /// ([`begin_batch`](Self::begin_batch)) it runs as part of the batch, which is committed or abandoned whole.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Connection, &StoreKey) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_shared(f)
    }

    /// As [`write`](Self::write), through a shared borrow: for a writer that holds the store
    /// beside a reader of it on the same thread (the azure backend settles each delivery as it
    /// finishes while the delivery still reads the vault client that holds the store). The
    /// connection is not `Sync`, so this is still one thread's writes, one after another.
    pub fn write_shared<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Connection, &StoreKey) -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.conn.is_autocommit() {
            // Inside a batch: an error abandons the whole batch (`rollback_batch`), so a
            // savepoint per call would only copy pages into a sub-journal for nothing.
            return f(&self.conn, &self.key);
        }
        let (begin, commit, rollback) = ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK");
        self.conn.execute_batch(begin).map_err(|e| self.err(e))?;
        match f(&self.conn, &self.key) {
            Ok(out) => {
                self.conn.execute_batch(commit).map_err(|e| self.err(e))?;
                COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(out)
            }
            Err(e) => {
                let _ = self.conn.execute_batch(rollback);
                Err(e)
            }
        }
    }

    /// Starts checkpointing the write-ahead log on a thread of its own, with a connection of its
    /// own, and stops this connection's automatic checkpoints: a long run's commits then only
    /// append to the log, and the flushes to disk a checkpoint makes (about 35 of 14 ms each in a
    /// 100,000-device breach roll) happen beside them instead of inside them. A passive checkpoint
    /// waits for no reader or writer, and copying committed pages into the database is safe at
    /// any moment. None for a store without a file. End it with
    /// [`stop_checkpointer`](Self::stop_checkpointer).
    pub fn start_checkpointer(&mut self) -> Result<Option<Checkpointer>, StoreError> {
        if !self.locked {
            return Ok(None);
        }
        self.start_shared_checkpointer()
    }

    /// [`start_checkpointer`](Self::start_checkpointer) for a store opened without the writer
    /// lock by a process that takes it for each unit of work it writes (`certroll serve`): its
    /// commits then never stop for a checkpoint either. Other processes' writes checkpoint as
    /// they always do. None for a store without a file.
    pub fn start_shared_checkpointer(&mut self) -> Result<Option<Checkpointer>, StoreError> {
        if self.path.as_os_str() == ":memory:" || self.path.as_os_str().is_empty() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err(&self.path))?;
        conn.busy_timeout(Duration::from_millis(50))
            .map_err(sql_err(&self.path))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                // Until the sender is dropped; a failed checkpoint (busy) is tried again next time.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(io_err(&self.path))?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| self.err(e))?;
        Ok(Some(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }

    /// Stops a [`Checkpointer`] and gives this connection its automatic checkpoints back.
    pub fn stop_checkpointer(&mut self, checkpointer: Checkpointer) {
        drop(checkpointer);
        let _ = self
            .conn
            .pragma_update(None, "wal_autocheckpoint", DEFAULT_AUTOCHECKPOINT);
    }

    /// Starts a batch: every read and write until [`commit_batch`](Self::commit_batch) happens
    /// in one transaction, so a chunk of devices is stored all at once or not at all.
    pub fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))
    }

    /// Commits the batch.
    pub fn commit_batch(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Abandons the batch.
    pub fn rollback_batch(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Wraps a SQLite error with this store's path.
    pub fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

impl Store {
    /// An empty in-memory store with a throwaway key: what a dry run reads when no store exists yet.
    pub fn open_empty() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        crate::pki::random_bytes(bytes.as_mut()).map_err(|_| SealError::Seal)?;
        let mut store = Store {
            conn,
            path,
            key: StoreKey::from_raw(&bytes),
            lock: None,
            locked: true,
        };
        store.migrate()?;
        store.check_key(true)?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, write: bool) -> OpenOptions {
        OpenOptions {
            path: dir.join("state.db"),
            key_file: None,
            create: write,
            write,
            lock_timeout: Duration::from_millis(0),
        }
    }

    #[test]
    fn a_second_writer_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(&opts(dir.path(), true)).unwrap();
        let err = Store::open(&opts(dir.path(), true)).unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("another certroll process"));
        // Readers are not blocked by the writer lock.
        Store::open(&opts(dir.path(), false)).unwrap();
    }

    #[test]
    fn a_checkpointer_moves_the_log_into_the_database_while_the_writer_never_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&opts(dir.path(), true)).unwrap();
        let autocheckpoint = |store: &Store| -> i64 {
            store
                .conn()
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .unwrap()
        };
        let checkpointer = store.start_checkpointer().unwrap().expect("a store with a file");
        assert_eq!(autocheckpoint(&store), 0, "the writer no longer checkpoints");
        let db_len = || std::fs::metadata(dir.path().join("state.db")).unwrap().len();
        let before = db_len();
        // About 2 MB in 20 commits: only the checkpointer can carry it into the database file.
        for i in 0..20 {
            store
                .write(|tx, _| {
                    tx.execute(
                        "INSERT INTO store_meta (key, value) VALUES (?1, zeroblob(100000))",
                        [format!("filler-{i}")],
                    )
                    .map_err(|e| StoreError::Sqlite {
                        path: PathBuf::new(),
                        source: e,
                    })
                })
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while db_len() < before + 1_500_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            db_len() >= before + 1_500_000,
            "the database file grew from {before} to only {} bytes",
            db_len()
        );
        store.stop_checkpointer(checkpointer);
        assert_eq!(autocheckpoint(&store), DEFAULT_AUTOCHECKPOINT);
        // Nothing written is lost: every row reads back after the store is reopened.
        drop(store);
        let store = Store::open(&opts(dir.path(), false)).unwrap();
        let n: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM store_meta WHERE key LIKE 'filler-%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 20);
    }

    #[test]
    fn a_read_only_store_starts_no_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(&opts(dir.path(), true)).unwrap());
        let mut store = Store::open(&opts(dir.path(), false)).unwrap();
        assert!(store.start_checkpointer().unwrap().is_none());
    }

    #[test]
    fn a_new_store_has_16_kib_pages_and_keeps_them_when_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |store: &Store| -> i64 {
            store
                .conn()
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap()
        };
        let store = Store::open(&opts(dir.path(), true)).unwrap();
        assert_eq!(page_size(&store), 16384);
        drop(store);
        let store = Store::open(&opts(dir.path(), false)).unwrap();
        assert_eq!(page_size(&store), 16384);
        let journal: String = store
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
    }

    #[test]
    fn an_empty_store_file_is_refused_by_readers_and_writers_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(&opts(dir.path(), true)).unwrap());
        let db = dir.path().join("state.db");
        std::fs::write(&db, b"").unwrap();
        let _ = std::fs::remove_file(dir.path().join("state.db-wal"));
        for write in [false, true] {
            let err = Store::open(&opts(dir.path(), write)).unwrap_err();
            assert!(matches!(err, StoreError::Empty { .. }), "{err}");
            assert!(err.to_string().contains("restore it from a backup"), "{err}");
            assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
        }
    }

    #[test]
    fn an_empty_key_file_is_replaced_only_while_the_store_seals_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("state.db.key");
        // What an older certroll killed at its first write left: an empty key file, no store.
        std::fs::write(&key, b"").unwrap();
        drop(Store::open(&opts(dir.path(), true)).unwrap());
        assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
        // A store without sealed keys beside an emptied key file: a writer makes a new key.
        std::fs::write(&key, b"").unwrap();
        drop(Store::open(&opts(dir.path(), true)).unwrap());
        assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
        Store::open(&opts(dir.path(), false)).unwrap();
        // Once a key is sealed, an empty key file is a loud error that changes nothing.
        let store = Store::open(&opts(dir.path(), true)).unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO vault_pending (name, request_id, key_sealed, kty, exportable, csr_der,
                 policy_json, issuer, created) VALUES ('x', 'r', x'00', 'EC', 1, x'00', '{}', 'Unknown', 0)",
                [],
            )
            .unwrap();
        drop(store);
        std::fs::write(&key, b"\n").unwrap();
        for write in [false, true] {
            let err = Store::open(&opts(dir.path(), write)).unwrap_err();
            assert!(matches!(err, StoreError::EmptyKey { sealed: 1, .. }), "{err}");
            assert_eq!(std::fs::read(&key).unwrap(), b"\n");
        }
    }

    #[test]
    fn the_writer_lock_is_on_the_store_itself_and_survives_deleted_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Store::open(&opts(dir.path(), true)).unwrap();
        // No lock file decides anything: removing every file beside the store lets nobody in.
        let _ = std::fs::remove_file(dir.path().join("state.db.lock"));
        let err = Store::open(&opts(dir.path(), true)).unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err}");
        // Released and taken again on the same descriptor (what serve does per request).
        first.unlock_writer();
        let mut second = Store::open(&opts(dir.path(), true)).unwrap();
        assert!(first.lock_writer(Duration::from_millis(0)).is_err());
        second.unlock_writer();
        first.lock_writer(Duration::from_millis(0)).unwrap();
        // Reads keep working on both connections throughout.
        let n: i64 = second
            .conn()
            .query_row("SELECT count(*) FROM store_meta", [], |r| r.get(0))
            .unwrap();
        assert!(n >= 1);
    }

    #[test]
    fn paths_that_are_not_stores_are_input_errors_and_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state.db")).unwrap();
        for write in [false, true] {
            let err = Store::open(&opts(dir.path(), write)).unwrap_err();
            assert!(matches!(err, StoreError::NotAFile(_)), "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let garbled = tempfile::tempdir().unwrap();
        drop(Store::open(&opts(garbled.path(), true)).unwrap());
        std::fs::write(garbled.path().join("state.db"), vec![0x5a; 40000]).unwrap();
        let _ = std::fs::remove_file(garbled.path().join("state.db-wal"));
        let _ = std::fs::remove_file(garbled.path().join("state.db-shm"));
        let err = Store::open(&opts(garbled.path(), false)).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    }

    #[test]
    fn reading_a_missing_store_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(&opts(dir.path(), false)).unwrap_err();
        assert!(matches!(err, StoreError::Missing(_)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_store_from_a_newer_certroll_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(&opts(dir.path(), true)).unwrap();
            store.conn().pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open(&opts(dir.path(), false)).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn store_and_key_are_private_and_the_key_is_needed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(&opts(dir.path(), true)).unwrap());
        for f in ["state.db", "state.db.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        std::fs::remove_file(dir.path().join("state.db.key")).unwrap();
        let err = Store::open(&opts(dir.path(), false)).unwrap_err();
        assert!(matches!(err, StoreError::NoKey { .. }), "{err}");
        // A writer must not silently make a new key for an existing store either.
        let err = Store::open(&opts(dir.path(), true)).unwrap_err();
        assert!(matches!(err, StoreError::NoKey { .. }), "{err}");
    }
}
