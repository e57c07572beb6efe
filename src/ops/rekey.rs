//! `store rekey`: every private key in the store re-sealed under a new store key.
//!
//! The new key is written beside the key file (`<key file>.new`, 0600) first, the store is
//! re-sealed in one transaction, then the new key is renamed over the old one; a kill at any
//! point leaves the old key or the new one opening the store (see [`crate::store::rekey`]).
//! Vault backups holding non-exportable keys sealed under the old key restore only into a store
//! with that key.

use super::{Access, BackendSettings, open_store, store_options};
use crate::error::input;
use crate::plan::Plan;
use crate::store::rekey::{Resealed, pending_key_file};
use crate::store::seal::StoreKey;
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::path::PathBuf;

/// What `store rekey` did.
#[derive(Debug, Serialize)]
pub struct RekeyReport {
    /// The store file.
    pub store: PathBuf,
    /// The key file that now holds the new key.
    pub key_file: PathBuf,
    /// How many sealed keys were re-sealed.
    pub resealed: Resealed,
}

/// Runs `store rekey`.
pub fn rekey(plan: &Plan, settings: &BackendSettings) -> Result<RekeyReport> {
    if std::env::var_os("CERTROLL_STORE_KEY").is_some() {
        return Err(input(
            "the store key comes from CERTROLL_STORE_KEY; rekey replaces a key file: unset it and \
             give the key file with --key-file",
        ));
    }
    let opts = store_options(plan, Access::Modify, settings);
    let mut store = open_store(plan, Access::Modify, settings)?;
    let key_file = opts.key_file.clone().unwrap_or_else(|| {
        let mut name = opts
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".key");
        opts.path.with_file_name(name)
    });
    let pending = pending_key_file(&key_file);
    let _ = std::fs::remove_file(&pending);
    // The new key is on disk, whole and synced, before anything is sealed under it.
    let new = StoreKey::from_file(&pending, true)
        .with_context(|| format!("writing the new key to {}", pending.display()))?
        .expect("created when absent");
    let resealed = store
        .rekey(new)
        .with_context(|| format!("re-sealing the keys of {}", opts.path.display()))?;
    std::fs::rename(&pending, &key_file)
        .with_context(|| format!("moving {} to {}", pending.display(), key_file.display()))?;
    crate::fsutil::sync_dir(key_file.parent().unwrap_or(std::path::Path::new(".")))
        .with_context(|| format!("syncing the folder of {}", key_file.display()))?;
    Ok(RekeyReport {
        store: opts.path,
        key_file,
        resealed,
    })
}
