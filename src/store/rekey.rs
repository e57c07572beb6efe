//! Re-sealing every sealed value under a new store key (`certroll store rekey`).
//!
//! The rows change in one transaction; the key file changes by rename after it commits. Between
//! the two the new key waits in `<key file>.new`, and [`super::Store::open`] finishes a rekey a
//! kill cut off there, so the old key or the new one always opens the store, never neither.

use super::seal::StoreKey;
use super::{Store, StoreError};
use rusqlite::params;
use std::path::{Path, PathBuf};

/// Where a rekey keeps the new key until the store is re-sealed under it.
pub fn pending_key_file(key_file: &Path) -> PathBuf {
    let mut name = key_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".new");
    key_file.with_file_name(name)
}

/// What a rekey re-sealed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Resealed {
    /// Keys of vault versions, live and deleted.
    pub version_keys: u64,
    /// Keys of requests waiting for an outside CA.
    pub pending_keys: u64,
}

/// Every sealed column: table, the columns naming the record, and how its identity (the AAD the
/// value was sealed with) is formed from them.
type Identity = fn(&str, &str) -> String;

const SEALED: &[(&str, &str, Identity)] = &[
    ("vault_versions", "name, version", super::queries::key_identity),
    (
        "vault_deleted_versions",
        "name, version",
        super::queries::key_identity,
    ),
    (
        "vault_pending",
        "name, request_id",
        super::queries_vault::pending_identity,
    ),
];

impl Store {
    /// Opens every sealed value with the current key and seals it under `new`, in one
    /// transaction with the store's check value; afterwards this handle uses `new`. Needs the
    /// writer lock. A value that does not open fails the whole rekey and changes nothing.
    pub fn rekey(&mut self, new: StoreKey) -> Result<Resealed, StoreError> {
        assert!(self.locked, "rekey needs the writer lock");
        let mut counts = Resealed::default();
        let path = self.path.clone();
        let sql = move |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql.clone())?;
        for (table, cols, identity) in SEALED {
            let rows: Vec<(String, String, Vec<u8>)> = {
                let mut stmt = tx
                    .prepare(&format!("SELECT {cols}, key_sealed FROM {table}"))
                    .map_err(sql.clone())?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(sql.clone())?
                    .collect::<Result<_, _>>()
                    .map_err(sql.clone())?
            };
            let (a, b) = cols.split_once(", ").expect("two columns");
            let mut update = tx
                .prepare(&format!(
                    "UPDATE {table} SET key_sealed = ?1 WHERE {a} = ?2 AND {b} = ?3"
                ))
                .map_err(sql.clone())?;
            for (x, y, sealed) in rows {
                let id = identity(&x, &y);
                let plain = self.key.open(&id, &sealed)?;
                update
                    .execute(params![new.seal(&id, &plain)?, x, y])
                    .map_err(sql.clone())?;
                if *table == "vault_pending" {
                    counts.pending_keys += 1;
                } else {
                    counts.version_keys += 1;
                }
            }
        }
        let check = new.seal(super::KEY_CHECK_IDENTITY, super::KEY_CHECK_VALUE)?;
        tx.execute(
            "INSERT INTO store_meta (key, value) VALUES ('key_check', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [check],
        )
        .map_err(sql.clone())?;
        tx.commit().map_err(sql)?;
        self.key = new;
        Ok(counts)
    }
}
