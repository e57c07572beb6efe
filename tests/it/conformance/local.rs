//! The vault suite on the local store.

use certroll::backend::local::LocalBackend;
use certroll::store::{OpenOptions, Store};

/// A fresh local store in `dir`, open for writing.
pub fn fresh_store(dir: &std::path::Path) -> LocalBackend {
    LocalBackend::new(
        Store::open(&OpenOptions {
            path: dir.join("state.db"),
            key_file: None,
            create: true,
            write: true,
            lock_timeout: std::time::Duration::from_secs(5),
        })
        .unwrap(),
    )
}

#[test]
fn the_vault_suite_passes_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut local = fresh_store(dir.path());
    super::suite(&mut local);
}
