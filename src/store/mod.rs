//! The embedded store: one SQLite file holding the vault, the enrollment service, the hub
//! registry and the devices, for the local backend (and, later, the emulator).
//!
//! Owns the schema and its migrations, the single-writer lock, and sealing of private keys.
//! It knows nothing of plans or verbs: callers pass in the time and the rows.

pub mod queries;
pub mod queries_dps;
pub mod queries_journal;
pub mod queries_notify;
pub mod queries_vault;
pub mod seal;
#[cfg(test)]
pub(crate) mod test_support;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use seal::{SealError, StoreKey};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {source}")]
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
        "another certroll process is writing to {path}; gave up after {waited:?} (try again when it has finished)"
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
    /// A stored record is inconsistent.
    #[error("store {path}: {message}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Schema migrations, in order. The store's `user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2_vault.sql"),
    include_str!("schema_v3_notify.sql"),
    include_str!("schema_v4_journal.sql"),
    include_str!("schema_v5_crl.sql"),
    include_str!("schema_v6_seq.sql"),
    include_str!("schema_v8_dps_hub.sql"),
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

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    key: StoreKey,
    _lock: Option<File>,
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

impl Store {
    /// Opens (and with `create`, creates) a store, migrating its schema.
    pub fn open(opts: &OpenOptions) -> Result<Store, StoreError> {
        let path = opts.path.clone();
        if !opts.create && !path.exists() {
            return Err(StoreError::Missing(path));
        }
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock = if opts.write {
            Some(acquire_lock(&path, opts.lock_timeout)?)
        } else {
            None
        };
        // Only now, holding the lock, is it settled whether this process creates the store.
        let exists = path.exists();

        let key_file = opts.key_file.clone().unwrap_or_else(|| default_key_file(&path));
        let key = match StoreKey::from_env()? {
            Some(k) => k,
            None => match StoreKey::from_file(&key_file, opts.create && !exists)? {
                Some(k) => k,
                None => {
                    return Err(StoreError::NoKey {
                        store: path,
                        key: key_file,
                    });
                }
            },
        };

        if !exists {
            // Create the file 0600 before SQLite does, so it never exists with looser bits.
            crate::fsutil::create_private(&path).map_err(io(&path))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let sql = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Sqlite { path: p, source }
        };
        let conn = Connection::open_with_flags(&path, flags).map_err(sql(&path))?;
        conn.busy_timeout(opts.lock_timeout).map_err(sql(&path))?;
        // Every query is a cached statement; keep them all prepared.
        conn.set_prepared_statement_cache_capacity(64);
        // The bundled SQLite has STAT4, which re-prepares a statement whenever a parameter is
        // bound anew; our queries have one obvious plan, so keep it (query planner stability).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(sql(&path))?;
        // Rows are mostly certificate and key blobs of about a kilobyte: 16 KiB pages halve the
        // pages (and WAL frames) a batch of them writes. The size takes only while the file is
        // still empty (also one left empty by a crash, or opened by a reader meanwhile); older
        // stores keep theirs.
        let empty = conn
            .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .map_err(sql(&path))?
            == 0;
        if empty {
            conn.execute_batch("PRAGMA page_size = 16384;")
                .map_err(sql(&path))?;
        }
        conn.execute_batch(
            // A 16 MiB page cache keeps a chunk's B-tree pages in memory across statements;
            // temporary structures stay in memory too.
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
        )
        .map_err(sql(&path))?;
        let mut store = Store {
            conn,
            path,
            key,
            _lock: lock,
        };
        if store._lock.is_none() && store.needs_migration()? {
            // A reader upgrades the schema only holding the writer lock, so it never races a
            // writer; the data is not touched.
            let lock = acquire_lock(&store.path, opts.lock_timeout)?;
            store.migrate()?;
            drop(lock);
        } else {
            store.migrate()?;
        }
        store.check_key(opts.write)?;
        Ok(store)
    }

    fn needs_migration(&self) -> Result<bool, StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
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
            .map_err(sql)?;
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
        const IDENTITY: &str = "certroll/store-check";
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
                let sealed = self.key.seal(IDENTITY, b"certroll store")?;
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

    /// Runs `f` in one write transaction and commits if it returns Ok. Inside a batch
    /// ([`begin_batch`](Self::begin_batch)) it runs as part of the batch, which is committed or abandoned whole.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
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
                Ok(out)
            }
            Err(e) => {
                let _ = self.conn.execute_batch(rollback);
                Err(e)
            }
        }
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
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
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

/// Takes the single-writer lock (`<store>.lock`), polling up to `timeout`.
fn acquire_lock(path: &Path, timeout: Duration) -> Result<File, StoreError> {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::Io {
            path: lock_path.clone(),
            source,
        })?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Busy {
                    path: path.to_path_buf(),
                    waited: start.elapsed(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    path: lock_path,
                    source,
                });
            }
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
            _lock: None,
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
        // A file a crash left empty gets them too.
        let crashed = tempfile::tempdir().unwrap();
        let store = Store::open(&opts(crashed.path(), true)).unwrap();
        drop(store);
        std::fs::write(crashed.path().join("state.db"), b"").unwrap();
        let _ = std::fs::remove_file(crashed.path().join("state.db-wal"));
        let store = Store::open(&opts(crashed.path(), true)).unwrap();
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
